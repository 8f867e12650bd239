//! Fitting other people's tooling: JSON Schema of the probe file, completions, man page,
//! JUnit and Prometheus outputs checked by independent parsers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command as Std;

use crate::common::rw;

const PY: &str = "/usr/bin/python3";

/// The independent parsers (Debian's python3-jsonschema, -yaml, -prometheus-client) are
/// installed by `.ci/run`, and under CI (`ROUTEWATCH_CI` set) a missing one fails the test.
/// Elsewhere it skips `check` (named in a `skipping: …` line) and the caller returns: every
/// use of [`checker`] goes through here first.
fn python_ready(check: &str) -> bool {
    let ok = Std::new(PY)
        .args(["-c", "import jsonschema, yaml, prometheus_client"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("ROUTEWATCH_CI").is_none(),
            "CI must have python3-jsonschema, python3-yaml, python3-prometheus-client for {check}"
        );
        // Straight to stderr, past the harness's capture, so the skip shows in every run.
        let _ = writeln!(
            std::io::stderr(),
            "skipping {check}: install python3-jsonschema python3-yaml python3-prometheus-client"
        );
    }
    ok
}

fn checker(args: &[&std::ffi::OsStr]) -> String {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/check_outputs.py");
    let o = Std::new(PY).arg(tool).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `/ok` 200, `/busy` 429, everything else 503; closes after each reply.
pub(crate) fn server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
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
                let path = String::from_utf8_lossy(&got)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let reply: &[u8] = match path.as_str() {
                    "/ok" => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    "/busy" => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    _ => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                };
                let _ = s.write_all(reply);
            });
        }
    });
    port
}

fn mixed_probe_file(dir: &Path, port: u16) -> std::path::PathBuf {
    let p = dir.join("probes.yaml");
    std::fs::write(
        &p,
        format!(
            "defaults: {{ timeout: 300ms, retries: 1, backoff: 5ms }}\ntargets:\n  - name: \"web \\\"one\\\"\"\n    base_url: http://127.0.0.1:{port}\n    routes:\n      - {{ path: /ok, class: core }}\n      - {{ path: /busy, class: core }}\n      - {{ path: /down, class: auxiliary }}\n  - name: api\n    base_url: http://127.0.0.1:{port}\n    routes:\n      - {{ path: \"/down?x=<&>\", class: core }}\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn probes_yaml_validates_against_the_printed_schema() {
    let o = rw().arg("schema").output().unwrap();
    assert!(o.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(schema["title"], "routewatch probe file");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown keys are errors in the schema too"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("probes.schema.json")).unwrap()).unwrap();
    assert_eq!(
        committed, schema,
        "probes.schema.json is stale: run `routewatch schema > probes.schema.json`"
    );
    let first = std::fs::read_to_string(repo.join("probes.yaml")).unwrap();
    assert!(
        first.starts_with("# yaml-language-server: $schema="),
        "probes.yaml names its schema for editors"
    );
    if !python_ready("the jsonschema validation of probes.yaml") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.json");
    std::fs::write(&path, &o.stdout).unwrap();
    checker(&[
        "schema".as_ref(),
        path.as_os_str(),
        repo.join("probes.yaml").as_os_str(),
    ]);
}

#[test]
fn completions_and_man_page_mention_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let o = rw().args(["completions", shell]).output().unwrap();
        assert!(o.status.success());
        let text = String::from_utf8(o.stdout).unwrap();
        for sub in ["check", "validate", "demo", "status", "schema"] {
            assert!(text.contains(sub), "{shell} completion mentions {sub}");
        }
        assert!(text.contains("dry-run"), "{shell} completes check's flags");
    }
    let o = rw().arg("man").output().unwrap();
    assert!(o.status.success());
    let man = String::from_utf8(o.stdout).unwrap();
    assert!(man.starts_with(".ie") || man.contains(".TH"), "roff");
    for sub in ["check", "validate", "demo", "status"] {
        assert!(man.contains(sub), "man page mentions {sub}");
    }
}

#[test]
fn junit_output_is_valid_and_marks_only_core_failures() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mixed_probe_file(dir.path(), port);
    let out = dir.path().join("junit.xml");
    let o = rw()
        .args(["check", "--format", "junit", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let xml = std::fs::read_to_string(&out).unwrap();
    assert!(
        xml.contains("web &quot;one&quot;") && xml.contains("/down?x=&lt;&amp;&gt;"),
        "escaped: {xml}"
    );
    if !python_ready("the independent JUnit parse") {
        return;
    }
    let parsed: serde_json::Value =
        serde_json::from_str(&checker(&["junit".as_ref(), out.as_os_str()])).unwrap();
    let cases = parsed.as_array().unwrap();
    let find = |name: &str| {
        cases
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {parsed}"))
    };
    assert!(find("/ok")["failure"].is_null());
    assert!(find("/busy")["failure"].is_null(), "429 passes");
    assert!(
        find("/busy")["note"]
            .as_str()
            .unwrap()
            .contains("rate_limited")
    );
    assert!(
        find("/down")["failure"].is_null(),
        "auxiliary failures pass"
    );
    assert!(
        find("/down")["note"]
            .as_str()
            .unwrap()
            .contains("http_error")
    );
    assert_eq!(find("/down?x=<&>")["failure"], "http_error");
}

#[test]
fn prometheus_output_parses_with_the_reference_client() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mixed_probe_file(dir.path(), port);
    let o = rw()
        .args(["check", "--format", "prometheus", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains(
            "routewatch_route_up{target=\"web \\\"one\\\"\",route=\"/ok\",class=\"core\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("routewatch_target_healthy{target=\"api\",verdict=\"unhealthy\"} 0"),
        "{text}"
    );
    if !python_ready("the prometheus_client parse of the output") {
        return;
    }
    let path = dir.path().join("m.prom");
    std::fs::write(&path, &text).unwrap();
    let fams: serde_json::Value =
        serde_json::from_str(&checker(&["prometheus".as_ref(), path.as_os_str()])).unwrap();
    let up = fams["routewatch_route_up"].as_array().unwrap();
    assert_eq!(up.len(), 4);
    let busy = up.iter().find(|s| s[0]["route"] == "/busy").unwrap();
    assert_eq!(busy[1], 1.0, "a rate-limited route is up");
    let aux = up.iter().find(|s| s[0]["route"] == "/down").unwrap();
    assert_eq!(aux[1], 0.0);
}

/// A stand-in Pushgateway on 127.0.0.1:0: answers each request with `status` and hands the
/// request (head and body, as sent) to the test.
fn gateway(
    status: u16,
    answer: &'static str,
) -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
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
            let body = got[head_end..].to_vec();
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = tx.send((head, body));
        }
    });
    (port, rx)
}

#[test]
fn push_puts_the_metrics_to_the_gateway_group_and_keeps_the_exit_code() {
    let port = server();
    let (gw, requests) = gateway(200, "");
    let dir = tempfile::tempdir().unwrap();
    let cfg = mixed_probe_file(dir.path(), port);
    let o = rw()
        .args(["check", "--format", "json", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--push")
        .arg(format!(
            "http://127.0.0.1:{gw}/metrics/job/routewatch/instance/ci"
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "unhealthy, pushed or not");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!doc["warnings"].to_string().contains("push"), "{doc}");
    let (head, body) = requests
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("the gateway got a request");
    assert!(
        head.starts_with("PUT /metrics/job/routewatch/instance/ci HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(lower.contains("user-agent: routewatch/"), "{head}");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("routewatch_target_healthy{target=\"api\",verdict=\"unhealthy\"} 0"),
        "{text}"
    );
    if !python_ready("the prometheus_client parse of the pushed metrics") {
        return;
    }
    let path = dir.path().join("pushed.prom");
    std::fs::write(&path, &text).unwrap();
    let fams: serde_json::Value =
        serde_json::from_str(&checker(&["prometheus".as_ref(), path.as_os_str()])).unwrap();
    assert_eq!(fams["routewatch_route_up"].as_array().unwrap().len(), 4);
}

/// The Prometheus textfile is for node_exporter to read: mode 0644 even under the shipped
/// unit's `UMask=0077` (which keeps the state private).
#[test]
fn a_report_written_under_umask_0077_is_readable_by_others() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mixed_probe_file(dir.path(), port);
    let out = dir.path().join("routewatch.prom");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 077; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_routewatch"))
        .args(["check", "--format", "prometheus", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "{mode:o}");
    let state = std::fs::metadata(dir.path().join("st/state.json")).unwrap();
    assert_eq!(
        state.permissions().mode() & 0o077,
        0,
        "the state stays private"
    );
}

#[test]
fn a_failed_push_is_a_warning_not_a_different_exit_code() {
    let port = server();
    let (gw, _requests) = gateway(500, "text format parsing error in line 3\nmore");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.yaml");
    std::fs::write(
        &p,
        format!("targets:\n  - name: web\n    base_url: http://127.0.0.1:{port}\n    routes: [ {{ path: /ok, class: core }} ]\n"),
    )
    .unwrap();
    let o = rw()
        .args(["check", "--format", "json", "--config"])
        .arg(&p)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--push")
        .arg(format!("http://user:hunter2@127.0.0.1:{gw}/metrics/job/rw"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "healthy, whatever the gateway says"
    );
    // The report was printed before the push: it is whole, and says nothing of the push.
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["status"], "healthy", "{doc}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("level=warn event=push_failed")
            && stderr.contains("HTTP 500")
            && stderr.contains("text format parsing error in line 3"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password stays out of every output: {stderr}"
    );
    // A gateway whose error answer echoes the credentials it was sent: not printed either.
    let (echo, _requests) = gateway(
        401,
        "denied user:hunter2 (Authorization: Basic dXNlcjpodW50ZXIy)\n",
    );
    let o = rw()
        .args(["check", "--config"])
        .arg(&p)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--push")
        .arg(format!(
            "http://user:hunter2@127.0.0.1:{echo}/metrics/job/rw"
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("event=push_failed") && stderr.contains("HTTP 401"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2") && !stderr.contains("dXNlcjpodW50ZXIy"),
        "an echoed password or token is redacted: {stderr}"
    );

    let bad = rw()
        .args(["check", "--config"])
        .arg(&p)
        .args(["--push", "ftp://example.org/x"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a bad --push URL is a usage error"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--push"));
}

#[test]
fn a_stalled_gateway_never_holds_back_the_report_and_a_stop_keeps_the_exit_code() {
    use std::io::BufRead;
    let port = server();
    // Accepts and never answers.
    let gw = TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_port = gw.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in gw.incoming() {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.yaml");
    std::fs::write(
        &p,
        format!("targets:\n  - name: web\n    base_url: http://127.0.0.1:{port}\n    routes: [ {{ path: /ok, class: core }} ]\n"),
    )
    .unwrap();
    let mut child = Std::new(env!("CARGO_BIN_EXE_routewatch"))
        .args(["check", "--format", "json", "--config"])
        .arg(&p)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--push")
        .arg(format!("http://127.0.0.1:{gw_port}/metrics/job/rw"))
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The whole JSON document arrives while the push is still waiting on the gateway.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut doc = String::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "stdout ended: {doc}");
        doc.push_str(&line);
        if line == "}\n" {
            break;
        }
    }
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["status"], "healthy", "{doc}");
    let stopped = std::time::Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a stop during the push keeps the run's exit code"
    );
    // A stop that waited for the stalled push would take its 10s timeout; half of it is far
    // more than a busy machine adds to a prompt stop.
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("event=push_interrupted"), "{stderr}");
}

#[test]
fn the_same_path_twice_gives_distinct_series_and_testcases() {
    let port = server();
    let url = format!("http://127.0.0.1:{port}/ok");
    let out = |format: &str| {
        let o = rw()
            .args(["check", "--format", format, "--url", &url, "--url", &url])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0));
        String::from_utf8(o.stdout).unwrap()
    };
    let prom = out("prometheus");
    let series: Vec<&str> = prom
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    let mut unique = series.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), series.len(), "duplicate series in\n{prom}");
    assert!(prom.contains("route=\"/ok\""), "{prom}");
    assert!(prom.contains("route=\"/ok#2\""), "{prom}");
    let junit = out("junit");
    assert!(
        junit.contains("name=\"/ok\"") && junit.contains("name=\"/ok#2\""),
        "{junit}"
    );
}

#[test]
fn refusals_are_counted_by_reason_across_runs() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("probes.yaml");
    // A 503 is not the hung signature: recovery refuses with `not_hung`, before any D-Bus.
    std::fs::write(
        &cfg,
        format!(
            "defaults: {{ retries: 0 }}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{port}\n    unit: api.service\n    routes: [ {{ path: /down, class: core }} ]\n  - name: web\n    base_url: http://127.0.0.1:{port}\n    unit: web.service\n    routes: [ {{ path: /ok, class: core }} ]\n"
        ),
    )
    .unwrap();
    let run = |format: &str| {
        let o = rw()
            .args(["check", "--format", format, "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("st"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let doc: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let api = &doc["targets"][0]["recovery"];
    assert_eq!(api["decision"], "refuse", "{doc}");
    assert_eq!(api["refusal"], "not_hung", "{doc}");
    let text = run("prometheus");
    assert!(
        text.contains("# TYPE routewatch_recovery_refusals_total counter\n"),
        "{text}"
    );
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("routewatch_recovery_refusals_total{"))
        .collect();
    assert_eq!(
        series,
        ["routewatch_recovery_refusals_total{target=\"api\",reason=\"not_hung\"} 2"],
        "the second run counts on from the first; a healthy target has no refusal series"
    );
    if !python_ready("the prometheus_client parse of the refusal counter") {
        return;
    }
    let path = dir.path().join("m.prom");
    std::fs::write(&path, &text).unwrap();
    let fams: serde_json::Value =
        serde_json::from_str(&checker(&["prometheus".as_ref(), path.as_os_str()])).unwrap();
    // The parser names a counter family without its `_total`.
    let refusals = fams["routewatch_recovery_refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 1, "{fams}");
    assert_eq!(refusals[0][0]["reason"], "not_hung");
    assert_eq!(refusals[0][1], 2.0);
}

#[test]
fn readme_lists_the_message_id_of_every_event() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("The events: ").expect("the list of events");
    let end = readme[start..].find("\n\n").unwrap() + start;
    let ticked = |s: &str| -> Vec<String> {
        s.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    // Every word in backticks there: the events, and in asides a few verdicts and states.
    let named = ticked(&readme[start..end]);
    let table: Vec<(String, String)> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells = ticked(l);
            (cells.len() == 2 && cells[1].len() == 32).then(|| (cells[0].clone(), cells[1].clone()))
        })
        .collect();
    assert!(table.len() > 20, "{table:?}");
    for (event, _) in &table {
        assert!(named.contains(event), "{event} is in the list of events");
    }
    for word in named.iter().filter(|w| w.contains('_')) {
        assert!(
            table.iter().any(|(e, _)| e == word),
            "the MESSAGE_ID table names {word}"
        );
    }
    for (event, id) in &table {
        assert_eq!(
            id,
            &routewatch::log::message_id(event),
            "README's MESSAGE_ID of {event}"
        );
    }
}

/// The metric names a real run exposes (its `# TYPE` lines), with a unit (so the recovery
/// families have samples) and a refusal.
fn exposed_metric_names() -> std::collections::BTreeSet<String> {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(
        &cfg,
        format!(
            "defaults: {{ retries: 0 }}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{port}\n    unit: api.service\n    routes: [ {{ path: /ok, class: core }}, {{ path: /down, class: core }} ]\n"
        ),
    )
    .unwrap();
    let o = rw()
        .args(["check", "--format", "prometheus", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// The `routewatch_…` names a PromQL expression uses.
fn metric_names_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .filter(|w| w.starts_with("routewatch_"))
        .map(str::to_string)
        .collect()
}

fn contrib(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_use_real_metric_names() {
    let exposed = exposed_metric_names();
    assert!(
        exposed.contains("routewatch_recovery_refusals_total"),
        "{exposed:?}"
    );
    let rules = std::fs::read_to_string(contrib("prometheus/routewatch.rules.yml")).unwrap();
    let mut used = 0;
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for name in metric_names_in(line) {
            used += 1;
            assert!(
                exposed.contains(&name),
                "the rules use {name}, which routewatch does not expose ({exposed:?})"
            );
        }
    }
    assert!(used >= 5, "{rules}");
    let promtool = Std::new("promtool").arg("--version").output();
    if !promtool.is_ok_and(|o| o.status.success()) {
        crate::common::skip_outside_ci("promtool (Debian package prometheus) is not installed");
        return;
    }
    for args in [
        ["check", "rules", "routewatch.rules.yml"],
        ["test", "rules", "routewatch.rules.test.yml"],
    ] {
        let o = Std::new("promtool")
            .args(args)
            .current_dir(contrib("prometheus"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_routewatch_exposes() {
    let exposed = exposed_metric_names();
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(contrib("grafana/routewatch.json")).unwrap())
            .expect("valid JSON");
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "{}",
        dash["schemaVersion"]
    );
    assert_eq!(dash["uid"], "routewatch");
    let panels = dash["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "unique panel ids");
    let mut exprs: Vec<String> = Vec::new();
    for p in panels {
        assert!(p["title"].is_string() && p["type"].is_string(), "{p}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{p}");
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_string()),
        );
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Verdict per target",
        "Recoveries",
        "Recovery refusals",
        "Route latency",
    ] {
        assert!(titles.contains(&want), "{titles:?}");
    }
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        for name in metric_names_in(e) {
            assert!(
                exposed.contains(&name),
                "the dashboard uses {name}, which routewatch does not expose ({exposed:?})"
            );
            used.insert(name);
        }
    }
    for want in [
        "routewatch_target_healthy",
        "routewatch_recoveries_total",
        "routewatch_recovery_refusals_total",
        "routewatch_route_duration_seconds",
    ] {
        assert!(used.contains(want), "{used:?}");
    }
}

#[test]
fn readme_lists_every_refusal_reason() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("| reason | refused because |")
        .expect("the refusal table");
    let rows: Vec<&str> = readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    let words: Vec<&str> = routewatch::recovery::Refusal::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(rows, words, "README's refusal reasons, in the enum's order");
}
