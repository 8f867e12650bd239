//! systemd over the system D-Bus (zbus) and the kill itself (pidfd). The only module that
//! talks to systemd or signals a process. `DBUS_SYSTEM_BUS_ADDRESS` is honoured.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zbus::OwnedObjectPath;
use zbus::proxy::CacheProperties;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// Microseconds since the epoch (CLOCK_REALTIME); 0 when never active.
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
    #[zbus(property, name = "InvocationID")]
    fn invocation_id(&self) -> zbus::Result<Vec<u8>>;
    #[zbus(property, name = "StartLimitIntervalUSec")]
    fn start_limit_interval_usec(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn start_limit_burst(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Timer",
    default_service = "org.freedesktop.systemd1"
)]
trait Timer {
    /// The unit the timer starts.
    #[zbus(property)]
    fn unit(&self) -> zbus::Result<String>;
    /// `(base, spec, next elapse)` per `OnCalendar=`.
    #[zbus(property)]
    fn timers_calendar(&self) -> zbus::Result<Vec<(String, String, u64)>>;
    /// `(base, µs, next elapse)` per `OnBootSec=`, `OnUnitActiveSec=`, …
    #[zbus(property)]
    fn timers_monotonic(&self) -> zbus::Result<Vec<(String, u64, u64)>>;
    /// The next `OnCalendar=` elapse (CLOCK_REALTIME µs; 0 or max when none).
    #[zbus(property, name = "NextElapseUSecRealtime")]
    fn next_elapse_usec_realtime(&self) -> zbus::Result<u64>;
    /// The next monotonic elapse (CLOCK_MONOTONIC µs; 0 or max when none).
    #[zbus(property, name = "NextElapseUSecMonotonic")]
    fn next_elapse_usec_monotonic(&self) -> zbus::Result<u64>;
    #[zbus(property, name = "LastTriggerUSec")]
    fn last_trigger_usec(&self) -> zbus::Result<u64>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn restart(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn control_group(&self) -> zbus::Result<String>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn capability_bounding_set(&self) -> zbus::Result<u64>;
}

/// An enum for one of systemd's state words: the ones routewatch decides on by name, and
/// any other word kept as it came (shown in reasons, never matched).
macro_rules! unit_word {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $word,)+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                match s {
                    $($word => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name::from(s.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

unit_word!(
    /// `LoadState`.
    LoadState {
        Loaded = "loaded",
        NotFound = "not-found",
        BadSetting = "bad-setting",
        Error = "error",
        Masked = "masked",
    }
);

unit_word!(
    /// `ActiveState`.
    ActiveState {
        Active = "active",
        Reloading = "reloading",
        Inactive = "inactive",
        Failed = "failed",
        Activating = "activating",
        Deactivating = "deactivating",
    }
);

unit_word!(
    /// `SubState` of a service (only `running` is decided on).
    SubState {
        Running = "running",
        Dead = "dead",
        AutoRestart = "auto-restart",
    }
);

unit_word!(
    /// `Restart=`.
    RestartPolicy {
        No = "no",
        Always = "always",
        OnSuccess = "on-success",
        OnFailure = "on-failure",
        OnAbnormal = "on-abnormal",
        OnAbort = "on-abort",
        OnWatchdog = "on-watchdog",
    }
);

/// What systemd says about a unit, read fresh (never from a property cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFacts {
    pub unit: String,
    pub load_state: LoadState,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    pub active_enter: Option<SystemTime>,
    /// Hex; empty when the unit has never run.
    pub invocation_id: String,
    pub main_pid: u32,
    /// `Restart=` (no, always, on-failure, …); `Other("")` until read.
    pub restart: RestartPolicy,
    pub control_group: String,
    pub n_restarts: u32,
    /// `StartLimitIntervalSec=` and `StartLimitBurst=`; `None` when the limit is off.
    pub start_limit: Option<StartLimit>,
}

/// systemd's start rate limit of a unit: more than `burst` starts within `interval` and
/// systemd refuses the next one, leaving the unit `failed` (`start-limit-hit`). Every start
/// counts, the automatic restart after a kill and a `RestartUnit` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    pub burst: u32,
    pub interval: Duration,
}

impl StartLimit {
    /// From the unit's properties: systemd turns the limit off when either is 0.
    pub fn from_properties(interval_usec: u64, burst: u32) -> Option<StartLimit> {
        (interval_usec > 0 && burst > 0).then(|| StartLimit {
            burst,
            interval: Duration::from_micros(interval_usec),
        })
    }
}

impl UnitFacts {
    /// Whether systemd restarts the unit after its main process dies of SIGKILL.
    pub fn restarts_after_kill(&self) -> bool {
        matches!(
            self.restart,
            RestartPolicy::Always
                | RestartPolicy::OnFailure
                | RestartPolicy::OnAbnormal
                | RestartPolicy::OnAbort
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(
        "cannot connect to the system D-Bus ({address}): {reason} (is dbus running? run as root, or see README \"Permissions\")"
    )]
    Connect { address: String, reason: String },
    #[error(
        "unit {unit:?}: access denied over D-Bus: {reason} (run as root, or see README \"Permissions\")"
    )]
    AccessDenied { unit: String, reason: String },
    #[error("unit {unit:?}: D-Bus call failed: {reason}")]
    Call { unit: String, reason: String },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deadline of one D-Bus call.
const METHOD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Systemd {
    conn: zbus::Connection,
}

impl Systemd {
    /// Connect to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else the default socket).
    pub async fn connect() -> Result<Systemd, SystemdError> {
        let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .unwrap_or_else(|_| "unix:path=/var/run/dbus/system_bus_socket".into());
        // A systemd that accepts but never answers must not hang the run (and hold the
        // state lock): every call gets a deadline too.
        let connect = async {
            zbus::connection::Builder::system()
                .method_timeout(METHOD_TIMEOUT)
                .build()
                .await
        };
        let conn = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| SystemdError::Connect {
                address: address.clone(),
                reason: "timed out after 5s".into(),
            })?
            .map_err(|e| SystemdError::Connect {
                address,
                reason: e.to_string(),
            })?;
        Ok(Systemd { conn })
    }

    fn call_error(unit: &str, e: zbus::Error) -> SystemdError {
        let text = e.to_string();
        // zbus maps the standard org.freedesktop.DBus.Error.* names to `Error::FDO`.
        let denied = match &e {
            zbus::Error::FDO(f) => matches!(
                **f,
                zbus::fdo::Error::AccessDenied(_)
                    | zbus::fdo::Error::InteractiveAuthorizationRequired(_)
                    | zbus::fdo::Error::AuthFailed(_)
            ),
            zbus::Error::MethodError(name, _, _) => {
                name.as_str().ends_with("AccessDenied")
                    || name.as_str().ends_with("InteractiveAuthorizationRequired")
            }
            _ => false,
        };
        if denied {
            SystemdError::AccessDenied {
                unit: unit.into(),
                reason: text,
            }
        } else {
            SystemdError::Call {
                unit: unit.into(),
                reason: text,
            }
        }
    }

    /// Read the unit's facts. `LoadUnit` never fails for a missing unit: it reports
    /// `LoadState=not-found`, which the decision refuses.
    pub async fn facts(&self, unit: &str) -> Result<UnitFacts, SystemdError> {
        let err = |e| Self::call_error(unit, e);
        let manager = ManagerProxy::new(&self.conn).await.map_err(err)?;
        let path = manager.load_unit(unit).await.map_err(err)?;
        let u = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        let load_state = u.load_state().await.map_err(err)?;
        let active_state = u.active_state().await.map_err(err)?;
        let sub_state = u.sub_state().await.map_err(err)?;
        let enter = u.active_enter_timestamp().await.map_err(err)?;
        let invocation_id = u
            .invocation_id()
            .await
            .map_err(err)?
            .iter()
            .as_slice()
            .to_vec();
        let invocation_id = hex(&invocation_id);
        let start_limit = StartLimit::from_properties(
            u.start_limit_interval_usec().await.map_err(err)?,
            u.start_limit_burst().await.map_err(err)?,
        );
        let mut facts = UnitFacts {
            unit: unit.into(),
            load_state: load_state.into(),
            active_state: active_state.into(),
            sub_state: sub_state.into(),
            active_enter: (enter > 0).then(|| UNIX_EPOCH + Duration::from_micros(enter)),
            invocation_id,
            main_pid: 0,
            restart: RestartPolicy::Other(String::new()),
            control_group: String::new(),
            n_restarts: 0,
            start_limit,
        };
        if facts.load_state == LoadState::Loaded {
            let s = ServiceProxy::builder(&self.conn)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .map_err(err)?;
            facts.main_pid = s.main_pid().await.map_err(err)?;
            facts.restart = s.restart().await.map_err(err)?.into();
            facts.control_group = s.control_group().await.map_err(err)?;
            facts.n_restarts = s.n_restarts().await.map_err(err)?;
        }
        Ok(facts)
    }

    /// Whether this process is in the PID namespace of the bus (and so of the systemd that
    /// started it): the bus daemon reports the PID it sees for our connection, which the
    /// kernel translates into its own namespace; only in the same namespace is it our own.
    /// In another one (routewatch in a container with the host's bus socket), a `MainPID`
    /// number names some other process here.
    pub async fn pid_as_the_bus_sees_us(&self) -> Result<Option<u32>, SystemdError> {
        let err = |e: zbus::Error| SystemdError::Call {
            unit: String::new(),
            reason: e.to_string(),
        };
        let me = self
            .conn
            .unique_name()
            .ok_or_else(|| err(zbus::Error::Failure("no unique name on the bus".into())))?
            .clone();
        let dbus = zbus::fdo::DBusProxy::new(&self.conn).await.map_err(err)?;
        let creds = dbus
            .get_connection_credentials(me.into())
            .await
            .map_err(|e| err(e.into()))?;
        Ok(creds.process_id())
    }

    /// `RestartUnit(unit, "replace")`; returns the job path.
    pub async fn restart(&self, unit: &str) -> Result<String, SystemdError> {
        let err = |e| Self::call_error(unit, e);
        let manager = ManagerProxy::new(&self.conn).await.map_err(err)?;
        let job = manager.restart_unit(unit, "replace").await.map_err(err)?;
        Ok(job.to_string())
    }
}

/// What systemd says about the unit that runs routewatch (the timer, or the service it
/// starts): what `routewatch doctor` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub unit: String,
    pub load_state: LoadState,
    pub active_state: ActiveState,
    /// `UnitFileState` (enabled, enabled-runtime, disabled, static, …).
    pub unit_file_state: String,
    /// The file on disk changed since systemd loaded it (`daemon-reload` missing).
    pub need_daemon_reload: bool,
}

/// A timer's loaded schedule and its last and next elapse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerFacts {
    pub scheduled: Scheduled,
    /// The service it starts.
    pub starts: String,
    /// As unit-file lines: `OnCalendar=*:0/15`, `OnUnitActiveSec=15min`, …
    pub schedule: Vec<String>,
    pub last_trigger: Option<SystemTime>,
    pub next_elapse: Option<SystemTime>,
}

/// The service routewatch runs as: how its last run ended and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    pub scheduled: Scheduled,
    /// `Result` of the last run (success, exit-code, signal, timeout, …).
    pub result: String,
    pub exec_main_status: i32,
    pub capability_bounding_set: u64,
}

fn realtime(usec: u64) -> Option<SystemTime> {
    (usec > 0 && usec != u64::MAX).then(|| UNIX_EPOCH + Duration::from_micros(usec))
}

/// `OnUnitActiveUSec` → `OnUnitActiveSec`: the property names systemd uses for the
/// monotonic settings, back to the words of the unit file.
pub fn monotonic_setting(base: &str, usec: u64) -> String {
    let key = base
        .strip_suffix("USec")
        .map_or_else(|| base.to_string(), |k| format!("{k}Sec"));
    format!(
        "{key}={}",
        humantime::format_duration(Duration::from_secs(usec / 1_000_000))
    )
}

impl Systemd {
    async fn scheduled(&self, unit: &str) -> Result<(Scheduled, OwnedObjectPath), SystemdError> {
        let err = |e| Self::call_error(unit, e);
        let manager = ManagerProxy::new(&self.conn).await.map_err(err)?;
        let path = manager.load_unit(unit).await.map_err(err)?;
        let u = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        Ok((
            Scheduled {
                unit: unit.into(),
                load_state: u.load_state().await.map_err(err)?.into(),
                active_state: u.active_state().await.map_err(err)?.into(),
                unit_file_state: u.unit_file_state().await.map_err(err)?,
                need_daemon_reload: u.need_daemon_reload().await.map_err(err)?,
            },
            path,
        ))
    }

    /// The timer's facts (only its unit's when it is not loaded).
    pub async fn timer(&self, unit: &str) -> Result<TimerFacts, SystemdError> {
        let err = |e| Self::call_error(unit, e);
        let (scheduled, path) = self.scheduled(unit).await?;
        let mut facts = TimerFacts {
            starts: String::new(),
            schedule: Vec::new(),
            last_trigger: None,
            next_elapse: None,
            scheduled,
        };
        if facts.scheduled.load_state != LoadState::Loaded {
            return Ok(facts);
        }
        let t = TimerProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        facts.starts = t.unit().await.map_err(err)?;
        for (base, spec, _) in t.timers_calendar().await.map_err(err)? {
            facts.schedule.push(format!("{base}={spec}"));
        }
        for (base, usec, _) in t.timers_monotonic().await.map_err(err)? {
            facts.schedule.push(monotonic_setting(&base, usec));
        }
        facts.last_trigger = realtime(t.last_trigger_usec().await.map_err(err)?);
        let calendar = realtime(t.next_elapse_usec_realtime().await.map_err(err)?);
        let monotonic = t.next_elapse_usec_monotonic().await.map_err(err)?;
        let monotonic = (monotonic > 0 && monotonic != u64::MAX).then(|| {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
            SystemTime::now() + Duration::from_micros(monotonic).saturating_sub(now)
        });
        facts.next_elapse = match (calendar, monotonic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(facts)
    }

    /// The service's facts (only its unit's when it is not loaded).
    pub async fn service(&self, unit: &str) -> Result<ServiceFacts, SystemdError> {
        let err = |e| Self::call_error(unit, e);
        let (scheduled, path) = self.scheduled(unit).await?;
        let mut facts = ServiceFacts {
            scheduled,
            result: String::new(),
            exec_main_status: 0,
            capability_bounding_set: 0,
        };
        if facts.scheduled.load_state != LoadState::Loaded {
            return Ok(facts);
        }
        let s = ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        facts.result = s.result().await.map_err(err)?;
        facts.exec_main_status = s.exec_main_status().await.map_err(err)?;
        facts.capability_bounding_set = s.capability_bounding_set().await.map_err(err)?;
        Ok(facts)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("pidfd_open({pid}) failed: {source} (the process is gone, or CAP_KILL is missing)")]
    Open { pid: u32, source: std::io::Error },
    #[error(
        "PID {pid} is no longer in the unit's cgroup {expected:?} (it is in {found:?}); not signalling it"
    )]
    WrongCgroup {
        pid: u32,
        expected: String,
        found: String,
    },
    #[error("MainPID changed from {was} to {now} before the kill; not signalling")]
    PidChanged { was: u32, now: u32 },
    #[error(
        "routewatch is not in the PID namespace of systemd's bus (the bus sees it as PID {seen}, it is PID {} here), so MainPID {pid} would name another process here (run routewatch beside systemd, not in a container); not signalling",
        std::process::id()
    )]
    OtherPidNamespace { pid: u32, seen: u32 },
    #[error("pidfd_send_signal({signal}) to PID {pid} failed: {source}")]
    Signal {
        pid: u32,
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Facts(#[from] SystemdError),
}

impl KillError {
    /// A safety check said no at the last moment: nothing was signalled.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            KillError::WrongCgroup { .. }
                | KillError::PidChanged { .. }
                | KillError::OtherPidNamespace { .. }
        )
    }
}

/// The unified-hierarchy cgroup of a process (`0::/system.slice/app.service`), from
/// `/proc/<pid>/cgroup`.
pub fn process_cgroup(pid: u32) -> std::io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(parse_unified_cgroup(&text).unwrap_or_default())
}

/// The `0::` line of a `/proc/<pid>/cgroup` file. Pure.
pub fn parse_unified_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

/// Whether a process cgroup path is the unit's cgroup or below it. Pure.
pub fn cgroup_within(process: &str, unit: &str) -> bool {
    !unit.is_empty()
        && (process == unit
            || process
                .strip_prefix(unit)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// A pidfd on the unit's main process that passed every check: the only thing that can
/// send the signal.
pub struct Armed {
    pid: u32,
    pidfd: std::os::fd::OwnedFd,
}

impl Armed {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send the dump signal through the pidfd, then wait up to `wait` for the process to
    /// exit (a pidfd is readable once it has). `Ok(true)` when it exited on its own.
    pub async fn dump(
        &self,
        signal: crate::plan::DumpSignal,
        wait: Duration,
    ) -> Result<bool, KillError> {
        use crate::plan::DumpSignal;
        use rustix::process::Signal;
        let sig = match signal {
            DumpSignal::Quit => Signal::QUIT,
            DumpSignal::Abrt => Signal::ABORT,
            DumpSignal::Usr1 => Signal::USR1,
            DumpSignal::Usr2 => Signal::USR2,
            DumpSignal::Term => Signal::TERM,
            DumpSignal::Int => Signal::INT,
            DumpSignal::Hup => Signal::HUP,
        };
        rustix::process::pidfd_send_signal(&self.pidfd, sig).map_err(|e| KillError::Signal {
            pid: self.pid,
            signal: signal.as_str(),
            source: e.into(),
        })?;
        // A pidfd polls readable once its process has exited.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut fds = [rustix::event::PollFd::new(
                &self.pidfd,
                rustix::event::PollFlags::IN,
            )];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if rustix::event::poll(&mut fds, Some(&zero)).is_ok_and(|n| n > 0) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL through the pidfd: a recycled PID can never receive it.
    pub fn fire(self) -> Result<(), KillError> {
        rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL).map_err(
            |e| KillError::Signal {
                pid: self.pid,
                signal: "SIGKILL",
                source: e.into(),
            },
        )
    }
}

/// Get ready to SIGKILL the unit's main process with no PID-reuse race and no namespace
/// trap: check that we share the PID namespace MainPID is numbered in, open a pidfd, then
/// check that the process behind it is in the unit's cgroup and still the unit's MainPID.
/// Nothing is signalled here.
pub async fn arm_kill(systemd: &Systemd, facts: &UnitFacts) -> Result<Armed, KillError> {
    let pid = facts.main_pid;
    // MainPID is a number in systemd's PID namespace: it means the same process here only
    // when we share that namespace.
    let seen = systemd.pid_as_the_bus_sees_us().await?;
    if seen != Some(std::process::id()) {
        return Err(KillError::OtherPidNamespace {
            pid,
            seen: seen.unwrap_or(0),
        });
    }
    let raw = rustix::process::Pid::from_raw(pid as i32)
        .ok_or(KillError::PidChanged { was: pid, now: 0 })?;
    let pidfd =
        rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).map_err(|e| {
            KillError::Open {
                pid,
                source: e.into(),
            }
        })?;
    let found = process_cgroup(pid).map_err(|e| KillError::Open { pid, source: e })?;
    if !cgroup_within(&found, &facts.control_group) {
        return Err(KillError::WrongCgroup {
            pid,
            expected: facts.control_group.clone(),
            found,
        });
    }
    let now = systemd.facts(&facts.unit).await?;
    if now.main_pid != pid {
        return Err(KillError::PidChanged {
            was: pid,
            now: now.main_pid,
        });
    }
    Ok(Armed { pid, pidfd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_cgroup_line_is_found_on_hybrid_and_pure_v2_hosts() {
        let hybrid = "12:pids:/system.slice/app.service\n1:name=systemd:/system.slice/app.service\n0::/system.slice/app.service\n";
        assert_eq!(
            parse_unified_cgroup(hybrid).as_deref(),
            Some("/system.slice/app.service")
        );
        assert_eq!(parse_unified_cgroup("0::/\n").as_deref(), Some("/"));
        assert_eq!(parse_unified_cgroup("1:cpu:/x\n"), None);
    }

    #[test]
    fn cgroup_membership_is_exact_or_below() {
        assert!(cgroup_within(
            "/system.slice/app.service",
            "/system.slice/app.service"
        ));
        assert!(cgroup_within(
            "/system.slice/app.service/worker",
            "/system.slice/app.service"
        ));
        assert!(!cgroup_within(
            "/system.slice/app.service2",
            "/system.slice/app.service"
        ));
        assert!(!cgroup_within(
            "/system.slice/other.service",
            "/system.slice/app.service"
        ));
        assert!(!cgroup_within("/", ""));
    }

    #[test]
    fn monotonic_timer_properties_read_as_unit_file_settings() {
        assert_eq!(
            monotonic_setting("OnUnitActiveUSec", 900_000_000),
            "OnUnitActiveSec=15m"
        );
        assert_eq!(monotonic_setting("OnBootUSec", 300_000_000), "OnBootSec=5m");
        assert_eq!(StartLimit::from_properties(0, 5), None);
        assert_eq!(StartLimit::from_properties(10_000_000, 0), None);
    }

    #[test]
    fn only_restart_policies_that_fire_on_sigkill_count() {
        let mut f = UnitFacts {
            unit: "a.service".into(),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            active_enter: None,
            invocation_id: String::new(),
            main_pid: 10,
            restart: "".into(),
            control_group: String::new(),
            n_restarts: 0,
            start_limit: None,
        };
        for (policy, want) in [
            ("always", true),
            ("on-failure", true),
            ("on-abnormal", true),
            ("on-abort", true),
            ("no", false),
            ("on-success", false),
            ("on-watchdog", false),
        ] {
            f.restart = policy.into();
            assert_eq!(f.restarts_after_kill(), want, "{policy}");
        }
    }
}
