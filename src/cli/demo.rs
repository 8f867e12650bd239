//! `routewatch demo`: the real engine against an embedded local server.

use std::io::IsTerminal;
use std::time::Duration;

use routewatch::{demo, report};

use super::output::emit;
use super::{env, fail, runtime};
use crate::Exit;

pub(crate) fn run_demo() -> Exit {
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
