//! The forms an `expect.json` value can take besides equality — `{ exists: true }`,
//! `{ absent: true }`, `{ gte: 1 }`, `{ lt: 100 }`, `{ regex: "…" }`, `{ max_age: 90s }` — and
//! the rules that judge a field by them. Pure: the time is passed in.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde_json::Value;

/// What one `expect.json` field must satisfy. Several forms in one map must all hold
/// (`{ gte: 1, lt: 100 }`).
#[derive(Debug, Clone)]
pub enum JsonCheck {
    /// Equal to this value, by [`crate::probe::json_matches`].
    Equals(Value),
    /// Present (any value, `null` included) or, with `false`, absent.
    Exists(bool),
    /// Numeric comparisons; the field must be a number.
    Compare(Vec<(Cmp, serde_json::Number)>),
    /// A string matching this pattern.
    Regex(Arc<Regex>),
    /// A timestamp (RFC 3339 or Unix seconds) no older than this.
    MaxAge(Duration),
}

/// A numeric comparison of `expect.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    pub const ALL: [Cmp; 4] = [Cmp::Gt, Cmp::Gte, Cmp::Lt, Cmp::Lte];

    pub fn key(self) -> &'static str {
        match self {
            Cmp::Gt => "gt",
            Cmp::Gte => "gte",
            Cmp::Lt => "lt",
            Cmp::Lte => "lte",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Gte => ">=",
            Cmp::Lt => "<",
            Cmp::Lte => "<=",
        }
    }

    fn holds(self, got: &serde_json::Number, bound: &serde_json::Number) -> bool {
        use std::cmp::Ordering::*;
        let order = compare(got, bound);
        match self {
            Cmp::Gt => order == Some(Greater),
            Cmp::Gte => matches!(order, Some(Greater | Equal)),
            Cmp::Lt => order == Some(Less),
            Cmp::Lte => matches!(order, Some(Less | Equal)),
        }
    }
}

/// The keys of the forms other than equality.
pub const FORM_KEYS: [&str; 8] = [
    "exists", "absent", "gt", "gte", "lt", "lte", "regex", "max_age",
];

/// Integers as integers (exact within 64 bits), anything else as doubles.
fn compare(a: &serde_json::Number, b: &serde_json::Number) -> Option<std::cmp::Ordering> {
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// How a JSON value's type reads in a message.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Judge one field (`None` when missing) by `check`; `Some(reason)` when it fails. `shown`
/// quotes a value of the body as the route's secrets allow. Pure.
pub fn judge(
    path: &str,
    got: Option<&Value>,
    check: &JsonCheck,
    now: SystemTime,
    shown: &dyn Fn(&Value) -> String,
) -> Option<String> {
    match (check, got) {
        (JsonCheck::Exists(true), None) => {
            Some(format!("json {path}: missing, expected it to exist"))
        }
        (JsonCheck::Exists(false), Some(v)) => Some(format!(
            "json {path}: present ({}), expected it absent",
            shown(v)
        )),
        (JsonCheck::Exists(_), _) => None,
        (JsonCheck::Equals(want), None) => Some(format!("json {path}: missing, expected {want}")),
        (JsonCheck::Equals(want), Some(got)) if !crate::probe::json_matches(got, want) => {
            // A string is never a number: say so when only the type differs.
            let kinds = if json_type(got) != json_type(want) {
                format!(" ({} is not {})", json_type(got), json_type(want))
            } else {
                String::new()
            };
            Some(format!(
                "json {path}: {}, expected {want}{kinds}",
                shown(got)
            ))
        }
        (JsonCheck::Equals(_), Some(_)) => None,
        (JsonCheck::Compare(cmps), got) => {
            let want = cmps
                .iter()
                .map(|(c, n)| format!("{} {n}", c.symbol()))
                .collect::<Vec<_>>()
                .join(" and ");
            match got {
                None => Some(format!("json {path}: missing, expected a number {want}")),
                Some(Value::Number(n)) => cmps
                    .iter()
                    .any(|(c, bound)| !c.holds(n, bound))
                    .then(|| format!("json {path}: {n}, expected {want}")),
                Some(other) => Some(format!(
                    "json {path}: {}, expected a number {want} ({} is not a number)",
                    shown(other),
                    json_type(other)
                )),
            }
        }
        (JsonCheck::Regex(re), got) => match got {
            None => Some(format!(
                "json {path}: missing, expected a string matching /{re}/"
            )),
            Some(Value::String(s)) if re.is_match(s) => None,
            Some(v @ Value::String(_)) => {
                Some(format!("json {path}: {} does not match /{re}/", shown(v)))
            }
            Some(other) => Some(format!(
                "json {path}: {}, expected a string matching /{re}/ ({} is not a string)",
                shown(other),
                json_type(other)
            )),
        },
        (JsonCheck::MaxAge(max), got) => {
            let max_shown = humantime::format_duration(*max);
            let Some(v) = got else {
                return Some(format!(
                    "json {path}: missing, expected a timestamp no older than {max_shown}"
                ));
            };
            let Some(at) = timestamp(v) else {
                return Some(format!(
                    "json {path}: {} is not a timestamp; expected RFC 3339 (2026-03-01T12:00:00Z) or Unix seconds",
                    shown(v)
                ));
            };
            // A time ahead of ours (clock skew) is fresh.
            let age = now.duration_since(at).unwrap_or_default();
            (age > *max).then(|| {
                format!(
                    "json {path}: {} is {} old, over max_age {max_shown}: a stale heartbeat",
                    shown(v),
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                )
            })
        }
    }
}

/// A timestamp field: RFC 3339 text, or Unix seconds as a number or a string of digits.
pub fn timestamp(v: &Value) -> Option<SystemTime> {
    let from_secs = |secs: f64| {
        (secs.is_finite() && (0.0..1e13).contains(&secs))
            .then(|| UNIX_EPOCH + Duration::from_secs_f64(secs))
    };
    match v {
        Value::Number(n) => from_secs(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            match s.parse::<f64>() {
                Ok(secs) => from_secs(secs),
                Err(_) => rfc3339(s),
            }
        }
        _ => None,
    }
}

/// `2026-03-01T12:00:00Z`, `2026-03-01 12:00:00.123+02:00`, `…-0530`: RFC 3339 (a space for
/// the `T` and lower-case letters allowed). Pure.
pub fn rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = rest[1..].replace(':', "");
            if hm.len() != 4 || !hm.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (h, m): (i64, i64) = (hm[..2].parse().ok()?, hm[2..].parse().ok()?);
            sign * (h * 3600 + m * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn plain(v: &Value) -> String {
        v.to_string()
    }

    fn run(got: Option<Value>, check: JsonCheck) -> Option<String> {
        judge("f", got.as_ref(), &check, at(1_800_000_000), &plain)
    }

    #[test]
    fn rfc3339_reads_zones_fractions_and_refuses_what_is_not_a_date() {
        assert_eq!(rfc3339("2027-01-15T08:00:00Z"), Some(at(1_800_000_000)));
        assert_eq!(
            rfc3339("2027-01-15 10:00:00+02:00"),
            Some(at(1_800_000_000))
        );
        assert_eq!(rfc3339("2027-01-15T02:30:00-0530"), Some(at(1_800_000_000)));
        assert_eq!(
            rfc3339("2027-01-15T08:00:00.250Z"),
            Some(at(1_800_000_000) + Duration::from_millis(250))
        );
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(rfc3339("2000-02-29T00:00:00Z"), Some(at(951_782_400)));
        for bad in [
            "2027-01-15",
            "2027-13-01T00:00:00Z",
            "2027-01-15T08:00:00",
            "yesterday",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn max_age_takes_rfc3339_or_unix_seconds_and_names_a_stale_age() {
        let max = || JsonCheck::MaxAge(Duration::from_secs(90));
        assert_eq!(run(Some(json!("2027-01-15T07:59:00Z")), max()), None);
        assert_eq!(run(Some(json!(1_800_000_000 - 30)), max()), None);
        assert_eq!(run(Some(json!("1799999990")), max()), None);
        // Ahead of our clock: fresh.
        assert_eq!(run(Some(json!(1_800_000_100)), max()), None);
        let why = run(Some(json!("2027-01-15T07:55:00Z")), max()).unwrap();
        assert_eq!(
            why,
            "json f: \"2027-01-15T07:55:00Z\" is 5m old, over max_age 1m 30s: a stale heartbeat"
        );
        let why = run(Some(json!(1_800_000_000 - 3600)), max()).unwrap();
        assert!(why.contains("is 1h old"), "{why}");
        assert!(
            run(Some(json!(true)), max())
                .unwrap()
                .contains("is not a timestamp")
        );
        assert!(run(None, max()).unwrap().contains("missing"));
    }

    #[test]
    fn exists_absent_compare_and_regex_pass_and_fail() {
        assert_eq!(run(Some(json!(null)), JsonCheck::Exists(true)), None);
        assert_eq!(
            run(None, JsonCheck::Exists(true)).unwrap(),
            "json f: missing, expected it to exist"
        );
        assert_eq!(run(None, JsonCheck::Exists(false)), None);
        assert_eq!(
            run(Some(json!("x")), JsonCheck::Exists(false)).unwrap(),
            "json f: present (\"x\"), expected it absent"
        );
        let range = || {
            JsonCheck::Compare(vec![
                (Cmp::Gte, serde_json::Number::from(1)),
                (Cmp::Lt, serde_json::Number::from(100)),
            ])
        };
        assert_eq!(run(Some(json!(1)), range()), None);
        assert_eq!(run(Some(json!(99.5)), range()), None);
        assert_eq!(
            run(Some(json!(100)), range()).unwrap(),
            "json f: 100, expected >= 1 and < 100"
        );
        assert_eq!(
            run(Some(json!(0)), range()).unwrap(),
            "json f: 0, expected >= 1 and < 100"
        );
        assert_eq!(
            run(Some(json!("5")), range()).unwrap(),
            "json f: \"5\", expected a number >= 1 and < 100 (a string is not a number)"
        );
        // Exact beyond 2^53.
        let big = JsonCheck::Compare(vec![(
            Cmp::Gt,
            serde_json::Number::from(9007199254740992u64),
        )]);
        assert_eq!(run(Some(json!(9007199254740993u64)), big), None);
        let re = || JsonCheck::Regex(Arc::new(Regex::new("^v[0-9]+$").unwrap()));
        assert_eq!(run(Some(json!("v12")), re()), None);
        assert_eq!(
            run(Some(json!("beta")), re()).unwrap(),
            "json f: \"beta\" does not match /^v[0-9]+$/"
        );
        assert!(
            run(Some(json!(12)), re())
                .unwrap()
                .contains("a number is not a string")
        );
    }
}
