//! The edge: parse arguments, dispatch to a subcommand (one module each under `cli/`), map
//! the result to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use routewatch::log::{self, Level};
use routewatch::report::Format;

mod cli;

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

impl Exit {
    /// A finished check's exit code, from the one its report carries (the run status's,
    /// `RunStatus::exit_code`).
    fn of_report(report: &routewatch::run::RunReport) -> Exit {
        match report.exit_code {
            0 => Exit::Healthy,
            3 => Exit::Recovered,
            _ => Exit::Unhealthy,
        }
    }
}

#[derive(Parser)]
#[command(name = "routewatch", version, about = "Probe a service's core and auxiliary HTTP routes; SIGKILL a hung systemd unit so it restarts.", long_about = None)]
#[command(
    arg_required_else_help = true,
    propagate_version = true,
    // Its own `help` subcommand: clap's refuses `routewatch help --help` (exit 2).
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Probe every route, judge, recover hung units, report (the main job)
    #[command(after_help = "\
Exit status:
  0  healthy: every core route OK (auxiliary failures, slow routes, 429s and unknown targets
     are warnings)
  1  unhealthy: a core route failed and was not brought back
  2  usage or configuration error: nothing was probed
  3  recovered: a hung unit was acted on and its core routes pass again
  4  could not run: the check itself was stopped (state directory unusable, SIGTERM/SIGINT)
With --format nagios, the plugin states instead: 0 OK (healthy, or recovered and serving
again), 1 WARNING (degraded or unknown), 2 CRITICAL (unhealthy), 3 UNKNOWN (usage error or
could not run; the reason in the status line)")]
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
        /// Output format
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Silence a target for maintenance: probed and reported, never recovered nor notified
    Silence(SilenceArgs),
    /// Check the deployment: probe file trust, state directory, timer and units over D-Bus
    #[command(after_help = "\
Exit status:
  0  every check passed (lines marked warn are worth a look)
  1  a check failed: its line says what to do
  2  usage error")]
    Doctor {
        /// Probe file [default: $ROUTEWATCH_CONFIG, ./probes.yaml, /etc/routewatch/probes.yaml]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// State directory [default: $STATE_DIRECTORY, /var/lib/routewatch as root, else $XDG_STATE_HOME/routewatch]
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The timer that runs routewatch
        #[arg(long, value_name = "UNIT", default_value = "routewatch.timer")]
        timer: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Print the JSON Schema of the probe file (for editors and CI linters)
    Schema,
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write every page into a directory
    Man {
        /// Write routewatch.1 and one page per subcommand (routewatch-check.1 and so on) into DIR
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print this message or the help of the given subcommand(s)
    Help {
        /// The subcommand
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
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
    /// Dead-man's switch (healthchecks.io protocol): POST URL/start before probing and
    /// URL/<exit code> after (overrides `ping:` in the probe file); a failed ping is a warning
    #[arg(long, value_name = "URL")]
    ping: Option<String>,
}

#[derive(clap::Args)]
struct SilenceArgs {
    /// The target to silence (its name in the probe file)
    #[arg(value_name = "TARGET", conflicts_with_all = ["list", "clear"])]
    target: Option<String>,
    /// How long, e.g. 30m or 2h
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration, requires = "target")]
    duration: Option<std::time::Duration>,
    /// Why (shown in reports until it ends)
    #[arg(long, value_name = "TEXT", requires = "target")]
    reason: Option<String>,
    /// List the silences in force
    #[arg(long, conflicts_with = "clear")]
    list: bool,
    /// End TARGET's silence now
    #[arg(long, value_name = "TARGET")]
    clear: Option<String>,
    /// State directory [default: $STATE_DIRECTORY, /var/lib/routewatch as root, else $XDG_STATE_HOME/routewatch]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatusFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Text,
    Json,
    Junit,
    Prometheus,
    Nagios,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
            FormatArg::Junit => Format::Junit,
            FormatArg::Prometheus => Format::Prometheus,
            FormatArg::Nagios => Format::Nagios,
        }
    }
}

/// Whether arguments clap refused asked for `check --format nagios` (then the usage error is
/// UNKNOWN, exit 3, as a plugin's must be).
fn nagios_requested(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    args.first().is_some_and(|a| a == "check")
        && (args.iter().any(|a| a == "--format=nagios")
            || args
                .windows(2)
                .any(|w| w[0] == "--format" && w[1] == "nagios"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return Exit::Healthy.into();
            }
            if nagios_requested(std::env::args_os().skip(1)) {
                // A plugin's misuse is UNKNOWN, with a status line the monitoring shows.
                let rendered = e.render().to_string();
                let first = rendered.lines().next().unwrap_or("usage error");
                let first = first.strip_prefix("error: ").unwrap_or(first);
                print!(
                    "{}",
                    routewatch::report::nagios::unknown(&format!("usage: {first}"))
                );
                return ExitCode::from(routewatch::report::nagios::State::Unknown.exit_code());
            }
            return Exit::Usage.into();
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
    let socket = std::env::var_os("ROUTEWATCH_JOURNAL_SOCKET")
        .map_or_else(|| PathBuf::from(log::JOURNAL_SOCKET), PathBuf::from);
    log::init(level, journald, &socket);
    match cli.command {
        Command::Check(args) => return cli::check::check(args),
        Command::Validate { config } => cli::validate::validate(config),
        Command::Demo => cli::demo::run_demo(),
        Command::Status { state_dir, format } => {
            cli::status::status(state_dir, format == StatusFormat::Json)
        }
        Command::Silence(args) => cli::silence::silence(args),
        Command::Doctor {
            config,
            state_dir,
            timer,
            format,
        } => cli::doctor::doctor(cli::doctor::DoctorArgs {
            config,
            state_dir,
            timer,
            json: format == StatusFormat::Json,
        }),
        Command::Schema => cli::schema(),
        Command::Completions { shell } => cli::completions(shell),
        Command::Man { dir } => cli::man(dir),
        Command::Help { command } => cli::help(command),
    }
    .into()
}
