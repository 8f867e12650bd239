//! The integration tests, one binary (one link, one process for all of them): the real
//! `routewatch` executable and the library against local servers on port 0. Anything a test
//! changes for a whole process (a file-descriptor limit, a signal) is done in a child it spawns,
//! never in this process. Shared helpers are in `tests/common/`, among them [`common::rw`], the
//! binary with nothing inherited that could steer it.
//!
//! `e2e_recovery` (a real systemd in its own namespaces) is a binary of its own.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod cli;
mod config_errors;
mod dropins;
mod ecosystem;
mod fake_systemd;
mod fleet;
mod journal;
mod limits;
mod man_pages;
mod nagios;
mod probe_outcomes;
mod properties;
mod redirects;
mod review;
mod security;
mod silences;
mod tls_and_secrets;
