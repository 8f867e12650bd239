//! What routewatch sends about itself: the dead-man's-switch ping (`--ping`, `ping:`) and
//! notifications (`notify:`), against real local receivers on 127.0.0.1 port 0.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::rw;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub method: String,
    pub path: String,
    /// The head, header names as sent.
    pub head: String,
    pub body: String,
}

/// How a receiver answers.
#[derive(Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Accept, read, never answer.
    Hang,
}

/// A receiver on 127.0.0.1 port 0: every request is sent down the channel.
pub fn receiver(answer: Answer) -> (u16, mpsc::Receiver<Got>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&got[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while got.len() < head_end + len {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("").to_string();
                let path = words.next().unwrap_or("").to_string();
                let body = String::from_utf8_lossy(&got[head_end..]).to_string();
                let _ = tx.send(Got {
                    method,
                    path,
                    head,
                    body,
                });
                match answer {
                    Answer::Status(code) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                    Answer::Hang => std::thread::sleep(Duration::from_secs(60)),
                }
            });
        }
    });
    (port, rx)
}

/// Everything received until `n` requests came or a long time passed (then what came).
pub fn take(rx: &mpsc::Receiver<Got>, n: usize) -> Vec<Got> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(g) => out.push(g),
            Err(_) => break,
        }
    }
    out
}

/// Whatever else arrives in a short while: what must not have been sent.
pub fn more(rx: &mpsc::Receiver<Got>) -> Vec<Got> {
    let mut out = Vec::new();
    while let Ok(g) = rx.recv_timeout(Duration::from_millis(300)) {
        out.push(g);
    }
    out
}

/// A service: `/ok` answers 200, `/hang` never, anything else 500.
pub fn service() -> u16 {
    receiver_service()
}

fn receiver_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 2048];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                if head.starts_with("GET /hang ") {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                }
                let code = if head.starts_with("GET /ok ") {
                    200
                } else {
                    500
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            });
        }
    });
    port
}

pub fn probe_file(dir: &Path, port: u16, path: &str, extra: &str) -> PathBuf {
    let p = dir.join("probes.yaml");
    std::fs::write(
        &p,
        format!(
            "{extra}targets:\n  - name: api\n    base_url: http://127.0.0.1:{port}\n    routes: [ {{ path: {path}, class: core }} ]\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn ping_sends_start_then_the_exit_code_with_the_summary_line() {
    let svc = service();
    let (hc, rx) = receiver(Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    for (path, code) in [("/ok", 0), ("/down", 1)] {
        let cfg = probe_file(dir.path(), svc, path, "");
        let o = rw()
            .args(["check", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("st"))
            .args(["--ping", &format!("http://127.0.0.1:{hc}/ping/uuid-1234")])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{o:?}");
        let got = take(&rx, 2);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0].method.as_str(), got[0].path.as_str()),
            ("POST", "/ping/uuid-1234/start")
        );
        assert_eq!(got[1].path, format!("/ping/uuid-1234/{code}"));
        assert!(
            got[1]
                .body
                .contains(if code == 0 { "1 ok" } else { "1 http error" }),
            "the summary line: {:?}",
            got[1].body
        );
        assert!(
            got[1]
                .head
                .to_ascii_lowercase()
                .contains("user-agent: routewatch/"),
            "{}",
            got[1].head
        );
    }
}

/// A report that cannot be written (a full disk) ends the run in exit 4: the ping says 4, not
/// the probes' 0, for a dead-man's switch must not hear "fine" from a run whose report is lost.
#[test]
fn a_report_that_cannot_be_written_is_pinged_as_exit_4() {
    if crate::common::skip_unless_root("mounting a tmpfs needs root") {
        return;
    }
    let svc = service();
    let (hc, rx) = receiver(Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), svc, "/ok", "");
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    // A private mount namespace with a small tmpfs, filled, where the report goes.
    let o = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o size=64k,mode=0755 tmpfs \"$1\" || exit 97; \
             head -c 1M /dev/zero > \"$1/fill\" 2>/dev/null; shift; exec \"$@\"",
        )
        .arg("sh")
        .arg(&full)
        .arg(env!("CARGO_BIN_EXE_routewatch"))
        .args(["check", "--format", "json", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--output")
        .arg(full.join("report.json"))
        .args(["--ping", &format!("http://127.0.0.1:{hc}/k")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let got = take(&rx, 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].path, "/k/4", "{got:?}");
    assert!(
        got[1].body.contains("the report could not be written"),
        "{:?}",
        got[1].body
    );
}

#[test]
fn a_failed_ping_is_a_warning_that_shows_no_key_and_keeps_the_exit_code() {
    let svc = service();
    let (hc, rx) = receiver(Answer::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        svc,
        "/ok",
        &format!("ping: http://127.0.0.1:{hc}/${{PING_KEY}}\n"),
    );
    let o = rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .env("PING_KEY", "s3cret-ping-key")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let got = take(&rx, 2);
    assert_eq!(got[0].path, "/s3cret-ping-key/start");
    assert_eq!(got[1].path, "/s3cret-ping-key/0");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stderr.contains("level=warn event=ping_failed") && stderr.contains("HTTP 500"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret") && !stdout.contains("s3cret"),
        "{stderr}{stdout}"
    );

    // A probe file that does not load is a ping with exit code 2.
    std::fs::write(&cfg, "targets: [ { name: x } ]\n").unwrap();
    let o = rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .args(["--ping", &format!("http://127.0.0.1:{hc}/k")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let got = take(&rx, 1);
    assert_eq!(got[0].path, "/k/2");

    let bad = rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .args(["--ping", "ftp://hc.example/secret-uuid"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--ping") && !stderr.contains("secret-uuid"),
        "{stderr}"
    );
}

#[test]
fn a_hung_receiver_costs_a_bounded_wait_and_a_warning() {
    let svc = service();
    let (hc, rx) = receiver(Answer::Hang);
    let dir = tempfile::tempdir().unwrap();
    let cfg = notify_file(
        dir.path(),
        svc,
        "/down",
        &format!("  - {{ url: http://127.0.0.1:{hc}/hook }}\n"),
        "",
    );
    let started = std::time::Instant::now();
    let o = rw()
        .args(["check", "--format", "json", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .args(["--ping", &format!("http://127.0.0.1:{hc}/k")])
        .output()
        .unwrap();
    // 5 s for the start ping and 10 s for the rest; far below, a wait that was not bounded.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["status"], "unhealthy");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.matches("event=ping_failed").count(), 2, "{stderr}");
    assert!(stderr.contains("event=notify_failed"), "{stderr}");
    let mut paths: Vec<String> = take(&rx, 3).into_iter().map(|g| g.path).collect();
    paths.sort();
    assert_eq!(paths, ["/hook", "/k/1", "/k/start"]);
    assert!(more(&rx).is_empty());
}

/// A probe file with `notify:` entries, for the target `api` at `path`.
fn notify_file(dir: &Path, svc: u16, path: &str, notify: &str, target_extra: &str) -> PathBuf {
    let p = dir.join("probes.yaml");
    std::fs::write(
        &p,
        format!(
            "notify:\n{notify}targets:\n  - name: api\n    base_url: http://127.0.0.1:{svc}\n    timeout: 300ms\n    retries: 0\n{target_extra}    routes: [ {{ path: {path}, class: core }} ]\n"
        ),
    )
    .unwrap();
    p
}

fn run_check(cfg: &Path, state: &Path) -> std::process::Output {
    rw().args(["check", "--config"])
        .arg(cfg)
        .arg("--state-dir")
        .arg(state)
        .env("HOOK_KEY", "hook-s3cret")
        .env("HOOK_TOKEN", "token-s3cret")
        .output()
        .unwrap()
}

#[test]
fn each_transition_is_notified_once_in_each_format_and_secrets_stay_out_of_the_logs() {
    let svc = service();
    let (port, rx) = receiver(Answer::Status(200));
    let (broken, _broken_rx) = receiver(Answer::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    let notify = format!(
        "  - url: http://127.0.0.1:{port}/json/${{HOOK_KEY}}\n    headers: {{ Authorization: \"Bearer ${{HOOK_TOKEN}}\" }}\n  - {{ url: http://127.0.0.1:{port}/slack, format: slack }}\n  - {{ url: http://127.0.0.1:{port}/ntfy, format: ntfy }}\n  - {{ url: \"http://127.0.0.1:{broken}/x/${{HOOK_KEY}}\" }}\n"
    );
    let down = notify_file(dir.path(), svc, "/down", &notify, "");
    let o = run_check(&down, &st);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let mut got = take(&rx, 3);
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got.len(), 3, "{got:?}");
    let paths: Vec<&str> = got.iter().map(|g| g.path.as_str()).collect();
    assert_eq!(paths, ["/json/hook-s3cret", "/ntfy", "/slack"]);
    let doc: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["event"], "unhealthy");
    assert_eq!(doc["target"], "api");
    assert_eq!(doc["verdict"], "unhealthy");
    assert_eq!(doc["reminder"], false);
    assert_eq!(doc["failed_routes"][0]["path"], "/down");
    assert_eq!(doc["failed_routes"][0]["outcome"], "http_error");
    assert!(doc["host"].as_str().is_some_and(|h| !h.is_empty()), "{doc}");
    assert!(doc["routewatch_version"].is_string(), "{doc}");
    assert!(
        got[0].head.contains("Bearer token-s3cret"),
        "{}",
        got[0].head
    );
    let ntfy = &got[1];
    let lower = ntfy.head.to_ascii_lowercase();
    assert!(
        lower.contains("title: routewatch: api unhealthy"),
        "{}",
        ntfy.head
    );
    assert!(lower.contains("priority: 4"), "{}", ntfy.head);
    assert!(
        ntfy.body.contains("api is unhealthy: /down http_error"),
        "{}",
        ntfy.body
    );
    let slack: serde_json::Value = serde_json::from_str(&got[2].body).unwrap();
    assert!(
        slack["text"].as_str().unwrap().contains("api is unhealthy"),
        "{slack}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.matches("event=notify_failed").count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP 500"), "{stderr}");
    let out = format!("{stderr}{}", String::from_utf8_lossy(&o.stdout));
    assert!(!out.contains("s3cret"), "{out}");

    // The same verdict again: nothing.
    let o = run_check(&down, &st);
    assert_eq!(o.status.code(), Some(1));
    assert!(more(&rx).is_empty());

    // Back to healthy: resolved, once.
    let ok = notify_file(dir.path(), svc, "/ok", &notify, "");
    let o = run_check(&ok, &st);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let got = take(&rx, 3);
    assert_eq!(got.len(), 3);
    let json = got.iter().find(|g| g.path.starts_with("/json/")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(doc["event"], "resolved");
    assert_eq!(doc["verdict"], "healthy");
    let o = run_check(&ok, &st);
    assert_eq!(o.status.code(), Some(0));
    assert!(more(&rx).is_empty());
}

#[test]
fn after_runs_waits_and_a_reminder_repeats_once_its_interval_passed() {
    let svc = service();
    let (port, rx) = receiver(Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    let notify =
        format!("  - {{ url: http://127.0.0.1:{port}/hook, after_runs: 2, reminder: 4h }}\n");
    let down = notify_file(dir.path(), svc, "/down", &notify, "");
    run_check(&down, &st);
    assert!(more(&rx).is_empty(), "one bad run of two");
    run_check(&down, &st);
    let got = take(&rx, 1);
    let doc: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        (doc["event"].as_str(), doc["consecutive_unhealthy"].as_u64()),
        (Some("unhealthy"), Some(2))
    );
    run_check(&down, &st);
    assert!(more(&rx).is_empty(), "within the reminder interval");
    // Five hours pass (the mark is set back rather than the clock moved on).
    let path = st.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for mark in state["targets"]["api"]["notified"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        let at = mark["open_at"].as_u64().unwrap();
        mark["open_at"] = (at - 5 * 3600).into();
    }
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    run_check(&down, &st);
    let got = take(&rx, 1);
    let doc: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        (doc["event"].as_str(), doc["reminder"].as_bool()),
        (Some("unhealthy"), Some(true))
    );
    run_check(&down, &st);
    assert!(more(&rx).is_empty());
}

#[test]
fn a_refused_recovery_of_a_hang_is_notified_once_with_its_reason() {
    let svc = service();
    let (port, rx) = receiver(Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    let notify = format!("  - {{ url: http://127.0.0.1:{port}/hook }}\n");
    let hang = notify_file(
        dir.path(),
        svc,
        "/hang",
        &notify,
        "    unit: api.service\n    recovery: { action: kill }\n",
    );
    let o = run_check(&hang, &st);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let mut events: Vec<serde_json::Value> = take(&rx, 2)
        .iter()
        .map(|g| serde_json::from_str(&g.body).unwrap())
        .collect();
    events.sort_by_key(|d| d["event"].as_str().unwrap().to_string());
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "refused");
    assert_eq!(events[1]["event"], "unhealthy");
    assert_eq!(events[0]["recovery"]["decision"], "refuse");
    assert!(
        events[0]["recovery"]["reason"]
            .as_str()
            .unwrap()
            .contains("api.service"),
        "{}",
        events[0]
    );
    assert!(
        events[0]["text"].as_str().unwrap().contains("refused"),
        "{}",
        events[0]
    );
    run_check(&hang, &st);
    assert!(more(&rx).is_empty(), "refused once per episode");
}
