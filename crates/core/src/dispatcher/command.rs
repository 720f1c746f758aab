//! What the dispatcher asks for ([`Command`]), tells ([`Notice`]), and
//! the outcomes it is fed back.

use super::*;

/// Something for the caller to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Ask the runner's coordinator for a job.
    RequestJob { runner: RunnerIdx },
    /// Tell the coordinator we run the job (two-phase commit: sent once the
    /// job is recorded; a keep-alive on coordinators without it).
    ConfirmJob { job: JobKey, token: Secret },
    /// List the runner's applications in the cloud (reconciliation).
    ListApps { runner: RunnerIdx },
    /// Delete an application that no job accounts for.
    DeleteOrphan {
        runner: RunnerIdx,
        app_id: String,
        name: String,
        created_ms: Option<i64>,
    },
    /// Persist this job record (insert or replace) before the next commands.
    Save(JobRecord),
    /// The job is over: drop its record.
    Forget(JobKey),
    /// Create the job's application, set its environment. `may_exist`: a
    /// creation may have happened before (the job's resource was
    /// [`Resource::Maybe`]): adopt an application of that name owned by
    /// this installation rather than create a second one.
    CreateApp {
        job: JobKey,
        name: String,
        flavor: Flavor,
        may_exist: bool,
    },
    /// Is the application ready to take its job? One check, answered with
    /// [`Dispatcher::handle_ready`]; one not answered within `timeout`
    /// counts as [`ReadyCheck::NotYet`]. `first`: the first check of this
    /// wait (the deployment starts).
    CheckReady {
        job: JobKey,
        app_id: String,
        timeout: Duration,
        first: bool,
    },
    /// Is the job over on the coordinator (asked while its machine gets
    /// ready)? Answer [`Dispatcher::handle_job_watch`].
    WatchJob { job: JobKey, token: Secret },
    /// Hand the job to its ready application at `target` (push the build
    /// context; idempotent: skip the push if the repository has a head).
    Deploy {
        job: JobKey,
        app_id: String,
        payload: String,
        target: String,
    },
    /// Has the inner runner written to the job log yet, that is, is it
    /// longer than the `own_log_bytes` we wrote ourselves?
    CheckLaunch {
        job: JobKey,
        project_id: Option<u64>,
        own_log_bytes: u64,
    },
    /// Append an informative line to the log of a job that is slow to
    /// start (not a failure).
    AppendNotice {
        job: JobKey,
        token: Secret,
        text: String,
    },
    /// Is the job still running on the coordinator?
    CheckStatus { job: JobKey, token: Secret },
    /// List the runner's machines in the cloud: which ones' tasks ended
    /// (the batch signal of [`WatchConfig`]); answer with
    /// [`Dispatcher::handle_machines`].
    ListMachines { runner: RunnerIdx },
    /// Append complete lines to the job log.
    AppendLog {
        job: JobKey,
        token: Secret,
        text: String,
    },
    /// Report the job failed to the coordinator.
    ReportFailure {
        job: JobKey,
        token: Secret,
        kind: FailureKind,
        failure_reasons: Option<Vec<String>>,
    },
    /// Delete the job's application: by id if known, else every application
    /// carrying `name`.
    DeleteApp {
        job: JobKey,
        app_id: Option<String>,
        name: String,
    },
    /// Read the runner's flavor catalogue again and answer
    /// [`Dispatcher::handle_flavors`] (a failed read keeps the current one).
    RefreshFlavors { runner: RunnerIdx },
    /// Something worth telling operators (logs, metrics, progress).
    Notice(Notice),
}
/// Facts for logs, metrics and progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Acquired {
        job: JobKey,
        flavor: String,
        weight: f64,
    },
    Launched {
        job: JobKey,
    },
    Finished {
        job: JobKey,
    },
    Failed {
        job: JobKey,
        message: String,
    },
    Retrying {
        job: JobKey,
        step: &'static str,
        attempt: u32,
        max_attempts: u32,
        delay: Duration,
    },
    Decommissioned {
        job: JobKey,
    },
    GaveUp {
        job: JobKey,
        step: &'static str,
    },
    /// The coordinator no longer offers the job to us (two-phase commit
    /// window lapsed, cancelled before we started).
    Withdrawn {
        job: JobKey,
    },
    /// An application of a tracked job, whose creation outcome was unknown,
    /// was found and adopted.
    Adopted {
        job: JobKey,
        app_id: String,
    },
    /// An application no job accounts for was found.
    Orphan {
        runner: RunnerIdx,
        app_id: String,
        name: String,
    },
    /// An application under the runner's name prefix that this
    /// installation does not own (another owner's, or unmarked) was found:
    /// counted in the quota, never deleted.
    Foreign {
        runner: RunnerIdx,
        app_id: String,
        name: String,
        owner: AppOwner,
        /// Its age when listed, if known.
        age: Option<Duration>,
    },
    /// A job's machine was not ready within its wait (the job fails).
    NotReady {
        job: JobKey,
        app_id: String,
        waited: Duration,
        timeout: Duration,
    },
    /// The application of a job under way is gone from the cloud although
    /// nothing here deleted it: the job is failed.
    MachineVanished {
        job: JobKey,
        app_id: String,
    },
}
/// Result of a job confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmCheck {
    Confirmed,
    /// The job is not ours to run.
    Gone,
    /// The coordinator could not answer.
    Error,
}
/// An application of the runner found in the cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedApp {
    pub id: String,
    pub name: String,
    pub weight: f64,
    pub created_ms: Option<i64>,
    /// Whose it is, by the marker in its description.
    pub owner: AppOwner,
    /// How old it was when listed (`None`: unknown).
    pub age: Option<Duration>,
}
/// Result of a job request.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    Job(NewJob),
    /// The coordinator handed over a job whose payload is larger than the
    /// runner accepts: only its id and token could be read (from the start
    /// of the payload, where GitLab puts them). The job is failed with a
    /// message saying so, as a job of the user's making (`script_failure`:
    /// retrying the same job would fail the same way).
    JobTooLarge {
        job_id: u64,
        token: Secret,
        /// The limit the payload exceeded, for the message.
        limit_bytes: u64,
    },
    NoJob,
    /// No job, and the next request will be held by the coordinator until a
    /// job may be there (Workhorse long polling): poll again at once.
    NoJobPollAgain,
    /// The coordinator could not answer (transient) or refused (not).
    Error {
        transient: bool,
    },
    /// The request was abandoned (shutdown).
    Cancelled,
}
/// Result of a step performed against the cloud or the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome<T> {
    Done(T),
    /// Failed; `transient` failures are retried within a budget
    /// ([`STEP_ATTEMPTS`], [`backoff`] between attempts). A failure that is
    /// not transient fails the job at once: so must a step whose own wait
    /// already lasted its configured time (a deployment repository not
    /// ready within `cc_deployment_repo_timeout`), or the job would fail
    /// several times that time after the cause, with a message stating a
    /// time that is not the real one. `user_message` is what the CI user
    /// reads if the job fails of it.
    Failed {
        transient: bool,
        user_message: String,
    },
}
/// Result of a launch check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchCheck {
    /// The inner runner wrote to the job log.
    Started,
    NotYet,
    /// The job is already over on the coordinator (e.g. cancelled).
    JobOver,
}
/// Result of a readiness check of a job's machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// Ready: it takes its job at `target` (for Clever Cloud, the git
    /// deployment repository's URL).
    Ready { target: String },
    /// Not yet (or no answer): checked again until the wait's end.
    NotYet,
    /// It can never be (the application cannot be read): the job fails
    /// with `user_message`.
    Failed { user_message: String },
}

/// Result of a status check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCheck {
    Running,
    Finished,
    Error,
}
