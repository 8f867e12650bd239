//! Route outcomes: what one route came to after its attempts. A failed probe is a value,
//! not an `Err`. The names are the contract (README "Outcomes", JSON `outcome`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// 429 on every attempt: soft contention, never a failure, never a kill.
    RateLimited,
    /// Fine, but slower than `expect.max_latency`: degraded, never unhealthy.
    Slow,
    /// Connected, no complete response in time: the hung signature.
    Timeout,
    ConnectTimeout,
    Refused,
    Dns,
    Reset,
    /// Connection closed before a complete response head.
    EmptyReply,
    /// Not HTTP.
    ProtocolError,
    Tls,
    /// Status outside `expect.status`.
    HttpError,
    BodyMismatch,
    /// A required body check could not be done within `max_body`.
    TooLarge,
    /// Fine, but the server certificate expires within `expect.cert_min_days`: degraded,
    /// never unhealthy, never a kill.
    CertExpiring,
}

pub const ALL: [Outcome; 15] = [
    Outcome::Ok,
    Outcome::RateLimited,
    Outcome::Slow,
    Outcome::Timeout,
    Outcome::ConnectTimeout,
    Outcome::Refused,
    Outcome::Dns,
    Outcome::Reset,
    Outcome::EmptyReply,
    Outcome::ProtocolError,
    Outcome::Tls,
    Outcome::HttpError,
    Outcome::BodyMismatch,
    Outcome::TooLarge,
    Outcome::CertExpiring,
];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RateLimited => "rate_limited",
            Outcome::Slow => "slow",
            Outcome::Timeout => "timeout",
            Outcome::ConnectTimeout => "connect_timeout",
            Outcome::Refused => "refused",
            Outcome::Dns => "dns",
            Outcome::Reset => "reset",
            Outcome::EmptyReply => "empty_reply",
            Outcome::ProtocolError => "protocol_error",
            Outcome::Tls => "tls",
            Outcome::HttpError => "http_error",
            Outcome::BodyMismatch => "body_mismatch",
            Outcome::TooLarge => "too_large",
            Outcome::CertExpiring => "cert_expiring",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Counts as "the route is serving" for the verdict.
    pub fn is_pass(self) -> bool {
        matches!(
            self,
            Outcome::Ok | Outcome::RateLimited | Outcome::Slow | Outcome::CertExpiring
        )
    }

    /// The summary group this outcome is counted in.
    pub fn group(self) -> Group {
        match self {
            Outcome::Ok => Group::Ok,
            Outcome::RateLimited => Group::RateLimited,
            Outcome::Slow => Group::Slow,
            Outcome::Timeout
            | Outcome::ConnectTimeout
            | Outcome::Refused
            | Outcome::Dns
            | Outcome::Reset
            | Outcome::EmptyReply => Group::Unreachable,
            Outcome::HttpError => Group::HttpError,
            Outcome::ProtocolError | Outcome::Tls => Group::Protocol,
            Outcome::BodyMismatch | Outcome::TooLarge => Group::Body,
            Outcome::CertExpiring => Group::CertExpiring,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Summary groups, printed as the seed incident's watchdog did:
/// `21 ok, 0 timeout/unreachable, 12 rate-limited, 0 http error` (other groups when non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Ok,
    Unreachable,
    RateLimited,
    HttpError,
    Slow,
    Protocol,
    Body,
    CertExpiring,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub routes: usize,
    pub ok: usize,
    pub timeout_unreachable: usize,
    pub rate_limited: usize,
    pub http_error: usize,
    pub slow: usize,
    pub protocol_error: usize,
    pub body_mismatch: usize,
    pub cert_expiring: usize,
}

impl Summary {
    pub fn from_outcomes(outcomes: impl IntoIterator<Item = Outcome>) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            s.routes += 1;
            match o.group() {
                Group::Ok => s.ok += 1,
                Group::Unreachable => s.timeout_unreachable += 1,
                Group::RateLimited => s.rate_limited += 1,
                Group::HttpError => s.http_error += 1,
                Group::Slow => s.slow += 1,
                Group::Protocol => s.protocol_error += 1,
                Group::Body => s.body_mismatch += 1,
                Group::CertExpiring => s.cert_expiring += 1,
            }
        }
        s
    }

    /// `21 ok, 0 timeout/unreachable, 12 rate-limited, 0 http error`, plus other groups when
    /// non-zero.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} ok, {} timeout/unreachable, {} rate-limited, {} http error",
            self.ok, self.timeout_unreachable, self.rate_limited, self.http_error
        );
        for (n, label) in [
            (self.slow, "slow"),
            (self.protocol_error, "protocol/tls error"),
            (self.body_mismatch, "body mismatch"),
            (self.cert_expiring, "certificate expiring"),
        ] {
            if n > 0 {
                line.push_str(&format!(", {n} {label}"));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for o in ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        assert_eq!(Outcome::parse("hung"), None);
    }

    #[test]
    fn summary_line_matches_the_seed_incident_format() {
        let mut outcomes = vec![Outcome::Ok; 21];
        outcomes.extend(vec![Outcome::RateLimited; 12]);
        let s = Summary::from_outcomes(outcomes);
        assert_eq!(
            s.line(),
            "21 ok, 0 timeout/unreachable, 12 rate-limited, 0 http error"
        );
        let s = Summary::from_outcomes([Outcome::Timeout, Outcome::Refused, Outcome::BodyMismatch]);
        assert_eq!(
            s.line(),
            "0 ok, 2 timeout/unreachable, 0 rate-limited, 0 http error, 1 body mismatch"
        );
        assert_eq!(s.routes, 3);
    }

    #[test]
    fn only_ok_rate_limited_and_slow_pass() {
        let passing: Vec<_> = ALL.into_iter().filter(|o| o.is_pass()).collect();
        assert_eq!(
            passing,
            [
                Outcome::Ok,
                Outcome::RateLimited,
                Outcome::Slow,
                Outcome::CertExpiring
            ]
        );
    }
}
