//! Clever Cloud for paas-runner: the API client, the build context of a job and its deployment by git push.
//!
//! - [`api`]: one organisation's applications and the public catalogue
//!   (flavors, Docker offer), single-shot calls with typed errors;
//! - [`build_context`]: the files that make a job's VM run that job;
//! - [`git_push`]: a minimal git smart-HTTP client that pushes those files
//!   to an application's deployment repository, once;
//! - [`provider`]: Clever Cloud as a `paas_provider::Provider`.

pub mod api;
pub mod build_context;
pub mod git_push;
pub mod provider;

/// Describes a reqwest error for a message: its chain of causes, without
/// the URL (which names hosts and ids but serves no one in a job log), and
/// whether it was a timeout.
pub(crate) fn describe_http_error(err: reqwest::Error) -> (String, bool) {
    let timed_out = err.is_timeout();
    let err = err.without_url();
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    (detail, timed_out)
}
