//! `routewatch check`: load, judge the files as root, run, report, push.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use routewatch::alerts::{self, Outgoing, ping::Ping};
use routewatch::log::{self, Level};
use routewatch::report::{self, Format, nagios};
use routewatch::{config, push, run, state};

use super::output::{emit, emit_streamed, make_observer, progress_bar, stdout_colour};
use super::{env, fail, find_config, is_root, open_probe_file, runtime};
use crate::{CheckArgs, Exit, FormatArg};

/// `check`, with the exit code of README "Exit codes", or with `--format nagios` the plugin
/// state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN): a check that could not run or was misused
/// is UNKNOWN, with its reason in a status line on stdout.
pub(crate) fn check(args: CheckArgs) -> std::process::ExitCode {
    let nagios = args.format == FormatArg::Nagios;
    match (check_steps(args), nagios) {
        (Ok(done), false) => done.exit.into(),
        (Err(ended), false) => ended.exit.into(),
        (Ok(done), true) => done.nagios.exit_code().into(),
        (Err(ended), true) => {
            // stdout may be gone; the reason is on stderr too.
            let _ = emit(&nagios::unknown(&ended.message), None);
            nagios::State::Unknown.exit_code().into()
        }
    }
}

/// A check that ran to its report: its exit code, and its state as a Nagios plugin.
struct Done {
    exit: Exit,
    nagios: nagios::State,
}

/// A check that ended early: its exit code and why (already printed on stderr).
struct Ended {
    exit: Exit,
    message: String,
}

fn end(exit: Exit, message: impl std::fmt::Display) -> Ended {
    let message = message.to_string();
    fail(exit, &message);
    Ended { exit, message }
}

/// The steps of `check`; an `Err` is a run that ended early.
fn check_steps(args: CheckArgs) -> Result<Done, Ended> {
    // The runtime and the stop signals come first: a SIGTERM while a large probe file loads
    // ends the run like any other stop (a log line, exit 4), not with the default action.
    let rt = runtime().map_err(|e| {
        end(
            Exit::CouldNotRun,
            format!("cannot start the async runtime: {e}"),
        )
    })?;
    let mut stop = {
        let _context = rt.enter();
        Stop::new()
    };
    let push_url = args
        .push
        .as_deref()
        .map(push::parse_url)
        .transpose()
        .map_err(|e| end(Exit::Usage, e))?;
    // The URL itself is never echoed: a ping URL's path is its key.
    let ping_arg = args
        .ping
        .as_deref()
        .map(alerts::parse_http_url)
        .transpose()
        .map_err(|e| end(Exit::Usage, format!("--ping: {e}")))?
        .map(|url| Ping { url });
    check_output(&args)?;
    let root = is_root();
    let (plan, config_problem) = load_plan(&args, root)?;
    // A stop that came while the file loaded (a large one takes a while) wins over whatever
    // the load found.
    if let Some(sig) = stop.pending(&rt) {
        log::emit(Level::Error, "interrupted", &[("signal", &sig)]);
        return Err(end(
            Exit::CouldNotRun,
            "interrupted while loading the probe file; nothing was probed",
        ));
    }
    let plan = match plan {
        Ok(p) => Arc::new(p),
        Err(e) => {
            // A probe file broken by a deploy is what the ping's receiver should hear about.
            if let Some(p) = &ping_arg {
                let failed = p.finish(Exit::Usage as u8, "the probe file is not valid");
                let ua = routewatch::DEFAULT_USER_AGENT;
                rt.block_on(send_bounded(&mut stop, ua, &[failed], &[], None));
            }
            return Err(end(Exit::Usage, e));
        }
    };
    let ping = ping_arg.or_else(|| plan.ping.clone());
    let (state_dir, recovery_blocked, warnings) = judge_files(&args, root, config_problem)?;
    let may_act = !args.no_recover
        && recovery_blocked.is_none()
        && plan.targets.iter().any(|t| {
            t.recovery
                .as_ref()
                .is_some_and(|r| r.action != routewatch::plan::Action::None)
        });
    if root && !may_act {
        drop_privileges();
    }
    let progress = progress_bar(&plan, args.quiet);
    let opts = run::Options {
        dry_run: args.dry_run,
        no_recover: args.no_recover,
        recovery_blocked,
        state_dir,
        lock_wait: Duration::from_secs(2),
        observer: Some(make_observer(progress.clone())),
        warnings,
    };
    let result = rt.block_on(async {
        // A stop that came while the file loaded wins before any traffic.
        tokio::task::yield_now().await;
        if let Some(p) = &ping {
            tokio::select! {
                biased;
                sig = stop.wait() => {
                    return Err(run::RunError::Interrupted(run::Interrupted {
                        signal: sig.to_string(),
                        finished: Vec::new(),
                        total: plan.targets.iter().map(|t| t.routes.len()).sum(),
                    }));
                }
                sent = alerts::ping::send_start(p, &plan.user_agent) => {
                    if let Err(e) = sent {
                        log::emit(Level::Warn, "ping_failed", &[("error", &format!("start: {e}"))]);
                    }
                }
            }
        }
        run::check(Arc::clone(&plan), opts, stop.wait()).await
    });
    if let Err(run::RunError::Interrupted(stopped)) = &result {
        log::emit(Level::Error, "interrupted", &[("signal", &stopped.signal)]);
    }
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            // Abandon whatever is still in flight (a hung socket); nothing is signalled after
            // a stop.
            rt.shutdown_timeout(Duration::from_millis(100));
            return Err(match e {
                run::RunError::Interrupted(stopped) => interrupted(&stopped),
                e => end(Exit::CouldNotRun, e),
            });
        }
    };
    let emitted = emit_report(&args, &report);
    // A report that could not be written ends the run in exit 4: the ping and the push say
    // that, never the success of a run whose report is lost.
    let mut summary = report.summary.line.clone();
    if let Err(e) = &emitted {
        report.exit_code = Exit::CouldNotRun as u8;
        summary = format!("{summary}; the report could not be written: {e}");
    }
    // The push, the ping and the notifications come after the report is out: a slow or
    // stopped receiver costs the report nothing and never changes the exit code.
    let mut outgoing = report.notifications.clone();
    if let Some(p) = &ping {
        outgoing.push(p.finish(report.exit_code, &summary));
    }
    let push = push_url.map(|url| (url, report::prometheus(&report)));
    rt.block_on(send_bounded(
        &mut stop,
        &plan.user_agent,
        &outgoing,
        &plan.secrets,
        push,
    ));
    rt.shutdown_timeout(Duration::from_millis(100));
    emitted.map_err(|e| end(Exit::CouldNotRun, e))?;
    Ok(Done {
        exit: Exit::of_report(&report),
        nagios: nagios::state(&report),
    })
}

/// A report that could not be written is found out before the probing, not after it.
fn check_output(args: &CheckArgs) -> Result<(), Ended> {
    if let Some(out) = &args.output
        && let Err(e) = state::replaceable(out)
    {
        let exit = if e.kind() == std::io::ErrorKind::InvalidInput {
            Exit::Usage
        } else {
            Exit::CouldNotRun
        };
        return Err(end(exit, format!("--output {}: {e}", out.display())));
    }
    Ok(())
}

/// The plan: from `--url`, or from the probe file, opened once and, as root, judged on the
/// path as written and on the opened file, then read from that same descriptor. The load's
/// own error is returned as it is (a stop during the load wins over it).
type Loaded = (
    Result<routewatch::plan::Plan, config::ConfigError>,
    Option<String>,
);

fn load_plan(args: &CheckArgs, root: bool) -> Result<Loaded, Ended> {
    if !args.url.is_empty() {
        return Ok((config::ad_hoc(&args.url, &args.aux_url), None));
    }
    let path = find_config(args.config.clone()).map_err(|e| end(Exit::Usage, e))?;
    let (file, problem) = open_probe_file(&path, root).map_err(|e| end(Exit::Usage, e))?;
    // As root, a probe file others can write expands no `${VAR}` (unless --insecure-config):
    // it could send root's environment (tokens from /etc/routewatch/environment) to any
    // server its writer chooses. Its own trust problem blocks recovery below as well.
    let untrusted = problem.is_some() && !args.insecure_config;
    let plan = config::load_opened(&file, &path, &env, untrusted);
    // Every file read counts: a drop-in others can write blocks recovery as the probe file would.
    let mut problems: Vec<String> = problem.into_iter().collect();
    if let Ok(p) = &plan {
        problems.extend(p.untrusted.iter().cloned());
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    Ok((plan, problem))
}

/// Where the state goes (if anywhere), why recovery is off (if it is), and what to warn of.
type Judged = (Option<std::path::PathBuf>, Option<String>, Vec<String>);

/// The state directory and, as root, the trust verdict on the files: recovery blocked (with
/// the reason), and an untrusted state directory not used at all (with a warning).
fn judge_files(
    args: &CheckArgs,
    root: bool,
    config_problem: Option<String>,
) -> Result<Judged, Ended> {
    // Ad hoc runs (CI smoke checks) keep no state unless asked to.
    let mut state_dir = match (&args.state_dir, args.url.is_empty()) {
        (Some(d), _) => Some(d.clone()),
        (None, false) => None,
        (None, true) => {
            Some(state::default_dir(&env, root).map_err(|e| end(Exit::CouldNotRun, e))?)
        }
    };
    let mut warnings = Vec::new();
    if !root {
        return Ok((state_dir, None, warnings));
    }
    let trust = untrusted(config_problem, state_dir.as_deref(), args.insecure_config);
    if let Some(why) = trust.state_dir {
        // A state directory others control is neither read nor written: its history could be
        // forged, and root writing there is what they want.
        warnings.push(format!(
            "state directory not used this run ({why}): no streaks, cooldown or history"
        ));
        state_dir = None;
    }
    Ok((state_dir, trust.blocked, warnings))
}

/// A stop cut the run short: what finished, then exit 4.
fn interrupted(stopped: &run::Interrupted) -> Ended {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "routewatch: interrupted after {} of {}{}",
        stopped.finished.len(),
        routewatch::words::count(stopped.total as u64, "route", "routes"),
        if stopped.finished.is_empty() { "" } else { ":" }
    );
    for route in &stopped.finished {
        let _ = writeln!(err, "  {route}");
    }
    end(
        Exit::CouldNotRun,
        "interrupted before the check finished; nothing is signalled after a stop",
    )
}

/// The report on stdout (JSON streamed) or into `--output`.
fn emit_report(args: &CheckArgs, report: &run::RunReport) -> Result<(), String> {
    let format: Format = args.format.into();
    if args.quiet && format == Format::Text && args.output.is_none() {
        Ok(())
    } else if format == Format::Json && args.output.is_none() {
        emit_streamed(|out| report::write_json(report, out))
    } else {
        let colour = format == Format::Text && args.output.is_none() && stdout_colour();
        emit(
            &report::render(report, format, colour),
            args.output.as_deref(),
        )
    }
}

/// Send what goes out after a run (or instead of one): the push and every notification and
/// ping at once, all bounded by their timeouts, and cut short by a stop signal (the exit code
/// stays the run's). Each failure is one warning line with no secret in it.
async fn send_bounded(
    stop: &mut Stop,
    user_agent: &str,
    outgoing: &[Outgoing],
    secrets: &[String],
    push: Option<(reqwest::Url, String)>,
) {
    let pushing = push.is_some();
    let push = async {
        if let Some((url, metrics)) = push {
            // A gateway's error answer may echo the credentials it was sent.
            let hidden: Vec<String> = secrets
                .iter()
                .cloned()
                .chain(push::url_secrets(&url))
                .collect();
            if let Err(e) = push::push(url, user_agent, metrics).await {
                let e = routewatch::plan::redact(&e, &hidden);
                log::emit(Level::Warn, "push_failed", &[("error", &e)]);
            }
        }
    };
    let send = async {
        if outgoing.is_empty() {
            return;
        }
        let failures = alerts::send_all(outgoing, user_agent).await;
        for (kind, e) in failures {
            let e = routewatch::plan::redact(&e, secrets);
            let event = if kind == "ping" {
                "ping_failed"
            } else {
                "notify_failed"
            };
            log::emit(Level::Warn, event, &[("error", &e)]);
        }
    };
    tokio::select! {
        _ = futures_util::future::join(push, send) => {}
        sig = stop.wait() => {
            if pushing {
                log::emit(Level::Warn, "push_interrupted", &[("signal", &sig)]);
            }
            if !outgoing.is_empty() {
                log::emit(Level::Warn, "notify_interrupted", &[("signal", &sig)]);
            }
        }
    }
}

/// The trust verdict of a run as root.
pub(crate) struct Trust {
    /// `Some(reason)`: recovery is off for this run (probing still happens).
    blocked: Option<String>,
    /// `Some(reason)`: the state directory is not to be used at all.
    state_dir: Option<String>,
}

/// As root: the probe file and state directory must be root's and not writable by others,
/// as written (every directory and symlink on the way), or recovery is off for this run. A
/// state directory that does not exist yet is judged by what exists above it.
pub(crate) fn untrusted(
    config_problem: Option<String>,
    state_dir: Option<&Path>,
    insecure: bool,
) -> Trust {
    if insecure {
        log::emit(
            Level::Warn,
            "trust_checks_disabled",
            &[("reason", &"--insecure-config")],
        );
        return Trust {
            blocked: None,
            state_dir: None,
        };
    }
    let mut problems = Vec::new();
    if let Some(e) = config_problem {
        problems.push(format!("probe file: {e}"));
    }
    let state_problem = state_dir.and_then(routewatch::trust::state_dir_problem);
    if let Some(e) = &state_problem {
        problems.push(format!("state directory: {e}"));
    }
    if problems.is_empty() {
        return Trust {
            blocked: None,
            state_dir: None,
        };
    }
    let reason = format!(
        "recovery disabled: {} (fix the ownership/mode, or pass --insecure-config)",
        problems.join("; ")
    );
    log::emit(Level::Error, "untrusted_config", &[("reason", &reason)]);
    Trust {
        blocked: Some(reason),
        state_dir: state_problem,
    }
}

/// Running as root with nothing to recover: give up every capability (and the ability to
/// regain any) before any traffic. The probe file has been read; the state directory is
/// root's own, which needs no capability.
pub(crate) fn drop_privileges() {
    use rustix::thread::{CapabilitySet, CapabilitySets, set_capabilities, set_no_new_privs};
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    let _ = set_no_new_privs(true);
    match set_capabilities(None, none) {
        Ok(()) => log::emit(Level::Debug, "capabilities_dropped", &[]),
        Err(e) => log::emit(Level::Warn, "capabilities_not_dropped", &[("error", &e)]),
    }
}

/// SIGTERM and SIGINT, listened for from creation on: a signal that arrives between two waits
/// (after the run, before the push) is kept, not lost.
pub(crate) struct Stop {
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Stop {
    /// Inside the runtime's context.
    fn new() -> Stop {
        use tokio::signal::unix::{SignalKind, signal};
        Stop {
            signals: signal(SignalKind::terminate())
                .and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
                .ok(),
        }
    }

    /// A signal already received, if any (the runtime's driver gets one short turn to see
    /// it).
    fn pending(&mut self, rt: &tokio::runtime::Runtime) -> Option<&'static str> {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(1), self.wait())
                .await
                .ok()
        })
    }

    async fn wait(&mut self) -> &'static str {
        let Some((term, int)) = self.signals.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
