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
