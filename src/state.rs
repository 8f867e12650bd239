//! The state file: what routewatch remembers across runs (consecutive unhealthy runs, last
//! verdict, recent recovery actions). Written atomically (temp file, fsync, rename) and
//! guarded by an advisory lock so a timer run and an operator run never act twice. A missing
//! file starts fresh; a corrupt one is set aside and replaced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::plan::Action;
use crate::verdict::Verdict;

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";
/// Actions older than this are forgotten (longer than any sensible `window`).
const KEEP_ACTIONS: Duration = Duration::from_secs(7 * 24 * 3600);
/// Action records of a target kept whatever their age (see [`State::record_verdict`]).
const KEEP_NEWEST_ACTIONS: usize = 32;
/// A state file this large is not ours (a few hundred bytes per target): set aside.
const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Consecutive runs that found the target unhealthy (0 after any other verdict).
    pub consecutive_unhealthy: u32,
    pub last_verdict: Option<Verdict>,
    /// Unix seconds of the last run that saw this target.
    pub last_run: Option<u64>,
    /// Recent recovery actions, oldest first. Appended, never merged: each action is one
    /// record from its `pending` write (before the signal) to its outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
    /// Every finished action ever taken, by outcome (`recovered`, `not_recovered`): the
    /// Prometheus counter `routewatch_recoveries_total`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recoveries_total: BTreeMap<String, u64>,
    /// Every refusal to act, by kind (`not_hung`, `cooldown`, …): the Prometheus counter
    /// `routewatch_recovery_refusals_total`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refusals_total: BTreeMap<String, u64>,
    /// What each notification receiver was told about this target, by receiver key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notified: BTreeMap<String, crate::alerts::notify::Mark>,
    /// `routewatch silence`: probed and reported, never recovered nor notified until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Silence>,
}

/// A maintenance silence on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Unix seconds it was set and when it ends.
    pub since: u64,
    pub until: u64,
    /// Who set it (the invoking user).
    pub by: String,
    pub reason: String,
}

impl Silence {
    pub fn active(&self, now: SystemTime) -> bool {
        unix_secs(now) < self.until
    }

    /// `silenced until 2026-05-18T10:30:00Z by alice: deploy`.
    pub fn describe(&self) -> String {
        let until = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(self.until));
        format!("silenced until {until} by {}: {}", self.by, self.reason)
    }
}

impl TargetState {
    /// The silence in force at `now`, if any.
    pub fn silenced(&self, now: SystemTime) -> Option<&Silence> {
        self.silence.as_ref().filter(|s| s.active(now))
    }
}

/// Where a recovery action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Written (and synced) before the signal; being verified.
    Pending,
    Recovered,
    NotRecovered,
    /// The action itself failed (the signal or the D-Bus call).
    Failed,
    /// The run that took it was stopped before it could verify: found `pending` by a later
    /// run. It still counts for cooldown and `max_actions`.
    Interrupted,
}

impl ActionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Pending => "pending",
            ActionOutcome::Recovered => "recovered",
            ActionOutcome::NotRecovered => "not_recovered",
            ActionOutcome::Failed => "failed",
            ActionOutcome::Interrupted => "interrupted",
        }
    }

    /// The `routewatch_recoveries_total` label a finished action counts under.
    pub fn counted_as(self) -> Option<&'static str> {
        match self {
            ActionOutcome::Pending => None,
            ActionOutcome::Recovered => Some("recovered"),
            ActionOutcome::NotRecovered | ActionOutcome::Failed | ActionOutcome::Interrupted => {
                Some("not_recovered")
            }
        }
    }
}

impl std::fmt::Display for ActionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Unix seconds when the action was taken.
    pub at: u64,
    pub unit: String,
    pub action: Action,
    pub pid: Option<u32>,
    pub outcome: ActionOutcome,
    /// What the kernel said when the action was decided, in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

impl State {
    pub fn target_mut(&mut self, name: &str) -> &mut TargetState {
        self.targets.entry(name.to_string()).or_default()
    }

    /// Record a run's verdict for a target: the unhealthy streak grows or resets.
    pub fn record_verdict(&mut self, name: &str, verdict: Verdict, now: SystemTime) {
        self.record(name, verdict, now, true);
    }

    /// Whether any recovery action is remembered: what a crash must never lose.
    pub fn holds_actions(&self) -> bool {
        self.targets.values().any(|t| !t.actions.is_empty())
    }

    /// Append a new action record (never merged into an earlier one).
    pub fn add_action(&mut self, name: &str, rec: ActionRecord) {
        self.target_mut(name).actions.push(rec);
    }

    /// Give this run's pending action on `unit` its outcome, and count it.
    pub fn finish_action(&mut self, name: &str, unit: &str, outcome: ActionOutcome) {
        let t = self.target_mut(name);
        if let Some(a) = t
            .actions
            .iter_mut()
            .rev()
            .find(|a| a.outcome == ActionOutcome::Pending && a.unit == unit)
        {
            a.outcome = outcome;
        }
        if let Some(label) = outcome.counted_as() {
            *t.recoveries_total.entry(label.to_string()).or_default() += 1;
        }
    }

    /// Set right what an earlier run left: a `pending` action (that run was stopped or died
    /// while verifying; only a run holding the lock writes one) becomes `interrupted` and is
    /// counted; an action dated in the future (a clock set back) is taken as now. Returns
    /// one line per thing set right, for the report.
    pub fn settle(&mut self, now: SystemTime) -> Vec<String> {
        let now = unix_secs(now);
        let mut notes = Vec::new();
        for (name, t) in &mut self.targets {
            for a in &mut t.actions {
                // Its time is kept as written: the decisions count a future action as just
                // taken (the cooldown applies), and once the clock is right again it is
                // exactly as old as it is. Rewritten to this run's clock, a clock that was
                // behind for one run would shorten the cooldown for good.
                if a.at > now {
                    notes.push(format!(
                        "target {name}: an action on {} is dated {}s in the future (clock set back?); taken as now",
                        a.unit,
                        a.at - now
                    ));
                }
                if a.outcome == ActionOutcome::Pending {
                    notes.push(format!(
                        "target {name}: the {} of {} (PID {}) by an earlier run was never verified (that run was stopped); recorded as interrupted, it counts for cooldown",
                        a.action.as_str(),
                        a.unit,
                        a.pid.map_or("-".into(), |p| p.to_string())
                    ));
                    a.outcome = ActionOutcome::Interrupted;
                    if let Some(label) = ActionOutcome::Interrupted.counted_as() {
                        *t.recoveries_total.entry(label.to_string()).or_default() += 1;
                    }
                }
            }
        }
        notes
    }

    /// Drop expired silences; returns the targets whose silence ended.
    pub fn expire_silences(&mut self, now: SystemTime) -> Vec<String> {
        let mut ended = Vec::new();
        for (name, t) in &mut self.targets {
            if t.silence.as_ref().is_some_and(|s| !s.active(now)) {
                t.silence = None;
                ended.push(name.clone());
            }
        }
        ended
    }

    /// Forget targets that are no longer probed and were last seen longer ago than the action
    /// history is kept (a target taken out for a while keeps its cooldown history).
    pub fn forget_stale(&mut self, probed: &[&str], now: SystemTime) {
        let horizon = unix_secs(now).saturating_sub(KEEP_ACTIONS.as_secs());
        self.targets.retain(|name, t| {
            probed.contains(&name.as_str()) || t.last_run.is_some_and(|at| at >= horizon)
        });
    }

    /// An unhealthy verdict that proves nothing (every failing core route was cut short by
    /// the run's deadline): remembered, but the streak neither grows nor resets.
    pub fn record_inconclusive(&mut self, name: &str, verdict: Verdict, now: SystemTime) {
        self.record(name, verdict, now, false);
    }

    fn record(&mut self, name: &str, verdict: Verdict, now: SystemTime, conclusive: bool) {
        let t = self.target_mut(name);
        t.consecutive_unhealthy = match (verdict, conclusive) {
            (_, false) => t.consecutive_unhealthy,
            (Verdict::Unhealthy, true) => t.consecutive_unhealthy.saturating_add(1),
            (_, true) => 0,
        };
        t.last_verdict = Some(verdict);
        t.last_run = Some(unix_secs(now));
        // The newest few stay whatever their age: one run with the clock days ahead must not
        // erase the history (and the cooldown) the right clock needs again.
        let horizon = unix_secs(now).saturating_sub(KEEP_ACTIONS.as_secs());
        let newest = t.actions.len().saturating_sub(KEEP_NEWEST_ACTIONS);
        let mut i = 0;
        t.actions.retain(|a| {
            i += 1;
            i > newest || a.at >= horizon
        });
    }
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir}: {what}: {source}")]
    Io {
        dir: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("state directory {dir}: {what}")]
    Unsafe { dir: PathBuf, what: String },
}

impl StateError {
    /// Out of file descriptors (EMFILE/ENFILE): a transient condition worth a short wait.
    pub fn is_fd_exhaustion(&self) -> bool {
        match self {
            StateError::Io { source, .. } => crate::out_of_fds(source),
            _ => false,
        }
    }
}

/// The default state directory: `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else
/// `/var/lib/routewatch` as root, else `$XDG_STATE_HOME/routewatch` (`~/.local/state/routewatch`).
/// Never a guess in a shared place: with no absolute `$XDG_STATE_HOME` or `$HOME` there is no
/// default (another user could prepare a path under `/tmp`).
pub fn default_dir(env: &dyn Fn(&str) -> Option<String>, is_root: bool) -> Result<PathBuf, String> {
    if let Some(d) = env("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd passes a colon-separated list when several are configured.
        return Ok(PathBuf::from(d.split(':').next().unwrap_or(&d)));
    }
    if is_root {
        return Ok(PathBuf::from("/var/lib/routewatch"));
    }
    let absolute = |v: &str| env(v).filter(|d| Path::new(d).is_absolute());
    if let Some(x) = absolute("XDG_STATE_HOME") {
        return Ok(Path::new(&x).join("routewatch"));
    }
    if let Some(home) = absolute("HOME") {
        return Ok(Path::new(&home).join(".local/state/routewatch"));
    }
    Err("no state directory: pass --state-dir, or set $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME (absolute paths)".into())
}

/// An opened state directory.
pub struct Store {
    dir: PathBuf,
    lock: Option<File>,
}

/// What loading found.
pub enum Loaded {
    Fresh(State),
    Existing(State),
    /// The file could not be parsed; a fresh state is used. It was renamed to `set_aside`
    /// (`None`: left in place, since this run does not hold the lock and writes nothing).
    Corrupt {
        state: State,
        set_aside: Option<PathBuf>,
        reason: String,
    },
}

impl Store {
    /// Create (mode 0700) or open the directory. A symlink in place of the directory or of
    /// the state file is refused.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        let io = |what: &'static str| {
            move |source| StateError::Io {
                dir: dir.to_path_buf(),
                what,
                source,
            }
        };
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                // A symlinked directory is acceptable only when it resolves to a directory
                // owned by us; systemd's StateDirectory= with DynamicUser uses such links.
                let target = std::fs::metadata(dir).map_err(io("cannot follow symlink"))?;
                if !target.is_dir() {
                    return Err(StateError::Unsafe {
                        dir: dir.into(),
                        what: "is a symlink to a non-directory".into(),
                    });
                }
            }
            Ok(m) if !m.is_dir() => {
                return Err(StateError::Unsafe {
                    dir: dir.into(),
                    what: "exists and is not a directory".into(),
                });
            }
            Ok(_) => {}
            Err(_) => {
                // Every directory created here is 0700 whatever the umask (the trust check
                // judged what existed above it).
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io("cannot create"))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        if rustix::process::geteuid().is_root() {
            judge_opened_dir(dir)?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            lock: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Take the advisory lock, waiting at most `wait` without blocking the runtime (a stop
    /// signal is heard at once). `Ok(false)` when another run holds it. A lock file that is
    /// not a regular file (a FIFO, a device) is an error, never a hang.
    pub async fn lock(&mut self, wait: Duration) -> Result<bool, StateError> {
        let path = self.dir.join(LOCK_FILE);
        let io = |what: &'static str| {
            let dir = self.dir.clone();
            move |source| StateError::Io { dir, what, source }
        };
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && !m.is_file()
        {
            return Err(StateError::Unsafe {
                dir: self.dir.clone(),
                what: format!(
                    "{LOCK_FILE} is a {}, not a regular file",
                    crate::trust::describe(m.file_type())
                ),
            });
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(&path)
            .map_err(io("cannot open the lock file"))?;
        let kind = file
            .metadata()
            .map_err(io("cannot stat the lock file"))?
            .file_type();
        if !kind.is_file() {
            return Err(StateError::Unsafe {
                dir: self.dir.clone(),
                what: format!(
                    "{LOCK_FILE} is a {}, not a regular file",
                    crate::trust::describe(kind)
                ),
            });
        }
        let start = tokio::time::Instant::now();
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    self.lock = Some(file);
                    self.remove_stale_temp_files();
                    return Ok(true);
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    if start.elapsed() >= wait {
                        return Ok(false);
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => return Err(io("cannot lock")(e.into())),
            }
        }
    }

    /// Temp files of a run that was killed mid-write (`.state.json.tmp-*`): only a run
    /// holding the lock writes one, so with the lock held they are all stale.
    fn remove_stale_temp_files(&self) {
        let prefix = format!(".{STATE_FILE}.tmp-");
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let stale = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
                && e.file_type().is_ok_and(|t| t.is_file());
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    pub fn load(&self) -> Result<Loaded, StateError> {
        let path = self.path();
        let parsed = match read_file(&path) {
            Ok(None) => return Ok(Loaded::Fresh(fresh())),
            Ok(Some(parsed)) => parsed,
            Err(source) => {
                return Err(StateError::Io {
                    dir: self.dir.clone(),
                    what: "cannot read state.json",
                    source,
                });
            }
        };
        match parsed {
            Ok(s) => Ok(Loaded::Existing(s)),
            Err(reason) => {
                // Only the run that holds the lock (and so writes the replacement) moves it.
                let set_aside = match self.lock {
                    Some(_) => Some(set_aside_corrupt(&self.dir, &path).map_err(|source| {
                        StateError::Io {
                            dir: self.dir.clone(),
                            what: "cannot set aside the corrupt state.json",
                            source,
                        }
                    })?),
                    None => None,
                };
                Ok(Loaded::Corrupt {
                    state: fresh(),
                    set_aside,
                    reason,
                })
            }
        }
    }

    /// Write atomically: a new temp file in the same directory, fsync, rename, fsync the dir.
    ///
    /// The fsyncs guard the action history (cooldown, `max_actions`): with none recorded, a
    /// crash could at worst cost a streak count, so the write skips them (they are most of a
    /// run's fixed cost on a slow disk).
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        // Compact: a few dozen bytes per target, far under the read limit for any probe file.
        let data = serde_json::to_vec(state).expect("state serialises");
        if data.len() as u64 > MAX_STATE_BYTES {
            // Never write what the next run would set aside unread (losing all history).
            return Err(StateError::Unsafe {
                dir: self.dir.clone(),
                what: format!(
                    "state.json would be {} bytes, over its {MAX_STATE_BYTES}-byte limit; not written",
                    data.len()
                ),
            });
        }
        write_file(&self.path(), &data, state.holds_actions(), false).map_err(|source| {
            StateError::Io {
                dir: self.dir.clone(),
                what: "cannot write state.json",
                source,
            }
        })
    }
}

/// As root, the directory as it is now, after it was found or created: the trust check
/// judged the path before, but under a sticky parent (/tmp) another user could have created
/// the directory, a missing parent of it, or a link in its place, in between (`mkdir -p`
/// takes what it finds). The whole path is judged again ([`crate::trust::state_dir_problem`]:
/// every directory and link root's and not writable by others, the directory itself writable
/// by root alone). Once it passes, nobody else can add, rename or replace anything on the
/// way, so what is in it is root's own.
fn judge_opened_dir(dir: &Path) -> Result<(), StateError> {
    match crate::trust::state_dir_problem(dir) {
        Some(what) => Err(StateError::Unsafe {
            dir: dir.to_path_buf(),
            what,
        }),
        None => Ok(()),
    }
}

/// Rename a corrupt state file to `state.json.corrupt-<time>[.<n>]`, never replacing an
/// earlier one (it is evidence).
fn set_aside_corrupt(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let stem = format!("{STATE_FILE}.corrupt-{}", unix_secs(SystemTime::now()));
    for n in 0..1000 {
        let name = if n == 0 {
            stem.clone()
        } else {
            format!("{stem}.{n}")
        };
        let target = dir.join(&name);
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            path,
            rustix::fs::CWD,
            &target,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(target),
            Err(e) if e == rustix::io::Errno::EXIST => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other("too many set-aside state files"))
}

fn fresh() -> State {
    State {
        version: 1,
        targets: BTreeMap::new(),
    }
}

/// Read and parse a state file: `Ok(None)` when there is none, `Ok(Some(Err(reason)))` when
/// it is not usable state (the reason quotes none of its content). Never follows a symlink,
/// never blocks on a FIFO, never reads more than [`MAX_STATE_BYTES`].
pub fn read_file(path: &Path) -> std::io::Result<Option<Result<State, String>>> {
    let file = match crate::trust::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (bytes, over) = crate::trust::read_limited(&file, MAX_STATE_BYTES)?;
    if over {
        return Ok(Some(Err(format!("larger than {MAX_STATE_BYTES} bytes"))));
    }
    Ok(Some(match serde_json::from_slice::<State>(&bytes) {
        Ok(s) if s.version == 1 => Ok(s),
        Ok(s) => Err(format!(
            "unknown version {} (this routewatch writes 1)",
            s.version
        )),
        Err(e) => Err(format!(
            "{} at line {} column {}",
            match e.classify() {
                serde_json::error::Category::Data => "not the state format",
                serde_json::error::Category::Eof => "cut short",
                _ => "not valid JSON",
            },
            e.line(),
            e.column()
        )),
    }))
}

/// Replace `path` with `data` so a reader sees the old or the new file, never half of one.
/// An existing symlink at `path` is refused, not followed.
/// It is a report for others to read (a Prometheus textfile collector, CI): mode 0644 whatever
/// the umask (the shipped unit's is 0077, for the state). Temp files a killed run left for
/// the same path (`.NAME.tmp-PID-*` of a PID that no longer runs) are removed first.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        remove_dead_temps(replaceable(path)?, name);
    }
    write_file(path, data, true, true)
}

/// Remove `dir/.NAME.tmp-PID-*` left by a run that was killed between writing and renaming:
/// only regular files of ours, and only of a PID that no longer runs (a run writing the same
/// path right now keeps its own).
fn remove_dead_temps(dir: &Path, name: &str) {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dead = !Path::new(&format!("/proc/{pid}")).exists();
        let ours = e
            .metadata()
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == me);
        if dead && ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether [`write_atomic`] can replace `path`: its directory exists, and `path` is missing
/// or a regular file (never a symlink, a directory, a FIFO or a device node: `--output
/// /dev/null` must not replace the system's `/dev/null`). Returns the directory. Checked
/// again at every write. A path that can never be written is `InvalidInput`.
pub fn replaceable(path: &Path) -> std::io::Result<&Path> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(invalid(format!("{} is not a directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "the directory {} does not exist",
                dir.display()
            )));
        }
        Err(e) => return Err(e),
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(invalid(format!(
            "{} is a symlink; refusing to replace it",
            path.display()
        ))),
        Ok(m) if !m.is_file() => Err(invalid(format!(
            "{} is a {}; only a regular file is replaced",
            path.display(),
            crate::trust::describe(m.file_type())
        ))),
        _ => Ok(dir),
    }
}

/// [`write_atomic`], with the fsyncs (file, then directory) only when `durable`, and mode 0644
/// whatever the umask when `readable`.
fn write_file(path: &Path, data: &[u8], durable: bool, readable: bool) -> std::io::Result<()> {
    let dir = replaceable(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        if readable {
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable && let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streak_grows_on_unhealthy_and_resets_otherwise() {
        let mut s = fresh();
        let now = SystemTime::now();
        s.record_verdict("api", Verdict::Unhealthy, now);
        s.record_verdict("api", Verdict::Unhealthy, now);
        assert_eq!(s.targets["api"].consecutive_unhealthy, 2);
        // Cut short by run_timeout: remembered, the streak left as it was.
        s.record_inconclusive("api", Verdict::Unhealthy, now);
        assert_eq!(s.targets["api"].consecutive_unhealthy, 2);
        s.record_verdict("api", Verdict::Unknown, now);
        assert_eq!(s.targets["api"].consecutive_unhealthy, 0);
        assert_eq!(s.targets["api"].last_verdict, Some(Verdict::Unknown));
    }

    #[test]
    fn only_a_state_with_actions_is_written_durably() {
        let mut s = fresh();
        s.record_verdict("api", Verdict::Unhealthy, SystemTime::now());
        assert!(!s.holds_actions());
        s.target_mut("api").actions.push(ActionRecord {
            at: unix_secs(SystemTime::now()),
            unit: "api.service".into(),
            action: Action::Kill,
            pid: Some(42),
            outcome: ActionOutcome::Recovered,
            evidence: None,
        });
        assert!(s.holds_actions());
    }

    #[test]
    fn targets_gone_from_the_probe_file_are_forgotten_after_a_week() {
        let mut s = fresh();
        let now = SystemTime::now();
        let long_ago = now - KEEP_ACTIONS - Duration::from_secs(60);
        s.record_verdict("old", Verdict::Healthy, long_ago);
        s.record_verdict("recent", Verdict::Healthy, now);
        s.record_verdict("probed", Verdict::Healthy, long_ago);
        s.forget_stale(&["probed"], now);
        let names: Vec<&str> = s.targets.keys().map(String::as_str).collect();
        assert_eq!(names, ["probed", "recent"]);
    }

    /// As root the directory is judged as found or created: one that another user could
    /// fill (sticky and world-writable, say created by them under /tmp in the meantime) is
    /// refused. Not as another user: their own directory is theirs to keep.
    #[test]
    fn as_root_a_state_directory_others_can_fill_is_refused_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let fine = dir.path().join("fine");
        if rustix::process::geteuid().is_root() {
            for d in [&open, &link] {
                match Store::open(d) {
                    Err(StateError::Unsafe { what, .. }) => {
                        assert!(what.contains("even sticky"), "{what}")
                    }
                    other => panic!("{} taken: {:?}", d.display(), other.err()),
                }
            }
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            rustix::fs::chown(&theirs, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
            assert!(matches!(
                Store::open(&theirs),
                Err(StateError::Unsafe { what, .. }) if what.contains("uid 65534")
            ));
            // A missing parent someone else created first: the directory made in it is
            // root's, but whoever owns the parent could swap it for one of theirs.
            let below = theirs.join("state");
            assert!(matches!(
                Store::open(&below),
                Err(StateError::Unsafe { what, .. }) if what.contains("uid 65534")
            ));
        } else {
            assert!(Store::open(&open).is_ok());
        }
        assert!(Store::open(&fine).is_ok(), "created 0700, root's own");
    }

    #[tokio::test]
    async fn an_oversized_state_file_is_set_aside_unread() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("st")).unwrap();
        assert!(store.lock(Duration::ZERO).await.unwrap());
        let f = std::fs::File::create(store.path()).unwrap();
        f.set_len(MAX_STATE_BYTES + 10).unwrap();
        match store.load().unwrap() {
            Loaded::Corrupt { reason, .. } => assert!(reason.contains("larger than"), "{reason}"),
            _ => panic!("an oversized file is not state"),
        }
        assert!(!store.path().exists());
    }

    #[tokio::test]
    async fn save_load_round_trip_and_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("st")).unwrap();
        assert!(matches!(store.load().unwrap(), Loaded::Fresh(_)));
        let mut s = fresh();
        s.record_verdict("api", Verdict::Unhealthy, SystemTime::now());
        store.save(&s).unwrap();
        match store.load().unwrap() {
            Loaded::Existing(back) => assert_eq!(back, s),
            _ => panic!("expected the saved state"),
        }
        std::fs::write(store.path(), b"{\"version\":1,\"targ").unwrap();
        // A run without the lock writes nothing, so it moves nothing either.
        match store.load().unwrap() {
            Loaded::Corrupt {
                state, set_aside, ..
            } => {
                assert!(state.targets.is_empty());
                assert_eq!(set_aside, None);
                assert!(store.path().exists(), "left in place");
            }
            _ => panic!("expected corrupt"),
        }
        assert!(store.lock(Duration::ZERO).await.unwrap());
        match store.load().unwrap() {
            Loaded::Corrupt {
                state, set_aside, ..
            } => {
                assert!(state.targets.is_empty());
                let set_aside = set_aside.expect("moved by the lock holder");
                assert_eq!(std::fs::read(&set_aside).unwrap(), b"{\"version\":1,\"targ");
                assert!(!store.path().exists());
            }
            _ => panic!("expected corrupt"),
        }
    }

    /// A report is for others to read, and what a killed run left for the same path is
    /// cleared; a temp file of a run still writing it is not.
    #[test]
    fn a_report_is_readable_and_a_killed_runs_temp_file_is_removed() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("routewatch.prom");
        let dead = dir.path().join(".routewatch.prom.tmp-999999999-1");
        let alive = dir
            .path()
            .join(format!(".routewatch.prom.tmp-{}-2", std::process::id()));
        let other = dir.path().join(".other.prom.tmp-999999999-3");
        for f in [&dead, &alive, &other] {
            std::fs::write(f, b"half").unwrap();
        }
        // (Under a umask of 0077 too: the process-wide umask is not changed in a threaded
        // test; `tests/integration/ecosystem.rs` runs the binary under one.)
        write_atomic(&out, b"x 1\n").unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o644);
        assert!(!dead.exists(), "a dead run's temp file is removed");
        assert!(alive.exists() && other.exists(), "nothing else is");
    }

    #[test]
    fn a_symlink_at_the_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("out.prom");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write_atomic(&link, b"x").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[tokio::test(start_paused = true)]
    async fn the_lock_is_exclusive_between_stores_and_waits_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Store::open(dir.path()).unwrap();
        let mut b = Store::open(dir.path()).unwrap();
        assert!(a.lock(Duration::ZERO).await.unwrap());
        // The wait is on tokio's clock (paused here): a blocking sleep would not advance it,
        // and a stop signal could not be heard during it.
        let before = tokio::time::Instant::now();
        assert!(!b.lock(Duration::from_secs(30)).await.unwrap());
        assert!(tokio::time::Instant::now() - before >= Duration::from_secs(30));
        drop(a);
        assert!(b.lock(Duration::ZERO).await.unwrap());
    }

    #[tokio::test]
    async fn a_fifo_in_place_of_the_lock_or_the_state_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mkfifo = |p: &Path| {
            let ok = std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap();
            assert!(ok.success());
        };
        mkfifo(&dir.path().join(LOCK_FILE));
        let mut store = Store::open(dir.path()).unwrap();
        let e = store.lock(Duration::ZERO).await.err().unwrap().to_string();
        assert!(e.contains("FIFO"), "{e}");
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        mkfifo(&store.path());
        let e = store.load().err().unwrap().to_string();
        assert!(e.contains("FIFO"), "{e}");
    }

    #[tokio::test]
    async fn temp_files_of_a_killed_run_are_removed_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".state.json.tmp-123-456");
        std::fs::write(&stale, b"half").unwrap();
        let keep = dir.path().join("other.tmp");
        std::fs::write(&keep, b"mine").unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(store.lock(Duration::ZERO).await.unwrap());
        assert!(!stale.exists());
        assert!(keep.exists());
    }

    #[test]
    fn stale_pending_records_are_settled_and_future_ones_taken_as_now() {
        let now = SystemTime::now();
        let t = unix_secs(now);
        let mut s = fresh();
        let rec = |at, outcome| ActionRecord {
            at,
            unit: "api.service".into(),
            action: Action::Kill,
            pid: Some(7),
            outcome,
            evidence: None,
        };
        s.add_action("api", rec(t - 5, ActionOutcome::Pending));
        s.add_action("api", rec(t + 3600, ActionOutcome::Recovered));
        let notes = s.settle(now);
        assert_eq!(notes.len(), 2, "{notes:?}");
        let a = &s.targets["api"].actions;
        assert_eq!(a[0].outcome, ActionOutcome::Interrupted);
        assert_eq!(a[0].at, t - 5, "its time is kept: it counts for cooldown");
        assert_eq!(
            a[1].at,
            t + 3600,
            "a future time is kept as written (decisions count it as now)"
        );
        assert_eq!(s.targets["api"].recoveries_total["not_recovered"], 1);
        // A new action is its own record; finishing it never touches the settled one.
        s.add_action("api", rec(t, ActionOutcome::Pending));
        s.finish_action("api", "api.service", ActionOutcome::Recovered);
        let a = &s.targets["api"].actions;
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].outcome, ActionOutcome::Interrupted);
        assert_eq!(a[2].outcome, ActionOutcome::Recovered);
    }

    /// A clock set back for one run, then right again: the action is exactly as old as it
    /// is, so the cooldown holds. A clock days ahead for one run keeps the newest records.
    #[test]
    fn one_run_with_a_wrong_clock_never_shortens_the_history() {
        let real = SystemTime::now();
        let t = unix_secs(real);
        let mut s = fresh();
        s.add_action(
            "api",
            ActionRecord {
                at: t - 60,
                unit: "api.service".into(),
                action: Action::Kill,
                pid: Some(7),
                outcome: ActionOutcome::Recovered,
                evidence: None,
            },
        );
        let behind = real - Duration::from_secs(3600);
        assert_eq!(s.settle(behind).len(), 1, "warned");
        s.record_verdict("api", Verdict::Unhealthy, behind);
        assert_eq!(s.targets["api"].actions[0].at, t - 60);
        let ahead = real + Duration::from_secs(8 * 24 * 3600);
        s.settle(ahead);
        s.record_verdict("api", Verdict::Unhealthy, ahead);
        assert_eq!(
            s.targets["api"].actions.len(),
            1,
            "kept: it is among the newest"
        );
        assert_eq!(s.targets["api"].actions[0].at, t - 60);
        // Beyond the newest few, age still prunes.
        for n in 0..40 {
            s.add_action(
                "api",
                ActionRecord {
                    at: t - 30 + n,
                    ..s.targets["api"].actions[0].clone()
                },
            );
        }
        s.record_verdict("api", Verdict::Unhealthy, ahead);
        let kept = &s.targets["api"].actions;
        assert_eq!(kept.len(), KEEP_NEWEST_ACTIONS);
        assert_eq!(kept.last().unwrap().at, t + 9, "the newest stay");
    }

    #[test]
    fn the_state_is_compact_and_never_written_over_its_read_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = fresh();
        let now = SystemTime::now();
        for i in 0..20_000 {
            s.record_verdict(&format!("target-{i:05}"), Verdict::Healthy, now);
        }
        store.save(&s).unwrap();
        let size = std::fs::metadata(store.path()).unwrap().len();
        assert!(size < 2 * 1024 * 1024, "20 000 targets in {size} bytes");
        let long = "n".repeat(1000);
        for i in 0..17_000 {
            s.record_verdict(&format!("{long}-{i:05}"), Verdict::Healthy, now);
        }
        let e = store.save(&s).unwrap_err().to_string();
        assert!(e.contains("not written"), "{e}");
        assert_eq!(
            std::fs::metadata(store.path()).unwrap().len(),
            size,
            "old file kept"
        );
    }

    #[test]
    fn output_replaces_only_a_regular_file_or_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(replaceable(&dir.path().join("new.json")).is_ok());
        std::fs::write(dir.path().join("old.json"), b"x").unwrap();
        assert!(replaceable(&dir.path().join("old.json")).is_ok());
        let e = replaceable(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("character device"), "{e}");
        let e = replaceable(&dir.path().join("nowhere/x")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(replaceable(dir.path()).is_err(), "a directory");
    }

    #[test]
    fn a_bad_state_file_is_described_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, br#"{"version":1,"targets":"root:x:0:0:secret"}"#).unwrap();
        let why = read_file(&p).unwrap().unwrap().unwrap_err();
        assert!(!why.contains("secret"), "{why}");
        assert!(why.contains("line 1"), "{why}");
    }

    #[test]
    fn default_dir_prefers_systemd_then_root_then_xdg() {
        let env = |k: &str| match k {
            "STATE_DIRECTORY" => Some("/var/lib/rw:/other".to_string()),
            "XDG_STATE_HOME" => Some("/home/u/.state".to_string()),
            _ => None,
        };
        assert_eq!(default_dir(&env, false), Ok(PathBuf::from("/var/lib/rw")));
        let env = |k: &str| (k == "XDG_STATE_HOME").then(|| "/home/u/.state".to_string());
        assert_eq!(
            default_dir(&env, true),
            Ok(PathBuf::from("/var/lib/routewatch"))
        );
        assert_eq!(
            default_dir(&env, false),
            Ok(PathBuf::from("/home/u/.state/routewatch"))
        );
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        assert_eq!(
            default_dir(&env, false),
            Ok(PathBuf::from("/home/u/.local/state/routewatch"))
        );
    }

    #[test]
    fn no_home_is_no_default_never_a_shared_directory() {
        assert!(default_dir(&|_| None, false).is_err());
        let relative = |k: &str| (k == "HOME" || k == "XDG_STATE_HOME").then(|| "rel".to_string());
        assert!(default_dir(&relative, false).is_err());
    }
}
