//! Verdicts: route outcomes → target verdict → run status → exit code. Pure.

use serde::Serialize;

use crate::outcome::Outcome;
use crate::plan::Class;

/// A target's verdict, ordered from best to worst.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every route ok or rate-limited.
    Healthy,
    /// Core routes ok; some auxiliary route failed, or something was slow.
    Degraded,
    /// Every core route rate-limited, or every failing core route cut short by the run's
    /// deadline: nothing proves it alive, nothing proves it hung.
    Unknown,
    /// A core route failed.
    Unhealthy,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Unknown => "unknown",
            Verdict::Unhealthy => "unhealthy",
        }
    }
}

/// What the verdict needs of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteFacts {
    pub class: Class,
    pub outcome: Outcome,
    /// The run's deadline ended it before any attempt had its full time: its failure says
    /// nothing about the service.
    pub cut_short: bool,
}

impl From<(Class, Outcome)> for RouteFacts {
    fn from((class, outcome): (Class, Outcome)) -> RouteFacts {
        RouteFacts {
            class,
            outcome,
            cut_short: false,
        }
    }
}

impl From<(Class, Outcome, bool)> for RouteFacts {
    fn from((class, outcome, cut_short): (Class, Outcome, bool)) -> RouteFacts {
        RouteFacts {
            class,
            outcome,
            cut_short,
        }
    }
}

/// The verdict of one target from its routes' classes and outcomes (and whether the run's
/// deadline cut them short). A failing core route that the deadline cut short before any full
/// attempt is not a failure of the service: when every failing core route is such, the target
/// is `unknown`, never `unhealthy` from that alone.
pub fn target_verdict<R: Into<RouteFacts>>(routes: impl IntoIterator<Item = R>) -> Verdict {
    let mut core = 0usize;
    let mut core_rate_limited = 0usize;
    let mut core_failed = false;
    let mut core_not_probed = false;
    let mut degraded = false;
    for r in routes {
        let RouteFacts {
            class,
            outcome,
            cut_short,
        } = r.into();
        match class {
            Class::Core => {
                core += 1;
                match outcome {
                    Outcome::RateLimited => core_rate_limited += 1,
                    Outcome::Slow | Outcome::CertExpiring => degraded = true,
                    o if !o.is_pass() && cut_short => core_not_probed = true,
                    o if !o.is_pass() => core_failed = true,
                    _ => {}
                }
            }
            Class::Auxiliary => {
                if !matches!(outcome, Outcome::Ok | Outcome::RateLimited) {
                    degraded = true;
                }
            }
        }
    }
    if core_failed {
        Verdict::Unhealthy
    } else if core_not_probed || (core > 0 && core_rate_limited == core) {
        Verdict::Unknown
    } else if degraded {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    }
}

/// The run's status: the worst target verdict, except that a target whose recovery was
/// verified counts as `recovered` (worse than unknown, better than unhealthy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Healthy,
    Degraded,
    Unknown,
    Recovered,
    Unhealthy,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Healthy => "healthy",
            RunStatus::Degraded => "degraded",
            RunStatus::Unknown => "unknown",
            RunStatus::Recovered => "recovered",
            RunStatus::Unhealthy => "unhealthy",
        }
    }

    /// The process exit code (README "Exit codes").
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Healthy | RunStatus::Degraded | RunStatus::Unknown => 0,
            RunStatus::Unhealthy => 1,
            RunStatus::Recovered => 3,
        }
    }
}

/// Fold targets' (verdict, recovered?) into the run status.
pub fn run_status(targets: impl IntoIterator<Item = (Verdict, bool)>) -> RunStatus {
    targets
        .into_iter()
        .map(|(v, recovered)| match v {
            Verdict::Healthy => RunStatus::Healthy,
            Verdict::Degraded => RunStatus::Degraded,
            Verdict::Unknown => RunStatus::Unknown,
            Verdict::Unhealthy if recovered => RunStatus::Recovered,
            Verdict::Unhealthy => RunStatus::Unhealthy,
        })
        .max()
        .unwrap_or(RunStatus::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Class::{Auxiliary as A, Core as C};
    use Outcome::*;

    #[test]
    fn target_verdict_table() {
        let table: &[(&[(Class, Outcome)], Verdict)] = &[
            (&[(C, Ok), (C, Ok)], Verdict::Healthy),
            (&[(C, Ok), (C, RateLimited)], Verdict::Healthy),
            (&[(C, Ok), (A, RateLimited)], Verdict::Healthy),
            (&[(C, Ok), (A, Timeout)], Verdict::Degraded),
            (&[(C, Slow), (A, Ok)], Verdict::Degraded),
            (&[(C, Ok), (A, Slow)], Verdict::Degraded),
            (&[(C, RateLimited), (C, RateLimited)], Verdict::Unknown),
            (&[(C, RateLimited), (A, Timeout)], Verdict::Unknown),
            (&[(C, Timeout), (C, Ok)], Verdict::Unhealthy),
            (&[(C, RateLimited), (C, EmptyReply)], Verdict::Unhealthy),
            (&[(C, HttpError)], Verdict::Unhealthy),
            (&[(C, BodyMismatch)], Verdict::Unhealthy),
            (&[(A, Timeout)], Verdict::Degraded),
            (&[(A, Ok)], Verdict::Healthy),
            (&[], Verdict::Healthy),
        ];
        for (routes, want) in table {
            assert_eq!(target_verdict(routes.iter().copied()), *want, "{routes:?}");
        }
    }

    #[test]
    fn core_routes_the_run_deadline_cut_short_are_unknown_not_unhealthy() {
        type Case = (&'static [(Class, Outcome, bool)], Verdict);
        let table: &[Case] = &[
            (&[(C, Ok, false), (C, Timeout, true)], Verdict::Unknown),
            (&[(C, Timeout, true), (C, Timeout, true)], Verdict::Unknown),
            (
                &[(C, RateLimited, false), (C, Timeout, true)],
                Verdict::Unknown,
            ),
            // A full failure beside them is still a failure.
            (
                &[(C, Timeout, false), (C, Timeout, true)],
                Verdict::Unhealthy,
            ),
            (
                &[(C, HttpError, false), (C, Timeout, true)],
                Verdict::Unhealthy,
            ),
            // Auxiliary routes cut short only degrade, as any auxiliary failure.
            (&[(C, Ok, false), (A, Timeout, true)], Verdict::Degraded),
        ];
        for (routes, want) in table {
            assert_eq!(target_verdict(routes.iter().copied()), *want, "{routes:?}");
        }
    }

    #[test]
    fn a_failing_core_route_never_makes_a_target_healthier() {
        // Monotonicity: replacing any route's outcome by a failing one on a core route can
        // only keep or worsen the verdict.
        let base = [(C, Ok), (C, RateLimited), (A, Ok), (A, Timeout)];
        for i in 0..base.len() {
            for o in crate::outcome::ALL {
                let mut worse = base;
                worse[i] = (C, o);
                let before = target_verdict(base);
                let after = target_verdict(worse);
                if !o.is_pass() {
                    assert_eq!(after, Verdict::Unhealthy);
                }
                assert!(after >= before || o.is_pass(), "{worse:?}");
            }
        }
    }

    #[test]
    fn run_status_is_the_worst_and_maps_to_exit_codes() {
        use Verdict as V;
        assert_eq!(run_status([]), RunStatus::Healthy);
        assert_eq!(
            run_status([(V::Healthy, false), (V::Degraded, false)]),
            RunStatus::Degraded
        );
        assert_eq!(
            run_status([(V::Unknown, false), (V::Degraded, false)]),
            RunStatus::Unknown
        );
        assert_eq!(
            run_status([(V::Unhealthy, true), (V::Unknown, false)]),
            RunStatus::Recovered
        );
        assert_eq!(
            run_status([(V::Unhealthy, true), (V::Unhealthy, false)]),
            RunStatus::Unhealthy
        );
        let codes: Vec<u8> = [
            RunStatus::Healthy,
            RunStatus::Degraded,
            RunStatus::Unknown,
            RunStatus::Recovered,
            RunStatus::Unhealthy,
        ]
        .iter()
        .map(|s| s.exit_code())
        .collect();
        assert_eq!(codes, [0, 0, 0, 3, 1]);
    }
}
