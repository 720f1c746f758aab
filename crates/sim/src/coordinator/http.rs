//! HTTP face of the coordinator simulator: a front proxy that injects
//! faults and latency, Workhorse's long polling of `/jobs/request`, and the
//! Rails endpoints, each mapping [`State`](super::state::State) outcomes to
//! the statuses, headers and bodies of reference §2–§8.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::payload::{job_entity, job_payload, Site};
use super::state::{AppendTrace, JobAuthError, JobUpdate, RequestJob, RequestKind, UpdateJob};
use super::{CoordinatorSim, Instant, JobSpec, JobStatus};

mod lifecycle;

/// Workhorse reads at most this much of a job request (`maxRegisterBodySize`).
const MAX_JOB_REQUEST_BYTES: usize = 32 * 1024;

/// Seconds GitLab asks runners to wait between log updates while someone
/// watches the job (reference §4). The simulator always claims a watcher so
/// runners report often; a real instance says 60 otherwise.
const TRACE_UPDATE_INTERVAL_SECS: &str = "3";

const JOB_STATUS: HeaderName = HeaderName::from_static("job-status");
const LAST_UPDATE: HeaderName = HeaderName::from_static("x-gitlab-last-update");
const BUILDS_POLLING: HeaderName = HeaderName::from_static("gitlab-ci-builds-polling");
const TRACE_UPDATE_INTERVAL: HeaderName = HeaderName::from_static("x-gitlab-trace-update-interval");
const JOB_TOKEN: HeaderName = HeaderName::from_static("job-token");
const PRIVATE_TOKEN: HeaderName = HeaderName::from_static("private-token");

pub(super) fn router(sim: CoordinatorSim) -> Router {
    let api = Router::new()
        .route("/api/v4/jobs/request", post(request_job))
        .route("/api/v4/jobs/{id}", put(update_job))
        .route("/api/v4/jobs/{id}/trace", patch(append_trace))
        .route("/api/v4/job", get(current_job))
        .route(
            "/api/v4/runners",
            post(lifecycle::register).delete(lifecycle::delete),
        )
        .route("/api/v4/runners/verify", post(lifecycle::verify))
        .route(
            "/api/v4/runners/managers",
            axum::routing::delete(lifecycle::delete_manager),
        )
        .route("/api/v4/user/runners", post(lifecycle::create))
        .route("/api/v4/user", get(lifecycle::current_user))
        .route(
            "/api/v4/projects/{project_id}/jobs/{job_id}/trace",
            get(project_job_trace),
        )
        .route(
            "/api/v4/projects/{project_id}/jobs/{job_id}/cancel",
            post(project_job_cancel),
        )
        .layer(middleware::from_fn_with_state(sim.clone(), front_proxy));
    let control = Router::new()
        .route("/sim/jobs", get(list_jobs).post(create_job))
        .route("/sim/jobs/{id}/cancel", post(cancel_job))
        .route("/sim/stats", get(stats))
        .route("/sim/runners", get(lifecycle::list));
    api.merge(control).with_state(sim)
}

/// What sits in front of GitLab: counts requests, fails some (502/503 as a
/// proxy that cannot reach GitLab would), delays all.
async fn front_proxy(State(sim): State<CoordinatorSim>, request: Request, next: Next) -> Response {
    let is_job_request = request.uri().path() == "/api/v4/jobs/request";
    let kind = request_kind(&request, is_job_request);
    let faults = &sim.inner.config.faults;
    let rate = if is_job_request {
        faults.request_job_unavailable_rate
    } else {
        faults.api_error_rate
    };
    let token_in_url = request.uri().query().is_some_and(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(name, _)| matches!(name.as_ref(), "token" | "job_token" | "private_token"))
    });
    let fault = {
        let mut state = sim.lock();
        state.count_request(kind);
        if token_in_url {
            state.count_token_in_url();
        }
        state.draw_fault(rate)
    };
    sim.notify_changed();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    match fault {
        Some(502) => plain(StatusCode::BAD_GATEWAY, "502 Bad Gateway"),
        Some(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable"),
        None => next.run(request).await,
    }
}

/// Sorts a request for the counters: inner runners are told apart by their
/// `User-Agent` (gitlab-runner's, `gitlab-runner <version> (…)`), which is
/// how an operator would tell them apart in GitLab's logs too.
fn request_kind(request: &Request, is_job_request: bool) -> RequestKind {
    let from_inner_runner = request
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|agent| agent.as_bytes().starts_with(b"gitlab-runner "));
    let path = request.uri().path();
    let is_job_update = request.method() == axum::http::Method::PUT
        && path
            .strip_prefix("/api/v4/jobs/")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit()));
    if is_job_request {
        RequestKind::JobRequest
    } else if from_inner_runner {
        RequestKind::InnerRunner
    } else if is_job_update {
        RequestKind::JobUpdate
    } else {
        RequestKind::Watch
    }
}

// ---- POST /api/v4/jobs/request -------------------------------------------

async fn request_job(
    State(sim): State<CoordinatorSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let long_poll = sim.inner.config.long_poll;
    // Workhorse's handler is skipped entirely when the duration is zero.
    if long_poll.is_zero() {
        return rails_request_job(&sim, &body);
    }
    let mut response = workhorse_request_job(&sim, &headers, &body, long_poll).await;
    response
        .headers_mut()
        .insert(BUILDS_POLLING, HeaderValue::from_static("yes"));
    response
}

/// The fields Workhorse reads from a job request.
#[derive(Deserialize)]
struct WorkhorseRunnerRequest {
    #[serde(default)]
    token: String,
    #[serde(default)]
    last_update: String,
}

/// Workhorse's `builds.RegisterHandler`.
async fn workhorse_request_job(
    sim: &CoordinatorSim,
    headers: &HeaderMap,
    body: &Bytes,
    long_poll: Duration,
) -> Response {
    if body.len() > MAX_JOB_REQUEST_BYTES {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    if !is_json(headers) {
        return rails_request_job(sim, body);
    }
    let Ok(request) = serde_json::from_slice::<WorkhorseRunnerRequest>(body) else {
        return rails_request_job(sim, body);
    };
    if request.token.is_empty() || request.last_update.is_empty() {
        return rails_request_job(sim, body);
    }
    if sim.lock().queue_version(&request.token) != request.last_update {
        // Changed before the watch started: Rails decides.
        return rails_request_job(sim, body);
    }
    hold_until_queue_changes(sim, &request.token, &request.last_update, long_poll).await;
    // Whether the queue changed or the hold ended, Workhorse answers 204
    // itself, without X-GitLab-Last-Update: a new job costs the runner one
    // more request (reference §2.4, pitfall 2).
    StatusCode::NO_CONTENT.into_response()
}

/// Waits until the runner's queue version differs from `last_update`, the
/// hold passes, or the simulator shuts down.
async fn hold_until_queue_changes(
    sim: &CoordinatorSim,
    runner_token: &str,
    last_update: &str,
    long_poll: Duration,
) {
    let _held = HeldPoll::start(sim);
    let deadline = Instant::now() + long_poll;
    let mut shutdown = sim.inner.shutdown.subscribe();
    loop {
        let ticked = sim.inner.queue_ticked.notified();
        tokio::pin!(ticked);
        // Register before comparing, so a tick in between is not lost.
        ticked.as_mut().enable();
        if sim.lock().queue_version(runner_token) != last_update {
            return;
        }
        tokio::select! {
            _ = &mut ticked => {}
            _ = tokio::time::sleep_until(deadline) => return,
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Counts a held long poll for as long as it is held, including when the
/// client goes away and the handler is dropped.
struct HeldPoll {
    sim: CoordinatorSim,
}

impl HeldPoll {
    fn start(sim: &CoordinatorSim) -> HeldPoll {
        sim.lock().long_poll_started();
        sim.notify_changed();
        HeldPoll { sim: sim.clone() }
    }
}

impl Drop for HeldPoll {
    fn drop(&mut self) {
        self.sim.lock().long_poll_ended();
        self.sim.notify_changed();
    }
}

/// The job request body as Rails declares it (only what it uses here; of
/// the runner's `info`, only `features.two_phase_job_commit` is read).
#[derive(Deserialize)]
struct JobRequestBody {
    token: Option<String>,
    last_update: Option<String>,
    /// The runner manager the request is filed under.
    #[serde(default)]
    system_id: Option<String>,
    /// Read leniently: whatever its shape, only a literal `true` at
    /// `features.two_phase_job_commit` counts.
    #[serde(default)]
    info: Option<serde_json::Value>,
}

impl JobRequestBody {
    fn advertises_two_phase_commit(&self) -> bool {
        self.info
            .as_ref()
            .and_then(|info| info.get("features")?.get("two_phase_job_commit"))
            == Some(&serde_json::Value::Bool(true))
    }
}

/// Rails' `POST /api/v4/jobs/request`. A runner advertising
/// `two_phase_job_commit`, with [`two_phase_commit`] on, gets a job that
/// stays pending until it commits it (reference §2.6).
///
/// [`two_phase_commit`]: super::CoordinatorConfig::two_phase_commit
fn rails_request_job(sim: &CoordinatorSim, body: &[u8]) -> Response {
    let request: JobRequestBody = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(_) => return grape_error("message body does not match declared format"),
    };
    let two_phase = sim.inner.config.two_phase_commit && request.advertises_two_phase_commit();
    let Some(runner_token) = request.token else {
        return grape_error("token is missing");
    };
    let now = Instant::now();
    let response = {
        let mut state = sim.lock();
        state.touch_runner_manager(&runner_token, request.system_id.as_deref());
        match state.request_job(
            &runner_token,
            request.last_update.as_deref(),
            two_phase,
            now,
        ) {
            RequestJob::Forbidden => message(StatusCode::FORBIDDEN, "403 Forbidden"),
            RequestJob::UpToDate { version } | RequestJob::NoJob { version } => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                if let Ok(value) = HeaderValue::from_str(&version) {
                    response.headers_mut().insert(LAST_UPDATE, value);
                }
                response
            }
            RequestJob::Assigned {
                job_id,
                queue_size,
                queue_depth,
            } => match state.job(job_id) {
                Some(job) => {
                    tracing::debug!(job_id, two_phase, "job assigned");
                    let payload = job_payload(&site(sim), job, now, queue_size, queue_depth);
                    (StatusCode::CREATED, Json(payload)).into_response()
                }
                None => message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error",
                ),
            },
        }
    };
    sim.notify_changed();
    response
}

// ---- PUT /api/v4/jobs/:id ------------------------------------------------

#[derive(Deserialize)]
struct UpdateJobBody {
    token: Option<String>,
    state: Option<String>,
    failure_reason: Option<String>,
    exit_code: Option<i32>,
    // `output{checksum, bytesize}` and `checksum` are accepted but only
    // matter for the live-trace 202 path, which is not simulated.
}

async fn update_job(
    State(sim): State<CoordinatorSim>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Response {
    let request: UpdateJobBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => return grape_error("message body does not match declared format"),
    };
    let Some(token) = request.token else {
        return grape_error("token is missing");
    };
    let update = JobUpdate {
        state: request.state,
        failure_reason: request.failure_reason,
        exit_code: request.exit_code,
    };
    let outcome = sim
        .lock()
        .update_job(id, Some(&token), update, Instant::now());
    sim.notify_changed();
    match outcome {
        UpdateJob::Refused(error) => refused(error),
        UpdateJob::BadState => status_body(StatusCode::BAD_REQUEST),
        UpdateJob::Applied(status) => {
            let mut response = status_body(StatusCode::OK);
            response
                .headers_mut()
                .insert(JOB_STATUS, HeaderValue::from_static(status.as_str()));
            response
        }
    }
}

// ---- PATCH /api/v4/jobs/:id/trace ----------------------------------------

async fn append_trace(
    State(sim): State<CoordinatorSim>,
    Path(id): Path<u64>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Rails reads the `token` param first, then the JOB-TOKEN header.
    let token = query
        .get("token")
        .cloned()
        .or_else(|| header_text(&headers, &JOB_TOKEN));
    let content_range = header_text(&headers, &header::CONTENT_RANGE);
    let outcome = sim.lock().append_trace(
        id,
        token.as_deref(),
        content_range.as_deref(),
        &body,
        Instant::now(),
    );
    sim.notify_changed();
    match outcome {
        AppendTrace::Refused(error) => refused(error),
        AppendTrace::MissingContentRange => {
            message(StatusCode::BAD_REQUEST, "400 Missing header Content-Range")
        }
        AppendTrace::SizeExceeded => message(
            StatusCode::FORBIDDEN,
            "403 Forbidden - Log size limit exceeded",
        ),
        AppendTrace::RangeMismatch { length } => {
            let mut response = message(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "416 Range Not Satisfiable",
            );
            insert_range(&mut response, length);
            response
        }
        AppendTrace::Appended { length, status } => {
            let mut response = StatusCode::ACCEPTED.into_response();
            insert_range(&mut response, length);
            let headers = response.headers_mut();
            headers.insert(JOB_STATUS, HeaderValue::from_static(status.as_str()));
            headers.insert(
                TRACE_UPDATE_INTERVAL,
                HeaderValue::from_static(TRACE_UPDATE_INTERVAL_SECS),
            );
            response
        }
    }
}

// ---- GET /api/v4/job -----------------------------------------------------

async fn current_job(
    State(sim): State<CoordinatorSim>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = header_text(&headers, &JOB_TOKEN)
        .or_else(|| query.get("job_token").cloned())
        .or_else(|| query.get("token").cloned());
    let Some(token) = token else {
        if admin_token(&headers, &query).is_some() {
            return message(StatusCode::NOT_FOUND, "404 Job Not Found");
        }
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let state = sim.lock();
    // Only a running job answers; the exact status set is UNVERIFIED
    // (`canceling` presumably too, which is not simulated). A job awaiting
    // its two-phase commit is pending: 401 (reference §7).
    match state.running_job_by_token(&token) {
        Some(job) => Json(job_entity(&site(&sim), job)).into_response(),
        None => message(StatusCode::UNAUTHORIZED, "401 Unauthorized"),
    }
}

// ---- project job API (PRIVATE-TOKEN) --------------------------------------

async fn project_job_trace(
    State(sim): State<CoordinatorSim>,
    Path((project_id, job_id)): Path<(u64, u64)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if admin_token(&headers, &query).as_deref() != Some(sim.inner.config.admin_token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let state = sim.lock();
    match state
        .job(job_id)
        .filter(|job| job.spec.project_id == project_id)
    {
        Some(job) => (
            [(header::CONTENT_TYPE, "text/plain")],
            Body::from(job.record.trace.clone()),
        )
            .into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

async fn project_job_cancel(
    State(sim): State<CoordinatorSim>,
    Path((project_id, job_id)): Path<(u64, u64)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if admin_token(&headers, &query).as_deref() != Some(sim.inner.config.admin_token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let response = {
        let mut state = sim.lock();
        let belongs = state
            .job(job_id)
            .is_some_and(|job| job.spec.project_id == project_id);
        if !belongs {
            return message(StatusCode::NOT_FOUND, "404 Not found");
        }
        // Canceling a finished job changes nothing and still answers with
        // the entity, as `Ci::Build#cancel` is a no-op then.
        state.cancel(job_id, Instant::now());
        match state.job(job_id) {
            Some(job) => (StatusCode::CREATED, Json(job_entity(&site(&sim), job))).into_response(),
            None => message(StatusCode::NOT_FOUND, "404 Not found"),
        }
    };
    sim.notify_changed();
    response
}

// ---- control endpoints ---------------------------------------------------

async fn list_jobs(State(sim): State<CoordinatorSim>) -> Response {
    Json(sim.snapshots()).into_response()
}

async fn stats(State(sim): State<CoordinatorSim>) -> Response {
    Json(sim.stats()).into_response()
}

async fn create_job(State(sim): State<CoordinatorSim>, body: Bytes) -> Response {
    match serde_json::from_slice::<JobSpec>(&body) {
        Ok(spec) => {
            let id = sim.enqueue(spec);
            (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
        }
        Err(error) => message(
            StatusCode::BAD_REQUEST,
            &format!("400 Bad request - {error}"),
        ),
    }
}

async fn cancel_job(State(sim): State<CoordinatorSim>, Path(id): Path<u64>) -> Response {
    sim.cancel(id);
    match sim.job(id) {
        Some(job) => Json(json!({ "id": id, "status": job.status })).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

// ---- helpers -------------------------------------------------------------

fn site(sim: &CoordinatorSim) -> Site<'_> {
    Site {
        base_url: &sim.inner.url,
        started: sim.inner.started,
        started_wall: sim.inner.started_wall,
    }
}

/// Rails' error body: `{"message": "<code> <text>"}`.
fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

/// Grape's parameter validation error: 400 `{"error": "..."}`.
fn grape_error(text: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": text }))).into_response()
}

/// `PUT /jobs/:id` answers with the status number as its body.
fn status_body(status: StatusCode) -> Response {
    (status, status.as_u16().to_string()).into_response()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// Rails' answers when `authenticate_job!` refuses.
fn refused(error: JobAuthError) -> Response {
    match error {
        JobAuthError::Forbidden => message(StatusCode::FORBIDDEN, "403 Forbidden"),
        JobAuthError::NotRunning(status) => job_not_running(status),
    }
}

fn job_not_running(status: JobStatus) -> Response {
    let mut response = message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running");
    response
        .headers_mut()
        .insert(JOB_STATUS, HeaderValue::from_static(status.as_str()));
    response
}

fn insert_range(response: &mut Response, length: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("0-{length}")) {
        response.headers_mut().insert(header::RANGE, value);
    }
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// A personal access token: `PRIVATE-TOKEN`, `Authorization: Bearer` or the
/// `private_token` param.
fn admin_token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    header_text(headers, &PRIVATE_TOKEN)
        .or_else(|| {
            header_text(headers, &header::AUTHORIZATION)
                .and_then(|value| value.strip_prefix("Bearer ").map(str::to_string))
        })
        .or_else(|| query.get("private_token").cloned())
}

/// Workhorse's `helper.IsContentType("application/json", …)`: the media
/// type, parameters ignored.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}
