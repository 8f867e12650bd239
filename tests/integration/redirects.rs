//! `follow_redirects: N` against real local servers: chains followed and reported (JSON and
//! text), the limit and loops refused naming the chain, 303 turning into GET and 307 keeping
//! the method and body, secret headers kept from another origin, and a hop that hangs judged
//! as hung only on the target's own origin.

use std::sync::Arc;

use routewatch::outcome::Outcome;
use routewatch::report;
use serde_json::Value;

use crate::common::{self, Reply, Script, Server, http, ok};

fn redirect(status: u16, to: &str) -> Reply {
    http(status, &[("Location", to)], "")
}

#[tokio::test]
async fn a_chain_within_the_limit_is_followed_and_each_hop_reported() {
    // A relative Location, then an absolute one (which needs the server's own port).
    let port = Arc::new(std::sync::OnceLock::<u16>::new());
    let p = Arc::clone(&port);
    let s = Server::start(Script::each(move |r| match r.path.as_str() {
        "/a" => redirect(302, "b"),
        "/b" => redirect(
            301,
            &format!("http://127.0.0.1:{}/c?from=b", p.get().unwrap()),
        ),
        "/c?from=b" => ok("landed"),
        _ => http(404, &[], ""),
    }))
    .await;
    port.set(s.addr.port()).unwrap();
    let yaml = common::file(
        &s.base_url(),
        "retries: 0",
        "- { path: /a, follow_redirects: 2, expect: { status: 200, body_contains: landed } }",
    );
    let report = common::check(&yaml).await;
    let r = &report.targets[0].routes[0];
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    assert_eq!(r.status_code, Some(200));
    let hops: Vec<(u16, String)> = r
        .redirects
        .iter()
        .map(|h| (h.status, h.location.clone()))
        .collect();
    assert_eq!(
        hops,
        vec![(302, s.url("/b")), (301, s.url("/c?from=b"))],
        "{r:#?}"
    );
    let paths: Vec<String> = s.stats.requests().iter().map(|q| q.path.clone()).collect();
    assert_eq!(paths, ["/a", "/b", "/c?from=b"]);

    let doc: Value = serde_json::from_str(&report::json(&report)).unwrap();
    assert_eq!(
        doc["targets"][0]["routes"][0]["redirects"],
        serde_json::json!([
            { "status": 302, "location": s.url("/b") },
            { "status": 301, "location": s.url("/c?from=b") },
        ])
    );
    let text = report::text(&report, false);
    // One route is one route.
    assert!(text.contains("(1 route in "), "{text}");
    assert!(
        text.contains(&format!(
            "app /a: redirected 302 {} → 301 {}",
            s.url("/b"),
            s.url("/c?from=b")
        )),
        "{text}"
    );

    // Without follow_redirects the 302 is judged as it is (today's behaviour), and no hop is
    // reported.
    let yaml = common::file(&s.base_url(), "retries: 0", "- { path: /a }");
    let r = common::one_route(&yaml).await;
    assert_eq!((r.outcome, r.status_code), (Outcome::Ok, Some(302)));
    assert!(r.redirects.is_empty());
    let doc: Value = serde_json::from_str(&report::json(&common::check(&yaml).await)).unwrap();
    assert!(doc["targets"][0]["routes"][0].get("redirects").is_none());
}

#[tokio::test]
async fn more_hops_than_allowed_and_loops_are_http_errors_naming_the_chain() {
    let s = Server::start(Script::each(|r| match r.path.as_str() {
        "/1" => redirect(302, "/2"),
        "/2" => redirect(302, "/3"),
        "/3" => redirect(307, "/4"),
        "/4" => ok("too far"),
        "/loop" => redirect(302, "/loop2"),
        "/loop2" => redirect(302, "/loop"),
        _ => http(404, &[], ""),
    }))
    .await;
    let yaml = common::file(
        &s.base_url(),
        "retries: 0",
        "- { path: /1, follow_redirects: 2 }",
    );
    let r = common::one_route(&yaml).await;
    assert_eq!(
        (r.outcome, r.status_code),
        (Outcome::HttpError, Some(307)),
        "{r:#?}"
    );
    let e = r.error.unwrap();
    assert_eq!(
        e,
        format!(
            "more than 2 redirects (follow_redirects 2): {} → 302 {} → 302 {} → 307 {}",
            s.url("/1"),
            s.url("/2"),
            s.url("/3"),
            s.url("/4")
        )
    );
    // The hop past the limit is never requested.
    assert!(!s.stats.requests().iter().any(|q| q.path == "/4"));

    let yaml = common::file(
        &s.base_url(),
        "retries: 0",
        "- { path: /loop, follow_redirects: 10 }",
    );
    let r = common::one_route(&yaml).await;
    assert_eq!(r.outcome, Outcome::HttpError, "{r:#?}");
    assert_eq!(
        r.error.unwrap(),
        format!(
            "redirect loop: {} → 302 {} → 302 {}",
            s.url("/loop"),
            s.url("/loop2"),
            s.url("/loop")
        )
    );
    // Bounded: /loop and /loop2 once each.
    let n = s
        .stats
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/loop"))
        .count();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_303_turns_into_get_and_a_307_keeps_the_method_and_body() {
    let s = Server::start(Script::each(|r| match r.path.as_str() {
        "/see-other" => redirect(303, "/result"),
        "/temporary" => redirect(307, "/again"),
        _ => ok("fine"),
    }))
    .await;
    let yaml = common::file(
        &s.base_url(),
        "retries: 0\nfollow_redirects: 1",
        "- { path: /see-other, method: POST, body: '{\"q\":1}', headers: { Content-Type: application/json } }\n- { path: /temporary, method: POST, body: '{\"q\":2}', headers: { Content-Type: application/json } }",
    );
    let report = common::check(&yaml).await;
    for r in &report.targets[0].routes {
        assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    }
    let reqs = s.stats.requests();
    let get = |p: &str| reqs.iter().find(|q| q.path == p).unwrap().clone();
    let result = get("/result");
    assert_eq!(result.method, "GET");
    assert!(result.body.is_empty());
    assert_eq!(result.header("content-type"), None);
    let again = get("/again");
    assert_eq!(again.method, "POST");
    assert_eq!(again.body, b"{\"q\":2}");
    assert_eq!(again.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn secret_headers_never_follow_a_redirect_to_another_origin() {
    const TOKEN: &str = "tok-4f9a1c22b7";
    // The other origin: `localhost` on another port (another host and port than 127.0.0.1).
    let elsewhere = Server::start(Script::always(ok("elsewhere"))).await;
    let other = format!("http://localhost:{}/landing", elsewhere.addr.port());
    let to = other.clone();
    let home = Server::start(Script::each(move |r| match r.path.as_str() {
        "/away" => redirect(302, &to),
        "/stay" => redirect(302, "/home"),
        _ => ok("home"),
    }))
    .await;
    let yaml = format!(
        "targets:\n  - name: app\n    base_url: {}\n    retries: 0\n    follow_redirects: 2\n    headers: {{ Authorization: \"Bearer ${{RW_REDIRECT_TOKEN}}\", X-Api-Key: \"${{RW_REDIRECT_TOKEN}}\", Cookie: \"session=1\", X-Plain: visible }}\n    routes: [ {{ path: /away }}, {{ path: /stay }} ]\n",
        home.base_url()
    );
    let report = common::check_plan(common::plan_with_env(&yaml, &|k| {
        (k == "RW_REDIRECT_TOKEN").then(|| TOKEN.to_string())
    }))
    .await;
    for r in &report.targets[0].routes {
        assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
        assert_eq!(r.redirects.len(), 1, "{r:#?}");
    }
    // The hostile (or merely other) origin got the plain header and no credential.
    let got = elsewhere.stats.requests();
    assert_eq!(got.len(), 1);
    let q = &got[0];
    assert_eq!(q.path, "/landing");
    assert_eq!(q.header("x-plain"), Some("visible"));
    for name in ["authorization", "x-api-key", "cookie"] {
        assert_eq!(q.header(name), None, "{name} went to another origin: {q:?}");
    }
    assert!(!format!("{q:?}").contains(TOKEN));
    // The same origin gets them on every hop.
    let home_reqs = home.stats.requests();
    let landed = home_reqs.iter().find(|q| q.path == "/home").unwrap();
    assert_eq!(
        landed.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(landed.header("x-api-key"), Some(TOKEN));
    assert_eq!(landed.header("cookie"), Some("session=1"));
}

#[tokio::test]
async fn a_hop_that_hangs_is_hung_at_home_and_not_evidence_elsewhere() {
    // Same origin: the service answers /start, then hangs on where it sent us: hung.
    let home = Server::start(Script::each(|r| match r.path.as_str() {
        "/start" => redirect(302, "/stuck"),
        _ => Reply::Hang,
    }))
    .await;
    let yaml = common::file(
        &home.base_url(),
        "retries: 0\ntimeout: 400ms",
        "- { path: /start, follow_redirects: 3 }",
    );
    let r = common::one_route(&yaml).await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:#?}");
    let e = r.error.unwrap();
    assert!(
        e.starts_with("no complete response within 400ms (after redirects: ")
            && e.contains(&home.url("/stuck")),
        "{e}"
    );
    assert_eq!(r.redirects.len(), 1);

    // Another origin hangs: the target answered (302); never a hung outcome of the target.
    let stuck = Server::start(Script::always(Reply::Hang)).await;
    let to = stuck.url("/x");
    let away = Server::start(Script::each(move |_| redirect(302, &to))).await;
    let yaml = common::file(
        &away.base_url(),
        "retries: 0\ntimeout: 400ms",
        "- { path: /go, follow_redirects: 3 }",
    );
    let r = common::one_route(&yaml).await;
    assert_eq!(
        (r.outcome, r.status_code),
        (Outcome::HttpError, Some(302)),
        "{r:#?}"
    );
    let e = r.error.unwrap();
    assert!(
        e.starts_with(&format!(
            "redirected to another origin, {}, which failed: no complete response within 400ms;",
            stuck.url("/x")
        )) && e.contains("not evidence of a hang"),
        "{e}"
    );
    // Another origin that refuses: named as the place that failed, not the target.
    let closed = common::dead_port().await;
    let to = format!("http://127.0.0.1:{closed}/x");
    let away2 = Server::start(Script::each(move |_| redirect(307, &to))).await;
    let yaml = common::file(
        &away2.base_url(),
        "retries: 0",
        "- { path: /go, follow_redirects: 1 }",
    );
    let r2 = common::one_route(&yaml).await;
    assert_eq!(
        (r2.outcome, r2.status_code),
        (Outcome::HttpError, Some(307)),
        "{r2:#?}"
    );
    let e = r2.error.unwrap();
    assert!(
        e.contains(&format!(
            "which failed: connection refused by 127.0.0.1:{closed}"
        )),
        "{e}"
    );
    // The whole chain had the one deadline: the hop got what was left of 400ms, no more.
    assert!(
        r.elapsed < std::time::Duration::from_secs(5),
        "{:?}",
        r.elapsed
    );
}

#[tokio::test]
async fn a_chain_never_outlives_its_attempts_timeout() {
    // Each hop is slow but within the timeout on its own; the chain as a whole is not.
    let s = Server::start(Script::each(|r| {
        let n: u32 = r.path.trim_start_matches("/h").parse().unwrap_or(0);
        common::delayed(common::ms(150), redirect(302, &format!("/h{}", n + 1)))
    }))
    .await;
    let yaml = common::file(
        &s.base_url(),
        "retries: 0\ntimeout: 500ms",
        "- { path: /h0, follow_redirects: 20 }",
    );
    let r = common::one_route(&yaml).await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:#?}");
    // 500ms of 150ms hops: at most 4 requests started, whatever the machine's load.
    let n = s.stats.request_count();
    assert!((1..=4).contains(&n), "{n} requests");
}

#[tokio::test]
async fn a_body_with_a_secret_never_follows_a_307_to_another_origin() {
    const TOKEN: &str = "body-tok-77c0e1";
    let elsewhere = Server::start(Script::always(ok("elsewhere"))).await;
    let other = format!("http://localhost:{}/collect", elsewhere.addr.port());
    let to = other.clone();
    let home = Server::start(Script::each(move |r| match r.path.as_str() {
        "/away" => redirect(307, &to),
        "/stay" => redirect(307, "/home"),
        _ => ok("home"),
    }))
    .await;
    let yaml = format!(
        "targets:\n  - name: app\n    base_url: {}\n    retries: 0\n    follow_redirects: 2\n    routes:\n      - {{ path: /away, method: POST, body: '{{\"token\":\"${{RW_BODY_TOKEN}}\"}}' }}\n      - {{ path: /stay, method: POST, body: '{{\"token\":\"${{RW_BODY_TOKEN}}\"}}' }}\n",
        home.base_url()
    );
    let report = common::check_plan(common::plan_with_env(&yaml, &|k| {
        (k == "RW_BODY_TOKEN").then(|| TOKEN.to_string())
    }))
    .await;
    let away = &report.targets[0].routes[0];
    assert_eq!(away.outcome, Outcome::HttpError, "{away:#?}");
    let why = away.error.clone().unwrap_or_default();
    assert!(
        why.contains("another origin") && why.contains("${VAR}") && !why.contains(TOKEN),
        "{why}"
    );
    assert!(
        elsewhere.stats.requests().is_empty(),
        "the other origin got nothing"
    );
    // On the route's own origin the body goes along, as a 307 asks.
    let stay = &report.targets[0].routes[1];
    assert_eq!(stay.outcome, Outcome::Ok, "{stay:#?}");
    let home_reqs = home.stats.requests();
    let landed = home_reqs.iter().find(|q| q.path == "/home").unwrap();
    assert_eq!(landed.body, format!("{{\"token\":\"{TOKEN}\"}}").as_bytes());
}
