//! The real `routewatch` binary against small local servers (127.0.0.1 / [::1], port 0):
//! HTTPS with a private CA made in the test, `${VAR}` secrets in request headers (they reach the
//! server and no output), the User-Agent, methods and request bodies, every `expect` check end
//! to end, and the `ip:` address family.
//!
//! The servers here record whole requests (head and body) and can speak TLS; they run on a
//! runtime of their own so the tests can block on the binary.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::common::{self, rw};

const SECRET: &str = "s3cr3t-value-123";
const SECRET_VAR: &str = "RW_TEST_SECRET";

// ---------------------------------------------------------------------------------------------
// A recording HTTP/1.1 server, plain or TLS.

/// One request as the server saw it: header names lower-cased, the body read by Content-Length.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
}

fn resp(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Resp {
    Resp {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
        delay: Duration::ZERO,
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

struct Srv {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
    connections: Arc<AtomicUsize>,
    // Dropped last: stops the accept loop and every connection.
    _rt: tokio::runtime::Runtime,
}

impl Srv {
    /// Serve on `bind` (e.g. `127.0.0.1:0`, `[::1]:0`), over TLS when `tls` is given.
    fn start(
        bind: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
    ) -> io::Result<Srv> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(bind))?;
        let addr = listener.local_addr()?;
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let acceptor = tls.map(TlsAcceptor::from);
        let (l, c) = (Arc::clone(&log), Arc::clone(&connections));
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let (handler, log, acceptor) =
                    (Arc::clone(&handler), Arc::clone(&l), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(stream, handler, log).await,
                        // A failed handshake (the client distrusts the certificate) just ends.
                        Some(a) => {
                            if let Ok(s) = a.accept(stream).await {
                                serve(s, handler, log).await;
                            }
                        }
                    }
                });
            }
        });
        Ok(Srv {
            addr,
            log,
            connections,
            _rt: rt,
        })
    }

    fn http(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Srv {
        Srv::start("127.0.0.1:0", None, handler).expect("bind 127.0.0.1:0")
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        404 => "Not Found",
        418 => "I'm a teapot",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// Keep-alive HTTP/1.1: read a head and a Content-Length body, record, answer, repeat.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    handler: Handler,
    log: Arc<Mutex<Vec<Req>>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let req = Req {
            method,
            path,
            headers,
            body,
        };
        log.lock().unwrap().push(req.clone());
        let r = handler(&req);
        if r.status == 0 {
            // Status 0: drop the connection without an answer (and, over TLS, without
            // close_notify), as a crashing handler does.
            return;
        }
        if !r.delay.is_zero() {
            tokio::time::sleep(r.delay).await;
        }
        let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
        for (n, v) in &r.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", r.body.len()));
        let mut bytes = out.into_bytes();
        // A HEAD response announces a body it never sends.
        if req.method != "HEAD" {
            bytes.extend_from_slice(&r.body);
        }
        if s.write_all(&bytes).await.is_err() || s.flush().await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A private CA and a server certificate, made fresh for each test.

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate it signed for `names` (DNS names or IP addresses).
fn pki(names: &[&str]) -> Pki {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "routewatch test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

/// A root CA (the one to trust), an intermediate CA it signed that expires in
/// `intermediate_days`, and a server certificate for `127.0.0.1` the intermediate signed that
/// expires in `leaf_days`; the server presents the leaf and the intermediate, and with
/// `stray_days` also a leftover of another chain: a CA certificate of another root that
/// expires in that many days (it issues nothing the leaf needs).
fn pki_chain(intermediate_days: u64, leaf_days: u64, stray_days: Option<u64>) -> Pki {
    use std::time::SystemTime;
    const DAY: u64 = 86_400;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_params = |cn: &str, days: u64| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = (SystemTime::now() - Duration::from_secs(DAY)).into();
        p.not_after = (SystemTime::now() + Duration::from_secs(days * DAY)).into();
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("routewatch test root", 3650);
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root = Issuer::new(root_params, root_key);

    let mid_key = KeyPair::generate().unwrap();
    let mut mid_params = ca_params("routewatch test intermediate", intermediate_days);
    mid_params.use_authority_key_identifier_extension = true;
    let mid_cert = mid_params.signed_by(&mid_key, &root).unwrap();
    let mid = Issuer::new(mid_params, mid_key);

    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = (SystemTime::now() - Duration::from_secs(DAY)).into();
    leaf.not_after = (SystemTime::now() + Duration::from_secs(leaf_days * DAY)).into();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &mid).unwrap();

    let mut chain: Vec<CertificateDer<'static>> =
        vec![leaf_cert.der().clone(), mid_cert.der().clone()];
    if let Some(days) = stray_days {
        // Only its key and name are needed: its own certificate is nowhere.
        let other_root = Issuer::new(
            ca_params("another root", 3650),
            KeyPair::generate().unwrap(),
        );
        let stray_key = KeyPair::generate().unwrap();
        let stray = ca_params("a stray intermediate", days)
            .signed_by(&stray_key, &other_root)
            .unwrap();
        chain.insert(1, stray.der().clone());
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: root_cert.pem(),
        server: Arc::new(server),
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary.

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Both streams, for assertion messages.
    fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `targets[name].routes[path]` of a JSON report.
fn route<'a>(doc: &'a Value, target: &str, path: &str) -> &'a Value {
    doc["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["name"] == target)
        .unwrap_or_else(|| panic!("no target {target} in {doc:#}"))["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no route {target} {path} in {doc:#}"))
}

fn target<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {doc:#}"))
}

fn error_of(r: &Value) -> String {
    r["error"].as_str().unwrap_or_default().to_string()
}

/// Write `yaml` as `dir/probes.yaml`.
fn probe_file(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("probes.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `routewatch check --config dir/probes.yaml --state-dir dir/state ARGS…` with `envs` set (and
/// nothing inherited that could steer it).
fn check(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = rw();
    cmd.env_remove(SECRET_VAR)
        .arg("check")
        .arg("--config")
        .arg(dir.join("probes.yaml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .timeout(Duration::from_secs(30));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> Run {
    let o = cmd.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `file:LINE:COL: ` somewhere in `text`, after `file`.
fn has_location(text: &str, file: &str) -> bool {
    text.match_indices(file).any(|(i, _)| {
        let rest = &text[i + file.len()..];
        let mut parts = rest.splitn(4, ':');
        parts.next() == Some("")
            && parts
                .next()
                .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            && parts
                .next()
                .is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
    })
}

const FAST: &str = "defaults: { timeout: 2s, connect_timeout: 500ms, retries: 0, backoff: 10ms }";

// ---------------------------------------------------------------------------------------------
// 1. TLS

fn tls_server(p: &Pki) -> Srv {
    Srv::start("127.0.0.1:0", Some(Arc::clone(&p.server)), |_| {
        resp(200, &[], "secure hello")
    })
    .expect("bind")
}

#[test]
fn tls_unknown_issuer_is_a_tls_outcome_and_not_retried() {
    let p = pki(&["localhost", "127.0.0.1"]);
    let s = tls_server(&p);
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "defaults: {{ timeout: 2s, connect_timeout: 500ms, retries: 2, backoff: 10ms }}\ntargets:\n  - name: api\n    base_url: https://localhost:{}\n    routes: [ {{ path: /health }} ]\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "api", "/health");
    assert_eq!(r["outcome"], "tls", "{doc:#}");
    assert_eq!(r["status_code"], Value::Null, "{doc:#}");
    assert_eq!(r["attempts"], 1, "tls is never retried: {doc:#}");
    let e = error_of(r).to_ascii_lowercase();
    assert!(
        e.contains("issuer") || e.contains("certificate"),
        "the reason (unknown issuer) is in error: {e}"
    );
    assert!(
        s.requests().is_empty(),
        "no request crosses a distrusted handshake"
    );
}

#[test]
fn tls_ca_file_trusts_a_private_ca_by_name_and_by_ip() {
    let p = pki(&["localhost", "127.0.0.1"]);
    let s = tls_server(&p);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: by-name\n    base_url: https://localhost:{port}\n    tls: {{ ca_file: {ca} }}\n    routes: [ {{ path: /health, expect: {{ body_contains: secure }} }} ]\n  - name: by-ip\n    base_url: https://127.0.0.1:{port}\n    tls: {{ ca_file: {ca} }}\n    routes: [ {{ path: /health }} ]\n",
            port = s.port(),
            ca = ca.display()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let doc = o.json();
    for t in ["by-name", "by-ip"] {
        let r = route(&doc, t, "/health");
        assert_eq!(r["outcome"], "ok", "{doc:#}");
        assert_eq!(r["status_code"], 200, "{doc:#}");
        assert!(
            r["url"].as_str().unwrap().starts_with("https://"),
            "{doc:#}"
        );
    }
    assert_eq!(doc["status"], "healthy", "{doc:#}");
    assert_eq!(s.requests().len(), 2);
}

#[test]
fn tls_ca_file_does_not_excuse_a_wrong_name() {
    // Trusted CA, but the certificate names another host.
    let p = pki(&["other.example"]);
    let s = tls_server(&p);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: https://localhost:{}\n    tls: {{ ca_file: {} }}\n    routes: [ {{ path: /health }} ]\n",
            s.port(),
            ca.display()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "api", "/health");
    assert_eq!(r["outcome"], "tls", "{doc:#}");
    assert!(
        error_of(r).to_ascii_lowercase().contains("name"),
        "the error says the name does not match: {doc:#}"
    );
}

#[test]
fn tls_insecure_probes_ok_and_says_so_loudly() {
    let p = pki(&["other.example"]);
    let s = tls_server(&p);
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: lab-api\n    base_url: https://localhost:{}\n    tls: {{ insecure: true }}\n    routes: [ {{ path: /health }} ]\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let doc = o.json();
    assert_eq!(
        route(&doc, "lab-api", "/health")["outcome"],
        "ok",
        "{doc:#}"
    );
    let warnings = doc["warnings"].to_string().to_ascii_lowercase();
    assert!(
        warnings.contains("insecure") && warnings.contains("lab-api"),
        "tls.insecure: true must be loud in the JSON report (warnings): {doc:#}"
    );
    assert!(
        o.stderr.to_ascii_lowercase().contains("insecure"),
        "and on stderr: {}",
        o.all()
    );

    let o = check(dir.path(), &[], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let text = o.stdout.to_ascii_lowercase();
    assert!(
        text.contains("insecure") && text.contains("lab-api"),
        "tls.insecure: true must be loud in the text report: {}",
        o.all()
    );
}

#[test]
fn tls_ca_file_missing_is_a_config_error_with_its_location() {
    let s = Srv::http(|_| resp(200, &[], "ok"));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: https://localhost:{}\n    tls: {{ ca_file: {} }}\n    routes: [ {{ path: /health }} ]\n",
            s.port(),
            missing.display()
        ),
    );
    for args in [&["--format", "json"][..], &[][..]] {
        let o = check(dir.path(), args, &[]);
        assert_eq!(o.code, 2, "{}", o.all());
        assert!(
            o.stdout.is_empty(),
            "nothing was probed, nothing reported: {}",
            o.all()
        );
        assert!(
            has_location(&o.stderr, "probes.yaml"),
            "file:line:col: {}",
            o.all()
        );
        assert!(
            o.stderr.contains("ca_file") && o.stderr.contains("no-such-ca.pem"),
            "names the key and the path: {}",
            o.all()
        );
    }
    let o = run(rw()
        .arg("validate")
        .arg("--config")
        .arg(dir.path().join("probes.yaml")));
    assert_eq!(o.code, 2, "validate catches it too: {}", o.all());
    assert!(has_location(&o.stderr, "probes.yaml"), "{}", o.all());
    assert_eq!(s.connection_count(), 0, "nothing was probed");
}

/// A CA file that is readable but holds no certificate is as wrong as a missing one.
/// Today the file is accepted (it holds no certificate, so nothing joins the trust store) and
/// the probe later fails as `tls` "unknown issuer", which points away from the cause.
#[test]
fn tls_ca_file_without_certificates_is_a_config_error() {
    let s = tls_server(&pki(&["localhost"]));
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus-ca.pem");
    std::fs::write(&bogus, "this is not a certificate\n").unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: https://localhost:{}\n    tls: {{ ca_file: {} }}\n    routes: [ {{ path: /health }} ]\n",
            s.port(),
            bogus.display()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(
        o.code,
        2,
        "a CA file with no certificate is a configuration error: {}",
        o.all()
    );
    assert!(o.stdout.is_empty(), "{}", o.all());
    assert!(
        has_location(&o.stderr, "probes.yaml"),
        "file:line:col: {}",
        o.all()
    );
    assert!(
        o.stderr.contains("ca_file") && o.stderr.contains("bogus-ca.pem"),
        "{}",
        o.all()
    );
    assert_eq!(s.connection_count(), 0, "nothing was probed");
}

/// `check --format json` (exit 0: degraded at worst) of target `api` with `routes` (YAML
/// lines) on a server presenting `p`'s chain, its CA trusted through `tls.ca_file`; the
/// server and the directory stay up for more runs.
fn check_chain(p: &Pki, routes: &str) -> (Srv, tempfile::TempDir, Value) {
    let s = tls_server(p);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &p.ca_pem).unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: https://127.0.0.1:{}\n    tls: {{ ca_file: ca.pem }}\n    routes:\n{routes}",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "degraded, never unhealthy: {}", o.all());
    let doc = o.json();
    (s, dir, doc)
}

/// The expiry reported (JSON `tls_cert`, the Prometheus gauge) and judged (`cert_min_days`) is
/// the earliest `notAfter` of the chain the server presents: an intermediate that expires in
/// 5 days under a leaf good for 60 is what breaks clients first.
#[test]
fn cert_expiry_is_the_earliest_in_the_presented_chain() {
    let (_server, dir, doc) = check_chain(
        &pki_chain(5, 60, None),
        "      - { path: /warned, expect: { cert_min_days: 14 } }\n      - { path: /fine, expect: { cert_min_days: 3 } }\n",
    );
    let warned = route(&doc, "api", "/warned");
    assert_eq!(warned["outcome"], "cert_expiring", "{doc:#}");
    let e = error_of(warned);
    assert!(
        e.starts_with("the server certificate CN=routewatch test intermediate expires in 5 days"),
        "{e}"
    );
    for r in [warned, route(&doc, "api", "/fine")] {
        let cert = &r["tls_cert"];
        assert_eq!(
            cert["subject"], "CN=routewatch test intermediate",
            "{doc:#}"
        );
        let days = cert["days_left"].as_f64().unwrap();
        assert!((4.8..=5.1).contains(&days), "{days}");
    }
    assert_eq!(route(&doc, "api", "/fine")["outcome"], "ok", "{doc:#}");
    let not_after = warned["tls_cert"]["not_after_unix"].as_i64().unwrap();
    let o = check(dir.path(), &["--format", "prometheus"], &[]);
    assert!(
        o.stdout.contains(&format!(
            "routewatch_tls_cert_expiry_seconds{{target=\"api\",route=\"/warned\",class=\"core\"}} {not_after}"
        )),
        "{}",
        o.all()
    );
}

/// A server that also sends a leftover certificate of another chain (an intermediate of
/// another root, expiring in 2 days): it issues nothing the leaf needs, clients never use
/// it, and it must not make the route `cert_expiring`.
#[test]
fn a_stray_certificate_the_server_also_sends_does_not_count() {
    let (_server, _dir, doc) = check_chain(
        &pki_chain(60, 90, Some(2)),
        "      - { path: /x, expect: { cert_min_days: 14 } }\n",
    );
    let r = route(&doc, "api", "/x");
    assert_eq!(r["outcome"], "ok", "{doc:#}");
    assert_eq!(
        r["tls_cert"]["subject"], "CN=routewatch test intermediate",
        "{doc:#}"
    );
}

/// A redirect to another origin ends on another server's certificate: it is not the
/// target's, so it is neither reported as the target's nor judged by `cert_min_days`.
#[test]
fn a_redirect_to_another_origin_never_lends_the_target_its_certificate() {
    let elsewhere_pki = pki_chain(5, 60, None);
    let elsewhere = tls_server(&elsewhere_pki);
    let home_pki = pki(&["127.0.0.1"]);
    let to = format!("https://127.0.0.1:{}/landing", elsewhere.port());
    let home = Srv::start(
        "127.0.0.1:0",
        Some(Arc::clone(&home_pki.server)),
        move |r| match r.path.as_str() {
            "/away" => resp(302, &[("Location", to.as_str())], ""),
            _ => resp(200, &[], "home"),
        },
    )
    .expect("bind");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ca.pem"),
        format!("{}{}", home_pki.ca_pem, elsewhere_pki.ca_pem),
    )
    .unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: https://127.0.0.1:{}\n    tls: {{ ca_file: ca.pem }}\n    follow_redirects: 1\n    routes:\n      - {{ path: /away, expect: {{ cert_min_days: 14 }} }}\n      - {{ path: /home, expect: {{ cert_min_days: 14 }} }}\n",
            home.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let doc = o.json();
    let away = route(&doc, "api", "/away");
    assert_eq!(away["outcome"], "ok", "{doc:#}");
    assert!(elsewhere.connection_count() > 0, "the hop was made");
    assert!(away["tls_cert"].is_null(), "{doc:#}");
    // On its own origin the target's certificate is reported as ever.
    let at_home = route(&doc, "api", "/home");
    assert_eq!(at_home["outcome"], "ok", "{doc:#}");
    assert!(at_home["tls_cert"]["subject"].is_string(), "{doc:#}");
}

// ---------------------------------------------------------------------------------------------
// 2. Secrets

/// `/ok` 200, `/fail` 500 (with a body that does not echo anything).
fn secret_server() -> Srv {
    Srv::http(|r| match r.path.as_str() {
        "/fail" => resp(500, &[], "internal error, sorry"),
        _ => resp(200, &[("Content-Type", "text/plain")], "fine"),
    })
}

fn secret_file(dir: &Path, port: u16, extra_routes: &str) {
    probe_file(
        dir,
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{port}\n    headers: {{ Authorization: \"Bearer ${{{SECRET_VAR}}}\" }}\n    routes:\n      - {{ path: /ok }}\n      - {{ path: /aux, class: auxiliary, headers: {{ X-Api-Key: \"${{{SECRET_VAR}}}\" }} }}\n{extra_routes}"
        ),
    );
}

fn assert_no_secret(o: &Run, what: &str) {
    assert!(
        !o.stdout.contains(SECRET) && !o.stderr.contains(SECRET),
        "{what}: the secret leaked:\n{}",
        o.all()
    );
}

/// Every report format, and stderr at -v and -vv.
fn every_output(dir: &Path, envs: &[(&str, &str)], expect_code: i32, what: &str) {
    let runs: [&[&str]; 6] = [
        &["--format", "text"],
        &["--format", "json"],
        &["--format", "junit"],
        &["--format", "prometheus"],
        &["--format", "text", "-v"],
        &["--format", "json", "-vv"],
    ];
    for args in runs {
        let o = check(dir, args, envs);
        assert_eq!(o.code, expect_code, "{what} {args:?}: {}", o.all());
        assert!(!o.stdout.is_empty(), "{what} {args:?}: {}", o.all());
        assert_no_secret(&o, &format!("{what} {args:?}"));
    }
}

#[test]
fn secret_header_reaches_the_server_and_no_output_healthy_run() {
    let s = secret_server();
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), s.port(), "");
    every_output(dir.path(), &[(SECRET_VAR, SECRET)], 0, "healthy");
    let reqs = s.requests();
    assert_eq!(reqs.len(), 12, "6 runs × 2 routes: {reqs:?}");
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {SECRET}").as_str()),
            "{r:?}"
        );
    }
    assert!(
        reqs.iter()
            .filter(|r| r.path == "/aux")
            .all(|r| r.header("x-api-key") == Some(SECRET))
    );
}

#[test]
fn secret_header_reaches_no_output_in_a_failing_run() {
    let s = secret_server();
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), s.port(), "      - { path: /fail }\n");
    every_output(dir.path(), &[(SECRET_VAR, SECRET)], 1, "failing");
    // The failure itself is reported (so the test would see a leak in the error text).
    let o = check(dir.path(), &["--format", "json"], &[(SECRET_VAR, SECRET)]);
    let doc = o.json();
    let r = route(&doc, "api", "/fail");
    assert_eq!(r["outcome"], "http_error", "{doc:#}");
    assert!(error_of(r).contains("500"), "{doc:#}");
    assert!(o.stderr.contains("event=probe_failed"), "{}", o.all());
    assert!(
        s.requests()
            .iter()
            .all(|r| r.header("authorization") == Some(format!("Bearer {SECRET}").as_str()))
    );
}

#[test]
fn secret_survives_a_config_error_elsewhere_in_the_file() {
    let s = secret_server();
    let dir = tempfile::tempdir().unwrap();
    secret_file(
        dir.path(),
        s.port(),
        "      - { path: /other, headers: { \"Bad Header\": \"x\" } }\n",
    );
    for args in [&["--format", "json"][..], &["-vv"][..]] {
        let o = check(dir.path(), args, &[(SECRET_VAR, SECRET)]);
        assert_eq!(o.code, 2, "{}", o.all());
        assert!(o.stdout.is_empty(), "{}", o.all());
        assert!(has_location(&o.stderr, "probes.yaml"), "{}", o.all());
        assert!(o.stderr.contains("Bad Header"), "{}", o.all());
        assert_no_secret(&o, "config error");
    }
    let o = run(rw()
        .env(SECRET_VAR, SECRET)
        .arg("validate")
        .arg("--config")
        .arg(dir.path().join("probes.yaml")));
    assert_eq!(o.code, 2, "{}", o.all());
    assert_no_secret(&o, "validate");
    assert_eq!(s.connection_count(), 0, "nothing was probed");
}

#[test]
fn secret_with_an_invalid_header_value_is_not_echoed() {
    let s = secret_server();
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), s.port(), "");
    let bad = format!("{SECRET}\nInjected: yes");
    let o = check(dir.path(), &["--format", "json"], &[(SECRET_VAR, &bad)]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(has_location(&o.stderr, "probes.yaml"), "{}", o.all());
    assert_no_secret(&o, "invalid value from the environment");
    assert!(!o.stderr.contains("Injected"), "{}", o.all());
    assert_eq!(s.connection_count(), 0);
}

#[test]
fn unset_variable_is_a_config_error_naming_it_and_nothing_else() {
    let s = secret_server();
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{}\n    headers:\n      Authorization: \"Bearer ${{{SECRET_VAR}}}\"\n      X-Tenant: \"${{RW_TEST_TENANT}}-${{RW_TEST_UNSET_VAR}}\"\n    routes: [ {{ path: /ok }} ]\n",
            s.port()
        ),
    );
    let envs = [(SECRET_VAR, SECRET), ("RW_TEST_TENANT", "tenant-value-77")];
    for args in [&["--format", "json"][..], &["-vv"][..]] {
        let o = check(dir.path(), args, &envs);
        assert_eq!(o.code, 2, "{}", o.all());
        assert!(o.stdout.is_empty(), "{}", o.all());
        assert!(
            o.stderr.contains("RW_TEST_UNSET_VAR"),
            "names the variable: {}",
            o.all()
        );
        assert!(has_location(&o.stderr, "probes.yaml"), "{}", o.all());
        assert_no_secret(&o, "unset variable");
        assert!(
            !o.stderr.contains("tenant-value-77"),
            "other values in the same header are not printed either: {}",
            o.all()
        );
    }
    assert_eq!(s.connection_count(), 0, "nothing was probed");
}

/// A server that reflects the credential it received (debug echo endpoints, "invalid token
/// '…'" error pages, `WWW-Authenticate` details): the failure text quotes the body or header,
/// and the secret must still not reach any output.
#[test]
fn secret_reflected_by_the_server_is_redacted_from_failure_text() {
    let s = Srv::http(|r| {
        let auth = r.header("authorization").unwrap_or("").to_string();
        match r.path.as_str() {
            "/echo" => resp(401, &[], format!("invalid token: {auth}")),
            // The bare value, without the literal "Bearer " around it.
            "/regex" => resp(
                200,
                &[],
                format!("token={}", auth.trim_start_matches("Bearer ")),
            ),
            "/whoami" => resp(200, &[], format!("{{\"user\":\"{auth}\"}}")),
            _ => resp(200, &[("X-Seen-Auth", &auth)], format!("you sent {auth}")),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{}\n    headers: {{ Authorization: \"Bearer ${{{SECRET_VAR}}}\" }}\n    routes:\n      - {{ path: /echo, expect: {{ status: [200, 401], body_contains: welcome }} }}\n      - {{ path: /regex, expect: {{ body_regex: \"^welcome\" }} }}\n      - {{ path: /whoami, expect: {{ json: {{ user: admin }} }} }}\n      - {{ path: /hdr, expect: {{ header: {{ X-Seen-Auth: \"^none$\" }} }} }}\n",
            s.port()
        ),
    );
    every_output(dir.path(), &[(SECRET_VAR, SECRET)], 1, "reflected");
    let o = check(dir.path(), &["--format", "json"], &[(SECRET_VAR, SECRET)]);
    let doc = o.json();
    for p in ["/echo", "/regex", "/whoami", "/hdr"] {
        assert_eq!(route(&doc, "api", p)["outcome"], "body_mismatch", "{doc:#}");
    }
}

/// `${VAR}` in a base URL's path, a route's path (query) and a request body: the server gets
/// the values; no output shows them, not even where the server echoes them back in a failure
/// (the excerpt, a redirect's Location) — reports show the names as written.
#[test]
fn secrets_in_base_url_path_and_body_reach_the_server_and_no_output() {
    let s = Srv::http(|r| {
        let seen = format!("{} {}", r.path, String::from_utf8_lossy(&r.body));
        if r.path.contains("/bounce") {
            return resp(302, &[("Location", &format!("/landed?was={}", r.path))], "");
        }
        if r.path.starts_with("/landed") {
            return resp(503, &[], format!("no: {seen}"));
        }
        match r.method.as_str() {
            "POST" => resp(200, &[], format!("echo {seen}")),
            _ => resp(500, &[], format!("failed for {seen}")),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\nnotify: [ {{ url: \"http://127.0.0.1:{}/hook\" }} ]\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{}/t/${{{SECRET_VAR}}}\n    routes:\n      - {{ path: \"/q?key=${{{SECRET_VAR}}}\" }}\n      - {{ path: /rpc, method: POST, body: '{{\"token\":\"${{{SECRET_VAR}}}\"}}', expect: {{ body_contains: welcome }} }}\n      - {{ path: \"/bounce/${{{SECRET_VAR}}}\", follow_redirects: 1 }}\n",
            s.port(),
            s.port()
        ),
    );
    every_output(
        dir.path(),
        &[(SECRET_VAR, SECRET)],
        1,
        "secrets in URLs and bodies",
    );
    // The notification of the unhealthy target went out, without the value.
    let hooks: Vec<Req> = s
        .requests()
        .into_iter()
        .filter(|r| r.path == "/hook")
        .collect();
    assert!(!hooks.is_empty(), "no notification sent");
    for h in &hooks {
        assert!(!String::from_utf8_lossy(&h.body).contains(SECRET), "{h:?}");
    }
    let reqs = s.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path == format!("/t/{SECRET}/q?key={SECRET}")),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().any(|r| r.method == "POST"
            && r.path == format!("/t/{SECRET}/rpc")
            && r.body == format!("{{\"token\":\"{SECRET}\"}}").as_bytes()),
        "{reqs:?}"
    );
    let o = check(dir.path(), &["--format", "json"], &[(SECRET_VAR, SECRET)]);
    let doc = o.json();
    let routes = doc["targets"][0]["routes"].as_array().unwrap();
    // What the reports show: the names as written.
    assert_eq!(
        routes[0]["url"],
        format!(
            "http://127.0.0.1:{}/t/${{{SECRET_VAR}}}/q?key=${{{SECRET_VAR}}}",
            s.port()
        )
    );
    assert_eq!(routes[0]["outcome"], "http_error", "{doc:#}");
    assert_eq!(routes[1]["outcome"], "body_mismatch", "{doc:#}");
    assert_eq!(routes[2]["outcome"], "http_error", "{doc:#}");
    assert_eq!(
        routes[2]["redirects"].as_array().unwrap().len(),
        1,
        "{doc:#}"
    );

    // An unset variable in a path or a body is a config error at its position, naming it.
    for (route, line_col) in [
        ("      - { path: \"/x/${RW_TEST_UNSET_PATH}\" }\n", ":6:17:"),
        (
            "      - { path: /x, body: \"${RW_TEST_UNSET_PATH}\" }\n",
            ":6:27:",
        ),
    ] {
        probe_file(
            dir.path(),
            &format!(
                "{FAST}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{}\n    routes:\n{route}",
                s.port()
            ),
        );
        let o = check(dir.path(), &["--format", "json"], &[(SECRET_VAR, SECRET)]);
        assert_eq!(o.code, 2, "{}", o.all());
        assert!(
            o.stderr.contains(&format!(
                "probes.yaml{line_col} environment variable RW_TEST_UNSET_PATH is not set"
            )),
            "{}",
            o.all()
        );
    }
}

/// `{"status":"ok"}` gzip-compressed, as a server that ignores `Accept-Encoding` sends it.
const GZIPPED_OK: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\x2a\x2e\x49\x2c\x29\x2d\x56\xb2\x52\xca\xcf\x56\xaa\x05\x00\xdd\xed\x13\x1d\x0f\x00\x00\x00";

/// Every probe asks for `Accept-Encoding: identity`; a server that compresses anyway gets a
/// `body_mismatch` that names the encoding, never binary in the message, and never a body
/// check passed on compressed bytes (`body_not_contains` would find nothing in them). A route
/// may ask for an encoding itself; without body checks an encoded body is fine.
#[test]
fn an_encoded_body_sent_regardless_is_named_not_printed() {
    let s = Srv::http(|r| {
        if r.path == "/plain" {
            return resp(200, &[], "{\"status\":\"ok\"}");
        }
        resp(
            200,
            &[
                ("Content-Encoding", "gzip"),
                ("Content-Type", "application/json"),
            ],
            GZIPPED_OK,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{}\n    routes:\n      - {{ path: /json, expect: {{ json: {{ status: ok }} }} }}\n      - {{ path: /forbidden, expect: {{ body_not_contains: Traceback }} }}\n      - {{ path: /status-only }}\n      - {{ path: /plain, expect: {{ body_contains: ok }} }}\n      - {{ path: /asks, headers: {{ Accept-Encoding: gzip }} }}\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    for p in ["/json", "/forbidden"] {
        let r = route(&doc, "api", p);
        assert_eq!(r["outcome"], "body_mismatch", "{doc:#}");
        let e = error_of(r);
        assert!(
            e.starts_with("the body is gzip-encoded (Content-Encoding: gzip) although the request asked for identity"),
            "{e}"
        );
        assert!(!e.contains('\u{fffd}') && !e.contains("\\u{1f}"), "{e}");
    }
    for p in ["/status-only", "/plain", "/asks"] {
        assert_eq!(route(&doc, "api", p)["outcome"], "ok", "{doc:#}");
    }
    let o = check(dir.path(), &["--format", "text"], &[]);
    assert!(!o.stdout.contains('\u{fffd}'), "{}", o.all());
    for r in s.requests() {
        let want = if r.path == "/asks" {
            "gzip"
        } else {
            "identity"
        };
        assert_eq!(r.header("accept-encoding"), Some(want), "{r:?}");
    }
    // One Accept-Encoding header, the route's own, never both.
    let asks = s
        .requests()
        .into_iter()
        .find(|r| r.path == "/asks")
        .unwrap();
    assert_eq!(
        asks.headers
            .iter()
            .filter(|(n, _)| n == "accept-encoding")
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 3. User-Agent

#[test]
fn user_agent_default_and_configured() {
    let s = Srv::http(|_| resp(200, &[], "ok"));
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "targets:\n  - name: api\n    base_url: http://127.0.0.1:{}\n    routes: [ {{ path: /ua }} ]\n",
        s.port()
    );
    probe_file(dir.path(), &format!("{FAST}\n{routes}"));
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let default = format!("routewatch/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(s.requests()[0].header("user-agent"), Some(default.as_str()));

    let ua = "routewatch-ci/9.9 (+https://ops.example.org/contact)";
    probe_file(
        dir.path(),
        &format!("user_agent: \"{ua}\"\n{FAST}\n{routes}"),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("user-agent"), Some(ua));
    for r in &reqs {
        assert_eq!(
            r.headers.iter().filter(|(n, _)| n == "user-agent").count(),
            1,
            "exactly one User-Agent: {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Methods and bodies

#[test]
fn post_with_a_json_rpc_body_and_head_without_a_body() {
    let s = Srv::http(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/rpc") => resp(
            200,
            &[("Content-Type", "application/json")],
            r#"{"jsonrpc":"2.0","id":1,"result":"pong"}"#,
        ),
        // Announces 100 000 bytes it never sends: only a client that knows HEAD has no body
        // finishes before the route's 30s timeout (and calls it ok).
        ("HEAD", "/big") => resp(200, &[], vec![b'x'; 100_000]),
        _ => resp(404, &[], ""),
    });
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: rpc\n    base_url: http://127.0.0.1:{}\n    routes:\n      - path: /rpc\n        method: POST\n        body: '{body}'\n        headers: {{ Content-Type: application/json }}\n        expect: {{ json: {{ result: pong }} }}\n      - {{ path: /big, method: HEAD, timeout: 30s }}\n",
            s.port()
        ),
    );
    let started = Instant::now();
    let o = check(dir.path(), &["--format", "json"], &[]);
    let took = started.elapsed();
    assert_eq!(o.code, 0, "{}", o.all());
    let doc = o.json();
    assert_eq!(route(&doc, "rpc", "/rpc")["outcome"], "ok", "{doc:#}");
    assert_eq!(route(&doc, "rpc", "/big")["outcome"], "ok", "{doc:#}");
    // Half the timeout: far more than a busy machine adds to a whole run, far less than
    // waiting for the announced body takes.
    assert!(
        took < Duration::from_secs(15),
        "HEAD did not wait for a body: {took:?}"
    );

    let reqs = s.requests();
    let post = reqs.iter().find(|r| r.path == "/rpc").expect("POST seen");
    assert_eq!(post.method, "POST");
    assert_eq!(String::from_utf8_lossy(&post.body), body);
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(
        post.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    let head = reqs.iter().find(|r| r.path == "/big").expect("HEAD seen");
    assert_eq!(head.method, "HEAD");
    assert!(head.body.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. Expectations, end to end

fn expect_server() -> Srv {
    Srv::http(|r| match r.path.as_str() {
        "/created" => resp(201, &[], "made"),
        "/nocontent" => resp(204, &[], ""),
        "/found" => resp(302, &[("Location", "/elsewhere")], ""),
        "/teapot" => resp(418, &[], "short and stout"),
        "/v12" => resp(200, &[("X-Version", "v12")], "ok"),
        "/beta" => resp(200, &[("X-Version", "beta-3")], "ok"),
        "/nover" => resp(200, &[], "ok"),
        "/ready" => resp(200, &[], "status: ready (build 42)"),
        "/slow" => Resp {
            delay: Duration::from_millis(100),
            ..resp(200, &[], "eventually")
        },
        "/status" => resp(
            200,
            &[("Content-Type", "application/json")],
            r#"{"status":"degraded","checks":{"db":"down"}}"#,
        ),
        "/status-ok" => resp(
            200,
            &[("Content-Type", "application/json")],
            r#"{"status":"healthy","checks":{"db":"ok"}}"#,
        ),
        _ => resp(404, &[], "nope"),
    })
}

#[test]
fn expectations_that_pass_and_a_slow_route_degrade_but_exit_0() {
    let s = expect_server();
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: web\n    base_url: http://127.0.0.1:{port}\n    routes:\n      - {{ path: /created, expect: {{ status: [\"200-299\"] }} }}\n      - {{ path: /nocontent, expect: {{ status: \"200-299\" }} }}\n      - {{ path: /teapot, expect: {{ status: [200, 418] }} }}\n      - {{ path: /found, expect: {{ status: [\"200-299\", 302] }} }}\n      - {{ path: /v12, expect: {{ header: {{ X-Version: \"^v[0-9]+$\" }} }} }}\n      - {{ path: /ready, expect: {{ body_regex: \"ready \\\\(build [0-9]+\\\\)\" }} }}\n      - {{ path: /status-ok, expect: {{ json: {{ status: healthy, checks.db: ok }} }} }}\n  - name: sluggish\n    base_url: http://127.0.0.1:{port}\n    routes:\n      - {{ path: /slow, expect: {{ max_latency: 20ms }} }}\n",
            port = s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "slow is a warning, never unhealthy: {}", o.all());
    let doc = o.json();
    for p in [
        "/created",
        "/nocontent",
        "/teapot",
        "/found",
        "/v12",
        "/ready",
        "/status-ok",
    ] {
        let r = route(&doc, "web", p);
        assert_eq!(r["outcome"], "ok", "{p}: {doc:#}");
        assert_eq!(r["error"], Value::Null, "{p}: {doc:#}");
    }
    assert_eq!(route(&doc, "web", "/teapot")["status_code"], 418);
    assert_eq!(target(&doc, "web")["verdict"], "healthy", "{doc:#}");
    let slow = route(&doc, "sluggish", "/slow");
    assert_eq!(slow["outcome"], "slow", "{doc:#}");
    assert_eq!(slow["status_code"], 200, "{doc:#}");
    assert_eq!(slow["attempts"], 1, "slow is not retried: {doc:#}");
    assert!(slow["elapsed_ms"].as_u64().unwrap() >= 100, "{doc:#}");
    assert!(error_of(slow).contains("max_latency"), "{doc:#}");
    assert_eq!(target(&doc, "sluggish")["verdict"], "degraded", "{doc:#}");
    assert_eq!(doc["status"], "degraded", "{doc:#}");
    assert_eq!(doc["exit_code"], 0, "{doc:#}");
}

#[test]
fn expectations_that_fail_name_what_was_wrong() {
    let s = expect_server();
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: web\n    base_url: http://127.0.0.1:{}\n    routes:\n      - {{ path: /found, expect: {{ status: [\"200-299\"] }} }}\n      - {{ path: /created, expect: {{ status: [200, 418] }} }}\n      - {{ path: /beta, expect: {{ header: {{ X-Version: \"^v[0-9]+$\" }} }} }}\n      - {{ path: /nover, expect: {{ header: {{ X-Version: \"^v[0-9]+$\" }} }} }}\n      - {{ path: /ready, expect: {{ body_regex: \"^healthy$\" }} }}\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();

    let r = route(&doc, "web", "/found");
    assert_eq!(r["outcome"], "http_error", "{doc:#}");
    assert_eq!(r["status_code"], 302, "redirects are not followed: {doc:#}");
    assert!(error_of(r).contains("200-299"), "{doc:#}");

    let r = route(&doc, "web", "/created");
    assert_eq!(r["outcome"], "http_error", "{doc:#}");
    let e = error_of(r);
    assert!(
        e.contains("201") && e.contains("200") && e.contains("418"),
        "{e}"
    );

    for p in ["/beta", "/nover"] {
        let r = route(&doc, "web", p);
        assert_eq!(r["outcome"], "body_mismatch", "{p}: {doc:#}");
        assert_eq!(r["status_code"], 200, "{doc:#}");
        assert!(
            error_of(r).to_ascii_lowercase().contains("x-version"),
            "the error names the header: {doc:#}"
        );
    }
    assert!(
        error_of(route(&doc, "web", "/beta")).contains("beta-3"),
        "{doc:#}"
    );
    assert!(
        error_of(route(&doc, "web", "/nover")).contains("missing"),
        "{doc:#}"
    );

    let r = route(&doc, "web", "/ready");
    assert_eq!(r["outcome"], "body_mismatch", "{doc:#}");
    assert!(error_of(r).contains("^healthy$"), "{doc:#}");

    assert_eq!(target(&doc, "web")["verdict"], "unhealthy", "{doc:#}");
    assert_eq!(doc["status"], "unhealthy", "{doc:#}");
}

/// The incident: a health endpoint answered 200 with `{"status":"degraded"}` and a status-only
/// check called it healthy.
#[test]
fn a_200_hiding_a_degraded_service_is_a_body_mismatch() {
    let s = expect_server();
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{}\n    routes:\n      - {{ path: /status, expect: {{ status: [200], json: {{ status: healthy }} }} }}\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "api", "/status");
    assert_eq!(r["outcome"], "body_mismatch", "{doc:#}");
    assert_eq!(r["status_code"], 200, "{doc:#}");
    assert_eq!(r["attempts"], 1, "body_mismatch is not retried: {doc:#}");
    let e = error_of(r);
    assert!(e.contains("status") && e.contains("degraded"), "{e}");
    assert_eq!(doc["status"], "unhealthy", "{doc:#}");

    let o = check(dir.path(), &[], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stdout.contains("body_mismatch") && o.stdout.contains("degraded"),
        "the text report says why: {}",
        o.all()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. IPv4 / IPv6

#[test]
fn ip_v4_reaches_a_v4_only_server_by_name() {
    let s = Srv::http(|_| resp(200, &[], "v4"));
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: http://localhost:{}\n    ip: v4\n    routes: [ {{ path: /health }} ]\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(route(&o.json(), "api", "/health")["outcome"], "ok");
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn ip_v6_reaches_a_v6_server_and_never_falls_back_to_v4() {
    let v6 = match Srv::start("[::1]:0", None, |_| resp(200, &[], "v6")) {
        Ok(s) => s,
        Err(e) => {
            common::skip_outside_ci(&format!("cannot bind [::1] on this machine ({e})"));
            return;
        }
    };
    let v4 = Srv::http(|_| resp(200, &[], "v4"));
    let localhost_has_v6 = ("localhost", 0)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.any(|a| a.is_ipv6()));
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: six\n    base_url: http://[::1]:{}\n    ip: v6\n    routes: [ {{ path: /health }} ]\n  - name: four-only\n    base_url: http://localhost:{}\n    ip: v6\n    routes: [ {{ path: /health }} ]\n",
            v6.port(),
            v4.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    assert_eq!(route(&doc, "six", "/health")["outcome"], "ok", "{doc:#}");
    assert_eq!(v6.requests().len(), 1);

    let r = route(&doc, "four-only", "/health");
    if localhost_has_v6 {
        // localhost → ::1, where nothing listens on that port.
        assert_eq!(r["outcome"], "refused", "{doc:#}");
    } else {
        // localhost has no IPv6 address here: nothing to connect to.
        assert!(
            r["outcome"] == "dns" || r["outcome"] == "refused",
            "{doc:#}"
        );
        assert!(error_of(r).contains("IPv6"), "says why: {doc:#}");
    }
    assert_eq!(r["status_code"], Value::Null, "{doc:#}");
    assert_eq!(
        v4.connection_count(),
        0,
        "ip: v6 never falls back to the IPv4 server"
    );
}

/// A plain-HTTP server that answers whatever arrives (a TLS ClientHello) with a 400, as
/// Python's http.server or nginx on a plain port do.
fn plain_http_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.0 400 Bad request\r\nContent-Type: text/html\r\n\r\n<h1>400</h1>",
            );
        }
    });
    port
}

#[test]
fn https_to_a_plain_http_port_is_tls_and_not_retried() {
    let port = plain_http_port();
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "defaults: {{ timeout: 2s, connect_timeout: 500ms, retries: 2, backoff: 10ms }}\ntargets:\n  - name: api\n    base_url: https://127.0.0.1:{port}\n    routes: [ {{ path: /health }} ]\n"
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "api", "/health");
    assert_eq!(r["outcome"], "tls", "{doc:#}");
    assert_eq!(r["attempts"], 1, "tls is never retried: {doc:#}");
}

#[test]
fn a_tls_handshake_that_never_finishes_on_a_connected_port_is_timeout() {
    // TCP is accepted, then silence: the in-process TLS of a hung server. Connected, no
    // answer: the hung signature, not connect_timeout.
    let s = Srv::start("127.0.0.1:0", None, |_| resp(200, &[], "plain")).expect("bind");
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "defaults: {{ timeout: 2s, connect_timeout: 500ms, retries: 2, backoff: 10ms }}\ntargets:\n  - name: api\n    base_url: https://127.0.0.1:{}\n    routes: [ {{ path: /health }} ]\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "api", "/health");
    assert_eq!(r["outcome"], "timeout", "{doc:#}");
    assert!(
        error_of(r).contains("TLS handshake"),
        "the error says where it stalled: {doc:#}"
    );
}

/// A TCP relay to `to` that holds each new connection `delay` before passing bytes on: the
/// slow TLS handshake of a loaded server.
fn slow_relay(to: u16, delay: Duration) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    return;
                };
                let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut s) = (c, s);
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    port
}

/// A TCP relay to `to` that passes its first connection on at once and holds every later one
/// without passing a byte: the probe's own connection answers, the certificate-chain
/// handshake that follows it stalls.
fn relay_that_stalls_after_the_first(to: u16) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, c) in l.incoming().enumerate() {
            let Ok(c) = c else { continue };
            if n > 0 {
                held.push(c);
                continue;
            }
            let s = std::net::TcpStream::connect(("127.0.0.1", to)).unwrap();
            let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            std::thread::spawn(move || {
                let (mut s, mut c) = (s, c);
                let _ = std::io::copy(&mut s, &mut c);
            });
        }
    });
    port
}

/// The route's time is the server's: the extra handshake that reads the certificate chain
/// after the answer (here stalled until its 2 s bound) is not in it, nor in `max_latency`.
#[test]
fn the_certificate_chain_handshake_is_not_in_the_routes_time() {
    let p = pki(&["localhost", "127.0.0.1"]);
    let s = tls_server(&p);
    let relay = relay_that_stalls_after_the_first(s.port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &p.ca_pem).unwrap();
    probe_file(
        dir.path(),
        &format!(
            "defaults: {{ timeout: 10s, connect_timeout: 2s, retries: 0 }}\ntargets:\n  - name: api\n    base_url: https://localhost:{relay}\n    tls: {{ ca_file: ca.pem }}\n    routes: [ {{ path: /health }} ]\n"
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "api", "/health");
    assert_eq!(r["outcome"], "ok", "{doc:#}");
    // The run holds the route and the stalled handshake (its 2 s bound), the route only its
    // own time: however slow the machine, they differ by the stall.
    let (run, own) = (
        doc["elapsed_ms"].as_u64().unwrap(),
        r["elapsed_ms"].as_u64().unwrap(),
    );
    assert!(
        run >= own + 1900,
        "the stalled diagnostic handshake is not the server's time: {doc:#}"
    );
}

#[test]
fn a_tls_handshake_slower_than_connect_timeout_but_within_the_route_timeout_is_ok() {
    // connect_timeout is for TCP; a loaded server's slow handshake is not a dead port, and
    // certainly not a hang.
    let p = pki(&["localhost", "127.0.0.1"]);
    let s = tls_server(&p);
    let relay = slow_relay(s.port(), Duration::from_millis(350));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &p.ca_pem).unwrap();
    probe_file(
        dir.path(),
        &format!(
            "defaults: {{ timeout: 3s, connect_timeout: 200ms, retries: 0 }}\ntargets:\n  - name: api\n    base_url: https://localhost:{relay}\n    tls: {{ ca_file: ca.pem }}\n    routes: [ {{ path: /health }} ]\n"
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(route(&o.json(), "api", "/health")["outcome"], "ok");
}

#[test]
fn https_closed_without_an_answer_is_empty_reply_like_plain_http() {
    let p = pki(&["localhost", "127.0.0.1"]);
    let s = Srv::start("127.0.0.1:0", Some(Arc::clone(&p.server)), |_| {
        resp(0, &[], "")
    })
    .expect("bind");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &p.ca_pem).unwrap();
    probe_file(
        dir.path(),
        &format!(
            "defaults: {{ timeout: 2s, retries: 1, backoff: 10ms }}\ntargets:\n  - name: api\n    base_url: https://localhost:{}\n    tls: {{ ca_file: ca.pem }}\n    routes: [ {{ path: /drop }} ]\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "api", "/drop");
    assert_eq!(r["outcome"], "empty_reply", "{doc:#}");
    assert_eq!(r["attempts"], 2, "empty_reply is retried: {doc:#}");
}

// ---------------------------------------------------------------------------------------------
// Secrets echoed back in another encoding

/// A secret with characters every encoding treats differently: `/`, `"`, `\`, a space.
const ODD_SECRET: &str = "s3cr3t/Tok\"en\\Val 42";
/// A URL password with a non-ASCII character (`päss-w0rd`), sent in a Basic token.
const ODD_PASSWORD: &str = "p%C3%A4ss-w0rd";

/// Every way `value` is echoed by the server below, as sent.
fn echoed_forms(value: &str) -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let json = serde_json::to_string(value).unwrap();
    let json = json[1..json.len() - 1].to_string();
    let pct_upper: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let pct_lower_plus = pct_upper.to_lowercase().replace("%20", "+");
    let half = value.len() / 2;
    vec![
        ("as-is", value.into()),
        ("json", json.clone().into()),
        ("php-json", json.replace('/', "\\/").into()),
        ("percent", pct_upper.into()),
        ("percent-lower-plus", pct_lower_plus.into()),
        ("upper", value.to_uppercase().into()),
        ("lower", value.to_lowercase().into()),
        ("base64", STANDARD.encode(value).into()),
        (
            "base64-url-shifted",
            URL_SAFE_NO_PAD.encode(format!("x{value}")).into(),
        ),
        (
            "basic-auth",
            STANDARD.encode(format!("admin:{value}")).into(),
        ),
        (
            "line-break",
            format!("{}\n{}", &value[..half], &value[half..]).into(),
        ),
    ]
}

/// A 200 whose body fails `body_contains: welcome` and echoes `what` in one encoding (the
/// path names it), or the Latin-1 bytes of the Basic password.
fn echo_server(what: impl Fn(&Req) -> String + Send + Sync + 'static) -> Srv {
    Srv::http(move |r| {
        let value = what(r);
        if r.path == "/latin1" {
            let password = "päss-w0rd";
            let mut body = b"bad password: ".to_vec();
            body.extend(password.chars().map(|c| c as u32 as u8));
            return resp(200, &[], body);
        }
        let form = echoed_forms(&value)
            .into_iter()
            .find(|(name, _)| r.path == format!("/{name}"))
            .map(|(_, b)| b)
            .unwrap_or_default();
        let mut body = b"{\"error\":\"rejected\",\"you_sent\":\"".to_vec();
        body.extend(form);
        body.extend(b"\"}");
        resp(200, &[("Content-Type", "application/json")], body)
    })
}

#[test]
fn a_secret_echoed_in_any_common_encoding_reaches_no_output() {
    // One target sends the secret and hears it back; the other never sends it, yet its server
    // knows and echoes it (redacted there, not withheld).
    let sends = echo_server(|r| r.header("x-api-key").unwrap_or("").to_string());
    let knows = echo_server(|_| ODD_SECRET.to_string());
    let names: Vec<&str> = echoed_forms("x").iter().map(|(n, _)| *n).collect();
    let routes = |extra: &str| {
        names
            .iter()
            .map(|n| format!("      - {{ path: /{n}, expect: {{ body_contains: welcome }} }}\n"))
            .collect::<String>()
            + extra
    };
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: sends\n    base_url: http://admin:{ODD_PASSWORD}@127.0.0.1:{}\n    headers: {{ X-Api-Key: \"${{{SECRET_VAR}}}\" }}\n    routes:\n{}  - name: knows\n    base_url: http://127.0.0.1:{}\n    routes:\n{}",
            sends.port(),
            routes("      - { path: /latin1, expect: { body_contains: welcome } }\n"),
            knows.port(),
            routes(""),
        ),
    );
    let envs = [(SECRET_VAR, ODD_SECRET)];
    let mut forbidden: Vec<(String, Vec<u8>)> = echoed_forms(ODD_SECRET)
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
    forbidden.push(("password".into(), "päss-w0rd".into()));
    forbidden.push(("password-latin1".into(), "p\u{FFFD}ss-w0rd".into()));
    forbidden.push(("short".into(), "s3cr3t".into()));
    forbidden.push(("short-upper".into(), "S3CR3T".into()));
    for args in [
        &["--format", "json"][..],
        &["--format", "text", "-v"][..],
        &["--format", "json", "-vv"][..],
    ] {
        let o = check(dir.path(), args, &envs);
        assert_eq!(o.code, 1, "{args:?}: {}", o.all());
        for (name, form) in &forbidden {
            let form = String::from_utf8_lossy(form);
            assert!(
                !o.stdout.contains(form.as_ref()) && !o.stderr.contains(form.as_ref()),
                "{args:?}: the {name} form {form:?} leaked:\n{}",
                o.all()
            );
        }
    }
    let doc = check(dir.path(), &["--format", "json"], &envs).json();
    for n in names.iter().chain(["latin1"].iter()) {
        let r = route(&doc, "sends", &format!("/{n}"));
        assert_eq!(r["outcome"], "body_mismatch", "{n}: {doc:#}");
        assert!(
            error_of(r).contains("body withheld: the route sends a secret header"),
            "{n}: {}",
            error_of(r)
        );
    }
    for n in &names {
        let r = route(&doc, "knows", &format!("/{n}"));
        assert_eq!(r["outcome"], "body_mismatch", "{n}: {doc:#}");
        assert!(
            error_of(r).contains("<redacted>"),
            "{n}: redacted, not withheld: {}",
            error_of(r)
        );
    }
}

#[test]
fn a_short_secret_withholds_the_bodies_of_the_routes_that_send_it_and_nothing_else() {
    let s = Srv::http(|r| resp(200, &[], format!("a plain answer for {}", r.path)));
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: api\n    base_url: http://127.0.0.1:{}\n    routes:\n      - {{ path: /keyed, headers: {{ X-Key: \"${{{SECRET_VAR}}}\" }}, expect: {{ body_contains: welcome }} }}\n      - {{ path: /open, expect: {{ body_contains: welcome }} }}\n",
            s.port()
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[(SECRET_VAR, "an")]);
    assert_eq!(o.code, 1, "{}", o.all());
    assert_eq!(
        s.requests()[0]
            .header("x-key")
            .or(s.requests()[1].header("x-key")),
        Some("an")
    );
    let doc = o.json();
    let keyed = error_of(route(&doc, "api", "/keyed"));
    assert!(keyed.contains("body withheld"), "{keyed}");
    let open = error_of(route(&doc, "api", "/open"));
    assert!(
        open.contains("a plain answer for /open"),
        "a 2-character secret does not shred other text: {open}"
    );
}

/// A TLS server that closes every connection right after its handshake, without a
/// close_notify and without reading the request, as Python's asyncio servers do when a
/// required client certificate is missing (TLS 1.3: the server learns it only after the
/// handshake). With `ask_client_cert` it sends a CertificateRequest (the client may answer
/// with none); without, it is a server that just drops the connection.
fn closing_tls_server(ask_client_cert: bool) -> (u16, tokio::runtime::Runtime) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "closing CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let builder = rustls::ServerConfig::builder();
    let builder = if ask_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .allow_unauthenticated()
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(vec![leaf_cert.der().clone()], key)
        .unwrap();
    tls_listener(TlsAcceptor::from(Arc::new(config)), |tls| async move {
        // No close_notify, nothing read: the TCP connection just ends.
        let (io, _) = tls.into_inner();
        drop(io);
    })
}

type ServerTls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A TLS listener on 127.0.0.1, on a runtime of its own: each connection whose handshake
/// completes goes to `conn`. Returns the port, and the runtime (dropping it stops all).
fn tls_listener<F, Fut>(acceptor: TlsAcceptor, conn: F) -> (u16, tokio::runtime::Runtime)
where
    F: Fn(ServerTls) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let conn = Arc::new(conn);
    rt.spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, conn) = (acceptor.clone(), Arc::clone(&conn));
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(sock).await {
                    conn(tls).await;
                }
            });
        }
    });
    (port, rt)
}

#[test]
fn a_server_that_asks_for_a_client_certificate_and_closes_is_tls_not_a_hang() {
    let (port, _rt) = closing_tls_server(true);
    let dir = tempfile::tempdir().unwrap();
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: mtls\n    base_url: https://127.0.0.1:{port}\n    tls: {{ insecure: true }}\n    routes: [ {{ path: /health }} ]\n"
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(o.code, 1, "{}", o.all());
    let doc = o.json();
    let r = route(&doc, "mtls", "/health");
    assert_eq!(
        r["outcome"], "tls",
        "never empty_reply (a hung outcome): {doc:#}"
    );
    assert!(
        error_of(r).contains("requires a client certificate"),
        "{doc:#}"
    );

    // The same close from a server that asked for nothing stays what it is.
    let (port, _rt2) = closing_tls_server(false);
    probe_file(
        dir.path(),
        &format!(
            "{FAST}\ntargets:\n  - name: plain\n    base_url: https://127.0.0.1:{port}\n    tls: {{ insecure: true }}\n    routes: [ {{ path: /health }} ]\n"
        ),
    );
    let o = check(dir.path(), &["--format", "json"], &[]);
    let doc = o.json();
    // FIN or RST depending on whether the request had arrived: what it was, never tls.
    let outcome = route(&doc, "plain", "/health")["outcome"].clone();
    assert!(outcome == "empty_reply" || outcome == "reset", "{doc:#}");
}

/// An HTTPS server that reads one request head, writes `answer` and ends the TCP connection
/// without TLS's close_notify (as many servers close).
fn closes_without_notify(p: &Pki, answer: &'static [u8]) -> (u16, tokio::runtime::Runtime) {
    tls_listener(
        TlsAcceptor::from(Arc::clone(&p.server)),
        move |mut tls| async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if tls.write_all(answer).await.is_err() || tls.flush().await.is_err() {
                return;
            }
            // No close_notify: the TCP connection just ends (FIN).
            let (mut io, _) = tls.into_inner();
            let _ = io.shutdown().await;
        },
    )
}

/// A body without a length or chunks runs until the server closes; over TLS, a close without
/// close_notify ends it, as curl reads it (it was `protocol_error`, "body cut"), and the body
/// checks judge what came. A body with a length, or in chunks, that the same close cuts short
/// is still cut short.
#[test]
fn a_body_that_runs_to_the_close_ends_there_without_close_notify() {
    let p = pki(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    let cases: [(&'static [u8], &str); 3] = [
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello, to the close",
            "ok",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello, cut short",
            "protocol_error",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            "protocol_error",
        ),
    ];
    for (answer, want) in cases {
        let (port, _rt) = closes_without_notify(&p, answer);
        probe_file(
            dir.path(),
            &format!(
                "{FAST}\ntargets:\n  - name: api\n    base_url: https://127.0.0.1:{port}\n    tls: {{ ca_file: {} }}\n    routes: [ {{ path: /plain }}, {{ path: /checked, expect: {{ body_not_contains: error }} }} ]\n",
                ca.display()
            ),
        );
        let doc = check(dir.path(), &["--format", "json"], &[]).json();
        // Neither route can be decided before the body's end: both read to it.
        for path in ["/plain", "/checked"] {
            let r = route(&doc, "api", path);
            let shown = String::from_utf8_lossy(answer);
            assert_eq!(r["outcome"], want, "{shown} {path}: {doc:#}");
            assert_eq!(r["status_code"], 200, "{doc:#}");
        }
    }
}
