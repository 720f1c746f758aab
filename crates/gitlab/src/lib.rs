//! Async client of the GitLab/Heptapod runner API, for a dispatcher that acquires jobs and hands them to other machines.
//!
//! Every call is single-shot: it sends one request (two for the documented
//! 416 resynchronisation of [`CoordinatorClient::append_trace`]) under a
//! timeout and classifies the result. Retry policy belongs to the caller,
//! guided by [`GitlabError::is_transient`].
//!
//! Tokens travel only in headers or JSON bodies, never in URLs, so URLs can
//! appear in errors and logs; error messages quoting server bodies are
//! scrubbed of the tokens sent with the request.

mod client;
mod error;
mod failure;
mod job;
mod range;
mod runners_api;

pub use client::{endpoint_of, RequestObserver};
pub use client::{
    http_client_builder, AppendOutcome, ConfirmOutcome, CoordinatorClient, RemoteJobStatus,
    TraceProbe, UpdateOutcome, ADVERTISED_FEATURES, DEFAULT_CALL_TIMEOUT, MAX_ERROR_BODY_BYTES,
    MAX_JOB_PAYLOAD_BYTES, MAX_TRACE_CHUNK_BYTES, MAX_TRACE_READ_BYTES, USER_AGENT,
};
pub use error::GitlabError;
pub use failure::FailureReason;
pub use job::{
    id_and_token_of_prefix, AcquiredJob, JobRequest, JobRequestOutcome, JobVariable, PayloadError,
};
pub use range::parse_range_end;
pub use runners_api::{
    is_created_runner_token, NewRunner, RunnerSettings, TokenUser, Unregistered, VerifiedRunner,
    MAX_ANSWER_BYTES,
};
