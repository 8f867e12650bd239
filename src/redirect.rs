//! Following redirects (`follow_redirects: N`): where the next hop of a chain goes, with which
//! method, body and headers, or why the chain stops. Pure; `probe` does the sending, every hop
//! under the one deadline of its attempt.
//!
//! Secrets never leave the route's origin: a hop to another scheme, host or port carries none
//! of the route's secret headers (from `${VAR}` or a URL password) and no `Authorization`,
//! `Cookie` or `Proxy-Authorization`, whatever the server redirecting says.

use reqwest::header::{AUTHORIZATION, COOKIE, HeaderName, PROXY_AUTHORIZATION};
use reqwest::{Method, Url};
use serde::Serialize;

use crate::plan::Header;

/// One redirect followed, as reported: the status and the absolute URL it led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub status: u16,
    pub location: String,
}

/// How the next request of a chain is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRequest {
    pub url: Url,
    pub method: Method,
    /// The route's body (and its `Content-Type`) goes along: 307 and 308, and 301 or 302 of a
    /// method other than POST.
    pub keep_body: bool,
    /// Same scheme, host and port as the route: its secret headers may go along.
    pub same_origin: bool,
}

/// What to do with a response in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not a redirect to follow (no limit set, not a redirect status, no `Location`): judge it.
    Judge,
    Follow(NextRequest),
    /// The chain stops here: `http_error`, with this message naming the chain.
    Refuse(String),
}

/// Redirect statuses that are followed; 300, 304 and 305 are judged as they are.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Where a chain stands: the route's own URL (its origin is the one secrets may go to), the
/// URL just requested and with which method, the hops so far, and the limit.
#[derive(Debug, Clone)]
pub struct Chain {
    pub first: Url,
    pub current: Url,
    pub method: Method,
    pub hops: Vec<Hop>,
    pub limit: u32,
    /// The target is reached over a Unix socket: every request goes to the socket, so a hop to
    /// another origin cannot be made.
    pub unix: bool,
}

impl Chain {
    pub fn new(first: Url, method: Method, limit: u32, unix: bool) -> Chain {
        Chain {
            current: first.clone(),
            first,
            method,
            hops: Vec::new(),
            limit,
            unix,
        }
    }

    /// Whether the URL being requested is on the route's origin.
    pub fn at_home(&self) -> bool {
        self.current.origin() == self.first.origin()
    }

    /// `http://a/x → 302 http://a/y → 301 http://a/z`, then `then` if given.
    pub fn text(&self, then: Option<(u16, &Url)>) -> String {
        let mut out = self.first.to_string();
        for h in &self.hops {
            out.push_str(&format!(" → {} {}", h.status, h.location));
        }
        if let Some((status, url)) = then {
            out.push_str(&format!(" → {status} {url}"));
        }
        out
    }

    /// The next step after a response of `status` with `location` to the current request;
    /// on `Follow`, the chain has moved to the next hop.
    pub fn step(&mut self, status: u16, location: Option<&[u8]>) -> Step {
        if self.limit == 0 || !is_redirect(status) {
            return Step::Judge;
        }
        let Some(location) = location else {
            return Step::Judge;
        };
        let shown = String::from_utf8_lossy(location);
        let next = std::str::from_utf8(location)
            .ok()
            .and_then(|l| self.current.join(l.trim()).ok());
        let Some(mut next) = next else {
            return Step::Refuse(format!(
                "redirect {status} with a Location that is not a URL ({:?}): {}",
                shown.chars().take(200).collect::<String>(),
                self.text(None)
            ));
        };
        next.set_fragment(None);
        if !matches!(next.scheme(), "http" | "https") {
            return Step::Refuse(format!(
                "redirect {status} to {next}, which is not http or https: {}",
                self.text(None)
            ));
        }
        let same_origin = next.origin() == self.first.origin();
        if self.unix && !same_origin {
            return Step::Refuse(format!(
                "redirect {status} to another origin, {next}, from a target on a Unix socket (every request goes to the socket): {}",
                self.text(None)
            ));
        }
        let seen = next == self.first || self.hops.iter().any(|h| h.location == next.as_str());
        if seen {
            return Step::Refuse(format!(
                "redirect loop: {}",
                self.text(Some((status, &next)))
            ));
        }
        if self.hops.len() as u64 >= u64::from(self.limit) {
            return Step::Refuse(format!(
                "more than {} (follow_redirects {}): {}",
                crate::words::count(u64::from(self.limit), "redirect", "redirects"),
                self.limit,
                self.text(Some((status, &next)))
            ));
        }
        let method = match status {
            303 if self.method != Method::HEAD => Method::GET,
            301 | 302 if self.method == Method::POST => Method::GET,
            _ => self.method.clone(),
        };
        let keep_body = method == self.method && status != 303;
        self.hops.push(Hop {
            status,
            location: next.to_string(),
        });
        self.current = next.clone();
        self.method = method.clone();
        Step::Follow(NextRequest {
            url: next,
            method,
            keep_body,
            same_origin,
        })
    }
}

/// Headers that carry credentials whatever their value's origin.
const CREDENTIAL_HEADERS: [HeaderName; 3] = [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION];

/// Whether a route header may go on a hop: everything on the route's origin; elsewhere no
/// secret and no credential header. Pure.
pub fn header_goes(h: &Header, same_origin: bool) -> bool {
    same_origin || !(h.secret || CREDENTIAL_HEADERS.contains(&h.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn chain(limit: u32) -> Chain {
        Chain::new(url("http://127.0.0.1:8000/a"), Method::POST, limit, false)
    }

    #[test]
    fn relative_and_absolute_locations_are_followed_and_methods_change_as_browsers_do() {
        let mut c = chain(5);
        let Step::Follow(n) = c.step(307, Some(b"b?x=1#frag")) else {
            panic!()
        };
        assert_eq!(n.url.as_str(), "http://127.0.0.1:8000/b?x=1");
        assert_eq!(
            (n.method.clone(), n.keep_body, n.same_origin),
            (Method::POST, true, true)
        );
        let Step::Follow(n) = c.step(303, Some(b"http://localhost:8000/c")) else {
            panic!()
        };
        assert_eq!(
            (n.method.clone(), n.keep_body, n.same_origin),
            (Method::GET, false, false)
        );
        let Step::Follow(n) = c.step(308, Some(b"/d")) else {
            panic!()
        };
        assert_eq!(n.url.as_str(), "http://localhost:8000/d");
        assert_eq!((n.method, n.keep_body), (Method::GET, true));
        assert_eq!(
            c.text(None),
            "http://127.0.0.1:8000/a → 307 http://127.0.0.1:8000/b?x=1 → 303 http://localhost:8000/c → 308 http://localhost:8000/d"
        );
        // 301/302 turn POST into GET; other methods are kept, with their body.
        let mut c = chain(5);
        let Step::Follow(n) = c.step(302, Some(b"/b")) else {
            panic!()
        };
        assert_eq!((n.method, n.keep_body), (Method::GET, false));
        let mut c = Chain::new(url("http://h/a"), Method::PUT, 5, false);
        let Step::Follow(n) = c.step(301, Some(b"/b")) else {
            panic!()
        };
        assert_eq!((n.method, n.keep_body), (Method::PUT, true));
        // HEAD stays HEAD through a 303.
        let mut c = Chain::new(url("http://h/a"), Method::HEAD, 5, false);
        let Step::Follow(n) = c.step(303, Some(b"/b")) else {
            panic!()
        };
        assert_eq!(n.method, Method::HEAD);
    }

    #[test]
    fn what_is_judged_as_it_is() {
        assert_eq!(chain(0).step(302, Some(b"/b")), Step::Judge);
        for status in [200, 300, 304, 305, 404] {
            assert_eq!(chain(3).step(status, Some(b"/b")), Step::Judge, "{status}");
        }
        assert_eq!(chain(3).step(302, None), Step::Judge);
    }

    #[test]
    fn loops_limits_and_odd_locations_stop_the_chain_naming_it() {
        let mut c = chain(5);
        assert!(matches!(c.step(302, Some(b"/b")), Step::Follow(_)));
        assert_eq!(
            c.step(302, Some(b"/a")),
            Step::Refuse(
                "redirect loop: http://127.0.0.1:8000/a → 302 http://127.0.0.1:8000/b → 302 http://127.0.0.1:8000/a".into()
            )
        );
        let mut c = chain(1);
        assert!(matches!(c.step(301, Some(b"/b")), Step::Follow(_)));
        assert_eq!(
            c.step(301, Some(b"/c")),
            Step::Refuse(
                "more than 1 redirect (follow_redirects 1): http://127.0.0.1:8000/a → 301 http://127.0.0.1:8000/b → 301 http://127.0.0.1:8000/c".into()
            )
        );
        let Step::Refuse(why) = chain(3).step(302, Some(b"ftp://h/x")) else {
            panic!()
        };
        assert!(why.contains("not http or https"), "{why}");
        let Step::Refuse(why) = chain(3).step(302, Some(b"http://[::1")) else {
            panic!()
        };
        assert!(why.contains("not a URL"), "{why}");
        let mut unix = Chain::new(url("http://localhost/a"), Method::GET, 3, true);
        assert!(matches!(unix.step(302, Some(b"/b")), Step::Follow(_)));
        let Step::Refuse(why) = unix.step(302, Some(b"http://example.org/")) else {
            panic!()
        };
        assert!(why.contains("Unix socket"), "{why}");
    }

    #[test]
    fn secrets_and_credentials_stay_on_the_route_origin() {
        let h = |name: HeaderName, secret: bool| Header {
            name,
            value: reqwest::header::HeaderValue::from_static("v"),
            secret,
        };
        let secret = h(HeaderName::from_static("x-api-key"), true);
        let auth = h(AUTHORIZATION, false);
        let cookie = h(COOKIE, false);
        let plain = h(HeaderName::from_static("accept"), false);
        for x in [&secret, &auth, &cookie, &plain] {
            assert!(header_goes(x, true));
        }
        for x in [&secret, &auth, &cookie] {
            assert!(!header_goes(x, false), "{x:?}");
        }
        assert!(header_goes(&plain, false));
    }
}
