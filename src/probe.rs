//! Probing: the only module that opens sockets to targets. A run's routes share one
//! in-flight budget (`max_in_flight`, at most half the file-descriptor limit), bounded per
//! target by `concurrency`. A failed probe is a [`RouteResult`] with its outcome; `Err` means
//! the check could not run.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;

use crate::outcome::Outcome;
use crate::plan::{Class, Endpoint, IpFamily, Plan, Route, Target, WITHHELD};
use crate::retry::{self, AttemptFacts, Next};

/// What one route came to after its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct RouteResult {
    pub path: String,
    pub url: String,
    pub class: Class,
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub attempts: u32,
    #[serde(rename = "elapsed_ms", serialize_with = "as_millis")]
    pub elapsed: Duration,
    /// Why it failed (or why it is only a warning); `None` when ok.
    pub error: Option<String>,
    /// The run's deadline (`run_timeout`), not the route's own timeout, ended it: it never got
    /// an attempt, or its last attempt had less time than `timeout`. Not evidence of a hang.
    #[serde(skip)]
    pub cut_short: bool,
    /// The certificate that expires first on the chain the server of an `https://` route
    /// presented (leaf and the intermediates that lead from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<crate::certs::CertInfo>,
    /// The redirects followed (`follow_redirects`), in order; the outcome is the last answer's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<crate::redirect::Hop>,
}

pub(crate) fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("target {target:?}: cannot set up the HTTP client: {reason}")]
    Client { target: String, reason: String },
}

/// Probes the routes of a plan. Targets that would build the same HTTP client (same transport,
/// TLS trust, proxy, address family and connect timeout) share one: one TLS configuration and
/// root store, one resolver, one keep-alive pool keyed by host. Pools are empty until used.
pub struct Prober {
    plan: Arc<Plan>,
    targets: Vec<TargetClient>,
    /// Requests in flight across all targets: `max_in_flight`, at most half the open-file limit.
    global: Arc<Semaphore>,
    in_flight: usize,
}

struct TargetClient {
    /// Keep-alive pool, shared with the targets of the same settings (`None` for plain TCP
    /// targets).
    http: Option<reqwest::Client>,
    /// Keeps no idle connection: every request on it opens a new one. For re-sends after a
    /// dead connection and for recovery's re-probes. Built on first use.
    fresh: std::sync::OnceLock<reqwest::Client>,
    limit: Semaphore,
    /// The proxy every request of this target goes through (`proxy: true` and the
    /// environment names one that applies), as shown in errors: no credentials.
    proxy: Option<String>,
}

impl TargetClient {
    fn fresh(&self, user_agent: &str, t: &Target) -> reqwest::Client {
        self.fresh
            .get_or_init(|| {
                build_client(user_agent, t, 0).unwrap_or_else(|_| {
                    // The pooled client was built from the same settings, so this cannot
                    // fail in practice; fall back to it rather than fail the probe.
                    self.http.clone().expect("HTTP targets have a client")
                })
            })
            .clone()
    }
}

/// What makes two targets' HTTP clients differ: targets with equal keys share one client.
#[derive(PartialEq, Eq, Hash)]
struct ClientKey {
    unix_socket: Option<std::path::PathBuf>,
    speaks_tls: bool,
    ca_file: Option<std::path::PathBuf>,
    insecure: bool,
    /// The client certificate (files) a target presents, if any.
    client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    proxy: Option<String>,
    ip: IpFamily,
    connect_timeout: Duration,
}

impl ClientKey {
    fn of(t: &Target, proxy: Option<String>) -> ClientKey {
        ClientKey {
            unix_socket: match &t.endpoint {
                Endpoint::Unix { socket } => Some(socket.clone()),
                _ => None,
            },
            speaks_tls: t.may_use_tls(),
            ca_file: t.tls.ca_file.clone(),
            insecure: t.tls.insecure,
            client_cert: t
                .tls
                .client
                .as_ref()
                .map(|c| (c.cert_file.clone(), c.key_file.clone())),
            proxy,
            ip: t.ip,
            connect_timeout: t.http_connect_timeout(),
        }
    }
}

/// Called as each route finishes (progress bar, log lines): its target, where it is in the
/// plan (target index, route index) and its result.
pub type Observer = Arc<dyn Fn(&Target, (usize, usize), &RouteResult) + Send + Sync>;

impl Prober {
    pub fn new(plan: Arc<Plan>) -> Result<Prober, SetupError> {
        install_crypto_provider();
        let budget = fd_budget();
        let in_flight = in_flight_budget(plan.max_in_flight, budget);
        // Requests to each host (a pool's key: scheme, host and port) at once, at most: what
        // its pool may keep open.
        let mut hosts: std::collections::HashMap<String, usize> = Default::default();
        for t in &plan.targets {
            let host = match &t.endpoint {
                Endpoint::Http { base } => reqwest::Url::parse(base)
                    .map_or_else(|_| base.clone(), |u| u.origin().ascii_serialization()),
                Endpoint::Unix { socket } => socket.display().to_string(),
                Endpoint::Tcp { .. } => continue,
            };
            *hosts.entry(host).or_default() += t.concurrency;
        }
        let idle_cap = idle_per_host(hosts.values().copied(), in_flight, budget);
        let mut shared: std::collections::HashMap<ClientKey, reqwest::Client> = Default::default();
        let targets = plan
            .targets
            .iter()
            .map(|t| {
                let proxy = env_proxy(t, &|k| std::env::var(k).ok());
                let http = match t.endpoint {
                    Endpoint::Tcp { .. } => None,
                    _ => {
                        let key = ClientKey::of(t, proxy.as_ref().map(|(url, _)| url.clone()));
                        Some(match shared.get(&key) {
                            Some(c) => c.clone(),
                            None => {
                                let c = build_client(&plan.user_agent, t, idle_cap)?;
                                shared.insert(key, c.clone());
                                c
                            }
                        })
                    }
                };
                Ok(TargetClient {
                    http,
                    fresh: std::sync::OnceLock::new(),
                    limit: Semaphore::new(t.concurrency),
                    proxy: proxy.map(|(_, shown)| shown),
                })
            })
            .collect::<Result<_, SetupError>>()?;
        Ok(Prober {
            plan,
            targets,
            global: Arc::new(Semaphore::new(in_flight)),
            in_flight,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Probe every route of every target; results are indexed like the plan.
    pub async fn probe_all(
        self: &Arc<Self>,
        deadline: Instant,
        observer: Option<Observer>,
    ) -> Vec<Vec<RouteResult>> {
        // Core routes queue first: with a small `concurrency` or a short `run_timeout`, the
        // liveness answer must not wait behind heavy auxiliary pages. Targets take turns, so
        // one big target cannot keep the others from their first probe.
        let queued = fair_order(&self.plan.targets);
        let mut out: Vec<Vec<Option<RouteResult>>> = self
            .plan
            .targets
            .iter()
            .map(|t| vec![None; t.routes.len()])
            .collect();
        self.probe_picks(&queued, deadline, observer, false, &mut |i, r| {
            let (ti, ri) = queued[i];
            out[ti][ri] = Some(r);
        })
        .await;
        out.into_iter()
            .map(|rs| {
                rs.into_iter()
                    .map(|r| r.expect("every route probed"))
                    .collect()
            })
            .collect()
    }

    /// Probe some routes of one target again (recovery's confirm and verify steps), each
    /// attempt on a new connection: a pooled connection the server closed while recovery
    /// talked to systemd must never read as a hang.
    pub async fn probe_routes(
        self: &Arc<Self>,
        target: usize,
        routes: &[usize],
        deadline: Instant,
    ) -> Vec<RouteResult> {
        let picks: Vec<(usize, usize)> = routes.iter().map(|&r| (target, r)).collect();
        let mut slots: Vec<Option<RouteResult>> = vec![None; picks.len()];
        self.probe_picks(&picks, deadline, None, true, &mut |i, r| {
            slots[i] = Some(r);
        })
        .await;
        slots
            .into_iter()
            .map(|r| r.expect("every started probe reports"))
            .collect()
    }

    /// The one place where probes run concurrently, in the order given: each attempt holds a
    /// permit of its target and one of the run's budget (`max_in_flight`). Routes are started
    /// only as the budget can take them (twice the budget: a route sleeping out a backoff or
    /// waiting for its busy target holds no permit), so a run's memory follows what is in
    /// flight, not the size of the probe file. Each result goes to `done` with its index in
    /// `picks` as it comes.
    async fn probe_picks(
        self: &Arc<Self>,
        picks: &[(usize, usize)],
        deadline: Instant,
        observer: Option<Observer>,
        fresh: bool,
        done: &mut dyn FnMut(usize, RouteResult),
    ) {
        use futures_util::StreamExt as _;
        let observer = observer.as_ref();
        let mut running = futures_util::stream::iter(picks.iter().enumerate())
            .map(|(i, &(ti, ri))| async move {
                let r = self.probe_route(ti, ri, deadline, fresh).await;
                if let Some(obs) = observer {
                    obs(&self.plan.targets[ti], (ti, ri), &r);
                }
                (i, r)
            })
            .buffer_unordered(self.in_flight.saturating_mul(2));
        while let Some((i, r)) = running.next().await {
            done(i, r);
        }
    }

    async fn probe_route(
        &self,
        ti: usize,
        ri: usize,
        deadline: Instant,
        fresh: bool,
    ) -> RouteResult {
        let target = &self.plan.targets[ti];
        let route = &target.routes[ri];
        let client = &self.targets[ti];
        let start = Instant::now();
        let mut attempts = 0u32;
        let mut last: Option<Attempt> = None;
        // The worst attempt that was not a 429: a route is `rate_limited` only when every
        // attempt got 429, otherwise it ends as this one ("503, 503, then 429" is a 503).
        let mut worst_other: Option<(Attempt, u32)> = None;
        // The last attempt that had its full time: a retry the run's deadline cut short does
        // not undo what it showed.
        let mut last_full: Option<Attempt> = None;
        // Time of our own diagnostics, left out of the route's reported time.
        let diagnosing = std::cell::Cell::new(Duration::ZERO);
        let result = |a: Attempt,
                      attempts: u32,
                      worst_other: Option<(Attempt, u32)>,
                      last_full: Option<Attempt>| {
            let a = match last_full {
                Some(mut full) if a.cut_short => {
                    full.error = Some(format!(
                        "{}; the retry after it was cut short by run_timeout {}",
                        full.error.unwrap_or_else(|| full.outcome.to_string()),
                        fmt_duration(self.plan.run_timeout)
                    ));
                    full
                }
                _ => a,
            };
            let a = match worst_other {
                Some((mut w, n)) if a.outcome == Outcome::RateLimited => {
                    w.error = Some(format!(
                        "{} (attempt {n} of {attempts}; the others got 429)",
                        w.error.unwrap_or_else(|| w.outcome.to_string())
                    ));
                    w
                }
                _ => a,
            };
            RouteResult {
                path: route.path.clone(),
                url: route.url.clone(),
                class: route.class,
                outcome: a.outcome,
                status_code: a.status,
                attempts,
                elapsed: start.elapsed().saturating_sub(diagnosing.get()),
                // Anything the server echoed back of a secret never leaves.
                error: a.error.map(|e| self.plan.redact(&e)),
                cut_short: a.cut_short,
                tls_cert: a.cert,
                // A Location may echo a secret of the route's URL back.
                redirects: a
                    .redirects
                    .into_iter()
                    .map(|h| crate::redirect::Hop {
                        location: self.plan.redact(&h.location),
                        ..h
                    })
                    .collect(),
            }
        };
        loop {
            let permits = if Instant::now() < deadline {
                let target_permit = client
                    .limit
                    .acquire()
                    .await
                    .expect("semaphore never closed");
                let global_permit = self.global.acquire().await.expect("semaphore never closed");
                Some((target_permit, global_permit))
            } else {
                None
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if permits.is_none() || remaining.is_zero() {
                // Out of run time while queued: keep what the last attempt said, or say that
                // the route was never probed.
                let a = match last {
                    Some(mut a) => {
                        a.error = Some(format!(
                            "{}; no time left for another attempt (run_timeout {})",
                            a.error.unwrap_or_else(|| a.outcome.to_string()),
                            fmt_duration(self.plan.run_timeout)
                        ));
                        a
                    }
                    None => {
                        let mut a = Attempt::fail(
                            Outcome::Timeout,
                            format!(
                                "not probed: the run's deadline (run_timeout {}) passed while it waited for a connection slot",
                                fmt_duration(self.plan.run_timeout)
                            ),
                        );
                        a.cut_short = true;
                        a
                    }
                };
                return result(a, attempts, worst_other, last_full);
            }
            attempts += 1;
            // The attempt starts now (after waiting for its permits): the backoff counts from
            // here, not from the queueing.
            let started = Instant::now();
            let budget = route.timing.timeout.min(remaining);
            let mut a = match &client.http {
                Some(http) => {
                    let fresh_client = || client.fresh(&self.plan.user_agent, target);
                    let (first, resend) = if fresh {
                        (fresh_client(), None)
                    } else {
                        (
                            http.clone(),
                            Some(&fresh_client as &(dyn Fn() -> reqwest::Client + Sync)),
                        )
                    };
                    let proxy = client.proxy.as_deref();
                    let a = attempt_http(
                        &first,
                        resend,
                        &self.plan.user_agent,
                        target,
                        route,
                        budget,
                        &self.plan.secrets,
                    )
                    .await;
                    through_proxy(a, proxy)
                }
                None => attempt_tcp(target, route, budget).await,
            };
            if !fresh && client.http.is_some() {
                // hyper hands a finished keep-alive connection back to the pool from a task of
                // its own, after its connection task has seen the response end: give both a
                // few turns of this one-thread runtime before the slot goes to the next
                // request, which would otherwise find the pool empty and open one more
                // connection (hyper races a connect against the pool). Measured with 400
                // targets on one host at `max_in_flight: 128`: one turn let the server see up
                // to 164 connections at once, two 129, four never more than 128 (45 runs,
                // 10 of them on a loaded machine). Turns are not time: a busy machine does
                // not change how many are needed.
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            }
            drop(permits);
            diagnosing.set(diagnosing.get() + a.diagnosing);
            a.cut_short = budget < route.timing.timeout
                && matches!(a.outcome, Outcome::Timeout | Outcome::ConnectTimeout);
            if a.cut_short {
                a.error = a.error.map(|e| {
                    format!(
                        "{e} (cut short by run_timeout {})",
                        fmt_duration(self.plan.run_timeout)
                    )
                });
            }
            if a.local_exhaustion && !deadline.saturating_duration_since(Instant::now()).is_zero() {
                attempts -= 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let facts = AttemptFacts {
                outcome: a.outcome,
                status: a.status,
                retry_after: a.retry_after,
                elapsed: started.elapsed().saturating_sub(a.diagnosing),
            };
            if !a.cut_short {
                last_full = Some(a.clone());
            }
            if a.outcome != Outcome::RateLimited
                && !a.cut_short
                && worst_other
                    .as_ref()
                    .is_none_or(|(w, _)| !retry::worse(w.outcome, a.outcome))
            {
                worst_other = Some((a.clone(), attempts));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match retry::next(
                &facts,
                attempts,
                route.timing.retries,
                route.timing.backoff,
                route.timing.max_backoff,
                remaining,
                fastrand::f64(),
            ) {
                Next::RetryAfter(delay) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    last = Some(a);
                }
                Next::Stop => return result(a, attempts, worst_other, last_full),
            }
        }
    }
}

/// rustls needs one process-wide crypto provider; installing twice is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The soft `RLIMIT_NOFILE`.
fn fd_limit() -> usize {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(1 << 20, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// How many connections may be open at once: the open-file limit minus a reserve for the
/// process's own files, sockets to D-Bus, stdio.
fn fd_budget() -> usize {
    fd_limit().saturating_sub(64).clamp(8, 1 << 16)
}

/// Requests in flight at once across the run: `max_in_flight`, never above half the
/// open-file limit (the other half is for idle pooled sockets and the process's own files).
/// Pure.
fn in_flight_budget(max_in_flight: usize, fd_budget: usize) -> usize {
    max_in_flight.min(fd_budget / 2).max(1)
}

/// Idle keep-alive connections each host's pool may keep. Idle sockets hold descriptors and
/// count as connections to the server, so they must fit `max_in_flight` with the requests in
/// flight: when every host's own concurrency (`demand`, requests to it at once) fits the
/// budget together, each keeps what it can use (never more than half the descriptor budget
/// across the hosts); when they do not (a fleet of targets), none is kept and each request
/// has its own connection, so the connections open at once are the requests in flight. Pure.
pub fn idle_per_host(
    demand: impl Iterator<Item = usize>,
    in_flight: usize,
    fd_budget: usize,
) -> usize {
    let demand: Vec<usize> = demand.map(|d| d.min(in_flight)).collect();
    if demand.iter().sum::<usize>() > in_flight {
        return 0;
    }
    let most = demand.iter().copied().max().unwrap_or(0);
    most.min(fd_budget / 2 / demand.len().max(1))
}

/// The order routes are started in: every target's core routes before any auxiliary route,
/// and within a class the targets take turns (each target's first route, then each one's
/// second, …), so a target with thousands of routes cannot hold back the first probe of
/// another. Pure.
pub fn fair_order(targets: &[Target]) -> Vec<(usize, usize)> {
    let mut order = Vec::with_capacity(targets.iter().map(|t| t.routes.len()).sum());
    for class in [Class::Core, Class::Auxiliary] {
        // Each target's routes of this class, as iterators; a round takes one from each
        // target that has any left, and drops the targets that are done.
        let mut left: Vec<(usize, _)> = targets
            .iter()
            .enumerate()
            .map(|(ti, t)| {
                let routes = t.routes.iter().enumerate();
                (
                    ti,
                    routes
                        .filter(move |(_, r)| r.class == class)
                        .map(|(ri, _)| ri),
                )
            })
            .collect();
        while !left.is_empty() {
            left.retain_mut(|(ti, routes)| match routes.next() {
                Some(ri) => {
                    order.push((*ti, ri));
                    true
                }
                None => false,
            });
        }
    }
    order
}

fn build_client(
    user_agent: &str,
    t: &Target,
    idle_cap: usize,
) -> Result<reqwest::Client, SetupError> {
    let err = |reason: String| SetupError::Client {
        target: t.name.clone(),
        reason,
    };
    let mut b = reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(t.http_connect_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .http1_only()
        // hyper's default of 100 response headers would call a healthy server `protocol_error`;
        // the head stays bounded by hyper's buffer limit.
        .http1_max_headers(1000)
        // Heads curl reads, from servers that are sloppy but answering: `Name : value`, a
        // folded (obsolete multi-line) value, a header line that is not valid (skipped).
        .http1_allow_spaces_after_header_name_in_responses(true)
        .http1_allow_obsolete_multiline_headers_in_responses(true)
        .http1_ignore_invalid_headers_in_responses(true)
        .tcp_nodelay(true)
        // Shared by the targets of the same settings: one host may see the in-flight budget.
        .pool_max_idle_per_host(idle_cap)
        .pool_idle_timeout(Duration::from_secs(30));
    // The proxy is chosen here, once, from the environment (never by the client on its own),
    // so that what errors name is what was used.
    b = b.no_proxy();
    if let Some((url, shown)) = env_proxy(t, &|k| std::env::var(k).ok()) {
        let proxy = reqwest::Proxy::all(url.as_str())
            .map_err(|e| err(format!("proxy {shown}: {}", error_chain(&e))))?;
        b = b.proxy(proxy);
    }
    if let Endpoint::Unix { socket } = &t.endpoint {
        b = b.unix_socket(socket.clone());
    }
    if t.ip != IpFamily::Any {
        b = b.dns_resolver(Arc::new(FamilyResolver(t.ip)));
    }
    if !t.may_use_tls() {
        // Plain HTTP (or a Unix socket), no proxy and no redirects: TLS is never used, so do not load and
        // parse the system's root store for it.
        b = b.tls_certs_only(Vec::new());
    }
    if let Some(ca) = &t.tls.ca_file {
        let pem = crate::trust::read_pem(ca)
            .map_err(|e| err(format!("cannot read tls.ca_file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            err(format!(
                "tls.ca_file {} is not PEM certificates: {e}",
                ca.display()
            ))
        })?;
        b = b.tls_certs_merge(certs);
    }
    if let Some(client) = &t.tls.client {
        let read = |p: &std::path::Path| {
            crate::trust::read_pem(p).map_err(|e| err(format!("cannot read {}: {e}", p.display())))
        };
        let mut pem = read(&client.cert_file)?;
        pem.push(b'\n');
        pem.extend_from_slice(&read(&client.key_file)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            err(format!(
                "client certificate {} with key {}: {}",
                client.cert_file.display(),
                client.key_file.display(),
                error_chain(&e)
            ))
        })?;
        b = b.identity(identity);
    }
    if t.tls.insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    if t.is_https() {
        // The server certificate comes with each response, for its expiry.
        b = b.tls_info(true);
    }
    b.build().map_err(|e| err(error_chain(&e)))
}

/// The proxy a target's requests go through: with `proxy: true`, the environment's
/// `http_proxy`/`HTTP_PROXY` (`https_proxy`/`HTTPS_PROXY` for an `https` target), else
/// `all_proxy`/`ALL_PROXY`, unless `no_proxy`/`NO_PROXY` names the target's host (`*`, a
/// host, a domain and its subdomains, an IP address or a CIDR block). Returns the URL to use
/// and the same without credentials, for messages. `env` reads a variable. Pure.
pub fn env_proxy(t: &Target, env: &dyn Fn(&str) -> Option<String>) -> Option<(String, String)> {
    let Endpoint::Http { base } = &t.endpoint else {
        return None;
    };
    if !t.use_env_proxy {
        return None;
    }
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
    };
    let target = reqwest::Url::parse(base).ok()?;
    let host = target
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if let Some(list) = var(&["no_proxy", "NO_PROXY"])
        && no_proxy_matches(&list, &host)
    {
        return None;
    }
    let raw = if t.is_https() {
        var(&["https_proxy", "HTTPS_PROXY"])
    } else {
        var(&["http_proxy", "HTTP_PROXY"])
    }
    .or_else(|| var(&["all_proxy", "ALL_PROXY"]))?;
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let shown = match reqwest::Url::parse(&with_scheme) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(unparsable proxy URL)".to_string(),
    };
    Some((with_scheme, shown))
}

/// Whether a `no_proxy` list names `host` (lower case, IPv6 without brackets). Pure.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            let (Some(ip), Ok(net), Ok(bits)) =
                (ip, net.parse::<std::net::IpAddr>(), bits.parse::<u32>())
            else {
                return false;
            };
            return match (ip, net) {
                (std::net::IpAddr::V4(a), std::net::IpAddr::V4(n)) if bits <= 32 => {
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    u32::from(a) & mask == u32::from(n) & mask
                }
                (std::net::IpAddr::V6(a), std::net::IpAddr::V6(n)) if bits <= 128 => {
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    u128::from(a) & mask == u128::from(n) & mask
                }
                _ => false,
            };
        }
        let entry = entry.trim_start_matches("*.").trim_start_matches('.');
        let entry = entry.trim_start_matches('[').trim_end_matches(']');
        match (ip, entry.parse::<std::net::IpAddr>()) {
            (Some(ip), Ok(e)) => ip == e,
            (_, Ok(_)) | (Some(_), _) => false,
            (None, Err(_)) => host == entry || host.ends_with(&format!(".{entry}")),
        }
    })
}

/// Resolves names to one address family only (`ip: v4 | v6`).
struct FamilyResolver(IpFamily);

impl reqwest::dns::Resolve for FamilyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let family = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| family.admits(a))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} has no {} address",
                    if family == IpFamily::V4 {
                        "IPv4"
                    } else {
                        "IPv6"
                    }
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One attempt's result.
#[derive(Debug, Clone)]
struct Attempt {
    outcome: Outcome,
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
    /// We ran out of file descriptors ourselves: says nothing about the target, so the
    /// attempt is made again (not counted) once a connection has been freed.
    local_exhaustion: bool,
    /// See [`RouteResult::cut_short`].
    cut_short: bool,
    /// The server certificate, when the answer came over TLS.
    cert: Option<crate::certs::CertInfo>,
    /// The redirects followed before the answer judged.
    redirects: Vec<crate::redirect::Hop>,
    /// The server's leaf certificate (DER), to find its chain after the attempt.
    leaf: Option<Vec<u8>>,
    /// Time spent after the answer on a diagnostic of our own (the certificate chain's extra
    /// handshake): not the server's latency, so not in the route's reported time.
    diagnosing: Duration,
}

impl Attempt {
    fn fail(outcome: Outcome, error: String) -> Attempt {
        Attempt {
            outcome,
            status: None,
            retry_after: None,
            error: Some(error),
            local_exhaustion: false,
            cut_short: false,
            cert: None,
            redirects: Vec::new(),
            leaf: None,
            diagnosing: Duration::ZERO,
        }
    }

    fn ok(status: Option<u16>) -> Attempt {
        Attempt {
            outcome: Outcome::Ok,
            status,
            retry_after: None,
            error: None,
            local_exhaustion: false,
            cut_short: false,
            cert: None,
            redirects: Vec::new(),
            leaf: None,
            diagnosing: Duration::ZERO,
        }
    }
}

async fn attempt_tcp(target: &Target, route: &Route, budget: Duration) -> Attempt {
    let Endpoint::Tcp { addr } = &target.endpoint else {
        unreachable!("tcp attempt on a tcp target")
    };
    let connect_budget = budget.min(target.connect_timeout);
    match tokio::time::timeout(
        connect_budget,
        tokio::net::TcpStream::connect(addr.as_str()),
    )
    .await
    {
        Err(_) => Attempt::fail(
            Outcome::ConnectTimeout,
            format!("no connection to {} within {connect_budget:?}", route.path),
        ),
        Ok(Ok(_)) => Attempt::ok(None),
        Ok(Err(e)) => {
            let outcome = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
                std::io::ErrorKind::TimedOut => Outcome::ConnectTimeout,
                _ if e.to_string().contains("lookup")
                    || e.to_string().contains("resolve")
                    || e.to_string().contains("Name or service") =>
                {
                    Outcome::Dns
                }
                _ => Outcome::Refused,
            };
            let mut a = Attempt::fail(outcome, e.to_string());
            a.local_exhaustion = crate::out_of_fds(&e);
            a
        }
    }
}

fn request_url(route: &Route) -> String {
    route.request.clone()
}

/// The request for `route` at `url` (the route's own, or a redirect's) with `method`: its
/// headers (those that go to this origin), and its body unless a redirect dropped it.
fn request_to(
    c: &reqwest::Client,
    route: &Route,
    url: Option<&reqwest::Url>,
    method: &reqwest::Method,
    keep_body: bool,
    at_home: bool,
) -> reqwest::RequestBuilder {
    let mut req = match url {
        Some(u) => c.request(method.clone(), u.clone()),
        None => c.request(method.clone(), request_url(route)),
    };
    // The body is judged as sent: ask for it unencoded (this client decodes nothing), unless
    // the route asks for an encoding itself.
    if !route
        .headers
        .iter()
        .any(|h| h.name == reqwest::header::ACCEPT_ENCODING)
    {
        req = req.header(reqwest::header::ACCEPT_ENCODING, "identity");
    }
    for h in &route.headers {
        let dropped_with_body = !keep_body && h.name == reqwest::header::CONTENT_TYPE;
        if crate::redirect::header_goes(h, at_home) && !dropped_with_body {
            req = req.header(h.name.clone(), h.value.clone());
        }
    }
    if keep_body && let Some(body) = &route.body {
        req = req.body(body.clone());
    }
    req
}

/// Send `request` once more on a new plain connection whose reads wait for the request (see
/// [`crate::early_answer`]), for a server that answered before it was asked. Its head was
/// already sent, so it gets as long as a greeting does in [`speaks_first`] (`connect_timeout`,
/// within what is `left` of the attempt); the body is judged under the attempt's deadline, as
/// any body. `None` if it fails or does not come: the first failure then stands (a server that
/// sent a few bytes and stalls stays `protocol_error`, never a hung outcome).
async fn ask_early(
    target: &Target,
    request: reqwest::RequestBuilder,
    user_agent: &str,
    left: Duration,
) -> Option<reqwest::Response> {
    let request = request.build().ok()?;
    let ask = async {
        let stream = raw_connect(target).await?;
        crate::early_answer::ask(stream, request, user_agent)
            .await
            .ok()
    };
    tokio::time::timeout(target.connect_timeout.min(left), ask)
        .await
        .ok()
        .flatten()
}

/// How the one re-send of a request that died on its connection ended (see `attempt_http`).
enum Resent {
    Answered(reqwest::Response),
    /// The server began an answer (its first bytes) and closed or reset the connection before
    /// its head was complete.
    CutHead(String),
    /// Nothing came: the first failure stands.
    Nothing,
    /// No new connection to its address: ask as before, for the failure to say why.
    NoConnection,
}

/// Send the request once more on a new connection of our own that records what it reads, to
/// the target's own address: hyper reports a close (or a reset) in the middle of a head as it
/// reports one before any byte, and only the bytes tell a server that began its answer from
/// one that never did.
async fn resend_counted(
    target: &Target,
    request: reqwest::RequestBuilder,
    user_agent: &str,
) -> Resent {
    let Ok(request) = request.build() else {
        return Resent::Nothing;
    };
    let seen = Arc::new(std::sync::Mutex::new(crate::early_answer::Seen::default()));
    let Some(stream) = raw_connect(target).await else {
        return Resent::NoConnection;
    };
    let stream = crate::early_answer::Recorded::new(stream, seen.clone());
    match crate::early_answer::ask(stream, request, user_agent).await {
        Ok(r) => Resent::Answered(r),
        Err(_) => match seen.lock() {
            Ok(seen) if seen.count > 0 => {
                Resent::CutHead(String::from_utf8_lossy(&seen.first).into_owned())
            }
            _ => Resent::Nothing,
        },
    }
}

async fn attempt_http(
    http: &reqwest::Client,
    resend_on: Option<&(dyn Fn() -> reqwest::Client + Sync)>,
    user_agent: &str,
    target: &Target,
    route: &Route,
    budget: Duration,
    secrets: &[String],
) -> Attempt {
    let started = Instant::now();
    let unix = matches!(target.endpoint, Endpoint::Unix { .. });
    let first = reqwest::Url::parse(&request_url(route)).ok();
    // Where the redirect chain stands, also read when the deadline ends a hop.
    let chain = std::sync::Mutex::new(first.clone().map(|u| {
        crate::redirect::Chain::new(u, route.method.clone(), route.timing.follow_redirects, unix)
    }));
    let run = async {
        let mut url = first.clone();
        let mut method = route.method.clone();
        let mut keep_body = true;
        let mut at_home = true;
        loop {
            let build = |c: &reqwest::Client| {
                request_to(c, route, url.as_ref(), &method, keep_body, at_home)
            };
            let resp = match build(http).send().await {
                // The request died on its connection before a byte of answer: never written
                // (a connection closed right after accept), or written on a pooled keep-alive
                // connection the server had just closed. Send it once more, at once, on a new
                // connection, as curl and browsers do; a server that really drops connections
                // fails the same way again. Only idempotent requests are re-sent once written.
                Err(e)
                    if resend_on.is_some()
                        && (is_unsent(&e) || method.is_idempotent())
                        && matches!(
                            classify_for(target, &e).0,
                            Outcome::Reset | Outcome::EmptyReply
                        ) =>
                {
                    if url == first && !target.speaks_tls() && !target.use_env_proxy {
                        // On a connection of our own that counts what it reads: a server that
                        // began its head before it cut the connection is alive and answering
                        // (a broken answer, `protocol_error`), not the hung signature.
                        match resend_counted(target, build(http), user_agent).await {
                            Resent::Answered(r) => Ok(r),
                            Resent::CutHead(start) => {
                                let how = match classify_for(target, &e).0 {
                                    Outcome::Reset => "reset",
                                    _ => "closed",
                                };
                                let shown = shown(&start, 40, secrets);
                                let a = Attempt::fail(
                                    Outcome::ProtocolError,
                                    if start.starts_with("HTTP/") {
                                        format!(
                                            "the server began an answer ({shown}) and {how} the connection before its head was complete"
                                        )
                                    } else {
                                        format!(
                                            "the server sent something that is not HTTP ({shown}) and {how} the connection"
                                        )
                                    },
                                );
                                return Err((a, false));
                            }
                            Resent::Nothing => Err(e),
                            Resent::NoConnection => {
                                build(&resend_on.expect("checked")()).send().await
                            }
                        }
                    } else {
                        build(&resend_on.expect("checked")()).send().await
                    }
                }
                other => other,
            };
            let resp = match resp {
                // Bytes came before the request was written: the server answers on accept.
                // Ask it once more as curl does, reading its answer after the request.
                Err(e) if url == first && answered_unasked(&e) && !target.speaks_tls() => {
                    let left = budget.saturating_sub(started.elapsed());
                    match ask_early(target, build(http), user_agent, left).await {
                        Some(r) => Ok(r),
                        None => Err(e),
                    }
                }
                other => other,
            };
            let r = match resp {
                Ok(r) => r,
                Err(e) => {
                    let (outcome, error) = classify_for(target, &e);
                    let (outcome, error) = client_cert_required(target, outcome, error).await;
                    // Where it failed: the route, or the hop of a redirect chain it had reached
                    // (shown as the report shows URLs: no value from the environment).
                    let at = match &url {
                        Some(u) if Some(u) != first.as_ref() => {
                            crate::plan::redact(u.as_str(), secrets)
                        }
                        _ => route.url.clone(),
                    };
                    let error = in_words(target, &at, outcome, error);
                    let mut a = Attempt::fail(outcome, error);
                    a.local_exhaustion = is_fd_exhaustion(&e);
                    let guard = chain.lock().expect("not poisoned");
                    if let Some(c) = guard.as_ref().filter(|c| !c.hops.is_empty()) {
                        a = after_hops(a, c);
                    }
                    return Err((a, is_unsent(&e)));
                }
            };
            let status = r.status().as_u16();
            let step = {
                let mut guard = chain.lock().expect("not poisoned");
                match guard.as_mut() {
                    Some(c) => c.step(
                        status,
                        r.headers()
                            .get(reqwest::header::LOCATION)
                            .map(|v| v.as_bytes()),
                    ),
                    None => crate::redirect::Step::Judge,
                }
            };
            match step {
                crate::redirect::Step::Judge => return Ok(r),
                crate::redirect::Step::Refuse(why) => {
                    let mut a = Attempt::fail(Outcome::HttpError, why);
                    a.status = Some(status);
                    return Err((a, false));
                }
                crate::redirect::Step::Follow(next) => {
                    // A body that holds a `${VAR}` value never leaves the route's origin
                    // either: a 307/308 elsewhere would carry it, so the chain stops there.
                    if !next.same_origin
                        && keep_body
                        && next.keep_body
                        && route.body.is_some()
                        && route.secret_request
                    {
                        let mut a = Attempt::fail(
                            Outcome::HttpError,
                            format!(
                                "redirect {status} to another origin, {}, not followed: it would carry the request body, which holds a ${{VAR}} value",
                                next.url.origin().ascii_serialization()
                            ),
                        );
                        a.status = Some(status);
                        return Err((a, false));
                    }
                    // The redirect's own body is not wanted; dropping it closes that
                    // connection rather than reading an unbounded body.
                    drop(r);
                    url = Some(next.url);
                    method = next.method;
                    keep_body = keep_body && next.keep_body;
                    at_home = next.same_origin;
                }
            }
        }
    };
    // One deadline for the whole attempt: the head under it here, the body under the same
    // deadline in `judge_response`, which keeps the status of a head that arrived.
    let deadline = tokio::time::Instant::from_std(started) + budget;
    let send = tokio::time::timeout_at(deadline, run);
    tokio::pin!(send);
    let head = if target.is_https() && !target.use_env_proxy && target.connect_timeout < budget {
        // The client's connect phase is TCP and the TLS handshake together, bounded by the
        // route timeout. `connect_timeout` must still bound TCP alone, as for `http://`: when
        // no head has come after half of it, see whether the port takes a connection at all
        // by the end of it. A port that does not is `connect_timeout` then, not after the
        // whole attempt; one that does leaves the request its full time (a slow handshake
        // is not a dead port). A fast answer never costs the extra connection.
        let tcp_deadline = tokio::time::Instant::from_std(started) + target.connect_timeout;
        tokio::select! {
            done = &mut send => done,
            _ = tokio::time::sleep(target.connect_timeout / 2) => {
                tokio::select! {
                    done = &mut send => done,
                    up = tokio::time::timeout_at(tcp_deadline, raw_connect(target)) => {
                        if up.is_err() {
                            return Attempt::fail(
                                Outcome::ConnectTimeout,
                                format!(
                                    "no TCP connection within connect_timeout {}",
                                    fmt_duration(target.connect_timeout)
                                ),
                            );
                        }
                        send.await
                    }
                }
            }
        }
    } else {
        send.await
    };
    // The failures of the last hop of a chain (the deadline during a hop, a body judged) name
    // the chain; those inside the chain already do.
    let hops = || {
        chain
            .lock()
            .expect("not poisoned")
            .clone()
            .filter(|c| !c.hops.is_empty())
    };
    let (mut a, unsent) = match head {
        Ok(Ok(resp)) => {
            let a = judge_response(resp, route, started, deadline, budget, secrets).await;
            match hops() {
                Some(c) if !a.outcome.is_pass() => (after_hops(a, &c), false),
                _ => (a, false),
            }
        }
        Ok(Err(failed)) => failed,
        Err(_) => {
            let a = Attempt::fail(
                Outcome::Timeout,
                format!("no complete response within {}", fmt_duration(budget)),
            );
            match hops() {
                Some(c) => (after_hops(a, &c), false),
                None => (a, false),
            }
        }
    };
    if let Some(c) = hops() {
        // A chain that ended on another origin ended on another server's certificate: it is
        // not the target's, and a redirect must not make the target `cert_expiring`.
        if !c.at_home() {
            a.leaf = None;
            a.cert = None;
        }
        a.redirects = c.hops;
    }
    if let Some(der) = a.leaf.take() {
        // Outside the attempt's deadline: the body has been judged; only the certificate's
        // expiry is left to judge, on the whole chain.
        let diagnosis = Instant::now();
        if let Some(chain) = chain_cert(target, der).await {
            a.cert = Some(chain);
        }
        a.diagnosing += diagnosis.elapsed();
        a = cert_expiry(a, &route.expect);
    }
    if unsent && a.outcome == Outcome::EmptyReply && !target.speaks_tls() {
        // hyper drops a request, without saying why, when the connection dies before it is
        // sent; a server that speaks first (SSH, SMTP, a database) kills it that way too.
        // Listen once: a server that talks is not hung. An HTTP answer sent on accept is read
        // after a request, as curl reads it; anything else (an SSH banner), or an answer that
        // does not come again, is a protocol error.
        if let Some(greeting) = speaks_first(target, budget.saturating_sub(started.elapsed())).await
        {
            let http_answer = greeting.starts_with("HTTP/");
            if http_answer && hops().is_none() {
                // An answer on accept: read it after a request, as curl does (above, hyper
                // saw its bytes before the request; here the connection closed first).
                let request = request_to(http, route, first.as_ref(), &route.method, true, true);
                let left = budget.saturating_sub(started.elapsed());
                if let Some(resp) = ask_early(target, request, user_agent, left).await {
                    return judge_response(resp, route, started, deadline, budget, secrets).await;
                }
            }
            let what = if http_answer {
                "an HTTP answer"
            } else {
                "something that is not HTTP"
            };
            return Attempt::fail(
                Outcome::ProtocolError,
                format!(
                    "the server sends {what} before any request: {}",
                    shown(&greeting, 40, secrets)
                ),
            );
        }
    }
    if a.outcome == Outcome::ConnectTimeout && target.speaks_tls() && !target.use_env_proxy {
        // reqwest's connect phase includes the TLS handshake. If TCP connects, the stall was
        // in the handshake: connected, no answer, the hung signature of a server doing TLS
        // in-process. If not, the port is dead. Outside the attempt's budget; bounded by
        // connect_timeout and 1 s.
        if tcp_connects(target, target.connect_timeout.min(Duration::from_secs(1))).await {
            return Attempt::fail(
                Outcome::Timeout,
                format!(
                    "TCP connected, but the TLS handshake did not finish within {}",
                    fmt_duration(target.http_connect_timeout().min(budget))
                ),
            );
        }
    }
    a
}

/// An attempt that followed redirects and failed after them. On the route's own origin the
/// failure is the target's, as without redirects (a hop that hangs is hung), and the error
/// names the chain. On another origin the target itself answered (with the redirect): a
/// failure there is never evidence that the target hangs, so a transport failure is
/// `http_error`, keeping the status of the redirect that led there. Pure.
fn after_hops(mut a: Attempt, chain: &crate::redirect::Chain) -> Attempt {
    let detail = a.error.take().unwrap_or_else(|| a.outcome.to_string());
    let led = chain.hops.last().map_or(0, |h| h.status);
    let transport = matches!(
        a.outcome,
        Outcome::Timeout
            | Outcome::ConnectTimeout
            | Outcome::Refused
            | Outcome::Dns
            | Outcome::Reset
            | Outcome::EmptyReply
            | Outcome::ProtocolError
            | Outcome::Tls
    );
    if !chain.at_home() && transport {
        a.error = Some(format!(
            "redirected to another origin, {}, which failed: {detail}; the target itself answered {led}, so this is not evidence of a hang (redirects: {})",
            chain.current,
            chain.text(None)
        ));
        a.outcome = Outcome::HttpError;
        a.status = Some(led);
        a.retry_after = None;
    } else {
        a.error = Some(format!("{detail} (after redirects: {})", chain.text(None)));
    }
    a
}

/// A failure before any response, in plain words ahead of the library's chain. Pure.
fn in_words(target: &Target, url: &str, outcome: Outcome, detail: String) -> String {
    let socket = match &target.endpoint {
        Endpoint::Unix { socket } => Some(socket.as_path()),
        _ => None,
    };
    let place = crate::words::place(url, socket);
    match crate::words::explain(outcome, &detail, &place, socket.is_some()) {
        Some(words) => format!("{words} ({detail})"),
        None => detail,
    }
}

/// An attempt through a proxy that failed before any response head: the proxy and the target
/// behind it cannot be told apart, so it is never evidence of a hung target. It is named in
/// the error and read as the connection never made: `refused` when the proxy refused (or
/// closed or reset) it, `connect_timeout` when it did not connect or answer in time. A head
/// that arrived (even the proxy's own 502) is judged as usual. Pure.
fn through_proxy(mut a: Attempt, proxy: Option<&str>) -> Attempt {
    let Some(proxy) = proxy else { return a };
    if a.status.is_some() || a.local_exhaustion {
        return a;
    }
    let detail = a.error.take().unwrap_or_default();
    let (outcome, what) = match a.outcome {
        Outcome::Refused => (Outcome::Refused, "refused the connection"),
        Outcome::EmptyReply => (
            Outcome::Refused,
            "closed the connection before any response",
        ),
        Outcome::Reset => (Outcome::Refused, "reset the connection before any response"),
        Outcome::ConnectTimeout => (Outcome::ConnectTimeout, "did not connect in time"),
        Outcome::Timeout => (
            Outcome::ConnectTimeout,
            "accepted, but no response came through it in time",
        ),
        Outcome::Tls => (Outcome::Tls, "failed the TLS handshake"),
        other => (other, "failed"),
    };
    a.outcome = outcome;
    a.error = Some(format!(
        "via proxy {proxy}: the proxy (or the target behind it) {what}; a proxied probe is never evidence of a hang ({detail})"
    ));
    a
}

/// The first address of an `http(s)://` target's host in its address family.
async fn http_socket_addr(target: &Target) -> Option<std::net::SocketAddr> {
    let (host, port) = target.http_host_port()?;
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .find(|a| target.ip.admits(a))
}

/// A plain connection, TCP or Unix.
trait RawIo: AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + tokio::io::AsyncWrite + Send + Unpin> RawIo for T {}

/// A plain connection to an HTTP target's socket: TCP to the base URL's host and port (in the
/// target's address family), or its Unix socket. For the diagnostics below.
async fn raw_connect(target: &Target) -> Option<Box<dyn RawIo>> {
    match &target.endpoint {
        Endpoint::Unix { socket } => {
            let s = tokio::net::UnixStream::connect(socket).await.ok()?;
            Some(Box::new(s))
        }
        Endpoint::Http { .. } => {
            let addr = http_socket_addr(target).await?;
            let s = tokio::net::TcpStream::connect(addr).await.ok()?;
            Some(Box::new(s))
        }
        Endpoint::Tcp { .. } => None,
    }
}

/// Whether a plain connection to the target opens within `within`.
async fn tcp_connects(target: &Target, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, raw_connect(target)).await,
        Ok(Some(_))
    )
}

/// What the server sends on a new connection before any request, if anything. It is given
/// as long as a connection may take to open (`connect_timeout`), within what is `left` of the
/// attempt: a greeting is the server's answer to the connection, and a busy server (or
/// machine) may take a while to send it. A server that closes at once ends the wait at once.
async fn speaks_first(target: &Target, left: Duration) -> Option<String> {
    let within = target.connect_timeout.min(left);
    let listen = async {
        let mut conn = raw_connect(target).await?;
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await.ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    tokio::time::timeout(within, listen).await.ok().flatten()
}

async fn judge_response(
    mut resp: reqwest::Response,
    route: &Route,
    started: Instant,
    deadline: tokio::time::Instant,
    budget: Duration,
    secrets: &[String],
) -> Attempt {
    let status = resp.status().as_u16();
    let expect = &route.expect;
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
    let leaf = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec);
    let base = Attempt {
        retry_after,
        cert: leaf
            .as_deref()
            .and_then(|der| crate::certs::read(der, SystemTime::now())),
        leaf,
        ..Attempt::ok(Some(status))
    };

    if status == 429 && !(expect.status_ok(429) && expect.status != [(200, 399)]) {
        let note = match retry_after {
            Some(d) => format!("429 Too Many Requests (Retry-After {})", fmt_duration(d)),
            None => "429 Too Many Requests".to_string(),
        };
        return Attempt {
            outcome: Outcome::RateLimited,
            error: Some(note),
            ..base
        };
    }

    let reveal = crate::plan::Reveal::for_route(route, secrets);
    let mismatch = expect.headers.iter().find_map(|(name, pattern)| {
        let value = resp
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match value {
            None => Some(format!("header {name}: missing, expected /{pattern}/")),
            Some(v) if !pattern.is_match(&v) => Some(format!(
                "header {name}: {} does not match /{pattern}/",
                reveal
                    .quoted(&v, 80)
                    .unwrap_or_else(|| format!("(value {WITHHELD})"))
            )),
            Some(_) => None,
        }
    });

    // The status or a header already decides the outcome: the body cannot change it, so it
    // is not waited for (a 503 whose body stalls is still a 503).
    if !expect.status_ok(status) {
        let reason = resp.status().canonical_reason().unwrap_or("");
        let outcome = if status == 429 {
            Outcome::RateLimited
        } else {
            Outcome::HttpError
        };
        return Attempt {
            outcome,
            error: Some(
                format!(
                    "status {status} {reason}, expected {}",
                    fmt_status_ranges(&expect.status)
                )
                .trim()
                .to_string(),
            ),
            ..base
        };
    }
    if let Some(reason) = mismatch {
        return Attempt {
            outcome: Outcome::BodyMismatch,
            error: Some(reason),
            ..base
        };
    }

    // A body sent encoded although identity was asked for: its checks would see compressed
    // bytes (a substring never found, a forbidden one never seen), so they are not run on it,
    // and the message names the encoding instead of quoting binary.
    if expect.needs_body()
        && let Some(encoding) = content_encoding(resp.headers())
    {
        return Attempt {
            outcome: Outcome::BodyMismatch,
            error: Some(format!(
                "the body is {encoding}-encoded (Content-Encoding: {encoding}) although the request asked for identity; the body checks need the plain body: make the server honour Accept-Encoding: identity, or check a route that is not compressed"
            )),
            ..base
        };
    }

    // Read the body under the attempt's deadline (a trickling or stalled body times out, and
    // keeps its status), at most `max_body` bytes; beyond that we stop reading and close the
    // connection. Reading also stops as soon as the body checks pass on what has arrived: a
    // `body_contains` found in the first bytes of an endless stream is decided.
    let max = route.timing.max_body;
    let length = resp.content_length();
    let of = |n: usize| match length {
        Some(total) => format!("{n} of {total} bytes"),
        None => format!("{n} bytes (of unknown length)"),
    };
    let mut body: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut decided = false;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(chunk) => chunk,
            Err(_) => {
                return Attempt {
                    outcome: Outcome::Timeout,
                    error: Some(format!(
                        "status {status} received, body stalled after {}: no complete response within {}",
                        of(body.len()),
                        fmt_duration(budget)
                    )),
                    ..base
                };
            }
        };
        match chunk {
            Ok(Some(chunk)) => {
                let room = max.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
                if expect.needs_body() && passes_on_prefix(expect, &body) {
                    decided = true;
                    break;
                }
            }
            Ok(None) => break,
            // A body that runs to the close, over TLS, ended by a TCP close without TLS's
            // close_notify (many servers close that way): that close is its end, as curl
            // reads it. A body with a length or in chunks is cut short by it, below.
            Err(e) if length.is_none() && !chunked(resp.headers()) && without_close_notify(&e) => {
                break;
            }
            Err(e) => {
                // The head arrived: the process answered. A body cut short is a broken
                // response, whether the connection ended with a FIN or a RST (which one the
                // kernel sends depends on unread bytes, not on the service): one outcome,
                // `protocol_error`, never a hung signature.
                let (outcome, error) = classify(&e);
                let how = match outcome {
                    Outcome::Reset => "connection reset by the server",
                    Outcome::EmptyReply => "connection closed by the server",
                    _ => "",
                };
                let outcome = match outcome {
                    Outcome::Reset | Outcome::EmptyReply => Outcome::ProtocolError,
                    Outcome::Timeout | Outcome::ConnectTimeout => Outcome::Timeout,
                    other => other,
                };
                let error = if how.is_empty() {
                    format!(
                        "status {status} received, body broken after {}: {error}",
                        of(body.len())
                    )
                } else {
                    format!(
                        "status {status} received, body cut after {}: {how} ({error})",
                        of(body.len())
                    )
                };
                return Attempt {
                    outcome,
                    error: Some(error),
                    ..base
                };
            }
        }
    }
    let elapsed = started.elapsed();

    if expect.needs_body() && !decided {
        if truncated && let Some(reason) = fails_on_prefix(expect, &body, false, &reveal) {
            return Attempt {
                outcome: Outcome::BodyMismatch,
                error: Some(reason),
                ..base
            };
        }
        if truncated && !passes_on_prefix(expect, &body) {
            return Attempt {
                outcome: Outcome::TooLarge,
                error: Some(format!(
                    "body larger than max_body ({max} bytes); the body check could not be done"
                )),
                ..base
            };
        }
        if !truncated && let Some(reason) = check_body(expect, &body, &reveal) {
            return Attempt {
                outcome: Outcome::BodyMismatch,
                error: Some(reason),
                ..base
            };
        }
    }
    let slow = expect.max_latency.filter(|&max| elapsed > max).map(|max| {
        format!(
            "answered in {}, over max_latency {}",
            fmt_duration(elapsed),
            fmt_duration(max)
        )
    });
    // The certificate's expiry is judged after the attempt (see `cert_expiry`), once the
    // whole chain is known.
    match slow {
        Some(slow) => Attempt {
            outcome: Outcome::Slow,
            error: Some(slow),
            ..base
        },
        None => base,
    }
}

/// A certificate near its end is a warning for a person, never a failure: the service answers
/// now. An `ok` or `slow` attempt whose certificate (the chain's earliest) expires within
/// `expect.cert_min_days` is `cert_expiring`, which outranks `slow`; the error says both.
/// Pure, apart from the clock.
fn cert_expiry(mut a: Attempt, expect: &crate::plan::Expect) -> Attempt {
    if !matches!(a.outcome, Outcome::Ok | Outcome::Slow) {
        return a;
    }
    let Some(why) = expect
        .cert_min
        .zip(a.cert.as_ref())
        .and_then(|(min, cert)| crate::certs::expiring(cert, min, SystemTime::now()))
    else {
        return a;
    };
    a.error = Some(match (a.outcome, a.error.take()) {
        (Outcome::Slow, Some(slow)) => format!("{why}; {slow}"),
        _ => why,
    });
    a.outcome = Outcome::CertExpiring;
    a
}

/// The `Content-Encoding` of a response other than `identity` (`gzip`, `br`, `gzip, br`),
/// printable and short, if any. Pure.
pub fn content_encoding(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(reqwest::header::CONTENT_ENCODING)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty() && v != "identity")
        .collect();
    if values.is_empty() {
        return None;
    }
    let joined = values.join(", ");
    let clean: String = joined
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect();
    Some(clean)
}

/// Chains already read this run: one diagnostic handshake per server and leaf, shared by the
/// routes that were answered over it (they may ask at once).
type ChainCache = std::sync::Mutex<
    std::collections::HashMap<
        (std::net::SocketAddr, Vec<u8>),
        Arc<tokio::sync::OnceCell<Option<crate::certs::CertInfo>>>,
    >,
>;
static CHAINS: std::sync::OnceLock<ChainCache> = std::sync::OnceLock::new();

/// The certificate that expires first in the chain the server of `target` presents, given the
/// leaf the response came over. The TLS layer hands the probe only the leaf, so the chain is
/// read once per server and leaf by a handshake of its own (bounded by `connect_timeout` and
/// 2 s, outside the attempt's time); when that fails, or through a proxy, the leaf alone.
async fn chain_cert(target: &Target, leaf: Vec<u8>) -> Option<crate::certs::CertInfo> {
    let now = SystemTime::now();
    if !target.is_https() || target.use_env_proxy {
        return None;
    }
    let (Some((host, _)), Some(addr)) = (target.http_host_port(), http_socket_addr(target).await)
    else {
        return None;
    };
    let cell = {
        let cache = CHAINS.get_or_init(Default::default);
        let mut cache = cache.lock().expect("not poisoned");
        Arc::clone(cache.entry((addr, leaf.clone())).or_default())
    };
    let budget = target.connect_timeout.min(Duration::from_secs(2));
    let earliest = cell
        .get_or_init(|| async move {
            let chain = tokio::task::spawn_blocking(move || {
                crate::tls_check::presented_chain(addr, &host, budget)
            })
            .await
            .ok()
            .flatten()?;
            // The handshake must have met the same server certificate the response came over.
            if chain.first() != Some(&leaf) {
                return None;
            }
            crate::certs::earliest(&chain, SystemTime::now())
        })
        .await
        .clone();
    earliest.map(|c| crate::certs::info(c.subject, c.not_after_unix, now))
}

/// Whether the body checks pass on a body cut at `max_body` whatever follows the cut: a
/// substring found in the prefix, a pattern whose shortest match ends before the cut (an
/// anchor such as `$` or `\b` right at the cut saw the end of the prefix, not of the body).
/// JSON needs the whole document. Pure.
pub fn passes_on_prefix(expect: &crate::plan::Expect, prefix: &[u8]) -> bool {
    // JSON needs the whole document; what is not there may still come.
    if !expect.json.is_empty()
        || expect.body_not_contains.is_some()
        || expect.body_not_regex.is_some()
    {
        return false;
    }
    let text = String::from_utf8_lossy(prefix);
    // The cut may split a multi-byte character.
    let text = text.trim_end_matches('\u{FFFD}');
    if let Some(needle) = &expect.body_contains
        && !text.contains(needle.as_str())
    {
        return false;
    }
    if let Some(re) = &expect.body_regex
        && re.shortest_match(text).is_none_or(|end| end >= text.len())
    {
        return false;
    }
    true
}

/// Body, regex and JSON expectations; `Some(reason)` on the first mismatch, quoting the body
/// as `reveal` allows. Pure.
pub fn check_body(
    expect: &crate::plan::Expect,
    body: &[u8],
    reveal: &crate::plan::Reveal,
) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let starts = |what: &str| match reveal.quoted(&text, 60) {
        Some(q) => format!("{what} {q}"),
        None => format!("body {WITHHELD}"),
    };
    if let Some(why) = fails_on_prefix(expect, body, true, reveal) {
        return Some(why);
    }
    if let Some(needle) = &expect.body_contains
        && !text.contains(needle.as_str())
    {
        return Some(format!(
            "body does not contain {:?} ({})",
            needle,
            starts("body starts")
        ));
    }
    if let Some(re) = &expect.body_regex
        && !re.is_match(&text)
    {
        return Some(format!(
            "body does not match /{re}/ ({})",
            starts("body starts")
        ));
    }
    if !expect.json.is_empty() {
        let doc: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Some(format!("body is not JSON ({e}); {}", starts("starts")));
            }
        };
        // A string as itself, quoted once; a number, boolean or null bare; a list or object
        // as its JSON text.
        let shown = |v: &serde_json::Value| {
            let quoted = match v {
                serde_json::Value::String(s) => reveal.quoted(s, 60),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    reveal.quoted(&v.to_string(), 60)
                }
                _ => reveal
                    .quoted(&v.to_string(), 60)
                    .map(|q| q.trim_matches('"').to_string()),
            };
            quoted.unwrap_or_else(|| format!("(value {WITHHELD})"))
        };
        let now = SystemTime::now();
        for (path, check) in &expect.json {
            let got = path.split('.').try_fold(&doc, |v, key| match v {
                serde_json::Value::Object(m) => m.get(key),
                serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            });
            if let Some(why) = crate::expect::judge(path, got, check, now, &shown) {
                return Some(why);
            }
        }
    }
    None
}

/// A negative body check (`body_not_contains`, `body_not_regex`) that fails on `body`, or,
/// when it is not `whole` (cut at `max_body`), fails whatever follows the cut: the text is
/// there (a match that ends at the cut may be an anchor seeing the cut, so it must end
/// before it). Pure.
pub fn fails_on_prefix(
    expect: &crate::plan::Expect,
    body: &[u8],
    whole: bool,
    reveal: &crate::plan::Reveal,
) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    // A cut may split a multi-byte character.
    let cut = if whole {
        &text[..]
    } else {
        text.trim_end_matches('\u{FFFD}')
    };
    let found = |at: usize| {
        let from = at.saturating_sub(20);
        let from = (0..=from)
            .rev()
            .find(|&i| cut.is_char_boundary(i))
            .unwrap_or(0);
        match reveal.quoted(&cut[from..], 60) {
            Some(q) => format!("at byte {at}: {q}"),
            None => format!("at byte {at} (text {WITHHELD})"),
        }
    };
    if let Some(needle) = &expect.body_not_contains
        && let Some(at) = cut.find(needle.as_str())
    {
        return Some(format!(
            "body contains {needle:?}, which it must not ({})",
            found(at)
        ));
    }
    if let Some(re) = &expect.body_not_regex
        && let Some(m) = re.find(cut).filter(|m| whole || m.end() < cut.len())
    {
        return Some(format!(
            "body matches /{re}/, which it must not ({})",
            found(m.start())
        ));
    }
    None
}

/// One symmetric rule, whichever side a value comes from: strings equal strings, booleans
/// booleans, null null, and numbers equal numbers when they are the same number, compared
/// exactly (integers as integers, so 9007199254740993 is not 9007199254740992; `200` equals
/// `200.0`). A string never equals a number or a boolean: `"200"` is not `200`. Arrays and
/// objects compare element by element under the same rule. Pure.
pub fn json_matches(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (got, want) {
        (V::Number(a), V::Number(b)) => numbers_equal(a, b),
        (V::Array(a), V::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_matches(x, y))
        }
        (V::Object(a), V::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| json_matches(x, y)))
        }
        _ => got == want,
    }
}

/// Exact numeric equality: two integers (64-bit signed or unsigned) as integers; an integer
/// and a float only when the float is integral and exactly that integer; two floats as floats.
fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    let int = |n: &serde_json::Number| -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    // Exactly the integer this float is, if it is one that fits.
    let float_int = |f: f64| -> Option<i128> {
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38).then_some(f as i128)
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x == y,
        (Some(x), None) => b.as_f64().and_then(float_int) == Some(x),
        (None, Some(y)) => a.as_f64().and_then(float_int) == Some(y),
        (None, None) => a.as_f64() == b.as_f64(),
    }
}

/// The request failed before a byte of it was written: hyper canceled it because the fresh
/// connection closed first, with no I/O error further down the chain.
fn is_unsent(e: &reqwest::Error) -> bool {
    let mut canceled = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return false;
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            canceled |= h.is_canceled();
        }
        source = s.source();
    }
    canceled
}

/// hyper read bytes on a connection with no request in flight: the server spoke first (an
/// SSH banner, or an HTTP answer sent on accept). hyper has no predicate for it: only its
/// message says so.
fn bytes_before_request(h: &hyper::Error) -> bool {
    h.to_string().starts_with("received unexpected message")
}

/// The request failed because the server sent bytes before it was written (hyper refuses
/// them, and nothing of the request went out).
fn answered_unasked(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(bytes_before_request)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Our own process ran out of file descriptors (EMFILE/ENFILE).
fn is_fd_exhaustion(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && crate::out_of_fds(io)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// [`classify`], then what the target's transport adds to the reading. Pure.
fn classify_for(target: &Target, e: &reqwest::Error) -> (Outcome, String) {
    let (outcome, detail) = classify(e);
    if e.is_connect()
        && matches!(target.endpoint, Endpoint::Unix { .. })
        && io_kinds(e).contains(&std::io::ErrorKind::WouldBlock)
    {
        // A Unix listener whose accept queue is full answers a connect with EAGAIN at once:
        // the process holds its socket open and no longer accepts. That is the deadlock
        // itself, not a refusal.
        return (
            Outcome::Timeout,
            format!(
                "the listener's accept queue is full: the socket is alive but nothing accepts connections ({detail})"
            ),
        );
    }
    if e.is_connect()
        && target.is_https()
        && !target.use_env_proxy
        && matches!(outcome, Outcome::EmptyReply | Outcome::Reset)
    {
        // TCP is up (a dead port is refused or times out); the server ended the connection
        // inside the TLS handshake without an alert, as Python's asyncio servers do for a
        // missing client certificate or a TLS version they do not offer. A configuration
        // mismatch, not a hang.
        return (
            Outcome::Tls,
            format!(
                "TLS handshake closed by the server: client certificate required or TLS version/cipher mismatch? ({detail})"
            ),
        );
    }
    (outcome, detail)
}

/// An `https` connection the server closed before any response, right after the handshake:
/// if the server asks for a client certificate (and none is sent), that is why. A
/// configuration mismatch, `tls`, never a hung outcome (TLS 1.3 servers such as Python's
/// asyncio end the connection only after reading the empty certificate, without an alert).
async fn client_cert_required(
    target: &Target,
    outcome: Outcome,
    error: String,
) -> (Outcome, String) {
    if !target.is_https()
        || target.use_env_proxy
        || target.tls.client.is_some()
        || !matches!(outcome, Outcome::EmptyReply | Outcome::Reset)
    {
        return (outcome, error);
    }
    let (Some((host, _)), Some(addr)) = (target.http_host_port(), http_socket_addr(target).await)
    else {
        return (outcome, error);
    };
    let budget = target.connect_timeout;
    let asked = tokio::task::spawn_blocking(move || {
        crate::tls_check::asks_for_client_cert(addr, &host, budget)
    })
    .await
    .ok()
    .flatten();
    if asked == Some(true) {
        return (
            Outcome::Tls,
            format!(
                "the server requires a client certificate: it asked for one in the TLS handshake and closed the connection when none came; a configuration mismatch, not a hang ({error})"
            ),
        );
    }
    (outcome, error)
}

/// The body comes in chunks (`Transfer-Encoding: …, chunked`); without that or a length, it
/// runs until the server closes the connection.
fn chunked(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get_all(reqwest::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().to_ascii_lowercase().ends_with(b"chunked"))
}

/// The connection ended with a plain TCP close where TLS expects its close_notify first
/// (rustls reports it as an unexpected end of file; a plain connection never does).
fn without_close_notify(e: &reqwest::Error) -> bool {
    io_kinds(e).contains(&std::io::ErrorKind::UnexpectedEof)
}

/// The kinds of the I/O errors in a reqwest error's source chain.
fn io_kinds(e: &reqwest::Error) -> Vec<std::io::ErrorKind> {
    let mut kinds = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        source = s.source();
    }
    kinds
}

/// Map a reqwest error to an outcome by walking its source chain. Pure.
fn classify(e: &reqwest::Error) -> (Outcome, String) {
    let detail = error_chain(e);
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    let mut outcome = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                outcome = Some(Outcome::Tls);
                break;
            }
            outcome = match io.kind() {
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                    Some(Outcome::Refused)
                }
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => Some(Outcome::Reset),
                // A TLS peer that closes without close_notify: closed before an answer.
                std::io::ErrorKind::UnexpectedEof => Some(Outcome::EmptyReply),
                std::io::ErrorKind::TimedOut if e.is_connect() => Some(Outcome::ConnectTimeout),
                std::io::ErrorKind::TimedOut => Some(Outcome::Timeout),
                std::io::ErrorKind::PermissionDenied => Some(Outcome::Refused),
                _ => outcome,
            };
            if outcome.is_some() {
                break;
            }
        }
        if s.is::<rustls::Error>() {
            outcome = Some(Outcome::Tls);
            break;
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || bytes_before_request(h) {
                outcome = Some(Outcome::ProtocolError);
                break;
            }
            // Canceled before it was sent (even on the second try), or cut before a complete
            // head: the server closed the connection without an answer, unless the cause
            // further down says otherwise (bytes that are not HTTP, such as an SSH banner
            // sent before the request, cancel it too).
            if h.is_incomplete_message() || h.is_canceled() {
                outcome = Some(Outcome::EmptyReply);
            }
        }
        // `io::Error::source()` skips a custom inner error and returns *its* source: walk
        // into the inner error itself, or a wrapped rustls error is never seen.
        source = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    let outcome = outcome.unwrap_or_else(|| {
        if e.is_timeout() {
            if e.is_connect() {
                Outcome::ConnectTimeout
            } else {
                Outcome::Timeout
            }
        } else if e.is_connect() {
            if detail.contains("dns error") || detail.contains("failed to lookup") {
                Outcome::Dns
            } else if detail.contains("certificate")
                || detail.contains("tls")
                || detail.contains("TLS")
            {
                Outcome::Tls
            } else {
                Outcome::Refused
            }
        } else {
            Outcome::ProtocolError
        }
    });
    (outcome, detail)
}

/// `error sending request: client error (Connect): tcp connect error: Connection refused`, with
/// the URL left out (the report shows it next to the error already).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let joined = parts.join(": ");
    // reqwest's top-level message repeats the URL: "error sending request for url (…)".
    match (joined.find(" for url ("), joined.find("): ")) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &joined[..a], &joined[b + 1..]),
        _ => joined,
    }
}

fn fmt_status_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn fmt_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Server-supplied text sent before any request, for a message: every form of every secret
/// redacted first, then cut to `max` characters (so no prefix of a secret survives), quoted.
fn shown(s: &str, max: usize, secrets: &[String]) -> String {
    let reveal = crate::plan::Reveal {
        secrets,
        sends_secret: false,
    };
    reveal.quoted(s, max).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_sockets_are_kept_only_where_they_fit_the_budget_with_the_requests() {
        // One host at concurrency 256 under a budget of 256: its pool keeps what it uses.
        assert_eq!(idle_per_host([256].into_iter(), 256, 60_000), 256);
        // A few hosts whose concurrency fits together: each keeps its own.
        assert_eq!(idle_per_host([8, 8, 4].into_iter(), 256, 60_000), 8);
        // A fleet (1000 hosts at 8, budget 256): none, so open connections are requests.
        assert_eq!(idle_per_host(std::iter::repeat_n(8, 1000), 256, 60_000), 0);
        // 50 hosts at 2 under a budget of 8: none.
        assert_eq!(idle_per_host(std::iter::repeat_n(2, 50), 8, 60_000), 0);
        // A host's demand counts up to the budget only; the descriptors bound it too.
        assert_eq!(idle_per_host([1000].into_iter(), 256, 60_000), 256);
        assert_eq!(idle_per_host([256].into_iter(), 256, 100), 50);
        assert_eq!(idle_per_host(std::iter::empty(), 256, 60_000), 0);
    }
    use crate::plan::{Expect, Reveal};
    use serde_json::json;

    const NONE: Reveal<'static> = Reveal {
        secrets: &[],
        sends_secret: false,
    };

    fn expect_json(pairs: &[(&str, serde_json::Value)]) -> Expect {
        Expect {
            json: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), crate::expect::JsonCheck::Equals(v.clone())))
                .collect(),
            ..Expect::default()
        }
    }

    #[test]
    fn a_cut_body_passes_only_when_the_cut_cannot_matter() {
        let re = |p: &str| Expect {
            body_regex: Some(regex::Regex::new(p).unwrap().into()),
            ..Expect::default()
        };
        let prefix = "a".repeat(4096);
        // `$` would match at the cut, not at the end of the real (longer) body.
        assert!(!passes_on_prefix(&re("^a{4096}$"), prefix.as_bytes()));
        assert!(passes_on_prefix(&re("^a{10}"), prefix.as_bytes()));
        // `\b` right at the cut looks at the end of the prefix only.
        assert!(!passes_on_prefix(&re(r"ready\b"), b"status: ready"));
        assert!(passes_on_prefix(&re(r"ready\b"), b"status: ready; more"));
        assert!(!passes_on_prefix(&re("never"), prefix.as_bytes()));
        let contains = |n: &str| Expect {
            body_contains: Some(n.into()),
            ..Expect::default()
        };
        assert!(passes_on_prefix(&contains("aaa"), prefix.as_bytes()));
        assert!(!passes_on_prefix(&contains("b"), prefix.as_bytes()));
        // A multi-byte character split by the cut is not part of the text.
        assert!(passes_on_prefix(&re("é$|ok"), "ok é".as_bytes()));
        assert!(!passes_on_prefix(&re("x$"), &"x\u{e9}".as_bytes()[..2]));
        assert!(!passes_on_prefix(
            &expect_json(&[("status", json!("ok"))]),
            br#"{"status":"ok"}"#
        ));
    }

    #[test]
    fn json_expectations_walk_dotted_paths() {
        let body = br#"{"status":"healthy","checks":{"db":"ok","n":3},"list":[{"a":true}]}"#;
        assert_eq!(
            check_body(&expect_json(&[("status", json!("healthy"))]), body, &NONE),
            None
        );
        assert_eq!(
            check_body(
                &expect_json(&[("checks.db", json!("ok")), ("checks.n", json!(3))]),
                body,
                &NONE
            ),
            None
        );
        assert_eq!(
            check_body(&expect_json(&[("list.0.a", json!(true))]), body, &NONE),
            None
        );
        let why = check_body(&expect_json(&[("status", json!("degraded"))]), body, &NONE).unwrap();
        assert!(
            why.contains("json status") && why.contains("healthy"),
            "{why}"
        );
        let why = check_body(&expect_json(&[("checks.cache", json!("ok"))]), body, &NONE).unwrap();
        assert!(why.contains("missing"), "{why}");
        let why = check_body(
            &expect_json(&[("status", json!("healthy"))]),
            b"<html>",
            &NONE,
        )
        .unwrap();
        assert!(why.contains("not JSON"), "{why}");
    }

    #[test]
    fn json_strings_and_numbers_never_cross_in_either_direction() {
        // Body value, expected value (as the probe file gives it), equal?
        let table = [
            (json!(200), json!(200), true),
            (json!(200), json!("200"), false),
            (json!("200"), json!(200), false),
            (json!("200"), json!("200"), true),
            (json!(true), json!("true"), false),
            (json!("true"), json!(true), false),
            (json!(200.0), json!(200), true),
            (json!(200), json!(200.0), true),
            (json!(200.5), json!(200), false),
            (json!(-3), json!(-3), true),
            (json!(null), json!(null), true),
            (json!(null), json!("null"), false),
            (json!([1, "a"]), json!([1, "a"]), true),
            (json!([1]), json!(["1"]), false),
        ];
        for (got, want, equal) in table {
            assert_eq!(json_matches(&got, &want), equal, "{got} vs {want}");
            assert_eq!(json_matches(&want, &got), equal, "{want} vs {got}");
        }
    }

    #[test]
    fn json_integers_compare_exactly() {
        // 2^53 + 1 and 2^53 are the same double; they are different integers.
        let body =
            br#"{"id":9007199254740993,"big":18446744073709551615,"neg":-9223372036854775808}"#;
        let e = |k: &str, v: serde_json::Value| expect_json(&[(k, v)]);
        assert_eq!(
            check_body(&e("id", json!(9007199254740993u64)), body, &NONE),
            None
        );
        let why = check_body(&e("id", json!(9007199254740992u64)), body, &NONE).unwrap();
        assert!(why.contains("9007199254740993"), "{why}");
        assert_eq!(check_body(&e("big", json!(u64::MAX)), body, &NONE), None);
        assert!(check_body(&e("big", json!(u64::MAX - 1)), body, &NONE).is_some());
        assert_eq!(check_body(&e("neg", json!(i64::MIN)), body, &NONE), None);
        // The same through the probe file's YAML, in both directions of type.
        let why = check_body(&e("id", json!("9007199254740993")), body, &NONE).unwrap();
        assert!(why.contains("a number is not a string"), "{why}");
        let why = check_body(&e("s", json!(200)), br#"{"s":"200"}"#, &NONE).unwrap();
        assert!(why.contains("a string is not a number"), "{why}");
    }

    #[test]
    fn echoed_secrets_are_redacted_before_the_cut() {
        let e = Expect {
            body_contains: Some("welcome".into()),
            ..Expect::default()
        };
        let secrets = vec![
            "Bearer s3cr3t-value-123".to_string(),
            "s3cr3t-value-123".to_string(),
        ];
        let reveal = Reveal {
            secrets: &secrets,
            sends_secret: false,
        };
        let why = check_body(
            &e,
            b"invalid token: Bearer s3cr3t-value-123 (expired) and more text here",
            &reveal,
        )
        .unwrap();
        assert!(!why.contains("s3cr3t"), "{why}");
        assert!(why.contains("<redacted>"), "{why}");
        // A secret straddling the 60-character cut leaves no prefix behind.
        let long = format!("{}s3cr3t-value-123", "x".repeat(50));
        let why = check_body(&e, long.as_bytes(), &reveal).unwrap();
        assert!(!why.contains("s3cr"), "{why}");
    }

    #[test]
    fn body_contains_and_regex() {
        let e = Expect {
            body_contains: Some("ready".into()),
            ..Expect::default()
        };
        assert_eq!(check_body(&e, b"all ready", &NONE), None);
        assert!(
            check_body(&e, b"starting", &NONE)
                .unwrap()
                .contains("does not contain")
        );
        let e = Expect {
            body_regex: Some(regex::Regex::new("^v[0-9]+").unwrap().into()),
            ..Expect::default()
        };
        assert_eq!(check_body(&e, b"v12 ok", &NONE), None);
        assert!(check_body(&e, b"x", &NONE).is_some());
    }

    /// The greeting of a server that speaks first is listened for as long as a connection may
    /// take to open, not a fixed moment: on a busy machine the banner may come late (it was
    /// 100 ms, and an SSH port then read as `empty_reply`, a hung signature).
    #[tokio::test]
    async fn a_late_greeting_or_an_http_answer_is_heard_and_a_close_ends_the_wait() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            // First connection: greet late. Second: close at once, saying nothing.
            let (mut c, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.unwrap();
            let (c2, _) = listener.accept().await.unwrap();
            drop(c2);
            // Third: an HTTP answer before any request, which is a greeting too.
            let (mut c3, _) = listener.accept().await.unwrap();
            c3.write_all(b"HTTP/1.1 503 Busy\r\n\r\n").await.unwrap();
            (c, c3)
        });
        let target = &target_at(&base, "connect_timeout: 20s");
        let heard = speaks_first(target, Duration::MAX).await;
        assert_eq!(heard.as_deref(), Some("SSH-2.0-OpenSSH_9.6\r\n"));
        // A close is an answer: no greeting, and no waiting out the 20 s (half of it is far
        // more than a close takes on any machine).
        let closed =
            tokio::time::timeout(Duration::from_secs(10), speaks_first(target, Duration::MAX))
                .await;
        assert_eq!(closed, Ok(None));
        let answered = speaks_first(target, Duration::MAX).await;
        assert_eq!(answered.as_deref(), Some("HTTP/1.1 503 Busy\r\n\r\n"));
        drop(server.await.unwrap());
    }

    /// A server that sent part of a head on accept and stalls gets `connect_timeout` for the
    /// rest when it is asked again (its head was already on its way), not the whole attempt:
    /// the first failure (`protocol_error`) then stands, never the hung `timeout`.
    #[tokio::test(start_paused = true)]
    async fn an_early_answer_that_stalls_gives_up_after_connect_timeout() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(c);
        });
        let target = &target_at(&base, "connect_timeout: 1s");
        install_crypto_provider();
        let client = build_client("routewatch-test", target, 0).unwrap();
        let route = &target.routes[0];
        let request = request_to(&client, route, None, &route.method, true, true);
        // A paused clock: the waits are counted, not lived, whatever the machine is doing.
        let started = tokio::time::Instant::now();
        let asked = ask_early(target, request, "routewatch-test", Duration::from_secs(60)).await;
        assert!(asked.is_none(), "{asked:?}");
        // connect_timeout (1 s), not the attempt's 60 s.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }

    /// A target `t` at `base` with one more target-level key (YAML, e.g. `proxy: true`) and one
    /// route, `/`.
    fn target_at(base: &str, key: &str) -> Target {
        let yaml = format!(
            "targets:\n  - name: t\n    base_url: {base}\n    {key}\n    routes: [ {{ path: / }} ]\n"
        );
        let plan = crate::config::parse(&yaml, "t.yaml", &|_| None).unwrap();
        plan.targets[0].clone()
    }

    fn proxied(base: &str) -> Target {
        target_at(base, "proxy: true")
    }

    #[test]
    fn core_routes_go_first_and_targets_take_turns() {
        let yaml = "targets:
  - name: big
    base_url: http://127.0.0.1:1
    routes: [ { path: /a }, { path: /x, class: auxiliary }, { path: /b }, { path: /c } ]
  - name: small
    base_url: http://127.0.0.1:2
    routes: [ { path: /y, class: auxiliary }, { path: /d } ]
  - name: tcp
    tcp: 127.0.0.1:3
";
        let plan = crate::config::parse(yaml, "t.yaml", &|_| None).unwrap();
        let shown: Vec<String> = fair_order(&plan.targets)
            .into_iter()
            .map(|(ti, ri)| {
                format!(
                    "{}{}",
                    plan.targets[ti].name, plan.targets[ti].routes[ri].path
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "big/a",
                "small/d",
                "tcp127.0.0.1:3",
                "big/b",
                "big/c",
                "big/x",
                "small/y"
            ]
        );
    }

    #[test]
    fn the_in_flight_budget_is_never_above_half_the_descriptors() {
        assert_eq!(in_flight_budget(256, 20_000), 256);
        assert_eq!(in_flight_budget(256, 200), 100);
        assert_eq!(in_flight_budget(4, 200), 4);
        assert_eq!(in_flight_budget(256, 1), 1);
    }

    #[test]
    fn the_proxy_is_chosen_from_the_environment_as_curl_does() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let http = proxied("http://app.internal:8000");
        let https = proxied("https://app.internal");
        let e = env(&[
            ("HTTP_PROXY", "http://user:pw@proxy:3128"),
            ("https_proxy", "proxy-s:3129"),
        ]);
        assert_eq!(
            env_proxy(&http, &e),
            Some((
                "http://user:pw@proxy:3128".into(),
                "http://proxy:3128".into()
            ))
        );
        assert_eq!(
            env_proxy(&https, &e).map(|p| p.1),
            Some("http://proxy-s:3129".into())
        );
        let e = env(&[("ALL_PROXY", "http://all:1")]);
        assert_eq!(
            env_proxy(&http, &e).map(|p| p.1),
            Some("http://all:1".into())
        );
        // no_proxy: a domain and its subdomains, `*`, IPs and CIDR blocks.
        for list in [
            "internal",
            ".internal",
            "app.internal",
            "*",
            "x, *.internal",
        ] {
            assert!(no_proxy_matches(list, "app.internal"), "{list}");
        }
        for list in ["other", "pp.internal", "10.0.0.0/8", ""] {
            assert!(!no_proxy_matches(list, "app.internal"), "{list}");
        }
        assert!(no_proxy_matches("127.0.0.0/8", "127.0.0.1"));
        assert!(no_proxy_matches("::1", "::1"));
        assert!(!no_proxy_matches("10.0.0.0/8", "127.0.0.1"));
        let e = env(&[
            ("HTTP_PROXY", "http://proxy:3128"),
            ("NO_PROXY", "internal"),
        ]);
        assert_eq!(env_proxy(&http, &e), None);
        // `proxy: false` (the default) never reads the environment.
        let mut direct = http.clone();
        direct.use_env_proxy = false;
        assert_eq!(
            env_proxy(&direct, &env(&[("HTTP_PROXY", "http://p:1")])),
            None
        );
    }

    #[test]
    fn a_failure_through_a_proxy_names_it_and_is_never_a_hung_outcome() {
        for (o, want) in [
            (Outcome::Timeout, Outcome::ConnectTimeout),
            (Outcome::EmptyReply, Outcome::Refused),
            (Outcome::Reset, Outcome::Refused),
            (Outcome::Refused, Outcome::Refused),
            (Outcome::ConnectTimeout, Outcome::ConnectTimeout),
        ] {
            let a = through_proxy(Attempt::fail(o, "x".into()), Some("http://127.0.0.1:9"));
            assert_eq!(a.outcome, want, "{o}");
            assert!(a.error.unwrap().contains("via proxy http://127.0.0.1:9"));
        }
        let a = through_proxy(Attempt::fail(Outcome::Timeout, "x".into()), None);
        assert_eq!(a.outcome, Outcome::Timeout);
        // A head arrived: judged as any answer.
        let mut stalled = Attempt::fail(Outcome::Timeout, "x".into());
        stalled.status = Some(200);
        assert_eq!(
            through_proxy(stalled, Some("http://p:1")).outcome,
            Outcome::Timeout
        );
    }

    #[test]
    fn status_ranges_print_compactly() {
        assert_eq!(fmt_status_ranges(&[(200, 399)]), "200-399");
        assert_eq!(fmt_status_ranges(&[(200, 200), (302, 302)]), "200, 302");
    }
}
