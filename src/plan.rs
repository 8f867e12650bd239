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
    /// Requests in flight at once across all targets (`max_in_flight`); the prober lowers it
    /// to half the open-file limit.
    pub max_in_flight: usize,
    pub targets: Vec<Target>,
    /// The dead-man's-switch ping (`ping:`), if any.
    pub ping: Option<crate::alerts::ping::Ping>,
    /// Where to send notifications of state changes (`notify:`).
    pub notify: Vec<crate::alerts::notify::Notifier>,
    /// Values taken from `${VAR}`: redacted from every report, log line and error.
    pub secrets: Vec<String>,
    /// As root: why a drop-in file read for this plan (or its directory) cannot be trusted;
    /// recovery is blocked then, as for an untrusted probe file.
    pub untrusted: Vec<String>,
    /// What the probe file allows but probably does not mean, each `file:line:col: …`.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Replace every secret in `text`, in every form [`redact`] knows, with `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }
}

/// Secrets shorter than this (in characters) are never looked for inside server text, where
/// replacing every "a" would shred it: only a text that is the whole secret is redacted, and
/// the routes that send secret headers show no server text at all (see [`Reveal`]).
pub const MIN_REDACTED_CHARS: usize = 3;

const REDACTED: &str = "<redacted>";

/// Replace every secret in `text` with `<redacted>`, in every form a server commonly echoes it:
/// as is; upper-, lower- or mixed-case; JSON-escaped (`\"`, `\\`, `\/`, `\n`, `\uXXXX` for
/// non-ASCII, in either hex case); percent-encoded (any character as `%XX`, either hex case,
/// space as `+`); non-ASCII characters sent as Latin-1 bytes and decoded lossily (U+FFFD), or
/// as UTF-8 read as Latin-1 (`Ã©`); with a line break (`\n`, `\r\n`, or escaped) between any
/// two characters; and base64, standard or URL-safe, padded or not, at each of the three
/// alignments inside a longer base64 string (so `user:secret` in a Basic token is caught) —
/// any mix of these. Secrets shorter than [`MIN_REDACTED_CHARS`] are only redacted where they
/// are the whole text. Pure.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if secret.chars().count() < MIN_REDACTED_CHARS {
            if text == secret {
                return REDACTED.to_string();
            }
            continue;
        }
        match cached_secret_regex(secret) {
            Some(re) => ranges.extend(re.find_iter(text).map(|m| m.range())),
            // Too big to compile (a secret of many KiB): as is and case-folded only.
            None => {
                let lower = text.to_lowercase();
                if lower.len() == text.len() {
                    let needle = secret.to_lowercase();
                    ranges.extend(lower.match_indices(&needle).map(|(i, m)| i..i + m.len()));
                }
                ranges.extend(
                    text.match_indices(secret.as_str())
                        .map(|(i, m)| i..i + m.len()),
                );
            }
        }
    }
    if ranges.is_empty() {
        return text.to_string();
    }
    ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in ranges {
        if r.end <= at {
            continue;
        }
        if r.start >= at {
            out.push_str(&text[at..r.start]);
            out.push_str(REDACTED);
        }
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Whether any form [`redact`] knows of a secret occurs in `text`. Pure.
pub fn contains_secret(text: &str, secrets: &[String]) -> bool {
    redact(text, secrets) != text
}

/// A line break a server may put inside a value: raw, JSON-escaped or percent-encoded.
const BREAK: &str = r"(?:\r?\n|\\r\\n|\\n|%0[dD]%0[aA]|%0[aA])?";

/// [`secret_regex`], compiled once per secret for the process: `redact` runs for every
/// failed route, and compiling every secret's expression each time made a fleet's failing
/// run take hours of CPU.
fn cached_secret_regex(secret: &str) -> Option<regex::Regex> {
    type Cache = std::sync::Mutex<std::collections::HashMap<String, Option<regex::Regex>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(secret) {
        return re.clone();
    }
    // Compiled outside the lock; two threads may both compile one, once.
    let re = secret_regex(secret);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(secret.to_string(), re.clone());
    re
}

/// One regular expression for every form of `secret` (see [`redact`]); `None` if it would
/// not compile within the size limit.
fn secret_regex(secret: &str) -> Option<regex::Regex> {
    let per_char: Vec<String> = secret.chars().map(char_forms).collect();
    let mut alternatives = vec![per_char.join(BREAK)];
    let mut encoded = base64_forms(secret.as_bytes());
    // Leftmost-first: the longest form where several start at the same place.
    encoded.sort_by_key(|f| std::cmp::Reverse(f.len()));
    for form in encoded {
        let chars: Vec<String> = form
            .chars()
            .map(|c| regex::escape(&c.to_string()))
            .collect();
        alternatives.push(chars.join(BREAK));
    }
    regex::RegexBuilder::new(&alternatives.join("|"))
        .size_limit(4 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .ok()
}

/// An alternation of every way one character of a secret may be written back.
fn char_forms(c: char) -> String {
    let mut forms: Vec<String> = vec![c.to_string()];
    forms.extend(c.to_uppercase().map(String::from));
    forms.extend(c.to_lowercase().map(String::from));
    if c.to_uppercase().count() == 1 && c.to_lowercase().count() == 1 {
        forms.push(c.to_uppercase().collect());
        forms.push(c.to_lowercase().collect());
    }
    // JSON.
    match c {
        '"' => forms.push(r#"\""#.into()),
        '\\' => forms.push(r"\\".into()),
        '/' => forms.push(r"\/".into()),
        '\n' => forms.push(r"\n".into()),
        '\r' => forms.push(r"\r".into()),
        '\t' => forms.push(r"\t".into()),
        '\u{8}' => forms.push(r"\b".into()),
        '\u{c}' => forms.push(r"\f".into()),
        _ => {}
    }
    if !c.is_ascii() || c.is_ascii_control() || "\"\\/<>&'".contains(c) {
        let mut units = [0u16; 2];
        for case in [false, true] {
            let escaped: String = c
                .encode_utf16(&mut units)
                .iter()
                .map(|u| {
                    if case {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    }
                })
                .collect();
            forms.push(escaped);
        }
    }
    // Percent-encoding of each UTF-8 byte, either hex case; a space also as `+`.
    let mut utf8 = [0u8; 4];
    let bytes = c.encode_utf8(&mut utf8).as_bytes();
    forms.push(bytes.iter().map(|b| format!("%{b:02X}")).collect());
    forms.push(bytes.iter().map(|b| format!("%{b:02x}")).collect());
    if c == ' ' {
        forms.push("+".into());
    }
    if !c.is_ascii() {
        // Sent as Latin-1 and decoded lossily, or its UTF-8 bytes read as Latin-1.
        if (c as u32) <= 0xFF {
            forms.push("\u{FFFD}".into());
        }
        forms.push(bytes.iter().map(|&b| char::from(b)).collect());
    }
    forms.sort();
    forms.dedup();
    // Longest first, so an escape is taken whole rather than its first character alone.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let alternatives: Vec<String> = forms.iter().map(|f| regex::escape(f)).collect();
    format!("(?:{})", alternatives.join("|"))
}

/// The base64 texts of `secret` wherever it sits in a longer encoded string: for each of the
/// three byte alignments, the characters that depend on the secret's bytes alone (at least
/// 8 of them, so they cannot be chance), standard and URL-safe; and the whole encoding at
/// offset 0, with and without padding. Pure.
pub fn base64_forms(secret: &[u8]) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let mut out = Vec::new();
    let full = STANDARD.encode(secret);
    out.push(full.clone());
    out.push(STANDARD_NO_PAD.encode(secret));
    for lead in 0..3usize {
        let mut padded = vec![0u8; lead];
        padded.extend_from_slice(secret);
        let text = STANDARD_NO_PAD.encode(&padded);
        // Character i holds bits 6i..6i+6; keep those inside the secret's bits.
        let first = (8 * lead).div_ceil(6);
        let end = (8 * (lead + secret.len())) / 6;
        if end >= first + 8 {
            out.push(text[first..end].to_string());
        }
    }
    let url_safe: Vec<String> = out
        .iter()
        .map(|f| f.replace('+', "-").replace('/', "_"))
        .collect();
    out.extend(url_safe);
    out.retain(|f| f.trim_end_matches('=').len() >= 4);
    out.sort();
    out.dedup();
    out
}

/// What `<withheld>` text says in place of a server's text.
pub const WITHHELD: &str = "withheld: the route sends a secret header";

/// How a route's server-supplied text (body excerpts, header values) may be shown in reports
/// and logs. Every known form of every secret is redacted; in addition, a route that sends a
/// secret header shows no server text that holds any form of a secret, and none at all when a
/// secret is shorter than [`MIN_REDACTED_CHARS`] (it cannot be told apart from ordinary text).
#[derive(Debug, Clone, Copy)]
pub struct Reveal<'a> {
    pub secrets: &'a [String],
    /// The route sends a header whose value came from `${VAR}` or a URL password, or a URL or
    /// body with a `${VAR}`.
    pub sends_secret: bool,
}

impl<'a> Reveal<'a> {
    /// The policy for `route` of a plan with `secrets`.
    pub fn for_route(route: &Route, secrets: &'a [String]) -> Reveal<'a> {
        Reveal {
            secrets,
            sends_secret: route.secret_request || route.headers.iter().any(|h| h.secret),
        }
    }

    /// `text` redacted and cut to `max` characters, quoted; or `None` when it is withheld.
    pub fn quoted(&self, text: &str, max: usize) -> Option<String> {
        let short = self
            .secrets
            .iter()
            .any(|s| !s.is_empty() && s.chars().count() < MIN_REDACTED_CHARS);
        if self.sends_secret && short {
            return None;
        }
        let redacted = redact(text, self.secrets);
        if self.sends_secret && redacted != text {
            return None;
        }
        let cut = if redacted.chars().count() <= max {
            redacted
        } else {
            let head: String = redacted.chars().take(max).collect();
            format!("{head}…")
        };
        Some(format!("{cut:?}"))
    }
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
    /// The drop-in file it is written in (`None`: the probe file itself).
    pub file: Option<String>,
}

impl Target {
    /// Whether a probe of this target needs TLS to reach the target: an `https` base URL, or
    /// an environment proxy (which may be `https://`).
    pub fn speaks_tls(&self) -> bool {
        self.use_env_proxy
            || matches!(&self.endpoint, Endpoint::Http { base } if base.starts_with("https:"))
    }

    /// Whether its HTTP client may need TLS at all: [`Target::speaks_tls`], or a route that
    /// follows redirects (which may lead to `https://`).
    pub fn may_use_tls(&self) -> bool {
        self.speaks_tls()
            || (matches!(self.endpoint, Endpoint::Http { .. })
                && self.routes.iter().any(|r| r.timing.follow_redirects > 0))
    }

    /// An `https://` base URL (TLS with the target itself, whatever the proxy).
    /// The host (without IPv6 brackets) and port of an `http(s)://` base URL.
    pub fn http_host_port(&self) -> Option<(String, u16)> {
        let Endpoint::Http { base } = &self.endpoint else {
            return None;
        };
        let url = reqwest::Url::parse(base).ok()?;
        let host = url.host_str()?.trim_matches(['[', ']']).to_string();
        Some((host, url.port_or_known_default()?))
    }

    pub fn is_https(&self) -> bool {
        matches!(&self.endpoint, Endpoint::Http { base } if base.starts_with("https:"))
    }

    /// The HTTP client's connect-phase timeout. Plain HTTP: `connect_timeout`, kept under the
    /// shortest route `timeout` (at most 90 % of it), so a connection that never opens ends
    /// as `connect_timeout` rather than as a `timeout` of the whole attempt. HTTPS: the
    /// client's connect phase includes the TLS handshake, which only the route `timeout`
    /// bounds (a slow handshake is not a dead port): the shortest one, less
    /// [`HANDSHAKE_NAMED`], so that a handshake that never finishes is named as such rather
    /// than as the attempt's deadline. Whether TCP itself connected within `connect_timeout`
    /// is checked apart when the phase fails.
    pub fn http_connect_timeout(&self) -> Duration {
        let shortest = self.routes.iter().map(|r| r.timing.timeout).min();
        match shortest {
            Some(t) if self.speaks_tls() => t.saturating_sub(HANDSHAKE_NAMED.min(t / 10)),
            Some(t) => t.mul_f64(0.9).min(self.connect_timeout),
            None => self.connect_timeout,
        }
    }
}

/// How long before a route's deadline a TLS handshake still in progress is given up on, so
/// the failure says "the TLS handshake did not finish". Far less than any answer needs after
/// a handshake: a handshake that ends later leaves no time for the request anyway.
pub const HANDSHAKE_NAMED: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    /// A client certificate for servers that require one (mutual TLS).
    pub client: Option<ClientCert>,
}

/// `tls: { cert_file, key_file }`: PEM files, checked when the probe file is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
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
    /// What the report shows: the full URL (`unix:/run/x.sock:/health` for sockets), with
    /// any `${VAR}` as written, never its value.
    pub url: String,
    /// The URL the request goes to, variables expanded (`http://localhost/path` over a Unix
    /// socket, whose path is the transport). Never printed.
    pub request: String,
    /// Its URL or body holds a value from the environment: server text that echoes it is
    /// withheld, as for a secret header.
    pub secret_request: bool,
    pub class: Class,
    pub method: reqwest::Method,
    pub body: Option<String>,
    pub headers: Vec<Header>,
    /// Shared: routes without `expect:` all hold the one default.
    pub expect: Arc<Expect>,
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
    /// Redirects (301, 302, 303, 307, 308) followed at most, each a hop of the same attempt;
    /// 0 judges a 3xx as it is.
    pub follow_redirects: u32,
}

#[derive(Debug, Clone)]
pub struct Expect {
    /// Inclusive ranges; default 200–399.
    pub status: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    /// Shared by every route of the file with the same pattern (one compiled copy, one cache).
    pub body_regex: Option<Arc<Regex>>,
    /// A substring the body must not contain.
    pub body_not_contains: Option<String>,
    /// A pattern the body must not match.
    pub body_not_regex: Option<Arc<Regex>>,
    /// Dotted field path → what the JSON value there must be.
    pub json: Vec<(String, crate::expect::JsonCheck)>,
    /// Header name → pattern the value must match.
    pub headers: Vec<(HeaderName, Arc<Regex>)>,
    /// Slower than this (and otherwise fine) is `slow`: degraded, never unhealthy.
    pub max_latency: Option<Duration>,
    /// A server certificate expiring sooner than this is `cert_expiring` (`https://` only).
    pub cert_min: Option<Duration>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            status: vec![(200, 399)],
            body_contains: None,
            body_regex: None,
            body_not_contains: None,
            body_not_regex: None,
            json: Vec::new(),
            headers: Vec::new(),
            max_latency: None,
            cert_min: None,
        }
    }
}

impl Expect {
    /// The expectations of a route that states none (status 200–399), one copy for all.
    pub fn shared_default() -> Arc<Expect> {
        static DEFAULT: std::sync::LazyLock<Arc<Expect>> =
            std::sync::LazyLock::new(|| Arc::new(Expect::default()));
        Arc::clone(&DEFAULT)
    }

    pub fn status_ok(&self, code: u16) -> bool {
        self.status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }

    /// Whether the body must be read and checked (as opposed to only drained).
    pub fn needs_body(&self) -> bool {
        self.body_contains.is_some()
            || self.body_regex.is_some()
            || self.body_not_contains.is_some()
            || self.body_not_regex.is_some()
            || !self.json.is_empty()
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
    /// Forensics before a kill: this signal first, then wait, then SIGKILL what is left.
    pub dump: Option<Dump>,
    /// The probed address belongs to this (reverse proxy) unit in front of the unit.
    pub through: Option<String>,
}

/// `recovery.dump`: a signal that makes the hung process leave its own evidence (Go and the
/// JVM print every thread's stack on SIGQUIT; Python does with `faulthandler.register`;
/// SIGABRT leaves a core for systemd-coredump), sent through the same pidfd as the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dump {
    pub signal: DumpSignal,
    pub wait: Duration,
}

/// The signals `recovery.dump` may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DumpSignal {
    #[serde(rename = "SIGQUIT")]
    Quit,
    #[serde(rename = "SIGABRT")]
    Abrt,
    #[serde(rename = "SIGUSR1")]
    Usr1,
    #[serde(rename = "SIGUSR2")]
    Usr2,
    #[serde(rename = "SIGTERM")]
    Term,
    #[serde(rename = "SIGINT")]
    Int,
    #[serde(rename = "SIGHUP")]
    Hup,
}

impl DumpSignal {
    pub const ALL: [DumpSignal; 7] = [
        DumpSignal::Quit,
        DumpSignal::Abrt,
        DumpSignal::Usr1,
        DumpSignal::Usr2,
        DumpSignal::Term,
        DumpSignal::Int,
        DumpSignal::Hup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DumpSignal::Quit => "SIGQUIT",
            DumpSignal::Abrt => "SIGABRT",
            DumpSignal::Usr1 => "SIGUSR1",
            DumpSignal::Usr2 => "SIGUSR2",
            DumpSignal::Term => "SIGTERM",
            DumpSignal::Int => "SIGINT",
            DumpSignal::Hup => "SIGHUP",
        }
    }

    /// `SIGQUIT`, `sigquit` or `QUIT`.
    pub fn parse(s: &str) -> Option<DumpSignal> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        DumpSignal::ALL
            .into_iter()
            .find(|d| &d.as_str()[3..] == name)
    }
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
            dump: None,
            through: None,
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
            follow_redirects: 0,
        }
    }
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Measured on the fleet benchmark (1 000 targets × 20 routes, `bench/compare.sh`): fewer
/// left wall time on the table, more only added memory and connection churn.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time of this thread (not wall time: a busy machine does not add to it).
    fn thread_cpu() -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[test]
    fn redacting_again_does_not_compile_every_secret_again() {
        // Fresh secrets (no other test has compiled them), as a fleet's per-target tokens.
        let nonce = std::process::id();
        let secrets: Vec<String> = (0..40).map(|i| format!("tok-{nonce}-{i}-Zq9xW2")).collect();
        let text = format!(
            "connection refused by http://h/x?k={}: nothing listens",
            secrets[7]
        );
        let t0 = thread_cpu();
        assert!(redact(&text, &secrets).contains(REDACTED));
        let first = thread_cpu() - t0;
        let t1 = thread_cpu();
        for _ in 0..100 {
            assert!(redact(&text, &secrets).contains(REDACTED));
        }
        let again = thread_cpu() - t1;
        // Compiling on every call makes the 100 calls cost about 100 first calls.
        assert!(
            again < first * 20,
            "100 more calls took {again:?}, the first {first:?}"
        );
    }

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
            file: None,
        }
    }

    /// An `https` target's TLS handshake may take the route's whole `timeout` (less the few
    /// milliseconds that let a stalled one be named): a handshake finished at 92 % of it is
    /// followed by the answer, as curl reads it. Plain HTTP keeps `connect_timeout`, under 90 %
    /// of the route's.
    #[test]
    fn an_https_handshake_has_the_route_timeout_and_plain_tcp_connect_timeout() {
        let first = |yaml: &str| {
            crate::config::parse(yaml, "p.yaml", &|_| None)
                .unwrap()
                .targets
                .remove(0)
        };
        let t = first(
            "defaults: { timeout: 5s, connect_timeout: 3s }
targets: [ { name: a, base_url: https://127.0.0.1:1, routes: [ { path: /x }, { path: /y, timeout: 9s } ] } ]
",
        );
        assert_eq!(
            t.http_connect_timeout(),
            Duration::from_secs(5) - HANDSHAKE_NAMED
        );
        assert!(t.http_connect_timeout() > Duration::from_millis(4600));
        let t = first(
            "defaults: { timeout: 50ms }
targets: [ { name: a, base_url: https://127.0.0.1:1, routes: [ { path: /x } ] } ]
",
        );
        assert_eq!(t.http_connect_timeout(), Duration::from_millis(45));
        let t = first(
            "defaults: { timeout: 5s, connect_timeout: 3s }
targets: [ { name: a, base_url: http://127.0.0.1:1, routes: [ { path: /x } ] } ]
",
        );
        assert_eq!(t.http_connect_timeout(), Duration::from_secs(3));
        let t = first(
            "defaults: { timeout: 2s, connect_timeout: 3s }
targets: [ { name: a, base_url: http://127.0.0.1:1, routes: [ { path: /x } ] } ]
",
        );
        assert_eq!(t.http_connect_timeout(), Duration::from_millis(1800));
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

    const S: &str = "s3cr3t/Välue\"x";

    fn gone(text: &str) {
        let got = redact(text, &[S.to_string()]);
        assert!(got.contains("<redacted>"), "{text:?} -> {got:?}");
        assert!(
            !got.contains("s3cr3t") && !got.contains("S3CR3T"),
            "{got:?}"
        );
        assert!(got.starts_with("pre ") && got.ends_with(" post"), "{got:?}");
    }

    #[test]
    fn a_secret_is_redacted_as_is_and_in_any_case() {
        gone(&format!("pre {S} post"));
        gone(&format!("pre {} post", S.to_uppercase()));
        gone(&format!("pre {} post", S.to_lowercase()));
        gone("pre S3cR3T/väLUE\"X post");
    }

    #[test]
    fn a_secret_is_redacted_json_escaped() {
        // serde_json: `"` and `\` escaped, `/` and non-ASCII as is.
        let json = serde_json::to_string(S).unwrap();
        gone(&format!("pre {} post", &json[1..json.len() - 1]));
        // PHP's default: `\/` and `\u00e4`.
        gone(r#"pre s3cr3t\/V\u00e4lue\"x post"#);
        gone(r#"pre s3cr3t\/V\u00E4lue\"x post"#);
        let slash = |t: &str| redact(t, &["a\\b".to_string()]);
        assert_eq!(slash(r"x a\\b y"), "x <redacted> y");
        let emoji = redact(r"k=\ud83d\ude00ok!", &["😀ok!".to_string()]);
        assert_eq!(emoji, "k=<redacted>");
    }

    #[test]
    fn a_secret_is_redacted_percent_encoded() {
        gone("pre s3cr3t%2FV%C3%A4lue%22x post");
        gone("pre s3cr3t%2fV%c3%a4lue%22x post");
        gone("pre %73%33cr3t%2FV%C3%A4lue%22x post");
        let space = |t: &str| redact(t, &["two words".to_string()]);
        assert_eq!(space("q=two+words&r=1"), "q=<redacted>&r=1");
        assert_eq!(space("q=two%20words"), "q=<redacted>");
    }

    #[test]
    fn a_secret_is_redacted_with_a_line_break_inside() {
        gone("pre s3cr3t/V\nälue\"x post");
        gone("pre s3cr3t/Vä\r\nlue\"x post");
        gone(r#"pre s3cr3t\/V\u00e4\nlue\"x post"#);
    }

    #[test]
    fn a_non_ascii_secret_is_redacted_when_echoed_as_latin1_or_mojibake() {
        let mut latin1 = b"pre s3cr3t/V".to_vec();
        latin1.push(0xE4);
        latin1.extend_from_slice(b"lue\"x post");
        gone(&String::from_utf8_lossy(&latin1));
        gone("pre s3cr3t/VÃ¤lue\"x post");
    }

    #[test]
    fn a_secret_is_redacted_in_base64_at_every_alignment() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let secret = "tok-3x/q?>>~é";
        let secrets = [secret.to_string()];
        for prefix in ["", "a", "ab", "user:", "admin:"] {
            let encoded = STANDARD.encode(format!("{prefix}{secret}").as_bytes());
            for text in [
                encoded.clone(),
                URL_SAFE_NO_PAD.encode(format!("{prefix}{secret}").as_bytes()),
                STANDARD.encode(format!("{prefix}{secret} and more after it").as_bytes()),
            ] {
                let got = redact(&format!("Basic {text}"), &secrets);
                assert!(got.contains("<redacted>"), "{prefix:?}: {text} -> {got}");
                // No run of the encoding that depends on the secret alone is left.
                for form in base64_forms(secret.as_bytes()) {
                    assert!(!got.contains(&form), "{prefix:?}: {form} in {got}");
                }
            }
        }
        // At offset 0 the whole encoding goes, padding included.
        assert_eq!(redact(&STANDARD.encode(secret), &secrets), "<redacted>");
    }

    #[test]
    fn short_secrets_are_redacted_only_as_a_whole_value() {
        let short = ["ab".to_string()];
        assert_eq!(redact("ab", &short), "<redacted>");
        assert_eq!(redact("a cab abounds", &short), "a cab abounds");
        let route_secret = Reveal {
            secrets: &short,
            sends_secret: true,
        };
        assert_eq!(route_secret.quoted("nothing secret here", 60), None);
        let other_route = Reveal {
            secrets: &short,
            sends_secret: false,
        };
        assert_eq!(
            other_route.quoted("a cab", 60).as_deref(),
            Some("\"a cab\"")
        );
    }

    #[test]
    fn a_route_that_sends_a_secret_withholds_text_that_holds_any_form_of_it() {
        let secrets = [S.to_string()];
        let reveal = Reveal {
            secrets: &secrets,
            sends_secret: true,
        };
        assert_eq!(reveal.quoted("pre s3cr3t%2FV%C3%A4lue%22x post", 60), None);
        assert_eq!(
            reveal.quoted("unrelated failure text", 60).as_deref(),
            Some("\"unrelated failure text\"")
        );
        let other = Reveal {
            secrets: &secrets,
            sends_secret: false,
        };
        assert_eq!(
            other.quoted(&format!("x {S}"), 60).as_deref(),
            Some("\"x <redacted>\"")
        );
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let secrets = ["s3cr3t-value-123".to_string()];
        for text in ["", "ok", "status: healthy", "s3cr3t-value-12", "Zm9vYmFy"] {
            assert_eq!(redact(text, &secrets), text);
        }
    }
}
