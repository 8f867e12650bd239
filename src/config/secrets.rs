//! Secrets in the file: `${VAR}` from the environment, and the password of a URL's userinfo,
//! kept out of every URL and every message.

use reqwest::header::HeaderValue;
use serde_saphyr::Spanned;

use super::ConfigError;
use super::context::Ctx;
use crate::plan::Header;

/// The password of a URL's userinfo, as written in `raw`, as the URL serialises it and
/// percent-decoded (a very short one is only redacted as a whole value, see
/// `plan::MIN_REDACTED_CHARS`).
pub(super) fn url_passwords(raw: &str, url: &reqwest::Url) -> Vec<String> {
    let Some(encoded) = url.password() else {
        return Vec::new();
    };
    let mut out = vec![encoded.to_string(), percent_decode(encoded)];
    // As written: between "scheme://user:" and the last '@' of the authority.
    if let Some((_, rest)) = raw.trim().split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, written)) = userinfo.split_once(':')
        {
            out.push(written.to_string());
            out.push(percent_decode(written));
        }
    }
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    out
}

/// Credentials from a URL's userinfo (`http://user:password@host`), taken out of the URL:
/// reports print URLs, so the URL keeps no userinfo and the credentials travel as the same
/// sensitive `Authorization: Basic` header the HTTP client would have derived from it. The
/// password (as written, as serialised, percent-decoded) and the header's token are secrets.
pub(super) struct Credentials {
    pub(super) header: Header,
    pub(super) secrets: Vec<String>,
}

pub(super) fn take_userinfo(
    raw: &str,
    url: &mut reqwest::Url,
) -> Result<Option<Credentials>, String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decoded = |s: &str| {
        String::from_utf8(percent_decode_bytes(s)).map_err(|_| {
            "its user name or password is not UTF-8 after percent-decoding".to_string()
        })
    };
    let user = decoded(url.username())?;
    let password = url.password().map(decoded).transpose()?;
    let mut secrets = url_passwords(raw, url);
    let token = base64(format!("{user}:{}", password.unwrap_or_default()).as_bytes());
    let mut value =
        HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    if url.password().is_some() {
        secrets.push(token);
    }
    // Infallible for http(s) URLs with a host, the only ones that get here.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(Some(Credentials {
        header: Header {
            name: reqwest::header::AUTHORIZATION,
            value,
            secret: true,
        },
        secrets,
    }))
}

pub(super) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s)).into_owned()
}

pub(super) fn percent_decode_bytes(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// A URL for an error message: the password of its userinfo replaced by `***` (textually,
/// so it works on URLs that do not parse).
pub(super) fn without_password(raw: &str) -> String {
    if let Some((scheme, rest)) = raw.split_once("://") {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            return format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
        }
    }
    raw.to_string()
}

/// Expand `${VAR}` from the environment. Returns the value and whether anything was expanded
/// (then the value is a secret and never printed).
pub(super) fn expand_env(cx: &Ctx, v: &Spanned<String>) -> Result<(String, bool), ConfigError> {
    let mut out = String::with_capacity(v.value.len());
    let mut rest = v.value.as_str();
    let mut secret = false;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| cx.err(v, "unclosed ${ in value; expected ${VAR}"))?;
        let var = &after[..end];
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(cx.err(
                v,
                format!("invalid variable name {var:?} in ${{…}}; expected letters, digits and _"),
            ));
        }
        if let Some(kind) = cx.untrusted {
            return Err(cx.refuse(
                v,
                format!(
                    "${{{var}}} is not expanded in a {kind} that others can write: it would send root's environment wherever they choose; make the file and every directory on its way root's, not writable by group or others{}",
                    super::context::insecure_hint(kind)
                ),
            ));
        }
        let value = match (cx.env)(var) {
            Some(value) => value,
            None if cx.lenient => {
                cx.warn(
                    v,
                    format!("environment variable {var} is not set (referenced as ${{{var}}}); `check` will refuse this file until it is"),
                );
                String::new()
            }
            None => {
                return Err(cx.err(
                    v,
                    format!("environment variable {var} is not set (referenced as ${{{var}}})"),
                ));
            }
        };
        if !value.is_empty() {
            cx.secrets.borrow_mut().push(value.clone());
        }
        out.push_str(&value);
        secret = true;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if secret && !out.is_empty() {
        cx.secrets.borrow_mut().push(out.clone());
    }
    Ok((out, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::testing::*;
    use crate::plan::Endpoint;

    #[test]
    fn a_value_shared_by_many_targets_is_one_secret() {
        let mut yaml = String::from("targets:\n");
        for i in 0..200 {
            yaml.push_str(&format!(
                "  - {{ name: t{i}, base_url: http://127.0.0.1:9, routes: [ {{ path: \"/h?k=${{TOK}}\" }} ] }}\n"
            ));
        }
        let plan = parse(&yaml, "p.yaml", &|_| Some("abcdefghij".into())).unwrap();
        let mut distinct = plan.secrets.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            plan.secrets.len(),
            distinct.len(),
            "{:?}",
            &plan.secrets[..4]
        );
    }

    #[test]
    fn a_password_in_a_base_url_is_a_secret_and_leaves_every_url() {
        let plan = parse(
            "targets:\n  - name: a\n    base_url: http://user:s3cr%40t@127.0.0.1:1/api\n    routes: [ { path: /ok } ]\n",
            "p.yaml",
            &|_| None,
        )
        .unwrap();
        for secret in ["s3cr%40t", "s3cr@t"] {
            assert!(
                plan.secrets.iter().any(|s| s == secret),
                "{:?}",
                plan.secrets
            );
        }
        let t = &plan.targets[0];
        assert_eq!(
            t.endpoint,
            Endpoint::Http {
                base: "http://127.0.0.1:1/api".into()
            }
        );
        assert_eq!(t.routes[0].url, "http://127.0.0.1:1/api/ok");
        // The credentials still go out, as the HTTP client would have sent them.
        let auth = &t.routes[0].headers[0];
        assert_eq!(auth.name, reqwest::header::AUTHORIZATION);
        assert_eq!(auth.value, format!("Basic {}", base64(b"user:s3cr@t")));
        assert!(auth.secret && auth.value.is_sensitive());
        assert!(
            plan.redact(&format!("{auth:?} s3cr@t s3cr%40t"))
                .matches("<redacted>")
                .count()
                == 2
        );

        // An explicit Authorization header wins over the userinfo.
        let plan = parse(
            "targets:\n  - name: a\n    base_url: http://user:hunter2@x\n    headers: { Authorization: Bearer t }\n    routes: [ { path: /ok } ]\n",
            "p.yaml",
            &|_| None,
        )
        .unwrap();
        let auths: Vec<_> = plan.targets[0].routes[0]
            .headers
            .iter()
            .filter(|h| h.name == reqwest::header::AUTHORIZATION)
            .collect();
        assert_eq!(auths.len(), 1);
        assert_eq!(auths[0].value, "Bearer t");
        assert!(plan.secrets.iter().any(|s| s == "hunter2"));

        // Errors that echo the URL never echo the password.
        let got = err(
            "targets:\n  - name: a\n    base_url: \"http://user:hunter2@x?q\"\n    routes: [ { path: /ok } ]\n",
        );
        assert!(
            got.contains("http://user:***@x?q") && !got.contains("hunter2"),
            "{got}"
        );
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
