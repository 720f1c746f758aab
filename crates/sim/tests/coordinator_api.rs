//! The coordinator simulator over real HTTP: statuses, headers and bodies of
//! the runner API as `reference/gitlab-runner-api.md` describes them.

mod coordinator_support;

use std::time::{Duration, Instant};

use coordinator_support::{
    assert_error, cancel_job, config, current_job, get_json, header, job_payload, patch_trace,
    post_job_request, put_job, request_job, running_job, start, status_of, ADMIN, OTHER_RUNNER,
    RUNNER, WAIT,
};
use paas_sim::coordinator::{
    CoordinatorConfig, CoordinatorFaults, CoordinatorSim, JobSpec, JobStatus,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Sends a job request with the queue `version` in the background, and
/// waits until the simulator holds it in a long poll.
async fn held_request(
    client: &Client,
    sim: &CoordinatorSim,
    version: &str,
) -> JoinHandle<Response> {
    let held = tokio::spawn({
        let client = client.clone();
        let sim = sim.clone();
        let version = version.to_string();
        async move { request_job(&client, &sim, RUNNER, Some(&version)).await }
    });
    assert!(
        sim.wait_until(|sim| sim.stats().long_polls_waiting == 1, WAIT)
            .await
    );
    held
}

fn variable<'a>(payload: &'a Value, key: &str) -> Option<&'a Value> {
    payload["variables"]
        .as_array()?
        .iter()
        .find(|variable| variable["key"] == key)
}

#[tokio::test]
async fn job_payload_has_the_fields_of_gitlab() {
    let (sim, client) = start(config()).await;
    let id = sim.enqueue(JobSpec {
        project_id: 42,
        name: "build".to_string(),
        variables: vec![
            ("CI_CLEVER_CLOUD_FLAVOR".to_string(), "M".to_string()),
            ("SIM_JOB_DURATION_MS".to_string(), "500".to_string()),
        ],
        timeout_secs: 1800,
        ..JobSpec::default()
    });

    let response = request_job(&client, &sim, RUNNER, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "x-gitlab-last-update"), None);
    let payload: Value = response.json().await.expect("json payload");

    let token = payload["token"].as_str().expect("job token");
    assert!(token.starts_with("glcbt-") && token.len() == 26, "{token}");
    assert_eq!(payload["id"], json!(id));
    assert_eq!(payload["allow_git_fetch"], json!(true));
    let job_info = &payload["job_info"];
    assert_eq!(job_info["id"], json!(id));
    assert_eq!(job_info["name"], json!("build"));
    assert_eq!(job_info["stage"], json!("test"));
    assert_eq!(job_info["project_id"], json!(42));
    assert_eq!(job_info["project_name"], json!("project-42"));
    assert!(job_info["project_jobs_running_on_instance_runners_count"].is_string());

    let git_info = &payload["git_info"];
    let repo_url = git_info["repo_url"].as_str().expect("repo_url");
    assert!(
        repo_url.contains(&format!("gitlab-ci-token:{token}@")),
        "{repo_url}"
    );
    assert_eq!(git_info["ref"], json!("main"));
    assert_eq!(git_info["ref_type"], json!("branch"));
    assert_eq!(git_info["sha"].as_str().map(str::len), Some(40));
    assert_eq!(git_info["before_sha"].as_str().map(str::len), Some(40));
    let refspecs = git_info["refspecs"].as_array().expect("refspecs");
    assert!(refspecs.iter().any(|refspec| refspec
        .as_str()
        .is_some_and(|r| r.starts_with("+refs/pipelines/"))));
    assert!(git_info["depth"].is_u64());

    assert_eq!(payload["runner_info"]["timeout"], json!(1800));
    assert!(payload["runner_info"]["runner_session_url"].is_null());

    let job_token = variable(&payload, "CI_JOB_TOKEN").expect("CI_JOB_TOKEN");
    assert_eq!(job_token["value"], json!(token));
    assert_eq!(job_token["masked"], json!(true));
    assert_eq!(job_token["public"], json!(false));
    assert_eq!(
        variable(&payload, "CI_JOB_ID").map(|v| &v["value"]),
        Some(&json!(id.to_string()))
    );
    assert_eq!(
        variable(&payload, "CI_PROJECT_ID").map(|v| &v["value"]),
        Some(&json!("42"))
    );
    assert_eq!(
        variable(&payload, "CI_SERVER_URL").map(|v| &v["value"]),
        Some(&json!(sim.url()))
    );
    assert!(variable(&payload, "CI_PROJECT_ROOT_NAMESPACE").is_some());
    assert_eq!(
        variable(&payload, "CI_CLEVER_CLOUD_FLAVOR").map(|v| &v["value"]),
        Some(&json!("M"))
    );
    assert_eq!(
        variable(&payload, "SIM_JOB_DURATION_MS").map(|v| &v["value"]),
        Some(&json!("500"))
    );
    for variable in payload["variables"].as_array().expect("variables") {
        assert!(variable["public"].is_boolean() && variable["masked"].is_boolean());
        assert!(variable.get("file").is_none() && variable.get("raw").is_none());
    }

    let step = &payload["steps"][0];
    assert_eq!(step["name"], json!("script"));
    assert!(step["script"].is_array());
    assert_eq!(step["timeout"], json!(1800));
    assert_eq!(step["when"], json!("on_success"));
    assert_eq!(step["allow_failure"], json!(false));
    assert_eq!(payload["image"]["name"], json!("debian:bookworm"));
    for empty in ["services", "artifacts", "cache", "dependencies"] {
        assert_eq!(payload[empty], json!([]), "{empty}");
    }
    assert_eq!(payload["credentials"][0]["type"], json!("registry"));
    assert_eq!(payload["features"]["trace_sections"], json!(true));
    let reasons = payload["features"]["failure_reasons"]
        .as_array()
        .expect("failure reasons");
    for reason in [
        "script_failure",
        "runner_system_failure",
        "job_execution_timeout",
        "unknown_failure",
    ] {
        assert!(reasons.contains(&json!(reason)), "{reason}");
    }

    let record = sim.job(id).expect("record");
    assert_eq!(record.status, JobStatus::Running);
    assert!(record.picked_at.is_some());
    assert_eq!(record.runner_token_prefix.as_deref(), Some(&RUNNER[..8]));
    assert_eq!(sim.stats().running, 1);
    sim.shutdown();
}

#[tokio::test]
async fn no_job_gives_204_with_the_queue_version() {
    let (sim, client) = start(config()).await;

    let response = request_job(&client, &sim, RUNNER, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "gitlab-ci-builds-polling"), None);
    let version = header(&response, "x-gitlab-last-update")
        .expect("X-GitLab-Last-Update")
        .to_string();
    assert_eq!(version.len(), 32);

    // Rails answers a current version from its cache, with the same value.
    let response = request_job(&client, &sim, RUNNER, Some(&version)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "x-gitlab-last-update"), Some(&*version));

    // A job for another runner does not tick this runner's queue.
    sim.enqueue(JobSpec {
        runner_token: Some(OTHER_RUNNER.to_string()),
        ..JobSpec::default()
    });
    let response = request_job(&client, &sim, RUNNER, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "x-gitlab-last-update"), Some(&*version));

    // A job for any runner does, and the stale version gets it.
    let id = sim.enqueue(JobSpec::default());
    let response = request_job(&client, &sim, RUNNER, Some(&version)).await;
    job_payload(response, id).await;

    let response = request_job(&client, &sim, RUNNER, Some(&version)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_ne!(header(&response, "x-gitlab-last-update"), Some(&*version));
    sim.shutdown();
}

#[tokio::test]
async fn unknown_runner_token_gets_403() {
    let (sim, client) = start(config()).await;
    sim.enqueue(JobSpec::default());
    let response = request_job(&client, &sim, "glrt-nobody", None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_error(response, "403 Forbidden").await;
    assert_eq!(sim.stats().pending, 1);

    let response = post_job_request(&client, &sim, &json!({"info": {}})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    sim.shutdown();
}

#[tokio::test]
async fn long_poll_is_released_by_a_new_job_which_comes_on_the_next_request() {
    let (sim, client) = start(CoordinatorConfig {
        long_poll: Duration::from_secs(30),
        ..config()
    })
    .await;

    let response = request_job(&client, &sim, RUNNER, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "gitlab-ci-builds-polling"), Some("yes"));
    let version = header(&response, "x-gitlab-last-update")
        .expect("Rails sets X-GitLab-Last-Update")
        .to_string();

    let held = held_request(&client, &sim, &version).await;
    let id = sim.enqueue(JobSpec::default());

    let response = held.await.expect("held request");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "gitlab-ci-builds-polling"), Some("yes"));
    assert_eq!(header(&response, "x-gitlab-last-update"), None);
    assert_eq!(status_of(&sim, id), Some(JobStatus::Pending));

    // The runner keeps its old version, which now differs: Rails answers.
    let response = request_job(&client, &sim, RUNNER, Some(&version)).await;
    assert_eq!(header(&response, "gitlab-ci-builds-polling"), Some("yes"));
    job_payload(response, id).await;
    assert_eq!(sim.stats().long_polls, 1);
    sim.shutdown();
}

#[tokio::test]
async fn long_poll_ends_with_204_after_the_hold() {
    let hold = Duration::from_millis(300);
    let (sim, client) = start(CoordinatorConfig {
        long_poll: hold,
        ..config()
    })
    .await;
    let response = request_job(&client, &sim, RUNNER, None).await;
    let version = header(&response, "x-gitlab-last-update")
        .expect("version")
        .to_string();

    let started = Instant::now();
    let held = held_request(&client, &sim, &version).await;
    // Another runner's job does not end this runner's hold.
    sim.enqueue(JobSpec {
        runner_token: Some(OTHER_RUNNER.to_string()),
        ..JobSpec::default()
    });
    let response = held.await.expect("held request");
    assert!(started.elapsed() >= hold);
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "x-gitlab-last-update"), None);
    assert_eq!(sim.stats().long_polls_waiting, 0);
    sim.shutdown();
}

#[tokio::test]
async fn oversized_job_request_gets_413_from_workhorse() {
    let (sim, client) = start(CoordinatorConfig {
        long_poll: Duration::from_secs(1),
        ..config()
    })
    .await;
    let body = json!({"token": RUNNER, "info": {"padding": "x".repeat(33 * 1024)}});
    let response = post_job_request(&client, &sim, &body).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    sim.shutdown();
}

#[tokio::test]
async fn trace_ranges_follow_rails() {
    let (sim, client) = start(config()).await;
    let (id, token) = running_job(&client, &sim).await;

    let response = patch_trace(&client, &sim, id, &token, Some("0-9"), b"0123456789").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), Some("0-10"));
    assert_eq!(header(&response, "job-status"), Some("running"));
    assert_eq!(
        header(&response, "x-gitlab-trace-update-interval"),
        Some("3")
    );

    // Start behind the stored length: nothing written, 416 with the length.
    let response = patch_trace(&client, &sim, id, &token, Some("5-9"), b"56789").await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, "range"), Some("0-10"));

    let response = patch_trace(&client, &sim, id, &token, None, b"abc").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["message"], json!("400 Missing header Content-Range"));

    // Rails ignores the end: an exclusive end is accepted too.
    let response = patch_trace(&client, &sim, id, &token, Some("10-13"), b"abc").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), Some("0-13"));

    // The token may come as a `token` param.
    let response = client
        .patch(format!(
            "{}/api/v4/jobs/{id}/trace?token={token}",
            sim.url()
        ))
        .header("Content-Range", "13-15")
        .body(format!("+{token}"))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "range"), Some("0-40"));

    let response = patch_trace(&client, &sim, id, "glcbt-wrong", Some("40-42"), b"abc").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), None);

    let record = sim.job(id).expect("record");
    let expected = format!("0123456789abc+{}", "x".repeat(token.len()));
    assert_eq!(record.trace, expected.as_bytes(), "the job token is masked");
    assert!(record.first_trace_at.is_some());
    let writes: Vec<(u64, u64, bool, bool)> = record
        .trace_writes
        .iter()
        .map(|write| (write.offset, write.len, write.accepted, write.end_inclusive))
        .collect();
    assert_eq!(
        writes,
        vec![
            (0, 10, true, true),
            (5, 5, false, true),
            (10, 3, true, false),
            (13, 27, true, false),
        ]
    );
    sim.shutdown();
}

#[tokio::test]
async fn updates_of_a_finished_job_get_403_with_job_status() {
    let (sim, client) = start(config()).await;
    let (id, token) = running_job(&client, &sim).await;
    let update = |body: Value| put_job(&client, &sim, id, body);

    let response = update(json!({"token": token, "state": "running"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "200");

    let response = update(json!({"token": token, "state": "bogus"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = update(json!({"token": "glcbt-wrong", "state": "success"})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = put_job(
        &client,
        &sim,
        id + 100,
        json!({"token": token, "state": "success"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = update(json!({"state": "success"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let final_update = json!({
        "token": token,
        "state": "failed",
        "failure_reason": "image_pull_failure",
        "exit_code": 2,
        "output": {"checksum": "crc32:00000000", "bytesize": 0},
    });
    let response = update(final_update.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "job-status"), Some("failed"));
    assert_eq!(response.text().await.expect("body"), "200");

    let response = update(final_update).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), Some("failed"));
    assert_error(response, "403 Forbidden - Job is not running").await;

    let response = patch_trace(&client, &sim, id, &token, Some("0-2"), b"abc").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), Some("failed"));

    let record = sim.job(id).expect("record");
    assert_eq!(record.status, JobStatus::Failed);
    // Not in this GitLab's list: stored as unknown_failure.
    assert_eq!(record.failure_reason.as_deref(), Some("unknown_failure"));
    assert_eq!(record.exit_code, Some(2));
    assert_eq!(record.final_updates, 2);
    assert!(record.finished_at.is_some());
    sim.shutdown();
}

#[tokio::test]
async fn current_job_answers_401_once_the_job_finished() {
    let (sim, client) = start(config()).await;
    let (id, token) = running_job(&client, &sim).await;

    let response = current_job(&client, &sim, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let entity: Value = response.json().await.expect("entity");
    assert_eq!(entity["id"], json!(id));
    assert_eq!(entity["status"], json!("running"));
    assert_eq!(entity["ref"], json!("main"));
    assert!(entity["pipeline"]["id"].is_u64());
    assert!(entity["web_url"]
        .as_str()
        .is_some_and(|url| url.ends_with(&format!("/-/jobs/{id}"))));
    assert!(entity["started_at"]
        .as_str()
        .is_some_and(|date| date.ends_with('Z')));

    let response = client
        .get(format!("{}/api/v4/job?job_token={token}", sim.url()))
        .send()
        .await
        .expect("get job");
    assert_eq!(response.status(), StatusCode::OK);

    let success = json!({"token": token, "state": "success"});
    let response = put_job(&client, &sim, id, success).await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = current_job(&client, &sim, &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_error(response, "401 Unauthorized").await;
    sim.shutdown();
}

#[tokio::test]
async fn admin_reads_the_whole_log_and_cancels() {
    let (sim, client) = start(config()).await;
    let (id, token) = running_job(&client, &sim).await;
    let response = patch_trace(&client, &sim, id, &token, Some("0-5"), b"hello\n").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let read_trace = |project: u64, private_token: &str| {
        client
            .get(format!(
                "{}/api/v4/projects/{project}/jobs/{id}/trace",
                sim.url()
            ))
            .header("PRIVATE-TOKEN", private_token)
            .send()
    };

    let response = read_trace(1, "glpat-wrong").await.expect("trace");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = read_trace(2, ADMIN).await.expect("trace");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = read_trace(1, ADMIN).await.expect("trace");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), Some("text/plain"));
    assert_eq!(response.text().await.expect("log"), "hello\n");

    cancel_job(&client, &sim, id).await;

    let response = patch_trace(&client, &sim, id, &token, Some("6-8"), b"abc").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&response, "job-status"), Some("canceled"));

    // A canceled pending job is never handed out.
    let pending = sim.enqueue(JobSpec::default());
    sim.cancel(pending);
    let response = request_job(&client, &sim, RUNNER, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.stats().canceled, 2);
    sim.shutdown();
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed() {
    async fn statuses(seed: u64) -> (Vec<u16>, u64) {
        let (sim, client) = start(CoordinatorConfig {
            seed,
            faults: CoordinatorFaults {
                request_job_unavailable_rate: 0.5,
                api_error_rate: 0.5,
                latency: Duration::ZERO,
            },
            ..config()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let response = request_job(&client, &sim, RUNNER, None).await;
            statuses.push(response.status().as_u16());
        }
        let faults = sim.stats().faults_injected;
        sim.shutdown();
        (statuses, faults)
    }

    let (first, faults) = statuses(7).await;
    let (second, _) = statuses(7).await;
    let (other_seed, _) = statuses(8).await;
    assert_eq!(first, second);
    assert_ne!(first, other_seed);
    for status in [204, 502, 503] {
        assert!(first.contains(&status), "{status} in {first:?}");
    }
    let failed = first.iter().filter(|status| **status >= 500).count() as u64;
    assert_eq!(failed, faults);
}

#[tokio::test]
async fn control_endpoints_list_jobs_and_stats() {
    let (sim, client) = start(config()).await;
    let response = client
        .post(format!("{}/sim/jobs", sim.url()))
        .json(&json!({"name": "remote", "project_id": 3, "variables": {"A": "1"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("id");
    let id = created["id"].as_u64().expect("id");
    let record = sim.job(id).expect("record");
    assert_eq!(record.name, "remote");
    assert_eq!(record.project_id, 3);

    let jobs = get_json(&client, &sim, "/sim/jobs").await;
    assert_eq!(jobs[0]["id"], json!(id));
    assert_eq!(jobs[0]["status"], json!("pending"));
    assert_eq!(jobs[0]["trace"], json!(""));

    let stats = get_json(&client, &sim, "/sim/stats").await;
    assert_eq!(stats["pending"], json!(1));
    sim.shutdown();
}

#[tokio::test]
async fn wait_until_gives_up_at_the_deadline() {
    let (sim, _client) = start(config()).await;
    assert!(
        !sim.wait_until(|sim| sim.stats().success > 0, Duration::from_millis(50))
            .await
    );
    let waiter = tokio::spawn({
        let sim = sim.clone();
        async move { sim.wait_until(|sim| sim.stats().pending == 1, WAIT).await }
    });
    sim.enqueue(JobSpec::default());
    assert!(waiter.await.expect("waiter"));
    sim.shutdown();
}
