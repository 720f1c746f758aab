//! The model coordinator: pending jobs per runner, job logs, failure
//! reports, and the inner runners that run the jobs.

use super::*;

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
    pub(crate) start: Instant,
    /// Running jobs fail by themselves after this (GitLab's job timeout).
    pub job_timeout: Duration,
    /// Jobs handed out and not confirmed within this are dropped.
    pub confirm_window: Duration,
    pub jobs: BTreeMap<JobKey, ModelJob>,
    pub(crate) queues: Vec<VecDeque<JobKey>>,
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
    pub(crate) fn push(&mut self, key: JobKey, app_id: &str, now: Instant) {
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
    pub(crate) fn confirm(&mut self, key: JobKey, now: Instant) -> ConfirmCheck {
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
    pub(crate) fn kill(&mut self, key: JobKey, app_id: &str) {
        if let Some(inner) = self.jobs.get_mut(&key).and_then(|job| job.inner.as_mut()) {
            if inner.app_id == app_id {
                inner.alive = false;
            }
        }
    }

    pub(crate) fn launch_check(&self, key: JobKey) -> LaunchCheck {
        let job = &self.jobs[&key];
        if job.inner_starts > 0 {
            LaunchCheck::Started
        } else if job.state.is_over() {
            LaunchCheck::JobOver
        } else {
            LaunchCheck::NotYet
        }
    }

    pub(crate) fn status(&self, key: JobKey) -> StatusCheck {
        if self.jobs[&key].state.is_over() {
            StatusCheck::Finished
        } else {
            StatusCheck::Running
        }
    }

    pub(crate) fn append(&mut self, key: JobKey, text: &str) -> bool {
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

    pub(crate) fn report_failure(&mut self, key: JobKey, kind: FailureKind) -> bool {
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
