//! What the kernel knows about a unit that looks hung, gathered before any decision: who
//! listens on the probed address (and whether that is the unit), the listener's accept queue,
//! the unit's CPU time during the confirm re-probe, its memory, tasks and pressure, and what
//! its main process's threads are doing.
//!
//! Read from `/proc/self/net/{tcp,tcp6,unix}` (our own network namespace: the one the probes
//! went through), `/proc/<pid>/{fd,task}` and the unit's cgroup directory. Nothing here needs
//! a privilege that recovery does not already have, nor a socket family the hardened unit
//! forbids (no netlink): it works under `ProcSubset=pid`. Parsers are pure; the IO is thin and
//! every read that fails leaves its field empty (evidence is never a reason to crash).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where a target is probed, as the kernel would list its listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp {
        ip: IpAddr,
        port: u16,
    },
    /// `localhost`: either loopback address.
    Localhost {
        port: u16,
    },
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp {
                ip: IpAddr::V6(ip),
                port,
            } => write!(f, "[{ip}]:{port}"),
            Address::Tcp { ip, port } => write!(f, "{ip}:{port}"),
            Address::Localhost { port } => write!(f, "localhost:{port}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One listening socket from `/proc/net/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub inode: u64,
    /// The cgroup id (directory inode) of the process that created the socket (TCP, from
    /// sock_diag).
    pub cgroup_id: Option<u64>,
    /// Connections waiting to be accepted (TCP only).
    pub queue: Option<u32>,
    /// The listen backlog (TCP only).
    pub backlog: Option<u32>,
}

/// Who holds a listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    /// The holder's cgroup (unified hierarchy).
    pub cgroup: String,
}

/// The probed address's listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub address: String,
    /// Connections waiting to be accepted, and the backlog (TCP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    /// Whether a process of the unit holds it; `None` when the unit's cgroup could not be
    /// read here (then ownership is not judged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_unit: Option<bool>,
    /// Who holds it when that is not the unit (if found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<Holder>,
}

/// The accept queue is full: the kernel drops new SYNs (TCP), or refuses with EAGAIN (Unix).
/// The process is not accepting: the deadlock itself. Unknown counts are not full. Pure.
pub fn queue_full(queue: Option<u32>, backlog: Option<u32>) -> bool {
    matches!((queue, backlog), (Some(q), Some(b)) if q > b || (q == b && b > 0))
}

impl Listener {
    pub fn queue_full(&self) -> bool {
        queue_full(self.queue, self.backlog)
    }
}

impl Listening {
    pub fn queue_full(&self) -> bool {
        queue_full(self.queue, self.backlog)
    }
}

/// What the main process's threads are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Threads {
    pub total: u32,
    /// By state letter: R running, S sleeping, D uninterruptible (disk), Z zombie, …
    pub states: BTreeMap<char, u32>,
    /// The kernel function most threads sleep in (`wchan`), and how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_wchan: Option<(String, u32)>,
}

/// PSI `avg10` of the unit's cgroup, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pressure {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<f64>,
}

/// Everything gathered for one unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The probed address's listener; `None` when nothing listens there (or it could not be
    /// looked up: see `note`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<Listener>,
    /// Why the listener was not looked up (a remote address, a proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// With `recovery.through`: the proxy unit the probed address belongs to, and the unit's
    /// own listeners behind it (their queues tell whether it stopped accepting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub own_listeners: Vec<Listener>,
    /// CPU time the unit's cgroup used during the confirm re-probe, and that window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<Threads>,
    /// What gathering cost, in microseconds.
    pub gather_us: u64,
}

impl Evidence {
    /// One line in plain words: "accept queue 129/128 full, 0.0 s CPU in 2.1 s, 12 threads
    /// (12 S), most in futex_wait_queue".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(proxy) = &self.through {
            parts.push(format!("probed through {proxy}"));
        }
        for l in &self.own_listeners {
            if let (Some(q), Some(b)) = (l.queue, l.backlog) {
                parts.push(format!(
                    "its listener {} queue {q}/{b}{}",
                    l.address,
                    if l.queue_full() { " full" } else { "" }
                ));
            }
        }
        match &self.listener {
            Some(l) => {
                if let (Some(q), Some(b)) = (l.queue, l.backlog) {
                    parts.push(format!(
                        "{}accept queue {q}/{b}{}",
                        if self.through.is_some() {
                            "the proxy's "
                        } else {
                            ""
                        },
                        if l.queue_full() { " full" } else { "" }
                    ));
                }
                if l.in_unit == Some(false) {
                    parts.push(match &l.held_by {
                        Some(h) => format!(
                            "{} is served by PID {} ({}) in {}, not by the unit",
                            l.address, h.pid, h.comm, h.cgroup
                        ),
                        None => format!("{} is not served by the unit", l.address),
                    });
                }
            }
            None => {
                if let Some(n) = &self.note {
                    parts.push(n.clone());
                }
            }
        }
        if let (Some(cpu), Some(win)) = (self.cpu_ms, self.window_ms) {
            parts.push(format!(
                "{:.1} s CPU in {:.1} s",
                cpu as f64 / 1000.0,
                win as f64 / 1000.0
            ));
        }
        if let Some(t) = &self.threads {
            let states: Vec<String> = t.states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            let mut text = format!(
                "{} ({})",
                crate::words::count(u64::from(t.total), "thread", "threads"),
                states.join(", ")
            );
            if let Some((w, n)) = &t.top_wchan {
                text.push_str(&format!(", {n} in {w}"));
            }
            parts.push(text);
        }
        if let Some(p) = &self.pressure {
            let some: Vec<String> = [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)]
                .iter()
                .filter_map(|(k, v)| v.filter(|v| *v >= 10.0).map(|v| format!("{k} {v:.0}%")))
                .collect();
            if !some.is_empty() {
                parts.push(format!("pressure {}", some.join(", ")));
            }
        }
        parts.join(", ")
    }
}

// ------------------------------------------------------------------------------ parsers

/// Listening sockets of `/proc/net/tcp` or `tcp6` text that match `ip:port` (a listener on
/// the unspecified address matches any IP). Pure.
pub fn parse_tcp_listeners(text: &str, ip: IpAddr, port: u16) -> Vec<Listening> {
    text.lines()
        .skip(1)
        .filter_map(listen_line)
        .filter(|(local, p, _)| *p == port && (local.is_unspecified() || same_ip(*local, ip)))
        .map(|(_, _, l)| l)
        .collect()
}

/// One row of `/proc/net/tcp*` if it is a listener: its address, port and socket. Pure.
fn listen_line(line: &str) -> Option<(IpAddr, u16, Listening)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if f.len() < 10 || f[3] != "0A" {
        return None;
    }
    let (addr, port) = f[1].split_once(':')?;
    let ip = parse_hex_ip(addr)?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // For a listener the kernel prints the accept queue as rx_queue (its backlog is not here:
    // see `sock_diag`).
    let rx = f[4].split_once(':').map_or("", |(_, rx)| rx);
    Some((
        ip,
        port,
        Listening {
            inode: f[9].parse().unwrap_or(0),
            cgroup_id: None,
            queue: u32::from_str_radix(rx, 16).ok(),
            backlog: None,
        },
    ))
}

/// IPv4-mapped IPv6 addresses equal their IPv4 form.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// `0100007F` (little-endian IPv4) or 32 hex digits (IPv6 as four little-endian words).
fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => {
            let n = u32::from_str_radix(hex, 16).ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(n.swap_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for w in 0..4 {
                let word = u32::from_str_radix(&hex[w * 8..w * 8 + 8], 16).ok()?;
                bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Listening Unix sockets of `/proc/net/unix` text bound to `path`. Pure.
pub fn parse_unix_listeners(text: &str, path: &Path) -> Vec<Listening> {
    const ACCEPTCON: u32 = 0x0001_0000;
    let want = path.to_string_lossy();
    let mut found = Vec::new();
    for line in text.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[7] != want {
            continue;
        }
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        if flags & ACCEPTCON == 0 {
            continue;
        }
        found.push(Listening {
            inode: f[6].parse().unwrap_or(0),
            cgroup_id: None,
            queue: None,
            backlog: None,
        });
    }
    found
}

/// The state letter of a `/proc/<pid>/task/<tid>/stat` line (after the `(comm)`). Pure.
pub fn parse_stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `usage_usec` of a cgroup `cpu.stat`. Pure.
pub fn parse_cpu_usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// `avg10` of the `some` line of a PSI file. Pure.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))
        .and_then(|v| v.parse().ok())
}

/// Count thread states and their most common wait channel. Pure.
pub fn summarise_threads(threads: &[(char, String)]) -> Threads {
    let mut states = BTreeMap::new();
    let mut wchans: BTreeMap<&str, u32> = BTreeMap::new();
    for (state, wchan) in threads {
        *states.entry(*state).or_default() += 1;
        if !wchan.is_empty() && wchan != "0" {
            *wchans.entry(wchan.as_str()).or_default() += 1;
        }
    }
    let top_wchan = wchans
        .into_iter()
        .max_by_key(|(w, n)| (*n, std::cmp::Reverse(*w)))
        .map(|(w, n)| (w.to_string(), n));
    Threads {
        total: threads.len() as u32,
        states,
        top_wchan,
    }
}

// ------------------------------------------------------------------------------ IO

/// Where a target's routes are probed, when its listener can be looked up on this host (a
/// Unix socket, or an IP literal or `localhost` that is one of this host's addresses);
/// otherwise why not.
pub fn probed_address(target: &crate::plan::Target) -> Result<Address, String> {
    use crate::plan::Endpoint;
    let proxied = target.use_env_proxy
        && [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    let (host, port) = match &target.endpoint {
        Endpoint::Unix { socket } => return Ok(Address::Unix(socket.clone())),
        _ if proxied => return Err("probed through a proxy: its listener is not the unit's".into()),
        Endpoint::Http { base } => target
            .http_host_port()
            .ok_or_else(|| format!("{base}: no host and port"))?,
        Endpoint::Tcp { addr } => match addr.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| format!("{addr}: no port"))?,
            ),
            None => return Err(format!("{addr}: no port")),
        },
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(Address::Localhost { port });
    }
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("probed by name ({host}): its listener is not looked up"))?;
    // One of this host's addresses: binding to it works (no packet is sent).
    let local = ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok();
    if !local {
        return Err(format!(
            "{ip} is not an address of this host: its listener is not looked up"
        ));
    }
    Ok(Address::Tcp { ip, port })
}

/// The cgroup v2 directory of a unit's `ControlGroup`, under the unified hierarchy's mount
/// (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host).
pub fn cgroup_dir(control_group: &str) -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| cgroup2_mount(&t))
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
    });
    root.join(control_group.trim_start_matches('/'))
}

/// The mount point of the first `cgroup2` file system in a `mountinfo` text. Pure.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The CPU time a cgroup has used so far, in microseconds.
pub fn cpu_usage_usec(control_group: &str) -> Option<u64> {
    let text = std::fs::read_to_string(cgroup_dir(control_group).join("cpu.stat")).ok()?;
    parse_cpu_usage_usec(&text)
}

/// The listening sockets bound to `addr`, from our own network namespace.
pub fn listening(addr: &Address) -> Vec<Listening> {
    use sock_diag::Table;
    let read = |f: &str| std::fs::read_to_string(format!("/proc/self/net/{f}")).unwrap_or_default();
    let mut found: Vec<(Listening, Table)> = match addr {
        Address::Tcp { ip, port } => {
            let mut v: Vec<(Listening, Table)> = parse_tcp_listeners(&read("tcp"), *ip, *port)
                .into_iter()
                .map(|l| (l, Table::Tcp4))
                .collect();
            v.extend(
                parse_tcp_listeners(&read("tcp6"), *ip, *port)
                    .into_iter()
                    .map(|l| (l, Table::Tcp6)),
            );
            v
        }
        Address::Localhost { port } => {
            let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
            let mut v: Vec<(Listening, Table)> = Vec::new();
            for (text, table) in [(read("tcp"), Table::Tcp4), (read("tcp6"), Table::Tcp6)] {
                for ip in [v4, v6] {
                    for l in parse_tcp_listeners(&text, ip, *port) {
                        if !v.iter().any(|(seen, _)| seen.inode == l.inode) {
                            v.push((l, table));
                        }
                    }
                }
            }
            v
        }
        Address::Unix(path) => parse_unix_listeners(&read("unix"), path)
            .into_iter()
            .map(|l| (l, Table::Unix))
            .collect(),
    };
    // `/proc/net/tcp` lists a listener's accept queue but not its backlog; sock_diag has both,
    // and the cgroup of the process that created the socket.
    for (l, table) in &mut found {
        if let Some(d) = sock_diag::listener(*table, l.inode) {
            l.queue = Some(d.queue);
            l.backlog = Some(d.backlog);
            l.cgroup_id = d.cgroup_id;
        }
    }
    found.into_iter().map(|(l, _)| l).collect()
}

/// The accept queue and backlog of listening sockets, by inode, from the kernel's sock_diag
/// netlink interface (`/proc/net/*` shows neither backlog nor a Unix queue). `None` where
/// netlink is not allowed: the evidence then has no backlog.
pub mod sock_diag {
    use rustix::net::{AddressFamily, SendFlags, SocketType, netlink};

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN_BIT: u32 = 1 << 10;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    const UNIX_DIAG_RQLEN: u16 = 4;
    const INET_DIAG_CGROUP_ID: u16 = 21;

    /// Which table to dump.
    #[derive(Debug, Clone, Copy)]
    pub enum Table {
        Tcp4,
        Tcp6,
        Unix,
    }

    /// One listener as sock_diag reports it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Diag {
        pub inode: u64,
        pub queue: u32,
        pub backlog: u32,
        /// The cgroup id (directory inode) of the socket's creator (TCP, kernel 5.7+).
        pub cgroup_id: Option<u64>,
    }

    /// The request: a netlink header and the family's dump request for listeners. Pure.
    pub fn request(table: Table) -> Vec<u8> {
        let mut body = Vec::new();
        match table {
            Table::Tcp4 | Table::Tcp6 => {
                let family: u8 = if matches!(table, Table::Tcp4) { 2 } else { 10 };
                body.extend_from_slice(&[family, 6, 0, 0]); // AF_INET(6), IPPROTO_TCP
                body.extend_from_slice(&TCP_LISTEN_BIT.to_ne_bytes());
                body.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
            }
            Table::Unix => {
                body.extend_from_slice(&[1, 0, 0, 0]); // AF_UNIX
                body.extend_from_slice(&TCP_LISTEN_BIT.to_ne_bytes());
                body.extend_from_slice(&0u32.to_ne_bytes()); // any inode
                body.extend_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
                body.extend_from_slice(&[0xff; 8]); // no cookie
            }
        }
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
        msg.extend_from_slice(&body);
        msg
    }

    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    /// The attributes after a message's fixed part: `(type, payload)`. Pure.
    fn attributes(msg: &[u8], from: usize) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        let mut a = from;
        while let (Some(alen), Some(akind)) = (u16_at(msg, a), u16_at(msg, a + 2)) {
            let alen = alen as usize;
            if alen < 4 || a + alen > msg.len() {
                break;
            }
            out.push((akind, &msg[a + 4..a + alen]));
            a += (alen + 3) & !3;
        }
        out
    }

    /// One answer datagram: the listeners in it, and whether the dump is done. Pure.
    pub fn parse(table: Table, buf: &[u8]) -> (Vec<Diag>, bool) {
        let mut out = Vec::new();
        let mut at = 0;
        while let (Some(len), Some(kind)) = (u32_at(buf, at), u16_at(buf, at + 4)) {
            let len = len as usize;
            if len < 16 || at + len > buf.len() || kind == NLMSG_DONE || kind == NLMSG_ERROR {
                return (out, true);
            }
            let msg = &buf[at + 16..at + len];
            match table {
                Table::Tcp4 | Table::Tcp6 => {
                    // inet_diag_msg (72 bytes): rqueue at 56, wqueue at 60, inode at 68;
                    // then attributes.
                    if let (Some(queue), Some(backlog), Some(ino)) =
                        (u32_at(msg, 56), u32_at(msg, 60), u32_at(msg, 68))
                    {
                        let cgroup_id = attributes(msg, 72)
                            .into_iter()
                            .find(|(k, _)| *k == INET_DIAG_CGROUP_ID)
                            .and_then(|(_, v)| v.get(..8)?.try_into().ok())
                            .map(u64::from_ne_bytes);
                        out.push(Diag {
                            inode: u64::from(ino),
                            queue,
                            backlog,
                            cgroup_id,
                        });
                    }
                }
                Table::Unix => {
                    // unix_diag_msg (16 bytes: inode at 4), then attributes.
                    let ino = u32_at(msg, 4);
                    for (kind, v) in attributes(msg, 16) {
                        if kind == UNIX_DIAG_RQLEN
                            && let (Some(ino), Some(queue), Some(backlog)) =
                                (ino, u32_at(v, 0), u32_at(v, 4))
                        {
                            out.push(Diag {
                                inode: u64::from(ino),
                                queue,
                                backlog,
                                cgroup_id: None,
                            });
                        }
                    }
                }
            }
            at += (len + 3) & !3;
        }
        (out, false)
    }

    /// What sock_diag says of the listener with this inode.
    pub fn listener(table: Table, inode: u64) -> Option<Diag> {
        listeners(table)?.into_iter().find(|d| d.inode == inode)
    }

    /// Every listener of the table, in one dump (`None` when sock_diag cannot be asked).
    pub fn listeners(table: Table) -> Option<Vec<Diag>> {
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            Some(netlink::SOCK_DIAG),
        )
        .ok()?;
        let kernel = netlink::SocketAddrNetlink::new(0, 0);
        rustix::net::sendto(&fd, &request(table), SendFlags::empty(), &kernel).ok()?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut all = Vec::new();
        // Bounded: a dump of every listener on the host ends in a few datagrams.
        for _ in 0..10_000 {
            let (n, _) =
                rustix::net::recv(&fd, &mut buf[..], rustix::net::RecvFlags::empty()).ok()?;
            let (found, done) = parse(table, &buf[..n]);
            all.extend(found);
            if done || n == 0 {
                break;
            }
        }
        Some(all)
    }
}

/// Whether one of `pids` holds a socket with one of these inodes: `Some(false)` only when
/// every process's descriptors could be read (without `CAP_SYS_PTRACE`, another root
/// process's `/proc/<pid>/fd` is closed to us).
fn held_by_any(pids: &[u32], inodes: &[u64]) -> Option<bool> {
    let mut complete = true;
    for &pid in pids {
        match holds_socket(pid, inodes) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => complete = false,
        }
    }
    complete.then_some(false)
}

/// The socket inodes the processes hold (those whose descriptors can be read).
fn sockets_held(pids: &[u32]) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for &pid in pids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        out.extend(entries.flatten().filter_map(|e| socket_inode(&e.path())));
    }
    out
}

/// The inode of the socket a descriptor link names (`socket:[123]`).
fn socket_inode(fd: &std::path::Path) -> Option<u64> {
    let target = std::fs::read_link(fd).ok()?;
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `None` when the process's descriptors cannot be read.
fn holds_socket(pid: u32, inodes: &[u64]) -> Option<bool> {
    let entries = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    Some(
        entries
            .flatten()
            .any(|e| socket_inode(&e.path()).is_some_and(|n| inodes.contains(&n))),
    )
}

/// Every directory of a cgroup subtree (bounded).
fn cgroup_dirs(root: PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(d) = todo.pop() {
        if out.len() >= 100_000 {
            break;
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            todo.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        out.push(d);
    }
    out
}

/// The processes of a cgroup and below, and the cgroup ids (directory inodes) of it and
/// below; `None` when its directory cannot be read here.
fn cgroup_members(control_group: &str) -> Option<(Vec<u32>, Vec<u64>)> {
    use std::os::unix::fs::MetadataExt;
    let root = cgroup_dir(control_group);
    if control_group.is_empty() || !root.join("cgroup.procs").is_file() {
        return None;
    }
    let mut pids = Vec::new();
    let mut ids = Vec::new();
    for d in cgroup_dirs(root) {
        if let Ok(m) = std::fs::metadata(&d) {
            ids.push(m.ino());
        }
        if let Ok(t) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    Some((pids, ids))
}

/// The cgroup whose directory has this inode.
fn cgroup_path_of(id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let root = cgroup_dir("");
    cgroup_dirs(root.clone())
        .into_iter()
        .find(|d| std::fs::metadata(d).is_ok_and(|m| m.ino() == id))
        .and_then(|d| Some(format!("/{}", d.strip_prefix(&root).ok()?.display())))
}

/// Any process holding one of these sockets (a scan of `/proc`, bounded by its size).
fn find_holder(inodes: &[u64]) -> Option<Holder> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let pid = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| holds_socket(pid, inodes) == Some(true))?;
    Some(Holder {
        pid,
        comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default(),
        cgroup: crate::systemd::process_cgroup(pid).unwrap_or_default(),
    })
}

/// Whether the unit serves a listener, from what could be read. Pure.
///
/// Held by one of its processes, or created in its cgroup: yes. Its descriptors all read and
/// none holds it, and it was not created there: no. Descriptors unreadable (no
/// `CAP_SYS_PTRACE`): the socket's creator decides, except when that is PID 1 (systemd
/// created it for socket activation, and only the holders could tell).
pub fn judge_ownership(
    created_in_unit: Option<bool>,
    held: Option<bool>,
    creator_is_init: bool,
) -> Option<bool> {
    match (created_in_unit, held) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (_, Some(false)) => Some(false),
        (Some(false), None) if !creator_is_init => Some(false),
        _ => None,
    }
}

/// Who listens on the probed address, and whether it is the unit.
pub fn listener(addr: &Address, control_group: &str) -> Option<Listener> {
    let found = listening(addr);
    if found.is_empty() {
        return None;
    }
    let inodes: Vec<u64> = found.iter().map(|l| l.inode).collect();
    let members = cgroup_members(control_group);
    let creator = found.iter().find_map(|l| l.cgroup_id);
    let (in_unit, creator_path) = match &members {
        None => (None, None),
        Some((pids, ids)) => {
            let created_in_unit = creator.map(|c| ids.contains(&c));
            let held = held_by_any(pids, &inodes);
            let creator_path = creator
                .filter(|_| created_in_unit == Some(false))
                .and_then(cgroup_path_of);
            let init = crate::systemd::process_cgroup(1).ok();
            let creator_is_init = creator_path.is_some() && creator_path == init;
            (
                judge_ownership(created_in_unit, held, creator_is_init),
                creator_path,
            )
        }
    };
    // The fullest queue among the matching listeners (SO_REUSEPORT may give several).
    let fullest = found.iter().max_by_key(|l| l.queue.unwrap_or(0));
    Some(Listener {
        address: addr.to_string(),
        queue: fullest.and_then(|l| l.queue),
        backlog: fullest.and_then(|l| l.backlog),
        in_unit,
        held_by: if in_unit == Some(false) {
            find_holder(&inodes).or_else(|| {
                creator_path.map(|cgroup| Holder {
                    pid: 0,
                    comm: String::new(),
                    cgroup,
                })
            })
        } else {
            None
        },
    })
}

/// The main process's threads: states and wait channels.
pub fn threads(pid: u32) -> Option<Threads> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut seen = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let Some(state) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| parse_stat_state(&s))
        else {
            continue;
        };
        let wchan = std::fs::read_to_string(dir.join("wchan")).unwrap_or_default();
        seen.push((state, wchan.trim().to_string()));
    }
    Some(summarise_threads(&seen))
}

/// Memory, tasks and pressure of the unit's cgroup.
pub fn cgroup_stats(control_group: &str) -> (Option<u64>, Option<u64>, Option<Pressure>) {
    let dir = cgroup_dir(control_group);
    let num = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let psi = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|t| parse_psi_some_avg10(&t))
    };
    let pressure = Pressure {
        cpu: psi("cpu.pressure"),
        memory: psi("memory.pressure"),
        io: psi("io.pressure"),
    };
    let any = pressure.cpu.is_some() || pressure.memory.is_some() || pressure.io.is_some();
    (
        num("memory.current"),
        num("pids.current"),
        any.then_some(pressure),
    )
}

/// Every TCP listener of a unit (created in its cgroup, or held by one of its processes),
/// with its queue: the unit's own listeners when it is probed through a proxy.
pub fn listeners_of(control_group: &str) -> Vec<Listener> {
    use sock_diag::Table;
    let Some((pids, ids)) = cgroup_members(control_group) else {
        return Vec::new();
    };
    // One dump per table and one pass over the unit's descriptors, whatever the number of
    // listeners on the host (a proxy host may have thousands).
    let held = sockets_held(&pids);
    let mut out = Vec::new();
    for (file, table, v6) in [("tcp", Table::Tcp4, false), ("tcp6", Table::Tcp6, true)] {
        let text = std::fs::read_to_string(format!("/proc/self/net/{file}")).unwrap_or_default();
        let diags: std::collections::HashMap<u64, sock_diag::Diag> = sock_diag::listeners(table)
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.inode, d))
            .collect();
        for (addr, l) in parse_all_tcp_listeners(&text, v6) {
            let diag = diags.get(&l.inode).copied();
            let created = diag
                .and_then(|d| d.cgroup_id)
                .is_some_and(|c| ids.contains(&c));
            if created || held.contains(&l.inode) {
                out.push(Listener {
                    address: addr.to_string(),
                    queue: diag.map(|d| d.queue).or(l.queue),
                    backlog: diag.map(|d| d.backlog),
                    in_unit: Some(true),
                    held_by: None,
                });
            }
        }
    }
    out
}

/// Every listener of a `/proc/net/tcp` or `tcp6` text, with its address. Pure.
pub fn parse_all_tcp_listeners(text: &str, v6: bool) -> Vec<(Address, Listening)> {
    text.lines()
        .skip(1)
        .filter_map(listen_line)
        .filter(|(ip, _, _)| ip.is_ipv6() == v6)
        .map(|(ip, port, l)| (Address::Tcp { ip, port }, l))
        .collect()
}

/// Gather the evidence for a unit: `addr` is where its core routes were probed (`None` with
/// the reason when it cannot be looked up here), `owner` the cgroup that should serve it
/// (the unit's, or with `recovery.through` the proxy's), the CPU window is the confirm
/// re-probe.
pub fn gather(
    addr: Result<&Address, &str>,
    owner: &str,
    control_group: &str,
    main_pid: u32,
    cpu_window: Option<(u64, Duration)>,
) -> Evidence {
    let started = Instant::now();
    let mut ev = Evidence::default();
    match addr {
        Ok(a) => ev.listener = listener(a, owner),
        Err(why) => ev.note = Some(why.to_string()),
    }
    if owner != control_group {
        ev.own_listeners = listeners_of(control_group);
    }
    if let Some((before, window)) = cpu_window
        && let Some(after) = cpu_usage_usec(control_group)
    {
        ev.cpu_ms = Some(after.saturating_sub(before) / 1000);
        ev.window_ms = Some(window.as_millis() as u64);
    }
    let (memory, tasks, pressure) = cgroup_stats(control_group);
    ev.memory_bytes = memory;
    ev.tasks = tasks;
    ev.pressure = pressure;
    ev.threads = threads(main_pid);
    ev.gather_us = started.elapsed().as_micros() as u64;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:4691 00000000:0000 0A 00000080:00000081 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 00000000:0050 00000000:0000 0A 00000200:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n   2: 0100007F:4691 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 20 4 30 10 -1\n";

    #[test]
    fn tcp_listeners_by_address_with_queue_and_backlog() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let l = parse_tcp_listeners(TCP, lo, 0x4691);
        assert_eq!(
            l,
            vec![Listening {
                inode: 12345,
                cgroup_id: None,
                queue: Some(0x81),
                backlog: None
            }]
        );
        // A listener on 0.0.0.0 serves 127.0.0.1 too; an established socket is no listener.
        assert_eq!(parse_tcp_listeners(TCP, lo, 80)[0].inode, 777);
        assert!(
            parse_tcp_listeners(TCP, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 0x4691).is_empty()
        );
        assert!(parse_tcp_listeners(TCP, lo, 81).is_empty());
    }

    #[test]
    fn tcp6_addresses_decode() {
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n";
        let l = parse_tcp_listeners(v6, IpAddr::V6(Ipv6Addr::LOCALHOST), 8080);
        assert_eq!(l.len(), 1, "::1 decodes");
        assert!(parse_tcp_listeners(v6, IpAddr::V4(Ipv4Addr::LOCALHOST), 8080).is_empty());
    }

    #[test]
    fn a_unix_listener_reports_its_queue_and_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _a = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let found = listening(&Address::Unix(path.clone()));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].queue, Some(1));
        assert!(found[0].backlog.is_some_and(|b| b >= 1));
    }

    #[test]
    fn unix_listeners_need_acceptcon() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n0000: 00000002 00000000 00010000 0001 01 5555 /run/app.sock\n0000: 00000003 00000000 00000000 0001 03 5556 /run/app.sock\n";
        let l = parse_unix_listeners(t, Path::new("/run/app.sock"));
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].inode, 5555);
    }

    #[test]
    fn queue_full_means_at_or_over_the_backlog() {
        let l = |q, b| Listener {
            address: String::new(),
            queue: Some(q),
            backlog: Some(b),
            in_unit: Some(true),
            held_by: None,
        };
        assert!(l(129, 128).queue_full());
        assert!(l(128, 128).queue_full());
        assert!(!l(3, 128).queue_full());
        assert!(!l(0, 0).queue_full());
    }

    #[test]
    fn the_unified_hierarchy_is_found_on_pure_and_hybrid_hosts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "25 23 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn ownership_is_judged_only_from_what_could_be_read() {
        // Held by the unit, or created in its cgroup: the unit's.
        assert_eq!(judge_ownership(Some(true), None, false), Some(true));
        assert_eq!(judge_ownership(Some(false), Some(true), true), Some(true));
        // Every descriptor read and none holds it: not the unit's.
        assert_eq!(judge_ownership(None, Some(false), false), Some(false));
        // Descriptors unreadable: a socket created elsewhere is not the unit's, unless
        // systemd created it (socket activation).
        assert_eq!(judge_ownership(Some(false), None, false), Some(false));
        assert_eq!(judge_ownership(Some(false), None, true), None);
        assert_eq!(judge_ownership(None, None, false), None);
    }

    #[test]
    fn sock_diag_answers_parse_with_the_cgroup_attribute() {
        use sock_diag::{Diag, Table, parse};
        let mut msg = vec![0u8; 72];
        msg[0] = 2;
        msg[1] = 10;
        msg[56..60].copy_from_slice(&129u32.to_ne_bytes());
        msg[60..64].copy_from_slice(&128u32.to_ne_bytes());
        msg[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        msg.extend_from_slice(&12u16.to_ne_bytes());
        msg.extend_from_slice(&21u16.to_ne_bytes());
        msg.extend_from_slice(&777u64.to_ne_bytes());
        let mut buf = ((16 + msg.len()) as u32).to_ne_bytes().to_vec();
        buf.extend_from_slice(&20u16.to_ne_bytes());
        buf.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(&msg);
        let mut done = 16u32.to_ne_bytes().to_vec();
        done.extend_from_slice(&3u16.to_ne_bytes());
        done.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(&done);
        let (found, finished) = parse(Table::Tcp4, &buf);
        assert!(finished);
        assert_eq!(
            found,
            vec![Diag {
                inode: 4242,
                queue: 129,
                backlog: 128,
                cgroup_id: Some(777)
            }]
        );
        // Truncated input ends the parse, never panics.
        for cut in 0..buf.len() {
            let _ = parse(Table::Tcp4, &buf[..cut]);
            let _ = parse(Table::Unix, &buf[..cut]);
        }
    }

    #[test]
    fn stat_state_survives_a_comm_with_parentheses() {
        assert_eq!(parse_stat_state("42 (a) b) S 1 2 3"), Some('S'));
        assert_eq!(parse_stat_state("42 (py) D 1"), Some('D'));
    }

    #[test]
    fn cgroup_files_parse() {
        assert_eq!(
            parse_cpu_usage_usec("usage_usec 1500\nuser_usec 1000\n"),
            Some(1500)
        );
        assert_eq!(
            parse_psi_some_avg10(
                "some avg10=12.50 avg60=1.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            ),
            Some(12.5)
        );
    }

    #[test]
    fn deadlock_and_busy_loop_read_differently() {
        let deadlock = Evidence {
            listener: Some(Listener {
                address: "127.0.0.1:8080".into(),
                queue: Some(129),
                backlog: Some(128),
                in_unit: Some(true),
                held_by: None,
            }),
            cpu_ms: Some(0),
            window_ms: Some(6000),
            threads: Some(summarise_threads(
                &(0..12)
                    .map(|_| ('S', "futex_wait_queue".to_string()))
                    .collect::<Vec<_>>(),
            )),
            ..Evidence::default()
        };
        assert_eq!(
            deadlock.summary(),
            "accept queue 129/128 full, 0.0 s CPU in 6.0 s, 12 threads (12 S), 12 in futex_wait_queue"
        );
        let busy = Evidence {
            cpu_ms: Some(5900),
            window_ms: Some(6000),
            threads: Some(summarise_threads(&[('R', "0".into()), ('R', "0".into())])),
            ..Evidence::default()
        };
        assert_eq!(busy.summary(), "5.9 s CPU in 6.0 s, 2 threads (2 R)");
    }

    #[test]
    fn a_real_listener_of_this_process_is_found_with_its_queue() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let addr = Address::Tcp {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        };
        // Two connections the process never accepts wait in the queue.
        let _a = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _b = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let own = crate::systemd::process_cgroup(std::process::id()).unwrap_or_default();
        let found = listener(&addr, &own).expect("our own listener is listed");
        assert_eq!(found.queue, Some(2));
        // std listens with a backlog of 128 (sock_diag reports it; somaxconn may cap it).
        assert!(found.backlog.is_some_and(|b| b >= 2), "{found:?}");
        if !own.is_empty() && cgroup_dir(&own).join("cgroup.procs").exists() {
            assert_eq!(
                found.in_unit,
                Some(true),
                "held by this process, in its own cgroup"
            );
        }
        let t = threads(std::process::id()).unwrap();
        assert!(t.total >= 1);
    }
}
