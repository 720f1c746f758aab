//! End to end, as a hostile CI user or a misbehaving API would try it: forged job variables, oversized payloads, deployment URLs that would take the credentials elsewhere, tokens in URLs.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, SIGTERM};
use paas_core::sanitize::is_unsafe_char;
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::JobStatus;
use paas_sim::vars;

fn quick() -> ClusterSettings {
    ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

/// A flavor value that would write a fake log line (with a timestamp of
/// its own), clear the screen, turn the terminal red and reverse the text.
const FORGED_FLAVOR: &str =
    "M\n1999-01-01T00:00:00.000000Z  INFO paas_runner: forged line\x1b[2J\x1b[31m\u{202e}";

/// The job log without the colour codes paas-runner itself writes.
fn without_own_colours(trace: &str) -> String {
    trace
        .replace("\x1b[31;1m", "")
        .replace("\x1b[0;33m", "")
        .replace("\x1b[0;m", "")
}

fn assert_no_forged_line(text: &str, what: &str) {
    for line in text.lines() {
        assert!(
            !line.chars().any(is_unsafe_char),
            "{what}: raw control character in {line:?}"
        );
        assert!(
            !line.trim_start().starts_with("1999-01-01"),
            "{what}: forged line {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_flavor_fails_the_job_without_forging_any_line() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let (job, trace) = harness.run_one(&[(vars::FLAVOR, FORGED_FLAVOR)]).await;
    assert_eq!(job.status, JobStatus::Failed, "{trace}");
    assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
    assert!(trace.contains("does not exist"), "{trace}");
    assert!(
        trace.contains("Allowed flavors on this runner: XS, S, M, L, XL, 2XL."),
        "{trace}"
    );
    // The value is shown, escaped, inside the message line.
    assert!(trace.contains("forged line"), "{trace}");
    assert_no_forged_line(&without_own_colours(&trace), "job log");
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
    let logs = harness.logs();
    assert!(logs.contains("forged line"), "the value is logged: {logs}");
    assert_no_forged_line(&logs, "operator log");
    assert_eq!(harness.cluster.clever.stats().apps_created, 0);

    // `paas-runner state` shows stored values sanitised too, whatever wrote
    // them (here: a record written directly, as an older version could).
    let store = paas_store::Store::open(&harness.dir.path().join("state.db")).expect("store");
    let runner_key = harness.cluster.runner_tokens[0][..8].to_owned();
    store
        .save(&paas_core::JobRecord {
            runner_key,
            job_id: 999,
            token: paas_core::Secret::new("glcbt-forged-job-token"),
            project_id: None,
            payload: String::new(),
            failure_reasons: None,
            flavor: FORGED_FLAVOR.to_owned(),
            expected_weight: 0.0,
            stage: paas_core::StageRecord::Failing,
            app_id: Some("app_1\x1b[2J\n1999-01-01 forged".to_owned()),
            app_weight: 0.0,
            app_maybe: false,
            failure_kind: Some(paas_core::FailureKind::System),
            failure_message: Some("Clever Cloud error: \x1b[31mno\u{202e}".to_owned()),
            message_written: false,
            failed: true,
            confirmed: true,
            log_bytes: 0,
            slow_notice_sent: false,
        })
        .expect("save");
    drop(store);
    let output = harness.run_command(&["state"]).await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("999"), "{stdout}");
    assert!(stdout.contains("forged line"), "{stdout}");
    assert_no_forged_line(&stdout, "paas-runner state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_payload_over_the_limit_is_failed_with_a_message_and_not_stored() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let big = "x".repeat(paas_gitlab::MAX_JOB_PAYLOAD_BYTES + 1024);
    let (job, trace) = harness.run_one(&[("BIG_VARIABLE", &big)]).await;
    assert_eq!(job.status, JobStatus::Failed, "{trace}");
    assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
    assert!(
        trace.contains("larger than the 16 MiB this runner accepts"),
        "{trace}"
    );
    assert_eq!(harness.cluster.clever.stats().apps_created, 0);
    // A normal job after it runs normally.
    let (next, next_trace) = harness.run_one(&[]).await;
    assert_eq!(next.status, JobStatus::Success, "{next_trace}");
    // The service's peak memory stayed far from a whole-payload copy chain.
    let pid = harness.child.as_ref().and_then(|child| child.id());
    let peak_mib = pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib / 1024);
    println!("service peak RSS after a 16 MiB + 1 KiB payload: {peak_mib:?} MiB");
    if let Some(peak_mib) = peak_mib {
        assert!(peak_mib < 200, "peak RSS {peak_mib} MiB");
    }
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
    let logs = harness.logs();
    assert!(logs.contains("job payload larger than the limit"), "{logs}");
    // The payload never reached the store.
    let stored: u64 = std::fs::read_dir(harness.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("state.db"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    assert!(stored < 4 << 20, "state files hold {stored} bytes");
}

/// A listener on another loopback address ("another host") that counts
/// the connections it receives.
async fn foreign_listener() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let connections = Arc::new(AtomicU64::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (base, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_go_to_a_plain_http_deployment_url_on_another_host() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let (foreign, connections) = foreign_listener().await;
    harness.cluster.clever.set_git_url_base(Some(&foreign));
    let (job, trace) = harness.run_one(&[]).await;
    assert_eq!(job.status, JobStatus::Failed, "{trace}");
    assert!(trace.contains("not served over https"), "{trace}");
    assert!(trace.contains("127.0.0.2"), "{trace}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "something was sent to the foreign host"
    );
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
    let logs = harness.logs();
    assert!(logs.contains("not served over https"), "{logs}");
    assert!(
        !logs.contains(&harness.cluster.clever.config().token),
        "cc_token in the logs"
    );
    // The machine was deleted like that of any failed launch.
    assert_eq!(harness.cluster.clever.stats().apps_live, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_travels_in_a_url() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    // A job that runs (job status, trace watch with the private token) and
    // one that fails (log append, failure report with the job token).
    let (ok, trace) = harness.run_one(&[]).await;
    assert_eq!(ok.status, JobStatus::Success, "{trace}");
    let (failed, _) = harness.run_one(&[(vars::FLAVOR, "5XL")]).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let stats = harness.cluster.coordinator.stats();
    assert!(stats.requests_served > 0);
    assert_eq!(stats.tokens_in_urls, 0, "{stats:?}");
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_configuration_values_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "[quota_computation]\nreference_runner = \"main\"\nreference_flavor = \"M\"\n\
                reference_jobs_count = 4\n\n[[runners]]\nname = \"main\"\n\
                url = \"https://heptapod.example\"\ntoken = \"glrt-main-token-value\"\n\
                executor = \"clever-docker\"\ncc_orga_id = \"orga_x\"\n\
                cc_token = \"cc-main-token-value\"\n";
    let cases = [
        (
            "cc_token = \"cc-main-token-value\"",
            "cc_token = \"cc-main-token-value\\n\"",
            ":12: key `runners[0].cc_token`",
        ),
        (
            "cc_orga_id = \"orga_x\"",
            "cc_orga_id = \"orga_x/../self\"",
            ":11: key `runners[0].cc_orga_id`",
        ),
        (
            "token = \"glrt-main-token-value\"",
            "token = \"glrt-main\\u001b[2J-token-value\"",
            ":9: key `runners[0].token`",
        ),
    ];
    for (old, new, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, base.replacen(old, new, 1)).expect("write");
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
            .arg("run")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{new}: {stderr}");
        assert!(stderr.contains(&format!("bad.toml{expected}")), "{stderr}");
        assert!(!stderr.contains("token-value"), "secret shown: {stderr}");
        assert!(!stderr.contains('\x1b'), "{stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_deployment_repository_cannot_send_the_credentials_elsewhere() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let (foreign, connections) = foreign_listener().await;
    // A repository on the allowed host (that of the http cc_api_url) that
    // redirects every request to another host.
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let redirector_base = format!("http://{}", redirector.local_addr().expect("address"));
    let target = foreign.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{target}{uri}");
        async move {
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    tokio::spawn(async move { axum::serve(redirector, app).await });
    harness
        .cluster
        .clever
        .set_git_url_base(Some(&redirector_base));
    let (job, trace) = harness.run_one(&[]).await;
    assert_eq!(job.status, JobStatus::Failed, "{trace}");
    assert!(trace.contains("302"), "{trace}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the redirect was followed to the other host"
    );
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}
