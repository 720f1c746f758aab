//! Empty trace PATCHes (probes) and credentials on the job endpoints, as
//! GitLab answers them (`docs/protocol-notes.md` §1.1, §2.1).

mod coordinator_support;

use coordinator_support::{
    config, header, patch_trace, put_state, running_job, start, status_of, RUNNER,
};
use paas_sim::coordinator::JobStatus;
use reqwest::StatusCode;

#[tokio::test]
async fn an_empty_patch_reveals_the_log_length_and_changes_nothing() {
    let (sim, client) = start(config()).await;
    let (id, token) = running_job(&client, &sim).await;

    // At the current length (empty log): 202, the length, the status.
    let response = patch_trace(&client, &sim, id, &token, Some("0-0"), b"").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), Some("0-0"));
    assert_eq!(header(&response, "job-status"), Some("running"));
    let record = sim.job(id).expect("record");
    assert!(record.trace.is_empty());
    assert_eq!(record.first_trace_at, None, "a probe is not a write");
    assert!(record.trace_writes.is_empty());

    // The inner runner writes from offset 0, unaffected by the probe.
    let response = patch_trace(&client, &sim, id, &token, Some("0-4"), b"hello").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), Some("0-5"));

    // A probe at the old length now gets 416 and the new length: the
    // inner runner has written.
    let response = patch_trace(&client, &sim, id, &token, Some("0-0"), b"").await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, "range"), Some("0-5"));
    assert_eq!(header(&response, "job-status"), None);

    // Without Content-Range: 400, after authentication (so it tells an
    // executing job from an ended one).
    let response = patch_trace(&client, &sim, id, &token, None, b"").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let record = sim.job(id).expect("record");
    assert_eq!(record.trace, b"hello");
    assert_eq!(record.trace_writes.len(), 1, "{:?}", record.trace_writes);
    assert_eq!(record.trace_probes, 2);
    assert_eq!(status_of(&sim, id), Some(JobStatus::Running));

    // The job ends: every probe gets 403 with its final status.
    let response = put_state(&client, &sim, id, &token, "success").await;
    assert_eq!(response.status(), StatusCode::OK);
    for range in [Some("5-5"), Some("0-0"), None] {
        let response = patch_trace(&client, &sim, id, &token, range, b"").await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{range:?}");
        assert_eq!(
            header(&response, "job-status"),
            Some("success"),
            "{range:?}"
        );
    }
    sim.shutdown();
}

#[tokio::test]
async fn the_runner_token_opens_no_job_endpoint() {
    let (sim, client) = start(config()).await;
    let (id, token) = running_job(&client, &sim).await;

    // `authenticate_job!` accepts only the job's own token (notes §1.1):
    // the runner token gets 403 without `Job-Status`, on log writes,
    // probes and updates alike.
    let response = patch_trace(&client, &sim, id, RUNNER, Some("0-4"), b"hello").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), None);
    let response = patch_trace(&client, &sim, id, RUNNER, None, b"").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = put_state(&client, &sim, id, RUNNER, "success").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&sim, id), Some(JobStatus::Running));

    // The job token is what works.
    let response = put_state(&client, &sim, id, &token, "success").await;
    assert_eq!(response.status(), StatusCode::OK);
    sim.shutdown();
}

#[tokio::test]
async fn requests_are_counted_by_purpose() {
    let (sim, client) = start(config()).await;
    let (id, token) = running_job(&client, &sim).await;
    // A dispatcher's probe and a status read: watching.
    patch_trace(&client, &sim, id, &token, None, b"").await;
    client
        .get(format!("{}/api/v4/job", sim.url()))
        .header("JOB-TOKEN", &token)
        .send()
        .await
        .expect("get job");
    // An inner runner's write.
    client
        .patch(format!("{}/api/v4/jobs/{id}/trace", sim.url()))
        .header("JOB-TOKEN", &token)
        .header("User-Agent", "gitlab-runner 17.0.0 (test)")
        .header("Content-Range", "0-1")
        .body("ok")
        .send()
        .await
        .expect("patch");
    // A dispatcher's job update.
    put_state(&client, &sim, id, &token, "failed").await;
    let stats = sim.stats();
    assert_eq!(stats.job_requests, 1);
    assert_eq!(stats.watch_requests, 2);
    assert_eq!(stats.inner_runner_requests, 1);
    assert_eq!(stats.job_updates, 1);
    sim.shutdown();
}
