//! What a person sees while and after a check runs: the report on stdout or in a file, the
//! progress bar, the per-route log lines.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use routewatch::log::{self, Level};
use routewatch::plan::Plan;
use routewatch::state;

use super::env;

/// Print to stdout (a closed pipe is not an error) or write the file atomically.
pub(crate) fn emit(text: &str, output: Option<&Path>) -> Result<(), String> {
    match output {
        Some(path) => state::write_atomic(path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(format!("cannot write the report: {e}"))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Stream a report to stdout as `write` makes it (a closed pipe is not an error).
pub(crate) fn emit_streamed(
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), String> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the report: {e}"))
        }
        _ => Ok(()),
    }
}

/// Colour for a report on stdout: a terminal, `NO_COLOR` unset or empty, `TERM` not `dumb`.
pub(crate) fn stdout_colour() -> bool {
    std::io::stdout().is_terminal()
        && env("NO_COLOR").is_none_or(|v| v.is_empty())
        && env("TERM").as_deref() != Some("dumb")
}

pub(crate) fn progress_bar(plan: &Plan, quiet: bool) -> Option<indicatif::ProgressBar> {
    // Never under systemd (INVOCATION_ID) or CI (CI=true in every common CI system), even
    // when they hand us a terminal.
    let unattended = ["CI", "INVOCATION_ID"]
        .iter()
        .any(|v| env(v).is_some_and(|x| !x.is_empty() && x != "false" && x != "0"));
    if quiet || unattended || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: usize = plan.targets.iter().map(|t| t.routes.len()).sum();
    let pb = indicatif::ProgressBar::new(total as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(if total == 1 {
            "{spinner} probing {pos}/{len} route [{elapsed}] {wide_bar}"
        } else {
            "{spinner} probing {pos}/{len} routes [{elapsed}] {wide_bar}"
        })
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    Some(pb)
}

/// Per finished route: advance the bar, and one log line: a failed probe at warn, a 429 at
/// info, any other pass at debug.
pub(crate) fn make_observer(pb: Option<indicatif::ProgressBar>) -> routewatch::probe::Observer {
    Arc::new(move |target, _, r| {
        let line = || {
            if r.outcome.is_pass()
                && !matches!(
                    r.outcome,
                    routewatch::outcome::Outcome::Slow | routewatch::outcome::Outcome::CertExpiring
                )
            {
                // 429s at -v; at -vv every route says when it finished (a live view of a
                // long run).
                let (level, event) = if r.outcome == routewatch::outcome::Outcome::RateLimited {
                    (Level::Info, "probe_rate_limited")
                } else {
                    (Level::Debug, "probe_ok")
                };
                log::emit(
                    level,
                    event,
                    &[
                        ("target", &target.name),
                        ("route", &r.path),
                        ("class", &r.class.as_str()),
                        ("attempts", &r.attempts),
                        ("elapsed_ms", &r.elapsed.as_millis()),
                    ],
                );
                return;
            }
            let elapsed = r.elapsed.as_millis();
            let status = r.status_code.map_or("-".to_string(), |c| c.to_string());
            log::emit(
                Level::Warn,
                "probe_failed",
                &[
                    ("target", &target.name),
                    ("route", &r.path),
                    ("class", &r.class.as_str()),
                    ("outcome", &r.outcome),
                    ("attempts", &r.attempts),
                    ("elapsed_ms", &elapsed),
                    ("status", &status),
                    ("error", &r.error.as_deref().unwrap_or("")),
                ],
            );
        };
        match &pb {
            Some(pb) => {
                pb.suspend(line);
                pb.inc(1);
            }
            None => line(),
        }
    })
}
