//! The probe file: serde structs that mirror `probes.yaml` (unknown keys rejected), and one
//! function, [`resolve`], that turns them into a validated [`Plan`]. This is the only module
//! that names the YAML crate.
//!
//! Every error reads `file:line:column: what was wrong, the bad value, what is accepted`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
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
    user_agent: Option<String>,
    defaults: Option<RawDefaults>,
    /// The services to probe.
    #[schemars(with = "Vec<RawTarget>")]
    targets: Vec<Spanned<RawTarget>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    timeout: Option<Dur>,
    connect_timeout: Option<Dur>,
    retries: Option<Count>,
    backoff: Option<Dur>,
    max_backoff: Option<Dur>,
    concurrency: Option<Count>,
    max_body: Option<Size>,
    /// Limit on the whole probing phase of a run.
    run_timeout: Option<Dur>,
    /// Use `HTTP(S)_PROXY` from the environment (default false).
    proxy: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
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
    recovery: Option<Spanned<RawRecovery>>,
    /// The HTTP routes to probe (none for a `tcp` target).
    #[serde(default)]
    #[schemars(with = "Vec<RawRoute>")]
    routes: Vec<Spanned<RawRoute>>,
    // Per-target overrides of `defaults`.
    timeout: Option<Dur>,
    connect_timeout: Option<Dur>,
    retries: Option<Count>,
    backoff: Option<Dur>,
    max_backoff: Option<Dur>,
    concurrency: Option<Count>,
    max_body: Option<Size>,
    proxy: Option<bool>,
    tls: Option<RawTls>,
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
    expect: Option<RawExpect>,
    timeout: Option<Dur>,
    retries: Option<Count>,
    backoff: Option<Dur>,
    max_backoff: Option<Dur>,
    max_body: Option<Size>,
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
    after_failed_runs: Option<Count>,
    /// Outcomes that mean "hung" (default [timeout, empty_reply, reset]).
    #[schemars(with = "Option<Vec<String>>")]
    on: Option<Vec<Spanned<String>>>,
    startup_grace: Option<Dur>,
    cooldown: Option<Dur>,
    max_actions: Option<Count>,
    window: Option<Dur>,
    verify_timeout: Option<Dur>,
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
    let file = path.display().to_string();
    let err = |message: String| ConfigError {
        file: file.clone(),
        at: None,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(err("is a directory; expected a probe file (YAML)".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "file is {} bytes; a probe file may be at most {MAX_FILE_BYTES} bytes",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
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
    let raw: RawFile = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| yaml_error(file, &e))?;
    resolve(raw, file, env, base_dir)
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

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // Generous for any real probe file, small enough that a hostile one fails fast.
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_depth = 64;
    budget.max_nodes = 500_000;
    budget.max_events = 2_000_000;
    budget.max_total_scalar_bytes = 16 * 1024 * 1024;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // An alias bomb expands through replays: cap them well below what hurts.
    options.alias_limits.max_total_replayed_events = 50_000;
    options.alias_limits.max_alias_expansions_per_anchor = 1_000;
    options
}

fn yaml_error(file: &str, e: &serde_saphyr::Error) -> ConfigError {
    let plain = e.without_snippet().to_string();
    let at = e
        .location()
        .map(|l| (l.line(), l.column()))
        .filter(|&(l, _)| l > 0);
    // The crate appends " at line L, column C"; we put the location in front instead.
    let message = match plain.rfind(" at line ") {
        Some(i) if at.is_some() => plain[..i].to_string(),
        _ => plain,
    };
    let message = message.replace('`', "'");
    let message = if message.starts_with("budget breached") || message.contains("replay") {
        let detail = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        format!(
            "the document is too large or too deeply aliased ({detail}); a probe file may use at most {} aliases and {} nodes",
            1_000, 500_000
        )
    } else {
        message
    };
    let message = if message.starts_with("missing field") {
        format!("{message} (required)")
    } else {
        message
    };
    ConfigError {
        file: file.into(),
        at,
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Resolving.

struct Ctx<'a> {
    file: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Where relative paths in the file are resolved (the probe file's directory).
    base_dir: Option<&'a Path>,
    /// Every value taken from the environment, to be redacted from all output.
    secrets: std::cell::RefCell<Vec<String>>,
}

impl Ctx<'_> {
    fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        let l = at.referenced;
        ConfigError {
            file: self.file.into(),
            at: (l.line() > 0).then(|| (l.line(), l.column())),
            message: message.into(),
        }
    }
}

fn resolve(
    raw: RawFile,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
) -> Result<Plan, ConfigError> {
    let cx = Ctx {
        file,
        env,
        base_dir,
        secrets: Default::default(),
    };
    let d = raw.defaults.unwrap_or_default();
    let base_timing = Timing {
        timeout: d.timeout.map_or(Timing::default().timeout, |x| x.0),
        retries: d
            .retries
            .map_or(Timing::default().retries, |x| clamp_u32(x.0)),
        backoff: d.backoff.map_or(Timing::default().backoff, |x| x.0),
        max_backoff: d.max_backoff.map_or(Timing::default().max_backoff, |x| x.0),
        max_body: d
            .max_body
            .map_or(Timing::default().max_body, |x| clamp_usize(x.0)),
    };
    let base_connect = d
        .connect_timeout
        .map_or(plan::DEFAULT_CONNECT_TIMEOUT, |x| x.0);
    let base_concurrency = d
        .concurrency
        .map_or(plan::DEFAULT_CONCURRENCY as u64, |x| x.0);
    let base_proxy = d.proxy.unwrap_or(false);

    let user_agent = raw
        .user_agent
        .unwrap_or_else(|| crate::DEFAULT_USER_AGENT.to_string());
    if HeaderValue::from_str(&user_agent).is_err() {
        return Err(ConfigError {
            file: file.into(),
            at: None,
            message: format!("user_agent {user_agent:?} is not a valid header value"),
        });
    }

    if raw.targets.is_empty() {
        return Err(ConfigError {
            file: file.into(),
            at: None,
            message: "no targets; expected at least one entry under 'targets:'".into(),
        });
    }
    let total_routes: usize = raw
        .targets
        .iter()
        .map(|t| t.value.routes.len().max(1))
        .sum();
    if total_routes > MAX_ROUTES {
        return Err(ConfigError {
            file: file.into(),
            at: None,
            message: format!("{total_routes} routes; at most {MAX_ROUTES} are allowed in one file"),
        });
    }

    let mut targets = Vec::with_capacity(raw.targets.len());
    for t in raw.targets {
        let target = resolve_target(
            &cx,
            t,
            &base_timing,
            base_connect,
            base_concurrency,
            base_proxy,
        )?;
        if targets.iter().any(|o: &Target| o.name == target.name) {
            return Err(ConfigError {
                file: file.into(),
                at: None,
                message: format!(
                    "duplicate target name {:?}; names must be unique",
                    target.name
                ),
            });
        }
        targets.push(target);
    }
    Ok(Plan {
        user_agent,
        run_timeout: d.run_timeout.map_or(plan::DEFAULT_RUN_TIMEOUT, |x| x.0),
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
    let name = t.name.trim().to_string();
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        return Err(cx.err(
            &at,
            format!(
                "invalid target name {:?}; expected a non-empty name",
                t.name
            ),
        ));
    }
    let timing = Timing {
        timeout: t.timeout.map_or(base.timeout, |x| x.0),
        retries: t.retries.map_or(base.retries, |x| clamp_u32(x.0)),
        backoff: t.backoff.map_or(base.backoff, |x| x.0),
        max_backoff: t.max_backoff.map_or(base.max_backoff, |x| x.0),
        max_body: t.max_body.map_or(base.max_body, |x| clamp_usize(x.0)),
    };
    check_timing(cx, &at, &timing)?;
    let concurrency = t.concurrency.map_or(base_concurrency, |x| x.0);
    if !(1..=4096).contains(&concurrency) {
        return Err(cx.err(
            &at,
            format!(
                "target {name:?}: concurrency {concurrency} is out of range; expected 1 to 4096"
            ),
        ));
    }
    let connect_timeout = t.connect_timeout.map_or(base_connect, |x| x.0);
    if connect_timeout.is_zero() {
        return Err(cx.err(
            &at,
            format!("target {name:?}: connect_timeout must be greater than 0"),
        ));
    }

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
        (Some(url), None) => parse_base_url(cx, url, &name)?,
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

    let target_headers = resolve_headers(cx, &t.headers, &name)?;

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
            Some(resolve_recovery(cx, r)?)
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
                format!("target {name:?}: base_url {base} is {what}; drop 'ip' or use a host name"),
            ));
        }
    }

    let routes = if let Endpoint::Tcp { addr } = &endpoint {
        if let Some(r) = t.routes.first() {
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
        if t.routes.is_empty() {
            return Err(cx.err(
                &at,
                format!("target {name:?}: no routes; expected at least one entry under 'routes:'"),
            ));
        }
        t.routes
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

fn check_timing<T>(cx: &Ctx, at: &Spanned<T>, t: &Timing) -> Result<(), ConfigError> {
    if t.timeout.is_zero() {
        return Err(cx.err(at, "timeout must be greater than 0"));
    }
    if t.retries > 100 {
        return Err(cx.err(
            at,
            format!("retries {} is out of range; expected 0 to 100", t.retries),
        ));
    }
    if t.max_body == 0 {
        return Err(cx.err(at, "max_body must be greater than 0"));
    }
    Ok(())
}

fn parse_base_url(cx: &Ctx, url: &Spanned<String>, name: &str) -> Result<Endpoint, ConfigError> {
    let v = url.value.trim();
    if let Some(path) = v.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(cx.err(url, format!("target {name:?}: invalid unix socket {v:?}; expected an absolute path, e.g. unix:/run/app/rpc.sock")));
        }
        return Ok(Endpoint::Unix {
            socket: PathBuf::from(path),
        });
    }
    let parsed = reqwest::Url::parse(v).map_err(|e| {
        cx.err(url, format!("target {name:?}: invalid base_url {v:?} ({e}); expected http://host[:port], https://… or unix:/path.sock"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(cx.err(url, format!("target {name:?}: invalid base_url {v:?}; expected http://host[:port], https://… or unix:/path.sock")));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(cx.err(url, format!("target {name:?}: base_url {v:?} has a query or fragment; put those in the route path")));
    }
    Ok(Endpoint::Http {
        base: parsed.as_str().trim_end_matches('/').to_string(),
    })
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
    let policy = RecoveryPolicy {
        action: raw.action.unwrap_or(d.action),
        after_failed_runs: raw
            .after_failed_runs
            .map_or(d.after_failed_runs, |x| clamp_u32(x.0)),
        on,
        startup_grace: raw.startup_grace.map_or(d.startup_grace, |x| x.0),
        cooldown: raw.cooldown.map_or(d.cooldown, |x| x.0),
        max_actions: raw.max_actions.map_or(d.max_actions, |x| clamp_u32(x.0)),
        window: raw.window.map_or(d.window, |x| x.0),
        verify_timeout: raw.verify_timeout.map_or(d.verify_timeout, |x| x.0),
    };
    if policy.after_failed_runs == 0 {
        return Err(cx.err(&r, "recovery.after_failed_runs must be at least 1"));
    }
    if policy.max_actions == 0 {
        return Err(cx.err(
            &r,
            "recovery.max_actions must be at least 1 (use action: none to never act)",
        ));
    }
    if policy.verify_timeout.is_zero() {
        return Err(cx.err(&r, "recovery.verify_timeout must be greater than 0"));
    }
    Ok(policy)
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
        if value.len() >= 3 {
            cx.secrets.borrow_mut().push(value.clone());
        }
        out.push_str(&value);
        secret = true;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if secret && out.len() >= 3 {
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
                    format!("target {target:?}: route {path:?} makes an invalid URL {url:?} ({e})"),
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
    let timing = Timing {
        timeout: r.timeout.map_or(base.timeout, |x| x.0),
        retries: r.retries.map_or(base.retries, |x| clamp_u32(x.0)),
        backoff: r.backoff.map_or(base.backoff, |x| x.0),
        max_backoff: r.max_backoff.map_or(base.max_backoff, |x| x.0),
        max_body: r.max_body.map_or(base.max_body, |x| clamp_usize(x.0)),
    };
    check_timing(cx, &at, &timing)?;
    let mut headers = target_headers.to_vec();
    for h in resolve_headers(cx, &r.headers, target)? {
        headers.retain(|o| o.name != h.name);
        headers.push(h);
    }
    let expect = resolve_expect(cx, r.expect.unwrap_or_default(), target)?;
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

fn resolve_expect(cx: &Ctx, e: RawExpect, target: &str) -> Result<Expect, ConfigError> {
    let compile = |s: &Spanned<String>, what: &str| {
        Regex::new(&s.value).map_err(|err| {
            let first = err.to_string().lines().last().unwrap_or("").trim().to_string();
            cx.err(s, format!("target {target:?}: invalid {what} {:?}: {first}; expected a regular expression (Rust regex syntax)", s.value))
        })
    };
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
            return Err(ConfigError {
                file: cx.file.into(),
                at: None,
                message: format!(
                    "target {target:?}: invalid expect.json path {path:?}; expected dotted field names like status or checks.db"
                ),
            });
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
        let url = reqwest::Url::parse(raw).map_err(|e| {
            err(format!(
                "invalid URL {raw:?} ({e}); expected http://host[:port]/path or https://…"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(err(format!(
                "invalid URL {raw:?}; expected http://host[:port]/path or https://…"
            )));
        }
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
            headers: Vec::new(),
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
        secrets: Vec::new(),
    })
}
