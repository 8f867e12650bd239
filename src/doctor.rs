//! `routewatch doctor`: checks the deployment, not the services. Each check is a pure
//! function of facts read elsewhere (the probe file, the state directory, systemd over
//! D-Bus) and says what it found and, when it fails, the fix.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::plan::{Action, RecoveryPolicy};
use crate::systemd::{ActiveState, LoadState, Scheduled, ServiceFacts, TimerFacts, UnitFacts};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Works, but worth a look (the line says why).
    Warn,
    /// The deployment is broken here: `doctor` exits 1.
    Fail,
    /// Could not be checked here (the line says why).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `routewatch.timer reloaded`.
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it (a failing or warning line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Check::ok(check, detail)
        }
    }

    pub fn warn(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Warn,
            ..Check::fail(check, detail, fix)
        }
    }

    pub fn skipped(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            status: Status::Skipped,
            ..Check::ok(check, detail)
        }
    }
}

/// The whole checklist, as `--format json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Checklist {
    /// Version of this document's layout.
    pub version: u32,
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Checklist {
    pub fn new(checks: Vec<Check>) -> Checklist {
        Checklist {
            version: 1,
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// A gap longer than this between two runs leaves a hang alone for too long (the incident
/// behind this tool: a timer that still ran every 8 hours).
pub const LONGEST_GAP: Duration = Duration::from_secs(3600);

/// Exit statuses of `routewatch check` that mean the watchdog itself worked.
fn a_check_that_ran(status: i32) -> Option<&'static str> {
    match status {
        0 => Some("healthy"),
        1 => Some("a core route failed and was not brought back"),
        3 => Some("a hung unit was recovered"),
        _ => None,
    }
}

fn ago(now: SystemTime, then: SystemTime) -> String {
    let d = now.duration_since(then).unwrap_or_default();
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(d.as_secs()))
    )
}

fn within(now: SystemTime, then: SystemTime) -> String {
    let d = then.duration_since(now).unwrap_or_default();
    format!(
        "in {}",
        humantime::format_duration(Duration::from_secs(d.as_secs()))
    )
}

/// Loaded, enabled, active, and the file on disk the one in force. `enable` says whether
/// the unit must be enabled (the timer) or is started by it (the service).
fn scheduled_unit(s: &Scheduled, enable: bool) -> Vec<Check> {
    let unit = &s.unit;
    if s.load_state != LoadState::Loaded {
        return vec![Check::fail(
            format!("{unit} loaded"),
            format!("systemd has no such unit (LoadState={})", s.load_state),
            format!(
                "install systemd/{unit} from the release into /etc/systemd/system/, then `systemctl daemon-reload`"
            ),
        )];
    }
    let mut checks = vec![Check::ok(format!("{unit} loaded"), "LoadState=loaded")];
    checks.push(if s.need_daemon_reload {
        Check::fail(
            format!("{unit} reloaded"),
            "its file changed on disk since systemd loaded it (NeedDaemonReload=yes): the version in force is the old one",
            "systemctl daemon-reload",
        )
    } else {
        Check::ok(
            format!("{unit} reloaded"),
            "the file on disk is the one in force",
        )
    });
    if enable {
        let enabled = matches!(
            s.unit_file_state.as_str(),
            "enabled" | "enabled-runtime" | "linked" | "linked-runtime" | "alias"
        );
        checks.push(if enabled {
            Check::ok(
                format!("{unit} enabled"),
                format!("UnitFileState={}", s.unit_file_state),
            )
        } else {
            Check::fail(
                format!("{unit} enabled"),
                format!(
                    "UnitFileState={}: it will not start at the next boot",
                    s.unit_file_state
                ),
                format!("systemctl enable --now {unit}"),
            )
        });
        checks.push(if s.active_state == ActiveState::Active {
            Check::ok(format!("{unit} active"), "ActiveState=active")
        } else {
            Check::fail(
                format!("{unit} active"),
                format!("ActiveState={}: nothing runs routewatch", s.active_state),
                format!("systemctl start {unit}"),
            )
        });
    }
    checks
}

/// The timer: loaded, reloaded, enabled, active; its schedule and when it runs.
pub fn timer(t: &TimerFacts, now: SystemTime) -> Vec<Check> {
    let mut checks = scheduled_unit(&t.scheduled, true);
    if t.scheduled.load_state != LoadState::Loaded {
        return checks;
    }
    let unit = &t.scheduled.unit;
    let schedule = if t.schedule.is_empty() {
        "no schedule".to_string()
    } else {
        t.schedule.join(", ")
    };
    let last = t.last_trigger.map_or_else(
        || "never triggered".to_string(),
        |l| format!("last {}", ago(now, l)),
    );
    match t.next_elapse {
        Some(next) if next.duration_since(now).unwrap_or_default() > LONGEST_GAP => {
            checks.push(Check::warn(
                format!("{unit} schedule"),
                format!(
                    "{schedule}; {last}; next {}: a hang can go unnoticed that long",
                    within(now, next)
                ),
                "run every 15 minutes (OnUnitActiveSec=15min in the shipped timer); after editing the timer, `systemctl daemon-reload`",
            ));
        }
        Some(next) => checks.push(Check::ok(
            format!("{unit} schedule"),
            format!("{schedule}; {last}; next {}", within(now, next)),
        )),
        None if t.scheduled.active_state == ActiveState::Active => checks.push(Check::fail(
            format!("{unit} schedule"),
            format!("{schedule}; {last}; no next run: it will never fire again"),
            format!(
                "give {unit} an OnUnitActiveSec= or OnCalendar=, then `systemctl daemon-reload`"
            ),
        )),
        None => checks.push(Check::skipped(
            format!("{unit} schedule"),
            format!("{schedule}; {last}; no next run while the timer is not active"),
        )),
    }
    checks
}

/// The service the timer starts: loaded, reloaded, how its last run ended, and CAP_KILL in
/// its bounding set when a target kills.
pub fn service(s: &ServiceFacts, kills: bool) -> Vec<Check> {
    let mut checks = scheduled_unit(&s.scheduled, false);
    if s.scheduled.load_state != LoadState::Loaded {
        return checks;
    }
    let unit = &s.scheduled.unit;
    let run = format!("{unit} last run");
    checks.push(match (s.result.as_str(), s.exec_main_status) {
        // A unit that never ran reports success and 0.
        ("success" | "exit-code", status) => match a_check_that_ran(status) {
            Some(what) => Check::ok(run, format!("exit {status} ({what})")),
            None => Check::fail(
                run,
                format!(
                    "exit {status}: {}",
                    match status {
                        2 => "the probe file or the arguments are wrong",
                        4 => "the check could not run",
                        _ => "not an exit status of routewatch check",
                    }
                ),
                format!("journalctl -u {unit} -n 50"),
            ),
        },
        (result, status) => Check::fail(
            run,
            format!("Result={result} (exit status {status}): the run did not end by itself"),
            format!(
                "journalctl -u {unit} -n 50 (timeout: raise TimeoutStartSec=; signal: a crash or a kill)"
            ),
        ),
    });
    if kills {
        const CAP_KILL: u64 = 1 << 5;
        checks.push(if s.capability_bounding_set & CAP_KILL != 0 {
            Check::ok(
                format!("{unit} may kill"),
                "CAP_KILL is in its CapabilityBoundingSet=",
            )
        } else {
            Check::fail(
                format!("{unit} may kill"),
                "CAP_KILL is not in its CapabilityBoundingSet=, and a target has action: kill: every kill would fail",
                format!("CapabilityBoundingSet=CAP_KILL in {unit}, as shipped"),
            )
        });
    }
    checks
}

/// The most actions `policy` allows within `interval`: `cooldown` apart, at most
/// `max_actions` per `window`.
pub fn most_actions_within(policy: &RecoveryPolicy, interval: Duration) -> u64 {
    let by_window = u64::from(policy.max_actions)
        .saturating_mul(interval.as_secs().div_ceil(policy.window.as_secs().max(1)));
    match policy.cooldown.as_secs() {
        0 => by_window,
        c => by_window.min((interval.as_secs() / c).saturating_add(1)),
    }
}

/// One target's unit: loaded; for a kill, a `Restart=` that brings it back and a start limit
/// the allowed kills cannot trip; for a restart as a user, the polkit rule.
pub fn target_unit(
    target: &str,
    policy: &RecoveryPolicy,
    facts: &UnitFacts,
    root: bool,
) -> Vec<Check> {
    let unit = &facts.unit;
    let name = |what: &str| format!("target {target}: {unit} {what}");
    if facts.load_state != LoadState::Loaded {
        return vec![Check::fail(
            name("loaded"),
            format!("systemd has no such unit (LoadState={})", facts.load_state),
            format!(
                "check `unit: {unit}` in the probe file (`systemctl list-units --all '{unit}'`)"
            ),
        )];
    }
    let mut checks = vec![Check::ok(
        name("loaded"),
        format!("{}/{}", facts.active_state, facts.sub_state),
    )];
    match policy.action {
        Action::Kill if !facts.restarts_after_kill() => checks.push(Check::fail(
            name("comes back after a kill"),
            format!(
                "Restart={}: a kill would leave it down (recovery refuses it)",
                facts.restart
            ),
            format!("Restart=on-failure in {unit} (`systemctl edit {unit}`), or action: restart"),
        )),
        Action::Kill => checks.push(Check::ok(
            name("comes back after a kill"),
            format!("Restart={}", facts.restart),
        )),
        Action::Restart if !root => checks.push(Check::warn(
            name("may be restarted"),
            "not root: RestartUnit needs the polkit rule of README \"Permissions\" for this user (not checked without restarting)",
            "install the polkit rule, or run routewatch as root (the shipped unit does)",
        )),
        _ => {}
    }
    if policy.action != Action::None
        && let Some(limit) = facts.start_limit
    {
        let most = most_actions_within(policy, limit.interval);
        // The unit's own start, then one per action.
        let starts = most.saturating_add(1);
        let setting = format!(
            "StartLimitBurst={} within StartLimitIntervalSec={}",
            limit.burst,
            humantime::format_duration(limit.interval)
        );
        checks.push(if starts > u64::from(limit.burst) {
            Check::warn(
                name("start limit"),
                format!(
                    "{setting}: max_actions {} per {} and cooldown {} allow {} in that time, {starts} starts with the unit's own; recovery refuses the one that would trip the limit",
                    policy.max_actions,
                    humantime::format_duration(policy.window),
                    humantime::format_duration(policy.cooldown),
                    crate::words::count(most, "action", "actions"),
                ),
                format!(
                    "StartLimitBurst={starts} in {unit}'s [Unit], or a lower max_actions / longer cooldown"
                ),
            )
        } else {
            Check::ok(
                name("start limit"),
                format!("{setting}: the allowed actions cannot trip it"),
            )
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::StartLimit;

    fn scheduled(unit: &str) -> Scheduled {
        Scheduled {
            unit: unit.into(),
            load_state: LoadState::Loaded,
            active_state: ActiveState::Active,
            unit_file_state: "enabled".into(),
            need_daemon_reload: false,
        }
    }

    fn timer_facts(now: SystemTime) -> TimerFacts {
        TimerFacts {
            scheduled: scheduled("routewatch.timer"),
            starts: "routewatch.service".into(),
            schedule: vec!["OnUnitActiveSec=15m".into()],
            last_trigger: Some(now - Duration::from_secs(300)),
            next_elapse: Some(now + Duration::from_secs(600)),
        }
    }

    fn statuses(checks: &[Check]) -> Vec<(String, Status)> {
        checks.iter().map(|c| (c.check.clone(), c.status)).collect()
    }

    fn failing(checks: &[Check]) -> Vec<&Check> {
        checks.iter().filter(|c| c.status != Status::Ok).collect()
    }

    #[test]
    fn a_sane_timer_passes_every_check() {
        let now = SystemTime::now();
        let checks = timer(&timer_facts(now), now);
        assert!(failing(&checks).is_empty(), "{checks:#?}");
        assert_eq!(checks.len(), 5, "{:?}", statuses(&checks));
        assert!(
            checks[4]
                .detail
                .contains("OnUnitActiveSec=15m; last 5m ago; next in 10m")
        );
    }

    #[test]
    fn each_timer_fault_fails_with_its_fix() {
        let now = SystemTime::now();
        type Break = fn(&mut TimerFacts);
        let cases: Vec<(Break, &str, &str)> = vec![
            (
                |t| t.scheduled.need_daemon_reload = true,
                "NeedDaemonReload=yes",
                "systemctl daemon-reload",
            ),
            (
                |t| t.scheduled.unit_file_state = "disabled".into(),
                "UnitFileState=disabled",
                "systemctl enable --now routewatch.timer",
            ),
            (
                |t| t.scheduled.active_state = "inactive".into(),
                "ActiveState=inactive",
                "systemctl start routewatch.timer",
            ),
            (
                |t| t.next_elapse = None,
                "never fire again",
                "OnUnitActiveSec=",
            ),
            (
                |t| {
                    t.scheduled = Scheduled {
                        load_state: "not-found".into(),
                        ..scheduled("routewatch.timer")
                    }
                },
                "LoadState=not-found",
                "daemon-reload",
            ),
        ];
        for (break_it, detail, fix) in cases {
            let mut t = timer_facts(now);
            break_it(&mut t);
            let checks = timer(&t, now);
            let bad = failing(&checks);
            assert_eq!(bad.len(), 1, "{detail}: {checks:#?}");
            assert_eq!(bad[0].status, Status::Fail, "{detail}");
            assert!(bad[0].detail.contains(detail), "{detail}: {:?}", bad[0]);
            assert!(
                bad[0].fix.as_deref().is_some_and(|f| f.contains(fix)),
                "{fix}: {:?}",
                bad[0]
            );
        }
    }

    #[test]
    fn a_timer_that_runs_every_eight_hours_is_a_warning() {
        let now = SystemTime::now();
        let t = TimerFacts {
            schedule: vec!["OnUnitActiveSec=8h".into()],
            next_elapse: Some(now + Duration::from_secs(7 * 3600)),
            ..timer_facts(now)
        };
        let checks = timer(&t, now);
        let bad = failing(&checks);
        assert_eq!(bad.len(), 1, "{checks:#?}");
        assert_eq!(bad[0].status, Status::Warn);
        assert!(bad[0].detail.contains("next in 7h"), "{:?}", bad[0]);
    }

    fn service_facts(result: &str, status: i32, caps: u64) -> ServiceFacts {
        ServiceFacts {
            scheduled: scheduled("routewatch.service"),
            result: result.into(),
            exec_main_status: status,
            capability_bounding_set: caps,
        }
    }

    #[test]
    fn the_service_last_run_and_cap_kill() {
        for (result, status, ok) in [
            ("success", 0, true),
            ("exit-code", 1, true),
            ("success", 3, true),
            ("exit-code", 2, false),
            ("exit-code", 4, false),
            ("timeout", 0, false),
            ("signal", 0, false),
        ] {
            let checks = service(&service_facts(result, status, 1 << 5), true);
            assert_eq!(
                failing(&checks).is_empty(),
                ok,
                "{result} {status}: {checks:#?}"
            );
        }
        let checks = service(&service_facts("success", 0, 0), true);
        let bad = failing(&checks);
        assert_eq!(bad.len(), 1, "{checks:#?}");
        assert!(bad[0].detail.contains("CAP_KILL"), "{:?}", bad[0]);
        // Without a kill in the probe file, the bounding set is not a concern.
        assert!(failing(&service(&service_facts("success", 0, 0), false)).is_empty());
    }

    fn policy(action: Action) -> RecoveryPolicy {
        RecoveryPolicy {
            action,
            after_failed_runs: 1,
            on: Vec::new(),
            startup_grace: Duration::ZERO,
            cooldown: Duration::from_secs(600),
            max_actions: 3,
            window: Duration::from_secs(3600),
            verify_timeout: Duration::from_secs(30),
            dump: None,
            through: None,
        }
    }

    fn unit(restart: &str, limit: Option<StartLimit>) -> UnitFacts {
        UnitFacts {
            unit: "api.service".into(),
            load_state: LoadState::Loaded,
            active_state: ActiveState::Active,
            sub_state: "running".into(),
            active_enter: None,
            invocation_id: String::new(),
            main_pid: 42,
            restart: restart.into(),
            control_group: String::new(),
            n_restarts: 0,
            start_limit: limit,
        }
    }

    #[test]
    fn most_actions_follow_cooldown_and_max_actions() {
        let p = policy(Action::Kill);
        // 10 min apart: 1 in 5 min, 2 in 10, capped at 3 an hour, 6 in two hours.
        assert_eq!(most_actions_within(&p, Duration::from_secs(300)), 1);
        assert_eq!(most_actions_within(&p, Duration::from_secs(600)), 2);
        assert_eq!(most_actions_within(&p, Duration::from_secs(3000)), 3);
        assert_eq!(most_actions_within(&p, Duration::from_secs(7200)), 6);
        // StartLimitIntervalSec=infinity and a huge max_actions: no overflow.
        let huge = RecoveryPolicy {
            max_actions: u32::MAX,
            cooldown: Duration::ZERO,
            ..p
        };
        assert_eq!(most_actions_within(&huge, Duration::MAX), u64::MAX);
    }

    #[test]
    fn target_units_restart_policy_and_start_limit() {
        let kill = policy(Action::Kill);
        let default_limit = StartLimit::from_properties(10_000_000, 5);
        let ok = target_unit("api", &kill, &unit("always", default_limit), true);
        assert!(failing(&ok).is_empty(), "{ok:#?}");

        let no = target_unit("api", &kill, &unit("no", default_limit), true);
        let bad = failing(&no);
        assert_eq!(bad.len(), 1, "{no:#?}");
        assert_eq!(bad[0].status, Status::Fail);
        assert!(bad[0].detail.contains("Restart=no"), "{:?}", bad[0]);
        // Restart=no is fine for action: restart (systemd starts it again itself).
        let restart = target_unit("api", &policy(Action::Restart), &unit("no", None), true);
        assert!(failing(&restart).is_empty(), "{restart:#?}");

        // 3 kills an hour, StartLimitBurst=3 within 1h: the 4th start trips it.
        let tight = StartLimit::from_properties(3_600_000_000, 3);
        let limited = target_unit("api", &kill, &unit("always", tight), true);
        let bad = failing(&limited);
        assert_eq!(bad.len(), 1, "{limited:#?}");
        assert_eq!(bad[0].status, Status::Warn);
        assert!(bad[0].fix.as_deref().unwrap().contains("StartLimitBurst=4"));

        let missing = UnitFacts {
            load_state: "not-found".into(),
            ..unit("always", None)
        };
        let gone = target_unit("api", &kill, &missing, true);
        assert_eq!(
            statuses(&gone),
            [("target api: api.service loaded".to_string(), Status::Fail)]
        );

        let as_user = target_unit(
            "api",
            &policy(Action::Restart),
            &unit("always", None),
            false,
        );
        assert_eq!(failing(&as_user)[0].status, Status::Warn);
    }

    #[test]
    fn a_failing_check_fails_the_list_and_a_warning_does_not() {
        let warn = Check::warn("a", "b", "c");
        assert!(Checklist::new(vec![Check::ok("x", "y"), warn.clone()]).ok);
        assert!(!Checklist::new(vec![warn, Check::fail("a", "b", "c")]).ok);
    }
}
