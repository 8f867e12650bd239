//! `routewatch validate`: parse and lint a probe file, send no traffic.

use std::path::PathBuf;

use routewatch::{config, words};

use super::{env, fail, find_config};
use crate::Exit;

pub(crate) fn validate(config_path: Option<PathBuf>) -> Exit {
    let path = match find_config(config_path) {
        Ok(p) => p,
        Err(e) => return fail(Exit::Usage, e),
    };
    // validate sends no traffic and needs no secrets: an unset ${VAR} is a warning here, at its
    // position (check refuses it), as is anything else allowed but probably not meant.
    let plan = match config::load_lenient(&path, &env) {
        Ok(p) => p,
        Err(e) => return fail(Exit::Usage, e),
    };
    for w in &plan.warnings {
        eprintln!("routewatch: warning: {w}");
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
