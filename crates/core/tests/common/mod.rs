//! Step harness for the dispatcher, in the style of quinn's `Pair`: a virtual
//! clock, in-memory models of a coordinator, a cloud and a durable store,
//! scripted or seeded faults and delays, crashes and graceful restarts, and
//! the invariants every run must keep.
//!
//! Shared by the scenario tests, the quota property tests and the seeded
//! simulation; each test crate uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use paas_core::AppOwner;
use paas_core::{
    App, Command, ConfirmCheck, Dispatcher, DispatcherConfig, FailureKind, Flavor, FlavorTable,
    JobKey, JobRecord, LaunchCheck, LaunchWatch, ListedApp, MachineListing, NewJob, Notice,
    PollAnswer, PollOutcome, RunnerIdx, RunnerSpec, Secret, StageRecord, StatusCheck, StepOutcome,
    WatchConfig,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Tolerance of weight comparisons in the invariants.
pub const EPSILON: f64 = 1e-6;

/// The `heptapod-runner` flavors of the model cloud: name, RAM in MiB, CPUs.
pub const FLAVORS: [(&str, u64, u32); 7] = [
    ("XS", 1024, 1),
    ("S", 4096, 2),
    ("M", 8192, 4),
    ("L", 16384, 6),
    ("XL", 32768, 8),
    ("2XL", 65536, 16),
    ("3XL", 98304, 24),
];

/// First bytes of every line the dispatcher writes into a job log (red).
pub const RED: &str = "\x1b[31;1m";

pub fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

pub fn flavor(name: &str) -> Flavor {
    let (name, ram_mib, cpus) = FLAVORS
        .iter()
        .copied()
        .find(|(flavor_name, _, _)| *flavor_name == name)
        .unwrap_or_else(|| panic!("no flavor {name} in the model catalogue"));
    Flavor {
        name: name.to_owned(),
        api_name: format!("heptapod-runner-{name}"),
        ram_mib,
        cpus,
    }
}

pub fn flavor_table() -> FlavorTable {
    FlavorTable::new(FLAVORS.iter().map(|(name, _, _)| flavor(name)))
}

pub fn weight(name: &str) -> f64 {
    flavor(name).weight()
}

/// Short id of runner `idx` (8 characters, like a token prefix).
pub fn runner_key(idx: RunnerIdx) -> String {
    format!("runner-{idx}")
}

/// A runner with the deployment's settings: default S, maximum 2XL, launch
/// confirmed by watching the job log (60 s timeout, checked every 5 s).
pub fn runner_spec(idx: RunnerIdx) -> RunnerSpec {
    RunnerSpec {
        key: runner_key(idx),
        name: format!("runner {idx}"),
        quota_max_fraction: 1.0,
        default_flavor: "S".to_owned(),
        max_flavor: Some("2XL".to_owned()),
        flavors: flavor_table(),
        zone: "par".to_owned(),
        launch_watch: Some(LaunchWatch {
            timeout: secs(60),
            poll_step: secs(5),
        }),
        limit: None,
        deploy_watch: secs(5),
    }
}

/// Interval of reconciliations where a test turns them on.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// GitLab's two-phase commit window: a job handed out and not confirmed
/// within it is dropped by the coordinator.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(120);

/// Settings roomy enough that no limit is hit by a handful of jobs.
/// Reconciliation is off, so that traces hold only the jobs' commands.
pub fn config() -> DispatcherConfig {
    DispatcherConfig {
        concurrent: 10,
        check_interval: secs(3),
        status_interval: secs(10),
        max_provisioning: 10,
        min_between_launches: Duration::ZERO,
        keep_resources: false,
        decommission_launch_failures: true,
        repoll_immediately: false,
        quota: weight("2XL") * 4.0,
        allowed_fraction_per_runner: 1.0,
        reconcile_interval: Duration::ZERO,
        orphan_min_age: Duration::ZERO,
        slow_notice_after: Duration::ZERO,
    }
}

/// A job waiting on the model coordinator, and how its inner runner behaves.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub runner: RunnerIdx,
    /// Value of `CI_CLEVER_CLOUD_FLAVOR`.
    pub flavor: Option<String>,
    /// When the job becomes pending, from the start of the run.
    pub arrival: Duration,
    /// From the push of the build context to the inner runner's first log
    /// line; `None`: the inner runner never starts.
    pub boot: Option<Duration>,
    /// From the first log line to the end of the job.
    pub duration: Duration,
    /// A user cancels the job this long after its arrival.
    pub cancel_after: Option<Duration>,
    /// Its payload is over the runner's limit: handed over as
    /// `PollOutcome::JobTooLarge`.
    pub too_large: bool,
}

impl JobSpec {
    pub fn new(runner: RunnerIdx) -> JobSpec {
        JobSpec {
            runner,
            flavor: None,
            arrival: Duration::ZERO,
            boot: Some(secs(7)),
            duration: secs(30),
            cancel_after: None,
            too_large: false,
        }
    }

    pub fn too_large(mut self) -> JobSpec {
        self.too_large = true;
        self
    }

    pub fn flavor(mut self, name: &str) -> JobSpec {
        self.flavor = Some(name.to_owned());
        self
    }

    pub fn arrival(mut self, seconds: u64) -> JobSpec {
        self.arrival = secs(seconds);
        self
    }

    pub fn boot(mut self, seconds: u64) -> JobSpec {
        self.boot = Some(secs(seconds));
        self
    }

    pub fn never_boots(mut self) -> JobSpec {
        self.boot = None;
        self
    }

    pub fn duration(mut self, seconds: u64) -> JobSpec {
        self.duration = secs(seconds);
        self
    }

    pub fn cancel_after(mut self, seconds: u64) -> JobSpec {
        self.cancel_after = Some(secs(seconds));
        self
    }
}

/// State of a job on the model coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordState {
    Pending,
    /// Handed out to a runner, waiting for its confirmation (two-phase
    /// commit): still reserved for it, its log and failure reports refused.
    Assigned,
    /// Confirmed by the runner.
    Running,
    Success,
    Failed(FailureKind),
    Cancelled,
    /// Failed by the coordinator: still running at the job timeout.
    TimedOut,
    /// Failed by the coordinator (`runner_provisioning_timeout`): handed out
    /// but not confirmed within the window.
    Dropped,
}

impl CoordState {
    pub fn is_over(self) -> bool {
        !matches!(
            self,
            CoordState::Pending | CoordState::Assigned | CoordState::Running
        )
    }
}

/// The inner runner of a job: started by a push to an application.
#[derive(Debug, Clone)]
pub struct InnerRunner {
    pub app_id: String,
    pub pushed_at: Instant,
    /// False once its application is deleted.
    pub alive: bool,
    pub started_at: Option<Instant>,
}

/// One job of the model coordinator.
#[derive(Debug, Clone)]
pub struct ModelJob {
    pub key: JobKey,
    pub spec: JobSpec,
    pub state: CoordState,
    /// The job log: inner runner lines and dispatcher appends.
    pub log: String,
    /// Accepted appends.
    pub appends: u32,
    /// Accepted failure reports.
    pub failure_reports: Vec<FailureKind>,
    /// Appends and reports refused because the job was over.
    pub refused_writes: u32,
    /// Times the inner runner started the job (wrote its first line).
    pub inner_starts: u32,
    pub inner: Option<InnerRunner>,
    pub handed_out_at: Option<Instant>,
    pub confirmed_at: Option<Instant>,
    /// Confirmations answered (`Confirmed` or `Gone`, not the failed ones).
    pub confirmations: u32,
}

impl ModelJob {
    /// Asserts that the job log contains `text`.
    #[track_caller]
    pub fn assert_log_contains(&self, text: &str) {
        assert!(
            self.log.contains(text),
            "j{} log without {text:?}:\n{}",
            self.key.job_id,
            self.log
        );
    }
}

/// An in-memory coordinator: pending jobs per runner, job logs, failure
/// reports, and the inner runners that run the jobs.
#[derive(Debug)]
pub struct ModelCoordinator {
    start: Instant,
    /// Running jobs fail by themselves after this (GitLab's job timeout).
    pub job_timeout: Duration,
    /// Jobs handed out and not confirmed within this are dropped.
    pub confirm_window: Duration,
    pub jobs: BTreeMap<JobKey, ModelJob>,
    queues: Vec<VecDeque<JobKey>>,
}

impl ModelCoordinator {
    pub fn new(start: Instant, runner_count: usize, specs: &[JobSpec]) -> ModelCoordinator {
        let mut jobs = BTreeMap::new();
        let mut by_runner: Vec<Vec<(Duration, JobKey)>> = vec![Vec::new(); runner_count];
        for (index, spec) in specs.iter().enumerate() {
            assert!(
                spec.runner < runner_count,
                "job for unknown runner {}",
                spec.runner
            );
            // Job ids are unique across runners, so traces can say `j3`.
            let key = JobKey {
                runner: spec.runner,
                job_id: index as u64 + 1,
            };
            by_runner[spec.runner].push((spec.arrival, key));
            jobs.insert(
                key,
                ModelJob {
                    key,
                    spec: spec.clone(),
                    state: CoordState::Pending,
                    log: String::new(),
                    appends: 0,
                    failure_reports: Vec::new(),
                    refused_writes: 0,
                    inner_starts: 0,
                    inner: None,
                    handed_out_at: None,
                    confirmed_at: None,
                    confirmations: 0,
                },
            );
        }
        let queues = by_runner
            .into_iter()
            .map(|mut keys| {
                keys.sort();
                keys.into_iter().map(|(_, key)| key).collect()
            })
            .collect();
        ModelCoordinator {
            start,
            job_timeout: secs(3600),
            confirm_window: CONFIRM_WINDOW,
            jobs,
            queues,
        }
    }

    pub fn job(&self, job_id: u64) -> &ModelJob {
        self.jobs
            .values()
            .find(|job| job.key.job_id == job_id)
            .unwrap_or_else(|| panic!("no job {job_id}"))
    }

    /// Hands out the next pending job of `runner`, if one has arrived.
    pub fn take(&mut self, runner: RunnerIdx, now: Instant) -> Option<NewJob> {
        let queue = &mut self.queues[runner];
        while let Some(&key) = queue.front() {
            let job = &self.jobs[&key];
            if job.state != CoordState::Pending {
                queue.pop_front();
                continue;
            }
            if self.start + job.spec.arrival > now {
                return None;
            }
            queue.pop_front();
            let job = self.jobs.get_mut(&key).expect("queued job exists");
            job.state = CoordState::Assigned;
            job.handed_out_at = Some(now);
            return Some(NewJob {
                job_id: key.job_id,
                token: Secret::new(format!("job-token-{}", key.job_id)),
                project_id: Some(100 + key.job_id),
                requested_flavor: job.spec.flavor.clone(),
                failure_reasons: Some(vec![
                    "script_failure".to_owned(),
                    "runner_system_failure".to_owned(),
                ]),
                payload: format!("{{\"id\":{}}}", key.job_id),
            });
        }
        None
    }

    /// Jobs that arrived and are still waiting for `runner`.
    pub fn pending_count(&self, runner: RunnerIdx) -> usize {
        self.queues[runner]
            .iter()
            .filter(|key| self.jobs[key].state == CoordState::Pending)
            .count()
    }

    /// When the next unconfirmed job is dropped, if any.
    pub fn next_drop(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter(|job| job.state == CoordState::Assigned)
            .filter_map(|job| job.handed_out_at)
            .map(|at| at + self.confirm_window)
            .min()
    }

    /// Plays the inner runners, the users' cancellations and the
    /// confirmation windows up to `now`.
    pub fn advance(&mut self, now: Instant) {
        let confirm_window = self.confirm_window;
        for job in self.jobs.values_mut() {
            loop {
                if job.state.is_over() {
                    break;
                }
                let cancel_at = job
                    .spec
                    .cancel_after
                    .map(|after| self.start + job.spec.arrival + after);
                let (start_at, finish_at) = match &job.inner {
                    Some(inner) if inner.alive && job.state == CoordState::Running => {
                        match inner.started_at {
                            None => (job.spec.boot.map(|boot| inner.pushed_at + boot), None),
                            Some(started) => (None, Some(started + job.spec.duration)),
                        }
                    }
                    _ => (None, None),
                };
                let timeout_at = job.handed_out_at.map(|at| at + self.job_timeout);
                let drop_at = match job.state {
                    CoordState::Assigned => job.handed_out_at.map(|at| at + confirm_window),
                    _ => None,
                };
                let next = [cancel_at, drop_at, start_at, finish_at, timeout_at]
                    .into_iter()
                    .flatten()
                    .filter(|at| *at <= now)
                    .min();
                let Some(at) = next else { break };
                if Some(at) == cancel_at {
                    job.state = CoordState::Cancelled;
                } else if Some(at) == drop_at {
                    job.state = CoordState::Dropped;
                    job.log.push_str(
                        "ERROR: Job failed (system failure): runner_provisioning_timeout\n",
                    );
                } else if Some(at) == timeout_at {
                    job.state = CoordState::TimedOut;
                    job.log
                        .push_str("ERROR: Job failed: execution took longer than the timeout\n");
                } else if Some(at) == start_at {
                    if let Some(inner) = &mut job.inner {
                        inner.started_at = Some(at);
                    }
                    job.inner_starts += 1;
                    job.log.push_str("Running with heptapod-runner\n");
                } else {
                    job.state = CoordState::Success;
                    job.log.push_str("Job succeeded\n");
                }
            }
        }
    }

    /// A build context was pushed to `app_id` for the job.
    fn push(&mut self, key: JobKey, app_id: &str, now: Instant) {
        if let Some(job) = self.jobs.get_mut(&key) {
            job.inner = Some(InnerRunner {
                app_id: app_id.to_owned(),
                pushed_at: now,
                alive: true,
                started_at: None,
            });
        }
    }

    /// The runner confirms it runs the job (idempotent): `Gone` once the
    /// job is over (cancelled, dropped by the window, finished).
    fn confirm(&mut self, key: JobKey, now: Instant) -> ConfirmCheck {
        let job = self.jobs.get_mut(&key).expect("confirming a known job");
        job.confirmations += 1;
        match job.state {
            CoordState::Assigned => {
                job.state = CoordState::Running;
                job.confirmed_at = Some(now);
                ConfirmCheck::Confirmed
            }
            CoordState::Running => ConfirmCheck::Confirmed,
            CoordState::Pending => unreachable!("confirming a job never handed out"),
            _ => ConfirmCheck::Gone,
        }
    }

    /// The application `app_id` was deleted: its inner runner dies.
    fn kill(&mut self, key: JobKey, app_id: &str) {
        if let Some(inner) = self.jobs.get_mut(&key).and_then(|job| job.inner.as_mut()) {
            if inner.app_id == app_id {
                inner.alive = false;
            }
        }
    }

    fn launch_check(&self, key: JobKey) -> LaunchCheck {
        let job = &self.jobs[&key];
        if job.inner_starts > 0 {
            LaunchCheck::Started
        } else if job.state.is_over() {
            LaunchCheck::JobOver
        } else {
            LaunchCheck::NotYet
        }
    }

    fn status(&self, key: JobKey) -> StatusCheck {
        if self.jobs[&key].state.is_over() {
            StatusCheck::Finished
        } else {
            StatusCheck::Running
        }
    }

    fn append(&mut self, key: JobKey, text: &str) -> bool {
        let job = self.jobs.get_mut(&key).expect("appending to a known job");
        // An unconfirmed job is `pending`: its log is closed (403).
        if job.state != CoordState::Running {
            job.refused_writes += 1;
            return false;
        }
        job.log.push_str(text);
        job.appends += 1;
        true
    }

    fn report_failure(&mut self, key: JobKey, kind: FailureKind) -> bool {
        let job = self.jobs.get_mut(&key).expect("reporting a known job");
        if job.state != CoordState::Running {
            job.refused_writes += 1;
            return false;
        }
        job.state = CoordState::Failed(kind);
        job.failure_reports.push(kind);
        true
    }
}

/// An application of the model cloud.
#[derive(Debug, Clone)]
pub struct ModelApp {
    pub id: String,
    pub name: String,
    pub job: JobKey,
    pub flavor: String,
    pub weight: f64,
    pub pushed: bool,
    pub created_at: Instant,
    /// Created behind the dispatcher's back (a leftover no record accounts
    /// for, a creation that landed after its job was forgotten).
    pub stray: bool,
    /// A stray the dispatcher could not count when it took a job (it had
    /// not listed it yet): the quota check of the cloud leaves it out.
    pub excused: bool,
    /// Whose it is (its description's marker); the harness's dispatcher is
    /// the installation whose applications are `Ours`.
    pub owner: AppOwner,
}

/// An in-memory cloud: applications by id (names are looked up by scan),
/// with the weight they cost.
#[derive(Debug, Default)]
pub struct ModelCloud {
    pub apps: BTreeMap<String, ModelApp>,
    next_id: u64,
    pub creations: u64,
    pub adoptions: u64,
    pub deletions: u64,
    /// Applications created per job.
    pub created_for: BTreeMap<JobKey, u32>,
    /// Build contexts pushed per job (the inner runner starts on each).
    pub pushes: BTreeMap<JobKey, u32>,
    pub deploys_to_missing_app: u64,
    pub max_live_weight: f64,
    /// Strays that appeared (leftovers, late creations).
    pub strays: u64,
    /// Applications deleted by `DeleteOrphan`.
    pub orphan_deletions: u64,
}

impl ModelCloud {
    pub fn live_weight(&self) -> f64 {
        self.apps.values().map(|app| app.weight).sum()
    }

    /// Weight of the strays the dispatcher could not have counted.
    pub fn excused_weight(&self) -> f64 {
        self.apps
            .values()
            .filter(|app| app.excused)
            .map(|app| app.weight)
            .sum()
    }

    pub fn names(&self) -> Vec<&str> {
        self.apps.values().map(|app| app.name.as_str()).collect()
    }

    /// An application created behind the dispatcher's back.
    pub fn insert_stray(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        now: Instant,
        excused: bool,
    ) -> String {
        self.strays += 1;
        self.add(name, job, flavor, now, true, excused)
    }

    /// Adds an application under a new id, which it returns.
    fn add(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        now: Instant,
        stray: bool,
        excused: bool,
    ) -> String {
        self.next_id += 1;
        let id = format!("app-{}", self.next_id);
        self.apps.insert(
            id.clone(),
            ModelApp {
                id: id.clone(),
                name: name.to_owned(),
                job,
                flavor: flavor.name.clone(),
                weight: flavor.weight(),
                pushed: false,
                created_at: now,
                stray,
                excused,
                owner: AppOwner::Ours,
            },
        );
        self.max_live_weight = self.max_live_weight.max(self.live_weight());
        id
    }

    /// The applications whose name starts with `prefix`, as the API lists
    /// them (creation time in ms from `start`).
    fn list(&self, prefix: &str, start: Instant, now: Instant) -> Vec<ListedApp> {
        self.apps
            .values()
            .filter(|app| app.name.starts_with(prefix))
            .map(|app| ListedApp {
                id: app.id.clone(),
                name: app.name.clone(),
                weight: app.weight,
                created_ms: Some((app.created_at - start).as_millis() as i64),
                owner: app.owner.clone(),
                age: Some(now.saturating_duration_since(app.created_at)),
            })
            .collect()
    }

    /// The application of that name this installation owns (the runner
    /// adopts and deletes by name only what carries its marker).
    pub fn by_name(&self, name: &str) -> Option<&ModelApp> {
        self.apps
            .values()
            .find(|app| app.name == name && app.owner == AppOwner::Ours)
    }

    /// An application of another owner (or unmarked) under a runner's name.
    pub fn insert_foreign(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        now: Instant,
        owner: AppOwner,
    ) -> String {
        let id = self.add(name, job, flavor, now, true, false);
        if let Some(app) = self.apps.get_mut(&id) {
            app.owner = owner;
        }
        id
    }

    /// Creates the application, or with `may_exist` adopts the one of that
    /// name this installation owns (as `Provider::create_or_adopt`).
    fn create(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        may_exist: bool,
        now: Instant,
    ) -> App {
        if let Some(app) = self.by_name(name).filter(|_| may_exist) {
            let adopted = App {
                id: app.id.clone(),
                weight: app.weight,
            };
            self.adoptions += 1;
            return adopted;
        }
        let id = self.add(name, job, flavor, now, false, false);
        self.creations += 1;
        *self.created_for.entry(job).or_default() += 1;
        App {
            id,
            weight: flavor.weight(),
        }
    }

    /// Pushes the build context unless the repository has a head already.
    /// `None`: no such application; `Some(true)`: this push started a run.
    fn push(&mut self, app_id: &str) -> Option<bool> {
        let app = self.apps.get_mut(app_id)?;
        if app.pushed {
            return Some(false);
        }
        app.pushed = true;
        *self.pushes.entry(app.job).or_default() += 1;
        Some(true)
    }

    fn delete(&mut self, app_id: Option<&str>, name: &str) -> Vec<ModelApp> {
        let ids: Vec<String> = match app_id {
            Some(id) => self
                .apps
                .get(id)
                .map(|app| app.id.clone())
                .into_iter()
                .collect(),
            None => self
                .apps
                .values()
                .filter(|app| app.name == name && app.owner == AppOwner::Ours)
                .map(|app| app.id.clone())
                .collect(),
        };
        let deleted: Vec<ModelApp> = ids.iter().filter_map(|id| self.apps.remove(id)).collect();
        self.deletions += deleted.len() as u64;
        deleted
    }
}

/// Kinds of commands with an outcome, for fault and delay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Poll,
    Confirm,
    Create,
    Deploy,
    CheckLaunch,
    CheckStatus,
    AppendLog,
    ReportFailure,
    Delete,
    List,
    DeleteOrphan,
}

pub const ALL_KINDS: [Kind; 11] = [
    Kind::Poll,
    Kind::Confirm,
    Kind::Create,
    Kind::Deploy,
    Kind::CheckLaunch,
    Kind::CheckStatus,
    Kind::AppendLog,
    Kind::ReportFailure,
    Kind::Delete,
    Kind::List,
    Kind::DeleteOrphan,
];

/// A failed command. `effect`: the command took effect all the same (a
/// creation whose answer was lost, a deletion that timed out late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Transient { effect: bool },
    Permanent { effect: bool },
}

impl Fault {
    pub const TRANSIENT: Fault = Fault::Transient { effect: false };
    pub const PERMANENT: Fault = Fault::Permanent { effect: false };

    fn effect(self) -> bool {
        match self {
            Fault::Transient { effect } | Fault::Permanent { effect } => effect,
        }
    }

    fn transient(self) -> bool {
        matches!(self, Fault::Transient { .. })
    }
}

/// Which commands fail: a script per kind, consumed in order (`None` lets
/// one succeed), then seeded random faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub script: BTreeMap<Kind, VecDeque<Option<Fault>>>,
    pub transient_rate: BTreeMap<Kind, f64>,
    pub permanent_rate: BTreeMap<Kind, f64>,
    /// At most this many random faults in a row per job and kind (short
    /// outages rather than a dead service).
    pub max_consecutive: BTreeMap<Kind, u32>,
}

impl Faults {
    /// The next commands of `kind` meet these outcomes, in order.
    pub fn script(&mut self, kind: Kind, outcomes: impl IntoIterator<Item = Option<Fault>>) {
        self.script.entry(kind).or_default().extend(outcomes);
    }
}

/// How long commands take to answer.
#[derive(Debug, Clone, Default)]
pub struct Delays {
    /// Fixed delay per kind (zero by default: answered at once).
    pub fixed: BTreeMap<Kind, Duration>,
    /// When set, every answer takes a random delay up to this.
    pub random_max: Option<Duration>,
}

/// An application left in the cloud before the run (by an earlier process
/// whose records are lost): runner, job id, flavor.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub runner: RunnerIdx,
    pub job_id: u64,
    pub flavor: String,
}

/// Everything needed to build a [`Harness`].
#[derive(Debug, Clone)]
pub struct Setup {
    pub config: DispatcherConfig,
    pub runners: Vec<RunnerSpec>,
    pub jobs: Vec<JobSpec>,
    pub faults: Faults,
    pub delays: Delays,
    pub seed: u64,
    pub label: String,
    /// The model coordinator's two-phase commit window.
    pub confirm_window: Duration,
    /// Tell the dispatcher when a job is over while its creation or
    /// deployment is under way (`handle_job_over`), like a driver watching
    /// the job: the step's answer is then never delivered.
    pub job_over_watch: bool,
    /// Chance that a creation dropped that way, which had not taken effect
    /// yet, lands later all the same (when its answer was due).
    pub late_create_rate: f64,
    pub leftovers: Vec<Leftover>,
    /// Watch launched jobs under this policy (`Dispatcher::set_watch`).
    pub watch: Option<WatchConfig>,
    /// The model cloud answers machine listings (else: unsupported).
    pub machine_listing: bool,
    /// Its listings say every deployed machine ended (a cloud whose states
    /// do not mean what the dispatcher assumes).
    pub machine_listing_lies: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    /// One runner, the default settings, no job.
    pub fn new() -> Setup {
        Setup {
            config: config(),
            runners: vec![runner_spec(0)],
            jobs: Vec::new(),
            faults: Faults::default(),
            delays: Delays::default(),
            seed: 0,
            label: "scenario".to_owned(),
            confirm_window: CONFIRM_WINDOW,
            job_over_watch: false,
            late_create_rate: 0.0,
            leftovers: Vec::new(),
            watch: None,
            machine_listing: true,
            machine_listing_lies: false,
        }
    }

    /// Reconciliation every [`RECONCILE_INTERVAL`].
    pub fn reconciling(mut self) -> Setup {
        self.config.reconcile_interval = RECONCILE_INTERVAL;
        self
    }

    pub fn leftover(mut self, runner: RunnerIdx, job_id: u64, flavor: &str) -> Setup {
        self.leftovers.push(Leftover {
            runner,
            job_id,
            flavor: flavor.to_owned(),
        });
        self
    }

    pub fn job(mut self, spec: JobSpec) -> Setup {
        self.jobs.push(spec);
        self
    }

    pub fn jobs(mut self, count: usize, spec: JobSpec) -> Setup {
        self.jobs.extend(std::iter::repeat_n(spec, count));
        self
    }

    /// Commands of `kind` take `delay` to answer.
    pub fn delay(mut self, kind: Kind, delay: Duration) -> Setup {
        self.delays.fixed.insert(kind, delay);
        self
    }

    /// See [`Faults::script`].
    pub fn script(
        mut self,
        kind: Kind,
        outcomes: impl IntoIterator<Item = Option<Fault>>,
    ) -> Setup {
        self.faults.script(kind, outcomes);
        self
    }

    pub fn build(self) -> Harness {
        Harness::new(self)
    }

    /// Builds the harness and drives it until settled
    /// ([`Harness::drive`]), then asserts the final invariants.
    pub fn run(self) -> Harness {
        let mut harness = self.build();
        harness.drive();
        harness.assert_final();
        harness
    }
}

/// The answer to a command, delivered to the dispatcher when due.
#[derive(Debug, Clone)]
enum Outcome {
    Poll(RunnerIdx, PollOutcome),
    Confirmed(JobKey, ConfirmCheck),
    Created(JobKey, StepOutcome<App>),
    Deployed(JobKey, StepOutcome<()>),
    Launch(JobKey, LaunchCheck),
    Status(JobKey, StatusCheck),
    Appended(JobKey, StepOutcome<()>),
    Reported(JobKey, StepOutcome<()>),
    Deleted(JobKey, StepOutcome<()>),
    /// The driver learnt the job is over while a step was under way.
    JobOver(JobKey),
    AppList(RunnerIdx, Option<Vec<ListedApp>>),
    Machines(RunnerIdx, MachineListing),
    OrphanDeleted(String, bool),
    /// A slow-launch notice was written (the log's length) or not.
    Noticed(JobKey, Option<u64>),
    /// A runner's catalogue, read again.
    Flavors(RunnerIdx, FlavorTable),
    /// Not an answer: a creation request that lands in the cloud late.
    LateCreate(LateCreate),
}

impl Outcome {
    /// Answers of the outside world that a settled run may leave behind.
    fn is_idle(&self) -> bool {
        matches!(
            self,
            Outcome::Poll(_, PollOutcome::NoJob)
                | Outcome::AppList(..)
                | Outcome::Machines(..)
                | Outcome::OrphanDeleted(..)
                | Outcome::Flavors(..)
        )
    }
}

/// A creation that has not taken effect yet.
#[derive(Debug, Clone)]
struct LateCreate {
    job: JobKey,
    name: String,
    flavor: Flavor,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    outcome: Outcome,
    /// For a creation that failed without effect: it may land later.
    late: Option<LateCreate>,
}

/// One line of the harness's trace.
#[derive(Debug, Clone)]
pub struct TraceLine {
    pub at: Duration,
    pub job: Option<JobKey>,
    pub text: String,
}

/// What one [`Harness::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Command,
    Outcome,
    Timeout,
    /// The clock moved to the next due outcome.
    Advanced,
    /// Nothing to do, and nothing will ever happen.
    Idle,
}

/// Largest values seen over a run.
#[derive(Debug, Clone, Default)]
pub struct Maxima {
    pub weight: f64,
    pub jobs: usize,
    pub provisioning: usize,
    pub runner_weight: Vec<f64>,
}

/// The dispatcher wired to the models, with a virtual clock.
pub struct Harness {
    pub label: String,
    pub config: DispatcherConfig,
    pub runners: Vec<RunnerSpec>,
    pub dispatcher: Dispatcher,
    pub start: Instant,
    pub now: Instant,
    pub coordinator: ModelCoordinator,
    pub cloud: ModelCloud,
    /// The durable store, fed by `Save` and `Forget`.
    pub store: BTreeMap<(String, u64), JobRecord>,
    pub faults: Faults,
    pub delays: Delays,
    pub rng: SmallRng,
    in_flight: Vec<InFlight>,
    seq: u64,
    /// Record every command and outcome (off for bulk simulation).
    pub tracing: bool,
    pub trace: Vec<TraceLine>,
    pub notices: Vec<(Duration, Notice)>,
    /// Check the invariants after every step.
    pub checking: bool,
    pub violations: Vec<String>,
    pub maxima: Maxima,
    /// `shutdown()` was called on the current dispatcher.
    pub shutting_down: bool,
    pub crashes: u32,
    pub restarts: u32,
    /// Jobs handed to a dispatcher by a poll.
    pub delivered: BTreeSet<JobKey>,
    /// Jobs whose record reached the store at least once.
    pub saved: BTreeSet<JobKey>,
    /// Jobs handed out by the coordinator whose answer was lost in a crash.
    pub lost_in_transit: BTreeSet<JobKey>,
    /// Jobs delivered to a dispatcher that crashed before saving them.
    pub lost_unsaved: BTreeSet<JobKey>,
    /// Side-effect commands executed per kind and job.
    pub executed: BTreeMap<(Kind, u64), u32>,
    pub steps: u64,
    consecutive_faults: BTreeMap<(Kind, JobKey), u32>,
    stalled_timeouts: u32,
    pub job_over_watch: bool,
    pub late_create_rate: f64,
    pub watch: Option<WatchConfig>,
    pub machine_listing: bool,
    pub machine_listing_lies: bool,
    /// Machine listings answered.
    pub machine_listings: u64,
    /// Jobs the dispatcher may act on: confirmed by the coordinator, or
    /// given up confirming (then it proceeds as if confirmed).
    pub cleared: BTreeSet<JobKey>,
    /// When each job was handed to a dispatcher.
    pub delivered_at: BTreeMap<JobKey, Instant>,
    /// Failed confirmations delivered, per job.
    pub confirm_errors: BTreeMap<JobKey, u32>,
    /// Applications listed to the current process (it may count them).
    pub listed: BTreeSet<String>,
    /// Runners whose listing failed in the current process.
    pub failed_listings: BTreeSet<RunnerIdx>,
    /// When the last orphan deletion of each application failed.
    orphan_failed_at: BTreeMap<String, Instant>,
    /// When processes stopped (crash or graceful).
    pub stop_times: Vec<Instant>,
    /// Faults injected into commands.
    pub faults_injected: u64,
    /// `handle_job_over` calls, and creations that landed after one.
    pub job_overs: u64,
    pub late_creations: u64,
    /// Applications deleted behind the dispatcher's back.
    pub vanished_apps: BTreeSet<String>,
    /// Largest live weight of the cloud, excused strays left out.
    pub max_accountable_weight: f64,
}

impl Harness {
    pub fn new(setup: Setup) -> Harness {
        // The only reading of the real clock: a base for virtual time.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut coordinator = ModelCoordinator::new(start, setup.runners.len(), &setup.jobs);
        coordinator.confirm_window = setup.confirm_window;
        let runner_count = setup.runners.len();
        let mut cloud = ModelCloud::default();
        for leftover in &setup.leftovers {
            let spec = &setup.runners[leftover.runner];
            let key = JobKey {
                runner: leftover.runner,
                job_id: leftover.job_id,
            };
            // Known to be there before the process starts: it must count.
            cloud.insert_stray(
                &spec.app_name(leftover.job_id),
                key,
                &flavor(&leftover.flavor),
                start,
                false,
            );
        }
        let mut dispatcher = Dispatcher::new(setup.config.clone(), setup.runners.clone());
        if let Some(watch) = setup.watch {
            dispatcher.set_watch(watch);
        }
        // A fresh dispatcher has no timer: the driver kicks it once.
        dispatcher.handle_timeout(start);
        Harness {
            label: setup.label,
            config: setup.config,
            runners: setup.runners,
            dispatcher,
            start,
            now: start,
            coordinator,
            cloud,
            store: BTreeMap::new(),
            faults: setup.faults,
            delays: setup.delays,
            rng: SmallRng::seed_from_u64(setup.seed),
            in_flight: Vec::new(),
            seq: 0,
            tracing: true,
            trace: Vec::new(),
            notices: Vec::new(),
            checking: true,
            violations: Vec::new(),
            maxima: Maxima {
                runner_weight: vec![0.0; runner_count],
                ..Maxima::default()
            },
            shutting_down: false,
            crashes: 0,
            restarts: 0,
            delivered: BTreeSet::new(),
            saved: BTreeSet::new(),
            lost_in_transit: BTreeSet::new(),
            lost_unsaved: BTreeSet::new(),
            executed: BTreeMap::new(),
            steps: 0,
            consecutive_faults: BTreeMap::new(),
            stalled_timeouts: 0,
            job_over_watch: setup.job_over_watch,
            late_create_rate: setup.late_create_rate,
            watch: setup.watch,
            machine_listing: setup.machine_listing,
            machine_listing_lies: setup.machine_listing_lies,
            machine_listings: 0,
            cleared: BTreeSet::new(),
            delivered_at: BTreeMap::new(),
            confirm_errors: BTreeMap::new(),
            listed: BTreeSet::new(),
            failed_listings: BTreeSet::new(),
            orphan_failed_at: BTreeMap::new(),
            stop_times: Vec::new(),
            faults_injected: 0,
            job_overs: 0,
            late_creations: 0,
            vanished_apps: BTreeSet::new(),
            max_accountable_weight: 0.0,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The key of job `job_id` (ids are unique across runners).
    pub fn key(&self, job_id: u64) -> JobKey {
        self.coordinator.job(job_id).key
    }

    // ----- stepping -----

    /// Executes one command, delivers one due outcome, fires the
    /// dispatcher's timer, or moves the clock to the next due outcome.
    pub fn step(&mut self) -> bool {
        self.step_until(None) != Step::Idle
    }

    /// Like [`Harness::step`], but never moves the clock past `limit`
    /// (returns `Idle` when the next event is later).
    pub fn step_until(&mut self, limit: Option<Instant>) -> Step {
        let step = self.step_inner(limit);
        if step != Step::Idle {
            self.steps += 1;
            if self.checking {
                self.check_invariants();
            }
        }
        step
    }

    fn step_inner(&mut self, limit: Option<Instant>) -> Step {
        if let Some(command) = self.dispatcher.poll_command() {
            self.stalled_timeouts = 0;
            self.execute(command);
            return Step::Command;
        }
        if let Some(index) = self.due_outcome() {
            let in_flight = self.in_flight.remove(index);
            self.deliver(in_flight.outcome);
            return Step::Outcome;
        }
        // The coordinator's own deadlines (windows lapsing) move the clock
        // too, or a run could wait forever for a job to be dropped.
        let next_outcome = self
            .in_flight
            .iter()
            .map(|in_flight| in_flight.at)
            .chain(self.coordinator.next_drop())
            .min();
        let timeout = self.dispatcher.poll_timeout();
        let next = match (timeout, next_outcome) {
            (None, None) => return Step::Idle,
            (Some(timeout), None) => timeout,
            (None, Some(outcome)) => outcome,
            (Some(timeout), Some(outcome)) => timeout.min(outcome),
        };
        if limit.is_some_and(|limit| next > limit) {
            return Step::Idle;
        }
        if timeout.is_some_and(|timeout| timeout <= next) {
            if next <= self.now {
                // A timer in the past: the dispatcher must act on it now, or
                // its driver would spin.
                self.stalled_timeouts += 1;
                if self.stalled_timeouts > 50 {
                    let violation = format!(
                        "busy loop: poll_timeout() stays at {:?} in the past after handle_timeout at {:?}",
                        next - self.start,
                        self.elapsed()
                    );
                    self.violation(violation);
                    return Step::Idle;
                }
            } else {
                self.stalled_timeouts = 0;
            }
            self.set_clock(next.max(self.now));
            self.dispatcher.handle_timeout(self.now);
            Step::Timeout
        } else {
            self.stalled_timeouts = 0;
            self.set_clock(next.max(self.now));
            Step::Advanced
        }
    }

    /// Whether a command of `kind` for job `job_id` awaits its answer.
    pub fn is_in_flight(&self, kind: Kind, job_id: u64) -> bool {
        self.in_flight.iter().any(|in_flight| {
            let (outcome_kind, key) = match &in_flight.outcome {
                Outcome::Poll(..)
                | Outcome::AppList(..)
                | Outcome::Machines(..)
                | Outcome::OrphanDeleted(..)
                | Outcome::JobOver(_)
                | Outcome::Noticed(..)
                | Outcome::Flavors(..)
                | Outcome::LateCreate(_) => return false,
                Outcome::Confirmed(key, _) => (Kind::Confirm, key),
                Outcome::Created(key, _) => (Kind::Create, key),
                Outcome::Deployed(key, _) => (Kind::Deploy, key),
                Outcome::Launch(key, _) => (Kind::CheckLaunch, key),
                Outcome::Status(key, _) => (Kind::CheckStatus, key),
                Outcome::Appended(key, _) => (Kind::AppendLog, key),
                Outcome::Reported(key, _) => (Kind::ReportFailure, key),
                Outcome::Deleted(key, _) => (Kind::Delete, key),
            };
            outcome_kind == kind && key.job_id == job_id
        })
    }

    /// The stored record of job `job_id`.
    pub fn record(&self, job_id: u64) -> Option<&JobRecord> {
        self.store.values().find(|record| record.job_id == job_id)
    }

    fn due_outcome(&self) -> Option<usize> {
        self.in_flight
            .iter()
            .enumerate()
            .filter(|(_, in_flight)| in_flight.at <= self.now)
            .min_by_key(|(_, in_flight)| (in_flight.at, in_flight.seq))
            .map(|(index, _)| index)
    }

    fn set_clock(&mut self, at: Instant) {
        self.now = at;
        self.coordinator.advance(at);
        if self.job_over_watch {
            self.watch_jobs_over();
        }
    }

    /// A driver watching the jobs under creation or deployment learns at
    /// once when one is over: the step's answer is dropped and
    /// `handle_job_over` delivered instead. A creation still under way may
    /// land later: one that failed without effect, or one that succeeded
    /// but that no listing has seen yet (the model made it at once; it is
    /// taken back and lands when its answer was due).
    fn watch_jobs_over(&mut self) {
        let now = self.now;
        let mut late = Vec::new();
        for index in 0..self.in_flight.len() {
            let key = match &self.in_flight[index].outcome {
                Outcome::Created(key, _) | Outcome::Deployed(key, _) => *key,
                _ => continue,
            };
            if !self.coordinator.jobs[&key].state.is_over() {
                continue;
            }
            let lands_late =
                self.late_create_rate > 0.0 && self.rng.gen_bool(self.late_create_rate);
            let in_flight = &mut self.in_flight[index];
            if let Some(create) = in_flight.late.take() {
                if lands_late {
                    late.push((in_flight.at, create));
                }
            } else if let Outcome::Created(_, StepOutcome::Done(app)) = &in_flight.outcome {
                let unseen = self
                    .cloud
                    .apps
                    .get(&app.id)
                    .is_some_and(|model| !model.pushed && !model.stray);
                if lands_late && unseen && !self.listed.contains(&app.id) {
                    let model = self.cloud.apps.remove(&app.id).expect("checked above");
                    late.push((
                        in_flight.at,
                        LateCreate {
                            job: key,
                            name: model.name,
                            flavor: flavor(&model.flavor),
                        },
                    ));
                }
            }
            in_flight.outcome = Outcome::JobOver(key);
            in_flight.at = now;
        }
        for (at, create) in late {
            self.seq += 1;
            self.in_flight.push(InFlight {
                at,
                seq: self.seq,
                outcome: Outcome::LateCreate(create),
                late: None,
            });
        }
    }

    /// Moves the clock forward with nothing else happening (process down).
    pub fn advance_clock(&mut self, by: Duration) {
        self.set_clock(self.now + by);
    }

    /// Steps until nothing is due before `elapsed` from the start, then sets
    /// the clock there.
    pub fn run_until(&mut self, elapsed: Duration) {
        let limit = self.start + elapsed;
        let mut steps = 0u64;
        while self.step_until(Some(limit)) != Step::Idle {
            steps += 1;
            assert!(
                steps < 1_000_000,
                "{}: livelock before {elapsed:?}\n{}",
                self.label,
                self.trace_tail(40)
            );
        }
        if self.now < limit {
            self.set_clock(limit);
        }
    }

    /// Steps until `done` holds; `Err` on livelock (over `max_steps`) or when
    /// nothing more can happen.
    pub fn drive_until(
        &mut self,
        max_steps: u64,
        mut done: impl FnMut(&Harness) -> bool,
    ) -> Result<(), String> {
        let mut steps = 0u64;
        loop {
            if self.is_done(&mut done) {
                return Ok(());
            }
            if steps >= max_steps {
                return Err(format!(
                    "{}: livelock: not done after {max_steps} steps ({:?} of virtual time)\n{}",
                    self.label,
                    self.elapsed(),
                    self.trace_tail(40)
                ));
            }
            if self.step_until(None) == Step::Idle {
                return if done(self) {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: idle but not done at {:?}\n{}\n{}",
                        self.label,
                        self.elapsed(),
                        self.violations.join("\n"),
                        self.trace_tail(40)
                    ))
                };
            }
            steps += 1;
        }
    }

    /// Whether `done` holds once the commands the dispatcher queued last
    /// (records, notices) are executed.
    pub fn is_done(&mut self, mut done: impl FnMut(&Harness) -> bool) -> bool {
        if !done(self) {
            return false;
        }
        let mut drained = false;
        while let Some(command) = self.dispatcher.poll_command() {
            self.execute(command);
            drained = true;
        }
        !drained || done(self)
    }

    /// Runs until every job that can be taken has been taken and is over,
    /// no job awaits its confirmation window, nothing is in flight and the
    /// dispatcher tracks no job; with reconciliation on, until the cloud is
    /// empty too.
    pub fn drive_bounded(&mut self, max_steps: u64) -> Result<(), String> {
        self.drive_until(max_steps, Harness::is_settled)
    }

    /// [`Harness::drive_bounded`] with a generous bound; panics on livelock
    /// or on any violated invariant.
    pub fn drive(&mut self) {
        if let Err(error) = self.drive_bounded(100_000) {
            panic!("{error}");
        }
        self.assert_no_violations();
    }

    /// Nothing left to do: see [`Harness::drive_bounded`].
    pub fn is_settled(&self) -> bool {
        self.in_flight
            .iter()
            .all(|in_flight| in_flight.outcome.is_idle())
            && self.dispatcher.jobs().next().is_none()
            && self.coordinator.jobs.values().all(|job| match job.state {
                CoordState::Pending => !self.runner_can_poll(job.key.runner),
                CoordState::Assigned => false,
                _ => true,
            })
            && (self.config.reconcile_interval.is_zero() || self.cloud.apps.is_empty())
    }

    /// Whether the limits let `runner` poll at all (else its jobs stay
    /// pending forever).
    pub fn runner_can_poll(&self, runner: RunnerIdx) -> bool {
        let spec = &self.runners[runner];
        let largest = spec.max_job_weight();
        let fraction = self
            .config
            .allowed_fraction_per_runner
            .min(spec.quota_max_fraction);
        largest > 0.0
            && largest <= self.config.quota + 1e-9
            && largest <= fraction * self.config.quota + 1e-9
            && self.config.concurrent > 0
            && self.config.max_provisioning > 0
    }

    // ----- crashes and restarts -----

    /// Calls `shutdown()` on the dispatcher; from now on it must issue no
    /// command with an effect.
    /// Like a driver, it first executes what the dispatcher already queued:
    /// the signal arrives between two turns of its loop.
    pub fn shutdown(&mut self) {
        self.drain();
        self.dispatcher.shutdown();
        self.shutting_down = true;
        self.stop_times.push(self.now);
        self.note(None, "SHUTDOWN".to_owned());
    }

    /// Steps until the dispatcher is quiescent with nothing in flight and no
    /// command left, as a driver does before exiting.
    pub fn drive_to_quiescence(&mut self, max_steps: u64) -> Result<(), String> {
        self.drive_until(max_steps, |harness| {
            harness.in_flight.is_empty() && harness.dispatcher.is_quiescent()
        })?;
        // Execute what the last outcomes produced (their records).
        self.drain();
        Ok(())
    }

    /// Executes the commands the dispatcher has queued.
    pub fn drain(&mut self) {
        while let Some(command) = self.dispatcher.poll_command() {
            self.execute(command);
        }
    }

    /// The process dies: the dispatcher and its queued commands vanish, and
    /// so do the answers of the commands in flight (whose effects stay).
    pub fn crash(&mut self) {
        // Creations landing late are the cloud's doing: they stay.
        let (late, lost): (Vec<InFlight>, Vec<InFlight>) = self
            .in_flight
            .drain(..)
            .partition(|in_flight| matches!(in_flight.outcome, Outcome::LateCreate(_)));
        self.in_flight = late;
        for in_flight in lost {
            let handed_out = match &in_flight.outcome {
                Outcome::Poll(_, PollOutcome::Job(job)) => Some(job.job_id),
                Outcome::Poll(_, PollOutcome::JobTooLarge { job_id, .. }) => Some(*job_id),
                _ => None,
            };
            if let Some(job_id) = handed_out {
                let key = self
                    .coordinator
                    .jobs
                    .keys()
                    .copied()
                    .find(|key| key.job_id == job_id)
                    .expect("handed-out job is known");
                self.lost_in_transit.insert(key);
            }
        }
        for key in &self.delivered {
            if !self.saved.contains(key) {
                self.lost_unsaved.insert(*key);
            }
        }
        self.crashes += 1;
        self.stop_times.push(self.now);
        self.note(None, "CRASH".to_owned());
        self.dispatcher = Dispatcher::new(self.config.clone(), self.runners.clone());
        if let Some(watch) = self.watch {
            self.dispatcher.set_watch(watch);
        }
        self.listed.clear();
        self.failed_listings.clear();
        self.shutting_down = false;
    }

    /// While the process is down, an application no record accounts for
    /// appears (a creation of an earlier process landing late, records
    /// lost): one of `flavor` for job `job_id` (ids no workload job has).
    pub fn add_leftover(&mut self, runner: RunnerIdx, job_id: u64, flavor_name: &str) -> String {
        let name = self.runners[runner].app_name(job_id);
        let key = JobKey { runner, job_id };
        let now = self.now;
        let id = self
            .cloud
            .insert_stray(&name, key, &flavor(flavor_name), now, false);
        self.note(Some(key), format!("LEFTOVER {id} {name}"));
        id
    }

    /// An application of `owner` named like job `job_id`'s of `runner`
    /// appears (another installation sharing the organisation and runner
    /// key, or an unmarked one).
    pub fn add_foreign(
        &mut self,
        runner: RunnerIdx,
        job_id: u64,
        flavor_name: &str,
        owner: AppOwner,
    ) -> String {
        let name = self.runners[runner].app_name(job_id);
        let key = JobKey { runner, job_id };
        let now = self.now;
        let id = self
            .cloud
            .insert_foreign(&name, key, &flavor(flavor_name), now, owner);
        self.note(Some(key), format!("FOREIGN {id} {name}"));
        id
    }

    /// Someone deletes job `job_id`'s application behind the dispatcher's
    /// back (its machine stops). Returns its id.
    pub fn remove_behind_back(&mut self, job_id: u64) -> Option<String> {
        let key = self.key(job_id);
        let id = self
            .cloud
            .apps
            .values()
            .find(|app| app.job == key && app.owner == AppOwner::Ours)?
            .id
            .clone();
        self.cloud.apps.remove(&id);
        self.coordinator.kill(key, &id);
        self.vanished_apps.insert(id.clone());
        self.note(Some(key), format!("VANISHED {id}"));
        Some(id)
    }

    /// While the process runs, a second application of job `job_id`'s name
    /// appears (a creation racing another, a listing lagging): the
    /// dispatcher can only learn of it by listing, so it is excused from the
    /// cloud's quota check.
    pub fn add_duplicate(&mut self, job_id: u64, flavor_name: &str) -> String {
        let key = self.key(job_id);
        let name = self.runners[key.runner].app_name(job_id);
        let now = self.now;
        let id = self
            .cloud
            .insert_stray(&name, key, &flavor(flavor_name), now, true);
        self.note(Some(key), format!("DUPLICATE {id} {name}"));
        id
    }

    /// Weight the stored records will count once restored, plus the strays
    /// of the cloud: what a leftover must fit beside under the quota.
    pub fn committed_weight(&self) -> f64 {
        let records: f64 = self
            .store
            .values()
            .map(|record| match (&record.app_id, record.stage) {
                (Some(_), _) => record.app_weight,
                (None, StageRecord::Queued | StageRecord::Provisioning) => record.expected_weight,
                (None, _) if record.app_maybe => record.expected_weight,
                (None, _) => 0.0,
            })
            .sum();
        let strays: f64 = self
            .cloud
            .apps
            .values()
            .filter(|app| app.stray)
            .map(|app| app.weight)
            .sum();
        records + strays
    }

    /// A new process takes back the stored records.
    pub fn restart(&mut self) {
        self.dispatcher = Dispatcher::new(self.config.clone(), self.runners.clone());
        if let Some(watch) = self.watch {
            self.dispatcher.set_watch(watch);
        }
        self.listed.clear();
        self.failed_listings.clear();
        self.shutting_down = false;
        self.restarts += 1;
        self.note(None, format!("RESTART with {} records", self.store.len()));
        let records: Vec<JobRecord> = self.store.values().cloned().collect();
        let unknown = self.dispatcher.restore(records, self.now);
        if !unknown.is_empty() {
            self.violation(format!(
                "restore returned {} records of unknown runners",
                unknown.len()
            ));
        }
    }

    // ----- executing commands -----

    fn execute(&mut self, command: Command) {
        let description = self.describe(&command);
        let job = command_job(&command);
        // Confirming a job that arrived as the service stops is allowed: it
        // keeps the coordinator from dropping it during a slow restart.
        let confirm = matches!(command, Command::ConfirmJob { .. });
        if self.shutting_down && has_effect(&command) && !confirm {
            self.violation(format!("command after shutdown(): {description}"));
        }
        if let (Some(key), Some(kind)) = (job, command_kind(&command)) {
            // Nothing is created, written or reported for a job before the
            // coordinator confirmed it is ours (or confirming was given up).
            if kind != Kind::Confirm && kind != Kind::DeleteOrphan && !self.cleared.contains(&key) {
                self.violation(format!("before the job was confirmed: {description}"));
            }
        }
        if let Some(kind) = command_kind(&command) {
            if kind != Kind::Poll {
                let job_id = job.map_or(0, |key| key.job_id);
                *self.executed.entry((kind, job_id)).or_default() += 1;
            }
        }
        self.note(job, description);
        let now = self.now;
        match command {
            Command::Save(record) => {
                if let Some(runner) = self.runner_of_key(&record.runner_key) {
                    self.saved.insert(JobKey {
                        runner,
                        job_id: record.job_id,
                    });
                }
                self.store
                    .insert((record.runner_key.clone(), record.job_id), record);
            }
            Command::Forget(key) => {
                self.store.remove(&(runner_key(key.runner), key.job_id));
            }
            Command::Notice(notice) => {
                if let Notice::GaveUp {
                    job,
                    step: "confirm job",
                } = notice
                {
                    self.cleared.insert(job);
                }
                if let Notice::MachineVanished { job, app_id } = &notice {
                    // Only a machine really gone may end its job.
                    if self.cloud.apps.contains_key(app_id) {
                        self.violation(format!(
                            "j{} failed as vanished although {app_id} exists",
                            job.job_id
                        ));
                    }
                }
                let at = self.elapsed();
                self.notices.push((at, notice));
            }
            Command::ConfirmJob { job, .. } => {
                let check = match self.fault(Kind::Confirm, job) {
                    Some(fault) => {
                        if fault.effect() {
                            self.coordinator.confirm(job, now);
                        }
                        ConfirmCheck::Error
                    }
                    None => self.coordinator.confirm(job, now),
                };
                self.schedule(Kind::Confirm, Outcome::Confirmed(job, check));
            }
            Command::ListApps { runner } => {
                let list_key = JobKey {
                    runner,
                    job_id: u64::MAX,
                };
                let apps = match self.fault(Kind::List, list_key) {
                    Some(_) => None,
                    None => {
                        let prefix = format!("hpd-job-{}-", self.runners[runner].key);
                        Some(self.cloud.list(&prefix, self.start, now))
                    }
                };
                self.schedule(Kind::List, Outcome::AppList(runner, apps));
            }
            Command::ListMachines { runner } => {
                let list_key = JobKey {
                    runner,
                    job_id: u64::MAX - 1,
                };
                let listing = if !self.machine_listing {
                    MachineListing::Unsupported
                } else if self.fault(Kind::List, list_key).is_some() {
                    MachineListing::Failed
                } else {
                    // A machine's task ends with its job (the inner runner
                    // exits after its final update; a cancel stops it).
                    let ended = self
                        .cloud
                        .apps
                        .values()
                        .filter(|app| app.job.runner == runner && app.pushed)
                        .filter(|app| {
                            self.machine_listing_lies
                                || self
                                    .coordinator
                                    .jobs
                                    .get(&app.job)
                                    .is_some_and(|job| job.state.is_over())
                        })
                        .map(|app| app.id.clone())
                        .collect();
                    MachineListing::Listed { ended }
                };
                self.schedule(Kind::List, Outcome::Machines(runner, listing));
            }
            Command::DeleteOrphan {
                runner,
                app_id,
                name,
                ..
            } => {
                let owner = self
                    .dispatcher
                    .jobs()
                    .find(|job| job.app_id() == Some(app_id.as_str()))
                    .map(|job| job.key.job_id);
                if let Some(job_id) = owner {
                    self.violation(format!(
                        "orphan deletion of {app_id}, the application of tracked j{job_id}"
                    ));
                }
                if !name.starts_with(&format!("hpd-job-{}-", self.runners[runner].key)) {
                    self.violation(format!("orphan {name} deleted for runner {runner}"));
                }
                let listed_app = self.cloud.apps.get(&app_id).map(|app| {
                    (
                        app.owner.clone(),
                        now.saturating_duration_since(app.created_at),
                    )
                });
                if let Some((owner, age)) = listed_app {
                    if owner != AppOwner::Ours {
                        self.violation(format!(
                            "orphan deletion of {app_id}, an application of {owner:?}"
                        ));
                    }
                    if age < self.config.orphan_min_age {
                        self.violation(format!(
                            "orphan deletion of {app_id} aged {age:?}, under the minimum age"
                        ));
                    }
                }
                let orphan_key = JobKey {
                    runner,
                    job_id: name
                        .rsplit('-')
                        .next()
                        .and_then(|id| id.parse().ok())
                        .unwrap_or(u64::MAX),
                };
                if self.orphan_failed_at.get(&app_id) == Some(&now) {
                    // A failed deletion waits for the next reconciliation.
                    self.violation(format!(
                        "orphan deletion of {app_id} retried at once after a failure"
                    ));
                }
                let fault = self.fault(Kind::DeleteOrphan, orphan_key);
                if fault.is_none_or(Fault::effect) {
                    // Deleting what is gone already succeeds (404).
                    if let Some(app) = self.cloud.apps.remove(&app_id) {
                        self.cloud.deletions += 1;
                        self.cloud.orphan_deletions += 1;
                        self.coordinator.kill(app.job, &app.id);
                    }
                }
                self.schedule(
                    Kind::DeleteOrphan,
                    Outcome::OrphanDeleted(app_id, fault.is_none()),
                );
            }
            Command::RefreshFlavors { runner } => {
                let table = self.dispatcher.runner(runner).flavors.clone();
                self.schedule(Kind::List, Outcome::Flavors(runner, table));
            }
            Command::RequestJob { runner } => {
                self.check_poll_room();
                let poll_key = JobKey {
                    runner,
                    job_id: u64::MAX,
                };
                let outcome = match self.fault(Kind::Poll, poll_key) {
                    Some(fault) => PollOutcome::Error {
                        transient: fault.transient(),
                    },
                    None => match self.coordinator.take(runner, now) {
                        Some(job) if self.coordinator.job(job.job_id).spec.too_large => {
                            PollOutcome::JobTooLarge {
                                job_id: job.job_id,
                                token: job.token,
                                limit_bytes: 16 << 20,
                            }
                        }
                        Some(job) => PollOutcome::Job(job),
                        None => PollOutcome::NoJob,
                    },
                };
                self.schedule(Kind::Poll, Outcome::Poll(runner, outcome));
            }
            Command::CreateApp {
                job,
                name,
                flavor,
                may_exist,
            } => {
                let fault = self.fault(Kind::Create, job);
                let app = (fault.is_none_or(Fault::effect))
                    .then(|| self.cloud.create(&name, job, &flavor, may_exist, now));
                let late = app.is_none().then(|| LateCreate {
                    job,
                    name: name.clone(),
                    flavor: flavor.clone(),
                });
                let outcome = match (fault, app) {
                    (None, Some(app)) => StepOutcome::Done(app),
                    (Some(fault), _) if fault.transient() => StepOutcome::Failed {
                        transient: true,
                        user_message: "Clever Cloud API unavailable (503) while creating the application".to_owned(),
                    },
                    _ => StepOutcome::Failed {
                        transient: false,
                        user_message: "Clever Cloud refused to create the application: organisation quota reached"
                            .to_owned(),
                    },
                };
                self.schedule_with(Kind::Create, Outcome::Created(job, outcome), late);
            }
            Command::Deploy { job, app_id, .. } => {
                let fault = self.fault(Kind::Deploy, job);
                let mut outcome = step_outcome(fault, "git push to the application failed");
                if fault.is_none_or(Fault::effect) {
                    match self.cloud.push(&app_id) {
                        None => {
                            self.cloud.deploys_to_missing_app += 1;
                            if !self.vanished_apps.contains(&app_id) {
                                self.violation(format!(
                                    "deploy of j{} to missing application {app_id}",
                                    job.job_id
                                ));
                            }
                            outcome = StepOutcome::Failed {
                                transient: false,
                                user_message: "application not found".to_owned(),
                            };
                        }
                        Some(true) => self.coordinator.push(job, &app_id, now),
                        Some(false) => {}
                    }
                }
                self.schedule(Kind::Deploy, Outcome::Deployed(job, outcome));
            }
            Command::CheckLaunch { job, .. } => {
                let check = match self.fault(Kind::CheckLaunch, job) {
                    Some(_) => LaunchCheck::NotYet,
                    None => self.coordinator.launch_check(job),
                };
                self.schedule(Kind::CheckLaunch, Outcome::Launch(job, check));
            }
            Command::CheckStatus { job, .. } => {
                let check = match self.fault(Kind::CheckStatus, job) {
                    Some(_) => StatusCheck::Error,
                    None => self.coordinator.status(job),
                };
                self.schedule(Kind::CheckStatus, Outcome::Status(job, check));
            }
            Command::AppendNotice { job, text, .. } => {
                // Notices are informative: the model log does not keep them.
                let fault = self.fault(Kind::AppendLog, job);
                let length = fault.is_none().then_some(text.len() as u64);
                self.schedule(Kind::AppendLog, Outcome::Noticed(job, length));
            }
            Command::AppendLog { job, text, .. } => {
                let fault = self.fault(Kind::AppendLog, job);
                let outcome = write_outcome(fault, || self.coordinator.append(job, &text));
                self.schedule(Kind::AppendLog, Outcome::Appended(job, outcome));
            }
            Command::ReportFailure { job, kind, .. } => {
                let fault = self.fault(Kind::ReportFailure, job);
                let outcome = write_outcome(fault, || self.coordinator.report_failure(job, kind));
                self.schedule(Kind::ReportFailure, Outcome::Reported(job, outcome));
            }
            Command::DeleteApp { job, app_id, name } => {
                let fault = self.fault(Kind::Delete, job);
                if fault.is_none_or(Fault::effect) {
                    for app in self.cloud.delete(app_id.as_deref(), &name) {
                        self.coordinator.kill(app.job, &app.id);
                    }
                }
                let outcome = step_outcome(fault, "Clever Cloud API unavailable (503)");
                self.schedule(Kind::Delete, Outcome::Deleted(job, outcome));
            }
        }
    }

    /// Whether this command fails, and how.
    fn fault(&mut self, kind: Kind, key: JobKey) -> Option<Fault> {
        let fault = self.pick_fault(kind, key);
        self.faults_injected += u64::from(fault.is_some());
        fault
    }

    fn pick_fault(&mut self, kind: Kind, key: JobKey) -> Option<Fault> {
        if let Some(script) = self.faults.script.get_mut(&kind) {
            if let Some(scripted) = script.pop_front() {
                return scripted;
            }
        }
        let transient_rate = self
            .faults
            .transient_rate
            .get(&kind)
            .copied()
            .unwrap_or(0.0);
        let permanent_rate = self
            .faults
            .permanent_rate
            .get(&kind)
            .copied()
            .unwrap_or(0.0);
        if transient_rate == 0.0 && permanent_rate == 0.0 {
            return None;
        }
        let consecutive = self.consecutive_faults.entry((kind, key)).or_default();
        let cap = self
            .faults
            .max_consecutive
            .get(&kind)
            .copied()
            .unwrap_or(u32::MAX);
        let roll: f64 = self.rng.gen();
        let fault = if *consecutive >= cap {
            None
        } else if roll < permanent_rate {
            Some(Fault::Permanent {
                effect: self.rng.gen_bool(0.5),
            })
        } else if roll < permanent_rate + transient_rate {
            Some(Fault::Transient {
                effect: self.rng.gen_bool(0.5),
            })
        } else {
            None
        };
        let consecutive = self.consecutive_faults.entry((kind, key)).or_default();
        *consecutive = if fault.is_some() { *consecutive + 1 } else { 0 };
        fault
    }

    fn schedule(&mut self, kind: Kind, outcome: Outcome) {
        self.schedule_with(kind, outcome, None);
    }

    fn schedule_with(&mut self, kind: Kind, outcome: Outcome, late: Option<LateCreate>) {
        let mut delay = self.delays.fixed.get(&kind).copied().unwrap_or_default();
        if let Some(max) = self.delays.random_max {
            let max_ms = max.as_millis() as u64;
            delay += Duration::from_millis(self.rng.gen_range(0..=max_ms));
        }
        self.seq += 1;
        self.in_flight.push(InFlight {
            at: self.now + delay,
            seq: self.seq,
            outcome,
            late,
        });
    }

    fn deliver(&mut self, outcome: Outcome) {
        let now = self.now;
        let (job, text) = describe_outcome(&outcome);
        self.note(job, format!("  <- {text}"));
        match outcome {
            Outcome::Poll(runner, outcome) => {
                let delivered_id = match &outcome {
                    PollOutcome::Job(job) => Some(job.job_id),
                    PollOutcome::JobTooLarge { job_id, .. } => Some(*job_id),
                    _ => None,
                };
                if let Some(job_id) = delivered_id {
                    let key = JobKey { runner, job_id };
                    self.delivered.insert(key);
                    self.delivered_at.entry(key).or_insert(now);
                }
                // A coordinator that answers at once, as Rails does without
                // Workhorse long polling.
                let answer = PollAnswer {
                    from_rails: true,
                    held: Duration::ZERO,
                };
                self.dispatcher
                    .handle_poll_answer(runner, outcome, answer, now);
            }
            Outcome::Flavors(runner, table) => self.dispatcher.handle_flavors(runner, table, now),
            Outcome::Confirmed(key, check) => {
                match check {
                    ConfirmCheck::Confirmed => {
                        self.cleared.insert(key);
                    }
                    ConfirmCheck::Error => *self.confirm_errors.entry(key).or_default() += 1,
                    ConfirmCheck::Gone => {}
                }
                self.dispatcher.handle_confirmed(key, check, now);
            }
            Outcome::JobOver(key) => {
                self.job_overs += 1;
                self.dispatcher.handle_job_over(key, now);
            }
            Outcome::Machines(runner, listing) => {
                self.machine_listings += 1;
                self.dispatcher.handle_machines(runner, listing, now);
            }
            Outcome::AppList(runner, apps) => {
                match &apps {
                    Some(apps) => self.listed.extend(apps.iter().map(|app| app.id.clone())),
                    None => {
                        self.failed_listings.insert(runner);
                    }
                }
                self.dispatcher.handle_app_list(runner, apps, now);
            }
            Outcome::OrphanDeleted(app_id, deleted) => {
                if !deleted {
                    self.orphan_failed_at.insert(app_id.clone(), now);
                }
                self.dispatcher.handle_orphan_deleted(&app_id, deleted, now);
            }
            Outcome::LateCreate(create) => {
                self.late_creations += 1;
                // Created without looking for the name: the request was
                // sent before the job's other steps.
                self.cloud
                    .insert_stray(&create.name, create.job, &create.flavor, now, true);
            }
            Outcome::Created(key, outcome) => self.dispatcher.handle_created(key, outcome, now),
            Outcome::Deployed(key, outcome) => self.dispatcher.handle_deployed(key, outcome, now),
            Outcome::Launch(key, check) => self.dispatcher.handle_launch_check(key, check, now),
            Outcome::Status(key, check) => self.dispatcher.handle_status(key, check, now),
            Outcome::Appended(key, outcome) => {
                self.dispatcher.handle_log_appended(key, outcome, now)
            }
            Outcome::Reported(key, outcome) => {
                self.dispatcher.handle_failure_reported(key, outcome, now)
            }
            Outcome::Deleted(key, outcome) => self.dispatcher.handle_deleted(key, outcome, now),
            Outcome::Noticed(key, length) => {
                self.dispatcher.handle_notice_written(key, length, now)
            }
        }
    }

    fn runner_of_key(&self, key: &str) -> Option<RunnerIdx> {
        self.runners.iter().position(|runner| runner.key == key)
    }

    // ----- invariants -----

    fn violation(&mut self, text: String) {
        let line = format!("{}: at {:?}: {text}", self.label, self.elapsed());
        self.note(None, format!("VIOLATION {text}"));
        self.violations.push(line);
    }

    /// When a poll starts: the weight it reserves fits beside the jobs and
    /// the orphans the dispatcher knows of. Applications left before the
    /// process started must have been listed, unless their listing failed
    /// (then, like creations landing late, they are excused from the
    /// cloud's quota check).
    fn check_poll_room(&mut self) {
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
    fn unexcused_drop(&self, job: &ModelJob) -> Option<String> {
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

    fn note(&mut self, job: Option<JobKey>, text: String) {
        if self.tracing {
            let at = self.elapsed();
            self.trace.push(TraceLine { at, job, text });
        }
    }

    /// The trace lines of one job, as `<seconds>s <text>`.
    pub fn trace_of(&self, job_id: u64) -> String {
        render(
            self.trace
                .iter()
                .filter(|line| line.job.is_some_and(|key| key.job_id == job_id)),
        )
    }

    /// The lines whose text starts with one of `prefixes`.
    pub fn trace_matching(&self, prefixes: &[&str]) -> String {
        render(self.trace.iter().filter(|line| {
            prefixes
                .iter()
                .any(|prefix| line.text.trim_start().starts_with(prefix))
        }))
    }

    pub fn trace_tail(&self, count: usize) -> String {
        let skip = self.trace.len().saturating_sub(count);
        render(self.trace.iter().skip(skip))
    }

    /// Times (from the start) at which commands starting with `prefix` ran.
    pub fn times_of(&self, prefix: &str) -> Vec<u64> {
        self.trace
            .iter()
            .filter(|line| line.text.starts_with(prefix))
            .map(|line| line.at.as_secs())
            .collect()
    }

    /// Number of side-effect commands of `kind` executed for job `job_id`.
    pub fn count(&self, kind: Kind, job_id: u64) -> u32 {
        self.executed.get(&(kind, job_id)).copied().unwrap_or(0)
    }

    pub fn total(&self, kind: Kind) -> u32 {
        self.executed
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, count)| count)
            .sum()
    }

    /// One line for a command, as traces show it.
    pub fn describe(&self, command: &Command) -> String {
        match command {
            Command::RequestJob { runner } => format!("RequestJob r{runner}"),
            Command::ConfirmJob { job, .. } => format!("ConfirmJob j{}", job.job_id),
            Command::ListApps { runner } => format!("ListApps r{runner}"),
            Command::ListMachines { runner } => format!("ListMachines r{runner}"),
            Command::RefreshFlavors { runner } => format!("RefreshFlavors r{runner}"),
            Command::DeleteOrphan {
                runner,
                app_id,
                name,
                ..
            } => format!("DeleteOrphan r{runner} {app_id} {name}"),
            Command::Save(record) => format!("Save j{} {}", record.job_id, describe_record(record)),
            Command::Forget(key) => format!("Forget j{}", key.job_id),
            Command::CreateApp {
                job, name, flavor, ..
            } => {
                format!("CreateApp j{} {name} {}", job.job_id, flavor.api_name)
            }
            Command::Deploy { job, app_id, .. } => format!("Deploy j{} {app_id}", job.job_id),
            Command::CheckLaunch { job, .. } => format!("CheckLaunch j{}", job.job_id),
            Command::CheckStatus { job, .. } => format!("CheckStatus j{}", job.job_id),
            Command::AppendLog { job, text, .. } => format!("AppendLog j{} {text:?}", job.job_id),
            Command::AppendNotice { job, .. } => format!("AppendNotice j{}", job.job_id),
            Command::ReportFailure { job, kind, .. } => {
                format!("ReportFailure j{} {kind:?}", job.job_id)
            }
            Command::DeleteApp { job, app_id, name } => match app_id {
                Some(id) => format!("DeleteApp j{} {id}", job.job_id),
                None => format!("DeleteApp j{} name={name}", job.job_id),
            },
            Command::Notice(notice) => describe_notice(notice),
        }
    }
}

fn render<'a>(lines: impl Iterator<Item = &'a TraceLine>) -> String {
    let mut out = String::new();
    for line in lines {
        let _ = writeln!(out, "{}s {}", line.at.as_secs(), line.text);
    }
    out
}

fn step_outcome(fault: Option<Fault>, message: &str) -> StepOutcome<()> {
    match fault {
        None => StepOutcome::Done(()),
        Some(fault) => StepOutcome::Failed {
            transient: fault.transient(),
            user_message: message.to_owned(),
        },
    }
}

/// The answer to a write to the job on the model coordinator (a log
/// append, a failure report): `write` runs when it takes effect, and a
/// write the coordinator refuses (the job is over) fails for good.
fn write_outcome(fault: Option<Fault>, write: impl FnOnce() -> bool) -> StepOutcome<()> {
    if fault.is_none_or(Fault::effect) && !write() && fault.is_none() {
        return StepOutcome::Failed {
            transient: false,
            user_message: "job is not running (403)".to_owned(),
        };
    }
    step_outcome(fault, "coordinator unavailable")
}

fn describe_record(record: &JobRecord) -> String {
    let mut text = record.stage.as_str().to_owned();
    if record.stage == StageRecord::Failing {
        let kind = record
            .failure_kind
            .map_or("?".to_owned(), |kind| format!("{kind:?}"));
        let written = if record.message_written {
            "written"
        } else {
            "unwritten"
        };
        let _ = write!(text, " {kind} {written}");
    }
    if let Some(id) = &record.app_id {
        let _ = write!(text, " {id}");
    } else if record.app_maybe {
        text.push_str(" maybe");
    }
    if !record.confirmed {
        text.push_str(" unconfirmed");
    }
    text
}

fn describe_notice(notice: &Notice) -> String {
    match notice {
        Notice::Acquired {
            job,
            flavor,
            weight,
        } => {
            format!("Notice acquired j{} {flavor} {weight:.2}", job.job_id)
        }
        Notice::Launched { job } => format!("Notice launched j{}", job.job_id),
        Notice::Finished { job } => format!("Notice finished j{}", job.job_id),
        Notice::Failed { job, .. } => format!("Notice failed j{}", job.job_id),
        Notice::Retrying {
            job,
            step,
            attempt,
            max_attempts,
            delay,
        } => format!(
            "Notice retrying j{} {step} attempt {attempt}/{max_attempts} in {}s",
            job.job_id,
            delay.as_secs()
        ),
        Notice::Decommissioned { job } => format!("Notice decommissioned j{}", job.job_id),
        Notice::GaveUp { job, step } => format!("Notice gave up j{} {step}", job.job_id),
        Notice::Withdrawn { job } => format!("Notice withdrawn j{}", job.job_id),
        Notice::Adopted { job, app_id } => format!("Notice adopted j{} {app_id}", job.job_id),
        Notice::Orphan {
            runner,
            app_id,
            name,
        } => format!("Notice orphan r{runner} {app_id} {name}"),
        Notice::Foreign {
            runner,
            app_id,
            name,
            owner,
            age,
        } => format!(
            "Notice foreign r{runner} {app_id} {name} {owner:?} age={}",
            age.map_or_else(|| "?".to_owned(), |age| format!("{}s", age.as_secs()))
        ),
        Notice::MachineVanished { job, app_id } => {
            format!("Notice vanished j{} {app_id}", job.job_id)
        }
    }
}

fn describe_step<T>(outcome: &StepOutcome<T>, done: &str, failed: &str) -> String {
    match outcome {
        StepOutcome::Done(_) => done.to_owned(),
        StepOutcome::Failed {
            transient: true, ..
        } => format!("{failed} (transient)"),
        StepOutcome::Failed {
            transient: false, ..
        } => format!("{failed} (permanent)"),
    }
}

/// A step's answer for job `key`, as traces show it.
fn describe_job_step<T>(
    key: &JobKey,
    outcome: &StepOutcome<T>,
    done: &str,
    failed: &str,
) -> (Option<JobKey>, String) {
    (
        Some(*key),
        format!("j{} {}", key.job_id, describe_step(outcome, done, failed)),
    )
}

fn describe_outcome(outcome: &Outcome) -> (Option<JobKey>, String) {
    match outcome {
        Outcome::Flavors(runner, table) => (
            None,
            format!("r{runner} flavors: {}", table.names_by_weight().join(" ")),
        ),
        Outcome::Noticed(key, length) => (
            Some(*key),
            format!("j{} notice written: {length:?}", key.job_id),
        ),
        Outcome::Poll(runner, poll) => match poll {
            PollOutcome::Job(job) => (
                Some(JobKey {
                    runner: *runner,
                    job_id: job.job_id,
                }),
                format!("r{runner} job j{}", job.job_id),
            ),
            PollOutcome::NoJob => (None, format!("r{runner} no job")),
            PollOutcome::NoJobPollAgain => (None, format!("r{runner} no job, held next")),
            PollOutcome::Error { transient } => {
                (None, format!("r{runner} error (transient: {transient})"))
            }
            PollOutcome::Cancelled => (None, format!("r{runner} cancelled")),
            PollOutcome::JobTooLarge { job_id, .. } => (
                Some(JobKey {
                    runner: *runner,
                    job_id: *job_id,
                }),
                format!("r{runner} job j{job_id} too large"),
            ),
        },
        Outcome::Confirmed(key, check) => {
            (Some(*key), format!("j{} confirm {check:?}", key.job_id))
        }
        Outcome::JobOver(key) => (Some(*key), format!("j{} job over", key.job_id)),
        Outcome::AppList(runner, apps) => (
            None,
            match apps {
                None => format!("r{runner} listing failed"),
                Some(apps) => {
                    let ids: Vec<&str> = apps.iter().map(|app| app.id.as_str()).collect();
                    format!("r{runner} apps {ids:?}")
                }
            },
        ),
        Outcome::Machines(runner, listing) => (None, format!("r{runner} machines {listing:?}")),
        Outcome::OrphanDeleted(app_id, deleted) => (
            None,
            if *deleted {
                format!("{app_id} deleted")
            } else {
                format!("{app_id} delete failed")
            },
        ),
        Outcome::LateCreate(create) => (
            Some(create.job),
            format!(
                "j{} creation landed late: {}",
                create.job.job_id, create.name
            ),
        ),
        Outcome::Created(key, StepOutcome::Done(app)) => {
            (Some(*key), format!("j{} created {}", key.job_id, app.id))
        }
        Outcome::Created(key, failed) => describe_job_step(key, failed, "", "create failed"),
        Outcome::Deployed(key, outcome) => {
            describe_job_step(key, outcome, "deployed", "deploy failed")
        }
        Outcome::Launch(key, check) => (Some(*key), format!("j{} launch {check:?}", key.job_id)),
        Outcome::Status(key, check) => (Some(*key), format!("j{} status {check:?}", key.job_id)),
        Outcome::Appended(key, outcome) => {
            describe_job_step(key, outcome, "log appended", "log append failed")
        }
        Outcome::Reported(key, outcome) => {
            describe_job_step(key, outcome, "failure reported", "report failed")
        }
        Outcome::Deleted(key, outcome) => {
            describe_job_step(key, outcome, "deleted", "delete failed")
        }
    }
}

/// The job a command is about.
pub fn command_job(command: &Command) -> Option<JobKey> {
    match command {
        Command::RequestJob { .. }
        | Command::ListApps { .. }
        | Command::ListMachines { .. }
        | Command::RefreshFlavors { .. }
        | Command::DeleteOrphan { .. } => None,
        Command::Save(record) => {
            // Runner keys are `runner-<idx>`.
            let runner = record
                .runner_key
                .strip_prefix("runner-")
                .and_then(|idx| idx.parse().ok())?;
            Some(JobKey {
                runner,
                job_id: record.job_id,
            })
        }
        Command::Forget(key) => Some(*key),
        Command::ConfirmJob { job, .. }
        | Command::CreateApp { job, .. }
        | Command::Deploy { job, .. }
        | Command::CheckLaunch { job, .. }
        | Command::CheckStatus { job, .. }
        | Command::AppendLog { job, .. }
        | Command::AppendNotice { job, .. }
        | Command::ReportFailure { job, .. }
        | Command::DeleteApp { job, .. } => Some(*job),
        Command::Notice(notice) => Some(match notice {
            Notice::Acquired { job, .. }
            | Notice::Launched { job }
            | Notice::Finished { job }
            | Notice::Failed { job, .. }
            | Notice::Retrying { job, .. }
            | Notice::Decommissioned { job }
            | Notice::GaveUp { job, .. }
            | Notice::Withdrawn { job }
            | Notice::Adopted { job, .. }
            | Notice::MachineVanished { job, .. } => *job,
            Notice::Orphan { .. } | Notice::Foreign { .. } => return None,
        }),
    }
}

/// The kind of a command that has an outcome.
pub fn command_kind(command: &Command) -> Option<Kind> {
    Some(match command {
        Command::RequestJob { .. } => Kind::Poll,
        Command::ConfirmJob { .. } => Kind::Confirm,
        Command::ListApps { .. }
        | Command::ListMachines { .. }
        | Command::RefreshFlavors { .. } => Kind::List,
        Command::DeleteOrphan { .. } => Kind::DeleteOrphan,
        Command::CreateApp { .. } => Kind::Create,
        Command::Deploy { .. } => Kind::Deploy,
        Command::CheckLaunch { .. } => Kind::CheckLaunch,
        Command::CheckStatus { .. } => Kind::CheckStatus,
        Command::AppendLog { .. } | Command::AppendNotice { .. } => Kind::AppendLog,
        Command::ReportFailure { .. } => Kind::ReportFailure,
        Command::DeleteApp { .. } => Kind::Delete,
        Command::Save(_) | Command::Forget(_) | Command::Notice(_) => return None,
    })
}

/// Commands that act on the outside world (not records or notices).
pub fn has_effect(command: &Command) -> bool {
    command_kind(command).is_some()
}

/// Asserts that `actual` equals `expected` line by line, ignoring the
/// indentation of `expected` (so it can sit in an indented raw string).
#[track_caller]
pub fn assert_lines(actual: &str, expected: &str) {
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let actual_lines: Vec<&str> = actual.lines().map(str::trim).collect();
    if expected != actual_lines {
        panic!(
            "trace mismatch\n--- expected\n{}\n--- actual\n{}",
            expected.join("\n"),
            actual_lines.join("\n")
        );
    }
}

/// Asserts that the first line starting with `first` comes before the first
/// line starting with `second`.
#[track_caller]
pub fn assert_before(trace: &str, first: &str, second: &str) {
    let position = |prefix: &str| {
        trace
            .lines()
            .position(|line| {
                line.split_once(' ')
                    .is_some_and(|(_, text)| text.trim_start().starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{trace}"))
    };
    assert!(
        position(first) < position(second),
        "{first:?} not before {second:?} in\n{trace}"
    );
}
