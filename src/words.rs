//! Words for people: counts with the right noun (`1 route`, `2 routes`), and transport
//! errors in plain words (what failed, where, and what to check) ahead of the library's own
//! chain (kept in parentheses for whoever needs the detail). Pure.

use crate::outcome::Outcome;

/// `n` and the noun in the number it takes: `1 route`, `0 routes`, `2 routes`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Where a request went, as a message names it: `127.0.0.1:8000`, `Unix socket /run/x.sock`.
pub fn place(url: &str, socket: Option<&std::path::Path>) -> String {
    if let Some(path) = socket {
        return format!("Unix socket {}", path.display());
    }
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => url.to_string(),
        },
        Err(_) => url.to_string(),
    }
}

/// The plain words for a failure before any response, from its outcome and the library's
/// error chain (`detail`), at `place`; `None` when there is nothing plainer to say.
pub fn explain(outcome: Outcome, detail: &str, place: &str, unix: bool) -> Option<String> {
    let has = |s: &str| detail.contains(s);
    let words = match outcome {
        Outcome::Tls if has("CaUsedAsEndEntity") => {
            "self-signed certificate (not issued by a CA): use tls.ca_file with the issuing CA, or tls.insecure".to_string()
        }
        Outcome::Tls if has("UnknownIssuer") => format!(
            "the certificate of {place} is issued by a CA this host does not trust: use tls.ca_file with the issuing CA"
        ),
        Outcome::Tls if has("NotValidForName") => format!(
            "the certificate of {place} is not issued for this host name: probe the name it names, or fix the certificate"
        ),
        Outcome::Tls if has("Expired") => format!(
            "the certificate of {place} has expired: renew it (expect.cert_min_days warns ahead)"
        ),
        Outcome::Tls if has("CertificateRequired") || has("certificate required") => format!(
            "{place} requires a client certificate: set tls.cert_file and tls.key_file"
        ),
        Outcome::Tls if has("InvalidContentType") || has("corrupt message") => format!(
            "{place} does not speak TLS (its answer is not a TLS record): plain HTTP on this port? use http://"
        ),
        Outcome::Tls if has("BadCertificate") || has("UnknownCA") || has("DecryptError") => format!(
            "{place} rejected our client certificate: check tls.cert_file is issued by a CA it trusts"
        ),
        Outcome::Refused if unix && (has("No such file") || has("os error 2")) => {
            format!("{place} does not exist: is the service running, and is this its socket?")
        }
        Outcome::Refused if unix => {
            format!("nobody listens on {place}: is the service running?")
        }
        Outcome::Refused if has("refused") => format!(
            "connection refused by {place}: nothing listens there; is the service running, on this port?"
        ),
        Outcome::Dns => format!(
            "the host name of {place} does not resolve (DNS): check its spelling and the resolver"
        ),
        Outcome::Reset => format!("{place} reset the connection before any answer"),
        Outcome::EmptyReply => format!("{place} closed the connection before any answer"),
        Outcome::ConnectTimeout => format!("no connection to {place} in time"),
        _ => return None,
    };
    Some(words)
}

/// A file's I/O error in plain words: "does not exist", "permission denied", else the OS's.
pub fn io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_noun_in_their_number() {
        assert_eq!(count(1, "route", "routes"), "1 route");
        assert_eq!(count(0, "route", "routes"), "0 routes");
        assert_eq!(count(2, "target", "targets"), "2 targets");
    }

    #[test]
    fn each_transport_failure_reads_in_plain_words() {
        let p = "127.0.0.1:8000";
        let table: &[(Outcome, &str, bool, &str)] = &[
            (
                Outcome::Refused,
                "tcp connect error: Connection refused (os error 111)",
                false,
                "connection refused by 127.0.0.1:8000: nothing listens there",
            ),
            (
                Outcome::Tls,
                "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                false,
                "self-signed certificate (not issued by a CA): use tls.ca_file with the issuing CA, or tls.insecure",
            ),
            (
                Outcome::Tls,
                "invalid peer certificate: UnknownIssuer",
                false,
                "issued by a CA this host does not trust",
            ),
            (
                Outcome::Tls,
                "received corrupt message of type InvalidContentType",
                false,
                "does not speak TLS",
            ),
            (
                Outcome::Tls,
                "received fatal alert: CertificateRequired",
                false,
                "requires a client certificate: set tls.cert_file and tls.key_file",
            ),
            (
                Outcome::Dns,
                "dns error: failed to lookup address information",
                false,
                "does not resolve",
            ),
        ];
        for (outcome, detail, unix, want) in table {
            let got = explain(*outcome, detail, p, *unix).unwrap();
            assert!(got.contains(want), "{detail}: {got}");
        }
        let sock = place(
            "http://localhost/x",
            Some(std::path::Path::new("/run/a.sock")),
        );
        assert_eq!(sock, "Unix socket /run/a.sock");
        assert_eq!(
            explain(
                Outcome::Refused,
                "No such file or directory (os error 2)",
                &sock,
                true
            )
            .unwrap(),
            "Unix socket /run/a.sock does not exist: is the service running, and is this its socket?"
        );
        assert_eq!(
            place("https://api.example.org/health", None),
            "api.example.org:443"
        );
        assert_eq!(explain(Outcome::HttpError, "x", p, false), None);
    }
}
