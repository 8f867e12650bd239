//! One `check` run: probe everything, judge, recover what is hung, remember. Returns the
//! report data; printing is the caller's business.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::log::Level;
use crate::log_event;
use crate::outcome::{Outcome, Summary};
use crate::plan::{Class, Plan};
use crate::probe::{Observer, Prober, RouteResult};
use crate::recovery::{Case, Entry, Recoverer, RecoveryOutcome, RecoveryReport};
use crate::state::{Loaded, State, StateError, Store};
use crate::verdict::{self, RunStatus, Verdict};

#[derive(Default)]
pub struct Options {
    pub dry_run: bool,
    pub no_recover: bool,
    /// Recovery is off for this run for this reason (an untrusted probe file or state dir).
    pub recovery_blocked: Option<String>,
    /// `None`: run without a state file (ad hoc `--url` runs).
    pub state_dir: Option<PathBuf>,
    /// How long to wait for another run's lock before going on without it.
    pub lock_wait: Duration,
    pub observer: Option<Observer>,
    /// Warnings found before the run (an untrusted state directory), reported with its own.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub verdict: Verdict,
    pub unit: Option<String>,
    /// The drop-in file the target is written in; absent for the probe file itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub routes: Vec<RouteResult>,
    pub recovery: Option<RecoveryReport>,
    /// Finished recovery actions on this target across runs, by outcome (from the state
    /// file); exported as `routewatch_recoveries_total`, not part of the JSON document.
    #[serde(skip)]
    pub recoveries_total: std::collections::BTreeMap<String, u64>,
    /// Refusals on this target across runs, by kind (`Refusal::as_str`, from the state
    /// file); exported as `routewatch_recovery_refusals_total`.
    #[serde(skip)]
    pub refusals_total: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub version: u32,
    pub status: RunStatus,
    pub exit_code: u8,
    /// Unix seconds when the run started.
    pub started_at: u64,
    pub elapsed_ms: u64,
    pub summary: SummaryDoc,
    pub targets: Vec<TargetReport>,
    /// Things an operator should know that are not route outcomes (corrupt state file, lock).
    pub warnings: Vec<String>,
    /// The notifications this run decided on (`notify:`), sent after the report.
    #[serde(skip)]
    pub notifications: Vec<crate::alerts::Outgoing>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryDoc {
    #[serde(flatten)]
    pub counts: Summary,
    pub line: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Setup(#[from] crate::probe::SetupError),
    /// The shutdown future resolved first: the run was dropped where it stood, its state not
    /// written and nothing signalled.
    #[error("{0}")]
    Interrupted(Interrupted),
}

/// A run stopped by its shutdown future: what stopped it and the routes that had finished.
#[derive(Debug, Clone)]
pub struct Interrupted {
    /// What the shutdown future resolved to (the signal's name for the CLI: `SIGTERM`).
    pub signal: String,
    /// The routes that finished before the stop, in the order they finished.
    pub finished: Vec<FinishedRoute>,
    /// Every route of the plan.
    pub total: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted by {} after {} of {} routes",
            self.signal,
            self.finished.len(),
            self.total
        )
    }
}

/// One route that finished before a stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRoute {
    pub target: String,
    pub path: String,
    pub class: Class,
    pub outcome: Outcome,
}

impl std::fmt::Display for FinishedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.target,
            self.path,
            self.class.as_str(),
            self.outcome
        )
    }
}

/// What a run remembers: the state file (when there is one), whether another run holds its
/// lock, and the state as loaded and updated.
struct Memory {
    store: Option<Store>,
    lock_held_elsewhere: bool,
    state: State,
}

impl Memory {
    /// Whether this run owns the state file (and so may write it and act).
    fn owned(&self) -> bool {
        self.store.as_ref().is_some_and(Store::is_locked)
    }
}

/// One run, until it ends or `shutdown` resolves, whichever comes first (a shutdown that has
/// already resolved wins before any traffic). A stopped run ends as
/// [`RunError::Interrupted`] with the routes that had finished: the run is dropped where it
/// stands, its state is not written and nothing is signalled. `std::future::pending()` runs
/// to the end.
pub async fn check<S: std::fmt::Display>(
    plan: Arc<Plan>,
    mut opts: Options,
    shutdown: impl Future<Output = S>,
) -> Result<RunReport, RunError> {
    let total = plan.targets.iter().map(|t| t.routes.len()).sum();
    let finished: Arc<Mutex<Vec<Done>>> = Arc::default();
    opts.observer = Some(recording(opts.observer.take(), Arc::clone(&finished)));
    tokio::select! {
        biased;
        signal = shutdown => Err(RunError::Interrupted(Interrupted {
            signal: signal.to_string(),
            finished: std::mem::take(&mut *finished.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .map(|d| {
                    let target = &plan.targets[d.target];
                    let route = &target.routes[d.route];
                    FinishedRoute {
                        target: target.name.clone(),
                        path: route.path.clone(),
                        class: route.class,
                        outcome: d.outcome,
                    }
                })
                .collect(),
            total,
        })),
        r = run_to_the_end(Arc::clone(&plan), opts) => r,
    }
}

/// A route that finished, kept small (a fleet file has 20 000): where it is in the plan and
/// its outcome.
struct Done {
    target: usize,
    route: usize,
    outcome: Outcome,
}

/// The caller's observer, and each finished route kept for a report of a stopped run.
fn recording(inner: Option<Observer>, finished: Arc<Mutex<Vec<Done>>>) -> Observer {
    Arc::new(move |target, (ti, ri), r| {
        if let Some(inner) = &inner {
            inner(target, (ti, ri), r);
        }
        finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Done {
                target: ti,
                route: ri,
                outcome: r.outcome,
            });
    })
}

async fn run_to_the_end(plan: Arc<Plan>, opts: Options) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut warnings = opts.warnings.clone();
    let mut memory = open_state(&opts, &mut warnings).await?;
    announce(&plan, &memory.state, &mut warnings);

    let prober = Arc::new(Prober::new(Arc::clone(&plan))?);
    let results = prober
        .probe_all(Instant::now() + plan.run_timeout, opts.observer.clone())
        .await;
    let mut targets = judge(&plan, results);
    remember_verdicts(&mut memory.state, &targets, &mut warnings);
    // Before a recovery resets it: `after_runs` of the notifications counts this streak.
    let streaks: Vec<u32> = targets
        .iter()
        .map(|t| {
            memory
                .state
                .targets
                .get(&t.name)
                .map_or(0, |s| s.consecutive_unhealthy)
        })
        .collect();
    recover_all(&plan, &opts, &prober, &mut memory, &mut targets).await;
    for t in targets.iter_mut().filter(|t| t.unit.is_some()) {
        if let Some(s) = memory.state.targets.get(&t.name) {
            t.recoveries_total = s.recoveries_total.clone();
            t.refusals_total = s.refusals_total.clone();
        }
    }
    // Decided here so what was told is saved with this run's state; sent after the report.
    // A run without the lock leaves it to the run that holds it.
    let notifications = if memory.lock_held_elsewhere {
        Vec::new()
    } else {
        crate::alerts::notify::collect(
            &plan,
            &mut memory.state,
            &targets,
            &streaks,
            SystemTime::now(),
        )
    };
    let probed: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
    memory.state.forget_stale(&probed, SystemTime::now());
    // Close the pools (idle sockets) before the final write.
    drop(prober);
    save_final(&memory, &mut warnings).await;
    Ok(assemble(
        started,
        started_at,
        targets,
        warnings,
        notifications,
    ))
}

/// The state directory first: an unusable one stops the run before any traffic (exit 4).
/// Take the lock (or go on without state updates), load, set right what an interrupted run
/// left, drop expired silences.
async fn open_state(opts: &Options, warnings: &mut Vec<String>) -> Result<Memory, RunError> {
    let mut store = match &opts.state_dir {
        Some(dir) => Some(Store::open(dir)?),
        None => None,
    };
    let mut lock_held_elsewhere = false;
    if let Some(store) = store.as_mut()
        && !store.lock(opts.lock_wait).await?
    {
        lock_held_elsewhere = true;
        log_event!(Level::Warn, "state_locked", "dir" = store.dir().display());
        warnings.push(format!(
            "another routewatch run holds the lock in {}; probing anyway, no recovery and no state update",
            store.dir().display()
        ));
    }
    let state = match &store {
        None => State::default(),
        Some(s) => match s.load()? {
            Loaded::Fresh(st) | Loaded::Existing(st) => st,
            Loaded::Corrupt {
                state,
                set_aside,
                reason,
            } => {
                // Without the lock this run writes nothing: the file stays for the run that
                // holds it to set aside and replace.
                let (moved, done) = match &set_aside {
                    Some(p) => (p.display().to_string(), "set aside as"),
                    None => (
                        "-".to_string(),
                        "left in place (another run holds the lock):",
                    ),
                };
                log_event!(
                    Level::Warn,
                    "state_corrupt",
                    "file" = s.path().display(),
                    "set_aside" = moved,
                    "reason" = reason
                );
                warnings.push(match set_aside {
                    Some(_) => format!(
                        "state file {} was corrupt ({reason}); {done} {moved} and replaced",
                        s.path().display()
                    ),
                    None => format!(
                        "state file {} is corrupt ({reason}); {done} starting from a fresh state, nothing written",
                        s.path().display()
                    ),
                });
                state
            }
        },
    };
    let mut memory = Memory {
        store,
        lock_held_elsewhere,
        state,
    };
    if memory.owned() {
        for note in memory.state.settle(SystemTime::now()) {
            log_event!(Level::Warn, "state_settled", "note" = note);
            warnings.push(note);
        }
        memory.state.expire_silences(SystemTime::now());
    }
    Ok(memory)
}

/// What the report must say before any traffic: silenced targets, TLS verification off.
fn announce(plan: &Plan, state: &State, warnings: &mut Vec<String>) {
    for t in &plan.targets {
        if let Some(s) = state
            .targets
            .get(&t.name)
            .and_then(|s| s.silenced(SystemTime::now()))
        {
            log_event!(
                Level::Warn,
                "target_silenced",
                "target" = t.name,
                "silence" = s.describe()
            );
            warnings.push(format!("target {}: {}", t.name, s.describe()));
        }
    }
    for t in plan.targets.iter().filter(|t| t.tls.insecure) {
        log_event!(Level::Warn, "tls_insecure", "target" = t.name);
        warnings.push(format!(
            "target {}: TLS certificate verification is OFF (tls.insecure: true)",
            t.name
        ));
    }
}

/// Each target's verdict from its routes. Pure.
fn judge(plan: &Plan, results: Vec<Vec<RouteResult>>) -> Vec<TargetReport> {
    plan.targets
        .iter()
        .zip(results)
        .map(|(t, routes)| TargetReport {
            name: t.name.clone(),
            verdict: verdict::target_verdict(
                routes.iter().map(|r| (r.class, r.outcome, r.cut_short)),
            ),
            unit: t.unit.clone(),
            file: t.file.clone(),
            routes,
            recovery: None,
            recoveries_total: Default::default(),
            refusals_total: Default::default(),
        })
        .collect()
}

/// The streaks: a verdict proves something unless every failing core route was cut short by
/// the run's deadline. One warning per target that exits 0 without being simply healthy.
fn remember_verdicts(state: &mut State, targets: &[TargetReport], warnings: &mut Vec<String>) {
    let now = SystemTime::now();
    for t in targets {
        let proves_nothing = t.verdict != Verdict::Healthy
            && t.routes
                .iter()
                .any(|r| r.class == crate::plan::Class::Core && r.cut_short)
            && t.routes
                .iter()
                .filter(|r| r.class == crate::plan::Class::Core && !r.outcome.is_pass())
                .all(|r| r.cut_short);
        if proves_nothing {
            state.record_inconclusive(&t.name, t.verdict, now);
        } else {
            state.record_verdict(&t.name, t.verdict, now);
        }
        if let Some(why) = verdict_warning(t) {
            log_event!(
                Level::Warn,
                "target_verdict",
                "target" = t.name,
                "verdict" = t.verdict.as_str(),
                "reason" = why
            );
            warnings.push(format!("target {}: {} ({why})", t.name, t.verdict.as_str()));
        }
    }
}

/// Recovery for every target with a unit that is not serving: off for the whole run
/// (untrusted files, `--no-recover`), or one [`Recoverer::run`] each, recording its actions
/// in the state file as they happen.
async fn recover_all(
    plan: &Plan,
    opts: &Options,
    prober: &Arc<Prober>,
    memory: &mut Memory,
    targets: &mut [TargetReport],
) {
    let recoverer = Recoverer {
        prober,
        dry_run: opts.dry_run,
    };
    for (i, t) in targets.iter_mut().enumerate() {
        if plan.targets[i].unit.is_none()
            || !matches!(t.verdict, Verdict::Unhealthy | Verdict::Unknown)
        {
            continue;
        }
        if let Some(report) = recovery_off(plan, opts, i, t) {
            count_refusal(&mut memory.state, &t.name, &report);
            t.recovery = Some(report);
            continue;
        }
        let target_state = memory
            .state
            .targets
            .get(&t.name)
            .cloned()
            .unwrap_or_default();
        let case = Case {
            target_index: i,
            verdict: t.verdict,
            routes: &t.routes,
            lock_held_elsewhere: memory.lock_held_elsewhere,
        };
        let (name, unit) = (t.name.clone(), t.unit.clone().unwrap_or_default());
        let owned = memory.owned();
        let Memory { store, state, .. } = &mut *memory;
        let store = store.as_ref().filter(|_| owned);
        let mut record = |entry: Entry| -> Result<(), String> {
            record_entry(store, state, &name, &unit, entry)
        };
        let report = recoverer.run(case, &target_state, &mut record).await;
        if report.outcome == Some(RecoveryOutcome::Recovered) {
            // It serves again: the next hang starts a new streak (the cooldown still applies).
            memory.state.target_mut(&t.name).consecutive_unhealthy = 0;
        }
        count_refusal(&mut memory.state, &t.name, &report);
        t.recovery = Some(report);
    }
}

/// Apply one of recovery's records to the state and persist it at once, synced: a second run
/// must see the action even if this one dies verifying, and the pending record must be on
/// disk before the signal. `store` is `None` when this run may not write (no state
/// directory, or another run holds the lock). A `Begin` that cannot be written is taken back
/// out of the state: recovery refuses that action, and it must not be remembered as taken
/// (a later write would store a `pending` that never happened, then a cooldown for nothing).
fn record_entry(
    store: Option<&Store>,
    state: &mut State,
    name: &str,
    unit: &str,
    entry: Entry,
) -> Result<(), String> {
    let begin = matches!(entry, Entry::Begin(_));
    match entry {
        Entry::Begin(rec) => state.add_action(name, rec),
        Entry::Finish(outcome) => state.finish_action(name, unit, outcome),
    }
    let saved = match store {
        Some(s) => s.save(state).map_err(|e| e.to_string()),
        None => Err("no state directory to record it in".into()),
    }
    .inspect_err(|e| log_event!(Level::Error, "state_write_failed", "error" = e));
    if begin && saved.is_err() {
        state.target_mut(name).actions.pop();
    }
    saved
}

/// A refusal counts under its kind (`routewatch_recovery_refusals_total`), kept in the state.
fn count_refusal(state: &mut State, target: &str, report: &RecoveryReport) {
    if let Some(kind) = report.refusal {
        *state
            .target_mut(target)
            .refusals_total
            .entry(kind.as_str().to_string())
            .or_default() += 1;
    }
}

/// The report of a recovery that is off for this run, if it is. Pure.
fn recovery_off(plan: &Plan, opts: &Options, i: usize, t: &TargetReport) -> Option<RecoveryReport> {
    let (decision, reason, refusal) = match (&opts.recovery_blocked, opts.no_recover) {
        (Some(why), _) => (
            crate::recovery::Decision::Refuse,
            why.clone(),
            Some(crate::recovery::Refusal::Untrusted),
        ),
        (None, true) => (
            crate::recovery::Decision::Disabled,
            "--no-recover".to_string(),
            None,
        ),
        (None, false) => return None,
    };
    Some(RecoveryReport {
        action: plan.targets[i]
            .recovery
            .as_ref()
            .map_or(crate::plan::Action::None, |p| p.action),
        decision,
        reason,
        refusal,
        unit: t.unit.clone().unwrap_or_default(),
        pid: None,
        new_pid: None,
        outcome: None,
        confirm_ms: None,
        act_ms: None,
        verify_ms: None,
        total_ms: 0,
        evidence: None,
        dump: None,
    })
}

/// The final write. A state that cannot be written (a full disk) costs the streaks and
/// history of this run, not its report: the report says so, and recovery already refused any
/// action whose record could not be written.
async fn save_final(memory: &Memory, warnings: &mut Vec<String>) {
    if let Some(s) = &memory.store
        && memory.owned()
        && let Err(e) = save_patiently(s, &memory.state).await
    {
        log_event!(Level::Error, "state_write_failed", "error" = e);
        warnings.push(format!(
            "the state could not be saved ({e}): this run's streaks and history are lost"
        ));
    }
}

/// The report: the run's status and counts from the targets. Pure but for the clock.
fn assemble(
    started: Instant,
    started_at: SystemTime,
    targets: Vec<TargetReport>,
    warnings: Vec<String>,
    notifications: Vec<crate::alerts::Outgoing>,
) -> RunReport {
    let status = verdict::run_status(targets.iter().map(|t| {
        let recovered = t
            .recovery
            .as_ref()
            .is_some_and(|r| r.outcome == Some(RecoveryOutcome::Recovered));
        (t.verdict, recovered)
    }));
    let counts = Summary::from_outcomes(
        targets
            .iter()
            .flat_map(|t| t.routes.iter().map(|r| r.outcome)),
    );
    RunReport {
        version: 1,
        status,
        exit_code: status.exit_code(),
        started_at: crate::state::unix_secs(started_at),
        elapsed_ms: started.elapsed().as_millis() as u64,
        summary: SummaryDoc {
            line: counts.line(),
            counts,
        },
        targets,
        warnings,
        notifications,
    }
}

/// Write the state, waiting briefly if descriptors are exhausted: sockets of the pools just
/// dropped close on the runtime's next turn, and losing the streak would delay recovery.
async fn save_patiently(store: &Store, state: &State) -> Result<(), StateError> {
    let mut tries = 0;
    loop {
        match store.save(state) {
            Err(e) if tries < 20 && e.is_fd_exhaustion() => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10 * tries)).await;
            }
            other => return other,
        }
    }
}

/// Why a target that exits 0 is not simply healthy: `unknown` and `degraded` each earn one
/// warning line. Pure.
fn verdict_warning(t: &TargetReport) -> Option<String> {
    // At most a few routes by name: one line, however large the target.
    const SHOWN: usize = 5;
    let paths = |keep: &dyn Fn(&RouteResult) -> bool| {
        let picked: Vec<&RouteResult> = t.routes.iter().filter(|r| keep(r)).collect();
        let mut text = picked
            .iter()
            .take(SHOWN)
            .map(|r| format!("{} {}", r.path, r.outcome))
            .collect::<Vec<_>>()
            .join(", ");
        if picked.len() > SHOWN {
            text.push_str(&format!(" and {} more", picked.len() - SHOWN));
        }
        text
    };
    let not_probed = |r: &RouteResult| r.class == crate::plan::Class::Core && r.cut_short;
    let cut = t.routes.iter().filter(|r| not_probed(r)).count();
    match t.verdict {
        Verdict::Unknown if cut > 0 => Some(format!(
            "{} not probed: the run's deadline (run_timeout) ended {} before a full attempt ({} with 0 attempts); raise run_timeout or concurrency: {}",
            crate::words::count(cut as u64, "core route", "core routes"),
            if cut == 1 { "it" } else { "them" },
            t.routes
                .iter()
                .filter(|r| not_probed(r) && r.attempts == 0)
                .count(),
            paths(&not_probed)
        )),
        Verdict::Unknown => Some(format!(
            "every core route is rate-limited (429), nothing proves it alive or hung: {}",
            paths(&|r| r.class == crate::plan::Class::Core)
        )),
        Verdict::Degraded => Some(format!(
            "core routes pass; not fine: {}",
            paths(&|r| r.outcome != crate::outcome::Outcome::Ok
                && r.outcome != crate::outcome::Outcome::RateLimited)
        )),
        Verdict::Healthy | Verdict::Unhealthy => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use crate::plan::Class;
    use crate::state::{ActionOutcome, ActionRecord};

    fn route(path: &str, class: Class, outcome: Outcome) -> RouteResult {
        RouteResult {
            path: path.into(),
            url: format!("http://127.0.0.1{path}"),
            class,
            outcome,
            status_code: None,
            attempts: 1,
            elapsed: Duration::from_millis(1),
            error: None,
            cut_short: false,
            tls_cert: None,
            redirects: Vec::new(),
        }
    }

    /// A pending record that cannot be written is refused and forgotten: the next write (the
    /// run's final one, after a full disk freed up) must not store an action never taken.
    /// Once taken, its outcome stays in the state whether or not it could be written at once.
    #[test]
    fn an_action_that_cannot_be_recorded_is_not_remembered() {
        let pending = || ActionRecord {
            at: 1_700_000_000,
            unit: "api.service".into(),
            action: crate::plan::Action::Kill,
            pid: Some(4242),
            outcome: ActionOutcome::Pending,
            evidence: None,
        };
        let mut state = State::default();
        let e = record_entry(
            None,
            &mut state,
            "api",
            "api.service",
            Entry::Begin(pending()),
        );
        assert!(e.is_err());
        assert!(!state.holds_actions(), "{:?}", state.targets);

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let e = record_entry(
            Some(&store),
            &mut state,
            "api",
            "api.service",
            Entry::Begin(pending()),
        );
        assert_eq!(e, Ok(()));
        let written = |state: &State| state.targets["api"].actions.clone();
        assert_eq!(written(&state).len(), 1);
        let e = record_entry(
            None,
            &mut state,
            "api",
            "api.service",
            Entry::Finish(ActionOutcome::Recovered),
        );
        assert!(e.is_err());
        assert_eq!(written(&state)[0].outcome, ActionOutcome::Recovered);
    }

    fn target(verdict: Verdict, routes: Vec<RouteResult>) -> TargetReport {
        TargetReport {
            name: "web".into(),
            verdict,
            unit: None,
            file: None,
            routes,
            recovery: None,
            recoveries_total: Default::default(),
            refusals_total: Default::default(),
        }
    }

    #[test]
    fn unknown_and_degraded_targets_say_why_in_one_short_line() {
        let unknown = target(
            Verdict::Unknown,
            vec![route("/health", Class::Core, Outcome::RateLimited)],
        );
        let why = verdict_warning(&unknown).unwrap();
        assert!(
            why.contains("rate-limited") && why.contains("/health"),
            "{why}"
        );

        let mut routes = vec![route("/health", Class::Core, Outcome::Ok)];
        routes
            .extend((0..7).map(|i| route(&format!("/aux{i}"), Class::Auxiliary, Outcome::Timeout)));
        let why = verdict_warning(&target(Verdict::Degraded, routes)).unwrap();
        assert!(
            why.contains("/aux0 timeout") && why.contains("/aux4"),
            "{why}"
        );
        assert!(
            !why.contains("/aux5") && why.ends_with("and 2 more"),
            "{why}"
        );
        assert!(!why.contains("/health"), "{why}");

        let healthy = target(Verdict::Healthy, vec![route("/", Class::Core, Outcome::Ok)]);
        assert_eq!(verdict_warning(&healthy), None);
        let unhealthy = target(
            Verdict::Unhealthy,
            vec![route("/", Class::Core, Outcome::Timeout)],
        );
        assert_eq!(verdict_warning(&unhealthy), None);
    }
}
