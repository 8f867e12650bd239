//! Shared helpers for the integration tests: small tokio servers on 127.0.0.1 port 0 (or a Unix
//! socket in a temporary directory) whose behaviour is scripted per request, so every fault a
//! real service can show on the wire can be reproduced, counted and timed.
//!
//! A server is a [`Script`]: either a fixed [`Reply`] performed as soon as a connection is
//! accepted (before anything is read: a banner, a reset, a hang), or a handler that sees each
//! parsed request and picks the [`Reply`]. Every request is recorded in [`Stats`] with the time
//! its head arrived; requests in flight are counted so concurrency limits can be checked.
//!
//! The server stops (and every connection it holds is dropped) when its handle is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use routewatch::plan::Plan;
use routewatch::probe::RouteResult;
use routewatch::run::{Options, RunReport};

/// A request head the server received.
#[derive(Debug, Clone)]
pub struct Request {
    /// 0-based, in arrival order across all connections.
    pub index: usize,
    /// 0-based index of the connection it came on.
    pub conn: usize,
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The `Content-Length` body.
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does on a connection (after reading a request, or at once on accept).
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete response with `Content-Length`, after `delay`; the connection stays usable.
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        delay: Duration,
    },
    /// Never answer; hold the connection (reading and discarding) until the client goes away.
    Hang,
    /// Close the connection without sending a byte.
    Close,
    /// Abort the connection with a TCP RST (`SO_LINGER` 0, then close). Plain close on Unix.
    Reset,
    /// Send these bytes verbatim, then close or hold the connection.
    Raw { bytes: Vec<u8>, then: After },
    /// Send `head`, then one byte of body every `every`, forever.
    Trickle { head: Vec<u8>, every: Duration },
    /// Send `head`, then `piece` again and again until `limit` body bytes were written or the
    /// client went away. Bytes written are counted in [`Stats::body_bytes`].
    Flood {
        head: Vec<u8>,
        piece: Vec<u8>,
        limit: u64,
    },
    /// Read what the client sends first (one read: a TLS ClientHello, say), then close, reset
    /// or hold the connection without sending a byte.
    ReadOnce { then: After },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Close,
    Hold,
    /// Abort with a TCP RST (`SO_LINGER` 0); a plain close on Unix.
    Reset,
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

#[derive(Clone)]
pub enum Script {
    /// Perform this reply as soon as a connection is accepted, without reading a request.
    OnAccept(Reply),
    /// Read each request and answer with what the handler picks.
    PerRequest(Handler),
}

impl Script {
    pub fn each(f: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Script {
        Script::PerRequest(Arc::new(f))
    }

    /// The same reply to every request.
    pub fn always(reply: Reply) -> Script {
        Script::each(move |_| reply.clone())
    }

    /// `replies[i]` to request `i`, the last one to every later request.
    pub fn sequence(replies: Vec<Reply>) -> Script {
        assert!(!replies.is_empty());
        Script::each(move |r| replies[r.index.min(replies.len() - 1)].clone())
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    requests: Mutex<Vec<Request>>,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// Body bytes written by `Reply::Flood` before it stopped.
    pub body_bytes: AtomicU64,
}

impl Stats {
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Gaps between the arrival of consecutive requests.
    pub fn gaps(&self) -> Vec<Duration> {
        let reqs = self.requests();
        reqs.windows(2).map(|w| w[1].at - w[0].at).collect()
    }
}

/// A TCP server on 127.0.0.1, port 0. Stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let s = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        conns.spawn(serve_conn(stream, script.clone(), Arc::clone(&s)));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Server { addr, stats, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP server on a Unix socket in a fresh temporary directory. Stops when dropped.
pub struct UnixServer {
    pub path: PathBuf,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl UnixServer {
    pub async fn start(script: Script) -> UnixServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        let listener = UnixListener::bind(&path).expect("bind unix socket");
        let stats = Arc::new(Stats::default());
        let s = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(serve_conn(stream, script.clone(), Arc::clone(&s)));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        UnixServer {
            path,
            stats,
            task,
            _dir: dir,
        }
    }

    /// `unix:/tmp/…/app.sock`
    pub fn base_url(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A listener whose accept queue is full (never accepted from), so a new SYN is dropped by the
/// kernel and a connect attempt times out. Keep the returned value alive for the test.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

pub async fn blackhole() -> Blackhole {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // With backlog 0 the queue holds one connection; fill it until a connect stalls.
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    Blackhole {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

// ---------------------------------------------------------------------------------------------
// Replies.

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Whatever",
    }
}

/// A complete response.
pub fn http(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
    Reply::Http {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// `200 OK` with a body.
pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
    http(200, &[("Content-Type", "text/plain")], body)
}

/// A complete response after `delay`.
pub fn delayed(delay: Duration, reply: Reply) -> Reply {
    match reply {
        Reply::Http {
            status,
            headers,
            body,
            ..
        } => Reply::Http {
            status,
            headers,
            body,
            delay,
        },
        other => other,
    }
}

pub fn raw(bytes: impl Into<Vec<u8>>, then: After) -> Reply {
    Reply::Raw {
        bytes: bytes.into(),
        then,
    }
}

/// Deterministic pseudo-random bytes that cannot be mistaken for the start of an HTTP response.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    if let Some(b) = out.first_mut()
        && *b == b'H'
    {
        *b = 0;
    }
    out
}

/// An RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {day:02} {mon} {year} {h:02}:{m:02}:{s:02} GMT")
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// A server-side stream: TCP or Unix.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Abort the connection; TCP sends a RST.
    fn reset(self);
}

impl Conn for TcpStream {
    fn reset(self) {
        let _ = self.set_zero_linger();
        drop(self);
    }
}

impl Conn for UnixStream {
    fn reset(self) {
        drop(self);
    }
}

enum Then {
    KeepAlive,
    Close,
    Reset,
}

/// Request heads larger than this end the connection (the client is ours; this never happens).
const MAX_REQUEST_HEAD: usize = 1 << 20;

async fn serve_conn<C: Conn>(mut c: C, script: Script, stats: Arc<Stats>) {
    let conn = stats.connections.fetch_add(1, Ordering::SeqCst);
    let handler = match script {
        Script::OnAccept(reply) => {
            if let Then::Reset = perform(&mut c, reply, &stats).await {
                c.reset();
            }
            return;
        }
        Script::PerRequest(h) => h,
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(mut req) = read_request(&mut c, &mut buf).await else {
            return;
        };
        req.conn = conn;
        let reply = {
            let mut all = stats.requests.lock().unwrap();
            req.index = all.len();
            let reply = handler(&req);
            all.push(req);
            reply
        };
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let then = perform(&mut c, reply, &stats).await;
        stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        match then {
            Then::KeepAlive => {}
            Then::Close => return,
            Then::Reset => {
                c.reset();
                return;
            }
        }
    }
}

async fn perform<C: Conn>(c: &mut C, reply: Reply, stats: &Stats) -> Then {
    match reply {
        Reply::Http {
            status,
            headers,
            body,
            delay,
        } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (n, v) in &headers {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&body);
            if c.write_all(&bytes).await.is_err() || c.flush().await.is_err() {
                return Then::Close;
            }
            Then::KeepAlive
        }
        Reply::Hang => {
            drain_until_closed(c).await;
            Then::Close
        }
        Reply::Close => {
            let _ = c.shutdown().await;
            Then::Close
        }
        Reply::Reset => Then::Reset,
        Reply::Raw { bytes, then } => {
            let _ = c.write_all(&bytes).await;
            let _ = c.flush().await;
            match then {
                After::Hold => drain_until_closed(c).await,
                After::Close => {
                    let _ = c.shutdown().await;
                }
                After::Reset => return Then::Reset,
            }
            Then::Close
        }
        Reply::Trickle { head, every } => {
            if c.write_all(&head).await.is_err() {
                return Then::Close;
            }
            loop {
                tokio::time::sleep(every).await;
                if c.write_all(b"x").await.is_err() || c.flush().await.is_err() {
                    return Then::Close;
                }
            }
        }
        Reply::ReadOnce { then } => {
            let mut first = [0u8; 16 * 1024];
            let _ = c.read(&mut first).await;
            match then {
                After::Hold => drain_until_closed(c).await,
                After::Close => {
                    let _ = c.shutdown().await;
                    // Read on until the client goes: closing with unread bytes would be a RST.
                    drain_until_closed(c).await;
                }
                After::Reset => return Then::Reset,
            }
            Then::Close
        }
        Reply::Flood { head, piece, limit } => {
            if c.write_all(&head).await.is_err() {
                return Then::Close;
            }
            let mut written = 0u64;
            while written < limit {
                let n = piece.len().min((limit - written) as usize);
                if c.write_all(&piece[..n]).await.is_err() {
                    break;
                }
                written += n as u64;
                stats.body_bytes.store(written, Ordering::SeqCst);
            }
            Then::Close
        }
    }
}

/// Read and discard until the peer closes (or errors): a connection held open, bounded memory.
async fn drain_until_closed<C: Conn>(c: &mut C) {
    let mut sink = [0u8; 4096];
    loop {
        match c.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Read one request head and its `Content-Length` body. `None` at EOF.
async fn read_request<C: Conn>(c: &mut C, buf: &mut Vec<u8>) -> Option<Request> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let at = Instant::now();
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body_len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < body_len {
        let mut chunk = [0u8; 4096];
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf.drain(..body_len).collect();
    Some(Request {
        index: 0,
        conn: 0,
        method,
        path,
        headers,
        body,
        at,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Driving the engine.

/// Parse probe-file text (exercising the real format) into a plan.
pub fn plan(yaml: &str) -> Arc<Plan> {
    plan_with_env(yaml, &|_| None)
}

/// [`plan`], with `env` as the environment its `${VAR}` are read from.
pub fn plan_with_env(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Arc<Plan> {
    match routewatch::config::parse(yaml, "test.yaml", env) {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("probe file rejected: {e}\n---\n{yaml}"),
    }
}

/// Run a whole check (no state, no recovery configured).
pub async fn check(yaml: &str) -> RunReport {
    check_plan(plan(yaml)).await
}

/// Run a whole check of a plan (no state).
pub async fn check_plan(plan: Arc<Plan>) -> RunReport {
    routewatch::run::check(plan, Options::default(), std::future::pending::<&str>())
        .await
        .expect("check runs")
}

/// Run a check of a file with exactly one target and one route; return that route.
pub async fn one_route(yaml: &str) -> RouteResult {
    let report = check(yaml).await;
    assert_eq!(report.targets.len(), 1, "{report:#?}");
    assert_eq!(report.targets[0].routes.len(), 1, "{report:#?}");
    report.targets[0].routes[0].clone()
}

/// A probe file with one HTTP target at `base_url`, `settings` as target-level keys (YAML
/// lines, e.g. `"timeout: 300ms\nretries: 0"`) and `routes` as the YAML list items.
pub fn file(base_url: &str, settings: &str, routes: &str) -> String {
    let settings = indent(settings, 4);
    let routes = indent(routes, 6);
    format!("targets:\n  - name: app\n    base_url: {base_url}\n{settings}    routes:\n{routes}")
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// Elapsed-time assertion with a readable failure.
#[track_caller]
pub fn assert_between(what: &str, got: Duration, lo: Duration, hi: Duration) {
    assert!(
        got >= lo && got < hi,
        "{what}: {got:?} not within [{lo:?}, {hi:?})"
    );
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Exists, for tests that want a socket path nobody listens on.
pub fn missing_socket(dir: &Path) -> PathBuf {
    dir.join("nobody-here.sock")
}

/// The `routewatch` binary with nothing inherited that could steer it: no `ROUTEWATCH_CONFIG`,
/// `STATE_DIRECTORY` or `JOURNAL_STREAM`, no colour, and a system bus that does not exist (a
/// test never reaches a real one).
pub fn rw() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("routewatch").unwrap();
    c.env_remove("ROUTEWATCH_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("STATE_DIRECTORY")
        .env("NO_COLOR", "1")
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/routewatch-test-bus",
        );
    c
}

/// What `wait4` reports about a child that has finished.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub status: std::process::ExitStatus,
    /// CPU time the child used, user plus system: unlike wall time, a busy machine does not
    /// add to it.
    pub cpu: Duration,
    /// Peak resident set size in KiB (Linux reports `ru_maxrss` in KiB).
    pub max_rss_kib: u64,
}

/// Wait for `child` (once; its handle is consumed) with `wait4`, returning its exit status,
/// CPU time and peak RSS.
pub fn wait_with_rusage(child: std::process::Child) -> Reaped {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting once for our own child, with valid pointers to locals. `Child` never
        // waits for it afterwards: it is dropped below without `wait`.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert!(
            r == -1 && err.kind() == std::io::ErrorKind::Interrupted,
            "wait4({pid}) = {r}: {err}"
        );
    }
    drop(child);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Reaped {
        status: std::process::ExitStatus::from_raw(status),
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    }
}

/// A check that cannot run on this machine: a failure under CI (`ROUTEWATCH_CI` set, where
/// everything a check needs is installed), elsewhere a `skipping: …` line on stderr. The
/// caller returns right after, so the test passes without claiming the check ran.
#[track_caller]
pub fn skip_outside_ci(reason: &str) {
    assert!(
        std::env::var_os("ROUTEWATCH_CI").is_none(),
        "ROUTEWATCH_CI is set, so this check must run, but: {reason}"
    );
    say_skipped(&format!("skipping: {reason}"));
}

/// Whether the tests run as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The trust checks (probe file, drop-ins, state directory) apply only as root.
pub const TRUST_NEEDS_ROOT: &str = "the trust checks apply only when running as root";

/// `true` when not root, after [`skip_outside_ci`] with `reason` (under CI, where the tests
/// run as root, a failure): the caller returns at once.
#[track_caller]
pub fn skip_unless_root(reason: &str) -> bool {
    if is_root() {
        return false;
    }
    skip_outside_ci(reason);
    true
}

/// A line on the real stderr, past the test harness's output capture (which would show it
/// only for a failed test), so a skip is seen in every `cargo test` run.
pub fn say_skipped(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A Unix socket whose listener is alive but never accepts, its accept queue full (listened
/// with backlog 0 and filled): a new connect fails at once with EAGAIN, as against a service
/// deadlocked with its socket open. Keep the value alive for the test.
pub struct FullUnixListener {
    pub path: PathBuf,
    _listener: std::os::unix::net::UnixListener,
    _fillers: Vec<UnixStream>,
    _dir: tempfile::TempDir,
}

impl FullUnixListener {
    /// `unix:/tmp/…/full.sock`
    pub fn base_url(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

pub async fn full_unix_listener() -> FullUnixListener {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.sock");
    // SAFETY: plain socket calls on a descriptor we own; `addr` is a zeroed sockaddr_un with
    // a path shorter than `sun_path` (a temp dir), and the length passed is its size.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::listen(fd, 0), 0);
        std::os::unix::net::UnixListener::from_raw_fd(fd)
    };
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match UnixStream::connect(&path).await {
            Ok(s) => fillers.push(s),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                break;
            }
        }
    }
    assert!(fillers.len() < 16, "the accept queue never filled");
    FullUnixListener {
        path,
        _listener: listener,
        _fillers: fillers,
        _dir: dir,
    }
}

/// A command whose own peak memory can be read afterwards ([`Measured::peak_kib`]). It runs
/// under GNU `time`, a small process that forks it: a child spawned straight from a test
/// binary reports that binary's peak as its own (Linux carries the high-water mark of the
/// address space it leaves at exec into `ru_maxrss`), so a busy test process would make any
/// child look big.
pub struct Measured {
    pub cmd: std::process::Command,
    report: tempfile::NamedTempFile,
}

impl Measured {
    pub fn new(program: impl AsRef<std::ffi::OsStr>) -> Measured {
        let report = tempfile::NamedTempFile::new().expect("a temp file for the peak");
        let mut cmd = std::process::Command::new("/usr/bin/time");
        cmd.args(["-f", "%M", "-o"]).arg(report.path()).arg(program);
        Measured { cmd, report }
    }

    /// The measured command's peak RSS in KiB (the last line `time` wrote).
    pub fn peak_kib(&self) -> u64 {
        let text = std::fs::read_to_string(self.report.path()).expect("time's report");
        text.lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak in time's report: {text:?}"))
    }
}
