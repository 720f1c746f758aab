//! Building the [`Snapshot`] the driver publishes (the types are in
//! [`crate::snapshot`]).

use super::{now, Driver};
use crate::snapshot::{JobView, RunnerView, Snapshot, JOB_LIST_PERIOD};

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
