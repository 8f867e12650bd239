//! Binary tests of probe-file errors: each names `file:line:column`, the bad value and what is
//! accepted, on one stderr line; the exit code is 2 and nothing is probed. And a password in a
//! URL's userinfo reaches no output.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use assert_cmd::Command;

use crate::common::rw;

/// A tiny threaded HTTP server on 127.0.0.1 port 0: `/ok` → 200, anything else 503. Keeps the
/// head of every request.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                let ok = head.split_whitespace().nth(1) == Some("/ok");
                seen.lock().unwrap().push(head);
                let reply: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = s.write_all(reply);
            });
        }
    });
    Server { port, requests }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let o = cmd.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `check` with `yaml` as `p.yaml` in `dir`: exit 2, nothing on stdout, and on stderr one line,
/// the loader's own error (its wording is tested beside the loader, in `src/config/`).
fn refused(dir: &Path, yaml: &str) {
    let want = routewatch::config::parse(yaml, "p.yaml", &|_| None)
        .map(|_| ())
        .expect_err("the probe file is refused");
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let o = run(rw()
        .current_dir(dir)
        .args(["check", "--config", "p.yaml", "--state-dir"])
        .arg(dir.join("st")));
    assert_eq!(o.code, 2, "{yaml}\n{}", o.stderr);
    assert_eq!(o.stdout, "", "{yaml}");
    assert_eq!(o.stderr, format!("routewatch: {want}\n"), "{yaml}");
    assert!(want.at.is_some(), "a position: {want}");
}

/// One probe file per layer that can refuse it: a value out of range, zero where more is
/// needed, a duplicate name, no targets, a duplicate key, a value of the wrong shape, a YAML
/// budget breach, a control character in a name.
#[test]
fn a_probe_file_error_is_one_line_with_its_position_exit_2_and_nothing_is_probed() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let head = format!(
        "targets:\n  - name: a\n    base_url: http://127.0.0.1:{}\n",
        server.port
    );
    let target = format!("{head}    routes: [ {{ path: /ok }} ]\n");
    let deep = |n: usize| {
        format!(
            "{head}    routes: [ {{ path: /ok, expect: {{ json: {{ a: {}{} }} }} }} ]\n",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let files = [
        format!("defaults: {{ retries: 99999999999 }}\n{target}"),
        format!("defaults: {{ timeout: 0s }}\n{target}"),
        format!("defaults: {{ run_timeout: 0s }}\n{target}"),
        format!("{head}    concurrency: 0\n    routes: [ {{ path: /ok }} ]\n"),
        format!("{head}    routes:\n      - path: /ok\n        timeout: 0s\n"),
        format!(
            "{target}  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ {{ path: /ok }} ]\n"
        ),
        "targets: []\n".to_string(),
        format!("defaults: {{ timeout: 1s, timeout: 2s }}\n{target}"),
        format!("{head}    routes: {{ path: /ok }}\n"),
        format!("{head}    routes: [ {{ path: /ok, expect: {{ json: [1,2] }} }} ]\n"),
        deep(58),
        deep(300),
        format!(
            "{head}    routes: [&r {{path: /ok}}, {}]\n",
            vec!["*r"; 1_001].join(",")
        ),
        format!(
            "targets:\n  - name: \"nl\\nevent=fake\"\n    base_url: http://127.0.0.1:{}\n    routes: [ {{ path: /ok }} ]\n",
            server.port
        ),
    ];
    for yaml in &files {
        refused(dir.path(), yaml);
    }
    assert!(
        server.requests.lock().unwrap().is_empty(),
        "nothing may be probed"
    );
}

#[test]
fn a_password_in_a_base_url_reaches_no_report_format_but_still_authenticates() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.yaml");
    // /bad fails, so JUnit prints its URL too.
    std::fs::write(
        &cfg,
        format!(
            "defaults: {{ retries: 0, timeout: 2s }}\ntargets:\n  - name: web\n    base_url: http://user:hunter2@127.0.0.1:{}\n    routes: [ {{ path: /ok }}, {{ path: /bad }} ]\n",
            s.port
        ),
    )
    .unwrap();
    for format in ["text", "json", "junit", "prometheus"] {
        let o = run(rw()
            .args(["check", "--config"])
            .arg(&cfg)
            .args(["--format", format, "--state-dir"])
            .arg(dir.path().join("st")));
        assert_eq!(o.code, 1, "{format}: {}{}", o.stdout, o.stderr);
        assert!(
            o.stdout.contains("127.0.0.1") || format == "text" || format == "prometheus",
            "{format}: the report still names the URL: {}",
            o.stdout
        );
        assert!(
            !o.stdout.contains("hunter2") && !o.stderr.contains("hunter2"),
            "{format}: the password leaked:\n{}\n{}",
            o.stdout,
            o.stderr
        );
    }
    let requests = s.requests.lock().unwrap();
    assert!(!requests.is_empty());
    for head in requests.iter() {
        // base64("user:hunter2")
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: basic dxnlcjpodw50zxiy"),
            "the credentials are still sent: {head}"
        );
    }
}

#[test]
fn a_password_in_an_ad_hoc_url_reaches_no_output() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let o = run(rw()
        .current_dir(dir.path())
        .args(["check", "--format", "json", "--url"])
        .arg(format!("http://user:hunter2@127.0.0.1:{}/ok", s.port)));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("\"url\""), "{}", o.stdout);
    assert!(
        !o.stdout.contains("hunter2") && !o.stderr.contains("hunter2"),
        "the password leaked:\n{}\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(s.requests.lock().unwrap().len(), 1);
}

/// `validate`'s warnings (allowed, probably not meant) name `file:line:col` like its errors:
/// an unset `${VAR}` where it is written, a route timeout longer than `run_timeout` at that
/// timeout, a unit without a core route at the target's name. Exit 0: they are warnings.
#[test]
fn validate_warnings_carry_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(
        &cfg,
        "defaults: { run_timeout: 15s }\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:9\n    headers: { X-Token: \"${ROUTEWATCH_TEST_UNSET_VAR}\" }\n    routes:\n      - { path: /slow, timeout: 1m }\n  - name: worker\n    base_url: http://127.0.0.1:9\n    unit: worker.service\n    routes: [ { path: /page, class: auxiliary } ]\n  - name: far\n    base_url: \"http://${ROUTEWATCH_TEST_UNSET_HOST}:8000\"\n    routes: [ { path: /h } ]\n",
    )
    .unwrap();
    let o = rw()
        .args(["validate", "--config"])
        .arg(&cfg)
        .env_remove("ROUTEWATCH_TEST_UNSET_VAR")
        .env_remove("ROUTEWATCH_TEST_UNSET_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let f = cfg.display();
    for want in [
        format!(
            "routewatch: warning: {f}:5:25: environment variable ROUTEWATCH_TEST_UNSET_VAR is not set (referenced as ${{ROUTEWATCH_TEST_UNSET_VAR}}); `check` will refuse this file until it is"
        ),
        format!(
            "routewatch: warning: {f}:7:33: target \"api\": route /slow: timeout 1m is longer than run_timeout 15s: the run ends it first"
        ),
        format!(
            "routewatch: warning: {f}:8:11: target \"worker\": has a unit but no core route; recovery can never trigger"
        ),
        // A base URL that cannot be checked without its variable is not refused for it.
        format!(
            "routewatch: warning: {f}:13:15: environment variable ROUTEWATCH_TEST_UNSET_HOST is not set"
        ),
    ] {
        assert!(stderr.contains(&want), "want {want:?} in\n{stderr}");
    }
}
