//! Credentials checked at start, each with one cheap authenticated call:
//! the runner token (`POST /api/v4/runners/verify`), the Clever Cloud token
//! and organisation (the organisation's application list), and the
//! `paas_job_trace_watch` token (`GET /api/v4/user`).
//!
//! A refusal stops the start ([`SetupError`], exit 2) with a message naming
//! the runner, the key and the remedy. A transient failure (timeout, 5xx,
//! 429) is retried with backoff within [`CHECK_ATTEMPTS`]; if it persists
//! the service starts anyway with a warning: a coordinator or Clever Cloud
//! briefly down must not keep the service from starting.

use std::path::Path;
use std::time::Duration;

use paas_gitlab::GitlabError;
use paas_provider::AccessError;
use tracing::{debug, info, warn};

use crate::runners::RunnerIo;
use crate::setup_error::SetupError;

/// Attempts of each check before starting anyway (waits 1 s, 2 s, 4 s, 8 s
/// in between).
pub const CHECK_ATTEMPTS: u32 = 5;

/// Bound of one check call.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks every runner's credentials, all runners at once.
pub async fn check_all(
    runners: &[RunnerIo],
    config_path: &Path,
    system_id: &str,
) -> Result<(), SetupError> {
    let checks = runners
        .iter()
        .enumerate()
        .map(|(index, io)| check_runner(io, index, config_path, system_id));
    for result in futures::future::join_all(checks).await {
        result?;
    }
    Ok(())
}

/// Checks one runner's credentials (`index`: its place in the file).
pub(crate) async fn check_runner(
    io: &RunnerIo,
    index: usize,
    config_path: &Path,
    system_id: &str,
) -> Result<(), SetupError> {
    let refuse = |message: String| SetupError {
        path: config_path.display().to_string(),
        message: format!(
            "runner {:?} (runners[{index}], line {}): {message}",
            io.name, io.config.line
        ),
    };

    // The runner token.
    let verified = retry(&io.name, "runner token", || async {
        io.coordinator
            .verify_runner(&io.token, Some(system_id))
            .await
    })
    .await;
    match verified {
        Some(Ok(runner)) => info!(
            runner = %io.name,
            runner_id = runner.id.map(|id| id.to_string()).unwrap_or_else(|| "-".into()),
            "runner token verified"
        ),
        Some(Err(GitlabError::Forbidden { url, .. })) => {
            return Err(refuse(format!(
                "the coordinator refused the runner token (403 on {url}): it is unknown, revoked or expired. \
                 Fix `token` (key `runners[{index}].token`), or register the runner again with `paas-runner register`"
            )))
        }
        Some(Err(error @ GitlabError::Unexpected { status, .. }))
            if status == 404 || (300..400).contains(&status) =>
        {
            return Err(refuse(format!(
                "the coordinator url does not answer the runner API ({error}). Fix `url` \
                 (key `runners[{index}].url`): the address of the GitLab instance, without /api/v4"
            )))
        }
        Some(Err(error @ GitlabError::InvalidUrl(_))) => {
            return Err(refuse(format!("{error}; fix `url` (key `runners[{index}].url`)")))
        }
        Some(Err(error)) => warn!(
            runner = %io.name,
            %error,
            "cannot verify the runner token; starting anyway"
        ),
        None => {}
    }

    // The cloud's credentials (for Clever Cloud: token and organisation).
    let cloud = io.provider.name();
    let listed = retry(&io.name, &format!("{cloud} token"), || async {
        io.provider.check_access(index).await
    })
    .await;
    match listed {
        Some(Ok(access)) => info!(
            runner = %io.name,
            orga = %access.account,
            applications = access.machines,
            "{cloud} token and organisation verified"
        ),
        Some(Err(AccessError::Refused(message))) => return Err(refuse(message)),
        Some(Err(error)) => warn!(
            runner = %io.name,
            %error,
            "cannot check the {cloud} credentials; starting anyway"
        ),
        None => {}
    }

    // The job log watch token, when given.
    if let Some(watch_token) = &io.config.trace_watch.token {
        let user = retry(&io.name, "paas_job_trace_watch token", || async {
            io.coordinator.token_user(watch_token).await
        })
        .await;
        match user {
            Some(Ok(user)) => debug!(
                runner = %io.name,
                user = %user.username,
                "paas_job_trace_watch token verified"
            ),
            Some(Err(GitlabError::Forbidden { url, .. })) => {
                return Err(refuse(format!(
                    "the coordinator refused the `paas_job_trace_watch` token (on {url}): it is unknown, revoked or expired. \
                     Fix `token` in [runners.paas_job_trace_watch] (a token able to read job logs, scope read_api)"
                )))
            }
            Some(Err(error)) => warn!(
                runner = %io.name,
                %error,
                "cannot check the paas_job_trace_watch token; starting anyway"
            ),
            None => {}
        }
    }
    Ok(())
}

/// Errors that say the same call may succeed later.
trait Transient {
    fn transient(&self) -> bool;
}

impl Transient for GitlabError {
    fn transient(&self) -> bool {
        self.is_transient()
    }
}

impl Transient for AccessError {
    fn transient(&self) -> bool {
        matches!(self, AccessError::Failed(error) if error.is_transient())
    }
}

/// Runs `call` until it gives an answer that is not transient, at most
/// [`CHECK_ATTEMPTS`] times, each under [`CHECK_TIMEOUT`]. `None`: still
/// failing (logged with a warning).
async fn retry<T, E, F, Fut>(runner: &str, what: &str, call: F) -> Option<Result<T, E>>
where
    E: Transient + std::fmt::Display,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for attempt in 1..=CHECK_ATTEMPTS {
        let failure = match tokio::time::timeout(CHECK_TIMEOUT, call()).await {
            Ok(Err(error)) if error.transient() => error.to_string(),
            Ok(result) => return Some(result),
            Err(_elapsed) => format!("no answer within {CHECK_TIMEOUT:?}"),
        };
        if attempt == CHECK_ATTEMPTS {
            warn!(
                runner,
                check = what,
                error = %failure,
                attempts = CHECK_ATTEMPTS,
                "credentials check still failing: starting anyway; failures will show in the log as the service runs"
            );
            return None;
        }
        let delay = paas_core::backoff(attempt);
        warn!(runner, check = what, error = %failure, "credentials check: retrying (attempt {}) in {delay:?}", attempt + 1);
        tokio::time::sleep(delay).await;
    }
    None
}
