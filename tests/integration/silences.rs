//! `routewatch silence`: set, listed, honoured by `check` (no recovery, no notification, still
//! probed and reported), cleared, expired.

use std::path::Path;

use crate::alerts::{Answer, more, receiver, service, take};
use crate::common::rw;

fn silence(st: &Path, args: &[&str]) -> std::process::Output {
    rw().arg("silence")
        .args(args)
        .arg("--state-dir")
        .arg(st)
        .env("USER", "alice")
        .env_remove("SUDO_USER")
        .output()
        .unwrap()
}

#[test]
fn a_silenced_hung_target_is_reported_but_neither_recovered_nor_notified() {
    let svc = service();
    let (port, rx) = receiver(Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    let cfg = dir.path().join("probes.yaml");
    std::fs::write(
        &cfg,
        format!(
            "notify:\n  - {{ url: http://127.0.0.1:{port}/hook }}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{svc}\n    unit: api.service\n    recovery: {{ action: kill }}\n    timeout: 300ms\n    retries: 0\n    routes: [ {{ path: /hang, class: core }} ]\n"
        ),
    )
    .unwrap();
    let o = silence(&st, &["api", "--for", "30m", "--reason", "deploy"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("api: silenced until") && out.contains("by alice: deploy"),
        "{out}"
    );
    let o = silence(&st, &["--list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("api: silenced until") && out.contains("deploy"),
        "{out}"
    );

    let check = || {
        rw().args(["check", "--format", "json", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&st)
            .output()
            .unwrap()
    };
    let o = check();
    assert_eq!(o.status.code(), Some(1), "still probed and judged: {o:?}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &doc["targets"][0];
    assert_eq!(t["verdict"], "unhealthy");
    assert_eq!(t["recovery"]["decision"], "refuse");
    let reason = t["recovery"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("silenced until") && reason.ends_with("by alice: deploy"),
        "{reason}"
    );
    assert!(
        doc["warnings"].to_string().contains("silenced until"),
        "{doc}"
    );
    assert!(more(&rx).is_empty(), "a silenced target is never notified");

    let o = silence(&st, &["--clear", "api"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = silence(&st, &["--clear", "api"]);
    assert_eq!(o.status.code(), Some(2), "not silenced any more: {o:?}");
    let o = check();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reason = doc["targets"][0]["recovery"]["reason"].as_str().unwrap();
    assert!(!reason.contains("silenced"), "{reason}");
    let got = take(&rx, 2);
    assert!(
        got.iter()
            .any(|g| g.body.contains("\"event\": \"unhealthy\"")),
        "{got:?}"
    );
}

#[test]
fn an_expired_silence_disappears_and_bad_usage_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    let o = silence(&st, &["api", "--for", "1h", "--reason", "deploy"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // An hour passes (the silence is set back rather than the clock moved on).
    let path = st.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let s = &mut state["targets"]["api"]["silence"];
    s["until"] = (s["until"].as_u64().unwrap() - 3601).into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let o = silence(&st, &["--list"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "no target is silenced"
    );
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(state["targets"]["api"].get("silence").is_none(), "{state}");

    for bad in [
        &["api"][..],
        &["api", "--for", "30m"],
        &["api", "--for", "soon", "--reason", "x"],
        &[],
    ] {
        let o = silence(&st, bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {o:?}");
    }
}

#[test]
fn status_json_shows_streaks_silences_and_what_was_notified() {
    let svc = service();
    let (port, rx) = receiver(Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    let status = || {
        let o = rw()
            .args(["status", "--format", "json", "--state-dir"])
            .arg(&st)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let empty = status();
    assert_eq!(empty["version"], 1);
    assert_eq!(empty["targets"], serde_json::json!([]));

    let cfg = dir.path().join("probes.yaml");
    std::fs::write(
        &cfg,
        format!(
            "notify:\n  - {{ url: http://127.0.0.1:{port}/hook }}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{svc}\n    routes: [ {{ path: /down, class: core }} ]\n  - name: web\n    base_url: http://127.0.0.1:{svc}\n    routes: [ {{ path: /ok, class: core }} ]\n"
        ),
    )
    .unwrap();
    silence(&st, &["web", "--for", "2h", "--reason", "migration"]);
    let o = rw()
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&st)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(take(&rx, 1).len(), 1);
    let doc = status();
    let api = &doc["targets"][0];
    assert_eq!(api["name"], "api");
    assert_eq!(api["last_verdict"], "unhealthy");
    assert_eq!(api["consecutive_unhealthy"], 1);
    assert_eq!(api["silence"], serde_json::Value::Null);
    assert_eq!(api["notifications"][0]["last_event"], "unhealthy");
    assert_eq!(api["notifications"][0]["open"], "unhealthy");
    let web = &doc["targets"][1];
    assert_eq!(web["last_verdict"], "healthy");
    assert_eq!(web["silence"]["reason"], "migration");
    assert_eq!(web["silence"]["by"], "alice");
    assert!(web["silence"]["until"].as_u64() > doc["now"].as_u64());
}

#[test]
fn as_root_a_state_directory_others_can_write_is_never_written() {
    if crate::common::skip_unless_root("the trust check applies as root only") {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    std::fs::create_dir(&st).unwrap();
    std::fs::set_permissions(&st, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = silence(&st, &["api", "--for", "1h", "--reason", "deploy"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        err.contains("not used") && err.contains("writable"),
        "says why: {err}"
    );
    assert!(
        std::fs::read_dir(&st).unwrap().next().is_none(),
        "nothing written there"
    );
    // Made root's own again, the same command works.
    std::fs::set_permissions(&st, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = silence(&st, &["api", "--for", "1h", "--reason", "deploy"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}
