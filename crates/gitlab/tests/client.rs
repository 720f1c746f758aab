//! Behaviour of `CoordinatorClient` against scripted fake coordinators on loopback.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use paas_core::Secret;
use paas_gitlab::{
    AppendOutcome, ConfirmOutcome, CoordinatorClient, FailureReason, GitlabError, JobRequest,
    JobRequestOutcome, RemoteJobStatus, UpdateOutcome, ADVERTISED_FEATURES, USER_AGENT,
};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const RUNNER_TOKEN: &str = "glrt-runner-SECRET-1a2b3c";
const JOB_TOKEN: &str = "glcbt-64_job-SECRET-4d5e6f";
const ADMIN_TOKEN: &str = "glpat-admin-SECRET-7a8b9c";
const SYSTEM_ID: &str = "s_0123456789ab";
const LONG_POLL: Duration = Duration::from_secs(60);

/// One request as the fake coordinator received it.
#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json request body")
    }

    /// Checks the request line: `method` on `path`, with no query string
    /// (a token there would show in logs and errors).
    fn assert_line(&self, method: Method, path: &str) {
        self.assert_line_with_query(method, path, None);
    }

    /// Checks the request line, query included.
    fn assert_line_with_query(&self, method: Method, path: &str, query: Option<&str>) {
        assert_eq!(self.method, method);
        assert_eq!(self.uri.path(), path);
        assert_eq!(self.uri.query(), query);
    }

    /// Checks the `Accept` and `User-Agent` headers of a JSON API call.
    fn assert_json_api_headers(&self) {
        assert_eq!(self.header("accept"), Some("application/json"));
        assert_eq!(self.header("user-agent"), Some(USER_AGENT));
    }
}

/// One scripted answer.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn answer(status: u16) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

impl Answer {
    fn header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Answer {
        self.body = body.into();
        self
    }
}

#[derive(Default)]
struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Answer>>,
}

/// A coordinator that records every request and answers from a script.
struct FakeCoordinator {
    url: String,
    shared: Arc<Shared>,
}

impl FakeCoordinator {
    async fn start(script: Vec<Answer>) -> FakeCoordinator {
        let shared = Arc::new(Shared {
            recorded: Mutex::default(),
            script: Mutex::new(script.into()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeCoordinator { url, shared }
    }

    fn client(&self) -> CoordinatorClient {
        client_at(&self.url)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().expect("lock").clone()
    }

    fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests[0].clone()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.recorded.lock().expect("lock").push(Recorded {
        method,
        uri,
        headers,
        body: body.to_vec(),
    });
    let next = shared.script.lock().expect("lock").pop_front();
    let answer = next.unwrap_or_else(|| answer(599).body("unscripted request"));
    let mut response =
        Response::builder().status(StatusCode::from_u16(answer.status).expect("status"));
    for (name, value) in answer.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(answer.body)).expect("response")
}

fn http_client() -> reqwest::Client {
    // Loopback only: never go through a proxy configured in the environment.
    paas_gitlab::http_client_builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

fn client_at(url: &str) -> CoordinatorClient {
    CoordinatorClient::new(url, http_client()).expect("client")
}

fn runner_token() -> Secret {
    Secret::new(RUNNER_TOKEN)
}

fn job_token() -> Secret {
    Secret::new(JOB_TOKEN)
}

fn assert_no_secret(shown: &str) {
    for secret in [RUNNER_TOKEN, JOB_TOKEN, ADMIN_TOKEN, "SECRET"] {
        assert!(!shown.contains(secret), "secret leaked in {shown:?}");
    }
}

fn assert_error_hides_secrets(error: &GitlabError) {
    assert_no_secret(&format!("{error}"));
    assert_no_secret(&format!("{error:?}"));
}

async fn request_job(
    client: &CoordinatorClient,
    last_update: Option<&str>,
) -> Result<JobRequestOutcome, GitlabError> {
    request_job_polling(client, last_update, LONG_POLL).await
}

/// A job request that the coordinator may hold for `long_poll`.
async fn request_job_polling(
    client: &CoordinatorClient,
    last_update: Option<&str>,
    long_poll: Duration,
) -> Result<JobRequestOutcome, GitlabError> {
    let token = runner_token();
    let request = JobRequest {
        token: &token,
        system_id: SYSTEM_ID,
        last_update,
    };
    assert_no_secret(&format!("{request:?}"));
    client.request_job(&request, long_poll).await
}

/// Appends `bytes` at `offset` to the log of job 9.
async fn append_trace(
    client: &CoordinatorClient,
    offset: u64,
    bytes: &[u8],
) -> Result<AppendOutcome, GitlabError> {
    client.append_trace(9, &job_token(), offset, bytes).await
}

/// What an append answered with a `Job-Status` header returns.
fn appended(new_offset: u64, job_status: &str, not_running: bool) -> AppendOutcome {
    AppendOutcome {
        new_offset,
        job_status: Some(job_status.to_owned()),
        not_running,
    }
}

fn expected_features() -> Value {
    json!({
        "variables": true,
        "image": true,
        "services": true,
        "artifacts": true,
        "cache": true,
        "shared": false,
        "upload_multiple_artifacts": true,
        "upload_raw_artifacts": true,
        "session": true,
        "terminal": true,
        "refspecs": true,
        "masking": true,
        "proxy": false,
        "raw_variables": true,
        "artifacts_exclude": true,
        "multi_build_steps": true,
        "return_exit_code": true,
        "trace_reset": true,
        "trace_checksum": true,
        "trace_size": true,
        "cancelable": true,
        "two_phase_job_commit": true,
    })
}

#[tokio::test]
async fn job_request_sends_the_documented_body_and_headers() {
    let coordinator =
        FakeCoordinator::start(vec![answer(204).header("X-GitLab-Last-Update", "a1b2c3")]).await;
    let outcome = request_job(&coordinator.client(), None)
        .await
        .expect("answer");
    assert!(
        matches!(&outcome, JobRequestOutcome::NoJob { last_update: Some(value) } if value == "a1b2c3"),
        "{outcome:?}"
    );

    let request = coordinator.only_request();
    request.assert_line(Method::POST, "/api/v4/jobs/request");
    assert_eq!(request.header("content-type"), Some("application/json"));
    request.assert_json_api_headers();
    assert_eq!(
        USER_AGENT,
        format!("paas-runner/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.header("runner-token"), Some(RUNNER_TOKEN));
    assert!(request.body.len() < 32 * 1024);

    let body = request.json();
    let object = body.as_object().expect("object");
    assert_eq!(object["token"], RUNNER_TOKEN);
    assert_eq!(object["system_id"], SYSTEM_ID);
    assert!(!object.contains_key("last_update"), "{body}");
    let info = &object["info"];
    assert_eq!(info["name"], "paas-runner");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["revision"].is_string());
    assert_eq!(info["platform"], "linux");
    assert_eq!(info["architecture"], "amd64");
    assert_eq!(info["executor"], "docker");
    assert_eq!(info["shell"], "bash");
    assert_eq!(info["features"], expected_features());
    assert_eq!(ADVERTISED_FEATURES.len(), 22);
    // Two-phase commit is claimed: paas-runner commits each job right after
    // recording it (reference §2.6).
    assert_eq!(info["features"]["two_phase_job_commit"], true);
    assert!(info["features"].get("cancel_gracefully").is_none());
}

#[tokio::test]
async fn last_update_is_sent_only_when_known_and_kept_by_the_caller_otherwise() {
    let coordinator = FakeCoordinator::start(vec![
        answer(204).header("X-GitLab-Last-Update", "v1"),
        // Workhorse's own 204 after a long poll: no header.
        answer(204).header("Gitlab-Ci-Builds-Polling", "yes"),
    ])
    .await;
    let client = coordinator.client();
    let first = request_job(&client, None).await.expect("first");
    let JobRequestOutcome::NoJob { last_update } = first else {
        panic!("{first:?}")
    };
    assert_eq!(last_update.as_deref(), Some("v1"));
    let second = request_job(&client, last_update.as_deref())
        .await
        .expect("second");
    assert!(
        matches!(second, JobRequestOutcome::NoJob { last_update: None }),
        "{second:?}"
    );

    let requests = coordinator.requests();
    assert!(requests[0].json().get("last_update").is_none());
    assert_eq!(requests[1].json()["last_update"], "v1");
}

#[tokio::test]
async fn an_acquired_job_keeps_its_payload_byte_for_byte() {
    // Odd spacing, key order, escapes and non-ASCII text must survive.
    let payload = format!(
        "{{ \"token\" : \"{JOB_TOKEN}\",\n  \"id\": 1234,\"job_info\":{{\"name\":\"tést \\u00e9\",\"project_id\":77}},\
         \"variables\":[{{\"key\":\"CI_CLEVER_CLOUD_FLAVOR\",\"value\":\"XL\",\"public\":true,\"masked\":false}},\
         {{\"key\":\"CI_JOB_TOKEN\",\"value\":\"{JOB_TOKEN}\",\"masked\":true}}],\
         \"features\":{{\"trace_sections\":true,\"failure_reasons\":[\"script_failure\",\"runner_system_failure\"]}},\
         \"image\":null,\"services\":null,\"unknown_new_field\":{{\"x\":[1,2]}} }}\n"
    );
    let coordinator = FakeCoordinator::start(vec![answer(201)
        .header("content-type", "application/json")
        .body(payload.clone())])
    .await;
    let outcome = request_job(&coordinator.client(), None).await.expect("job");
    assert_no_secret(&format!("{outcome:?}"));
    let JobRequestOutcome::Job(job) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(job.payload, payload);
    assert_eq!(job.id, 1234);
    assert_eq!(job.token.expose(), JOB_TOKEN);
    assert_eq!(job.project_id, Some(77));
    assert_eq!(job.job_name.as_deref(), Some("tést é"));
    assert_eq!(job.variable("CI_CLEVER_CLOUD_FLAVOR"), Some("XL"));
    assert_eq!(job.variables.len(), 2);
    let accepted = job.failure_reasons.as_deref();
    assert_eq!(
        FailureReason::RunnerConfigurationError.accepted_by(accepted),
        FailureReason::ScriptFailure
    );
}

#[tokio::test]
async fn job_request_statuses_are_classified() {
    let coordinator = FakeCoordinator::start(vec![
        answer(409).body(r#"{"message":"409 Conflict"}"#),
        answer(403).body(r#"{"message":"403 Forbidden"}"#),
        answer(502).body("<html>Bad Gateway</html>"),
        answer(503).body(r#"{"message":"503 Service Unavailable"}"#),
        // Short: the client waits it out before its next call.
        answer(429)
            .header("Retry-After", "1")
            .body(r#"{"message":"Retry later"}"#),
        answer(422).body(r#"{"message":"Runner is orphaned"}"#),
        answer(413),
    ])
    .await;
    let client = coordinator.client();

    let conflict = request_job(&client, None).await.expect("409 is no error");
    assert!(
        matches!(conflict, JobRequestOutcome::Conflict),
        "{conflict:?}"
    );

    let forbidden = request_job(&client, None).await.expect_err("403");
    assert!(
        matches!(&forbidden, GitlabError::Forbidden { message, .. } if message == "403 Forbidden"),
        "{forbidden:?}"
    );
    assert!(!forbidden.is_transient());
    assert_eq!(forbidden.status(), Some(403));

    for status in [502, 503] {
        let error = request_job(&client, None).await.expect_err("5xx");
        assert!(
            matches!(&error, GitlabError::Unavailable { status: Some(got), .. } if *got == status),
            "{error:?}"
        );
        assert!(error.is_transient());
    }

    let limited = request_job(&client, None).await.expect_err("429");
    assert!(limited.is_transient());
    assert_eq!(limited.status(), Some(429));
    assert!(limited.to_string().contains("Retry-After: 1"), "{limited}");

    let orphaned = request_job(&client, None).await.expect_err("422");
    assert!(
        matches!(&orphaned, GitlabError::Unexpected { status: 422, message, .. } if message == "Runner is orphaned"),
        "{orphaned:?}"
    );
    assert!(!orphaned.is_transient());

    let too_large = request_job(&client, None).await.expect_err("413");
    assert_eq!(too_large.status(), Some(413));
    assert!(!too_large.is_transient());
}

#[tokio::test]
async fn a_path_prefix_in_the_url_is_kept() {
    let coordinator = FakeCoordinator::start(vec![answer(204)]).await;
    let client = client_at(&format!("{}/heptapod/", coordinator.url));
    assert_eq!(client.base_url(), format!("{}/heptapod", coordinator.url));
    request_job(&client, None).await.expect("answer");
    assert_eq!(
        coordinator.only_request().uri.path(),
        "/heptapod/api/v4/jobs/request"
    );
}

#[tokio::test]
async fn broken_job_payloads_are_decode_errors_without_secrets() {
    let coordinator = FakeCoordinator::start(vec![
        answer(201).body(format!(r#"{{"token":"{JOB_TOKEN}"}}"#)),
        answer(201).body(format!(r#"{{"id":1,"token":"{JOB_TOKEN}""#)),
        answer(201).body(vec![b'{', 0xff, b'}']),
    ])
    .await;
    let client = coordinator.client();
    for _ in 0..3 {
        let error = request_job(&client, None).await.expect_err("decode");
        assert!(matches!(error, GitlabError::Decode { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert_error_hides_secrets(&error);
    }
}

#[tokio::test]
async fn job_status_uses_the_job_token_header_and_reads_401_as_finished() {
    let coordinator = FakeCoordinator::start(vec![
        answer(200).body(r#"{"id":5,"status":"running","name":"build"}"#),
        answer(200).body(r#"{"id":5,"status":"canceling"}"#),
        answer(200).body(r#"{"id":5,"status":"success"}"#),
        answer(401).body(r#"{"message":"401 Unauthorized"}"#),
        answer(200).body(r#"{"id":5}"#),
        answer(404).body(r#"{"message":"404 Job Not Found"}"#),
    ])
    .await;
    let client = coordinator.client();
    let token = job_token();
    let statuses = [
        RemoteJobStatus::Running {
            status: "running".into(),
        },
        RemoteJobStatus::Running {
            status: "canceling".into(),
        },
        RemoteJobStatus::Finished {
            status: Some("success".into()),
        },
        RemoteJobStatus::Finished { status: None },
    ];
    for expected in statuses {
        assert_eq!(client.job_status(&token).await.expect("status"), expected);
    }
    let missing = client.job_status(&token).await.expect_err("no status");
    assert!(matches!(missing, GitlabError::Decode { .. }), "{missing:?}");
    let not_found = client.job_status(&token).await.expect_err("404");
    assert_eq!(not_found.status(), Some(404));

    for request in coordinator.requests() {
        // The header only: no token in the URL (proxies log URLs).
        request.assert_line_with_query(Method::GET, "/api/v4/job", None);
        assert_eq!(request.header("job-token"), Some(JOB_TOKEN));
        request.assert_json_api_headers();
    }
}

#[tokio::test]
async fn fail_job_sends_the_failure_and_understands_the_answers() {
    let coordinator = FakeCoordinator::start(vec![
        answer(200).body("200"),
        answer(202).header("X-GitLab-Trace-Update-Interval", "4"),
        answer(202),
        answer(403)
            .header("Job-Status", "canceled")
            .body(r#"{"message":"403 Forbidden - Job is not running"}"#),
        answer(403).body(r#"{"message":"403 Forbidden - Job is not processing on runner"}"#),
        answer(403).body(r#"{"message":"403 Forbidden"}"#),
        answer(400).body(format!(r#"{{"message":"bad token {JOB_TOKEN}"}}"#)),
    ])
    .await;
    let client = coordinator.client();
    let token = job_token();
    let fail = |reason, exit_code| client.fail_job(77, &token, reason, exit_code);

    assert_eq!(
        fail(FailureReason::RunnerSystemFailure, Some(103))
            .await
            .expect("200"),
        UpdateOutcome::Accepted
    );
    assert_eq!(
        fail(FailureReason::ScriptFailure, None).await.expect("202"),
        UpdateOutcome::Retry {
            after: Duration::from_secs(4)
        }
    );
    assert_eq!(
        fail(FailureReason::ScriptFailure, None).await.expect("202"),
        UpdateOutcome::Retry {
            after: Duration::from_secs(1)
        }
    );
    assert_eq!(
        fail(FailureReason::ScriptFailure, None).await.expect("403"),
        UpdateOutcome::NotRunning {
            job_status: Some("canceled".into())
        }
    );
    assert_eq!(
        fail(FailureReason::ScriptFailure, None).await.expect("403"),
        UpdateOutcome::NotRunning { job_status: None }
    );
    let forbidden = fail(FailureReason::ScriptFailure, None)
        .await
        .expect_err("403");
    assert!(
        matches!(forbidden, GitlabError::Forbidden { .. }),
        "{forbidden:?}"
    );
    let invalid = fail(FailureReason::ScriptFailure, None)
        .await
        .expect_err("400");
    assert_eq!(invalid.status(), Some(400));
    assert!(
        invalid.to_string().contains("bad token [REDACTED]"),
        "{invalid}"
    );
    assert_error_hides_secrets(&invalid);

    let requests = coordinator.requests();
    let first = &requests[0];
    first.assert_line(Method::PUT, "/api/v4/jobs/77");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("job-token"), Some(JOB_TOKEN));
    assert_eq!(
        first.json(),
        json!({
            "token": JOB_TOKEN,
            "state": "failed",
            "failure_reason": "runner_system_failure",
            "exit_code": 103,
        })
    );
    assert_eq!(
        requests[1].json(),
        json!({"token": JOB_TOKEN, "state": "failed", "failure_reason": "script_failure"})
    );
}

#[tokio::test]
async fn confirm_job_commits_with_a_running_update() {
    let coordinator = FakeCoordinator::start(vec![
        answer(200).header("Job-Status", "running").body("200"),
        // A coordinator without two-phase commit, or an older GitLab.
        answer(200).body("200"),
        // Not ours to end: the inner runner sees it on its first PATCH.
        answer(200).header("Job-Status", "canceling").body("200"),
    ])
    .await;
    let client = coordinator.client();
    let token = job_token();
    for _ in 0..3 {
        assert_eq!(
            client.confirm_job(77, &token).await.expect("200"),
            ConfirmOutcome::Confirmed
        );
    }
    for request in coordinator.requests() {
        request.assert_line(Method::PUT, "/api/v4/jobs/77");
        assert_eq!(request.header("content-type"), Some("application/json"));
        request.assert_json_api_headers();
        assert_eq!(request.header("job-token"), Some(JOB_TOKEN));
        assert_eq!(
            request.json(),
            json!({"token": JOB_TOKEN, "state": "running"})
        );
    }
}

#[tokio::test]
async fn confirm_job_reports_jobs_that_are_not_ours_to_run() {
    let coordinator = FakeCoordinator::start(vec![
        answer(200).header("Job-Status", "canceled").body("200"),
        answer(200).header("Job-Status", "failed").body("200"),
        answer(400).body("400"),
        answer(403)
            .header("Job-Status", "canceled")
            .body(r#"{"message":"403 Forbidden - Job is not running"}"#),
        answer(403).body(r#"{"message":"403 Forbidden"}"#),
        answer(409).body(r#"{"message":"409 Conflict"}"#),
        answer(404).body(r#"{"message":"404 Not Found"}"#),
    ])
    .await;
    let client = coordinator.client();
    let token = job_token();
    let expected = [
        (200, Some("canceled")),
        (200, Some("failed")),
        (400, None),
        (403, Some("canceled")),
        (403, None),
        (409, None),
        (404, None),
    ];
    for (status, job_status) in expected {
        assert_eq!(
            client.confirm_job(77, &token).await.expect("an outcome"),
            ConfirmOutcome::Gone {
                status,
                job_status: job_status.map(str::to_owned),
            },
            "{status} {job_status:?}"
        );
    }
    assert_eq!(coordinator.requests().len(), expected.len());
}

#[tokio::test]
async fn confirm_job_errors_are_transient_when_the_coordinator_is_down() {
    let coordinator = FakeCoordinator::start(vec![
        answer(502).body("<html>Bad Gateway</html>"),
        answer(503).body(format!(r#"{{"message":"down for {JOB_TOKEN}"}}"#)),
        answer(429).header("Retry-After", "1"),
        answer(401).body(r#"{"message":"401 Unauthorized"}"#),
    ])
    .await;
    let client = coordinator.client();
    let token = job_token();
    for status in [502, 503, 429] {
        let error = client.confirm_job(77, &token).await.expect_err("5xx");
        assert!(
            matches!(&error, GitlabError::Unavailable { status: Some(got), .. } if *got == status),
            "{error:?}"
        );
        assert!(error.is_transient());
        assert_error_hides_secrets(&error);
    }
    // Nothing the endpoint answers: not transient, not a verdict on the job.
    let error = client.confirm_job(77, &token).await.expect_err("401");
    assert!(
        matches!(error, GitlabError::Unexpected { status: 401, .. }),
        "{error:?}"
    );

    let (_listener, url) = silent_server().await;
    let silent = client_at(&url).with_call_timeout(Duration::from_millis(200));
    let error = silent.confirm_job(77, &token).await.expect_err("timeout");
    assert!(
        matches!(&error, GitlabError::Unavailable { status: None, .. }),
        "{error:?}"
    );
    assert_error_hides_secrets(&error);
}

#[tokio::test]
async fn append_trace_sends_an_inclusive_content_range() {
    let coordinator = FakeCoordinator::start(vec![answer(202)
        .header("Range", "0-15")
        .header("Job-Status", "running")
        .header("X-GitLab-Trace-Update-Interval", "60")])
    .await;
    let outcome = append_trace(&coordinator.client(), 10, b"hello")
        .await
        .expect("appended");
    assert_eq!(outcome, appended(15, "running", false));
    let request = coordinator.only_request();
    request.assert_line_with_query(Method::PATCH, "/api/v4/jobs/9/trace", None);
    assert_eq!(request.header("content-range"), Some("10-14"));
    assert_eq!(request.header("content-type"), Some("text/plain"));
    assert_eq!(request.header("job-token"), Some(JOB_TOKEN));
    assert_eq!(request.body, b"hello");
}

#[tokio::test]
async fn append_trace_resyncs_once_after_416() {
    let coordinator = FakeCoordinator::start(vec![
        answer(416).header("Range", "0-20"),
        answer(202)
            .header("Range", "0-23")
            .header("Job-Status", "canceling"),
    ])
    .await;
    let outcome = append_trace(&coordinator.client(), 0, b"abc")
        .await
        .expect("appended after resync");
    assert_eq!(outcome, appended(23, "canceling", false));
    let ranges: Vec<String> = coordinator
        .requests()
        .iter()
        .map(|request| request.header("content-range").unwrap_or("").to_owned())
        .collect();
    assert_eq!(ranges, ["0-2", "20-22"]);
}

#[tokio::test]
async fn append_trace_gives_up_after_a_second_416() {
    let coordinator = FakeCoordinator::start(vec![
        answer(416).header("Range", "0-20"),
        answer(416).header("Range", "0-30"),
        answer(416),
    ])
    .await;
    let client = coordinator.client();
    let error = append_trace(&client, 0, b"abc")
        .await
        .expect_err("second 416");
    assert!(
        matches!(error, GitlabError::Unexpected { status: 416, .. }),
        "{error:?}"
    );
    assert_eq!(coordinator.requests().len(), 2);

    let no_range = append_trace(&client, 0, b"abc")
        .await
        .expect_err("416 without Range");
    assert_eq!(no_range.status(), Some(416));
    assert_eq!(coordinator.requests().len(), 3);
}

#[tokio::test]
async fn append_trace_reports_jobs_that_stopped() {
    let coordinator = FakeCoordinator::start(vec![answer(403)
        .header("Job-Status", "canceled")
        .body(r#"{"message":"403 Forbidden - Job is not running"}"#)])
    .await;
    let client = coordinator.client();
    let outcome = append_trace(&client, 42, b"late")
        .await
        .expect("403 is an outcome");
    assert_eq!(outcome, appended(42, "canceled", true));
    // Nothing to send: no request at all.
    let empty = append_trace(&client, 42, b"").await.expect("empty");
    assert_eq!(empty.new_offset, 42);
    assert_eq!(coordinator.requests().len(), 1);
}

#[tokio::test]
async fn read_trace_returns_the_raw_log_with_the_private_token() {
    let log: Vec<u8> = b"\x1b[32;1mRunning\x1b[0;m\r\nsection_end:1:x\r\n\xff\xfe".to_vec();
    let coordinator = FakeCoordinator::start(vec![
        answer(200)
            .header("content-type", "text/plain")
            .body(log.clone()),
        answer(403).body(r#"{"message":"403 Forbidden"}"#),
        answer(503).body("down"),
    ])
    .await;
    let client = coordinator.client();
    let admin = Secret::new(ADMIN_TOKEN);
    assert_eq!(client.read_trace(3, 9, &admin).await.expect("log"), log);
    let forbidden = client.read_trace(3, 9, &admin).await.expect_err("403");
    assert!(
        matches!(forbidden, GitlabError::Forbidden { .. }),
        "{forbidden:?}"
    );
    assert!(client
        .read_trace(3, 9, &admin)
        .await
        .expect_err("503")
        .is_transient());

    let request = &coordinator.requests()[0];
    request.assert_line(Method::GET, "/api/v4/projects/3/jobs/9/trace");
    assert_eq!(request.header("private-token"), Some(ADMIN_TOKEN));
    assert_eq!(request.header("job-token"), None);
}

#[tokio::test]
async fn errors_never_show_the_tokens_servers_echo() {
    let echo = format!("token {RUNNER_TOKEN} / {JOB_TOKEN} / {ADMIN_TOKEN} is wrong");
    let coordinator = FakeCoordinator::start(vec![
        answer(403).body(format!(r#"{{"message":"{echo}"}}"#)),
        answer(500).body(echo.clone()),
        answer(418).body(echo.clone()),
        answer(500).body(echo.clone()),
        answer(404).body(echo.clone()),
        answer(401).body(echo.clone()),
    ])
    .await;
    let client = coordinator.client();
    let job_token = job_token();
    let admin = Secret::new(ADMIN_TOKEN);
    // Each call scrubs the token it sent; the fake echoes all three, so
    // only the sent one is checked per call.
    let errors = [
        (
            request_job(&client, None).await.expect_err("403"),
            RUNNER_TOKEN,
        ),
        (
            request_job(&client, None).await.expect_err("500"),
            RUNNER_TOKEN,
        ),
        (
            client.job_status(&job_token).await.expect_err("418"),
            JOB_TOKEN,
        ),
        (
            client
                .fail_job(1, &job_token, FailureReason::UnknownFailure, None)
                .await
                .expect_err("500"),
            JOB_TOKEN,
        ),
        (
            client
                .append_trace(1, &job_token, 0, b"x")
                .await
                .expect_err("404"),
            JOB_TOKEN,
        ),
        (
            client.read_trace(1, 1, &admin).await.expect_err("401"),
            ADMIN_TOKEN,
        ),
    ];
    for (error, sent) in errors {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(sent), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
    }
}

#[tokio::test]
async fn tokens_unfit_for_headers_are_refused_without_being_shown() {
    let coordinator = FakeCoordinator::start(Vec::new()).await;
    let bad = Secret::new("SECRET\nInjected: header");
    let error = coordinator
        .client()
        .job_status(&bad)
        .await
        .expect_err("refused");
    assert!(matches!(error, GitlabError::Forbidden { .. }), "{error:?}");
    assert_error_hides_secrets(&error);
    assert!(coordinator.requests().is_empty());
}

/// A listener that accepts connections (the kernel does, through the
/// backlog) but never answers.
async fn silent_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

#[tokio::test]
async fn a_silent_coordinator_times_out_as_transient() {
    let (_listener, url) = silent_server().await;
    let client = client_at(&url).with_call_timeout(Duration::from_millis(200));
    let error = request_job_polling(&client, None, Duration::from_millis(200))
        .await
        .expect_err("timeout");
    assert!(
        matches!(&error, GitlabError::Unavailable { status: None, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_error_hides_secrets(&error);

    let error = client.job_status(&job_token()).await.expect_err("timeout");
    assert!(error.is_transient(), "{error:?}");
    assert_error_hides_secrets(&error);
}

#[tokio::test]
async fn a_body_that_never_ends_times_out_as_transient() {
    let (listener, url) = silent_server().await;
    tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            // Headers promise more body than ever comes.
            let head = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"id\":";
            let _ = stream.write_all(head.as_bytes()).await;
            connections.push(stream);
        }
    });
    let error = request_job_polling(&client_at(&url), None, Duration::from_millis(300))
        .await
        .expect_err("timeout");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.status(), None);
}

#[tokio::test]
async fn an_unreachable_coordinator_is_transient() {
    let (listener, url) = silent_server().await;
    drop(listener);
    let error = client_at(&url)
        .job_status(&job_token())
        .await
        .expect_err("refused");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.status(), None);
    assert_error_hides_secrets(&error);
}

#[tokio::test]
async fn redirects_are_reported_not_followed() {
    let elsewhere = FakeCoordinator::start(vec![answer(200).body(r#"{"status":"running"}"#)]).await;
    let location = format!("{}/api/v4/job", elsewhere.url);
    let coordinator = FakeCoordinator::start(vec![answer(302).header("Location", &location)]).await;
    let error = coordinator
        .client()
        .job_status(&job_token())
        .await
        .expect_err("302");
    assert!(
        matches!(&error, GitlabError::Unexpected { status: 302, message, .. } if message.contains(&location)),
        "{error:?}"
    );
    assert!(!error.is_transient());
    // The job token never reached the other host.
    assert!(elsewhere.requests().is_empty());
}
