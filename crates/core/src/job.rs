//! Jobs as the dispatcher tracks them: identity, lifecycle state, resource.

use std::time::Instant;

use crate::secret::Secret;

/// Index of a runner in the configuration's `[[runners]]` list.
pub type RunnerIdx = usize;

/// Identifies a job: job ids are only unique per coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub runner: RunnerIdx,
    pub job_id: u64,
}

/// What a coordinator handed us.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job_id: u64,
    pub token: Secret,
    pub project_id: Option<u64>,
    /// Value of `CI_CLEVER_CLOUD_FLAVOR`, if the job sets it.
    pub requested_flavor: Option<String>,
    /// Failure reasons the coordinator accepts (`features.failure_reasons`).
    pub failure_reasons: Option<Vec<String>>,
    /// The job payload exactly as received; becomes `job.json` on the VM.
    pub payload: String,
}

/// The cloud resource of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// Nothing was created, and nothing will be unless the job is provisioned.
    None,
    /// A creation was started whose outcome is unknown (in flight, or failed
    /// in a way that may have taken effect): it may exist under its name.
    Maybe,
    /// The application exists.
    Exists(App),
}

/// A cloud application created for a job.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: String,
    pub weight: f64,
}

/// Why a job failed, for the coordinator's failure report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The job definition is at fault (e.g. bad flavor): `script_failure`.
    User,
    /// Infrastructure problem: `runner_system_failure` (GitLab offers retry).
    System,
}

/// A failure to be written to the job log and reported to the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    /// Text for the job log (plain; the shell colours it).
    pub message: String,
}

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Acquired; waiting for a provisioning slot.
    Queued,
    /// The cloud application is being created.
    Provisioning,
    /// The application exists; waiting for its repository and pushing.
    Deploying,
    /// Pushed; waiting for the inner runner's first log bytes.
    Launching { since: Instant },
    /// The inner runner runs the job; polled until it finishes.
    Running,
    /// The failure message is being written to the job log.
    Failing {
        failure: Failure,
        message_written: bool,
    },
    /// The job is over; its application is being deleted.
    Decommissioning,
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Provisioning => "provisioning",
            Stage::Deploying => "deploying",
            Stage::Launching { .. } => "launching",
            Stage::Running => "running",
            Stage::Failing { .. } => "failing",
            Stage::Decommissioning => "decommissioning",
        }
    }

    /// Between acquisition and confirmed launch.
    pub fn is_provisioning(&self) -> bool {
        matches!(
            self,
            Stage::Queued | Stage::Provisioning | Stage::Deploying | Stage::Launching { .. }
        )
    }
}

/// A tracked job.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: JobKey,
    pub token: Secret,
    pub project_id: Option<u64>,
    pub payload: String,
    pub failure_reasons: Option<Vec<String>>,
    /// Short flavor name chosen for this job (may be invalid).
    pub flavor: String,
    /// Weight of the chosen flavor (0 when the flavor is invalid).
    pub expected_weight: f64,
    pub stage: Stage,
    pub resource: Resource,
    /// A command for this job is being executed.
    pub busy: bool,
    /// Earliest time the next command for this job may start.
    pub next_step_at: Option<Instant>,
    /// Consecutive failed attempts of the current step (for backoff).
    pub attempts: u32,
    /// The job ended with a failure we reported (counted in statistics).
    pub failed: bool,
    /// The coordinator was told we run the job (two-phase commit). Nothing
    /// is created for a job before that.
    pub confirmed: bool,
    /// When the job was acquired (or taken back after a restart).
    pub acquired_at: Instant,
    /// Bytes of the job log we wrote ourselves before the launch (a
    /// slow-launch notice): the inner runner has started once the log is
    /// longer.
    pub log_bytes: u64,
    /// The slow-launch notice was written (or given up).
    pub slow_notice_sent: bool,
    /// A slow-launch notice is being written.
    pub notice_busy: bool,
}

impl Job {
    /// Weight this job counts for in the quota.
    pub fn weight(&self) -> f64 {
        match &self.resource {
            Resource::Exists(app) => app.weight,
            Resource::Maybe => self.expected_weight,
            Resource::None => match self.stage {
                Stage::Queued | Stage::Provisioning => self.expected_weight,
                _ => 0.0,
            },
        }
    }

    pub fn app_id(&self) -> Option<&str> {
        match &self.resource {
            Resource::Exists(app) => Some(&app.id),
            _ => None,
        }
    }
}
