//! What a probe checks beyond the status, against real local servers (127.0.0.1, port 0): a
//! server certificate near its end (a private CA made in the test), negative body checks, the
//! JSON value forms (exists, absent, comparisons, patterns, a heartbeat's age), client
//! certificates, redirects, and the words of transport errors.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use routewatch::outcome::Outcome;
use routewatch::run::RunReport;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::common;

const DAY: u64 = 86_400;

// ---------------------------------------------------------------------------------------------
// A private CA, and small servers that answer every request alike.

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "routewatch test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `name` signed by `ca`, valid until `valid_for` from now, for `usage`;
/// its DER chain and key.
fn issue(
    ca: &Ca,
    name: &str,
    valid_for: Duration,
    usage: ExtendedKeyUsagePurpose,
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    String,
    String,
) {
    let mut leaf = CertificateParams::new(vec![name.to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![usage];
    leaf.not_before = (SystemTime::now() - Duration::from_secs(DAY)).into();
    leaf.not_after = (SystemTime::now() + valid_for).into();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca.issuer).unwrap();
    let pem = (cert.pem(), key.serialize_pem());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (vec![cert.der().clone()], der, pem.0, pem.1)
}

fn server_config(ca: &Ca, valid_for: Duration) -> Arc<rustls::ServerConfig> {
    let (chain, key, _, _) = issue(
        ca,
        "localhost",
        valid_for,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What a test server answers: status, extra header lines, body — from the request path.
type Answer = Arc<dyn Fn(&str) -> (u16, String, String) + Send + Sync>;

/// Serve on 127.0.0.1:0, over TLS when `tls` is given; the port.
async fn serve(
    tls: Option<Arc<rustls::ServerConfig>>,
    answer: impl Fn(&str) -> (u16, String, String) + Send + Sync + 'static,
) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer: Answer = Arc::new(answer);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (answer, acceptor) = (Arc::clone(&answer), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    None => respond(stream, answer).await,
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            respond(s, answer).await;
                        }
                    }
                }
            });
        }
    });
    port
}

/// Keep-alive HTTP/1.1 without request bodies: read a head, answer, repeat.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: Answer) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (status, headers, body) = answer(&path);
        let out = format!(
            "HTTP/1.1 {status} {}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            common::reason(status),
            body.len()
        );
        if s.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn ok(body: &str) -> (u16, String, String) {
    (200, String::new(), body.to_string())
}

/// A check of `yaml` with the JSON document and the Prometheus text it reports.
async fn check(yaml: &str) -> (RunReport, serde_json::Value, String) {
    let report = common::check(yaml).await;
    let json: serde_json::Value = serde_json::from_str(&routewatch::report::json(&report)).unwrap();
    let prom = routewatch::report::prometheus(&report);
    (report, json, prom)
}

const FAST: &str = "defaults: { timeout: 5s, connect_timeout: 2s, retries: 0 }";

// ---------------------------------------------------------------------------------------------
// 1. Certificate expiry

#[tokio::test]
async fn a_certificate_expiring_in_5_days_under_14_is_degraded_naming_it_and_its_not_after() {
    let ca = ca();
    let port = serve(
        Some(server_config(&ca, Duration::from_secs(5 * DAY))),
        |_| ok("fine"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let yaml = format!(
        "{FAST}\ntargets:\n  - name: web\n    base_url: https://localhost:{port}\n    unit: web.service\n    tls: {{ ca_file: {} }}\n    routes:\n      - {{ path: /soon, expect: {{ cert_min_days: 14 }} }}\n      - {{ path: /later, expect: {{ cert_min_days: 2d }} }}\n",
        ca_file.display()
    );
    let (report, json, prom) = check(&yaml).await;
    let soon = &report.targets[0].routes[0];
    assert_eq!(soon.outcome, Outcome::CertExpiring, "{report:#?}");
    assert_eq!(soon.status_code, Some(200));
    let why = soon.error.as_deref().unwrap();
    let cert = soon.tls_cert.as_ref().unwrap();
    assert!(
        why.contains("CN=localhost") && why.contains(&format!("notAfter {}", cert.not_after)),
        "{why}"
    );
    assert!(why.contains("14 days"), "{why}");
    assert!((4.8..=5.0).contains(&cert.days_left), "{cert:?}");
    // Degraded, exit 0, and never handed to recovery (the unit is not touched).
    assert_eq!(report.exit_code, 0, "{report:#?}");
    assert_eq!(json["targets"][0]["verdict"], "degraded", "{json:#}");
    assert!(json["targets"][0]["recovery"].is_null(), "{json:#}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("web: degraded") && w.contains("/soon cert_expiring")),
        "{:?}",
        report.warnings
    );
    // Two days is enough for the other route: ok, with its days left in the JSON.
    let later = &json["targets"][0]["routes"][1];
    assert_eq!(later["outcome"], "ok", "{json:#}");
    let days = later["tls_cert"]["days_left"].as_f64().unwrap();
    assert!((4.8..=5.0).contains(&days), "{json:#}");
    assert_eq!(json["summary"]["cert_expiring"], 1, "{json:#}");
    // The metric: notAfter as Unix time, for every https route.
    let line = format!(
        "routewatch_tls_cert_expiry_seconds{{target=\"web\",route=\"/soon\",class=\"core\"}} {}",
        cert.not_after_unix
    );
    assert!(prom.contains(&line), "{prom}");
    assert!(prom.contains("# TYPE routewatch_tls_cert_expiry_seconds gauge"));
}

#[test]
fn cert_min_days_on_a_plain_http_target_is_a_config_error() {
    let yaml = "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: /ok, expect: { cert_min_days: 14 } } ]\n";
    let e = routewatch::config::parse(yaml, "p.yaml", &|_| None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "p.yaml:4:53: target \"a\": route /ok: expect.cert_min_days needs an https:// base_url (there is no certificate to check)"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Assertions: negative body checks, JSON forms, framing headers

/// A health document with a heartbeat `age` old, in both timestamp forms.
fn health(age: Duration) -> String {
    let beat = SystemTime::now() - age;
    let unix = beat
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        r#"{{"status":"ok","version":"v12","workers":4,"queue":250,"beat":"{}","beat_unix":{unix},"checks":{{"db":"ok"}}}}"#,
        humantime::format_rfc3339_seconds(beat)
    )
}

#[tokio::test]
async fn every_assertion_form_passes_and_fails_against_a_real_server() {
    let port = serve(None, |path| match path {
        "/fresh" => ok(&health(Duration::from_secs(5))),
        "/stale" => ok(&health(Duration::from_secs(600))),
        _ => ok("all good, no traceback here"),
    })
    .await;
    // Route → (expect, outcome, words the error must hold).
    let table: &[(&str, &str, Outcome, &[&str])] = &[
        ("/text", "body_not_contains: Traceback", Outcome::Ok, &[]),
        (
            "/text",
            "body_not_contains: traceback",
            Outcome::BodyMismatch,
            &[
                "body contains \"traceback\", which it must not",
                "no traceback",
            ],
        ),
        (
            "/text",
            "body_not_regex: \"(?i)error|exception\"",
            Outcome::Ok,
            &[],
        ),
        (
            "/text",
            "body_not_regex: \"good, no\"",
            Outcome::BodyMismatch,
            &["body matches /good, no/, which it must not"],
        ),
        (
            "/fresh",
            "json: { checks.db: { exists: true } }",
            Outcome::Ok,
            &[],
        ),
        (
            "/fresh",
            "json: { checks.cache: { exists: true } }",
            Outcome::BodyMismatch,
            &["json checks.cache: missing, expected it to exist"],
        ),
        (
            "/fresh",
            "json: { error: { absent: true } }",
            Outcome::Ok,
            &[],
        ),
        (
            "/fresh",
            "json: { status: { absent: true } }",
            Outcome::BodyMismatch,
            &["json status: present (\"ok\"), expected it absent"],
        ),
        ("/fresh", "json: { workers: { gte: 1 } }", Outcome::Ok, &[]),
        (
            "/fresh",
            "json: { workers: { gte: 8 } }",
            Outcome::BodyMismatch,
            &["json workers: 4, expected >= 8"],
        ),
        ("/fresh", "json: { workers: { lt: 100 } }", Outcome::Ok, &[]),
        (
            "/fresh",
            "json: { queue: { lt: 100 } }",
            Outcome::BodyMismatch,
            &["json queue: 250, expected < 100"],
        ),
        (
            "/fresh",
            "json: { status: { gte: 1 } }",
            Outcome::BodyMismatch,
            &["a string is not a number"],
        ),
        (
            "/fresh",
            "json: { version: { regex: \"^v[0-9]+$\" } }",
            Outcome::Ok,
            &[],
        ),
        (
            "/fresh",
            "json: { version: { regex: \"^v1$\" } }",
            Outcome::BodyMismatch,
            &["json version: \"v12\" does not match /^v1$/"],
        ),
        (
            "/fresh",
            "json: { beat: { max_age: 90s } }",
            Outcome::Ok,
            &[],
        ),
        (
            "/fresh",
            "json: { beat_unix: { max_age: 90s } }",
            Outcome::Ok,
            &[],
        ),
        (
            "/stale",
            "json: { beat: { max_age: 90s } }",
            Outcome::BodyMismatch,
            &[
                "json beat: \"",
                "is 10m old, over max_age 1m 30s: a stale heartbeat",
            ],
        ),
        (
            "/stale",
            "json: { status: ok, beat_unix: { max_age: 5m } }",
            Outcome::BodyMismatch,
            &["json beat_unix: ", "is 10m old, over max_age 5m"],
        ),
    ];
    let routes: String = table
        .iter()
        .map(|(path, expect, _, _)| format!("  - {{ path: {path}, expect: {{ {expect} }} }}\n"))
        .collect();
    let yaml = common::file(&format!("http://127.0.0.1:{port}"), "retries: 0", &routes);
    let report = common::check(&yaml).await;
    let results = &report.targets[0].routes;
    for ((path, expect, outcome, words), r) in table.iter().zip(results) {
        let error = r.error.clone().unwrap_or_default();
        assert_eq!(r.outcome, *outcome, "{path} {expect}: {error}");
        assert_eq!(r.status_code, Some(200), "{path} {expect}");
        for w in *words {
            assert!(error.contains(w), "{path} {expect}: {w:?} not in {error:?}");
        }
    }
}

#[tokio::test]
async fn a_forbidden_text_within_max_body_of_a_longer_body_is_a_mismatch_not_too_large() {
    let long = format!("starting… FATAL: out of memory {}", "x".repeat(4096));
    let port = serve(None, move |_| ok(&long)).await;
    let routes = "  - { path: /bad, max_body: 1KiB, expect: { body_not_contains: FATAL } }\n  - { path: /unknown, max_body: 1KiB, expect: { body_not_contains: never } }\n";
    let yaml = common::file(&format!("http://127.0.0.1:{port}"), "retries: 0", routes);
    let report = common::check(&yaml).await;
    let r = &report.targets[0].routes;
    assert_eq!(r[0].outcome, Outcome::BodyMismatch, "{:?}", r[0].error);
    assert!(
        r[0].error.as_deref().unwrap().contains("FATAL"),
        "{:?}",
        r[0].error
    );
    // Not found in the first KiB: what follows is unknown.
    assert_eq!(r[1].outcome, Outcome::TooLarge, "{:?}", r[1].error);
}

// ---------------------------------------------------------------------------------------------
// 3. Client certificates

/// A server that requires a client certificate issued by `ca`.
fn mtls_config(ca: &Ca) -> Arc<rustls::ServerConfig> {
    let (chain, key, _, _) = issue(
        ca,
        "localhost",
        Duration::from_secs(90 * DAY),
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem.as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Write `text` to `dir/name` with `mode`; the path.
fn private_file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test]
async fn a_server_that_requires_a_client_certificate_is_ok_with_one_and_tls_without() {
    let ca = ca();
    let port = serve(Some(mtls_config(&ca)), |_| ok("mutual")).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = private_file(dir.path(), "ca.pem", &ca.pem, 0o644);
    let (_, _, cert_pem, key_pem) = issue(
        &ca,
        "routewatch",
        Duration::from_secs(30 * DAY),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let cert = private_file(dir.path(), "client.pem", &cert_pem, 0o644);
    let key = private_file(dir.path(), "client.key", &key_pem, 0o600);
    let yaml = format!(
        "{FAST}\ntargets:\n  - name: with\n    base_url: https://localhost:{port}\n    tls: {{ ca_file: {ca}, cert_file: {cert}, key_file: {key} }}\n    routes: [ {{ path: /health, expect: {{ body_contains: mutual }} }} ]\n  - name: without\n    base_url: https://localhost:{port}\n    tls: {{ ca_file: {ca} }}\n    routes: [ {{ path: /health }} ]\n",
        ca = ca_file.display(),
        cert = cert.display(),
        key = key.display()
    );
    let report = common::check(&yaml).await;
    let with = &report.targets[0].routes[0];
    assert_eq!(with.outcome, Outcome::Ok, "{with:?}");
    let without = &report.targets[1].routes[0];
    assert_eq!(without.outcome, Outcome::Tls, "{without:?}");
    let why = without.error.as_deref().unwrap();
    assert!(why.contains("client certificate"), "{why}");
}

#[test]
fn a_client_certificate_is_checked_when_the_file_is_loaded() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, cert_pem, key_pem) = issue(
        &ca,
        "routewatch",
        Duration::from_secs(30 * DAY),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let cert = private_file(dir.path(), "client.pem", &cert_pem, 0o644);
    let key = private_file(dir.path(), "client.key", &key_pem, 0o600);
    let load = |tls: String| {
        let yaml = format!(
            "targets:\n  - name: a\n    base_url: https://localhost:1\n    tls: {tls}\n    routes: [ {{ path: /ok }} ]\n"
        );
        routewatch::config::parse(&yaml, "p.yaml", &|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    load(format!(
        "{{ cert_file: {}, key_file: {} }}",
        cert.display(),
        key.display()
    ))
    .unwrap();
    let e = load(format!("{{ cert_file: {} }}", cert.display())).unwrap_err();
    assert!(
        e.starts_with("p.yaml:4:23: target \"a\": tls.cert_file needs tls.key_file"),
        "{e}"
    );
    let e = load(format!(
        "{{ cert_file: {}, key_file: {}/nope.key }}",
        cert.display(),
        dir.path().display()
    ))
    .unwrap_err();
    assert!(e.contains("nope.key: does not exist"), "{e}");
    // The certificate where the key should be.
    let e = load(format!(
        "{{ cert_file: {0}, key_file: {0} }}",
        cert.display()
    ))
    .unwrap_err();
    assert!(e.contains("holds no PEM private key"), "{e}");
    if rustix::process::geteuid().is_root() {
        let open = private_file(dir.path(), "open.key", &key_pem, 0o644);
        let e = load(format!(
            "{{ cert_file: {}, key_file: {} }}",
            cert.display(),
            open.display()
        ))
        .unwrap_err();
        assert!(
            e.contains("is readable by group or others (mode 0644)") && e.contains("chmod 600"),
            "{e}"
        );
    } else {
        common::skip_outside_ci("the key file's permissions are checked as root only");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Transport errors in plain words

#[tokio::test]
async fn transport_errors_say_what_failed_where_and_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let dead = common::dead_port().await;
    // A plain HTTP server answers a TLS hello with its own 400.
    let plain = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.0 400 Bad request\r\nContent-Type: text/html\r\n\r\n<h1>400</h1>",
                    )
                    .await;
            }
        });
        port
    };
    // A self-signed server certificate: a CA used as the end entity.
    let self_signed = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // As `openssl req -x509` makes them: basic constraints CA:true on the server's own.
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let signing = KeyPair::generate().unwrap();
        let cert = params.self_signed(&signing).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing.serialize_der()));
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let ca_file = private_file(dir.path(), "self.pem", &cert.pem(), 0o644);
        (serve(Some(Arc::new(config)), |_| ok("x")).await, ca_file)
    };
    let socket = common::missing_socket(dir.path());
    let yaml = format!(
        "{FAST}\ntargets:\n  - name: refused\n    base_url: http://127.0.0.1:{dead}\n    routes: [ {{ path: / }} ]\n  - name: socket\n    base_url: unix:{sock}\n    routes: [ {{ path: / }} ]\n  - name: self-signed\n    base_url: https://localhost:{ss}\n    tls: {{ ca_file: {ss_ca} }}\n    routes: [ {{ path: / }} ]\n  - name: not-tls\n    base_url: https://127.0.0.1:{plain}\n    routes: [ {{ path: / }} ]\n",
        sock = socket.display(),
        ss = self_signed.0,
        ss_ca = self_signed.1.display(),
    );
    let report = common::check(&yaml).await;
    let error = |i: usize| {
        let r = &report.targets[i].routes[0];
        (r.outcome, r.error.clone().unwrap_or_default())
    };
    let (o, e) = error(0);
    assert_eq!(o, Outcome::Refused, "{e}");
    assert!(
        e.starts_with(&format!(
            "connection refused by 127.0.0.1:{dead}: nothing listens there; is the service running, on this port? ("
        )),
        "{e}"
    );
    let (o, e) = error(1);
    assert_eq!(o, Outcome::Refused, "{e}");
    assert!(
        e.starts_with(&format!(
            "Unix socket {} does not exist: is the service running, and is this its socket?",
            socket.display()
        )),
        "{e}"
    );
    let (o, e) = error(2);
    assert_eq!(o, Outcome::Tls, "{e}");
    assert!(
        e.starts_with("self-signed certificate (not issued by a CA): use tls.ca_file with the issuing CA, or tls.insecure"),
        "{e}"
    );
    let (o, e) = error(3);
    assert_eq!(o, Outcome::Tls, "{e}");
    assert!(
        e.starts_with(&format!(
            "127.0.0.1:{plain} does not speak TLS (its answer is not a TLS record): plain HTTP on this port? use http://"
        )),
        "{e}"
    );
}
