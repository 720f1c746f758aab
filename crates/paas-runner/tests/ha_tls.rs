//! The real binary on a PostgreSQL store reached over TLS only (a
//! throwaway cluster whose certificate a test authority signed; skipped
//! with a notice when PostgreSQL is not installed, unless
//! `PAAS_RUNNER_REQUIRE_TOOLS=1`), the simulators as coordinator and cloud.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Harness, SIGTERM};
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::JobStatus;
use paas_sim::vars;
use paas_store::postgres::throwaway::{start_tls_or_skip, ServerTls, PASSWORD};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A test authority (PEM) and a server certificate it signed for
/// 127.0.0.1.
fn pki() -> (String, ServerTls) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "paas-runner test authority");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let tls = ServerTls {
        cert_pem: server.pem(),
        key_pem: key.serialize_pem(),
    };
    (ca.pem(), tls)
}

/// The harness's configuration with a `[store]` of `url` (and `extra`).
fn use_store(config_path: &Path, dir: &Path, url: &str, extra: &str) {
    let secrets = dir.join("secrets.toml");
    std::fs::write(&secrets, format!("store_password = {PASSWORD:?}\n")).unwrap();
    let text = std::fs::read_to_string(config_path).unwrap();
    let mut text: String = text
        .lines()
        // A [store] written before is the last section: left out.
        .take_while(|line| !line.starts_with("[store]"))
        .filter(|line| !line.starts_with("state_file"))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!(
        "\n[store]\nurl = {url:?}\npassword = \"secret:store_password\"\nsecrets_file = {:?}\nlease_seconds = 3\n{extra}",
        secrets.display().to_string()
    ));
    std::fs::write(config_path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_jobs_on_a_store_reached_over_verified_tls() {
    let (ca_pem, server) = pki();
    let Some(pg) = start_tls_or_skip("the_service_runs_jobs_on_a_store_over_tls", &server)
        .expect("throwaway PostgreSQL cluster with TLS")
    else {
        return;
    };
    pg.create_database("tls").unwrap();
    let mut harness = Harness::start(
        ClusterSettings {
            long_poll: Duration::from_millis(300),
            repo_ready_delay: Duration::from_millis(100),
            boot_delay: Duration::from_millis(150),
            ..ClusterSettings::default()
        },
        |options| options.check_interval_secs = 0.2,
    )
    .await;
    let dir = harness.dir.path().to_path_buf();
    let ca_file = dir.join("db-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let url = format!("{}&sslmode=verify-full", pg.url_via(pg.port(), "tls"));

    // Without the authority: refused at start, saying why and where.
    use_store(&harness.config_path, &dir, &url, "");
    let refused = harness.run_command(&["run"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("TLS to 127.0.0.1:{} failed", pg.port()))
            && stderr.contains("unknown issuer"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    // With it (`[store] ca_file`): jobs run, the store written over TLS
    // (the server takes nothing else).
    use_store(
        &harness.config_path,
        &dir,
        &url,
        &format!("ca_file = {:?}\n", ca_file.display().to_string()),
    );
    harness.spawn_runner();
    let ids: Vec<u64> = (0..2)
        .map(|_| harness.enqueue(&[(vars::JOB_DURATION_MS, "300")]))
        .collect();
    harness.wait_all_done(&ids).await;
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(
            job.status,
            JobStatus::Success,
            "job {id}: {:?}\n{}",
            job.failure_reason,
            harness.logs()
        );
    }
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{status:?}\n{}", harness.logs());
    assert!(!harness.logs().contains(PASSWORD));
}
