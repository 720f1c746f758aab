//! What the driver tells operators: a log line (and metrics) per core
//! [`Notice`], and what a listing shows beyond the core's business (a
//! store that looks wrong, foreign applications kept for `paas-runner
//! state`).

use paas_core::{AppOwner, JobKey, ListedApp, Notice, RunnerIdx};
use tracing::{debug, error, info, warn};

use super::{age_text, now, Driver};
use crate::metrics::Step;

/// An application under a runner's key that this installation does not own,
/// as kept in the store's meta data for `paas-runner state`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForeignSeen {
    pub runner_key: String,
    pub app_id: String,
    pub name: String,
    /// The owner's system id, or `unmarked`.
    pub owner: String,
    pub age_secs: Option<u64>,
}

/// Store meta key holding the [`ForeignSeen`] list (JSON).
pub const FOREIGN_META_KEY: &str = "foreign_apps";

impl Driver {
    pub(super) fn log_notice(&self, notice: Notice) {
        let runner_name = |job: &JobKey| self.runners[job.runner].name.clone();
        match notice {
            Notice::Acquired {
                job,
                flavor,
                weight,
            } => {
                let stats = self.core.stats();
                crate::metrics::recorder().job_acquired(
                    (job.runner, job.job_id),
                    &runner_name(&job),
                    &flavor,
                    now(),
                );
                info!(runner = %runner_name(&job), job_id = job.job_id, %flavor, weight = round2(weight), used = round2(stats.weight), quota = round2(stats.quota), "job accounted");
            }
            Notice::Launched { job } => {
                crate::metrics::recorder().step_done((job.runner, job.job_id), Step::Launch, now());
                info!(runner = %runner_name(&job), job_id = job.job_id, "job launched")
            }
            Notice::Finished { job } => {
                crate::metrics::recorder().job_finished((job.runner, job.job_id), now());
                debug!(runner = %runner_name(&job), job_id = job.job_id, "job over; decommissioning")
            }
            Notice::Failed { job, message } => {
                warn!(runner = %runner_name(&job), job_id = job.job_id, message = %first_line(&message), "job failed")
            }
            Notice::Retrying {
                job,
                step,
                attempt,
                max_attempts,
                delay,
            } => {
                if max_attempts == 0 {
                    warn!(runner = %runner_name(&job), job_id = job.job_id, "{step}: retrying (attempt {}) in {:.1?}", attempt + 1, delay)
                } else {
                    warn!(runner = %runner_name(&job), job_id = job.job_id, "{step}: retrying ({}/{max_attempts}) in {:.1?}", attempt + 1, delay)
                }
            }
            Notice::Decommissioned { job } => {
                info!(runner = %runner_name(&job), job_id = job.job_id, "application decommissioned")
            }
            Notice::GaveUp { job, step } => {
                error!(runner = %runner_name(&job), job_id = job.job_id, "{step}: giving up after repeated failures")
            }
            Notice::Withdrawn { job } => {
                info!(runner = %runner_name(&job), job_id = job.job_id, "job withdrawn by the coordinator; nothing was created")
            }
            Notice::Adopted { job, app_id } => {
                info!(runner = %runner_name(&job), job_id = job.job_id, %app_id, "reconciliation: adopted the job's application")
            }
            Notice::Orphan {
                runner,
                app_id,
                name,
            } => {
                crate::metrics::recorder().orphan_found();
                warn!(runner = %self.runners[runner].name, %app_id, app = %name, "reconciliation: application belongs to no tracked job")
            }
            Notice::Foreign {
                runner,
                app_id,
                name,
                owner,
                age,
            } => {
                let age = age
                    .map(|age| age_text(age.as_secs()))
                    .unwrap_or_else(|| "unknown".to_owned());
                warn!(
                    runner = %self.runners[runner].name,
                    %app_id,
                    app = %name,
                    owner = %owner.label(&self.system_id),
                    %age,
                    "reconciliation: application under this runner's key is not this installation's; counted in the quota, not deleted (`paas-runner reap CONFIG --yes --include-foreign` deletes it)"
                )
            }
            Notice::NotReady {
                job,
                app_id,
                waited,
                timeout,
            } => {
                warn!(
                    runner = %runner_name(&job),
                    app_id,
                    waited_secs = waited.as_secs_f64(),
                    timeout_secs = timeout.as_secs_f64(),
                    "deployment repository not ready within cc_deployment_repo_timeout"
                )
            }
            Notice::MachineVanished { job, app_id } => {
                error!(runner = %runner_name(&job), job_id = job.job_id, %app_id, "the job's application was deleted outside paas-runner; failing the job")
            }
        }
    }

    /// What a listing shows beyond the core's business: applications of the
    /// runner's key while the store was empty at start (a wrong state file?),
    /// and the foreign ones, kept for `paas-runner state`.
    pub(super) fn after_listing(&mut self, runner: RunnerIdx, apps: &[ListedApp]) {
        let io = &self.runners[runner];
        let first = !std::mem::replace(&mut self.listed_once[runner], true);
        if first && self.restored_jobs == 0 && !apps.is_empty() {
            let store = self.store.location();
            let ours = apps
                .iter()
                .filter(|app| app.owner == AppOwner::Ours)
                .count();
            error!(
                runner = %io.name,
                runner_key = %io.key,
                %store,
                applications = apps.len(),
                ours,
                "the state store tracks no job, yet the organisation holds applications of this runner key: \
                 is `state_file` the one this service used before? Applications of other installations \
                 (or unmarked) are left alone; those marked as ours are deleted once old enough"
            );
        }
        let seen: Vec<ForeignSeen> = apps
            .iter()
            .filter(|app| app.owner != AppOwner::Ours)
            .map(|app| ForeignSeen {
                runner_key: io.key.clone(),
                app_id: app.id.clone(),
                name: app.name.clone(),
                owner: app.owner.label(&self.system_id).to_owned(),
                age_secs: app.age.map(|age| age.as_secs()),
            })
            .collect();
        // The first listing replaces what an earlier run recorded.
        let changed = first
            || seen.len() != self.foreign_seen[runner].len()
            || seen
                .iter()
                .zip(&self.foreign_seen[runner])
                .any(|(a, b)| a.app_id != b.app_id);
        self.foreign_seen[runner] = seen;
        if changed {
            let all: Vec<&ForeignSeen> = self.foreign_seen.iter().flatten().collect();
            match serde_json::to_string(&all) {
                Ok(value) => self.write(
                    None,
                    paas_store::StoreWrite::Meta {
                        key: FOREIGN_META_KEY.to_owned(),
                        value,
                    },
                ),
                Err(error) => {
                    warn!(%error, "could not record the foreign applications for `paas-runner state`")
                }
            }
        }
    }
}

/// Human age of something created at `created_ms` (Unix epoch, ms).
pub(super) fn age_of(created_ms: i64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let secs = (now_ms - created_ms).max(0) / 1000;
    age_text(secs as u64)
}

/// A weight as logs show it: two decimals.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
