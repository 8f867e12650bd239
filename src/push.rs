//! `check --push URL`: send the run's metrics (the same text as `--format prometheus`) to a
//! Prometheus Pushgateway, for CI jobs and hosts without node_exporter's textfile collector.
//!
//! The URL is the Pushgateway's grouping path, e.g.
//! `http://pushgateway:9091/metrics/job/routewatch/instance/web-1`. The metrics replace that
//! group (HTTP `PUT`). A failed push is a warning: it never changes the run's exit code.

use std::time::Duration;

/// How long the push may take in all; the run's own result is already known.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the URL before anything is probed: `http://` or `https://` with a host.
pub fn parse_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        format!("--push {raw:?}: {e}; expected http(s)://host:9091/metrics/job/NAME")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "--push {raw:?}: expected http(s)://host:9091/metrics/job/NAME"
        ));
    }
    Ok(url)
}

/// PUT the exposition text to `url`. Proxies from the environment are not used (as for
/// probes) and redirects are not followed.
pub async fn push(url: reqwest::Url, user_agent: &str, metrics: String) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .user_agent(user_agent)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(PUSH_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot set up the push: {e}"))?;
    let shown = shown(&url);
    let resp = client
        .put(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(metrics)
        .send()
        .await
        .map_err(|e| {
            let e = e.without_url();
            format!("push to {shown} failed: {}", crate::probe::error_chain(&e))
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // The gateway says why (e.g. a metric it refuses): the first line of its answer.
    let mut resp = resp;
    let mut body = Vec::new();
    while body.len() < 512 {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    let why = String::from_utf8_lossy(&body);
    let why: String = why
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if why.trim().is_empty() {
        Err(format!("push to {shown} failed: HTTP {status}"))
    } else {
        Err(format!(
            "push to {shown} failed: HTTP {status}: {}",
            why.trim()
        ))
    }
}

/// What of the push URL's credentials must never be printed, in any form a gateway may echo
/// back in an error answer: the password as written and decoded, and the `Basic` token the
/// client derives from the userinfo.
pub fn url_secrets(url: &reqwest::Url) -> Vec<String> {
    use base64::Engine;
    let Some(password) = url.password() else {
        return Vec::new();
    };
    let decode = |s: &str| {
        String::from_utf8_lossy(&percent_encoding::percent_decode_str(s).collect::<Vec<u8>>())
            .into_owned()
    };
    let (user, decoded) = (decode(url.username()), decode(password));
    let token = |p: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}").as_bytes())
    };
    let mut out = vec![
        password.to_string(),
        token(password),
        token(&decoded),
        decoded,
    ];
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    out
}

/// The URL as printed: without a password (`https://user:secret@…`).
fn shown(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.to_string()
}
