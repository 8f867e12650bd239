//! "Should this attempt be retried, and after how long?" — pure functions of data.

use std::time::{Duration, SystemTime};

use crate::outcome::Outcome;

/// What one attempt came to, as far as the retry decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts {
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// Parsed `Retry-After` of a 429/503, if any.
    pub retry_after: Option<Duration>,
    /// How long the attempt itself took.
    pub elapsed: Duration,
}

/// Transient outcomes are retried: timeouts, connect errors, resets, empty replies,
/// 502/503/504 and 429. Other 4xx, 500, body mismatches, TLS and DNS errors are not.
pub fn is_transient(outcome: Outcome, status: Option<u16>) -> bool {
    match outcome {
        Outcome::Timeout
        | Outcome::ConnectTimeout
        | Outcome::Refused
        | Outcome::Reset
        | Outcome::EmptyReply
        | Outcome::RateLimited => true,
        Outcome::HttpError => matches!(status, Some(429 | 502 | 503 | 504)),
        Outcome::Ok
        | Outcome::Slow
        | Outcome::Dns
        | Outcome::ProtocolError
        | Outcome::Tls
        | Outcome::BodyMismatch
        | Outcome::TooLarge
        | Outcome::CertExpiring => false,
    }
}

/// Whether outcome `a` is worse than `b` when a route's attempts disagree and the route must
/// end as one of them (a 429 on the last attempt after earlier failures): the most hang-like
/// first, since that is what the earlier attempts showed. A tie is not worse, so the later
/// attempt stands. Pure.
pub fn worse(a: Outcome, b: Outcome) -> bool {
    fn rank(o: Outcome) -> u8 {
        match o {
            Outcome::Timeout => 7,
            Outcome::EmptyReply => 6,
            Outcome::Reset => 5,
            Outcome::ConnectTimeout => 4,
            Outcome::Refused => 3,
            Outcome::HttpError => 2,
            Outcome::RateLimited => 0,
            _ => 1,
        }
    }
    rank(a) > rank(b)
}

/// Exponential backoff for retry number `retry` (1 = first retry): `base · 2^(retry-1)`, capped
/// by `max`, then reduced by up to a quarter by `jitter` (0.0..1.0) so a fleet of timers does
/// not retry in lockstep.
pub fn backoff(retry: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    let full = base.saturating_mul(factor).min(max);
    let jitter = jitter.clamp(0.0, 1.0);
    full.mul_f64(1.0 - 0.25 * jitter)
}

/// The decision after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// The attempt's outcome is the route's outcome.
    Stop,
}

/// Decide whether to retry after `attempts` attempts.
///
/// The delay counts from the start of the failed attempt: an attempt that already waited out
/// its timeout is retried at once, while a fast failure (refused, 503) waits for the backoff.
/// A `Retry-After` is honoured, capped by `max_backoff`. A retry that could not start before
/// `remaining` (the run's deadline) runs out is not made.
pub fn next(
    facts: &AttemptFacts,
    attempts: u32,
    retries: u32,
    base: Duration,
    max_backoff: Duration,
    remaining: Duration,
    jitter: f64,
) -> Next {
    if attempts > retries || !is_transient(facts.outcome, facts.status) {
        return Next::Stop;
    }
    let wanted = match facts.retry_after {
        Some(after) => after.min(max_backoff),
        None => backoff(attempts, base, max_backoff, jitter).saturating_sub(facts.elapsed),
    };
    if wanted >= remaining {
        return Next::Stop;
    }
    Next::RetryAfter(wanted)
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP-date (relative to `now`). Garbage
/// and dates in the past give `None` / zero; never panics.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate instead of failing.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(u32::MAX as u64)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn facts(outcome: Outcome, status: Option<u16>) -> AttemptFacts {
        AttemptFacts {
            outcome,
            status,
            retry_after: None,
            elapsed: MS(1),
        }
    }

    #[test]
    fn transient_table() {
        let table = [
            (Outcome::Timeout, None, true),
            (Outcome::ConnectTimeout, None, true),
            (Outcome::Refused, None, true),
            (Outcome::Reset, None, true),
            (Outcome::EmptyReply, None, true),
            (Outcome::RateLimited, Some(429), true),
            (Outcome::HttpError, Some(502), true),
            (Outcome::HttpError, Some(503), true),
            (Outcome::HttpError, Some(504), true),
            (Outcome::HttpError, Some(500), false),
            (Outcome::HttpError, Some(404), false),
            (Outcome::HttpError, Some(401), false),
            (Outcome::BodyMismatch, Some(200), false),
            (Outcome::Tls, None, false),
            (Outcome::Dns, None, false),
            (Outcome::ProtocolError, None, false),
            (Outcome::Ok, Some(200), false),
        ];
        for (outcome, status, want) in table {
            assert_eq!(is_transient(outcome, status), want, "{outcome} {status:?}");
        }
    }

    #[test]
    fn a_429_is_never_worse_than_a_failure() {
        use Outcome::*;
        for o in [
            Timeout,
            EmptyReply,
            Reset,
            ConnectTimeout,
            Refused,
            HttpError,
        ] {
            assert!(worse(o, RateLimited) && !worse(RateLimited, o), "{o}");
            assert!(!worse(o, o), "a tie keeps the later attempt: {o}");
        }
        assert!(worse(Timeout, HttpError) && worse(EmptyReply, Refused));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_down() {
        assert_eq!(backoff(1, MS(500), MS(10_000), 0.0), MS(500));
        assert_eq!(backoff(2, MS(500), MS(10_000), 0.0), MS(1000));
        assert_eq!(backoff(3, MS(500), MS(10_000), 0.0), MS(2000));
        assert_eq!(backoff(10, MS(500), MS(10_000), 0.0), MS(10_000));
        assert_eq!(backoff(u32::MAX, MS(500), MS(10_000), 0.0), MS(10_000));
        assert_eq!(backoff(1, MS(400), MS(10_000), 1.0), MS(300));
        let j = backoff(2, MS(400), MS(10_000), 0.5);
        assert!(j > MS(600) && j < MS(800), "{j:?}");
    }

    #[test]
    fn retries_only_transient_outcomes_within_budget() {
        let big = Duration::from_secs(60);
        let f = facts(Outcome::Refused, None);
        assert_eq!(
            next(&f, 1, 2, MS(100), big, big, 0.0),
            Next::RetryAfter(MS(99))
        );
        assert_eq!(
            next(&f, 2, 2, MS(100), big, big, 0.0),
            Next::RetryAfter(MS(199))
        );
        assert_eq!(next(&f, 3, 2, MS(100), big, big, 0.0), Next::Stop);
        let f = facts(Outcome::HttpError, Some(500));
        assert_eq!(next(&f, 1, 2, MS(100), big, big, 0.0), Next::Stop);
        let f = facts(Outcome::Refused, None);
        assert_eq!(next(&f, 1, 0, MS(100), big, big, 0.0), Next::Stop);
    }

    #[test]
    fn a_timed_out_attempt_is_retried_at_once() {
        let f = AttemptFacts {
            elapsed: MS(2000),
            ..facts(Outcome::Timeout, None)
        };
        let big = Duration::from_secs(60);
        assert_eq!(
            next(&f, 1, 2, MS(500), big, big, 0.0),
            Next::RetryAfter(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped_by_max_backoff_and_deadline() {
        let mut f = facts(Outcome::RateLimited, Some(429));
        f.retry_after = Some(MS(300));
        let big = Duration::from_secs(60);
        assert_eq!(
            next(&f, 1, 2, MS(10), big, big, 0.0),
            Next::RetryAfter(MS(300))
        );
        f.retry_after = Some(Duration::from_secs(3600));
        assert_eq!(
            next(&f, 1, 2, MS(10), MS(2000), big, 0.0),
            Next::RetryAfter(MS(2000))
        );
        assert_eq!(next(&f, 1, 2, MS(10), MS(2000), MS(1500), 0.0), Next::Stop);
    }

    #[test]
    fn retry_after_parsing_accepts_both_forms_and_survives_garbage() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert!(parse_retry_after("99999999999999999999999999", now).is_some());
        for garbage in ["", "-1", "1.5", "soon", "\u{0}\u{7f}", "Sun, 99 Nov 1994"] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }
}
