//! End-to-end recovery against a real systemd and a real system D-Bus.
//!
//! `tests/lab/up.sh` boots systemd as PID 1 of its own namespaces with the
//! fixture units of `tests/lab/units/`; the real `routewatch` binary then runs
//! *inside* the lab (`tests/lab/in.sh`), so MainPID, 127.0.0.1 and the default
//! system bus mean the same to it as to that systemd. One lab serves the whole
//! test binary: a single `#[test]` brings it up fresh and a drop guard tears it
//! down, even when a scenario panics.
//!
//! Needs root. Without it (or when the lab cannot start) the test prints
//! `skipping real-systemd e2e: <reason>` and passes, unless
//! `ROUTEWATCH_E2E=required`, which turns the skip into a failure (CI).
//! `ROUTEWATCH_E2E_KEEP=1` leaves the lab running afterwards for inspection.
//!
//! Probe files and state directories live under `CARGO_TARGET_TMPDIR`, never
//! under /tmp: /run, /tmp and /dev/shm are private inside the lab.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab");
const BIN: &str = env!("CARGO_BIN_EXE_routewatch");

const HANG_UNIT: &str = "rw-hang.service";
const HANG_PORT: u16 = 18081;
const LIMIT_UNIT: &str = "rw-429.service";
const LIMIT_PORT: u16 = 18082;
const NORESTART_UNIT: &str = "rw-norestart.service";
const NORESTART_PORT: u16 = 18083;
const PLAIN_UNIT: &str = "rw-plain.service";
const PLAIN_PORT: u16 = 18084;
const LAB_UNITS: [&str; 4] = [HANG_UNIT, LIMIT_UNIT, NORESTART_UNIT, PLAIN_UNIT];

/// Longest a single routewatch run may take before the test gives up on it.
const RUN_DEADLINE: Duration = Duration::from_millis(60_000);
/// Longest a helper command (systemctl, curl) may take inside the lab.
const TOOL_DEADLINE: Duration = Duration::from_millis(15_000);

// ---------------------------------------------------------------- processes

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Output {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs a command with captured output and an overall deadline (then kills it).
fn run_cmd(program: &str, args: &[&str], deadline: Duration) -> Result<Output, String> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} {args:?} did not finish within {} ms",
                    deadline.as_millis()
                ));
            }
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let elapsed = started.elapsed();
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed,
    })
}

fn lab_script(name: &str) -> String {
    format!("{LAB}/{name}")
}

/// Runs a command inside the lab; panics if it cannot be run at all.
fn in_lab(args: &[&str]) -> Output {
    run_cmd(&lab_script("in.sh"), args, TOOL_DEADLINE)
        .unwrap_or_else(|e| panic!("in.sh {args:?}: {e}"))
}

// ---------------------------------------------------------------- the lab

fn e2e_required() -> bool {
    std::env::var("ROUTEWATCH_E2E").is_ok_and(|v| v == "required")
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The running lab. Holds the session lock (one e2e run per checkout at a
/// time) and tears the lab down when dropped, also while unwinding.
struct Lab {
    _session: File,
}

impl Lab {
    fn start() -> Result<Lab, String> {
        if !cfg!(target_os = "linux") {
            return Err("needs Linux".into());
        }
        match effective_uid() {
            Some(0) => {}
            Some(uid) => return Err(format!("needs root (running as uid {uid})")),
            None => return Err("cannot read the effective uid from /proc/self/status".into()),
        }
        for (what, path) in [
            ("the binary", BIN),
            ("CARGO_TARGET_TMPDIR", env!("CARGO_TARGET_TMPDIR")),
            ("the lab", LAB),
        ] {
            if ["/tmp/", "/run/", "/dev/shm/"]
                .iter()
                .any(|p| path.starts_with(p))
            {
                return Err(format!(
                    "{what} ({path}) is under /tmp, /run or /dev/shm, which are private inside the lab"
                ));
            }
        }
        let state = Path::new(LAB).join("state");
        fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let lock_path = state.join(".session.lock");
        let session =
            File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        session
            .lock()
            .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
        // Always a fresh lab: fixtures healthy, restart counters at zero.
        let down = run_cmd(&lab_script("down.sh"), &[], RUN_DEADLINE)?;
        if !down.status.success() {
            return Err(format!("down.sh failed: {}{}", down.stdout, down.stderr));
        }
        let lab = Lab { _session: session };
        let up = run_cmd(&lab_script("up.sh"), &[], RUN_DEADLINE)?;
        if !up.status.success() {
            return Err(format!(
                "up.sh exited with {}:\n{}{}",
                up.code(),
                up.stdout,
                up.stderr
            ));
        }
        eprintln!(
            "e2e: lab up in {} ms\n{}",
            up.elapsed.as_millis(),
            up.stdout.trim_end()
        );
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("ROUTEWATCH_E2E_KEEP").is_some() {
            eprintln!("e2e: ROUTEWATCH_E2E_KEEP set: lab left running ({LAB}/down.sh stops it)");
            return;
        }
        match run_cmd(&lab_script("down.sh"), &[], RUN_DEADLINE) {
            Ok(o) if o.status.success() => {
                eprintln!("e2e: lab down in {} ms", o.elapsed.as_millis())
            }
            Ok(o) => eprintln!("e2e: down.sh failed: {}{}", o.stdout, o.stderr),
            Err(e) => eprintln!("e2e: down.sh: {e}"),
        }
    }
}

// ---------------------------------------------------------------- unit facts

#[derive(Clone, Debug, PartialEq)]
struct Facts {
    main_pid: u32,
    n_restarts: u32,
    active_state: String,
}

fn facts(unit: &str) -> Facts {
    let o = in_lab(&[
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "-p",
        "NRestarts",
        "-p",
        "ActiveState",
        unit,
    ]);
    assert!(
        o.status.success(),
        "systemctl show {unit}: {}{}",
        o.stdout,
        o.stderr
    );
    let kv: BTreeMap<&str, &str> = o.stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let num = |k: &str| -> u32 {
        kv.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("systemctl show {unit}: no numeric {k} in {:?}", o.stdout))
    };
    Facts {
        main_pid: num("MainPID"),
        n_restarts: num("NRestarts"),
        active_state: kv.get("ActiveState").unwrap_or(&"").to_string(),
    }
}

fn all_facts() -> BTreeMap<&'static str, Facts> {
    LAB_UNITS.iter().map(|u| (*u, facts(u))).collect()
}

/// Kills per unit between two snapshots: restarts counted by systemd, or a
/// changed/vanished MainPID (a Restart=no unit does not count restarts).
fn kills_between(
    before: &BTreeMap<&'static str, Facts>,
    after: &BTreeMap<&'static str, Facts>,
) -> BTreeMap<&'static str, u32> {
    before
        .iter()
        .map(|(unit, b)| {
            let a = &after[unit];
            let restarts = a.n_restarts.saturating_sub(b.n_restarts);
            let replaced = u32::from(a.main_pid != b.main_pid || a.active_state != b.active_state);
            (*unit, restarts.max(replaced))
        })
        .collect()
}

/// Waits until `unit` is active with a MainPID other than `old_pid`.
fn wait_new_main_pid(unit: &str, old_pid: u32, within: Duration) -> Facts {
    let deadline = Instant::now() + within;
    loop {
        let f = facts(unit);
        if f.active_state == "active" && f.main_pid != 0 && f.main_pid != old_pid {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "{unit} not active with a new MainPID within {} ms: {f:?}",
            within.as_millis()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A report's `recovery` says the old MainPID was killed and the unit recovered, and systemd
/// agrees: one more restart, a new MainPID (the one reported as `new_pid`, when given).
fn assert_killed_and_back(rec: &Value, before: &Facts, ctx: &str) {
    assert_eq!(rec["action"], "kill", "recovery.action\n{ctx}");
    assert_eq!(rec["outcome"], "recovered", "recovery.outcome\n{ctx}");
    assert_eq!(
        rec["pid"].as_u64(),
        Some(u64::from(before.main_pid)),
        "recovery.pid must be the old MainPID\n{ctx}"
    );
    let after = wait_new_main_pid(HANG_UNIT, before.main_pid, Duration::from_millis(5_000));
    assert_eq!(
        after.n_restarts,
        before.n_restarts + 1,
        "NRestarts {before:?} -> {after:?}\n{ctx}"
    );
    if let Some(new_pid) = rec["new_pid"].as_u64() {
        assert_eq!(
            new_pid,
            u64::from(after.main_pid),
            "recovery.new_pid\n{ctx}"
        );
    }
}

// ---------------------------------------------------------------- fixtures

/// `curl` inside the lab: (curl exit code, HTTP status or "000").
fn curl(port: u16, path: &str, max_time_ms: u64) -> (i32, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let max_time = format!("{:.3}", max_time_ms as f64 / 1000.0);
    let o = in_lab(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        &max_time,
        &url,
    ]);
    (o.code(), o.stdout.trim().to_string())
}

/// Puts the fixture on `port` into hang mode and checks that it now times out
/// (curl exit 28) while still accepting connections. Idempotent.
fn make_hung(port: u16) {
    let (rc, code) = curl(port, "/control/hang", 500);
    assert!(
        (rc == 0 && code == "200") || rc == 28,
        "GET /control/hang on :{port}: curl exit {rc}, HTTP {code}"
    );
    let (rc, code) = curl(port, "/health", 300);
    assert_eq!(
        rc, 28,
        ":{port}/health should time out when hung (HTTP {code})"
    );
}

fn wait_healthy(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (rc, code) = curl(port, "/health", 500);
        if rc == 0 && code == "200" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            ":{port}/health not 200 within {} ms (curl exit {rc}, HTTP {code})",
            within.as_millis()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- routewatch

struct Target<'a> {
    name: &'a str,
    port: u16,
    unit: Option<&'a str>,
}

/// Writes a probe file with short timeouts and kill recovery (when a unit is
/// named) into `dir` and returns its path.
fn probe_file(dir: &Path, t: &Target) -> PathBuf {
    probe_file_with_cooldown(dir, t, "15m")
}

/// [`probe_file`] with the given recovery cooldown (`0s`: every run may act).
fn probe_file_with_cooldown(dir: &Path, t: &Target, cooldown: &str) -> PathBuf {
    let mut y = String::new();
    y.push_str(
        "defaults:\n  timeout: 300ms\n  connect_timeout: 200ms\n  retries: 1\n  \
         backoff: 50ms\n  max_backoff: 200ms\n",
    );
    writeln!(y, "targets:\n  - name: {}", t.name).unwrap();
    writeln!(y, "    base_url: http://127.0.0.1:{}", t.port).unwrap();
    if let Some(unit) = t.unit {
        writeln!(y, "    unit: {unit}").unwrap();
        y.push_str(
            "    recovery:\n      action: kill\n      after_failed_runs: 1\n      \
             startup_grace: 0s\n",
        );
        writeln!(y, "      cooldown: {cooldown}").unwrap();
        y.push_str("      max_actions: 3\n      window: 6h\n      verify_timeout: 10s\n");
    }
    y.push_str("    routes:\n      - { path: /health, class: core }\n");
    let path = dir.join(format!("{}.yaml", t.name));
    fs::write(&path, y).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

struct Run {
    out: Output,
    doc: Option<Value>,
    what: String,
}

impl Run {
    fn code(&self) -> i32 {
        self.out.code()
    }

    /// Everything needed to understand a failed assertion about this run.
    fn ctx(&self) -> String {
        format!(
            "{}: exit {} after {} ms\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code(),
            self.out.elapsed.as_millis(),
            self.out.stdout.trim_end(),
            self.out.stderr.trim_end()
        )
    }

    fn doc(&self) -> &Value {
        self.doc
            .as_ref()
            .unwrap_or_else(|| panic!("stdout is not one JSON document\n{}", self.ctx()))
    }

    fn target(&self) -> &Value {
        &self.doc()["targets"][0]
    }

    fn recovery(&self) -> &Value {
        &self.target()["recovery"]
    }

    fn decision(&self) -> &str {
        self.recovery()["decision"].as_str().unwrap_or("")
    }

    fn reason(&self) -> String {
        self.recovery()["reason"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
    }

    fn assert_code(&self, want: i32) {
        assert_eq!(self.code(), want, "exit code\n{}", self.ctx());
        assert_eq!(
            self.doc()["exit_code"].as_i64(),
            Some(i64::from(want)),
            "JSON exit_code\n{}",
            self.ctx()
        );
        assert!(
            !self.out.stderr.contains("panicked"),
            "panic\n{}",
            self.ctx()
        );
    }

    fn assert_decision(&self, want: &str) {
        assert_eq!(self.decision(), want, "recovery.decision\n{}", self.ctx());
    }
}

/// Runs `routewatch check` inside the lab on one probe file and state dir.
fn routewatch(config: &Path, state_dir: &Path, extra: &[&str]) -> Run {
    let config = config.to_str().expect("utf-8 path");
    let state = state_dir.to_str().expect("utf-8 path");
    let mut args = vec![
        BIN,
        "check",
        "--config",
        config,
        "--state-dir",
        state,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let what = format!(
        "routewatch check --config {config} --state-dir {state} --format json {}",
        extra.join(" ")
    );
    let out = run_cmd(&lab_script("in.sh"), &args, RUN_DEADLINE)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let doc = serde_json::from_str(out.stdout.trim()).ok();
    Run { out, doc, what }
}

/// A fresh directory on the host filesystem (visible inside the lab).
fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// Write `source` to `dir/file` and run it with python3 as the transient `unit` in the lab
/// (`Restart=always`, then the `properties`), and wait (10 s at most) until the shell test
/// `ready` holds in the lab (it listens, its socket exists).
fn start_python_unit(
    dir: &Path,
    file: &str,
    source: &str,
    unit: &str,
    properties: &[&str],
    ready: &str,
) {
    fs::write(dir.join(file), source).unwrap();
    let script = dir.join(file).display().to_string();
    let mut args = vec!["systemd-run", "--unit", unit, "-p", "Restart=always"];
    for p in properties {
        args.extend(["-p", p]);
    }
    args.extend(["python3", script.as_str()]);
    let started = in_lab(&args);
    assert_eq!(started.code(), 0, "systemd-run: {}", started.stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_lab(&["sh", "-c", ready]).code() != 0 {
        assert!(Instant::now() < deadline, "{unit} never ready ({ready})");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The shell test that something in the lab listens on TCP `port`.
fn listens(port: u16) -> String {
    format!("ss -Hltn 'sport = :{port}' | grep -q .")
}

// ---------------------------------------------------------------- the shipped unit

/// The service unit as shipped; the test installs it into the lab unchanged.
const SHIPPED_UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/routewatch.service");
const SERVICE: &str = "routewatch.service";
/// The lab's runtime unit directory (in its private /run).
const LAB_UNIT_DIR: &str = "/run/systemd/system";

/// A directory that the installed unit's `StateDirectory=` makes systemd create
/// under the *host's* /var/lib (the lab shares the host's root file system).
/// Removed on drop, so the host is left as it was.
struct HostStateDir {
    name: String,
    path: PathBuf,
}

impl HostStateDir {
    /// A name of this test process's own: never a real installation's
    /// /var/lib/routewatch, never another checkout's concurrent run.
    fn new() -> HostStateDir {
        let name = format!("routewatch-e2e-{}", std::process::id());
        let path = Path::new("/var/lib").join(&name);
        assert!(
            !path.exists(),
            "{} exists already (left over by a killed run?); remove it by hand",
            path.display()
        );
        HostStateDir { name, path }
    }
}

impl Drop for HostStateDir {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => eprintln!("e2e: removed {}", self.path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("e2e: WARNING: cannot remove {}: {e}", self.path.display()),
        }
    }
}

/// One word of a unit-file command line: quoted, with systemd's escapes for
/// `\`, `"`, specifiers (`%`) and variable expansion (`$`).
fn unit_word(s: &str) -> String {
    assert!(
        !s.chars().any(char::is_control),
        "{s:?} cannot go into a unit file"
    );
    let mut q = String::from('"');
    for c in s.chars() {
        match c {
            '\\' | '"' => {
                q.push('\\');
                q.push(c);
            }
            '%' => q.push_str("%%"),
            '$' => q.push_str("$$"),
            _ => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The test's drop-in for the shipped unit. It changes what the lab needs and
/// nothing else: every sandboxing line of the shipped unit stays in effect.
fn shipped_dropin(cfg: &Path, extra: &[&str], state: &HostStateDir) -> String {
    let cfg = cfg.to_str().expect("utf-8 path");
    let report = state.path.join("report.json");
    let report = report.to_str().expect("utf-8 path");
    let mut d = String::new();
    d.push_str(
        "# routewatch e2e: the shipped unit, run for real in the lab.\n\
         [Service]\n\
         # The built binary and the test's probe file instead of /usr/local/bin and\n\
         # /etc. The JSON report goes to the state directory, the only writable place.\n\
         ExecStart=\n",
    );
    write!(
        d,
        "ExecStart={} check --config {} --format json --output {}",
        unit_word(BIN),
        unit_word(cfg),
        unit_word(report)
    )
    .unwrap();
    for arg in extra {
        write!(d, " {}", unit_word(arg)).unwrap();
    }
    d.push('\n');
    d.push_str(
        "# The lab shares the host's /var/lib: a directory of this test run instead\n\
         # of /var/lib/routewatch. An empty StateDirectory= also resets\n\
         # StateDirectoryMode= to 0755 (systemd 252), so the shipped mode is restated.\n\
         StateDirectory=\n",
    );
    writeln!(d, "StateDirectory={}", state.name).unwrap();
    d.push_str(
        "StateDirectoryMode=0700\n\
         # Evidence that the sandbox is really applied: this runs in the same sandbox\n\
         # and logs its bounding set, effective capabilities, no_new_privs, seccomp.\n\
         ExecStartPost=-grep -E \"^(CapBnd|CapEff|NoNewPrivs|Seccomp):\" /proc/self/status\n",
    );
    d
}

/// Puts `text` at `dest` inside the lab (its private /run), via a host file.
fn install_in_lab(host_copy: &Path, text: &str, dest: &str) {
    fs::write(host_copy, text).unwrap_or_else(|e| panic!("{}: {e}", host_copy.display()));
    let parent = Path::new(dest)
        .parent()
        .and_then(Path::to_str)
        .expect("parent");
    let o = in_lab(&["mkdir", "-p", parent]);
    assert!(o.status.success(), "mkdir -p {parent}: {}", o.stderr);
    let src = host_copy.to_str().expect("utf-8 path");
    let o = in_lab(&["cp", src, dest]);
    assert!(o.status.success(), "cp {src} {dest}: {}", o.stderr);
}

/// `systemctl show` of a few properties, as a map.
fn show(unit: &str, props: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["systemctl", "show"];
    for p in props {
        args.extend_from_slice(&["-p", p]);
    }
    args.push(unit);
    let o = in_lab(&args);
    assert!(o.status.success(), "systemctl show {unit}: {}", o.stderr);
    o.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One `systemctl start routewatch.service` of the shipped unit.
struct ServiceRun {
    start: Output,
    props: BTreeMap<String, String>,
    journal: String,
    report: Option<Value>,
    state_dir: PathBuf,
}

impl ServiceRun {
    fn prop(&self, key: &str) -> &str {
        self.props.get(key).map_or("", String::as_str)
    }

    fn ctx(&self) -> String {
        format!(
            "systemctl start {SERVICE}: exit {} after {} ms {}\n--- systemctl show\n{}\n\
             --- journalctl (this invocation)\n{}\n--- report\n{}",
            self.start.code(),
            self.start.elapsed.as_millis(),
            self.start.stderr.trim_end(),
            self.props
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            self.journal.trim_end(),
            self.report
                .as_ref()
                .map_or_else(|| "(none)".to_string(), Value::to_string)
        )
    }

    /// The service succeeded and routewatch exited with `code`.
    fn assert_success(&self, code: i32) {
        assert!(
            self.start.status.success(),
            "the shipped unit failed\n{}",
            self.ctx()
        );
        assert_eq!(self.prop("Result"), "success", "Result\n{}", self.ctx());
        // CLD_EXITED: routewatch exited by itself (not killed by SIGSYS & co).
        assert_eq!(
            self.prop("ExecMainCode"),
            "1",
            "ExecMainCode\n{}",
            self.ctx()
        );
        assert_eq!(
            self.prop("ExecMainStatus"),
            code.to_string(),
            "ExecMainStatus\n{}",
            self.ctx()
        );
        let report = self
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("no JSON report in the state directory\n{}", self.ctx()));
        assert_eq!(
            report["exit_code"].as_i64(),
            Some(i64::from(code)),
            "report exit_code\n{}",
            self.ctx()
        );
    }

    /// The sandbox the unit asks for is the one the process got.
    fn assert_sandboxed(&self) {
        // ExecStartPost's lines: "... grep[PID]: CapBnd:<tab>0000000000000020".
        let status: BTreeMap<&str, &str> = self
            .journal
            .lines()
            .filter_map(|l| l.split_once("]: ").map(|(_, kv)| kv))
            .filter_map(|kv| kv.split_once(':'))
            .map(|(k, v)| (k, v.trim()))
            .collect();
        // CAP_KILL is capability 5.
        assert_eq!(
            status.get("CapBnd"),
            Some(&"0000000000000020"),
            "bounding set must be CAP_KILL only\n{}",
            self.ctx()
        );
        assert_eq!(
            status.get("NoNewPrivs"),
            Some(&"1"),
            "NoNewPrivileges\n{}",
            self.ctx()
        );
        assert_eq!(
            status.get("Seccomp"),
            Some(&"2"),
            "seccomp filter mode (SystemCallFilter)\n{}",
            self.ctx()
        );
        // State directory and files as StateDirectoryMode=0700 and UMask=0077 say.
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(p)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.display(), self.ctx()))
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(&self.state_dir), 0o700, "{}", self.state_dir.display());
        let state_file = self.state_dir.join("state.json");
        assert_eq!(mode(&state_file), 0o600, "{}", state_file.display());
    }

    fn state_file(&self) -> Value {
        let path = self.state_dir.join("state.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), self.ctx()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}\n{}", path.display(), self.ctx()))
    }
}

/// Installs the shipped unit and the test's drop-in (running `cfg`, plus
/// `extra` arguments) in the lab, starts it (a oneshot: `systemctl start`
/// returns when the run is done) and collects what systemd and routewatch
/// left behind.
fn run_shipped_unit(cx: &mut Ctx, cfg: &Path, extra: &[&str]) -> ServiceRun {
    for (what, path) in [
        ("the binary", BIN),
        ("the probe file", cx.root.to_str().unwrap()),
    ] {
        assert!(
            !["/home/", "/root/", "/run/user/"]
                .iter()
                .any(|p| path.starts_with(p)),
            "{what} ({path}) is under /home, /root or /run/user, which the shipped \
             unit's ProtectHome=yes hides from the service: run from a checkout elsewhere"
        );
    }
    let shipped =
        fs::read_to_string(SHIPPED_UNIT).unwrap_or_else(|e| panic!("{SHIPPED_UNIT}: {e}"));
    let state = cx.state_dir.get_or_insert_with(HostStateDir::new);
    let dropin = shipped_dropin(cfg, extra, state);
    let state_dir = state.path.clone();
    let state_name = state.name.clone();
    let host_copies = fresh_dir(&cx.root, "unit");
    install_in_lab(
        &host_copies.join(SERVICE),
        &shipped,
        &format!("{LAB_UNIT_DIR}/{SERVICE}"),
    );
    install_in_lab(
        &host_copies.join("test.conf"),
        &dropin,
        &format!("{LAB_UNIT_DIR}/{SERVICE}.d/test.conf"),
    );
    // A oneshot that ends inactive and unreferenced is garbage-collected at
    // once, and `systemctl show` would then report a fresh unit's defaults
    // (Result=success, ExecMainStatus=0) whatever happened. A reference from
    // the (active) lab target keeps the unit, and its results, loaded.
    install_in_lab(
        &host_copies.join("hold.conf"),
        &format!("[Unit]\nAfter={SERVICE}\n"),
        &format!("{LAB_UNIT_DIR}/routewatch-lab.target.d/hold-{SERVICE}.conf"),
    );
    let o = in_lab(&["systemctl", "daemon-reload"]);
    assert!(
        o.status.success(),
        "daemon-reload: {}{}",
        o.stdout,
        o.stderr
    );
    let loaded = show(
        SERVICE,
        &["LoadState", "FragmentPath", "DropInPaths", "StateDirectory"],
    );
    assert_eq!(
        loaded.get("LoadState").map(String::as_str),
        Some("loaded"),
        "{loaded:?}"
    );
    assert_eq!(
        loaded.get("StateDirectory"),
        Some(&state_name),
        "{loaded:?}"
    );
    // Parse warnings (an unknown or misspelt setting is ignored, not an error).
    let warnings = in_lab(&["journalctl", "--no-pager", "-o", "cat", "_PID=1"]);
    let warnings: Vec<&str> = warnings
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("{LAB_UNIT_DIR}/{SERVICE}")))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd complains about the unit:\n{}",
        warnings.join("\n")
    );

    let start = run_cmd(
        &lab_script("in.sh"),
        &["systemctl", "start", SERVICE],
        RUN_DEADLINE,
    )
    .unwrap_or_else(|e| panic!("systemctl start {SERVICE}: {e}"));
    let props = show(
        SERVICE,
        &[
            "Result",
            "ExecMainCode",
            "ExecMainStatus",
            "ExecMainPID",
            "InvocationID",
            "StateDirectory",
            "DropInPaths",
        ],
    );
    let id = props.get("InvocationID").cloned().unwrap_or_default();
    let journal = if id.is_empty() {
        in_lab(&["journalctl", "--no-pager", "-u", SERVICE]).stdout
    } else {
        // routewatch's (and ExecStartPost's) lines, and systemd's about the unit.
        let own = format!("_SYSTEMD_INVOCATION_ID={id}");
        let pid1 = format!("INVOCATION_ID={id}");
        in_lab(&["journalctl", "--no-pager", &own, "+", &pid1]).stdout
    };
    let report = fs::read_to_string(state_dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    ServiceRun {
        start,
        props,
        journal,
        report,
        state_dir,
    }
}

// ---------------------------------------------------------------- scenarios

struct Ctx {
    root: PathBuf,
    /// Wall time of scenario a's run (start of run to "recovered").
    recovered_in: Option<Duration>,
    /// The host directory the shipped unit's StateDirectory= creates (i, j).
    state_dir: Option<HostStateDir>,
    /// Wall times of scenario k's runs (start of run to "recovered").
    timings: Vec<Duration>,
}

/// a. hung unit with kill recovery: act, recovered, exactly one restart.
fn scenario_a_hung_is_recovered(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "a-b");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
    );
    let before = facts(HANG_UNIT);
    assert_eq!(before.active_state, "active", "{before:?}");
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    cx.recovered_in = Some(run.out.elapsed);
    eprintln!(
        "e2e a: start of run -> recovered: {} ms (recovery.total_ms={}, act_ms={}, verify_ms={})",
        run.out.elapsed.as_millis(),
        run.recovery()["total_ms"],
        run.recovery()["act_ms"],
        run.recovery()["verify_ms"]
    );
    run.assert_code(3);
    assert_eq!(run.doc()["status"], "recovered", "status\n{}", run.ctx());
    run.assert_decision("act");
    assert_killed_and_back(run.recovery(), &before, &run.ctx());
    // What the kernel said: the hung port is the unit's own listener, its main process
    // sleeps, and the evidence cost little.
    let ev = &run.recovery()["evidence"];
    eprintln!("e2e a: evidence {ev} (reason: {})", run.reason());
    assert_eq!(ev["listener"]["in_unit"], true, "evidence\n{}", run.ctx());
    assert!(
        ev["listener"]["backlog"].as_u64() > Some(0),
        "sock_diag backlog\n{}",
        run.ctx()
    );
    assert!(
        ev["threads"]["total"].as_u64() >= Some(1),
        "threads\n{}",
        run.ctx()
    );
    assert!(ev["cpu_ms"].is_u64(), "cgroup CPU time\n{}", run.ctx());
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// A service that stopped accepting (its accept loop deadlocked), flooded until its accept
/// queue is full: the kernel drops new SYNs, so every probe ends as `connect_timeout`, which
/// is not in `recovery.on`. The evidence (the unit's own listener, queue full) makes it the
/// hung signature: killed and recovered, never missed.
fn scenario_m_deadlocked_accept_loop_is_recovered(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "m");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "deadlock",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
    );
    let before = facts(HANG_UNIT);
    let (rc, code) = curl(HANG_PORT, "/control/deadlock", 500);
    assert!(
        rc == 0 && code == "200",
        "deadlock: curl exit {rc}, HTTP {code}"
    );
    // Fill the accept queue from inside the lab: connections held for 30 s by a process of
    // its own (the queue holds backlog + 1; the rest stay in SYN-SENT).
    let flood = format!(
        "import socket, time\nheld = []\nfor _ in range(200):\n    s = socket.socket()\n    s.setblocking(False)\n    try:\n        s.connect(('127.0.0.1', {HANG_PORT}))\n    except BlockingIOError:\n        pass\n    held.append(s)\ntime.sleep(30)\n"
    );
    let script = dir.join("flood.py");
    fs::write(&script, flood).unwrap();
    let spawn = format!("nohup python3 {} >/dev/null 2>&1 &", script.display());
    assert_eq!(in_lab(&["sh", "-c", &spawn]).code(), 0, "start the flood");
    // The queue is full once a new connection no longer completes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (rc, _) = curl(HANG_PORT, "/health", 300);
        if rc == 28 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the accept queue never filled (curl exit {rc})"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    eprintln!("e2e m: reason: {}", run.reason());
    assert_eq!(
        run.doc()["targets"][0]["routes"][0]["outcome"],
        "connect_timeout",
        "outcome\n{}",
        run.ctx()
    );
    run.assert_code(3);
    run.assert_decision("act");
    let ev = &run.recovery()["evidence"]["listener"];
    assert_eq!(ev["in_unit"], true, "evidence\n{}", run.ctx());
    assert!(
        ev["queue"].as_u64() > Some(0) && ev["queue"].as_u64() >= ev["backlog"].as_u64(),
        "queue full\n{}",
        run.ctx()
    );
    assert!(run.reason().contains("full"), "reason\n{}", run.ctx());
    assert_killed_and_back(run.recovery(), &before, &run.ctx());
    let _ = in_lab(&["pkill", "-f", "flood.py"]);
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// `recovery.dump: { signal: SIGQUIT }` on a hung Python service that registered
/// faulthandler for SIGQUIT: its stacks land in the unit's journal, the report points there,
/// and since the process survives the dump, SIGKILL follows and it is recovered.
fn scenario_n_dump_leaves_the_stacks_in_the_journal(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "n");
    let cfg = dir.join("dump.yaml");
    let yaml = format!(
        "defaults:\n  timeout: 300ms\n  connect_timeout: 200ms\n  retries: 1\n  backoff: 50ms\ntargets:\n  - name: dump\n    base_url: http://127.0.0.1:{HANG_PORT}\n    unit: {HANG_UNIT}\n    recovery: {{ action: kill, startup_grace: 0s, cooldown: 0s, verify_timeout: 10s, dump: {{ signal: SIGQUIT, wait: 1s }} }}\n    routes:\n      - {{ path: /health, class: core }}\n"
    );
    fs::write(&cfg, yaml).unwrap();
    let before = facts(HANG_UNIT);
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(3);
    run.assert_decision("act");
    let dump = &run.recovery()["dump"];
    assert_eq!(dump["signal"], "SIGQUIT", "dump\n{}", run.ctx());
    assert_eq!(
        dump["exited"],
        false,
        "faulthandler keeps it running\n{}",
        run.ctx()
    );
    assert_killed_and_back(run.recovery(), &before, &run.ctx());
    // The report's pointer, run as given: the stack dump is there.
    let journal = dump["journal"].as_str().unwrap().to_string();
    let args: Vec<&str> = journal.split_whitespace().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut with_pager = args.clone();
        with_pager.push("--no-pager");
        let out = in_lab(&with_pager);
        let text = out.stdout.clone();
        if text.contains("fixture.py") && text.contains("Thread 0x") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stack dump in `{journal}`:\n{text}\n{}",
            run.ctx()
        );
        thread::sleep(Duration::from_millis(100));
    }
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// The state directory full right before acting (a tmpfs filled up, in the lab's own mount
/// namespace): the `pending` record cannot be written, so nothing is killed. Runs after b,
/// with rw-hang hung.
fn scenario_o_full_state_disk_kills_nothing(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "o");
    let cfg = probe_file_with_cooldown(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
        "0s",
    );
    let state = dir.join("state");
    fs::create_dir_all(&state).unwrap();
    let st = state.display().to_string();
    let fill = format!(
        "mount -t tmpfs -o size=256k,mode=0700 tmpfs {st} && head -c 1M /dev/zero > {st}/fill; true"
    );
    assert_eq!(in_lab(&["sh", "-c", &fill]).code(), 0, "mount a full tmpfs");
    let before = facts(HANG_UNIT);
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &state, &[]);
    let _ = in_lab(&["umount", &st]);
    run.assert_code(1);
    run.assert_decision("refuse");
    assert!(
        run.reason().contains("cannot record the action"),
        "reason\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(HANG_UNIT),
        before,
        "nothing may be killed\n{}",
        run.ctx()
    );
}

/// An asyncio TLS service that requires a client certificate (routewatch sends none): the
/// server ends every handshake. That is `tls`, never a hung outcome: never killed.
fn scenario_p_mtls_asyncio_service_is_never_killed(cx: &mut Ctx) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    const MTLS_UNIT: &str = "rw-mtls.service";
    const MTLS_PORT: u16 = 18086;
    let dir = fresh_dir(&cx.root, "p");
    // A private CA and a server certificate for 127.0.0.1.
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "routewatch lab CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    fs::write(dir.join("server.pem"), leaf_cert.pem()).unwrap();
    fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
    let server = format!(
        "import asyncio, ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nctx.load_cert_chain('{d}/server.pem', '{d}/server.key')\nctx.load_verify_locations('{d}/ca.pem')\nctx.verify_mode = ssl.CERT_REQUIRED\nasync def handle(r, w):\n    await r.read(1024)\n    w.write(b'HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok')\n    await w.drain()\n    w.close()\nasync def main():\n    srv = await asyncio.start_server(handle, '127.0.0.1', {MTLS_PORT}, ssl=ctx)\n    async with srv:\n        await srv.serve_forever()\nasyncio.run(main())\n",
        d = dir.display()
    );
    start_python_unit(
        &dir,
        "mtls.py",
        &server,
        MTLS_UNIT,
        &[],
        &listens(MTLS_PORT),
    );
    let cfg = dir.join("mtls.yaml");
    fs::write(
        &cfg,
        format!(
            "defaults:\n  timeout: 2s\n  connect_timeout: 1s\n  retries: 1\n  backoff: 50ms\ntargets:\n  - name: mtls\n    base_url: https://127.0.0.1:{MTLS_PORT}\n    tls: {{ ca_file: {}/ca.pem }}\n    unit: {MTLS_UNIT}\n    recovery: {{ action: kill, startup_grace: 0s, cooldown: 0s }}\n    routes:\n      - {{ path: /health, class: core }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let before = facts(MTLS_UNIT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    let after = facts(MTLS_UNIT);
    let _ = in_lab(&["systemctl", "stop", MTLS_UNIT]);
    run.assert_code(1);
    assert_eq!(
        run.doc()["targets"][0]["routes"][0]["outcome"],
        "tls",
        "outcome\n{}",
        run.ctx()
    );
    run.assert_decision("refuse");
    assert!(run.reason().contains("not a hang"), "reason\n{}", run.ctx());
    assert_eq!(after, before, "the mTLS service was killed\n{}", run.ctx());
}

/// A service on a Unix socket whose accept loop is deadlocked: its small accept queue is
/// full, a connect answers EAGAIN at once. That is the hang (`timeout`), not a refusal; the
/// evidence shows the unit's own listener with its queue full; killed and recovered (the
/// restarted process serves).
fn scenario_q_unix_socket_deadlock_is_recovered(cx: &mut Ctx) {
    const UNIX_UNIT: &str = "rw-unix.service";
    let dir = fresh_dir(&cx.root, "q");
    let sock = "/run/rw-unix.sock";
    let marker = dir.join("deadlocked-once");
    let server = format!(
        "import os, socket, time\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\nclass H(BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n    def log_message(self, *a):\n        pass\nclass S(HTTPServer):\n    address_family = socket.AF_UNIX\n    request_queue_size = 2\n    def server_bind(self):\n        try:\n            os.unlink(self.server_address)\n        except FileNotFoundError:\n            pass\n        self.socket.bind(self.server_address)\n    def get_request(self):\n        s, _ = self.socket.accept()\n        return s, ('unix', 0)\nsrv = S('{sock}', H)\nif not os.path.exists('{m}'):\n    open('{m}', 'w').close()\n    while True:\n        time.sleep(3600)\nsrv.serve_forever()\n",
        m = marker.display()
    );
    start_python_unit(
        &dir,
        "unix.py",
        &server,
        UNIX_UNIT,
        &["RestartSec=200ms"],
        &format!("test -S {sock}"),
    );
    // Fill the accept queue (held for 30 s by a process of its own in the lab), and say so
    // in a file once it is full: a busy machine may take a while to start python.
    let full = dir.join("queue-full");
    let flood = format!(
        "import socket, time\nheld = []\nfor _ in range(20):\n    s = socket.socket(socket.AF_UNIX)\n    s.setblocking(False)\n    try:\n        s.connect('{sock}')\n        held.append(s)\n    except BlockingIOError:\n        pass\nopen('{f}', 'w').close()\ntime.sleep(30)\n",
        f = full.display()
    );
    fs::write(dir.join("flood.py"), flood).unwrap();
    let spawn = format!(
        "nohup python3 {} >/dev/null 2>&1 &",
        dir.join("flood.py").display()
    );
    assert_eq!(in_lab(&["sh", "-c", &spawn]).code(), 0, "start the flood");
    let started = Instant::now();
    while !full.exists() {
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "the flood never filled the queue"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let cfg = dir.join("unix.yaml");
    fs::write(
        &cfg,
        format!(
            "defaults:\n  timeout: 500ms\n  connect_timeout: 300ms\n  retries: 1\n  backoff: 50ms\ntargets:\n  - name: unix\n    base_url: unix:{sock}\n    unit: {UNIX_UNIT}\n    recovery: {{ action: kill, startup_grace: 0s, cooldown: 0s, verify_timeout: 15s }}\n    routes:\n      - {{ path: /health, class: core }}\n"
        ),
    )
    .unwrap();
    let before = facts(UNIX_UNIT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    let _ = in_lab(&["pkill", "-f", "flood.py"]);
    let after = facts(UNIX_UNIT);
    let _ = in_lab(&["systemctl", "stop", UNIX_UNIT]);
    eprintln!("e2e q: reason: {}", run.reason());
    assert_eq!(
        run.doc()["targets"][0]["routes"][0]["outcome"],
        "timeout",
        "outcome\n{}",
        run.ctx()
    );
    run.assert_code(3);
    run.assert_decision("act");
    let l = &run.recovery()["evidence"]["listener"];
    assert_eq!(l["in_unit"], true, "evidence\n{}", run.ctx());
    assert!(
        l["queue"].as_u64() >= l["backlog"].as_u64() && l["queue"].as_u64() > Some(0),
        "queue full\n{}",
        run.ctx()
    );
    assert_ne!(
        after.main_pid,
        before.main_pid,
        "killed and restarted\n{}",
        run.ctx()
    );
}

/// A small reverse proxy unit in front of the hung rw-hang, declared with
/// `recovery.through`: the probe goes through the proxy, the app behind it is killed and
/// recovered, the proxy is untouched.
fn scenario_r_through_a_proxy_the_app_is_recovered(cx: &mut Ctx) {
    const PROXY_UNIT: &str = "rw-proxy.service";
    const PROXY_PORT: u16 = 18087;
    let dir = fresh_dir(&cx.root, "r");
    let proxy = format!(
        "import asyncio\nasync def pipe(r, w):\n    try:\n        while True:\n            b = await r.read(65536)\n            if not b:\n                break\n            w.write(b)\n            await w.drain()\n    except Exception:\n        pass\n    finally:\n        w.close()\nasync def handle(cr, cw):\n    try:\n        ur, uw = await asyncio.open_connection('127.0.0.1', {HANG_PORT})\n    except Exception:\n        cw.close()\n        return\n    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))\nasync def main():\n    srv = await asyncio.start_server(handle, '127.0.0.1', {PROXY_PORT})\n    async with srv:\n        await srv.serve_forever()\nasyncio.run(main())\n"
    );
    start_python_unit(
        &dir,
        "proxy.py",
        &proxy,
        PROXY_UNIT,
        &[],
        &listens(PROXY_PORT),
    );
    let cfg = dir.join("through.yaml");
    fs::write(
        &cfg,
        format!(
            "defaults:\n  timeout: 300ms\n  connect_timeout: 200ms\n  retries: 1\n  backoff: 50ms\ntargets:\n  - name: app\n    base_url: http://127.0.0.1:{PROXY_PORT}\n    unit: {HANG_UNIT}\n    recovery: {{ action: kill, startup_grace: 0s, cooldown: 0s, verify_timeout: 10s, through: {PROXY_UNIT} }}\n    routes:\n      - {{ path: /health, class: core }}\n"
        ),
    )
    .unwrap();
    let before = facts(HANG_UNIT);
    let proxy_before = facts(PROXY_UNIT);
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    let proxy_after = facts(PROXY_UNIT);
    let _ = in_lab(&["systemctl", "stop", PROXY_UNIT]);
    eprintln!("e2e r: reason: {}", run.reason());
    run.assert_code(3);
    run.assert_decision("act");
    let ev = &run.recovery()["evidence"];
    assert_eq!(ev["through"], PROXY_UNIT, "evidence\n{}", run.ctx());
    assert_eq!(
        ev["listener"]["in_unit"],
        true,
        "the proxy serves it\n{}",
        run.ctx()
    );
    assert_eq!(
        ev["own_listeners"][0]["address"],
        format!("127.0.0.1:{HANG_PORT}"),
        "the app's own listener\n{}",
        run.ctx()
    );
    assert_killed_and_back(run.recovery(), &before, &run.ctx());
    assert_eq!(
        proxy_after,
        proxy_before,
        "the proxy was touched\n{}",
        run.ctx()
    );
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// The probed port is served by another unit than the one named (a stale or mistyped
/// port): never a kill of either, and the refusal names who serves it. Runs after b, which
/// leaves rw-hang hung; the probe file blames rw-plain for rw-hang's port.
fn scenario_l_port_of_another_unit_refuses(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "l");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "wrong-port",
            port: HANG_PORT,
            unit: Some(PLAIN_UNIT),
        },
    );
    let hang_before = facts(HANG_UNIT);
    let plain_before = facts(PLAIN_UNIT);
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(1);
    run.assert_decision("refuse");
    let reason = run.reason().to_lowercase();
    assert!(
        reason.contains(&format!("127.0.0.1:{HANG_PORT} is served by pid"))
            && reason.contains(HANG_UNIT)
            && reason.contains(&format!("not by {PLAIN_UNIT}")),
        "reason\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(HANG_UNIT),
        hang_before,
        "nothing may be killed\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(PLAIN_UNIT),
        plain_before,
        "nothing may be killed\n{}",
        run.ctx()
    );
}

/// b. hung again right away, same state dir: the cooldown refuses.
fn scenario_b_cooldown_refuses(cx: &mut Ctx) {
    let dir = cx.root.join("a-b");
    let cfg = dir.join("hang.yaml");
    let before = facts(HANG_UNIT);
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(1);
    run.assert_decision("refuse");
    assert!(run.reason().contains("cooldown"), "reason\n{}", run.ctx());
    assert_eq!(
        facts(HANG_UNIT),
        before,
        "nothing may be killed\n{}",
        run.ctx()
    );
}

/// c. every response 429 with Retry-After: 0: unknown, exit 0, never killed.
fn scenario_c_rate_limited_is_not_hung(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "c");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "limited",
            port: LIMIT_PORT,
            unit: Some(LIMIT_UNIT),
        },
    );
    let before = facts(LIMIT_UNIT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(0);
    assert_eq!(run.doc()["status"], "unknown", "status\n{}", run.ctx());
    assert_eq!(run.target()["verdict"], "unknown", "verdict\n{}", run.ctx());
    let routes = run.target()["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!routes.is_empty(), "routes\n{}", run.ctx());
    for r in &routes {
        assert_eq!(r["outcome"], "rate_limited", "route outcome\n{}", run.ctx());
    }
    assert!(
        run.recovery().is_null() || run.decision() != "act",
        "a 429 is never a reason to act\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(LIMIT_UNIT),
        before,
        "nothing may be killed\n{}",
        run.ctx()
    );
}

/// d. hung unit with Restart=no: a kill would leave it dead, refuse.
fn scenario_d_restart_no_refuses(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "d");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "norestart",
            port: NORESTART_PORT,
            unit: Some(NORESTART_UNIT),
        },
    );
    let before = facts(NORESTART_UNIT);
    assert_eq!(before.active_state, "active", "{before:?}");
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(1);
    run.assert_decision("refuse");
    assert!(run.reason().contains("restart=no"), "reason\n{}", run.ctx());
    assert_eq!(
        facts(NORESTART_UNIT),
        before,
        "nothing may be killed\n{}",
        run.ctx()
    );
}

/// e. hung port, target without a unit: unhealthy, no recovery at all.
fn scenario_e_no_unit_no_recovery(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "e");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "nounit",
            port: NORESTART_PORT,
            unit: None,
        },
    );
    let before = facts(NORESTART_UNIT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(1);
    assert_eq!(
        run.target()["verdict"],
        "unhealthy",
        "verdict\n{}",
        run.ctx()
    );
    assert_eq!(
        run.target()["routes"][0]["outcome"],
        "timeout",
        "route outcome\n{}",
        run.ctx()
    );
    assert!(
        run.recovery().is_null(),
        "recovery must be null\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(NORESTART_UNIT),
        before,
        "nothing may be killed\n{}",
        run.ctx()
    );
}

/// f. unit that does not exist: refuse (not loaded / not found), no panic.
fn scenario_f_unknown_unit_refuses(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "f");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "nosuch",
            port: NORESTART_PORT,
            unit: Some("rw-no-such.service"),
        },
    );
    let before = facts(NORESTART_UNIT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(1);
    run.assert_decision("refuse");
    let reason = run.reason();
    assert!(
        [
            "not-found",
            "not found",
            "not loaded",
            "not_found",
            "no such unit"
        ]
        .iter()
        .any(|w| reason.contains(w)),
        "reason must say the unit is not loaded/not found\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(NORESTART_UNIT),
        before,
        "nothing may be killed\n{}",
        run.ctx()
    );
}

/// g. --dry-run on a freshly hung unit: says it would SIGKILL the PID, doesn't.
fn scenario_g_dry_run(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "g");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
    );
    make_hung(HANG_PORT);
    let before = facts(HANG_UNIT);
    let run = routewatch(&cfg, &dir.join("state"), &["--dry-run"]);
    run.assert_code(1);
    run.assert_decision("dry_run");
    let rec = run.recovery();
    let text = rec.to_string().to_lowercase();
    let pid = before.main_pid.to_string();
    assert!(
        text.contains("kill"),
        "dry run must say it would SIGKILL\n{}",
        run.ctx()
    );
    assert!(
        rec["pid"].as_u64() == Some(u64::from(before.main_pid)) || text.contains(&pid),
        "dry run must name MainPID {pid}\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(HANG_UNIT),
        before,
        "a dry run kills nothing\n{}",
        run.ctx()
    );
}

/// h. two simultaneous runs, same state dir: exactly one kill.
fn scenario_h_concurrent_runs_kill_once(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "h");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
    );
    make_hung(HANG_PORT);
    let before = facts(HANG_UNIT);
    let state = dir.join("state");
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (cfg, state, barrier) = (cfg.clone(), state.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                routewatch(&cfg, &state, &[])
            })
        })
        .collect();
    let runs: Vec<Run> = handles
        .into_iter()
        .map(|h| h.join().expect("run thread"))
        .collect();
    let both = || format!("{}\n\n{}", runs[0].ctx(), runs[1].ctx());
    let acted: Vec<&Run> = runs
        .iter()
        .filter(|r| r.doc.is_some() && r.decision() == "act")
        .collect();
    assert_eq!(acted.len(), 1, "exactly one run must act\n{}", both());
    let winner = acted[0];
    winner.assert_code(3);
    let other = runs
        .iter()
        .find(|r| !std::ptr::eq(*r, winner))
        .expect("two runs");
    let other_ok = match other.code() {
        // healthy by the time it probed (the winner's kill came first)
        0 => other.recovery().is_null() || other.decision() != "act",
        // refused: state lock held by the winner, or the winner's cooldown
        1 => other.decision() == "refuse",
        // could not run: the lock was not obtained
        4 => {
            let all = format!("{}{}", other.out.stdout, other.out.stderr).to_lowercase();
            all.contains("lock")
        }
        _ => false,
    };
    assert!(
        other_ok,
        "the second run must refuse (lock/cooldown) or find it healthy\n{}",
        both()
    );
    eprintln!(
        "e2e h: second run: exit {}, recovery {}",
        other.code(),
        other
            .doc
            .as_ref()
            .map_or_else(|| "-".to_string(), |_| other.recovery().to_string())
    );
    let after = wait_new_main_pid(HANG_UNIT, before.main_pid, Duration::from_millis(5_000));
    assert_eq!(
        after.n_restarts,
        before.n_restarts + 1,
        "exactly one restart: {before:?} -> {after:?}\n{}",
        both()
    );
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// i. the shipped, hardened unit, run for real: a healthy check, the probe on
/// the loopback, its state written to $STATE_DIRECTORY.
fn scenario_i_shipped_unit_healthy(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "i");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "plain",
            port: PLAIN_PORT,
            unit: Some(PLAIN_UNIT),
        },
    );
    let before = facts(PLAIN_UNIT);
    let run = run_shipped_unit(cx, &cfg, &[]);
    run.assert_success(0);
    run.assert_sandboxed();
    let report = run.report.as_ref().expect("checked by assert_success");
    assert_eq!(report["status"], "healthy", "status\n{}", run.ctx());
    assert_eq!(
        report["targets"][0]["routes"][0]["outcome"],
        "ok",
        "route outcome\n{}",
        run.ctx()
    );
    let state = run.state_file();
    assert_eq!(
        state["targets"]["plain"]["last_verdict"],
        "healthy",
        "state.json\n{state}\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(PLAIN_UNIT),
        before,
        "nothing may be killed\n{}",
        run.ctx()
    );

    // With nothing to recover the tool gives up CAP_KILL as well (capset,
    // which the unit's SystemCallFilter= allows again after ~@privileged).
    let run = run_shipped_unit(cx, &cfg, &["--no-recover", "-vv"]);
    run.assert_success(0);
    assert!(
        run.journal.contains("event=capabilities_dropped")
            && !run.journal.contains("event=capabilities_not_dropped"),
        "capabilities must be dropped under the unit's SystemCallFilter=\n{}",
        run.ctx()
    );
}

/// j. the shipped unit recovers a hung unit: exit 3 is a success of the
/// service, and the kill (D-Bus, pidfd, CAP_KILL) works inside the sandbox.
fn scenario_j_shipped_unit_recovers(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "j");
    let cfg = probe_file_with_cooldown(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
        "0s",
    );
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
    let before = facts(HANG_UNIT);
    assert_eq!(before.active_state, "active", "{before:?}");
    make_hung(HANG_PORT);
    let run = run_shipped_unit(cx, &cfg, &[]);
    eprintln!(
        "e2e j: systemctl start {SERVICE} (hung {HANG_UNIT}) -> recovered: {} ms",
        run.start.elapsed.as_millis()
    );
    run.assert_success(3);
    run.assert_sandboxed();
    let report = run.report.as_ref().expect("checked by assert_success");
    assert_eq!(report["status"], "recovered", "status\n{}", run.ctx());
    let rec = &report["targets"][0]["recovery"];
    assert_eq!(rec["decision"], "act", "recovery.decision\n{}", run.ctx());
    assert_killed_and_back(rec, &before, &run.ctx());
    let state = run.state_file();
    let actions = state["targets"]["hang"]["actions"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        actions,
        1,
        "the kill is recorded in state.json\n{state}\n{}",
        run.ctx()
    );
    assert_eq!(
        state["targets"]["hang"]["recoveries_total"]["recovered"], 1,
        "and counted for routewatch_recoveries_total\n{state}"
    );
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// t. under the shipped unit (stderr is the journal) routewatch sends native journal
/// entries: `journalctl -o json` reads back each event's fields and its fixed MESSAGE_ID.
fn scenario_t_native_journal_fields(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "t");
    let cfg = probe_file_with_cooldown(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
        "0s",
    );
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
    let before = facts(HANG_UNIT);
    make_hung(HANG_PORT);
    let run = run_shipped_unit(cx, &cfg, &[]);
    run.assert_success(3);
    let id = run.prop("InvocationID").to_string();
    assert!(!id.is_empty(), "{}", run.ctx());
    let own = format!("_SYSTEMD_INVOCATION_ID={id}");
    let o = in_lab(&[
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        &own,
        "SYSLOG_IDENTIFIER=routewatch",
    ]);
    assert!(o.status.success(), "journalctl -o json: {}", o.stderr);
    let entries: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ctx = format!("{}\n--- journalctl -o json\n{}", run.ctx(), o.stdout);
    let event = |name: &str| {
        entries
            .iter()
            .find(|e| e["ROUTEWATCH_EVENT"] == name)
            .unwrap_or_else(|| panic!("no {name} entry\n{ctx}"))
    };
    for e in &entries {
        let name = e["ROUTEWATCH_EVENT"].as_str().unwrap_or_default();
        assert_eq!(e["_TRANSPORT"], "journal", "a native entry\n{ctx}");
        assert_eq!(
            e["MESSAGE_ID"].as_str(),
            Some(routewatch::log::message_id(name).as_str()),
            "the fixed MESSAGE_ID of {name}\n{ctx}"
        );
        let message = e["MESSAGE"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("level=") && message.contains(&format!(" event={name}")),
            "MESSAGE is the key=value line\n{ctx}"
        );
    }
    let failed = event("probe_failed");
    assert_eq!(failed["ROUTEWATCH_TARGET"], "hang", "{ctx}");
    assert_eq!(failed["ROUTEWATCH_ROUTE"], "/health", "{ctx}");
    assert_eq!(failed["ROUTEWATCH_OUTCOME"], "timeout", "{ctx}");
    assert_eq!(failed["PRIORITY"], "4", "warning\n{ctx}");
    let kill = event("recovery_kill");
    assert_eq!(kill["ROUTEWATCH_UNIT"], HANG_UNIT, "{ctx}");
    assert_eq!(
        kill["ROUTEWATCH_PID"].as_str(),
        Some(before.main_pid.to_string().as_str()),
        "{ctx}"
    );
    assert_eq!(
        event("recovery_verified")["ROUTEWATCH_OUTCOME"],
        "recovered"
    );
    // Selectable by field, as an operator would.
    let o = in_lab(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        &own,
        "ROUTEWATCH_TARGET=hang",
        &format!(
            "MESSAGE_ID={}",
            routewatch::log::message_id("recovery_kill")
        ),
    ]);
    assert_eq!(
        o.stdout.lines().count(),
        1,
        "one kill, selected by field\n{}",
        o.stdout
    );
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// Runs of scenario k.
const TIMING_RUNS: usize = 5;

/// k. recovery timing for the release note: hang, run, recovered, 5 times;
/// each run with a fresh state directory. Only exit 3 is asserted.
fn scenario_k_recovery_timing(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "k");
    let cfg = probe_file_with_cooldown(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
        "0s",
    );
    for i in 1..=TIMING_RUNS {
        wait_healthy(HANG_PORT, Duration::from_millis(5_000));
        make_hung(HANG_PORT);
        let before = facts(HANG_UNIT);
        let run = routewatch(&cfg, &dir.join(format!("state-{i}")), &[]);
        run.assert_code(3);
        let rec = run.recovery();
        eprintln!(
            "e2e k: run {i}/{TIMING_RUNS}: start of run -> recovered: {} ms \
             (recovery: confirm_ms={}, act_ms={}, verify_ms={}, total_ms={})",
            run.out.elapsed.as_millis(),
            rec["confirm_ms"],
            rec["act_ms"],
            rec["verify_ms"],
            rec["total_ms"]
        );
        cx.timings.push(run.out.elapsed);
        // The next hang must reach the new process, not the dying one.
        wait_new_main_pid(HANG_UNIT, before.main_pid, Duration::from_millis(5_000));
    }
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

/// (values in ms, median in ms) of run wall times.
/// n. a silenced hung unit is probed and reported but not killed; once the silence is
/// cleared, the next run recovers it.
fn scenario_s_silenced_hung_unit_is_not_killed(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "s");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
    );
    let state = dir.join("state");
    let state_arg = state.to_str().expect("utf-8 path");
    let set = in_lab(&[
        BIN,
        "silence",
        "hang",
        "--for",
        "10m",
        "--reason",
        "e2e deploy",
        "--state-dir",
        state_arg,
    ]);
    assert!(
        set.status.success(),
        "silence: {} {}",
        set.stdout,
        set.stderr
    );
    let before = facts(HANG_UNIT);
    assert_eq!(before.active_state, "active", "{before:?}");
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &state, &[]);
    run.assert_code(1);
    run.assert_decision("refuse");
    assert!(
        run.reason().starts_with("silenced until") && run.reason().ends_with("e2e deploy"),
        "reason\n{}",
        run.ctx()
    );
    assert_eq!(
        facts(HANG_UNIT),
        before,
        "a silenced unit is never killed\n{}",
        run.ctx()
    );
    let clear = in_lab(&[BIN, "silence", "--clear", "hang", "--state-dir", state_arg]);
    assert!(
        clear.status.success(),
        "silence --clear: {} {}",
        clear.stdout,
        clear.stderr
    );
    let run = routewatch(&cfg, &state, &[]);
    run.assert_code(3);
    assert_killed_and_back(run.recovery(), &before, &run.ctx());
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

const SHIPPED_TIMER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/routewatch.timer");
const TIMER: &str = "routewatch.timer";

/// `routewatch doctor --format json` inside the lab: (exit code, checks by name).
fn doctor(cfg: &Path, state_dir: &Path) -> (i32, BTreeMap<String, Value>, String) {
    let o = in_lab(&[
        BIN,
        "doctor",
        "--config",
        cfg.to_str().expect("utf-8 path"),
        "--state-dir",
        state_dir.to_str().expect("utf-8 path"),
        "--format",
        "json",
    ]);
    let ctx = format!("doctor: exit {}\n{}\n{}", o.code(), o.stdout, o.stderr);
    let doc: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{ctx}"));
    let checks = doc["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks\n{ctx}"))
        .iter()
        .map(|c| (c["check"].as_str().unwrap_or("").to_string(), c.clone()))
        .collect();
    (o.code(), checks, ctx)
}

fn check_status<'a>(checks: &'a BTreeMap<String, Value>, name: &str, ctx: &str) -> &'a str {
    checks
        .get(name)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no check {name:?}\n{ctx}"))
}

/// An empty timer setting resets every one of them: then two that cannot fire during the
/// test.
fn timer_dropin(first: &str) -> String {
    format!("[Timer]\nOnBootSec=\nOnActiveSec={first}\nOnUnitActiveSec=45min\n")
}

/// The timer as shipped, installed in the lab with a drop-in that keeps it from firing
/// during the test (the shipped OnBootSec=5min could, in a lab booted minutes ago).
fn install_timer(cx: &Ctx, first: &str) {
    let host = fresh_dir(&cx.root, "timer");
    let shipped =
        fs::read_to_string(SHIPPED_TIMER).unwrap_or_else(|e| panic!("{SHIPPED_TIMER}: {e}"));
    install_in_lab(
        &host.join(TIMER),
        &shipped,
        &format!("{LAB_UNIT_DIR}/{TIMER}"),
    );
    install_in_lab(
        &host.join("later.conf"),
        &timer_dropin(first),
        &format!("{LAB_UNIT_DIR}/{TIMER}.d/later.conf"),
    );
}

/// v. `routewatch doctor` against the real systemd: a clean deployment (the shipped service
/// and timer, a target whose unit restarts after a kill) passes; a timer edited on disk
/// without `daemon-reload` fails with that fix; a kill target with `Restart=no` fails.
fn scenario_v_doctor_checks_the_deployment(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "v");
    let cfg = probe_file(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
    );
    // The service has run once (exit 0), from the shipped unit.
    let run = run_shipped_unit(cx, &cfg, &[]);
    run.assert_success(0);
    let state = run.state_dir.clone();
    install_timer(cx, "40min");
    for args in [
        &["systemctl", "daemon-reload"][..],
        &["systemctl", "enable", "--runtime", "--now", TIMER],
    ] {
        let o = in_lab(args);
        assert!(o.status.success(), "{args:?}: {}{}", o.stdout, o.stderr);
    }

    let (code, checks, ctx) = doctor(&cfg, &state);
    assert_eq!(code, 0, "a clean deployment passes\n{ctx}");
    for name in [
        "probe file",
        "probe file trusted",
        "state directory",
        "routewatch.timer loaded",
        "routewatch.timer reloaded",
        "routewatch.timer enabled",
        "routewatch.timer active",
        "routewatch.timer schedule",
        "routewatch.service loaded",
        "routewatch.service last run",
        "routewatch.service may kill",
        "target hang: rw-hang.service loaded",
        "target hang: rw-hang.service comes back after a kill",
    ] {
        assert_eq!(check_status(&checks, name, &ctx), "ok", "{name}\n{ctx}");
    }
    let schedule = checks["routewatch.timer schedule"]["detail"].to_string();
    assert!(
        schedule.contains("OnActiveSec=40m") && schedule.contains("OnUnitActiveSec=45m"),
        "the loaded schedule, in the unit file's words\n{ctx}"
    );

    // The timer edited on disk, not reloaded: the seed incident.
    let host = fresh_dir(&cx.root, "timer-edit");
    install_in_lab(
        &host.join("later.conf"),
        &timer_dropin("50min"),
        &format!("{LAB_UNIT_DIR}/{TIMER}.d/later.conf"),
    );
    let (code, checks, ctx) = doctor(&cfg, &state);
    assert_eq!(code, 1, "{ctx}");
    let reloaded = &checks["routewatch.timer reloaded"];
    assert_eq!(reloaded["status"], "fail", "{ctx}");
    assert_eq!(reloaded["fix"], "systemctl daemon-reload", "{ctx}");
    let o = in_lab(&["systemctl", "daemon-reload"]);
    assert!(o.status.success(), "{}", o.stderr);
    let (code, _, ctx) = doctor(&cfg, &state);
    assert_eq!(code, 0, "reloaded, clean again\n{ctx}");

    // A kill target whose unit would stay down.
    let cfg = probe_file(
        &dir,
        &Target {
            name: "norestart",
            port: NORESTART_PORT,
            unit: Some(NORESTART_UNIT),
        },
    );
    let (code, checks, ctx) = doctor(&cfg, &state);
    assert_eq!(code, 1, "{ctx}");
    let back = &checks["target norestart: rw-norestart.service comes back after a kill"];
    assert_eq!(back["status"], "fail", "{ctx}");
    assert!(
        back["detail"].as_str().unwrap_or("").contains("Restart=no"),
        "{ctx}"
    );

    let o = in_lab(&["systemctl", "disable", "--runtime", "--now", TIMER]);
    assert!(o.status.success(), "{}", o.stderr);
}

/// u. a kill whose restart would trip the unit's start limit (StartLimitBurst=1 within an
/// hour, and the unit started minutes ago) is refused, read from the real systemd; with the
/// limit lifted, the same hang is recovered.
fn scenario_u_start_limit_refuses_the_kill(cx: &mut Ctx) {
    let dir = fresh_dir(&cx.root, "u");
    let cfg = probe_file_with_cooldown(
        &dir,
        &Target {
            name: "hang",
            port: HANG_PORT,
            unit: Some(HANG_UNIT),
        },
        "0s",
    );
    let dropin = format!("{LAB_UNIT_DIR}/{HANG_UNIT}.d/limit.conf");
    install_in_lab(
        &dir.join("limit.conf"),
        "[Unit]\nStartLimitIntervalSec=1h\nStartLimitBurst=1\n",
        &dropin,
    );
    let o = in_lab(&["systemctl", "daemon-reload"]);
    assert!(o.status.success(), "{}", o.stderr);
    let before = facts(HANG_UNIT);
    make_hung(HANG_PORT);
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    let refused = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run.assert_code(1);
        run.assert_decision("refuse");
        let why = run.reason();
        assert!(
            why.contains("start limit") && why.contains("startlimitburst=1"),
            "reason\n{}",
            run.ctx()
        );
        assert_eq!(facts(HANG_UNIT), before, "nothing killed\n{}", run.ctx());
    }));
    let o = in_lab(&["rm", "-f", &dropin]);
    assert!(o.status.success(), "{}", o.stderr);
    let o = in_lab(&["systemctl", "daemon-reload"]);
    assert!(o.status.success(), "{}", o.stderr);
    if let Err(e) = refused {
        panic::resume_unwind(e);
    }
    let run = routewatch(&cfg, &dir.join("state"), &[]);
    run.assert_code(3);
    assert_killed_and_back(run.recovery(), &before, &run.ctx());
    wait_healthy(HANG_PORT, Duration::from_millis(5_000));
}

fn median_ms(times: &[Duration]) -> (Vec<u128>, u128) {
    let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    let mut sorted = ms.clone();
    sorted.sort_unstable();
    let n = sorted.len();
    let median = match n {
        0 => 0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    };
    (ms, median)
}

type Scenario = fn(&mut Ctx);

#[test]
fn real_systemd_recovery() {
    let lab = match Lab::start() {
        Ok(lab) => lab,
        Err(reason) if e2e_required() => {
            panic!("real-systemd e2e required (ROUTEWATCH_E2E=required) but: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping real-systemd e2e: {reason}");
            return;
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("e2e-recovery-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir under CARGO_TARGET_TMPDIR");
    let mut cx = Ctx {
        root: tmp.path().to_path_buf(),
        recovered_in: None,
        state_dir: None,
        timings: Vec::new(),
    };

    // (name, scenario, kills of rw-hang that are the point of the scenario)
    let scenarios: [(&str, Scenario, u32); 22] = [
        (
            "a: hung unit is killed and recovered",
            scenario_a_hung_is_recovered,
            1,
        ),
        (
            "b: cooldown refuses a second kill",
            scenario_b_cooldown_refuses,
            0,
        ),
        (
            "l: a port served by another unit is refused, the owner named",
            scenario_l_port_of_another_unit_refuses,
            0,
        ),
        (
            "o: a full state disk right before acting kills nothing",
            scenario_o_full_state_disk_kills_nothing,
            0,
        ),
        (
            "p: an asyncio TLS service that requires a client certificate is never killed",
            scenario_p_mtls_asyncio_service_is_never_killed,
            0,
        ),
        (
            "q: a deadlocked service on a Unix socket with a full queue is recovered",
            scenario_q_unix_socket_deadlock_is_recovered,
            0,
        ),
        (
            "c: 429s are never a kill",
            scenario_c_rate_limited_is_not_hung,
            0,
        ),
        ("d: Restart=no is refused", scenario_d_restart_no_refuses, 0),
        ("e: no unit, no recovery", scenario_e_no_unit_no_recovery, 0),
        (
            "f: unknown unit is refused",
            scenario_f_unknown_unit_refuses,
            0,
        ),
        ("g: dry run kills nothing", scenario_g_dry_run, 0),
        (
            "h: concurrent runs kill once",
            scenario_h_concurrent_runs_kill_once,
            1,
        ),
        (
            "i: shipped hardened unit, healthy run",
            scenario_i_shipped_unit_healthy,
            0,
        ),
        (
            "j: shipped hardened unit recovers a hung unit",
            scenario_j_shipped_unit_recovers,
            1,
        ),
        (
            "t: under the shipped unit, native journal entries with fields and MESSAGE_ID",
            scenario_t_native_journal_fields,
            1,
        ),
        (
            "m: a deadlocked accept loop with a full queue is recovered",
            scenario_m_deadlocked_accept_loop_is_recovered,
            1,
        ),
        (
            "n: a SIGQUIT dump leaves the stacks in the journal, then the kill",
            scenario_n_dump_leaves_the_stacks_in_the_journal,
            1,
        ),
        (
            "r: through a declared proxy unit the app behind it is recovered",
            scenario_r_through_a_proxy_the_app_is_recovered,
            1,
        ),
        (
            "k: recovery timing, 5 runs",
            scenario_k_recovery_timing,
            TIMING_RUNS as u32,
        ),
        (
            "s: a silenced hung unit is not killed, then recovered once cleared",
            scenario_s_silenced_hung_unit_is_not_killed,
            1,
        ),
        (
            "u: a kill that would trip the start limit is refused",
            scenario_u_start_limit_refuses_the_kill,
            1,
        ),
        (
            "v: doctor passes a clean deployment, fails a stale timer and Restart=no",
            scenario_v_doctor_checks_the_deployment,
            0,
        ),
    ];
    let mut failed: Vec<String> = Vec::new();
    let mut wrong_kills = 0u32;
    // While working on one scenario: `ROUTEWATCH_E2E_ONLY=t,i` runs only those (never set
    // in CI, where every scenario runs).
    let only = std::env::var("ROUTEWATCH_E2E_ONLY").ok();
    assert!(
        only.is_none() || std::env::var_os("ROUTEWATCH_CI").is_none(),
        "ROUTEWATCH_E2E_ONLY is for development; CI runs every scenario"
    );
    for (name, scenario, expected_kills) in scenarios {
        if let Some(only) = &only
            && !only.split(',').any(|l| name.starts_with(&format!("{l}:")))
        {
            eprintln!("e2e: {name}: not run (ROUTEWATCH_E2E_ONLY={only})");
            continue;
        }
        // b reuses a's state (the recorded kill): meaningless without it.
        if name.starts_with("b:") && failed.iter().any(|f| f.starts_with("a:")) {
            failed.push(format!("{name} (not run: a failed)"));
            continue;
        }
        let before = all_facts();
        let started = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| scenario(&mut cx)));
        let after = all_facts();
        let mut kills = kills_between(&before, &after);
        // The kills of rw-hang that are the point of a, h, j, t, m, n, r, k, s and u.
        if let Some(k) = kills.get_mut(HANG_UNIT) {
            *k = k.saturating_sub(expected_kills);
        }
        let wrong: u32 = kills.values().sum();
        wrong_kills += wrong;
        let verdict = match (&result, wrong) {
            (Ok(()), 0) => "ok",
            _ => "FAILED",
        };
        eprintln!(
            "e2e {name}: {verdict} in {} ms{}",
            started.elapsed().as_millis(),
            if wrong > 0 {
                format!(" (wrong kills: {kills:?})")
            } else {
                String::new()
            }
        );
        if result.is_err() || wrong > 0 {
            failed.push(name.to_string());
        }
    }
    if let Some(d) = cx.recovered_in {
        eprintln!(
            "e2e: time from start of run to recovered (a): {} ms",
            d.as_millis()
        );
    }
    if !cx.timings.is_empty() {
        let (ms, median) = median_ms(&cx.timings);
        eprintln!(
            "e2e: time from start of run to recovered (k, {} runs): {ms:?} ms, median {median} ms",
            ms.len()
        );
    }
    eprintln!(
        "e2e: wrong kills (any kill besides those that are the point of a, h, j, t, m, n, r, k, s, u): {wrong_kills}"
    );
    drop(lab);
    // The shipped unit's state directory on the host's /var/lib.
    drop(cx);
    assert_eq!(wrong_kills, 0, "wrong kills");
    assert!(failed.is_empty(), "failed scenarios: {failed:#?}");
}
