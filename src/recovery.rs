//! Recovery: decide (pure), confirm, act, verify. Acts only on the unit named in the probe
//! file, only through the safety checks below, and always says why it acted or refused.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::log::Level;
use crate::log_event;
use crate::outcome::Outcome;
use crate::plan::{Action, Class, RecoveryPolicy};
use crate::probe::{Prober, RouteResult, fmt_duration};
use crate::state::{ActionOutcome, ActionRecord, TargetState, unix_secs};
use crate::systemd::{Systemd, UnitFacts};
use crate::verdict::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The action ran.
    Act,
    /// A safety check said no; `reason` says which.
    Refuse,
    /// `--dry-run`: everything up to the action, which was only described.
    DryRun,
    /// `--no-recover`, or `action: none`.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryOutcome {
    Recovered,
    NotRecovered,
}

/// The recovery story of one target, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    pub action: Action,
    pub decision: Decision,
    pub reason: String,
    pub unit: String,
    /// The main PID acted on (or that would be).
    pub pid: Option<u32>,
    /// The main PID after the unit came back.
    pub new_pid: Option<u32>,
    pub outcome: Option<RecoveryOutcome>,
    pub confirm_ms: Option<u64>,
    pub act_ms: Option<u64>,
    pub verify_ms: Option<u64>,
    pub total_ms: u64,
    /// What the kernel said about the unit when the decision was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::evidence::Evidence>,
    /// The forensic signal sent before the kill (`recovery.dump`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpReport>,
}

/// What `recovery.dump` did.
#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    pub signal: crate::plan::DumpSignal,
    /// How long it waited for the process to leave on its own.
    pub waited_ms: u64,
    /// The process exited on the dump signal (systemd restarts it like after a kill).
    pub exited: bool,
    /// Where its output went: the unit's journal from just before the signal.
    pub journal: String,
}

/// Everything the decision looks at.
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    pub verdict: Verdict,
    /// Outcomes of the failing core routes that had their full time.
    pub core_failures: Vec<Outcome>,
    /// Failing core routes the run's deadline cut short (never evidence of a hang).
    pub cut_short: usize,
    pub policy: &'a RecoveryPolicy,
    pub state: &'a TargetState,
    pub lock_held_elsewhere: bool,
    /// The probed address's listener has a full accept queue: a `connect_timeout` there is
    /// the hung signature too (the kernel drops SYNs once the process stops accepting).
    pub queue_full: bool,
    /// `routewatch silence`: the silence in force, described; never recovered.
    pub silenced: Option<String>,
    pub now: SystemTime,
}

/// Whether a core outcome shows the hang, given the policy and the listener's queue. Pure.
pub fn shows_hang(o: Outcome, p: &RecoveryPolicy, queue_full: bool) -> bool {
    p.on.contains(&o) || (queue_full && o == Outcome::ConnectTimeout)
}

/// The checks that need only the run and the state file (no D-Bus). `Err` is the refusal
/// reason. Pure.
pub fn decide_before_systemd(input: &DecisionInput) -> Result<(), String> {
    let p = input.policy;
    match input.verdict {
        Verdict::Unknown if input.cut_short > 0 => {
            return Err(format!(
                "{} failing core route(s) ran out of the run's time (run_timeout) before a full attempt: not evidence of a hang",
                input.cut_short
            ));
        }
        Verdict::Unknown => {
            return Err(
                "every core route is rate-limited (429): contention, not a hang; never recovered"
                    .into(),
            );
        }
        Verdict::Healthy | Verdict::Degraded => return Err("core routes are fine".into()),
        Verdict::Unhealthy => {}
    }
    if let Some(silence) = &input.silenced {
        return Err(silence.clone());
    }
    if input.core_failures.is_empty() && input.cut_short > 0 {
        return Err(format!(
            "{} failing core route(s) ran out of the run's time (run_timeout) before a full attempt: not evidence of a hang",
            input.cut_short
        ));
    }
    if !input
        .core_failures
        .iter()
        .any(|&o| shows_hang(o, p, input.queue_full))
    {
        let mut seen: Vec<&str> = input.core_failures.iter().map(|o| o.as_str()).collect();
        seen.dedup();
        let on: Vec<&str> = p.on.iter().map(|o| o.as_str()).collect();
        return Err(format!(
            "core failures are {} — not a hang (recovery.on: {})",
            seen.join(", "),
            on.join(", ")
        ));
    }
    if input.state.consecutive_unhealthy < p.after_failed_runs {
        return Err(format!(
            "unhealthy for {} consecutive run(s); acting after {} (after_failed_runs)",
            input.state.consecutive_unhealthy, p.after_failed_runs
        ));
    }
    if input.lock_held_elsewhere {
        return Err("the state lock is held by another routewatch run; not acting twice".into());
    }
    let now = unix_secs(input.now);
    if let Some(last) = input.state.actions.iter().map(|a| a.at).max() {
        let ago = Duration::from_secs(now.saturating_sub(last));
        if ago < p.cooldown {
            return Err(format!(
                "cooldown: the last action was {} ago, cooldown is {}",
                humantime::format_duration(ago),
                humantime::format_duration(p.cooldown)
            ));
        }
    }
    let in_window = input
        .state
        .actions
        .iter()
        .filter(|a| now.saturating_sub(a.at) < p.window.as_secs())
        .count();
    if in_window as u32 >= p.max_actions {
        return Err(format!(
            "max_actions: {in_window} action(s) within the last {}, the limit is {}; a human should look",
            humantime::format_duration(p.window),
            p.max_actions
        ));
    }
    Ok(())
}

/// The checks on who serves the probed address. Pure.
pub fn decide_on_listener(
    ev: &crate::evidence::Evidence,
    addr: Option<&str>,
    unit: &str,
) -> Result<(), String> {
    let Some(addr) = addr else {
        return Ok(());
    };
    match &ev.listener {
        None => Err(format!(
            "nothing listens on {addr}, which {unit} is probed at although it is active: a stale or wrong address, not a hang of {unit} (probe the unit's own port or socket)"
        )),
        Some(l) if l.in_unit == Some(false) => Err(match &l.held_by {
            Some(h) => format!(
                "{addr} is served by PID {} ({}) in {}, not by {unit}: killing {unit} would not help (probe the unit's own port or socket, or declare the proxy)",
                h.pid, h.comm, h.cgroup
            ),
            None => format!(
                "{addr} is served by a process outside {unit}: killing {unit} would not help (probe the unit's own port or socket)"
            ),
        }),
        Some(_) => Ok(()),
    }
}

/// The checks on the unit as systemd sees it. Pure.
pub fn decide_on_unit(
    facts: &UnitFacts,
    policy: &RecoveryPolicy,
    now: SystemTime,
) -> Result<(), String> {
    if facts.load_state != "loaded" {
        return Err(format!(
            "unit {} is not loaded (LoadState={}); check the unit name",
            facts.unit, facts.load_state
        ));
    }
    if facts.active_state != "active" || facts.sub_state != "running" {
        return Err(format!(
            "unit {} is {}/{}, not active/running; systemd is already handling it",
            facts.unit, facts.active_state, facts.sub_state
        ));
    }
    if facts.main_pid <= 1 {
        return Err(format!(
            "unit {} has MainPID {}; nothing safe to signal",
            facts.unit, facts.main_pid
        ));
    }
    if let Some(since) = facts.active_enter {
        let up = now.duration_since(since).unwrap_or(Duration::ZERO);
        if up < policy.startup_grace {
            return Err(format!(
                "unit {} became active {} ago, within startup_grace {}",
                facts.unit,
                humantime::format_duration(Duration::from_secs(up.as_secs())),
                humantime::format_duration(policy.startup_grace)
            ));
        }
    }
    if policy.action == Action::Kill && !facts.restarts_after_kill() {
        return Err(format!(
            "unit {} has Restart={}: a kill would leave it down (use action: restart, or set Restart=on-failure)",
            facts.unit,
            if facts.restart.is_empty() {
                "?"
            } else {
                &facts.restart
            }
        ));
    }
    Ok(())
}

/// What runs recovery: the probe engine for confirm/verify, and systemd.
pub struct Recoverer<'a> {
    pub prober: &'a Arc<Prober>,
    pub dry_run: bool,
}

/// What recovery asks the state file to remember. `Begin` must be durable before the action
/// is taken: if it cannot be written the action is refused (a cooldown that cannot be kept
/// is no cooldown).
pub enum Entry {
    Begin(ActionRecord),
    Finish(ActionOutcome),
}

/// Why recovery was considered, computed by the caller from the run.
pub struct Case<'a> {
    pub target_index: usize,
    pub verdict: Verdict,
    pub routes: &'a [RouteResult],
    pub lock_held_elsewhere: bool,
}

impl Recoverer<'_> {
    /// Decide, confirm, act and verify for one target. `record` writes the action as
    /// `pending` before it is taken (a failure refuses it) and its outcome after.
    pub async fn run(
        &self,
        case: Case<'_>,
        state: &TargetState,
        record: &mut dyn FnMut(Entry) -> Result<(), String>,
    ) -> RecoveryReport {
        let started = Instant::now();
        let target = &self.prober.plan().targets[case.target_index];
        let unit = target.unit.clone().unwrap_or_default();
        let policy = target.recovery.clone().unwrap_or_default();
        let mut report = RecoveryReport {
            action: policy.action,
            decision: Decision::Refuse,
            reason: String::new(),
            unit: unit.clone(),
            pid: None,
            new_pid: None,
            outcome: None,
            confirm_ms: None,
            act_ms: None,
            verify_ms: None,
            total_ms: 0,
            evidence: None,
            dump: None,
        };
        let finish = |mut r: RecoveryReport| {
            r.total_ms = started.elapsed().as_millis() as u64;
            let decision = match r.decision {
                Decision::Act => "act",
                Decision::Refuse => "refuse",
                Decision::DryRun => "dry_run",
                Decision::Disabled => "disabled",
            };
            if r.decision != Decision::Act {
                let evidence = r.evidence.as_ref().map(|e| e.summary()).unwrap_or_default();
                log_event!(
                    Level::Warn,
                    "recovery_decision",
                    "target" = target.name,
                    "unit" = unit,
                    "action" = policy.action.as_str(),
                    "decision" = decision,
                    "reason" = r.reason,
                    "evidence" = evidence
                );
            }
            r
        };

        if policy.action == Action::None {
            report.decision = Decision::Disabled;
            report.reason = "action: none (report only)".into();
            return finish(report);
        }
        let failing: Vec<usize> = target
            .routes
            .iter()
            .zip(case.routes)
            .enumerate()
            .filter(|(_, (route, r))| route.class == Class::Core && !r.outcome.is_pass())
            .map(|(i, _)| i)
            .collect();
        let input = DecisionInput {
            verdict: case.verdict,
            core_failures: failing
                .iter()
                .filter(|&&i| !case.routes[i].cut_short)
                .map(|&i| case.routes[i].outcome)
                .collect(),
            cut_short: failing
                .iter()
                .filter(|&&i| case.routes[i].cut_short)
                .count(),
            policy: &policy,
            state,
            lock_held_elsewhere: case.lock_held_elsewhere,
            queue_full: false,
            silenced: state.silenced(SystemTime::now()).map(|s| s.describe()),
            now: SystemTime::now(),
        };
        // Where the core routes went, if it can be looked up here; and its accept queue when
        // a connect timed out (is the process still accepting?).
        let probed = probed_address(target);
        let input = DecisionInput {
            queue_full: input.core_failures.contains(&Outcome::ConnectTimeout)
                && probed.as_ref().is_ok_and(|a| {
                    crate::evidence::listening(a).iter().any(
                        |l| matches!((l.queue, l.backlog), (Some(q), Some(b)) if b > 0 && q >= b),
                    )
                }),
            ..input
        };
        if let Err(reason) = decide_before_systemd(&input) {
            report.reason = reason;
            return finish(report);
        }

        // 1. Read the unit.
        let systemd = match Systemd::connect().await {
            Ok(s) => s,
            Err(e) => {
                report.reason = format!("target {:?}: cannot read unit {unit:?}: {e}", target.name);
                return finish(report);
            }
        };
        let facts = match systemd.facts(&unit).await {
            Ok(f) => f,
            Err(e) => {
                report.reason = e.to_string();
                return finish(report);
            }
        };
        report.pid = (facts.main_pid > 0).then_some(facts.main_pid);
        // 2. Refuse on the unit's state.
        if let Err(reason) = decide_on_unit(&facts, &policy, SystemTime::now()) {
            report.reason = reason;
            return finish(report);
        }

        // 3. Confirm: the failing core routes, once more, right before acting, with the
        // unit's CPU time measured around it.
        let cpu_before = crate::evidence::cpu_usage_usec(&facts.control_group);
        let t = Instant::now();
        let confirm = self
            .prober
            .probe_routes(
                case.target_index,
                &failing,
                Instant::now() + single_attempt_budget(target, &failing),
            )
            .await;
        let window = t.elapsed();
        report.confirm_ms = Some(window.as_millis() as u64);
        let evidence = crate::evidence::gather(
            probed.as_ref().map_err(String::as_str),
            &facts.control_group,
            facts.main_pid,
            cpu_before.map(|b| (b, window)),
        );
        let said = evidence.summary();
        report.evidence = Some(evidence);
        let ev = report.evidence.as_ref().expect("just set");
        if let Err(reason) = decide_on_listener(
            ev,
            probed.as_ref().ok().map(|a| a.to_string()).as_deref(),
            &unit,
        ) {
            report.reason = reason;
            return finish(report);
        }
        let queue_full = ev.listener.as_ref().is_some_and(|l| l.queue_full());
        if let Some(ok) = confirm.iter().find(|r| r.outcome.is_pass()) {
            report.reason = format!(
                "confirm: {} answered {} on the re-probe; not acting",
                ok.path, ok.outcome
            );
            return finish(report);
        }
        if !confirm
            .iter()
            .any(|r| shows_hang(r.outcome, &policy, queue_full))
        {
            let seen: Vec<&str> = confirm.iter().map(|r| r.outcome.as_str()).collect();
            report.reason = format!(
                "confirm: the re-probe saw {}, not a hang; not acting",
                seen.join(", ")
            );
            return finish(report);
        }
        let why = format!(
            "core {} {} ({} consecutive unhealthy run(s))",
            if failing.len() == 1 {
                "route"
            } else {
                "routes"
            },
            failing
                .iter()
                .map(|&i| format!("{} {}", case.routes[i].path, case.routes[i].outcome))
                .collect::<Vec<_>>()
                .join(", "),
            state.consecutive_unhealthy
        );
        let why = if said.is_empty() {
            why
        } else {
            format!("{why}; {said}")
        };
        let what = match (policy.action, policy.dump) {
            (Action::Kill, Some(d)) => format!(
                "{} then SIGKILL MainPID {} of {unit} (Restart={} brings it back)",
                d.signal.as_str(),
                facts.main_pid,
                facts.restart
            ),
            (Action::Kill, None) => format!(
                "SIGKILL MainPID {} of {unit} (Restart={} brings it back)",
                facts.main_pid, facts.restart
            ),
            (Action::Restart, _) => format!("RestartUnit {unit} (MainPID {})", facts.main_pid),
            (Action::None, _) => unreachable!("handled above"),
        };
        if self.dry_run {
            report.decision = Decision::DryRun;
            report.reason = format!("would {what}: {why}");
            return finish(report);
        }

        // 4. Act.
        report.decision = Decision::Act;
        report.reason = format!("{what}: {why}");
        log_event!(
            Level::Warn,
            "recovery_decision",
            "target" = target.name,
            "unit" = unit,
            "action" = policy.action.as_str(),
            "decision" = "act",
            "pid" = facts.main_pid,
            "reason" = why
        );
        let t = Instant::now();
        // The last-moment checks (kill: pidfd, cgroup, systemd's word on that very process,
        // MainPID unchanged). A refusal here has done nothing.
        let armed = match policy.action {
            Action::Kill => match crate::systemd::arm_kill(&systemd, &facts).await {
                Ok(a) => Some(a),
                Err(e) => return finish(self.refused_late(report, e.to_string())),
            },
            Action::Restart => None,
            Action::None => unreachable!("handled above"),
        };
        // The record first, synced: whatever happens next (a stop, a crash, a full disk
        // later), the next run knows an action was taken and keeps the cooldown.
        if let Err(e) = record(Entry::Begin(ActionRecord {
            at: unix_secs(SystemTime::now()),
            unit: unit.clone(),
            action: policy.action,
            pid: Some(facts.main_pid),
            outcome: ActionOutcome::Pending,
            evidence: Some(said.clone()).filter(|s| !s.is_empty()),
        })) {
            let why = format!("cannot record the action ({e}), so its cooldown could not be kept");
            return finish(self.refused_late(report, why));
        }
        // Forensics first, through the same pidfd: the process may print its stacks (or
        // leave a core) and may exit on it; whatever is still there is then killed.
        let mut exited_on_dump = false;
        if let (Some(armed), Some(dump)) = (&armed, policy.dump) {
            let since = unix_secs(SystemTime::now());
            let t = Instant::now();
            match armed.dump(dump.signal, dump.wait).await {
                Ok(exited) => {
                    exited_on_dump = exited;
                    report.dump = Some(DumpReport {
                        signal: dump.signal,
                        waited_ms: t.elapsed().as_millis() as u64,
                        exited,
                        journal: format!("journalctl -u {unit} --since @{since}"),
                    });
                    log_event!(
                        Level::Warn,
                        "recovery_dump",
                        "target" = target.name,
                        "unit" = unit,
                        "pid" = facts.main_pid,
                        "signal" = dump.signal.as_str(),
                        "exited" = exited
                    );
                }
                Err(e) => log_event!(
                    Level::Warn,
                    "recovery_dump_failed",
                    "target" = target.name,
                    "unit" = unit,
                    "error" = e
                ),
            }
        }
        let acted = match armed {
            Some(_) if exited_on_dump => Ok(()),
            Some(armed) => armed.fire().map_err(|e| e.to_string()),
            None => systemd
                .restart(&unit)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        report.act_ms = Some(t.elapsed().as_millis() as u64);
        if let Err(e) = acted {
            report.reason = format!("{what} failed: {e}");
            report.outcome = Some(RecoveryOutcome::NotRecovered);
            let _ = record(Entry::Finish(ActionOutcome::Failed));
            log_event!(
                Level::Error,
                "recovery_failed",
                "target" = target.name,
                "unit" = unit,
                "error" = e
            );
            return finish(report);
        }
        let event = if policy.action == Action::Kill {
            "recovery_kill"
        } else {
            "recovery_restart"
        };
        log_event!(
            Level::Warn,
            event,
            "target" = target.name,
            "unit" = unit,
            "pid" = facts.main_pid,
            "act_ms" = report.act_ms.unwrap_or(0)
        );

        // 5. Verify: the unit back with a new invocation, then the core routes passing.
        let t = Instant::now();
        let deadline = t + policy.verify_timeout;
        let (outcome, new_pid, detail) = self
            .verify(&systemd, &facts, case.target_index, deadline)
            .await;
        report.verify_ms = Some(t.elapsed().as_millis() as u64);
        report.new_pid = new_pid;
        report.outcome = Some(outcome);
        let _ = record(Entry::Finish(if outcome == RecoveryOutcome::Recovered {
            ActionOutcome::Recovered
        } else {
            ActionOutcome::NotRecovered
        }));
        let level = if outcome == RecoveryOutcome::Recovered {
            Level::Warn
        } else {
            Level::Error
        };
        log_event!(
            level,
            "recovery_verified",
            "target" = target.name,
            "unit" = unit,
            "outcome" = if outcome == RecoveryOutcome::Recovered {
                "recovered"
            } else {
                "not_recovered"
            },
            "new_pid" = new_pid.unwrap_or(0),
            "verify_ms" = report.verify_ms.unwrap_or(0),
            "detail" = detail
        );
        if outcome == RecoveryOutcome::NotRecovered {
            report.reason = format!("{}; {detail}", report.reason);
        }
        finish(report)
    }

    /// A refusal after the decision to act was logged: nothing was done.
    fn refused_late(&self, mut report: RecoveryReport, why: String) -> RecoveryReport {
        report.decision = Decision::Refuse;
        report.reason = format!("not acting: {why}");
        report
    }

    async fn verify(
        &self,
        systemd: &Systemd,
        before: &UnitFacts,
        ti: usize,
        deadline: Instant,
    ) -> (RecoveryOutcome, Option<u32>, String) {
        let target = &self.prober.plan().targets[ti];
        let core: Vec<usize> = target
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.class == Class::Core)
            .map(|(i, _)| i)
            .collect();
        let mut last = String::from("the unit did not come back");
        let mut new_pid = None;
        let mut back = false;
        while Instant::now() < deadline {
            if !back {
                match systemd.facts(&before.unit).await {
                    Ok(f)
                        if f.active_state == "active"
                            && f.main_pid > 1
                            && (f.main_pid != before.main_pid
                                || f.invocation_id != before.invocation_id) =>
                    {
                        back = true;
                        new_pid = Some(f.main_pid);
                    }
                    Ok(f) => {
                        last = format!(
                            "unit is {}/{} with MainPID {}",
                            f.active_state, f.sub_state, f.main_pid
                        )
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if back {
                let budget = single_attempt_budget(target, &core)
                    .min(deadline.saturating_duration_since(Instant::now()));
                let results = self
                    .prober
                    .probe_routes(ti, &core, Instant::now() + budget)
                    .await;
                match results.iter().find(|r| !r.outcome.is_pass()) {
                    None => {
                        return (
                            RecoveryOutcome::Recovered,
                            new_pid,
                            "core routes pass again".into(),
                        );
                    }
                    Some(r) => {
                        last = format!(
                            "unit is back (MainPID {}) but {} is {}",
                            new_pid.unwrap_or(0),
                            r.path,
                            r.outcome
                        )
                    }
                }
            }
            tokio::time::sleep(
                Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        (
            RecoveryOutcome::NotRecovered,
            new_pid,
            format!("not back within verify_timeout: {last}"),
        )
    }
}

/// Where a target's routes are probed, when that can be looked up in this host's tables;
/// otherwise why not.
fn probed_address(target: &crate::plan::Target) -> Result<crate::evidence::Address, String> {
    crate::evidence::probed_address(target)
}

/// Enough time for one attempt of each of these routes (they run concurrently).
fn single_attempt_budget(target: &crate::plan::Target, routes: &[usize]) -> Duration {
    routes
        .iter()
        .map(|&i| target.routes[i].timing.timeout)
        .max()
        .unwrap_or(Duration::from_secs(1))
        + Duration::from_millis(50)
}

/// Text for the report: "refused: …", "SIGKILL …: recovered in 1.2s".
pub fn story(r: &RecoveryReport) -> String {
    match (r.decision, r.outcome) {
        (Decision::Act, Some(RecoveryOutcome::Recovered)) => format!(
            "recovered: {} — back as MainPID {} after {}",
            r.reason,
            r.new_pid.unwrap_or(0),
            fmt_duration(Duration::from_millis(r.total_ms))
        ),
        (Decision::Act, _) => format!("NOT recovered: {}", r.reason),
        (Decision::Refuse, _) => format!("refused: {}", r.reason),
        (Decision::DryRun, _) => format!("dry run: {}", r.reason),
        (Decision::Disabled, _) => format!("disabled: {}", r.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RecoveryPolicy {
        RecoveryPolicy {
            startup_grace: Duration::from_secs(120),
            ..RecoveryPolicy::default()
        }
    }

    fn input<'a>(
        policy: &'a RecoveryPolicy,
        state: &'a TargetState,
        now: SystemTime,
    ) -> DecisionInput<'a> {
        DecisionInput {
            verdict: Verdict::Unhealthy,
            core_failures: vec![Outcome::Timeout],
            cut_short: 0,
            policy,
            state,
            lock_held_elsewhere: false,
            queue_full: false,
            silenced: None,
            now,
        }
    }

    fn facts(now: SystemTime) -> UnitFacts {
        UnitFacts {
            unit: "api.service".into(),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            active_enter: Some(now - Duration::from_secs(3600)),
            invocation_id: "ab".into(),
            main_pid: 4242,
            restart: "always".into(),
            control_group: "/system.slice/api.service".into(),
            n_restarts: 0,
        }
    }

    fn streak(n: u32) -> TargetState {
        TargetState {
            consecutive_unhealthy: n,
            ..TargetState::default()
        }
    }

    #[test]
    fn acts_on_a_hung_unhealthy_target_with_a_sane_unit() {
        let now = SystemTime::now();
        let p = policy();
        let s = streak(1);
        assert_eq!(decide_before_systemd(&input(&p, &s, now)), Ok(()));
        assert_eq!(decide_on_unit(&facts(now), &p, now), Ok(()));
    }

    #[test]
    fn every_refusal_before_systemd_says_why() {
        let now = SystemTime::now();
        let p = policy();
        let s1 = streak(1);
        let refusals: Vec<(DecisionInput, &str)> = vec![
            (
                DecisionInput {
                    verdict: Verdict::Unknown,
                    ..input(&p, &s1, now)
                },
                "rate-limited",
            ),
            (
                DecisionInput {
                    verdict: Verdict::Degraded,
                    ..input(&p, &s1, now)
                },
                "fine",
            ),
            (
                DecisionInput {
                    core_failures: vec![Outcome::HttpError, Outcome::Refused],
                    ..input(&p, &s1, now)
                },
                "not a hang",
            ),
            (
                DecisionInput {
                    core_failures: vec![],
                    cut_short: 2,
                    ..input(&p, &s1, now)
                },
                "run_timeout",
            ),
            (
                DecisionInput {
                    verdict: Verdict::Unknown,
                    core_failures: vec![],
                    cut_short: 3,
                    ..input(&p, &s1, now)
                },
                "3 failing core route(s) ran out of the run's time",
            ),
            (
                DecisionInput {
                    lock_held_elsewhere: true,
                    ..input(&p, &s1, now)
                },
                "lock",
            ),
        ];
        for (i, needle) in refusals {
            let why = decide_before_systemd(&i).unwrap_err();
            assert!(why.contains(needle), "{why:?} should mention {needle:?}");
        }
    }

    #[test]
    fn waits_for_after_failed_runs() {
        let now = SystemTime::now();
        let p = RecoveryPolicy {
            after_failed_runs: 3,
            ..policy()
        };
        let s = streak(2);
        assert!(
            decide_before_systemd(&input(&p, &s, now))
                .unwrap_err()
                .contains("after_failed_runs")
        );
        let s = streak(3);
        assert_eq!(decide_before_systemd(&input(&p, &s, now)), Ok(()));
    }

    #[test]
    fn cooldown_and_max_actions_per_window() {
        let now = SystemTime::now();
        let t = unix_secs(now);
        let p = RecoveryPolicy {
            cooldown: Duration::from_secs(900),
            max_actions: 2,
            window: Duration::from_secs(6 * 3600),
            ..policy()
        };
        let rec = |ago: u64| ActionRecord {
            at: t - ago,
            unit: "api.service".into(),
            action: Action::Kill,
            pid: Some(1),
            outcome: ActionOutcome::Recovered,
            evidence: None,
        };
        let s = TargetState {
            consecutive_unhealthy: 1,
            actions: vec![rec(60)],
            ..TargetState::default()
        };
        assert!(
            decide_before_systemd(&input(&p, &s, now))
                .unwrap_err()
                .contains("cooldown")
        );
        let s = TargetState {
            consecutive_unhealthy: 1,
            actions: vec![rec(3600), rec(1800)],
            ..TargetState::default()
        };
        assert!(
            decide_before_systemd(&input(&p, &s, now))
                .unwrap_err()
                .contains("max_actions")
        );
        let s = TargetState {
            consecutive_unhealthy: 1,
            actions: vec![rec(7 * 3600), rec(1800)],
            ..TargetState::default()
        };
        assert_eq!(decide_before_systemd(&input(&p, &s, now)), Ok(()));
    }

    #[test]
    fn every_refusal_on_the_unit_says_why() {
        let now = SystemTime::now();
        let p = policy();
        let cases: Vec<(UnitFacts, &str)> = vec![
            (
                UnitFacts {
                    load_state: "not-found".into(),
                    ..facts(now)
                },
                "not loaded",
            ),
            (
                UnitFacts {
                    active_state: "activating".into(),
                    sub_state: "auto-restart".into(),
                    ..facts(now)
                },
                "not active/running",
            ),
            (
                UnitFacts {
                    active_state: "inactive".into(),
                    sub_state: "dead".into(),
                    ..facts(now)
                },
                "not active/running",
            ),
            (
                UnitFacts {
                    main_pid: 0,
                    ..facts(now)
                },
                "MainPID 0",
            ),
            (
                UnitFacts {
                    main_pid: 1,
                    ..facts(now)
                },
                "MainPID 1",
            ),
            (
                UnitFacts {
                    active_enter: Some(now - Duration::from_secs(30)),
                    ..facts(now)
                },
                "startup_grace",
            ),
            (
                UnitFacts {
                    restart: "no".into(),
                    ..facts(now)
                },
                "Restart=no",
            ),
            (
                UnitFacts {
                    restart: "on-success".into(),
                    ..facts(now)
                },
                "Restart=on-success",
            ),
        ];
        for (f, needle) in cases {
            let why = decide_on_unit(&f, &p, now).unwrap_err();
            assert!(why.contains(needle), "{why:?} should mention {needle:?}");
        }
    }

    #[test]
    fn a_connect_timeout_is_a_hang_only_when_the_accept_queue_is_full() {
        let now = SystemTime::now();
        let p = policy();
        let s = streak(1);
        let connect = DecisionInput {
            core_failures: vec![Outcome::ConnectTimeout],
            ..input(&p, &s, now)
        };
        assert!(
            decide_before_systemd(&connect)
                .unwrap_err()
                .contains("not a hang")
        );
        let full = DecisionInput {
            queue_full: true,
            ..connect
        };
        assert_eq!(decide_before_systemd(&full), Ok(()));
    }

    #[test]
    fn a_listener_outside_the_unit_or_none_is_refused() {
        use crate::evidence::{Evidence, Holder, Listener};
        let ev = |in_unit, held_by| Evidence {
            listener: Some(Listener {
                address: "127.0.0.1:8080".into(),
                queue: Some(0),
                backlog: Some(128),
                in_unit,
                held_by,
            }),
            ..Evidence::default()
        };
        let addr = Some("127.0.0.1:8080");
        assert_eq!(
            decide_on_listener(&ev(Some(true), None), addr, "api.service"),
            Ok(())
        );
        let neighbour = Holder {
            pid: 77,
            comm: "nginx".into(),
            cgroup: "/system.slice/nginx.service".into(),
        };
        let why =
            decide_on_listener(&ev(Some(false), Some(neighbour)), addr, "api.service").unwrap_err();
        assert!(
            why.contains("PID 77 (nginx) in /system.slice/nginx.service, not by api.service"),
            "{why}"
        );
        let why = decide_on_listener(&Evidence::default(), addr, "api.service").unwrap_err();
        assert!(why.contains("nothing listens on 127.0.0.1:8080"), "{why}");
        // Unknown ownership (the unit's cgroup cannot be read here) and remote addresses are
        // not judged.
        assert_eq!(
            decide_on_listener(&ev(None, None), addr, "api.service"),
            Ok(())
        );
        assert_eq!(
            decide_on_listener(&Evidence::default(), None, "api.service"),
            Ok(())
        );
    }

    #[test]
    fn restart_action_does_not_need_a_restart_policy() {
        let now = SystemTime::now();
        let p = RecoveryPolicy {
            action: Action::Restart,
            ..policy()
        };
        assert_eq!(
            decide_on_unit(
                &UnitFacts {
                    restart: "no".into(),
                    ..facts(now)
                },
                &p,
                now
            ),
            Ok(())
        );
    }
}
