//! The dispatcher state machine: which runner to poll, whether a job fits the
//! quota, what to do next for each job, what to persist, when to give up.
//!
//! Inputs arrive through `handle_*` methods with the current time; outputs
//! leave through [`Dispatcher::poll_command`]. The caller owns the clock
//! ([`Dispatcher::poll_timeout`] says when to call
//! [`Dispatcher::handle_timeout`]) and all IO.
//!
//! Durability rule: a [`Command::Save`] describing a job's new stage is
//! emitted *before* the command that performs the stage's side effect, so a
//! caller that executes commands in order has always recorded an intent
//! before acting on it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::flavor::{Flavor, FlavorTable};
use crate::job::{App, Failure, FailureKind, Job, JobKey, NewJob, Resource, RunnerIdx, Stage};
use crate::messages;
use crate::naming::{self, AppOwner};
use crate::record::{JobRecord, StageRecord};
use crate::secret::Secret;

/// Takes the job of an outcome out of `busy`; returns from the handler if the
/// job is unknown (already forgotten).
macro_rules! outcome_job {
    ($self:ident, $key:expr) => {
        match $self.jobs.get_mut(&$key) {
            Some(job) => {
                job.busy = false;
                job
            }
            None => return,
        }
    };
}

mod command;
mod deploy;
mod lifecycle;
mod notices;
mod polling;
mod quota;
mod reconcile;
pub mod reload;
mod restore;
mod retry;
mod settings;
mod watch;
pub use command::{
    Command, ConfirmCheck, LaunchCheck, ListedApp, Notice, PollOutcome, ReadyCheck, StatusCheck,
    StepOutcome,
};
pub use polling::{LongPolling, PollAnswer, LONG_POLL_EVIDENCE};
pub use quota::{PollHold, Stats};
pub use reconcile::{old_enough, OrphanVerdict, TrackedApps};
use reconcile::{ForeignApp, Orphan};
pub use retry::{backoff, MAX_BACKOFF, REPORT_ATTEMPTS, STEP_ATTEMPTS};
pub use settings::{DispatcherConfig, LaunchWatch, ReadyWait, RunnerSpec};
pub use watch::{MachineListing, WatchConfig};

/// Tolerance for floating-point weight comparisons.
const EPSILON: f64 = 1e-9;
/// How often every runner's flavor catalogue is read again
/// ([`Command::RefreshFlavors`]).
pub const FLAVOR_REFRESH: Duration = Duration::from_secs(3600);
/// The shortest period of the cancellation watch during a deployment.
pub const MIN_DEPLOY_WATCH: Duration = Duration::from_millis(500);
/// The shortest time between two readiness checks of a machine.
pub const MIN_READY_STEP: Duration = Duration::from_millis(10);
/// How long the readiness check made at the end of a machine's wait may
/// take beyond the wait's configured length.
pub const LAST_CHECK_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct RunnerState {
    spec: RunnerSpec,
    poll_in_flight: bool,
    /// Weight reserved for the job the in-flight poll may bring.
    reserved: f64,
    next_poll_at: Option<Instant>,
    /// When the in-flight (or last) poll was sent.
    poll_sent_at: Option<Instant>,
    consecutive_errors: u32,
    /// What its coordinator's answers showed of long polling.
    long_polling: LongPolling,
    /// Removed by a configuration reload: no more polls nor listings; its
    /// jobs run to their end ([`reload`]).
    retired: bool,
}
/// The dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    config: DispatcherConfig,
    runners: Vec<RunnerState>,
    jobs: BTreeMap<JobKey, Job>,
    /// Jobs whose next step can be decided now.
    ready: BTreeSet<JobKey>,
    /// Jobs waiting for a time.
    wakeups: BTreeSet<(Instant, JobKey)>,
    /// Jobs waiting for the launch spacing.
    launch_queue: VecDeque<JobKey>,
    next_launch_at: Option<Instant>,
    commands: VecDeque<Command>,
    /// Runner to consider first at the next polling round (fairness).
    poll_cursor: usize,
    /// Applications no job accounts for, by id, until deleted.
    orphans: BTreeMap<String, Orphan>,
    /// Untracked applications already reported while resources are kept.
    kept_reported: BTreeSet<String>,
    /// Applications of other owners (or unmarked) under the runners' name
    /// prefixes, by id, as of each runner's last listing.
    foreign: BTreeMap<String, ForeignApp>,
    /// Listings started so far; each listing takes the next number.
    list_generation: u64,
    /// Per runner: the number of its listing under way (or last).
    list_started: Vec<u64>,
    /// Per job whose application exists: the value of `list_generation`
    /// when that became known. A listing started later must show it.
    exists_since: BTreeMap<JobKey, u64>,
    /// Jobs whose application a listing found gone, acted on at their next
    /// step (a command in flight is let finish first).
    vanished: BTreeMap<JobKey, String>,
    /// Deployments under way (`deploy.rs`).
    deployments: BTreeMap<JobKey, deploy::Deployment>,
    /// When jobs being deployed are due a check that they are not over.
    job_watches: BTreeSet<(Instant, JobKey)>,
    /// When jobs are due a slow-launch notice.
    notice_wakeups: BTreeSet<(Instant, JobKey)>,
    /// Next reading of the flavor catalogues (set at the first drive).
    next_flavor_refresh_at: Option<Instant>,
    /// Next reconciliation, and whether one is under way per runner.
    next_reconcile_at: Option<Instant>,
    listing: Vec<bool>,
    /// Runners whose first listing (in this process) has not been
    /// answered: no runner polls before, so that applications left by an
    /// earlier process count in the quota before anything new is taken.
    unlisted: Vec<bool>,
    shutting_down: bool,
    /// How launched jobs are watched (`watch.rs`).
    watch: watch::Watch,
    acquired_total: u64,
    launched_total: u64,
    failed_total: u64,
    done_total: u64,
}
impl Dispatcher {
    pub fn new(config: DispatcherConfig, runners: Vec<RunnerSpec>) -> Self {
        let runner_count = runners.len();
        Dispatcher {
            config,
            runners: runners
                .into_iter()
                .map(|spec| RunnerState {
                    spec,
                    poll_in_flight: false,
                    reserved: 0.0,
                    next_poll_at: None,
                    poll_sent_at: None,
                    consecutive_errors: 0,
                    long_polling: LongPolling::default(),
                    retired: false,
                })
                .collect(),
            jobs: BTreeMap::new(),
            ready: BTreeSet::new(),
            wakeups: BTreeSet::new(),
            launch_queue: VecDeque::new(),
            next_launch_at: None,
            commands: VecDeque::new(),
            poll_cursor: 0,
            orphans: BTreeMap::new(),
            kept_reported: BTreeSet::new(),
            foreign: BTreeMap::new(),
            list_generation: 0,
            list_started: vec![0; runner_count],
            exists_since: BTreeMap::new(),
            vanished: BTreeMap::new(),
            notice_wakeups: BTreeSet::new(),
            deployments: BTreeMap::new(),
            job_watches: BTreeSet::new(),
            next_flavor_refresh_at: None,
            next_reconcile_at: None,
            listing: vec![false; runner_count],
            unlisted: vec![true; runner_count],
            shutting_down: false,
            watch: watch::Watch::default(),
            acquired_total: 0,
            launched_total: 0,
            failed_total: 0,
            done_total: 0,
        }
    }

    /// Stop acquiring jobs. In-flight commands should be let complete; the
    /// caller exits once [`Dispatcher::is_quiescent`] holds. No new step is
    /// started: every job stays durably where it is and is resumed at the
    /// next start.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Nothing in flight: safe to exit after a shutdown.
    pub fn is_quiescent(&self) -> bool {
        !self.runners.iter().any(|r| r.poll_in_flight)
            && !self.jobs.values().any(|j| j.busy || j.notice_busy)
            && !self.listing.iter().any(|listing| *listing)
            && !self.orphans.values().any(|orphan| orphan.busy)
            && !self.watch.listing_in_flight()
            && !self.watch_in_flight()
    }

    pub fn config(&self) -> &DispatcherConfig {
        &self.config
    }

    pub fn runner(&self, idx: RunnerIdx) -> &RunnerSpec {
        &self.runners[idx].spec
    }

    pub fn runner_count(&self) -> usize {
        self.runners.len()
    }

    pub fn job(&self, key: JobKey) -> Option<&Job> {
        self.jobs.get(&key)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Replaces a runner's flavor catalogue (refreshed from the cloud).
    pub fn handle_flavors(&mut self, runner: RunnerIdx, flavors: FlavorTable, now: Instant) {
        self.runners[runner].spec.flavors = flavors;
        self.drive(now);
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Dispatcher::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let job_wakeup = self.wakeups.iter().next().map(|(at, _)| *at);
        let poll_wakeup = if self.shutting_down {
            None
        } else {
            self.runners
                .iter()
                .filter(|r| !r.poll_in_flight)
                .filter_map(|r| r.next_poll_at)
                .min()
        };
        let launch_wakeup = if self.launch_queue.is_empty() || self.shutting_down {
            None
        } else {
            self.next_launch_at
        };
        let reconcile_wakeup = if self.shutting_down || self.config.reconcile_interval.is_zero() {
            None
        } else {
            self.next_reconcile_at
        };
        let notice_wakeup = if self.shutting_down {
            None
        } else {
            self.notice_wakeups.iter().next().map(|(at, _)| *at)
        };
        let orphan_wakeup = if self.shutting_down {
            None
        } else {
            self.orphans
                .values()
                .filter(|orphan| !orphan.busy && !orphan.failed)
                .filter_map(|orphan| orphan.deletable_at)
                .min()
        };
        let listing_wakeup = if self.shutting_down {
            None
        } else {
            self.watch.next_listing_at()
        };
        let job_watch_wakeup = if self.shutting_down {
            None
        } else {
            self.job_watches.iter().next().map(|(at, _)| *at)
        };
        let flavor_wakeup = if self.shutting_down {
            None
        } else {
            self.next_flavor_refresh_at
        };
        [
            job_wakeup,
            poll_wakeup,
            launch_wakeup,
            reconcile_wakeup,
            notice_wakeup,
            orphan_wakeup,
            listing_wakeup,
            flavor_wakeup,
            job_watch_wakeup,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.send_notices(now);
        self.send_job_watches(now);
        while let Some(&(at, key)) = self.wakeups.iter().next() {
            if at > now {
                break;
            }
            self.wakeups.remove(&(at, key));
            if let Some(job) = self.jobs.get_mut(&key) {
                if job.next_step_at.is_some_and(|t| t <= now) {
                    job.next_step_at = None;
                    self.ready.insert(key);
                }
            }
        }
        self.drive(now);
    }

    /// Asks for every runner's catalogue once [`FLAVOR_REFRESH`] has passed
    /// since the first drive (or the last refresh).
    fn refresh_flavors(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        match self.next_flavor_refresh_at {
            None => self.next_flavor_refresh_at = Some(now + FLAVOR_REFRESH),
            Some(at) if at <= now => {
                self.next_flavor_refresh_at = Some(now + FLAVOR_REFRESH);
                for runner in 0..self.runners.len() {
                    self.commands.push_back(Command::RefreshFlavors { runner });
                }
            }
            Some(_) => {}
        }
    }

    fn wake_at(&mut self, key: JobKey, at: Instant) {
        if let Some(job) = self.jobs.get_mut(&key) {
            if let Some(previous) = job.next_step_at.replace(at) {
                self.wakeups.remove(&(previous, key));
            }
            self.wakeups.insert((at, key));
            self.ready.remove(&key);
            if self.vanished.contains_key(&key) {
                // Its machine is gone: nothing to wait for.
                self.ready.insert(key);
            }
        }
    }

    fn save(&mut self, key: JobKey) {
        if let Some(job) = self.jobs.get(&key) {
            let record = JobRecord::from_job(job, &self.runners[key.runner].spec.key);
            self.commands.push_back(Command::Save(record));
        }
    }

    /// Starts whatever can start now.
    fn drive(&mut self, now: Instant) {
        self.refresh_flavors(now);
        self.start_reconciliation(now);
        self.delete_orphans(now);
        self.start_launches(now);
        self.start_listings(now);
        // A step can make a job ready again (a failure found while
        // stepping): loop until none is. Each such step changes the job's
        // stage, so this ends.
        while !self.ready.is_empty() {
            let ready = std::mem::take(&mut self.ready);
            for key in ready {
                self.step(key, now);
            }
        }
        self.start_polls(now);
    }
}
