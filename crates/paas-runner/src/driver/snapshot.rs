//! The [`Snapshot`] the driver publishes for the status page, `/status.json`,
//! `/metrics` and progress displays.

use std::time::Duration;

use paas_core::Stats;

use super::{now, Driver};

/// Live figures published by the driver (progress displays, status page,
/// metrics), counters and job list of the same instant: rebuilt together at
/// most every [`JOB_LIST_PERIOD`] (and at once while stopping), so that the
/// page, `/status.json` and `/metrics` always agree with each other.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: Stats,
    pub runners: Vec<RunnerView>,
    pub jobs: Vec<JobView>,
    pub shutting_down: bool,
    /// `concurrent` as in force (a reload may change it).
    pub concurrent: usize,
    /// `paas_max_concurrent_provisioning` as in force.
    pub max_provisioning: usize,
}

/// One `[[runners]]` entry as the status page shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunnerView {
    pub name: String,
    /// First 8 characters of the runner token.
    pub key: String,
    pub jobs: usize,
    pub weight: f64,
    /// Weight of the largest job the runner may receive.
    pub max_job_weight: f64,
    pub quota_max_fraction: f64,
    /// The runner's `limit` (most jobs at once), if any.
    pub limit: Option<usize>,
}

/// One tracked job as the status page shows it (no token, no payload).
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    pub runner: String,
    pub job_id: u64,
    pub stage: &'static str,
    pub flavor: String,
    pub weight: f64,
    pub app_id: Option<String>,
}

/// How often the [`Snapshot`] is rebuilt at most (a change is published at
/// the latest this long after it happened).
pub const JOB_LIST_PERIOD: Duration = Duration::from_millis(250);

impl Driver {
    pub(super) fn publish(&mut self) {
        let now = now();
        let refresh_jobs = self
            .jobs_published_at
            .is_none_or(|at| now.saturating_duration_since(at) >= JOB_LIST_PERIOD)
            || self.core.is_shutting_down();
        if !refresh_jobs {
            self.publish_pending = true;
            return;
        }
        let stats = self.core.stats();
        let shutting_down = self.core.is_shutting_down();
        self.publish_pending = false;
        self.jobs_published_at = Some(now);
        let mut runners: Vec<RunnerView> = (0..self.core.runner_count())
            .map(|idx| {
                let spec = self.core.runner(idx);
                RunnerView {
                    name: spec.name.clone(),
                    key: spec.key.clone(),
                    jobs: 0,
                    weight: 0.0,
                    max_job_weight: spec.max_job_weight(),
                    quota_max_fraction: spec.quota_max_fraction,
                    limit: spec.limit,
                }
            })
            .collect();
        let jobs = self
            .core
            .jobs()
            .map(|job| {
                let runner = &mut runners[job.key.runner];
                runner.jobs += 1;
                runner.weight += job.weight();
                JobView {
                    runner: runner.name.clone(),
                    job_id: job.key.job_id,
                    stage: job.stage.name(),
                    flavor: job.flavor.clone(),
                    weight: job.weight(),
                    app_id: job.app_id().map(str::to_owned),
                }
            })
            .collect();
        let config = self.core.config();
        self.snapshot_tx.send_replace(Snapshot {
            stats,
            runners,
            jobs,
            shutting_down,
            concurrent: config.concurrent,
            max_provisioning: config.max_provisioning,
        });
    }
}
