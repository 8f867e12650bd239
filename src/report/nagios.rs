//! The Nagios plugin protocol (Icinga, Naemon, Zabbix agents and others speak it): one status
//! line `ROUTEWATCH <STATE> - <summary> | <perfdata>`, long output below it, and the state as
//! the exit code. Pure: data in, string out.

use std::fmt::Write as _;

use crate::outcome::Outcome;
use crate::plan::Class;
use crate::recovery::{self, RecoveryOutcome};
use crate::run::{RunReport, TargetReport};
use crate::verdict::Verdict;

/// The whole output stays within this many bytes: Nagios keeps 8 KiB of a plugin's output by
/// default, and a fleet has thousands of routes. The counts in the status line and the
/// aggregate perfdata always cover every route; what does not fit is counted in a last line.
pub const MAX_OUTPUT: usize = 8000;
/// Per-route perfdata items stop when the status line reaches this many bytes.
const MAX_STATUS_LINE: usize = 3000;
/// A long-output line (a route's error can be long) is cut to this many bytes.
const MAX_LINE: usize = 400;

/// A plugin's state, its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// A target's state: healthy or recovered (its core routes pass again) is OK, degraded or
/// unknown (every core route rate-limited) is WARNING, unhealthy is CRITICAL. Pure.
pub fn target_state(t: &TargetReport) -> State {
    match t.verdict {
        Verdict::Healthy => State::Ok,
        Verdict::Degraded | Verdict::Unknown => State::Warning,
        Verdict::Unhealthy if recovered(t) => State::Ok,
        Verdict::Unhealthy => State::Critical,
    }
}

fn recovered(t: &TargetReport) -> bool {
    t.recovery
        .as_ref()
        .is_some_and(|r| r.outcome == Some(RecoveryOutcome::Recovered))
}

/// The run's state: its worst target's (a recovered target does not hide a degraded one).
pub fn state(report: &RunReport) -> State {
    report
        .targets
        .iter()
        .map(target_state)
        .max()
        .unwrap_or(State::Ok)
}

/// The plugin output of a finished run, at most [`MAX_OUTPUT`] bytes.
pub fn render(report: &RunReport) -> String {
    let mut out = format!(
        "ROUTEWATCH {} - {}",
        state(report).as_str(),
        cut(&summary(report), MAX_STATUS_LINE / 2)
    );
    let mut perf = aggregate_perfdata(report);
    for item in route_perfdata(report) {
        if out.len() + perf.len() + item.len() + 4 > MAX_STATUS_LINE {
            break;
        }
        perf.push(' ');
        perf.push_str(&item);
    }
    out.push_str(" | ");
    out.push_str(&perf);
    out.push('\n');
    let lines = long_output(report);
    let total = lines.len();
    // Room for the line that says what was left out.
    let budget = MAX_OUTPUT - 80;
    for (i, line) in lines.into_iter().enumerate() {
        let line = cut(&line, MAX_LINE);
        if out.len() + line.len() + 1 > budget {
            let more = total - i;
            out.push_str(&format!(
                "… and {more} more {} (see --format json)\n",
                if more == 1 { "line" } else { "lines" }
            ));
            break;
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The status line of a check that could not run (or was misused): UNKNOWN, with why.
pub fn unknown(message: &str) -> String {
    format!("ROUTEWATCH UNKNOWN - {}\n", text(message))
}

/// Which targets are not OK, then the run's counts.
fn summary(report: &RunReport) -> String {
    let mut parts = Vec::new();
    for (word, pick) in [
        ("unhealthy", State::Critical),
        ("degraded or unknown", State::Warning),
    ] {
        let names: Vec<&str> = report
            .targets
            .iter()
            .filter(|t| target_state(t) == pick)
            .map(|t| t.name.as_str())
            .collect();
        if !names.is_empty() {
            parts.push(format!("{word}: {}", names.join(", ")));
        }
    }
    let back: Vec<&str> = report
        .targets
        .iter()
        .filter(|t| t.verdict == Verdict::Unhealthy && recovered(t))
        .map(|t| t.name.as_str())
        .collect();
    if !back.is_empty() {
        parts.push(format!("recovered (serving again): {}", back.join(", ")));
    }
    if parts.is_empty() {
        let n = report.targets.len();
        parts.push(format!(
            "{n} {} healthy",
            if n == 1 { "target" } else { "targets" }
        ));
    }
    parts.push(report.summary.line.clone());
    text(&parts.join("; "))
}

/// `routes`, `ok`, `core_failed`, `rate_limited`, `time`. Thresholds are left empty:
/// routewatch judges, the graph shows.
fn aggregate_perfdata(report: &RunReport) -> String {
    let counts = &report.summary.counts;
    let core_failed = routes(report)
        .filter(|(_, r, _)| r.class == Class::Core && !r.outcome.is_pass())
        .count();
    [
        format!("routes={};;;0", counts.routes),
        format!("ok={};;;0", counts.ok),
        format!("core_failed={core_failed};;;0"),
        format!("rate_limited={};;;0", counts.rate_limited),
        format!("time={:.3}s;;;0", report.elapsed_ms as f64 / 1000.0),
    ]
    .join(" ")
}

/// Each route's time, `'TARGET ROUTE'=0.001621s;;;0`, in report order.
fn route_perfdata(report: &RunReport) -> impl Iterator<Item = String> + '_ {
    routes(report).map(|(t, r, name)| {
        format!(
            "{}={:.6}s;;;0",
            perf_label(&format!("{} {name}", t.name)),
            r.elapsed.as_secs_f64()
        )
    })
}

/// Every route with its target and its unique name, in report order.
fn routes(
    report: &RunReport,
) -> impl Iterator<Item = (&TargetReport, &crate::probe::RouteResult, String)> {
    report.targets.iter().flat_map(|t| {
        t.routes
            .iter()
            .zip(super::route_names(t))
            .map(move |(r, name)| (t, r, name))
    })
}

/// One line per recovery story, per route that is not `ok`, and per warning, in that order
/// (what matters most first, if the output has to be cut).
fn long_output(report: &RunReport) -> Vec<String> {
    let mut lines = Vec::new();
    for t in &report.targets {
        if let Some(r) = &t.recovery {
            lines.push(text(&format!(
                "{} recovery ({} {}): {}",
                t.name,
                r.action.as_str(),
                r.unit,
                recovery::story(r)
            )));
        }
    }
    for (t, r, name) in routes(report).filter(|(_, r, _)| r.outcome != Outcome::Ok) {
        let mut line = format!(
            "{} {name} ({}): {} after {}",
            t.name,
            r.class.as_str(),
            r.outcome,
            crate::words::count(u64::from(r.attempts), "attempt", "attempts")
        );
        if let Some(code) = r.status_code {
            let _ = write!(line, ", status {code}");
        }
        if let Some(e) = &r.error {
            let _ = write!(line, ": {e}");
        }
        lines.push(text(&line));
    }
    for w in &report.warnings {
        lines.push(text(&format!("warning: {w}")));
    }
    lines
}

/// Plugin text: one line, and no `|` (it starts the perfdata).
fn text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A perfdata label: quoted when it holds anything but `[A-Za-z0-9_./:-]`, a single quote
/// doubled; `=` (never allowed in a label) becomes `_`, and so do `|` and control characters.
pub fn perf_label(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '=' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let plain = !clean.is_empty()
        && clean
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:-".contains(c));
    if plain {
        clean
    } else {
        format!("'{}'", clean.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(verdict: Verdict, outcome: Option<RecoveryOutcome>) -> TargetReport {
        let recovery = outcome.map(|o| recovery::RecoveryReport {
            action: crate::plan::Action::Kill,
            decision: recovery::Decision::Act,
            reason: "SIGKILL".into(),
            refusal: None,
            unit: "api.service".into(),
            pid: Some(7),
            new_pid: Some(8),
            outcome: Some(o),
            confirm_ms: None,
            act_ms: None,
            verify_ms: None,
            total_ms: 0,
            evidence: None,
            dump: None,
        });
        TargetReport {
            name: "api".into(),
            verdict,
            unit: Some("api.service".into()),
            file: None,
            routes: Vec::new(),
            recovery,
            recoveries_total: Default::default(),
            refusals_total: Default::default(),
        }
    }

    #[test]
    fn a_recovered_target_is_ok_and_a_failed_recovery_critical() {
        use RecoveryOutcome::{NotRecovered, Recovered};
        let cases = [
            (Verdict::Healthy, None, State::Ok),
            (Verdict::Degraded, None, State::Warning),
            (Verdict::Unknown, None, State::Warning),
            (Verdict::Unhealthy, None, State::Critical),
            (Verdict::Unhealthy, Some(Recovered), State::Ok),
            (Verdict::Unhealthy, Some(NotRecovered), State::Critical),
        ];
        for (verdict, outcome, want) in cases {
            assert_eq!(
                target_state(&target(verdict, outcome)),
                want,
                "{verdict:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn a_fleet_is_cut_to_what_nagios_keeps() {
        let route = |i: usize| crate::probe::RouteResult {
            path: format!("/route/{i}"),
            url: format!("http://127.0.0.1:1/route/{i}"),
            class: Class::Core,
            outcome: Outcome::Timeout,
            status_code: None,
            attempts: 3,
            elapsed: std::time::Duration::from_millis(2000),
            error: Some("no complete response within 2.0s ".repeat(40)),
            cut_short: false,
            tls_cert: None,
            redirects: Vec::new(),
        };
        let mut t = target(Verdict::Unhealthy, None);
        t.routes = (0..5000).map(route).collect();
        let report = RunReport {
            version: 1,
            status: crate::verdict::RunStatus::Unhealthy,
            exit_code: 1,
            started_at: 0,
            elapsed_ms: 2000,
            summary: crate::run::SummaryDoc {
                counts: crate::outcome::Summary::from_outcomes(t.routes.iter().map(|r| r.outcome)),
                line: "0 ok, 5000 timeout/unreachable".into(),
            },
            targets: vec![t],
            warnings: Vec::new(),
            notifications: Vec::new(),
        };
        let out = render(&report);
        assert!(out.len() <= MAX_OUTPUT, "{}", out.len());
        let first = out.lines().next().unwrap();
        assert!(first.len() <= MAX_STATUS_LINE, "{}", first.len());
        assert!(first.contains("routes=5000;;;0") && first.contains("core_failed=5000;;;0"));
        let last = out.lines().last().unwrap();
        assert!(
            last.starts_with("… and ") && last.ends_with(" more lines (see --format json)"),
            "{last}"
        );
        assert!(out.lines().skip(1).all(|l| l.len() <= MAX_LINE), "{out}");
    }

    #[test]
    fn labels_are_quoted_when_needed_and_never_hold_an_equals_sign() {
        assert_eq!(perf_label("api/health"), "api/health");
        assert_eq!(perf_label("api /health"), "'api /health'");
        assert_eq!(perf_label("it's /x"), "'it''s /x'");
        assert_eq!(perf_label("api /q?a=1|b"), "'api /q?a_1_b'");
        assert_eq!(perf_label(""), "''");
    }

    #[test]
    fn text_is_one_line_without_a_pipe() {
        assert_eq!(text("a|b\nc"), "a/b c");
        assert_eq!(unknown("bad\n|x"), "ROUTEWATCH UNKNOWN - bad /x\n");
    }

    #[test]
    fn states_order_worst_last_and_are_the_exit_codes() {
        assert!(State::Ok < State::Warning && State::Warning < State::Critical);
        assert!(State::Critical < State::Unknown);
        assert_eq!(
            [State::Ok, State::Warning, State::Critical, State::Unknown].map(State::exit_code),
            [0, 1, 2, 3]
        );
    }
}
