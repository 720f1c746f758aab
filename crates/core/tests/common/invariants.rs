//! The invariants every run must keep, checked as it goes and at its end.

use super::*;

impl Harness {
    pub(crate) fn violation(&mut self, text: String) {
        let line = format!("{}: at {:?}: {text}", self.label, self.elapsed());
        self.note(None, format!("VIOLATION {text}"));
        self.violations.push(line);
    }

    /// When a poll starts: the weight it reserves fits beside the jobs and
    /// the orphans the dispatcher knows of. Applications left before the
    /// process started must have been listed, unless their listing failed
    /// (then, like creations landing late, they are excused from the
    /// cloud's quota check).
    pub(crate) fn check_poll_room(&mut self) {
        let stats = self.dispatcher.stats();
        let quota = self.config.quota;
        if stats.weight + stats.reserved_weight > quota + EPSILON {
            let orphans = self.dispatcher.orphan_weight();
            self.violation(format!(
                "poll with tracked weight {:.3} (orphans {orphans:.3}) + reserved {:.3} over quota {quota:.3}",
                stats.weight, stats.reserved_weight
            ));
        }
        let mut uncounted = Vec::new();
        for app in self.cloud.apps.values_mut() {
            if app.stray && !app.excused && !self.listed.contains(&app.id) {
                if !self.failed_listings.contains(&app.job.runner) {
                    uncounted.push(app.id.clone());
                }
                app.excused = true;
            }
        }
        for id in uncounted {
            self.violation(format!(
                "poll before the leftover {id} was listed (nor its listing failed)"
            ));
        }
    }

    /// The invariants that hold after every step.
    pub fn check_invariants(&mut self) {
        let stats = self.dispatcher.stats();
        let quota = self.config.quota;
        let mut found = Vec::new();
        let tracked: f64 = self.dispatcher.jobs().map(|job| job.weight()).sum();
        // Orphans found while the quota was full may push the total over
        // it (they cannot be undone): what the dispatcher took must fit.
        if tracked + stats.reserved_weight > quota + EPSILON {
            found.push(format!(
                "tracked job weight {tracked:.3} + reserved {:.3} over quota {quota:.3}",
                stats.reserved_weight
            ));
        }
        let orphans = self.dispatcher.orphan_weight();
        if (tracked + orphans - stats.weight).abs() > EPSILON {
            found.push(format!(
                "stats weight {:.3} differs from the jobs' {tracked:.3} + orphans' {orphans:.3}",
                stats.weight
            ));
        }
        // Every application of the cloud counts, orphans included, but
        // strays the dispatcher could not have listed before taking a job.
        let accountable = self.cloud.live_weight() - self.cloud.excused_weight();
        if accountable > quota + EPSILON {
            found.push(format!(
                "cloud live weight {accountable:.3} (excused strays left out) over quota {quota:.3}: {:?}",
                self.cloud.names()
            ));
        }
        self.max_accountable_weight = self.max_accountable_weight.max(accountable);
        if stats.jobs + stats.polls_in_flight > self.config.concurrent {
            found.push(format!(
                "{} jobs + {} polls over concurrent {}",
                stats.jobs, stats.polls_in_flight, self.config.concurrent
            ));
        }
        let provisioning = self
            .dispatcher
            .jobs()
            .filter(|job| job.stage.is_provisioning())
            .count();
        if provisioning + stats.polls_in_flight > self.config.max_provisioning {
            found.push(format!(
                "{provisioning} jobs provisioning + {} polls over max_provisioning {}",
                stats.polls_in_flight, self.config.max_provisioning
            ));
        }
        for (runner, spec) in self.runners.iter().enumerate() {
            let jobs_weight: f64 = self
                .dispatcher
                .jobs()
                .filter(|job| job.key.runner == runner)
                .map(|job| job.weight())
                .sum();
            let polling = self.in_flight.iter().any(
                |in_flight| matches!(in_flight.outcome, Outcome::Poll(idx, _) if idx == runner),
            );
            let reserved = if polling { spec.max_job_weight() } else { 0.0 };
            let cap = self
                .config
                .allowed_fraction_per_runner
                .min(spec.quota_max_fraction)
                * quota;
            if jobs_weight + reserved > cap + EPSILON {
                found.push(format!(
                    "runner {runner} weight {jobs_weight:.3} + reserved {reserved:.3} over its share {cap:.3}"
                ));
            }
            self.maxima.runner_weight[runner] = self.maxima.runner_weight[runner].max(jobs_weight);
        }
        self.maxima.weight = self.maxima.weight.max(stats.weight);
        self.maxima.jobs = self.maxima.jobs.max(stats.jobs);
        self.maxima.provisioning = self.maxima.provisioning.max(provisioning);
        for text in found {
            self.violation(text);
        }
    }

    /// What must hold once a run is settled: nothing leaked, every job that
    /// reached the store ended launched, failed with a message, or
    /// cancelled, and none ran twice.
    pub fn final_violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        for app in self.cloud.apps.values() {
            found.push(format!(
                "leaked application {} ({}) of j{}",
                app.id, app.name, app.job.job_id
            ));
        }
        if !self.store.is_empty() {
            found.push(format!("{} records left in the store", self.store.len()));
        }
        if self.max_accountable_weight > self.config.quota + EPSILON {
            found.push(format!(
                "cloud live weight reached {:.3} over quota {:.3}",
                self.max_accountable_weight, self.config.quota
            ));
        }
        for job in self.coordinator.jobs.values() {
            let key = job.key;
            let id = key.job_id;
            let pushes = self.cloud.pushes.get(&key).copied().unwrap_or(0);
            if pushes > 1 || job.inner_starts > 1 {
                found.push(format!(
                    "j{id} deployed {pushes} times, started {} times",
                    job.inner_starts
                ));
            }
            if job.state == CoordState::Pending {
                if self.runner_can_poll(key.runner) {
                    found.push(format!("j{id} never taken"));
                }
                continue;
            }
            if matches!(job.state, CoordState::Assigned | CoordState::Running) {
                found.push(format!("j{id} stuck {:?} on the coordinator", job.state));
                continue;
            }
            if job.state == CoordState::Dropped {
                if let Some(text) = self.unexcused_drop(job) {
                    found.push(text);
                }
                continue;
            }
            if job.state == CoordState::Cancelled && !self.delivered.contains(&key) {
                continue;
            }
            if !self.delivered.contains(&key) {
                if !self.lost_in_transit.contains(&key) {
                    found.push(format!(
                        "j{id} handed out but never delivered nor lost in a crash"
                    ));
                }
                continue;
            }
            if !self.saved.contains(&key) {
                if !self.lost_unsaved.contains(&key) {
                    found.push(format!("j{id} delivered but never saved"));
                }
                continue;
            }
            let launched = job.inner_starts > 0;
            let failed_with_message =
                matches!(job.state, CoordState::Failed(_)) && job.log.contains(RED);
            let cancelled = job.state == CoordState::Cancelled;
            // Without a launch watch the dispatcher takes a deployment for a
            // launch (as the reference does): a job whose inner runner never
            // starts stays running until the coordinator's job timeout.
            let unwatched_timeout = job.state == CoordState::TimedOut
                && self.runners[key.runner].launch_watch.is_none()
                && !launched;
            if !(launched || failed_with_message || cancelled || unwatched_timeout) {
                found.push(format!(
                    "j{id} neither launched, failed with a message nor cancelled: {:?}, log {:?}",
                    job.state, job.log
                ));
            }
        }
        found
    }

    /// Jobs the coordinator dropped (handed out, never confirmed in time).
    pub fn dropped(&self) -> usize {
        self.coordinator
            .jobs
            .values()
            .filter(|job| job.state == CoordState::Dropped)
            .count()
    }

    /// A dropped job is fine when no process had it in time (its answer
    /// lost, or delivered after the window), when a process stopped during
    /// its window (one shutting down when the job arrives records it but
    /// takes no new step), or when its confirmations failed; otherwise the
    /// dispatcher sat on it.
    pub(crate) fn unexcused_drop(&self, job: &ModelJob) -> Option<String> {
        let key = job.key;
        let handed_out = job.handed_out_at?;
        let deadline = handed_out + self.coordinator.confirm_window;
        // Never delivered: its answer was lost in a crash.
        let &delivered = self.delivered_at.get(&key)?;
        let stopped = self
            .stop_times
            .iter()
            .any(|at| (handed_out..=deadline).contains(at));
        let errors = self.confirm_errors.get(&key).copied().unwrap_or(0);
        if delivered > deadline || stopped || errors > 0 {
            return None;
        }
        Some(format!(
            "j{} dropped by the coordinator although delivered at {:?} and its window ran to {:?}",
            key.job_id,
            delivered - self.start,
            deadline - self.start
        ))
    }

    pub fn assert_no_violations(&self) {
        assert!(
            self.violations.is_empty(),
            "{} violations:\n{}\n{}",
            self.violations.len(),
            self.violations.join("\n"),
            self.trace_tail(40)
        );
    }

    pub fn assert_final(&self) {
        self.assert_no_violations();
        let found = self.final_violations();
        assert!(
            found.is_empty(),
            "{}: {}\n{}",
            self.label,
            found.join("\n"),
            self.trace_tail(40)
        );
    }

    // ----- traces -----
}
