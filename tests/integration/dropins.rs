//! Drop-in files: `probes.d/*.yaml` beside `probes.yaml` and the files of `include:`, merged
//! in order, read by `validate` and `check`; their errors at their own `path:line:col`; top-level
//! settings and duplicate names refused naming both places; the caps on count and size; and,
//! as root, every file read judged like the probe file (a drop-in others can write blocks
//! recovery).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{self, rw};

/// A directory whose every ancestor is root's and not writable by others, so the only trust
/// problem in a test is the one it makes.
fn trusted_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A `tcp:` target on a port that accepts (the kernel's backlog does, nobody reads).
fn tcp_target(name: &str, port: u16) -> String {
    format!("  - {{ name: {name}, tcp: 127.0.0.1:{port} }}\n")
}

fn run(args: &[&str], cfg: &Path) -> (i32, String, String) {
    let o = rw().args(args).arg("--config").arg(cfg).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn dropins_and_includes_are_merged_in_order_by_validate_and_check() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    write(
        &cfg,
        &format!(
            "include: [ extra/*.yaml, one.yaml, \"*.yaml\" ]\ntargets:\n{}",
            tcp_target("main", port)
        ),
    );
    write(
        &dir.path().join("one.yaml"),
        &format!("targets:\n{}", tcp_target("one", port)),
    );
    write(
        &dir.path().join("extra/b.yaml"),
        &format!("targets:\n{}", tcp_target("extra-b", port)),
    );
    write(
        &dir.path().join("extra/a.yaml"),
        &format!("targets:\n{}", tcp_target("extra-a", port)),
    );
    write(
        &dir.path().join("probes.d/20-late.yaml"),
        &format!("targets:\n{}", tcp_target("late", port)),
    );
    write(
        &dir.path().join("probes.d/10-early.yaml"),
        &format!("# a comment\ntargets:\n{}", tcp_target("early", port)),
    );
    // `*.yaml` beside the probe file matches it (never its own drop-in) and one.yaml (read
    // once). Not drop-ins: another extension, a hidden file, an empty placeholder (adds nothing).
    write(&dir.path().join("probes.d/notes.txt"), "targets: oops");
    write(
        &dir.path().join("probes.d/.10-early.yaml.swp"),
        "garbage: [",
    );
    write(
        &dir.path().join("probes.d/30-empty.yaml"),
        "# nothing yet\n",
    );

    let (code, out, err) = run(&["validate"], &cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(6 targets, 6 routes"), "{out}");

    let (code, out, err) = run(&["check", "--format", "json", "--no-recover"], &cfg);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["main", "extra-a", "extra-b", "one", "early", "late"]
    );
    // Which file each target is written in (none for the probe file's own).
    let files: Vec<Option<String>> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.get("file").map(|f| f.as_str().unwrap().to_string()))
        .collect();
    let at = |p: &str| Some(dir.path().join(p).display().to_string());
    assert_eq!(
        files,
        [
            None,
            at("extra/a.yaml"),
            at("extra/b.yaml"),
            at("one.yaml"),
            at("probes.d/10-early.yaml"),
            at("probes.d/20-late.yaml"),
        ]
    );
    drop(l);
}

#[test]
fn a_dropins_errors_carry_its_own_position_and_settings_stay_in_the_probe_file() {
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    write(&cfg, "targets:\n  - { name: main, tcp: 127.0.0.1:9 }\n");
    let (code, out, err) = run(&["validate"], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok (1 target, 1 route)"), "{out}");
    let d = dir.path().join("probes.d/10-x.yaml");
    for (text, want) in [
        (
            "targets:\n  - name: x\n    tcp: 127.0.0.1:9\n    timout: 1s\n",
            ":4:5: unknown field",
        ),
        (
            "# settings\ndefaults: { timeout: 1s }\ntargets: []\n",
            ":2:11: defaults is a top-level setting: it belongs in the probe file itself; a drop-in holds only targets:",
        ),
        (
            "targets: []\ninclude: [ more.yaml ]\n",
            ":2:10: include is a top-level setting",
        ),
        (
            "targets:\n  - name: x\n    base_url: http://127.0.0.1:9\n    routes: [ { path: nope } ]\n",
            ":4:23: target \"x\": invalid route path \"nope\"",
        ),
    ] {
        write(&d, text);
        let (code, _, err) = run(&["validate"], &cfg);
        assert_eq!(code, 2, "{err}");
        let want = format!("{}{want}", d.display());
        assert!(err.contains(&want), "want {want:?} in\n{err}");
    }
}

#[test]
fn a_duplicate_target_name_names_both_places() {
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    write(&cfg, "targets:\n  - name: api\n    tcp: 127.0.0.1:9\n");
    let d = dir.path().join("probes.d/50-api.yaml");
    write(&d, "targets:\n\n  - { name: api, tcp: 127.0.0.1:10 }\n");
    let (code, _, err) = run(&["check"], &cfg);
    assert_eq!(code, 2, "{err}");
    let want = format!(
        "{}:3:13: duplicate target name \"api\" (first used at {}:2:11)",
        d.display(),
        cfg.display()
    );
    assert!(err.contains(&want), "want {want:?} in\n{err}");
}

#[test]
fn includes_that_do_not_resolve_are_errors_at_their_entry() {
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    for (include, want) in [
        ("[ missing.yaml ]", ":1:12: include \"missing.yaml\":"),
        (
            "[ nodir/*.yaml ]",
            ":1:12: include \"nodir/*.yaml\": the directory",
        ),
        (
            "[ \"*/x.yaml\" ]",
            ":1:12: include \"*/x.yaml\": wildcards are allowed in the file name only",
        ),
    ] {
        write(
            &cfg,
            &format!("include: {include}\ntargets:\n  - {{ name: a, tcp: 127.0.0.1:9 }}\n"),
        );
        let (code, _, err) = run(&["validate"], &cfg);
        assert_eq!(code, 2, "{err}");
        let want = format!("{}{want}", cfg.display());
        assert!(err.contains(&want), "want {want:?} in\n{err}");
    }
}

#[test]
fn the_number_and_size_of_dropins_are_capped() {
    let dir = trusted_dir();
    let cfg = dir.path().join("probes.yaml");
    write(&cfg, "targets:\n  - { name: a, tcp: 127.0.0.1:9 }\n");
    let d = dir.path().join("probes.d");
    for i in 0..=routewatch::config::MAX_DROPINS {
        write(&d.join(format!("{i:04}.yaml")), "# empty\n");
    }
    let (code, _, err) = run(&["validate"], &cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than 256 drop-in files"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();

    // One drop-in past what is left of the shared size limit: refused, named, not read whole.
    let big = format!(
        "# {}\ntargets: []\n",
        "x".repeat(routewatch::config::MAX_TOTAL_BYTES as usize)
    );
    write(&d.join("big.yaml"), &big);
    let (code, _, err) = run(&["validate"], &cfg);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{}: the probe file and its drop-ins are over 4194304 bytes together",
            d.join("big.yaml").display()
        )),
        "{err}"
    );
}

/// A probe file whose target has a unit, on a port nobody listens on (refused is in `on`).
fn recoverable(dir: &Path) -> PathBuf {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("probes.yaml");
    write(
        &cfg,
        "defaults: { timeout: 2s, connect_timeout: 1s, retries: 0 }\ntargets: []\n",
    );
    write(
        &dir.join("probes.d/10-api.yaml"),
        &format!(
            "targets:\n  - name: api\n    base_url: http://127.0.0.1:{closed}\n    unit: api-under-test.service\n    recovery: {{ startup_grace: 0s, on: [refused] }}\n    routes: [ {{ path: /health }} ]\n"
        ),
    );
    cfg
}

fn recovery_reason(cfg: &Path, state: &Path) -> String {
    let o = rw()
        .args(["check", "--format", "json", "--dry-run", "--config"])
        .arg(cfg)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    doc["targets"][0]["recovery"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn as_root_a_dropin_others_can_write_blocks_recovery_like_the_probe_file() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = trusted_dir();
    let cfg = recoverable(dir.path());
    let state = dir.path().join("state");
    let dropin = dir.path().join("probes.d/10-api.yaml");
    // Trusted: recovery is decided on its merits (here a dry run), not blocked.
    let reason = recovery_reason(&cfg, &state);
    assert!(!reason.contains("recovery disabled"), "{reason}");

    std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(0o666)).unwrap();
    let reason = recovery_reason(&cfg, &state);
    assert!(
        reason.contains("recovery disabled")
            && reason.contains(&format!(
                "{} is writable by group or others (mode 0666)",
                dropin.display()
            )),
        "{reason}"
    );
    std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The directory others can write (they could add a target with a unit of their choice).
    let d = dir.path().join("probes.d");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let reason = recovery_reason(&cfg, &state);
    assert!(
        reason.contains("recovery disabled")
            && reason.contains("probes.d is writable by group or others (mode 0777)"),
        "{reason}"
    );
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A symlinked drop-in: the link's owner is judged, as for the probe file.
    let real = dir.path().join("real-api.yaml");
    std::fs::rename(&dropin, &real).unwrap();
    std::os::unix::fs::symlink(&real, &dropin).unwrap();
    let reason = recovery_reason(&cfg, &state);
    assert!(
        !reason.contains("recovery disabled"),
        "root's own link: {reason}"
    );
    rustix::fs::chownat(
        rustix::fs::CWD,
        &dropin,
        Some(rustix::fs::Uid::from_raw(65534)),
        None,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let reason = recovery_reason(&cfg, &state);
    assert!(
        reason.contains("recovery disabled") && reason.contains("is a symlink owned by uid 65534"),
        "{reason}"
    );
    std::fs::remove_file(&dropin).unwrap();
    std::fs::rename(&real, &dropin).unwrap();

    // A symlinked drop-in directory: root's link to a root-owned directory is fine; the same
    // link to a directory others can write is not.
    let elsewhere = dir.path().join("elsewhere.d");
    std::fs::rename(&d, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &d).unwrap();
    let reason = recovery_reason(&cfg, &state);
    assert!(
        !reason.contains("recovery disabled"),
        "root's own link: {reason}"
    );
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o777)).unwrap();
    let reason = recovery_reason(&cfg, &state);
    assert!(
        reason.contains("recovery disabled")
            && reason.contains("elsewhere.d is writable by group or others (mode 0777)"),
        "{reason}"
    );
}
