//! The top-level keys about routewatch itself: `ping:` (and `notify:`), resolved.

use serde_saphyr::Spanned;

use super::ConfigError;
use super::context::Ctx;
use super::raw::RawNotify;
use super::secrets::{expand_env, url_passwords};
use crate::alerts::notify::{self, DEFAULT_ON, Notifier};
use crate::alerts::ping::Ping;

/// `notify:`, each entry checked where it is written.
pub(super) fn resolve_notify(cx: &Ctx, raw: &[RawNotify]) -> Result<Vec<Notifier>, ConfigError> {
    let mut out: Vec<Notifier> = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let scope = format!("notify[{i}]: ");
        let format = n.format.unwrap_or_default();
        let key = notify::key(&n.url.value, format);
        if out.iter().any(|o| o.key == key) {
            return Err(cx.err(
                &n.url,
                format!("{scope}the same url and format twice; each receiver once"),
            ));
        }
        let mut on = n.on.clone().unwrap_or_else(|| DEFAULT_ON.to_vec());
        on.sort();
        on.dedup();
        out.push(Notifier {
            key,
            url: http_url(cx, &format!("{scope}url"), &n.url)?,
            format,
            on,
            headers: super::route::resolve_headers(cx, &n.headers, &format!("notify[{i}]"))?,
            reminder: cx.positive(&scope, "reminder", n.reminder.as_ref())?,
            after_runs: cx
                .count(&scope, "after_runs", n.after_runs.as_ref(), 1..=10_000)?
                .map_or(1, |c| c as u32),
        });
    }
    Ok(out)
}

/// `ping: URL`, `${VAR}` expanded. An error never shows the expanded value.
pub(super) fn resolve_ping(cx: &Ctx, v: &Spanned<String>) -> Result<Ping, ConfigError> {
    Ok(Ping {
        url: http_url(cx, "ping", v)?,
    })
}

/// An `http(s)://` URL with `${VAR}` expanded; a password in it is a secret too.
fn http_url(cx: &Ctx, key: &str, v: &Spanned<String>) -> Result<reqwest::Url, ConfigError> {
    let (expanded, secret) = expand_env(cx, v)?;
    let url = crate::alerts::parse_http_url(&expanded).map_err(|e| {
        let shown = if secret {
            "(from the environment)".to_string()
        } else {
            format!("{:?}", super::secrets::without_password(&v.value))
        };
        cx.err(v, format!("{key} {shown}: {e}"))
    })?;
    cx.secrets
        .borrow_mut()
        .extend(url_passwords(&expanded, &url));
    Ok(url)
}
