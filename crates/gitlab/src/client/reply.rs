//! One bounded exchange with the coordinator, and how its answers become
//! outcomes or [`GitlabError`]s (server messages sanitised, statuses
//! classified as transient or not).

use std::time::Duration;

use paas_core::{sanitize, Secret};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::{endpoint_of, CoordinatorClient, Observer, RemoteJobStatus, MAX_ERROR_BODY_BYTES};
use crate::error::GitlabError;

/// Server messages quoted in errors are cut to this many characters.
pub(super) const MAX_MESSAGE_CHARS: usize = paas_core::sanitize::MAX_MESSAGE_CHARS;

/// Longest `Job-Status` header value kept (statuses are short words).
const MAX_JOB_STATUS_CHARS: usize = 32;

/// Wait before repeating a PUT answered 202 when the coordinator gives no
/// `X-GitLab-Trace-Update-Interval` (Rails' own first step is 1 s).
const DEFAULT_UPDATE_RETRY: Duration = Duration::from_secs(1);

/// Upper bound on the wait a coordinator may ask for between repeated PUTs;
/// gitlab-runner caps update intervals at 15 min as well.
const MAX_UPDATE_RETRY: Duration = Duration::from_secs(15 * 60);

impl CoordinatorClient {
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

pub(super) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    Some(value.to_owned())
}

/// The statuses `GET /api/v4/job` can answer 200 with are UNVERIFIED beyond
/// `running` (`canceling` presumed, reference §16): anything not known to be
/// final counts as running, so a surprise never ends a job early; the 401
/// that follows the job's end still does.
pub(super) fn remote_job_status(status: String) -> RemoteJobStatus {
    match status.as_str() {
        "success" | "failed" | "canceled" | "skipped" => RemoteJobStatus::Finished {
            status: Some(status),
        },
        _ => RemoteJobStatus::Running { status },
    }
}

pub(super) fn update_retry_delay(headers: &HeaderMap) -> Duration {
    header_text(headers, "X-GitLab-Trace-Update-Interval")
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map_or(DEFAULT_UPDATE_RETRY, |seconds| {
            Duration::from_secs(seconds).min(MAX_UPDATE_RETRY)
        })
}

/// "403 Forbidden - Job is not running", or with `canceling` support
/// "… - Job is not processing on runner" (reference §3).
pub(super) fn says_not_running(message: &str) -> bool {
    message.contains("not running") || message.contains("not processing")
}

/// Statuses gitlab-runner retries (reference §1): the coordinator or a proxy
/// in front of it is overloaded, restarting or rate limiting.
pub(super) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || status >= 512
}

/// The error for an answer the endpoint has no specific meaning for.
pub(super) fn failure(url: String, reply: &Reply, sent_secrets: &[&Secret]) -> GitlabError {
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
pub(super) fn server_message(body: &[u8], sent_secrets: &[&Secret]) -> String {
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
pub(super) fn job_status_header(headers: &HeaderMap) -> Option<String> {
    header_text(headers, "Job-Status").map(|text| sanitize(&text, MAX_JOB_STATUS_CHARS, &[]))
}

/// The cause of a failed exchange, without the URL (given separately).
pub(super) fn describe_transport_error(error: reqwest::Error) -> String {
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
