//! TLS to the PostgreSQL server with rustls (the `ring` provider, as the
//! rest of the program): the URL's `sslmode` and trusted authorities
//! ([`paas_config::store_tls`]) become the driver's TLS mode and a rustls
//! client configuration, through `tokio-postgres-rustls` (which also gives
//! SCRAM its channel binding).
//!
//! The certificate is always verified when TLS is required: `require` and
//! `verify-ca` check that it chains to a trusted authority (stricter than
//! libpq's `require`, which checks nothing without a root file),
//! `verify-full` also that it names the host. `prefer` checks the chain
//! when an authority file is set, else nothing (as libpq): it guards
//! against listening, not against an active attacker, who can as well
//! answer that the server has no TLS.

use std::sync::Arc;

use paas_config::store_tls::{PgTls, SslMode, TrustRoots};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The driver's TLS mode and the connector for `tls`.
pub(crate) fn connector(
    tls: &PgTls,
) -> Result<(tokio_postgres::config::SslMode, MakeRustlsConnect), String> {
    let driver_mode = match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match (tls.mode, &tls.roots) {
        (SslMode::Disable, _) | (SslMode::Prefer, TrustRoots::System) => None,
        (_, roots) => Some(Arc::new(load_roots(roots)?)),
    };
    let verifier = Verifier {
        roots,
        check_name: tls.mode == SslMode::VerifyFull,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((driver_mode, MakeRustlsConnect::new(config)))
}

fn load_roots(roots: &TrustRoots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        TrustRoots::File(path) => {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|error| {
                format!("cannot read the certificate authorities {shown}: {error}")
            })?;
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let certificate = certificate
                    .map_err(|error| format!("{shown} is not a valid PEM bundle ({error})"))?;
                store
                    .add(certificate)
                    .map_err(|error| format!("{shown}: a certificate is unusable ({error})"))?;
            }
            if store.is_empty() {
                return Err(format!("{shown} holds no PEM certificate"));
            }
        }
        TrustRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(String::new, |error| format!(" ({error})"));
                return Err(format!(
                    "no certificate authority found in the system's trust store{why}: \
                     set [store] ca_file to the authority that signed the server's certificate"
                ));
            }
        }
    }
    Ok(store)
}

/// Checks the chain against `roots` (none: accepts any certificate, for
/// `prefer` without an authority file) and, if `check_name`, the host name.
/// Handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check_name {
            verify_server_name(&certificate, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An operator's explanation of a failed TLS connection to `host`, or
/// `None` when `error` is not about TLS.
pub(crate) fn explain(error: &tokio_postgres::Error, tls: &PgTls, host: &str) -> Option<String> {
    let mode = tls.mode.as_str();
    if let Some(db) = error.as_db_error() {
        // pg_hba.conf has only `hostssl` lines for this client.
        let refused_plain = db.code()
            == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && (db.message().contains("no encryption") || db.message().contains("SSL off"));
        return refused_plain.then(|| {
            format!(
                "the server at {host} refuses connections without TLS ({}), and sslmode={mode} \
                 turned TLS off: use sslmode=verify-full",
                db.message()
            )
        });
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(current), inner].into_iter().flatten() {
            if let Some(rustls_error) = candidate.downcast_ref::<rustls::Error>() {
                return Some(format!(
                    "TLS to {host} failed (sslmode={mode}): {}",
                    rustls_reason(rustls_error, tls)
                ));
            }
            if candidate.to_string() == "server does not support TLS" {
                return Some(format!(
                    "the server at {host} does not offer TLS, and sslmode={mode} requires it \
                     (turn `ssl = on` on the server; sslmode=disable only for a server on this machine)"
                ));
            }
        }
        source = current.source();
    }
    None
}

fn rustls_reason(error: &rustls::Error, tls: &PgTls) -> String {
    let authority = match &tls.roots {
        TrustRoots::File(path) => format!("the authorities of {}", path.display()),
        TrustRoots::System => "the system's authorities (no [store] ca_file)".to_owned(),
    };
    match error {
        rustls::Error::InvalidCertificate(reason) => match reason {
            CertificateError::UnknownIssuer => format!(
                "unknown issuer: the server's certificate is not signed by {authority}; \
                 set [store] ca_file to the authority that signed it"
            ),
            CertificateError::BadSignature => format!(
                "bad signature: the server's certificate is not signed by {authority} \
                 (one of them has the issuer's name but another key); set [store] ca_file \
                 to the authority that signed it"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "name mismatch: the server's certificate is not valid for this host name \
                 (verify-full checks it; connect by a name the certificate holds)"
                    .to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (is this machine's clock right?)"
                    .to_owned()
            }
            other => format!("the server's certificate is refused ({other:?})"),
        },
        other => other.to_string(),
    }
}
