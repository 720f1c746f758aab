//! Private certificate authorities (`tls-ca-file`, `cc_tls_ca_file`): a
//! TLS server on loopback with a certificate of a CA made for the test is
//! reached by the clients built for a runner that names that CA, and by no
//! other.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use paas_runner::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

struct Authority {
    pem: String,
    server_config: Arc<rustls::ServerConfig>,
}

/// A CA, and a server certificate it signed for 127.0.0.1.
fn authority() -> Authority {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "paas-runner test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .expect("server config");
    Authority {
        pem: ca.pem(),
        server_config: Arc::new(server_config),
    }
}

/// An HTTPS server answering `ok` to every request.
async fn serve(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

fn config_naming(coordinator_ca: &Path, cloud_ca: &Path) -> paas_config::Config {
    let text = format!(
        r#"
[quota_computation]
reference_runner = "r"
reference_flavor = "M"
reference_jobs_count = 2

[[runners]]
name = "r"
url = "https://127.0.0.1"
token = "glrt-private-ca-token"
executor = "clever-docker"
cc_orga_id = "orga_x"
cc_token = "cc-token"
tls-ca-file = "{}"
cc_tls_ca_file = "{}"
[runners.cc_extra_env]
CC_ENABLE_HEPTAPOD_RUNNER = "true"
"#,
        coordinator_ca.display(),
        cloud_ca.display()
    );
    paas_config::parse(&text, Path::new("/etc/paas.toml")).expect("configuration")
}

#[tokio::test]
async fn a_private_authority_is_trusted_only_where_configured() {
    let authority = authority();
    let address = serve(authority.server_config.clone()).await;
    let url = format!("https://{address}/api/v4/job");
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &authority.pem).expect("write CA");

    // The public roots only: the server's certificate is refused.
    let public = paas_gitlab::http_client_builder().build().expect("client");
    let error = public.get(&url).send().await.expect_err("unknown issuer");
    assert!(error.is_connect(), "{error:?}");

    // A runner naming the CA reaches it, both as coordinator and as cloud.
    let config = config_naming(&ca_file, &ca_file);
    let (coordinator, cloud) =
        tls::clients_for(&config.runners[0], &public).expect("clients with the CA");
    for client in [coordinator, cloud] {
        let answer = client.get(&url).send().await.expect("trusted");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.expect("body"), "ok");
    }

    // A file that is not a bundle stops the start, naming the key and file.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    let config = config_naming(&ca_file, &bad);
    let error = tls::clients_for(&config.runners[0], &public).expect_err("refused");
    let message = format!("{error:#}");
    assert!(message.contains("cc_tls_ca_file"), "{message}");
    assert!(message.contains("bad.pem"), "{message}");
    let config = config_naming(&dir.path().join("missing.pem"), &ca_file);
    let message = format!(
        "{:#}",
        tls::clients_for(&config.runners[0], &public).expect_err("refused")
    );
    assert!(
        message.contains("tls-ca-file") && message.contains("missing.pem"),
        "{message}"
    );
}
