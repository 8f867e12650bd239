//! The probe file as written: serde structs that mirror `probes.yaml` field for field
//! (unknown keys rejected), and the JSON Schema generated from them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::context::TimingKeys;
use super::route_count::{RawRoutes, RawTargets};
use super::scalars::{CertMin, Count, Dur, Size, StatusSpec};
use crate::plan::{Action, Class};

/// A routewatch probe file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "routewatch probe file")]
pub(super) struct RawFile {
    /// User-Agent of every request; default `routewatch/<version>`.
    #[schemars(with = "Option<String>")]
    pub(super) user_agent: Option<Spanned<String>>,
    pub(super) defaults: Option<RawDefaults>,
    /// Requests in flight at once across all targets (default 256; at most half the
    /// open-file limit at run time), on top of each target's `concurrency`.
    #[schemars(with = "Option<Count>")]
    pub(super) max_in_flight: Option<Spanned<Count>>,
    /// The services to probe.
    #[schemars(with = "Vec<RawTarget>")]
    pub(super) targets: Spanned<RawTargets>,
    /// Dead-man's switch (healthchecks.io protocol): `URL/start` before probing, `URL/<exit
    /// code>` after; `${VAR}` allowed. `check --ping` overrides it.
    #[schemars(with = "Option<String>")]
    pub(super) ping: Option<Spanned<String>>,
    /// Where to send notifications of state changes (README "Notifications").
    #[serde(default)]
    pub(super) notify: Vec<RawNotify>,
    /// More files of `targets:` (paths, or globs in the file name such as `conf.d/*.yaml`),
    /// relative to this file; read before the `<name>.d/*.yaml` drop-ins beside it.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) include: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    /// Where to POST; `${VAR}` allowed (never printed).
    #[schemars(with = "String")]
    pub(super) url: Spanned<String>,
    /// json (default: the versioned document) | slack (Slack, Mattermost, Discord's /slack) | ntfy.
    pub(super) format: Option<crate::alerts::notify::Format>,
    /// Events to send; default [unhealthy, resolved, recovered, not_recovered, refused]
    /// (degraded and unknown only when listed).
    pub(super) on: Option<Vec<crate::alerts::notify::Event>>,
    /// Request headers; `${VAR}` is taken from the environment and never printed.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(super) headers: BTreeMap<String, Spanned<String>>,
    /// Send a bad verdict again every this long while it lasts (default: never).
    #[schemars(with = "Option<Dur>")]
    pub(super) reminder: Option<Spanned<Dur>>,
    /// Consecutive unhealthy runs before `unhealthy` is sent (default 1).
    #[schemars(with = "Option<Count>")]
    pub(super) after_runs: Option<Spanned<Count>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    #[schemars(with = "Option<Dur>")]
    pub(super) timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) connect_timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    pub(super) retries: Option<Spanned<Count>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) max_backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    pub(super) concurrency: Option<Spanned<Count>>,
    #[schemars(with = "Option<Size>")]
    pub(super) max_body: Option<Spanned<Size>>,
    /// Redirects (301, 302, 303, 307, 308) to follow, at most (default 0: a 3xx is judged as
    /// it is). Secret headers go to the same origin only.
    #[schemars(with = "Option<Count>")]
    pub(super) follow_redirects: Option<Spanned<Count>>,
    /// Limit on the whole probing phase of a run.
    #[schemars(with = "Option<Dur>")]
    pub(super) run_timeout: Option<Spanned<Dur>>,
    /// Use `HTTP(S)_PROXY` from the environment (default false).
    pub(super) proxy: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    /// `http://host[:port]`, `https://…`, or `unix:/path/to.sock` (HTTP over a Unix socket);
    /// `${VAR}` is taken from the environment (reports show the name, never the value).
    #[schemars(with = "Option<String>")]
    pub(super) base_url: Option<Spanned<String>>,
    /// `host:port`: a plain TCP connect probe instead of HTTP.
    #[schemars(with = "Option<String>")]
    pub(super) tcp: Option<Spanned<String>>,
    /// The systemd service to recover (`name.service`); needed for recovery.
    #[schemars(with = "Option<String>")]
    pub(super) unit: Option<Spanned<String>>,
    /// Request headers for every route; `${VAR}` is taken from the environment and never printed.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(super) headers: BTreeMap<String, Spanned<String>>,
    /// What to do when core routes are hung (needs `unit`).
    #[schemars(with = "Option<RawRecovery>")]
    pub(super) recovery: Option<Box<Spanned<RawRecovery>>>,
    /// The HTTP routes to probe (none for a `tcp` target).
    #[serde(default)]
    #[schemars(with = "Vec<RawRoute>")]
    pub(super) routes: RawRoutes,
    // Per-target overrides of `defaults`.
    #[schemars(with = "Option<Dur>")]
    pub(super) timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) connect_timeout: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    pub(super) retries: Option<Spanned<Count>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) max_backoff: Option<Spanned<Dur>>,
    #[schemars(with = "Option<Count>")]
    pub(super) concurrency: Option<Spanned<Count>>,
    #[schemars(with = "Option<Size>")]
    pub(super) max_body: Option<Spanned<Size>>,
    /// Redirects (301, 302, 303, 307, 308) to follow, at most (default 0: a 3xx is judged as
    /// it is). Secret headers go to the same origin only.
    #[schemars(with = "Option<Count>")]
    pub(super) follow_redirects: Option<Spanned<Count>>,
    pub(super) proxy: Option<bool>,
    pub(super) tls: Option<Box<RawTls>>,
    pub(super) ip: Option<RawIp>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    /// PEM file of extra trusted CA certificates (relative paths are relative to the probe file).
    #[schemars(with = "Option<String>")]
    pub(super) ca_file: Option<Spanned<String>>,
    /// Skip certificate verification (loud in the report; for lab use only).
    #[serde(default)]
    pub(super) insecure: bool,
    /// PEM file of the client certificate (and its chain), for servers that require one.
    #[schemars(with = "Option<String>")]
    pub(super) cert_file: Option<Spanned<String>>,
    /// PEM file of the client certificate's private key (as root: owned by root, mode 0600 or
    /// stricter).
    #[schemars(with = "Option<String>")]
    pub(super) key_file: Option<Spanned<String>>,
}

/// Address family: any (default), v4 or v6.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawIp {
    Any,
    V4,
    V6,
}

// Keys most routes leave out are boxed: a route as read stays small (a fleet file has 20 000
// of them in memory at once while it is read).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    /// Request target, e.g. `/api/health`; `${VAR}` is taken from the environment (reports
    /// show the name, never the value).
    #[schemars(with = "String")]
    pub(super) path: Spanned<String>,
    /// `core` (liveness; default) or `auxiliary` (heavy, optional; never unhealthy).
    #[serde(default = "default_class")]
    pub(super) class: Class,
    /// HTTP method (default GET).
    #[schemars(with = "Option<String>")]
    pub(super) method: Option<Box<Spanned<String>>>,
    /// Request body, e.g. a JSON-RPC health call; `${VAR}` is taken from the environment and
    /// never printed.
    #[schemars(with = "Option<String>")]
    pub(super) body: Option<Box<Spanned<String>>>,
    /// Extra request headers for this route.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(super) headers: BTreeMap<String, Spanned<String>>,
    pub(super) expect: Option<Box<RawExpect>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) timeout: Option<Box<Spanned<Dur>>>,
    #[schemars(with = "Option<Count>")]
    pub(super) retries: Option<Box<Spanned<Count>>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) backoff: Option<Box<Spanned<Dur>>>,
    #[schemars(with = "Option<Dur>")]
    pub(super) max_backoff: Option<Box<Spanned<Dur>>>,
    #[schemars(with = "Option<Size>")]
    pub(super) max_body: Option<Box<Spanned<Size>>>,
    /// Redirects (301, 302, 303, 307, 308) to follow, at most (default 0: a 3xx is judged as
    /// it is). Secret headers go to the same origin only.
    #[schemars(with = "Option<Count>")]
    pub(super) follow_redirects: Option<Box<Spanned<Count>>>,
}

/// `timing_keys()` of a raw struct with the six timing keys: `as_ref` where they are
/// `Option<Spanned<_>>`, `as_deref` where they are boxed.
macro_rules! timing_keys {
    ($raw:ty, $view:ident) => {
        impl $raw {
            pub(super) fn timing_keys(&self) -> TimingKeys<'_> {
                TimingKeys {
                    timeout: self.timeout.$view(),
                    retries: self.retries.$view(),
                    backoff: self.backoff.$view(),
                    max_backoff: self.max_backoff.$view(),
                    max_body: self.max_body.$view(),
                    follow_redirects: self.follow_redirects.$view(),
                }
            }
        }
    };
}

timing_keys!(RawDefaults, as_ref);
timing_keys!(RawTarget, as_ref);
timing_keys!(RawRoute, as_deref);

pub(super) fn default_class() -> Class {
    Class::Core
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    /// Accepted statuses: a code, a range "200-299", or a list; default 200-399.
    pub(super) status: Option<StatusSpec>,
    /// A substring the body must contain.
    pub(super) body_contains: Option<String>,
    /// A regular expression the body must match.
    #[schemars(with = "Option<String>")]
    pub(super) body_regex: Option<Spanned<String>>,
    /// A substring the body must not contain.
    pub(super) body_not_contains: Option<String>,
    /// A regular expression the body must not match.
    #[schemars(with = "Option<String>")]
    pub(super) body_not_regex: Option<Spanned<String>>,
    /// Dotted JSON field path → expected value, or one of `{ exists: true }`,
    /// `{ absent: true }`, `{ gte: 1 }` (also `gt`, `lt`, `lte`, combinable:
    /// `{ gte: 1, lt: 100 }`), `{ regex: "…" }`, `{ max_age: 90s }` (a timestamp, RFC 3339 or
    /// Unix seconds, no older than that).
    #[serde(default)]
    pub(super) json: BTreeMap<String, serde_json::Value>,
    /// Response header name → regular expression its value must match.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(super) header: BTreeMap<String, Spanned<String>>,
    pub(super) max_latency: Option<Dur>,
    /// `https://` only: a server certificate that expires sooner than this (days, or a
    /// duration such as `14d`) is `cert_expiring`: degraded, never unhealthy, never a kill.
    #[schemars(with = "Option<CertMin>")]
    pub(super) cert_min_days: Option<Spanned<CertMin>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecovery {
    /// kill (default) | restart | none.
    pub(super) action: Option<Action>,
    /// Consecutive unhealthy runs before acting (default 1).
    #[schemars(with = "Option<Count>")]
    pub(super) after_failed_runs: Option<Spanned<Count>>,
    /// Outcomes that mean "hung" (default [timeout, empty_reply, reset]).
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) on: Option<Vec<Spanned<String>>>,
    pub(super) startup_grace: Option<Dur>,
    pub(super) cooldown: Option<Dur>,
    #[schemars(with = "Option<Count>")]
    pub(super) max_actions: Option<Spanned<Count>>,
    pub(super) window: Option<Dur>,
    #[schemars(with = "Option<Dur>")]
    pub(super) verify_timeout: Option<Spanned<Dur>>,
    /// Forensics before a kill: send this signal first (through the same pidfd), wait, then
    /// SIGKILL whatever is still there. `action: kill` only.
    #[schemars(with = "Option<RawDump>")]
    pub(super) dump: Option<Spanned<RawDump>>,
    /// The reverse proxy unit the probed address belongs to (e.g. nginx.service in front of
    /// the app): the address must be served by it, and the unit's own listeners are checked.
    #[schemars(with = "Option<String>")]
    pub(super) through: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDump {
    /// SIGQUIT (Go, the JVM, Python's faulthandler print every thread's stack), SIGABRT (a
    /// core for systemd-coredump), SIGUSR1, SIGUSR2, SIGTERM, SIGINT or SIGHUP.
    #[schemars(with = "String")]
    pub(super) signal: Spanned<String>,
    /// How long to wait for the process to leave on its own before SIGKILL (default 5s, at
    /// most 60s).
    #[schemars(with = "Option<Dur>")]
    pub(super) wait: Option<Spanned<Dur>>,
}
