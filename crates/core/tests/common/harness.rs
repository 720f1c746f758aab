//! The dispatcher wired to the models, with a virtual clock.

use super::*;

/// The answer to a command, delivered to the dispatcher when due.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Poll(RunnerIdx, PollOutcome),
    Confirmed(JobKey, ConfirmCheck),
    Created(JobKey, StepOutcome<App>),
    Deployed(JobKey, StepOutcome<()>),
    Ready(JobKey, ReadyCheck),
    Watched(JobKey, bool),
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
    pub(crate) fn is_idle(&self) -> bool {
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
pub(crate) struct LateCreate {
    pub(crate) job: JobKey,
    pub(crate) name: String,
    pub(crate) flavor: Flavor,
}

#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) at: Instant,
    pub(crate) seq: u64,
    pub(crate) outcome: Outcome,
    /// For a creation that failed without effect: it may land later.
    pub(crate) late: Option<LateCreate>,
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
    pub(crate) in_flight: Vec<InFlight>,
    pub(crate) seq: u64,
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
    pub(crate) consecutive_faults: BTreeMap<(Kind, JobKey), u32>,
    pub(crate) stalled_timeouts: u32,
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
    pub(crate) orphan_failed_at: BTreeMap<String, Instant>,
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
    /// Replicas sharing a database with a lease (`None`: one process and a
    /// store written at once).
    pub replicas: Option<Replicas>,
    /// No process runs the dispatcher (replicas: none is active).
    pub down: bool,
    /// A command issued before `shutdown()` runs now, released by its
    /// job's durable write.
    pub releasing_held: bool,
}

impl Harness {
    pub fn new(setup: Setup) -> Harness {
        // The only reading of the real clock: a base for virtual time.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut coordinator = ModelCoordinator::new(start, setup.runners.len(), &setup.jobs);
        coordinator.confirm_window = setup.confirm_window;
        let runner_count = setup.runners.len();
        let mut cloud = ModelCloud {
            ready_after: setup.ready_after,
            ..ModelCloud::default()
        };
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
            replicas: None,
            down: false,
            releasing_held: false,
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

    pub(crate) fn step_inner(&mut self, limit: Option<Instant>) -> Step {
        if let Some(step) = self.step_replicas() {
            return step;
        }
        if !self.down {
            if let Some(command) = self.dispatcher.poll_command() {
                self.stalled_timeouts = 0;
                self.execute(command);
                return Step::Command;
            }
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
            .chain(self.replica_next_event())
            .min();
        let timeout = match self.down {
            true => None,
            false => self.dispatcher.poll_timeout(),
        };
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
                Outcome::Ready(key, _) => (Kind::Ready, key),
                Outcome::Watched(key, _) => (Kind::Watch, key),
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

    pub(crate) fn due_outcome(&self) -> Option<usize> {
        self.in_flight
            .iter()
            .enumerate()
            .filter(|(_, in_flight)| in_flight.at <= self.now)
            .min_by_key(|(_, in_flight)| (in_flight.at, in_flight.seq))
            .map(|(index, _)| index)
    }

    pub(crate) fn set_clock(&mut self, at: Instant) {
        self.now = at;
        self.coordinator.advance(at);
        if self.job_over_watch {
            self.watch_jobs_over();
        }
    }

    /// A driver watching the jobs under creation learns at once when one
    /// is over (the core itself watches deployments: `Command::WatchJob`): the step's answer is dropped and
    /// `handle_job_over` delivered instead. A creation still under way may
    /// land later: one that failed without effect, or one that succeeded
    /// but that no listing has seen yet (the model made it at once; it is
    /// taken back and lands when its answer was due).
    pub(crate) fn watch_jobs_over(&mut self) {
        let now = self.now;
        let mut late = Vec::new();
        for index in 0..self.in_flight.len() {
            let key = match &self.in_flight[index].outcome {
                Outcome::Created(key, _) => *key,
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
            && self.replicas.as_ref().is_none_or(|replicas| {
                replicas
                    .active
                    .as_ref()
                    .is_some_and(|active| !active.stopping)
                    && replicas.writes.is_empty()
                    && replicas.messages.iter().all(|(_, _, message)| {
                        !matches!(
                            message,
                            DbMessage::Write { .. } | DbMessage::WriteDone { .. }
                        )
                    })
            })
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
        self.dispatcher = self.fresh_dispatcher();
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

    /// A dispatcher as a new process starts it.
    pub(crate) fn fresh_dispatcher(&self) -> Dispatcher {
        let mut dispatcher = Dispatcher::new(self.config.clone(), self.runners.clone());
        if let Some(watch) = self.watch {
            dispatcher.set_watch(watch);
        }
        dispatcher
    }

    /// A new process takes back the stored records.
    pub fn restart(&mut self) {
        self.dispatcher = self.fresh_dispatcher();
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
}
