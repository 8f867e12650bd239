//! Server certificates as the probe saw them: who a certificate names, when it stops being
//! valid, and whether that is closer than `expect.cert_min_days`. Pure, apart from reading the
//! DER the TLS layer handed over.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The server's certificate that expires first among those it presents (its leaf and the
/// intermediates it sends; the root is the client's own), as reported.
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

/// The certificate of `chain` (DER, leaf first) that expires first, as a [`CertInfo`]; bytes
/// that are not a certificate are skipped. Pure.
pub fn earliest(chain: &[Vec<u8>], now: SystemTime) -> Option<CertInfo> {
    chain
        .iter()
        .filter_map(|der| read(der, now))
        .min_by_key(|c| c.not_after_unix)
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
