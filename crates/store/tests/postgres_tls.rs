//! TLS to a real PostgreSQL server: a throwaway cluster with `ssl = on`, a
//! certificate signed by a test authority, and TCP connections accepted
//! over TLS only (skipped with a notice when PostgreSQL is not installed,
//! unless `PAAS_RUNNER_REQUIRE_TOOLS=1`).

use std::path::PathBuf;
use std::time::Duration;

use paas_core::{JobRecord, Secret, StageRecord};
use paas_store::postgres::lease::Lease;
use paas_store::postgres::throwaway::{start_or_skip, start_tls_or_skip, ServerTls, Throwaway};
use paas_store::postgres::PgStore;
use paas_store::{JobStore, Pending, StoreWrite};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

const LEASE: Duration = Duration::from_secs(3);

/// A test authority and a server certificate it signed for `names`.
struct TestPki {
    ca_pem: String,
    server: ServerTls,
}

fn pki(names: &[&str]) -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "paas-runner test authority");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut server = CertificateParams::new(names.clone()).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    let server = server.signed_by(&key, &ca, &ca_key).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server: ServerTls {
            cert_pem: server.pem(),
            key_pem: key.serialize_pem(),
        },
    }
}

/// A TLS-only cluster serving a certificate for `names`, with database
/// `tls` and the authority's PEM in a file.
fn tls_cluster(test: &str, names: &[&str]) -> Option<(Throwaway, PathBuf, tempfile::TempDir)> {
    let pki = pki(names);
    let pg =
        start_tls_or_skip(test, &pki.server).expect("throwaway PostgreSQL cluster with TLS")?;
    pg.create_database("tls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    Some((pg, ca_file, dir))
}

fn settings(
    pg: &Throwaway,
    params: &str,
    ca_file: Option<&PathBuf>,
) -> paas_config::PostgresSettings {
    let mut settings = pg.settings("tls", LEASE);
    settings.url.push_str(params);
    settings.ca_file = ca_file.cloned();
    settings
}

fn record(job_id: u64) -> JobRecord {
    JobRecord {
        runner_key: "abcdefgh".into(),
        job_id,
        token: Secret::new("glcbt-job-token"),
        project_id: Some(7),
        payload: format!(r#"{{"id":{job_id}}}"#),
        failure_reasons: None,
        flavor: "S".into(),
        expected_weight: 5.65,
        stage: StageRecord::Running,
        app_id: Some("app_1".into()),
        app_weight: 5.65,
        app_maybe: false,
        failure_kind: None,
        failure_message: None,
        message_written: false,
        failed: false,
        confirmed: true,
        log_bytes: 0,
        slow_notice_sent: false,
    }
}

/// The error of opening a store with `settings`, which must fail; it never
/// shows the password.
async fn open_error(settings: &paas_config::PostgresSettings) -> String {
    let error = PgStore::open(settings).await.unwrap_err().to_string();
    assert!(
        !error.contains(paas_store::postgres::throwaway::PASSWORD),
        "{error}"
    );
    println!("{error}");
    error
}

#[tokio::test]
async fn verify_full_with_the_authority_stores_reads_back_and_holds_the_lease() {
    let Some((pg, ca_file, _dir)) = tls_cluster("verify_full_with_the_authority", &["127.0.0.1"])
    else {
        return;
    };
    let settings = settings(&pg, "&sslmode=verify-full", Some(&ca_file));
    let mut store = PgStore::open(&settings).await.unwrap();
    match store.submit(StoreWrite::Save(record(1))) {
        Pending::Done(result) => result.unwrap(),
        Pending::Later(done) => done.await.unwrap().unwrap(),
    }
    assert_eq!(store.load().await.unwrap(), vec![record(1)]);
    let lease = Lease::connect(&settings, "a".into()).await.unwrap();
    let held = lease.try_acquire().await.unwrap().expect("a free lease");
    assert!(lease.renew(held.epoch, LEASE).await.unwrap());

    // The authority named by libpq's `sslrootcert` in the URL instead.
    let by_url = format!("&sslmode=verify-full&sslrootcert={}", ca_file.display());
    let mut store = PgStore::open(&settings_of(&pg, &by_url)).await.unwrap();
    assert_eq!(store.load().await.unwrap(), vec![record(1)]);
    // No sslmode on a loopback address: `prefer`, so TLS (the server takes
    // nothing else) without a certificate check, as libpq does.
    let mut store = PgStore::open(&settings_of(&pg, "")).await.unwrap();
    assert_eq!(store.load().await.unwrap(), vec![record(1)]);
}

fn settings_of(pg: &Throwaway, params: &str) -> paas_config::PostgresSettings {
    settings(pg, params, None)
}

#[tokio::test]
async fn without_the_authority_the_certificate_is_refused_as_unknown_issuer() {
    let Some((pg, _ca_file, _dir)) = tls_cluster("without_the_authority", &["127.0.0.1"]) else {
        return;
    };
    let host = format!("127.0.0.1:{}", pg.port());
    // The system's authorities do not know the test one; `require`
    // verifies the chain too.
    for mode in ["verify-full", "verify-ca", "require"] {
        let error = open_error(&settings_of(&pg, &format!("&sslmode={mode}"))).await;
        assert!(
            error.contains(&format!("TLS to {host} failed (sslmode={mode})"))
                && error.contains("unknown issuer")
                && error.contains("set [store] ca_file"),
            "{error}"
        );
    }
    // An authority file with another authority of the same name (the
    // authority made anew) is no better.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.pem");
    std::fs::write(&other_ca, pki(&["127.0.0.1"]).ca_pem).unwrap();
    let error = open_error(&settings(&pg, "&sslmode=verify-full", Some(&other_ca))).await;
    assert!(
        error.contains("bad signature: the server's certificate is not signed by")
            && error.contains("other-ca.pem"),
        "{error}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_verify_full_but_passes_verify_ca() {
    let Some((pg, ca_file, _dir)) =
        tls_cluster("a_certificate_for_another_name", &["db.elsewhere.example"])
    else {
        return;
    };
    let error = open_error(&settings(&pg, "&sslmode=verify-full", Some(&ca_file))).await;
    assert!(
        error.contains(&format!("TLS to 127.0.0.1:{} failed", pg.port()))
            && error.contains("name mismatch"),
        "{error}"
    );
    // verify-ca checks the chain only, as libpq.
    let mut store = PgStore::open(&settings(&pg, "&sslmode=verify-ca", Some(&ca_file)))
        .await
        .unwrap();
    assert_eq!(store.load().await.unwrap(), vec![]);
}

#[tokio::test]
async fn sslmode_disable_against_a_tls_only_server_is_refused_clearly() {
    let Some((pg, _ca_file, _dir)) =
        tls_cluster("sslmode_disable_against_tls_only", &["127.0.0.1"])
    else {
        return;
    };
    let error = open_error(&settings_of(&pg, "&sslmode=disable")).await;
    assert!(
        error.contains(&format!(
            "the server at 127.0.0.1:{} refuses connections without TLS",
            pg.port()
        )) && error.contains("no encryption")
            && error.contains("sslmode=disable"),
        "{error}"
    );
}

#[tokio::test]
async fn requiring_tls_from_a_server_without_it_fails_clearly() {
    let Some(pg) = start_or_skip("requiring_tls_from_a_server_without_it")
        .expect("throwaway PostgreSQL cluster")
    else {
        return;
    };
    pg.create_database("tls").unwrap();
    for mode in ["require", "verify-full"] {
        let error = open_error(&settings_of(&pg, &format!("&sslmode={mode}"))).await;
        assert!(
            error.contains(&format!(
                "the server at 127.0.0.1:{} does not offer TLS, and sslmode={mode} requires it",
                pg.port()
            )),
            "{error}"
        );
    }
    // A local server without TLS and no sslmode: `prefer`, as before.
    let mut store = PgStore::open(&settings_of(&pg, "")).await.unwrap();
    assert_eq!(store.load().await.unwrap(), vec![]);
}
