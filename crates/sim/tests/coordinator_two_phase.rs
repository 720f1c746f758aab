//! Two-phase job commit in the coordinator simulator (reference §2.6): jobs
//! taken by a runner advertising `two_phase_job_commit` stay pending,
//! reserved for it, until it commits them or the window lapses.

mod coordinator_support;

use std::time::Duration;

use coordinator_support::{
    assert_error, cancel_job, config, current_job, get_json, header, patch_trace, put_job,
    put_state, request_job_two_phase, reserved_job, start, status_of, OTHER_RUNNER, RUNNER, WAIT,
};
use paas_sim::coordinator::{
    CoordinatorConfig, CoordinatorSim, JobSpec, JobStatus, DEFAULT_ACK_WINDOW,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[test]
fn two_phase_commit_is_on_by_default_with_gitlabs_window() {
    let config = CoordinatorConfig::default();
    assert!(config.two_phase_commit);
    assert_eq!(config.ack_window, Duration::from_secs(120));
    assert_eq!(DEFAULT_ACK_WINDOW, Duration::from_secs(120));
}

#[tokio::test]
async fn a_job_taken_under_two_phase_commit_waits_reserved_until_committed() {
    let (sim, client) = start(config()).await;
    let (id, token) = reserved_job(&client, &sim).await;

    let record = sim.job(id).expect("record");
    assert_eq!(record.status, JobStatus::Pending);
    assert!(record.picked_at.is_some());
    assert_eq!(record.committed_at, None);
    assert_eq!(record.runner_token_prefix.as_deref(), Some(&RUNNER[..8]));
    let stats = sim.stats();
    assert_eq!(
        (stats.pending, stats.running, stats.jobs_assigned),
        (1, 0, 1)
    );

    // Reserved: nobody else gets it, nor the same runner a second time.
    for runner in [OTHER_RUNNER, RUNNER] {
        let response = request_job_two_phase(&client, &sim, runner, Some(true)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{runner}");
        let response = request_job_two_phase(&client, &sim, runner, None).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{runner}");
    }

    // Not running yet: GET /job answers 401, the log is refused.
    let response = current_job(&client, &sim, &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = patch_trace(&client, &sim, id, &token, Some("0-2"), b"abc").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), Some("pending"));

    // Only pending (keep-alive) and running (commit) are accepted.
    for state in ["failed", "success", "bogus"] {
        let response = put_state(&client, &sim, id, &token, state).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{state}");
    }
    let failure = json!({"token": token, "state": "failed", "failure_reason": "script_failure"});
    let response = put_job(&client, &sim, id, failure).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = put_state(&client, &sim, id, "glcbt-wrong", "running").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&sim, id), Some(JobStatus::Pending));

    let response = put_state(&client, &sim, id, &token, "pending").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "job-status"), Some("pending"));
    assert_eq!(response.text().await.expect("body"), "200");
    assert_eq!(status_of(&sim, id), Some(JobStatus::Pending));

    let response = put_state(&client, &sim, id, &token, "running").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "job-status"), Some("running"));
    assert_eq!(response.text().await.expect("body"), "200");

    let record = sim.job(id).expect("record");
    assert_eq!(record.status, JobStatus::Running);
    let (picked, committed) = (record.picked_at.expect("picked"), record.committed_at);
    assert!(committed.is_some_and(|committed| committed >= picked));
    let stats = sim.stats();
    assert_eq!(
        (stats.pending, stats.running, stats.jobs_assigned),
        (0, 1, 1)
    );
    // Two refused `failed` and one refused `success`.
    assert_eq!(record.final_updates, 3);

    // Now an ordinary running job.
    let response = current_job(&client, &sim, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let entity: Value = response.json().await.expect("entity");
    assert_eq!(entity["status"], json!("running"));
    assert!(entity["started_at"].is_string());
    let response = patch_trace(&client, &sim, id, &token, Some("0-2"), b"abc").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "job-status"), Some("running"));
    let response = put_state(&client, &sim, id, &token, "running").await;
    assert_eq!(response.status(), StatusCode::OK);
    // Not waiting any more: `pending` is refused.
    let response = put_state(&client, &sim, id, &token, "pending").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = put_state(&client, &sim, id, &token, "success").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(status_of(&sim, id), Some(JobStatus::Success));
    sim.shutdown();
}

#[tokio::test]
async fn a_lapsed_window_drops_the_job_as_runner_provisioning_timeout() {
    let (sim, client) = start(CoordinatorConfig {
        ack_window: Duration::from_millis(300),
        ..config()
    })
    .await;
    let (id, token) = reserved_job(&client, &sim).await;

    assert!(
        sim.wait_until(|sim| status_of(sim, id) == Some(JobStatus::Failed), WAIT)
            .await
    );
    let record = sim.job(id).expect("record");
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("runner_provisioning_timeout")
    );
    assert_eq!(record.committed_at, None);
    assert!(record.finished_at.is_some());
    let stats = sim.stats();
    assert_eq!((stats.pending, stats.running, stats.failed), (0, 0, 1));

    // Too late to commit; the job is not queued again (no `retry:`).
    let response = put_state(&client, &sim, id, &token, "running").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), Some("failed"));
    let response = put_state(&client, &sim, id, &token, "pending").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = request_job_two_phase(&client, &sim, RUNNER, Some(true)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    sim.shutdown();
}

#[tokio::test]
async fn a_user_cancel_while_waiting_cancels_the_job() {
    let (sim, client) = start(config()).await;

    let (id, token) = reserved_job(&client, &sim).await;
    sim.cancel(id);
    assert_eq!(status_of(&sim, id), Some(JobStatus::Canceled));
    let response = put_state(&client, &sim, id, &token, "running").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), Some("canceled"));
    assert_error(response, "403 Forbidden - Job is not running").await;
    assert_eq!(sim.job(id).and_then(|job| job.committed_at), None);

    // Through the project job API as well.
    let (id, token) = reserved_job(&client, &sim).await;
    let entity = cancel_job(&client, &sim, id).await;
    assert_eq!(entity["started_at"], Value::Null);
    let response = put_state(&client, &sim, id, &token, "pending").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), Some("canceled"));
    assert_eq!(sim.stats().canceled, 2);
    sim.shutdown();
}

#[tokio::test]
async fn without_the_feature_or_with_the_flag_off_jobs_run_at_once() {
    for (two_phase_commit, advertised) in [(true, None), (true, Some(false)), (false, Some(true))] {
        let (sim, client) = start(CoordinatorConfig {
            two_phase_commit,
            ..config()
        })
        .await;
        let case = format!("flag {two_phase_commit}, advertised {advertised:?}");
        let id = sim.enqueue(JobSpec::default());
        let response = request_job_two_phase(&client, &sim, RUNNER, advertised).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{case}");
        let payload: Value = response.json().await.expect("payload");
        let token = payload["token"].as_str().expect("token").to_string();

        let record = sim.job(id).expect("record");
        assert_eq!(record.status, JobStatus::Running, "{case}");
        assert!(record.picked_at.is_some(), "{case}");
        assert_eq!(record.committed_at, record.picked_at, "{case}");
        let response = current_job(&client, &sim, &token).await;
        assert_eq!(response.status(), StatusCode::OK, "{case}");

        // gitlab-runner's commit is a harmless keep-alive here; `pending`
        // is refused since the job is not waiting.
        let response = put_state(&client, &sim, id, &token, "running").await;
        assert_eq!(response.status(), StatusCode::OK, "{case}");
        let response = put_state(&client, &sim, id, &token, "pending").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(status_of(&sim, id), Some(JobStatus::Running), "{case}");
        sim.shutdown();
    }
}

#[tokio::test]
async fn snapshots_show_the_commit_time() {
    let (sim, client) = start(config()).await;
    let (id, token) = reserved_job(&client, &sim).await;
    let snapshot = |sim: &CoordinatorSim| {
        sim.snapshots()
            .into_iter()
            .find(|job| job.id == id)
            .expect("snapshot")
    };
    let waiting = snapshot(&sim);
    assert_eq!(waiting.status, JobStatus::Pending);
    assert!(waiting.picked_at_ms.is_some());
    assert_eq!(waiting.committed_at_ms, None);

    let response = put_state(&client, &sim, id, &token, "running").await;
    assert_eq!(response.status(), StatusCode::OK);
    let running = snapshot(&sim);
    assert!(running.committed_at_ms >= running.picked_at_ms);
    assert!(running.committed_at_ms.is_some());

    let jobs = get_json(&client, &sim, "/sim/jobs").await;
    assert!(jobs[0]["committed_at_ms"].is_u64(), "{jobs}");
    sim.shutdown();
}
