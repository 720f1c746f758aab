//! The coordinator's data and rules (Rails' side of the runner API), without
//! IO: callers pass the current time in and turn the outcomes into HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{CoordinatorStats, Instant, JobRecord, JobSpec, JobStatus};

pub(crate) mod registry;
mod trace;

pub(crate) use trace::AppendTrace;

/// Failure reasons this coordinator accepts in `PUT /jobs/:id` and lists in
/// the job payload's `features.failure_reasons`: the three always accepted
/// plus the older server enum of reference §3. Bridge-job reasons are left
/// out (runners never see bridge jobs). Newer values such as
/// `image_pull_failure` are UNVERIFIED in the reference, so the simulator
/// behaves like a GitLab that does not know them: a runner must map them
/// down (to `runner_system_failure`), and if it sends them anyway they are
/// stored as `unknown_failure`.
pub(crate) const FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "user_blocked",
    "project_deleted",
    "ci_quota_exceeded",
    "pipeline_loop_detected",
    "trace_size_exceeded",
    "builds_disabled",
];

/// Running jobs whose `updated_at` is older than this are dropped as
/// `stuck_or_timeout_failure` (reference §5; newer GitLab uses 30 min and
/// `no_updates_running` behind a feature flag).
const STUCK_RUNNING_AFTER: Duration = Duration::from_secs(3600);

/// A `PUT state=running` touches `updated_at` only when it is older than
/// this (reference §3, §5).
const TOUCH_AFTER: Duration = Duration::from_secs(15 * 60);

/// GitLab's `Ci::TimedOutBuilds::DropRunningService` drops running jobs this
/// long after their timeout expired, as `job_execution_timeout`. The buffer
/// comes from recent GitLab source; older versions differ (UNVERIFIED per
/// version).
const TIMEOUT_BUFFER: Duration = Duration::from_secs(15 * 60);

/// Failure reason of a job whose two-phase commit window lapsed (reference
/// §2.6). Server-set only, so not in [`FAILURE_REASONS`]; it is one of the
/// newer values of the server enum (UNVERIFIED list, reference §16).
pub(crate) const PROVISIONING_TIMEOUT: &str = "runner_provisioning_timeout";

/// A job with what the coordinator keeps beside the public record.
pub(crate) struct Job {
    pub record: JobRecord,
    pub spec: JobSpec,
    /// Job token (`CI_JOB_TOKEN`), created with the job as Rails does.
    pub token: String,
    pub sha: String,
    pub before_sha: String,
    pub pipeline_id: u64,
    /// Rails' `updated_at`, for the stuck-job rule.
    pub updated_at: Instant,
    /// Set while the job waits for its runner's commit under two-phase job
    /// commit (reference §2.6): assigned by a 201, still `pending`, out of
    /// the queue and reserved for that runner until this deadline.
    pub commit_deadline: Option<Instant>,
}

impl Job {
    /// Whether the job was handed out under two-phase commit and its runner
    /// has neither committed it nor let the window lapse.
    pub fn awaits_commit(&self) -> bool {
        self.commit_deadline.is_some()
    }
}

/// Who sent a request and what for, for the counters of
/// [`CoordinatorStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// `POST /api/v4/jobs/request`.
    JobRequest,
    /// Anything a job's inner runner sends (its `User-Agent` is
    /// gitlab-runner's).
    InnerRunner,
    /// `PUT /api/v4/jobs/:id` from anyone else (confirmations, failure
    /// reports).
    JobUpdate,
    /// Everything else: what a dispatcher spends watching jobs (status
    /// reads, log probes and reads, its own log messages).
    Watch,
}

/// What `POST /jobs/request` gets from Rails.
#[derive(Debug)]
pub(crate) enum RequestJob {
    /// Unknown runner token.
    Forbidden,
    /// `last_update` equals the queue version: 204 at once, no queue scan.
    UpToDate { version: String },
    /// The job was assigned: running, or under two-phase commit pending and
    /// reserved for the runner until it commits.
    Assigned {
        job_id: u64,
        queue_size: u64,
        queue_depth: u64,
    },
    /// Nothing for this runner.
    NoJob { version: String },
}

/// Why a job-token authenticated call was refused (Rails'
/// `authenticate_job!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobAuthError {
    /// Unknown job id or wrong token: 403 without `Job-Status`.
    Forbidden,
    /// The job is not running: 403 "Job is not running" with `Job-Status`.
    NotRunning(JobStatus),
}

/// Fields of `PUT /jobs/:id` that matter.
#[derive(Debug, Default)]
pub(crate) struct JobUpdate {
    pub state: Option<String>,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
}

/// What `PUT /jobs/:id` gets.
#[derive(Debug)]
pub(crate) enum UpdateJob {
    Refused(JobAuthError),
    /// Unknown state: 400.
    BadState,
    /// Applied; the job's status afterwards.
    Applied(JobStatus),
}

pub(crate) struct State {
    runner_tokens: Vec<String>,
    /// How long a job handed out under two-phase commit waits for the
    /// runner's commit or keep-alive (Rails' `RUNNER_ACK_QUEUE_EXPIRY_TIME`).
    ack_window: Duration,
    /// The configured faults stopped (an outage that ended).
    faults_ended: bool,
    /// No commit window lapses before this (a lower bound: a window closed
    /// by a confirmation leaves it in place), so that most requests do not
    /// scan every job.
    next_commit_lapse: Option<Instant>,
    jobs: BTreeMap<u64, Job>,
    next_job_id: u64,
    /// Ids of pending jobs, oldest first (the queue Rails scans).
    pending: BTreeSet<u64>,
    job_ids_by_token: HashMap<String, u64>,
    /// Redis `runner:build_queue:<token>`: the queue version per runner.
    queue_versions: BTreeMap<String, String>,
    /// Decides injected faults; used for nothing else, so the fault sequence
    /// depends only on the seed and the order of requests.
    fault_rng: SmallRng,
    /// Generates tokens, versions and commit ids.
    id_rng: SmallRng,
    counters: CoordinatorStats,
    /// Runners and their managers, tags, `run_untagged`, `paused`.
    registry: registry::Registry,
}

impl State {
    pub fn new(runner_tokens: &[String], seed: u64, ack_window: Duration) -> State {
        let mut state = State {
            runner_tokens: runner_tokens.to_vec(),
            ack_window,
            faults_ended: false,
            next_commit_lapse: None,
            jobs: BTreeMap::new(),
            next_job_id: 1,
            pending: BTreeSet::new(),
            job_ids_by_token: HashMap::new(),
            queue_versions: BTreeMap::new(),
            fault_rng: SmallRng::seed_from_u64(seed),
            id_rng: SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            counters: CoordinatorStats::default(),
            registry: registry::Registry::default(),
        };
        for token in runner_tokens {
            state.add_configured_runner(token);
        }
        // Rails creates a version on a runner's first request
        // (`ensure_runner_queue_value`); creating them up front differs only
        // in that an unknown token never has one.
        for token in runner_tokens {
            state.tick(token);
        }
        state
    }

    pub fn enqueue(&mut self, spec: JobSpec, now: Instant) -> u64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let token = format!("glcbt-{}", self.random_alphanumeric(20));
        let sha = self.random_hex(40);
        let before_sha = self.random_hex(40);
        // Rails ticks the queue of every runner that could take the job.
        let ticked: Vec<String> = match &spec.runner_token {
            Some(token) => vec![token.clone()],
            None => self.runner_tokens.clone(),
        };
        for runner_token in ticked {
            self.tick(&runner_token);
        }
        let record = JobRecord {
            id,
            project_id: spec.project_id,
            name: spec.name.clone(),
            status: JobStatus::Pending,
            failure_reason: None,
            exit_code: None,
            trace: Vec::new(),
            runner_token_prefix: None,
            queued_at: now,
            picked_at: None,
            committed_at: None,
            first_trace_at: None,
            finished_at: None,
            trace_writes: Vec::new(),
            trace_probes: 0,
            final_updates: 0,
        };
        self.job_ids_by_token.insert(token.clone(), id);
        self.jobs.insert(
            id,
            Job {
                record,
                spec,
                token,
                sha,
                before_sha,
                pipeline_id: 1000 + id,
                updated_at: now,
                commit_deadline: None,
            },
        );
        self.pending.insert(id);
        self.counters.pending += 1;
        id
    }

    pub fn job(&self, id: u64) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Cancels a pending (possibly awaiting its commit) or running job;
    /// returns whether anything changed.
    pub fn cancel(&mut self, id: u64, now: Instant) -> bool {
        self.expire_commit_windows(now);
        let Some(status) = self.jobs.get(&id).map(|job| job.record.status) else {
            return false;
        };
        if status.is_finished() {
            return false;
        }
        self.finish(id, JobStatus::Canceled, None, None, now);
        true
    }

    pub fn stats(&self) -> CoordinatorStats {
        self.counters.clone()
    }

    /// Draws whether the next request fails, and how (502 or 503). Always
    /// draws twice, so the sequence does not depend on the rates.
    pub fn draw_fault(&mut self, rate: f64) -> Option<u16> {
        let roll: f64 = self.fault_rng.gen();
        let bad_gateway: bool = self.fault_rng.gen();
        if roll < rate && !self.faults_ended {
            self.counters.faults_injected += 1;
            Some(if bad_gateway { 502 } else { 503 })
        } else {
            None
        }
    }

    /// Ends the configured faults: the outage is over.
    pub fn end_faults(&mut self) {
        self.faults_ended = true;
    }

    pub fn count_request(&mut self, kind: RequestKind) {
        self.counters.requests_served += 1;
        match kind {
            RequestKind::JobRequest => self.counters.job_requests += 1,
            RequestKind::InnerRunner => self.counters.inner_runner_requests += 1,
            RequestKind::JobUpdate => self.counters.job_updates += 1,
            RequestKind::Watch => self.counters.watch_requests += 1,
        }
    }

    pub fn count_token_in_url(&mut self) {
        self.counters.tokens_in_urls += 1;
    }

    pub fn long_poll_started(&mut self) {
        self.counters.long_polls += 1;
        self.counters.long_polls_waiting += 1;
    }

    pub fn long_poll_ended(&mut self) {
        self.counters.long_polls_waiting = self.counters.long_polls_waiting.saturating_sub(1);
    }

    /// The queue version Workhorse compares `last_update` with; empty when
    /// the key does not exist (as Workhorse reads a missing Redis key).
    pub fn queue_version(&self, runner_token: &str) -> &str {
        self.queue_versions
            .get(runner_token)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Rails' `POST /jobs/request` after authentication of the body.
    ///
    /// `two_phase`: the runner advertised `two_phase_job_commit` and the
    /// feature flag is on. The job is then assigned but stays `pending`,
    /// reserved for this runner for the ack window (reference §2.6);
    /// otherwise it is running at once.
    pub fn request_job(
        &mut self,
        runner_token: &str,
        last_update: Option<&str>,
        two_phase: bool,
        now: Instant,
    ) -> RequestJob {
        self.expire_commit_windows(now);
        let Some(runner) = self.registry.get(runner_token) else {
            return RequestJob::Forbidden;
        };
        let paused = runner.info.paused;
        let version = self.queue_version(runner_token).to_string();
        if last_update == Some(version.as_str()) {
            return RequestJob::UpToDate { version };
        }
        // A paused runner gets 204 (reference §2).
        if paused {
            return RequestJob::NoJob { version };
        }
        let matching: Vec<u64> = self
            .pending
            .iter()
            .copied()
            .filter(|id| {
                self.jobs.get(id).is_some_and(|job| {
                    job.spec
                        .runner_token
                        .as_deref()
                        .is_none_or(|only| only == runner_token)
                        && self
                            .registry
                            .get(runner_token)
                            .is_some_and(|runner| runner.takes(&job.spec.tags))
                })
            })
            .collect();
        let Some(&job_id) = matching.first() else {
            return RequestJob::NoJob { version };
        };
        self.pending.remove(&job_id);
        if !two_phase {
            self.set_status(job_id, JobStatus::Running);
        }
        let ack_window = self.ack_window;
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.record.picked_at = Some(now);
            job.record.runner_token_prefix = Some(runner_token.chars().take(8).collect());
            job.updated_at = now;
            if two_phase {
                job.commit_deadline = Some(now + ack_window);
                self.next_commit_lapse = Some(
                    self.next_commit_lapse
                        .map_or(now + ack_window, |at| at.min(now + ack_window)),
                );
            } else {
                job.record.committed_at = Some(now);
            }
        }
        self.counters.jobs_assigned += 1;
        RequestJob::Assigned {
            job_id,
            queue_size: matching.len() as u64,
            queue_depth: 1,
        }
    }

    /// Rails' `authenticate_job!` for the runner job endpoints.
    pub fn authenticate_job(&self, id: u64, token: Option<&str>) -> Result<&Job, JobAuthError> {
        let job = self.authenticate_job_token(id, token)?;
        if job.record.status != JobStatus::Running {
            return Err(JobAuthError::NotRunning(job.record.status));
        }
        Ok(job)
    }

    /// The token check of `authenticate_job!` alone.
    fn authenticate_job_token(&self, id: u64, token: Option<&str>) -> Result<&Job, JobAuthError> {
        let job = self.jobs.get(&id).ok_or(JobAuthError::Forbidden)?;
        if token != Some(job.token.as_str()) {
            return Err(JobAuthError::Forbidden);
        }
        Ok(job)
    }

    /// `PUT /jobs/:id` (`Ci::UpdateBuildStateService` without live trace).
    pub fn update_job(
        &mut self,
        id: u64,
        token: Option<&str>,
        update: JobUpdate,
        now: Instant,
    ) -> UpdateJob {
        self.expire_commit_windows(now);
        let is_final = matches!(update.state.as_deref(), Some("success" | "failed"));
        if is_final {
            // Counted once the token is right, even if the job has already
            // finished (or awaits its commit, which refuses it): tests use
            // it to see repeated or premature final updates.
            if let Some(job) = self.jobs.get_mut(&id) {
                if token == Some(job.token.as_str()) {
                    job.record.final_updates += 1;
                }
            }
        }
        if self
            .authenticate_job_token(id, token)
            .is_ok_and(Job::awaits_commit)
        {
            return self.update_job_awaiting_commit(id, update.state.as_deref(), now);
        }
        if let Err(error) = self.authenticate_job(id, token) {
            return UpdateJob::Refused(error);
        }
        match update.state.as_deref() {
            Some("running") => {
                if let Some(job) = self.jobs.get_mut(&id) {
                    if now.saturating_duration_since(job.updated_at) > TOUCH_AFTER {
                        job.updated_at = now;
                    }
                }
                UpdateJob::Applied(JobStatus::Running)
            }
            Some("success") => {
                self.finish(id, JobStatus::Success, None, None, now);
                UpdateJob::Applied(JobStatus::Success)
            }
            Some("failed") => {
                let reason = match update.failure_reason.as_deref() {
                    Some(reason) if FAILURE_REASONS.contains(&reason) => reason,
                    _ => "unknown_failure",
                };
                self.finish(
                    id,
                    JobStatus::Failed,
                    Some(reason.to_string()),
                    update.exit_code,
                    now,
                );
                UpdateJob::Applied(JobStatus::Failed)
            }
            _ => UpdateJob::BadState,
        }
    }

    /// `PUT /jobs/:id` for a job awaiting its commit (reference §2.6):
    /// `pending` renews the window, `running` commits, anything else is 400.
    ///
    /// Rails answers 409 to `pending` for a waiting job that already has a
    /// runner manager; here the reservation is the only link between a
    /// waiting job and its runner, so that case does not arise.
    fn update_job_awaiting_commit(
        &mut self,
        id: u64,
        state: Option<&str>,
        now: Instant,
    ) -> UpdateJob {
        let ack_window = self.ack_window;
        match state {
            Some("pending") => {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.commit_deadline = Some(now + ack_window);
                    self.next_commit_lapse = Some(
                        self.next_commit_lapse
                            .map_or(now + ack_window, |at| at.min(now + ack_window)),
                    );
                }
                UpdateJob::Applied(JobStatus::Pending)
            }
            Some("running") => {
                self.set_status(id, JobStatus::Running);
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.commit_deadline = None;
                    job.record.committed_at = Some(now);
                    job.updated_at = now;
                }
                UpdateJob::Applied(JobStatus::Running)
            }
            // Including final states: a runner that cannot place the job
            // must commit it before failing it, or let the window lapse.
            _ => UpdateJob::BadState,
        }
    }

    /// The running job whose token this is (`GET /api/v4/job`). A job
    /// awaiting its commit is `pending`, hence not found (401, reference §7).
    pub fn running_job_by_token(&self, token: &str) -> Option<&Job> {
        let id = self.job_ids_by_token.get(token)?;
        self.jobs
            .get(id)
            .filter(|job| job.record.status == JobStatus::Running)
    }

    /// Drops jobs whose commit window lapsed, and running jobs past their
    /// timeout or without update for too long. Returns whether any job
    /// changed.
    pub fn drop_timed_out_jobs(&mut self, now: Instant) -> bool {
        let mut changed = self.expire_commit_windows(now);
        let mut dropped = Vec::new();
        for job in self.jobs.values() {
            if job.record.status != JobStatus::Running {
                continue;
            }
            // The timeout counts from `started_at`, which two-phase commit
            // sets at the commit.
            let started = job
                .record
                .committed_at
                .or(job.record.picked_at)
                .unwrap_or(job.record.queued_at);
            let limit = Duration::from_secs(job.spec.timeout_secs) + TIMEOUT_BUFFER;
            if now.saturating_duration_since(started) > limit {
                dropped.push((job.record.id, "job_execution_timeout"));
            } else if now.saturating_duration_since(job.updated_at) > STUCK_RUNNING_AFTER {
                dropped.push((job.record.id, "stuck_or_timeout_failure"));
            }
        }
        changed |= !dropped.is_empty();
        for (id, reason) in dropped {
            self.finish(id, JobStatus::Failed, Some(reason.to_string()), None, now);
        }
        changed
    }

    /// Drops the jobs whose two-phase commit window has passed, as
    /// `runner_provisioning_timeout` (reference §2.6). Returns whether any
    /// was dropped.
    ///
    /// GitLab then retries such a job automatically if its `retry:` allows
    /// (a new job in the queue); jobs here have no `retry:`, so that is not
    /// simulated.
    pub fn expire_commit_windows(&mut self, now: Instant) -> bool {
        if self.next_commit_lapse.is_none_or(|at| now < at) {
            return false;
        }
        let lapsed: Vec<u64> = self
            .jobs
            .values()
            .filter(|job| job.commit_deadline.is_some_and(|deadline| now >= deadline))
            .map(|job| job.record.id)
            .collect();
        // The windows still open after these lapse.
        self.next_commit_lapse = self
            .jobs
            .values()
            .filter_map(|job| job.commit_deadline.filter(|deadline| now < *deadline))
            .min();
        for &id in &lapsed {
            self.finish(
                id,
                JobStatus::Failed,
                Some(PROVISIONING_TIMEOUT.to_string()),
                None,
                now,
            );
        }
        !lapsed.is_empty()
    }

    fn finish(
        &mut self,
        id: u64,
        status: JobStatus,
        failure_reason: Option<String>,
        exit_code: Option<i32>,
        now: Instant,
    ) {
        self.pending.remove(&id);
        self.set_status(id, status);
        if let Some(job) = self.jobs.get_mut(&id) {
            job.commit_deadline = None;
            job.record.failure_reason = failure_reason;
            job.record.exit_code = exit_code;
            job.record.finished_at = Some(now);
            job.updated_at = now;
        }
    }

    fn set_status(&mut self, id: u64, status: JobStatus) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let before = job.record.status;
        job.record.status = status;
        let previous = status_counter(&mut self.counters, before);
        *previous = previous.saturating_sub(1);
        *status_counter(&mut self.counters, status) += 1;
    }

    fn tick(&mut self, runner_token: &str) {
        let version = self.random_hex(32);
        self.queue_versions
            .insert(runner_token.to_string(), version);
    }

    fn random_hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| DIGITS[self.id_rng.gen_range(0..16)] as char)
            .collect()
    }

    fn random_alphanumeric(&mut self, len: usize) -> String {
        (&mut self.id_rng)
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect()
    }
}

fn status_counter(counters: &mut CoordinatorStats, status: JobStatus) -> &mut u64 {
    match status {
        JobStatus::Pending => &mut counters.pending,
        JobStatus::Running => &mut counters.running,
        JobStatus::Success => &mut counters.success,
        JobStatus::Failed => &mut counters.failed,
        JobStatus::Canceled => &mut counters.canceled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK_WINDOW: Duration = Duration::from_secs(120);

    #[test]
    fn running_jobs_are_dropped_after_timeout_or_silence() {
        let runner = "glrt-runner".to_string();
        let mut state = State::new(std::slice::from_ref(&runner), 0, ACK_WINDOW);
        let start = Instant::now();
        let short = state.enqueue(
            JobSpec {
                timeout_secs: 60,
                ..JobSpec::default()
            },
            start,
        );
        let long = state.enqueue(JobSpec::default(), start);
        for _ in 0..2 {
            let outcome = state.request_job(&runner, None, false, start);
            assert!(
                matches!(outcome, RequestJob::Assigned { .. }),
                "{outcome:?}"
            );
        }
        assert!(!state.drop_timed_out_jobs(start + Duration::from_secs(900)));
        assert!(state.drop_timed_out_jobs(start + Duration::from_secs(961)));
        let reason = |state: &State, id| {
            state
                .job(id)
                .and_then(|job| job.record.failure_reason.clone())
        };
        assert_eq!(
            reason(&state, short).as_deref(),
            Some("job_execution_timeout")
        );
        assert_eq!(reason(&state, long), None);
        assert!(state.drop_timed_out_jobs(start + Duration::from_secs(3601)));
        assert_eq!(
            reason(&state, long).as_deref(),
            Some("stuck_or_timeout_failure")
        );
        assert_eq!(state.stats().failed, 2);
        assert_eq!(state.stats().running, 0);
    }

    fn reason(state: &State, id: u64) -> Option<String> {
        state
            .job(id)
            .and_then(|job| job.record.failure_reason.clone())
    }

    fn put(state: &mut State, id: u64, token: &str, what: &str, now: Instant) -> UpdateJob {
        let update = JobUpdate {
            state: Some(what.to_string()),
            ..JobUpdate::default()
        };
        state.update_job(id, Some(token), update, now)
    }

    #[test]
    fn keep_alives_renew_the_commit_window_until_it_lapses() {
        let runner = "glrt-runner".to_string();
        let mut state = State::new(std::slice::from_ref(&runner), 0, ACK_WINDOW);
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let id = state.enqueue(JobSpec::default(), start);
        let outcome = state.request_job(&runner, None, true, start);
        assert!(
            matches!(outcome, RequestJob::Assigned { job_id, .. } if job_id == id),
            "{outcome:?}"
        );
        let token = state.job(id).expect("job").token.clone();

        let outcome = put(&mut state, id, &token, "pending", at(100));
        assert!(
            matches!(outcome, UpdateJob::Applied(JobStatus::Pending)),
            "{outcome:?}"
        );
        // The window now ends at 220 s, not 120 s.
        assert!(!state.drop_timed_out_jobs(at(219)));
        assert_eq!(
            state.job(id).map(|job| job.record.status),
            Some(JobStatus::Pending)
        );
        // Each request applies the rule itself, before the sweep runs.
        let outcome = put(&mut state, id, &token, "running", at(220));
        assert!(
            matches!(
                outcome,
                UpdateJob::Refused(JobAuthError::NotRunning(JobStatus::Failed))
            ),
            "{outcome:?}"
        );
        assert_eq!(reason(&state, id).as_deref(), Some(PROVISIONING_TIMEOUT));
        assert!(!state.drop_timed_out_jobs(at(300)));
        assert_eq!(state.stats().failed, 1);
        assert_eq!(state.stats().pending, 0);
    }

    #[test]
    fn the_job_timeout_counts_from_the_commit() {
        let runner = "glrt-runner".to_string();
        let mut state = State::new(std::slice::from_ref(&runner), 0, ACK_WINDOW);
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let id = state.enqueue(
            JobSpec {
                timeout_secs: 60,
                ..JobSpec::default()
            },
            start,
        );
        state.request_job(&runner, None, true, start);
        let token = state.job(id).expect("job").token.clone();
        put(&mut state, id, &token, "pending", at(100));
        let outcome = put(&mut state, id, &token, "running", at(200));
        assert!(
            matches!(outcome, UpdateJob::Applied(JobStatus::Running)),
            "{outcome:?}"
        );
        let record = &state.job(id).expect("job").record;
        assert_eq!(record.picked_at, Some(start));
        assert_eq!(record.committed_at, Some(at(200)));
        // 60 s of timeout plus 15 min of buffer, from the commit.
        assert!(!state.drop_timed_out_jobs(at(200 + 960)));
        assert!(state.drop_timed_out_jobs(at(200 + 961)));
        assert_eq!(reason(&state, id).as_deref(), Some("job_execution_timeout"));
    }
}
