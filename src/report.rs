//! Reports: the run's data rendered as text (people), JSON (scripts), JUnit (CI), the
//! Prometheus text exposition (node_exporter's textfile collector) or a Nagios plugin's output
//! (`nagios`). Pure: data in, string out.

use std::fmt::Write as _;

use crate::outcome::Outcome;
use crate::probe::fmt_duration;
use crate::recovery;
use crate::run::RunReport;
use crate::verdict::{RunStatus, Verdict};

pub mod nagios;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
    Prometheus,
    /// The Nagios plugin protocol (status line, perfdata, long output).
    Nagios,
}

pub fn render(report: &RunReport, format: Format, colour: bool) -> String {
    match format {
        Format::Text => text(report, colour),
        Format::Json => json(report),
        Format::Junit => junit(report),
        Format::Prometheus => prometheus(report),
        Format::Nagios => nagios::render(report),
    }
}

pub fn json(report: &RunReport) -> String {
    let mut out = Vec::new();
    write_json(report, &mut out).expect("report serialises");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// [`json`] written as it is made: a fleet's report (megabytes) never sits in memory whole.
pub fn write_json(report: &RunReport, mut w: impl std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut w, report)?;
    w.write_all(b"\n")
}

fn paint(colour: bool, code: &str, s: &str) -> String {
    if colour {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn outcome_colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "32",
        Outcome::RateLimited | Outcome::Slow | Outcome::CertExpiring => "33",
        _ => "31",
    }
}

pub fn text(report: &RunReport, colour: bool) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "TARGET".into(),
        "ROUTE".into(),
        "CLASS".into(),
        "OUTCOME".into(),
        "CODE".into(),
        "TRIES".into(),
        "TIME".into(),
    ]];
    let mut outcomes = vec![None];
    for t in &report.targets {
        for r in &t.routes {
            rows.push([
                t.name.clone(),
                r.path.clone(),
                r.class.as_str().into(),
                r.outcome.as_str().into(),
                r.status_code.map_or("-".into(), |c| c.to_string()),
                r.attempts.to_string(),
                fmt_duration(r.elapsed),
            ]);
            outcomes.push(Some(r.outcome));
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (row, outcome) in rows.iter().zip(outcomes) {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let padded = format!("{cell:<w$}", w = widths[c]);
            let cell = match (c, outcome) {
                (3, Some(o)) => paint(colour, outcome_colour(o), &padded),
                (_, None) => paint(colour, "1", &padded),
                _ => padded,
            };
            line.push_str(&cell);
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    // Why things failed, one line each, below the table.
    let failures: Vec<String> = report
        .targets
        .iter()
        .flat_map(|t| {
            t.routes
                .iter()
                .filter(|r| r.outcome != Outcome::Ok)
                .map(move |r| (t, r))
        })
        .filter_map(|(t, r)| {
            r.error
                .as_ref()
                .map(|e| format!("  {} {}: {} — {e}", t.name, r.path, r.outcome))
        })
        .collect();
    if !failures.is_empty() {
        out.push('\n');
        for f in failures {
            out.push_str(&f);
            out.push('\n');
        }
    }
    // Redirects followed to an answer that passed (a failure's error already names them).
    let followed: Vec<String> = report
        .targets
        .iter()
        .flat_map(|t| t.routes.iter().map(move |r| (t, r)))
        .filter(|(_, r)| !r.redirects.is_empty() && r.outcome.is_pass())
        .map(|(t, r)| {
            let hops: Vec<String> = r
                .redirects
                .iter()
                .map(|h| format!("{} {}", h.status, h.location))
                .collect();
            format!("  {} {}: redirected {}", t.name, r.path, hops.join(" → "))
        })
        .collect();
    if !followed.is_empty() {
        out.push('\n');
        for f in followed {
            out.push_str(&f);
            out.push('\n');
        }
    }
    out.push('\n');
    for t in &report.targets {
        let v = match t.verdict {
            Verdict::Healthy => paint(colour, "32", "healthy"),
            Verdict::Degraded | Verdict::Unknown => paint(colour, "33", t.verdict.as_str()),
            Verdict::Unhealthy => paint(colour, "31", "unhealthy"),
        };
        let why = match t.verdict {
            Verdict::Unknown => " (every core route rate-limited: contention, not proof of a hang)",
            Verdict::Degraded => " (core routes fine; auxiliary failures or slow routes)",
            _ => "",
        };
        let _ = writeln!(out, "{}: {v}{why}", t.name);
        if let Some(r) = &t.recovery {
            let _ = writeln!(
                out,
                "  recovery ({} {}): {}",
                r.action.as_str(),
                r.unit,
                recovery::story(r)
            );
            if let Some(said) = r
                .evidence
                .as_ref()
                .map(|e| e.summary())
                .filter(|s| !s.is_empty())
            {
                let _ = writeln!(out, "  evidence: {said}");
            }
            if let Some(d) = &r.dump {
                let _ = writeln!(
                    out,
                    "  dump: {} {} after {} ms; its output: {}",
                    d.signal.as_str(),
                    if d.exited {
                        "ended the process"
                    } else {
                        "left it running, SIGKILL followed"
                    },
                    d.waited_ms,
                    d.journal
                );
            }
        }
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let status = match report.status {
        RunStatus::Healthy => paint(colour, "32", "HEALTHY"),
        RunStatus::Degraded | RunStatus::Unknown => {
            paint(colour, "33", &report.status.as_str().to_uppercase())
        }
        RunStatus::Recovered => paint(colour, "33", "RECOVERED"),
        RunStatus::Unhealthy => paint(colour, "31", "UNHEALTHY"),
    };
    let _ = writeln!(
        out,
        "\n{status}: {} ({} in {})",
        report.summary.line,
        crate::words::count(report.summary.counts.routes as u64, "route", "routes"),
        fmt_duration(std::time::Duration::from_millis(report.elapsed_ms))
    );
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One `<testsuite>` per target, one `<testcase>` per route. A failing core route is a
/// `<failure>`; auxiliary failures and 429s pass with a `<system-out>` note.
///
/// Written by hand rather than with `quick-junit`, whose document says the same in other
/// bytes (4-space indentation, `name` before `classname`, `disabled` in place of `skipped` on
/// a suite, no empty `<testcase/>`): CI consumers diff and archive these files, and they stay
/// as they were.
pub fn junit(report: &RunReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = report.targets.iter().map(|t| t.routes.len()).sum();
    let failed = |t: &crate::run::TargetReport| {
        t.routes
            .iter()
            .filter(|r| r.class == crate::plan::Class::Core && !r.outcome.is_pass())
            .count()
    };
    let all_failed: usize = report.targets.iter().map(failed).sum();
    let _ = writeln!(
        out,
        "<testsuites name=\"routewatch\" tests=\"{total}\" failures=\"{all_failed}\" errors=\"0\" time=\"{:.3}\">",
        report.elapsed_ms as f64 / 1000.0
    );
    for t in &report.targets {
        // Routes run concurrently: the suite took about as long as its slowest case.
        let time: f64 = t
            .routes
            .iter()
            .map(|r| r.elapsed.as_secs_f64())
            .fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">",
            xml_escape(&t.name),
            t.routes.len(),
            failed(t)
        );
        for (r, name) in t.routes.iter().zip(route_names(t)) {
            let _ = write!(
                out,
                "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(&t.name),
                r.class.as_str(),
                xml_escape(&name),
                r.elapsed.as_secs_f64()
            );
            let detail = format!(
                "{} after {}{}{}",
                r.outcome,
                crate::words::count(u64::from(r.attempts), "attempt", "attempts"),
                r.status_code
                    .map_or(String::new(), |c| format!(", status {c}")),
                r.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            );
            if r.class == crate::plan::Class::Core && !r.outcome.is_pass() {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>",
                    xml_escape(&detail),
                    r.outcome,
                    xml_escape(&r.url)
                );
            } else if r.outcome != Outcome::Ok {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>{}</system-out>\n    </testcase>",
                    xml_escape(&format!("warning ({}): {detail}", r.class.as_str()))
                );
            } else {
                out.push_str("/>\n");
            }
        }
        if let Some(rec) = &t.recovery {
            let _ = writeln!(
                out,
                "    <system-out>{}</system-out>",
                xml_escape(&format!("recovery: {}", recovery::story(rec)))
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Text exposition format 0.0.4, for node_exporter's textfile collector.
pub fn prometheus(report: &RunReport) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    // Each route's label set, unique within the file (a collector rejects duplicate series).
    let labels: Vec<String> = report
        .targets
        .iter()
        .flat_map(|t| {
            t.routes.iter().zip(route_names(t)).map(move |(r, name)| {
                format!(
                    "{{target=\"{}\",route=\"{}\",class=\"{}\"}}",
                    label(&t.name),
                    label(&name),
                    r.class.as_str()
                )
            })
        })
        .collect();
    let routes: Vec<_> = report
        .targets
        .iter()
        .flat_map(|t| t.routes.iter())
        .zip(&labels)
        .collect();
    family(
        "routewatch_route_up",
        "gauge",
        "1 if the route passed (ok, rate-limited, slow or cert_expiring), else 0.",
        routes
            .iter()
            .map(|(r, l)| (l.to_string(), u8::from(r.outcome.is_pass()).to_string()))
            .collect(),
    );
    family(
        "routewatch_route_duration_seconds",
        "gauge",
        "Time spent on the route, all attempts included.",
        routes
            .iter()
            .map(|(r, l)| (l.to_string(), format!("{:.6}", r.elapsed.as_secs_f64())))
            .collect(),
    );
    family(
        "routewatch_route_attempts",
        "gauge",
        "Attempts made for the route in the last run.",
        routes
            .iter()
            .map(|(r, l)| (l.to_string(), r.attempts.to_string()))
            .collect(),
    );
    family(
        "routewatch_route_outcome",
        "gauge",
        "1 for the route's outcome in the last run.",
        routes
            .iter()
            .map(|(r, l)| {
                // The route's label set with one more label.
                let open = l.trim_end_matches('}');
                (
                    format!("{open},outcome=\"{}\"}}", r.outcome),
                    "1".to_string(),
                )
            })
            .collect(),
    );
    let certs: Vec<(String, String)> = routes
        .iter()
        .filter_map(|(r, l)| {
            let cert = r.tls_cert.as_ref()?;
            Some((l.to_string(), cert.not_after_unix.to_string()))
        })
        .collect();
    if !certs.is_empty() {
        family(
            "routewatch_tls_cert_expiry_seconds",
            "gauge",
            "Unix time at which the certificate chain an https route was answered over expires: the earliest notAfter among the certificates the server presented (leaf and intermediates).",
            certs,
        );
    }
    family(
        "routewatch_target_healthy",
        "gauge",
        "1 if the target's verdict is healthy, degraded or unknown (no core route failed), else 0.",
        report
            .targets
            .iter()
            .map(|t| {
                (
                    format!(
                        "{{target=\"{}\",verdict=\"{}\"}}",
                        label(&t.name),
                        t.verdict.as_str()
                    ),
                    u8::from(t.verdict != Verdict::Unhealthy).to_string(),
                )
            })
            .collect(),
    );
    family(
        "routewatch_recoveries_total",
        "counter",
        "Recovery actions taken on the target's unit, by outcome (kept across runs in the state file).",
        report
            .targets
            .iter()
            .filter(|t| t.unit.is_some())
            .flat_map(|t| {
                ["recovered", "not_recovered"].map(|outcome| {
                    (
                        format!("{{target=\"{}\",outcome=\"{outcome}\"}}", label(&t.name)),
                        t.recoveries_total
                            .get(outcome)
                            .copied()
                            .unwrap_or(0)
                            .to_string(),
                    )
                })
            })
            .collect(),
    );
    family(
        "routewatch_recovery_refusals_total",
        "counter",
        "Times recovery refused to act on the target, by reason (a stable word: not_hung, cooldown, startup_grace, …; kept across runs in the state file). A series appears at its first refusal.",
        refusal_samples(report),
    );
    family(
        "routewatch_last_run_timestamp_seconds",
        "gauge",
        "Unix time when the last run started.",
        vec![(String::new(), report.started_at.to_string())],
    );
    family(
        "routewatch_exit_code",
        "gauge",
        "Exit code of the last run (0 healthy, 1 unhealthy, 3 recovered).",
        vec![(String::new(), report.exit_code.to_string())],
    );
    out
}

/// `routewatch_recovery_refusals_total` samples: one per target and refusal kind seen so far.
fn refusal_samples(report: &RunReport) -> Vec<(String, String)> {
    report
        .targets
        .iter()
        .flat_map(|t| {
            t.refusals_total.iter().map(move |(reason, n)| {
                (
                    format!(
                        "{{target=\"{}\",reason=\"{}\"}}",
                        label(&t.name),
                        label(reason)
                    ),
                    n.to_string(),
                )
            })
        })
        .collect()
}

/// A name per route of a target, unique within it: the path, then `path#2`, `path#3` … for
/// the same path again (another method or body), in file order. Pure.
pub fn route_names(t: &crate::run::TargetReport) -> Vec<String> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    t.routes
        .iter()
        .map(|r| {
            let n = seen.entry(r.path.as_str()).or_default();
            *n += 1;
            if *n == 1 {
                r.path.clone()
            } else {
                format!("{}#{n}", r.path)
            }
        })
        .collect()
}
