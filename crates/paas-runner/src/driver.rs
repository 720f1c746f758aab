//! The driver: one event loop that feeds the core with outcomes and the clock,
//! executes its commands (store writes inline, network calls as tasks), and
//! stops cleanly on shutdown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use paas_core::App;
use paas_core::{ConfirmCheck, PollAnswer, PollOutcome, ReadyCheck, RunnerIdx};
use paas_core::{Dispatcher, FlavorTable, JobKey, LaunchCheck, ListedApp, MachineListing};
use paas_core::{StatusCheck, StepOutcome};
use paas_store::JobStore;
use tokio::sync::{mpsc, watch};

use crate::metrics::Step;
use tokio::task::AbortHandle;
use tracing::{error, info, warn};

use crate::runners::Runners;

mod cloud;
mod coordinator;
mod execute;
mod notices;
mod reload;
mod snapshot;
mod store_exec;
pub use notices::{ForeignSeen, FOREIGN_META_KEY};
pub use reload::{ReloadHandle, ReloadRequest, ReloadRunner};
// `JobView` is part of `Snapshot` (its type is named where snapshots are made by hand).
#[allow(unused_imports)]
pub use crate::snapshot::{JobView, RunnerView, Snapshot, JOB_LIST_PERIOD};

/// How long a job request may be held by the coordinator (long polling).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(70);
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
    Ready {
        job: JobKey,
        check: ReadyCheck,
    },
    Watched {
        job: JobKey,
        over: bool,
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

/// The longest one launch check (job status, then job log) may take: the
/// job fails at most this long after `paas_job_trace_watch.timeout_seconds`.
pub const LAUNCH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The event loop and what it owns.
pub struct Driver {
    core: Dispatcher,
    runners: Runners,
    store: store_exec::StoreExec,
    system_id: String,
    last_update: Vec<Option<String>>,
    poll_tasks: HashMap<RunnerIdx, AbortHandle>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    snapshot_tx: watch::Sender<Snapshot>,
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
            poll_tasks: HashMap::new(),
            events_tx,
            events_rx,
            snapshot_tx,
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
                    self.core.handle_timeout(now());
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
        core.min(publish).min(idle)
    }

    fn cancel_polls(&mut self) {
        let now = now();
        for (runner, handle) in self.poll_tasks.drain() {
            handle.abort();
            self.core.handle_poll(runner, PollOutcome::Cancelled, now);
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
                let answer = PollAnswer {
                    from_rails: last_update.is_some(),
                    held,
                };
                if let Some(value) = last_update {
                    self.last_update[runner] = Some(value);
                }
                self.core.handle_poll_answer(runner, outcome, answer, now);
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
            Event::Ready { job, check } => self.core.handle_ready(job, check, now),
            Event::Watched { job, over } => self.core.handle_job_watch(job, over, now),
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
}

pub fn age_text(secs: u64) -> String {
    format!("{}h{:02}m{:02}s", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// The driver's clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
