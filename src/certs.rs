//! Server certificates as the probe saw them: who a certificate names, when it stops being
//! valid, and whether that is closer than `expect.cert_min_days`. Pure, apart from reading the
//! DER the TLS layer handed over.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The server's certificate that expires first on the chain it presents (its leaf and the
/// intermediates that lead from it; the root is the client's own), as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertInfo {
    /// The subject, e.g. `CN=api.example.org` (an intermediate's when it expires first).
    pub subject: String,
    /// `notAfter`, RFC 3339 (UTC).
    pub not_after: String,
    /// `notAfter` as Unix seconds.
    pub not_after_unix: i64,
    /// Days from the probe to `notAfter`, one decimal (negative once expired).
    pub days_left: f64,
}

/// Read the subject and `notAfter` of a DER certificate, and the days left from `now`.
/// `None` for bytes that are not a certificate.
pub fn read(der: &[u8], now: SystemTime) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after_unix = cert.validity().not_after.timestamp();
    let subject = cert.subject().to_string();
    Some(info(subject, not_after_unix, now))
}

/// The certificate that expires first on the chain `presented` (DER, leaf first) makes from
/// its leaf, as a [`CertInfo`]. The chain is followed by name: from the leaf to the
/// certificate whose subject is its issuer, and so on until one is self-issued or no
/// presented certificate names the issuer. A certificate the server also sends that issues
/// nothing on that path (a leftover intermediate of another chain) never counts: clients do
/// not use it, and its expiry would be a false `cert_expiring`. Names only, no signatures:
/// which certificate a client trusts is its own business. `None` when the leaf is not a
/// certificate. Pure.
pub fn earliest(presented: &[Vec<u8>], now: SystemTime) -> Option<CertInfo> {
    let (_, leaf) = x509_parser::parse_x509_certificate(presented.first()?).ok()?;
    let others: Vec<_> = presented[1..]
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, c)| c)
        })
        .collect();
    let mut path = vec![&leaf];
    let mut used = vec![false; others.len()];
    while let Some(&current) = path.last() {
        if current.subject().as_raw() == current.issuer().as_raw() {
            break;
        }
        let issuer = (0..others.len())
            .find(|&i| !used[i] && others[i].subject().as_raw() == current.issuer().as_raw());
        let Some(i) = issuer else { break };
        used[i] = true;
        path.push(&others[i]);
    }
    path.iter()
        .min_by_key(|c| c.validity().not_after.timestamp())
        .map(|c| {
            info(
                c.subject().to_string(),
                c.validity().not_after.timestamp(),
                now,
            )
        })
}

/// A [`CertInfo`] from its parts. Pure.
pub fn info(subject: String, not_after_unix: i64, now: SystemTime) -> CertInfo {
    let now_unix = unix(now);
    let days = (not_after_unix - now_unix) as f64 / 86_400.0;
    CertInfo {
        subject: if subject.is_empty() {
            "(no subject)".to_string()
        } else {
            subject
        },
        not_after: rfc3339(not_after_unix),
        not_after_unix,
        days_left: (days * 10.0).round() / 10.0,
    }
}

/// Why the certificate is a warning: it expires within `min` of `now` (or has expired, which
/// the TLS handshake only lets through with `tls.insecure`). `None` when it has longer. Pure.
pub fn expiring(cert: &CertInfo, min: Duration, now: SystemTime) -> Option<String> {
    let left = cert.not_after_unix - unix(now);
    let min_secs = i64::try_from(min.as_secs()).unwrap_or(i64::MAX);
    if left >= min_secs {
        return None;
    }
    let want = fmt_days(min.as_secs_f64() / 86_400.0);
    Some(if left < 0 {
        format!(
            "the server certificate {} expired on {} ({} ago); expect.cert_min_days is {want}",
            cert.subject,
            cert.not_after,
            fmt_days(-left as f64 / 86_400.0)
        )
    } else {
        format!(
            "the server certificate {} expires in {} (notAfter {}), under expect.cert_min_days {want}: renew it",
            cert.subject,
            fmt_days(left as f64 / 86_400.0),
            cert.not_after
        )
    })
}

/// `4.9 days`, `1 day`, `0.3 days`.
fn fmt_days(days: f64) -> String {
    let rounded = (days * 10.0).round() / 10.0;
    if rounded == 1.0 {
        "1 day".to_string()
    } else if rounded.fract() == 0.0 {
        format!("{rounded:.0} days")
    } else {
        format!("{rounded:.1} days")
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Unix seconds as `2026-03-01T12:00:00Z`; times before 1970 as the epoch.
fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A CA (`issuer: None`: self-signed) or a leaf named `cn`, valid for `days` from now.
    fn cert(
        cn: &str,
        days: u64,
        ca: bool,
        issuer: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>,
    ) -> (Vec<u8>, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.not_before = (SystemTime::now() - Duration::from_secs(DAY)).into();
        p.not_after = (SystemTime::now() + Duration::from_secs(days * DAY)).into();
        let key = rcgen::KeyPair::generate().unwrap();
        let der = match issuer {
            Some(i) => p.signed_by(&key, i).unwrap(),
            None => p.self_signed(&key).unwrap(),
        }
        .der()
        .to_vec();
        (der, rcgen::Issuer::new(p, key))
    }

    #[test]
    fn the_earliest_expiry_is_on_the_path_from_the_leaf_and_strays_do_not_count() {
        let now = SystemTime::now();
        let (root, root_ca) = cert("root", 3650, true, None);
        let (mid, mid_ca) = cert("mid", 60, true, Some(&root_ca));
        let (leaf, _) = cert("leaf", 90, false, Some(&mid_ca));
        // A leftover of another chain the server also sends: another root's intermediate,
        // expiring in 5 days, and that root itself.
        let (other_root, other_ca) = cert("other root", 5, true, None);
        let (stray, _) = cert("stray", 5, true, Some(&other_ca));
        let subject = |chain: &[Vec<u8>]| earliest(chain, now).map(|c| c.subject);
        assert_eq!(
            subject(&[leaf.clone(), stray.clone(), mid.clone(), other_root]),
            Some("CN=mid".to_string())
        );
        // On the path, in any order and up to the root: the earliest of them.
        assert_eq!(
            subject(&[leaf.clone(), root.clone(), mid.clone()]),
            Some("CN=mid".to_string())
        );
        let (short_mid, short_ca) = cert("short mid", 5, true, Some(&root_ca));
        let (leaf2, _) = cert("leaf2", 90, false, Some(&short_ca));
        assert_eq!(
            subject(&[leaf2, short_mid, stray]),
            Some("CN=short mid".to_string())
        );
        // The leaf alone, or with nothing that issued it.
        assert_eq!(
            subject(std::slice::from_ref(&leaf)),
            Some("CN=leaf".to_string())
        );
        assert_eq!(subject(&[b"not a certificate".to_vec(), mid]), None);
    }

    #[test]
    fn days_left_and_the_date_are_read_from_not_after() {
        let now = at(1_800_000_000);
        let c = info("CN=api".into(), 1_800_000_000 + 5 * DAY as i64, now);
        assert_eq!(c.days_left, 5.0);
        assert_eq!(c.not_after, "2027-01-20T08:00:00Z");
        assert_eq!(info(String::new(), 0, now).subject, "(no subject)");
    }

    #[test]
    fn a_certificate_closer_than_the_minimum_is_named_with_its_not_after() {
        let now = at(1_800_000_000);
        let c = info("CN=api".into(), 1_800_000_000 + 5 * DAY as i64, now);
        let why = expiring(&c, Duration::from_secs(14 * DAY), now).unwrap();
        assert_eq!(
            why,
            "the server certificate CN=api expires in 5 days (notAfter 2027-01-20T08:00:00Z), under expect.cert_min_days 14 days: renew it"
        );
        assert_eq!(expiring(&c, Duration::from_secs(5 * DAY), now), None);
        assert_eq!(expiring(&c, Duration::from_secs(DAY), now), None);
        let old = info("CN=old".into(), 1_800_000_000 - 36 * 3600, now);
        let why = expiring(&old, Duration::from_secs(DAY), now).unwrap();
        assert!(
            why.contains("expired on") && why.contains("1.5 days ago"),
            "{why}"
        );
    }
}
