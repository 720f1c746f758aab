//! The real binary, configured with each kind of Clever Cloud credentials
//! (legacy token, OAuth 1, API token), runs a job end to end against a
//! simulator that accepts only that kind, on the API and on git.

mod common;

use std::time::Duration;

use common::{Harness, SIGTERM};
use paas_sim::clever::AuthKinds;
use paas_sim::cluster::{ClusterSettings, CredentialKind};
use paas_sim::coordinator::JobStatus;
use paas_sim::vars;

async fn job_runs_with(kind: CredentialKind, accepted: AuthKinds) {
    let settings = ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        // Git must ask for credentials: with OAuth they go after a 401.
        require_git_credentials: true,
        clever_auth_kinds: accepted,
        ..ClusterSettings::default()
    };
    let mut harness = Harness::start(settings, |options| {
        options.clever_credentials = kind;
    })
    .await;
    let (job, trace) = harness
        .run_one(&[(vars::JOB_DURATION_MS, "200"), (vars::JOB_LOG_LINES, "2")])
        .await;
    assert_eq!(
        job.status,
        JobStatus::Success,
        "{kind:?}: {trace}\n{}",
        harness.logs()
    );
    let apps = harness.cluster.clever.apps();
    assert_eq!(apps.len(), 1, "{kind:?}");
    assert_eq!(
        apps[0].pushes, 1,
        "{kind:?}: pushed with the implied git credentials"
    );
    assert!(!apps[0].is_live(), "{kind:?}: deleted at the end");

    let logs = harness.logs();
    let clever = harness.cluster.clever.config();
    for secret in [
        &clever.token,
        &clever.api_token,
        &clever.oauth_consumer_secret,
        &clever.oauth_token,
        &clever.oauth_secret,
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "{kind:?}: a secret in the logs"
        );
        assert!(
            !trace.contains(secret.as_str()),
            "{kind:?}: a secret in the job log"
        );
    }
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{kind:?}: {status:?}\n{}", harness.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_token_only() {
    job_runs_with(CredentialKind::Token, AuthKinds::TOKEN_ONLY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth1_only() {
    job_runs_with(CredentialKind::OAuth1, AuthKinds::OAUTH1_ONLY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_only() {
    job_runs_with(CredentialKind::ApiToken, AuthKinds::API_TOKEN_ONLY).await;
}

/// A simulator that refuses the configured kind stops the start with the
/// key to fix, as for a wrong legacy token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_kind_names_its_key() {
    let settings = ClusterSettings {
        clever_auth_kinds: AuthKinds::TOKEN_ONLY,
        ..ClusterSettings::default()
    };
    let mut harness = Harness::start(settings, |options| {
        options.clever_credentials = CredentialKind::ApiToken;
    })
    .await;
    harness.spawn_runner();
    let status = harness.wait_exit().await;
    assert_eq!(status.code(), Some(2), "{}", harness.logs());
    let logs = harness.logs();
    assert!(
        logs.contains("Clever Cloud refused `cc_api_token` (HTTP 401)"),
        "{logs}"
    );
}

/// A job whose definition carries one of the OAuth secrets (a CI variable
/// set to it) is not pushed to its machine: the job fails with a message,
/// and the secret shows neither there nor in the operator's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_carrying_an_oauth_secret_is_not_pushed() {
    let settings = ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        clever_auth_kinds: AuthKinds::OAUTH1_ONLY,
        ..ClusterSettings::default()
    };
    let mut harness = Harness::start(settings, |options| {
        options.clever_credentials = CredentialKind::OAuth1;
    })
    .await;
    let secret = harness.cluster.clever.config().oauth_secret.clone();
    let (job, trace) = harness.run_one(&[("LEAKED", secret.as_str())]).await;
    assert_eq!(job.status, JobStatus::Failed, "{trace}\n{}", harness.logs());
    assert!(
        trace.contains("Could not prepare the job for its machine"),
        "{trace}"
    );
    let apps = harness.cluster.clever.apps();
    assert!(apps.iter().all(|app| app.pushes == 0), "{apps:?}");
    assert!(!trace.contains(&secret), "{trace}");
    assert!(!harness.logs().contains(&secret));
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{status:?}\n{}", harness.logs());
}
