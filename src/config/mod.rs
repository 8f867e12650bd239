//! The probe file: serde structs that mirror `probes.yaml` (unknown keys rejected), and one
//! function, [`resolve`](resolve::resolve), that turns them into a validated [`Plan`]. This
//! folder is the only place that names the YAML crates (the parser and the deserializer).
//!
//! Every error reads `file:line:column: what was wrong, the bad value, what is accepted`.
//!
//! The folder follows the data: [`raw`] (the file as written, with [`route_count`] keeping a
//! huge file's routes counted, not held) and [`scalars`] (durations, sizes, counts, statuses)
//! are read by serde, through [`plain`] (plain YAML straight from the parser's events) or else
//! the full YAML deserializer; [`diagnostics`] and [`shape`] turn the YAML crate's errors
//! into ours; [`resolve`], [`route`], [`context`], [`patterns`] and [`secrets`] turn the raw
//! file into a [`Plan`]; [`ad_hoc`] builds one from `--url` instead.

use std::fmt;
use std::path::Path;

use crate::plan::Plan;

mod ad_hoc;
mod alerts;
mod client_cert;
mod context;
mod diagnostics;
mod dropins;
mod patterns;
mod plain;
mod raw;
mod resolve;
mod route;
mod route_count;
mod scalars;
mod secrets;
mod shape;

use diagnostics::yaml_error;
use raw::RawFile;
use resolve::resolve;
use route_count::ROUTE_SLOTS;

pub use ad_hoc::ad_hoc;
pub use dropins::{MAX_DROPINS, MAX_TOTAL_BYTES, dropin_dir};
pub use patterns::{
    MAX_PATTERN_BYTES, MAX_REGEX_BYTES, MAX_REGEX_CACHE_BYTES, MAX_REGEX_TOTAL_BYTES,
};

/// Probe files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// More routes than this in one file is a mistake, not a plan.
pub const MAX_ROUTES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when known.
    pub at: Option<(u64, u64)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The JSON Schema of the probe file, generated from the same structs the loader uses.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawFile)).expect("schema serialises")
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Read and resolve a probe file. `env` looks up `${VAR}` references.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, ConfigError> {
    let opened = crate::trust::open(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        at: None,
        message: format!("cannot read: {e}"),
    })?;
    read_opened(&opened.file, path, env, false, false)
}

/// Read and resolve a probe file from a descriptor already opened (and, as root, judged:
/// see `trust::open`); `path` names it in errors and anchors relative paths. `untrusted`: as
/// root, the file failed that judgement, so none of its `${VAR}` is expanded.
pub fn load_opened(
    opened: &std::fs::File,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    untrusted: bool,
) -> Result<Plan, ConfigError> {
    read_opened(opened, path, env, false, untrusted)
}

/// [`load_opened`] for `validate`, which sends nothing and needs no secrets: an unset `${VAR}`
/// is a warning in [`Plan::warnings`] (at its position), expanded to nothing.
pub fn load_opened_lenient(
    opened: &std::fs::File,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    untrusted: bool,
) -> Result<Plan, ConfigError> {
    read_opened(opened, path, env, true, untrusted)
}

fn read_opened(
    opened: &std::fs::File,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    lenient: bool,
    untrusted: bool,
) -> Result<Plan, ConfigError> {
    let file = path.display().to_string();
    let err = |message: String| ConfigError {
        file: file.clone(),
        at: None,
        message,
    };
    let (bytes, over) = crate::trust::read_limited(opened, MAX_FILE_BYTES)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if over {
        let size = opened.metadata().map_or(0, |m| m.len());
        return Err(err(format!(
            "file is {size} bytes; a probe file may be at most {MAX_FILE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, col) = utf8_position(e.as_bytes(), e.utf8_error().valid_up_to());
        ConfigError {
            file: file.clone(),
            at: Some((line, col)),
            message: "invalid UTF-8; a probe file must be UTF-8 text".into(),
        }
    })?;
    parse_in(
        &text,
        &file,
        env,
        path.parent(),
        Some(path),
        lenient,
        untrusted,
    )
}

/// The 1-based line and column of byte `offset` of `bytes`.
fn utf8_position(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let col = (offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)) as u64
        + 1;
    (line, col)
}

/// How a probe file is read: `lenient` for `validate` (an unset `${VAR}` is a warning),
/// `untrusted` as root for a file others can write (no `${VAR}` is expanded).
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    pub lenient: bool,
    pub untrusted: bool,
}

/// Parse and resolve probe-file text; `file` names it in errors, relative paths are relative
/// to the current directory.
pub fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, ConfigError> {
    parse_in(text, file, env, None, None, false, false)
}

fn parse_in(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
    path: Option<&Path>,
    lenient: bool,
    untrusted: bool,
) -> Result<Plan, ConfigError> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(ConfigError {
            file: file.to_string(),
            at: Some((1, 1)),
            message: "the file is empty; expected a probe file with at least 'targets:', e.g. targets: [ { name: web, base_url: http://127.0.0.1:8000, routes: [ { path: /health } ] } ]".into(),
        });
    }
    ROUTE_SLOTS.with(|c| c.set(0));
    let raw: RawFile = plain::from_str(text).map_err(|e| {
        let e = yaml_error(file, text, &e);
        if untrusted {
            // As `Ctx::err` does for the values: the place, never the text.
            ConfigError {
                message: context::withheld("probe file"),
                ..e
            }
        } else {
            e
        }
    })?;
    // A probe file others can write may not include: its writer would choose which of root's
    // files are read (their errors then quoted as root's own), and which directories it lists.
    if let (true, Some(inc)) = (untrusted, raw.include.first()) {
        let l = inc.referenced;
        return Err(ConfigError {
            file: file.to_string(),
            at: (l.line() > 0).then(|| (l.line(), l.column())),
            message: "include: is not followed from a probe file that others can write: they would choose which of root's files are read; make the file and every directory on its way root's, not writable by group or others (or pass --insecure-config)".into(),
        });
    }
    // Drop-ins: the `include:` list and, for a probe file read from disk, `<name>.d/*.yaml`.
    let here = base_dir
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let found = dropins::gather(
        file,
        &raw.include,
        here,
        path,
        path.and_then(dropin_dir).as_deref(),
        MAX_TOTAL_BYTES.saturating_sub(text.len() as u64),
        rustix::process::geteuid().is_root(),
    )?;
    resolve(
        raw,
        file,
        text,
        env,
        base_dir,
        found,
        Reading { lenient, untrusted },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_that_is_the_unit_itself_is_an_error_at_through() {
        let e = parse(
            "targets:\n  - name: api\n    base_url: http://127.0.0.1:1\n    unit: api.service\n    recovery:\n      through: api.service\n    routes: [ { path: / } ]\n",
            "p.yaml",
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.at, Some((6, 16)), "{e}");
        assert!(e.message.contains("the unit itself"), "{e}");
    }

    #[test]
    fn an_empty_or_comment_only_file_says_so() {
        for text in ["", "\n\n", "# only a comment\n  # another\n"] {
            let e = parse(text, "p.yaml", &|_| None).unwrap_err();
            assert_eq!(e.at, Some((1, 1)), "{e}");
            assert!(e.message.contains("the file is empty"), "{e}");
        }
    }
}

/// Probe files and helpers shared by the unit tests of this folder.
#[cfg(test)]
mod testing {
    use super::parse;

    /// A valid target, for files whose error is elsewhere.
    pub(super) const TARGET: &str =
        "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: /ok } ]\n";
    /// A target without routes; the test adds them.
    pub(super) const HEAD: &str = "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n";

    pub(super) fn err(yaml: &str) -> String {
        parse(yaml, "p.yaml", &|_| None)
            .map(|_| ())
            .expect_err("the probe file is refused")
            .to_string()
    }

    pub(super) fn assert_err(yaml: &str, want: &str) {
        let got = err(yaml);
        assert!(got.contains(want), "want {want:?} in\n{got}\nfor\n{yaml}");
    }
}
