//! Recovery refusal paths and D-Bus error handling, fast, against a fake systemd.
//!
//! Each test starts a private `dbus-daemon`, serves a fake `org.freedesktop.systemd1` on it
//! with zbus (`Manager.LoadUnit`/`RestartUnit`, the `Unit` and `Service` properties), points
//! the real `routewatch` binary at it through `DBUS_SYSTEM_BUS_ADDRESS`, and probes a local
//! HTTP server that accepts and never answers (or answers on demand). The fake counts
//! `RestartUnit` calls, so every refusal also proves that nothing was restarted.
//!
//! Nothing here can signal a real process: the fake's MainPID is far above any `pid_max`,
//! except in the `kill_*` tests, where it is a `sleep` this test spawned itself.
//!
//! The real-systemd end-to-end tests are `e2e_recovery.rs`; these complement them.

mod bus;
mod lab;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bus::{FAKE_PID, FAKE_PID_AFTER, now_us};
use lab::{Lab, Mode, RUN_DEADLINE, UNIT};
use serde_json::Value;

// ------------------------------------------------------------------ refusals on the unit

#[test]
fn a_unit_systemd_does_not_know_is_refused() {
    let lab = Lab::start();
    lab.fake.remove_unit(UNIT);
    let run = lab.check(&lab.probe_file(&[]), &[]);
    run.expect(1, "refuse", "LoadState=not-found");
    assert!(run.reason().contains("not loaded"), "{run}");
    assert_eq!(run.json()["targets"][0]["routes"][0]["outcome"], "timeout");
    assert_eq!(run.recovery()["pid"], Value::Null, "{run}");
    assert_eq!(lab.fake.load_calls(), 1);
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn a_unit_systemd_is_already_restarting_is_refused() {
    let lab = Lab::start();
    lab.fake.update(UNIT, |u| {
        u.active_state = "activating".into();
        u.sub_state = "auto-restart".into();
    });
    let run = lab.check(&lab.probe_file(&[]), &[]);
    run.expect(1, "refuse", "activating/auto-restart");
    assert!(run.reason().contains("not active/running"), "{run}");
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn main_pid_zero_or_one_is_refused() {
    let lab = Lab::start();
    lab.fake.update(UNIT, |u| u.main_pid = 0);
    let run = lab.check(&lab.probe_file(&[("action", "kill")]), &[]);
    run.expect(1, "refuse", "MainPID 0");
    assert_eq!(run.recovery()["pid"], Value::Null, "{run}");
    // PID 1 is real, so only with action restart, which never signals anything.
    lab.fake.update(UNIT, |u| u.main_pid = 1);
    let run = lab.check(&lab.probe_file(&[]), &[]);
    run.expect(1, "refuse", "MainPID 1");
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn kill_with_restart_no_is_refused() {
    let lab = Lab::start();
    lab.fake.update(UNIT, |u| u.restart = "no".into());
    let run = lab.check(&lab.probe_file(&[("action", "kill")]), &[]);
    run.expect(1, "refuse", "Restart=no");
    assert_eq!(run.recovery()["action"], "kill");
    assert_eq!(run.recovery()["pid"], FAKE_PID, "{run}");
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn a_unit_inside_startup_grace_is_refused() {
    let lab = Lab::start();
    lab.fake.update(UNIT, |u| u.active_enter_us = now_us());
    let run = lab.check(&lab.probe_file(&[("startup_grace", "10m")]), &[]);
    run.expect(1, "refuse", "startup_grace");
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn a_restart_that_would_trip_the_start_limit_is_refused_and_allowed_once_it_would_not() {
    let lab = Lab::start();
    let http = lab.http.clone();
    lab.fake.on_restart(move || http.set(Mode::Ok));
    // StartLimitIntervalSec=1h, StartLimitBurst=2; started 20 minutes ago, and an earlier
    // action 40 minutes ago: the restart would be start 3 within the hour.
    lab.fake.update(UNIT, |u| {
        u.start_limit_interval_us = 3_600_000_000;
        u.start_limit_burst = 2;
        u.active_enter_us = now_us() - 1_200_000_000;
    });
    let earlier = serde_json::json!([{ "at": now_s() - 2400, "unit": UNIT, "action": "restart",
                                       "pid": 4242, "outcome": "recovered" }]);
    write_state(&lab, earlier);
    let cfg = lab.probe_file(&[("cooldown", "1s")]);
    let run = lab.check(&cfg, &[]);
    run.expect(1, "refuse", "start limit");
    let why = run.reason();
    assert!(
        why.contains("StartLimitBurst=2") && why.contains("start-limit-hit"),
        "{run}"
    );
    assert!(lab.fake.restart_calls().is_empty());

    // With the limit raised, the same run acts.
    lab.fake.update(UNIT, |u| u.start_limit_burst = 3);
    lab.check(&cfg, &[]).expect(3, "act", "RestartUnit");
    assert_eq!(lab.fake.restart_calls().len(), 1);
}

// ------------------------------------------------------------------ the state file's refusals

#[test]
fn after_failed_runs_waits_then_acts_once() {
    let lab = Lab::start();
    let http = lab.http.clone();
    lab.fake.on_restart(move || http.set(Mode::Ok));
    let cfg = lab.probe_file(&[("after_failed_runs", "2")]);

    let first = lab.check(&cfg, &[]);
    first.expect(1, "refuse", "after_failed_runs");
    assert_eq!(lab.fake.load_calls(), 0, "refused before asking systemd");
    assert!(lab.fake.restart_calls().is_empty());

    let second = lab.check(&cfg, &[]);
    second.expect(3, "act", "RestartUnit rw-fake.service");
    let rec = second.recovery();
    assert_eq!(rec["outcome"], "recovered", "{second}");
    assert_eq!(rec["pid"], FAKE_PID, "{second}");
    assert_eq!(rec["new_pid"], FAKE_PID_AFTER, "{second}");
    assert_eq!(
        lab.fake.restart_calls(),
        vec![(UNIT.to_string(), "replace".to_string())]
    );
    let actions = &lab.state()["targets"]["api"]["actions"];
    assert_eq!(actions.as_array().map(Vec::len), Some(1), "{actions}");
    assert_eq!(actions[0]["outcome"], "recovered");
    assert_eq!(actions[0]["action"], "restart");
    assert_eq!(actions[0]["pid"], FAKE_PID);
}

#[test]
fn cooldown_forbids_a_second_action() {
    let lab = Lab::start();
    let http = lab.http.clone();
    lab.fake.on_restart(move || http.set(Mode::Ok));
    let cfg = lab.probe_file(&[("cooldown", "15m")]);

    lab.check(&cfg, &[]).expect(3, "act", "RestartUnit");
    lab.http.set(Mode::Hung);
    let again = lab.check(&cfg, &[]);
    again.expect(1, "refuse", "cooldown");
    assert_eq!(lab.fake.restart_calls().len(), 1);
}

#[test]
fn recoveries_total_counts_every_action_across_runs() {
    let lab = Lab::start();
    let http = lab.http.clone();
    lab.fake.on_restart(move || http.set(Mode::Ok));
    let cfg = lab.probe_file(&[("cooldown", "0s")]);

    lab.check(&cfg, &[]).expect(3, "act", "RestartUnit");
    lab.http.set(Mode::Hung);
    // The fake's second restart leaves the same MainPID: the unit is not seen coming back.
    lab.check(&cfg, &[])
        .expect(1, "act", "not back within verify_timeout");
    let totals = &lab.state()["targets"]["api"]["recoveries_total"];
    assert_eq!(totals["recovered"], 1, "{totals}");
    assert_eq!(totals["not_recovered"], 1, "{totals}");
    let status = Command::new(env!("CARGO_BIN_EXE_routewatch"))
        .arg("status")
        .arg("--state-dir")
        .arg(lab.state_dir())
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("actions in all: 1 not_recovered, 1 recovered"),
        "{status}"
    );

    // A healthy run still exports the counter (from the state file), so an alert can use
    // increase() on it.
    let cmd = lab.command(&cfg, &lab.state_dir(), &["--format", "prometheus"]);
    let run = Lab::spawn(cmd).finish(RUN_DEADLINE);
    assert_eq!(run.code, Some(0), "{run}");
    for line in [
        "routewatch_recoveries_total{target=\"api\",outcome=\"recovered\"} 1",
        "routewatch_recoveries_total{target=\"api\",outcome=\"not_recovered\"} 1",
    ] {
        assert!(run.stdout.contains(line), "{line} in\n{}", run.stdout);
    }
}

#[test]
fn max_actions_forbids_acting_again_and_a_failed_verify_exits_1() {
    let lab = Lab::start();
    // The unit comes back (new MainPID) but the server stays hung: not recovered.
    let cfg = lab.probe_file(&[
        ("cooldown", "0s"),
        ("max_actions", "1"),
        ("window", "1h"),
        ("verify_timeout", "500ms"),
    ]);

    let first = lab.check(&cfg, &[]);
    first.expect(1, "act", "/health is timeout");
    assert_eq!(first.recovery()["outcome"], "not_recovered", "{first}");
    assert_eq!(first.recovery()["new_pid"], FAKE_PID_AFTER, "{first}");
    assert_eq!(
        lab.state()["targets"]["api"]["actions"][0]["outcome"],
        "not_recovered"
    );

    let second = lab.check(&cfg, &[]);
    second.expect(1, "refuse", "max_actions");
    assert_eq!(lab.fake.restart_calls().len(), 1);
}

#[test]
fn a_restart_that_never_brings_the_unit_back_is_not_recovered() {
    let lab = Lab::start();
    lab.fake.restart_does_nothing();
    let run = lab.check(&lab.probe_file(&[("verify_timeout", "300ms")]), &[]);
    run.expect(1, "act", "not back within verify_timeout");
    assert!(
        run.reason().contains(&format!("MainPID {FAKE_PID}")),
        "says what systemd still reports:\n{run}"
    );
    assert_eq!(run.recovery()["outcome"], "not_recovered", "{run}");
    assert_eq!(run.recovery()["new_pid"], Value::Null, "{run}");
    assert_eq!(lab.fake.restart_calls().len(), 1);
}

#[test]
fn a_held_state_lock_means_no_action() {
    let lab = Lab::start();
    let dir = lab.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    lock.lock().expect("take the state lock as 'another run'");
    let run = lab.check(&lab.probe_file(&[]), &[]);
    run.expect(1, "refuse", "lock");
    let warnings = run.json()["warnings"].to_string();
    assert!(warnings.contains("holds the lock"), "{run}");
    assert!(lab.fake.restart_calls().is_empty());
    assert!(
        !dir.join("state.json").exists(),
        "no state update without the lock"
    );
    drop(lock);
}

#[test]
fn two_concurrent_runs_act_once() {
    let lab = Lab::start();
    let cfg = lab.probe_file(&[("verify_timeout", "500ms")]);
    let a = Lab::spawn(lab.command(&cfg, &lab.state_dir(), &[]));
    let b = Lab::spawn(lab.command(&cfg, &lab.state_dir(), &[]));
    let runs = [a.finish(RUN_DEADLINE), b.finish(RUN_DEADLINE)];
    assert_eq!(
        lab.fake.restart_calls().len(),
        1,
        "RestartUnit exactly once:\n{}\n{}",
        runs[0],
        runs[1]
    );
    let acted: Vec<&lab::Run> = runs.iter().filter(|r| r.decision() == "act").collect();
    let refused: Vec<&lab::Run> = runs.iter().filter(|r| r.decision() == "refuse").collect();
    assert_eq!(
        (acted.len(), refused.len()),
        (1, 1),
        "{}\n{}",
        runs[0],
        runs[1]
    );
    let why = refused[0].reason();
    assert!(
        why.contains("cooldown") || why.contains("lock"),
        "{}",
        refused[0]
    );
    for r in &runs {
        assert_eq!(r.code, Some(1), "{r}");
    }
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_replaced() {
    let lab = Lab::start();
    let cfg = lab.probe_file(&[]);
    let inputs: [&[u8]; 3] = [b"garbage{{", b"", b"{\"version\":7,\"targets\":{}}"];
    for (i, bad) in inputs.into_iter().enumerate() {
        let dir = lab.dir.path().join(format!("state-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json"), bad).unwrap();
        let run = Lab::spawn(lab.command(&cfg, &dir, &["--no-recover"])).finish(RUN_DEADLINE);
        run.expect(1, "disabled", "--no-recover");
        assert!(
            run.stderr.contains("state_corrupt"),
            "warned on stderr:\n{run}"
        );
        assert!(
            run.json()["warnings"].to_string().contains("corrupt"),
            "{run}"
        );
        assert_eq!(run.json()["targets"][0]["routes"][0]["outcome"], "timeout");

        let fresh: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap())
                .unwrap_or_else(|e| panic!("state.json is valid again ({e})"));
        assert_eq!(fresh["version"], 1);
        assert_eq!(fresh["targets"]["api"]["consecutive_unhealthy"], 1);
        let set_aside: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.json.corrupt-")
            })
            .collect();
        assert_eq!(
            set_aside.len(),
            1,
            "one set-aside file in {}",
            dir.display()
        );
        assert_eq!(std::fs::read(set_aside[0].path()).unwrap(), bad);
    }
}

#[test]
fn an_earlier_set_aside_state_file_is_never_overwritten() {
    let lab = Lab::start();
    let dir = lab.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // Earlier evidence, named as the run would name its own set-aside file now or in the
    // next few seconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let earlier: Vec<_> = (0..4)
        .map(|i| {
            let p = dir.join(format!("state.json.corrupt-{}", now + i));
            std::fs::write(&p, format!("earlier {i}")).unwrap();
            p
        })
        .collect();
    std::fs::write(dir.join("state.json"), b"garbage{{").unwrap();
    let run = lab.check(&lab.probe_file(&[]), &["--no-recover"]);
    run.expect(1, "disabled", "--no-recover");
    for (i, p) in earlier.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            format!("earlier {i}"),
            "{} was overwritten by the new set-aside file:\n{run}",
            p.display()
        );
    }
    let kept = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read(e.path()).is_ok_and(|b| b == b"garbage{{"))
        .count();
    assert_eq!(kept, 1, "the new corrupt file is set aside too:\n{run}");
}

// ------------------------------------------------------------------ D-Bus errors

#[test]
fn access_denied_is_refused_with_a_pointer_to_permissions() {
    let lab = Lab::start();
    lab.fake.deny_all();
    let run = lab.check(&lab.probe_file(&[]), &[]);
    run.expect(1, "refuse", "access denied");
    assert!(run.reason().contains("Permissions"), "{run}");
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn a_denied_restart_is_reported_not_recovered() {
    let lab = Lab::start();
    lab.fake.deny_restart();
    let run = lab.check(&lab.probe_file(&[]), &[]);
    // The action was attempted and failed: `act` with `not_recovered`, recorded for cooldown.
    run.expect(1, "act", "access denied");
    assert!(run.reason().contains("RestartUnit"), "{run}");
    assert_eq!(run.recovery()["outcome"], "not_recovered", "{run}");
    assert_eq!(lab.fake.restart_calls().len(), 1, "tried once, denied");
    let actions = &lab.state()["targets"]["api"]["actions"];
    assert_eq!(actions[0]["outcome"], "failed", "{actions}");
    // A failed attempt counts for the cooldown: the next run does not hammer systemd.
    let again = lab.check(&lab.probe_file(&[]), &[]);
    again.expect(1, "refuse", "cooldown");
    assert_eq!(lab.fake.restart_calls().len(), 1);
}

#[test]
fn a_missing_bus_is_a_clear_refusal_not_a_crash() {
    let lab = Lab::start();
    let gone = format!("unix:path={}/no-such-bus", lab.dir.path().display());
    let mut cmd = lab.command(&lab.probe_file(&[]), &lab.state_dir(), &[]);
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &gone);
    let run = Lab::spawn(cmd).finish(RUN_DEADLINE);
    run.expect(1, "refuse", "cannot connect to the system D-Bus");
    assert!(
        run.reason().contains("no-such-bus"),
        "names the address:\n{run}"
    );
    // A missing socket fails at once with the kernel's answer; a build that waited for the
    // bus would end on its 5 s connect timeout instead, and say so.
    assert!(
        run.reason().contains("No such file") && !run.reason().contains("timed out"),
        "the connect's own error, not a timeout:\n{run}"
    );

    let mut cmd = lab.command(&lab.probe_file(&[]), &lab.state_dir(), &[]);
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", "not-an-address");
    let run = Lab::spawn(cmd).finish(RUN_DEADLINE);
    run.expect(1, "refuse", "cannot connect to the system D-Bus");
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn a_bus_that_never_answers_is_a_refusal_after_the_connect_timeout() {
    let lab = Lab::start();
    // Listening, so connect() succeeds, but nobody ever speaks D-Bus on it.
    let socket = lab.dir.path().join("stuck-bus");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut cmd = lab.command(&lab.probe_file(&[]), &lab.state_dir(), &[]);
    cmd.env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", socket.display()),
    );
    let run = Lab::spawn(cmd).finish(RUN_DEADLINE);
    run.expect(1, "refuse", "cannot connect to the system D-Bus");
    assert!(run.reason().contains("timed out"), "{run}");
}

#[test]
fn a_bus_without_systemd_is_a_clear_refusal() {
    let lab = Lab::without_systemd();
    let run = lab.check(&lab.probe_file(&[]), &[]);
    run.expect(1, "refuse", "org.freedesktop.systemd1");
    assert!(run.reason().contains(UNIT), "{run}");
}

#[test]
fn a_systemd_that_never_answers_does_not_hang_the_run() {
    let lab = Lab::start();
    lab.fake.stall();
    let run = Lab::spawn(lab.command(&lab.probe_file(&[]), &lab.state_dir(), &[]))
        .finish(Duration::from_secs(15));
    assert!(
        !run.timed_out,
        "routewatch hung on a silent systemd:\n{run}"
    );
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.decision(), "refuse", "{run}");
    assert!(run.reason().contains(UNIT), "{run}");
    assert!(lab.fake.restart_calls().is_empty());
}

// ------------------------------------------------------------------ no action by design

#[test]
fn dry_run_says_what_it_would_do_and_to_which_pid() {
    let lab = Lab::start();
    let run = lab.check(&lab.probe_file(&[]), &["--dry-run"]);
    run.expect(
        1,
        "dry_run",
        &format!("would RestartUnit {UNIT} (MainPID {FAKE_PID})"),
    );
    assert_eq!(run.recovery()["pid"], FAKE_PID);

    let run = lab.check(&lab.probe_file(&[("action", "kill")]), &["--dry-run"]);
    run.expect(
        1,
        "dry_run",
        &format!("would SIGKILL MainPID {FAKE_PID} of {UNIT}"),
    );
    assert!(lab.fake.restart_calls().is_empty());
    let actions = &lab.state()["targets"]["api"]["actions"];
    assert_eq!(actions.as_array().map_or(0, Vec::len), 0, "{actions}");
}

#[test]
fn no_recover_is_disabled_and_never_asks_systemd() {
    let lab = Lab::start();
    let run = lab.check(&lab.probe_file(&[]), &["--no-recover"]);
    run.expect(1, "disabled", "--no-recover");
    assert_eq!(lab.fake.load_calls(), 0);
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn action_none_is_disabled_and_never_asks_systemd() {
    let lab = Lab::start();
    let run = lab.check(&lab.probe_file(&[("action", "none")]), &[]);
    run.expect(1, "disabled", "action: none");
    assert_eq!(lab.fake.load_calls(), 0);
    assert!(lab.fake.restart_calls().is_empty());
}

#[test]
fn rate_limited_everywhere_is_unknown_and_never_recovered() {
    let lab = Lab::start();
    lab.http.set(Mode::TooMany);
    let run = lab.check(&lab.probe_file(&[]), &[]);
    assert_eq!(run.code, Some(0), "unknown exits 0:\n{run}");
    assert_eq!(run.verdict(), "unknown", "{run}");
    assert_eq!(
        run.json()["targets"][0]["routes"][0]["outcome"],
        "rate_limited"
    );
    let rec = run.recovery();
    assert!(
        rec.is_null() || rec["decision"] != "act",
        "never recovered:\n{run}"
    );
    assert_eq!(lab.fake.load_calls(), 0);
    assert!(lab.fake.restart_calls().is_empty());
}

// ------------------------------------------------------------------ kill, on our own child

/// A `sleep` this test owns: the only real process a fake MainPID may ever name.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        use std::os::unix::process::CommandExt;
        let mut sleep = Command::new("sleep");
        sleep.arg("30").stdin(Stdio::null());
        // A process started in the background by a non-interactive shell ignores SIGINT and
        // SIGQUIT, and an ignored signal stays ignored across exec: the sleeper starts with
        // the default actions whatever the test runner was started from, as a service does.
        // SAFETY: signal(2) is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            sleep.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
                    if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Sleeper(sleep.spawn().expect("spawn sleep"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("poll sleep").is_none()
    }

    /// The unified-hierarchy cgroup (`0::` line), as routewatch reads it.
    fn cgroup(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid()))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| p.trim().to_string())
    }

    fn wait_for_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(status) = self.0.try_wait().expect("poll sleep") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_refuses_a_pid_outside_the_unit_cgroup() {
    let lab = Lab::start();
    let mut sleeper = Sleeper::spawn();
    let pid = sleeper.pid();
    let foreign = format!("/system.slice/{UNIT}");
    assert_ne!(sleeper.cgroup().as_deref(), Some(foreign.as_str()));
    lab.fake.update(UNIT, |u| {
        u.main_pid = pid;
        u.control_group = foreign.clone();
    });
    let run = lab.check(&lab.probe_file(&[("action", "kill")]), &[]);
    run.expect(1, "refuse", "cgroup");
    assert!(run.reason().contains(&foreign), "{run}");
    assert_eq!(run.recovery()["pid"], pid);
    assert!(
        sleeper.alive(),
        "the process outside the unit was signalled"
    );
}

#[test]
fn kill_refuses_when_main_pid_changes_before_the_signal() {
    let lab = Lab::start();
    let Some(mut sleeper) = sleeper_as_main_pid(&lab) else {
        need_cgroup_line()
    };
    lab.fake
        .update(UNIT, |u| u.then_main_pid = Some(FAKE_PID_AFTER));
    let run = lab.check(&lab.probe_file(&[("action", "kill")]), &[]);
    run.expect(1, "refuse", "MainPID changed");
    assert!(
        sleeper.alive(),
        "a PID that is no longer MainPID was signalled"
    );
}

#[test]
fn kill_signals_the_main_process_through_its_pidfd_and_verifies() {
    let lab = Lab::start();
    let Some(mut sleeper) = sleeper_as_main_pid(&lab) else {
        need_cgroup_line()
    };
    let pid = sleeper.pid();
    // Play systemd: when the main process dies, a new one is up and serving.
    let (fake, http) = (lab.fake.clone(), lab.http.clone());
    let watcher = thread::spawn(move || {
        let status = sleeper.wait_for_exit(RUN_DEADLINE);
        if status.is_some() {
            fake.update(UNIT, |u| {
                u.main_pid = FAKE_PID_AFTER;
                u.invocation_id = vec![0xc3; 16];
                u.n_restarts += 1;
            });
            http.set(Mode::Ok);
        }
        status
    });
    let run = lab.check(&lab.probe_file(&[("action", "kill")]), &[]);
    let status = watcher.join().expect("watcher");
    run.expect(3, "act", &format!("SIGKILL MainPID {pid} of {UNIT}"));
    assert_eq!(status.and_then(|s| s.signal()), Some(9), "{run}");
    assert_eq!(run.recovery()["outcome"], "recovered", "{run}");
    assert_eq!(run.recovery()["new_pid"], FAKE_PID_AFTER, "{run}");
    assert!(lab.fake.restart_calls().is_empty(), "kill, not restart");
}

// ------------------------------------------------------------------ is it the unit's process?

/// A sleeper the fake calls the unit's MainPID, in the right cgroup.
fn sleeper_as_main_pid(lab: &Lab) -> Option<Sleeper> {
    let sleeper = Sleeper::spawn();
    let cgroup = sleeper.cgroup()?;
    let pid = sleeper.pid();
    lab.fake.update(UNIT, |u| {
        u.main_pid = pid;
        u.control_group = cgroup;
    });
    Some(sleeper)
}

fn need_cgroup_line() -> ! {
    panic!(
        "no unified cgroup line in /proc/self/cgroup: these tests need cgroup v2 or a hybrid host"
    )
}

#[test]
fn kill_from_another_pid_namespace_is_refused() {
    // The namespace trap: routewatch in its own PID namespace (a container) talking to the
    // host's bus. MainPID is a number in systemd's namespace; here it would name another
    // process (or none).
    if crate::common::skip_unless_root("a new PID namespace needs root") {
        return;
    }
    let lab = Lab::start();
    let Some(mut sleeper) = sleeper_as_main_pid(&lab) else {
        need_cgroup_line()
    };
    let inner = lab.command(
        &lab.probe_file(&[("action", "kill")]),
        &lab.state_dir(),
        &[],
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = Lab::spawn(cmd).finish(RUN_DEADLINE);
    run.expect(1, "refuse", "not in the PID namespace of systemd's bus");
    assert!(sleeper.alive(), "signalled from another PID namespace");
    let actions = &lab.state()["targets"]["api"]["actions"];
    assert!(
        actions.is_null(),
        "nothing done, nothing recorded: {actions}"
    );
}

/// An empty cgroup of our own, removed on drop: a unit with no process in it.
struct EmptyCgroup(std::path::PathBuf, String);

impl EmptyCgroup {
    fn new(own: &str) -> EmptyCgroup {
        let name = format!(
            "{}/rw-empty-{}",
            own.trim_end_matches('/'),
            std::process::id()
        );
        let dir = routewatch::evidence::cgroup_dir(&name);
        std::fs::create_dir(&dir).expect("create a child cgroup (root, cgroup v2)");
        EmptyCgroup(dir, name)
    }
}

impl Drop for EmptyCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_probed_port_served_by_another_process_is_refused_naming_it() {
    if crate::common::skip_unless_root("creating a cgroup needs root") {
        return;
    }
    let lab = Lab::start();
    let Some(mut sleeper) = sleeper_as_main_pid(&lab) else {
        need_cgroup_line()
    };
    // The unit's cgroup holds none of the processes serving the probed port (this test's
    // own server): a stale port, or a neighbour's.
    let own = sleeper.cgroup().unwrap();
    let empty = EmptyCgroup::new(&own);
    lab.fake.update(UNIT, |u| u.control_group = empty.1.clone());
    let run = lab.check(&lab.probe_file(&[("action", "kill")]), &[]);
    run.expect(
        1,
        "refuse",
        &format!(
            "127.0.0.1:{} is served by PID {}",
            lab.http.port,
            std::process::id()
        ),
    );
    assert!(
        run.reason()
            .contains("killing rw-fake.service would not help"),
        "{run}"
    );
    let ev = &run.recovery()["evidence"]["listener"];
    assert_eq!(ev["in_unit"], false, "{run}");
    assert_eq!(ev["held_by"]["pid"], std::process::id(), "{run}");
    assert!(sleeper.alive(), "the wrong process was signalled");
}

#[test]
fn through_a_declared_proxy_the_unit_is_recovered_and_an_inactive_proxy_refuses() {
    if crate::common::skip_unless_root("creating a cgroup needs root") {
        return;
    }
    let lab = Lab::start();
    // The probed port is served by this test's own server: let it be the proxy's process,
    // and give the unit behind it a cgroup of its own that does not serve the port.
    let own = routewatch::systemd::process_cgroup(std::process::id()).unwrap();
    if own.is_empty() {
        need_cgroup_line()
    }
    let empty = EmptyCgroup::new(&own);
    lab.fake.update(UNIT, |u| u.control_group = empty.1.clone());
    let mut proxy = bus::UnitSpec::running("proxy.service");
    proxy.control_group = own.clone();
    lab.fake.set_unit("proxy.service", proxy);
    let http = lab.http.clone();
    lab.fake.on_restart(move || http.set(Mode::Ok));

    // Without the declaration: the address is not the unit's, refused.
    let run = lab.check(&lab.probe_file(&[]), &[]);
    run.expect(1, "refuse", "declare the proxy with recovery.through");
    assert!(lab.fake.restart_calls().is_empty());

    // Declared, but the proxy is down: its failure is not the unit's hang.
    lab.fake.update("proxy.service", |u| {
        u.active_state = "failed".into();
        u.sub_state = "failed".into();
    });
    let cfg = lab.probe_file(&[("through", "proxy.service")]);
    let run = lab.check(&cfg, &[]);
    run.expect(
        1,
        "refuse",
        "the proxy unit proxy.service is loaded/failed, not active",
    );
    assert!(lab.fake.restart_calls().is_empty());

    // Declared and running: the unit behind it is restarted, the proxy untouched.
    lab.fake.update("proxy.service", |u| {
        u.active_state = "active".into();
        u.sub_state = "running".into();
    });
    let run = lab.check(&cfg, &[]);
    run.expect(3, "act", "RestartUnit rw-fake.service");
    assert!(
        run.reason().contains("probed through proxy.service"),
        "{run}"
    );
    assert_eq!(
        run.recovery()["evidence"]["through"],
        "proxy.service",
        "{run}"
    );
    assert_eq!(
        run.recovery()["evidence"]["listener"]["in_unit"],
        true,
        "{run}"
    );
    assert_eq!(
        lab.fake.restart_calls(),
        vec![(UNIT.to_string(), "replace".to_string())],
        "only the unit behind the proxy"
    );
}

#[test]
fn a_kill_carries_the_kernel_evidence_into_the_report_and_the_record() {
    let lab = Lab::start();
    let Some(mut sleeper) = sleeper_as_main_pid(&lab) else {
        need_cgroup_line()
    };
    let (fake, http) = (lab.fake.clone(), lab.http.clone());
    let pid = sleeper.pid();
    let watcher = thread::spawn(move || {
        if sleeper.wait_for_exit(RUN_DEADLINE).is_some() {
            fake.update(UNIT, |u| {
                u.main_pid = FAKE_PID_AFTER;
                u.invocation_id = vec![0xc3; 16];
            });
            http.set(Mode::Ok);
        }
    });
    let run = lab.check(
        &lab.probe_file(&[("action", "kill")]),
        &["--format", "json"],
    );
    watcher.join().unwrap();
    run.expect(3, "act", &format!("SIGKILL MainPID {pid}"));
    let ev = run.recovery()["evidence"].clone();
    // The probed port is this test's server, which is in the unit's cgroup here.
    assert_eq!(ev["listener"]["in_unit"], true, "{run}");
    assert!(ev["cpu_ms"].is_u64() && ev["window_ms"].is_u64(), "{run}");
    assert!(ev["listener"]["queue"].is_u64(), "{run}");
    assert!(ev["threads"]["total"].as_u64() >= Some(1), "{run}");
    assert!(ev["gather_us"].is_u64(), "{run}");
    assert!(
        run.reason().contains(" thread"),
        "the reason says what the kernel saw: {run}"
    );
    let rec = &lab.state()["targets"]["api"]["actions"][0];
    assert!(
        rec["evidence"]
            .as_str()
            .is_some_and(|e| e.contains(" thread")),
        "{rec}"
    );
}

#[test]
fn dump_sends_its_signal_first_and_a_process_that_leaves_on_it_is_not_killed_again() {
    let lab = Lab::start();
    // `sleep` ends on SIGQUIT (its default action): the dump alone brings it down.
    let Some(mut sleeper) = sleeper_as_main_pid(&lab) else {
        need_cgroup_line()
    };
    let (fake, http) = (lab.fake.clone(), lab.http.clone());
    let watcher = thread::spawn(move || {
        let status = sleeper.wait_for_exit(RUN_DEADLINE);
        if status.is_some() {
            fake.update(UNIT, |u| {
                u.main_pid = FAKE_PID_AFTER;
                u.invocation_id = vec![0xc3; 16];
            });
            http.set(Mode::Ok);
        }
        status
    });
    let cfg = lab.probe_file(&[
        ("action", "kill"),
        ("dump", "{ signal: SIGQUIT, wait: 5s }"),
    ]);
    let run = lab.check(&cfg, &[]);
    let status = watcher.join().unwrap();
    run.expect(3, "act", "SIGQUIT then SIGKILL MainPID");
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(3),
        "ended by the dump: {run}"
    );
    let dump = &run.recovery()["dump"];
    assert_eq!(dump["signal"], "SIGQUIT", "{run}");
    assert_eq!(dump["exited"], true, "{run}");
    assert!(
        dump["journal"]
            .as_str()
            .unwrap()
            .starts_with("journalctl -u rw-fake.service --since @"),
        "{run}"
    );
}

#[test]
fn dump_then_kill_when_the_process_ignores_the_dump_signal() {
    let lab = Lab::start();
    // A process that ignores SIGUSR1 (ignored signals stay ignored across exec).
    let sleeper = Sleeper(
        Command::new("sh")
            .args(["-c", "trap '' USR1; exec sleep 30"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let Some(cgroup) = sleeper.cgroup() else {
        need_cgroup_line()
    };
    let pid = sleeper.pid();
    lab.fake.update(UNIT, |u| {
        u.main_pid = pid;
        u.control_group = cgroup;
    });
    let mut sleeper = sleeper;
    // Wait until `sh` has become `sleep` (the trap is in place).
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() != "sleep") {
        assert!(start.elapsed() < RUN_DEADLINE);
        thread::sleep(Duration::from_millis(5));
    }
    let cfg = lab.probe_file(&[
        ("action", "kill"),
        ("dump", "{ signal: SIGUSR1, wait: 300ms }"),
        ("verify_timeout", "300ms"),
    ]);
    let run = lab.check(&cfg, &[]);
    assert_eq!(run.decision(), "act", "{run}");
    let status = sleeper.wait_for_exit(RUN_DEADLINE);
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(9),
        "SIGKILL after the dump: {run}"
    );
    assert_eq!(run.recovery()["dump"]["exited"], false, "{run}");
}

// ------------------------------------------------------------------ the action record

/// A state file as an earlier run left it.
fn write_state(lab: &Lab, actions: serde_json::Value) {
    std::fs::create_dir_all(lab.state_dir()).unwrap();
    let doc = serde_json::json!({
        "version": 1,
        "targets": { "api": { "consecutive_unhealthy": 3, "last_verdict": "unhealthy",
                              "last_run": now_s() - 60, "actions": actions } }
    });
    std::fs::write(lab.state_dir().join("state.json"), doc.to_string()).unwrap();
}

fn now_s() -> u64 {
    now_us() / 1_000_000
}

#[test]
fn a_pending_action_left_by_a_stopped_run_counts_for_cooldown_and_is_never_reused() {
    let lab = Lab::start();
    let http = lab.http.clone();
    lab.fake.on_restart(move || http.set(Mode::Ok));
    let pending = serde_json::json!([{ "at": now_s() - 3, "unit": UNIT, "action": "restart",
                                       "pid": 4242, "outcome": "pending" }]);
    write_state(&lab, pending);
    let run = lab.check(&lab.probe_file(&[("cooldown", "20m")]), &[]);
    run.expect(1, "refuse", "cooldown");
    assert!(lab.fake.restart_calls().is_empty());
    let warnings = run.json()["warnings"].to_string();
    assert!(warnings.contains("never verified"), "{run}");
    let state = lab.state();
    let actions = state["targets"]["api"]["actions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["outcome"], "interrupted");
    assert_eq!(
        state["targets"]["api"]["recoveries_total"]["not_recovered"],
        1
    );

    // Once the cooldown allows, the new action is a record of its own.
    let run = lab.check(&lab.probe_file(&[("cooldown", "1s")]), &[]);
    run.expect(3, "act", "RestartUnit");
    let actions = lab.state()["targets"]["api"]["actions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(actions.len(), 2, "appended, not merged: {actions:?}");
    assert_eq!(actions[0]["outcome"], "interrupted");
    assert_eq!(actions[0]["pid"], 4242);
    assert_eq!(actions[1]["outcome"], "recovered");
    assert_eq!(actions[1]["pid"], FAKE_PID);
}

#[test]
fn a_stop_while_verifying_keeps_the_action_for_the_next_runs_cooldown() {
    let lab = Lab::start();
    // The restart "never completes": the run stays in verify until it is stopped.
    lab.fake.restart_does_nothing();
    let cfg = lab.probe_file(&[("cooldown", "20m"), ("verify_timeout", "60s")]);
    let running = Lab::spawn(lab.command(&cfg, &lab.state_dir(), &[]));
    // The pending record is on disk before the action: that is the moment to stop it.
    let state_file = lab.state_dir().join("state.json");
    let start = Instant::now();
    while !std::fs::read_to_string(&state_file).is_ok_and(|s| s.contains("\"pending\"")) {
        assert!(start.elapsed() < RUN_DEADLINE, "no pending record written");
        thread::sleep(Duration::from_millis(10));
    }
    let pid = running.pid();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopped = running.finish(RUN_DEADLINE);
    assert_eq!(stopped.code, Some(4), "{stopped}");
    assert_eq!(lab.fake.restart_calls().len(), 1);

    let next = lab.check(&cfg, &[]);
    next.expect(1, "refuse", "cooldown");
    assert_eq!(lab.fake.restart_calls().len(), 1, "the cooldown held");
    let actions = lab.state()["targets"]["api"]["actions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["outcome"], "interrupted");
}

#[test]
fn an_action_dated_in_the_future_is_taken_as_now_and_reported() {
    let lab = Lab::start();
    let future = now_s() + 30 * 24 * 3600;
    write_state(
        &lab,
        serde_json::json!([{ "at": future, "unit": UNIT, "action": "restart",
                             "pid": 4242, "outcome": "recovered" }]),
    );
    let run = lab.check(&lab.probe_file(&[("cooldown", "1m")]), &[]);
    run.expect(1, "refuse", "cooldown");
    assert!(
        run.json()["warnings"].to_string().contains("in the future"),
        "{run}"
    );
    // Its time is kept as written: rewritten to this run's clock, a clock that was behind
    // for one run would leave the action older than it is once the clock is right again.
    let at = lab.state()["targets"]["api"]["actions"][0]["at"]
        .as_u64()
        .unwrap();
    assert_eq!(at, future, "kept as written");
    let again = lab.check(&lab.probe_file(&[("cooldown", "1m")]), &[]);
    again.expect(1, "refuse", "cooldown");
}

#[test]
fn a_full_state_disk_refuses_the_kill_run_after_run() {
    if crate::common::skip_unless_root("mounting a tmpfs needs root") {
        return;
    }
    let lab = Lab::start();
    let Some(mut sleeper) = sleeper_as_main_pid(&lab) else {
        need_cgroup_line()
    };
    let cfg = lab.probe_file(&[("action", "kill"), ("cooldown", "15m")]);
    let state = lab.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    for n in 0..3 {
        // A private mount namespace with a small tmpfs, filled, as the state directory.
        let inner = lab.command(&cfg, &state, &[]);
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs -o size=256k,mode=0700 tmpfs \"$1\" || exit 97; \
                 head -c 1M /dev/zero > \"$1/fill\" 2>/dev/null; shift; exec \"$@\"",
            )
            .arg("sh")
            .arg(&state)
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let run = Lab::spawn(cmd).finish(RUN_DEADLINE);
        run.expect(1, "refuse", "cannot record the action");
        assert!(
            run.json()["warnings"]
                .to_string()
                .contains("could not be saved"),
            "run {n}: {run}"
        );
        assert!(
            sleeper.alive(),
            "run {n} killed although it could not record it"
        );
    }
}

/// A unit's own listeners (with `recovery.through`), now read with one sock_diag dump per
/// table and one pass over its processes' descriptors instead of one of each per listener on
/// the host: every listener this process holds is still found, among hundreds.
#[test]
fn a_units_own_listeners_are_all_found_among_hundreds() {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line in /proc/self/cgroup")
        .to_string();
    let listeners: Vec<std::net::TcpListener> = (0..300)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let found: std::collections::HashSet<String> = routewatch::evidence::listeners_of(&own)
        .into_iter()
        .map(|l| l.address)
        .collect();
    for l in &listeners {
        let addr = l.local_addr().unwrap().to_string();
        assert!(
            found.contains(&addr),
            "{addr} not among {} found",
            found.len()
        );
    }
}
