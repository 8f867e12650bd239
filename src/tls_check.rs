//! Diagnostic TLS handshakes: does the server ask for a client certificate, and which
//! certificates does it present (its leaf and intermediates, whose earliest `notAfter` is the
//! expiry that matters)?
//!
//! With TLS 1.3 a server that requires a client certificate finishes its side of the
//! handshake, reads the client's (empty) certificate, and then ends the connection. Python's
//! asyncio servers do so without an alert, so the client only sees the connection closed
//! before any response: it reads like a service that died mid-request (`empty_reply`), which
//! is a hung outcome. It is a configuration mismatch, and must never be a kill. When an
//! `https` request ends that way, one handshake of our own tells the two apart: rustls asks
//! the client's certificate resolver exactly when the server sends a CertificateRequest.
//! Nothing is verified or sent beyond the handshake.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Records that the server asked for a client certificate; offers none.
#[derive(Debug, Default)]
struct Recorder(AtomicBool);

impl ResolvesClientCert for Recorder {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::SeqCst);
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate: this handshake only looks at what the server asks for.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A handshake with the server at `addr` (SNI `name`) under `config`, as far as it gets
/// within `budget` or until `enough` says it has seen what it came for; `None` when it could
/// not start (no connection, a bad name).
fn handshake(
    addr: SocketAddr,
    name: &str,
    budget: Duration,
    config: rustls::ClientConfig,
    enough: impl Fn() -> bool,
) -> Option<(rustls::ClientConnection, TcpStream)> {
    let server_name = ServerName::try_from(name.to_string()).ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).ok()?;
    let deadline = Instant::now() + budget;
    let mut sock = TcpStream::connect_timeout(&addr, budget).ok()?;
    while conn.is_handshaking() && !enough() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = sock.set_read_timeout(Some(left));
        let _ = sock.set_write_timeout(Some(left));
        if conn.complete_io(&mut sock).is_err() {
            break;
        }
    }
    Some((conn, sock))
}

/// Whether the server at `addr` (SNI `name`) asks for a client certificate in its TLS
/// handshake. `None` when the handshake could not get that far within `budget`.
pub fn asks_for_client_cert(addr: SocketAddr, name: &str, budget: Duration) -> Option<bool> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder::default());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_cert_resolver(recorder.clone());
    let (conn, _) = handshake(addr, name, budget, config, || false)?;
    // The request comes in the server's first flight (TLS 1.3) or before its ServerHelloDone
    // (TLS 1.2): once asked, the answer stands whatever happened after.
    let asked = recorder.0.load(Ordering::SeqCst);
    (asked || !conn.is_handshaking()).then_some(asked)
}

/// Records the certificates the server presents; accepts them (the probe's own request has
/// verified them; this handshake only reads their dates).
#[derive(Debug)]
struct ChainRecorder {
    any: AnyServer,
    chain: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.as_ref().to_vec())
                .collect();
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}

/// The certificates (DER) the server at `addr` (SNI `name`) presents, leaf first, as far as
/// its handshake gets within `budget`; `None` when it never showed them. No client
/// certificate is offered and nothing is sent beyond the handshake.
pub fn presented_chain(addr: SocketAddr, name: &str, budget: Duration) -> Option<Vec<Vec<u8>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(ChainRecorder {
        any: AnyServer(provider.clone()),
        chain: std::sync::Mutex::new(Vec::new()),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let seen = || recorder.chain.lock().is_ok_and(|c| !c.is_empty());
    let (mut conn, mut sock) = handshake(addr, name, budget, config, seen)?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let chain = std::mem::take(&mut *recorder.chain.lock().ok()?);
    (!chain.is_empty()).then_some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_no_answer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert_eq!(
            asks_for_client_cert(addr, "localhost", Duration::from_secs(2)),
            None
        );
    }
}
