//! Structured log lines on stderr: `level=warn event=probe_failed target=api route=/health …`.
//! Under journald (stderr is the stream `JOURNAL_STREAM` names) each event is sent as a native
//! journal entry instead: the same line as `MESSAGE`, its `PRIORITY`, a `MESSAGE_ID` per event
//! and every field as `ROUTEWATCH_<KEY>`, so `journalctl ROUTEWATCH_TARGET=api` works. If the
//! journal's socket cannot be reached the line goes to stderr, prefixed with its syslog
//! priority (`<4>`). Secrets never reach this module: callers pass only names, outcomes and
//! numbers.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// syslog priority, as sd-daemon(3) prefixes expect.
    fn priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }
}

#[derive(Debug)]
struct Settings {
    max: Level,
    journald: bool,
    /// The journal's native socket, when stderr is the journal and it could be reached.
    journal: Option<Journal>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Whether stderr is the journal: `JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd) names
/// the very file stderr is. An inherited variable with stderr redirected elsewhere (a pipe, a
/// file) does not count, as systemd's documentation asks.
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Set once by the binary: the most verbose level printed, and whether stderr is the journal
/// (then entries go to the journal's native socket `socket`, if it can be reached).
pub fn init(max: Level, journald: bool, socket: &Path) {
    let journal = journald.then(|| Journal::connect(socket).ok()).flatten();
    let _ = SETTINGS.set(Settings {
        max,
        journald,
        journal,
    });
}

fn settings() -> &'static Settings {
    static DEFAULT: Settings = Settings {
        max: Level::Warn,
        journald: false,
        journal: None,
    };
    SETTINGS.get().unwrap_or(&DEFAULT)
}

/// Where systemd-journald receives native entries (`$ROUTEWATCH_JOURNAL_SOCKET` overrides it).
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// A value longer than this is cut (at a character boundary) in a journal entry: with at most
/// a dozen fields an entry stays far below what one datagram may carry, so no memfd is needed.
pub const MAX_JOURNAL_VALUE: usize = 4096;

/// A connected datagram socket to the journal.
#[derive(Debug)]
pub struct Journal {
    socket: UnixDatagram,
    /// A send failed (the journal stopped reading, or went away): every later event goes to
    /// stderr at once, so a stuck journal costs a run one timeout, not one per event.
    gave_up: std::sync::atomic::AtomicBool,
}

impl Journal {
    pub fn connect(path: &Path) -> std::io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        // A journal that stopped reading costs a run at most this per entry, then stderr.
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Journal {
            socket,
            gave_up: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Send one entry, whole or not at all; after one failure, never again.
    pub fn send(&self, entry: &[u8]) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if self.gave_up.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "the journal failed earlier in this run",
            ));
        }
        let sent = self.socket.send(entry).and_then(|sent| {
            if sent == entry.len() {
                Ok(())
            } else {
                Err(std::io::Error::other("journal entry cut short"))
            }
        });
        if sent.is_err() {
            self.gave_up.store(true, Ordering::Relaxed);
        }
        sent
    }
}

/// The `MESSAGE_ID` of an event: 128 bits, fixed per event name (FNV-1a of
/// `routewatch:<event>`), as 32 lowercase hex digits. Pure.
pub fn message_id(event: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in b"routewatch:".iter().chain(event.as_bytes()) {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032x}")
}

/// A journal field name from a log key: `elapsed_ms` → `ROUTEWATCH_ELAPSED_MS` (only A–Z, 0–9
/// and `_`, at most 64 characters, as the journal requires). Pure.
fn field_name(key: &str) -> String {
    let mut name = String::from("ROUTEWATCH_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name.truncate(64);
    name
}

fn bounded(v: &str) -> &str {
    if v.len() <= MAX_JOURNAL_VALUE {
        return v;
    }
    let mut end = MAX_JOURNAL_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// One field in the native protocol: `NAME=value\n`, or for a value with a newline the
/// binary form `NAME\n<u64 LE length><value>\n`.
fn push_field(entry: &mut Vec<u8>, name: &str, value: &str) {
    let value = bounded(value);
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value.as_bytes());
    entry.push(b'\n');
}

/// A native journal entry for an event: `MESSAGE` (the `key=value` line), `PRIORITY`,
/// `SYSLOG_IDENTIFIER`, `MESSAGE_ID`, `ROUTEWATCH_EVENT`, and each non-empty field as
/// `ROUTEWATCH_<KEY>`. Pure.
pub fn journal_entry(
    level: Level,
    event: &str,
    fields: &[(&str, &dyn std::fmt::Display)],
) -> Vec<u8> {
    let mut entry = Vec::with_capacity(256);
    push_field(
        &mut entry,
        "MESSAGE",
        &format_line(level, event, fields, false),
    );
    push_field(&mut entry, "PRIORITY", &level.priority().to_string());
    push_field(&mut entry, "SYSLOG_IDENTIFIER", "routewatch");
    push_field(&mut entry, "MESSAGE_ID", &message_id(event));
    push_field(&mut entry, "ROUTEWATCH_EVENT", event);
    for (k, v) in fields {
        let v = v.to_string();
        if !v.is_empty() {
            push_field(&mut entry, &field_name(k), &v);
        }
    }
    entry
}

/// Format one line (without the trailing newline). Pure.
pub fn format_line(
    level: Level,
    event: &str,
    fields: &[(&str, &dyn std::fmt::Display)],
    journald: bool,
) -> String {
    let mut line = String::with_capacity(96);
    if journald {
        line.push_str(&format!("<{}>", level.priority()));
    }
    line.push_str("level=");
    line.push_str(level.name());
    line.push_str(" event=");
    line.push_str(event);
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        push_value(&mut line, &v.to_string());
    }
    line
}

fn push_value(line: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        line.push_str(v);
    } else {
        line.push('"');
        for c in v.chars() {
            match c {
                '"' => line.push_str("\\\""),
                '\\' => line.push_str("\\\\"),
                '\n' => line.push_str("\\n"),
                c if c.is_control() => line.push(' '),
                c => line.push(c),
            }
        }
        line.push('"');
    }
}

pub fn emit(level: Level, event: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    let s = settings();
    if level > s.max {
        return;
    }
    if let Some(journal) = &s.journal
        && journal.send(&journal_entry(level, event, fields)).is_ok()
    {
        return;
    }
    let line = format_line(level, event, fields, s.journald);
    // stderr may be closed (a pipe whose reader left): logging never fails the run.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[macro_export]
macro_rules! log_event {
    ($level:expr, $event:expr $(, $k:literal = $v:expr)* $(,)?) => {
        $crate::log::emit($level, $event, &[$(($k, &$v as &dyn std::fmt::Display)),*])
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_that_failed_once_is_not_tried_again() {
        let dir = tempfile_dir();
        let path = dir.join("journal");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let journal = Journal::connect(&path).unwrap();
        journal.send(b"MESSAGE=one\n").unwrap();
        drop(receiver);
        assert!(
            journal.send(b"MESSAGE=two\n").is_err(),
            "the journal is gone"
        );
        // Back again (a new socket at the path): this run has given up on it all the same.
        std::fs::remove_file(&path).unwrap();
        let again = UnixDatagram::bind(&path).unwrap();
        let err = journal.send(b"MESSAGE=three\n").unwrap_err();
        assert!(err.to_string().contains("failed earlier"), "{err}");
        again.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(again.recv(&mut buf).is_err(), "nothing was sent to it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rw-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn key_value_lines_quote_what_needs_it() {
        let line = format_line(
            Level::Warn,
            "probe_failed",
            &[
                ("target", &"api"),
                ("route", &"/health"),
                ("error", &"no reply \"at all\""),
                ("attempts", &3),
            ],
            false,
        );
        assert_eq!(
            line,
            r#"level=warn event=probe_failed target=api route=/health error="no reply \"at all\"" attempts=3"#
        );
    }

    #[test]
    fn journald_lines_carry_the_syslog_priority() {
        assert!(format_line(Level::Warn, "x", &[], true).starts_with("<4>level=warn"));
        assert!(format_line(Level::Error, "x", &[], true).starts_with("<3>level=error"));
        assert!(format_line(Level::Info, "x", &[], false).starts_with("level=info"));
    }

    /// The native protocol read back: (name, value) in order, both forms.
    fn decode(mut entry: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !entry.is_empty() {
            let nl = entry.iter().position(|&b| b == b'\n').unwrap();
            let line = &entry[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    String::from_utf8(line[eq + 1..].to_vec()).unwrap(),
                ));
                entry = &entry[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let rest = &entry[nl + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                let value = String::from_utf8(rest[8..8 + len].to_vec()).unwrap();
                assert_eq!(rest[8 + len], b'\n', "a binary value ends with a newline");
                out.push((name, value));
                entry = &rest[8 + len + 1..];
            }
        }
        out
    }

    #[test]
    fn journal_entries_carry_the_line_the_priority_the_id_and_every_field() {
        let entry = journal_entry(
            Level::Warn,
            "probe_failed",
            &[
                ("target", &"api"),
                ("route", &"/health"),
                ("outcome", &"timeout"),
                ("elapsed_ms", &6004),
                ("error", &""),
            ],
        );
        let text = String::from_utf8(entry.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "MESSAGE=level=warn event=probe_failed target=api route=/health outcome=timeout elapsed_ms=6004 error=\"\"\n\
                 PRIORITY=4\nSYSLOG_IDENTIFIER=routewatch\nMESSAGE_ID={}\nROUTEWATCH_EVENT=probe_failed\n\
                 ROUTEWATCH_TARGET=api\nROUTEWATCH_ROUTE=/health\nROUTEWATCH_OUTCOME=timeout\n\
                 ROUTEWATCH_ELAPSED_MS=6004\n",
                message_id("probe_failed")
            ),
            "an empty value is left out"
        );
    }

    #[test]
    fn a_value_with_a_newline_takes_the_binary_form() {
        let entry = journal_entry(
            Level::Error,
            "recovery_failed",
            &[("error", &"first\nsecond=x"), ("unit", &"a b.service")],
        );
        let fields = decode(&entry);
        assert!(
            fields.contains(&("ROUTEWATCH_ERROR".into(), "first\nsecond=x".into())),
            "{fields:?}"
        );
        assert!(fields.contains(&("ROUTEWATCH_UNIT".into(), "a b.service".into())));
        assert!(fields.contains(&("PRIORITY".into(), "3".into())));
        // The length is 8 bytes, little-endian, right after the name's newline.
        let at = entry
            .windows(17)
            .position(|w| w == b"ROUTEWATCH_ERROR\n")
            .unwrap();
        assert_eq!(&entry[at + 17..at + 25], &14u64.to_le_bytes());
    }

    #[test]
    fn names_are_journal_field_names_and_values_are_bounded() {
        assert_eq!(field_name("new_pid"), "ROUTEWATCH_NEW_PID");
        assert_eq!(field_name("a-b.c"), "ROUTEWATCH_A_B_C");
        assert_eq!(field_name(&"k".repeat(100)).len(), 64);
        let long = "é".repeat(MAX_JOURNAL_VALUE);
        let entry = journal_entry(Level::Warn, "x", &[("error", &long)]);
        let fields = decode(&entry);
        let error = &fields
            .iter()
            .find(|(k, _)| k == "ROUTEWATCH_ERROR")
            .unwrap()
            .1;
        assert!(error.len() <= MAX_JOURNAL_VALUE && error.len() > MAX_JOURNAL_VALUE - 2);
        assert!(entry.len() < 4 * MAX_JOURNAL_VALUE, "{}", entry.len());
    }

    #[test]
    fn message_ids_are_fixed_distinct_128_bit_ids() {
        // Pinned (FNV-1a 128 of `routewatch:probe_failed`, computed independently): a changed id
        // would break every saved journalctl query and the README table.
        assert_eq!(
            message_id("probe_failed"),
            "3a8b55369b8f1da06625d37e24ae84bb"
        );
        let events = [
            "probe_failed",
            "probe_rate_limited",
            "recovery_decision",
            "recovery_kill",
            "recovery_restart",
            "recovery_verified",
            "recovery_failed",
        ];
        let ids: std::collections::BTreeSet<String> =
            events.iter().map(|e| message_id(e)).collect();
        assert_eq!(ids.len(), events.len());
        for id in ids {
            assert!(
                id.len() == 32 && id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                "{id}"
            );
        }
    }

    #[test]
    fn entries_go_through_a_datagram_socket_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        let journal = Journal::connect(&path).unwrap();
        let entry = journal_entry(Level::Warn, "recovery_kill", &[("pid", &4242)]);
        journal.send(&entry).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = journald.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &entry[..]);
        assert!(decode(&buf[..n]).contains(&("ROUTEWATCH_PID".into(), "4242".into())));
        assert!(
            Journal::connect(&dir.path().join("missing")).is_err(),
            "no journal: the caller writes the stderr line instead"
        );
    }
}
