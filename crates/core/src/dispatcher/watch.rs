//! How launched jobs are watched: when each one's coordinator check is due,
//! and the cloud-side batch signal that says which machines' tasks ended.
//!
//! Checking every running job every `check_interval` costs the coordinator
//! running jobs × their duration in requests. Under a [`WatchConfig`]
//! ([`Dispatcher::set_watch`]) the cost per job is bounded instead:
//!
//! - one listing per runner and interval ([`Command::ListMachines`]: the
//!   organisation's deployments on Clever Cloud) tells which machines have
//!   ended; only their jobs get a coordinator check, at once;
//! - every running job still gets safety-net checks, paced by its age (the
//!   wait doubles after each check, up to a cap), so a job whose signal
//!   never comes is found anyway and the cost grows with the logarithm of
//!   its duration;
//! - without a working signal (the cloud lacks the listing, or it keeps
//!   failing) the safety-net pacing starts at `first_interval` instead:
//!   slower to notice a job's end, but never stalled;
//! - a signal the coordinator contradicts (the machine ended, the job runs)
//!   is not trusted again for that job;
//! - the first launch check waits [`FIRST_LAUNCH_CHECK_AFTER`] (at most one
//!   `poll_step`) after the push (a machine just pushed to has not started
//!   the job), unless the signal comes first. Not a whole `poll_step`: a
//!   launch not yet confirmed holds a `paas_max_concurrent_provisioning`
//!   slot, so a machine that starts at once must be confirmed at once.
//!
//! Without a [`WatchConfig`], running jobs are checked every
//! `status_interval`, as before.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Command, Dispatcher, StatusCheck};
use crate::job::{JobKey, RunnerIdx, Stage};

/// Delay of the first launch check after the push.
pub const FIRST_LAUNCH_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Listing failures in a row after which the batch signal is not relied on
/// (per-job pacing falls back to `first_interval`) until a listing works.
const FAILURES_BEFORE_FALLBACK: u32 = 3;

/// How launched jobs are watched (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchConfig {
    /// Without a batch signal: the wait before the first check of a
    /// running job; it doubles after every check, up to `max_interval`.
    pub first_interval: Duration,
    pub max_interval: Duration,
    /// Period of the machine listing per runner; `None`: no listing.
    pub listing_interval: Option<Duration>,
    /// With a working batch signal: the safety-net checks' first wait and
    /// cap (doubling likewise).
    pub safety_first: Duration,
    pub safety_max: Duration,
    /// A cloud found without the listing is asked again after this long.
    pub redetect_after: Duration,
}

impl WatchConfig {
    /// Defaults for a service polling every `check_interval`: listings
    /// twice per `check_interval` (at least 250 ms apart: a job's end is
    /// then acted on within about half of it, and the cloud, not the
    /// coordinator, bears them), checks from `check_interval` up to 30 s
    /// without a signal, safety-net checks from 60 s up to 10 min with one.
    pub fn new(check_interval: Duration) -> WatchConfig {
        let check_interval = check_interval.max(Duration::from_millis(100));
        WatchConfig {
            first_interval: check_interval,
            max_interval: Duration::from_secs(30).max(check_interval),
            listing_interval: Some((check_interval / 2).max(Duration::from_millis(250))),
            safety_first: Duration::from_secs(60),
            safety_max: Duration::from_secs(600),
            redetect_after: Duration::from_secs(3600),
        }
    }

    /// The wait before the next check of a job already checked `checks`
    /// times.
    pub fn check_delay(&self, signal_works: bool, checks: u32) -> Duration {
        let (first, max) = if signal_works {
            (self.safety_first, self.safety_max)
        } else {
            (self.first_interval, self.max_interval)
        };
        first.saturating_mul(1u32 << checks.min(16)).min(max)
    }
}

/// The answer to a [`Command::ListMachines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineListing {
    /// The cloud does not offer the listing (404, or an answer that cannot
    /// be read): per-job pacing only, and the listing is tried again after
    /// `redetect_after`.
    Unsupported,
    /// The listing failed this time (transient).
    Failed,
    /// The applications whose task has ended.
    Listed { ended: BTreeSet<String> },
}

/// The watch state of the dispatcher.
#[derive(Debug, Default)]
pub(super) struct Watch {
    config: Option<WatchConfig>,
    jobs: BTreeMap<JobKey, JobWatch>,
    runners: Vec<RunnerListing>,
}

impl Watch {
    /// A runner added (by a reload): it gets its own listing state.
    pub(super) fn add_runner(&mut self) {
        if self.config.is_some() {
            self.runners.push(RunnerListing::default());
        }
    }

    /// Whether a listing is under way (the dispatcher is not quiescent).
    pub(super) fn listing_in_flight(&self) -> bool {
        self.runners.iter().any(|runner| runner.in_flight)
    }

    /// When the next listing is due.
    pub(super) fn next_listing_at(&self) -> Option<Instant> {
        self.runners
            .iter()
            .filter(|runner| !runner.in_flight)
            .filter_map(|runner| runner.next_at)
            .min()
    }

    pub(super) fn is_paced(&self) -> bool {
        self.config.is_some()
    }

    pub(super) fn forget(&mut self, key: JobKey) {
        self.jobs.remove(&key);
    }
}

#[derive(Debug, Default, Clone)]
struct RunnerListing {
    in_flight: bool,
    next_at: Option<Instant>,
    unsupported: bool,
    consecutive_failures: u32,
}

#[derive(Debug, Default, Clone)]
struct JobWatch {
    /// Paced checks done while running.
    checks: u32,
    /// When the next paced check is due (computed at the first step).
    due: Option<Instant>,
    /// The batch signal says the job's machine ended.
    machine_ended: bool,
    /// The check in flight was made because of that signal.
    check_for_signal: bool,
    /// A signal-made check that failed is tried again then.
    signal_retry_at: Option<Instant>,
    /// The coordinator said running after a signal: not trusted again.
    contradicted: bool,
}

impl Dispatcher {
    /// Watches launched jobs under `config` instead of checking each one
    /// every `status_interval`. Call before the first event.
    pub fn set_watch(&mut self, config: WatchConfig) {
        self.watch.config = Some(config);
        self.watch.runners = vec![RunnerListing::default(); self.runners.len()];
    }

    /// Whether the batch signal of `runner` is relied on now.
    pub fn signal_works(&self, runner: RunnerIdx) -> bool {
        let listing = self.watch.config.and_then(|config| config.listing_interval);
        match (listing, self.watch.runners.get(runner)) {
            (Some(_), Some(state)) => {
                !state.unsupported && state.consecutive_failures < FAILURES_BEFORE_FALLBACK
            }
            _ => false,
        }
    }

    /// The answer to a [`Command::ListMachines`].
    pub fn handle_machines(&mut self, runner: RunnerIdx, listing: MachineListing, now: Instant) {
        let Some(config) = self.watch.config else {
            return;
        };
        let worked = self.signal_works(runner);
        let Some(state) = self.watch.runners.get_mut(runner) else {
            return;
        };
        state.in_flight = false;
        let mut wake = Vec::new();
        match listing {
            MachineListing::Unsupported => {
                state.unsupported = true;
                state.consecutive_failures = 0;
                state.next_at = Some(now + config.redetect_after);
            }
            MachineListing::Failed => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            }
            MachineListing::Listed { ended } => {
                state.unsupported = false;
                state.consecutive_failures = 0;
                for (key, job) in self.jobs.iter() {
                    if key.runner != runner
                        || !matches!(job.stage, Stage::Launching { .. } | Stage::Running)
                    {
                        continue;
                    }
                    if !job.app_id().is_some_and(|app| ended.contains(app)) {
                        continue;
                    }
                    let watch = self.watch.jobs.entry(*key).or_default();
                    if watch.contradicted || watch.machine_ended {
                        continue;
                    }
                    watch.machine_ended = true;
                    wake.push(*key);
                }
            }
        }
        if worked && !self.signal_works(runner) {
            // Paced checks were far apart on the strength of the signal:
            // pace them again without it.
            for (key, watch) in self.watch.jobs.iter_mut() {
                if key.runner == runner {
                    watch.due = None;
                    wake.push(*key);
                }
            }
        }
        for key in wake {
            self.wake_now(key);
        }
        self.drive(now);
    }

    /// A job whose next step waits for a time is stepped at once instead.
    fn wake_now(&mut self, key: JobKey) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.busy {
            // Its outcome steps it again.
            return;
        }
        if let Some(at) = job.next_step_at.take() {
            self.wakeups.remove(&(at, key));
        }
        self.ready.insert(key);
    }

    /// Sends the listings that are due.
    pub(super) fn start_listings(&mut self, now: Instant) {
        let Some(interval) = self.watch.config.and_then(|config| config.listing_interval) else {
            return;
        };
        if self.shutting_down {
            return;
        }
        for runner in 0..self.watch.runners.len() {
            let state = &self.watch.runners[runner];
            if state.in_flight || state.next_at.is_some_and(|at| at > now) {
                continue;
            }
            let watched = self.jobs.values().any(|job| {
                job.key.runner == runner
                    && matches!(job.stage, Stage::Launching { .. } | Stage::Running)
                    && job.app_id().is_some()
            });
            let state = &mut self.watch.runners[runner];
            if !watched {
                // Nothing to watch: the next launch drives a listing.
                state.next_at = None;
                continue;
            }
            state.in_flight = true;
            state.next_at = Some(now + interval);
            self.commands.push_back(Command::ListMachines { runner });
        }
    }

    /// The next step of a running job under a [`WatchConfig`]: a status
    /// check if the signal says its machine ended or its paced check is
    /// due, else a wake-up when it will be.
    pub(super) fn step_running(&mut self, key: JobKey, now: Instant) {
        let Some(config) = self.watch.config else {
            return;
        };
        let signal = self.signal_works(key.runner);
        let watch = self.watch.jobs.entry(key).or_default();
        let check = if watch.machine_ended && !watch.contradicted {
            match watch.signal_retry_at {
                Some(at) if at > now => {
                    self.wake_at(key, at);
                    return;
                }
                _ => {
                    watch.signal_retry_at = None;
                    watch.check_for_signal = true;
                    true
                }
            }
        } else {
            let due = *watch.due.get_or_insert_with(|| {
                now + config.check_delay(signal && !watch.contradicted, watch.checks)
            });
            if due > now {
                self.wake_at(key, due);
                return;
            }
            watch.due = None;
            watch.check_for_signal = false;
            true
        };
        if !check {
            return;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.busy = true;
        let command = Command::CheckStatus {
            job: key,
            token: job.token.clone(),
        };
        self.commands.push_back(command);
    }

    /// Whether the first launch check of a job deployed at `since` waits a
    /// moment ([`FIRST_LAUNCH_CHECK_AFTER`], at most one `poll_step`: the
    /// machine was just pushed to and cannot have started the job at once);
    /// a machine that ends sooner is checked when the batch signal says so.
    /// Returns whether the check was deferred.
    pub(super) fn defer_first_launch_check(
        &mut self,
        key: JobKey,
        since: Instant,
        now: Instant,
    ) -> bool {
        if since != now {
            return false;
        }
        if self
            .watch
            .jobs
            .get(&key)
            .is_some_and(|watch| watch.machine_ended)
        {
            return false;
        }
        let Some(launch_watch) = self.runners[key.runner].spec.launch_watch else {
            return false;
        };
        let first = launch_watch
            .poll_step
            .min(FIRST_LAUNCH_CHECK_AFTER)
            .min(launch_watch.timeout);
        if first.is_zero() {
            return false;
        }
        self.wake_at(key, now + first);
        true
    }

    /// After a status check that found the job running (or could not
    /// tell): when the next one is.
    pub(super) fn after_running_check(&mut self, key: JobKey, check: StatusCheck, now: Instant) {
        let Some(config) = self.watch.config else {
            return;
        };
        let watch = self.watch.jobs.entry(key).or_default();
        let for_signal = std::mem::take(&mut watch.check_for_signal);
        match (check, for_signal) {
            (StatusCheck::Error, true) => {
                // The machine ended; ask the coordinator again soon.
                watch.signal_retry_at = Some(now + config.first_interval);
            }
            (_, true) => {
                watch.machine_ended = false;
                watch.contradicted = true;
                watch.checks = watch.checks.saturating_add(1);
            }
            (_, false) => {
                watch.checks = watch.checks.saturating_add(1);
            }
        }
        watch.due = None;
        self.ready.insert(key);
    }
}
