//! What gathering the kernel evidence costs for a service with many threads: starts a Python
//! process with N threads (default 100) sleeping on a lock and a listener with waiting
//! connections, then times `evidence::gather` on it, like recovery does before a decision.
//!
//!     cargo run --release --example evidence_cost [THREADS]

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use routewatch::evidence::{self, Address};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().unwrap().port()
    };
    let script = format!(
        "import socket, threading\nlock = threading.Lock()\nlock.acquire()\nfor _ in range({threads} - 1):\n    threading.Thread(target=lock.acquire, daemon=True).start()\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', {port}))\ns.listen(16)\nprint('ready', flush=True)\nlock.acquire()\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _held: Vec<TcpStream> = (0..5)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let pid = child.id();
    let cgroup = routewatch::systemd::process_cgroup(pid).unwrap_or_default();
    let addr = Address::Tcp {
        ip: "127.0.0.1".parse().unwrap(),
        port,
    };
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..21 {
        let t = Instant::now();
        let ev = evidence::gather(
            Ok(&addr),
            &cgroup,
            &cgroup,
            pid,
            evidence::cpu_usage_usec(&cgroup).map(|c| (c, Duration::from_secs(1))),
        );
        times.push(t.elapsed());
        last = Some(ev);
    }
    times.sort();
    let _ = child.kill();
    let _ = child.wait();
    let ev = last.unwrap();
    println!("{}", ev.summary());
    println!(
        "gather for {} thread(s): min {:?}, median {:?}, max {:?} (21 runs)",
        ev.threads.as_ref().map_or(0, |t| t.total),
        times[0],
        times[10],
        times[20]
    );
}
