//! `routewatch status`: what the state file remembers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use routewatch::alerts::notify::Event;
use routewatch::state::{self, ActionRecord, Silence, State};
use routewatch::verdict::Verdict;
use serde::Serialize;

use super::{env, fail, is_root};
use crate::Exit;

/// `status --format json`, version 1; README "The state file" documents it.
#[derive(Serialize)]
struct Doc<'a> {
    version: u32,
    state_file: String,
    /// Unix seconds when this was read.
    now: u64,
    targets: Vec<TargetDoc<'a>>,
}

#[derive(Serialize)]
struct TargetDoc<'a> {
    name: &'a str,
    last_verdict: Option<Verdict>,
    last_run: Option<u64>,
    consecutive_unhealthy: u32,
    actions: &'a [ActionRecord],
    recoveries_total: &'a BTreeMap<String, u64>,
    /// The silence in force, or `null`.
    silence: Option<&'a Silence>,
    notifications: Vec<NotifiedDoc<'a>>,
}

#[derive(Serialize)]
struct NotifiedDoc<'a> {
    receiver: &'a str,
    /// The bad verdict announced and not yet resolved.
    open: Option<Event>,
    last_event: Option<Event>,
    last_at: Option<u64>,
}

fn json(path: &std::path::Path, st: &State) -> String {
    let now = SystemTime::now();
    let doc = Doc {
        version: 1,
        state_file: path.display().to_string(),
        now: state::unix_secs(now),
        targets: st
            .targets
            .iter()
            .map(|(name, t)| TargetDoc {
                name,
                last_verdict: t.last_verdict,
                last_run: t.last_run,
                consecutive_unhealthy: t.consecutive_unhealthy,
                actions: &t.actions,
                recoveries_total: &t.recoveries_total,
                silence: t.silenced(now),
                notifications: t
                    .notified
                    .iter()
                    .map(|(k, m)| NotifiedDoc {
                        receiver: k,
                        open: m.open,
                        last_event: m.last,
                        last_at: m.last.map(|_| m.last_at),
                    })
                    .collect(),
            })
            .collect(),
    };
    format!("{:#}\n", serde_json::to_value(&doc).unwrap_or_default())
}

pub(crate) fn status(state_dir: Option<PathBuf>, as_json: bool) -> Exit {
    let dir = match state_dir.map_or_else(|| state::default_dir(&env, is_root()), Ok) {
        Ok(d) => d,
        Err(e) => return fail(Exit::CouldNotRun, e),
    };
    let path = dir.join(state::STATE_FILE);
    // As root, say so when `check` would not use this directory: what it holds may have been
    // written by someone else, and no run reads or updates it.
    if is_root()
        && let Some(why) = routewatch::trust::state_dir_problem(&dir)
    {
        eprintln!(
            "routewatch: warning: state directory {} is not used by check ({why}); what it shows may not be routewatch's",
            dir.display()
        );
    }
    // The same reader as `check`: never through a symlink, never more than its size limit,
    // and an error quotes no content of the file.
    let st = match state::read_file(&path) {
        Ok(None) if as_json => {
            print!("{}", json(&path, &State::default()));
            return Exit::Healthy;
        }
        Ok(None) => {
            println!(
                "{}: no state yet (no check has run with this state directory)",
                path.display()
            );
            return Exit::Healthy;
        }
        Ok(Some(Ok(s))) => s,
        Ok(Some(Err(why))) => {
            return fail(
                Exit::CouldNotRun,
                format!(
                    "{} is not usable state ({why}); the next check sets it aside",
                    path.display()
                ),
            );
        }
        Err(e) => {
            return fail(
                Exit::CouldNotRun,
                format!("cannot read {}: {e}", path.display()),
            );
        }
    };
    if as_json {
        print!("{}", json(&path, &st));
        return Exit::Healthy;
    }
    let now_at = SystemTime::now();
    let now = state::unix_secs(now_at);
    let ago =
        |t: u64| humantime::format_duration(Duration::from_secs(now.saturating_sub(t))).to_string();
    println!("{}", path.display());
    for (name, t) in &st.targets {
        println!(
            "{name}: last verdict {} ({} ago), {}",
            t.last_verdict.map_or("-", |v| v.as_str()),
            t.last_run.map_or("never".into(), ago),
            routewatch::words::count(
                u64::from(t.consecutive_unhealthy),
                "consecutive unhealthy run",
                "consecutive unhealthy runs"
            )
        );
        if let Some(s) = t.silenced(now_at) {
            println!("  {}", s.describe());
        }
        for m in t.notified.values() {
            if let Some(e) = m.last {
                println!("  last notified: {} ({} ago)", e.as_str(), ago(m.last_at));
            }
        }
        for a in &t.actions {
            println!(
                "  {} ago: {} {} (PID {}): {}",
                ago(a.at),
                a.action.as_str(),
                a.unit,
                a.pid.map_or("-".into(), |p| p.to_string()),
                a.outcome
            );
        }
        if !t.recoveries_total.is_empty() {
            let counts: Vec<String> = t
                .recoveries_total
                .iter()
                .map(|(outcome, n)| format!("{n} {outcome}"))
                .collect();
            println!("  actions in all: {}", counts.join(", "));
        }
    }
    Exit::Healthy
}
