//! Credentials checked at start, with the real binary: a wrong runner token,
//! a wrong `cc_token`, a wrong organisation or a wrong watch token stop the
//! start with status 2 and a message naming the runner and the remedy; a
//! coordinator briefly unavailable does not.

mod common;

use std::time::Duration;

use common::Harness;
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::{CoordinatorFaults, JobStatus};
use paas_sim::vars;

fn quick() -> ClusterSettings {
    ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

/// Rewrites the configuration, starts the binary, and returns its exit
/// status and logs.
async fn start_with(harness: &mut Harness, from: &str, to: &str) -> (Option<i32>, String) {
    let text = std::fs::read_to_string(&harness.config_path).unwrap();
    assert!(text.contains(from));
    std::fs::write(&harness.config_path, text.replace(from, to)).unwrap();
    harness.spawn_runner();
    let status = harness.wait_exit().await;
    (status.code(), harness.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_runner_token_stops_the_start() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let token = harness.cluster.runner_tokens[0].clone();
    let wrong = "glrt-wrongtokenfortests";
    let (code, logs) = start_with(&mut harness, &token, wrong).await;
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains("runner \"sim-runner-0\" (runners[0], line"),
        "{logs}"
    );
    assert!(
        logs.contains("the coordinator refused the runner token (403"),
        "{logs}"
    );
    assert!(logs.contains("paas-runner register"), "{logs}");
    assert!(!logs.contains(wrong), "the token is never printed: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cc_token_stops_the_start() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let cc_token = harness.cluster.clever.config().token.clone();
    let wrong = "wrong-clever-token-for-tests";
    let (code, logs) = start_with(
        &mut harness,
        &format!("cc_token = {cc_token:?}"),
        &format!("cc_token = {wrong:?}"),
    )
    .await;
    assert_eq!(code, Some(2), "{logs}");
    assert!(logs.contains("runner \"sim-runner-0\""), "{logs}");
    assert!(
        logs.contains("Clever Cloud refused `cc_token` (HTTP 401)"),
        "{logs}"
    );
    assert!(logs.contains("runners[0].cc_token"), "{logs}");
    assert!(!logs.contains(wrong), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_organisation_or_watch_token_stops_the_start() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let orga = harness.cluster.clever.config().orga_id.clone();
    let (code, logs) = start_with(
        &mut harness,
        &format!("cc_orga_id = {orga:?}"),
        "cc_orga_id = \"orga_not_mine\"",
    )
    .await;
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains("does not let `cc_token` use organisation \"orga_not_mine\""),
        "{logs}"
    );

    let mut harness = Harness::start(quick(), |_| {}).await;
    let admin = harness.cluster.admin_token.clone();
    let (code, logs) = start_with(&mut harness, &admin, "glpat-wrongwatchtoken").await;
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains("refused the `paas_job_trace_watch` token"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_briefly_down_does_not_stop_the_start() {
    // Every other runner API call fails with 502/503 until the service has
    // started: the verification is retried, and once the outage is over the
    // service runs jobs.
    let settings = ClusterSettings {
        coordinator_faults: CoordinatorFaults {
            api_error_rate: 0.6,
            ..CoordinatorFaults::default()
        },
        seed: 3,
        ..quick()
    };
    let mut harness = Harness::start(settings, |_| {}).await;
    harness.spawn_runner();
    harness.wait_for_log_line("paas-runner started").await;
    harness.cluster.coordinator.end_faults();
    let (job, _) = harness.run_one(&[(vars::FLAVOR, "S")]).await;
    assert_eq!(job.status, JobStatus::Success, "{}", harness.logs());
    assert!(harness.is_running());
    let logs = harness.logs();
    assert!(logs.contains("credentials check: retrying"), "{logs}");
    assert!(logs.contains("runner token verified"), "{logs}");
}
