//! A private `dbus-daemon` and a fake `org.freedesktop.systemd1` served on it with zbus.
//!
//! The fake answers `Manager.LoadUnit` and `Manager.RestartUnit`, and serves every loaded unit
//! at `/org/freedesktop/systemd1/unit/<escaped name>` with the `Unit` and `Service` properties
//! routewatch reads, spelled as systemd spells them (`MainPID`, `InvocationID`, `NRestarts`).
//! Every property is read from a shared table at call time, so a test can change what
//! "systemd" says between (or during) runs. A unit missing from the table is `not-found`, as
//! `LoadUnit` reports a unit that does not exist on a real systemd.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use zbus::OwnedObjectPath;
use zbus::fdo;
use zbus::object_server::ObjectServer;

/// Far above any possible `pid_max` (at most 2^22): never a real process, so nothing can be
/// signalled even if a refusal check were missing.
pub const FAKE_PID: u32 = 999_999_901;
/// The MainPID the fake reports after a restart; equally impossible.
pub const FAKE_PID_AFTER: u32 = 999_999_902;

/// What the fake systemd says about one unit.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// Microseconds since the epoch; 0 when never active.
    pub active_enter_us: u64,
    pub invocation_id: Vec<u8>,
    pub main_pid: u32,
    /// When set, `MainPID` becomes this after its next read (a PID change mid-decision).
    pub then_main_pid: Option<u32>,
    pub restart: String,
    pub control_group: String,
    pub n_restarts: u32,
    /// `StartLimitIntervalUSec` and `StartLimitBurst` (systemd's defaults: 10 s, 5).
    pub start_limit_interval_us: u64,
    pub start_limit_burst: u32,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

impl UnitSpec {
    /// A healthy long-running `Restart=always` service whose MainPID is [`FAKE_PID`].
    pub fn running(name: &str) -> UnitSpec {
        UnitSpec {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            active_enter_us: now_us() - 3_600_000_000,
            invocation_id: vec![0xa1; 16],
            main_pid: FAKE_PID,
            then_main_pid: None,
            restart: "always".into(),
            control_group: format!("/system.slice/{name}"),
            n_restarts: 0,
            start_limit_interval_us: 10_000_000,
            start_limit_burst: 5,
        }
    }

    /// What systemd reports for a unit it has no file for.
    fn not_found() -> UnitSpec {
        UnitSpec {
            load_state: "not-found".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            active_enter_us: 0,
            invocation_id: Vec::new(),
            main_pid: 0,
            then_main_pid: None,
            restart: "no".into(),
            control_group: String::new(),
            n_restarts: 0,
            start_limit_interval_us: 10_000_000,
            start_limit_burst: 5,
        }
    }
}

type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    units: HashMap<String, UnitSpec>,
    /// Every call and property read answers `org.freedesktop.DBus.Error.AccessDenied`.
    deny_all: bool,
    /// Reads work; `RestartUnit` answers `InteractiveAuthorizationRequired` (polkit says no).
    deny_restart: bool,
    /// `LoadUnit` never answers.
    stall: bool,
    /// `RestartUnit` returns a job that never completes: the unit stays as it was.
    restart_does_nothing: bool,
    load_calls: usize,
    /// `(unit, mode)` of every `RestartUnit` call, denied ones included.
    restart_calls: Vec<(String, String)>,
    /// Runs after a successful `RestartUnit` has updated the unit.
    on_restart: Option<Hook>,
}

/// Handle on the fake's state; cheap to clone.
#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<Shared>>);

impl Fake {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_unit(&self, name: &str, spec: UnitSpec) {
        self.lock().units.insert(name.into(), spec);
    }

    pub fn remove_unit(&self, name: &str) {
        self.lock().units.remove(name);
    }

    pub fn update(&self, name: &str, f: impl FnOnce(&mut UnitSpec)) {
        let mut s = self.lock();
        f(s.units.get_mut(name).expect("unit is in the fake's table"));
    }

    pub fn deny_all(&self) {
        self.lock().deny_all = true;
    }

    pub fn deny_restart(&self) {
        self.lock().deny_restart = true;
    }

    pub fn stall(&self) {
        self.lock().stall = true;
    }

    pub fn restart_does_nothing(&self) {
        self.lock().restart_does_nothing = true;
    }

    pub fn on_restart(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.lock().on_restart = Some(Box::new(hook));
    }

    pub fn load_calls(&self) -> usize {
        self.lock().load_calls
    }

    pub fn restart_calls(&self) -> Vec<(String, String)> {
        self.lock().restart_calls.clone()
    }

    fn unit(&self, name: &str) -> fdo::Result<UnitSpec> {
        let s = self.lock();
        if s.deny_all {
            return Err(denied());
        }
        Ok(s.units
            .get(name)
            .cloned()
            .unwrap_or_else(UnitSpec::not_found))
    }
}

fn denied() -> fdo::Error {
    fdo::Error::AccessDenied("Access denied by the fake systemd".into())
}

/// systemd's object path for a unit: every byte that is not `[A-Za-z0-9]` becomes `_xx`.
pub fn unit_path(name: &str) -> OwnedObjectPath {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    if name.is_empty() {
        p.push('_');
    }
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            p.push(b as char);
        } else {
            let _ = write!(p, "_{b:02x}");
        }
    }
    OwnedObjectPath::try_from(p).expect("escaped unit path is valid")
}

struct Manager(Fake);

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn load_unit(
        &self,
        name: String,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> fdo::Result<OwnedObjectPath> {
        let stall = {
            let mut s = self.0.lock();
            s.load_calls += 1;
            if s.deny_all {
                return Err(denied());
            }
            s.stall
        };
        if stall {
            std::future::pending::<()>().await;
        }
        let path = unit_path(&name);
        server
            .at(
                &path,
                UnitObject {
                    fake: self.0.clone(),
                    name: name.clone(),
                },
            )
            .await?;
        server
            .at(
                &path,
                ServiceObject {
                    fake: self.0.clone(),
                    name,
                },
            )
            .await?;
        Ok(path)
    }

    async fn restart_unit(&self, name: String, mode: String) -> fdo::Result<OwnedObjectPath> {
        let mut s = self.0.lock();
        s.restart_calls.push((name.clone(), mode));
        if s.deny_all {
            return Err(denied());
        }
        if s.deny_restart {
            // What systemd answers an unprivileged caller when polkit would have to ask.
            return Err(fdo::Error::InteractiveAuthorizationRequired(
                "Interactive authentication required.".into(),
            ));
        }
        let job = OwnedObjectPath::try_from(format!(
            "/org/freedesktop/systemd1/job/{}",
            s.restart_calls.len()
        ))
        .map_err(|e| fdo::Error::Failed(e.to_string()))?;
        if s.restart_does_nothing {
            return Ok(job);
        }
        let Some(u) = s.units.get_mut(&name) else {
            return Err(fdo::Error::Failed(format!("Unit {name} not found.")));
        };
        // What a real restart of a Restart=always service ends in: a new process, a new
        // invocation, freshly active.
        u.main_pid = FAKE_PID_AFTER;
        u.then_main_pid = None;
        u.invocation_id = vec![0xb2; 16];
        u.active_state = "active".into();
        u.sub_state = "running".into();
        u.active_enter_us = now_us();
        u.n_restarts += 1;
        if let Some(hook) = &s.on_restart {
            hook();
        }
        Ok(job)
    }
}

struct UnitObject {
    fake: Fake,
    name: String,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitObject {
    #[zbus(property(emits_changed_signal = "false"))]
    fn load_state(&self) -> fdo::Result<String> {
        Ok(self.fake.unit(&self.name)?.load_state)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn active_state(&self) -> fdo::Result<String> {
        Ok(self.fake.unit(&self.name)?.active_state)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn sub_state(&self) -> fdo::Result<String> {
        Ok(self.fake.unit(&self.name)?.sub_state)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn active_enter_timestamp(&self) -> fdo::Result<u64> {
        Ok(self.fake.unit(&self.name)?.active_enter_us)
    }

    #[zbus(property(emits_changed_signal = "false"), name = "InvocationID")]
    fn invocation_id(&self) -> fdo::Result<Vec<u8>> {
        Ok(self.fake.unit(&self.name)?.invocation_id)
    }

    #[zbus(
        property(emits_changed_signal = "false"),
        name = "StartLimitIntervalUSec"
    )]
    fn start_limit_interval_usec(&self) -> fdo::Result<u64> {
        Ok(self.fake.unit(&self.name)?.start_limit_interval_us)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn start_limit_burst(&self) -> fdo::Result<u32> {
        Ok(self.fake.unit(&self.name)?.start_limit_burst)
    }
}

struct ServiceObject {
    fake: Fake,
    name: String,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl ServiceObject {
    #[zbus(property(emits_changed_signal = "false"), name = "MainPID")]
    fn main_pid(&self) -> fdo::Result<u32> {
        let pid = self.fake.unit(&self.name)?.main_pid;
        if let Some(u) = self.fake.lock().units.get_mut(&self.name)
            && let Some(next) = u.then_main_pid.take()
        {
            u.main_pid = next;
        }
        Ok(pid)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn restart(&self) -> fdo::Result<String> {
        Ok(self.fake.unit(&self.name)?.restart)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn control_group(&self) -> fdo::Result<String> {
        Ok(self.fake.unit(&self.name)?.control_group)
    }

    #[zbus(property(emits_changed_signal = "false"), name = "NRestarts")]
    fn n_restarts(&self) -> fdo::Result<u32> {
        Ok(self.fake.unit(&self.name)?.n_restarts)
    }
}

/// Claim `org.freedesktop.systemd1` on the bus at `address` and serve the fake. The returned
/// connection must be kept alive.
pub async fn serve(address: &str, fake: Fake) -> zbus::Connection {
    zbus::connection::Builder::address(address)
        .name("org.freedesktop.systemd1")
        .serve_at("/org/freedesktop/systemd1", Manager(fake))
        .build()
        .await
        .expect("serve the fake systemd on the private bus")
}

/// A private `dbus-daemon` listening on a socket in `dir`; killed on drop.
pub struct BusDaemon {
    child: Child,
    pub address: String,
}

impl BusDaemon {
    pub fn start(dir: &Path) -> BusDaemon {
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write the bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed");
        // The address is printed once the daemon listens.
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        out.read_line(&mut line).expect("read the bus address");
        let address = line.trim().to_string();
        if address.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dbus-daemon printed no address");
        }
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        BusDaemon { child, address }
    }
}

impl Drop for BusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
