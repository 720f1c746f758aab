//! The job log as Rails keeps it (`Ci::AppendBuildTraceService`): appends
//! at the stored length only (`Content-Range` start read like Ruby's
//! `to_i`), the plan's size limit, the job token masked in place, and the
//! keep-alive an append gives.

use super::{JobAuthError, State, TOUCH_AFTER};
use crate::coordinator::{Instant, JobStatus, TraceWrite};

/// Plan limit `ci_jobs_trace_size_limit`, default 100 MB (reference §4).
const TRACE_SIZE_LIMIT_BYTES: u64 = 100 * 1024 * 1024;

/// What `PATCH /jobs/:id/trace` gets.
#[derive(Debug)]
pub(crate) enum AppendTrace {
    Refused(JobAuthError),
    MissingContentRange,
    /// The log would pass the size limit: the job was dropped.
    SizeExceeded,
    /// `start` differs from the stored length; nothing written.
    RangeMismatch {
        length: u64,
    },
    Appended {
        length: u64,
        status: JobStatus,
    },
}

impl State {
    /// `PATCH /jobs/:id/trace` (`Ci::AppendBuildTraceService`).
    ///
    /// A job awaiting its commit is `pending`, so the log is refused with
    /// 403 and `Job-Status: pending` like for any job that is not running.
    /// UNVERIFIED: the reference does not say what Rails answers to a PATCH
    /// of a job awaiting its commit; its `authenticate_job!` only lets
    /// running jobs through.
    pub fn append_trace(
        &mut self,
        id: u64,
        token: Option<&str>,
        content_range: Option<&str>,
        body: &[u8],
        now: Instant,
    ) -> AppendTrace {
        self.expire_commit_windows(now);
        if let Err(error) = self.authenticate_job(id, token) {
            return AppendTrace::Refused(error);
        }
        let Some(content_range) = content_range else {
            return AppendTrace::MissingContentRange;
        };
        let (start, end) = parse_content_range(content_range);
        let len = body.len() as u64;
        let end_inclusive =
            len > 0 && end.is_some_and(|end| start.checked_add(len - 1) == Some(end));
        let body_end = start.saturating_add(len);
        if body_end > TRACE_SIZE_LIMIT_BYTES {
            self.finish(
                id,
                JobStatus::Failed,
                Some("trace_size_exceeded".to_string()),
                None,
                now,
            );
            return AppendTrace::SizeExceeded;
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return AppendTrace::Refused(JobAuthError::Forbidden);
        };
        let length = job.record.trace.len() as u64;
        let accepted = start == length;
        if body.is_empty() {
            // A probe (docs/protocol-notes.md §1.1): at the current length
            // `ChunkedIO#write("")` writes no chunk and the truncation
            // returns early, so nothing changes but the answer; counted
            // apart so that records of writes stay the inner runner's.
            job.record.trace_probes += 1;
        } else {
            job.record.trace_writes.push(TraceWrite {
                offset: start,
                len,
                accepted,
                end_inclusive,
            });
        }
        if !accepted {
            return AppendTrace::RangeMismatch { length };
        }
        if !body.is_empty() {
            let masked = mask(body, job.token.as_bytes());
            job.record.trace.extend_from_slice(&masked);
            if job.record.first_trace_at.is_none() {
                job.record.first_trace_at = Some(now);
            }
        }
        // `job.touch if job.needs_touch?` after every accepted append,
        // empty or not (notes §1.1): the 15-minute rule of keep-alives.
        if now.saturating_duration_since(job.updated_at) > TOUCH_AFTER {
            job.updated_at = now;
        }
        AppendTrace::Appended {
            length: job.record.trace.len() as u64,
            status: job.record.status,
        }
    }
}

/// Reads `start-end` as Rails does: `start` with Ruby's `to_i` (leading
/// digits, 0 if none), the end only for the record (Rails ignores it).
fn parse_content_range(value: &str) -> (u64, Option<u64>) {
    let mut parts = value.split('-');
    let start = parts.next().map(ruby_to_u64).unwrap_or(0);
    let end = parts.next().and_then(|text| text.trim().parse().ok());
    (start, end)
}

fn ruby_to_u64(text: &str) -> u64 {
    let digits: String = text
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.is_empty() {
        0
    } else {
        // Too large to be a real offset: never equal to a log length.
        digits.parse().unwrap_or(u64::MAX)
    }
}

/// Rails masks the job token in appended log data with `x` of the same
/// length, so offsets do not move.
fn mask(data: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut masked = data.to_vec();
    if secret.is_empty() || data.len() < secret.len() {
        return masked;
    }
    let mut index = 0;
    while index + secret.len() <= masked.len() {
        if &masked[index..index + secret.len()] == secret {
            masked[index..index + secret.len()].fill(b'x');
            index += secret.len();
        } else {
            index += 1;
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_read_like_rails() {
        assert_eq!(parse_content_range("0-9"), (0, Some(9)));
        assert_eq!(parse_content_range("10-20"), (10, Some(20)));
        assert_eq!(parse_content_range("abc"), (0, None));
        assert_eq!(parse_content_range(" 7-"), (7, None));
        assert_eq!(parse_content_range("-5-10"), (0, Some(5)));
    }

    #[test]
    fn job_token_is_masked_in_place() {
        assert_eq!(mask(b"a glcbt-xy b", b"glcbt-xy"), b"a xxxxxxxx b".to_vec());
        assert_eq!(mask(b"short", b"longer secret"), b"short".to_vec());
    }
}
