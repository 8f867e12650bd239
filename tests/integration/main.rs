//! The integration tests, one binary (one link, one process for all of them): the real
//! `routewatch` executable and the library against local servers on port 0. Anything a test
//! changes for a whole process (a file-descriptor limit, a signal) is done in a child it spawns,
//! never in this process. Shared helpers are in `tests/common/`, among them [`common::rw`], the
//! binary with nothing inherited that could steer it.
//!
//! `probe_outcomes`, `fake_systemd` and `e2e_recovery` are binaries of their own.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod cli;
mod config_errors;
mod dropins;
mod ecosystem;
mod fleet;
mod limits;
mod properties;
mod redirects;
mod security;
mod silences;
mod tls_and_secrets;
