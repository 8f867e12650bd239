//! routewatch: probe a service's core and auxiliary HTTP routes, judge whether it is really
//! serving, and, when its core routes are hung, SIGKILL the unit's main process so systemd
//! restarts it.
//!
//! The data flows through the modules in this order:
//!
//! ```text
//! YAML -config-> Plan -probe-> [TargetResult] -verdict-> Verdict -recovery-> [Recovery] -report-> text/json/…
//! ```
//!
//! Only `config` (the probe file), `probe` (sockets), `systemd` (D-Bus, pidfd), `state` (the
//! state file) and `log` (stderr) touch the outside world; everything else is plain data in,
//! data out.

pub mod alerts;
pub mod certs;
pub mod config;
pub mod demo;
pub mod doctor;
mod early_answer;
pub mod evidence;
pub mod expect;
pub mod log;
pub mod outcome;
pub mod plan;
pub mod probe;
pub mod push;
pub mod recovery;
pub mod redirect;
pub mod report;
pub mod retry;
pub mod run;
pub mod state;
pub mod systemd;
pub mod tls_check;
pub mod trust;
pub mod verdict;
pub mod words;

/// Our own process is out of file descriptors (EMFILE/ENFILE): says nothing about a target
/// or a disk, and passes once a descriptor is freed.
pub(crate) fn out_of_fds(e: &std::io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::MFILE.raw_os_error())
        || code == Some(rustix::io::Errno::NFILE.raw_os_error())
}

/// The default User-Agent: `routewatch/<version>`.
pub const DEFAULT_USER_AGENT: &str = concat!("routewatch/", env!("CARGO_PKG_VERSION"));
