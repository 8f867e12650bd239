//! Native journal entries from the real binary: with stderr the journal's stream
//! (`JOURNAL_STREAM` naming it) each event is one datagram in the journal's protocol, read
//! here from a socket that stands in for journald's (`ROUTEWATCH_JOURNAL_SOCKET`).

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::ecosystem::server;

/// The native protocol read back: (name, value) in order, both forms.
fn decode(mut entry: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !entry.is_empty() {
        let nl = entry
            .iter()
            .position(|&b| b == b'\n')
            .expect("a field ends");
        let line = &entry[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            entry = &entry[nl + 1..];
        } else {
            let rest = &entry[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.push((
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            ));
            entry = &rest[8 + len + 1..];
        }
    }
    out
}

/// `check --url URL` with stderr a file that `JOURNAL_STREAM` names; its stderr text.
fn check_under_the_journal(dir: &Path, url: &str, socket: &Path) -> String {
    let path = dir.join("stderr");
    let file = std::fs::File::create(&path).unwrap();
    let m = file.metadata().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_routewatch"))
        .args(["check", "--url", url])
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .env("ROUTEWATCH_JOURNAL_SOCKET", socket)
        .env_remove("STATE_DIRECTORY")
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn events_are_native_journal_entries_with_their_fields_and_message_id() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("journal.socket");
    let journald = UnixDatagram::bind(&socket).unwrap();
    let url = format!("http://127.0.0.1:{port}/down");
    let stderr = check_under_the_journal(dir.path(), &url, &socket);
    assert!(
        !stderr.contains("event=probe_failed"),
        "sent to the journal, not written to stderr too: {stderr}"
    );
    journald.set_nonblocking(true).unwrap();
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 128 * 1024];
    while let Ok(n) = journald.recv(&mut buf) {
        entries.push(decode(&buf[..n]));
    }
    let failed = entries
        .iter()
        .find(|e| e.contains(&("ROUTEWATCH_EVENT".into(), "probe_failed".into())))
        .unwrap_or_else(|| panic!("no probe_failed entry in {entries:?}"));
    let field = |name: &str| {
        failed
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {failed:?}"))
    };
    assert_eq!(
        field("MESSAGE_ID"),
        routewatch::log::message_id("probe_failed")
    );
    assert_eq!(field("PRIORITY"), "4");
    assert_eq!(field("SYSLOG_IDENTIFIER"), "routewatch");
    assert_eq!(field("ROUTEWATCH_TARGET"), format!("127.0.0.1:{port}"));
    assert_eq!(field("ROUTEWATCH_ROUTE"), "/down");
    assert_eq!(field("ROUTEWATCH_OUTCOME"), "http_error");
    assert!(
        field("MESSAGE").starts_with("level=warn event=probe_failed target="),
        "{failed:?}"
    );
}

#[test]
fn without_a_listening_journal_the_lines_go_to_stderr() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("journal.socket");
    // Bound, then gone: the path is there, nobody receives.
    drop(UnixDatagram::bind(&socket).unwrap());
    let url = format!("http://127.0.0.1:{port}/down");
    let stderr = check_under_the_journal(dir.path(), &url, &socket);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<4>level=warn event=probe_failed")),
        "{stderr}"
    );
}
