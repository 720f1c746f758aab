//! The coordinator client: one method per runner API call, each single-shot under a timeout.
//!
//! `body.rs` holds the request bodies (the job request's runner `info` and
//! [`ADVERTISED_FEATURES`]); `reply.rs` the bounded exchange and how answers
//! become outcomes or [`GitlabError`]s; `trace.rs` the job log calls
//! (append with the `416` resynchronisation, read); `probe.rs` the empty
//! `PATCH` probe; `rate_limit.rs` the pause after a `429`.

use std::time::Duration;

use paas_core::Secret;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::error::GitlabError;
use crate::failure::FailureReason;
use crate::job::{AcquiredJob, JobRequest, JobRequestOutcome};

mod body;
mod probe;
mod rate_limit;
mod reply;
mod trace;
pub use body::ADVERTISED_FEATURES;
pub use probe::TraceProbe;
pub(crate) use reply::{sensitive_header, Reply};
pub use trace::AppendOutcome;

use body::{encode_error, job_request_body, FailJobBody, StateBody};
use reply::{
    failure, header_text, job_status_header, remote_job_status, says_not_running, server_message,
    update_retry_delay,
};

#[cfg(test)]
mod tests;

/// Timeout of every call except [`CoordinatorClient::request_job`], whose
/// caller chooses (long polls may be held for about a minute).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("paas-runner/", env!("CARGO_PKG_VERSION"));

/// Largest log chunk a caller should pass to
/// [`CoordinatorClient::append_trace`]: gitlab-runner never sends more per
/// PATCH (reference §4), so coordinators and proxies are known to take it.
pub const MAX_TRACE_CHUNK_BYTES: usize = 1024 * 1024;

/// A `last_update` value longer than this is not kept: Rails sends a short
/// hex string, and the job request body must stay under Workhorse's 32 KiB.
const MAX_LAST_UPDATE_BYTES: usize = 1024;

/// Largest job payload (the 201 answer of `POST /jobs/request`) taken.
///
/// GitLab's payloads are a few kilobytes to a few hundred (variables,
/// steps, dependencies); 16 MiB leaves room for very large variable sets
/// while bounding what one job can make the service hold in memory and
/// write to its store. A larger payload is never read whole: the job is
/// failed from what its first bytes say ([`JobRequestOutcome::TooLarge`]).
pub const MAX_JOB_PAYLOAD_BYTES: usize = 16 << 20;

/// Largest job log read by [`CoordinatorClient::read_trace`]: a launch
/// check only needs to know that the log grew past a few hundred bytes.
pub const MAX_TRACE_READ_BYTES: usize = 1 << 20;

/// Largest successful answer of the other calls (small JSON objects).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Largest error answer read: a few KiB is plenty for Rails' `{"message":
/// …}` or a proxy's error page; the rest is not read.
pub const MAX_ERROR_BODY_BYTES: usize = 4 << 10;

/// A `reqwest` client builder fit for [`CoordinatorClient`]: no redirects
/// (see [`CoordinatorClient::new`]), a 10 s connect timeout. Add TLS
/// settings (`tls-ca-file` …) before building.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(USER_AGENT)
}

/// Connect timeout of [`http_client_builder`]; each call's own timeout
/// still bounds the whole exchange.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one coordinator (the `url` of a `[[runners]]` entry).
///
/// Cheap to clone: it shares the `reqwest::Client` connection pool.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base_url: String,
    api_root: String,
    call_timeout: Duration,
    observer: Option<Observer>,
    /// After a 429, every call of this client (and its clones) waits.
    rate_limit: rate_limit::RateLimit,
}

/// Called once per request with its endpoint (a fixed name, see
/// [`endpoint_of`]) and the HTTP status of the answer (`None`: no answer).
pub type RequestObserver = std::sync::Arc<dyn Fn(&'static str, Option<u16>) + Send + Sync>;

#[derive(Clone)]
struct Observer(RequestObserver);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// The endpoint a coordinator URL is for, by gitlab-runner's names where it
/// has one (`request_job`, `update_job`, `patch_trace`): a fixed set, for
/// metrics labels, never the URL itself.
pub fn endpoint_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let Some((_, rest)) = path.split_once("/api/v4/") else {
        return "other";
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["jobs", "request"] => "request_job",
        ["jobs", _, "trace"] => "patch_trace",
        ["jobs", _] => "update_job",
        ["job"] => "job_status",
        ["runners", "verify"] => "verify_runner",
        ["projects", .., "trace"] => "read_trace",
        _ => "other",
    }
}

/// Whether a job is still being executed, according to `GET /api/v4/job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteJobStatus {
    /// 200 with a status that is not final (`running`, `pending`,
    /// `canceling`, or one this client does not know: the job is only
    /// considered finished on positive evidence).
    Running { status: String },
    /// 200 with `success`, `failed`, `canceled` or `skipped`, or 401: the
    /// coordinator no longer accepts the job token, which is how it says
    /// that the job is over (reference §7). `status` is `None` for a 401.
    Finished { status: Option<String> },
}

/// What a job update (`PUT /api/v4/jobs/:id`) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// 200: applied.
    Accepted,
    /// 403 because the job is no longer running (`Job-Status` gives its
    /// current status when sent): nothing left to report.
    NotRunning { job_status: Option<String> },
    /// 202: not applied yet (the log is still being flushed); repeat the
    /// same call after `after`.
    Retry { after: Duration },
}

/// What committing a job ([`CoordinatorClient::confirm_job`]) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// 200: the job is running and ours (under two-phase commit it just
    /// became so; without it the call was a keep-alive).
    Confirmed,
    /// The job is not ours to run: the commit window lapsed, the job was
    /// canceled or failed, or it is unknown or refused to us. `status` is
    /// the HTTP status: 400 (the job cannot be made running from its
    /// current state), 403 (not running, or a refused token or unknown job),
    /// 404, 409 (taken by another runner manager), or 200 with a
    /// `Job-Status` of `canceled` or `failed`. `job_status` is the
    /// `Job-Status` header when sent.
    Gone {
        status: u16,
        job_status: Option<String>,
    },
}

impl CoordinatorClient {
    /// A client for the coordinator at `base_url` (e.g.
    /// `https://gitlab.example.com`, possibly with a path prefix); calls go
    /// to `<base_url>/api/v4/…`.
    ///
    /// `http` must not follow redirects: reqwest keeps custom headers such
    /// as `JOB-TOKEN` when it follows one to another host, and turns a
    /// redirected POST into a GET. Build it from [`http_client_builder`],
    /// which also sets a connect timeout; a redirect then comes back as
    /// [`GitlabError::Unexpected`] naming its target.
    pub fn new(base_url: &str, http: reqwest::Client) -> Result<Self, GitlabError> {
        let base_url = normalize_base_url(base_url)?;
        let api_root = format!("{base_url}/api/v4");
        Ok(CoordinatorClient {
            http,
            base_url,
            api_root,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            observer: None,
            rate_limit: rate_limit::RateLimit::default(),
        })
    }

    /// The same client, telling `observer` of every request.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(Observer(observer));
        self
    }

    /// The same client with another timeout for the calls that do not take
    /// one ([`DEFAULT_CALL_TIMEOUT`] otherwise).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The coordinator URL, normalised, without trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /api/v4/jobs/request`: asks for one job.
    ///
    /// `timeout` bounds the whole exchange; with Workhorse long polling a
    /// request may be held for about a minute, so it must be longer than
    /// the coordinator's hold. A 201 whose payload lacks a usable `id` or
    /// `token` gives [`GitlabError::Decode`]; one larger than
    /// [`MAX_JOB_PAYLOAD_BYTES`] is not read further and gives
    /// [`JobRequestOutcome::TooLarge`].
    pub async fn request_job(
        &self,
        req: &JobRequest<'_>,
        timeout: Duration,
    ) -> Result<JobRequestOutcome, GitlabError> {
        let url = format!("{}/jobs/request", self.api_root);
        let runner_token = sensitive_header(&url, req.token)?;
        let body = job_request_body(req).map_err(|error| encode_error(&url, error))?;
        let request = self
            .request(Method::POST, &url)
            .header(CONTENT_TYPE, "application/json")
            // Rails authenticates with the body's `token`; gitlab-runner
            // >= 17.11 sends the header as well (reference §1).
            .header("RUNNER-TOKEN", runner_token)
            .body(body);
        let reply = self
            .exchange(request, &url, timeout, MAX_JOB_PAYLOAD_BYTES)
            .await?;
        match reply.status {
            201 if reply.truncated => {
                // Never taken whole: the id and token come first in GitLab's
                // payload, so the job can still be failed properly.
                let id_and_token = crate::job::id_and_token_of_prefix(&reply.body);
                Ok(JobRequestOutcome::TooLarge {
                    id_and_token,
                    limit_bytes: MAX_JOB_PAYLOAD_BYTES as u64,
                })
            }
            201 => {
                let payload =
                    String::from_utf8(reply.body).map_err(|error| GitlabError::Decode {
                        url: url.clone(),
                        detail: format!(
                            "job payload is not utf-8 (invalid byte at {})",
                            error.utf8_error().valid_up_to()
                        ),
                    })?;
                let job =
                    AcquiredJob::from_payload(payload).map_err(|error| GitlabError::Decode {
                        url: url.clone(),
                        detail: error.to_string(),
                    })?;
                Ok(JobRequestOutcome::Job(job))
            }
            204 => {
                let last_update = header_text(&reply.headers, "X-GitLab-Last-Update")
                    .filter(|value| !value.is_empty() && value.len() <= MAX_LAST_UPDATE_BYTES);
                Ok(JobRequestOutcome::NoJob { last_update })
            }
            409 => Ok(JobRequestOutcome::Conflict),
            // UNVERIFIED (reference §16): "Runner is orphaned" comes as 403
            // on some versions and 422 on others; both are not transient,
            // 422 just lands in `Unexpected`.
            403 => Err(GitlabError::Forbidden {
                message: server_message(&reply.body, &[req.token]),
                url,
            }),
            _ => Err(failure(url, &reply, &[req.token])),
        }
    }

    /// `GET /api/v4/job` with the job token: is the job still executing?
    pub async fn job_status(&self, job_token: &Secret) -> Result<RemoteJobStatus, GitlabError> {
        let url = format!("{}/job", self.api_root);
        // The token goes in the `JOB-TOKEN` header only, as gitlab-runner
        // sends it (GitLab also reads `job_token`/`token` parameters, but a
        // token in a URL ends up in proxies' access logs).
        let request = self
            .request(Method::GET, &url)
            .header("JOB-TOKEN", sensitive_header(&url, job_token)?);
        let reply = self
            .exchange(request, &url, self.call_timeout, MAX_ANSWER_BYTES)
            .await?;
        match reply.status {
            200 => {
                let status = serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|job| job.get("status")?.as_str().map(str::to_owned))
                    .ok_or_else(|| GitlabError::Decode {
                        url: url.clone(),
                        detail: "no string `status` in the job".to_owned(),
                    })?;
                Ok(remote_job_status(status))
            }
            // Also what an unknown token gets: the caller only asks about
            // jobs it acquired, whose tokens were valid (reference §7).
            401 => Ok(RemoteJobStatus::Finished { status: None }),
            _ => Err(failure(url, &reply, &[job_token])),
        }
    }

    /// `PUT /api/v4/jobs/:id {token, state: "failed", failure_reason,
    /// exit_code}`: reports the job failed.
    ///
    /// `reason` is sent as given: map it with
    /// [`FailureReason::accepted_by`] first. `exit_code` is omitted when
    /// `None`. A 403 saying the job is not running is
    /// [`UpdateOutcome::NotRunning`]; any other 403 (unknown job, refused
    /// token, deleted project) is [`GitlabError::Forbidden`].
    pub async fn fail_job(
        &self,
        job_id: u64,
        job_token: &Secret,
        reason: FailureReason,
        exit_code: Option<i32>,
    ) -> Result<UpdateOutcome, GitlabError> {
        let body = FailJobBody {
            token: job_token.expose(),
            state: "failed",
            failure_reason: reason.as_str(),
            exit_code,
        };
        let (url, reply) = self.put_job(job_id, job_token, &body).await?;
        match reply.status {
            200 => Ok(UpdateOutcome::Accepted),
            // A 412 ("trace validation failed") is left to `Unexpected`: no
            // current Rails path sends it and we send no checksum
            // (UNVERIFIED for old versions, reference §16).
            202 => Ok(UpdateOutcome::Retry {
                after: update_retry_delay(&reply.headers),
            }),
            403 => {
                let job_status = job_status_header(&reply.headers);
                let message = server_message(&reply.body, &[job_token]);
                if job_status.is_some() || says_not_running(&message) {
                    Ok(UpdateOutcome::NotRunning { job_status })
                } else {
                    Err(GitlabError::Forbidden { url, message })
                }
            }
            _ => Err(failure(url, &reply, &[job_token])),
        }
    }

    /// PUT /api/v4/jobs/:id {token, state:"running"}: commit a job taken under two-phase commit
    /// (a harmless keep-alive on coordinators without it).
    ///
    /// Call it once the job is recorded durably, before acting on it
    /// (reference §2.6). [`ConfirmOutcome::Gone`] means the job must not be
    /// run; transient failures (timeouts, 408, 429, 5xx) are
    /// [`GitlabError::Unavailable`] and may be retried within the commit
    /// window. A `Job-Status: canceling` on a 200 is still
    /// [`ConfirmOutcome::Confirmed`]: the job is ours and needs its final
    /// update (we do not claim `cancel_gracefully`, so Rails should not use
    /// that state).
    pub async fn confirm_job(
        &self,
        job_id: u64,
        job_token: &Secret,
    ) -> Result<ConfirmOutcome, GitlabError> {
        let body = StateBody {
            token: job_token.expose(),
            state: "running",
        };
        let (url, reply) = self.put_job(job_id, job_token, &body).await?;
        let job_status = job_status_header(&reply.headers).filter(|text| !text.is_empty());
        match reply.status {
            200 => match job_status.as_deref() {
                // As gitlab-runner reads PUT answers (reference §3).
                Some("canceled" | "failed") => Ok(ConfirmOutcome::Gone {
                    status: 200,
                    job_status,
                }),
                _ => Ok(ConfirmOutcome::Confirmed),
            },
            // 400: the coordinator will not make the job running from its
            // current state (which states lead there is UNVERIFIED; a lapsed
            // reservation is one candidate); 403: not running any more, or
            // the token or job is refused; 404: the job is gone (proxies,
            // routing); 409: another runner manager has it (reference §3,
            // §2.6).
            400 | 403 | 404 | 409 => {
                tracing::debug!(
                    job_id,
                    status = reply.status,
                    job_status = job_status.as_deref().unwrap_or(""),
                    message = %server_message(&reply.body, &[job_token]),
                    "job commit refused"
                );
                Ok(ConfirmOutcome::Gone {
                    status: reply.status,
                    job_status,
                })
            }
            _ => Err(failure(url, &reply, &[job_token])),
        }
    }

    /// `PUT /api/v4/jobs/:id` with `body` as JSON and the job token, as
    /// the job updates send it: the URL (for errors) and the answer.
    async fn put_job(
        &self,
        job_id: u64,
        job_token: &Secret,
        body: &impl Serialize,
    ) -> Result<(String, Reply), GitlabError> {
        let url = format!("{}/jobs/{job_id}", self.api_root);
        let body = serde_json::to_vec(body).map_err(|error| encode_error(&url, error))?;
        let request = self
            .request(Method::PUT, &url)
            .header(CONTENT_TYPE, "application/json")
            .header("JOB-TOKEN", sensitive_header(&url, job_token)?)
            .body(body);
        let reply = self
            .exchange(request, &url, self.call_timeout, MAX_ANSWER_BYTES)
            .await?;
        Ok((url, reply))
    }

    /// A request with the headers every call sends.
    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(reqwest::header::USER_AGENT, USER_AGENT)
            .header(ACCEPT, "application/json")
    }
}

impl CoordinatorClient {
    /// The shared HTTP client (for the runner lifecycle calls of
    /// `runners_api`).
    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.http
    }
}

fn normalize_base_url(input: &str) -> Result<String, GitlabError> {
    let input = input.trim();
    // A URL with credentials must not be echoed back into logs.
    let shown = if input.contains('@') {
        "<url with credentials>".to_owned()
    } else {
        format!("`{input}`")
    };
    let parsed = url::Url::parse(input)
        .map_err(|error| GitlabError::InvalidUrl(format!("{shown}: {error}")))?;
    let problem = if !matches!(parsed.scheme(), "http" | "https") {
        Some("scheme must be http or https")
    } else if parsed.host().is_none() {
        Some("no host")
    } else if !parsed.username().is_empty() || parsed.password().is_some() {
        Some("credentials in the url are not supported")
    } else if parsed.query().is_some() || parsed.fragment().is_some() {
        Some("query and fragment are not allowed")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(GitlabError::InvalidUrl(format!("{shown}: {problem}"))),
        None => Ok(parsed.as_str().trim_end_matches('/').to_owned()),
    }
}
