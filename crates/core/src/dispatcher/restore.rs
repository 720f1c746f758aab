//! Jobs taken back from the store at start.

use super::*;

impl Dispatcher {
    /// Takes back jobs recorded by a previous process. Call before the first
    /// [`Dispatcher::handle_timeout`]. Records of unknown runners are
    /// returned (the caller decides what to do with them).
    pub fn restore(&mut self, records: Vec<JobRecord>, now: Instant) -> Vec<JobRecord> {
        let mut unknown = Vec::new();
        for record in records {
            let Some(runner) = self
                .runners
                .iter()
                .position(|r| r.spec.key == record.runner_key)
            else {
                unknown.push(record);
                continue;
            };
            let key = JobKey {
                runner,
                job_id: record.job_id,
            };
            let resource = match (&record.app_id, record.stage) {
                (Some(id), _) => Resource::Exists(App {
                    id: id.clone(),
                    weight: record.app_weight,
                }),
                // A creation may have been under way when the process died.
                (None, StageRecord::Provisioning) => Resource::Maybe,
                (None, _) if record.app_maybe => Resource::Maybe,
                (None, _) => Resource::None,
            };
            let stage = match record.stage {
                StageRecord::Queued => Stage::Queued,
                StageRecord::Provisioning => Stage::Provisioning,
                StageRecord::Deploying => Stage::Deploying,
                StageRecord::Launching => Stage::Launching { since: now },
                StageRecord::Running => Stage::Running,
                StageRecord::Failing => Stage::Failing {
                    failure: Failure {
                        kind: record.failure_kind.unwrap_or(FailureKind::System),
                        message: record.failure_message.clone().unwrap_or_default(),
                    },
                    message_written: record.message_written,
                },
                StageRecord::Decommissioning => Stage::Decommissioning,
            };
            let job = Job {
                key,
                token: record.token.clone(),
                project_id: record.project_id,
                // Needed only by a job still to be deployed.
                payload: match stage {
                    Stage::Queued | Stage::Provisioning | Stage::Deploying => {
                        record.payload.clone()
                    }
                    _ => String::new(),
                },
                failure_reasons: record.failure_reasons.clone(),
                // Records imported from heptapod-paas-runner may lack it.
                flavor: if record.flavor.is_empty() {
                    self.runners[runner].spec.default_flavor.clone()
                } else {
                    record.flavor.clone()
                },
                expected_weight: record.expected_weight,
                stage,
                resource,
                busy: false,
                next_step_at: None,
                attempts: 0,
                failed: record.failed,
                confirmed: record.confirmed,
                acquired_at: now,
                log_bytes: record.log_bytes,
                slow_notice_sent: record.slow_notice_sent,
                notice_busy: false,
            };
            if !job.slow_notice_sent && job.stage.is_provisioning() && !job.failed {
                self.schedule_notice(key, now);
            }
            if job.stage == Stage::Queued && job.confirmed {
                // Only the launch queue moves a queued job on.
                self.launch_queue.push_back(key);
            }
            if job.app_id().is_some() {
                // Recorded by an earlier process: before any listing of ours.
                self.exists_since.insert(key, 0);
            }
            self.jobs.insert(key, job);
            self.ready.insert(key);
        }
        self.drive(now);
        unknown
    }
}
