//! Helpers shared by the coordinator simulator tests over real HTTP:
//! starting a simulator, and calling the runner API as gitlab-runner does,
//! the job API as a job does and the project API as a GitLab admin does.
#![allow(dead_code)]

use std::time::Duration;

use paas_sim::coordinator::{CoordinatorConfig, CoordinatorSim, JobSpec, JobStatus};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

pub const RUNNER: &str = "glrt-runner-one-0000000";
pub const OTHER_RUNNER: &str = "glrt-runner-two-0000000";
pub const ADMIN: &str = "glpat-admin-000000000000";
pub const WAIT: Duration = Duration::from_secs(10);

/// The default configuration, knowing `RUNNER`, `OTHER_RUNNER` and `ADMIN`.
pub fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        runner_tokens: vec![RUNNER.to_string(), OTHER_RUNNER.to_string()],
        admin_token: ADMIN.to_string(),
        ..CoordinatorConfig::default()
    }
}

/// Starts a simulator on a loopback port, with a client to call it.
pub async fn start(config: CoordinatorConfig) -> (CoordinatorSim, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let sim = CoordinatorSim::start(listener, config)
        .await
        .expect("start coordinator");
    (sim, Client::new())
}

/// `POST /jobs/request` with `body` as it is.
pub async fn post_job_request(client: &Client, sim: &CoordinatorSim, body: &Value) -> Response {
    client
        .post(format!("{}/api/v4/jobs/request", sim.url()))
        .json(body)
        .send()
        .await
        .expect("job request")
}

/// The body of gitlab-runner's `POST /jobs/request`, with
/// `two_phase_job_commit` among the features when `two_phase` is set.
fn job_request_body(token: &str, version: &str, two_phase: Option<bool>) -> Value {
    let mut features = json!({"refspecs": true, "trace_reset": true, "cancelable": true});
    if let Some(two_phase) = two_phase {
        features["two_phase_job_commit"] = json!(two_phase);
    }
    json!({
        "token": token,
        "system_id": "s_0123456789ab",
        "info": {"name": "gitlab-runner", "version": version, "features": features},
    })
}

/// `POST /jobs/request` as gitlab-runner 17 sends it, with the queue version
/// it last saw, if any.
pub async fn request_job(
    client: &Client,
    sim: &CoordinatorSim,
    token: &str,
    last_update: Option<&str>,
) -> Response {
    let mut body = job_request_body(token, "17.0.0", None);
    if let Some(last_update) = last_update {
        body["last_update"] = json!(last_update);
    }
    post_job_request(client, sim, &body).await
}

/// `POST /jobs/request` as gitlab-runner >= 18.5 sends it, with
/// `two_phase_job_commit` set to `two_phase` (absent when `None`).
pub async fn request_job_two_phase(
    client: &Client,
    sim: &CoordinatorSim,
    token: &str,
    two_phase: Option<bool>,
) -> Response {
    let body = job_request_body(token, "18.5.0", two_phase);
    post_job_request(client, sim, &body).await
}

/// Checks that `response` hands out job `id`; returns the job payload.
pub async fn job_payload(response: Response, id: u64) -> Value {
    assert_eq!(response.status(), StatusCode::CREATED);
    let payload: Value = response.json().await.expect("payload");
    assert_eq!(payload["id"], json!(id));
    payload
}

fn job_token(payload: &Value) -> String {
    payload["token"].as_str().expect("token").to_string()
}

/// Enqueues a job and takes it as `RUNNER`; returns (job id, job token).
pub async fn running_job(client: &Client, sim: &CoordinatorSim) -> (u64, String) {
    let id = sim.enqueue(JobSpec::default());
    let response = request_job(client, sim, RUNNER, None).await;
    (id, job_token(&job_payload(response, id).await))
}

/// Enqueues a job and takes it as `RUNNER` advertising two-phase commit;
/// returns (job id, job token).
pub async fn reserved_job(client: &Client, sim: &CoordinatorSim) -> (u64, String) {
    let id = sim.enqueue(JobSpec::default());
    let response = request_job_two_phase(client, sim, RUNNER, Some(true)).await;
    (id, job_token(&job_payload(response, id).await))
}

/// `PATCH /jobs/:id/trace` with the job token in the `JOB-TOKEN` header.
pub async fn patch_trace(
    client: &Client,
    sim: &CoordinatorSim,
    id: u64,
    token: &str,
    content_range: Option<&str>,
    body: &'static [u8],
) -> Response {
    let mut request = client
        .patch(format!("{}/api/v4/jobs/{id}/trace", sim.url()))
        .header("JOB-TOKEN", token)
        .header("Content-Type", "text/plain")
        .body(body);
    if let Some(range) = content_range {
        request = request.header("Content-Range", range);
    }
    request.send().await.expect("patch trace")
}

/// `PUT /jobs/:id` with `body` as it is.
pub async fn put_job(client: &Client, sim: &CoordinatorSim, id: u64, body: Value) -> Response {
    client
        .put(format!("{}/api/v4/jobs/{id}", sim.url()))
        .json(&body)
        .send()
        .await
        .expect("put job")
}

/// `PUT /jobs/:id` setting `state`, as gitlab-runner sends it: the job token
/// in the body and in the `JOB-TOKEN` header.
pub async fn put_state(
    client: &Client,
    sim: &CoordinatorSim,
    id: u64,
    token: &str,
    state: &str,
) -> Response {
    client
        .put(format!("{}/api/v4/jobs/{id}", sim.url()))
        .header("JOB-TOKEN", token)
        .json(&json!({"token": token, "state": state}))
        .send()
        .await
        .expect("put job")
}

/// `GET /job`: the job of the token in the `JOB-TOKEN` header.
pub async fn current_job(client: &Client, sim: &CoordinatorSim, token: &str) -> Response {
    client
        .get(format!("{}/api/v4/job", sim.url()))
        .header("JOB-TOKEN", token)
        .send()
        .await
        .expect("get job")
}

/// `POST /projects/1/jobs/:id/cancel` as `ADMIN`; checks that the job is
/// canceled and returns its entity.
pub async fn cancel_job(client: &Client, sim: &CoordinatorSim, id: u64) -> Value {
    let response = client
        .post(format!("{}/api/v4/projects/1/jobs/{id}/cancel", sim.url()))
        .header("PRIVATE-TOKEN", ADMIN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), StatusCode::CREATED);
    let entity: Value = response.json().await.expect("entity");
    assert_eq!(entity["status"], json!("canceled"));
    entity
}

/// `GET` of a control endpoint of the simulator (`/sim/...`), as JSON.
pub async fn get_json(client: &Client, sim: &CoordinatorSim, path: &str) -> Value {
    client
        .get(format!("{}{path}", sim.url()))
        .send()
        .await
        .expect(path)
        .json()
        .await
        .expect("json")
}

/// Checks that `response` is a Grape error: `{"message": message}`.
pub async fn assert_error(response: Response, message: &str) {
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body, json!({ "message": message }));
}

pub fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

pub fn status_of(sim: &CoordinatorSim, id: u64) -> Option<JobStatus> {
    sim.job(id).map(|job| job.status)
}
