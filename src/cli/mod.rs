//! The subcommands, one module each, and what they share: the probe file lookup, the
//! runtime, and the one-line error that ends a command.

use std::path::{Path, PathBuf};

use crate::Exit;
use output::emit;

pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod man;
pub(crate) mod output;
pub(crate) mod silence;
pub(crate) mod status;
pub(crate) mod validate;

/// `routewatch schema`.
pub(crate) fn schema() -> Exit {
    print_and_exit(&format!("{:#}\n", routewatch::config::schema()))
}

/// `routewatch completions SHELL`.
pub(crate) fn completions(shell: clap_complete::Shell) -> Exit {
    let mut buf = Vec::new();
    clap_complete::generate(
        shell,
        &mut <crate::Cli as clap::CommandFactory>::command(),
        "routewatch",
        &mut buf,
    );
    print_and_exit(&String::from_utf8_lossy(&buf))
}

/// `routewatch man [--dir DIR]`: the top-level page on stdout, or every page into DIR.
pub(crate) fn man(dir: Option<PathBuf>) -> Exit {
    let Some(dir) = dir else {
        return match man::pages() {
            Ok(pages) => print_and_exit(&String::from_utf8_lossy(&pages[0].1)),
            Err(e) => fail(
                Exit::CouldNotRun,
                format!("cannot render the man page: {e}"),
            ),
        };
    };
    match man::write_all(&dir) {
        Ok(written) => {
            for p in written {
                println!("{}", p.display());
            }
            Exit::Healthy
        }
        Err(e) if !dir.is_dir() => fail(Exit::Usage, e),
        Err(e) => fail(Exit::CouldNotRun, e),
    }
}

/// `routewatch help [COMMAND]`: the help of the command, or of routewatch.
pub(crate) fn help(command: Option<String>) -> Exit {
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    cmd.build();
    let target = match &command {
        None => &mut cmd,
        Some(name) => match cmd.find_subcommand_mut(name) {
            Some(sub) => sub,
            None => {
                return fail(
                    Exit::Usage,
                    format!("no such command: {name} (see routewatch --help)"),
                );
            }
        },
    };
    let text = target.render_long_help().to_string();
    print_and_exit(&text)
}

fn print_and_exit(text: &str) -> Exit {
    match emit(text, None) {
        Ok(()) => Exit::Healthy,
        Err(e) => fail(Exit::CouldNotRun, e),
    }
}

pub(crate) fn fail(exit: Exit, message: impl std::fmt::Display) -> Exit {
    eprintln!("routewatch: {message}");
    exit
}

pub(crate) fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `--config`, then `$ROUTEWATCH_CONFIG`, then `./probes.yaml`, then `/etc/routewatch/probes.yaml`.
pub(crate) fn find_config(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(p) = env("ROUTEWATCH_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if Path::new("probes.yaml").exists() {
        // As root, a `probes.yaml` that happens to be in the current directory (a shared
        // directory, someone else's checkout) is not taken in place of the system's unless
        // it passes the trust check: whoever planted it would choose what root probes.
        if rustix::process::geteuid().is_root()
            && let Some(why) = routewatch::trust::open(Path::new("probes.yaml"))
                .map_or_else(|e| Some(e.to_string()), |o| o.problem)
        {
            return Err(format!(
                "./probes.yaml is not taken as root's probe file: {why}; name it with --config to read it anyway (recovery stays off), or run from another directory to use /etc/routewatch/probes.yaml"
            ));
        }
        return Ok(PathBuf::from("probes.yaml"));
    }
    if Path::new("/etc/routewatch/probes.yaml").exists() {
        return Ok(PathBuf::from("/etc/routewatch/probes.yaml"));
    }
    Err("no probe file: none given with --config, $ROUTEWATCH_CONFIG is unset, and neither ./probes.yaml nor /etc/routewatch/probes.yaml exists (or use --url URL)".into())
}

/// The probe file, opened once: as root judged on the path as written and on the opened
/// file (`Some(reason)` when root should not act on it), otherwise only opened; the error
/// in plain words.
pub(crate) fn open_probe_file(
    path: &Path,
    root: bool,
) -> Result<(std::fs::File, Option<String>), String> {
    // Links are followed either way (the path as written is what root's trust check judges).
    let opened = routewatch::trust::open(path).map(|o| (o.file, o.problem.filter(|_| root)));
    opened.map_err(|e| {
        format!(
            "{}: cannot read: {}",
            path.display(),
            routewatch::words::io_error(&e)
        )
    })
}

/// One thread: a run is waiting on sockets, and on these small machines a second worker
/// costs more in wake-ups than it gains (2000 local routes: 74 ms vs 100 ms with two).
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
