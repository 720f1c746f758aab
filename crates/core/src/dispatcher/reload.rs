//! Configuration reload: runners added, retired or changed, and the global
//! limits replaced, with the jobs in flight untouched.
//!
//! Runner indices ([`RunnerIdx`]) are part of every [`JobKey`], so a reload
//! never moves a runner: a new runner takes the next index, a removed one is
//! *retired* (it polls no more and is not listed, but its jobs run to their
//! end under its old settings, and their weight stays counted until they are
//! gone). A runner whose connection settings change is retired and added
//! again by the caller, so that its jobs in flight keep the clients they
//! started with.

use std::time::Instant;

use super::{Command, Dispatcher, DispatcherConfig, RunnerSpec, RunnerState};
use crate::job::{Job, RunnerIdx};

/// One runner of the new configuration.
#[derive(Debug, Clone)]
pub struct RunnerUpdate {
    /// The runner it continues (same token and connection settings), whose
    /// index it keeps; `None` for a runner new to this process.
    pub continues: Option<RunnerIdx>,
    pub spec: RunnerSpec,
}

/// A runner as a reload saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerChange {
    pub runner: RunnerIdx,
    pub name: String,
    /// Jobs of that runner still tracked (a retired runner's run to their
    /// end).
    pub jobs: usize,
}

/// What a reload changed, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadSummary {
    pub added: Vec<RunnerChange>,
    pub retired: Vec<RunnerChange>,
    /// Runners kept at their index whose dispatcher settings changed
    /// (flavors, fraction, launch watch).
    pub changed: Vec<RunnerChange>,
    pub quota_before: f64,
    pub quota_after: f64,
    pub concurrent_before: usize,
    pub concurrent_after: usize,
    /// Weight in use (jobs and untracked applications) at the reload.
    pub weight_in_use: f64,
}

impl ReloadSummary {
    /// The weight in use is above the new quota: nothing is stopped, but no
    /// job is taken until enough of it is gone.
    pub fn over_quota(&self) -> bool {
        self.weight_in_use > self.quota_after + super::EPSILON
    }

    /// Whether anything changed at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.retired.is_empty()
            && self.changed.is_empty()
            && (self.quota_before - self.quota_after).abs() <= super::EPSILON
            && self.concurrent_before == self.concurrent_after
    }
}

impl Dispatcher {
    /// Applies a new configuration. Active runners that no update continues
    /// are retired; updates that continue none are added at the next
    /// indices, in order. Jobs in flight are untouched; polls in flight of
    /// retired runners are let complete (a job they bring is run). Limits
    /// apply from the next poll: a quota that shrank below the weight in use
    /// stops new jobs until the weight fits again.
    pub fn handle_reconfigure(
        &mut self,
        config: DispatcherConfig,
        updates: Vec<RunnerUpdate>,
        now: Instant,
    ) -> ReloadSummary {
        let mut summary = ReloadSummary {
            added: Vec::new(),
            retired: Vec::new(),
            changed: Vec::new(),
            quota_before: self.config.quota,
            quota_after: config.quota,
            concurrent_before: self.config.concurrent,
            concurrent_after: config.concurrent,
            weight_in_use: self.jobs.values().map(Job::weight).sum::<f64>() + self.orphan_weight(),
        };
        let continued: Vec<RunnerIdx> = updates.iter().filter_map(|u| u.continues).collect();
        for idx in 0..self.runners.len() {
            if self.runners[idx].retired || continued.contains(&idx) {
                continue;
            }
            self.runners[idx].retired = true;
            self.runners[idx].next_poll_at = None;
            // A retired runner is never listed again: its first listing
            // must not hold the others back.
            self.unlisted[idx] = false;
            summary.retired.push(self.change(idx));
        }
        let reconciling = !config.reconcile_interval.is_zero();
        for update in updates {
            match update.continues {
                // Only a running runner of the same key can be continued:
                // application names derive from the key.
                Some(idx)
                    if idx < self.runners.len()
                        && !self.runners[idx].retired
                        && self.runners[idx].spec.key == update.spec.key =>
                {
                    let changed = !same_spec(&self.runners[idx].spec, &update.spec);
                    // Replaced even when alike: settings that spec does not
                    // compare apply too.
                    self.runners[idx].spec = update.spec;
                    if changed {
                        summary.changed.push(self.change(idx));
                    }
                }
                _ => {
                    let idx = self.runners.len();
                    self.runners.push(RunnerState {
                        spec: update.spec,
                        poll_in_flight: false,
                        reserved: 0.0,
                        next_poll_at: Some(now),
                        poll_sent_at: None,
                        consecutive_errors: 0,
                        long_polling: super::LongPolling::default(),
                        retired: false,
                    });
                    self.watch.add_runner();
                    self.list_started.push(0);
                    self.listing.push(false);
                    self.unlisted.push(reconciling);
                    if reconciling && !self.shutting_down {
                        // Its leftovers count in the quota before any poll.
                        self.listing[idx] = true;
                        self.list_generation += 1;
                        self.list_started[idx] = self.list_generation;
                        self.commands.push_back(Command::ListApps { runner: idx });
                    }
                    summary.added.push(self.change(idx));
                }
            }
        }
        if reconciling {
            let next = now + config.reconcile_interval;
            self.next_reconcile_at = Some(self.next_reconcile_at.map_or(next, |at| at.min(next)));
        }
        self.config = config;
        self.drive(now);
        summary
    }

    /// Whether runner `idx` was removed by a reload (it takes no more jobs;
    /// its jobs run to their end).
    pub fn is_retired(&self, idx: RunnerIdx) -> bool {
        self.runners.get(idx).is_some_and(|runner| runner.retired)
    }

    /// Whether another runner of the same key (one retired by a reload,
    /// or its successor) tracks job `job_id`: a listing must then neither
    /// adopt its application nor take it for an orphan.
    pub(super) fn tracked_by_other_runner(&self, runner: RunnerIdx, job_id: u64) -> bool {
        let key = &self.runners[runner].spec.key;
        self.jobs.keys().any(|job| {
            job.runner != runner
                && job.job_id == job_id
                && self.runners[job.runner].spec.key == *key
        })
    }

    fn change(&self, idx: RunnerIdx) -> RunnerChange {
        RunnerChange {
            runner: idx,
            name: self.runners[idx].spec.name.clone(),
            jobs: self.jobs.keys().filter(|job| job.runner == idx).count(),
        }
    }
}

/// Whether two specs decide alike (the catalogue compared by its flavors).
fn same_spec(old: &RunnerSpec, new: &RunnerSpec) -> bool {
    old.key == new.key
        && old.name == new.name
        && old.quota_max_fraction == new.quota_max_fraction
        && old.default_flavor == new.default_flavor
        && old.max_flavor == new.max_flavor
        && old.launch_watch == new.launch_watch
        && old.zone == new.zone
        && old.ready_wait == new.ready_wait
        && old.flavors == new.flavors
}
