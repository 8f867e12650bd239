//! The top-level keys about routewatch itself: `ping:` (and `notify:`), resolved.

use serde_saphyr::Spanned;

use super::ConfigError;
use super::context::Ctx;
use super::secrets::{expand_env, url_passwords};
use crate::alerts::ping::Ping;

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
