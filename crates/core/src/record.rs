//! The durable form of a job: what the store keeps so that a restarted
//! process can take every job back where the previous one left it.

use crate::job::{FailureKind, Job, Resource, Stage};
use crate::secret::Secret;

/// Stage of a job as recorded (times are not kept: they restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageRecord {
    Queued,
    Provisioning,
    Deploying,
    Launching,
    Running,
    Failing,
    Decommissioning,
}

impl StageRecord {
    pub fn as_str(self) -> &'static str {
        match self {
            StageRecord::Queued => "queued",
            StageRecord::Provisioning => "provisioning",
            StageRecord::Deploying => "deploying",
            StageRecord::Launching => "launching",
            StageRecord::Running => "running",
            StageRecord::Failing => "failing",
            StageRecord::Decommissioning => "decommissioning",
        }
    }

    pub fn parse(text: &str) -> Option<StageRecord> {
        Some(match text {
            "queued" => StageRecord::Queued,
            "provisioning" => StageRecord::Provisioning,
            "deploying" => StageRecord::Deploying,
            "launching" => StageRecord::Launching,
            "running" => StageRecord::Running,
            "failing" => StageRecord::Failing,
            "decommissioning" => StageRecord::Decommissioning,
            _ => return None,
        })
    }
}

/// Everything needed to resume a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Short id of the runner (first 8 characters of its token).
    pub runner_key: String,
    pub job_id: u64,
    pub token: Secret,
    pub project_id: Option<u64>,
    pub payload: String,
    pub failure_reasons: Option<Vec<String>>,
    pub flavor: String,
    pub expected_weight: f64,
    pub stage: StageRecord,
    pub app_id: Option<String>,
    pub app_weight: f64,
    /// An application may exist under the job's name (creation outcome
    /// unknown).
    pub app_maybe: bool,
    pub failure_kind: Option<FailureKind>,
    pub failure_message: Option<String>,
    pub message_written: bool,
    pub failed: bool,
    pub confirmed: bool,
    /// Bytes we wrote to the job log before its launch.
    pub log_bytes: u64,
    pub slow_notice_sent: bool,
}

impl JobRecord {
    pub fn from_job(job: &Job, runner_key: &str) -> JobRecord {
        let (stage, failure_kind, failure_message, message_written) = match &job.stage {
            Stage::Queued => (StageRecord::Queued, None, None, false),
            Stage::Provisioning => (StageRecord::Provisioning, None, None, false),
            Stage::Deploying => (StageRecord::Deploying, None, None, false),
            Stage::Launching { .. } => (StageRecord::Launching, None, None, false),
            Stage::Running => (StageRecord::Running, None, None, false),
            Stage::Failing {
                failure,
                message_written,
            } => (
                StageRecord::Failing,
                Some(failure.kind),
                Some(failure.message.clone()),
                *message_written,
            ),
            Stage::Decommissioning => (StageRecord::Decommissioning, None, None, false),
        };
        let (app_id, app_weight, app_maybe) = match &job.resource {
            Resource::Exists(app) => (Some(app.id.clone()), app.weight, false),
            Resource::Maybe => (None, 0.0, true),
            Resource::None => (None, 0.0, false),
        };
        JobRecord {
            runner_key: runner_key.to_owned(),
            job_id: job.key.job_id,
            token: job.token.clone(),
            project_id: job.project_id,
            payload: job.payload.clone(),
            failure_reasons: job.failure_reasons.clone(),
            flavor: job.flavor.clone(),
            expected_weight: job.expected_weight,
            stage,
            app_id,
            app_weight,
            app_maybe,
            failure_kind,
            failure_message,
            message_written,
            failed: job.failed,
            confirmed: job.confirmed,
            log_bytes: job.log_bytes,
            slow_notice_sent: job.slow_notice_sent,
        }
    }
}
