//! Notifications (`notify:`): what changed since the last run, sent to webhooks.
//!
//! Which events a run sends is decided from the state file ([`decide`], pure): an unchanged
//! verdict sends nothing, `reminder` re-sends while a target stays bad, `after_runs` waits for
//! that many consecutive unhealthy runs. What each receiver remembers is a [`Mark`] per target
//! and receiver, written with the rest of the state before anything is sent (a send that then
//! fails is a warning, not retried; the reminder sends it again).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Outgoing;
use crate::plan::{Class, Header};
use crate::recovery::{Decision, RecoveryOutcome, RecoveryReport};
use crate::run::TargetReport;
use crate::verdict::Verdict;

/// The version of the JSON notification document; README "Notifications" documents it.
pub const DOCUMENT_VERSION: u32 = 1;

/// What a notification is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The target's verdict turned unhealthy (after `after_runs` consecutive runs).
    Unhealthy,
    /// Back to healthy after an announced bad verdict.
    Resolved,
    /// A recovery action ran and the re-probe passed.
    Recovered,
    /// A recovery action ran and the target did not come back.
    NotRecovered,
    /// A hang was seen but recovery was refused (once per episode), with the reason.
    Refused,
    /// Core routes pass, auxiliary ones do not (only when listed in `on`).
    Degraded,
    /// Every core route is rate-limited, or was cut short (only when listed in `on`).
    Unknown,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Unhealthy => "unhealthy",
            Event::Resolved => "resolved",
            Event::Recovered => "recovered",
            Event::NotRecovered => "not_recovered",
            Event::Refused => "refused",
            Event::Degraded => "degraded",
            Event::Unknown => "unknown",
        }
    }

    /// ntfy's priority: 5 urgent … 3 default.
    fn priority(self) -> u8 {
        match self {
            Event::NotRecovered => 5,
            Event::Unhealthy | Event::Refused => 4,
            _ => 3,
        }
    }
}

/// The events sent when `on` is not given.
pub const DEFAULT_ON: [Event; 5] = [
    Event::Unhealthy,
    Event::Resolved,
    Event::Recovered,
    Event::NotRecovered,
    Event::Refused,
];

/// How the notification is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The versioned JSON document (README "Notifications").
    #[default]
    Json,
    /// `{"text": …}`: Slack and Mattermost incoming webhooks (Discord: the webhook URL + `/slack`).
    Slack,
    /// ntfy: the text as the body, `Title` and `Priority` headers.
    Ntfy,
}

/// One `notify:` entry, resolved.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// Names this receiver in the state file: a hash of the URL as written (before `${VAR}`)
    /// and the format, so reordering the list keeps what each receiver was told.
    pub key: String,
    pub url: reqwest::Url,
    pub format: Format,
    pub on: Vec<Event>,
    pub headers: Vec<Header>,
    pub reminder: Option<Duration>,
    pub after_runs: u32,
}

/// What one receiver was told about one target (in the state file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The bad verdict announced and not yet resolved (`unhealthy`, `degraded`, `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Event>,
    /// Unix seconds the open verdict was last sent (first time or reminder).
    #[serde(default)]
    pub open_at: u64,
    /// A refusal was sent in this episode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The last event sent, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Event>,
    #[serde(default)]
    pub last_at: u64,
}

/// What a run saw of one target, as far as notifications care.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub verdict: Verdict,
    /// Consecutive unhealthy runs, this one included (before a recovery resets it).
    pub streak: u32,
    pub recovery: Option<&'a RecoveryReport>,
    /// `recovery.after_failed_runs`: a refusal before that many runs is only waiting.
    pub acting_after: Option<u32>,
    /// A core route failed the way `recovery.on` calls a hang: only then is a refusal news.
    pub hang_seen: bool,
}

/// The events this run sends to one receiver about one target, each with whether it is a
/// reminder; `mark` is updated as if they were sent. Pure.
pub fn decide(n: &Notifier, mark: &mut Mark, seen: Seen, now: u64) -> Vec<(Event, bool)> {
    let asked = |e: Event| n.on.contains(&e);
    let mut out = Vec::new();
    let bad = match seen.verdict {
        Verdict::Unhealthy if seen.streak >= n.after_runs => Some(Event::Unhealthy),
        Verdict::Degraded if asked(Event::Degraded) => Some(Event::Degraded),
        Verdict::Unknown if asked(Event::Unknown) => Some(Event::Unknown),
        _ => None,
    };
    let fine = seen.verdict == Verdict::Healthy
        || (seen.verdict == Verdict::Degraded && !asked(Event::Degraded));
    match bad {
        Some(b) if mark.open != Some(b) => {
            out.push((b, false));
            mark.open = Some(b);
            mark.open_at = now;
        }
        Some(b)
            if n.reminder
                .is_some_and(|r| now.saturating_sub(mark.open_at) >= r.as_secs()) =>
        {
            out.push((b, true));
            mark.open_at = now;
        }
        Some(_) => {}
        None if fine && mark.open.is_some() => {
            out.push((Event::Resolved, false));
            mark.open = None;
            mark.refused = false;
        }
        None => {}
    }
    if let Some(r) = seen.recovery {
        match r.outcome {
            Some(RecoveryOutcome::Recovered) => out.push((Event::Recovered, false)),
            Some(RecoveryOutcome::NotRecovered) => out.push((Event::NotRecovered, false)),
            None if r.decision == Decision::Refuse
                && seen.verdict == Verdict::Unhealthy
                && seen.hang_seen
                && seen.acting_after.is_none_or(|after| seen.streak >= after)
                && !mark.refused =>
            {
                out.push((Event::Refused, false));
                mark.refused = true;
            }
            None => {}
        }
    }
    out.retain(|(e, _)| asked(*e));
    if let Some((e, _)) = out.last() {
        mark.last = Some(*e);
        mark.last_at = now;
    }
    out
}

/// The JSON notification document (version [`DOCUMENT_VERSION`]).
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    pub version: u32,
    pub event: Event,
    /// A reminder of an unchanged bad verdict.
    pub reminder: bool,
    pub target: &'a str,
    pub unit: Option<&'a str>,
    pub verdict: Verdict,
    pub consecutive_unhealthy: u32,
    /// The routes that did not pass (core first).
    pub failed_routes: Vec<FailedRoute<'a>>,
    pub recovery: Option<&'a RecoveryReport>,
    pub host: &'a str,
    pub routewatch_version: &'a str,
    /// Unix seconds.
    pub at: u64,
    /// The same in one line (what `slack` and `ntfy` send).
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct FailedRoute<'a> {
    pub path: &'a str,
    pub class: Class,
    pub outcome: crate::outcome::Outcome,
    pub status_code: Option<u16>,
    pub error: Option<&'a str>,
}

/// One line saying what happened, for people.
fn text(event: Event, reminder: bool, t: &TargetReport, host: &str) -> String {
    let failed: Vec<String> = t
        .routes
        .iter()
        .filter(|r| !r.outcome.is_pass())
        .take(5)
        .map(|r| format!("{} {}", r.path, r.outcome))
        .collect();
    let failed = if failed.is_empty() {
        String::new()
    } else {
        format!(": {}", failed.join(", "))
    };
    let rec = t.recovery.as_ref();
    let unit = t.unit.as_deref().unwrap_or("-");
    let what = match event {
        Event::Unhealthy => format!("is unhealthy{failed}"),
        Event::Degraded => format!("is degraded{failed}"),
        Event::Unknown => format!("is unknown{failed}"),
        Event::Resolved => "is healthy again".into(),
        Event::Recovered => format!(
            "was recovered: {} of {unit}{}",
            rec.map_or("-", |r| r.action.as_str()),
            rec.and_then(|r| r.pid.zip(r.new_pid))
                .map_or(String::new(), |(a, b)| format!(" (PID {a} → {b})"))
        ),
        Event::NotRecovered => format!(
            "was NOT recovered by the {} of {unit}: {}",
            rec.map_or("-", |r| r.action.as_str()),
            rec.map_or("", |r| r.reason.as_str())
        ),
        Event::Refused => format!(
            "is hung; recovery of {unit} refused: {}",
            rec.map_or("", |r| r.reason.as_str())
        ),
    };
    let again = if reminder { " (still)" } else { "" };
    format!("routewatch on {host}: {}{again} {what}", t.name)
}

/// Where and when a notification is sent from.
pub struct Stamp {
    pub host: String,
    /// Unix seconds.
    pub now: u64,
}

/// The request for one event about one target.
pub fn outgoing(
    n: &Notifier,
    event: Event,
    reminder: bool,
    t: &TargetReport,
    streak: u32,
    stamp: &Stamp,
    redact: &dyn Fn(&str) -> String,
) -> Outgoing {
    let (host, now) = (stamp.host.as_str(), stamp.now);
    let line = redact(&text(event, reminder, t, host));
    let (content_type, body, mut headers) = match n.format {
        Format::Json => {
            let mut failed: Vec<&crate::probe::RouteResult> =
                t.routes.iter().filter(|r| !r.outcome.is_pass()).collect();
            failed.sort_by_key(|r| r.class != Class::Core);
            let doc = Document {
                version: DOCUMENT_VERSION,
                event,
                reminder,
                target: &t.name,
                unit: t.unit.as_deref(),
                verdict: t.verdict,
                consecutive_unhealthy: streak,
                failed_routes: failed
                    .iter()
                    .map(|r| FailedRoute {
                        path: &r.path,
                        class: r.class,
                        outcome: r.outcome,
                        status_code: r.status_code,
                        error: r.error.as_deref(),
                    })
                    .collect(),
                recovery: t.recovery.as_ref(),
                host,
                routewatch_version: env!("CARGO_PKG_VERSION"),
                at: now,
                text: line.clone(),
            };
            let json = serde_json::to_string_pretty(&doc).unwrap_or_default();
            ("application/json", redact(&json), Vec::new())
        }
        Format::Slack => (
            "application/json",
            serde_json::json!({ "text": line }).to_string(),
            Vec::new(),
        ),
        Format::Ntfy => {
            let title = redact(&format!("routewatch: {} {}", t.name, event.as_str()));
            let mut hs = Vec::new();
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&title) {
                hs.push(header("title", v));
            }
            hs.push(header(
                "priority",
                reqwest::header::HeaderValue::from(u16::from(event.priority())),
            ));
            ("text/plain; charset=utf-8", format!("{line}\n"), hs)
        }
    };
    headers.extend(n.headers.iter().cloned());
    Outgoing {
        kind: "notify",
        what: format!("{} of {}", event.as_str(), t.name),
        url: n.url.clone(),
        headers,
        content_type,
        body,
    }
}

fn header(name: &'static str, value: reqwest::header::HeaderValue) -> Header {
    Header {
        name: reqwest::header::HeaderName::from_static(name),
        value,
        secret: false,
    }
}

/// Decide and build every notification of a run, updating what each receiver was told in
/// `state`. `streaks[i]` is target `i`'s unhealthy streak as this run found it.
pub fn collect(
    plan: &crate::plan::Plan,
    state: &mut crate::state::State,
    targets: &[TargetReport],
    streaks: &[u32],
    now: std::time::SystemTime,
) -> Vec<Outgoing> {
    if plan.notify.is_empty() {
        return Vec::new();
    }
    let now = crate::state::unix_secs(now);
    let stamp = Stamp {
        host: host_name(),
        now,
    };
    let redact = |t: &str| plan.redact(t);
    let mut out = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        // Silenced: nothing sent, and what each receiver was told stays as it was.
        let silenced = state.targets.get(&t.name).is_some_and(|s| {
            s.silenced(std::time::UNIX_EPOCH + Duration::from_secs(now))
                .is_some()
        });
        if silenced {
            continue;
        }
        let seen = Seen {
            verdict: t.verdict,
            streak: streaks.get(i).copied().unwrap_or(0),
            recovery: t.recovery.as_ref(),
            acting_after: plan.targets[i]
                .recovery
                .as_ref()
                .map(|p| p.after_failed_runs),
            hang_seen: plan.targets[i].recovery.as_ref().is_some_and(|p| {
                t.routes
                    .iter()
                    .any(|r| r.class == Class::Core && !r.cut_short && p.on.contains(&r.outcome))
            }),
        };
        let marks = &mut state.target_mut(&t.name).notified;
        for n in &plan.notify {
            let mark = marks.entry(n.key.clone()).or_default();
            for (event, reminder) in decide(n, mark, seen, now) {
                out.push(outgoing(
                    n,
                    event,
                    reminder,
                    t,
                    seen.streak,
                    &stamp,
                    &redact,
                ));
            }
        }
        // Receivers no longer in the file are forgotten.
        marks.retain(|k, _| plan.notify.iter().any(|n| &n.key == k));
    }
    out
}

/// This machine's name, for the notification.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A receiver's key: FNV-1a of the URL as written and the format. Stable across releases.
pub fn key(url_as_written: &str, format: Format) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url_as_written.bytes().chain([0, format as u8]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    fn notifier(on: &[Event], after_runs: u32, reminder: Option<u64>) -> Notifier {
        Notifier {
            key: "k".into(),
            url: reqwest::Url::parse("http://127.0.0.1:1/hook").unwrap(),
            format: Format::Json,
            on: on.to_vec(),
            headers: Vec::new(),
            reminder: reminder.map(Duration::from_secs),
            after_runs,
        }
    }

    fn seen(verdict: Verdict, streak: u32) -> Seen<'static> {
        Seen {
            verdict,
            streak,
            recovery: None,
            acting_after: None,
            hang_seen: true,
        }
    }

    fn report(decision: Decision, outcome: Option<RecoveryOutcome>) -> RecoveryReport {
        RecoveryReport {
            action: Action::Kill,
            decision,
            reason: "cooldown".into(),
            refusal: Some(crate::recovery::Refusal::Cooldown),
            unit: "api.service".into(),
            pid: Some(1),
            new_pid: None,
            outcome,
            confirm_ms: None,
            act_ms: None,
            verify_ms: None,
            total_ms: 0,
            evidence: None,
            dump: None,
        }
    }

    fn names(v: Vec<(Event, bool)>) -> Vec<String> {
        v.into_iter()
            .map(|(e, r)| format!("{}{}", e.as_str(), if r { "*" } else { "" }))
            .collect()
    }

    #[test]
    fn a_transition_is_sent_once_and_resolved_closes_it() {
        let n = notifier(&DEFAULT_ON, 1, None);
        let mut m = Mark::default();
        let runs = [
            (Verdict::Healthy, 0, vec![]),
            (Verdict::Unhealthy, 1, vec!["unhealthy"]),
            (Verdict::Unhealthy, 2, vec![]),
            (Verdict::Unknown, 0, vec![]),
            (Verdict::Degraded, 0, vec!["resolved"]),
            (Verdict::Healthy, 0, vec![]),
        ];
        for (i, (v, streak, want)) in runs.into_iter().enumerate() {
            let got = names(decide(&n, &mut m, seen(v, streak), 100 + i as u64));
            assert_eq!(got, want, "run {i}: {v:?}");
        }
    }

    #[test]
    fn after_runs_waits_and_reminder_repeats() {
        let n = notifier(&DEFAULT_ON, 3, Some(3600));
        let mut m = Mark::default();
        assert!(decide(&n, &mut m, seen(Verdict::Unhealthy, 1), 0).is_empty());
        assert!(decide(&n, &mut m, seen(Verdict::Unhealthy, 2), 900).is_empty());
        let got = names(decide(&n, &mut m, seen(Verdict::Unhealthy, 3), 1800));
        assert_eq!(got, ["unhealthy"]);
        assert!(decide(&n, &mut m, seen(Verdict::Unhealthy, 4), 2700).is_empty());
        let got = names(decide(&n, &mut m, seen(Verdict::Unhealthy, 7), 1800 + 3600));
        assert_eq!(got, ["unhealthy*"]);
        assert!(decide(&n, &mut m, seen(Verdict::Unhealthy, 8), 1800 + 4000).is_empty());
        // A bad streak that ends before after_runs was never announced: nothing resolves.
        let mut m = Mark::default();
        assert!(decide(&n, &mut m, seen(Verdict::Unhealthy, 1), 0).is_empty());
        assert!(decide(&n, &mut m, seen(Verdict::Healthy, 0), 1).is_empty());
    }

    #[test]
    fn recovery_events_and_one_refusal_per_episode() {
        let n = notifier(&DEFAULT_ON, 1, None);
        let mut m = Mark::default();
        let rec = report(Decision::Act, Some(RecoveryOutcome::Recovered));
        let s = Seen {
            recovery: Some(&rec),
            ..seen(Verdict::Unhealthy, 1)
        };
        assert_eq!(names(decide(&n, &mut m, s, 0)), ["unhealthy", "recovered"]);
        assert_eq!(
            names(decide(&n, &mut m, seen(Verdict::Healthy, 0), 1)),
            ["resolved"]
        );
        // Refused: not while only waiting for after_failed_runs, then once.
        let refused = report(Decision::Refuse, None);
        let s = |streak| Seen {
            recovery: Some(&refused),
            acting_after: Some(2),
            ..seen(Verdict::Unhealthy, streak)
        };
        assert_eq!(names(decide(&n, &mut m, s(1), 2)), ["unhealthy"]);
        assert_eq!(names(decide(&n, &mut m, s(2), 3)), ["refused"]);
        assert!(decide(&n, &mut m, s(3), 4).is_empty());
        assert_eq!(m.last, Some(Event::Refused));
        let failed = report(Decision::Act, Some(RecoveryOutcome::NotRecovered));
        let s = Seen {
            recovery: Some(&failed),
            ..seen(Verdict::Unhealthy, 4)
        };
        assert_eq!(names(decide(&n, &mut m, s, 5)), ["not_recovered"]);
    }

    #[test]
    fn degraded_and_unknown_only_when_asked_and_on_filters() {
        let mut on = DEFAULT_ON.to_vec();
        on.push(Event::Degraded);
        let n = notifier(&on, 1, None);
        let mut m = Mark::default();
        assert_eq!(
            names(decide(&n, &mut m, seen(Verdict::Degraded, 0), 0)),
            ["degraded"]
        );
        assert_eq!(
            names(decide(&n, &mut m, seen(Verdict::Unhealthy, 1), 1)),
            ["unhealthy"]
        );
        assert_eq!(
            names(decide(&n, &mut m, seen(Verdict::Healthy, 0), 2)),
            ["resolved"]
        );
        let only = notifier(&[Event::Recovered], 1, None);
        let mut m = Mark::default();
        assert!(decide(&only, &mut m, seen(Verdict::Unhealthy, 1), 0).is_empty());
        assert!(decide(&only, &mut m, seen(Verdict::Healthy, 0), 1).is_empty());
    }

    #[test]
    fn the_receiver_key_is_stable() {
        assert_eq!(
            key("https://x/${A}", Format::Json),
            key("https://x/${A}", Format::Json)
        );
        assert_ne!(
            key("https://x/${A}", Format::Json),
            key("https://x/${A}", Format::Slack)
        );
        assert_eq!(key("", Format::Json).len(), 16);
    }
}
