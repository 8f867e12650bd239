//! Structured log lines on stderr: `level=warn event=probe_failed target=api route=/health …`.
//! Under journald (stderr is the stream `JOURNAL_STREAM` names) each line starts with its
//! syslog priority (`<4>`) so `journalctl -p warning` works. Secrets never reach this module:
//! callers pass only names, outcomes and numbers.

use std::io::Write;
use std::sync::OnceLock;

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

#[derive(Debug, Clone, Copy)]
struct Settings {
    max: Level,
    journald: bool,
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

/// Set once by the binary: the most verbose level printed, and whether stderr is the journal.
pub fn init(max: Level, journald: bool) {
    let _ = SETTINGS.set(Settings { max, journald });
}

fn settings() -> Settings {
    *SETTINGS.get().unwrap_or(&Settings {
        max: Level::Warn,
        journald: false,
    })
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
}
