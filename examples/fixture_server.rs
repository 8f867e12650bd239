//! A tiny HTTP/1.1 keep-alive server for benchmarks and manual checks.
//!
//! ```text
//! cargo run --release --example fixture_server -- [--port PORT] [--tls-ca CA.pem]
//! ```
//!
//! Binds 127.0.0.1 (port 0, the default, picks a free port) and prints
//! `listening on 127.0.0.1:PORT` as its first line on stdout. With `--tls-ca`,
//! it speaks HTTPS instead: it makes a private CA, writes the CA certificate
//! (PEM) to that file, and serves a certificate the CA issued for 127.0.0.1
//! and localhost (the client trusts the CA file, e.g. `curl --cacert`). Routes:
//!
//! - `/fast/<anything>`: 200, body `ok`, at once;
//! - `/slow/<ms>/<anything>`: 200, body `ok`, after `<ms>` milliseconds;
//! - `/hang/<anything>`: reads the request and never answers (the hung
//!   handler routewatch exists to catch); the connection stays open until the
//!   client closes it;
//! - anything else: 404.
//!
//! One tokio task per connection, so thousands of concurrent connections are
//! fine (within the open-file limit). Requests on one connection are served in
//! order (pipelining works); a request body announced by `Content-Length` is
//! read and discarded. It stops on Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

/// Largest request head accepted; a longer one gets 431 and a closed connection.
const MAX_HEAD: usize = 64 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (port, tls_ca) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("fixture_server: {message}");
            eprintln!("usage: fixture_server [--port PORT] [--tls-ca CA.pem]");
            std::process::exit(2);
        }
    };
    let acceptor = match tls_ca {
        Some(path) => Some(private_ca(&path)?),
        None => None,
    };
    // TcpListener::bind listens with a backlog of 128: a burst of a few
    // hundred connects (curl --parallel-immediate, a probe run at
    // concurrency 256) overflows it, and the dropped SYNs come back only
    // after the 1 s retransmit timeout, which would swamp every timing.
    // The kernel caps the backlog at net.core.somaxconn.
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    let listener = socket.listen(4096)?;
    // println! flushes on the newline only when stdout is a terminal; scripts
    // read this line from a pipe or a file, so flush explicitly.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }

    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    match acceptor.clone() {
                        None => {
                            tokio::spawn(serve(stream));
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                // A failed handshake just ends the connection.
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve(stream).await;
                                }
                            });
                        }
                    }
                }
                // Out of file descriptors or a connection reset before accept:
                // back off a moment instead of spinning or exiting.
                Err(error) => {
                    eprintln!("fixture_server: accept: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    Ok(())
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(u16, Option<PathBuf>), String> {
    let mut port = 0;
    let mut tls_ca = None;
    while let Some(arg) = args.next() {
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => {
                let value = args.next().ok_or(format!("{arg} needs a value"))?;
                (arg, value)
            }
        };
        match name.as_str() {
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("bad port {value:?}: expected 0..=65535"))?;
            }
            "--tls-ca" => tls_ca = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((port, tls_ca))
}

/// A private CA (its certificate written to `ca_out` as PEM) and a TLS acceptor with a
/// certificate it issued for 127.0.0.1 and localhost.
fn private_ca(ca_out: &std::path::Path) -> std::io::Result<TlsAcceptor> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| other(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fixture_server private CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(|e| other(&e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| other(&e))?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(|e| other(&e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(|e| other(&e))?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(|e| other(&e))?;
    std::fs::write(ca_out, ca_cert.pem())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)
        .map_err(|e| other(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What the server does with one parsed request.
enum Reply {
    Ok { delay: Option<Duration> },
    Hang,
    NotFound,
    BadRequest,
}

fn route(path: &str) -> Reply {
    let path = path.split('?').next().unwrap_or(path);
    if path.starts_with("/fast/") {
        Reply::Ok { delay: None }
    } else if let Some(rest) = path.strip_prefix("/slow/") {
        let ms = rest.split('/').next().unwrap_or("");
        match ms.parse::<u64>() {
            Ok(ms) => Reply::Ok {
                delay: Some(Duration::from_millis(ms)),
            },
            Err(_) => Reply::BadRequest,
        }
    } else if path.starts_with("/hang/") {
        Reply::Hang
    } else {
        Reply::NotFound
    }
}

/// The parts of a request head the server cares about.
struct Head {
    path: String,
    head_only: bool,
    body_len: usize,
    keep_alive: bool,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?;
    let path = request_line.next()?;
    let version = request_line.next()?;
    if request_line.next().is_some() || method.is_empty() || !path.starts_with('/') {
        return None;
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let mut body_len = 0;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked request bodies are not needed by any client of this fixture.
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    Some(Head {
        path: path.to_owned(),
        head_only: method == "HEAD",
        body_len,
        keep_alive,
    })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

async fn respond(
    stream: &mut (impl AsyncWrite + Unpin),
    status: &str,
    body: &str,
    head_only: bool,
    keep_alive: bool,
) -> std::io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await
}

/// Serves one connection until the client closes it or a request asks to.
async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    // A write or read error means the client went away; nothing to report.
    let _ = serve_requests(&mut stream).await;
}

async fn serve_requests(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // Read until a whole head is buffered (it may already be, when
        // requests are pipelined).
        let head_end = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD {
                let _ = respond(
                    stream,
                    "431 Request Header Fields Too Large",
                    "too large",
                    false,
                    false,
                )
                .await;
                return Ok(());
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some(head) = parse_head(&buf[..head_end - 4]) else {
            respond(stream, "400 Bad Request", "bad request", false, false).await?;
            return Ok(());
        };
        // Drop the head and the body (read the rest of the body if needed).
        let mut consumed = head_end;
        let mut body_left = head.body_len;
        let buffered = (buf.len() - consumed).min(body_left);
        consumed += buffered;
        body_left -= buffered;
        buf.drain(..consumed);
        while body_left > 0 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            let take = n.min(body_left);
            body_left -= take;
            buf.extend_from_slice(&chunk[take..n]);
        }

        match route(&head.path) {
            Reply::Ok { delay } => {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                respond(stream, "200 OK", "ok", head.head_only, head.keep_alive).await?;
            }
            Reply::NotFound => {
                respond(
                    stream,
                    "404 Not Found",
                    "not found",
                    head.head_only,
                    head.keep_alive,
                )
                .await?;
            }
            Reply::BadRequest => {
                respond(
                    stream,
                    "400 Bad Request",
                    "bad request",
                    head.head_only,
                    false,
                )
                .await?;
                return Ok(());
            }
            Reply::Hang => {
                // Keep the connection open and answer nothing: drain whatever
                // the client sends until it gives up and closes.
                while stream.read(&mut chunk).await? != 0 {}
                return Ok(());
            }
        }
        if !head.keep_alive {
            stream.shutdown().await?;
            return Ok(());
        }
    }
}
