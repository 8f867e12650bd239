//! What resolving carries along (the file's text, the environment, the secrets found so far)
//! and the checks of single values where they are written: `> 0` durations and sizes, counts
//! within their range, the timing keys.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_saphyr::Spanned;

use super::ConfigError;
use super::diagnostics::clip_message;
use super::scalars::{Count, Dur, Size};
use super::shape::DURATION;
use crate::plan::Timing;

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    /// The probe file's text, to echo values as written.
    pub(super) text: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// Where relative paths in the file are resolved (the probe file's directory).
    pub(super) base_dir: Option<&'a Path>,
    /// Every value taken from the environment, to be redacted from all output.
    pub(super) secrets: &'a std::cell::RefCell<Vec<String>>,
    /// Every pattern compiled so far (shared by identical patterns), and their charged size.
    pub(super) regexes: &'a Regexes,
    /// `validate`: an unset `${VAR}` is a warning (and expands to nothing), not an error.
    pub(super) lenient: bool,
    /// What is allowed but probably wrong, at its position (`validate` prints them).
    pub(super) warnings: &'a std::cell::RefCell<Vec<ConfigError>>,
    /// As root, a file others can write (`Some("drop-in")`, `Some("probe file")`): its
    /// `${VAR}` would hand root's environment to whoever writes it (in a URL, a header, a
    /// body), so none is expanded.
    pub(super) untrusted: Option<&'static str>,
}

/// The message of an error in a file others can write (as root): where, not what.
pub(super) fn withheld(kind: &str) -> String {
    format!(
        "not a valid {kind} here (its text is not shown: the {kind} fails the trust check, and whoever can write it may have linked it to a file only root can read); `routewatch validate` run by a user other than root shows why, as does fixing its ownership and mode"
    )
}

/// The patterns compiled so far, shared by the probe file and its drop-ins.
pub(super) type Regexes =
    std::cell::RefCell<(std::collections::HashMap<String, Arc<Regex>>, usize)>;

/// How to get the file trusted, for a refusal in it: a drop-in must be fixed, the probe file
/// may also be vouched for with `--insecure-config`.
pub(super) fn insecure_hint(kind: &str) -> &'static str {
    if kind == "probe file" {
        " (or pass --insecure-config)"
    } else {
        ""
    }
}

impl Ctx<'_> {
    /// An error at `at`. In a file others can write (as root) its words are not shown, only
    /// its place: whoever can write the file, or a directory or link on its way, may have
    /// pointed it at a file only root can read, and an error quoting a value would print that
    /// file's content to them. A user other than root sees the whole message with
    /// `routewatch validate`.
    pub(super) fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        match self.untrusted {
            Some(kind) => self.refuse(at, withheld(kind)),
            None => self.refuse(at, message),
        }
    }

    /// An error at `at` shown whatever the file: the refusals of what a file others can write
    /// may not do, which quote nothing but checked names.
    pub(super) fn refuse<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        let l = at.referenced;
        ConfigError {
            file: self.file.into(),
            at: (l.line() > 0).then(|| (l.line(), l.column())),
            message: clip_message(message.into()),
        }
    }

    /// A warning at `at`: allowed, but probably not what was meant.
    pub(super) fn warn<T>(&self, at: &Spanned<T>, message: impl Into<String>) {
        let w = self.err(at, message);
        self.warnings.borrow_mut().push(w);
    }

    /// A scalar as written in the file (`99999999999`, `"0s"`), else `fallback`.
    pub(super) fn shown<T>(&self, at: &Spanned<T>, fallback: impl fmt::Display) -> String {
        let span = at.defined.span();
        span.byte_offset()
            .zip(span.byte_len())
            .and_then(|(o, l)| {
                let o = usize::try_from(o).ok()?;
                self.text.get(o..o.checked_add(usize::try_from(l).ok()?)?)
            })
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.contains('\n') && s.chars().count() <= 60)
            .map_or_else(|| fallback.to_string(), str::to_string)
    }

    /// A `> 0` duration, checked where it is written.
    pub(super) fn positive(
        &self,
        scope: &str,
        key: &str,
        v: Option<&Spanned<Dur>>,
    ) -> Result<Option<Duration>, ConfigError> {
        match v {
            Some(d) if d.value.0.is_zero() => Err(self.err(
                d,
                format!(
                    "{scope}{key} {} must be greater than 0; expected {DURATION}",
                    self.shown(d, humantime::format_duration(d.value.0))
                ),
            )),
            Some(d) => Ok(Some(d.value.0)),
            None => Ok(None),
        }
    }

    /// A whole number within `range`, checked where it is written (never saturated first).
    pub(super) fn count(
        &self,
        scope: &str,
        key: &str,
        v: Option<&Spanned<Count>>,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        match v {
            Some(c) if !range.contains(&c.value.0) => Err(self.err(
                c,
                format!(
                    "{scope}{key} {} is out of range; expected {} to {}",
                    self.shown(c, c.value.0),
                    range.start(),
                    range.end()
                ),
            )),
            Some(c) => Ok(Some(c.value.0)),
            None => Ok(None),
        }
    }

    /// A `> 0` byte size, checked where it is written.
    pub(super) fn size(
        &self,
        scope: &str,
        key: &str,
        v: Option<&Spanned<Size>>,
    ) -> Result<Option<usize>, ConfigError> {
        match v {
            Some(s) if s.value.0 == 0 => Err(self.err(
                s,
                format!(
                    "{scope}{key} {} must be greater than 0; expected a size such as 65536, 64KiB or 1MiB",
                    self.shown(s, s.value.0)
                ),
            )),
            Some(s) => Ok(Some(clamp_usize(s.value.0))),
            None => Ok(None),
        }
    }

    /// The timing keys of `defaults`, a target or a route, each checked where it is written;
    /// the keys left out are `base`'s.
    pub(super) fn timing(
        &self,
        scope: &str,
        keys: TimingKeys,
        base: &Timing,
    ) -> Result<Timing, ConfigError> {
        let TimingKeys {
            timeout,
            retries,
            backoff,
            max_backoff,
            max_body,
            follow_redirects,
        } = keys;
        Ok(Timing {
            timeout: self
                .positive(scope, "timeout", timeout)?
                .unwrap_or(base.timeout),
            retries: self
                .count(scope, "retries", retries, 0..=MAX_RETRIES)?
                .map_or(base.retries, clamp_u32),
            backoff: backoff.map_or(base.backoff, |x| x.value.0),
            max_backoff: max_backoff.map_or(base.max_backoff, |x| x.value.0),
            max_body: self
                .size(scope, "max_body", max_body)?
                .unwrap_or(base.max_body),
            follow_redirects: self
                .count(
                    scope,
                    "follow_redirects",
                    follow_redirects,
                    0..=MAX_REDIRECTS,
                )?
                .map_or(base.follow_redirects, clamp_u32),
        })
    }
}

/// The timing keys of `defaults`, a target or a route as written (`None`: left out).
pub(super) struct TimingKeys<'a> {
    pub(super) timeout: Option<&'a Spanned<Dur>>,
    pub(super) retries: Option<&'a Spanned<Count>>,
    pub(super) backoff: Option<&'a Spanned<Dur>>,
    pub(super) max_backoff: Option<&'a Spanned<Dur>>,
    pub(super) max_body: Option<&'a Spanned<Size>>,
    pub(super) follow_redirects: Option<&'a Spanned<Count>>,
}

impl TimingKeys<'_> {
    /// Whether any key is written.
    pub(super) fn any(&self) -> bool {
        self.timeout.is_some()
            || self.retries.is_some()
            || self.backoff.is_some()
            || self.max_backoff.is_some()
            || self.max_body.is_some()
            || self.follow_redirects.is_some()
    }
}

/// Accepted `retries`: extra attempts after the first.
pub(super) const MAX_RETRIES: u64 = 100;
/// Accepted `follow_redirects`: hops of one attempt (curl's and browsers' limits are higher;
/// a health route that needs more than a few is a mistake).
pub(super) const MAX_REDIRECTS: u64 = 20;
/// Accepted `concurrency`: requests in flight per target.
pub(super) const MAX_CONCURRENCY: u64 = 4096;

pub(super) fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(super) fn clamp_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

    #[test]
    fn an_out_of_range_count_is_reported_where_and_as_written_with_the_range() {
        let got = err(&format!("defaults: {{ retries: 99999999999 }}\n{TARGET}"));
        assert_eq!(
            got,
            "p.yaml:1:22: defaults: retries 99999999999 is out of range; expected 0 to 100"
        );
        // Beyond u64 the YAML crate hands over a float: still the number as written.
        assert_err(
            &format!("defaults: {{ retries: 99999999999999999999999 }}\n{TARGET}"),
            "p.yaml:1:22: defaults: retries 99999999999999999999999 is out of range; expected 0 to 100",
        );
        assert_err(
            &format!("{HEAD}    routes: [ {{ path: /ok, retries: 101 }} ]\n"),
            "p.yaml:4:37: target \"a\": route /ok: retries 101 is out of range; expected 0 to 100",
        );
        // Saturating is not an answer anywhere.
        assert!(!got.contains("4294967295"), "{got}");
    }

    #[test]
    fn values_in_defaults_are_reported_inside_defaults_and_overrides_at_their_own_position() {
        assert_eq!(
            err(&format!("defaults: {{ timeout: 0s }}\n{TARGET}")),
            "p.yaml:1:22: defaults: timeout 0s must be greater than 0; expected a duration such as 500ms, 10s or 2m"
        );
        assert_eq!(
            err(&format!("defaults: {{ concurrency: 0 }}\n{TARGET}")),
            "p.yaml:1:26: defaults: concurrency 0 is out of range; expected 1 to 4096"
        );
        assert_err(
            &format!("defaults: {{ run_timeout: 0s }}\n{TARGET}"),
            "p.yaml:1:26: defaults: run_timeout 0s must be greater than 0",
        );
        assert_err(
            &format!("defaults:\n  max_body: 0KiB\n{TARGET}"),
            "p.yaml:2:13: defaults: max_body 0KiB must be greater than 0",
        );
        assert_err(
            &format!("defaults: {{ connect_timeout: \"0ms\" }}\n{TARGET}"),
            "p.yaml:1:30: defaults: connect_timeout \"0ms\" must be greater than 0",
        );
        // A bad default is bad even where every target overrides it.
        assert_err(
            &format!(
                "defaults: {{ timeout: 0s }}\n{HEAD}    timeout: 1s\n    routes: [ {{ path: /ok }} ]\n"
            ),
            "p.yaml:1:22: defaults: timeout 0s",
        );
        assert_err(
            &format!("{HEAD}    timeout: 0s\n    routes: [ {{ path: /ok }} ]\n"),
            "p.yaml:4:14: target \"a\": timeout 0s must be greater than 0",
        );
        assert_err(
            &format!("{HEAD}    concurrency: 5000\n    routes: [ {{ path: /ok }} ]\n"),
            "p.yaml:4:18: target \"a\": concurrency 5000 is out of range; expected 1 to 4096",
        );
        assert_err(
            &format!("{HEAD}    concurrency: 0\n    routes: [ {{ path: /ok }} ]\n"),
            "p.yaml:4:18: target \"a\": concurrency 0 is out of range; expected 1 to 4096",
        );
        assert_err(
            &format!("{HEAD}    routes:\n      - path: /ok\n        timeout: 0s\n"),
            "p.yaml:6:18: target \"a\": route /ok: timeout 0s must be greater than 0",
        );
        assert_err(
            &format!(
                "{HEAD}    unit: a.service\n    recovery: {{ max_actions: 0 }}\n    routes: [ {{ path: /ok }} ]\n"
            ),
            "p.yaml:5:30: recovery.max_actions 0 must be at least 1",
        );
    }
}
