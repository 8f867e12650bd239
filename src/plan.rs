//! The resolved probe plan: every default applied, every URL, duration and pattern validated.
//! Nothing downstream of `config` sees an `Option<Duration>` or an unparsed URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use reqwest::header::{HeaderName, HeaderValue};

use crate::outcome::Outcome;

#[derive(Debug, Clone)]
pub struct Plan {
    pub user_agent: String,
    /// Hard limit on the whole probing phase; what is still running then ends as `timeout`.
    pub run_timeout: Duration,
    pub targets: Vec<Target>,
    /// Values taken from `${VAR}`: redacted from every report, log line and error.
    pub secrets: Vec<String>,
}

impl Plan {
    /// Replace every secret in `text` with `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }
}

/// Replace every secret in `text` with `<redacted>` (longest first, so a header value that
/// contains a token is caught whole). Pure.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
    pub unit: Option<String>,
    pub recovery: Option<RecoveryPolicy>,
    /// Requests in flight at once for this target.
    pub concurrency: usize,
    pub connect_timeout: Duration,
    /// Use `HTTP_PROXY`/`HTTPS_PROXY` from the environment (off by default).
    pub use_env_proxy: bool,
    pub tls: Tls,
    pub ip: IpFamily,
    pub routes: Vec<Route>,
}

impl Target {
    /// Whether a probe of this target can need TLS: an `https` base URL, or an environment
    /// proxy (which may be `https://`). Redirects are never followed, so nothing else can.
    pub fn speaks_tls(&self) -> bool {
        self.use_env_proxy
            || matches!(&self.endpoint, Endpoint::Http { base } if base.starts_with("https:"))
    }

    /// The HTTP client's connect-phase timeout. Plain HTTP: `connect_timeout`, kept under the
    /// shortest route `timeout` (at most 90 % of it), so a connection that never opens ends
    /// as `connect_timeout` rather than as a `timeout` of the whole attempt. HTTPS: the
    /// client's connect phase includes the TLS handshake, which only the route `timeout`
    /// bounds (a slow handshake is not a dead port); whether TCP itself connected within
    /// `connect_timeout` is checked apart when the phase fails.
    pub fn http_connect_timeout(&self) -> Duration {
        let shortest = self
            .routes
            .iter()
            .map(|r| r.timing.timeout.mul_f64(0.9))
            .min();
        match shortest {
            Some(t) if self.speaks_tls() => t,
            Some(t) => t.min(self.connect_timeout),
            None => self.connect_timeout,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpFamily {
    #[default]
    Any,
    V4,
    V6,
}

impl IpFamily {
    /// Whether an address of a resolved name may be used (`ip: v4 | v6 | any`).
    pub fn admits(self, addr: &std::net::SocketAddr) -> bool {
        match self {
            IpFamily::V4 => addr.is_ipv4(),
            IpFamily::V6 => addr.is_ipv6(),
            IpFamily::Any => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://…` or `https://…`; no trailing slash.
    Http { base: String },
    /// HTTP over a Unix stream socket (`unix:/run/app/rpc.sock`).
    Unix { socket: PathBuf },
    /// Plain TCP connect probe (`tcp: host:port`).
    Tcp { addr: String },
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Liveness: its failure makes the target unhealthy.
    Core,
    /// Heavy or optional pages: reported, never unhealthy, never recovered.
    Auxiliary,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Core => "core",
            Class::Auxiliary => "auxiliary",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Request target as written (`/api/health`), or `host:port` for TCP.
    pub path: String,
    /// What the report shows: the full URL (`unix:/run/x.sock:/health` for sockets).
    pub url: String,
    pub class: Class,
    pub method: reqwest::Method,
    pub body: Option<String>,
    pub headers: Vec<Header>,
    pub expect: Expect,
    pub timing: Timing,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
    /// The value came from `${VAR}`: it is never printed.
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The whole attempt: connect, headers and body.
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub max_body: usize,
}

#[derive(Debug, Clone)]
pub struct Expect {
    /// Inclusive ranges; default 200–399.
    pub status: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    /// Shared by every route of the file with the same pattern (one compiled copy, one cache).
    pub body_regex: Option<Arc<Regex>>,
    /// Dotted field path → expected JSON value.
    pub json: Vec<(String, serde_json::Value)>,
    /// Header name → pattern the value must match.
    pub headers: Vec<(HeaderName, Arc<Regex>)>,
    /// Slower than this (and otherwise fine) is `slow`: degraded, never unhealthy.
    pub max_latency: Option<Duration>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            status: vec![(200, 399)],
            body_contains: None,
            body_regex: None,
            json: Vec::new(),
            headers: Vec::new(),
            max_latency: None,
        }
    }
}

impl Expect {
    pub fn status_ok(&self, code: u16) -> bool {
        self.status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }

    /// Whether the body must be read and checked (as opposed to only drained).
    pub fn needs_body(&self) -> bool {
        self.body_contains.is_some() || self.body_regex.is_some() || !self.json.is_empty()
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL the unit's main process through a pidfd; systemd's `Restart=` brings it back.
    Kill,
    /// `RestartUnit(unit, "replace")` over D-Bus.
    Restart,
    /// Report only.
    None,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPolicy {
    pub action: Action,
    pub after_failed_runs: u32,
    /// Outcomes of a failing core route that mean "hung".
    pub on: Vec<Outcome>,
    pub startup_grace: Duration,
    pub cooldown: Duration,
    pub max_actions: u32,
    pub window: Duration,
    pub verify_timeout: Duration,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            action: Action::Kill,
            after_failed_runs: 1,
            on: vec![Outcome::Timeout, Outcome::EmptyReply, Outcome::Reset],
            startup_grace: Duration::from_secs(120),
            cooldown: Duration::from_secs(15 * 60),
            max_actions: 3,
            window: Duration::from_secs(6 * 3600),
            verify_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_body: 64 * 1024,
        }
    }
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_CONCURRENCY: usize = 4;
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Endpoint, use_env_proxy: bool) -> Target {
        Target {
            name: "t".into(),
            endpoint,
            unit: None,
            recovery: None,
            concurrency: 1,
            connect_timeout: Duration::from_secs(1),
            use_env_proxy,
            tls: Tls::default(),
            ip: IpFamily::Any,
            routes: Vec::new(),
        }
    }

    #[test]
    fn only_https_or_a_proxy_needs_tls() {
        let http = |base: &str| Endpoint::Http { base: base.into() };
        assert!(!target(http("http://127.0.0.1:80"), false).speaks_tls());
        assert!(target(http("https://example.org"), false).speaks_tls());
        assert!(target(http("http://127.0.0.1:80"), true).speaks_tls());
        let unix = Endpoint::Unix {
            socket: "/run/app.sock".into(),
        };
        assert!(!target(unix, false).speaks_tls());
    }
}
