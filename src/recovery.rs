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
use crate::systemd::{ActiveState, LoadState, SubState, Systemd, UnitFacts};
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

/// Why recovery refused, as a stable word: the `reason` label of
/// `routewatch_recovery_refusals_total` and the `refusal` field of the JSON report. The
/// report's `reason` keeps the sentence; this names its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Core routes pass (degraded or healthy).
    NotUnhealthy,
    /// Every core route is rate-limited: contention, never a hang.
    RateLimited,
    /// The failing core routes ran out of the run's time before a full attempt.
    CutShort,
    /// `routewatch silence` is in force.
    Silenced,
    /// The core failures are not in `recovery.on` (not the hung signature).
    NotHung,
    /// Fewer consecutive unhealthy runs than `after_failed_runs` so far.
    AfterFailedRuns,
    /// Another run holds the state lock.
    LockHeld,
    /// The last action was within `cooldown`.
    Cooldown,
    /// `max_actions` reached within `window`.
    MaxActions,
    /// As root, the probe file or state directory is writable by others.
    Untrusted,
    /// systemd could not be asked about the unit (D-Bus).
    Systemd,
    /// The unit is not loaded (a wrong name).
    UnitNotLoaded,
    /// The unit is not active/running: systemd is already handling it.
    UnitNotRunning,
    /// MainPID is 0 or 1.
    NoMainPid,
    /// The unit runs routewatch itself (its MainPID is this run or its parent).
    OwnUnit,
    /// The unit became active within `startup_grace`.
    StartupGrace,
    /// `Restart=` would not bring the unit back after a kill.
    NoRestart,
    /// The start the action causes would trip the unit's start limit.
    StartLimit,
    /// The `recovery.through` proxy unit is not active.
    ProxyDown,
    /// The probed address is not served by the unit (or its declared proxy).
    NotServed,
    /// The confirming re-probe passed.
    ConfirmPassed,
    /// The confirming re-probe failed, but not with a hang.
    ConfirmNotHung,
    /// The last-moment checks before the signal failed (the process left the cgroup,
    /// MainPID changed, no pidfd).
    KillUnsafe,
    /// The pending action could not be recorded, so its cooldown could not be kept.
    CannotRecord,
}

impl Refusal {
    /// Every kind, in a stable order (documentation and tests).
    pub const ALL: [Refusal; 24] = [
        Refusal::NotUnhealthy,
        Refusal::RateLimited,
        Refusal::CutShort,
        Refusal::Silenced,
        Refusal::NotHung,
        Refusal::AfterFailedRuns,
        Refusal::LockHeld,
        Refusal::Cooldown,
        Refusal::MaxActions,
        Refusal::Untrusted,
        Refusal::Systemd,
        Refusal::UnitNotLoaded,
        Refusal::UnitNotRunning,
        Refusal::NoMainPid,
        Refusal::OwnUnit,
        Refusal::StartupGrace,
        Refusal::NoRestart,
        Refusal::StartLimit,
        Refusal::ProxyDown,
        Refusal::NotServed,
        Refusal::ConfirmPassed,
        Refusal::ConfirmNotHung,
        Refusal::KillUnsafe,
        Refusal::CannotRecord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotUnhealthy => "not_unhealthy",
            Refusal::RateLimited => "rate_limited",
            Refusal::CutShort => "cut_short",
            Refusal::Silenced => "silenced",
            Refusal::NotHung => "not_hung",
            Refusal::AfterFailedRuns => "after_failed_runs",
            Refusal::LockHeld => "lock_held",
            Refusal::Cooldown => "cooldown",
            Refusal::MaxActions => "max_actions",
            Refusal::Untrusted => "untrusted",
            Refusal::Systemd => "systemd",
            Refusal::UnitNotLoaded => "unit_not_loaded",
            Refusal::UnitNotRunning => "unit_not_running",
            Refusal::NoMainPid => "no_main_pid",
            Refusal::OwnUnit => "own_unit",
            Refusal::StartupGrace => "startup_grace",
            Refusal::NoRestart => "no_restart",
            Refusal::StartLimit => "start_limit",
            Refusal::ProxyDown => "proxy_down",
            Refusal::NotServed => "not_served",
            Refusal::ConfirmPassed => "confirm_passed",
            Refusal::ConfirmNotHung => "confirm_not_hung",
            Refusal::KillUnsafe => "kill_unsafe",
            Refusal::CannotRecord => "cannot_record",
        }
    }
}

/// A refusal: its kind and the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: Refusal,
    pub reason: String,
}

fn refused(kind: Refusal, reason: impl Into<String>) -> Refused {
    Refused {
        kind,
        reason: reason.into(),
    }
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
    /// With `decision: refuse`, the kind of refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
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
pub fn decide_before_systemd(input: &DecisionInput) -> Result<(), Refused> {
    let p = input.policy;
    match input.verdict {
        Verdict::Unknown if input.cut_short > 0 => {
            return Err(refused(
                Refusal::CutShort,
                format!(
                    "{} ran out of the run's time (run_timeout) before a full attempt: not evidence of a hang",
                    crate::words::count(
                        input.cut_short as u64,
                        "failing core route",
                        "failing core routes"
                    )
                ),
            ));
        }
        Verdict::Unknown => {
            return Err(refused(
                Refusal::RateLimited,
                "every core route is rate-limited (429): contention, not a hang; never recovered",
            ));
        }
        Verdict::Healthy | Verdict::Degraded => {
            return Err(refused(Refusal::NotUnhealthy, "core routes are fine"));
        }
        Verdict::Unhealthy => {}
    }
    if let Some(silence) = &input.silenced {
        return Err(refused(Refusal::Silenced, silence.clone()));
    }
    if input.core_failures.is_empty() && input.cut_short > 0 {
        return Err(refused(
            Refusal::CutShort,
            format!(
                "{} ran out of the run's time (run_timeout) before a full attempt: not evidence of a hang",
                crate::words::count(
                    input.cut_short as u64,
                    "failing core route",
                    "failing core routes"
                )
            ),
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
        return Err(refused(
            Refusal::NotHung,
            format!(
                "core failures are {} — not a hang (recovery.on: {})",
                seen.join(", "),
                on.join(", ")
            ),
        ));
    }
    if input.state.consecutive_unhealthy < p.after_failed_runs {
        return Err(refused(
            Refusal::AfterFailedRuns,
            format!(
                "unhealthy for {}; acting after {} (after_failed_runs)",
                crate::words::count(
                    u64::from(input.state.consecutive_unhealthy),
                    "consecutive run",
                    "consecutive runs"
                ),
                p.after_failed_runs
            ),
        ));
    }
    if input.lock_held_elsewhere {
        return Err(refused(
            Refusal::LockHeld,
            "the state lock is held by another routewatch run; not acting twice",
        ));
    }
    let now = unix_secs(input.now);
    if let Some(last) = input.state.actions.iter().map(|a| a.at).max() {
        let ago = Duration::from_secs(now.saturating_sub(last));
        if ago < p.cooldown {
            return Err(refused(
                Refusal::Cooldown,
                format!(
                    "cooldown: the last action was {} ago, cooldown is {}",
                    humantime::format_duration(ago),
                    humantime::format_duration(p.cooldown)
                ),
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
        return Err(refused(
            Refusal::MaxActions,
            format!(
                "max_actions: {} within the last {}, the limit is {}; a human should look",
                crate::words::count(in_window as u64, "action", "actions"),
                humantime::format_duration(p.window),
                p.max_actions
            ),
        ));
    }
    Ok(())
}

/// The checks on who serves the probed address: `owner` must (the unit, or with
/// `recovery.through` its proxy), or killing `unit` would not help. Pure.
pub fn decide_on_listener(
    ev: &crate::evidence::Evidence,
    addr: Option<&str>,
    owner: &str,
    unit: &str,
) -> Result<(), Refused> {
    let Some(addr) = addr else {
        return Ok(());
    };
    match &ev.listener {
        None => Err(refused(
            Refusal::NotServed,
            format!(
                "nothing listens on {addr}, where {unit} is probed, although {owner} is active: a stale or wrong address, not a hang of {unit} (probe the unit's own port or socket)"
            ),
        )),
        Some(l) if l.in_unit == Some(false) => Err(refused(
            Refusal::NotServed,
            match &l.held_by {
                Some(h) => format!(
                    "{addr} is served by PID {} ({}) in {}, not by {owner}: killing {unit} would not help (probe the unit's own port or socket, or declare the proxy with recovery.through)",
                    h.pid, h.comm, h.cgroup
                ),
                None => format!(
                    "{addr} is served by a process outside {owner}: killing {unit} would not help (probe the unit's own port or socket, or declare the proxy with recovery.through)"
                ),
            },
        )),
        Some(_) => Ok(()),
    }
}

/// Never the unit that runs this very run: its MainPID is this process (`routewatch check`
/// as a service's `ExecStart=`, under another name or an alias than `routewatch.service`,
/// which the loader refuses) or its parent (the same behind a `sh -c` wrapper). Signalling
/// it would end the run mid-action. Pure.
pub fn decide_not_own(facts: &UnitFacts, own: &[u32]) -> Result<(), Refused> {
    if own.contains(&facts.main_pid) {
        return Err(refused(
            Refusal::OwnUnit,
            format!(
                "unit {} runs routewatch itself (MainPID {} is this run or its parent); it is never acted on",
                facts.unit, facts.main_pid
            ),
        ));
    }
    Ok(())
}

/// The checks on the unit as systemd sees it. Pure.
pub fn decide_on_unit(
    facts: &UnitFacts,
    policy: &RecoveryPolicy,
    now: SystemTime,
) -> Result<(), Refused> {
    if facts.load_state != LoadState::Loaded {
        return Err(refused(
            Refusal::UnitNotLoaded,
            format!(
                "unit {} is not loaded (LoadState={}); check the unit name",
                facts.unit, facts.load_state
            ),
        ));
    }
    if facts.active_state != ActiveState::Active || facts.sub_state != SubState::Running {
        return Err(refused(
            Refusal::UnitNotRunning,
            format!(
                "unit {} is {}/{}, not active/running; systemd is already handling it",
                facts.unit, facts.active_state, facts.sub_state
            ),
        ));
    }
    if facts.main_pid <= 1 {
        return Err(refused(
            Refusal::NoMainPid,
            format!(
                "unit {} has MainPID {}; nothing safe to signal",
                facts.unit, facts.main_pid
            ),
        ));
    }
    if let Some(since) = facts.active_enter {
        let up = now.duration_since(since).unwrap_or(Duration::ZERO);
        if up < policy.startup_grace {
            return Err(refused(
                Refusal::StartupGrace,
                format!(
                    "unit {} became active {} ago, within startup_grace {}",
                    facts.unit,
                    humantime::format_duration(Duration::from_secs(up.as_secs())),
                    humantime::format_duration(policy.startup_grace)
                ),
            ));
        }
    }
    if policy.action == Action::Kill && !facts.restarts_after_kill() {
        return Err(refused(
            Refusal::NoRestart,
            format!(
                "unit {} has Restart={}: a kill would leave it down (use action: restart, or set Restart=on-failure)",
                facts.unit,
                if facts.restart.as_str().is_empty() {
                    "?"
                } else {
                    facts.restart.as_str()
                }
            ),
        ));
    }
    Ok(())
}

/// How long after an action a start of the unit is taken as that action's own restart (the
/// kill's automatic restart, or the `RestartUnit` job), not a start of its own.
const START_OF_THE_ACTION: Duration = Duration::from_secs(600);

/// The check on systemd's start rate limit: the start the action causes must not be one too
/// many, or systemd leaves the unit `failed` (`start-limit-hit`), worse than hung. The starts
/// known within `StartLimitIntervalSec=` are this unit's actions taken within it (each caused
/// one) and the unit's current start when no action explains it. Counted over the last
/// interval, a superset of systemd's own window (which begins at its first start), so the
/// count is never below systemd's for the starts known. Pure.
pub fn decide_on_start_limit(
    facts: &UnitFacts,
    policy: &RecoveryPolicy,
    actions: &[ActionRecord],
    now: SystemTime,
) -> Result<(), Refused> {
    let Some(limit) = facts.start_limit else {
        return Ok(());
    };
    let now_s = unix_secs(now);
    let within = |at: u64| now_s.saturating_sub(at) < limit.interval.as_secs().max(1);
    let started: Vec<u64> = actions
        .iter()
        .filter(|a| a.unit == facts.unit && a.outcome != ActionOutcome::Failed && within(a.at))
        .map(|a| a.at)
        .collect();
    let current = facts.active_enter.map(unix_secs).filter(|&at| within(at));
    let explained = |start: u64| {
        started
            .iter()
            .any(|&a| a <= start && start - a <= START_OF_THE_ACTION.as_secs())
    };
    let known = started.len() + usize::from(current.is_some_and(|c| !explained(c)));
    let next = known + 1;
    if next > limit.burst as usize {
        let oldest = started
            .iter()
            .copied()
            .chain(current)
            .min()
            .unwrap_or(now_s);
        let wait = Duration::from_secs((oldest + limit.interval.as_secs()).saturating_sub(now_s));
        return Err(refused(
            Refusal::StartLimit,
            format!(
                "start limit: a {} now would be start {next} of {} within StartLimitIntervalSec={} (StartLimitBurst={}, {} known in that time): systemd would leave it failed (start-limit-hit), worse than hung; raise StartLimitBurst= or lower max_actions (the oldest known start leaves the interval in {})",
                policy.action.as_str(),
                facts.unit,
                humantime::format_duration(limit.interval),
                limit.burst,
                crate::words::count(known as u64, "start", "starts"),
                humantime::format_duration(wait),
            ),
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

/// One target's recovery as it goes: what it acts on, and the report so far.
struct Job<'p> {
    ti: usize,
    target: &'p crate::plan::Target,
    /// Values from `${VAR}`: never in a reason (a host name from the environment is one).
    secrets: &'p [String],
    unit: String,
    policy: RecoveryPolicy,
    started: Instant,
    report: RecoveryReport,
}

/// A step ended the recovery early; the report says why.
struct Stopped;

/// What an action would do, and why, in words for the report and the log.
struct Intent {
    what: String,
    why: String,
    /// The evidence in one line ("" when there is none).
    said: String,
}

impl<'p> Job<'p> {
    fn new(plan: &'p crate::plan::Plan, ti: usize) -> Job<'p> {
        let target = &plan.targets[ti];
        let unit = target.unit.clone().unwrap_or_default();
        let policy = target.recovery.clone().unwrap_or_default();
        Job {
            ti,
            target,
            secrets: &plan.secrets,
            report: RecoveryReport {
                action: policy.action,
                decision: Decision::Refuse,
                reason: String::new(),
                refusal: None,
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
            },
            unit,
            policy,
            started: Instant::now(),
        }
    }

    /// End here with this decision and reason.
    fn stop(&mut self, decision: Decision, reason: impl Into<String>) -> Stopped {
        self.report.decision = decision;
        self.report.reason = crate::plan::redact(&reason.into(), self.secrets);
        Stopped
    }

    /// Refused by a safety check.
    fn refuse(&mut self, kind: Refusal, reason: impl Into<String>) -> Stopped {
        self.report.refusal = Some(kind);
        self.stop(Decision::Refuse, reason)
    }

    fn refused(&mut self, r: Refused) -> Stopped {
        self.refuse(r.kind, r.reason)
    }

    /// The report, timed, with its decision logged (an action logs its own steps).
    fn finish(mut self) -> RecoveryReport {
        self.report.total_ms = self.started.elapsed().as_millis() as u64;
        let r = &self.report;
        if r.decision != Decision::Act {
            let decision = match r.decision {
                Decision::Act => "act",
                Decision::Refuse => "refuse",
                Decision::DryRun => "dry_run",
                Decision::Disabled => "disabled",
            };
            let evidence = r.evidence.as_ref().map(|e| e.summary()).unwrap_or_default();
            let action = self.policy.action.as_str();
            let mut fields: Vec<(&str, &dyn std::fmt::Display)> = vec![
                ("target", &self.target.name),
                ("unit", &self.unit),
                ("action", &action),
                ("decision", &decision),
            ];
            // The kind of a refusal, for `journalctl ROUTEWATCH_REFUSAL=cooldown`.
            let refusal = r.refusal.map(Refusal::as_str);
            if let Some(kind) = &refusal {
                fields.push(("refusal", kind));
            }
            fields.push(("reason", &r.reason));
            fields.push(("evidence", &evidence));
            crate::log::emit(Level::Warn, "recovery_decision", &fields);
        }
        self.report
    }
}

/// The indexes of the core routes that failed. Pure.
fn failing_core_routes(target: &crate::plan::Target, results: &[RouteResult]) -> Vec<usize> {
    target
        .routes
        .iter()
        .zip(results)
        .enumerate()
        .filter(|(_, (route, r))| route.class == Class::Core && !r.outcome.is_pass())
        .map(|(i, _)| i)
        .collect()
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
        let mut job = Job::new(self.prober.plan(), case.target_index);
        let _ = self.steps(&mut job, &case, state, record).await;
        job.finish()
    }

    /// The steps, in order; each may end the recovery with its reason in the report.
    async fn steps(
        &self,
        job: &mut Job<'_>,
        case: &Case<'_>,
        state: &TargetState,
        record: &mut dyn FnMut(Entry) -> Result<(), String>,
    ) -> Result<(), Stopped> {
        if job.policy.action == Action::None {
            return Err(job.stop(Decision::Disabled, "action: none (report only)"));
        }
        let failing = failing_core_routes(job.target, case.routes);
        // Where the core routes went, if it can be looked up on this host.
        let probed = probed_address(job.target, job.secrets);
        decide_from_the_run(job, case, state, &failing, &probed)?;
        let (systemd, facts) = read_unit(job).await?;
        decide_on_start_limit(&facts, &job.policy, &state.actions, SystemTime::now())
            .map_err(|r| job.refused(r))?;
        let proxy = read_proxy(job, &systemd).await?;
        let said = self
            .confirm(job, &failing, &facts, proxy.as_ref(), &probed)
            .await?;
        let intent = intent(job, case, state, &failing, &facts, said);
        if self.dry_run {
            let reason = format!("would {}: {}", intent.what, intent.why);
            return Err(job.stop(Decision::DryRun, reason));
        }
        act(job, &systemd, &facts, &intent, record).await?;
        self.verify_and_record(job, &systemd, &facts, record).await;
        Ok(())
    }

    /// Step 3, confirm: the failing core routes once more, right before acting, with the unit's
    /// CPU time measured around it; then the kernel's evidence, and who serves the address.
    async fn confirm(
        &self,
        job: &mut Job<'_>,
        failing: &[usize],
        facts: &UnitFacts,
        proxy: Option<&UnitFacts>,
        probed: &Result<crate::evidence::Address, String>,
    ) -> Result<String, Stopped> {
        let cpu_before = crate::evidence::cpu_usage_usec(&facts.control_group);
        let t = Instant::now();
        let confirm = self
            .prober
            .probe_routes(
                job.ti,
                failing,
                Instant::now() + single_attempt_budget(job.target, failing),
            )
            .await;
        let window = t.elapsed();
        job.report.confirm_ms = Some(window.as_millis() as u64);
        // The probed address must be served by the unit, or with `through` by its proxy.
        let owner = proxy.unwrap_or(facts);
        let mut evidence = crate::evidence::gather(
            probed.as_ref().map_err(String::as_str),
            &owner.control_group,
            &facts.control_group,
            facts.main_pid,
            cpu_before.map(|b| (b, window)),
        );
        evidence.through = proxy.map(|p| p.unit.clone());
        let said = evidence.summary();
        let queue_full = evidence.listener.as_ref().is_some_and(|l| l.queue_full())
            || evidence.own_listeners.iter().any(|l| l.queue_full());
        let served = decide_on_listener(
            &evidence,
            probed.as_ref().ok().map(|a| a.to_string()).as_deref(),
            &owner.unit,
            &job.unit,
        );
        job.report.evidence = Some(evidence);
        if let Err(r) = served {
            return Err(job.refused(r));
        }
        if let Some(ok) = confirm.iter().find(|r| r.outcome.is_pass()) {
            let reason = format!(
                "confirm: {} answered {} on the re-probe; not acting",
                ok.path, ok.outcome
            );
            return Err(job.refuse(Refusal::ConfirmPassed, reason));
        }
        if !confirm
            .iter()
            .any(|r| shows_hang(r.outcome, &job.policy, queue_full))
        {
            let seen: Vec<&str> = confirm.iter().map(|r| r.outcome.as_str()).collect();
            let reason = format!(
                "confirm: the re-probe saw {}, not a hang; not acting",
                seen.join(", ")
            );
            return Err(job.refuse(Refusal::ConfirmNotHung, reason));
        }
        Ok(said)
    }

    /// Step 5: verify, and record the outcome.
    async fn verify_and_record(
        &self,
        job: &mut Job<'_>,
        systemd: &Systemd,
        facts: &UnitFacts,
        record: &mut dyn FnMut(Entry) -> Result<(), String>,
    ) {
        let t = Instant::now();
        let deadline = t + job.policy.verify_timeout;
        let (outcome, new_pid, detail) = self.verify(systemd, facts, job.ti, deadline).await;
        let r = &mut job.report;
        r.verify_ms = Some(t.elapsed().as_millis() as u64);
        r.new_pid = new_pid;
        r.outcome = Some(outcome);
        let recovered = outcome == RecoveryOutcome::Recovered;
        let _ = record(Entry::Finish(if recovered {
            ActionOutcome::Recovered
        } else {
            ActionOutcome::NotRecovered
        }));
        log_event!(
            if recovered { Level::Warn } else { Level::Error },
            "recovery_verified",
            "target" = job.target.name,
            "unit" = job.unit,
            "outcome" = if recovered {
                "recovered"
            } else {
                "not_recovered"
            },
            "new_pid" = new_pid.unwrap_or(0),
            "verify_ms" = r.verify_ms.unwrap_or(0),
            "detail" = detail
        );
        if !recovered {
            r.reason = format!("{}; {detail}", r.reason);
        }
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
                        if f.active_state == ActiveState::Active
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

/// The checks on the run and the state file (no D-Bus yet). A `connect_timeout` counts as
/// a hang when the probed listener's accept queue is full (the process stopped accepting).
fn decide_from_the_run(
    job: &mut Job<'_>,
    case: &Case<'_>,
    state: &TargetState,
    failing: &[usize],
    probed: &Result<crate::evidence::Address, String>,
) -> Result<(), Stopped> {
    let core_failures: Vec<Outcome> = failing
        .iter()
        .filter(|&&i| !case.routes[i].cut_short)
        .map(|&i| case.routes[i].outcome)
        .collect();
    let queue_full = core_failures.contains(&Outcome::ConnectTimeout)
        && probed
            .as_ref()
            .is_ok_and(|a| crate::evidence::listening(a).iter().any(|l| l.queue_full()));
    let input = DecisionInput {
        verdict: case.verdict,
        core_failures,
        cut_short: failing
            .iter()
            .filter(|&&i| case.routes[i].cut_short)
            .count(),
        policy: &job.policy,
        state,
        lock_held_elsewhere: case.lock_held_elsewhere,
        queue_full,
        silenced: state.silenced(SystemTime::now()).map(|s| s.describe()),
        now: SystemTime::now(),
    };
    decide_before_systemd(&input).map_err(|r| job.refused(r))
}

/// Steps 1–2: read the unit from systemd, and refuse on its state.
async fn read_unit(job: &mut Job<'_>) -> Result<(Systemd, UnitFacts), Stopped> {
    let systemd = match Systemd::connect().await {
        Ok(s) => s,
        Err(e) => {
            let reason = format!(
                "target {:?}: cannot read unit {:?}: {e}",
                job.target.name, job.unit
            );
            return Err(job.refuse(Refusal::Systemd, reason));
        }
    };
    let facts = match systemd.facts(&job.unit).await {
        Ok(f) => f,
        Err(e) => return Err(job.refuse(Refusal::Systemd, e.to_string())),
    };
    job.report.pid = (facts.main_pid > 0).then_some(facts.main_pid);
    decide_on_unit(&facts, &job.policy, SystemTime::now()).map_err(|r| job.refused(r))?;
    // The loader refuses `routewatch.service` by name; an alias, or a unit of another name
    // that runs routewatch, is only seen here.
    let own = [
        std::process::id(),
        rustix::process::getppid().map_or(0, |p| p.as_raw_pid() as u32),
    ];
    decide_not_own(&facts, &own).map_err(|r| job.refused(r))?;
    Ok((systemd, facts))
}

/// With `recovery.through`: the proxy unit in front, which must be running (the probed
/// address must be its; a proxy that is down is not the unit's hang).
async fn read_proxy(job: &mut Job<'_>, systemd: &Systemd) -> Result<Option<UnitFacts>, Stopped> {
    let Some(proxy) = job.policy.through.clone() else {
        return Ok(None);
    };
    let facts = match systemd.facts(&proxy).await {
        Ok(f) => f,
        Err(e) => return Err(job.refuse(Refusal::Systemd, format!("recovery.through: {e}"))),
    };
    if facts.load_state != LoadState::Loaded || facts.active_state != ActiveState::Active {
        return Err(job.refuse(Refusal::ProxyDown, format!(
            "recovery.through: the proxy unit {proxy} is {}/{}, not active: the probe went through it, so its failure is not {}'s hang",
            facts.load_state, facts.active_state, job.unit
        )));
    }
    Ok(Some(facts))
}

/// What the action is and why, in words. Pure.
fn intent(
    job: &Job<'_>,
    case: &Case<'_>,
    state: &TargetState,
    failing: &[usize],
    facts: &UnitFacts,
    said: String,
) -> Intent {
    let unit = &job.unit;
    let routes: Vec<String> = failing
        .iter()
        .map(|&i| format!("{} {}", case.routes[i].path, case.routes[i].outcome))
        .collect();
    let mut why = format!(
        "core {} {} ({})",
        if failing.len() == 1 {
            "route"
        } else {
            "routes"
        },
        routes.join(", "),
        crate::words::count(
            u64::from(state.consecutive_unhealthy),
            "consecutive unhealthy run",
            "consecutive unhealthy runs"
        )
    );
    if !said.is_empty() {
        why = format!("{why}; {said}");
    }
    let what = match (job.policy.action, job.policy.dump) {
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
        (Action::Restart | Action::None, _) => {
            format!("RestartUnit {unit} (MainPID {})", facts.main_pid)
        }
    };
    Intent { what, why, said }
}

/// Step 4, act: the last-moment checks, the `pending` record (synced; if it cannot be written,
/// nothing is done), the forensic signal if asked for, then the kill or the restart.
async fn act(
    job: &mut Job<'_>,
    systemd: &Systemd,
    facts: &UnitFacts,
    intent: &Intent,
    record: &mut dyn FnMut(Entry) -> Result<(), String>,
) -> Result<(), Stopped> {
    job.report.decision = Decision::Act;
    job.report.reason =
        crate::plan::redact(&format!("{}: {}", intent.what, intent.why), job.secrets);
    log_event!(
        Level::Warn,
        "recovery_decision",
        "target" = job.target.name,
        "unit" = job.unit,
        "action" = job.policy.action.as_str(),
        "decision" = "act",
        "pid" = facts.main_pid,
        "reason" = intent.why
    );
    let t = Instant::now();
    // Kill: pidfd, PID namespace, cgroup, MainPID unchanged. A refusal here did nothing.
    let armed = match job.policy.action {
        Action::Kill => match crate::systemd::arm_kill(systemd, facts).await {
            Ok(a) => Some(a),
            Err(e) => return Err(job.refuse(Refusal::KillUnsafe, format!("not acting: {e}"))),
        },
        Action::Restart | Action::None => None,
    };
    // The record first: whatever happens next (a stop, a crash, a full disk later), the
    // next run knows an action was taken and keeps the cooldown.
    if let Err(e) = record(Entry::Begin(ActionRecord {
        at: unix_secs(SystemTime::now()),
        unit: job.unit.clone(),
        action: job.policy.action,
        pid: Some(facts.main_pid),
        outcome: ActionOutcome::Pending,
        evidence: Some(intent.said.clone()).filter(|s| !s.is_empty()),
    })) {
        return Err(job.refuse(
            Refusal::CannotRecord,
            format!(
                "not acting: cannot record the action ({e}), so its cooldown could not be kept"
            ),
        ));
    }
    let exited_on_dump = match (&armed, job.policy.dump) {
        (Some(armed), Some(dump)) => send_dump(job, armed, dump, facts).await,
        _ => false,
    };
    let acted = match armed {
        Some(_) if exited_on_dump => Ok(()),
        Some(armed) => armed.fire().map_err(|e| e.to_string()),
        None => systemd
            .restart(&job.unit)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    job.report.act_ms = Some(t.elapsed().as_millis() as u64);
    if let Err(e) = acted {
        job.report.reason = format!("{} failed: {e}", intent.what);
        job.report.outcome = Some(RecoveryOutcome::NotRecovered);
        let _ = record(Entry::Finish(ActionOutcome::Failed));
        log_event!(
            Level::Error,
            "recovery_failed",
            "target" = job.target.name,
            "unit" = job.unit,
            "error" = e
        );
        return Err(Stopped);
    }
    log_event!(
        Level::Warn,
        if job.policy.action == Action::Kill {
            "recovery_kill"
        } else {
            "recovery_restart"
        },
        "target" = job.target.name,
        "unit" = job.unit,
        "pid" = facts.main_pid,
        "act_ms" = job.report.act_ms.unwrap_or(0)
    );
    Ok(())
}

/// Forensics through the same pidfd: the process may print its stacks (or leave a core) and
/// may exit on it. Whether it did.
async fn send_dump(
    job: &mut Job<'_>,
    armed: &crate::systemd::Armed,
    dump: crate::plan::Dump,
    facts: &UnitFacts,
) -> bool {
    let since = unix_secs(SystemTime::now());
    let t = Instant::now();
    match armed.dump(dump.signal, dump.wait).await {
        Ok(exited) => {
            job.report.dump = Some(DumpReport {
                signal: dump.signal,
                waited_ms: t.elapsed().as_millis() as u64,
                exited,
                journal: format!("journalctl -u {} --since @{since}", job.unit),
            });
            log_event!(
                Level::Warn,
                "recovery_dump",
                "target" = job.target.name,
                "unit" = job.unit,
                "pid" = facts.main_pid,
                "signal" = dump.signal.as_str(),
                "exited" = exited
            );
            exited
        }
        Err(e) => {
            log_event!(
                Level::Warn,
                "recovery_dump_failed",
                "target" = job.target.name,
                "unit" = job.unit,
                "error" = e
            );
            false
        }
    }
}

/// Where a target's routes are probed, when that can be looked up in this host's tables;
/// otherwise why not.
fn probed_address(
    target: &crate::plan::Target,
    secrets: &[String],
) -> Result<crate::evidence::Address, String> {
    crate::evidence::probed_address(target).map_err(|why| crate::plan::redact(&why, secrets))
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
            start_limit: None,
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
                "3 failing core routes ran out of the run's time",
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
            let why = decide_before_systemd(&i).unwrap_err().reason;
            assert!(why.contains(needle), "{why:?} should mention {needle:?}");
        }
    }

    #[test]
    fn refusal_kinds_are_stable_snake_case_words_named_by_the_decision() {
        let mut seen = std::collections::BTreeSet::new();
        for k in Refusal::ALL {
            let w = k.as_str();
            assert!(w.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{w}");
            assert!(seen.insert(w), "{w} twice");
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                w,
                "JSON names it the same"
            );
        }
        let now = SystemTime::now();
        let p = policy();
        let s1 = streak(1);
        let kind = |i: DecisionInput| decide_before_systemd(&i).unwrap_err().kind;
        assert_eq!(
            kind(DecisionInput {
                verdict: Verdict::Unknown,
                ..input(&p, &s1, now)
            }),
            Refusal::RateLimited
        );
        assert_eq!(
            kind(DecisionInput {
                core_failures: vec![Outcome::HttpError],
                ..input(&p, &s1, now)
            }),
            Refusal::NotHung
        );
        assert_eq!(
            kind(DecisionInput {
                lock_held_elsewhere: true,
                ..input(&p, &s1, now)
            }),
            Refusal::LockHeld
        );
        assert_eq!(kind(input(&p, &streak(0), now)), Refusal::AfterFailedRuns);
        let unit = |f: UnitFacts| decide_on_unit(&f, &p, now).unwrap_err().kind;
        assert_eq!(
            unit(UnitFacts {
                main_pid: 0,
                ..facts(now)
            }),
            Refusal::NoMainPid
        );
        assert_eq!(
            unit(UnitFacts {
                restart: "no".into(),
                ..facts(now)
            }),
            Refusal::NoRestart
        );
        assert_eq!(
            unit(UnitFacts {
                active_enter: Some(now - Duration::from_secs(30)),
                ..facts(now)
            }),
            Refusal::StartupGrace
        );
    }

    #[test]
    fn never_the_unit_that_runs_this_run() {
        let now = SystemTime::now();
        let f = facts(now);
        let own = |pids: &[u32]| decide_not_own(&f, pids).map_err(|r| r.kind);
        assert_eq!(own(&[77, 1]), Ok(()));
        assert_eq!(
            own(&[4242, 1]),
            Err(Refusal::OwnUnit),
            "MainPID is this run"
        );
        assert_eq!(
            own(&[77, 4242]),
            Err(Refusal::OwnUnit),
            "MainPID is its parent"
        );
        let why = decide_not_own(&f, &[4242]).unwrap_err().reason;
        assert!(why.contains("runs routewatch itself"), "{why}");
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
                .reason
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
                .reason
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
                .reason
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
    fn a_host_name_from_the_environment_never_reaches_a_reason() {
        let yaml = "targets:\n  - name: api\n    base_url: http://${RW_HOST}:8080\n    unit: api.service\n    routes: [ { path: /health } ]\n";
        let plan = crate::config::parse(yaml, "p.yaml", &|k| {
            (k == "RW_HOST").then(|| "db-primary.internal".to_string())
        })
        .unwrap();
        let why = probed_address(&plan.targets[0], &plan.secrets).unwrap_err();
        assert!(why.contains("probed by name"), "{why}");
        assert!(!why.contains("db-primary"), "{why}");
        let mut job = Job::new(&plan, 0);
        let _ = job.refuse(Refusal::NotHung, format!("x {why} db-primary.internal y"));
        assert!(
            !job.report.reason.contains("db-primary"),
            "{}",
            job.report.reason
        );
    }

    #[test]
    fn a_start_that_would_trip_the_start_limit_is_refused() {
        let now = SystemTime::now();
        let t = unix_secs(now);
        let p = policy();
        let rec = |ago: u64, outcome: ActionOutcome| ActionRecord {
            at: t - ago,
            unit: "api.service".into(),
            action: Action::Kill,
            pid: Some(1),
            outcome,
            evidence: None,
        };
        use ActionOutcome::{Failed, Interrupted, Recovered};
        // StartLimitIntervalSec=1h, StartLimitBurst=3.
        let limited = |started_ago: u64| UnitFacts {
            start_limit: crate::systemd::StartLimit::from_properties(3_600_000_000, 3),
            active_enter: Some(now - Duration::from_secs(started_ago)),
            ..facts(now)
        };
        let cases: Vec<(UnitFacts, Vec<ActionRecord>, Option<&str>)> = vec![
            // The limit off (systemd: interval or burst 0): never a reason.
            (
                UnitFacts {
                    start_limit: crate::systemd::StartLimit::from_properties(0, 3),
                    ..limited(60)
                },
                vec![
                    rec(3000, Recovered),
                    rec(2000, Recovered),
                    rec(60, Recovered),
                ],
                None,
            ),
            // Two kills within the hour, the current start is the second one's restart:
            // the next is start 3 of 3, allowed.
            (
                limited(1990),
                vec![rec(3000, Recovered), rec(2000, Recovered)],
                None,
            ),
            // The same, but the unit started again since (not explained by a kill): 4 > 3.
            (
                limited(300),
                vec![rec(3000, Recovered), rec(2000, Recovered)],
                Some(
                    "start 4 of api.service within StartLimitIntervalSec=1h (StartLimitBurst=3, 3 starts known",
                ),
            ),
            // Three kills within the hour (an interrupted one counts: it may have fired).
            (
                limited(590),
                vec![
                    rec(3000, Recovered),
                    rec(2000, Interrupted),
                    rec(600, Recovered),
                ],
                Some("start 4 of api.service"),
            ),
            // A kill that failed started nothing; kills older than the interval are gone.
            (
                limited(590),
                vec![rec(9000, Recovered), rec(2000, Failed), rec(600, Recovered)],
                None,
            ),
            // Another unit's actions are not this unit's starts.
            (
                limited(590),
                vec![
                    ActionRecord {
                        unit: "other.service".into(),
                        ..rec(3000, Recovered)
                    },
                    ActionRecord {
                        unit: "other.service".into(),
                        ..rec(2000, Recovered)
                    },
                    rec(600, Recovered),
                ],
                None,
            ),
        ];
        for (i, (f, actions, want)) in cases.into_iter().enumerate() {
            let got = decide_on_start_limit(&f, &p, &actions, now);
            match want {
                None => assert_eq!(got, Ok(()), "case {i}"),
                Some(part) => {
                    let got = got.expect_err(&format!("case {i} must be refused"));
                    assert_eq!(got.kind, Refusal::StartLimit, "case {i}");
                    let why = got.reason;
                    assert!(why.contains(part), "case {i}: {why}");
                    assert!(why.contains("start-limit-hit"), "case {i}: {why}");
                }
            }
        }
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
            let why = decide_on_unit(&f, &p, now).unwrap_err().reason;
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
                .reason
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
            decide_on_listener(&ev(Some(true), None), addr, "api.service", "api.service"),
            Ok(())
        );
        let neighbour = Holder {
            pid: 77,
            comm: "nginx".into(),
            cgroup: "/system.slice/nginx.service".into(),
        };
        let why = decide_on_listener(
            &ev(Some(false), Some(neighbour)),
            addr,
            "api.service",
            "api.service",
        )
        .unwrap_err()
        .reason;
        assert!(
            why.contains("PID 77 (nginx) in /system.slice/nginx.service, not by api.service"),
            "{why}"
        );
        let why = decide_on_listener(&Evidence::default(), addr, "api.service", "api.service")
            .unwrap_err()
            .reason;
        assert!(why.contains("nothing listens on 127.0.0.1:8080"), "{why}");
        // Unknown ownership (the unit's cgroup cannot be read here) and remote addresses are
        // not judged.
        assert_eq!(
            decide_on_listener(&ev(None, None), addr, "api.service", "api.service"),
            Ok(())
        );
        assert_eq!(
            decide_on_listener(&Evidence::default(), None, "api.service", "api.service"),
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
