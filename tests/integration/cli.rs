//! Binary tests: the real `routewatch` executable, its exit codes, stdout and stderr together.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use assert_cmd::Command;

use crate::common::rw;

/// A tiny threaded HTTP server on 127.0.0.1 port 0. `/ok` → 200, `/hang` → never answers,
/// `/busy` → 429, anything else 404. Counts requests.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let counter = Arc::clone(&counter);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&got).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply: &[u8] = match path.as_str() {
                    "/ok" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    "/busy" => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    "/hang" => {
                        thread::sleep(std::time::Duration::from_secs(30));
                        return;
                    }
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                };
                let _ = s.write_all(reply);
            });
        }
    });
    Server { port, hits }
}

fn probe_file(dir: &Path, port: u16, routes: &str) -> std::path::PathBuf {
    let path = dir.join("probes.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults: {{ timeout: 300ms, connect_timeout: 200ms, retries: 1, backoff: 10ms }}\ntargets:\n  - name: web\n    base_url: http://127.0.0.1:{port}\n    routes:\n{routes}"
        ),
    )
    .unwrap();
    path
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

#[test]
fn exit_0_when_every_core_route_is_ok_and_429_is_only_a_warning() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        s.port,
        "      - { path: /ok, class: core }\n      - { path: /busy, class: core }\n      - { path: /nope, class: auxiliary }\n",
    );
    let o = run(rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st")));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("1 ok, 0 timeout/unreachable, 1 rate-limited, 1 http error"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("degraded"), "{}", o.stdout);
    // The auxiliary 404 is a failed probe: one log line, class auxiliary.
    assert!(o.stderr.contains("level=warn event=probe_failed target=web route=/nope class=auxiliary outcome=http_error attempts=1"), "{}", o.stderr);
    assert!(
        !o.stderr.contains("route=/busy"),
        "429 is not logged as a failure: {}",
        o.stderr
    );
}

#[test]
fn exit_1_on_a_hung_core_route_with_a_log_line_per_failed_probe() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        s.port,
        "      - { path: /ok, class: core }\n      - { path: /hang, class: core }\n",
    );
    let o = run(rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st")));
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("event=probe_failed"))
        .expect("a probe_failed line");
    assert!(line.starts_with("level=warn event=probe_failed target=web route=/hang class=core outcome=timeout attempts=2 elapsed_ms="), "{line}");
    assert!(o.stdout.contains("UNHEALTHY"), "{}", o.stdout);
}

#[test]
fn exit_2_on_a_config_error_with_file_line_column_and_nothing_probed() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, format!("defaults:\n  timout: 3s\ntargets:\n  - name: web\n    base_url: http://127.0.0.1:{}\n    routes: [{{ path: /ok }}]\n", s.port)).unwrap();
    let o = run(rw().args(["check", "--config"]).arg(&cfg));
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("bad.yaml:2:3: unknown field 'timout'"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("timeout"),
        "names what is accepted: {}",
        o.stderr
    );
    assert_eq!(o.stdout, "");
    assert_eq!(s.hits.load(Ordering::SeqCst), 0, "nothing may be probed");
}

#[test]
fn config_errors_name_the_bad_value_and_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "defaults: { timeout: 10x }\ntargets: []\n",
            "1:22: invalid duration \"10x\"",
        ),
        (
            "targets:\n  - name: a\n    base_url: ftp://x\n    routes: [{ path: /a }]\n",
            "3:15: target \"a\": invalid base_url \"ftp://x\"",
        ),
        (
            "targets:\n  - name: a\n    base_url: http://x\n    routes: [{ path: /a, class: cor }]\n",
            "4:33: unknown variant 'cor', expected one of core, auxiliary",
        ),
        (
            "targets:\n  - name: a\n    base_url: http://x\n    routes: [{ path: /a, expect: { status: [\"299-200\"] } }]\n",
            "invalid status \"299-200\"",
        ),
        (
            "targets:\n  - name: a\n    base_url: http://x\n    unit: \"../etc/passwd\"\n    routes: [{ path: /a }]\n",
            "4:11: invalid unit \"../etc/passwd\"",
        ),
        (
            "targets:\n  - name: a\n    base_url: http://x\n    recovery: { action: kill }\n    routes: [{ path: /a }]\n",
            "'recovery' needs 'unit'",
        ),
        (
            "targets:\n  - name: a\n    base_url: http://x\n    headers: { X-Token: \"${ROUTEWATCH_TEST_UNSET_VAR}\" }\n    routes: [{ path: /a }]\n",
            "environment variable ROUTEWATCH_TEST_UNSET_VAR is not set",
        ),
        (
            "targets:\n  - name: a\n    base_url: http://x\n    routes: [{ path: /a, expect: { body_regex: \"(\" } }]\n",
            "invalid expect.body_regex \"(\"",
        ),
        (
            "targets:\n  - name: a\n    base_url: http://x\n    routes: [{ path: /a, retries: -1 }]\n",
            "invalid value -1; expected a whole number",
        ),
        ("targets: [\n", "1:10:"),
        ("targets: []\n", "no targets"),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let o = run(rw()
            .args(["validate", "--config"])
            .arg(&cfg)
            .env_remove("ROUTEWATCH_TEST_UNSET_VAR"));
        let o = if want.contains("environment variable") {
            run(rw()
                .args(["check", "--config"])
                .arg(&cfg)
                .env_remove("ROUTEWATCH_TEST_UNSET_VAR"))
        } else {
            o
        };
        assert_eq!(o.code, 2, "case {i}: {}", o.stderr);
        assert!(
            o.stderr.contains(&format!("c{i}.yaml:")),
            "case {i} names the file: {}",
            o.stderr
        );
        assert!(
            o.stderr.contains(want),
            "case {i}: want {want:?} in {}",
            o.stderr
        );
        assert_eq!(
            o.stderr.lines().count(),
            1,
            "one clear error line: {}",
            o.stderr
        );
    }
}

#[test]
fn exit_4_when_the_state_directory_is_unusable() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), s.port, "      - { path: /ok, class: core }\n");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let o = run(rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&not_a_dir));
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(
        o.stderr.contains("state directory") && o.stderr.contains("not a directory"),
        "{}",
        o.stderr
    );
}

#[test]
fn json_mode_prints_only_the_json_document() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        s.port,
        "      - { path: /ok, class: core }\n      - { path: /hang, class: auxiliary }\n",
    );
    let o = run(rw()
        .args(["check", "--format", "json", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st")));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc: serde_json::Value =
        serde_json::from_str(&o.stdout).expect("stdout is exactly one JSON document");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["status"], "degraded");
    assert_eq!(doc["exit_code"], 0);
    let routes = &doc["targets"][0]["routes"];
    assert_eq!(routes[0]["outcome"], "ok");
    assert_eq!(routes[0]["status_code"], 200);
    assert_eq!(routes[0]["url"], format!("http://127.0.0.1:{}/ok", s.port));
    assert_eq!(routes[1]["outcome"], "timeout");
    assert_eq!(routes[1]["class"], "auxiliary");
    assert_eq!(routes[1]["attempts"], 2);
    assert!(routes[1]["elapsed_ms"].as_u64().unwrap() >= 500);
    assert!(
        routes[1]["error"]
            .as_str()
            .unwrap()
            .contains("no complete response")
    );
    assert_eq!(
        doc["summary"]["line"],
        "1 ok, 1 timeout/unreachable, 0 rate-limited, 0 http error"
    );
    assert!(doc["targets"][0]["recovery"].is_null());
}

#[test]
fn ad_hoc_urls_need_no_probe_file_and_keep_no_state() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let o = run(rw()
        .current_dir(dir.path())
        .args(["check", "--format", "json", "--url"])
        .arg(format!("http://127.0.0.1:{}/ok", s.port))
        .arg("--aux-url")
        .arg(format!("http://127.0.0.1:{}/nope", s.port)));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["targets"][0]["routes"][1]["class"], "auxiliary");
    assert_eq!(doc["targets"][0]["name"], format!("127.0.0.1:{}", s.port));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn the_repository_probe_file_validates() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = run(rw()
        .args(["validate", "--config"])
        .arg(repo.join("probes.yaml"))
        .env("API_TOKEN", "t"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("ok (3 targets"), "{}", o.stdout);
}

#[test]
fn validate_without_a_config_anywhere_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    if Path::new("/etc/routewatch/probes.yaml").exists() {
        return;
    }
    let o = run(rw().current_dir(dir.path()).arg("validate"));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("no probe file"), "{}", o.stderr);
}

#[test]
fn config_lookup_uses_the_environment_variable() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), s.port, "      - { path: /ok, class: core }\n");
    let o = run(rw()
        .current_dir("/")
        .arg("validate")
        .env("ROUTEWATCH_CONFIG", &cfg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(&cfg.display().to_string()),
        "{}",
        o.stdout
    );
}

#[test]
fn no_subcommand_prints_help() {
    let o = run(&mut rw());
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("Usage: routewatch <COMMAND>"),
        "{}",
        o.stderr
    );
}

#[test]
fn readme_usage_blocks_equal_help() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for args in [vec!["--help"], vec!["check", "--help"]] {
        let o = run(rw().args(&args).env("COLUMNS", "100"));
        let block = format!("$ routewatch {}\n{}", args.join(" "), o.stdout.trim_end());
        assert!(
            readme.contains(&block),
            "README must contain the output of `routewatch {}`:\n{block}",
            args.join(" ")
        );
    }
}

#[test]
fn prometheus_output_is_written_atomically_to_a_file() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), s.port, "      - { path: /ok, class: core }\n");
    let out = dir.path().join("routewatch.prom");
    let o = run(rw()
        .args(["check", "--format", "prometheus", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--output")
        .arg(&out));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("# TYPE routewatch_route_up gauge"));
    assert!(
        text.contains("routewatch_route_up{target=\"web\",route=\"/ok\",class=\"core\"} 1"),
        "{text}"
    );
    assert!(text.contains("routewatch_last_run_timestamp_seconds "));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
}

#[test]
fn output_refuses_to_follow_a_symlink() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), s.port, "      - { path: /ok, class: core }\n");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.path().join("out.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = run(rw()
        .args(["check", "--format", "json", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--output")
        .arg(&link));
    assert_eq!(o.code, 2, "a bad --output is a usage error: {}", o.stderr);
    assert!(o.stderr.contains("symlink"), "{}", o.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(s.hits.load(Ordering::SeqCst), 0, "found out before probing");

    let nowhere = dir.path().join("missing-dir/out.json");
    let o = run(rw()
        .args(["check", "--format", "json", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("st"))
        .arg("--output")
        .arg(&nowhere));
    assert_eq!(o.code, 2, "a bad --output is a usage error: {}", o.stderr);
    assert!(
        o.stderr.contains("missing-dir does not exist"),
        "{}",
        o.stderr
    );
    assert_eq!(s.hits.load(Ordering::SeqCst), 0, "found out before probing");
}

#[test]
fn state_remembers_the_unhealthy_streak_and_status_shows_it() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), s.port, "      - { path: /hang, class: core }\n");
    let st = dir.path().join("st");
    for _ in 0..2 {
        let o = run(rw()
            .args(["check", "--quiet", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&st));
        assert_eq!(o.code, 1);
        assert_eq!(o.stdout, "", "--quiet prints no text report");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["targets"]["web"]["consecutive_unhealthy"], 2);
    assert_eq!(state["targets"]["web"]["last_verdict"], "unhealthy");
    let o = run(rw().args(["status", "--state-dir"]).arg(&st));
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("web: last verdict unhealthy")
            && o.stdout.contains("2 consecutive unhealthy"),
        "{}",
        o.stdout
    );
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_run_still_probes() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), s.port, "      - { path: /ok, class: core }\n");
    let st = dir.path().join("st");
    std::fs::create_dir(&st).unwrap();
    std::fs::write(st.join("state.json"), b"\x00garbage{").unwrap();
    let o = run(rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&st));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("event=state_corrupt"), "{}", o.stderr);
    assert!(o.stdout.contains("warning: state file"), "{}", o.stdout);
    let fresh: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.join("state.json")).unwrap()).unwrap();
    assert_eq!(fresh["version"], 1);
    let aside = std::fs::read_dir(&st)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        });
    assert_eq!(
        std::fs::read(aside.expect("set aside").path()).unwrap(),
        b"\x00garbage{"
    );
}

#[test]
fn journald_stream_gets_syslog_priorities_only_when_stderr_is_that_stream() {
    use std::os::unix::fs::MetadataExt;
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    // stderr is a file here; JOURNAL_STREAM naming that file (device:inode) is what systemd
    // sets when stderr is the journal.
    let run_with = |journal_stream: &dyn Fn(&std::fs::Metadata) -> String| {
        let path = dir.path().join("stderr");
        let file = std::fs::File::create(&path).unwrap();
        let value = journal_stream(&file.metadata().unwrap());
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_routewatch"))
            .args(["check", "--url"])
            .arg(format!("http://127.0.0.1:{}/nope", s.port))
            .env("JOURNAL_STREAM", value)
            // No journal socket: the lines go to stderr (the host's journal may exist).
            .env("ROUTEWATCH_JOURNAL_SOCKET", dir.path().join("no-journal"))
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1));
        std::fs::read_to_string(&path).unwrap()
    };
    let ours = run_with(&|m| format!("{}:{}", m.dev(), m.ino()));
    assert!(
        ours.lines()
            .any(|l| l.starts_with("<4>level=warn event=probe_failed")),
        "{ours}"
    );
    // Inherited from a service but stderr redirected elsewhere: plain lines.
    let inherited = run_with(&|m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(
        inherited
            .lines()
            .any(|l| l.starts_with("level=warn event=probe_failed")),
        "{inherited}"
    );
    assert!(!inherited.contains("<4>"), "{inherited}");
}

#[test]
fn demo_runs_the_real_engine_and_explains_itself() {
    let o = run(rw().arg("demo"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    for want in [
        "/health",
        "rate_limited",
        "/api/hung",
        "timeout",
        "What this shows",
    ] {
        assert!(o.stdout.contains(want), "{want} in {}", o.stdout);
    }
}

#[test]
fn doctor_lists_every_check_with_its_fix_and_fails_on_a_broken_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(
        &cfg,
        "targets:\n  - name: api\n    base_url: http://127.0.0.1:1\n    unit: api.service\n    recovery: { action: kill }\n    headers: { Authorization: 'Bearer ${DOCTOR_TOKEN}' }\n    routes: [ { path: /health } ]\n",
    )
    .unwrap();
    let doctor = |cfg: &Path| {
        run(rw()
            .args(["doctor", "--format", "json", "--config"])
            .arg(cfg)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus"))
    };
    let o = doctor(&cfg);
    assert_eq!(o.code, 1, "no systemd here: {} {}", o.stdout, o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ok"], false);
    let by_name = |name: &str| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name:?} in {doc}"))
            .clone()
    };
    assert_eq!(by_name("probe file")["status"], "ok");
    let detail = by_name("probe file")["detail"].to_string();
    assert!(detail.ends_with("1 target, 1 route\""), "{detail}");
    // The service's environment file is not a terminal's: an unset ${VAR} is a warning.
    let env = by_name("probe file environment");
    assert_eq!(env["status"], "warn");
    assert!(env["detail"].as_str().unwrap().contains("DOCTOR_TOKEN"));
    assert_eq!(by_name("state directory")["status"], "ok");
    let bus = by_name("systemd");
    assert_eq!(bus["status"], "fail");
    assert!(bus["detail"].as_str().unwrap().contains("/nonexistent/bus"));
    assert!(bus["fix"].is_string());

    if crate::common::skip_unless_root("the trust check applies as root only") {
        return;
    }
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = doctor(&cfg);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let trusted = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "probe file trusted")
        .unwrap()
        .clone();
    assert_eq!(trusted["status"], "fail", "{doc}");
    assert!(
        trusted["detail"]
            .as_str()
            .unwrap()
            .contains("never recover"),
        "{doc}"
    );
    assert!(
        trusted["fix"].as_str().unwrap().contains("chmod go-w"),
        "{doc}"
    );
    // It is read as `check` reads a file others can write: its `${VAR}` is refused, not
    // expanded from root's environment.
    let file = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "probe file")
        .unwrap()
        .clone();
    assert_eq!(file["status"], "fail", "{doc}");
    assert!(
        file["detail"]
            .as_str()
            .unwrap()
            .contains("is not expanded in a probe file that others can write"),
        "{doc}"
    );

    // Text: one line per check, the fix under a failing one, a count at the end.
    let o = run(rw()
        .args(["doctor", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus"));
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.contains("FAIL  probe file trusted: "),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("\n      fix: chmod go-w")
            || o.stdout.contains("\n      fix: chown root:"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.trim_end().ends_with("skipped"), "{}", o.stdout);
}

#[test]
fn a_missing_probe_file_does_not_exist_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("probes.yaml");
    let o = run(rw().arg("check").arg("--config").arg(&missing));
    assert_eq!(o.code, 2);
    assert_eq!(
        o.stderr.trim(),
        format!(
            "routewatch: {}: cannot read: does not exist",
            missing.display()
        )
    );
}
