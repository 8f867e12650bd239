//! A route as written → [`Route`]: its URL, method, headers, timing and checks.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;

use super::ConfigError;
use super::context::Ctx;
use super::raw::{RawExpect, RawRoute};
use super::secrets::{expand_env, without_password};
use crate::plan::{Endpoint, Expect, Header, Route, Timing};

pub(super) fn resolve_headers(
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

pub(super) fn resolve_route(
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
    let raw_expect = r.expect.map(|e| *e).unwrap_or_default();
    if let Some(min) = &raw_expect.cert_min_days
        && !matches!(endpoint, Endpoint::Http { base } if base.starts_with("https:"))
    {
        return Err(cx.err(
            min,
            format!("target {target:?}: route {path}: expect.cert_min_days needs an https:// base_url (there is no certificate to check)"),
        ));
    }
    let expect = resolve_expect(cx, &at, raw_expect, target)?;
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

pub(super) fn resolve_expect(
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
        cert_min: e.cert_min_days.map(|x| x.value.0),
    })
}
