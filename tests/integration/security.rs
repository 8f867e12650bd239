//! Safe to run as root: trust checks on the probe file and state, strict unit names, no
//! symlink tricks, hostile probe files ending in a clear error fast and in bounded memory.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{self, rw};

/// A directory whose every ancestor is root's and not writable by others (not /tmp), so the
/// only trust problem in a test is the one it makes.
fn trusted_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(&base).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Accepts connections and never answers: the hung signature.
fn hung_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = s.read(&mut buf);
            held.push(s);
        }
    });
    port
}

fn write_probe_file(dir: &Path, port: u16) -> PathBuf {
    let p = dir.join("probes.yaml");
    std::fs::write(
        &p,
        format!(
            "defaults: {{ timeout: 200ms, connect_timeout: 100ms, retries: 0 }}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{port}\n    unit: api-under-test.service\n    recovery: {{ startup_grace: 0s }}\n    routes: [{{ path: /health, class: core }}]\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

fn check_json(cfg: &Path, state: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let o = rw()
        .args(["check", "--format", "json", "--config"])
        .arg(cfg)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (
        o.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_world_writable_probe_file_disables_recovery_but_still_probes() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let cfg = write_probe_file(dir.path(), hung_port());
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, doc, stderr) = check_json(&cfg, &dir.path().join("state"), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        doc["targets"][0]["routes"][0]["outcome"], "timeout",
        "probing still happens"
    );
    let rec = &doc["targets"][0]["recovery"];
    assert_eq!(rec["decision"], "refuse");
    let reason = rec["reason"].as_str().unwrap();
    assert!(
        reason.contains("probes.yaml is writable by group or others (mode 0666)"),
        "{reason}"
    );
    assert!(stderr.contains("event=untrusted_config"), "{stderr}");
}

#[test]
fn a_probe_file_in_a_world_writable_directory_disables_recovery() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = write_probe_file(&open_dir, hung_port());
    let (code, doc, _) = check_json(&cfg, &dir.path().join("state"), &[]);
    assert_eq!(code, 1);
    let reason = doc["targets"][0]["recovery"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("open is writable by group or others (mode 0777)"),
        "{reason}"
    );
}

#[test]
fn insecure_config_turns_the_trust_check_off_loudly() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let cfg = write_probe_file(dir.path(), hung_port());
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, doc, stderr) = check_json(&cfg, &dir.path().join("state"), &["--insecure-config"]);
    assert_eq!(code, 1);
    let reason = doc["targets"][0]["recovery"]["reason"].as_str().unwrap();
    assert!(!reason.contains("writable"), "trust check off: {reason}");
    // It went on to systemd, which is unreachable here: refused with a clear D-Bus error.
    assert!(reason.contains("D-Bus"), "{reason}");
    assert!(stderr.contains("event=trust_checks_disabled"), "{stderr}");
}

#[test]
fn a_trusted_probe_file_reaches_the_systemd_step() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let cfg = write_probe_file(dir.path(), hung_port());
    let (code, doc, stderr) = check_json(&cfg, &dir.path().join("state"), &[]);
    assert_eq!(code, 1, "{stderr}");
    let reason = doc["targets"][0]["recovery"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot connect to the system D-Bus")
            && reason.contains("api-under-test.service"),
        "{reason}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_symlinked_state_file_is_refused_not_followed() {
    let dir = trusted_dir();
    let cfg = write_probe_file(dir.path(), hung_port());
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("state.json")).unwrap();
    let (code, _, stderr) = check_json(&cfg, &state, &["--no-recover"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("state.json"), "{stderr}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

/// A probe file for a target that fails fast (a closed port): recovery is considered at
/// once, so the report says which gate stopped it.
fn write_named_probe_file(path: &Path, target: &str, unit: &str) {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        path,
        format!(
            "defaults: {{ timeout: 2s, connect_timeout: 1s, retries: 0 }}\ntargets:\n  - name: {target}\n    base_url: http://127.0.0.1:{closed}\n    unit: {unit}\n    recovery: {{ startup_grace: 0s, on: [timeout, refused] }}\n    routes: [{{ path: /health, class: core }}]\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn a_local_user_swapping_the_probe_file_never_steers_recovery() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let trusted = dir.path().join("trusted.yaml");
    let evil = dir.path().join("evil.yaml");
    write_named_probe_file(&trusted, "api", "api-under-test.service");
    write_named_probe_file(&evil, "evil", "victim-of-the-attacker.service");
    // A directory the attacker can write, holding the link root is told to read.
    let open_dir = dir.path().join("ww");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = open_dir.join("probes.yaml");
    std::os::unix::fs::symlink(&trusted, &link).unwrap();
    // The attacker, unprivileged, swaps the link atomically as fast as it can.
    let script = format!(
        "cd {dir} || exit 1; end=$(( $(date +%s) + 300 )); while [ $(date +%s) -lt $end ]; do \
         ln -sfn {t} a && mv -fT a probes.yaml; ln -sfn {e} b && mv -fT b probes.yaml; done",
        dir = open_dir.display(),
        t = trusted.display(),
        e = evil.display()
    );
    let mut attacker = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(&script)
        .spawn()
        .expect("setpriv (util-linux)");
    let state = dir.path().join("state");
    let (mut runs, mut read_evil, mut reached) = (0, 0, Vec::new());
    for _ in 0..120 {
        let (code, doc, stderr) = check_json(&link, &state, &["--dry-run"]);
        if code == 2 {
            // The link was mid-swap: the read failed, nothing was probed.
            continue;
        }
        assert_eq!(code, 1, "{stderr}");
        runs += 1;
        let t = &doc["targets"][0];
        if t["name"] == "evil" {
            read_evil += 1;
        }
        let reason = t["recovery"]["reason"].as_str().unwrap_or_default();
        if !(t["recovery"]["decision"] == "refuse" && reason.contains("recovery disabled")) {
            reached.push(format!("{}: {reason}", t["name"]));
        }
    }
    let _ = attacker.kill();
    let _ = attacker.wait();
    eprintln!(
        "{runs} runs, {read_evil} read the attacker's file, {} reached recovery",
        reached.len()
    );
    assert!(runs >= 100, "only {runs} runs completed");
    assert!(
        reached.is_empty(),
        "runs that got past the trust check: {reached:?}"
    );
}

#[test]
fn every_link_and_directory_on_the_path_as_written_is_judged() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let trusted = dir.path().join("trusted.yaml");
    write_named_probe_file(&trusted, "api", "api-under-test.service");
    let state = dir.path().join("state");
    // A sticky, world-writable directory (like /tmp) with a link someone else planted.
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = sticky.join("probes.yaml");
    std::os::unix::fs::symlink(&trusted, &planted).unwrap();
    rustix::fs::chownat(
        rustix::fs::CWD,
        &planted,
        Some(rustix::fs::Uid::from_raw(65534)),
        None,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    // A directory symlink on the way into a world-writable directory.
    let open_dir = dir.path().join("ww");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(&trusted, open_dir.join("probes.yaml")).unwrap();
    std::os::unix::fs::symlink(&open_dir, dir.path().join("via")).unwrap();
    for (path, want) in [
        (planted.clone(), "is a symlink owned by uid 65534"),
        (
            dir.path().join("via/probes.yaml"),
            "ww is writable by group or others (mode 0777)",
        ),
    ] {
        let (code, doc, stderr) = check_json(&path, &state, &["--dry-run"]);
        assert_eq!(code, 1, "{stderr}");
        let reason = doc["targets"][0]["recovery"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.contains("recovery disabled") && reason.contains(want),
            "{path:?}: {reason}"
        );
    }
    // The same file through root's own links is trusted.
    std::os::unix::fs::symlink(&trusted, dir.path().join("root-link.yaml")).unwrap();
    let (_, doc, _) = check_json(&dir.path().join("root-link.yaml"), &state, &["--dry-run"]);
    let reason = doc["targets"][0]["recovery"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(!reason.contains("recovery disabled"), "{reason}");
}

#[test]
fn a_state_directory_to_be_created_is_judged_by_its_parent() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    write_named_probe_file(&cfg, "api", "api-under-test.service");
    let open_dir = dir.path().join("ww");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, doc, stderr) = check_json(&cfg, &open_dir.join("new-state"), &["--dry-run"]);
    assert_eq!(code, 1, "{stderr}");
    let reason = doc["targets"][0]["recovery"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("state directory") && reason.contains("0777"),
        "{reason}"
    );
    assert!(
        doc["warnings"]
            .to_string()
            .contains("state directory not used"),
        "{doc}"
    );
    assert!(
        !open_dir.join("new-state").exists(),
        "nothing created under an untrusted parent"
    );
}

#[test]
fn a_state_directory_of_another_user_still_probes_and_reports() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    write_named_probe_file(&cfg, "api", "api-under-test.service");
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    rustix::fs::chown(&theirs, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let (code, doc, stderr) = check_json(&cfg, &theirs, &[]);
    assert_eq!(code, 1, "probed and reported, not exit 4: {stderr}");
    assert_eq!(doc["targets"][0]["routes"][0]["outcome"], "refused");
    assert_eq!(doc["targets"][0]["recovery"]["decision"], "refuse");
}

#[test]
fn output_never_replaces_a_device_or_a_fifo() {
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    write_named_probe_file(&cfg, "api", "api-under-test.service");
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for out in [Path::new("/dev/null"), fifo.as_path()] {
        let o = rw()
            .args(["check", "--no-recover", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--output")
            .arg(out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{out:?}: {stderr}");
        assert!(
            stderr.contains("only a regular file is replaced"),
            "{stderr}"
        );
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn status_never_follows_a_symlinked_state_file_or_quotes_it() {
    let dir = trusted_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"{\"version\":1,\"targets\":\"root:TOPSECRET\"}").unwrap();
    std::os::unix::fs::symlink(&secret, state.join("state.json")).unwrap();
    let o = rw()
        .args(["status", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(4), "{all}");
    assert!(!all.contains("TOPSECRET"), "{all}");
    std::fs::remove_file(state.join("state.json")).unwrap();
    std::fs::copy(&secret, state.join("state.json")).unwrap();
    let o = rw()
        .args(["status", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(4), "{all}");
    assert!(
        !all.contains("TOPSECRET") && all.contains("not the state format"),
        "{all}"
    );
}

#[test]
fn a_stop_while_a_large_probe_file_loads_ends_in_exit_4_with_a_line() {
    let dir = trusted_dir();
    let cfg = dir.path().join("large.yaml");
    let mut text =
        String::from("targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes:\n");
    while text.len() < 2_000_000 {
        text.push_str("      - { path: /a, expect: { body_contains: abcdefghijklmnop } }\n");
    }
    std::fs::write(&cfg, text).unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("routewatch"))
        .args(["check", "--no-recover", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Send SIGTERM as soon as the process catches it (SigCgt bit 15), which is before the
    // file is read: the load of a file this size takes far longer than that.
    let caught = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            })
            .is_some_and(|mask| mask & (1 << 14) != 0)
    };
    let pid = child.id();
    while !caught(pid) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before catching SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(4),
        "not killed by the signal: {status:?} {stderr}"
    );
    assert!(stderr.contains("event=interrupted"), "{stderr}");
}

#[test]
fn unit_names_must_be_plain_services() {
    let dir = trusted_dir();
    for (i, unit) in [
        "../x.service",
        "/etc/x.service",
        "x.socket",
        "x@.service",
        "x*.service",
        "x",
        "routewatch.service",
        "a b.service",
    ]
    .iter()
    .enumerate()
    {
        let cfg = dir.path().join(format!("u{i}.yaml"));
        std::fs::write(&cfg, format!("targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    unit: \"{unit}\"\n    routes: [{{ path: /a }}]\n")).unwrap();
        let o = rw()
            .args(["validate", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{unit}: {stderr}");
        assert!(
            stderr.contains(&format!("u{i}.yaml:4:11:")),
            "{unit}: {stderr}"
        );
    }
    for ok in ["app.service", "app@1.service", "my_app-2.service"] {
        let cfg = dir.path().join("ok.yaml");
        std::fs::write(&cfg, format!("targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    unit: {ok}\n    routes: [{{ path: /a }}]\n")).unwrap();
        let o = rw()
            .args(["validate", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{ok}");
    }
}

/// `validate` of `cfg`, measured: exit code, stderr, wall time (for messages only), CPU time
/// (user + system) and peak RSS in KiB, from `wait4`'s rusage.
fn run_measured(cfg: &Path) -> (i32, String, Duration, common::Reaped) {
    let bin = assert_cmd::cargo::cargo_bin("routewatch");
    let start = Instant::now();
    let mut m = common::Measured::new(bin);
    let mut child = m
        .cmd
        .args(["validate", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut reaped = common::wait_with_rusage(child);
    reaped.max_rss_kib = m.peak_kib();
    let code = reaped.status.code().unwrap_or(-1);
    (code, stderr, start.elapsed(), reaped)
}

#[test]
fn hostile_probe_files_end_in_a_clear_error_fast_and_small() {
    let dir = trusted_dir();
    let p = |name: &str| dir.path().join(name);
    // A billion-laughs alias bomb inside a field that accepts any value.
    let mut bomb = String::from(
        "targets:\n  - name: a\n    base_url: http://x\n    routes:\n      - path: /a\n        expect:\n          json:\n            a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n",
    );
    for i in 0..8u8 {
        let (prev, cur) = ((b'a' + i) as char, (b'b' + i) as char);
        bomb.push_str(&format!(
            "            {cur}: &{cur} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    std::fs::write(p("bomb.yaml"), bomb).unwrap();
    // A million routes, compactly, through aliases.
    let million = format!(
        "targets:\n  - name: a\n    base_url: http://x\n    routes: [&r {{path: /a}}, {}]\n",
        vec!["*r"; 1_000_000].join(",")
    );
    std::fs::write(p("million.yaml"), million).unwrap();
    // 30 000 routes written out (under the size limit, over the route limit).
    let mut many = String::from("targets:\n  - name: a\n    base_url: http://x\n    routes:\n");
    for _ in 0..30_000 {
        many.push_str("      - {path: /a}\n");
    }
    std::fs::write(p("many.yaml"), many).unwrap();
    std::fs::write(
        p("deep.yaml"),
        format!("targets: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    std::fs::write(p("binary.yaml"), b"targets:\n  - name: \xff\xfe\x00\n").unwrap();
    std::fs::File::create(p("huge.yaml"))
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();

    let cases = [
        ("bomb.yaml", "too large or too deeply aliased"),
        ("million.yaml", "too large or too deeply aliased"),
        ("many.yaml", "30000 routes; at most 20000"),
        ("deep.yaml", "recursion limit exceeded"),
        ("binary.yaml", "binary.yaml:2:11: invalid UTF-8"),
        ("huge.yaml", "a probe file may be at most 4194304 bytes"),
    ];
    for (file, want) in cases {
        let (code, stderr, wall, reaped) = run_measured(&p(file));
        assert_eq!(code, 2, "{file}: {stderr}");
        assert!(stderr.contains(want), "{file}: want {want:?} in {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{file}: one error line: {stderr}"
        );
        // "Fast" is bounded in CPU time, not wall time: a busy machine stretches wall time
        // (the debug binary takes about 0.85s unloaded and over 2s with both cores busy) but
        // not the CPU the run needs. The bound is generous on purpose: what it guards against
        // is blow-up (expanding the alias bomb, walking a million routes or 100 MB), which
        // takes tens of seconds of CPU or gigabytes, not a slower machine.
        assert!(
            reaped.cpu < Duration::from_secs(5),
            "{file}: used {:?} of CPU ({wall:?} wall)",
            reaped.cpu
        );
        let rss_kib = reaped.max_rss_kib;
        assert!(rss_kib < 100 * 1024, "{file}: peak RSS {rss_kib} KiB");
    }
}

/// Hostile patterns and oversized files under the 4 MiB limit: one short error line, at the
/// value's position, in bounded memory (never a wall-time assertion: the machine may be busy).
#[test]
fn hostile_regexes_and_route_floods_end_in_one_short_line_in_bounded_memory() {
    let dir = trusted_dir();
    let p = |name: &str| dir.path().join(name);
    let head = "targets:\n  - name: a\n    base_url: http://x\n    routes:\n";
    let route =
        |pattern: &str| format!("      - {{ path: /a, expect: {{ body_regex: '{pattern}' }} }}\n");
    // 1 MB of Unicode \w: once 3 GB of compiler memory.
    std::fs::write(
        p("wide.yaml"),
        format!("{head}{}", route(&r"\w".repeat(512 * 1024))),
    )
    .unwrap();
    // At the length limit, but far over the compiled-size limit.
    std::fs::write(
        p("dense.yaml"),
        format!("{head}{}", route(&r"\w".repeat(2048))),
    )
    .unwrap();
    // Many distinct patterns, each fine alone.
    let many: String = (0..40).map(|i| route(&format!(r"\w{{10}}{i}"))).collect();
    std::fs::write(p("budget.yaml"), format!("{head}{many}")).unwrap();
    // 175 000 routes written out, under 4 MiB.
    let flood = "      - {path: /a}\n".repeat(175_000);
    std::fs::write(p("flood.yaml"), format!("{head}{flood}")).unwrap();
    // 4 MiB of one scalar, echoed in the error.
    std::fs::write(
        p("scalar.yaml"),
        format!("targets:\n  - name: {}\n", "n".repeat(4 * 1024 * 1024 - 40)),
    )
    .unwrap();
    let half = (4 * 1024 * 1024 - 20) / 2;
    std::fs::write(
        p("nested.yaml"),
        format!("targets: {}{}\n", "[".repeat(half), "]".repeat(half)),
    )
    .unwrap();
    let noise: Vec<u8> = (0..4 * 1024 * 1024 - 1u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(p("noise.yaml"), noise).unwrap();

    let cases = [
        (
            "wide.yaml",
            "wide.yaml:5:43: target \"a\": expect.body_regex",
        ),
        (
            "wide.yaml",
            "… (1048576 bytes) is too long; a regular expression may be at most 4096 bytes",
        ),
        ("dense.yaml", "compiles to more than 1 MiB"),
        ("budget.yaml", "together compile to more than 16 MiB"),
        ("flood.yaml", "too large"),
        ("scalar.yaml", "… (4194264 characters)"),
        ("nested.yaml", "recursion limit exceeded"),
        ("noise.yaml", "invalid UTF-8"),
    ];
    for (file, want) in cases {
        let (code, stderr, _, reaped) = run_measured(&p(file));
        let rss_kib = reaped.max_rss_kib;
        assert_eq!(code, 2, "{file}: {}", &stderr[..stderr.len().min(600)]);
        assert!(
            stderr.contains(want),
            "{file}: want {want:?} in {}",
            &stderr[..stderr.len().min(600)]
        );
        assert_eq!(stderr.lines().count(), 1, "{file}: one error line");
        assert!(
            stderr.len() < 500,
            "{file}: a short line: {} bytes",
            stderr.len()
        );
        assert!(rss_kib < 64 * 1024, "{file}: peak RSS {rss_kib} KiB");
    }
}

/// Over the route limit by far, the count is still exact, and the file costs no more memory
/// than one at the limit.
#[test]
fn a_route_count_far_over_the_limit_is_exact_and_small() {
    let dir = trusted_dir();
    let mut text = String::from("targets:\n");
    for t in 0..4 {
        text.push_str(&format!(
            "  - name: t{t}\n    base_url: http://x\n    routes:\n"
        ));
        text.push_str(&"      - {path: /a}\n".repeat(30_000));
    }
    for t in 0..1_000 {
        text.push_str(&format!("  - {{name: tcp{t}, tcp: \"h:1\"}}\n"));
    }
    let cfg = dir.path().join("over.yaml");
    std::fs::write(&cfg, text).unwrap();
    let (code, stderr, _, reaped) = run_measured(&cfg);
    let rss_kib = reaped.max_rss_kib;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("over.yaml:2:3: 121000 routes; at most 20000 are allowed in one file"),
        "{stderr}"
    );
    assert!(rss_kib < 64 * 1024, "peak RSS {rss_kib} KiB");
}

/// A server that answers `200 ok` and keeps every byte it was sent.
fn recording_port() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::Write as _;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if let Ok(n) = s.read(&mut buf) {
                keep.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, seen)
}

#[test]
fn a_probe_file_others_can_write_sends_none_of_roots_environment() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    const TOKEN: &str = "root-only-token-5d1e";
    let dir = trusted_dir();
    let (port, seen) = recording_port();
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(
        &cfg,
        format!(
            "targets:\n  - name: api\n    base_url: http://127.0.0.1:{port}\n    headers: {{ Authorization: \"Bearer ${{RW_TRUST_TOKEN}}\" }}\n    routes: [{{ path: /health }}]\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = |extra: &[&str]| {
        check_in(dir.path(), &cfg, extra)
            .env("RW_TRUST_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("probes.yaml:4:")
            && stderr.contains("not expanded in a probe file that others can write"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "{stderr}");
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
    // The operator who says so explicitly gets the old behaviour.
    let o = run(&["--insecure-config"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let sent = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(sent.contains(&format!("Bearer {TOKEN}")), "{sent}");
}

/// `routewatch check` of `cfg` with its state in `dir/state` and `extra` arguments.
fn check_in(dir: &Path, cfg: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut c = rw();
    c.args(["check", "--config"])
        .arg(cfg)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra);
    c
}

/// As root, a probe file others can write may not lend root's private key either (as a
/// drop-in may not): whoever writes it could make root present that client certificate with
/// a request of their choosing. `--insecure-config` is the operator saying the file is theirs.
#[test]
fn a_probe_file_others_can_write_cannot_use_roots_client_key() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["routewatch".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A port that refuses: whatever loads, no request can reach a server.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(
        &cfg,
        format!(
            "targets:\n  - name: api\n    base_url: https://127.0.0.1:{port}\n    tls: {{ cert_file: {}, key_file: {} }}\n    routes: [{{ path: /health }}]\n",
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        check_in(
            dir.path(),
            &cfg,
            &[&["--no-recover", "--format", "json"], extra].concat(),
        )
        .output()
        .unwrap()
    };
    // Root's own file: it loads and probes (the port refuses: exit 1, not a config error).
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = run(&[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("probes.yaml:4:")
            && stderr.contains("tls.key_file is not used from a probe file that others can write"),
        "{stderr}"
    );
    let o = run(&["--insecure-config"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

/// `routewatch VERB --config CFG`: its exit code and stderr.
fn on(verb: &str, cfg: &Path) -> (Option<i32>, String) {
    let o = rw().args([verb, "--config"]).arg(cfg).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A Unix socket that records whether anyone connected.
fn recording_socket(dir: &Path) -> (PathBuf, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let path = dir.join("admin.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    (path, seen)
}

/// As root, a file others can write may not point root at a Unix socket: root can open
/// sockets they cannot (a container engine's, an admin RPC), and the request (method, headers,
/// body) would be theirs. A drop-in always, the probe file unless `--insecure-config`.
#[test]
fn a_file_others_can_write_cannot_send_root_to_a_unix_socket() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let (sock, seen) = recording_socket(dir.path());
    let target = format!(
        "  - name: app\n    base_url: unix:{}\n    routes: [ {{ path: /containers/create, method: POST, body: x }} ]\n",
        sock.display()
    );
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(&cfg, "targets: []\n").unwrap();
    let dropin = dir.path().join("probes.d/50-app.yaml");
    std::fs::create_dir(dir.path().join("probes.d")).unwrap();
    std::fs::write(&dropin, format!("targets:\n{target}")).unwrap();
    std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(0o666)).unwrap();
    for extra in [&[][..], &["--insecure-config"][..]] {
        let o = check_in(dir.path(), &cfg, extra).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("50-app.yaml:3:")
                && stderr
                    .contains("a Unix socket is not probed from a drop-in that others can write"),
            "{stderr}"
        );
    }
    // The probe file itself, others can write: refused, unless the operator vouches for it.
    std::fs::remove_file(&dropin).unwrap();
    std::fs::write(&cfg, format!("targets:\n{target}")).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = check_in(dir.path(), &cfg, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("probes.yaml:3:")
            && stderr
                .contains("a Unix socket is not probed from a probe file that others can write")
            && stderr.contains("--insecure-config"),
        "{stderr}"
    );
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never connected"
    );
    let o = check_in(dir.path(), &cfg, &["--insecure-config"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(2), "{o:?}");
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "vouched for: probed"
    );
}

/// As root, an error in a file others can write names the place, never the text: whoever can
/// write it (or a link or directory on its way) may have pointed it at a file only root can
/// read. `validate` follows the same rule, and follows links like `check`.
#[test]
fn an_error_in_a_file_others_can_write_never_quotes_it() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    const SECRET: &str = "root-only-hash-8c2f";
    let dir = trusted_dir();
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, format!("root:{SECRET}:19000:0:99999:7:::\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Another user's directory, holding their link to root's file.
    let theirs = dir.path().join("home");
    std::fs::create_dir(&theirs).unwrap();
    rustix::fs::chown(&theirs, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let link = theirs.join("probes.yaml");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    for verb in ["check", "validate"] {
        let (code, stderr) = on(verb, &link);
        assert_eq!(code, Some(2), "{verb}: {stderr}");
        assert!(
            stderr.contains("probes.yaml:1:") && stderr.contains("its text is not shown"),
            "{verb}: {stderr}"
        );
        assert!(!stderr.contains(SECRET), "{verb}: {stderr}");
    }
    // `doctor` reads it as `check` does.
    let o = rw()
        .args(["doctor", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(&link)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("its text is not shown"), "doctor: {all}");
    assert!(!all.contains(SECRET), "doctor: {all}");
    // Nor can such a file have root read another of root's files for it through `include:`.
    let theirs_cfg = theirs.join("inc.yaml");
    std::fs::write(
        &theirs_cfg,
        format!("include: [ {} ]\ntargets: []\n", secret.display()),
    )
    .unwrap();
    rustix::fs::chown(&theirs_cfg, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    for verb in ["check", "validate"] {
        let (code, stderr) = on(verb, &theirs_cfg);
        assert_eq!(code, Some(2), "{verb}: {stderr}");
        assert!(
            stderr.contains("inc.yaml:1:")
                && stderr
                    .contains("include: is not followed from a probe file that others can write"),
            "{verb}: {stderr}"
        );
        assert!(!stderr.contains(SECRET), "{verb}: {stderr}");
    }
    // A value refused after parsing (an invalid unit), in a drop-in others can write.
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(&cfg, "targets: []\n").unwrap();
    let dropin = dir.path().join("probes.d/50-app.yaml");
    std::fs::create_dir(dir.path().join("probes.d")).unwrap();
    std::fs::write(
        &dropin,
        format!("targets:\n  - {{ name: app, base_url: http://127.0.0.1:9, unit: \"{SECRET} x.service\", routes: [ {{ path: / }} ] }}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, stderr) = on("validate", &cfg);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("50-app.yaml:2:") && stderr.contains("its text is not shown"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
    // Root's own drop-in: the whole message, as before.
    std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = on("validate", &cfg);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("invalid unit"), "{stderr}");
}

/// `validate` reads a probe file through a link as `check` does, and as root warns that
/// `check` would refuse recovery when the file fails the trust check.
#[test]
fn validate_follows_links_and_says_what_check_would_refuse() {
    let dir = trusted_dir();
    let real = dir.path().join("real.yaml");
    std::fs::write(
        &real,
        "targets:\n  - { name: app, base_url: http://127.0.0.1:9, routes: [ { path: / } ] }\n",
    )
    .unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("probes.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = rw()
        .args(["validate", "--config"])
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(": ok (1 target"),
        "{o:?}"
    );
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, stderr) = on("validate", &link);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("check would refuse recovery") && stderr.contains("mode 0666"),
        "{stderr}"
    );
}

/// As root, a `probes.yaml` that merely sits in the current directory is not taken in place
/// of the system's unless it passes the trust check.
#[test]
fn as_root_a_probe_file_planted_in_the_current_directory_is_not_taken() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = shared.join("probes.yaml");
    std::fs::write(
        &planted,
        "targets:\n  - { name: planted, base_url: http://127.0.0.1:9, routes: [ { path: / } ] }\n",
    )
    .unwrap();
    rustix::fs::chown(&planted, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    for verb in ["validate", "check"] {
        let o = rw()
            .arg(verb)
            .current_dir(&shared)
            .env_remove("ROUTEWATCH_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{verb}: {stderr}");
        assert!(
            stderr.contains("./probes.yaml is not taken as root's probe file")
                && stderr.contains("uid 65534"),
            "{verb}: {stderr}"
        );
    }
    // Root's own file there is taken as before.
    rustix::fs::chown(&planted, Some(rustix::fs::Uid::from_raw(0)), None).unwrap();
    let o = rw()
        .arg("validate")
        .current_dir(&shared)
        .env_remove("ROUTEWATCH_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}

/// As root, a sticky world-writable directory is fine on the way to the state directory,
/// never as the state directory itself: anyone may create its entries there. A `state.json`
/// planted by another user (a silence "by admin" until 2100, a long streak) is neither read
/// nor kept, and recovery says why; `status` warns.
#[test]
fn as_root_a_sticky_world_writable_state_directory_is_not_used() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let cfg = write_probe_file(dir.path(), hung_port());
    let state = dir.path().join("shared-state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let forged = r#"{"version":1,"targets":{"api":{"consecutive_unhealthy":42,"silence":{"since":1,"until":4102444800,"by":"admin","reason":"forged"}}}}"#;
    std::fs::write(state.join("state.json"), forged).unwrap();
    rustix::fs::chown(
        state.join("state.json"),
        Some(rustix::fs::Uid::from_raw(65534)),
        None,
    )
    .unwrap();
    let (code, doc, stderr) = check_json(&cfg, &state, &["--dry-run"]);
    assert_eq!(code, 1, "{stderr}");
    let reason = doc["targets"][0]["recovery"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("recovery disabled") && reason.contains("even sticky"),
        "{reason}"
    );
    assert!(
        !doc.to_string().contains("forged"),
        "the planted silence is not read: {doc}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("state.json")).unwrap(),
        forged,
        "nor written over"
    );
    let o = rw()
        .args(["status", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("is not used by check") && stderr.contains("even sticky"),
        "{stderr}"
    );
    let o = rw()
        .args(["doctor", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        all.contains("even sticky") && all.contains("would neither read nor write it"),
        "doctor: {all}"
    );
}
