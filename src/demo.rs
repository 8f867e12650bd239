//! `routewatch demo`: a local server with a healthy route, a route answering 429, a too-slow
//! auxiliary page and a hung route, checked by the real engine with short timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::run::{self, RunReport};

/// The probe file the demo uses (with the server's port filled in).
pub fn probe_file(port: u16) -> String {
    format!(
        r#"# The demo's probe file: one service, four routes, short timeouts.
defaults: {{ timeout: 400ms, connect_timeout: 200ms, retries: 1, backoff: 50ms, max_backoff: 200ms }}
targets:
  - name: demo-shop
    base_url: http://127.0.0.1:{port}
    routes:
      - {{ path: /health, class: core, expect: {{ json: {{ status: healthy }} }} }}
      - {{ path: /api/search, class: core }}      # answers 429: contention, not an outage
      - {{ path: /reports, class: auxiliary }}    # slow heavy page: over its timeout
  - name: demo-api
    base_url: http://127.0.0.1:{port}
    routes:
      - {{ path: /api/hung, class: core }}        # accepts, reads, never answers: the hung signature
"#
    )
}

/// Serve the demo routes on 127.0.0.1 port 0; returns the port.
pub async fn serve() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut used = 0;
                loop {
                    let Ok(n) = sock.read(&mut buf[used..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    used += n;
                    let Some(end) = buf[..used].windows(4).position(|w| w == b"\r\n\r\n") else {
                        if used == buf.len() {
                            return;
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.copy_within(end + 4..used, 0);
                    used -= end + 4;
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let reply: String = match path.as_str() {
                        "/health" => ok(r#"{"status":"healthy"}"#),
                        "/api/search" => "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n".into(),
                        "/reports" => {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                            ok("report")
                        }
                        "/api/hung" => {
                            // Hold the connection open and say nothing: a deadlocked handler.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
                    };
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Run the demo: serve, check with the real engine, return the report.
pub async fn run(observer: Option<crate::probe::Observer>) -> Result<RunReport, String> {
    let port = serve()
        .await
        .map_err(|e| format!("cannot start the demo server: {e}"))?;
    let plan = crate::config::parse(&probe_file(port), "demo.yaml", &|_| None)
        .map_err(|e| e.to_string())?;
    let opts = run::Options {
        observer,
        ..run::Options::default()
    };
    run::check(Arc::new(plan), opts, std::future::pending::<&str>())
        .await
        .map_err(|e| e.to_string())
}

/// What the demo's report shows, for a newcomer.
pub const EXPLANATION: &str = "\
What this shows:
  demo-shop /health      ok: 200 with the JSON body the probe file expects.
  demo-shop /api/search  rate_limited: every attempt got 429. Contention is a warning, never a
                         failure and never a reason to kill anything; /health proves the
                         service alive.
  demo-shop /reports     timeout on an auxiliary (heavy, optional) page: reported, and the
                         target is only degraded.
  demo-api  /api/hung    timeout on a core route: the port accepts, nothing answers. This is the
                         hung signature. With `unit:` and `recovery:` in the probe file,
                         routewatch would SIGKILL the unit's main process so systemd restarts
                         it (see README \"Recovery\"); without them it reports and exits 1.
";
