//! The job log calls: append (with the `416` resynchronisation
//! gitlab-runner does) and read.

use paas_core::Secret;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::Method;

use super::reply::{failure, header_text, job_status_header, sensitive_header, server_message};
use super::{CoordinatorClient, MAX_ANSWER_BYTES, MAX_TRACE_READ_BYTES};
use crate::error::GitlabError;
use crate::range::parse_range_end;

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
}

enum PatchReply {
    Done(AppendOutcome),
    LengthMismatch { server_length: u64 },
}
