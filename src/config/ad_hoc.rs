//! A plan without a probe file, for `check --url URL… --aux-url URL…`.

use super::ConfigError;
use super::secrets::{take_userinfo, without_password};
use crate::plan::{self, Class, Endpoint, Expect, IpFamily, Plan, Route, Target, Timing, Tls};

/// A plan for `check --url URL… --aux-url URL…` without a probe file: one target per origin.
pub fn ad_hoc(core: &[String], auxiliary: &[String]) -> Result<Plan, ConfigError> {
    let mut targets: Vec<Target> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let all = core
        .iter()
        .map(|u| (u, Class::Core))
        .chain(auxiliary.iter().map(|u| (u, Class::Auxiliary)));
    for (raw, class) in all {
        let flag = if class == Class::Core {
            "--url"
        } else {
            "--aux-url"
        };
        let err = |m: String| ConfigError {
            file: flag.into(),
            at: None,
            message: m,
        };
        // Never echo a password from the userinfo.
        let shown = without_password(raw);
        let mut url = reqwest::Url::parse(raw).map_err(|e| {
            err(format!(
                "invalid URL {shown:?} ({e}); expected http://host[:port]/path or https://…"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(err(format!(
                "invalid URL {shown:?}; expected http://host[:port]/path or https://…"
            )));
        }
        let credentials = take_userinfo(raw, &mut url)
            .map_err(|why| err(format!("invalid URL {shown:?}: {why}")))?;
        let headers = match credentials {
            Some(c) => {
                secrets.extend(c.secrets);
                vec![c.header]
            }
            None => Vec::new(),
        };
        let origin = url.origin().ascii_serialization();
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path = format!("{path}?{q}");
        }
        let route = Route {
            path,
            url: url.to_string(),
            request: url.to_string(),
            secret_request: false,
            class,
            method: reqwest::Method::GET,
            body: None,
            headers,
            expect: Expect::shared_default(),
            timing: Timing::default(),
        };
        match targets.iter_mut().find(|t| {
            t.endpoint
                == Endpoint::Http {
                    base: origin.clone(),
                }
        }) {
            Some(t) => t.routes.push(route),
            None => targets.push(Target {
                name: url.host_str().map_or(origin.clone(), |h| match url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                }),
                endpoint: Endpoint::Http { base: origin },
                unit: None,
                recovery: None,
                concurrency: plan::DEFAULT_CONCURRENCY,
                connect_timeout: plan::DEFAULT_CONNECT_TIMEOUT,
                use_env_proxy: false,
                tls: Tls::default(),
                ip: IpFamily::Any,
                routes: vec![route],
                file: None,
            }),
        }
    }
    if targets.is_empty() {
        return Err(ConfigError {
            file: "--url".into(),
            at: None,
            message: "no URL given".into(),
        });
    }
    Ok(Plan {
        user_agent: crate::DEFAULT_USER_AGENT.into(),
        run_timeout: plan::DEFAULT_RUN_TIMEOUT,
        max_in_flight: plan::DEFAULT_MAX_IN_FLIGHT,
        targets,
        ping: None,
        notify: Vec::new(),
        secrets,
        untrusted: Vec::new(),
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secrets::base64;

    #[test]
    fn a_password_in_an_ad_hoc_url_is_a_secret_and_leaves_the_url() {
        let plan = ad_hoc(&["http://user:hunter2@127.0.0.1:1/ok".to_string()], &[]).unwrap();
        assert!(
            plan.secrets.iter().any(|s| s == "hunter2"),
            "{:?}",
            plan.secrets
        );
        let route = &plan.targets[0].routes[0];
        assert_eq!(route.url, "http://127.0.0.1:1/ok");
        assert_eq!(
            route.headers[0].value,
            format!("Basic {}", base64(b"user:hunter2"))
        );
        let e = ad_hoc(&["http://user:hunter2@127.0.0.1:99999/".to_string()], &[]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
