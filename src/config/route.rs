//! A route as written → [`Route`]: its URL, method, headers, timing and checks.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;

use super::ConfigError;
use super::context::Ctx;
use super::raw::{RawExpect, RawRoute};
use super::secrets::{expand_env, without_password};
use crate::expect::{Cmp, FORM_KEYS, JsonCheck};
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
        if let Some(why) = framing_header(&hname) {
            return Err(cx.err(
                value,
                format!("target {target:?}: header {name} cannot be set: {why}; remove it"),
            ));
        }
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

/// A header that frames the request on the wire, which the HTTP client sets from the body
/// itself: a `Content-Length` or `Transfer-Encoding` that disagrees with the body makes the
/// server wait for bytes that never come (a false hang), and `Connection` changes how the
/// connection is kept. Why it cannot be set, else `None`. Pure.
pub(super) fn framing_header(name: &HeaderName) -> Option<&'static str> {
    use reqwest::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    if *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING {
        Some(
            "routewatch frames the request from its body, and a length that disagrees with it makes the server wait for a body that never comes (a false hang)",
        )
    } else if *name == CONNECTION {
        Some(
            "routewatch manages its connections (keep-alive, and a new connection for re-sends and recovery's re-probes)",
        )
    } else {
        None
    }
}

/// `parsed_base`: the target's `base_url` parsed once (`None` where it is not HTTP), so a
/// route's URL is checked without parsing the host again for every route.
#[allow(clippy::too_many_arguments)]
pub(super) fn resolve_route(
    cx: &Ctx,
    r: RawRoute,
    endpoint: &Endpoint,
    display_base: Option<&str>,
    parsed_base: Option<&reqwest::Url>,
    base: &Timing,
    target_headers: &[Header],
    target: &str,
) -> Result<Route, ConfigError> {
    // A route is placed where its path is written.
    let at = Spanned::new((), r.path.referenced, r.path.defined);
    // As written: what reports show (a `${VAR}` stays a name).
    let path = r.path.value.trim().to_string();
    let bad_path =
        |p: &str| !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad_path(&path) {
        return Err(cx.err(&r.path, format!("target {target:?}: invalid route path {path:?}; expected an absolute path such as /api/health")));
    }
    let (sent_path, path_secret) = expand_env(cx, &r.path)?;
    let sent_path = sent_path.trim().to_string();
    if path_secret && bad_path(&sent_path) {
        return Err(cx.err(&r.path, format!("target {target:?}: route path {path:?} is not an absolute path without spaces once its variables are expanded (their values are not shown)")));
    }
    let (url, request) = match endpoint {
        Endpoint::Http { base } => {
            let request = [base.as_str(), &sent_path].concat();
            let shown = [display_base.unwrap_or(base), &path].concat();
            if let Some(e) = invalid_url(parsed_base, &sent_path, &request) {
                return Err(cx.err(
                    &r.path,
                    format!(
                        "target {target:?}: route {path:?} makes an invalid URL {:?} ({e})",
                        without_password(&shown)
                    ),
                ));
            }
            (shown, request)
        }
        Endpoint::Unix { socket } => {
            let shown = match display_base {
                Some(b) => format!("{b}:{path}"),
                None => format!("unix:{}:{path}", socket.display()),
            };
            // The socket is the transport; the URL only carries the request target.
            (shown, format!("http://localhost{sent_path}"))
        }
        Endpoint::Tcp { .. } => unreachable!("tcp targets have no routes"),
    };
    let (body, body_secret) = match &r.body {
        Some(b) => {
            let (v, secret) = expand_env(cx, b)?;
            (Some(v), secret)
        }
        None => (None, false),
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
    // Most routes set no timing key of their own: they take the target's as they are.
    let keys = r.timing_keys();
    let timing = if keys.any() {
        cx.timing(&format!("target {target:?}: route {path}: "), keys, base)?
    } else {
        *base
    };
    let mut headers = target_headers.to_vec();
    for h in resolve_headers(cx, &r.headers, target)? {
        headers.retain(|o| o.name != h.name);
        headers.push(h);
    }
    let expect = match r.expect {
        // Most routes say nothing: they share one default (a fleet file has 20 000 routes).
        None => Expect::shared_default(),
        Some(raw_expect) => {
            if let Some(min) = &raw_expect.cert_min_days
                && !matches!(endpoint, Endpoint::Http { base } if base.starts_with("https:"))
            {
                return Err(cx.err(
                    min,
                    format!("target {target:?}: route {path}: expect.cert_min_days needs an https:// base_url (there is no certificate to check)"),
                ));
            }
            std::sync::Arc::new(resolve_expect(cx, &at, *raw_expect, target)?)
        }
    };
    Ok(Route {
        path,
        url,
        request,
        secret_request: display_base.is_some() || path_secret || body_secret,
        class: r.class,
        method,
        body,
        headers,
        expect,
        timing,
    })
}

/// Why `url` (`base_url` then `path`) is not a valid URL, if it is not. Under a base already
/// parsed, a path of printable ASCII that cannot be read as a new authority is a valid URL
/// whatever it holds (the URL parser reads any such path, query and fragment), and a fleet
/// file's 20 000 routes are checked without a parse each; anything else is parsed.
fn invalid_url(parsed_base: Option<&reqwest::Url>, path: &str, url: &str) -> Option<String> {
    if parsed_base.is_some() && plainly_valid_path(path) {
        return None;
    }
    url_of(parsed_base, path, url).err().map(|e| e.to_string())
}

/// An absolute path of printable ASCII (no space) that does not start a new authority.
fn plainly_valid_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.bytes().all(|b| b.is_ascii_graphic())
}

/// `url` (`base_url` then `path`) parsed as a URL. Under a base already parsed (a valid
/// `http(s)` URL without query or fragment) only the path is left to parse: joining the base's
/// path and `path` onto it parses the same characters as the whole URL would, without the
/// host. A path that a join would read as a new authority (`//…`, or `/\…` in an `http(s)`
/// URL) is parsed whole.
fn url_of(
    parsed_base: Option<&reqwest::Url>,
    path: &str,
    url: &str,
) -> Result<reqwest::Url, impl std::fmt::Display> {
    match parsed_base {
        Some(b) if !path.starts_with("//") && !path.starts_with("/\\") => {
            b.join(&format!("{}{path}", b.path().trim_end_matches('/')))
        }
        _ => reqwest::Url::parse(url),
    }
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
    let body_not_regex = e
        .body_not_regex
        .as_ref()
        .map(|s| compile(s, "expect.body_not_regex"))
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
    let mut json = Vec::with_capacity(e.json.len());
    for (path, value) in e.json {
        let check = json_check(cx, route, target, &path, value)?;
        json.push((path, check));
    }
    Ok(Expect {
        status: e.status.map_or_else(|| Expect::default().status, |s| s.0),
        body_contains: e.body_contains,
        body_regex,
        body_not_contains: e.body_not_contains,
        body_not_regex,
        json,
        headers,
        max_latency: e.max_latency.map(|x| x.0),
        cert_min: e.cert_min_days.map(|x| x.value.0),
    })
}

/// One `expect.json` value: a map of the forms of [`JsonCheck`] (`{ gte: 1, lt: 100 }`,
/// `{ max_age: 90s }`, …), else the value to equal. Errors are placed at the route (the YAML
/// crate gives map keys no position).
fn json_check(
    cx: &Ctx,
    route: &Spanned<()>,
    target: &str,
    path: &str,
    value: serde_json::Value,
) -> Result<JsonCheck, ConfigError> {
    let serde_json::Value::Object(map) = &value else {
        return Ok(JsonCheck::Equals(value));
    };
    let forms = map
        .keys()
        .filter(|k| FORM_KEYS.contains(&k.as_str()))
        .count();
    if forms == 0 || map.is_empty() {
        return Ok(JsonCheck::Equals(value));
    }
    let bad = |why: String| {
        cx.err(
            route,
            format!("target {target:?}: expect.json {path:?}: {why}"),
        )
    };
    if forms < map.len() {
        let others: Vec<&str> = map
            .keys()
            .filter(|k| !FORM_KEYS.contains(&k.as_str()))
            .map(String::as_str)
            .collect();
        return Err(bad(format!(
            "mixes check forms with other keys ({}); expected one of {{ exists: true }}, {{ absent: true }}, {{ gte: 1, lt: 100 }}, {{ regex: \"…\" }}, {{ max_age: 90s }}, or a plain value to equal",
            others.join(", ")
        )));
    }
    let single = |key: &str| map.len() == 1 && map.contains_key(key);
    let flag = |key: &str| match map.get(key) {
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        other => Err(bad(format!(
            "{key} takes true or false, not {}",
            other.map_or("nothing".to_string(), |v| v.to_string())
        ))),
    };
    if map.contains_key("exists") || map.contains_key("absent") {
        if !(single("exists") || single("absent")) {
            return Err(bad("exists and absent go alone in their map".into()));
        }
        let exists = match map.get("exists") {
            Some(_) => flag("exists")?,
            None => !flag("absent")?,
        };
        return Ok(JsonCheck::Exists(exists));
    }
    if let Some(pattern) = map.get("regex") {
        let serde_json::Value::String(p) = pattern else {
            return Err(bad(format!("regex takes a string, not {pattern}")));
        };
        if !single("regex") {
            return Err(bad("regex goes alone in its map".into()));
        }
        let at = Spanned::new(p.clone(), route.referenced, route.defined);
        return Ok(JsonCheck::Regex(cx.regex(
            &at,
            target,
            "expect.json regex",
        )?));
    }
    if let Some(age) = map.get("max_age") {
        if !single("max_age") {
            return Err(bad("max_age goes alone in its map".into()));
        }
        let parsed = age
            .as_str()
            .and_then(|s| humantime::parse_duration(s.trim()).ok())
            .filter(|d| !d.is_zero());
        return match parsed {
            Some(d) => Ok(JsonCheck::MaxAge(d)),
            None => Err(bad(format!(
                "max_age {age} is not a duration; expected e.g. 90s, 5m, 1h"
            ))),
        };
    }
    let mut cmps = Vec::new();
    for cmp in Cmp::ALL {
        match map.get(cmp.key()) {
            None => {}
            Some(serde_json::Value::Number(n)) => cmps.push((cmp, n.clone())),
            Some(other) => {
                return Err(bad(format!("{} takes a number, not {other}", cmp.key())));
            }
        }
    }
    Ok(JsonCheck::Compare(cmps))
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;
    use crate::expect::JsonCheck;

    fn route(expect_or_headers: &str) -> String {
        format!("{HEAD}    routes:\n      - path: /ok\n        {expect_or_headers}\n")
    }

    #[test]
    fn routes_without_expect_share_one_default_and_the_others_keep_their_own() {
        let yaml = format!(
            "{HEAD}    routes:\n      - path: /a\n      - path: /b\n      - {{ path: /c, expect: {{ status: 204 }} }}\n"
        );
        let plan = crate::config::parse(&yaml, "p.yaml", &|_| None).expect("valid");
        let r = &plan.targets[0].routes;
        assert!(std::sync::Arc::ptr_eq(&r[0].expect, &r[1].expect));
        assert_eq!(r[0].expect.status, vec![(200, 399)]);
        assert_eq!(r[2].expect.status, vec![(204, 204)]);
        assert!(!r[2].expect.status_ok(200));
    }

    #[test]
    fn a_route_url_checked_under_its_parsed_base_is_the_url_parsed_whole() {
        for base in [
            "http://127.0.0.1:9",
            "http://h/api",
            "https://[::1]:8443/x/y",
            "http://user@h:1",
        ] {
            let parsed = reqwest::Url::parse(base).unwrap();
            let base = parsed.as_str().trim_end_matches('/').to_string();
            for path in [
                "/a",
                "/a/../../b",
                "/%zz/%41",
                "/a?b=c#d",
                "//evil.example/x",
                "/\\evil.example/x",
                "/\u{fc}ber",
                "/a:b@c",
                "/[x]",
                "/",
                "/./.",
            ] {
                let url = format!("{base}{path}");
                let whole = reqwest::Url::parse(&url).map(|u| u.to_string());
                let under = super::url_of(Some(&parsed), path, &url).map(|u| u.to_string());
                assert_eq!(
                    whole.as_ref().ok(),
                    under.as_ref().ok(),
                    "{url}: {whole:?} / {}",
                    under.as_ref().map_or_else(|e| e.to_string(), String::clone)
                );
            }
        }
    }

    proptest::proptest! {
        /// The fast path says "valid" only where the URL parser agrees, under every kind of
        /// base (host, path, IPv6 and port, user).
        #[test]
        fn a_path_passed_without_a_parse_always_parses(path in "/[!-~]{0,40}") {
            for base in ["http://127.0.0.1:9", "http://h/api", "https://[::1]:8443/x/y", "http://user@h:1"] {
                let parsed = reqwest::Url::parse(base).unwrap();
                let base = parsed.as_str().trim_end_matches('/');
                let url = format!("{base}{path}");
                if super::plainly_valid_path(&path) {
                    proptest::prop_assert!(super::invalid_url(Some(&parsed), &path, &url).is_none());
                    proptest::prop_assert!(reqwest::Url::parse(&url).is_ok(), "{}", url);
                }
            }
        }
    }

    #[test]
    fn paths_that_could_start_an_authority_or_leave_ascii_are_parsed() {
        for path in [
            "//evil.example/x",
            "/\\evil.example",
            "/\u{fc}ber",
            "/a b",
            "a",
            "",
        ] {
            assert!(!super::plainly_valid_path(path), "{path:?}");
        }
        assert!(super::plainly_valid_path("/api/v1/health?x=%zz#f"));
    }

    #[test]
    fn framing_headers_are_refused_where_they_are_written() {
        for (name, why) in [
            ("Content-Length", "a body that never comes"),
            ("transfer-encoding", "a body that never comes"),
            ("Connection", "manages its connections"),
        ] {
            let got = err(&route(&format!("headers: {{ {name}: \"5\" }}")));
            assert!(
                got.starts_with(&format!(
                    "p.yaml:6:{}: target \"a\": header {name} cannot be set:",
                    22 + name.len()
                )) && got.contains(why)
                    && got.ends_with("; remove it"),
                "{got}"
            );
        }
        let target_level = "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    headers: { Content-Length: \"0\" }\n    routes: [ { path: /ok } ]\n";
        assert_err(
            target_level,
            "p.yaml:4:32: target \"a\": header Content-Length cannot be set",
        );
        // Any other header is the route's own business.
        crate::config::parse(
            &route("headers: { Host: example.org, Accept: \"*/*\" }"),
            "p.yaml",
            &|_| None,
        )
        .unwrap();
    }

    #[test]
    fn follow_redirects_is_inherited_from_defaults_and_targets_and_bounded() {
        let yaml = "defaults: { follow_redirects: 3 }\ntargets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: /d } ]\n  - name: b\n    base_url: http://127.0.0.1:1\n    follow_redirects: 1\n    routes: [ { path: /t }, { path: /r, follow_redirects: 0 } ]\n";
        let plan = crate::config::parse(yaml, "p.yaml", &|_| None).unwrap();
        let hops = |t: usize, r: usize| plan.targets[t].routes[r].timing.follow_redirects;
        assert_eq!((hops(0, 0), hops(1, 0), hops(1, 1)), (3, 1, 0));
        assert_eq!(
            crate::config::parse(TARGET, "p.yaml", &|_| None)
                .unwrap()
                .targets[0]
                .routes[0]
                .timing
                .follow_redirects,
            0
        );
        assert_err(
            &route("follow_redirects: 21"),
            "p.yaml:6:27: target \"a\": route /ok: follow_redirects 21 is out of range; expected 0 to 20",
        );
    }

    #[test]
    fn json_forms_are_read_and_their_mistakes_named() {
        let yaml = route(
            "expect: { json: { a: { exists: true }, b: { absent: true }, c: { gte: 1, lt: 100 }, d: { regex: \"^v\" }, e: { max_age: 90s }, f: { x: 1 } } }",
        );
        let plan = crate::config::parse(&yaml, "p.yaml", &|_| None).unwrap();
        let json = &plan.targets[0].routes[0].expect.json;
        assert!(matches!(json[0].1, JsonCheck::Exists(true)), "{json:?}");
        assert!(matches!(json[1].1, JsonCheck::Exists(false)), "{json:?}");
        assert!(
            matches!(&json[2].1, JsonCheck::Compare(c) if c.len() == 2),
            "{json:?}"
        );
        assert!(matches!(json[3].1, JsonCheck::Regex(_)), "{json:?}");
        assert!(
            matches!(json[4].1, JsonCheck::MaxAge(d) if d.as_secs() == 90),
            "{json:?}"
        );
        // A map of other keys is a value to equal.
        assert!(matches!(json[5].1, JsonCheck::Equals(_)), "{json:?}");
        for (bad, want) in [
            (
                "{ gte: \"1\" }",
                "expect.json \"f\": gte takes a number, not \"1\"",
            ),
            ("{ exists: 1 }", "exists takes true or false, not 1"),
            (
                "{ exists: true, gte: 1 }",
                "exists and absent go alone in their map",
            ),
            ("{ max_age: soon }", "max_age \"soon\" is not a duration"),
            ("{ regex: \"(\" }", "expect.json regex"),
            (
                "{ gte: 1, status: ok }",
                "mixes check forms with other keys (status)",
            ),
        ] {
            let got = crate::config::parse(
                &route(&format!("expect: {{ json: {{ f: {bad} }} }}")),
                "p.yaml",
                &|_| None,
            )
            .map(|_| ())
            .expect_err(bad)
            .to_string();
            assert!(
                got.starts_with("p.yaml:5:15: target \"a\": ") && got.contains(want),
                "{bad}: {got}"
            );
        }
    }
}
