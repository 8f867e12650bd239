//! The edge: parse arguments, load the plan, run, print, map the result to an exit code.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use routewatch::log::{self, Level};
use routewatch::plan::Plan;
use routewatch::report::{self, Format};
use routewatch::{config, demo, push, run, state};

/// Exit codes; README "Exit codes" mirrors this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Every core route OK (auxiliary failures and 429 contention are warnings).
    Healthy = 0,
    /// A core route failed and was not brought back.
    Unhealthy = 1,
    /// Usage or configuration error: nothing was probed.
    Usage = 2,
    /// A core failure was found, recovery ran, and the re-probe passed.
    Recovered = 3,
    /// A runtime error stopped the check itself.
    CouldNotRun = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

fn exit_from_code(code: u8) -> Exit {
    match code {
        0 => Exit::Healthy,
        3 => Exit::Recovered,
        _ => Exit::Unhealthy,
    }
}

#[derive(Parser)]
#[command(name = "routewatch", version, about = "Probe a service's core and auxiliary HTTP routes; SIGKILL a hung systemd unit so it restarts.", long_about = None)]
#[command(arg_required_else_help = true, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Probe every route, judge, recover hung units, report (the main job)
    Check(CheckArgs),
    /// Parse and lint a probe file without sending any traffic (exit 0 or 2)
    Validate {
        /// Probe file [default: $ROUTEWATCH_CONFIG, ./probes.yaml, /etc/routewatch/probes.yaml]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the engine against an embedded local server: healthy, 429, slow and hung routes
    Demo,
    /// Show what the state file remembers: streaks, last verdicts, recent actions
    Status {
        /// State directory [default: $STATE_DIRECTORY, /var/lib/routewatch as root, else $XDG_STATE_HOME/routewatch]
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Print the JSON Schema of the probe file (for editors and CI linters)
    Schema,
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Probe file [default: $ROUTEWATCH_CONFIG, ./probes.yaml, /etc/routewatch/probes.yaml]
    #[arg(long, value_name = "FILE", conflicts_with_all = ["url", "aux_url"])]
    config: Option<PathBuf>,
    /// Probe this URL as a core route, without a probe file (repeatable)
    #[arg(long, value_name = "URL")]
    url: Vec<String>,
    /// Probe this URL as an auxiliary route (repeatable; needs --url)
    #[arg(long, value_name = "URL", requires = "url")]
    aux_url: Vec<String>,
    /// Report format on stdout
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Write the report to FILE (atomically: temp file, then rename) instead of stdout
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Decide and confirm, print what recovery would do and why; signal nothing
    #[arg(long)]
    dry_run: bool,
    /// Never recover: probe and report only
    #[arg(long)]
    no_recover: bool,
    /// State directory [default: $STATE_DIRECTORY, /var/lib/routewatch as root, else $XDG_STATE_HOME/routewatch]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// No progress bar, no text report, only error log lines (the exit code tells)
    #[arg(long, short)]
    quiet: bool,
    /// More log lines on stderr (-v info, -vv debug)
    #[arg(long, short, action = clap::ArgAction::Count)]
    verbose: u8,
    /// As root, allow recovery even if the probe file or state directory is writable by others
    #[arg(long)]
    insecure_config: bool,
    /// After the run, PUT its metrics to a Prometheus Pushgateway group
    /// (http://HOST:9091/metrics/job/NAME); a failed push is a warning
    #[arg(long, value_name = "URL")]
    push: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
    Junit,
    Prometheus,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
            FormatArg::Junit => Format::Junit,
            FormatArg::Prometheus => Format::Prometheus,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Healthy.into()
            };
        }
    };
    let journald = log::stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    let (quiet, verbose) = match &cli.command {
        Command::Check(a) => (a.quiet, a.verbose),
        _ => (false, 0),
    };
    let level = if quiet {
        Level::Error
    } else {
        [Level::Warn, Level::Info, Level::Debug][usize::from(verbose.min(2))]
    };
    log::init(level, journald);
    match cli.command {
        Command::Check(args) => check(args),
        Command::Validate { config } => validate(config),
        Command::Demo => run_demo(),
        Command::Status { state_dir } => status(state_dir),
        Command::Schema => print_and_exit(&format!("{:#}\n", config::schema())),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "routewatch",
                &mut buf,
            );
            print_and_exit(&String::from_utf8_lossy(&buf))
        }
        Command::Man => {
            let mut buf = Vec::new();
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut buf) {
                Ok(()) => print_and_exit(&String::from_utf8_lossy(&buf)),
                Err(e) => fail(
                    Exit::CouldNotRun,
                    format!("cannot render the man page: {e}"),
                ),
            }
        }
    }
    .into()
}

fn print_and_exit(text: &str) -> Exit {
    match emit(text, None) {
        Ok(()) => Exit::Healthy,
        Err(e) => fail(Exit::CouldNotRun, e),
    }
}

fn fail(exit: Exit, message: impl std::fmt::Display) -> Exit {
    eprintln!("routewatch: {message}");
    exit
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `--config`, then `$ROUTEWATCH_CONFIG`, then `./probes.yaml`, then `/etc/routewatch/probes.yaml`.
fn find_config(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(p) = env("ROUTEWATCH_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    for p in ["probes.yaml", "/etc/routewatch/probes.yaml"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    Err("no probe file: none given with --config, $ROUTEWATCH_CONFIG is unset, and neither ./probes.yaml nor /etc/routewatch/probes.yaml exists (or use --url URL)".into())
}

/// One thread: a run is waiting on sockets, and on these small machines a second worker
/// costs more in wake-ups than it gains (2000 local routes: 74 ms vs 100 ms with two).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn check(args: CheckArgs) -> Exit {
    // The runtime and the stop signals come first: a SIGTERM while a large probe file loads
    // ends the run like any other stop (a log line, exit 4), not with the default action.
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                Exit::CouldNotRun,
                format!("cannot start the async runtime: {e}"),
            );
        }
    };
    let mut stop = {
        let _context = rt.enter();
        Stop::new()
    };
    let push_url = match args.push.as_deref().map(push::parse_url).transpose() {
        Ok(u) => u,
        Err(e) => return fail(Exit::Usage, e),
    };
    // A report that could not be written is found out before the probing, not after it.
    if let Some(out) = &args.output
        && let Err(e) = state::replaceable(out)
    {
        let exit = if e.kind() == std::io::ErrorKind::InvalidInput {
            Exit::Usage
        } else {
            Exit::CouldNotRun
        };
        return fail(exit, format!("--output {}: {e}", out.display()));
    }
    let root = is_root();
    let ad_hoc = !args.url.is_empty();
    let mut config_problem = None;
    let plan = if ad_hoc {
        config::ad_hoc(&args.url, &args.aux_url)
    } else {
        let path = match find_config(args.config.clone()) {
            Ok(p) => p,
            Err(e) => return fail(Exit::Usage, e),
        };
        // Opened once; as root judged on the path as written and on the opened file, and
        // read from that same descriptor.
        let opened = if root {
            routewatch::trust::open(&path).map(|o| (o.file, o.problem))
        } else {
            routewatch::trust::open_regular(&path).map(|f| (f, None))
        };
        match opened {
            Ok((file, problem)) => {
                config_problem = problem;
                config::load_opened(&file, &path, &env)
            }
            Err(e) => {
                return fail(Exit::Usage, format!("{}: cannot read: {e}", path.display()));
            }
        }
    };
    // A stop that came while the file loaded (a large one takes a while) wins over whatever
    // the load found.
    if let Some(sig) = stop.pending(&rt) {
        log::emit(Level::Error, "interrupted", &[("signal", &sig)]);
        return fail(
            Exit::CouldNotRun,
            "interrupted while loading the probe file; nothing was probed",
        );
    }
    let plan = match plan {
        Ok(p) => Arc::new(p),
        Err(e) => return fail(Exit::Usage, e),
    };
    // Ad hoc runs (CI smoke checks) keep no state unless asked to.
    let mut state_dir = match (&args.state_dir, ad_hoc) {
        (Some(d), _) => Some(d.clone()),
        (None, true) => None,
        (None, false) => match state::default_dir(&env, root) {
            Ok(d) => Some(d),
            Err(e) => return fail(Exit::CouldNotRun, e),
        },
    };
    let mut warnings = Vec::new();
    let recovery_blocked = if root {
        let trust = untrusted(config_problem, state_dir.as_deref(), args.insecure_config);
        if let Some(why) = trust.state_dir {
            // A state directory others control is neither read nor written: its history
            // could be forged, and root writing there is what they want.
            warnings.push(format!(
                "state directory not used this run ({why}): no streaks, cooldown or history"
            ));
            state_dir = None;
        }
        trust.blocked
    } else {
        None
    };
    let may_act = !args.no_recover
        && recovery_blocked.is_none()
        && plan.targets.iter().any(|t| {
            t.recovery
                .as_ref()
                .is_some_and(|r| r.action != routewatch::plan::Action::None)
        });
    if is_root() && !may_act {
        drop_privileges();
    }
    let format: Format = args.format.into();
    let progress = progress_bar(&plan, args.quiet);
    // What finished so far, to report if a stop signal cuts the run short.
    let finished: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let observer = {
        let log_and_bar = make_observer(progress.clone());
        let finished = Arc::clone(&finished);
        let observer: routewatch::probe::Observer = Arc::new(move |target, r| {
            log_and_bar(target, r);
            if let Ok(mut f) = finished.lock() {
                f.push(format!(
                    "{} {} {} {}",
                    target.name,
                    r.path,
                    r.class.as_str(),
                    r.outcome
                ));
            }
        });
        observer
    };
    let opts = run::Options {
        dry_run: args.dry_run,
        no_recover: args.no_recover,
        recovery_blocked,
        state_dir,
        lock_wait: Duration::from_secs(2),
        observer: Some(observer),
        warnings,
    };
    let result = rt.block_on(async {
        // A stop that came while the file loaded wins before any traffic.
        tokio::task::yield_now().await;
        tokio::select! {
            biased;
            sig = stop.wait() => {
                log::emit(Level::Error, "interrupted", &[("signal", &sig)]);
                None
            }
            r = run::check(Arc::clone(&plan), opts) => Some(r),
        }
    });
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let report = match result {
        Some(Ok(r)) => r,
        other => {
            // Abandon whatever is still in flight (a hung socket); nothing is signalled after
            // a stop.
            rt.shutdown_timeout(Duration::from_millis(100));
            if let Some(Err(e)) = other {
                return fail(Exit::CouldNotRun, e);
            }
            let done = finished.lock().map(|f| f.clone()).unwrap_or_default();
            let total: usize = plan.targets.iter().map(|t| t.routes.len()).sum();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "routewatch: interrupted after {} of {total} routes{}",
                done.len(),
                if done.is_empty() { "" } else { ":" }
            );
            for line in &done {
                let _ = writeln!(err, "  {line}");
            }
            return fail(
                Exit::CouldNotRun,
                "interrupted before the check finished; nothing is signalled after a stop",
            );
        }
    };
    let emitted = if args.quiet && format == Format::Text && args.output.is_none() {
        Ok(())
    } else {
        let colour = format == Format::Text
            && args.output.is_none()
            && std::io::stdout().is_terminal()
            && env("NO_COLOR").is_none_or(|v| v.is_empty())
            && env("TERM").as_deref() != Some("dumb");
        emit(
            &report::render(&report, format, colour),
            args.output.as_deref(),
        )
    };
    // The push comes after the report is out: a slow or stopped gateway costs the report
    // nothing and never changes the exit code.
    if let Some(url) = push_url {
        let metrics = report::prometheus(&report);
        rt.block_on(async {
            tokio::select! {
                r = push::push(url, &plan.user_agent, metrics) => {
                    if let Err(e) = r {
                        log::emit(Level::Warn, "push_failed", &[("error", &e)]);
                    }
                }
                sig = stop.wait() => {
                    log::emit(Level::Warn, "push_interrupted", &[("signal", &sig)]);
                }
            }
        });
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    if let Err(e) = emitted {
        return fail(Exit::CouldNotRun, e);
    }
    exit_from_code(report.exit_code)
}

/// The trust verdict of a run as root.
struct Trust {
    /// `Some(reason)`: recovery is off for this run (probing still happens).
    blocked: Option<String>,
    /// `Some(reason)`: the state directory is not to be used at all.
    state_dir: Option<String>,
}

/// As root: the probe file and state directory must be root's and not writable by others,
/// as written (every directory and symlink on the way), or recovery is off for this run. A
/// state directory that does not exist yet is judged by what exists above it.
fn untrusted(config_problem: Option<String>, state_dir: Option<&Path>, insecure: bool) -> Trust {
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
    let state_problem = state_dir.and_then(|d| match routewatch::trust::walk(d) {
        Ok(w) => w.problem,
        Err(e) => Some(format!("cannot resolve {}: {e}", d.display())),
    });
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
fn drop_privileges() {
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
struct Stop {
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

/// Print to stdout (a closed pipe is not an error) or write the file atomically.
fn emit(text: &str, output: Option<&Path>) -> Result<(), String> {
    match output {
        Some(path) => state::write_atomic(path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(format!("cannot write the report: {e}"))
                }
                _ => Ok(()),
            }
        }
    }
}

fn progress_bar(plan: &Plan, quiet: bool) -> Option<indicatif::ProgressBar> {
    // Never under systemd (INVOCATION_ID) or CI (CI=true in every common CI system), even
    // when they hand us a terminal.
    let unattended = ["CI", "INVOCATION_ID"]
        .iter()
        .any(|v| env(v).is_some_and(|x| !x.is_empty() && x != "false" && x != "0"));
    if quiet || unattended || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: usize = plan.targets.iter().map(|t| t.routes.len()).sum();
    let pb = indicatif::ProgressBar::new(total as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} probing {pos}/{len} routes [{elapsed}] {wide_bar}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    Some(pb)
}

/// Per finished route: advance the bar, and one log line per failed probe.
fn make_observer(pb: Option<indicatif::ProgressBar>) -> routewatch::probe::Observer {
    Arc::new(move |target, r| {
        let line = || {
            if r.outcome.is_pass() && r.outcome != routewatch::outcome::Outcome::Slow {
                if r.outcome == routewatch::outcome::Outcome::RateLimited {
                    log::emit(
                        Level::Info,
                        "probe_rate_limited",
                        &[
                            ("target", &target.name),
                            ("route", &r.path),
                            ("class", &r.class.as_str()),
                            ("attempts", &r.attempts),
                        ],
                    );
                }
                return;
            }
            let elapsed = r.elapsed.as_millis();
            let status = r.status_code.map_or("-".to_string(), |c| c.to_string());
            log::emit(
                Level::Warn,
                "probe_failed",
                &[
                    ("target", &target.name),
                    ("route", &r.path),
                    ("class", &r.class.as_str()),
                    ("outcome", &r.outcome),
                    ("attempts", &r.attempts),
                    ("elapsed_ms", &elapsed),
                    ("status", &status),
                    ("error", &r.error.as_deref().unwrap_or("")),
                ],
            );
        };
        match &pb {
            Some(pb) => {
                pb.suspend(line);
                pb.inc(1);
            }
            None => line(),
        }
    })
}

fn validate(config_path: Option<PathBuf>) -> Exit {
    let path = match find_config(config_path) {
        Ok(p) => p,
        Err(e) => return fail(Exit::Usage, e),
    };
    // validate sends no traffic and needs no secrets: an unset ${VAR} is a warning here
    // (check refuses it).
    let missing = std::cell::RefCell::new(Vec::new());
    let lenient = |var: &str| {
        env(var).or_else(|| {
            missing.borrow_mut().push(var.to_string());
            Some(String::new())
        })
    };
    let plan = match config::load(&path, &lenient) {
        Ok(p) => p,
        Err(e) => return fail(Exit::Usage, e),
    };
    for var in missing.borrow().iter() {
        eprintln!(
            "routewatch: warning: environment variable {var} is not set; `check` will refuse this file until it is"
        );
    }
    let routes: usize = plan.targets.iter().map(|t| t.routes.len()).sum();
    let units: Vec<&str> = plan
        .targets
        .iter()
        .filter_map(|t| t.unit.as_deref())
        .collect();
    for t in &plan.targets {
        for r in &t.routes {
            if r.timing.timeout > plan.run_timeout {
                eprintln!(
                    "routewatch: warning: {} {}: timeout {:?} is longer than run_timeout {:?}",
                    t.name, r.path, r.timing.timeout, plan.run_timeout
                );
            }
        }
        if t.unit.is_some()
            && !t
                .routes
                .iter()
                .any(|r| r.class == routewatch::plan::Class::Core)
        {
            eprintln!(
                "routewatch: warning: {}: has a unit but no core route; recovery can never trigger",
                t.name
            );
        }
    }
    println!(
        "{}: ok ({} target(s), {routes} route(s){})",
        path.display(),
        plan.targets.len(),
        if units.is_empty() {
            String::new()
        } else {
            format!("; recovery may act on {}", units.join(", "))
        }
    );
    Exit::Healthy
}

fn run_demo() -> Exit {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                Exit::CouldNotRun,
                format!("cannot start the async runtime: {e}"),
            );
        }
    };
    println!(
        "routewatch demo: a local server on 127.0.0.1 with healthy, 429, slow and hung routes.\n"
    );
    let result = rt.block_on(demo::run(None));
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(report) => {
            let colour = std::io::stdout().is_terminal() && env("NO_COLOR").is_none();
            let _ = emit(&report::text(&report, colour), None);
            let _ = emit(
                &format!(
                    "\n{}\nA real `routewatch check` with this result exits {}.\n",
                    demo::EXPLANATION,
                    report.exit_code
                ),
                None,
            );
            Exit::Healthy
        }
        Err(e) => fail(Exit::CouldNotRun, e),
    }
}

fn status(state_dir: Option<PathBuf>) -> Exit {
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
