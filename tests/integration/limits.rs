//! Bounded time, memory and file descriptors, and a clean stop on SIGTERM/SIGINT. These run
//! the real binary against a local tokio server (port 0).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;

/// Body bytes all `/huge` responses have written so far (only one test asks for `/huge`).
static HUGE_SENT: AtomicU64 = AtomicU64::new(0);

/// Paths of the `/ok*` requests the server has answered (recorded as it starts to write the
/// answer), in order.
static ANSWERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn answered(path: &str) -> bool {
    ANSWERED.lock().unwrap().iter().any(|p| p == path)
}

/// `/ok*` 200 keep-alive, `/huge` 500 MB of zeros as fast as the socket takes them,
/// `/hang` never answers. Runs on its own runtime thread.
fn server() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut used = 0;
                    loop {
                        let Ok(n) = s.read(&mut buf[used..]).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        used += n;
                        let Some(end) = buf[..used].windows(4).position(|w| w == b"\r\n\r\n")
                        else {
                            continue;
                        };
                        let path = String::from_utf8_lossy(&buf[..end])
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("/")
                            .to_string();
                        buf.copy_within(end + 4..used, 0);
                        used -= end + 4;
                        if path.starts_with("/hang") {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        if path.starts_with("/huge") {
                            let total: u64 = 500 * 1024 * 1024;
                            let head =
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
                            if s.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = vec![0u8; 64 * 1024];
                            let mut sent = 0;
                            while sent < total {
                                if s.write_all(&chunk).await.is_err() {
                                    return;
                                }
                                sent += chunk.len() as u64;
                                HUGE_SENT.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                            }
                            return;
                        }
                        // Recorded before the answer goes out: once the client has it, the
                        // record is there, however late this task runs again.
                        ANSWERED.lock().unwrap().push(path);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("routewatch")
}

fn probe_file(dir: &Path, port: u16, defaults: &str, routes: &[String]) -> PathBuf {
    let p = dir.join("probes.yaml");
    let mut text = format!(
        "defaults: {{ {defaults} }}\ntargets:\n  - name: t\n    base_url: http://127.0.0.1:{port}\n    routes:\n"
    );
    for r in routes {
        text.push_str(&format!("      - {r}\n"));
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn json_of(child: &mut Child) -> serde_json::Value {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_500_mb_response_is_read_only_up_to_max_body_in_bounded_memory() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        port,
        "timeout: 60s, retries: 0, max_body: 64KiB",
        &[
            "{ path: /huge, class: core }".into(),
            "{ path: /huge/checked, class: core, expect: { body_contains: needle } }".into(),
        ],
    );
    let start = Instant::now();
    let mut m = common::Measured::new(bin());
    let mut child = m
        .cmd
        .args(["check", "--format", "json", "--no-recover", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doc = json_of(&mut child);
    let mut reaped = common::wait_with_rusage(child);
    reaped.max_rss_kib = m.peak_kib();
    let elapsed = start.elapsed();
    let routes = &doc["targets"][0]["routes"];
    assert_eq!(routes[0]["outcome"], "ok", "{doc}");
    assert_eq!(routes[1]["outcome"], "too_large", "{doc}");
    assert_eq!(reaped.status.code(), Some(1));
    // Stopped reading early, counted on the wire rather than timed: with the client gone the
    // server's writes fail, so what it managed to write is what the two probes read plus the
    // socket buffers (a few MB each on loopback), not the 1000 MB a draining client takes.
    // The timeout is long so a busy machine can never turn either probe into a timeout.
    let sent = HUGE_SENT.load(Ordering::SeqCst);
    assert!(
        sent < 64 << 20,
        "the server wrote {sent} bytes in {elapsed:?}: reading did not stop at max_body"
    );
    let rss_kib = reaped.max_rss_kib;
    assert!(rss_kib < 48 * 1024, "peak RSS {rss_kib} KiB");
}

/// `check --format json` of `cfg` under `ulimit -n fds`: exit status and the JSON report.
fn check_under_ulimit(
    fds: u32,
    cfg: &Path,
    state_dir: &Path,
) -> (std::process::ExitStatus, serde_json::Value) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {fds} && exec \"$0\" check --format json --no-recover --config \"$1\" --state-dir \"$2\""))
        .arg(bin())
        .arg(cfg)
        .arg(state_dir)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: status {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status, doc)
}

#[test]
fn two_thousand_routes_under_ulimit_256_complete_without_emfile() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let routes: Vec<String> = (0..2000)
        .map(|i| format!("{{ path: /ok/{i}, class: core }}"))
        .collect();
    let cfg = probe_file(
        dir.path(),
        port,
        "timeout: 5s, retries: 0, concurrency: 1000",
        &routes,
    );
    let (status, doc) = check_under_ulimit(256, &cfg, &dir.path().join("st"));
    assert_eq!(status.code(), Some(0), "{}", doc["summary"]);
    assert_eq!(doc["summary"]["ok"], 2000, "{}", doc["summary"]);
}

#[test]
fn many_targets_under_ulimit_128_keep_no_idle_sockets_and_complete() {
    // 300 targets: more than the descriptor budget could keep one idle socket for each.
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let mut text =
        String::from("defaults: { timeout: 5s, retries: 0, run_timeout: 10s }\ntargets:\n");
    for i in 0..300 {
        text.push_str(&format!(
            "  - name: t{i}\n    base_url: http://127.0.0.1:{port}\n    routes: [ {{ path: /ok/a }}, {{ path: /ok/b }} ]\n"
        ));
    }
    let cfg = dir.path().join("many.yaml");
    std::fs::write(&cfg, text).unwrap();
    let (status, doc) = check_under_ulimit(128, &cfg, &dir.path().join("st"));
    assert_eq!(doc["summary"]["ok"], 600, "{}", doc["summary"]);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_whole_run_deadline_ends_what_is_left_as_timeout() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        port,
        "timeout: 60s, retries: 3, run_timeout: 3s",
        &[
            "{ path: /hang, class: core }".into(),
            "{ path: /ok, class: core }".into(),
        ],
    );
    let start = Instant::now();
    let mut child = Command::new(bin())
        .args(["check", "--format", "json", "--no-recover", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doc = json_of(&mut child);
    let status = child.wait().unwrap();
    // Without the run deadline the hung route would wait out its 60s timeout (four times):
    // half of one timeout is far beyond anything a busy machine adds to a 3s deadline.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the run deadline did not end the run: {:?}",
        start.elapsed()
    );
    // A route cut short before a full attempt (its timeout is 60s) proves nothing about the
    // service: the target is unknown (exit 0) and a warning says why.
    assert_eq!(status.code(), Some(0), "{doc}");
    assert_eq!(doc["targets"][0]["verdict"], "unknown", "{doc}");
    assert_eq!(doc["targets"][0]["routes"][0]["outcome"], "timeout");
    assert_eq!(doc["targets"][0]["routes"][1]["outcome"], "ok");
    assert!(doc["warnings"].to_string().contains("not probed"), "{doc}");
}

fn interrupted_by(signal: &str) {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    // A path of its own, so this test can tell when its quick route has been answered.
    let quick = format!("/ok/{signal}");
    let cfg = probe_file(
        dir.path(),
        port,
        "timeout: 60s, retries: 0",
        &[
            "{ path: /hang, class: core }".into(),
            format!("{{ path: {quick}, class: core }}"),
        ],
    );
    let st = dir.path().join("st");
    let mut child = Command::new(bin())
        .args(["check", "-vv", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&st)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr as it comes: at -vv the quick route says when it has finished, so the
    // signal comes after that however busy the machine is.
    let pipe = child.stderr.take().unwrap();
    let (finished, quick_done) = std::sync::mpsc::channel();
    let needle = format!("event=probe_ok target=t route={quick} ");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)) {
            let line = line.unwrap();
            if line.contains(&needle) {
                let _ = finished.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    quick_done
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{quick} never finished"));
    assert!(answered(&quick), "the server saw {quick}");
    let sent = Instant::now();
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let stderr = reader.join().unwrap();
    // Ignoring the signal would wait out the hung route's 60s timeout; half of that is far
    // beyond anything a busy machine adds to a prompt stop.
    assert!(took < Duration::from_secs(30), "stopped in {took:?}");
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("event=interrupted signal=SIG{signal}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("interrupted after 1 of 2 routes")
            && stderr.contains(&format!("t {quick} core ok")),
        "prints what it had: {stderr}"
    );
    // The state file is never half-written: absent (the run did not get that far) or valid.
    if let Ok(bytes) = std::fs::read(st.join("state.json")) {
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("valid state");
    }
}

#[test]
fn sigterm_stops_a_run_promptly_and_prints_what_it_had() {
    interrupted_by("TERM");
}

#[test]
fn sigint_stops_a_run_too() {
    interrupted_by("INT");
}

/// A library caller stops a run with its shutdown future: the run ends as interrupted with
/// what the CLI reports for a SIGTERM (the routes that finished, out of how many), without
/// waiting for the hung route and without writing the state file.
#[tokio::test]
async fn a_run_stopped_by_its_shutdown_future_ends_interrupted_with_what_had_finished() {
    use routewatch::outcome::Outcome;
    use routewatch::plan::Class;
    use routewatch::run::{FinishedRoute, RunError};

    let server = common::Server::start(common::Script::each(|r| {
        if r.path.starts_with("/hang") {
            common::Reply::Hang
        } else {
            common::ok("ok")
        }
    }))
    .await;
    let plan = common::plan(&common::file(
        &server.base_url(),
        "timeout: 60s\nretries: 0",
        "- { path: /hang, class: core }\n- { path: /ok, class: core }",
    ));
    let dir = tempfile::tempdir().unwrap();
    // The stop comes once the quick route has finished (told by the caller's own observer).
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let opts = routewatch::run::Options {
        state_dir: Some(dir.path().join("st")),
        observer: Some(std::sync::Arc::new(move |_, _, r| {
            if r.path == "/ok"
                && let Some(tx) = tx.lock().unwrap().take()
            {
                let _ = tx.send(());
            }
        })),
        ..Default::default()
    };
    let shutdown = async {
        let _ = rx.await;
        "test stop"
    };
    // Without the stop the hung route would hold the run for its 60 s timeout; the bound is
    // only there so a broken stop fails instead of hanging the suite.
    let ended = tokio::time::timeout(
        Duration::from_secs(50),
        routewatch::run::check(plan, opts, shutdown),
    )
    .await
    .expect("the shutdown future ends the run");
    let Err(RunError::Interrupted(stopped)) = ended else {
        panic!("not interrupted: {ended:?}");
    };
    assert_eq!(stopped.signal, "test stop");
    assert_eq!(stopped.total, 2);
    assert_eq!(
        stopped.finished,
        vec![FinishedRoute {
            target: "app".into(),
            path: "/ok".into(),
            class: Class::Core,
            outcome: Outcome::Ok,
        }]
    );
    // The lines the CLI prints for it.
    assert_eq!(stopped.finished[0].to_string(), "app /ok core ok");
    assert_eq!(
        RunError::Interrupted(stopped).to_string(),
        "interrupted by test stop after 1 of 2 routes"
    );
    assert!(
        !dir.path().join("st").join("state.json").exists(),
        "a stopped run writes no state"
    );
}

/// A shutdown that has already happened wins before any traffic.
#[tokio::test]
async fn a_run_whose_shutdown_already_resolved_sends_nothing() {
    let server = common::Server::start(common::Script::always(common::ok("ok"))).await;
    let plan = common::plan(&common::file(
        &server.base_url(),
        "",
        "- { path: /a }\n- { path: /b }",
    ));
    let ended = routewatch::run::check(
        plan,
        routewatch::run::Options::default(),
        std::future::ready("SIGTERM"),
    )
    .await;
    let Err(routewatch::run::RunError::Interrupted(stopped)) = ended else {
        panic!("not interrupted: {ended:?}");
    };
    assert_eq!((stopped.signal.as_str(), stopped.total), ("SIGTERM", 2));
    assert!(stopped.finished.is_empty(), "{stopped:?}");
    assert_eq!(server.stats.connection_count(), 0, "no traffic");
}

/// The file `bench/compare.sh` validates: `targets` targets of `routes` routes each.
fn fleet_file(dir: &Path, targets: usize, routes: usize) -> PathBuf {
    let p = dir.join(format!("fleet-{targets}x{routes}.yaml"));
    let mut text = String::from(
        "defaults: { timeout: 10s, connect_timeout: 3s, retries: 2, backoff: 500ms, max_backoff: 10s, concurrency: 256, max_body: 64KiB }\ntargets:\n",
    );
    for t in 1..=targets {
        text.push_str(&format!(
            "  - name: bench{t}\n    base_url: http://127.0.0.1:9\n    routes:\n"
        ));
        for i in 1..=routes {
            text.push_str(&format!(
                "      - {{ path: /fast/t{t}-{i}, class: core }}\n"
            ));
        }
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// CPU time of `routewatch validate` on a file (it must pass).
fn validate_cpu(file: &Path) -> Duration {
    let child = Command::new(bin())
        .args(["validate", "--config"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reaped = common::wait_with_rusage(child);
    assert!(reaped.status.success(), "validate {}", file.display());
    reaped.cpu
}

/// `validate` does work in proportion to the file: four times the routes (in one target, or
/// spread over four times the targets) costs about four times the CPU, never the sixteen a
/// quadratic step (a duplicate check, a position lookup from the start of the text) would
/// take. CPU time, not wall time: a busy machine does not add to it. The smallest of three
/// runs of each size keeps a stray page fault or cache miss from deciding.
#[test]
fn validate_costs_cpu_in_proportion_to_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    for (small, large) in [((1, 2_500), (1, 10_000)), ((500, 5), (2_000, 5))] {
        let best = |(t, r): (usize, usize)| {
            let f = fleet_file(dir.path(), t, r);
            (0..3).map(|_| validate_cpu(&f)).min().unwrap()
        };
        let (a, b) = (best(small), best(large));
        // Linear is 4x (less, with the fixed start-up cost); 6x leaves room for noise and
        // allocator growth, and a quadratic step shows as 10x or more.
        assert!(
            b < a * 6,
            "{small:?} took {a:?} of CPU, {large:?} took {b:?}: more than 6x for 4x the routes"
        );
    }
}
