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

mod polling;
pub mod reload;
mod watch;
pub use polling::{LongPolling, PollAnswer, LONG_POLL_EVIDENCE};
pub use watch::{MachineListing, WatchConfig};

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

/// Tolerance for floating-point weight comparisons.
const EPSILON: f64 = 1e-9;

/// Attempts for a step whose failures are transient (cloud 5xx, timeouts).
pub const STEP_ATTEMPTS: u32 = 5;
/// Attempts to report a failure to the coordinator.
pub const REPORT_ATTEMPTS: u32 = 5;
/// Cap of the backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often every runner's flavor catalogue is read again
/// ([`Command::RefreshFlavors`]).
pub const FLAVOR_REFRESH: Duration = Duration::from_secs(3600);
/// The shortest period of the cancellation watch during a deployment.
pub const MIN_DEPLOY_WATCH: Duration = Duration::from_millis(500);

/// Settings of the dispatcher (from the configuration file).
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Maximum number of jobs handled at once (`concurrent`).
    pub concurrent: usize,
    /// Time between polls of a runner that gave no job (`check_interval`).
    pub check_interval: Duration,
    /// Time between checks of a launched job's status on the coordinator.
    pub status_interval: Duration,
    /// Jobs between acquisition and confirmed launch, at most
    /// (`paas_max_concurrent_provisioning`).
    pub max_provisioning: usize,
    /// Minimum time between two provisioning starts
    /// (`paas_min_seconds_between_launches`).
    pub min_between_launches: Duration,
    /// Do not delete applications of finished jobs
    /// (`paas_finished_jobs_keep_resources`).
    pub keep_resources: bool,
    /// Delete applications of jobs whose launch failed
    /// (`paas_decommission_launch_failures`).
    pub decommission_launch_failures: bool,
    /// Poll a runner again at once when it just gave a job
    /// (`paas_repoll_same_runner_immediately`).
    pub repoll_immediately: bool,
    /// The weighted quota.
    pub quota: f64,
    /// No runner may use more than this fraction of the quota
    /// (`allowed_fraction_per_runner`).
    pub allowed_fraction_per_runner: f64,
    /// Time between reconciliations (listing the cloud's applications to
    /// adopt or delete what no job accounts for). Zero turns them off.
    pub reconcile_interval: Duration,
    /// An application of this installation that no job accounts for is
    /// deleted only once it is this old (`paas_orphan_min_age`; zero: at
    /// once); one whose age is unknown never is.
    pub orphan_min_age: Duration,
    /// A job not launched this long after its acquisition gets one line in
    /// its log saying what is being prepared (zero: never). Such bytes cost
    /// the inner runner as many of its own first bytes (it starts writing at
    /// offset 0 and skips to the end on a range mismatch), so this is only
    /// for abnormally slow launches.
    pub slow_notice_after: Duration,
}

/// What the dispatcher knows of one `[[runners]]` entry.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    /// Short id: the first 8 characters of the runner token.
    pub key: String,
    pub name: String,
    pub quota_max_fraction: f64,
    pub default_flavor: String,
    pub max_flavor: Option<String>,
    pub flavors: FlavorTable,
    /// Watch the job log to confirm launches (needs the watch token).
    pub launch_watch: Option<LaunchWatch>,
    /// Cloud zone of the machines (for messages to users).
    pub zone: String,
    /// The most jobs of this runner at once (gitlab-runner's per-runner
    /// `limit`); `None`: only the global limits apply.
    pub limit: Option<usize>,
    /// How often the coordinator is asked whether a job is over while its
    /// machine gets ready ([`Command::Deploy`]'s `watch_every`, at least
    /// [`MIN_DEPLOY_WATCH`]).
    pub deploy_watch: Duration,
}

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

impl RunnerSpec {
    /// Weight of the largest job this runner may receive: the most a poll
    /// can bring, hence what a poll must find room for.
    pub fn max_job_weight(&self) -> f64 {
        match self
            .max_flavor
            .as_deref()
            .and_then(|name| self.flavors.get(name))
        {
            Some(flavor) => flavor.weight(),
            None => self.flavors.max_weight().unwrap_or(0.0),
        }
    }

    /// Name of the application of a job: deterministic, so that a restarted
    /// process can find what a previous one created.
    pub fn app_name(&self, job_id: u64) -> String {
        naming::app_name(&self.key, job_id)
    }
}

/// Launch confirmation by watching the job log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaunchWatch {
    pub timeout: Duration,
    pub poll_step: Duration,
}

/// Something for the caller to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Ask the runner's coordinator for a job.
    RequestJob { runner: RunnerIdx },
    /// Tell the coordinator we run the job (two-phase commit: sent once the
    /// job is recorded; a keep-alive on coordinators without it).
    ConfirmJob { job: JobKey, token: Secret },
    /// List the runner's applications in the cloud (reconciliation).
    ListApps { runner: RunnerIdx },
    /// Delete an application that no job accounts for.
    DeleteOrphan {
        runner: RunnerIdx,
        app_id: String,
        name: String,
        created_ms: Option<i64>,
    },
    /// Persist this job record (insert or replace) before the next commands.
    Save(JobRecord),
    /// The job is over: drop its record.
    Forget(JobKey),
    /// Create the job's application, set its environment. `may_exist`: a
    /// creation may have happened before (the job's resource was
    /// [`Resource::Maybe`]): adopt an application of that name owned by
    /// this installation rather than create a second one.
    CreateApp {
        job: JobKey,
        name: String,
        flavor: Flavor,
        may_exist: bool,
    },
    /// Wait until the application's repository is ready and push the build
    /// context (idempotent: skip the push if the repository has a head).
    /// While the repository gets ready (not during the push), ask the
    /// coordinator every `watch_every` whether the job is over, and answer
    /// [`Dispatcher::handle_job_over`] if it is.
    Deploy {
        job: JobKey,
        app_id: String,
        payload: String,
        watch_every: Duration,
    },
    /// Has the inner runner written to the job log yet, that is, is it
    /// longer than the `own_log_bytes` we wrote ourselves?
    CheckLaunch {
        job: JobKey,
        project_id: Option<u64>,
        own_log_bytes: u64,
    },
    /// Append an informative line to the log of a job that is slow to
    /// start (not a failure).
    AppendNotice {
        job: JobKey,
        token: Secret,
        text: String,
    },
    /// Is the job still running on the coordinator?
    CheckStatus { job: JobKey, token: Secret },
    /// List the runner's machines in the cloud: which ones' tasks ended
    /// (the batch signal of [`WatchConfig`]); answer with
    /// [`Dispatcher::handle_machines`].
    ListMachines { runner: RunnerIdx },
    /// Append complete lines to the job log.
    AppendLog {
        job: JobKey,
        token: Secret,
        text: String,
    },
    /// Report the job failed to the coordinator.
    ReportFailure {
        job: JobKey,
        token: Secret,
        kind: FailureKind,
        failure_reasons: Option<Vec<String>>,
    },
    /// Delete the job's application: by id if known, else every application
    /// carrying `name`.
    DeleteApp {
        job: JobKey,
        app_id: Option<String>,
        name: String,
    },
    /// Read the runner's flavor catalogue again and answer
    /// [`Dispatcher::handle_flavors`] (a failed read keeps the current one).
    RefreshFlavors { runner: RunnerIdx },
    /// Something worth telling operators (logs, metrics, progress).
    Notice(Notice),
}

/// Facts for logs, metrics and progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Acquired {
        job: JobKey,
        flavor: String,
        weight: f64,
    },
    Launched {
        job: JobKey,
    },
    Finished {
        job: JobKey,
    },
    Failed {
        job: JobKey,
        message: String,
    },
    Retrying {
        job: JobKey,
        step: &'static str,
        attempt: u32,
        max_attempts: u32,
        delay: Duration,
    },
    Decommissioned {
        job: JobKey,
    },
    GaveUp {
        job: JobKey,
        step: &'static str,
    },
    /// The coordinator no longer offers the job to us (two-phase commit
    /// window lapsed, cancelled before we started).
    Withdrawn {
        job: JobKey,
    },
    /// An application of a tracked job, whose creation outcome was unknown,
    /// was found and adopted.
    Adopted {
        job: JobKey,
        app_id: String,
    },
    /// An application no job accounts for was found.
    Orphan {
        runner: RunnerIdx,
        app_id: String,
        name: String,
    },
    /// An application under the runner's name prefix that this
    /// installation does not own (another owner's, or unmarked) was found:
    /// counted in the quota, never deleted.
    Foreign {
        runner: RunnerIdx,
        app_id: String,
        name: String,
        owner: AppOwner,
        /// Its age when listed, if known.
        age: Option<Duration>,
    },
    /// The application of a job under way is gone from the cloud although
    /// nothing here deleted it: the job is failed.
    MachineVanished {
        job: JobKey,
        app_id: String,
    },
}

/// Result of a job confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmCheck {
    Confirmed,
    /// The job is not ours to run.
    Gone,
    /// The coordinator could not answer.
    Error,
}

/// An application of the runner found in the cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedApp {
    pub id: String,
    pub name: String,
    pub weight: f64,
    pub created_ms: Option<i64>,
    /// Whose it is, by the marker in its description.
    pub owner: AppOwner,
    /// How old it was when listed (`None`: unknown).
    pub age: Option<Duration>,
}

/// An application under a runner's name prefix that is not ours.
#[derive(Debug, Clone)]
struct ForeignApp {
    runner: RunnerIdx,
    weight: f64,
}

#[derive(Debug, Clone)]
struct Orphan {
    runner: RunnerIdx,
    name: String,
    weight: f64,
    created_ms: Option<i64>,
    /// When it is old enough to be deleted (`None`: its age is unknown, it
    /// is never deleted).
    deletable_at: Option<Instant>,
    busy: bool,
    /// Its last deletion failed: tried again at the next reconciliation
    /// only (not at every drive, which would hammer a failing API).
    failed: bool,
}

/// Result of a job request.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    Job(NewJob),
    /// The coordinator handed over a job whose payload is larger than the
    /// runner accepts: only its id and token could be read (from the start
    /// of the payload, where GitLab puts them). The job is failed with a
    /// message saying so, as a job of the user's making (`script_failure`:
    /// retrying the same job would fail the same way).
    JobTooLarge {
        job_id: u64,
        token: Secret,
        /// The limit the payload exceeded, for the message.
        limit_bytes: u64,
    },
    NoJob,
    /// No job, and the next request will be held by the coordinator until a
    /// job may be there (Workhorse long polling): poll again at once.
    NoJobPollAgain,
    /// The coordinator could not answer (transient) or refused (not).
    Error {
        transient: bool,
    },
    /// The request was abandoned (shutdown).
    Cancelled,
}

/// Result of a step performed against the cloud or the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome<T> {
    Done(T),
    /// Failed; `transient` failures are retried within a budget
    /// ([`STEP_ATTEMPTS`], [`backoff`] between attempts). A failure that is
    /// not transient fails the job at once: so must a step whose own wait
    /// already lasted its configured time (a deployment repository not
    /// ready within `cc_deployment_repo_timeout`), or the job would fail
    /// several times that time after the cause, with a message stating a
    /// time that is not the real one. `user_message` is what the CI user
    /// reads if the job fails of it.
    Failed {
        transient: bool,
        user_message: String,
    },
}

/// Result of a launch check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchCheck {
    /// The inner runner wrote to the job log.
    Started,
    NotYet,
    /// The job is already over on the coordinator (e.g. cancelled).
    JobOver,
}

/// Result of a status check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCheck {
    Running,
    Finished,
    Error,
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
                payload: record.payload.clone(),
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
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.send_notices(now);
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

    // ----- inputs -----

    pub fn handle_poll(&mut self, runner: RunnerIdx, outcome: PollOutcome, now: Instant) {
        let state = &mut self.runners[runner];
        debug_assert!(state.poll_in_flight, "poll result without a poll");
        state.poll_in_flight = false;
        state.reserved = 0.0;
        let check_interval = self.config.check_interval;
        match outcome {
            PollOutcome::Job(new_job) => {
                state.consecutive_errors = 0;
                state.next_poll_at = Some(if self.config.repoll_immediately {
                    now
                } else {
                    now + check_interval
                });
                self.accept_job(runner, new_job, None, now);
            }
            PollOutcome::JobTooLarge {
                job_id,
                token,
                limit_bytes,
            } => {
                state.consecutive_errors = 0;
                state.next_poll_at = Some(if self.config.repoll_immediately {
                    now
                } else {
                    now + check_interval
                });
                let new_job = NewJob {
                    job_id,
                    token,
                    project_id: None,
                    requested_flavor: None,
                    failure_reasons: None,
                    payload: String::new(),
                };
                let failure = Failure {
                    kind: FailureKind::User,
                    message: messages::payload_too_large(limit_bytes),
                };
                self.accept_job(runner, new_job, Some(failure), now);
            }
            PollOutcome::NoJob => {
                state.consecutive_errors = 0;
                // One poll per check_interval, counted from when it was sent:
                // a request the coordinator held (long polling) already
                // waited, and is followed by the next one at once.
                let due = state.poll_sent_at.map_or(now, |sent| sent + check_interval);
                state.next_poll_at = Some(due.max(now));
            }
            PollOutcome::NoJobPollAgain => {
                // The coordinator holds requests (long polling): the next
                // one waits there for a job rather than here.
                state.consecutive_errors = 0;
                state.next_poll_at = Some(now);
            }
            PollOutcome::Error { transient } => {
                state.consecutive_errors = state.consecutive_errors.saturating_add(1);
                let factor = if transient {
                    1
                } else {
                    1u32 << state.consecutive_errors.min(5)
                };
                state.next_poll_at =
                    Some(now + (check_interval * factor).min(MAX_BACKOFF.max(check_interval)));
            }
            PollOutcome::Cancelled => {
                state.next_poll_at = Some(now);
            }
        }
        self.drive(now);
    }

    pub fn handle_created(&mut self, key: JobKey, outcome: StepOutcome<App>, now: Instant) {
        let job = outcome_job!(self, key);
        match outcome {
            StepOutcome::Done(app) => {
                job.resource = Resource::Exists(app);
                job.attempts = 0;
                job.stage = Stage::Deploying;
                self.exists_since.insert(key, self.list_generation);
                self.save(key);
            }
            StepOutcome::Failed {
                transient,
                user_message,
            } => {
                // The creation may have taken effect although it failed.
                job.resource = Resource::Maybe;
                self.retry_or_fail(
                    key,
                    "create application",
                    STEP_ATTEMPTS,
                    transient,
                    user_message,
                    now,
                );
            }
        }
        self.ready.insert(key);
        self.drive(now);
    }

    pub fn handle_deployed(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        let job = outcome_job!(self, key);
        match outcome {
            StepOutcome::Done(()) => {
                job.attempts = 0;
                if self.runners[key.runner].spec.launch_watch.is_some() {
                    job.stage = Stage::Launching { since: now };
                } else {
                    // Without a way to watch the log, assume the launch
                    // worked, like heptapod-paas-runner does.
                    job.stage = Stage::Running;
                    self.launched_total += 1;
                    self.commands
                        .push_back(Command::Notice(Notice::Launched { job: key }));
                }
                self.save(key);
            }
            StepOutcome::Failed {
                transient,
                user_message,
            } => {
                self.retry_or_fail(key, "deploy", STEP_ATTEMPTS, transient, user_message, now);
            }
        }
        self.ready.insert(key);
        self.drive(now);
    }

    pub fn handle_launch_check(&mut self, key: JobKey, check: LaunchCheck, now: Instant) {
        let job = outcome_job!(self, key);
        let Stage::Launching { since } = job.stage else {
            self.ready.insert(key);
            self.drive(now);
            return;
        };
        let watch = self.runners[key.runner].spec.launch_watch;
        let job_flavor = job.flavor.clone();
        match check {
            LaunchCheck::Started => {
                job.stage = Stage::Running;
                self.launched_total += 1;
                self.commands
                    .push_back(Command::Notice(Notice::Launched { job: key }));
                self.save(key);
                self.ready.insert(key);
            }
            LaunchCheck::JobOver => {
                job.stage = Stage::Decommissioning;
                self.save(key);
                self.ready.insert(key);
            }
            LaunchCheck::NotYet => {
                let watch = watch.unwrap_or(LaunchWatch {
                    timeout: Duration::ZERO,
                    poll_step: Duration::ZERO,
                });
                if now.saturating_duration_since(since) >= watch.timeout {
                    let failure = Failure {
                        kind: FailureKind::System,
                        message: messages::launch_timeout(
                            watch.timeout,
                            self.runners[key.runner].spec.flavors.get(&job_flavor),
                            &self.runners[key.runner].spec.zone,
                        ),
                    };
                    self.fail(key, failure);
                    self.ready.insert(key);
                } else {
                    let next = (now + watch.poll_step).min(since + watch.timeout);
                    self.wake_at(key, next);
                }
            }
        }
        self.drive(now);
    }

    pub fn handle_status(&mut self, key: JobKey, check: StatusCheck, now: Instant) {
        let job = outcome_job!(self, key);
        match check {
            StatusCheck::Finished => {
                self.commands
                    .push_back(Command::Notice(Notice::Finished { job: key }));
                job.stage = Stage::Decommissioning;
                self.save(key);
                self.ready.insert(key);
            }
            StatusCheck::Running | StatusCheck::Error if self.watch.is_paced() => {
                self.after_running_check(key, check, now);
            }
            StatusCheck::Running | StatusCheck::Error => {
                let next = now + self.config.status_interval;
                self.wake_at(key, next);
            }
        }
        self.drive(now);
    }

    pub fn handle_log_appended(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        outcome_job!(self, key);
        let written = match outcome {
            StepOutcome::Done(()) => true,
            StepOutcome::Failed { transient, .. } => {
                if self.retry_later(key, "write job log", STEP_ATTEMPTS, transient, now) {
                    self.drive(now);
                    return;
                }
                self.commands.push_back(Command::Notice(Notice::GaveUp {
                    job: key,
                    step: "write job log",
                }));
                // Give up on the log; the failure report still goes out.
                true
            }
        };
        if let Some(job) = self.jobs.get_mut(&key) {
            if let Stage::Failing {
                message_written, ..
            } = &mut job.stage
            {
                *message_written = written;
            }
            job.attempts = 0;
        }
        self.save(key);
        self.ready.insert(key);
        self.drive(now);
    }

    pub fn handle_failure_reported(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        outcome_job!(self, key);
        if let StepOutcome::Failed { transient, .. } = outcome {
            if self.retry_later(key, "report failure", REPORT_ATTEMPTS, transient, now) {
                self.drive(now);
                return;
            }
            self.commands.push_back(Command::Notice(Notice::GaveUp {
                job: key,
                step: "report failure",
            }));
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.attempts = 0;
        let keep = matches!(job.resource, Resource::Exists(_))
            && !self.config.decommission_launch_failures;
        if matches!(job.resource, Resource::None) || keep {
            self.finish(key);
        } else {
            job.stage = Stage::Decommissioning;
            self.save(key);
            self.ready.insert(key);
        }
        self.drive(now);
    }

    pub fn handle_deleted(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        let job = outcome_job!(self, key);
        match outcome {
            StepOutcome::Done(()) => {
                job.resource = Resource::None;
                self.commands
                    .push_back(Command::Notice(Notice::Decommissioned { job: key }));
                self.finish(key);
            }
            StepOutcome::Failed { .. } => {
                // Never give up on a deletion: a leaked application costs money.
                job.attempts = job.attempts.saturating_add(1);
                let delay = backoff(job.attempts);
                let attempt = job.attempts;
                self.wake_at(key, now + delay);
                self.commands.push_back(Command::Notice(Notice::Retrying {
                    job: key,
                    step: "delete application",
                    attempt,
                    max_attempts: 0,
                    delay,
                }));
            }
        }
        self.drive(now);
    }

    // ----- decisions -----

    pub fn handle_confirmed(&mut self, key: JobKey, check: ConfirmCheck, now: Instant) {
        outcome_job!(self, key);
        match check {
            ConfirmCheck::Confirmed => self.confirm(key),
            ConfirmCheck::Gone => {
                // Nothing was created before the confirmation.
                self.commands
                    .push_back(Command::Notice(Notice::Withdrawn { job: key }));
                self.finish(key);
            }
            ConfirmCheck::Error => {
                if !self.retry_later(key, "confirm job", REPORT_ATTEMPTS, true, now) {
                    // Without two-phase commit the job already runs on the
                    // coordinator: going on is the only way not to strand it.
                    // With it, the coordinator drops the job and the inner
                    // runner is refused; the status checks then clean up.
                    self.commands.push_back(Command::Notice(Notice::GaveUp {
                        job: key,
                        step: "confirm job",
                    }));
                    self.confirm(key);
                }
            }
        }
        self.drive(now);
    }

    fn confirm(&mut self, key: JobKey) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.confirmed = true;
        job.attempts = 0;
        if job.stage == Stage::Queued {
            self.launch_queue.push_back(key);
        }
        self.save(key);
        self.ready.insert(key);
    }

    /// The coordinator says the job is over (cancelled, failed, timed out)
    /// while a step was under way for it: the step's outcome will not come;
    /// whatever was created is deleted.
    pub fn handle_job_over(&mut self, key: JobKey, now: Instant) {
        let job = outcome_job!(self, key);
        job.attempts = 0;
        self.launch_queue.retain(|queued| *queued != key);
        self.commands
            .push_back(Command::Notice(Notice::Finished { job: key }));
        let job = outcome_job!(self, key);
        if matches!(job.resource, Resource::None) {
            self.finish(key);
        } else {
            job.stage = Stage::Decommissioning;
            self.save(key);
            self.ready.insert(key);
        }
        self.drive(now);
    }

    /// The applications of a runner found in the cloud (`None`: the listing
    /// failed; it is tried again at the next reconciliation).
    ///
    /// Applications of this installation that no job accounts for are
    /// deleted once `orphan_min_age` old; those of other owners, or without
    /// owner marker, are reported and counted in the quota, never deleted.
    /// A job under way whose application is missing from a listing started
    /// after the application was known to exist is failed.
    pub fn handle_app_list(
        &mut self,
        runner: RunnerIdx,
        apps: Option<Vec<ListedApp>>,
        now: Instant,
    ) {
        if let Some(listing) = self.listing.get_mut(runner) {
            *listing = false;
        }
        if let Some(unlisted) = self.unlisted.get_mut(runner) {
            *unlisted = false;
        }
        let Some(apps) = apps else {
            self.drive(now);
            return;
        };
        let listed: BTreeSet<&str> = apps.iter().map(|app| app.id.as_str()).collect();
        // What is no longer listed is gone: it counts no more.
        self.orphans.retain(|id, orphan| {
            orphan.runner != runner || orphan.busy || listed.contains(id.as_str())
        });
        self.foreign
            .retain(|id, app| app.runner != runner || listed.contains(id.as_str()));
        self.find_vanished(runner, &listed);
        let runner_key = self.runners[runner].spec.key.clone();
        for app in apps {
            let Some(job_id) = naming::job_id_of(&app.name, &runner_key) else {
                continue;
            };
            let key = JobKey { runner, job_id };
            if self.tracked_by_other_runner(runner, job_id) {
                continue;
            }
            if let Some(Resource::Exists(existing)) = self.jobs.get(&key).map(|job| &job.resource) {
                if existing.id == app.id {
                    continue;
                }
            }
            if app.owner != AppOwner::Ours {
                self.note_foreign(runner, app);
                continue;
            }
            let adopt = match self.jobs.get(&key) {
                Some(job) => match &job.resource {
                    // A second application for one job: the extra one goes.
                    Resource::Exists(_) => false,
                    Resource::Maybe | Resource::None => {
                        !job.failed && !matches!(job.stage, Stage::Decommissioning)
                    }
                },
                None => false,
            };
            if adopt {
                if let Some(job) = self.jobs.get_mut(&key) {
                    job.resource = Resource::Exists(App {
                        id: app.id.clone(),
                        weight: app.weight,
                    });
                }
                self.exists_since.insert(key, self.list_generation);
                self.commands.push_back(Command::Notice(Notice::Adopted {
                    job: key,
                    app_id: app.id,
                }));
                self.save(key);
                self.ready.insert(key);
                continue;
            }
            if self.jobs.get(&key).is_some_and(|job| {
                matches!(job.resource, Resource::Maybe)
                    && matches!(job.stage, Stage::Decommissioning | Stage::Failing { .. })
            }) {
                // Its job already deletes every application of that name.
                continue;
            }
            if self.config.keep_resources || !self.config.decommission_launch_failures {
                // Applications are kept on purpose in this mode: report
                // them once, neither count nor delete them.
                if self.kept_reported.insert(app.id.clone()) {
                    self.commands.push_back(Command::Notice(Notice::Orphan {
                        runner,
                        app_id: app.id.clone(),
                        name: app.name.clone(),
                    }));
                }
                continue;
            }
            // Young applications may be a creation whose job this process
            // does not know yet (or no more): deleted only once old enough.
            let deletable_at = app
                .age
                .map(|age| now + self.config.orphan_min_age.saturating_sub(age));
            if let Some(orphan) = self.orphans.get_mut(&app.id) {
                orphan.deletable_at = deletable_at;
                continue;
            }
            self.commands.push_back(Command::Notice(Notice::Orphan {
                runner,
                app_id: app.id.clone(),
                name: app.name.clone(),
            }));
            self.orphans.insert(
                app.id.clone(),
                Orphan {
                    runner,
                    name: app.name,
                    weight: app.weight,
                    created_ms: app.created_ms,
                    deletable_at,
                    busy: false,
                    failed: false,
                },
            );
        }
        self.drive(now);
    }

    /// Records an application that is not ours; reports it the first time.
    fn note_foreign(&mut self, runner: RunnerIdx, app: ListedApp) {
        if self.foreign.contains_key(&app.id) {
            return;
        }
        self.foreign.insert(
            app.id.clone(),
            ForeignApp {
                runner,
                weight: app.weight,
            },
        );
        self.commands.push_back(Command::Notice(Notice::Foreign {
            runner,
            app_id: app.id,
            name: app.name,
            owner: app.owner,
            age: app.age,
        }));
    }

    /// Marks the jobs of `runner` whose application a listing should show
    /// but does not. Left out: jobs whose application became known after
    /// the listing started (a creation in flight), and jobs that delete it
    /// themselves or are failing already.
    fn find_vanished(&mut self, runner: RunnerIdx, listed: &BTreeSet<&str>) {
        let generation = self.list_started.get(runner).copied().unwrap_or(0);
        for job in self.jobs.values() {
            if job.key.runner != runner || job.failed {
                continue;
            }
            if !matches!(
                job.stage,
                Stage::Deploying | Stage::Launching { .. } | Stage::Running
            ) {
                continue;
            }
            let Some(app_id) = job.app_id() else {
                continue;
            };
            let known_before = self
                .exists_since
                .get(&job.key)
                .is_some_and(|since| *since < generation);
            if known_before && !listed.contains(app_id) {
                self.vanished.insert(job.key, app_id.to_owned());
                self.ready.insert(job.key);
            }
        }
    }

    /// The job's machine is gone (see [`Dispatcher::find_vanished`]): the
    /// job is failed with a message saying so, its weight released at once.
    /// Returns whether it was (the job may have moved on meanwhile).
    fn end_vanished(&mut self, key: JobKey, app_id: String) -> bool {
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        let still = !job.failed
            && job.app_id() == Some(app_id.as_str())
            && matches!(
                job.stage,
                Stage::Deploying | Stage::Launching { .. } | Stage::Running
            );
        if !still {
            return false;
        }
        job.resource = Resource::None;
        if let Some(at) = job.next_step_at.take() {
            self.wakeups.remove(&(at, key));
        }
        self.exists_since.remove(&key);
        self.commands
            .push_back(Command::Notice(Notice::MachineVanished {
                job: key,
                app_id: app_id.clone(),
            }));
        self.fail(
            key,
            Failure {
                kind: FailureKind::System,
                message: messages::machine_vanished(&app_id),
            },
        );
        self.ready.insert(key);
        true
    }

    /// Outcome of an orphan deletion (a failed one is tried again at the
    /// next reconciliation).
    pub fn handle_orphan_deleted(&mut self, app_id: &str, deleted: bool, now: Instant) {
        if deleted {
            self.orphans.remove(app_id);
        } else if let Some(orphan) = self.orphans.get_mut(app_id) {
            orphan.busy = false;
            orphan.failed = true;
        }
        self.drive(now);
    }

    /// Weight of applications no job accounts for: ours until deleted,
    /// and those of other owners (or unmarked) while listed. A machine of
    /// another installation under our runner key uses the same
    /// organisation: counting it keeps the organisation within the quota.
    pub fn orphan_weight(&self) -> f64 {
        self.orphans
            .values()
            .map(|orphan| orphan.weight)
            .sum::<f64>()
            + self.foreign.values().map(|app| app.weight).sum::<f64>()
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

    fn start_reconciliation(&mut self, now: Instant) {
        if self.shutting_down || self.config.reconcile_interval.is_zero() {
            return;
        }
        if self.next_reconcile_at.is_some_and(|at| at > now) {
            return;
        }
        self.next_reconcile_at = Some(now + self.config.reconcile_interval);
        for runner in 0..self.runners.len() {
            if !self.listing[runner] && !self.runners[runner].retired {
                self.listing[runner] = true;
                self.list_generation += 1;
                self.list_started[runner] = self.list_generation;
                self.commands.push_back(Command::ListApps { runner });
            }
        }
        for orphan in self.orphans.values_mut() {
            orphan.failed = false;
        }
    }

    /// Deletes orphans as soon as they are old enough (the periodic pass
    /// retries failed deletions).
    fn delete_orphans(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        for (app_id, orphan) in self.orphans.iter_mut() {
            let old_enough = orphan.deletable_at.is_some_and(|at| at <= now);
            if !orphan.busy && !orphan.failed && old_enough {
                orphan.busy = true;
                self.commands.push_back(Command::DeleteOrphan {
                    runner: orphan.runner,
                    app_id: app_id.clone(),
                    name: orphan.name.clone(),
                    created_ms: orphan.created_ms,
                });
            }
        }
    }

    /// Takes a job handed over by a coordinator; `preset_failure` fails it
    /// at once (nothing is provisioned), whatever its flavor.
    fn accept_job(
        &mut self,
        runner: RunnerIdx,
        new_job: NewJob,
        preset_failure: Option<Failure>,
        now: Instant,
    ) {
        let key = JobKey {
            runner,
            job_id: new_job.job_id,
        };
        if self.jobs.contains_key(&key) {
            // The coordinator handed the same job twice: keep the one we have.
            return;
        }
        let spec = &self.runners[runner].spec;
        let flavor_name = new_job
            .requested_flavor
            .clone()
            .unwrap_or_else(|| spec.default_flavor.clone());
        let max_weight = spec.max_job_weight();
        let flavor = spec.flavors.get(&flavor_name).cloned();
        let failure = match &flavor {
            _ if preset_failure.is_some() => preset_failure,
            None => Some(Failure {
                kind: FailureKind::User,
                message: messages::unknown_flavor(&flavor_name, &spec.flavors, max_weight),
            }),
            Some(flavor) if flavor.weight() > max_weight + EPSILON => Some(Failure {
                kind: FailureKind::User,
                message: messages::flavor_above_max(
                    &flavor_name,
                    spec.max_flavor.as_deref().unwrap_or_default(),
                    &spec.flavors,
                ),
            }),
            Some(_) => None,
        };
        let expected_weight = match (&failure, &flavor) {
            (None, Some(flavor)) => flavor.weight(),
            _ => 0.0,
        };
        let job = Job {
            key,
            token: new_job.token,
            project_id: new_job.project_id,
            payload: new_job.payload,
            failure_reasons: new_job.failure_reasons,
            flavor: flavor_name.clone(),
            expected_weight,
            stage: Stage::Queued,
            resource: Resource::None,
            busy: false,
            next_step_at: None,
            attempts: 0,
            failed: false,
            confirmed: false,
            acquired_at: now,
            log_bytes: 0,
            slow_notice_sent: false,
            notice_busy: false,
        };
        self.jobs.insert(key, job);
        self.acquired_total += 1;
        self.commands.push_back(Command::Notice(Notice::Acquired {
            job: key,
            flavor: flavor_name,
            weight: expected_weight,
        }));
        // Nothing happens for the job before the coordinator has been told
        // we run it (see `step`); a confirmed job then joins the launch queue.
        if let Some(failure) = failure {
            self.fail(key, failure);
        } else {
            self.schedule_notice(key, now);
        }
        self.save(key);
        self.ready.insert(key);
    }

    fn schedule_notice(&mut self, key: JobKey, now: Instant) {
        if !self.config.slow_notice_after.is_zero() {
            self.notice_wakeups
                .insert((now + self.config.slow_notice_after, key));
        }
    }

    /// Sends the slow-launch notices that are due.
    fn send_notices(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.notice_wakeups.iter().next() {
            if at > now {
                break;
            }
            self.notice_wakeups.remove(&(at, key));
            if self.shutting_down {
                continue;
            }
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            if job.slow_notice_sent || job.notice_busy || job.failed || !job.stage.is_provisioning()
            {
                continue;
            }
            if !job.confirmed {
                // Nothing may be written before the confirmation.
                self.notice_wakeups
                    .insert((now + Duration::from_secs(1), key));
                continue;
            }
            let spec = &self.runners[key.runner].spec;
            let waited = now.saturating_duration_since(job.acquired_at);
            let text = messages::yellow_lines(&messages::slow_launch(
                spec.flavors.get(&job.flavor),
                &spec.zone,
                waited.as_secs(),
                spec.launch_watch.map(|watch| watch.timeout.as_secs()),
            ));
            job.notice_busy = true;
            let command = Command::AppendNotice {
                job: key,
                token: job.token.clone(),
                text,
            };
            self.commands.push_back(command);
        }
    }

    /// Outcome of a slow-launch notice: the log's length after it, if it
    /// was written (a notice is not retried).
    pub fn handle_notice_written(&mut self, key: JobKey, log_length: Option<u64>, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.notice_busy = false;
        job.slow_notice_sent = true;
        if let Some(length) = log_length {
            // Only bytes written before the inner runner's count as ours:
            // the log is still ours alone while the job is not launched.
            if job.stage.is_provisioning() {
                job.log_bytes = job.log_bytes.max(length);
            }
        }
        self.save(key);
        self.drive(now);
    }

    /// Counts a failed attempt of `step`. A transient failure within
    /// `max_attempts` is retried after a backoff (and said so); returns
    /// whether it is.
    fn retry_later(
        &mut self,
        key: JobKey,
        step: &'static str,
        max_attempts: u32,
        transient: bool,
        now: Instant,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        job.attempts += 1;
        if !transient || job.attempts >= max_attempts {
            return false;
        }
        let attempt = job.attempts;
        let delay = backoff(attempt);
        self.wake_at(key, now + delay);
        self.commands.push_back(Command::Notice(Notice::Retrying {
            job: key,
            step,
            attempt,
            max_attempts,
            delay,
        }));
        true
    }

    fn retry_or_fail(
        &mut self,
        key: JobKey,
        step: &'static str,
        max_attempts: u32,
        transient: bool,
        user_message: String,
        now: Instant,
    ) {
        if transient && self.shutting_down {
            // Leave the step to the next process rather than failing the job.
            self.save(key);
            return;
        }
        if self.retry_later(key, step, max_attempts, transient, now) {
            self.save(key);
            return;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.attempts = 0;
        self.fail(
            key,
            Failure {
                kind: FailureKind::System,
                message: messages::infrastructure_failure(&user_message),
            },
        );
    }

    fn fail(&mut self, key: JobKey, failure: Failure) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if !job.failed {
            job.failed = true;
            self.failed_total += 1;
        }
        self.commands.push_back(Command::Notice(Notice::Failed {
            job: key,
            message: failure.message.clone(),
        }));
        job.stage = Stage::Failing {
            failure,
            message_written: false,
        };
        job.attempts = 0;
        self.launch_queue.retain(|queued| *queued != key);
        self.save(key);
    }

    fn finish(&mut self, key: JobKey) {
        self.exists_since.remove(&key);
        self.vanished.remove(&key);
        self.watch.forget(key);
        if let Some(job) = self.jobs.remove(&key) {
            if let Some(at) = job.next_step_at {
                self.wakeups.remove(&(at, key));
            }
            self.ready.remove(&key);
            self.done_total += 1;
            self.commands.push_back(Command::Forget(key));
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

    fn start_launches(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        while let Some(&key) = self.launch_queue.front() {
            if self.next_launch_at.is_some_and(|at| at > now) {
                break;
            }
            self.launch_queue.pop_front();
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            if job.stage != Stage::Queued {
                continue;
            }
            job.stage = Stage::Provisioning;
            if !self.config.min_between_launches.is_zero() {
                self.next_launch_at = Some(now + self.config.min_between_launches);
            }
            self.save(key);
            self.ready.insert(key);
        }
    }

    /// Issues the next command of one job, if any.
    fn step(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.busy {
            return;
        }
        // A machine found gone ends the job at once, whatever it waits for
        // (but not while the service stops: the next process sees it too).
        if !(self.shutting_down && job.confirmed) {
            if let Some(app_id) = self.vanished.remove(&key) {
                if self.end_vanished(key, app_id) {
                    return;
                }
            }
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.next_step_at.is_some_and(|at| at > now) {
            return;
        }
        // A job that arrived as the service stops is still confirmed: the
        // coordinator would otherwise drop it if the restart takes longer
        // than its two-phase commit window.
        if self.shutting_down && job.confirmed {
            return;
        }
        if !job.confirmed {
            job.busy = true;
            let command = Command::ConfirmJob {
                job: key,
                token: job.token.clone(),
            };
            self.commands.push_back(command);
            return;
        }
        if job.stage == Stage::Running && self.watch.is_paced() {
            self.step_running(key, now);
            return;
        }
        if let Stage::Launching { since } = job.stage {
            if self.watch.is_paced() && self.defer_first_launch_check(key, since, now) {
                return;
            }
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let spec = &self.runners[key.runner].spec;
        let command = match &job.stage {
            Stage::Queued => None,
            Stage::Provisioning if matches!(job.resource, Resource::Exists(_)) => {
                // Adopted by a reconciliation: nothing to create.
                job.stage = Stage::Deploying;
                self.save(key);
                self.ready.insert(key);
                return;
            }
            Stage::Provisioning => {
                let flavor = spec.flavors.get(&job.flavor).cloned();
                match flavor {
                    Some(flavor) => {
                        // An earlier attempt (or process) may have created it.
                        let may_exist = matches!(job.resource, Resource::Maybe);
                        job.resource = Resource::Maybe;
                        Some(Command::CreateApp {
                            job: key,
                            name: spec.app_name(key.job_id),
                            flavor,
                            may_exist,
                        })
                    }
                    None => {
                        // The catalogue changed since acquisition.
                        let message = messages::unknown_flavor(
                            &job.flavor,
                            &spec.flavors,
                            spec.max_job_weight(),
                        );
                        self.fail(
                            key,
                            Failure {
                                kind: FailureKind::User,
                                message,
                            },
                        );
                        self.ready.insert(key);
                        return;
                    }
                }
            }
            Stage::Deploying => job.app_id().map(|app_id| Command::Deploy {
                job: key,
                app_id: app_id.to_owned(),
                payload: job.payload.clone(),
                watch_every: spec.deploy_watch.max(MIN_DEPLOY_WATCH),
            }),
            Stage::Launching { .. } => Some(Command::CheckLaunch {
                job: key,
                project_id: job.project_id,
                own_log_bytes: job.log_bytes,
            }),
            Stage::Running => Some(Command::CheckStatus {
                job: key,
                token: job.token.clone(),
            }),
            Stage::Failing {
                failure,
                message_written,
            } => {
                if *message_written {
                    Some(Command::ReportFailure {
                        job: key,
                        token: job.token.clone(),
                        kind: failure.kind,
                        failure_reasons: job.failure_reasons.clone(),
                    })
                } else {
                    Some(Command::AppendLog {
                        job: key,
                        token: job.token.clone(),
                        text: messages::red_lines(&failure.message),
                    })
                }
            }
            Stage::Decommissioning => {
                if self.config.keep_resources && !job.failed {
                    self.finish(key);
                    return;
                }
                match &job.resource {
                    Resource::None => {
                        self.finish(key);
                        return;
                    }
                    Resource::Maybe | Resource::Exists(_) => Some(Command::DeleteApp {
                        job: key,
                        app_id: job.app_id().map(str::to_owned),
                        name: spec.app_name(key.job_id),
                    }),
                }
            }
        };
        if let Some(command) = command {
            job.busy = true;
            if matches!(command, Command::CreateApp { .. }) {
                // Durable before effective: the record says a creation may be
                // under way before the caller starts it.
                self.save(key);
            }
            self.commands.push_back(command);
        }
    }

    fn start_polls(&mut self, now: Instant) {
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

    fn may_poll(&self, idx: RunnerIdx, now: Instant) -> bool {
        let runner = &self.runners[idx];
        if runner.retired || runner.poll_in_flight || runner.next_poll_at.is_some_and(|at| at > now)
        {
            return false;
        }
        self.poll_hold(idx).is_none()
    }

    /// The first limit that keeps runner `idx` from requesting a job now
    /// (timing aside), `None` if none does.
    fn poll_hold(&self, idx: RunnerIdx) -> Option<PollHold> {
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

/// Exponential backoff: 1 s, 2 s, 4 s, ... capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}
