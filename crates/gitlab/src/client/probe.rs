//! Probes of a job with its job token alone: an empty `PATCH
//! /api/v4/jobs/:id/trace` that reveals what the inner runner did without
//! writing anything.
//!
//! Evidence (`docs/protocol-notes.md` §1.1, read in GitLab's
//! `lib/api/ci/runner.rb`, `Ci::AppendBuildTraceService` and
//! `Gitlab::Ci::Trace`): `authenticate_job!` runs first, so a job that no
//! longer executes answers 403 with `Job-Status: <final status>` whatever
//! the body; then, for an executing job, a missing `Content-Range` is a 400
//! (no lock taken, nothing logged), and an empty body whose start is the
//! log's current length is a 202 with `Range: 0-<length>` and `Job-Status`,
//! neither the log nor the job changing (no chunk is created, the
//! truncation returns early). A start that differs from the length is a 416
//! with `Range: 0-<length>`: nothing is written either, but GitLab logs a
//! `TraceRangeError` to its error tracking, so such a probe is only made
//! where a 416 is the expected news (the inner runner wrote).
//!
//! Side effects: the runner's `contacted_at` and the runner manager's
//! heartbeat (with our address) are updated, and the call uses the same
//! per-job-token rate limit as the inner runner's own log writes: callers
//! keep probes rare. UNVERIFIED: what a concurrent inner-runner PATCH gets
//! while our probe holds the trace write lease (probably a 500, which
//! gitlab-runner retries).

use paas_core::Secret;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE};
use reqwest::Method;

use super::{
    failure, header_text, sensitive_header, server_message, CoordinatorClient, MAX_ERROR_BODY_BYTES,
};
use crate::error::GitlabError;
use crate::range::parse_range_end;

/// What an empty trace `PATCH` revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceProbe {
    /// 202: the log is `length` bytes long, the length asked about; the job
    /// executes (`job_status` is `running` or `canceling`).
    Unchanged {
        length: u64,
        job_status: Option<String>,
    },
    /// 416: the log is `length` bytes long, not the length asked about:
    /// someone wrote to it (or it was reset).
    Moved { length: u64 },
    /// 400 to a probe without `Content-Range`: the job is still executing.
    Executing,
    /// 403: the job no longer executes. `job_status` is its status when
    /// GitLab sends it (`success`, `failed`, `canceled`, …); `None` for an
    /// erased job, a deleted project or a refused token.
    Ended { job_status: Option<String> },
}

impl CoordinatorClient {
    /// `PATCH /api/v4/jobs/:id/trace` with an empty body and the job token.
    ///
    /// With `at = Some(length)`, `Content-Range: <length>-<length>`: a 202
    /// ([`TraceProbe::Unchanged`]) if the log is that long, a 416
    /// ([`TraceProbe::Moved`]) with the real length otherwise. With `None`,
    /// no `Content-Range`: the cheapest liveness check, a 400
    /// ([`TraceProbe::Executing`]) while the job executes. Either way a
    /// job that ended gives [`TraceProbe::Ended`]. Nothing is ever written.
    pub async fn probe_trace(
        &self,
        job_id: u64,
        job_token: &Secret,
        at: Option<u64>,
    ) -> Result<TraceProbe, GitlabError> {
        let url = format!("{}/jobs/{job_id}/trace", self.api_root);
        let mut request = self
            .request(Method::PATCH, &url)
            .header(CONTENT_TYPE, "text/plain")
            .header("JOB-TOKEN", sensitive_header(&url, job_token)?);
        if let Some(length) = at {
            // Rails reads only the start; the end repeats it (an empty
            // range has no inclusive end).
            request = request.header(CONTENT_RANGE, format!("{length}-{length}"));
        }
        let reply = self
            .exchange(
                request.body(Vec::new()),
                &url,
                self.call_timeout,
                MAX_ERROR_BODY_BYTES,
            )
            .await?;
        let job_status = header_text(&reply.headers, "Job-Status").filter(|text| !text.is_empty());
        let range_end = || {
            header_text(&reply.headers, "Range")
                .as_deref()
                .and_then(parse_range_end)
        };
        match (reply.status, at) {
            (403, _) => Ok(TraceProbe::Ended { job_status }),
            (202, Some(length)) => Ok(match range_end() {
                Some(end) if end != length => TraceProbe::Moved { length: end },
                _ => TraceProbe::Unchanged { length, job_status },
            }),
            (416, Some(_)) => match range_end() {
                Some(length) => Ok(TraceProbe::Moved { length }),
                None => Err(GitlabError::Unexpected {
                    url,
                    status: 416,
                    message: "range not satisfiable, without a usable Range header".to_owned(),
                }),
            },
            (400, None) => {
                let message = server_message(&reply.body, &[job_token]);
                if message.to_ascii_lowercase().contains("content-range") {
                    Ok(TraceProbe::Executing)
                } else {
                    Err(GitlabError::Unexpected {
                        url,
                        status: 400,
                        message,
                    })
                }
            }
            _ => Err(failure(url, &reply, &[job_token])),
        }
    }
}
