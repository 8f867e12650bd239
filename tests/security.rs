//! Safe to run as root: trust checks on the probe file and state, strict unit names, no
//! symlink tricks, hostile probe files ending in a clear error fast and in bounded memory.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn rw() -> Command {
    let mut c = Command::cargo_bin("routewatch").unwrap();
    c.env_remove("ROUTEWATCH_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("STATE_DIRECTORY");
    // Never reach a real system bus from these tests.
    c.env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        "unix:path=/nonexistent/routewatch-test-bus",
    );
    c
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

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

fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var_os("ROUTEWATCH_CI").is_none(),
        "CI runs as root"
    );
    eprintln!("skipping: the trust checks apply only when running as root");
    true
}

#[test]
fn a_world_writable_probe_file_disables_recovery_but_still_probes() {
    if skip_unless_root() {
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
    if skip_unless_root() {
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
    if skip_unless_root() {
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
    if skip_unless_root() {
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

/// Peak RSS of a finished child, from `wait4`'s rusage (KiB on Linux).
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4 below, which also reports its peak RSS"
)]
fn run_measured(cfg: &Path) -> (i32, String, Duration, u64) {
    use std::os::unix::process::ExitStatusExt;
    let bin = assert_cmd::cargo::cargo_bin("routewatch");
    let start = Instant::now();
    let child = std::process::Command::new(bin)
        .args(["validate", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stderr = String::new();
    child.stderr.unwrap().read_to_string(&mut stderr).unwrap();
    let (status, rss_kib) = wait4(pid);
    let elapsed = start.elapsed();
    let code = std::process::ExitStatus::from_raw(status)
        .code()
        .unwrap_or(-1);
    (code, stderr, elapsed, rss_kib)
}

fn wait4(pid: i32) -> (i32, u64) {
    // SAFETY: plain syscall wrappers on a child we spawned and have not waited for.
    #[repr(C)]
    struct Timeval {
        sec: i64,
        usec: i64,
    }
    #[repr(C)]
    struct Rusage {
        utime: Timeval,
        stime: Timeval,
        maxrss: i64,
        rest: [i64; 13],
    }
    unsafe extern "C" {
        fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
    }
    let mut status = 0;
    let mut ru = std::mem::MaybeUninit::<Rusage>::zeroed();
    let r = unsafe { wait4(pid, &mut status, 0, ru.as_mut_ptr()) };
    assert_eq!(r, pid);
    let ru = unsafe { ru.assume_init() };
    (status, ru.maxrss as u64)
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
        let (code, stderr, elapsed, rss_kib) = run_measured(&p(file));
        assert_eq!(code, 2, "{file}: {stderr}");
        assert!(stderr.contains(want), "{file}: want {want:?} in {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{file}: one error line: {stderr}"
        );
        assert!(elapsed < Duration::from_secs(1), "{file}: took {elapsed:?}");
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
        let (code, stderr, _, rss_kib) = run_measured(&p(file));
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
    let (code, stderr, _, rss_kib) = run_measured(&cfg);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("over.yaml:2:3: 121000 routes; at most 20000 are allowed in one file"),
        "{stderr}"
    );
    assert!(rss_kib < 64 * 1024, "peak RSS {rss_kib} KiB");
}
