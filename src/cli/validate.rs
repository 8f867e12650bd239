//! `routewatch validate`: parse and lint a probe file, send no traffic.

use std::path::PathBuf;

use routewatch::{config, words};

use super::{env, fail, find_config, is_root, open_probe_file};
use crate::Exit;

pub(crate) fn validate(config_path: Option<PathBuf>) -> Exit {
    let path = match find_config(config_path) {
        Ok(p) => p,
        Err(e) => return fail(Exit::Usage, e),
    };
    // As root the file is judged as `check` judges it, so that what validate accepts is what
    // check will read: a file others can write expands no ${VAR}, and its errors show
    // where, not what.
    let root = is_root();
    let (file, problem) = match open_probe_file(&path, root) {
        Ok(o) => o,
        Err(e) => return fail(Exit::Usage, e),
    };
    // validate sends no traffic and needs no secrets: an unset ${VAR} is a warning here, at its
    // position (check refuses it), as is anything else allowed but probably not meant.
    let plan = match config::load_opened_lenient(&file, &path, &env, problem.is_some()) {
        Ok(p) => p,
        Err(e) => return fail(Exit::Usage, e),
    };
    for w in &plan.warnings {
        eprintln!("routewatch: warning: {w}");
    }
    let untrusted: Vec<String> = problem
        .map(|p| format!("probe file: {p}"))
        .into_iter()
        .chain(plan.untrusted.iter().cloned())
        .collect();
    if !untrusted.is_empty() {
        eprintln!(
            "routewatch: warning: as root, check would refuse recovery: {} (fix the ownership/mode, or pass --insecure-config to check)",
            untrusted.join("; ")
        );
    }
    let routes: usize = plan.targets.iter().map(|t| t.routes.len()).sum();
    let units: Vec<&str> = plan
        .targets
        .iter()
        .filter_map(|t| t.unit.as_deref())
        .collect();
    println!(
        "{}: ok ({}, {}{})",
        path.display(),
        words::count(plan.targets.len() as u64, "target", "targets"),
        words::count(routes as u64, "route", "routes"),
        if units.is_empty() {
            String::new()
        } else {
            format!("; recovery may act on {}", units.join(", "))
        }
    );
    Exit::Healthy
}
