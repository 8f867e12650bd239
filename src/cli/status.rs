//! `routewatch status`: what the state file remembers.

use std::path::PathBuf;
use std::time::Duration;

use routewatch::state;

use super::{env, fail, is_root};
use crate::Exit;

pub(crate) fn status(state_dir: Option<PathBuf>) -> Exit {
    let dir = match state_dir.map_or_else(|| state::default_dir(&env, is_root()), Ok) {
        Ok(d) => d,
        Err(e) => return fail(Exit::CouldNotRun, e),
    };
    let path = dir.join(state::STATE_FILE);
    // The same reader as `check`: never through a symlink, never more than its size limit,
    // and an error quotes no content of the file.
    let st = match state::read_file(&path) {
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
    let now = state::unix_secs(std::time::SystemTime::now());
    let ago =
        |t: u64| humantime::format_duration(Duration::from_secs(now.saturating_sub(t))).to_string();
    println!("{}", path.display());
    for (name, t) in &st.targets {
        println!(
            "{name}: last verdict {} ({} ago), {} consecutive unhealthy run(s)",
            t.last_verdict.map_or("-", |v| v.as_str()),
            t.last_run.map_or("never".into(), ago),
            t.consecutive_unhealthy
        );
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
