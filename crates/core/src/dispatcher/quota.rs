//! Quota and poll eligibility: which runner may request a job now, and
//! when not, which limit holds ([`PollHold`]); the figures of [`Stats`].

use super::*;

/// Why a runner's job requests are held back: the first limit that holds,
/// as data for the status page, the demo line and the log.
#[derive(Debug, Clone, PartialEq)]
pub enum PollHold {
    /// No flavor is known yet: nothing could be provisioned.
    NoFlavor,
    /// The first listing of the cloud's applications is not in yet.
    FirstListing,
    /// `concurrent`: jobs tracked plus requests in flight.
    Concurrent { jobs: usize, limit: usize },
    /// `paas_max_concurrent_provisioning`: jobs being provisioned plus
    /// requests in flight.
    Provisioning { provisioning: usize, limit: usize },
    /// The runner's own `limit`.
    RunnerLimit { jobs: usize, limit: usize },
    /// The quota's headroom is below the largest job the runner may
    /// receive; `reserved` is held by requests in flight.
    Quota {
        headroom: f64,
        needed: f64,
        reserved: f64,
    },
    /// The runner's share of the quota is used up.
    RunnerShare { used: f64, share: f64, needed: f64 },
}
impl PollHold {
    /// Short name of the limit, for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            PollHold::NoFlavor => "no_flavor",
            PollHold::FirstListing => "first_listing",
            PollHold::Concurrent { .. } => "concurrent",
            PollHold::Provisioning { .. } => "provisioning",
            PollHold::RunnerLimit { .. } => "runner_limit",
            PollHold::Quota { .. } => "quota",
            PollHold::RunnerShare { .. } => "runner_share",
        }
    }
}
impl std::fmt::Display for PollHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollHold::NoFlavor => write!(f, "no flavor known yet"),
            PollHold::FirstListing => write!(f, "waiting for the first listing of applications"),
            PollHold::Concurrent { jobs, limit } => {
                write!(f, "concurrent: {jobs} of {limit} jobs")
            }
            PollHold::Provisioning {
                provisioning,
                limit,
            } => write!(
                f,
                "paas_max_concurrent_provisioning: {provisioning} of {limit} being provisioned"
            ),
            PollHold::RunnerLimit { jobs, limit } => {
                write!(f, "runner limit: {jobs} of {limit} jobs")
            }
            PollHold::Quota {
                headroom,
                needed,
                reserved,
            } => write!(
                f,
                "quota: headroom {headroom:.1} below the {needed:.1} of the largest flavor \
                 ({reserved:.1} reserved by requests in flight)"
            ),
            PollHold::RunnerShare {
                used,
                share,
                needed,
            } => write!(
                f,
                "runner share: {used:.1} of {share:.1} used, {needed:.1} needed"
            ),
        }
    }
}
/// Counters for progress displays and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub queued: usize,
    pub provisioning: usize,
    pub launching: usize,
    pub running: usize,
    pub failing: usize,
    pub decommissioning: usize,
    pub jobs: usize,
    pub weight: f64,
    pub reserved_weight: f64,
    pub quota: f64,
    pub polls_in_flight: usize,
    /// Applications under the runners' name prefixes that this
    /// installation does not own (counted in `weight`, never deleted).
    pub foreign_apps: usize,
    pub foreign_weight: f64,
    pub acquired_total: u64,
    pub launched_total: u64,
    pub failed_total: u64,
    pub done_total: u64,
    /// Per runner (in configuration order): why its job requests are held
    /// back, `None` when it may poll or has a request in flight.
    pub held: Vec<Option<PollHold>>,
}
impl Dispatcher {
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            quota: self.config.quota,
            acquired_total: self.acquired_total,
            launched_total: self.launched_total,
            failed_total: self.failed_total,
            done_total: self.done_total,
            ..Stats::default()
        };
        for job in self.jobs.values() {
            stats.jobs += 1;
            stats.weight += job.weight();
            match job.stage {
                Stage::Queued => stats.queued += 1,
                Stage::Provisioning | Stage::Deploying => stats.provisioning += 1,
                Stage::Launching { .. } => stats.launching += 1,
                Stage::Running => stats.running += 1,
                Stage::Failing { .. } => stats.failing += 1,
                Stage::Decommissioning => stats.decommissioning += 1,
            }
        }
        stats.weight += self.orphan_weight();
        stats.foreign_apps = self.foreign.len();
        stats.foreign_weight = self.foreign.values().map(|app| app.weight).sum();
        for runner in &self.runners {
            stats.reserved_weight += runner.reserved;
            stats.polls_in_flight += usize::from(runner.poll_in_flight);
        }
        stats.held = (0..self.runners.len())
            .map(|idx| {
                if self.runners[idx].poll_in_flight || self.shutting_down {
                    None
                } else {
                    self.poll_hold(idx)
                }
            })
            .collect();
        stats
    }

    pub(super) fn start_polls(&mut self, now: Instant) {
        if self.shutting_down || self.runners.is_empty() {
            return;
        }
        let count = self.runners.len();
        let start = self.poll_cursor % count;
        for offset in 0..count {
            let idx = (start + offset) % count;
            if self.may_poll(idx, now) {
                let reserve = self.runners[idx].spec.max_job_weight();
                let runner = &mut self.runners[idx];
                runner.poll_in_flight = true;
                runner.reserved = reserve;
                runner.next_poll_at = None;
                runner.poll_sent_at = Some(now);
                self.poll_cursor = idx + 1;
                self.commands.push_back(Command::RequestJob { runner: idx });
            } else if self.runners[idx].next_poll_at.is_some_and(|at| at <= now) {
                // Due but held back by a limit: no timer (a past one would
                // make the driver spin); every change of the jobs drives
                // again and re-checks the limits.
                self.runners[idx].next_poll_at = None;
            }
        }
    }

    pub(super) fn may_poll(&self, idx: RunnerIdx, now: Instant) -> bool {
        let runner = &self.runners[idx];
        if runner.retired || runner.poll_in_flight || runner.next_poll_at.is_some_and(|at| at > now)
        {
            return false;
        }
        self.poll_hold(idx).is_none()
    }

    /// The first limit that keeps runner `idx` from requesting a job now
    /// (timing aside), `None` if none does.
    pub(super) fn poll_hold(&self, idx: RunnerIdx) -> Option<PollHold> {
        let runner = &self.runners[idx];
        let min_weight = runner.spec.max_job_weight();
        if min_weight <= 0.0 {
            // No flavor known yet: nothing could be provisioned.
            return Some(PollHold::NoFlavor);
        }
        if !self.config.reconcile_interval.is_zero() && self.unlisted.iter().any(|u| *u) {
            // Leftovers of any runner count in the shared quota: wait for
            // every first listing (a failed one lets polls go on).
            return Some(PollHold::FirstListing);
        }
        let in_flight = self.runners.iter().filter(|r| r.poll_in_flight).count();
        let provisioning = self
            .jobs
            .values()
            .filter(|j| j.stage.is_provisioning())
            .count();
        if self.jobs.len() + in_flight >= self.config.concurrent {
            return Some(PollHold::Concurrent {
                jobs: self.jobs.len() + in_flight,
                limit: self.config.concurrent,
            });
        }
        if provisioning + in_flight >= self.config.max_provisioning {
            return Some(PollHold::Provisioning {
                provisioning: provisioning + in_flight,
                limit: self.config.max_provisioning,
            });
        }
        if let Some(limit) = runner.spec.limit {
            // As gitlab-runner's `limit`: this runner's jobs, whatever their
            // stage (its own request is not in flight here).
            let jobs = self.jobs.keys().filter(|key| key.runner == idx).count();
            if jobs >= limit {
                return Some(PollHold::RunnerLimit { jobs, limit });
            }
        }
        let reserved = self.runners.iter().map(|r| r.reserved).sum::<f64>();
        let used: f64 =
            self.jobs.values().map(Job::weight).sum::<f64>() + self.orphan_weight() + reserved;
        if used + min_weight > self.config.quota + EPSILON {
            return Some(PollHold::Quota {
                headroom: (self.config.quota - used).max(0.0),
                needed: min_weight,
                reserved,
            });
        }
        let runner_used: f64 = self
            .jobs
            .values()
            .filter(|j| j.key.runner == idx)
            .map(Job::weight)
            .sum();
        let fraction = self
            .config
            .allowed_fraction_per_runner
            .min(runner.spec.quota_max_fraction);
        if runner_used + min_weight > fraction * self.config.quota + EPSILON {
            return Some(PollHold::RunnerShare {
                used: runner_used,
                share: fraction * self.config.quota,
                needed: min_weight,
            });
        }
        None
    }
}
