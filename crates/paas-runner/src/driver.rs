//! The driver: one event loop that feeds the core with outcomes and the clock,
//! executes its commands (store writes through [`store_exec`], network calls
//! as tasks), and stops cleanly on shutdown.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use paas_clever::api::{CleverError, DeploymentState};
use paas_core::{
    App, AppOwner, Command, ConfirmCheck, Dispatcher, FailureKind, FlavorTable, JobKey,
    LaunchCheck, ListedApp, MachineListing, NewJob, Notice, PollOutcome, RunnerIdx, Secret, Stats,
    StatusCheck, StepOutcome,
};
use paas_gitlab::{
    ConfirmOutcome, FailureReason, JobRequest, JobRequestOutcome, RemoteJobStatus, TraceProbe,
    UpdateOutcome,
};
use paas_store::{JobStore, StoreWrite};
use tokio::sync::{mpsc, watch};

use crate::metrics::Step;
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

use crate::runners::Runners;

mod reload;
mod store_exec;
pub use reload::{ReloadHandle, ReloadRequest, ReloadRunner};

/// How long a job request may be held by the coordinator (long polling).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(70);
/// How often flavor catalogues are refreshed.
pub const FLAVORS_TTL: Duration = Duration::from_secs(3600);
/// What the driver has seen of a coordinator's long polling.
#[derive(Debug, Clone, Copy, Default)]
struct LongPolling {
    /// A request was held: the coordinator does long polling.
    holds_seen: bool,
    /// The last answer was a Workhorse 204 that came at once.
    quick_workhorse_204: bool,
    /// The last request was sent at once after a Rails 204.
    after_rails: bool,
}

impl LongPolling {
    /// Whether the request after this answer goes out at once. `no_job`:
    /// a 204; `from_rails`: it carried `X-GitLab-Last-Update`; `held`: how
    /// long the request took.
    fn poll_again(&mut self, no_job: bool, from_rails: bool, held: Duration) -> bool {
        let again_after_rails = std::mem::take(&mut self.after_rails);
        if !no_job {
            self.quick_workhorse_204 = false;
            return false;
        }
        if from_rails {
            self.quick_workhorse_204 = false;
            if again_after_rails {
                // The request carrying the fresh version was not held.
                self.holds_seen = false;
                return false;
            }
            self.after_rails = self.holds_seen;
            return self.holds_seen;
        }
        // Workhorse answers by itself only where it long-polls.
        self.holds_seen = true;
        if held >= LONG_POLL_EVIDENCE {
            self.quick_workhorse_204 = false;
            return true;
        }
        !std::mem::replace(&mut self.quick_workhorse_204, true)
    }
}

/// A request held this long shows the coordinator does long polling.
const LONG_POLL_EVIDENCE: Duration = Duration::from_millis(900);
/// Bound of the outcome channel (tasks wait when it is full).
const EVENT_CHANNEL_SIZE: usize = 4096;

/// An outcome reported by a task.
#[derive(Debug)]
enum Event {
    /// A new configuration, loaded and checked ([`crate::reload`]).
    Reload(Box<ReloadRequest>),
    Poll {
        runner: RunnerIdx,
        outcome: PollOutcome,
        last_update: Option<String>,
        /// How long the request took (a coordinator that long-polls holds it).
        held: Duration,
    },
    Created {
        job: JobKey,
        outcome: StepOutcome<App>,
    },
    Deployed {
        job: JobKey,
        outcome: StepOutcome<()>,
    },
    Launch {
        job: JobKey,
        check: LaunchCheck,
    },
    Status {
        job: JobKey,
        check: StatusCheck,
    },
    LogAppended {
        job: JobKey,
        outcome: StepOutcome<()>,
    },
    Reported {
        job: JobKey,
        outcome: StepOutcome<()>,
    },
    Deleted {
        job: JobKey,
        outcome: StepOutcome<()>,
    },
    Flavors {
        runner: RunnerIdx,
        table: Option<FlavorTable>,
    },
    Confirmed {
        job: JobKey,
        check: ConfirmCheck,
    },
    /// The coordinator says the job is over while a step was under way.
    JobOver {
        job: JobKey,
    },
    AppList {
        runner: RunnerIdx,
        apps: Option<Vec<ListedApp>>,
    },
    Machines {
        runner: RunnerIdx,
        listing: MachineListing,
    },
    OrphanDeleted {
        app_id: String,
        deleted: bool,
    },
    Noticed {
        job: JobKey,
        length: Option<u64>,
    },
}

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

/// The longest one launch check (job status, then job log) may take: the
/// job fails at most this long after `paas_job_trace_watch.timeout_seconds`.
pub const LAUNCH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the [`Snapshot`] is rebuilt at most (a change is published at
/// the latest this long after it happened).
pub const JOB_LIST_PERIOD: Duration = Duration::from_millis(250);

/// The event loop and what it owns.
pub struct Driver {
    core: Dispatcher,
    runners: Runners,
    store: store_exec::StoreExec,
    system_id: String,
    last_update: Vec<Option<String>>,
    /// Per runner: the coordinator was seen holding a request (Workhorse
    /// long polling), so the request after a fresh queue version waits there.
    long_polling: Vec<LongPolling>,
    /// Jobs whose application creation was attempted (adopt by name on retry).
    create_attempted: HashSet<JobKey>,
    poll_tasks: HashMap<RunnerIdx, AbortHandle>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    snapshot_tx: watch::Sender<Snapshot>,
    flavors_refresh_at: Instant,
    jobs_published_at: Option<Instant>,
    /// A change happened since the last snapshot (published when
    /// [`JOB_LIST_PERIOD`] has passed).
    publish_pending: bool,
    /// The first failed store write, if any.
    store_error: Option<String>,
    /// Jobs the store held at start.
    restored_jobs: usize,
    /// Per runner: its first listing was answered.
    listed_once: Vec<bool>,
    /// Per runner: the applications of other owners (or unmarked) under its
    /// key at its last listing, as `paas-runner state` shows them.
    foreign_seen: Vec<Vec<ForeignSeen>>,
}

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
    pub fn new(
        core: Dispatcher,
        runners: Runners,
        store: Box<dyn JobStore>,
        system_id: String,
    ) -> Driver {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_SIZE);
        let (snapshot_tx, _) = watch::channel(Snapshot::default());
        let runner_count = runners.len();
        Driver {
            core,
            runners,
            store: store_exec::StoreExec::new(store),
            system_id,
            last_update: vec![None; runner_count],
            long_polling: vec![LongPolling::default(); runner_count],
            create_attempted: HashSet::new(),
            poll_tasks: HashMap::new(),
            events_tx,
            events_rx,
            snapshot_tx,
            flavors_refresh_at: now() + FLAVORS_TTL,
            jobs_published_at: None,
            publish_pending: false,
            store_error: None,
            restored_jobs: 0,
            listed_once: vec![false; runner_count],
            foreign_seen: vec![Vec::new(); runner_count],
        }
    }

    /// Figures updated after every event.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot_tx.subscribe()
    }

    /// Takes back the jobs of the store.
    pub async fn restore(&mut self) -> anyhow::Result<()> {
        let records = self.store.store().load().await?;
        self.restored_jobs = records.len();
        if records.is_empty() {
            return Ok(());
        }
        info!(jobs = records.len(), store = %self.store.location(), "resuming jobs recorded by a previous run");
        for record in &records {
            if let Some(runner) = self.runners.iter().position(|r| r.key == record.runner_key) {
                if record.app_maybe || record.app_id.is_none() {
                    self.create_attempted.insert(JobKey {
                        runner,
                        job_id: record.job_id,
                    });
                }
            }
        }
        let unknown = self.core.restore(records, now());
        for record in unknown {
            warn!(
                runner_key = %record.runner_key,
                job_id = record.job_id,
                app_id = record.app_id.as_deref().unwrap_or("-"),
                "recorded job belongs to a runner that is no longer configured; keeping its record"
            );
        }
        Ok(())
    }

    /// Runs until `shutdown` resolves and every in-flight call has completed.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        self.core.handle_timeout(now());
        loop {
            self.execute_commands();
            self.purge_store();
            self.publish();
            if let Some(error) = self.store_error.take() {
                // What follows a failed write could not be recorded before it
                // is done. Stop at once, as a crash would: everything up to
                // the last recorded intent is resumed at the next start, and
                // what was under way is resolved by reconciliation.
                error!(%error, "the state store fails: stopping now");
                anyhow::bail!("stopped because the state store failed: {error}");
            }
            if shutdown_seen && self.core.is_quiescent() && self.store.is_idle() {
                info!("all in-flight operations completed; state is saved; exiting");
                return Ok(());
            }
            let deadline = self.next_deadline();
            tokio::select! {
                event = self.events_rx.recv() => {
                    // The driver holds a sender: the channel never closes.
                    if let Some(event) = event {
                        self.handle_event(event);
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    let now = now();
                    if now >= self.flavors_refresh_at && !shutdown_seen {
                        self.refresh_flavors();
                    }
                    self.core.handle_timeout(now);
                }
                durable = self.store.next_durable() => match durable {
                    Ok(commands) => self.released(commands),
                    Err(error) => {
                        error!(%error, "could not record job state");
                        self.store_error.get_or_insert_with(|| error.to_string());
                    }
                },
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    info!("shutdown requested: no new job will be acquired; waiting for in-flight operations");
                    self.core.shutdown();
                    self.cancel_polls();
                }
            }
        }
    }

    /// Forgotten jobs' tokens and payloads leave the store's write-ahead
    /// file within a second or so (at most one checkpoint a second; the loop
    /// turns at least every poll).
    fn purge_store(&mut self) {
        if let Err(error) = self.store.tick() {
            warn!(%error, "could not purge forgotten jobs from the state store's write-ahead file");
        }
    }

    fn next_deadline(&self) -> Instant {
        let idle = now() + Duration::from_secs(3600);
        let core = self.core.poll_timeout().unwrap_or(idle);
        let publish = match (self.publish_pending, self.jobs_published_at) {
            (true, Some(at)) => at + JOB_LIST_PERIOD,
            _ => idle,
        };
        core.min(self.flavors_refresh_at).min(publish).min(idle)
    }

    fn publish(&mut self) {
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

    fn cancel_polls(&mut self) {
        let now = now();
        for (runner, handle) in self.poll_tasks.drain() {
            handle.abort();
            self.core.handle_poll(runner, PollOutcome::Cancelled, now);
        }
    }

    fn refresh_flavors(&mut self) {
        self.flavors_refresh_at = now() + FLAVORS_TTL;
        for runner in 0..self.runners.len() {
            let runners = self.runners.clone();
            let tx = self.events_tx.clone();
            tokio::spawn(async move {
                let table = match runners[runner].flavors().await {
                    Ok(table) => Some(table),
                    Err(error) => {
                        warn!(runner = %runners[runner].name, %error, "flavor catalogue refresh failed; keeping the previous one");
                        None
                    }
                };
                let _ = tx.send(Event::Flavors { runner, table }).await;
            });
        }
    }

    fn handle_event(&mut self, event: Event) {
        let now = now();
        match event {
            Event::Reload(request) => self.apply_reload(*request, now),
            Event::Poll {
                runner,
                outcome,
                last_update,
                held,
            } => {
                if self.poll_tasks.remove(&runner).is_none() {
                    // Cancelled already (shutdown).
                    return;
                }
                let outcome = self.pace_long_polling(runner, outcome, last_update.is_some(), held);
                if let Some(value) = last_update {
                    self.last_update[runner] = Some(value);
                }
                self.core.handle_poll(runner, outcome, now);
            }
            Event::Created { job, outcome } => {
                if matches!(outcome, StepOutcome::Done(_)) {
                    crate::metrics::recorder().step_done(
                        (job.runner, job.job_id),
                        Step::Create,
                        now,
                    );
                }
                self.core.handle_created(job, outcome, now)
            }
            Event::Deployed { job, outcome } => {
                if matches!(outcome, StepOutcome::Done(_)) {
                    let recorder = crate::metrics::recorder();
                    recorder.step_done((job.runner, job.job_id), Step::Deploy, now);
                    recorder.step_started((job.runner, job.job_id), Step::Launch, now);
                }
                self.core.handle_deployed(job, outcome, now)
            }
            Event::Launch { job, check } => self.core.handle_launch_check(job, check, now),
            Event::Status { job, check } => self.core.handle_status(job, check, now),
            Event::LogAppended { job, outcome } => self.core.handle_log_appended(job, outcome, now),
            Event::Reported { job, outcome } => {
                self.core.handle_failure_reported(job, outcome, now)
            }
            Event::Deleted { job, outcome } => self.core.handle_deleted(job, outcome, now),
            Event::Confirmed { job, check } => self.core.handle_confirmed(job, check, now),
            Event::JobOver { job } => self.core.handle_job_over(job, now),
            Event::Noticed { job, length } => self.core.handle_notice_written(job, length, now),
            Event::AppList { runner, apps } => {
                if let Some(apps) = &apps {
                    self.after_listing(runner, apps);
                }
                self.core.handle_app_list(runner, apps, now)
            }
            Event::Machines { runner, listing } => self.core.handle_machines(runner, listing, now),
            Event::OrphanDeleted { app_id, deleted } => {
                self.core.handle_orphan_deleted(&app_id, deleted, now)
            }
            Event::Flavors { runner, table } => {
                if let Some(table) = table {
                    self.core.handle_flavors(runner, table, now);
                }
            }
        }
    }

    fn execute_commands(&mut self) {
        while let Some(command) = self.core.poll_command() {
            self.execute_in_order(command);
            if self.store_error.is_some() {
                // Nothing after a failed write may happen.
                return;
            }
        }
    }

    fn execute(&mut self, command: Command) {
        crate::ha::check_may_act();
        match command {
            Command::Save(record) => self.write(None, StoreWrite::Save(record)),
            Command::Forget(job) => {
                crate::metrics::recorder().job_forgotten((job.runner, job.job_id), now());
                self.create_attempted.remove(&job);
                let runner_key = self.runners[job.runner].key.clone();
                let forget = StoreWrite::Forget {
                    runner_key,
                    job_id: job.job_id,
                };
                self.write(Some(job), forget);
            }
            Command::Notice(notice) => self.log_notice(notice),
            Command::RequestJob { runner } => self.spawn_poll(runner),
            Command::CreateApp { job, name, flavor } => {
                crate::metrics::recorder().step_started(
                    (job.runner, job.job_id),
                    Step::Create,
                    now(),
                );
                let may_exist = !self.create_attempted.insert(job);
                let system_id = self.system_id.clone();
                self.spawn(move |runners| async move {
                    let outcome = runners[job.runner]
                        .create_app(job.job_id, &name, &flavor, may_exist, &system_id)
                        .await;
                    Event::Created { job, outcome }
                });
            }
            Command::Deploy {
                job,
                app_id,
                payload,
            } => {
                crate::metrics::recorder().step_started(
                    (job.runner, job.job_id),
                    Step::Deploy,
                    now(),
                );
                let token = self.job_token(job);
                self.spawn(move |runners| async move {
                    let runner = &runners[job.runner];
                    // Watch for a cancellation while the repository gets ready.
                    let over = async {
                        let step = runner
                            .config
                            .cc
                            .deployment_repo_wait_step
                            .max(Duration::from_millis(500));
                        loop {
                            tokio::time::sleep(step).await;
                            if job_is_over(runner, job, &token).await {
                                return;
                            }
                        }
                    };
                    // Only while the repository gets ready (the wait that
                    // may last): the push itself is not watched, so a quick
                    // deployment costs the coordinator nothing.
                    let url = tokio::select! {
                        waited = runner.wait_for_repository(&app_id) => match waited {
                            Ok(url) => url,
                            Err(outcome) => return Event::Deployed { job, outcome },
                        },
                        () = over => return Event::JobOver { job },
                    };
                    let outcome = runner.push_build_context(&app_id, &url, &payload).await;
                    Event::Deployed { job, outcome }
                });
            }
            Command::CheckLaunch {
                job,
                project_id,
                own_log_bytes,
            } => {
                let token = self.job_token(job);
                self.spawn(move |runners| async move {
                    // A slow coordinator must not stretch the launch timeout
                    // the job log states: an unanswered check is "not yet".
                    let check = tokio::time::timeout(
                        LAUNCH_CHECK_TIMEOUT,
                        check_launch(&runners, job, project_id, own_log_bytes, &token),
                    )
                    .await
                    .unwrap_or(LaunchCheck::NotYet);
                    Event::Launch { job, check }
                });
            }
            Command::AppendNotice { job, token, text } => {
                self.spawn(move |runners| async move {
                    let runner = &runners[job.runner];
                    let length = match runner.coordinator.append_trace(job.job_id, &token, 0, text.as_bytes()).await {
                        Ok(appended) if !appended.not_running => {
                            info!(runner = %runner.name, job_id = job.job_id, "slow launch: told the job log");
                            Some(appended.new_offset)
                        }
                        Ok(_) => None,
                        Err(error) => {
                            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not write the slow-launch notice");
                            None
                        }
                    };
                    Event::Noticed { job, length }
                });
            }
            Command::ConfirmJob { job, token } => {
                self.spawn(move |runners| async move {
                    let runner = &runners[job.runner];
                    let check = confirm_check(
                        runner,
                        job,
                        runner.coordinator.confirm_job(job.job_id, &token).await,
                    );
                    Event::Confirmed { job, check }
                });
            }
            Command::ListApps { runner } => {
                let default_weight = self.core.runner(runner).max_job_weight();
                let system_id = self.system_id.clone();
                self.spawn(move |runners| async move {
                    let io = &runners[runner];
                    let apps = match io.list_own_apps(default_weight, &system_id).await {
                        Ok(apps) => {
                            debug!(runner = %io.name, apps = apps.len(), "reconciliation: applications listed");
                            Some(apps)
                        }
                        Err(error) => {
                            warn!(runner = %io.name, %error, "reconciliation: could not list applications");
                            None
                        }
                    };
                    Event::AppList { runner, apps }
                });
            }
            Command::ListMachines { runner } => {
                self.spawn(move |runners| async move {
                    let listing = list_machines(&runners[runner]).await;
                    Event::Machines { runner, listing }
                });
            }
            Command::DeleteOrphan {
                runner,
                app_id,
                name,
                created_ms,
            } => {
                let system_id = self.system_id.clone();
                self.spawn(move |runners| async move {
                    let io = &runners[runner];
                    let age = created_ms.map(age_of).unwrap_or_else(|| "unknown".to_owned());
                    warn!(runner = %io.name, app_id = %app_id, app = %name, owner = %system_id, age = %age, "deleting an application of this installation that no job accounts for");
                    let deleted = matches!(io.delete_app(Some(&app_id), &name, &system_id).await, StepOutcome::Done(()));
                    Event::OrphanDeleted { app_id, deleted }
                });
            }
            Command::CheckStatus { job, token } => {
                self.spawn(move |runners| async move {
                    let runner = &runners[job.runner];
                    let check = match remote_status(runner, job, &token).await {
                        Ok(RemoteJobStatus::Finished { status }) => {
                            info!(runner = %runner.name, job_id = job.job_id, status = status.as_deref().unwrap_or("unknown"), "job finished");
                            StatusCheck::Finished
                        }
                        Ok(RemoteJobStatus::Running { .. }) => StatusCheck::Running,
                        Err(error) => {
                            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not check job status");
                            StatusCheck::Error
                        }
                    };
                    Event::Status { job, check }
                });
            }
            Command::AppendLog { job, token, text } => {
                self.spawn(move |runners| async move {
                    let runner = &runners[job.runner];
                    let outcome = match runner.coordinator.append_trace(job.job_id, &token, 0, text.as_bytes()).await {
                        Ok(appended) => {
                            if appended.not_running {
                                info!(runner = %runner.name, job_id = job.job_id, "job no longer running: its log is closed");
                            }
                            StepOutcome::Done(())
                        }
                        Err(error) => {
                            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not write to the job log");
                            StepOutcome::Failed { transient: error.is_transient(), user_message: String::new() }
                        }
                    };
                    Event::LogAppended { job, outcome }
                });
            }
            Command::ReportFailure {
                job,
                token,
                kind,
                failure_reasons,
            } => {
                self.spawn(move |runners| async move {
                    let runner = &runners[job.runner];
                    let reason = match kind {
                        FailureKind::User => FailureReason::ScriptFailure,
                        FailureKind::System => FailureReason::RunnerSystemFailure,
                    }
                    .accepted_by(failure_reasons.as_deref());
                    let outcome = match runner.coordinator.fail_job(job.job_id, &token, reason, None).await {
                        Ok(UpdateOutcome::Accepted) => {
                            crate::metrics::recorder().failure(&runner.name, reason.as_str());
                            info!(runner = %runner.name, job_id = job.job_id, reason = reason.as_str(), "job reported failed");
                            StepOutcome::Done(())
                        }
                        Ok(UpdateOutcome::NotRunning { job_status }) => {
                            info!(runner = %runner.name, job_id = job.job_id, status = job_status.as_deref().unwrap_or("unknown"), "job already over on the coordinator");
                            StepOutcome::Done(())
                        }
                        Ok(UpdateOutcome::Retry { .. }) => {
                            StepOutcome::Failed { transient: true, user_message: String::new() }
                        }
                        Err(error) => {
                            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not report job failure");
                            StepOutcome::Failed { transient: error.is_transient(), user_message: String::new() }
                        }
                    };
                    Event::Reported { job, outcome }
                });
            }
            Command::DeleteApp { job, app_id, name } => {
                let system_id = self.system_id.clone();
                self.spawn(move |runners| async move {
                    let outcome = runners[job.runner]
                        .delete_app(app_id.as_deref(), &name, &system_id)
                        .await;
                    Event::Deleted { job, outcome }
                });
            }
        }
    }

    /// The job token of a tracked job (empty if unknown: its checks then
    /// fail harmlessly).
    fn job_token(&self, job: JobKey) -> Secret {
        self.core
            .job(job)
            .map(|job| job.token.clone())
            .unwrap_or_default()
    }

    fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(Runners) -> Fut,
        Fut: std::future::Future<Output = Event> + Send + 'static,
    {
        let future = task(self.runners.clone());
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let event = future.await;
            let _ = tx.send(event).await;
        });
    }

    fn spawn_poll(&mut self, runner: RunnerIdx) {
        let runners = self.runners.clone();
        let tx = self.events_tx.clone();
        let system_id = self.system_id.clone();
        let last_update = self.last_update[runner].clone();
        let handle = tokio::spawn(async move {
            let io = &runners[runner];
            let sent_at = tokio::time::Instant::now();
            let request = JobRequest {
                token: &io.token,
                system_id: &system_id,
                last_update: last_update.as_deref(),
            };
            let (outcome, last_update) = match io
                .coordinator
                .request_job(&request, REQUEST_TIMEOUT)
                .await
            {
                Ok(JobRequestOutcome::Job(job)) => {
                    // Outside text: it reaches the operator log, the store
                    // (`paas-runner state`) and the job log's message.
                    let requested_flavor = job
                        .variables
                        .iter()
                        .rev()
                        .find(|var| var.key == paas_core::messages::FLAVOR_VARIABLE)
                        .map(|var| {
                            let mut secrets = io.secrets();
                            secrets.push(&job.token);
                            paas_core::sanitize(
                                &var.value,
                                paas_core::sanitize::MAX_VALUE_CHARS,
                                &secrets,
                            )
                        });
                    info!(runner = %io.name, job_id = job.id, flavor = requested_flavor.as_deref().unwrap_or("default"), "job acquired");
                    let new_job = NewJob {
                        job_id: job.id,
                        token: job.token,
                        project_id: job.project_id,
                        requested_flavor,
                        failure_reasons: job.failure_reasons,
                        payload: job.payload,
                    };
                    (PollOutcome::Job(new_job), None)
                }
                Ok(JobRequestOutcome::TooLarge {
                    id_and_token: Some((job_id, token)),
                    limit_bytes,
                }) => {
                    error!(runner = %io.name, job_id, limit_bytes, "job payload larger than the limit: the job is failed");
                    (
                        PollOutcome::JobTooLarge {
                            job_id,
                            token,
                            limit_bytes,
                        },
                        None,
                    )
                }
                Ok(JobRequestOutcome::TooLarge {
                    id_and_token: None,
                    limit_bytes,
                }) => {
                    // Nothing can be done with a job we cannot name: the
                    // coordinator's own timeout ends it.
                    error!(runner = %io.name, limit_bytes, "job payload larger than the limit, without id and token in its first bytes: dropped (the coordinator will time the job out)");
                    (PollOutcome::NoJob, None)
                }
                Ok(JobRequestOutcome::NoJob { last_update }) => (PollOutcome::NoJob, last_update),
                Ok(JobRequestOutcome::Conflict) => {
                    debug!(runner = %io.name, "409 conflict on job request: treated as no job");
                    (PollOutcome::NoJob, None)
                }
                Err(error) => {
                    let transient = error.is_transient();
                    if transient {
                        warn!(runner = %io.name, %error, "coordinator unavailable; will poll again");
                    } else {
                        error!(runner = %io.name, %error, "coordinator refused the job request");
                    }
                    (PollOutcome::Error { transient }, None)
                }
            };
            let _ = tx
                .send(Event::Poll {
                    runner,
                    outcome,
                    last_update,
                    held: sent_at.elapsed(),
                })
                .await;
        });
        self.poll_tasks.insert(runner, handle.abort_handle());
    }

    /// Workhorse long polling. Workhorse answers a held request with its own
    /// 204 (no `X-GitLab-Last-Update`) when the runner's queue changes or the
    /// hold ends; Rails answers with a fresh queue version, and the next
    /// request carrying it is held until a job may be there. So the request
    /// after either is sent at once, with two guards against a coordinator
    /// that answers at once instead of holding (Workhorse's 50 ns default,
    /// or no Workhorse handler): a second quick Workhorse 204 in a row, or a
    /// Rails 204 right after one we repolled for, falls back to
    /// `check_interval`.
    fn pace_long_polling(
        &mut self,
        runner: RunnerIdx,
        outcome: PollOutcome,
        from_rails: bool,
        held: Duration,
    ) -> PollOutcome {
        let no_job = matches!(outcome, PollOutcome::NoJob);
        if self.long_polling[runner].poll_again(no_job, from_rails, held) {
            PollOutcome::NoJobPollAgain
        } else {
            outcome
        }
    }

    fn log_notice(&self, notice: Notice) {
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
            Notice::MachineVanished { job, app_id } => {
                error!(runner = %runner_name(&job), job_id = job.job_id, %app_id, "the job's application was deleted outside paas-runner; failing the job")
            }
        }
    }

    /// What a listing shows beyond the core's business: applications of the
    /// runner's key while the store was empty at start (a wrong state file?),
    /// and the foreign ones, kept for `paas-runner state`.
    fn after_listing(&mut self, runner: RunnerIdx, apps: &[ListedApp]) {
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
                    StoreWrite::Meta {
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

async fn check_launch(
    runners: &Runners,
    job: JobKey,
    project_id: Option<u64>,
    own_log_bytes: u64,
    job_token: &Secret,
) -> LaunchCheck {
    let runner = &runners[job.runner];
    let (Some(token), Some(project_id)) = (runner.config.trace_watch.token.as_ref(), project_id)
    else {
        return probe_launch(runner, job, own_log_bytes, job_token).await;
    };
    // The log first: once the inner runner wrote, one request suffices.
    match runner
        .coordinator
        .read_trace(project_id, job.job_id, token)
        .await
    {
        Ok(trace) if trace.len() as u64 > own_log_bytes => return LaunchCheck::Started,
        Ok(_) => {}
        Err(error) => {
            debug!(runner = %runner.name, job_id = job.job_id, %error, "could not read job log");
        }
    }
    if job_is_over(runner, job, job_token).await {
        LaunchCheck::JobOver
    } else {
        LaunchCheck::NotYet
    }
}

/// Launch confirmation with the job token alone: an empty log PATCH at the
/// length of what we wrote ourselves (`docs/protocol-notes.md` §1.1). A 202
/// at that length: the inner runner has not written yet, and nothing
/// changed; a 416 with a longer log: it has (the answer itself is the
/// proof); a 403: the job is over (canceled, failed). One request per
/// check, and nothing is written: the log stays the inner runner's.
async fn probe_launch(
    runner: &crate::runners::RunnerIo,
    job: JobKey,
    own_log_bytes: u64,
    job_token: &Secret,
) -> LaunchCheck {
    match runner
        .coordinator
        .probe_trace(job.job_id, job_token, Some(own_log_bytes))
        .await
    {
        Ok(TraceProbe::Moved { length }) if length > own_log_bytes => LaunchCheck::Started,
        Ok(TraceProbe::Ended { job_status }) => {
            info!(runner = %runner.name, job_id = job.job_id, status = job_status.as_deref().unwrap_or("unknown"), "job over on the coordinator before its launch completed");
            LaunchCheck::JobOver
        }
        Ok(TraceProbe::Unchanged { .. } | TraceProbe::Moved { .. } | TraceProbe::Executing) => {
            LaunchCheck::NotYet
        }
        Err(error) => {
            debug!(runner = %runner.name, job_id = job.job_id, %error, "could not probe the job log");
            LaunchCheck::NotYet
        }
    }
}

/// The cloud's batch signal: one listing of the organisation's
/// deployments says which machines' tasks ended. A 404 or an answer of
/// another shape means the cloud has no such listing (per-job pacing
/// then, see `paas_core::WatchConfig`); the states it gives are UNVERIFIED
/// for the real Clever Cloud (`paas_clever::api::DeploymentState`), so an
/// end only triggers a coordinator check.
async fn list_machines(io: &crate::runners::RunnerIo) -> MachineListing {
    match io.clever.organisation_deployments().await {
        Ok(states) => MachineListing::Listed {
            ended: states
                .into_iter()
                .filter(|(_, state)| matches!(state, DeploymentState::Ended(_)))
                .map(|(app_id, _)| app_id)
                .collect(),
        },
        Err(error)
            if error.status() == Some(404) || matches!(error, CleverError::Decode { .. }) =>
        {
            warn!(runner = %io.name, %error, "the cloud offers no listing of deployments: running jobs are checked one by one, paced by age");
            MachineListing::Unsupported
        }
        Err(error) => {
            debug!(runner = %io.name, %error, "could not list deployments");
            MachineListing::Failed
        }
    }
}

/// What a confirmation answer means. Only clear signs that the job is not
/// ours (403 "not running", 409, a final `Job-Status`) withdraw it: a job
/// dropped by mistake would stay stuck on the coordinator, while one run by
/// mistake is refused by the coordinator and cleaned up.
fn confirm_check(
    runner: &crate::runners::RunnerIo,
    job: JobKey,
    answer: Result<ConfirmOutcome, paas_gitlab::GitlabError>,
) -> ConfirmCheck {
    match answer {
        Ok(ConfirmOutcome::Confirmed) => ConfirmCheck::Confirmed,
        Ok(ConfirmOutcome::Gone { status, job_status }) => {
            let final_status = matches!(
                job_status.as_deref(),
                Some("canceled" | "failed" | "success")
            );
            if status == 403 || status == 409 || final_status {
                warn!(runner = %runner.name, job_id = job.job_id, status, job_status = job_status.as_deref().unwrap_or("-"), "the coordinator withdrew the job before it started");
                ConfirmCheck::Gone
            } else {
                warn!(runner = %runner.name, job_id = job.job_id, status, "unexpected answer to the job confirmation; running the job anyway");
                ConfirmCheck::Confirmed
            }
        }
        Err(error) if error.is_transient() => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "could not confirm the job to the coordinator");
            ConfirmCheck::Error
        }
        Err(error) => {
            warn!(runner = %runner.name, job_id = job.job_id, %error, "unexpected answer to the job confirmation; running the job anyway");
            ConfirmCheck::Confirmed
        }
    }
}

/// Whether the job still executes on the coordinator, asked with one
/// empty log `PATCH` without `Content-Range` (`docs/protocol-notes.md`
/// §1.1, §1.7): 400 while it executes, 403 with `Job-Status` once it is
/// over. Cheaper for GitLab than `GET /api/v4/job` (no entity, no Gitaly
/// call) and it names the final status; a coordinator that answers it
/// otherwise is asked with `GET /api/v4/job` instead.
async fn remote_status(
    runner: &crate::runners::RunnerIo,
    job: JobKey,
    token: &Secret,
) -> Result<RemoteJobStatus, paas_gitlab::GitlabError> {
    match runner
        .coordinator
        .probe_trace(job.job_id, token, None)
        .await
    {
        Ok(TraceProbe::Ended { job_status }) => {
            Ok(RemoteJobStatus::Finished { status: job_status })
        }
        Ok(TraceProbe::Executing | TraceProbe::Unchanged { .. } | TraceProbe::Moved { .. }) => {
            Ok(RemoteJobStatus::Running {
                status: "running".to_owned(),
            })
        }
        Err(error) if error.is_transient() => Err(error),
        Err(error) => {
            debug!(runner = %runner.name, job_id = job.job_id, %error, "unexpected answer to a log probe; reading the job instead");
            runner.coordinator.job_status(token).await
        }
    }
}

/// Whether the coordinator says the job is over (errors count as not over).
async fn job_is_over(runner: &crate::runners::RunnerIo, job: JobKey, token: &Secret) -> bool {
    match remote_status(runner, job, token).await {
        Ok(RemoteJobStatus::Finished { status }) => {
            info!(runner = %runner.name, job_id = job.job_id, status = status.as_deref().unwrap_or("unknown"), "job over on the coordinator before its launch completed");
            true
        }
        _ => false,
    }
}

/// Human age of something created at `created_ms` (Unix epoch, ms).
fn age_of(created_ms: i64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let secs = (now_ms - created_ms).max(0) / 1000;
    age_text(secs as u64)
}

/// `1h02m03s`.
/// A weight as logs show it: two decimals.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub fn age_text(secs: u64) -> String {
    format!("{}h{:02}m{:02}s", secs / 3600, (secs / 60) % 60, secs % 60)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The driver's clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_millis(5);
    const HELD: Duration = Duration::from_secs(20);

    /// Runs answers `(no_job, from_rails, held)` and returns the decisions.
    fn decisions(answers: &[(bool, bool, Duration)]) -> Vec<bool> {
        let mut state = LongPolling::default();
        answers
            .iter()
            .map(|(no_job, from_rails, held)| state.poll_again(*no_job, *from_rails, *held))
            .collect()
    }

    #[test]
    fn long_polling_coordinator_is_repolled_at_once() {
        // Rails 204 (no hold seen yet), held Workhorse 204, Rails 204 with a
        // fresh version, held again, released by a job, the job.
        let answers = [
            (true, true, QUICK),
            (true, false, HELD),
            (true, true, QUICK),
            (true, false, HELD),
            (true, false, QUICK),
            (false, false, QUICK),
        ];
        assert_eq!(decisions(&answers), [false, true, true, true, true, false]);
    }

    #[test]
    fn a_coordinator_that_never_holds_is_paced() {
        // No Workhorse handler: Rails answers every request at once.
        assert_eq!(decisions(&[(true, true, QUICK); 4]), [false; 4]);
        // Workhorse holding for ~0 s: at most one extra request.
        assert_eq!(
            decisions(&[(true, false, QUICK); 4]),
            [true, false, false, false]
        );
    }

    #[test]
    fn a_hold_released_early_also_shows_long_polling() {
        // Jobs arriving often release holds quickly: the request after the
        // fresh version still goes at once.
        let answers = [
            (true, false, QUICK),
            (false, true, QUICK),
            (true, true, QUICK),
            (true, false, QUICK),
        ];
        assert_eq!(decisions(&answers), [true, false, true, true]);
    }

    #[test]
    fn long_polling_switched_off_falls_back_after_one_request() {
        let answers = [
            (true, false, HELD),
            (true, true, QUICK),
            (true, true, QUICK),
            (true, true, QUICK),
        ];
        assert_eq!(decisions(&answers), [true, true, false, false]);
    }
}
