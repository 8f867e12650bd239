//! `tls: { cert_file, key_file }`: a client certificate for servers that require one. Both
//! files are read when the probe file is loaded (so `validate` finds a wrong path or a file
//! that is not PEM), and, as root, the key must be root's alone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::ConfigError;
use super::context::Ctx;
use crate::plan::ClientCert;

pub(super) fn check(
    cx: &Ctx,
    cert: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
    target: &str,
) -> Result<Option<ClientCert>, ConfigError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            return Err(cx.err(
                c,
                format!("target {target:?}: tls.cert_file needs tls.key_file (the certificate's private key)"),
            ));
        }
        (None, Some(k)) => {
            return Err(cx.err(
                k,
                format!("target {target:?}: tls.key_file needs tls.cert_file (the certificate it belongs to)"),
            ));
        }
    };
    if let Some(kind) = cx.untrusted {
        return Err(cx.refuse(
            key,
            format!("target {target:?}: tls.key_file is not used from a {kind} that others can write: it would lend root's client certificate to requests they choose; make the file and every directory on its way root's, not writable by group or others"),
        ));
    }
    let cert_file = path_of(cx, cert);
    let key_file = path_of(cx, key);
    let read = |at: &Spanned<String>, path: &Path, what: &str| {
        crate::trust::read_pem(path).map_err(|e| {
            cx.err(
                at,
                format!(
                    "target {target:?}: tls.{what} {}: {}",
                    path.display(),
                    crate::words::io_error(&e)
                ),
            )
        })
    };
    let cert_pem = read(cert, &cert_file, "cert_file")?;
    match reqwest::Certificate::from_pem_bundle(&cert_pem) {
        Ok(certs) if !certs.is_empty() => {}
        _ => {
            return Err(cx.err(
                cert,
                format!(
                    "target {target:?}: tls.cert_file {} holds no PEM certificate; expected -----BEGIN CERTIFICATE----- blocks",
                    cert_file.display()
                ),
            ));
        }
    }
    let key_pem = read(key, &key_file, "key_file")?;
    let mut both = cert_pem;
    both.push(b'\n');
    both.extend_from_slice(&key_pem);
    if reqwest::Identity::from_pem(&both).is_err() {
        return Err(cx.err(
            key,
            format!(
                "target {target:?}: tls.key_file {} holds no PEM private key; expected a -----BEGIN PRIVATE KEY----- (PKCS#8), RSA or EC key block",
                key_file.display()
            ),
        ));
    }
    if rustix::process::geteuid().is_root() {
        key_is_roots_alone(&key_file).map_err(|why| {
            cx.err(
                key,
                format!("target {target:?}: tls.key_file {why}; as root the key must be root's alone (chmod 600, chown root)"),
            )
        })?;
    }
    Ok(Some(ClientCert {
        cert_file,
        key_file,
    }))
}

/// Relative to the probe file's directory.
fn path_of(cx: &Ctx, at: &Spanned<String>) -> PathBuf {
    let raw = Path::new(at.value.trim());
    match cx.base_dir {
        Some(base) if raw.is_relative() => base.join(raw),
        _ => raw.to_path_buf(),
    }
}

/// The key file and every directory above it pass the probe file's trust check, and the key
/// itself is readable by nobody but its owner.
fn key_is_roots_alone(path: &Path) -> Result<(), String> {
    crate::trust::check_chain(path)?;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::words::io_error(&e)))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {mode:04o})",
            path.display()
        ));
    }
    Ok(())
}
