//! The probe file: serde structs that mirror `probes.yaml` (unknown keys rejected), and one
//! function, [`resolve`], that turns them into a validated [`Plan`]. This is the only module
//! that names the YAML crate.
//!
//! Every error reads `file:line:column: what was wrong, the bad value, what is accepted`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use reqwest::header::{HeaderName, HeaderValue};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;
use std::borrow::Cow;

use crate::outcome::Outcome;
use crate::plan::{
    self, Action, Class, Endpoint, Expect, Header, IpFamily, Plan, RecoveryPolicy, Route, Target,
    Timing, Tls,
};

/// Probe files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// More routes than this in one file is a mistake, not a plan.
pub const MAX_ROUTES: usize = 20_000;
/// A regular expression (`expect.body_regex`, an `expect.header` pattern) longer than this is
/// refused before it is compiled: health-check patterns are short, and compiling a long one
/// costs memory in proportion to its length before any size limit applies.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// The compiled size of one regular expression (regex's `size_limit`). Fits every realistic
/// health-check pattern (`\w{10}` needs half of it; ASCII classes such as `[0-9a-z]` or
/// `(?-u:\w)` are far smaller than Unicode `\w`).
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// The lazy DFA cache of one regular expression while it matches (regex's `dfa_size_limit`).
pub const MAX_REGEX_CACHE_BYTES: usize = 1 << 20;
/// All distinct patterns of one file together, compiled (identical patterns are compiled once
/// and shared). Each pattern is charged the smallest of [`REGEX_TIERS`] it fits in, plus
/// [`REGEX_OVERHEAD_BYTES`]: about 800 distinct simple patterns, 200 with a Unicode `\w+`, or
/// 16 at the per-pattern limit.
pub const MAX_REGEX_TOTAL_BYTES: usize = 16 << 20;
/// What a compiled pattern costs beyond its automaton (reverse automaton, prefilter, cache pool).
const REGEX_OVERHEAD_BYTES: usize = 16 << 10;
/// Compiled-size steps a pattern is tried at; it is charged the first it fits in.
const REGEX_TIERS: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, MAX_REGEX_BYTES];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when known.
    pub at: Option<(u64, u64)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// The file, as written.

/// A routewatch probe file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "routewatch probe file")]
struct RawFile {
    /// User-Agent of every request; default `routewatch/<version>`.
    #[schemars(with = "Option<String>")]
    user_agent: Option<Spanned<String>>,
    defaults: Option<RawDefaults>,
    /// The services to probe.
    #[schemars(with = "Vec<RawTarget>")]
    targets: Spanned<RawTargets>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[schemars(with = "Option<Dur>")]
    timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    connect_timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    retries: Option<Spanned<Count>>,
    #[schemars(with = "Option<Dur>")]
    backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    max_backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    concurrency: Option<Spanned<Count>>,
    #[schemars(with = "Option<Size>")]
    max_body: Option<Spanned<Size>>,
    /// Limit on the whole probing phase of a run.
    #[schemars(with = "Option<Dur>")]
    run_timeout: Option<Spanned<Dur>>,
    /// Use `HTTP(S)_PROXY` from the environment (default false).
    proxy: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// `http://host[:port]`, `https://…`, or `unix:/path/to.sock` (HTTP over a Unix socket).
    #[schemars(with = "Option<String>")]
    base_url: Option<Spanned<String>>,
    /// `host:port`: a plain TCP connect probe instead of HTTP.
    #[schemars(with = "Option<String>")]
    tcp: Option<Spanned<String>>,
    /// The systemd service to recover (`name.service`); needed for recovery.
    #[schemars(with = "Option<String>")]
    unit: Option<Spanned<String>>,
    /// Request headers for every route; `${VAR}` is taken from the environment and never printed.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    headers: BTreeMap<String, Spanned<String>>,
    /// What to do when core routes are hung (needs `unit`).
    #[schemars(with = "Option<RawRecovery>")]
    recovery: Option<Box<Spanned<RawRecovery>>>,
    /// The HTTP routes to probe (none for a `tcp` target).
    #[serde(default)]
    #[schemars(with = "Vec<RawRoute>")]
    routes: RawRoutes,
    // Per-target overrides of `defaults`.
    #[schemars(with = "Option<Dur>")]
    timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    connect_timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    retries: Option<Spanned<Count>>,
    #[schemars(with = "Option<Dur>")]
    backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    max_backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    concurrency: Option<Spanned<Count>>,
    #[schemars(with = "Option<Size>")]
    max_body: Option<Spanned<Size>>,
    proxy: Option<bool>,
    tls: Option<Box<RawTls>>,
    ip: Option<RawIp>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawTls {
    /// PEM file of extra trusted CA certificates (relative paths are relative to the probe file).
    #[schemars(with = "Option<String>")]
    ca_file: Option<Spanned<String>>,
    /// Skip certificate verification (loud in the report; for lab use only).
    #[serde(default)]
    insecure: bool,
}

/// Address family: any (default), v4 or v6.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum RawIp {
    Any,
    V4,
    V6,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    /// Request target, e.g. `/api/health`.
    #[schemars(with = "String")]
    path: Spanned<String>,
    /// `core` (liveness; default) or `auxiliary` (heavy, optional; never unhealthy).
    #[serde(default = "default_class")]
    class: Class,
    /// HTTP method (default GET).
    #[schemars(with = "Option<String>")]
    method: Option<Spanned<String>>,
    /// Request body, e.g. a JSON-RPC health call.
    body: Option<String>,
    /// Extra request headers for this route.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    headers: BTreeMap<String, Spanned<String>>,
    expect: Option<Box<RawExpect>>,
    #[schemars(with = "Option<Dur>")]
    timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    retries: Option<Spanned<Count>>,
    #[schemars(with = "Option<Dur>")]
    backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    max_backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Size>")]
    max_body: Option<Spanned<Size>>,
}

// ---------------------------------------------------------------------------------------------
// Route counting while the file is read. A route as read is a large struct, so a file with far
// more than `MAX_ROUTES` routes must not be held whole before its count is checked: the lists
// below keep the first `MAX_ROUTES` route slots of the file and only count the rest, and
// `resolve` reports the total.

/// Visitor methods that accept every scalar (other than a string) as `$value`.
macro_rules! any_scalar {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

thread_local! {
    /// Route slots read so far by the file being parsed on this thread: a route, or a target
    /// without routes (a `tcp` probe). Reset by `parse_in`.
    static ROUTE_SLOTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn slots_read() -> usize {
    ROUTE_SLOTS.with(std::cell::Cell::get)
}

fn add_slots(n: usize) {
    ROUTE_SLOTS.with(|c| c.set(c.get().saturating_add(n)));
}

/// `targets:` as read: the targets while the file is within `MAX_ROUTES`, and the file's
/// total of route slots (what `MAX_ROUTES` limits).
#[derive(Debug, Default)]
struct RawTargets {
    kept: Vec<Spanned<RawTarget>>,
    slots: usize,
}

impl<'de> Deserialize<'de> for RawTargets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTargets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of targets")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawTargets, A::Error> {
                let mut kept = Vec::new();
                loop {
                    let routes = if slots_read() < MAX_ROUTES {
                        match seq.next_element::<Spanned<RawTarget>>()? {
                            Some(t) => {
                                let n = t.value.routes.count;
                                kept.push(t);
                                n
                            }
                            None => break,
                        }
                    } else {
                        match seq.next_element::<RouteCount>()? {
                            Some(c) => c.0,
                            None => break,
                        }
                    };
                    // A target without routes is one probe (`tcp`), or an error found later.
                    if routes == 0 {
                        add_slots(1);
                    }
                }
                Ok(RawTargets {
                    kept,
                    slots: slots_read(),
                })
            }
        }
        d.deserialize_seq(V)
    }
}

/// A target's `routes:` as read: the routes while the file is within `MAX_ROUTES`, and how
/// many were written.
#[derive(Debug, Default)]
struct RawRoutes {
    kept: Vec<Spanned<RawRoute>>,
    count: usize,
}

impl<'de> Deserialize<'de> for RawRoutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRoutes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of routes")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawRoutes, A::Error> {
                let mut out = RawRoutes::default();
                loop {
                    if slots_read() < MAX_ROUTES {
                        match seq.next_element::<Spanned<RawRoute>>()? {
                            Some(r) => out.kept.push(r),
                            None => break,
                        }
                    } else if seq.next_element::<de::IgnoredAny>()?.is_none() {
                        break;
                    }
                    out.count += 1;
                    add_slots(1);
                }
                // A route as read is large: no room for more than were written.
                out.kept.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A target past the route limit: only its routes are counted, everything else is skipped.
struct RouteCount(usize);

impl<'de> Deserialize<'de> for RouteCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RouteCount, A::Error> {
                let mut n = 0;
                while let Some(key) = map.next_key::<KeyName>()? {
                    if key.0 {
                        n += map.next_value::<RawRoutes>()?.count;
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                Ok(RouteCount(n))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RouteCount, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(RouteCount(0))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RouteCount, E> {
                Ok(RouteCount(0))
            }
            any_scalar!(RouteCount(0));
        }
        d.deserialize_any(V)
    }
}

/// A mapping key of a skipped target: whether it is `routes`.
struct KeyName(bool);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(v == "routes"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyName, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(KeyName(false))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<KeyName, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(KeyName(false))
            }
            any_scalar!(KeyName(false));
        }
        d.deserialize_any(V)
    }
}

fn default_class() -> Class {
    Class::Core
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    /// Accepted statuses: a code, a range "200-299", or a list; default 200-399.
    status: Option<StatusSpec>,
    /// A substring the body must contain.
    body_contains: Option<String>,
    /// A regular expression the body must match.
    #[schemars(with = "Option<String>")]
    body_regex: Option<Spanned<String>>,
    /// Dotted JSON field path → expected value.
    #[serde(default)]
    json: BTreeMap<String, serde_json::Value>,
    /// Response header name → regular expression its value must match.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    header: BTreeMap<String, Spanned<String>>,
    max_latency: Option<Dur>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRecovery {
    /// kill (default) | restart | none.
    action: Option<Action>,
    /// Consecutive unhealthy runs before acting (default 1).
    #[schemars(with = "Option<Count>")]
    after_failed_runs: Option<Spanned<Count>>,
    /// Outcomes that mean "hung" (default [timeout, empty_reply, reset]).
    #[schemars(with = "Option<Vec<String>>")]
    on: Option<Vec<Spanned<String>>>,
    startup_grace: Option<Dur>,
    cooldown: Option<Dur>,
    #[schemars(with = "Option<Count>")]
    max_actions: Option<Spanned<Count>>,
    window: Option<Dur>,
    #[schemars(with = "Option<Dur>")]
    verify_timeout: Option<Spanned<Dur>>,
}

// ---------------------------------------------------------------------------------------------
// Scalars with their own syntax. Their errors carry the YAML location automatically.

#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?} ({e}); expected a number with a unit, e.g. 500ms, 10s, 2m, 1h"
            ))
        })
    }
}

/// A whole number ≥ 0 (retries, concurrency, …).
#[derive(Debug, Clone, Copy)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number ≥ 0")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v).map(Count).map_err(|_| {
                    E::custom(format!("invalid value {v}; expected a whole number ≥ 0"))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                v.trim().parse().map(Count).map_err(|_| {
                    E::custom(format!("invalid value {v:?}; expected a whole number ≥ 0"))
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                // A whole number beyond u64 arrives as a float: keep it out of range (the
                // field's own check then reports it as written, with the accepted range).
                if v.is_finite() && v.fract() == 0.0 && v >= u64::MAX as f64 {
                    return Ok(Count(u64::MAX));
                }
                Err(E::custom(format!(
                    "invalid value {v}; expected a whole number ≥ 0"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size: `65536`, `64KiB`, `1MiB`, `10kB`.
#[derive(Debug, Clone, Copy)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 65536, 64KiB or 1MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| {
                    E::custom(format!(
                        "invalid size {v}; expected e.g. 65536, 64KiB, 1MiB"
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {v:?}; expected e.g. 65536, 64KiB, 1MiB"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `expect.status`: a code, a range `"200-299"`, or a list of either.
#[derive(Debug, Clone)]
struct StatusSpec(Vec<(u16, u16)>);

fn parse_status_item(s: &str) -> Option<(u16, u16)> {
    let one = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            (lo <= hi).then_some((lo, hi))
        }
        None => one(s).map(|c| (c, c)),
    }
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WANT: &str =
            "expected a status code 100-599, a range like \"200-299\", or a list of them";
        impl<'de> Visitor<'de> for V {
            type Value = StatusSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(WANT)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSpec, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSpec, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusSpec, E> {
                parse_status_item(v)
                    .map(|r| StatusSpec(vec![r]))
                    .ok_or_else(|| E::custom(format!("invalid status {v:?}; {WANT}")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSpec, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<StatusSpec>()? {
                    all.extend(item.0);
                }
                if all.is_empty() {
                    return Err(de::Error::custom(format!("empty status list; {WANT}")));
                }
                Ok(StatusSpec(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "A duration: 500ms, 10s, 2m, 1h", "pattern": "^\\s*[0-9]" })
    }
}

impl JsonSchema for Count {
    fn schema_name() -> Cow<'static, str> {
        "Count".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 0 })
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Bytes: 65536, 64KiB, 1MiB",
            "anyOf": [ { "type": "integer", "minimum": 0 }, { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|K|KiB|M|MiB|G|GiB|kB|KB|MB|GB)?\\s*$" } ]
        })
    }
}

impl JsonSchema for StatusSpec {
    fn schema_name() -> Cow<'static, str> {
        "StatusSpec".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A status code, a range like \"200-299\", or a list of them",
            "anyOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "string", "pattern": "^\\s*[1-5][0-9][0-9]\\s*(-\\s*[1-5][0-9][0-9]\\s*)?$" },
                { "type": "array", "minItems": 1, "items": { "anyOf": [
                    { "type": "integer", "minimum": 100, "maximum": 599 },
                    { "type": "string", "pattern": "^\\s*[1-5][0-9][0-9]\\s*(-\\s*[1-5][0-9][0-9]\\s*)?$" }
                ] } }
            ]
        })
    }
}

/// The JSON Schema of the probe file, generated from the same structs the loader uses.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawFile)).expect("schema serialises")
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Read and resolve a probe file. `env` looks up `${VAR}` references.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, ConfigError> {
    let file = crate::trust::open_regular(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        at: None,
        message: format!("cannot read: {e}"),
    })?;
    load_opened(&file, path, env)
}

/// Read and resolve a probe file from a descriptor already opened (and, as root, judged:
/// see `trust::open`); `path` names it in errors and anchors relative paths.
pub fn load_opened(
    opened: &std::fs::File,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, ConfigError> {
    let file = path.display().to_string();
    let err = |message: String| ConfigError {
        file: file.clone(),
        at: None,
        message,
    };
    let (bytes, over) = crate::trust::read_limited(opened, MAX_FILE_BYTES)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if over {
        let size = opened.metadata().map_or(0, |m| m.len());
        return Err(err(format!(
            "file is {size} bytes; a probe file may be at most {MAX_FILE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let col = (offset
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1)) as u64
            + 1;
        ConfigError {
            file: file.clone(),
            at: Some((line, col)),
            message: "invalid UTF-8; a probe file must be UTF-8 text".into(),
        }
    })?;
    parse_in(&text, &file, env, path.parent())
}

/// Parse and resolve probe-file text; `file` names it in errors, relative paths are relative
/// to the current directory.
pub fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, ConfigError> {
    parse_in(text, file, env, None)
}

fn parse_in(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
) -> Result<Plan, ConfigError> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(ConfigError {
            file: file.to_string(),
            at: Some((1, 1)),
            message: "the file is empty; expected a probe file with at least 'targets:', e.g. targets: [ { name: web, base_url: http://127.0.0.1:8000, routes: [ { path: /health } ] } ]".into(),
        });
    }
    ROUTE_SLOTS.with(|c| c.set(0));
    let raw: RawFile = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| yaml_error(file, text, &e))?;
    resolve(raw, file, text, env, base_dir)
}

/// `tls.ca_file` must exist and hold at least one PEM certificate; relative to the probe file.
fn check_ca_file(cx: &Ctx, ca: &Spanned<String>, target: &str) -> Result<PathBuf, ConfigError> {
    let raw = Path::new(ca.value.trim());
    let path = match cx.base_dir {
        Some(base) if raw.is_relative() => base.join(raw),
        _ => raw.to_path_buf(),
    };
    let pem = std::fs::read(&path).map_err(|e| {
        cx.err(
            ca,
            format!(
                "target {target:?}: tls.ca_file {}: {e}; expected a PEM file of CA certificates",
                path.display()
            ),
        )
    })?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(path),
        Ok(_) => Err(cx.err(ca, format!("target {target:?}: tls.ca_file {} holds no PEM certificate; expected -----BEGIN CERTIFICATE----- blocks", path.display()))),
        Err(e) => Err(cx.err(ca, format!("target {target:?}: tls.ca_file {} is not valid PEM ({e}); expected -----BEGIN CERTIFICATE----- blocks", path.display()))),
    }
}

/// YAML processing limits. Generous for any real probe file, small enough that a hostile one
/// fails fast; README "Security" quotes them and every breach names the one that was hit.
const MAX_ALIASES: usize = 1_000;
const MAX_ANCHORS: usize = 1_000;
const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 500_000;
const MAX_EVENTS: usize = 2_000_000;
const MAX_SCALAR_BYTES: usize = 16 * 1024 * 1024;
const MAX_REPLAYED_EVENTS: usize = 50_000;
const MAX_EXPANSIONS_PER_ANCHOR: usize = 1_000;

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ANCHORS;
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_events = MAX_EVENTS;
    budget.max_total_scalar_bytes = MAX_SCALAR_BYTES;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // An alias bomb expands through replays: cap them well below what hurts.
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    options.alias_limits.max_alias_expansions_per_anchor = MAX_EXPANSIONS_PER_ANCHOR;
    options
}

/// The message for nesting beyond [`MAX_DEPTH`], whichever layer notices it first (the
/// budget, or the scanner's own "recursion limit exceeded" on very deep flow collections).
fn depth_message() -> String {
    format!(
        "nesting deeper than {MAX_DEPTH} levels (recursion limit exceeded); a probe file may nest lists and mappings at most {MAX_DEPTH} levels deep"
    )
}

/// Every budget breach as one sentence that names the limit hit. Alias and size breaches keep
/// the words "too large or too deeply aliased", which scripts and tests look for.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    const BIG: &str = "the document is too large or too deeply aliased";
    match breach {
        B::Depth { .. } => depth_message(),
        B::Aliases { .. } => format!(
            "{BIG}: more than {MAX_ALIASES} aliases (*name); a probe file may use at most {MAX_ALIASES}"
        ),
        B::Anchors { .. } => format!(
            "{BIG}: more than {MAX_ANCHORS} anchors (&name); a probe file may define at most {MAX_ANCHORS}"
        ),
        B::AliasAnchorRatio { aliases, anchors } => format!(
            "{BIG}: {aliases} aliases for {anchors} anchors; a probe file may not reuse anchors that heavily"
        ),
        B::Nodes { .. } => format!(
            "{BIG}: more than {MAX_NODES} values, lists and mappings; a probe file may hold at most {MAX_NODES}"
        ),
        B::Events { .. } => format!(
            "{BIG}: more than {MAX_EVENTS} YAML events; a probe file may produce at most {MAX_EVENTS}"
        ),
        B::ScalarBytes { .. } => format!(
            "{BIG}: more than {} MiB of text in values; a probe file may hold at most {} MiB",
            MAX_SCALAR_BYTES >> 20,
            MAX_SCALAR_BYTES >> 20
        ),
        B::Documents { .. } => {
            "more than one YAML document ('---'); a probe file is a single document".to_string()
        }
        other => {
            // Limits routewatch leaves at the crate's defaults; name them without a Debug dump.
            let name = format!("{other:?}");
            let name = name
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or("")
                .to_string();
            format!("{BIG}: a YAML processing limit was exceeded ({name})")
        }
    }
}

fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error) -> ConfigError {
    use serde_saphyr::Error as E;
    let at = e
        .location()
        .map(|l| (l.line(), l.column()))
        .filter(|&(l, _)| l > 0);
    // Byte offset of the error in `text`, for naming the field and echoing the bad value.
    let offset = e.location().and_then(|l| {
        l.span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= text.len() && text.is_char_boundary(o))
            .or_else(|| at.and_then(|(line, col)| offset_of(text, line, col)))
    });
    let mut inner = e.without_snippet();
    while let E::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let shape = |want: Want| match offset {
        Some(o) => shape_message(text, o, want),
        None => format!("expected {}", want.accepted()),
    };
    let message = match inner {
        E::Budget { breach, .. } => budget_message(breach),
        E::AliasReplayLimitExceeded { .. } => format!(
            "the document is too large or too deeply aliased: aliases expand to more than {MAX_REPLAYED_EVENTS} replayed events (a \"billion laughs\"); a probe file may expand at most {MAX_REPLAYED_EVENTS}"
        ),
        E::AliasExpansionLimitExceeded { .. } => format!(
            "the document is too large or too deeply aliased: one anchor is used more than {MAX_EXPANSIONS_PER_ANCHOR} times; a probe file may expand each anchor at most {MAX_EXPANSIONS_PER_ANCHOR} times"
        ),
        E::AliasReplayStackDepthExceeded { max_depth, .. } => format!(
            "the document is too large or too deeply aliased: aliases nested more than {max_depth} deep; a probe file may nest aliases at most {max_depth} deep"
        ),
        E::AliasReplayCounterOverflow { .. } => {
            "the document is too large or too deeply aliased: alias expansion overflowed".into()
        }
        E::DuplicateMappingKey { key, .. } => {
            let key = key.clone().or_else(|| offset.and_then(|o| key_at(text, o)));
            match key {
                Some(k) => format!("duplicate key {k:?}; each key may appear once in a mapping"),
                None => "duplicate key; each key may appear once in a mapping".into(),
            }
        }
        E::Unexpected { expected, .. } => match *expected {
            "sequence start" => shape(Want::List),
            "mapping start" | "empty mapping start" => shape(Want::Mapping),
            "string scalar" | "scalar" | "str expected" => shape(Want::Text),
            other => format!("expected {other}"),
        },
        E::NullIntoString { .. } => shape(Want::Text),
        E::ExternallyTaggedEnumExpectedScalarOrMapping { .. }
        | E::ExpectedStringKeyForExternallyTaggedEnum { .. } => shape(Want::Text),
        _ => {
            let plain = e.without_snippet().to_string();
            // The crate appends " at line L, column C"; we put the location in front instead.
            let message = match plain.rfind(" at line ") {
                Some(i) if at.is_some() => plain[..i].to_string(),
                _ => plain,
            };
            let message = message.replace('`', "'");
            if message.contains("recursion limit exceeded") {
                depth_message()
            } else if message.starts_with("missing field") {
                format!("{message} (required)")
            } else {
                message
            }
        }
    };
    ConfigError {
        file: file.into(),
        at,
        message: clip_message(message),
    }
}

/// Byte offset of 1-based `line`, `col` (in characters) in `text`.
fn offset_of(text: &str, line: u64, col: u64) -> Option<usize> {
    let start = if line <= 1 {
        0
    } else {
        let skip = usize::try_from(line - 2).ok()?;
        text.match_indices('\n').nth(skip)?.0 + 1
    };
    let col = usize::try_from(col.max(1) - 1).ok()?;
    let rest = &text[start..];
    Some(start + rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i))
}

/// What the YAML crate expected where it found something else.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    List,
    Mapping,
    Text,
}

impl Want {
    fn accepted(self) -> &'static str {
        match self {
            Want::List => "a list (- item, or [a, b])",
            Want::Mapping => "a mapping (key: value, or { key: value })",
            Want::Text => "a single value",
        }
    }
}

/// Where a bad value sits, found from the text before it.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// The top-level document.
    Root,
    /// The value of `key:`.
    Key(String),
    /// An entry of the list under `key:`.
    Item(String),
    Unknown,
}

const DURATION: &str = "a duration such as 500ms, 10s or 2m";

/// How errors name `key`'s value, whether it is a list, a mapping or a single value, and what
/// it accepts.
fn describe_key(key: &str) -> Option<(&'static str, Want, &'static str)> {
    Some(match key {
        "targets" => (
            "targets",
            Want::List,
            "a list of targets (- { name: web, base_url: http://127.0.0.1:8000, routes: [...] })",
        ),
        "routes" => (
            "routes",
            Want::List,
            "a list of routes (- { path: /x, class: core })",
        ),
        "on" => (
            "recovery.on",
            Want::List,
            "a list of outcomes, e.g. [timeout, empty_reply, reset]",
        ),
        "defaults" => (
            "defaults",
            Want::Mapping,
            "a mapping of timing keys, e.g. { timeout: 10s, retries: 2 }",
        ),
        "headers" => (
            "headers",
            Want::Mapping,
            "a mapping of header name to value, e.g. { Authorization: \"Bearer ${TOKEN}\" }",
        ),
        "recovery" => (
            "recovery",
            Want::Mapping,
            "a mapping, e.g. { action: kill, after_failed_runs: 1 }",
        ),
        "tls" => (
            "tls",
            Want::Mapping,
            "a mapping, e.g. { ca_file: ca.pem, insecure: false }",
        ),
        "expect" => (
            "expect",
            Want::Mapping,
            "a mapping of checks, e.g. { status: 200, body_contains: ok }",
        ),
        "json" => (
            "expect.json",
            Want::Mapping,
            "a mapping of dotted field path to expected value, e.g. { status: healthy, checks.db: ok }",
        ),
        "header" => (
            "expect.header",
            Want::Mapping,
            "a mapping of response header name to regular expression, e.g. { content-type: json }",
        ),
        "name" => ("name", Want::Text, "a name such as web"),
        "path" => ("path", Want::Text, "an absolute path such as /api/health"),
        "base_url" => (
            "base_url",
            Want::Text,
            "http://host[:port], https://… or unix:/path.sock",
        ),
        "tcp" => ("tcp", Want::Text, "host:port, e.g. 127.0.0.1:6379"),
        "unit" => ("unit", Want::Text, "a service name like app.service"),
        "method" => ("method", Want::Text, "GET, HEAD, POST, PUT, …"),
        "user_agent" => ("user_agent", Want::Text, "a single line of text"),
        "body" => ("body", Want::Text, "text"),
        "body_contains" => ("expect.body_contains", Want::Text, "text"),
        "body_regex" => ("expect.body_regex", Want::Text, "a regular expression"),
        "ca_file" => ("tls.ca_file", Want::Text, "a path to a PEM file"),
        "class" => ("class", Want::Text, "core or auxiliary"),
        "action" => ("recovery.action", Want::Text, "kill, restart or none"),
        "ip" => ("ip", Want::Text, "any, v4 or v6"),
        "timeout" => ("timeout", Want::Text, DURATION),
        "connect_timeout" => ("connect_timeout", Want::Text, DURATION),
        "backoff" => ("backoff", Want::Text, DURATION),
        "max_backoff" => ("max_backoff", Want::Text, DURATION),
        "run_timeout" => ("run_timeout", Want::Text, DURATION),
        "max_latency" => ("expect.max_latency", Want::Text, DURATION),
        "startup_grace" => ("recovery.startup_grace", Want::Text, DURATION),
        "cooldown" => ("recovery.cooldown", Want::Text, DURATION),
        "window" => ("recovery.window", Want::Text, DURATION),
        "verify_timeout" => ("recovery.verify_timeout", Want::Text, DURATION),
        _ => return None,
    })
}

/// What an entry of the list under `key` must be.
fn describe_item(key: &str) -> Option<(&'static str, Want, &'static str)> {
    Some(match key {
        "targets" => (
            "each entry under targets",
            Want::Mapping,
            "a target such as { name: web, base_url: http://127.0.0.1:8000, routes: [...] }",
        ),
        "routes" => (
            "each entry under routes",
            Want::Mapping,
            "a route such as { path: /health, class: core }",
        ),
        "on" => (
            "each entry under recovery.on",
            Want::Text,
            "an outcome such as timeout, empty_reply or reset",
        ),
        _ => return None,
    })
}

/// "what: expected …, found …" for a value of the wrong shape at byte `offset` of `text`.
fn shape_message(text: &str, offset: usize, want: Want) -> String {
    let clean = without_comments(text);
    // An empty value is reported at the colon of its key.
    let empty = clean.get(offset..).is_some_and(|r| {
        r.strip_prefix(':')
            .is_some_and(|r| r.chars().next().is_none_or(char::is_whitespace))
    });
    let (place, found) = if empty {
        (
            key_before(&clean, offset).map_or(Place::Unknown, Place::Key),
            "nothing (an empty value)".to_string(),
        )
    } else {
        (place_at(&clean, offset), found_at(&clean, offset))
    };
    let described: Option<(Cow<'_, str>, Want, &str)> = match place {
        Place::Root => Some((
            "the probe file".into(),
            Want::Mapping,
            "a mapping with 'targets' (and optionally 'user_agent', 'defaults') at the top level",
        )),
        Place::Key(k) => match describe_key(&k) {
            Some((label, kind, accepted)) => Some((label.into(), kind, accepted)),
            // A key routewatch does not describe (a header name, a json path): name it.
            None => Some((truncate_chars(&k, 60).into(), want, want.accepted())),
        },
        Place::Item(k) => describe_item(&k).map(|(l, kind, a)| (l.into(), kind, a)),
        Place::Unknown => None,
    };
    match described {
        // Only trust the description when it agrees with what the parser wanted.
        Some((label, kind, accepted)) if kind == want => {
            format!("{label}: expected {accepted}, found {found}")
        }
        _ => format!("expected {}, found {found}", want.accepted()),
    }
}

/// An error message of one short line whatever the file holds: every quoted value longer than
/// 80 characters cut to its first 60 and its length, and the whole at most 400 characters.
fn clip_message(message: String) -> String {
    const LONG: usize = 80;
    const MAX: usize = 400;
    let mut out = String::with_capacity(message.len().min(MAX + 8));
    let mut rest = message.as_str();
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..open]);
        let quoted = &rest[open + 1..];
        // The closing quote of a Debug-quoted string: the first one not escaped.
        let mut escaped = false;
        let close = quoted.char_indices().find_map(|(i, c)| {
            let hit = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            hit.then_some(i)
        });
        let Some(close) = close else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let inner = &quoted[..close];
        let n = inner.chars().count();
        if n > LONG {
            let head: String = inner.chars().take(60).collect();
            out.push_str(&format!("\"{head}\"… ({n} characters)"));
        } else {
            out.push('"');
            out.push_str(inner);
            out.push('"');
        }
        rest = &quoted[close + 1..];
    }
    out.push_str(rest);
    match out.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}… (message cut)", &out[..i]),
        None => out,
    }
}

/// A value for an error message: quoted, and when long (over 60 characters as quoted) its
/// beginning and its size.
fn shorten(s: &str) -> String {
    let mut head = String::new();
    let mut width = 0;
    for c in s.chars() {
        width += c.escape_debug().count();
        if width > 60 {
            return format!("{head:?}… ({} bytes)", s.len());
        }
        head.push(c);
    }
    format!("{s:?}")
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `text` with every comment blanked out (same length, so offsets stay valid).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut prev: Option<char> = None;
        let mut cut = None;
        for (i, c) in line.char_indices() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => {
                    let at_token = prev.is_none_or(|p| p.is_whitespace() || "[{,".contains(p));
                    if c == '#' && prev.is_none_or(char::is_whitespace) {
                        cut = Some(i);
                        break;
                    }
                    if (c == '"' || c == '\'') && at_token {
                        quote = Some(c);
                    }
                }
            }
            prev = Some(c);
        }
        match cut {
            Some(i) => {
                out.push_str(&line[..i]);
                let rest = &line[i..];
                let newline = rest.ends_with('\n');
                let blank = rest.len() - usize::from(newline);
                out.extend(std::iter::repeat_n(' ', blank));
                if newline {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Skip whitespace backwards from `i`; returns the new end.
fn skip_back_ws(b: &[u8], mut i: usize) -> usize {
    while i > 0 && b[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    i
}

/// Where the value at byte `off` of comment-free `clean` sits: whose key's value, or which
/// list's entry.
fn place_at(clean: &str, off: usize) -> Place {
    let b = clean.as_bytes();
    let mut i = skip_back_ws(b, off.min(b.len()));
    // An anchor (&a) or tag (!t) written before the value belongs to it.
    loop {
        let start = b[..i]
            .iter()
            .rposition(u8::is_ascii_whitespace)
            .map_or(0, |p| p + 1);
        if start < i && matches!(b[start], b'&' | b'!') {
            i = skip_back_ws(b, start);
        } else {
            break;
        }
    }
    if i == 0 || clean[..i].trim() == "---" {
        return Place::Root;
    }
    match b[i - 1] {
        b':' => key_before(clean, i - 1).map_or(Place::Unknown, Place::Key),
        b'-' if i == 1 || b[i - 2].is_ascii_whitespace() => {
            block_parent(clean, i - 1).map_or(Place::Unknown, Place::Item)
        }
        b'[' => list_key(clean, i - 1),
        b',' => match open_bracket(b, i - 1) {
            Some(j) if b[j] == b'[' => list_key(clean, j),
            _ => Place::Unknown,
        },
        _ => Place::Unknown,
    }
}

/// The key of the flow list that opens at `bracket`.
fn list_key(clean: &str, bracket: usize) -> Place {
    match place_at(clean, bracket) {
        Place::Key(k) => Place::Item(k),
        _ => Place::Unknown,
    }
}

/// The innermost bracket still open before `pos`.
fn open_bracket(b: &[u8], pos: usize) -> Option<usize> {
    let mut depth = 0usize;
    for j in (0..pos).rev() {
        match b[j] {
            b']' | b'}' => depth += 1,
            b'[' | b'{' if depth == 0 => return Some(j),
            b'[' | b'{' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The key written before the `:` at `colon`.
fn key_before(clean: &str, colon: usize) -> Option<String> {
    let b = clean.as_bytes();
    let end = {
        let mut e = colon;
        while e > 0 && matches!(b[e - 1], b' ' | b'\t') {
            e -= 1;
        }
        e
    };
    if end == 0 {
        return None;
    }
    if let q @ (b'"' | b'\'') = b[end - 1] {
        let open = b[..end - 1].iter().rposition(|&c| c == q)?;
        return Some(clean[open + 1..end - 1].to_string());
    }
    let start = b[..end]
        .iter()
        .rposition(|c| c.is_ascii_whitespace() || b"{[,".contains(c))
        .map_or(0, |p| p + 1);
    (start < end).then(|| clean[start..end].to_string())
}

/// The key of the block list whose `- ` entry starts at `dash`.
fn block_parent(clean: &str, dash: usize) -> Option<String> {
    let line_start = clean[..dash].rfind('\n').map_or(0, |p| p + 1);
    if !clean[line_start..dash].bytes().all(|c| c == b' ') {
        return None;
    }
    let dash_col = dash - line_start;
    for line in clean[..line_start].lines().rev() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent > dash_col || (indent == dash_col && t.starts_with('-')) {
            continue;
        }
        let t = t.strip_prefix("- ").unwrap_or(t).trim_start();
        return t
            .strip_suffix(':')
            .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
            .filter(|k| !k.is_empty());
    }
    None
}

/// What is written at byte `off`: "a mapping", "a list", "nothing", or the value as written
/// (a URL's password masked).
fn found_at(clean: &str, off: usize) -> String {
    let mut r = clean
        .get(off..)
        .unwrap_or("")
        .trim_start_matches([' ', '\t']);
    while r.starts_with(['&', '!']) {
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        r = r[end..].trim_start_matches([' ', '\t']);
    }
    let line = r.lines().next().unwrap_or("").trim_end();
    let Some(first) = line.chars().next() else {
        return "nothing (an empty value)".into();
    };
    match first {
        '{' => "a mapping".into(),
        '[' => "a list".into(),
        '-' if line == "-" || line.starts_with("- ") => "a list".into(),
        '|' | '>' => "a block of text".into(),
        '"' | '\'' => {
            let mut escaped = false;
            let close = line.char_indices().skip(1).find(|&(_, c)| {
                let hit = c == first && !escaped;
                escaped = first == '"' && c == '\\' && !escaped;
                hit
            });
            match close {
                Some((i, _)) if line[i + 1..].trim_start().starts_with(':') => "a mapping".into(),
                Some((i, _)) => truncate_chars(&without_password(&line[..=i]), 60),
                None => truncate_chars(&without_password(line), 60),
            }
        }
        _ => {
            let token = line
                .split([',', ']', '}'])
                .next()
                .unwrap_or(line)
                .trim_end();
            if token.contains(": ") || token.ends_with(':') {
                "a mapping".into()
            } else {
                format!("{:?}", truncate_chars(&without_password(token), 60))
            }
        }
    }
}

/// The key written at byte `off` (for a duplicate key the crate did not name).
fn key_at(text: &str, off: usize) -> Option<String> {
    let line = text.get(off..)?.lines().next()?;
    let key = line.split(':').next()?.trim().trim_matches(['"', '\'']);
    (!key.is_empty()).then(|| truncate_chars(key, 60))
}

// ---------------------------------------------------------------------------------------------
// Resolving.

struct Ctx<'a> {
    file: &'a str,
    /// The probe file's text, to echo values as written.
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Where relative paths in the file are resolved (the probe file's directory).
    base_dir: Option<&'a Path>,
    /// Every value taken from the environment, to be redacted from all output.
    secrets: std::cell::RefCell<Vec<String>>,
    /// Every pattern compiled so far (shared by identical patterns), and their charged size.
    regexes: std::cell::RefCell<(std::collections::HashMap<String, Arc<Regex>>, usize)>,
}

impl Ctx<'_> {
    fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        let l = at.referenced;
        ConfigError {
            file: self.file.into(),
            at: (l.line() > 0).then(|| (l.line(), l.column())),
            message: clip_message(message.into()),
        }
    }

    /// A scalar as written in the file (`99999999999`, `"0s"`), else `fallback`.
    fn shown<T>(&self, at: &Spanned<T>, fallback: impl fmt::Display) -> String {
        let span = at.defined.span();
        span.byte_offset()
            .zip(span.byte_len())
            .and_then(|(o, l)| {
                let o = usize::try_from(o).ok()?;
                self.text.get(o..o.checked_add(usize::try_from(l).ok()?)?)
            })
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.contains('\n') && s.chars().count() <= 60)
            .map_or_else(|| fallback.to_string(), str::to_string)
    }

    /// Compile a pattern of the file within [`MAX_PATTERN_BYTES`], [`MAX_REGEX_BYTES`] and
    /// what is left of [`MAX_REGEX_TOTAL_BYTES`]; an identical pattern compiled before is
    /// shared. `what` names the value in errors, which quote the pattern shortened.
    fn regex(
        &self,
        s: &Spanned<String>,
        target: &str,
        what: &str,
    ) -> Result<Arc<Regex>, ConfigError> {
        let pattern = s.value.as_str();
        if let Some(re) = self.regexes.borrow().0.get(pattern) {
            return Ok(re.clone());
        }
        let shown = shorten(pattern);
        let scope = format!("target {target:?}: ");
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(self.err(
                s,
                format!(
                    "{scope}{what} {shown} is too long; a regular expression may be at most {MAX_PATTERN_BYTES} bytes"
                ),
            ));
        }
        let spent = self.regexes.borrow().1;
        let left = MAX_REGEX_TOTAL_BYTES.saturating_sub(spent);
        for tier in REGEX_TIERS {
            let charge = tier + REGEX_OVERHEAD_BYTES;
            if charge > left {
                return Err(self.err(
                    s,
                    format!(
                        "{scope}{what} {shown}: the file's regular expressions together compile to more than {} MiB; use fewer distinct patterns or simpler ones (ASCII classes such as [0-9a-z] or (?-u:\\w) instead of \\w)",
                        MAX_REGEX_TOTAL_BYTES >> 20
                    ),
                ));
            }
            let built = regex::RegexBuilder::new(pattern)
                .size_limit(tier)
                .dfa_size_limit(MAX_REGEX_CACHE_BYTES)
                .build();
            match built {
                Ok(re) => {
                    let re = Arc::new(re);
                    let mut cache = self.regexes.borrow_mut();
                    cache.1 += charge;
                    cache.0.insert(pattern.to_string(), re.clone());
                    return Ok(re);
                }
                Err(regex::Error::CompiledTooBig(_)) => continue,
                Err(err) => {
                    // The crate's message quotes the whole pattern; keep only its last line.
                    let why = err.to_string();
                    let why = why.lines().last().unwrap_or("").trim();
                    let why = why.strip_prefix("error: ").unwrap_or(why);
                    return Err(self.err(
                        s,
                        format!(
                            "{scope}invalid {what} {shown}: {}; expected a regular expression (Rust regex syntax)",
                            truncate_chars(why, 120)
                        ),
                    ));
                }
            }
        }
        Err(self.err(
            s,
            format!(
                "{scope}{what} {shown} compiles to more than {} MiB; a regular expression may compile to at most {} MiB (ASCII classes such as [0-9a-z] or (?-u:\\w) are far smaller than \\w, and repetitions such as {{100}} multiply the size)",
                MAX_REGEX_BYTES >> 20,
                MAX_REGEX_BYTES >> 20
            ),
        ))
    }

    /// A `> 0` duration, checked where it is written.
    fn positive(
        &self,
        scope: &str,
        key: &str,
        v: &Option<Spanned<Dur>>,
    ) -> Result<Option<Duration>, ConfigError> {
        match v {
            Some(d) if d.value.0.is_zero() => Err(self.err(
                d,
                format!(
                    "{scope}{key} {} must be greater than 0; expected {DURATION}",
                    self.shown(d, humantime::format_duration(d.value.0))
                ),
            )),
            Some(d) => Ok(Some(d.value.0)),
            None => Ok(None),
        }
    }

    /// A whole number within `range`, checked where it is written (never saturated first).
    fn count(
        &self,
        scope: &str,
        key: &str,
        v: &Option<Spanned<Count>>,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        match v {
            Some(c) if !range.contains(&c.value.0) => Err(self.err(
                c,
                format!(
                    "{scope}{key} {} is out of range; expected {} to {}",
                    self.shown(c, c.value.0),
                    range.start(),
                    range.end()
                ),
            )),
            Some(c) => Ok(Some(c.value.0)),
            None => Ok(None),
        }
    }

    /// A `> 0` byte size, checked where it is written.
    fn size(
        &self,
        scope: &str,
        key: &str,
        v: &Option<Spanned<Size>>,
    ) -> Result<Option<usize>, ConfigError> {
        match v {
            Some(s) if s.value.0 == 0 => Err(self.err(
                s,
                format!(
                    "{scope}{key} {} must be greater than 0; expected a size such as 65536, 64KiB or 1MiB",
                    self.shown(s, s.value.0)
                ),
            )),
            Some(s) => Ok(Some(clamp_usize(s.value.0))),
            None => Ok(None),
        }
    }

    /// The timing keys of `defaults`, a target or a route, each checked where it is written.
    #[allow(clippy::too_many_arguments)]
    fn timing(
        &self,
        scope: &str,
        timeout: &Option<Spanned<Dur>>,
        retries: &Option<Spanned<Count>>,
        backoff: &Option<Spanned<Dur>>,
        max_backoff: &Option<Spanned<Dur>>,
        max_body: &Option<Spanned<Size>>,
        base: &Timing,
    ) -> Result<Timing, ConfigError> {
        Ok(Timing {
            timeout: self
                .positive(scope, "timeout", timeout)?
                .unwrap_or(base.timeout),
            retries: self
                .count(scope, "retries", retries, 0..=MAX_RETRIES)?
                .map_or(base.retries, clamp_u32),
            backoff: backoff.as_ref().map_or(base.backoff, |x| x.value.0),
            max_backoff: max_backoff.as_ref().map_or(base.max_backoff, |x| x.value.0),
            max_body: self
                .size(scope, "max_body", max_body)?
                .unwrap_or(base.max_body),
        })
    }
}

/// Accepted `retries`: extra attempts after the first.
const MAX_RETRIES: u64 = 100;
/// Accepted `concurrency`: requests in flight per target.
const MAX_CONCURRENCY: u64 = 4096;

/// The password of a URL's userinfo, as written in `raw`, as the URL serialises it and
/// percent-decoded (a very short one is only redacted as a whole value, see
/// `plan::MIN_REDACTED_CHARS`).
fn url_passwords(raw: &str, url: &reqwest::Url) -> Vec<String> {
    let Some(encoded) = url.password() else {
        return Vec::new();
    };
    let mut out = vec![encoded.to_string(), percent_decode(encoded)];
    // As written: between "scheme://user:" and the last '@' of the authority.
    if let Some((_, rest)) = raw.trim().split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, written)) = userinfo.split_once(':')
        {
            out.push(written.to_string());
            out.push(percent_decode(written));
        }
    }
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    out
}

/// Credentials from a URL's userinfo (`http://user:password@host`), taken out of the URL:
/// reports print URLs, so the URL keeps no userinfo and the credentials travel as the same
/// sensitive `Authorization: Basic` header the HTTP client would have derived from it. The
/// password (as written, as serialised, percent-decoded) and the header's token are secrets.
struct Credentials {
    header: Header,
    secrets: Vec<String>,
}

fn take_userinfo(raw: &str, url: &mut reqwest::Url) -> Result<Option<Credentials>, String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decoded = |s: &str| {
        String::from_utf8(percent_decode_bytes(s)).map_err(|_| {
            "its user name or password is not UTF-8 after percent-decoding".to_string()
        })
    };
    let user = decoded(url.username())?;
    let password = url.password().map(decoded).transpose()?;
    let mut secrets = url_passwords(raw, url);
    let token = base64(format!("{user}:{}", password.unwrap_or_default()).as_bytes());
    let mut value =
        HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    if url.password().is_some() {
        secrets.push(token);
    }
    // Infallible for http(s) URLs with a host, the only ones that get here.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(Some(Credentials {
        header: Header {
            name: reqwest::header::AUTHORIZATION,
            value,
            secret: true,
        },
        secrets,
    }))
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s)).into_owned()
}

fn percent_decode_bytes(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// A URL for an error message: the password of its userinfo replaced by `***` (textually,
/// so it works on URLs that do not parse).
fn without_password(raw: &str) -> String {
    if let Some((scheme, rest)) = raw.split_once("://") {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            return format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
        }
    }
    raw.to_string()
}

fn resolve(
    raw: RawFile,
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
) -> Result<Plan, ConfigError> {
    let cx = Ctx {
        file,
        text,
        env,
        base_dir,
        secrets: Default::default(),
        regexes: Default::default(),
    };
    let d = raw.defaults.unwrap_or_default();
    // Every value of `defaults` is checked where it is written, even if each target overrides it.
    let scope = "defaults: ";
    let base_timing = cx.timing(
        scope,
        &d.timeout,
        &d.retries,
        &d.backoff,
        &d.max_backoff,
        &d.max_body,
        &Timing::default(),
    )?;
    let base_connect = cx
        .positive(scope, "connect_timeout", &d.connect_timeout)?
        .unwrap_or(plan::DEFAULT_CONNECT_TIMEOUT);
    let base_concurrency = cx
        .count(scope, "concurrency", &d.concurrency, 1..=MAX_CONCURRENCY)?
        .unwrap_or(plan::DEFAULT_CONCURRENCY as u64);
    let base_proxy = d.proxy.unwrap_or(false);

    let user_agent = match &raw.user_agent {
        None => crate::DEFAULT_USER_AGENT.to_string(),
        Some(ua) => {
            if HeaderValue::from_str(&ua.value).is_err() {
                return Err(cx.err(
                    ua,
                    format!(
                        "user_agent {:?} is not a valid header value; expected one line of visible text",
                        ua.value
                    ),
                ));
            }
            ua.value.clone()
        }
    };

    let targets_at = Spanned::new((), raw.targets.referenced, raw.targets.defined);
    let total_routes = raw.targets.value.slots;
    let raw_targets = raw.targets.value.kept;
    if raw_targets.is_empty() {
        return Err(cx.err(
            &targets_at,
            "no targets; expected at least one entry under 'targets:', e.g. - { name: web, base_url: http://127.0.0.1:8000, routes: [{ path: /health }] }",
        ));
    }
    if total_routes > MAX_ROUTES {
        return Err(cx.err(
            &targets_at,
            format!("{total_routes} routes; at most {MAX_ROUTES} are allowed in one file"),
        ));
    }

    let mut targets = Vec::with_capacity(raw_targets.len());
    // Each name and the line it was first used on.
    let mut names: Vec<(String, u64)> = Vec::with_capacity(raw_targets.len());
    for t in raw_targets {
        let name_at = Spanned::new((), t.value.name.referenced, t.value.name.defined);
        let target = resolve_target(
            &cx,
            t,
            &base_timing,
            base_connect,
            base_concurrency,
            base_proxy,
        )?;
        if let Some((_, line)) = names.iter().find(|(n, _)| *n == target.name) {
            return Err(cx.err(
                &name_at,
                format!(
                    "duplicate target name {:?} (first used on line {line}); names must be unique",
                    target.name
                ),
            ));
        }
        names.push((target.name.clone(), name_at.referenced.line()));
        targets.push(target);
    }
    let run_timeout = cx
        .positive(scope, "run_timeout", &d.run_timeout)?
        .unwrap_or(plan::DEFAULT_RUN_TIMEOUT);
    Ok(Plan {
        user_agent,
        run_timeout,
        targets,
        secrets: cx.secrets.take(),
    })
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn clamp_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn resolve_target(
    cx: &Ctx,
    t: Spanned<RawTarget>,
    base: &Timing,
    base_connect: Duration,
    base_concurrency: u64,
    base_proxy: bool,
) -> Result<Target, ConfigError> {
    let at = Spanned::new((), t.referenced, t.defined);
    let t = t.value;
    let name = t.name.value.trim().to_string();
    if name.is_empty() {
        return Err(cx.err(
            &t.name,
            format!(
                "invalid target name {:?}; expected a non-empty name such as web",
                t.name.value
            ),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(cx.err(
            &t.name,
            format!(
                "invalid target name {:?}: it contains the control character {c:?}; expected one line of printable characters (letters, digits, spaces and punctuation; no newlines, tabs or other control characters)",
                t.name.value
            ),
        ));
    }
    let scope = format!("target {name:?}: ");
    let timing = cx.timing(
        &scope,
        &t.timeout,
        &t.retries,
        &t.backoff,
        &t.max_backoff,
        &t.max_body,
        base,
    )?;
    let concurrency = cx
        .count(&scope, "concurrency", &t.concurrency, 1..=MAX_CONCURRENCY)?
        .unwrap_or(base_concurrency);
    let connect_timeout = cx
        .positive(&scope, "connect_timeout", &t.connect_timeout)?
        .unwrap_or(base_connect);

    let mut auth = None;
    let endpoint = match (&t.base_url, &t.tcp) {
        (Some(_), Some(tcp)) => {
            return Err(cx.err(
                tcp,
                format!("target {name:?}: both base_url and tcp are set; expected exactly one"),
            ));
        }
        (None, None) => {
            return Err(cx.err(&at, format!("target {name:?}: missing base_url (http://…, https://…, unix:/path.sock) or tcp (host:port)")));
        }
        (Some(url), None) => {
            let (endpoint, credentials) = parse_base_url(cx, url, &name)?;
            auth = credentials;
            endpoint
        }
        (None, Some(tcp)) => {
            let v = tcp.value.trim();
            let ok = v
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(cx.err(tcp, format!("target {name:?}: invalid tcp address {v:?}; expected host:port, e.g. 127.0.0.1:6379")));
            }
            Endpoint::Tcp {
                addr: v.to_string(),
            }
        }
    };

    let mut target_headers = resolve_headers(cx, &t.headers, &name)?;
    // Credentials from the base_url's userinfo, unless an Authorization header is given.
    if let Some(h) = auth
        && !target_headers.iter().any(|o| o.name == h.name)
    {
        target_headers.insert(0, h);
    }

    let unit = match &t.unit {
        Some(u) => Some(check_unit_name(cx, u)?),
        None => None,
    };
    let recovery = match t.recovery {
        None => unit.as_ref().map(|_| RecoveryPolicy::default()),
        Some(r) => {
            if unit.is_none() {
                return Err(cx.err(
                    &r,
                    format!(
                        "target {name:?}: 'recovery' needs 'unit' (the systemd service to act on)"
                    ),
                ));
            }
            Some(resolve_recovery(cx, *r)?)
        }
    };

    let tls = match t.tls {
        None => Tls::default(),
        Some(raw) => {
            let ca_file = match &raw.ca_file {
                None => None,
                Some(ca) => Some(check_ca_file(cx, ca, &name)?),
            };
            Tls {
                ca_file,
                insecure: raw.insecure,
            }
        }
    };
    let ip = match t.ip {
        None | Some(RawIp::Any) => IpFamily::Any,
        Some(RawIp::V4) => IpFamily::V4,
        Some(RawIp::V6) => IpFamily::V6,
    };
    if let Endpoint::Http { base } = &endpoint
        && let Ok(url) = reqwest::Url::parse(base)
    {
        let literal = url
            .host_str()
            .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok());
        let contradiction = match (ip, literal) {
            (IpFamily::V4, Some(std::net::IpAddr::V6(_))) => Some("an IPv6 address with ip: v4"),
            (IpFamily::V6, Some(std::net::IpAddr::V4(_))) => Some("an IPv4 address with ip: v6"),
            _ => None,
        };
        if let Some(what) = contradiction {
            return Err(cx.err(
                &at,
                format!(
                    "target {name:?}: base_url {} is {what}; drop 'ip' or use a host name",
                    without_password(base)
                ),
            ));
        }
    }

    let routes = if let Endpoint::Tcp { addr } = &endpoint {
        if let Some(r) = t.routes.kept.first() {
            return Err(cx.err(
                r,
                format!("target {name:?}: a tcp target has no routes (it is one connect probe)"),
            ));
        }
        vec![Route {
            path: addr.clone(),
            url: format!("tcp://{addr}"),
            class: Class::Core,
            method: reqwest::Method::GET,
            body: None,
            headers: Vec::new(),
            expect: Expect::default(),
            timing,
        }]
    } else {
        if t.routes.kept.is_empty() {
            return Err(cx.err(
                &at,
                format!("target {name:?}: no routes; expected at least one entry under 'routes:'"),
            ));
        }
        t.routes
            .kept
            .into_iter()
            .map(|r| resolve_route(cx, r, &endpoint, &timing, &target_headers, &name))
            .collect::<Result<_, _>>()?
    };

    Ok(Target {
        name,
        endpoint,
        unit,
        recovery,
        concurrency: concurrency as usize,
        connect_timeout,
        use_env_proxy: t.proxy.unwrap_or(base_proxy),
        tls,
        ip,
        routes,
    })
}

fn parse_base_url(
    cx: &Ctx,
    url: &Spanned<String>,
    name: &str,
) -> Result<(Endpoint, Option<Header>), ConfigError> {
    let v = url.value.trim();
    if let Some(path) = v.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(cx.err(url, format!("target {name:?}: invalid unix socket {v:?}; expected an absolute path, e.g. unix:/run/app/rpc.sock")));
        }
        return Ok((
            Endpoint::Unix {
                socket: PathBuf::from(path),
            },
            None,
        ));
    }
    // Never echo a password from the userinfo.
    let shown = without_password(v);
    let mut parsed = reqwest::Url::parse(v).map_err(|e| {
        cx.err(url, format!("target {name:?}: invalid base_url {shown:?} ({e}); expected http://host[:port], https://… or unix:/path.sock"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(cx.err(url, format!("target {name:?}: invalid base_url {shown:?}; expected http://host[:port], https://… or unix:/path.sock")));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(cx.err(url, format!("target {name:?}: base_url {shown:?} has a query or fragment; put those in the route path")));
    }
    let credentials = take_userinfo(v, &mut parsed).map_err(|why| {
        cx.err(
            url,
            format!("target {name:?}: invalid base_url {shown:?}: {why}"),
        )
    })?;
    let auth = credentials.map(|c| {
        cx.secrets.borrow_mut().extend(c.secrets);
        c.header
    });
    Ok((
        Endpoint::Http {
            base: parsed.as_str().trim_end_matches('/').to_string(),
        },
        auth,
    ))
}

/// A plain service unit name: `name.service` or `name@instance.service`, systemd's characters,
/// no globs, no paths, never routewatch's own unit.
fn check_unit_name(cx: &Ctx, u: &Spanned<String>) -> Result<String, ConfigError> {
    let v = u.value.as_str();
    let ok_chars = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_.-\\".contains(c))
    };
    let valid = v.len() <= 255
        && v.strip_suffix(".service")
            .is_some_and(|stem| match stem.split_once('@') {
                Some((prefix, instance)) => ok_chars(prefix) && ok_chars(instance),
                None => ok_chars(stem),
            });
    if !valid {
        return Err(cx.err(u, format!("invalid unit {v:?}; expected a service name like app.service or app@1.service (letters, digits, ':_.-\\', no globs, paths or empty template instance)")));
    }
    if v == "routewatch.service" || v.starts_with("routewatch@") {
        return Err(cx.err(
            u,
            format!("unit {v:?} is routewatch itself; it can never be a recovery target"),
        ));
    }
    Ok(v.to_string())
}

fn resolve_recovery(cx: &Ctx, r: Spanned<RawRecovery>) -> Result<RecoveryPolicy, ConfigError> {
    let d = RecoveryPolicy::default();
    let raw = &r.value;
    let on = match &raw.on {
        None => d.on.clone(),
        Some(list) => {
            let mut on = Vec::new();
            for item in list {
                let o = Outcome::parse(item.value.trim()).filter(|o| !o.is_pass()).ok_or_else(|| {
                    cx.err(item, format!("invalid outcome {:?} in recovery.on; expected failing outcomes such as timeout, empty_reply, reset, connect_timeout, refused, protocol_error, http_error", item.value))
                })?;
                on.push(o);
            }
            if on.is_empty() {
                return Err(cx.err(&r, "recovery.on is empty; expected at least one outcome, e.g. [timeout, empty_reply, reset]"));
            }
            on
        }
    };
    let at_least_one = |key: &str, v: &Option<Spanned<Count>>, hint: &str| match v {
        Some(c) if c.value.0 == 0 => Err(cx.err(
            c,
            format!(
                "recovery.{key} {} must be at least 1{hint}",
                cx.shown(c, c.value.0)
            ),
        )),
        Some(c) => Ok(Some(clamp_u32(c.value.0))),
        None => Ok(None),
    };
    let after_failed_runs = at_least_one("after_failed_runs", &raw.after_failed_runs, "")?;
    let max_actions = at_least_one(
        "max_actions",
        &raw.max_actions,
        " (use action: none to never act)",
    )?;
    let verify_timeout = cx.positive("recovery.", "verify_timeout", &raw.verify_timeout)?;
    Ok(RecoveryPolicy {
        action: raw.action.unwrap_or(d.action),
        after_failed_runs: after_failed_runs.unwrap_or(d.after_failed_runs),
        on,
        startup_grace: raw.startup_grace.map_or(d.startup_grace, |x| x.0),
        cooldown: raw.cooldown.map_or(d.cooldown, |x| x.0),
        max_actions: max_actions.unwrap_or(d.max_actions),
        window: raw.window.map_or(d.window, |x| x.0),
        verify_timeout: verify_timeout.unwrap_or(d.verify_timeout),
        dump: None,
    })
}

fn resolve_headers(
    cx: &Ctx,
    raw: &BTreeMap<String, Spanned<String>>,
    target: &str,
) -> Result<Vec<Header>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let hname = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            cx.err(
                value,
                format!("target {target:?}: invalid header name {name:?}"),
            )
        })?;
        let (expanded, secret) = expand_env(cx, value)?;
        let mut hvalue = HeaderValue::from_str(&expanded).map_err(|_| {
            // Never echo a value that came from the environment.
            let shown = if secret {
                "<from environment>".to_string()
            } else {
                format!("{expanded:?}")
            };
            cx.err(
                value,
                format!("target {target:?}: header {name}: invalid value {shown}"),
            )
        })?;
        hvalue.set_sensitive(secret);
        out.push(Header {
            name: hname,
            value: hvalue,
            secret,
        });
    }
    Ok(out)
}

/// Expand `${VAR}` from the environment. Returns the value and whether anything was expanded
/// (then the value is a secret and never printed).
fn expand_env(cx: &Ctx, v: &Spanned<String>) -> Result<(String, bool), ConfigError> {
    let mut out = String::with_capacity(v.value.len());
    let mut rest = v.value.as_str();
    let mut secret = false;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| cx.err(v, "unclosed ${ in value; expected ${VAR}"))?;
        let var = &after[..end];
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(cx.err(
                v,
                format!("invalid variable name {var:?} in ${{…}}; expected letters, digits and _"),
            ));
        }
        let value = (cx.env)(var).ok_or_else(|| {
            cx.err(
                v,
                format!("environment variable {var} is not set (referenced as ${{{var}}})"),
            )
        })?;
        if !value.is_empty() {
            cx.secrets.borrow_mut().push(value.clone());
        }
        out.push_str(&value);
        secret = true;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if secret && !out.is_empty() {
        cx.secrets.borrow_mut().push(out.clone());
    }
    Ok((out, secret))
}

fn resolve_route(
    cx: &Ctx,
    r: Spanned<RawRoute>,
    endpoint: &Endpoint,
    base: &Timing,
    target_headers: &[Header],
    target: &str,
) -> Result<Route, ConfigError> {
    let at = Spanned::new((), r.referenced, r.defined);
    let r = r.value;
    let path = r.path.value.trim().to_string();
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(cx.err(&r.path, format!("target {target:?}: invalid route path {path:?}; expected an absolute path such as /api/health")));
    }
    let url = match endpoint {
        Endpoint::Http { base } => {
            let url = format!("{base}{path}");
            reqwest::Url::parse(&url).map_err(|e| {
                cx.err(
                    &r.path,
                    format!(
                        "target {target:?}: route {path:?} makes an invalid URL {:?} ({e})",
                        without_password(&url)
                    ),
                )
            })?;
            url
        }
        Endpoint::Unix { socket } => format!("unix:{}:{path}", socket.display()),
        Endpoint::Tcp { .. } => unreachable!("tcp targets have no routes"),
    };
    let method = match &r.method {
        None => reqwest::Method::GET,
        Some(m) => {
            let upper = m.value.trim().to_ascii_uppercase();
            reqwest::Method::from_bytes(upper.as_bytes()).map_err(|_| {
                cx.err(
                    m,
                    format!(
                        "invalid method {:?}; expected GET, HEAD, POST, PUT, …",
                        m.value
                    ),
                )
            })?
        }
    };
    let timing = cx.timing(
        &format!("target {target:?}: route {path}: "),
        &r.timeout,
        &r.retries,
        &r.backoff,
        &r.max_backoff,
        &r.max_body,
        base,
    )?;
    let mut headers = target_headers.to_vec();
    for h in resolve_headers(cx, &r.headers, target)? {
        headers.retain(|o| o.name != h.name);
        headers.push(h);
    }
    let expect = resolve_expect(cx, &at, r.expect.map(|e| *e).unwrap_or_default(), target)?;
    Ok(Route {
        path,
        url,
        class: r.class,
        method,
        body: r.body,
        headers,
        expect,
        timing,
    })
}

fn resolve_expect(
    cx: &Ctx,
    route: &Spanned<()>,
    e: RawExpect,
    target: &str,
) -> Result<Expect, ConfigError> {
    let compile = |s: &Spanned<String>, what: &str| cx.regex(s, target, what);
    let body_regex = e
        .body_regex
        .as_ref()
        .map(|s| compile(s, "expect.body_regex"))
        .transpose()?;
    let mut headers = Vec::new();
    for (name, pattern) in &e.header {
        let hname = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            cx.err(
                pattern,
                format!("target {target:?}: invalid header name {name:?} in expect.header"),
            )
        })?;
        headers.push((hname, compile(pattern, "expect.header pattern")?));
    }
    for path in e.json.keys() {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            // The crate gives map keys no position: name the route's.
            return Err(cx.err(
                route,
                format!(
                    "target {target:?}: invalid expect.json path {path:?}; expected dotted field names like status or checks.db"
                ),
            ));
        }
    }
    Ok(Expect {
        status: e.status.map_or_else(|| Expect::default().status, |s| s.0),
        body_contains: e.body_contains,
        body_regex,
        json: e.json.into_iter().collect(),
        headers,
        max_latency: e.max_latency.map(|x| x.0),
    })
}

/// A plan for `check --url URL… --aux-url URL…` without a probe file: one target per origin.
pub fn ad_hoc(core: &[String], auxiliary: &[String]) -> Result<Plan, ConfigError> {
    let mut targets: Vec<Target> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let all = core
        .iter()
        .map(|u| (u, Class::Core))
        .chain(auxiliary.iter().map(|u| (u, Class::Auxiliary)));
    for (raw, class) in all {
        let flag = if class == Class::Core {
            "--url"
        } else {
            "--aux-url"
        };
        let err = |m: String| ConfigError {
            file: flag.into(),
            at: None,
            message: m,
        };
        // Never echo a password from the userinfo.
        let shown = without_password(raw);
        let mut url = reqwest::Url::parse(raw).map_err(|e| {
            err(format!(
                "invalid URL {shown:?} ({e}); expected http://host[:port]/path or https://…"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(err(format!(
                "invalid URL {shown:?}; expected http://host[:port]/path or https://…"
            )));
        }
        let credentials = take_userinfo(raw, &mut url)
            .map_err(|why| err(format!("invalid URL {shown:?}: {why}")))?;
        let headers = match credentials {
            Some(c) => {
                secrets.extend(c.secrets);
                vec![c.header]
            }
            None => Vec::new(),
        };
        let origin = url.origin().ascii_serialization();
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path = format!("{path}?{q}");
        }
        let route = Route {
            path,
            url: url.to_string(),
            class,
            method: reqwest::Method::GET,
            body: None,
            headers,
            expect: Expect::default(),
            timing: Timing::default(),
        };
        match targets.iter_mut().find(|t| {
            t.endpoint
                == Endpoint::Http {
                    base: origin.clone(),
                }
        }) {
            Some(t) => t.routes.push(route),
            None => targets.push(Target {
                name: url.host_str().map_or(origin.clone(), |h| match url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                }),
                endpoint: Endpoint::Http { base: origin },
                unit: None,
                recovery: None,
                concurrency: plan::DEFAULT_CONCURRENCY,
                connect_timeout: plan::DEFAULT_CONNECT_TIMEOUT,
                use_env_proxy: false,
                tls: Tls::default(),
                ip: IpFamily::Any,
                routes: vec![route],
            }),
        }
    }
    if targets.is_empty() {
        return Err(ConfigError {
            file: "--url".into(),
            at: None,
            message: "no URL given".into(),
        });
    }
    Ok(Plan {
        user_agent: crate::DEFAULT_USER_AGENT.into(),
        run_timeout: plan::DEFAULT_RUN_TIMEOUT,
        targets,
        secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid target, for files whose error is elsewhere.
    const TARGET: &str =
        "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: /ok } ]\n";
    /// A target without routes; the test adds them.
    const HEAD: &str = "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n";

    fn err(yaml: &str) -> String {
        parse(yaml, "p.yaml", &|_| None)
            .map(|_| ())
            .expect_err("the probe file is refused")
            .to_string()
    }

    fn assert_err(yaml: &str, want: &str) {
        let got = err(yaml);
        assert!(got.contains(want), "want {want:?} in\n{got}\nfor\n{yaml}");
    }

    #[test]
    fn an_out_of_range_count_is_reported_where_and_as_written_with_the_range() {
        let got = err(&format!("defaults: {{ retries: 99999999999 }}\n{TARGET}"));
        assert_eq!(
            got,
            "p.yaml:1:22: defaults: retries 99999999999 is out of range; expected 0 to 100"
        );
        // Beyond u64 the YAML crate hands over a float: still the number as written.
        assert_err(
            &format!("defaults: {{ retries: 99999999999999999999999 }}\n{TARGET}"),
            "p.yaml:1:22: defaults: retries 99999999999999999999999 is out of range; expected 0 to 100",
        );
        assert_err(
            &format!("{HEAD}    routes: [ {{ path: /ok, retries: 101 }} ]\n"),
            "p.yaml:4:37: target \"a\": route /ok: retries 101 is out of range; expected 0 to 100",
        );
        // Saturating is not an answer anywhere.
        assert!(!got.contains("4294967295"), "{got}");
    }

    #[test]
    fn values_in_defaults_are_reported_inside_defaults_and_overrides_at_their_own_position() {
        assert_eq!(
            err(&format!("defaults: {{ timeout: 0s }}\n{TARGET}")),
            "p.yaml:1:22: defaults: timeout 0s must be greater than 0; expected a duration such as 500ms, 10s or 2m"
        );
        assert_eq!(
            err(&format!("defaults: {{ concurrency: 0 }}\n{TARGET}")),
            "p.yaml:1:26: defaults: concurrency 0 is out of range; expected 1 to 4096"
        );
        assert_err(
            &format!("defaults:\n  max_body: 0KiB\n{TARGET}"),
            "p.yaml:2:13: defaults: max_body 0KiB must be greater than 0",
        );
        assert_err(
            &format!("defaults: {{ connect_timeout: \"0ms\" }}\n{TARGET}"),
            "p.yaml:1:30: defaults: connect_timeout \"0ms\" must be greater than 0",
        );
        // A bad default is bad even where every target overrides it.
        assert_err(
            &format!(
                "defaults: {{ timeout: 0s }}\n{HEAD}    timeout: 1s\n    routes: [ {{ path: /ok }} ]\n"
            ),
            "p.yaml:1:22: defaults: timeout 0s",
        );
        assert_err(
            &format!("{HEAD}    timeout: 0s\n    routes: [ {{ path: /ok }} ]\n"),
            "p.yaml:4:14: target \"a\": timeout 0s must be greater than 0",
        );
        assert_err(
            &format!("{HEAD}    concurrency: 5000\n    routes: [ {{ path: /ok }} ]\n"),
            "p.yaml:4:18: target \"a\": concurrency 5000 is out of range; expected 1 to 4096",
        );
        assert_err(
            &format!("{HEAD}    routes:\n      - path: /ok\n        timeout: 0s\n"),
            "p.yaml:6:18: target \"a\": route /ok: timeout 0s must be greater than 0",
        );
        assert_err(
            &format!(
                "{HEAD}    unit: a.service\n    recovery: {{ max_actions: 0 }}\n    routes: [ {{ path: /ok }} ]\n"
            ),
            "p.yaml:5:30: recovery.max_actions 0 must be at least 1",
        );
    }

    #[test]
    fn a_duplicate_target_name_and_an_empty_target_list_have_positions() {
        assert_eq!(
            err(&format!(
                "{TARGET}  - name: a\n    base_url: http://x\n    routes: [ {{ path: /ok }} ]\n"
            )),
            "p.yaml:5:11: duplicate target name \"a\" (first used on line 2); names must be unique"
        );
        assert_err(
            "user_agent: x\ntargets: []\n",
            "p.yaml:2:10: no targets; expected at least one entry under 'targets:'",
        );
    }

    #[test]
    fn a_duplicate_key_is_named_without_the_libraries_advice() {
        let got = err(&format!(
            "defaults: {{ timeout: 1s, timeout: 2s }}\n{TARGET}"
        ));
        assert_eq!(
            got,
            "p.yaml:1:26: duplicate key \"timeout\"; each key may appear once in a mapping"
        );
        assert_err(
            &format!(
                "{HEAD}    routes: [ {{ path: /ok, expect: {{ json: {{ a: 1, a: 2 }} }} }} ]\n"
            ),
            "p.yaml:4:52: duplicate key \"a\"; each key may appear once in a mapping",
        );
    }

    #[test]
    fn a_value_of_the_wrong_shape_names_the_field_and_what_it_accepts() {
        let cases = [
            (
                format!("{HEAD}    routes: {{ path: /ok }}\n"),
                "p.yaml:4:13: routes: expected a list of routes (- { path: /x, class: core }), found a mapping",
            ),
            (
                format!("{HEAD}    routes:   # the routes\n      path: /ok\n"),
                "p.yaml:5:7: routes: expected a list of routes (- { path: /x, class: core }), found a mapping",
            ),
            (
                format!("{HEAD}    routes: /ok\n"),
                "p.yaml:4:13: routes: expected a list of routes (- { path: /x, class: core }), found \"/ok\"",
            ),
            (
                format!("{HEAD}    routes:\n"),
                "p.yaml:4:11: routes: expected a list of routes (- { path: /x, class: core }), found nothing (an empty value)",
            ),
            (
                format!("{HEAD}    routes: [ {{ path: /ok, expect: {{ json: [1,2] }} }} ]\n"),
                "p.yaml:4:44: expect.json: expected a mapping of dotted field path to expected value, e.g. { status: healthy, checks.db: ok }, found a list",
            ),
            (
                format!("{HEAD}    routes: [ {{ path: /a }}, /ok ]\n"),
                "p.yaml:4:29: each entry under routes: expected a route such as { path: /health, class: core }, found \"/ok\"",
            ),
            (
                format!("{HEAD}    routes:\n    - /ok\n"),
                "p.yaml:5:7: each entry under routes: expected a route such as { path: /health, class: core }, found \"/ok\"",
            ),
            (
                "targets:\n  - web\n".to_string(),
                "p.yaml:2:5: each entry under targets: expected a target such as { name: web",
            ),
            (
                "targets: { web: 1 }\n".to_string(),
                "p.yaml:1:10: targets: expected a list of targets",
            ),
            (
                format!("defaults: [1]\n{TARGET}"),
                "p.yaml:1:11: defaults: expected a mapping of timing keys, e.g. { timeout: 10s, retries: 2 }, found a list",
            ),
            (
                format!("{HEAD}    tls: \"yes\"\n    routes: [ {{ path: /ok }} ]\n"),
                "p.yaml:4:10: tls: expected a mapping, e.g. { ca_file: ca.pem, insecure: false }, found \"yes\"",
            ),
            (
                format!(
                    "{HEAD}    unit: a.service\n    recovery: {{ on: timeout }}\n    routes: [ {{ path: /ok }} ]\n"
                ),
                "p.yaml:5:21: recovery.on: expected a list of outcomes, e.g. [timeout, empty_reply, reset], found \"timeout\"",
            ),
            (
                format!("{HEAD}    routes: [ {{ path: [1] }} ]\n"),
                "p.yaml:4:23: path: expected an absolute path such as /api/health, found a list",
            ),
            (
                "- targets\n".to_string(),
                "p.yaml:1:1: the probe file: expected a mapping with 'targets'",
            ),
        ];
        for (yaml, want) in cases {
            let got = err(&yaml);
            assert!(got.contains(want), "want {want:?} in\n{got}\nfor\n{yaml}");
            assert!(
                !got.contains("sequence start") && !got.contains("mapping start"),
                "{got}"
            );
        }
    }

    #[test]
    fn the_text_before_a_value_tells_whose_value_it_is() {
        let at = |text: &str, needle: &str| {
            place_at(&without_comments(text), text.find(needle).unwrap())
        };
        assert_eq!(at("a:\n  b: # c: d\n    x", "x"), Place::Key("b".into()));
        assert_eq!(at("a: { \"b c\": x }", "x"), Place::Key("b c".into()));
        assert_eq!(at("a: &anchor x", "x"), Place::Key("a".into()));
        assert_eq!(at("list: [ {}, [x], y ]", "y"), Place::Item("list".into()));
        assert_eq!(at("list:\n  - 1\n  - x", "x"), Place::Item("list".into()));
        assert_eq!(at("m: { a: 1, x: 2 }", "x"), Place::Unknown);
        assert_eq!(at("x", "x"), Place::Root);
        assert_eq!(found_at("a: 'q: r'", 3), "'q: r'");
        assert_eq!(found_at("a: q r, s", 3), "\"q r\"");
        assert_eq!(found_at("a: http://u:pw@h/", 3), "\"http://u:***@h/\"");
        assert_eq!(found_at("a: \"http://u:pw@h\"", 3), "\"http://u:***@h\"");
    }

    #[test]
    fn every_budget_breach_is_one_sentence_that_states_its_limit() {
        let deep = |n: usize| {
            format!(
                "{HEAD}    routes: [ {{ path: /ok, expect: {{ json: {{ a: {}{} }} }} }} ]\n",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let depth = "nesting deeper than 64 levels (recursion limit exceeded); a probe file may nest lists and mappings at most 64 levels deep";
        // The budget notices at depth 65, the YAML scanner on very deep flow collections:
        // one message either way.
        for n in [58, 300, 10_000] {
            let got = err(&deep(n));
            assert!(got.ends_with(depth), "depth {n}: {got}");
            assert!(got.starts_with("p.yaml:4:"), "depth {n}: {got}");
        }
        assert!(
            parse(&deep(57), "p.yaml", &|_| None).is_ok(),
            "64 levels are fine"
        );

        let aliases = format!(
            "{HEAD}    routes: [&r {{path: /a}}, {}]\n",
            vec!["*r"; 1_001].join(",")
        );
        assert_err(
            &aliases,
            "the document is too large or too deeply aliased: more than 1000 aliases (*name); a probe file may use at most 1000",
        );
        let mut bomb = format!(
            "{HEAD}    routes:\n      - path: /a\n        expect:\n          json:\n            a: &a [x,x,x,x,x,x,x,x,x]\n"
        );
        for i in 0..8u8 {
            let (prev, cur) = ((b'a' + i) as char, (b'b' + i) as char);
            bomb.push_str(&format!(
                "            {cur}: &{cur} [{}]\n",
                vec![format!("*{prev}"); 9].join(",")
            ));
        }
        assert_err(
            &bomb,
            "the document is too large or too deeply aliased: aliases expand to more than 50000 replayed events",
        );
        for got in [err(&deep(300)), err(&aliases), err(&bomb)] {
            assert!(
                !got.contains("budget breached") && !got.contains('{') && !got.contains("500000"),
                "no Debug dump, no unrelated limit: {got}"
            );
        }
        assert_err(
            &format!("{TARGET}---\n{TARGET}"),
            "p.yaml:5:1: more than one YAML document ('---'); a probe file is a single document",
        );
    }

    #[test]
    fn the_readme_quotes_the_limits_the_loader_enforces() {
        let readme = include_str!("../README.md");
        let spaced = |n: usize| {
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(' ');
                }
                out.push(c);
            }
            out
        };
        let sentence = format!(
            "more than {} YAML aliases or {} alias-replayed events (a \"billion laughs\" bomb), nesting deeper than {}",
            spaced(MAX_ALIASES),
            spaced(MAX_REPLAYED_EVENTS),
            MAX_DEPTH
        );
        let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&sentence),
            "README Security must say: {sentence}"
        );
    }

    #[test]
    fn a_control_character_in_a_target_name_says_which_characters_are_accepted() {
        let got = err(
            "targets:\n  - name: \"nl\\nevent=fake\"\n    base_url: http://x\n    routes: [ { path: /ok } ]\n",
        );
        assert_eq!(
            got,
            "p.yaml:2:11: invalid target name \"nl\\nevent=fake\": it contains the control character '\\n'; expected one line of printable characters (letters, digits, spaces and punctuation; no newlines, tabs or other control characters)"
        );
        assert_err(
            "targets:\n  - name: \" \"\n    base_url: http://x\n    routes: [ { path: /ok } ]\n",
            "p.yaml:2:11: invalid target name \" \"; expected a non-empty name such as web",
        );
    }

    #[test]
    fn a_password_in_a_base_url_is_a_secret_and_leaves_every_url() {
        let plan = parse(
            "targets:\n  - name: a\n    base_url: http://user:s3cr%40t@127.0.0.1:1/api\n    routes: [ { path: /ok } ]\n",
            "p.yaml",
            &|_| None,
        )
        .unwrap();
        for secret in ["s3cr%40t", "s3cr@t"] {
            assert!(
                plan.secrets.iter().any(|s| s == secret),
                "{:?}",
                plan.secrets
            );
        }
        let t = &plan.targets[0];
        assert_eq!(
            t.endpoint,
            Endpoint::Http {
                base: "http://127.0.0.1:1/api".into()
            }
        );
        assert_eq!(t.routes[0].url, "http://127.0.0.1:1/api/ok");
        // The credentials still go out, as the HTTP client would have sent them.
        let auth = &t.routes[0].headers[0];
        assert_eq!(auth.name, reqwest::header::AUTHORIZATION);
        assert_eq!(auth.value, format!("Basic {}", base64(b"user:s3cr@t")));
        assert!(auth.secret && auth.value.is_sensitive());
        assert!(
            plan.redact(&format!("{auth:?} s3cr@t s3cr%40t"))
                .matches("<redacted>")
                .count()
                == 2
        );

        // An explicit Authorization header wins over the userinfo.
        let plan = parse(
            "targets:\n  - name: a\n    base_url: http://user:hunter2@x\n    headers: { Authorization: Bearer t }\n    routes: [ { path: /ok } ]\n",
            "p.yaml",
            &|_| None,
        )
        .unwrap();
        let auths: Vec<_> = plan.targets[0].routes[0]
            .headers
            .iter()
            .filter(|h| h.name == reqwest::header::AUTHORIZATION)
            .collect();
        assert_eq!(auths.len(), 1);
        assert_eq!(auths[0].value, "Bearer t");
        assert!(plan.secrets.iter().any(|s| s == "hunter2"));

        // Errors that echo the URL never echo the password.
        let got = err(
            "targets:\n  - name: a\n    base_url: \"http://user:hunter2@x?q\"\n    routes: [ { path: /ok } ]\n",
        );
        assert!(
            got.contains("http://user:***@x?q") && !got.contains("hunter2"),
            "{got}"
        );
    }

    #[test]
    fn a_password_in_an_ad_hoc_url_is_a_secret_and_leaves_the_url() {
        let plan = ad_hoc(&["http://user:hunter2@127.0.0.1:1/ok".to_string()], &[]).unwrap();
        assert!(
            plan.secrets.iter().any(|s| s == "hunter2"),
            "{:?}",
            plan.secrets
        );
        let route = &plan.targets[0].routes[0];
        assert_eq!(route.url, "http://127.0.0.1:1/ok");
        assert_eq!(
            route.headers[0].value,
            format!("Basic {}", base64(b"user:hunter2"))
        );
        let e = ad_hoc(&["http://user:hunter2@127.0.0.1:99999/".to_string()], &[]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn an_empty_or_comment_only_file_says_so() {
        for text in ["", "\n\n", "# only a comment\n  # another\n"] {
            let e = parse(text, "p.yaml", &|_| None).unwrap_err();
            assert_eq!(e.at, Some((1, 1)), "{e}");
            assert!(e.message.contains("the file is empty"), "{e}");
        }
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    fn regex_route(pattern: &str) -> String {
        format!("      - {{ path: /a, expect: {{ body_regex: '{pattern}' }} }}\n")
    }

    #[test]
    fn a_long_pattern_is_refused_at_its_value_shortened_in_the_message() {
        let long = r"\w".repeat(MAX_PATTERN_BYTES);
        let got = err(&format!("{HEAD}    routes:\n{}", regex_route(&long)));
        assert!(
            got.starts_with("p.yaml:5:43: target \"a\": expect.body_regex \"\\\\w\\\\w"),
            "{got}"
        );
        assert!(
            got.contains(&format!("… (8192 bytes) is too long; a regular expression may be at most {MAX_PATTERN_BYTES} bytes")),
            "{got}"
        );
        assert!(got.len() < 300, "{got}");
        // At the limit it is only the compiled size that counts.
        let ascii = "a".repeat(MAX_PATTERN_BYTES);
        parse(
            &format!("{HEAD}    routes:\n{}", regex_route(&ascii)),
            "p.yaml",
            &|_| None,
        )
        .expect("a pattern of exactly the limit is fine");
    }

    #[test]
    fn a_pattern_that_compiles_too_big_is_refused_with_advice() {
        let yaml = format!(
            "{HEAD}    routes:\n      - {{ path: /a, expect: {{ header: {{ x-v: '\\w{{100}}' }} }} }}\n"
        );
        let got = err(&yaml);
        assert!(
            got.starts_with("p.yaml:5:46: target \"a\": expect.header pattern \"\\\\w{100}\" compiles to more than 1 MiB"),
            "{got}"
        );
        assert!(got.contains("(?-u:\\w)"), "{got}");
        // The ASCII class of the same pattern is small.
        parse(
            &format!("{HEAD}    routes:\n{}", regex_route(r"(?-u:\w){100}")),
            "p.yaml",
            &|_| None,
        )
        .expect("ASCII \\w{100} fits");
    }

    #[test]
    fn a_syntax_error_names_the_pattern_once_and_the_reason() {
        let got = err(&format!("{HEAD}    routes:\n{}", regex_route("(ab")));
        assert_eq!(
            got,
            "p.yaml:5:43: target \"a\": invalid expect.body_regex \"(ab\": unclosed group; expected a regular expression (Rust regex syntax)"
        );
    }

    #[test]
    fn identical_patterns_are_compiled_once_and_distinct_ones_share_a_budget() {
        let mut yaml = format!("{HEAD}    routes:\n");
        for _ in 0..2_000 {
            yaml.push_str(&regex_route(r"\w{10}x"));
        }
        let plan = parse(&yaml, "p.yaml", &|_| None).expect("one pattern 2000 times");
        let routes = &plan.targets[0].routes;
        let first = routes[0].expect.body_regex.as_ref().unwrap();
        assert!(
            routes
                .iter()
                .all(|r| Arc::ptr_eq(r.expect.body_regex.as_ref().unwrap(), first)),
            "one shared compiled pattern"
        );
        let mut yaml = format!("{HEAD}    routes:\n");
        for i in 0..40 {
            yaml.push_str(&regex_route(&format!(r"\w{{10}}{i}")));
        }
        let got = err(&yaml);
        assert!(
            got.contains("the file's regular expressions together compile to more than 16 MiB"),
            "{got}"
        );
        assert!(got.starts_with("p.yaml:"), "{got}");
    }

    #[test]
    fn a_huge_value_is_quoted_short_in_any_error() {
        let name = "n".repeat(100_000);
        let got = err(&format!(
            "targets:\n  - name: {name}\n    routes: [ {{ path: /a }} ]\n"
        ));
        assert!(got.contains("… (100000 characters)"), "{got}");
        assert!(got.len() < 300, "{got}");
        let got = err(&format!(
            "{TARGET}user_agent: \"{}\\n\"\n",
            "u".repeat(100_000)
        ));
        assert!(got.len() < 500, "{}", &got[..500.min(got.len())]);
        let got = err(&format!(
            "{HEAD}    routes: [ {{ path: /a, class: {} }} ]\n",
            "c".repeat(100_000)
        ));
        assert!(got.len() < 500, "{}", &got[..500.min(got.len())]);
    }

    #[test]
    fn a_file_over_the_route_limit_is_counted_whole_but_kept_only_to_the_limit() {
        let mut yaml = String::from("targets:\n");
        for t in 0..3 {
            yaml.push_str(&format!(
                "  - name: t{t}\n    base_url: http://x\n    routes:\n"
            ));
            for _ in 0..9_000 {
                yaml.push_str("      - {path: /a}\n");
            }
        }
        yaml.push_str("  - {name: tcp, tcp: \"h:1\"}\n  - {name: bad, junk: [1, 2]}\n");
        assert_err(
            &yaml,
            "p.yaml:2:3: 27002 routes; at most 20000 are allowed in one file",
        );
        ROUTE_SLOTS.with(|c| assert_eq!(c.get(), 27_002));
    }
}
