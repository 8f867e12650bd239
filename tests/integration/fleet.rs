//! Fleet-sized probe files: one in-flight budget (`max_in_flight`) for the whole run, however
//! many targets add up their `concurrency`, and targets that take turns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common;

/// What the listeners of one test saw, all of them together.
#[derive(Default)]
struct Seen {
    /// Connections accepted and not yet answered.
    open: AtomicUsize,
    /// The most of those at any moment.
    peak: AtomicUsize,
    /// Request paths in the order they arrived.
    paths: Mutex<Vec<String>>,
}

/// Listeners on 127.0.0.1 (port 0) that answer every request `200 ok` after `delay` and close
/// the connection, so no idle keep-alive socket is ever counted: what is open and unanswered
/// is what the client has in flight. A connection stops counting before its answer is
/// written, so the client cannot start its next request while this one still counts.
async fn listeners(n: usize, delay: Duration, seen: &Arc<Seen>) -> Vec<String> {
    let mut bases = Vec::new();
    for _ in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        let seen = Arc::clone(seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let now = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.peak.fetch_max(now, Ordering::SeqCst);
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                seen.open.fetch_sub(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    seen.paths.lock().unwrap().push(path);
                    tokio::time::sleep(delay).await;
                    seen.open.fetch_sub(1, Ordering::SeqCst);
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
    }
    bases
}

#[tokio::test]
async fn many_targets_never_have_more_than_max_in_flight_open_at_once() {
    const BUDGET: usize = 6;
    let seen = Arc::new(Seen::default());
    let bases = listeners(4, common::ms(10), &seen).await;
    // One big target first (its concurrency alone is above the budget), then 39 small ones
    // spread over the listeners: together they would have 16 + 39 × 8 requests in flight.
    let mut yaml = format!(
        "max_in_flight: {BUDGET}\ndefaults: {{ retries: 0, timeout: 30s }}\ntargets:\n  - name: big\n    base_url: {}\n    concurrency: 16\n    routes:\n",
        bases[0]
    );
    for r in 0..100 {
        yaml.push_str(&format!("      - path: /big/{r}\n"));
    }
    for t in 0..39 {
        yaml.push_str(&format!(
            "  - name: t{t}\n    base_url: {}\n    concurrency: 8\n    routes:\n",
            bases[t % bases.len()]
        ));
        for r in 0..5 {
            yaml.push_str(&format!("      - path: /t{t}/{r}\n"));
        }
    }
    let plan = common::plan(&yaml);
    assert_eq!(plan.max_in_flight, BUDGET);
    let prober = Arc::new(routewatch::probe::Prober::new(Arc::clone(&plan)).unwrap());
    let results = prober
        .probe_all(Instant::now() + Duration::from_secs(120), None)
        .await;

    let not_ok: Vec<_> = results
        .iter()
        .flatten()
        .filter(|r| r.outcome != routewatch::outcome::Outcome::Ok)
        .collect();
    assert!(not_ok.is_empty(), "{not_ok:#?}");
    let paths = seen.paths.lock().unwrap().clone();
    assert_eq!(paths.len(), 100 + 39 * 5, "one request per route");
    let peak = seen.peak.load(Ordering::SeqCst);
    assert!(
        peak <= BUDGET,
        "{peak} connections open at once; max_in_flight is {BUDGET}"
    );
    assert!(
        peak >= 2,
        "the budget is used in parallel, not one at a time"
    );
    // Targets take turns: every small target's first request comes long before the big
    // target's 100 are through (each target's first route is queued ahead of any second).
    for t in 0..39 {
        let first = paths
            .iter()
            .position(|p| p.starts_with(&format!("/t{t}/")))
            .unwrap();
        assert!(
            first < 40 + 2 * BUDGET,
            "target t{t} waited for request #{first}: {:?}",
            &paths[..first.min(60)]
        );
    }
}

#[test]
fn max_in_flight_is_checked_where_it_is_written() {
    let target =
        "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: / } ]\n";
    let err =
        routewatch::config::parse(&format!("max_in_flight: 0\n{target}"), "p.yaml", &|_| None)
            .unwrap_err()
            .to_string();
    assert!(
        err.starts_with("p.yaml:1:") && err.contains("max_in_flight 0 is out of range"),
        "{err}"
    );
    let plan = routewatch::config::parse(target, "p.yaml", &|_| None).unwrap();
    assert_eq!(plan.max_in_flight, 256, "the documented default");
}

/// Every target on one host (a reverse proxy in front of a fleet, addressed by one name and
/// port): one keep-alive pool serves them all. The server never sees more connections at
/// once than `max_in_flight` (a finished request's connection is back in the pool before its
/// slot goes to the next request, which then finds it instead of opening another), and the
/// pool keeps no more idle ones than that after the run.
#[tokio::test]
async fn one_host_never_sees_more_connections_than_max_in_flight() {
    const BUDGET: usize = 128;
    const TARGETS: usize = 400;
    let seen = Arc::new(OpenConnections::default());
    // The server in a runtime of its own (threads of its own), as a real server would be.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counted = Arc::clone(&seen);
    let base = server
        .spawn(async move { keep_alive_listeners(1, &counted).await.remove(0) })
        .await
        .unwrap();
    let prober = probe_four_routes_each(BUDGET, &vec![base; TARGETS]).await;
    assert_eq!(seen.requests.load(Ordering::SeqCst), TARGETS * 4);
    // Requests are done; what is still open is the pool's idle connections. A connection
    // the pool closed is seen by the server a moment later: wait for the count to settle.
    let mut open = seen.open_now();
    let settle = std::time::Instant::now() + Duration::from_secs(30);
    while open > BUDGET && std::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
        open = seen.open_now();
    }
    let peak = seen.peak.load(Ordering::SeqCst);
    drop(prober);
    server.shutdown_background();
    assert!(
        open <= BUDGET,
        "{open} connections kept open after the run (peak {peak}); max_in_flight is {BUDGET}"
    );
    assert!(
        peak <= BUDGET,
        "{peak} connections open at once; max_in_flight is {BUDGET}"
    );
}

/// One target per base (`concurrency: 2`, four routes each) under `max_in_flight: budget`,
/// probed once; every route must be ok. Returns the prober (its pools still open).
async fn probe_four_routes_each(budget: usize, bases: &[String]) -> Arc<routewatch::probe::Prober> {
    let mut yaml = format!(
        "max_in_flight: {budget}\ndefaults: {{ retries: 0, timeout: 30s, concurrency: 2 }}\ntargets:\n"
    );
    for (t, base) in bases.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: t{t}\n    base_url: {base}\n    routes:\n"
        ));
        for r in 0..4 {
            yaml.push_str(&format!("      - path: /t{t}/{r}\n"));
        }
    }
    let plan = common::plan(&yaml);
    let prober = Arc::new(routewatch::probe::Prober::new(Arc::clone(&plan)).unwrap());
    let results = prober
        .probe_all(Instant::now() + Duration::from_secs(120), None)
        .await;
    assert!(
        results
            .iter()
            .flatten()
            .all(|r| r.outcome == routewatch::outcome::Outcome::Ok),
        "{results:#?}"
    );
    prober
}

/// Connections from the client that are open at once, as a keep-alive server sees them: a
/// connection counts from its accept until the client has closed it. At each accept the open
/// ones are swept for a close already queued (`recv` with `MSG_PEEK`), so a client that closed
/// one socket before opening the next is never counted twice.
#[derive(Default)]
struct OpenConnections {
    open: Mutex<Vec<(std::os::fd::RawFd, Arc<std::sync::atomic::AtomicBool>)>>,
    peak: AtomicUsize,
    requests: AtomicUsize,
}

impl OpenConnections {
    fn accepted(&self, fd: std::os::fd::RawFd) -> Arc<std::sync::atomic::AtomicBool> {
        let mut open = self.open.lock().unwrap();
        open.retain(|(fd, gone)| !gone.load(Ordering::SeqCst) && !peer_closed(*fd));
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        open.push((fd, Arc::clone(&gone)));
        self.peak.fetch_max(open.len(), Ordering::SeqCst);
        gone
    }

    /// Connections the client still has open.
    fn open_now(&self) -> usize {
        let mut open = self.open.lock().unwrap();
        open.retain(|(fd, gone)| !gone.load(Ordering::SeqCst) && !peer_closed(*fd));
        open.len()
    }
}

/// Whether the peer has closed the connection (its FIN is queued), without consuming data.
fn peer_closed(fd: std::os::fd::RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local buffer on a socket the server still owns (it is
    // marked gone before its stream is dropped).
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

/// Keep-alive listeners on 127.0.0.1 (port 0), one per target: `200 ok` to every request,
/// connections kept open until the client closes them.
async fn keep_alive_listeners(n: usize, seen: &Arc<OpenConnections>) -> Vec<String> {
    use std::os::fd::AsRawFd;
    let mut bases = Vec::new();
    for _ in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        let seen = Arc::clone(seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let gone = seen.accepted(stream.as_raw_fd());
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            seen.requests.fetch_add(1, Ordering::SeqCst);
                            if stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await
                                .is_err()
                            {
                                break;
                            }
                            continue;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    gone.store(true, Ordering::SeqCst);
                });
            }
        });
    }
    bases
}

/// The budget bounds sockets, not only requests: idle keep-alive connections in the pools
/// count too, so a server never sees more than `max_in_flight` connections from one run.
#[tokio::test]
async fn open_connections_never_exceed_max_in_flight_across_many_targets() {
    const BUDGET: usize = 8;
    const TARGETS: usize = 50;
    let seen = Arc::new(OpenConnections::default());
    let bases = keep_alive_listeners(TARGETS, &seen).await;
    probe_four_routes_each(BUDGET, &bases).await;
    assert_eq!(seen.requests.load(Ordering::SeqCst), TARGETS * 4);
    let peak = seen.peak.load(Ordering::SeqCst);
    assert!(
        peak <= BUDGET,
        "{peak} connections open at once; max_in_flight is {BUDGET}"
    );
}
