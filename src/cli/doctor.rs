//! `routewatch doctor`: check the deployment (the probe file and its trust, the state
//! directory, the timer and service over D-Bus, each target's unit) and print a checklist
//! with the fix for each failing line. The checks are `routewatch::doctor`'s; this gathers
//! the facts.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use routewatch::doctor::{self, Check, Checklist, Status};
use routewatch::plan::{Action, Plan};
use routewatch::state;
use routewatch::systemd::Systemd;

use super::{env, fail, find_config, is_root, runtime};
use crate::Exit;

pub(crate) struct DoctorArgs {
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub timer: String,
    pub json: bool,
}

pub(crate) fn doctor(args: DoctorArgs) -> Exit {
    let root = is_root();
    let mut checks = Vec::new();
    let plan = probe_file(args.config.clone(), root, &mut checks);
    checks.push(state_dir(args.state_dir.as_deref(), root));
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(Exit::CouldNotRun, format!("cannot start the runtime: {e}")),
    };
    checks.extend(rt.block_on(systemd_checks(&args.timer, plan.as_ref(), root)));
    let list = Checklist::new(checks);
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&list).expect("a checklist serializes")
        )
    } else {
        render(&list)
    };
    if let Err(e) = super::output::emit(&text, None) {
        return fail(Exit::CouldNotRun, e);
    }
    if list.ok {
        Exit::Healthy
    } else {
        Exit::Unhealthy
    }
}

/// The checklist as a person reads it: one line per check, the fix under a failing one.
fn render(list: &Checklist) -> String {
    let mut out = String::new();
    for c in &list.checks {
        out.push_str(&format!(
            "{:<5} {}: {}\n",
            c.status.as_str(),
            c.check,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    let n = |s| list.count(s);
    out.push_str(&format!(
        "{} failed, {} to look at, {} ok, {} skipped\n",
        n(Status::Fail),
        n(Status::Warn),
        n(Status::Ok),
        n(Status::Skipped)
    ));
    out
}

/// The probe file loads (an unset `${VAR}` is a warning: the service reads its environment
/// file, a terminal does not), and as root passes the trust check `check` applies before
/// any recovery.
fn probe_file(explicit: Option<PathBuf>, root: bool, checks: &mut Vec<Check>) -> Option<Plan> {
    let path = match find_config(explicit) {
        Ok(p) => p,
        Err(e) => {
            checks.push(Check::fail(
                "probe file",
                e,
                "install one at /etc/routewatch/probes.yaml (see the shipped probes.yaml), or pass --config",
            ));
            return None;
        }
    };
    let shown = path.display().to_string();
    let (file, problem) = match super::open_probe_file(&path, root) {
        Ok(o) => o,
        Err(e) => {
            checks.push(Check::fail(
                "probe file",
                e,
                "check the path and its permissions",
            ));
            return None;
        }
    };
    let missing = std::cell::RefCell::new(Vec::new());
    let lenient = |var: &str| {
        env(var).or_else(|| {
            missing.borrow_mut().push(var.to_string());
            Some(String::new())
        })
    };
    // As root, a file that fails the trust check is read as `check` reads it: no `${VAR}` of
    // root's environment, and its errors give their place, not its text.
    let trusted = |problem: Option<String>| match (root, problem) {
        (false, _) => Check::skipped(
            "probe file trusted",
            "not root: `check` applies the trust check as root only",
        ),
        (true, None) => Check::ok(
            "probe file trusted",
            "no one but root can change it, or any directory or link on its path",
        ),
        (true, Some(why)) => Check::fail(
            "probe file trusted",
            format!("{why}: `check` would probe and report but never recover"),
            format!("chown root: {shown} && chmod go-w {shown} (and each directory above it)"),
        ),
    };
    let plan = match routewatch::config::load_opened(&file, &path, &lenient, problem.is_some()) {
        Ok(p) => p,
        Err(e) => {
            checks.push(Check::fail(
                "probe file",
                e.to_string(),
                format!("routewatch validate --config {shown}"),
            ));
            // Why it was read as `check` reads a file others can write, when it was.
            if problem.is_some() {
                checks.push(trusted(problem));
            }
            return None;
        }
    };
    let routes: usize = plan.targets.iter().map(|t| t.routes.len()).sum();
    checks.push(Check::ok(
        "probe file",
        format!(
            "{shown}: {}, {}",
            routewatch::words::count(plan.targets.len() as u64, "target", "targets"),
            routewatch::words::count(routes as u64, "route", "routes")
        ),
    ));
    for var in missing.into_inner() {
        checks.push(Check::warn(
            "probe file environment",
            format!("${{{var}}} is not set here; `check` refuses the file where it is unset"),
            "set it in /etc/routewatch/environment (the shipped unit's EnvironmentFile=)",
        ));
    }
    // Every file read counts: a drop-in others can write blocks recovery as the probe file
    // would.
    let problem = std::iter::once(problem)
        .flatten()
        .chain(plan.untrusted.iter().cloned())
        .reduce(|a, b| format!("{a}; {b}"));
    checks.push(trusted(problem));
    Some(plan)
}

/// The state directory: trusted (as root) and writable, or creatable.
fn state_dir(explicit: Option<&Path>, root: bool) -> Check {
    const NAME: &str = "state directory";
    let dir = match explicit.map_or_else(|| state::default_dir(&env, root), |d| Ok(d.into())) {
        Ok(d) => d,
        Err(e) => return Check::fail(NAME, e, "pass --state-dir, or set STATE_DIRECTORY"),
    };
    let shown = dir.display().to_string();
    if root && let Some(why) = routewatch::trust::state_dir_problem(&dir) {
        return Check::fail(
            NAME,
            format!(
                "{shown}: {why}: `check` would neither read nor write it (no cooldown, no history)"
            ),
            format!("chown root: {shown} && chmod 0700 {shown}"),
        );
    }
    use rustix::fs::{Access, access};
    let (probe, what) = if dir.is_dir() {
        (dir.clone(), "writable")
    } else {
        match dir.parent() {
            Some(p) if p.is_dir() => (p.to_path_buf(), "created at the first run"),
            _ => {
                return Check::fail(
                    NAME,
                    format!("{shown} does not exist, nor does its parent"),
                    format!(
                        "mkdir -m 0700 -p {shown} (the shipped unit's StateDirectory= does it)"
                    ),
                );
            }
        }
    };
    if let Err(e) = access(&probe, Access::WRITE_OK) {
        return Check::fail(
            NAME,
            format!("{}: not writable: {e}", probe.display()),
            "run as the user the service runs as, or fix the directory's owner",
        );
    }
    match state::read_file(&dir.join("state.json")) {
        Ok(Some(Err(e))) => Check::warn(
            NAME,
            format!("{shown}: the state file cannot be read ({e})"),
            "`check` sets it aside and starts afresh; look at it first if the history matters",
        ),
        _ => Check::ok(NAME, format!("{shown}: {what}")),
    }
}

/// Over D-Bus: the timer, the service it starts, and each target's unit.
async fn systemd_checks(timer: &str, plan: Option<&Plan>, root: bool) -> Vec<Check> {
    let systemd = match Systemd::connect().await {
        Ok(s) => s,
        Err(e) => {
            return vec![Check::fail(
                "systemd",
                e.to_string(),
                "run on the host that runs the services, where systemd and D-Bus are",
            )];
        }
    };
    let now = SystemTime::now();
    let mut checks = Vec::new();
    let mut service = format!("{}.service", timer.strip_suffix(".timer").unwrap_or(timer));
    match systemd.timer(timer).await {
        Ok(t) => {
            if !t.starts.is_empty() {
                service = t.starts.clone();
            }
            checks.extend(doctor::timer(&t, now));
        }
        Err(e) => checks.push(Check::fail(
            timer,
            e.to_string(),
            "see README \"Permissions\"",
        )),
    }
    let kills = plan.is_some_and(|p| {
        p.targets.iter().any(|t| {
            t.unit.is_some()
                && t.recovery
                    .as_ref()
                    .is_some_and(|r| r.action == Action::Kill)
        })
    });
    match systemd.service(&service).await {
        Ok(s) => checks.extend(doctor::service(&s, kills)),
        Err(e) => checks.push(Check::fail(
            &service,
            e.to_string(),
            "see README \"Permissions\"",
        )),
    }
    for t in plan.map_or(&[][..], |p| &p.targets[..]) {
        let (Some(unit), Some(policy)) = (&t.unit, &t.recovery) else {
            continue;
        };
        match systemd.facts(unit).await {
            Ok(f) => checks.extend(doctor::target_unit(&t.name, policy, &f, root)),
            Err(e) => checks.push(Check::fail(
                format!("target {}: {unit}", t.name),
                e.to_string(),
                "see README \"Permissions\"",
            )),
        }
        if let Some(proxy) = &policy.through {
            match systemd.facts(proxy).await {
                Ok(f) if f.load_state == routewatch::systemd::LoadState::Loaded => {
                    checks.push(Check::ok(
                        format!("target {}: {proxy} loaded", t.name),
                        "recovery.through",
                    ))
                }
                Ok(f) => checks.push(Check::fail(
                    format!("target {}: {proxy} loaded", t.name),
                    format!("systemd has no such unit (LoadState={})", f.load_state),
                    format!("check `through: {proxy}` in the probe file"),
                )),
                Err(e) => checks.push(Check::fail(
                    format!("target {}: {proxy}", t.name),
                    e.to_string(),
                    "see README \"Permissions\"",
                )),
            }
        }
    }
    checks
}
