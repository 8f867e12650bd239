//! The dead-man's switch, in healthchecks.io's protocol: `URL/start` before probing and
//! `URL/<exit code>` after, with the report's summary line as the body. The receiver alerts
//! when a ping is missed (the timer stopped, the binary broke) or when the code is not 0.

use super::Outgoing;

/// A ping URL, resolved (`${VAR}` expanded) and checked.
#[derive(Debug, Clone)]
pub struct Ping {
    pub url: reqwest::Url,
}

impl Ping {
    /// `URL/start`, sent before any probing.
    pub fn start(&self) -> Outgoing {
        self.request("start", "start", String::new())
    }

    /// `URL/<exit code>` with the summary line as the body, sent after the report.
    pub fn finish(&self, exit_code: u8, summary: &str) -> Outgoing {
        self.request(
            &exit_code.to_string(),
            &format!("exit {exit_code}"),
            format!("{summary}\n"),
        )
    }

    fn request(&self, suffix: &str, what: &str, body: String) -> Outgoing {
        Outgoing {
            kind: "ping",
            what: what.to_string(),
            url: with_segment(&self.url, suffix),
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// `url` with one more path segment (the query, such as healthchecks.io's `?rid=`, kept).
fn with_segment(url: &reqwest::Url, segment: &str) -> reqwest::Url {
    let mut u = url.clone();
    if let Ok(mut path) = u.path_segments_mut() {
        path.pop_if_empty().push(segment);
    }
    u
}

/// Send the start ping, bounded by [`super::START_TIMEOUT`]: it holds back the probing.
pub async fn send_start(ping: &Ping, user_agent: &str) -> Result<(), String> {
    let client = super::client(user_agent, super::START_TIMEOUT)?;
    super::send(&client, &ping.start()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_exit_code_are_path_segments_after_the_check_url() {
        for base in ["https://hc-ping.com/5f2a", "https://hc-ping.com/5f2a/"] {
            let p = Ping {
                url: reqwest::Url::parse(base).unwrap(),
            };
            assert_eq!(p.start().url.as_str(), "https://hc-ping.com/5f2a/start");
            let fin = p.finish(3, "2 ok, 1 timeout");
            assert_eq!(fin.url.as_str(), "https://hc-ping.com/5f2a/3");
            assert_eq!(fin.body, "2 ok, 1 timeout\n");
        }
        let p = Ping {
            url: reqwest::Url::parse("http://127.0.0.1:9/ping/key/check?rid=1").unwrap(),
        };
        assert_eq!(
            p.finish(0, "").url.as_str(),
            "http://127.0.0.1:9/ping/key/check/0?rid=1"
        );
    }
}
