//! The coordinator's side of the job steps: one task each, its outcome
//! turned into an [`Event`] for the core. What an answer means for the
//! job is the core's (`paas_core::ConfirmCheck::of_refusal`, the launch
//! and status checks); here it is only read and logged.

use paas_core::{
    ConfirmCheck, FailureKind, JobKey, LaunchCheck, NewJob, PollOutcome, RunnerIdx, Secret,
    StatusCheck, StepOutcome,
};
use paas_gitlab::{
    ConfirmOutcome, FailureReason, JobRequest, JobRequestOutcome, RemoteJobStatus, TraceProbe,
    UpdateOutcome,
};
use tracing::{debug, error, info, warn};

use super::{Event, LAUNCH_CHECK_TIMEOUT, REQUEST_TIMEOUT};
use crate::runners::{RunnerIo, Runners};

/// A job request (held by a coordinator that long-polls).
pub(super) async fn request_job(
    runners: Runners,
    runner: RunnerIdx,
    system_id: String,
    last_update: Option<String>,
) -> Event {
    let io = &runners[runner];
    let sent_at = tokio::time::Instant::now();
    let request = JobRequest {
        token: &io.token,
        system_id: &system_id,
        last_update: last_update.as_deref(),
    };
    let (outcome, last_update) = match io.coordinator.request_job(&request, REQUEST_TIMEOUT).await {
        Ok(JobRequestOutcome::Job(job)) => {
            // Outside text: it reaches the operator log, the store
            // (`paas-runner state`) and the job log's message.
            let requested_flavor = job
                .variables
                .iter()
                .rev()
                .find(|var| var.key == paas_core::messages::FLAVOR_VARIABLE)
                .map(|var| {
                    let mut secrets = io.secrets();
                    secrets.push(&job.token);
                    paas_core::sanitize(&var.value, paas_core::sanitize::MAX_VALUE_CHARS, &secrets)
                });
            info!(runner = %io.name, job_id = job.id, flavor = requested_flavor.as_deref().unwrap_or("default"), "job acquired");
            let new_job = NewJob {
                job_id: job.id,
                token: job.token,
                project_id: job.project_id,
                requested_flavor,
                failure_reasons: job.failure_reasons,
                payload: job.payload,
            };
            (PollOutcome::Job(new_job), None)
        }
        Ok(JobRequestOutcome::TooLarge {
            id_and_token: Some((job_id, token)),
            limit_bytes,
        }) => {
            error!(runner = %io.name, job_id, limit_bytes, "job payload larger than the limit: the job is failed");
            (
                PollOutcome::JobTooLarge {
                    job_id,
                    token,
                    limit_bytes,
                },
                None,
            )
        }
        Ok(JobRequestOutcome::TooLarge {
            id_and_token: None,
            limit_bytes,
        }) => {
            // Nothing can be done with a job we cannot name: the
            // coordinator's own timeout ends it.
            error!(runner = %io.name, limit_bytes, "job payload larger than the limit, without id and token in its first bytes: dropped (the coordinator will time the job out)");
            (PollOutcome::NoJob, None)
        }
        Ok(JobRequestOutcome::NoJob { last_update }) => (PollOutcome::NoJob, last_update),
        Ok(JobRequestOutcome::Conflict) => {
            debug!(runner = %io.name, "409 conflict on job request: treated as no job");
            (PollOutcome::NoJob, None)
        }
        Err(error) => {
            let transient = error.is_transient();
            if transient {
                warn!(runner = %io.name, %error, "coordinator unavailable; will poll again");
            } else {
                error!(runner = %io.name, %error, "coordinator refused the job request");
            }
            (PollOutcome::Error { transient }, None)
        }
    };
    Event::Poll {
        runner,
        outcome,
        last_update,
        held: sent_at.elapsed(),
    }
}

/// Has the inner runner written to the job log yet?
pub(super) async fn launch(
    runners: Runners,
    job: JobKey,
    project_id: Option<u64>,
    own_log_bytes: u64,
    token: Secret,
) -> Event {
    // A slow coordinator must not stretch the launch timeout the job log
    // states: an unanswered check is "not yet".
    let check = tokio::time::timeout(
        LAUNCH_CHECK_TIMEOUT,
        check_launch(&runners, job, project_id, own_log_bytes, &token),
    )
    .await
    .unwrap_or(LaunchCheck::NotYet);
    Event::Launch { job, check }
}

/// The slow-launch notice.
pub(super) async fn append_notice(
    runners: Runners,
    job: JobKey,
    token: Secret,
    text: String,
) -> Event {
    let runner = &runners[job.runner];
    let length = match runner
        .coordinator
        .append_trace(job.job_id, &token, 0, text.as_bytes())
        .await
    {
        Ok(appended) if !appended.not_running => {
            info!(runner = %runner.name, job_id = job.job_id, "slow launch: told the job log");
            Some(appended.new_offset)
        }
        Ok(_) => None,
        Err(error) => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not write the slow-launch notice");
            None
        }
    };
    Event::Noticed { job, length }
}

/// Two-phase commit: the job is ours.
pub(super) async fn confirm(runners: Runners, job: JobKey, token: Secret) -> Event {
    let runner = &runners[job.runner];
    let check = confirm_check(
        runner,
        job,
        runner.coordinator.confirm_job(job.job_id, &token).await,
    );
    Event::Confirmed { job, check }
}

/// Is the job over on the coordinator (asked while its machine gets ready)?
pub(super) async fn watch(runners: Runners, job: JobKey, token: Secret) -> Event {
    let over = job_is_over(&runners[job.runner], job, &token).await;
    Event::Watched { job, over }
}

/// Is the job still running on the coordinator?
pub(super) async fn status(runners: Runners, job: JobKey, token: Secret) -> Event {
    let runner = &runners[job.runner];
    let check = match remote_status(runner, job, &token).await {
        Ok(RemoteJobStatus::Finished { status }) => {
            info!(runner = %runner.name, job_id = job.job_id, status = status.as_deref().unwrap_or("unknown"), "job finished");
            StatusCheck::Finished
        }
        Ok(RemoteJobStatus::Running { .. }) => StatusCheck::Running,
        Err(error) => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not check job status");
            StatusCheck::Error
        }
    };
    Event::Status { job, check }
}

/// Complete lines (a failure's message) into the job log.
pub(super) async fn append_log(
    runners: Runners,
    job: JobKey,
    token: Secret,
    text: String,
) -> Event {
    let runner = &runners[job.runner];
    let outcome = match runner
        .coordinator
        .append_trace(job.job_id, &token, 0, text.as_bytes())
        .await
    {
        Ok(appended) => {
            if appended.not_running {
                info!(runner = %runner.name, job_id = job.job_id, "job no longer running: its log is closed");
            }
            StepOutcome::Done(())
        }
        Err(error) => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not write to the job log");
            write_failed(error.is_transient())
        }
    };
    Event::LogAppended { job, outcome }
}

/// A write to the coordinator that did not take: nothing for the job's
/// user to read (the core retries it, or gives up).
fn write_failed(transient: bool) -> StepOutcome<()> {
    StepOutcome::Failed {
        transient,
        user_message: String::new(),
    }
}

/// The job failed: tell the coordinator, with the reason it accepts.
pub(super) async fn report_failure(
    runners: Runners,
    job: JobKey,
    token: Secret,
    kind: FailureKind,
    failure_reasons: Option<Vec<String>>,
) -> Event {
    let runner = &runners[job.runner];
    let reason = match kind {
        FailureKind::User => FailureReason::ScriptFailure,
        FailureKind::System => FailureReason::RunnerSystemFailure,
    }
    .accepted_by(failure_reasons.as_deref());
    let outcome = match runner
        .coordinator
        .fail_job(job.job_id, &token, reason, None)
        .await
    {
        Ok(UpdateOutcome::Accepted) => {
            crate::metrics::recorder().failure(&runner.name, reason.as_str());
            info!(runner = %runner.name, job_id = job.job_id, reason = reason.as_str(), "job reported failed");
            StepOutcome::Done(())
        }
        Ok(UpdateOutcome::NotRunning { job_status }) => {
            info!(runner = %runner.name, job_id = job.job_id, status = job_status.as_deref().unwrap_or("unknown"), "job already over on the coordinator");
            StepOutcome::Done(())
        }
        Ok(UpdateOutcome::Retry { .. }) => write_failed(true),
        Err(error) => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not report job failure");
            write_failed(error.is_transient())
        }
    };
    Event::Reported { job, outcome }
}

pub(super) async fn check_launch(
    runners: &Runners,
    job: JobKey,
    project_id: Option<u64>,
    own_log_bytes: u64,
    job_token: &Secret,
) -> LaunchCheck {
    let runner = &runners[job.runner];
    let (Some(token), Some(project_id)) = (runner.config.trace_watch.token.as_ref(), project_id)
    else {
        return probe_launch(runner, job, own_log_bytes, job_token).await;
    };
    // The log first: once the inner runner wrote, one request suffices.
    match runner
        .coordinator
        .read_trace(project_id, job.job_id, token)
        .await
    {
        Ok(trace) if trace.len() as u64 > own_log_bytes => return LaunchCheck::Started,
        Ok(_) => {}
        Err(error) => {
            debug!(runner = %runner.name, job_id = job.job_id, %error, "could not read job log");
        }
    }
    if job_is_over(runner, job, job_token).await {
        LaunchCheck::JobOver
    } else {
        LaunchCheck::NotYet
    }
}

/// Launch confirmation with the job token alone: an empty log PATCH at the
/// length of what we wrote ourselves (`docs/protocol-notes.md` §1.1). A 202
/// at that length: the inner runner has not written yet, and nothing
/// changed; a 416 with a longer log: it has (the answer itself is the
/// proof); a 403: the job is over (canceled, failed). One request per
/// check, and nothing is written: the log stays the inner runner's.
pub(super) async fn probe_launch(
    runner: &RunnerIo,
    job: JobKey,
    own_log_bytes: u64,
    job_token: &Secret,
) -> LaunchCheck {
    match runner
        .coordinator
        .probe_trace(job.job_id, job_token, Some(own_log_bytes))
        .await
    {
        Ok(TraceProbe::Moved { length }) if length > own_log_bytes => LaunchCheck::Started,
        Ok(TraceProbe::Ended { job_status }) => {
            info!(runner = %runner.name, job_id = job.job_id, status = job_status.as_deref().unwrap_or("unknown"), "job over on the coordinator before its launch completed");
            LaunchCheck::JobOver
        }
        Ok(TraceProbe::Unchanged { .. } | TraceProbe::Moved { .. } | TraceProbe::Executing) => {
            LaunchCheck::NotYet
        }
        Err(error) => {
            debug!(runner = %runner.name, job_id = job.job_id, %error, "could not probe the job log");
            LaunchCheck::NotYet
        }
    }
}

/// What a confirmation answer means (the rule: [`ConfirmCheck::of_refusal`]).
pub(super) fn confirm_check(
    runner: &RunnerIo,
    job: JobKey,
    answer: Result<ConfirmOutcome, paas_gitlab::GitlabError>,
) -> ConfirmCheck {
    match answer {
        Ok(ConfirmOutcome::Confirmed) => ConfirmCheck::Confirmed,
        Ok(ConfirmOutcome::Gone { status, job_status }) => {
            let check = ConfirmCheck::of_refusal(status, job_status.as_deref());
            if check == ConfirmCheck::Gone {
                warn!(runner = %runner.name, job_id = job.job_id, status, job_status = job_status.as_deref().unwrap_or("-"), "the coordinator withdrew the job before it started");
            } else {
                warn!(runner = %runner.name, job_id = job.job_id, status, "unexpected answer to the job confirmation; running the job anyway");
            }
            check
        }
        Err(error) if error.is_transient() => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not confirm the job to the coordinator");
            ConfirmCheck::Error
        }
        Err(error) => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "unexpected answer to the job confirmation; running the job anyway");
            ConfirmCheck::Confirmed
        }
    }
}

/// Whether the job still executes on the coordinator, asked with one
/// empty log `PATCH` without `Content-Range` (`docs/protocol-notes.md`
/// §1.1, §1.7): 400 while it executes, 403 with `Job-Status` once it is
/// over. Cheaper for GitLab than `GET /api/v4/job` (no entity, no Gitaly
/// call) and it names the final status; a coordinator that answers it
/// otherwise is asked with `GET /api/v4/job` instead.
pub(super) async fn remote_status(
    runner: &RunnerIo,
    job: JobKey,
    token: &Secret,
) -> Result<RemoteJobStatus, paas_gitlab::GitlabError> {
    match runner
        .coordinator
        .probe_trace(job.job_id, token, None)
        .await
    {
        Ok(TraceProbe::Ended { job_status }) => {
            Ok(RemoteJobStatus::Finished { status: job_status })
        }
        Ok(TraceProbe::Executing | TraceProbe::Unchanged { .. } | TraceProbe::Moved { .. }) => {
            Ok(RemoteJobStatus::Running {
                status: "running".to_owned(),
            })
        }
        Err(error) if error.is_transient() => Err(error),
        Err(error) => {
            debug!(runner = %runner.name, job_id = job.job_id, %error, "unexpected answer to a log probe; reading the job instead");
            runner.coordinator.job_status(token).await
        }
    }
}

/// Whether the coordinator says the job is over (errors count as not over).
pub(super) async fn job_is_over(runner: &RunnerIo, job: JobKey, token: &Secret) -> bool {
    match remote_status(runner, job, token).await {
        Ok(RemoteJobStatus::Finished { status }) => {
            info!(runner = %runner.name, job_id = job.job_id, status = status.as_deref().unwrap_or("unknown"), "job over on the coordinator before its launch completed");
            true
        }
        _ => false,
    }
}
