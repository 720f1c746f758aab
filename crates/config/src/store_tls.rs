//! TLS to the PostgreSQL store: libpq's `sslmode` and `sslrootcert` read
//! from the URL (the driver knows neither `verify-ca`/`verify-full` nor
//! `sslrootcert`, so they are taken out of the URL it is given), and
//! `[store] ca_file`.
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` | if the server offers it | against the CA file if one is set, else not at all |
//! | `require`, `verify-ca` | always | signed by a trusted authority (no host name check) |
//! | `verify-full` | always | signed by a trusted authority and valid for the host |
//!
//! With no `sslmode`: `prefer`, as libpq (the URL means what it means to
//! every PostgreSQL client; the store warns when a host that is not local
//! is reached without a verified certificate). Trusted authorities:
//! `ca_file` (or `sslrootcert`), else the system's.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// How the connection uses TLS (libpq's `sslmode`, but `require`
/// verifies the certificate's chain as `verify-ca` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The name written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the connection fails without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// The authorities a server certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The host's trust store.
    System,
    /// A PEM bundle (`[store] ca_file`, or `sslrootcert` in the URL).
    File(PathBuf),
}

/// The TLS settings of a PostgreSQL URL, and the URL the driver is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// Whether the URL says `sslmode` (else the default was chosen).
    pub mode_given: bool,
    pub roots: TrustRoots,
    /// Whether every host is local (loopback or a Unix socket).
    pub local: bool,
    /// The URL without `sslmode` and `sslrootcert`.
    pub driver_url: String,
}

/// libpq parameters about client certificates and revocation lists, which
/// are refused rather than silently ignored.
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslcertmode",
];

/// Reads the TLS settings of `url` (a `postgresql://` URL) with `ca_file`
/// (`[store] ca_file`). The error says what to change; it never quotes the
/// URL.
pub fn pg_tls(url: &str, ca_file: Option<&Path>) -> Result<PgTls, String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    let mut hosts = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key);
        match key.as_str() {
            "sslmode" => {
                mode = Some(match decode(value).as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "allow" => {
                        return Err("sslmode=allow is not supported: use prefer (or disable)".into())
                    }
                    _ => {
                        return Err("unknown sslmode: expected disable, prefer, require, \
                                    verify-ca or verify-full"
                            .into())
                    }
                });
            }
            "sslrootcert" => root_cert = Some(decode(value)),
            key if UNSUPPORTED.contains(&key) => {
                return Err(format!(
                    "`{key}` is not supported (client certificates and revocation lists are not)"
                ))
            }
            _ => {
                if key == "host" || key == "hostaddr" {
                    hosts.extend(decode(value).split(',').map(str::to_owned));
                }
                kept.push(pair);
            }
        }
    }
    hosts.extend(url_host(base));
    let roots = match (root_cert, ca_file) {
        (Some(_), Some(_)) => {
            return Err(
                "both sslrootcert (in the URL) and [store] ca_file are set: keep one".into(),
            )
        }
        (Some(value), None) if value == "system" => TrustRoots::System,
        (Some(value), None) if value.is_empty() => {
            return Err("sslrootcert is empty: name a PEM file of certificate authorities".into())
        }
        (Some(value), None) => TrustRoots::File(PathBuf::from(value)),
        (None, Some(path)) => TrustRoots::File(path.to_path_buf()),
        (None, None) => TrustRoots::System,
    };
    let local = !hosts.is_empty() && hosts.iter().all(|host| is_local(host));
    let (mode, mode_given) = match mode {
        Some(mode) => (mode, true),
        None => (SslMode::Prefer, false),
    };
    let driver_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(PgTls {
        mode,
        mode_given,
        roots,
        local,
        driver_url,
    })
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// The host of a `postgresql://user@host:port/db` URL, if it names one.
fn url_host(base: &str) -> Option<String> {
    let rest = base.split_once("://")?.1;
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host = decode(host);
    (!host.is_empty()).then_some(host)
}

/// A Unix socket directory, `localhost`, or a loopback address.
fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks that `text` is a PEM bundle holding at least one certificate;
/// returns how many.
pub fn check_pem_certificates(text: &str) -> Result<usize, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(text.as_bytes()) {
        certificate.map_err(|error| format!("not a valid PEM bundle ({error})"))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(url: &str) -> PgTls {
        pg_tls(url, None).unwrap()
    }

    #[test]
    fn the_default_prefers_tls_as_libpq_and_knows_which_hosts_are_local() {
        for url in [
            "postgresql://paas@db.internal:5432/paas",
            "postgresql://paas@10.0.0.3/paas",
            "postgresql://paas@localhost/paas?host=db.internal",
        ] {
            let found = tls(url);
            assert_eq!((found.mode, found.mode_given), (SslMode::Prefer, false));
            assert_eq!(found.roots, TrustRoots::System);
            assert!(!found.local, "{url}");
        }
        for url in [
            "postgresql://paas@127.0.0.1:5432/paas?connect_timeout=5",
            "postgresql://paas@localhost/paas",
            "postgresql://paas@[::1]:5432/paas",
            "postgresql://paas@%2Fvar%2Frun%2Fpostgresql/paas",
            "postgresql://paas@/paas?host=/var/run/postgresql",
        ] {
            let found = tls(url);
            assert_eq!(found.mode, SslMode::Prefer, "{url}");
            assert!(found.local, "{url}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_driver_url() {
        let found = tls(
            "postgresql://paas@db/paas?connect_timeout=5&sslmode=verify-ca\
             &sslrootcert=%2Fetc%2Fca.pem&options=-c%20x%3D1",
        );
        assert_eq!((found.mode, found.mode_given), (SslMode::VerifyCa, true));
        assert_eq!(found.roots, TrustRoots::File("/etc/ca.pem".into()));
        assert_eq!(
            found.driver_url,
            "postgresql://paas@db/paas?connect_timeout=5&options=-c%20x%3D1"
        );
        let found = tls("postgresql://paas@127.0.0.1/paas?sslmode=disable");
        assert_eq!(found.mode, SslMode::Disable);
        assert_eq!(found.driver_url, "postgresql://paas@127.0.0.1/paas");
        let found = tls("postgresql://paas@db/paas?sslrootcert=system&sslmode=require");
        assert_eq!(
            (found.mode, found.roots),
            (SslMode::Require, TrustRoots::System)
        );
        let found = pg_tls("postgresql://db/p", Some(Path::new("/ca.pem"))).unwrap();
        assert_eq!(found.roots, TrustRoots::File("/ca.pem".into()));
    }

    #[test]
    fn unknown_or_unsupported_settings_are_refused() {
        for (url, expected) in [
            ("postgresql://db/p?sslmode=verify_full", "unknown sslmode"),
            ("postgresql://db/p?sslmode=allow", "use prefer"),
            (
                "postgresql://db/p?sslcert=/c.pem",
                "`sslcert` is not supported",
            ),
            ("postgresql://db/p?sslrootcert=", "sslrootcert is empty"),
        ] {
            let error = pg_tls(url, None).unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
        }
        let error = pg_tls(
            "postgresql://db/p?sslrootcert=/a.pem",
            Some(Path::new("/b.pem")),
        )
        .unwrap_err();
        assert!(error.contains("keep one"), "{error}");
    }

    #[test]
    fn a_pem_bundle_needs_a_certificate() {
        assert!(check_pem_certificates("hello")
            .unwrap_err()
            .contains("no PEM certificate"));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(check_pem_certificates(broken)
            .unwrap_err()
            .contains("not a valid PEM"));
        let fine = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        assert_eq!(check_pem_certificates(&format!("{fine}{fine}")), Ok(2));
    }
}
