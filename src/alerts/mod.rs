//! What routewatch tells the outside world about itself after a run: notifications of state
//! changes (`notify:`) and the dead-man's-switch ping (`ping:`, `check --ping`).
//!
//! Both are plain HTTP requests sent after the report is out, together bounded by
//! [`SEND_TIMEOUT`]; a failure is a warning and never changes the report or the exit code.
//! URLs and headers may carry secrets (`${VAR}`, a ping URL's UUID): a URL is only ever shown
//! as its scheme, host and port.

pub mod notify;
pub mod ping;

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};

use crate::plan::Header;

/// How long everything sent after a run may take, in all.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The start ping comes before any probing: it may hold the run back only this long.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// One request to send: where, how, and what it is for the log line.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `notify` or `ping`: the log event is `<kind>_failed`.
    pub kind: &'static str,
    /// What it is, for the log line (an event and a target, `start`, `exit 1`).
    pub what: String,
    pub url: reqwest::Url,
    pub headers: Vec<Header>,
    pub content_type: &'static str,
    pub body: String,
}

/// Checks a URL given on the command line or in the file: `http://` or `https://` with a host.
pub fn parse_http_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

/// The URL as printed: scheme, host and port, never the user, the path or the query (a
/// webhook's path or a ping's UUID is its secret).
pub fn shown(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}/…", url.scheme()),
        None => format!("{}://{host}/…", url.scheme()),
    }
}

/// Send every request at once, all within [`SEND_TIMEOUT`]; each failure is one `(kind,
/// message)` pair, in the order given. The caller adds the stop signal.
pub async fn send_all(items: &[Outgoing], user_agent: &str) -> Vec<(&'static str, String)> {
    let client = match client(user_agent, SEND_TIMEOUT) {
        Ok(c) => c,
        Err(e) => return items.iter().map(|i| (i.kind, e.clone())).collect(),
    };
    // Each request has its own failure line, within the one deadline they share.
    let deadline = tokio::time::Instant::now() + SEND_TIMEOUT;
    let sends = items.iter().map(|item| {
        let client = client.clone();
        async move {
            let sent = tokio::time::timeout_at(deadline, send(&client, item))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "to {}: no answer within {}",
                        shown(&item.url),
                        humantime::format_duration(SEND_TIMEOUT)
                    ))
                });
            sent.err()
                .map(|e| (item.kind, format!("{}: {e}", item.what)))
        }
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Proxies from the environment are not used (as for probes) and redirects are not followed
/// (a redirect would carry the headers elsewhere).
pub(crate) fn client(user_agent: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    // The start ping comes before the prober has installed it (idempotent).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(user_agent)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3).min(timeout))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {e}"))
}

/// POST one request; `Err` says why in a line that holds no secret.
pub(crate) async fn send(client: &reqwest::Client, item: &Outgoing) -> Result<(), String> {
    let shown = shown(&item.url);
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static(item.content_type),
    );
    for h in &item.headers {
        headers.insert(h.name.clone(), h.value.clone());
    }
    let resp = client
        .post(item.url.clone())
        .headers(headers)
        .body(item.body.clone())
        .send()
        .await
        .map_err(|e| {
            let e = e.without_url();
            format!("to {shown}: {}", crate::probe::error_chain(&e))
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // Only the status: a receiver's answer may echo what was sent (a header, the URL).
    Err(format!("to {shown}: HTTP {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_path_user_or_query() {
        let u = reqwest::Url::parse("https://u:pw@hc-ping.com/5f2a-uuid?x=secret").unwrap();
        assert_eq!(shown(&u), "https://hc-ping.com/…");
        let u = reqwest::Url::parse("http://127.0.0.1:8080/hooks/T0/B0/xyz").unwrap();
        assert_eq!(shown(&u), "http://127.0.0.1:8080/…");
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!(parse_http_url("https://hc-ping.com/abc").is_ok());
        assert!(parse_http_url("ftp://example.org/x").is_err());
        assert!(parse_http_url("unix:/run/x.sock").is_err());
        assert!(parse_http_url("not a url").is_err());
    }
}
