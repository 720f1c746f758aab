//! The coordinator client: one method per runner API call, each single-shot under a timeout.

use std::time::Duration;

use paas_core::{sanitize, Secret};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::Method;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::GitlabError;
use crate::failure::FailureReason;
use crate::job::{AcquiredJob, JobRequest, JobRequestOutcome};
use crate::range::parse_range_end;

mod probe;
mod rate_limit;
pub use probe::TraceProbe;

/// Timeout of every call except [`CoordinatorClient::request_job`], whose
/// caller chooses (long polls may be held for about a minute).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("paas-runner/", env!("CARGO_PKG_VERSION"));

/// Largest log chunk a caller should pass to
/// [`CoordinatorClient::append_trace`]: gitlab-runner never sends more per
/// PATCH (reference §4), so coordinators and proxies are known to take it.
pub const MAX_TRACE_CHUNK_BYTES: usize = 1024 * 1024;

/// The `info.features` of our job requests.
///
/// The job runs on the job machine under Heptapod Runner with its docker
/// executor, so we claim what a docker-executor gitlab-runner claims for the
/// features that runner supports: the reference's set, plus the flags
/// gitlab-runner sets about its own log and update handling, which the inner
/// runner does as well since it talks to the coordinator itself. Claiming
/// too little is not harmless: Rails fails jobs needing a feature we did not
/// claim (`runner_unsupported`, reference §2.2).
///
/// `two_phase_job_commit` is claimed (reference §2.6): on GitLab >= 18.5 the
/// 201 then leaves the job `pending`, reserved for us, and paas-runner
/// commits it with [`CoordinatorClient::confirm_job`] right after recording
/// it durably. A process killed between the 201 and that record leaves a
/// job that GitLab drops after 2 minutes as `runner_provisioning_timeout`
/// (visible, and retried if `retry:` allows) instead of one running with
/// nobody behind it. Provisioning happens after the commit, so no
/// keep-alives are needed. Older coordinators ignore the flag and answer
/// the commit as a keep-alive.
///
/// Deliberately absent:
///
/// - `cancel_gracefully`: it makes Rails use the `canceling` state, which
///   needs a final PUT from the runner to ever end (reference §6); whether
///   the inner runner version sends it is unknown, and a job canceled before
///   the inner runner starts would then stay `canceling` forever;
/// - `proxy` and `shared` are claimed `false` as the docker executor does;
/// - flags newer than the inner runner (`fallback_cache_keys`,
///   `service_variables`, `job_inputs`, `vault_secrets`, …): unknown
///   support, add them once the inner runner version is pinned.
pub const ADVERTISED_FEATURES: &[(&str, bool)] = &[
    ("variables", true),
    ("image", true),
    ("services", true),
    ("artifacts", true),
    ("cache", true),
    ("shared", false),
    ("upload_multiple_artifacts", true),
    ("upload_raw_artifacts", true),
    ("session", true),
    ("terminal", true),
    ("refspecs", true),
    ("masking", true),
    ("proxy", false),
    ("raw_variables", true),
    ("artifacts_exclude", true),
    ("multi_build_steps", true),
    ("return_exit_code", true),
    ("trace_reset", true),
    ("trace_checksum", true),
    ("trace_size", true),
    ("cancelable", true),
    ("two_phase_job_commit", true),
];

/// A `last_update` value longer than this is not kept: Rails sends a short
/// hex string, and the job request body must stay under Workhorse's 32 KiB.
const MAX_LAST_UPDATE_BYTES: usize = 1024;

/// Server messages quoted in errors are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = paas_core::sanitize::MAX_MESSAGE_CHARS;

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

/// Longest `Job-Status` header value kept (statuses are short words).
const MAX_JOB_STATUS_CHARS: usize = 32;

/// Wait before repeating a PUT answered 202 when the coordinator gives no
/// `X-GitLab-Trace-Update-Interval` (Rails' own first step is 1 s).
const DEFAULT_UPDATE_RETRY: Duration = Duration::from_secs(1);

/// Upper bound on the wait a coordinator may ask for between repeated PUTs;
/// gitlab-runner caps update intervals at 15 min as well.
const MAX_UPDATE_RETRY: Duration = Duration::from_secs(15 * 60);

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

/// What a log append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Where the next append starts: the log length the coordinator
    /// reported, or the offset of the last attempt if nothing was written.
    pub new_offset: u64,
    /// The `Job-Status` header (`running`, `canceling`, `canceled`, …).
    pub job_status: Option<String>,
    /// 403: the job is no longer running (or its log is full, or the token
    /// is refused); nothing was written and nothing more should be.
    pub not_running: bool,
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

    /// `PATCH /api/v4/jobs/:id/trace`: appends `bytes` to the job log at
    /// `offset`.
    ///
    /// When the log on the coordinator is not `offset` bytes long (416), the
    /// bytes are sent once more at the length the coordinator reported, so
    /// they land after whatever is there. Empty `bytes` send nothing. Keep
    /// `bytes` within [`MAX_TRACE_CHUNK_BYTES`].
    pub async fn append_trace(
        &self,
        job_id: u64,
        job_token: &Secret,
        offset: u64,
        bytes: &[u8],
    ) -> Result<AppendOutcome, GitlabError> {
        if bytes.is_empty() {
            return Ok(AppendOutcome {
                new_offset: offset,
                job_status: None,
                not_running: false,
            });
        }
        let url = format!("{}/jobs/{job_id}/trace", self.api_root);
        match self.patch_trace(&url, job_token, offset, bytes).await? {
            PatchReply::Done(outcome) => Ok(outcome),
            PatchReply::LengthMismatch { server_length } => {
                tracing::debug!(
                    job_id,
                    offset,
                    server_length,
                    "job log length differs, appending at the coordinator's length"
                );
                match self
                    .patch_trace(&url, job_token, server_length, bytes)
                    .await?
                {
                    PatchReply::Done(outcome) => Ok(outcome),
                    PatchReply::LengthMismatch { server_length } => Err(GitlabError::Unexpected {
                        url,
                        status: 416,
                        message: format!(
                            "job log length changed again while resynchronising \
                             (now {server_length} bytes)"
                        ),
                    }),
                }
            }
        }
    }

    /// `GET /api/v4/projects/:project_id/jobs/:job_id/trace` with an access
    /// token (scope `read_api` or `api`): the job log as stored, at most its
    /// first [`MAX_TRACE_READ_BYTES`] (enough to see that it grew).
    ///
    /// 401 and 403 give [`GitlabError::Forbidden`] (the token cannot read
    /// that log).
    pub async fn read_trace(
        &self,
        project_id: u64,
        job_id: u64,
        private_token: &Secret,
    ) -> Result<Vec<u8>, GitlabError> {
        let url = format!(
            "{}/projects/{project_id}/jobs/{job_id}/trace",
            self.api_root
        );
        let request = self
            .request(Method::GET, &url)
            // The only call whose answer is not JSON: ask for what it is.
            .header(ACCEPT, "text/plain, */*")
            .header("PRIVATE-TOKEN", sensitive_header(&url, private_token)?);
        let reply = self
            .exchange(request, &url, self.call_timeout, MAX_TRACE_READ_BYTES)
            .await?;
        match reply.status {
            200 => Ok(reply.body),
            401 | 403 => Err(GitlabError::Forbidden {
                message: server_message(&reply.body, &[private_token]),
                url,
            }),
            _ => Err(failure(url, &reply, &[private_token])),
        }
    }

    /// One PATCH of the log; a 416 is handed back for the caller to resync.
    async fn patch_trace(
        &self,
        url: &str,
        job_token: &Secret,
        start: u64,
        bytes: &[u8],
    ) -> Result<PatchReply, GitlabError> {
        let length = bytes.len() as u64;
        // The end is inclusive, as gitlab-runner sends it (reference §4,
        // pitfall 5); `bytes` is never empty here.
        let content_range = format!("{start}-{}", start.saturating_add(length - 1));
        let request = self
            .request(Method::PATCH, url)
            // As gitlab-runner does; without it recent GitLab reportedly
            // parses the body as JSON (UNVERIFIED, reference §16).
            .header(CONTENT_TYPE, "text/plain")
            .header(CONTENT_RANGE, content_range)
            .header("JOB-TOKEN", sensitive_header(url, job_token)?)
            .body(bytes.to_vec());
        let reply = self
            .exchange(request, url, self.call_timeout, MAX_ANSWER_BYTES)
            .await?;
        let job_status = job_status_header(&reply.headers);
        match reply.status {
            202 => {
                let new_offset = match header_text(&reply.headers, "Range")
                    .as_deref()
                    .and_then(parse_range_end)
                {
                    Some(end) => end,
                    // The bytes were written: do not fail (the caller would
                    // write them twice), assume the length Rails computes.
                    None => {
                        tracing::debug!(url, "trace append answer without a usable Range header");
                        start.saturating_add(length)
                    }
                };
                Ok(PatchReply::Done(AppendOutcome {
                    new_offset,
                    job_status,
                    not_running: false,
                }))
            }
            403 => Ok(PatchReply::Done(AppendOutcome {
                new_offset: start,
                job_status,
                not_running: true,
            })),
            416 => match header_text(&reply.headers, "Range")
                .as_deref()
                .and_then(parse_range_end)
            {
                Some(server_length) => Ok(PatchReply::LengthMismatch { server_length }),
                None => Err(GitlabError::Unexpected {
                    url: url.to_owned(),
                    status: 416,
                    message: "range not satisfiable, without a usable Range header".to_owned(),
                }),
            },
            _ => Err(failure(url.to_owned(), &reply, &[job_token])),
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

    /// Sends `request` and reads the answer, within `timeout`: at most
    /// `success_limit` bytes of a 2xx body, at most
    /// [`MAX_ERROR_BODY_BYTES`] of any other; the body is read chunk by
    /// chunk and the rest is never read ([`Reply::truncated`]).
    pub(crate) async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
        success_limit: usize,
    ) -> Result<Reply, GitlabError> {
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let limit = if (200..300).contains(&status) {
                success_limit
            } else {
                MAX_ERROR_BODY_BYTES
            };
            let (body, truncated) = read_bounded(&mut response, limit).await?;
            Ok::<Reply, reqwest::Error>(Reply {
                status,
                headers,
                body,
                truncated,
            })
        };
        // A rate limit's pause is waited out before the call's own time.
        self.rate_limit.wait().await;
        // One deadline for connecting, sending and reading the whole body,
        // whatever timeouts the shared reqwest client has.
        let result = tokio::time::timeout(timeout, exchange).await;
        if let Some(Observer(observer)) = &self.observer {
            let status = match &result {
                Ok(Ok(reply)) => Some(reply.status),
                _ => None,
            };
            observer(endpoint_of(url), status);
        }
        match result {
            Ok(Ok(reply)) => {
                tracing::debug!(url, status = reply.status, "coordinator answered");
                self.rate_limit.note(reply.status, &reply.headers);
                Ok(reply)
            }
            Ok(Err(error)) => Err(GitlabError::Unavailable {
                url: url.to_owned(),
                status: None,
                detail: describe_transport_error(error),
            }),
            Err(_elapsed) => Err(GitlabError::Unavailable {
                url: url.to_owned(),
                status: None,
                detail: format!("no complete answer within {timeout:?}"),
            }),
        }
    }
}

impl CoordinatorClient {
    /// The shared HTTP client (for the runner lifecycle calls of
    /// `runners_api`).
    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.http
    }
}

/// An answer, with at most a bounded prefix of its body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// The body was longer than the limit: `body` is its first bytes only.
    pub(crate) truncated: bool,
}

impl Reply {
    /// A header's value as text, cut to 200 characters (it is quoted in
    /// messages).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(|text| text.chars().take(200).collect())
    }
}

/// Reads at most `limit` bytes of the body, chunk by chunk; whether more
/// was there. The rest is not read (the connection is then dropped).
async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

enum PatchReply {
    Done(AppendOutcome),
    LengthMismatch { server_length: u64 },
}

#[derive(Serialize)]
struct JobRequestBody<'a> {
    token: &'a str,
    // Without it Rails files the request under a `<legacy>` manager.
    #[serde(skip_serializing_if = "str::is_empty")]
    system_id: &'a str,
    // Workhorse only long-polls requests with a non-empty `last_update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_update: Option<&'a str>,
    info: RunnerInfo,
}

#[derive(Serialize)]
struct RunnerInfo {
    name: &'static str,
    version: &'static str,
    revision: &'static str,
    platform: &'static str,
    architecture: &'static str,
    executor: &'static str,
    shell: &'static str,
    features: Features,
}

/// Serialises [`ADVERTISED_FEATURES`] as a JSON object, in order.
struct Features;

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(ADVERTISED_FEATURES.len()))?;
        for (name, enabled) in ADVERTISED_FEATURES {
            map.serialize_entry(name, enabled)?;
        }
        map.end()
    }
}

/// `PUT /jobs/:id` with a state and nothing else.
#[derive(Serialize)]
struct StateBody<'a> {
    token: &'a str,
    state: &'static str,
}

#[derive(Serialize)]
struct FailJobBody<'a> {
    token: &'a str,
    state: &'static str,
    failure_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
}

fn job_request_body(req: &JobRequest<'_>) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&JobRequestBody {
        token: req.token.expose(),
        system_id: req.system_id,
        last_update: req.last_update.filter(|value| !value.is_empty()),
        info: RunnerInfo {
            name: "paas-runner",
            version: env!("CARGO_PKG_VERSION"),
            revision: match option_env!("PAAS_RUNNER_REVISION") {
                Some(revision) => revision,
                None => "unknown",
            },
            // What the job machine runs: Heptapod Runner, docker executor,
            // on linux/amd64.
            platform: "linux",
            architecture: "amd64",
            executor: "docker",
            shell: "bash",
            features: Features,
        },
    })
}

/// A request body that cannot be encoded (for `url`).
fn encode_error(url: &str, error: serde_json::Error) -> GitlabError {
    GitlabError::Decode {
        url: url.to_owned(),
        detail: format!("cannot encode the request body: {error}"),
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

/// A header carrying a token, marked sensitive so that HTTP-level debug
/// output hides it.
pub(crate) fn sensitive_header(url: &str, token: &Secret) -> Result<HeaderValue, GitlabError> {
    let mut value = HeaderValue::from_str(token.expose()).map_err(|_| GitlabError::Forbidden {
        url: url.to_owned(),
        message: "token contains characters not allowed in an http header; not sent".to_owned(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    Some(value.to_owned())
}

/// The statuses `GET /api/v4/job` can answer 200 with are UNVERIFIED beyond
/// `running` (`canceling` presumed, reference §16): anything not known to be
/// final counts as running, so a surprise never ends a job early; the 401
/// that follows the job's end still does.
fn remote_job_status(status: String) -> RemoteJobStatus {
    match status.as_str() {
        "success" | "failed" | "canceled" | "skipped" => RemoteJobStatus::Finished {
            status: Some(status),
        },
        _ => RemoteJobStatus::Running { status },
    }
}

fn update_retry_delay(headers: &HeaderMap) -> Duration {
    header_text(headers, "X-GitLab-Trace-Update-Interval")
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map_or(DEFAULT_UPDATE_RETRY, |seconds| {
            Duration::from_secs(seconds).min(MAX_UPDATE_RETRY)
        })
}

/// "403 Forbidden - Job is not running", or with `canceling` support
/// "… - Job is not processing on runner" (reference §3).
fn says_not_running(message: &str) -> bool {
    message.contains("not running") || message.contains("not processing")
}

/// Statuses gitlab-runner retries (reference §1): the coordinator or a proxy
/// in front of it is overloaded, restarting or rate limiting.
fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || status >= 512
}

/// The error for an answer the endpoint has no specific meaning for.
fn failure(url: String, reply: &Reply, sent_secrets: &[&Secret]) -> GitlabError {
    let mut message = server_message(&reply.body, sent_secrets);
    if (300..400).contains(&reply.status) {
        // Usually http -> https or a moved instance: the operator has to fix
        // the configured url, so say where the coordinator points.
        if let Some(location) = header_text(&reply.headers, "Location") {
            message = format!(
                "redirect to {} not followed; fix the coordinator url",
                sanitize(&location, MAX_MESSAGE_CHARS, sent_secrets)
            );
        }
    }
    if is_retryable_status(reply.status) {
        let detail = match header_text(&reply.headers, "Retry-After") {
            Some(retry_after) => format!(
                "{message} (Retry-After: {})",
                sanitize(&retry_after, 64, sent_secrets)
            ),
            None => message,
        };
        GitlabError::Unavailable {
            url,
            status: Some(reply.status),
            detail,
        }
    } else {
        GitlabError::Unexpected {
            url,
            status: reply.status,
            message,
        }
    }
}

/// The server's explanation: Rails' `{"message": …}` (or `{"error": …}`),
/// else the body text; sanitised (cut, control characters escaped, the
/// tokens we sent scrubbed, see [`paas_core::sanitize`]).
fn server_message(body: &[u8], sent_secrets: &[&Secret]) -> String {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let text = match parsed
        .as_ref()
        .and_then(|json| json.get("message").or(json.get("error")))
    {
        Some(Value::String(text)) => sanitize(text.trim(), MAX_MESSAGE_CHARS, sent_secrets),
        Some(other) => sanitize(&other.to_string(), MAX_MESSAGE_CHARS, sent_secrets),
        None => {
            let text = String::from_utf8_lossy(body);
            sanitize(text.trim(), MAX_MESSAGE_CHARS, sent_secrets)
        }
    };
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    text
}

/// The `Job-Status` header, cut and sanitised (it reaches logs).
fn job_status_header(headers: &HeaderMap) -> Option<String> {
    header_text(headers, "Job-Status").map(|text| sanitize(&text, MAX_JOB_STATUS_CHARS, &[]))
}

/// The cause of a failed exchange, without the URL (given separately).
fn describe_transport_error(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "cannot read the answer"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut detail = kind.to_owned();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_named_from_a_fixed_set() {
        for (url, endpoint) in [
            ("https://gl.example/api/v4/jobs/request", "request_job"),
            (
                "https://gl.example/prefix/api/v4/jobs/12/trace",
                "patch_trace",
            ),
            ("https://gl.example/api/v4/jobs/12", "update_job"),
            ("https://gl.example/api/v4/job", "job_status"),
            ("https://gl.example/api/v4/runners/verify", "verify_runner"),
            (
                "https://gl.example/api/v4/projects/3/jobs/12/trace",
                "read_trace",
            ),
            ("https://gl.example/api/v4/anything/else?x=1", "other"),
            ("https://gl.example/nothing", "other"),
        ] {
            assert_eq!(endpoint_of(url), endpoint, "{url}");
        }
    }

    #[test]
    fn base_urls_are_normalised() {
        let check = |input: &str, expected: &str| {
            let client = CoordinatorClient::new(input, reqwest::Client::new()).expect(input);
            assert_eq!(client.base_url(), expected);
            assert_eq!(client.api_root, format!("{expected}/api/v4"));
        };
        check("https://gitlab.example.com", "https://gitlab.example.com");
        check("https://gitlab.example.com/", "https://gitlab.example.com");
        check("http://127.0.0.1:1234", "http://127.0.0.1:1234");
        check(
            " https://Example.com/gitlab/ ",
            "https://example.com/gitlab",
        );
    }

    #[test]
    fn bad_base_urls_are_refused_without_echoing_credentials() {
        for input in [
            "gitlab.example.com",
            "ftp://gitlab.example.com",
            "https://user:hunter2@gitlab.example.com",
            "https://gitlab.example.com/?private_token=hunter2",
            "https://user:hunter2@[::1",
        ] {
            let error = CoordinatorClient::new(input, reqwest::Client::new()).expect_err(input);
            assert!(matches!(error, GitlabError::InvalidUrl(_)), "{error:?}");
            // Only the credentials case matters here; a query string is
            // refused anyway and shown to help fix the config.
            if input.contains('@') {
                assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
            }
        }
    }

    #[test]
    fn server_messages_are_extracted_scrubbed_and_shortened() {
        let token = Secret::new("glrt-scrubme");
        let check = |body: &str, expected: &str| {
            assert_eq!(server_message(body.as_bytes(), &[&token]), expected);
        };
        check(
            r#"{"message":"403 Forbidden - Job is not running"}"#,
            "403 Forbidden - Job is not running",
        );
        check(r#"{"error":"state is invalid"}"#, "state is invalid");
        check(r#"{"message":{"state":["bad"]}}"#, r#"{"state":["bad"]}"#);
        check("  <html>bad gateway</html>\n", "<html>bad gateway</html>");
        check("", "(empty body)");
        check("token glrt-scrubme is bad", "token [REDACTED] is bad");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let shortened = server_message(long.as_bytes(), &[]);
        assert_eq!(
            shortened,
            format!("{}…[cut]", "é".repeat(MAX_MESSAGE_CHARS))
        );
        check(
            "{\"message\":\"bad\\n2026-01-01 INFO forged \\u001b[31m\"}",
            "bad\\n2026-01-01 INFO forged \\u{1b}[31m",
        );
    }

    #[test]
    fn job_statuses_classify_as_running_unless_final() {
        for status in ["running", "pending", "canceling", "something_new"] {
            assert_eq!(
                remote_job_status(status.to_owned()),
                RemoteJobStatus::Running {
                    status: status.to_owned()
                }
            );
        }
        for status in ["success", "failed", "canceled", "skipped"] {
            assert_eq!(
                remote_job_status(status.to_owned()),
                RemoteJobStatus::Finished {
                    status: Some(status.to_owned())
                }
            );
        }
    }

    #[test]
    fn retryable_statuses_follow_gitlab_runner() {
        for status in [408, 429, 500, 502, 503, 504, 512, 599] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 416, 422, 501, 505, 511] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn job_request_body_is_small() {
        let token = Secret::new("glrt-".to_owned() + &"x".repeat(64));
        let last_update = "f".repeat(MAX_LAST_UPDATE_BYTES);
        let body = job_request_body(&JobRequest {
            token: &token,
            system_id: "s_0123456789ab",
            last_update: Some(&last_update),
        })
        .expect("serialisable");
        // Workhorse refuses bodies over 32 KiB (reference §2.4).
        assert!(body.len() < 4 * 1024, "{} bytes", body.len());
    }
}
