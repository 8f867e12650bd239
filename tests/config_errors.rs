//! Binary tests of probe-file errors: each names `file:line:column`, the bad value and what is
//! accepted, on one stderr line; the exit code is 2 and nothing is probed. And a password in a
//! URL's userinfo reaches no output.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use assert_cmd::Command;

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

fn rw() -> Command {
    let mut c = Command::cargo_bin("routewatch").unwrap();
    c.env_remove("ROUTEWATCH_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("STATE_DIRECTORY")
        .env("NO_COLOR", "1");
    c
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

/// `check` with `yaml` as `p.yaml` in `dir`: exit 2, nothing on stdout, one stderr line that
/// contains `want` right after the file name. Returns that line.
fn refused(dir: &Path, yaml: &str, want: &str) -> String {
    let cfg = dir.join("p.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let o = run(rw()
        .current_dir(dir)
        .args(["check", "--config", "p.yaml", "--state-dir"])
        .arg(dir.join("st")));
    assert_eq!(o.code, 2, "{yaml}\n{}", o.stderr);
    assert_eq!(o.stdout, "", "{yaml}");
    assert_eq!(o.stderr.lines().count(), 1, "one error line: {}", o.stderr);
    let line = o.stderr.trim_end().to_string();
    assert!(
        line.contains(&format!("p.yaml:{want}")),
        "want p.yaml:{want:?} in\n{line}\nfor\n{yaml}"
    );
    line
}

/// A server that must see no traffic, a temp dir, a valid target list pointing at the server
/// and the same target without `routes:`.
struct Fixture {
    server: Server,
    dir: tempfile::TempDir,
    target: String,
    head: String,
}

fn fixture() -> Fixture {
    let server = server();
    let head = format!(
        "targets:\n  - name: a\n    base_url: http://127.0.0.1:{}\n",
        server.port
    );
    Fixture {
        target: format!("{head}    routes: [ {{ path: /ok }} ]\n"),
        head,
        server,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Fixture {
    fn refused(&self, yaml: &str, want: &str) -> String {
        refused(self.dir.path(), yaml, want)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !thread::panicking() {
            assert!(
                self.server.requests.lock().unwrap().is_empty(),
                "nothing may be probed"
            );
        }
    }
}

#[test]
fn an_out_of_range_count_in_defaults_is_reported_where_and_as_written() {
    let f = fixture();
    let line = f.refused(
        &format!("defaults: {{ retries: 99999999999 }}\n{}", f.target),
        "1:22: defaults: retries 99999999999 is out of range; expected 0 to 100",
    );
    assert!(!line.contains("4294967295"), "{line}");
}

#[test]
fn values_in_defaults_point_into_defaults_and_overrides_at_their_own_position() {
    let f = fixture();
    f.refused(
        &format!("defaults: {{ timeout: 0s }}\n{}", f.target),
        "1:22: defaults: timeout 0s must be greater than 0; expected a duration such as 500ms, 10s or 2m",
    );
    f.refused(
        &format!("defaults: {{ run_timeout: 0s }}\n{}", f.target),
        "1:26: defaults: run_timeout 0s must be greater than 0",
    );
    f.refused(
        &format!("defaults: {{ concurrency: 0 }}\n{}", f.target),
        "1:26: defaults: concurrency 0 is out of range; expected 1 to 4096",
    );
    f.refused(
        &format!(
            "{}    concurrency: 0\n    routes: [ {{ path: /ok }} ]\n",
            f.head
        ),
        "4:18: target \"a\": concurrency 0 is out of range; expected 1 to 4096",
    );
    f.refused(
        &format!(
            "{}    routes:\n      - path: /ok\n        timeout: 0s\n",
            f.head
        ),
        "6:18: target \"a\": route /ok: timeout 0s must be greater than 0",
    );
}

#[test]
fn a_duplicate_target_name_and_an_empty_target_list_have_positions() {
    let f = fixture();
    f.refused(
        &format!(
            "{}  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ {{ path: /ok }} ]\n",
            f.target
        ),
        "5:11: duplicate target name \"a\" (first used on line 2); names must be unique",
    );
    f.refused(
        "targets: []\n",
        "1:10: no targets; expected at least one entry under 'targets:'",
    );
}

#[test]
fn a_duplicate_key_is_named_in_plain_words() {
    let f = fixture();
    let line = f.refused(
        &format!("defaults: {{ timeout: 1s, timeout: 2s }}\n{}", f.target),
        "1:26: duplicate key \"timeout\"; each key may appear once in a mapping",
    );
    assert!(!line.contains("DuplicateKeyPolicy"), "{line}");
}

#[test]
fn a_value_of_the_wrong_shape_names_the_field_and_what_it_accepts() {
    let f = fixture();
    f.refused(
        &format!("{}    routes: {{ path: /ok }}\n", f.head),
        "4:13: routes: expected a list of routes (- { path: /x, class: core }), found a mapping",
    );
    f.refused(
        &format!(
            "{}    routes: [ {{ path: /ok, expect: {{ json: [1,2] }} }} ]\n",
            f.head
        ),
        "4:44: expect.json: expected a mapping of dotted field path to expected value, e.g. { status: healthy, checks.db: ok }, found a list",
    );
}

#[test]
fn budget_breaches_are_sentences_that_state_the_limit_hit() {
    let f = fixture();
    let depth = "nesting deeper than 64 levels (recursion limit exceeded); a probe file may nest lists and mappings at most 64 levels deep";
    for n in [58, 300] {
        let line = f.refused(
            &format!(
                "{}    routes: [ {{ path: /ok, expect: {{ json: {{ a: {}{} }} }} }} ]\n",
                f.head,
                "[".repeat(n),
                "]".repeat(n)
            ),
            "4:",
        );
        assert!(line.ends_with(depth), "depth {n}: {line}");
    }
    let line = f.refused(
        &format!(
            "{}    routes: [&r {{path: /ok}}, {}]\n",
            f.head,
            vec!["*r"; 1_001].join(",")
        ),
        "4:",
    );
    assert!(
        line.contains("more than 1000 aliases (*name); a probe file may use at most 1000"),
        "{line}"
    );
    assert!(!line.contains("budget breached"), "{line}");
}

#[test]
fn a_newline_in_a_target_name_says_which_characters_are_accepted() {
    let f = fixture();
    f.refused(
        &format!(
            "targets:\n  - name: \"nl\\nevent=fake\"\n    base_url: http://127.0.0.1:{}\n    routes: [ {{ path: /ok }} ]\n",
            f.server.port
        ),
        "2:11: invalid target name \"nl\\nevent=fake\": it contains the control character '\\n'; expected one line of printable characters",
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
