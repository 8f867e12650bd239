//! Raw file → [`Plan`]: defaults applied, every target's endpoint, unit and recovery policy
//! validated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::HeaderValue;
use serde_saphyr::Spanned;

use super::context::{Ctx, MAX_CONCURRENCY, clamp_u32, insecure_hint};
use super::raw::{RawFile, RawIp, RawRecovery, RawTarget};
use super::route::{resolve_headers, resolve_route};
use super::scalars::Count;
use super::secrets::{expand_env, take_userinfo, without_password};
use super::{ConfigError, MAX_ROUTES};
use crate::outcome::Outcome;
use crate::plan::{
    self, Class, Endpoint, Expect, Header, IpFamily, Plan, RecoveryPolicy, Route, Target, Timing,
    Tls,
};

pub(super) fn resolve(
    raw: RawFile,
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
    dropins: super::dropins::Found,
    how: super::Reading,
) -> Result<Plan, ConfigError> {
    let super::Reading { lenient, untrusted } = how;
    let secrets = std::cell::RefCell::default();
    let regexes = super::context::Regexes::default();
    let warnings = std::cell::RefCell::default();
    let cx = Ctx {
        file,
        text,
        env,
        base_dir,
        secrets: &secrets,
        regexes: &regexes,
        lenient,
        warnings: &warnings,
        untrusted: untrusted.then_some("probe file"),
    };
    let d = raw.defaults.unwrap_or_default();
    // Every value of `defaults` is checked where it is written, even if each target overrides it.
    let scope = "defaults: ";
    let base_timing = cx.timing(scope, d.timing_keys(), &Timing::default())?;
    let base_connect = cx
        .positive(scope, "connect_timeout", d.connect_timeout.as_ref())?
        .unwrap_or(plan::DEFAULT_CONNECT_TIMEOUT);
    let base_concurrency = cx
        .count(
            scope,
            "concurrency",
            d.concurrency.as_ref(),
            1..=MAX_CONCURRENCY,
        )?
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
    // The route slots are counted across the files as they were read: the last file's count
    // is the total.
    let total_routes = dropins
        .files
        .iter()
        .filter_map(|d| d.targets.as_ref().map(|t| t.value.slots))
        .fold(raw.targets.value.slots, usize::max);
    // Each drop-in's text and place (its errors' own file) apart from its targets.
    let mut places = Vec::with_capacity(dropins.files.len());
    let mut dropin_targets = Vec::with_capacity(dropins.files.len());
    for d in dropins.files {
        places.push((d.file, d.text, d.dir, d.untrusted));
        dropin_targets.push(d.targets.map(|t| t.value.kept).unwrap_or_default());
    }
    let dropin_cxs: Vec<Ctx> = places
        .iter()
        .map(|(file, text, dir, untrusted)| Ctx {
            file,
            text,
            env,
            base_dir: Some(dir),
            secrets: &secrets,
            regexes: &regexes,
            lenient,
            warnings: &warnings,
            untrusted: untrusted.then_some("drop-in"),
        })
        .collect();
    let mut sources: Vec<(&Ctx, Vec<Spanned<RawTarget>>)> = vec![(&cx, raw.targets.value.kept)];
    sources.extend(dropin_cxs.iter().zip(dropin_targets));
    if sources.iter().all(|(_, t)| t.is_empty()) {
        return Err(cx.err(
            &targets_at,
            "no targets; expected at least one entry under 'targets:', e.g. - { name: web, base_url: http://127.0.0.1:8000, routes: [{ path: /health }] }",
        ));
    }
    if total_routes > MAX_ROUTES {
        return Err(cx.err(
            &targets_at,
            format!("{total_routes} routes; at most {MAX_ROUTES} are allowed in one file and its drop-ins"),
        ));
    }

    let run_timeout = cx
        .positive(scope, "run_timeout", d.run_timeout.as_ref())?
        .unwrap_or(plan::DEFAULT_RUN_TIMEOUT);
    let mut targets = Vec::new();
    // Each name and where it was first used (a map: a fleet file has thousands).
    let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (tcx, raw_targets) in sources {
        for t in raw_targets {
            let name_at = Spanned::new((), t.value.name.referenced, t.value.name.defined);
            let route_at: Vec<(Spanned<()>, Option<Spanned<()>>)> = t
                .value
                .routes
                .kept
                .iter()
                .map(|r| {
                    let own = r
                        .timeout
                        .as_ref()
                        .map(|x| Spanned::new((), x.referenced, x.defined));
                    (Spanned::new((), r.path.referenced, r.path.defined), own)
                })
                .collect();
            let mut target = resolve_target(
                tcx,
                t,
                &base_timing,
                base_connect,
                base_concurrency,
                base_proxy,
            )?;
            let here = tcx.err(&name_at, String::new());
            let place = format!(
                "{}:{}",
                here.file,
                here.at.map_or(String::new(), |(l, c)| format!("{l}:{c}"))
            );
            if let Some(first) = names.get(&target.name) {
                return Err(tcx.err(
                    &name_at,
                    format!(
                        "duplicate target name {:?} (first used at {first}); names must be unique across the probe file and its drop-ins",
                        target.name
                    ),
                ));
            }
            lint(tcx, &target, &name_at, &route_at, run_timeout);
            if !std::ptr::eq(tcx, &cx) {
                target.file = Some(tcx.file.to_string());
            }
            names.insert(target.name.clone(), place);
            targets.push(target);
        }
    }
    let ping = raw
        .ping
        .as_ref()
        .map(|p| super::alerts::resolve_ping(&cx, p))
        .transpose()?;
    let notify = super::alerts::resolve_notify(&cx, &raw.notify)?;
    let max_in_flight = cx
        .count(
            "",
            "max_in_flight",
            raw.max_in_flight.as_ref(),
            1..=MAX_CONCURRENCY * 16,
        )?
        .map_or(plan::DEFAULT_MAX_IN_FLIGHT, super::context::clamp_usize);
    Ok(Plan {
        user_agent,
        run_timeout,
        max_in_flight,
        targets,
        ping,
        notify,
        // A value many targets share (a fleet's `${TOKEN}`) is one secret to redact.
        secrets: {
            let mut s = secrets.take();
            s.sort();
            s.dedup();
            s
        },
        untrusted: dropins.untrusted,
        warnings: warnings.take().iter().map(ToString::to_string).collect(),
    })
}

/// What a target allows but probably does not mean, warned at its position: a route timeout
/// longer than the run's (the run cuts it short), a unit without a core route (recovery can
/// never trigger).
fn lint(
    cx: &Ctx,
    t: &Target,
    name_at: &Spanned<()>,
    route_at: &[(Spanned<()>, Option<Spanned<()>>)],
    run_timeout: Duration,
) {
    for (r, (at, own)) in t.routes.iter().zip(route_at) {
        if r.timing.timeout > run_timeout {
            cx.warn(
                own.as_ref().unwrap_or(at),
                format!(
                    "target {:?}: route {}: timeout {} is longer than run_timeout {}: the run ends it first",
                    t.name,
                    r.path,
                    humantime::format_duration(r.timing.timeout),
                    humantime::format_duration(run_timeout)
                ),
            );
        }
    }
    if t.unit.is_some() && !t.routes.iter().any(|r| r.class == Class::Core) {
        cx.warn(
            name_at,
            format!(
                "target {:?}: has a unit but no core route; recovery can never trigger",
                t.name
            ),
        );
    }
}

pub(super) fn resolve_target(
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
    let timing = cx.timing(&scope, t.timing_keys(), base)?;
    let concurrency = cx
        .count(
            &scope,
            "concurrency",
            t.concurrency.as_ref(),
            1..=MAX_CONCURRENCY,
        )?
        .unwrap_or(base_concurrency);
    let connect_timeout = cx
        .positive(&scope, "connect_timeout", t.connect_timeout.as_ref())?
        .unwrap_or(base_connect);

    let mut auth = None;
    // The base URL as reports show it when it holds a `${VAR}`: as written.
    let mut display_base = None;
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
            let (endpoint, credentials, shown) = parse_base_url(cx, url, &name)?;
            auth = credentials;
            display_base = shown;
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
            let through_at = r.value.through.clone();
            let policy = resolve_recovery(cx, *r)?;
            if let (Some(proxy), Some(unit), Some(at)) = (&policy.through, &unit, &through_at)
                && proxy == unit
            {
                return Err(cx.err(
                    at,
                    format!(
                        "target {name:?}: recovery.through names {unit}, the unit itself; it names the proxy in front of it"
                    ),
                ));
            }
            Some(policy)
        }
    };

    let tls = match t.tls {
        None => Tls::default(),
        Some(raw) => {
            let ca_file = match &raw.ca_file {
                None => None,
                Some(ca) => Some(check_ca_file(cx, ca, &name)?),
            };
            let client = super::client_cert::check(cx, &raw.cert_file, &raw.key_file, &name)?;
            Tls {
                ca_file,
                insecure: raw.insecure,
                client,
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
                &r.path,
                format!("target {name:?}: a tcp target has no routes (it is one connect probe)"),
            ));
        }
        vec![Route {
            path: addr.clone(),
            url: format!("tcp://{addr}"),
            request: format!("tcp://{addr}"),
            secret_request: false,
            class: Class::Core,
            method: reqwest::Method::GET,
            body: None,
            headers: Vec::new(),
            expect: Expect::shared_default(),
            timing,
        }]
    } else {
        if t.routes.kept.is_empty() {
            return Err(cx.err(
                &at,
                format!("target {name:?}: no routes; expected at least one entry under 'routes:'"),
            ));
        }
        let parsed_base = match &endpoint {
            Endpoint::Http { base } => reqwest::Url::parse(base).ok(),
            _ => None,
        };
        // Into a list of their own size: `collect` would reuse the routes-as-read buffer
        // (larger per route) and keep it for the whole run, 15 MB for 20 000 routes.
        let mut routes = Vec::with_capacity(t.routes.kept.len());
        for r in t.routes.kept {
            routes.push(resolve_route(
                cx,
                r,
                &endpoint,
                display_base.as_deref(),
                parsed_base.as_ref(),
                &timing,
                &target_headers,
                &name,
            )?);
        }
        routes
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
        file: None,
    })
}

/// The endpoint of a `base_url` (`${VAR}` expanded), the credentials of its userinfo, and,
/// when a `${VAR}` was expanded, the base as reports show it: as written, no value in it.
pub(super) fn parse_base_url(
    cx: &Ctx,
    url: &Spanned<String>,
    name: &str,
) -> Result<(Endpoint, Option<Header>, Option<String>), ConfigError> {
    let warned = cx.warnings.borrow().len();
    let (expanded, secret) = expand_env(cx, url)?;
    let v = expanded.trim();
    // Never echo a password from the userinfo, nor a value from the environment.
    let shown = without_password(if secret { url.value.trim() } else { v });
    let display = secret.then(|| shown.trim_end_matches('/').to_string());
    if cx.warnings.borrow().len() > warned {
        // `validate` with a variable unset (warned where it is written): the URL cannot be
        // checked, and is not refused for it; `check` refuses the file.
        let endpoint = if url.value.trim().starts_with("unix:") {
            Endpoint::Unix {
                socket: PathBuf::from("/nonexistent/unset-variable.sock"),
            }
        } else {
            Endpoint::Http {
                base: "http://unset-variable.invalid".into(),
            }
        };
        return Ok((endpoint, None, display));
    }
    if let Some(path) = v.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(cx.err(url, format!("target {name:?}: invalid unix socket {shown:?}; expected an absolute path, e.g. unix:/run/app/rpc.sock")));
        }
        if let Some(kind) = cx.untrusted {
            return Err(cx.refuse(
                url,
                format!(
                    "target {name:?}: a Unix socket is not probed from a {kind} that others can write: root may open sockets they cannot (a container engine's, an admin RPC), and they would choose what root sends there; make the file and every directory on its way root's, not writable by group or others{}",
                    insecure_hint(kind)
                ),
            ));
        }
        return Ok((
            Endpoint::Unix {
                socket: PathBuf::from(path),
            },
            None,
            display,
        ));
    }
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
        display,
    ))
}

/// A plain service unit name: `name.service` or `name@instance.service`, systemd's characters,
/// no globs, no paths, never routewatch's own unit.
pub(super) fn check_unit_name(cx: &Ctx, u: &Spanned<String>) -> Result<String, ConfigError> {
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

pub(super) fn resolve_recovery(
    cx: &Ctx,
    r: Spanned<RawRecovery>,
) -> Result<RecoveryPolicy, ConfigError> {
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
    let verify_timeout = cx.positive("recovery.", "verify_timeout", raw.verify_timeout.as_ref())?;
    let action = raw.action.unwrap_or(d.action);
    let through = match &raw.through {
        Some(t) => Some(check_unit_name(cx, t)?),
        None => None,
    };
    let dump = match &raw.dump {
        None => None,
        Some(dump) => Some(resolve_dump(cx, dump, action)?),
    };
    Ok(RecoveryPolicy {
        action,
        after_failed_runs: after_failed_runs.unwrap_or(d.after_failed_runs),
        on,
        startup_grace: raw.startup_grace.map_or(d.startup_grace, |x| x.0),
        cooldown: raw.cooldown.map_or(d.cooldown, |x| x.0),
        max_actions: max_actions.unwrap_or(d.max_actions),
        window: raw.window.map_or(d.window, |x| x.0),
        verify_timeout: verify_timeout.unwrap_or(d.verify_timeout),
        dump,
        through,
    })
}

/// `recovery.dump`: a known signal, a wait within a minute, and only before a kill.
fn resolve_dump(
    cx: &Ctx,
    dump: &Spanned<super::raw::RawDump>,
    action: crate::plan::Action,
) -> Result<crate::plan::Dump, ConfigError> {
    use crate::plan::{Action, Dump, DumpSignal};
    if action != Action::Kill {
        return Err(cx.err(
            dump,
            format!(
                "recovery.dump goes with action: kill (it signals the process before killing it), not action: {}",
                action.as_str()
            ),
        ));
    }
    let raw = &dump.value;
    let signal = DumpSignal::parse(&raw.signal.value).ok_or_else(|| {
        let names: Vec<&str> = DumpSignal::ALL.iter().map(|s| s.as_str()).collect();
        cx.err(
            &raw.signal,
            format!(
                "invalid recovery.dump.signal {}; expected one of {}",
                cx.shown(&raw.signal, &raw.signal.value),
                names.join(", ")
            ),
        )
    })?;
    let wait = cx
        .positive("recovery.dump.", "wait", raw.wait.as_ref())?
        .unwrap_or(std::time::Duration::from_secs(5));
    if wait > std::time::Duration::from_secs(60) {
        let at = raw.wait.as_ref().expect("a wait was given");
        return Err(cx.err(
            at,
            format!(
                "recovery.dump.wait {} is longer than 60s; a hung process that has not left by then will not",
                humantime::format_duration(wait)
            ),
        ));
    }
    Ok(Dump { signal, wait })
}

/// `tls.ca_file` must exist and hold at least one PEM certificate; relative to the probe file.
pub(super) fn check_ca_file(
    cx: &Ctx,
    ca: &Spanned<String>,
    target: &str,
) -> Result<PathBuf, ConfigError> {
    let raw = Path::new(ca.value.trim());
    let path = match cx.base_dir {
        Some(base) if raw.is_relative() => base.join(raw),
        _ => raw.to_path_buf(),
    };
    let pem = crate::trust::read_pem(&path).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

    #[test]
    fn a_targets_routes_take_no_more_room_than_they_need() {
        // The routes as read are larger than resolved routes; a list that reused their
        // buffer would hold it (with room for many more routes) for the whole run.
        let mut yaml = HEAD.to_string();
        yaml.push_str("    routes:\n");
        for i in 0..1000 {
            yaml.push_str(&format!("      - {{ path: /r{i} }}\n"));
        }
        let plan = crate::config::parse(&yaml, "p.yaml", &|_| None).expect("valid");
        let routes = &plan.targets[0].routes;
        assert_eq!(routes.len(), 1000);
        assert_eq!(routes.capacity(), routes.len());
    }

    #[test]
    fn a_duplicate_target_name_and_an_empty_target_list_have_positions() {
        assert_eq!(
            err(&format!(
                "{TARGET}  - name: a\n    base_url: http://x\n    routes: [ {{ path: /ok }} ]\n"
            )),
            "p.yaml:5:11: duplicate target name \"a\" (first used at p.yaml:2:11); names must be unique across the probe file and its drop-ins"
        );
        assert_err(
            "user_agent: x\ntargets: []\n",
            "p.yaml:2:10: no targets; expected at least one entry under 'targets:'",
        );
    }

    #[test]
    fn recovery_dump_takes_a_known_signal_a_short_wait_and_only_a_kill() {
        let file = |recovery: &str| {
            format!(
                "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    unit: a.service\n    recovery: {recovery}\n    routes: [ {{ path: /ok }} ]\n"
            )
        };
        let plan =
            crate::config::parse(&file("{ dump: { signal: sigquit } }"), "p.yaml", &|_| None)
                .unwrap();
        let dump = plan.targets[0].recovery.as_ref().unwrap().dump.unwrap();
        assert_eq!(dump.signal, crate::plan::DumpSignal::Quit);
        assert_eq!(dump.wait, std::time::Duration::from_secs(5));
        assert_err(
            &file("{ dump: { signal: SIGSTOP } }"),
            "p.yaml:5:33: invalid recovery.dump.signal SIGSTOP; expected one of SIGQUIT, SIGABRT",
        );
        assert_err(
            &file("{ dump: { signal: QUIT, wait: 5m } }"),
            "recovery.dump.wait 5m is longer than 60s",
        );
        assert_err(
            &file("{ action: restart, dump: { signal: QUIT } }"),
            "recovery.dump goes with action: kill",
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
}
