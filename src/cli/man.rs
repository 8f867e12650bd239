//! `routewatch man`: the manual pages, `routewatch(1)` and one per subcommand
//! (`routewatch-check(1)`, …). clap renders the name, synopsis, description and options from
//! the same definitions as `--help`; the sections below add what `--help` has no room for.

use std::path::Path;

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// What a page says beyond its options: (term, text) rows per section, and examples as
/// (what it does, command).
struct Extra {
    exit: &'static [(&'static str, &'static str)],
    files: &'static [(&'static str, &'static str)],
    env: &'static [(&'static str, &'static str)],
    examples: &'static [(&'static str, &'static str)],
}

const PROBE_FILE: (&str, &str) = (
    "/etc/routewatch/probes.yaml",
    "The probe file when neither --config nor $ROUTEWATCH_CONFIG is given and ./probes.yaml does not exist. Its JSON Schema is printed by routewatch schema and shipped as /usr/share/routewatch/probes.schema.json.",
);
const STATE_FILE: (&str, &str) = (
    "/var/lib/routewatch/state.json",
    "The state file (streaks, recent actions, silences, counters) as root; its directory also holds the lock file. As another user: $XDG_STATE_HOME/routewatch/state.json.",
);
const UNITS: (&str, &str) = (
    "/usr/lib/systemd/system/routewatch.service, routewatch.timer",
    "The shipped units: a oneshot check every 15 minutes.",
);
const CONFIG_ENV: (&str, &str) = (
    "ROUTEWATCH_CONFIG",
    "The probe file, when --config is not given.",
);
const STATE_ENV: (&str, &str) = (
    "STATE_DIRECTORY",
    "The state directory, when --state-dir is not given (systemd sets it from StateDirectory=); then /var/lib/routewatch as root, else $XDG_STATE_HOME/routewatch or $HOME/.local/state/routewatch.",
);
const NO_COLOR_ENV: (&str, &str) = ("NO_COLOR", "When set, the text report has no colour.");
const JOURNAL_ENV: (&str, &str) = (
    "JOURNAL_STREAM",
    "Set by systemd; when it names stderr, log entries go to the journal with their fields (ROUTEWATCH_TARGET, MESSAGE_ID, ...).",
);
const JOURNAL_SOCKET_ENV: (&str, &str) = (
    "ROUTEWATCH_JOURNAL_SOCKET",
    "Where native journal entries are sent, instead of /run/systemd/journal/socket.",
);
const DBUS_ENV: (&str, &str) = (
    "DBUS_SYSTEM_BUS_ADDRESS",
    "The system bus recovery asks systemd on.",
);
const CI_ENV: (&str, &str) = (
    "CI, INVOCATION_ID",
    "When either is set (a CI job, a systemd unit) there is no progress bar.",
);
const USAGE_EXIT: (&str, &str) = ("2", "Usage or configuration error: nothing was done.");
const CHECK_EXIT: &[(&str, &str)] = &[
    (
        "0",
        "Healthy: every core route OK (auxiliary failures, slow routes, 429s and unknown targets are warnings).",
    ),
    (
        "1",
        "Unhealthy: a core route failed and was not brought back.",
    ),
    USAGE_EXIT,
    (
        "3",
        "Recovered: a hung unit was acted on and its core routes pass again.",
    ),
    (
        "4",
        "Could not run: the check itself was stopped (state directory unusable, SIGTERM/SIGINT).",
    ),
    (
        "--format nagios",
        "The plugin states instead: 0 OK (healthy, or recovered and serving again), 1 WARNING (degraded or unknown), 2 CRITICAL (unhealthy), 3 UNKNOWN (usage error or could not run).",
    ),
];
const OK_OR_USAGE: &[(&str, &str)] = &[("0", "Success."), USAGE_EXIT];
const STATE_EXIT: &[(&str, &str)] = &[
    ("0", "Success."),
    USAGE_EXIT,
    ("4", "The state directory could not be read or written."),
];

/// A page's extras: `None` for the top-level page, else the subcommand's name. `None` back
/// for a subcommand this table does not know yet (a test asks for every one).
fn extra(page: Option<&str>) -> Option<Extra> {
    let Some(page) = page else {
        return Some(Extra {
            exit: CHECK_EXIT,
            files: &[PROBE_FILE, STATE_FILE, UNITS],
            env: &[
                CONFIG_ENV,
                STATE_ENV,
                NO_COLOR_ENV,
                JOURNAL_ENV,
                JOURNAL_SOCKET_ENV,
                DBUS_ENV,
                CI_ENV,
            ],
            examples: &[
                ("Check the routes of the probe file:", "routewatch check"),
                (
                    "Lint the probe file, no traffic:",
                    "routewatch validate --config /etc/routewatch/probes.yaml",
                ),
                (
                    "Run the timer now, as systemd would:",
                    "systemctl start routewatch.service",
                ),
            ],
        });
    };
    Some(match page {
        "check" => Extra {
            exit: CHECK_EXIT,
            files: &[PROBE_FILE, STATE_FILE],
            env: &[
                CONFIG_ENV,
                STATE_ENV,
                NO_COLOR_ENV,
                JOURNAL_ENV,
                JOURNAL_SOCKET_ENV,
                DBUS_ENV,
                CI_ENV,
            ],
            examples: &[
                (
                    "Check the routes of the probe file, recover hung units:",
                    "routewatch check",
                ),
                (
                    "A smoke check after a deploy, JUnit for the CI system:",
                    "routewatch check --url https://staging.example.org/health --format junit --output report.xml",
                ),
                (
                    "Metrics for node_exporter's textfile collector:",
                    "routewatch check --format prometheus --output /var/lib/node_exporter/textfile_collector/routewatch.prom",
                ),
                (
                    "As a Nagios or Icinga plugin:",
                    "routewatch check --format nagios --quiet",
                ),
                (
                    "What recovery would do, doing nothing:",
                    "routewatch check --dry-run",
                ),
            ],
        },
        "validate" => Extra {
            exit: OK_OR_USAGE,
            files: &[PROBE_FILE],
            env: &[CONFIG_ENV],
            examples: &[(
                "Lint a probe file before installing it:",
                "routewatch validate --config probes.yaml",
            )],
        },
        "status" => Extra {
            exit: STATE_EXIT,
            files: &[STATE_FILE],
            env: &[STATE_ENV],
            examples: &[(
                "What the timer's runs remember, for a script:",
                "routewatch status --format json",
            )],
        },
        "silence" => Extra {
            exit: STATE_EXIT,
            files: &[STATE_FILE],
            env: &[STATE_ENV],
            examples: &[
                (
                    "Maintenance on api for two hours:",
                    "routewatch silence api --for 2h --reason \"db migration\"",
                ),
                ("The silences in force:", "routewatch silence --list"),
                ("End it early:", "routewatch silence --clear api"),
            ],
        },
        "demo" => Extra {
            exit: &[("0", "The demo ran."), USAGE_EXIT],
            files: &[],
            env: &[NO_COLOR_ENV],
            examples: &[(
                "See the engine judge healthy, 429, slow and hung routes:",
                "routewatch demo",
            )],
        },
        "schema" => Extra {
            exit: OK_OR_USAGE,
            files: &[],
            env: &[],
            examples: &[(
                "The schema for an editor or a CI linter:",
                "routewatch schema > probes.schema.json",
            )],
        },
        "completions" => Extra {
            exit: OK_OR_USAGE,
            files: &[],
            env: &[],
            examples: &[(
                "Completions for bash:",
                "routewatch completions bash > /usr/share/bash-completion/completions/routewatch",
            )],
        },
        "man" => Extra {
            exit: &[
                ("0", "Success."),
                USAGE_EXIT,
                ("4", "A page could not be written."),
            ],
            files: &[],
            env: &[],
            examples: &[(
                "Write every page into a directory:",
                "routewatch man --dir /usr/local/share/man/man1",
            )],
        },
        "doctor" => Extra {
            exit: &[
                ("0", "Every check passed (warn lines are worth a look)."),
                ("1", "A check failed: its line says what to do."),
                USAGE_EXIT,
            ],
            files: &[PROBE_FILE, STATE_FILE, UNITS],
            env: &[CONFIG_ENV, STATE_ENV, DBUS_ENV],
            examples: &[
                (
                    "After installing or editing the units, as the service runs:",
                    "sudo routewatch doctor",
                ),
                (
                    "For a configuration-management run:",
                    "routewatch doctor --format json",
                ),
            ],
        },
        _ => return None,
    })
}

/// For a subcommand the table above does not know: its options and the usual codes.
const GENERIC: Extra = Extra {
    exit: OK_OR_USAGE,
    files: &[],
    env: &[],
    examples: &[],
};

fn rows(roff: &mut Roff, heading: &str, rows: &[(&str, &str)]) {
    if rows.is_empty() {
        return;
    }
    roff.control("SH", [heading]);
    for (term, text) in rows {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}

/// The page of `cmd` (the top-level command, or one of its subcommands named `sub`).
fn page(cmd: &clap::Command, sub: Option<&str>, subs: &[String]) -> std::io::Result<Vec<u8>> {
    let man = Man::new(cmd.clone()).source(format!("routewatch {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    // Every render call starts with the same preamble; once is enough.
    let preamble = Roff::new().render();
    let mut section = |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        f(&mut buf)?;
        out.extend_from_slice(buf.strip_prefix(preamble.as_bytes()).unwrap_or(&buf));
        std::io::Result::Ok(())
    };
    section(&|w| man.render_name_section(w))?;
    section(&|w| man.render_synopsis_section(w))?;
    section(&|w| man.render_description_section(w))?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        section(&|w| man.render_options_section(w))?;
    }
    if cmd.has_subcommands() {
        section(&|w| man.render_subcommands_section(w))?;
    }
    let extra = extra(sub).unwrap_or(GENERIC);
    let mut roff = Roff::new();
    rows(&mut roff, "EXIT STATUS", extra.exit);
    rows(&mut roff, "FILES", extra.files);
    rows(&mut roff, "ENVIRONMENT", extra.env);
    if !extra.examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (what, command) in extra.examples {
            roff.control("PP", []);
            roff.text([roman(*what)]);
            roff.control("PP", []);
            roff.control("RS", ["4"]);
            roff.text([bold(*command)]);
            roff.control("RE", []);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut see: Vec<String> = subs
        .iter()
        .filter(|s| Some(s.as_str()) != sub)
        .map(|s| format!("routewatch-{s}(1)"))
        .collect();
    if sub.is_some() {
        see.insert(0, "routewatch(1)".into());
    }
    see.extend(["systemd.service(5)".into(), "journalctl(1)".into()]);
    roff.text([
        roman(see.join(", ")),
        roman(". The README ("),
        italic("/usr/share/doc/routewatch/README.md"),
        roman(") documents the probe file, the outcomes and the reports in full."),
    ]);
    roff.control("SH", ["VERSION"]);
    roff.text([roman(format!("v{}", env!("CARGO_PKG_VERSION")))]);
    section(&|w| roff.to_writer(w))?;
    Ok(out)
}

/// Every page: `(file name, roff)`, the top-level page first.
pub(crate) fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    cmd.build();
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    let mut out = vec![("routewatch.1".to_string(), page(&cmd, None, &subs)?)];
    for name in &subs {
        // Built: its display name is `routewatch-NAME`, its usage `routewatch NAME`.
        let sub = cmd.find_subcommand(name).expect("listed above");
        out.push((
            format!("routewatch-{name}.1"),
            page(sub, Some(name), &subs)?,
        ));
    }
    Ok(out)
}

/// Write every page into `dir` (which must exist), each atomically. Returns the paths.
pub(crate) fn write_all(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    if !dir.is_dir() {
        return Err(format!("--dir {}: not a directory", dir.display()));
    }
    let pages = pages().map_err(|e| format!("cannot render the man pages: {e}"))?;
    let mut written = Vec::new();
    for (name, roff) in pages {
        let path = dir.join(&name);
        let text = String::from_utf8(roff).map_err(|e| format!("{name}: {e}"))?;
        super::output::emit(&text, Some(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_its_own_page_sections() {
        let cmd = <crate::Cli as clap::CommandFactory>::command();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let e = extra(Some(sub.get_name()))
                .unwrap_or_else(|| panic!("man.rs has no EXIT STATUS etc. for {}", sub.get_name()));
            assert!(
                !e.exit.is_empty() && !e.examples.is_empty(),
                "{}",
                sub.get_name()
            );
        }
    }
}
