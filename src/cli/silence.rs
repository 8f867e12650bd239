//! `routewatch silence`: set, list and clear maintenance silences in the state file, under
//! the same lock as `check`. A silenced target is still probed and reported, but never
//! recovered and never notified.

use std::time::{Duration, SystemTime};

use routewatch::state::{self, Loaded, Silence, State, Store};

use super::{env, fail, is_root, runtime};
use crate::{Exit, SilenceArgs};

/// A change to the state, with the line that says what it did.
type Change = Box<dyn FnOnce(&mut State) -> Result<String, String>>;

/// How long to wait for a running check to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn silence(args: SilenceArgs) -> Exit {
    let dir = match args
        .state_dir
        .clone()
        .map_or_else(|| state::default_dir(&env, is_root()), Ok)
    {
        Ok(d) => d,
        Err(e) => return fail(Exit::CouldNotRun, e),
    };
    // As root, a state directory others control is neither read nor written, as `check`
    // treats it: a silence written there could be forged, and root writing there is what
    // they want.
    if is_root()
        && let Some(why) = routewatch::trust::state_dir_problem(&dir)
    {
        return fail(
            Exit::CouldNotRun,
            format!(
                "state directory {} not used ({why}); `check` ignores it too: fix its ownership/mode",
                dir.display()
            ),
        );
    }
    let now = SystemTime::now();
    let change: Option<Change> = match (&args.target, &args.clear, args.list) {
        (None, None, true) => None,
        (Some(target), None, false) => {
            let Some(dur) = args.duration else {
                return fail(
                    Exit::Usage,
                    "silence TARGET needs --for DURATION (e.g. 30m)",
                );
            };
            let Some(reason) = args.reason.clone().filter(|r| !r.trim().is_empty()) else {
                return fail(Exit::Usage, "silence TARGET needs --reason TEXT");
            };
            let target = target.clone();
            Some(Box::new(move |st: &mut State| {
                let s = Silence {
                    since: state::unix_secs(now),
                    until: state::unix_secs(now + dur),
                    by: invoking_user(),
                    reason,
                };
                let line = format!("{target}: {}", s.describe());
                st.target_mut(&target).silence = Some(s);
                Ok(line)
            }))
        }
        (None, Some(target), false) => {
            let target = target.clone();
            Some(Box::new(move |st: &mut State| {
                match st.targets.get_mut(&target).and_then(|t| t.silence.take()) {
                    Some(_) => Ok(format!("{target}: silence cleared")),
                    None => Err(format!("{target} is not silenced")),
                }
            }))
        }
        _ => {
            return fail(
                Exit::Usage,
                "use one of: silence TARGET --for DURATION --reason TEXT, silence --list, silence --clear TARGET",
            );
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(Exit::CouldNotRun, format!("cannot start the runtime: {e}")),
    };
    let result = rt.block_on(update(&dir, now, change));
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            Exit::Healthy
        }
        Err((exit, e)) => fail(exit, e),
    }
}

/// Lock, load, change (or only list), save. Expired silences are dropped on the way.
async fn update(
    dir: &std::path::Path,
    now: SystemTime,
    change: Option<Change>,
) -> Result<Vec<String>, (Exit, String)> {
    let could_not = |e: String| (Exit::CouldNotRun, e);
    let mut store = Store::open(dir).map_err(|e| could_not(e.to_string()))?;
    if !store
        .lock(LOCK_WAIT)
        .await
        .map_err(|e| could_not(e.to_string()))?
    {
        return Err(could_not(format!(
            "another routewatch run holds the lock in {}; try again",
            dir.display()
        )));
    }
    let mut st = match store.load().map_err(|e| could_not(e.to_string()))? {
        Loaded::Fresh(s) | Loaded::Existing(s) | Loaded::Corrupt { state: s, .. } => s,
    };
    let mut changed = !st.expire_silences(now).is_empty();
    let mut lines = Vec::new();
    match change {
        Some(f) => {
            lines.push(f(&mut st).map_err(|e| (Exit::Usage, e))?);
            changed = true;
        }
        None => {
            for (name, t) in &st.targets {
                if let Some(s) = t.silenced(now) {
                    lines.push(format!("{name}: {}", s.describe()));
                }
            }
            if lines.is_empty() {
                lines.push("no target is silenced".into());
            }
        }
    }
    if changed {
        store.save(&st).map_err(|e| could_not(e.to_string()))?;
    }
    Ok(lines)
}

/// Who runs this: the user behind sudo, else the login name, else the uid.
fn invoking_user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| env(v).filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}
