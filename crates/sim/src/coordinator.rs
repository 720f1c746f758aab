//! A GitLab coordinator simulator: the Rails runner API and Workhorse long
//! polling, over real HTTP, following `reference/gitlab-runner-api.md`.
//!
//! What it serves (see [`CoordinatorSim::start`]):
//!
//! - the runner API: `POST /api/v4/jobs/request` (with Workhorse long polling
//!   in front when [`CoordinatorConfig::long_poll`] is non-zero),
//!   `PUT /api/v4/jobs/:id`, `PATCH /api/v4/jobs/:id/trace`, `GET /api/v4/job`;
//! - the two user/admin calls a dispatcher needs:
//!   `GET /api/v4/projects/:id/jobs/:job_id/trace` and
//!   `POST /api/v4/projects/:id/jobs/:job_id/cancel` (`PRIVATE-TOKEN`);
//! - the runner lifecycle (§10): `POST /api/v4/runners` (legacy
//!   registration, with [`CoordinatorConfig::registration_token`]),
//!   `POST /api/v4/user/runners` (instance runners, admin token),
//!   `POST /api/v4/runners/verify`, `DELETE /api/v4/runners`,
//!   `DELETE /api/v4/runners/managers`, and `GET /api/v4/user`; runners
//!   keep their tags, `run_untagged` and `paused`, and `/jobs/request`
//!   honours them (Rails' `matches_build?`: a job's tags all the runner's,
//!   untagged jobs only with `run_untagged`; a paused runner gets 204);
//! - control endpoints for other processes: `GET /sim/jobs`, `GET /sim/stats`,
//!   `GET /sim/runners`, `POST /sim/jobs`, `POST /sim/jobs/:id/cancel`.
//!
//! Two-phase job commit (§2.6) is simulated: a runner advertising
//! `two_phase_job_commit` gets jobs that stay `pending`, reserved for it,
//! until it commits them with `PUT state=running` within
//! [`CoordinatorConfig::ack_window`] (see [`CoordinatorConfig::two_phase_commit`]).
//!
//! Deliberate simplifications, each a documented GitLab configuration:
//! no `canceling` state (§6: as if the runner had not advertised
//! `cancel_gracefully`), no 202 on the final PUT (§3: as with live trace
//! off; that this is the self-managed default is UNVERIFIED),
//! only instance runners, and the log is always "being
//! watched" so the trace update interval is 3 s rather than 60 s.
//!
//! `long_poll = 0` means Workhorse's flag explicitly set to zero: its
//! handler is then skipped, so there is no `Gitlab-Ci-Builds-Polling` header
//! and no 32 KiB limit (413). Workhorse's built-in default (50 ns) would keep
//! the handler on with an instant hold; use a tiny non-zero `long_poll` to
//! model that.
//!
//! Faults come from a seeded random generator: for a given seed and a given
//! order of requests, the same requests fail.

mod http;
mod payload;
mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
pub use tokio::time::Instant;

pub use state::registry::RunnerInfo;
use state::State;

/// How a [`CoordinatorSim`] behaves.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Runner authentication tokens the coordinator knows. Any other token
    /// gets 403 on `/jobs/request`.
    pub runner_tokens: Vec<String>,
    /// The `PRIVATE-TOKEN` accepted by the project job API (log reads,
    /// cancel), as an administrator's personal access token would be.
    pub admin_token: String,
    /// How long Workhorse holds a job request whose `last_update` is current.
    /// `Duration::ZERO` turns the Workhorse handler off entirely: Rails
    /// answers every request directly.
    pub long_poll: Duration,
    /// Injected failures and latency.
    pub faults: CoordinatorFaults,
    /// Seed of the fault sequence and of generated tokens and versions.
    pub seed: u64,
    /// Two-phase job commit (reference §2.6), i.e. the Rails feature flag
    /// `allow_runner_job_acknowledgement`; default on. When on, a job
    /// request advertising `info.features.two_phase_job_commit: true` gets
    /// a job that stays `pending`, reserved for that runner, until the
    /// runner commits it (`PUT /jobs/:id {state:"running"}`). Runners that
    /// do not advertise the feature get running jobs either way.
    pub two_phase_commit: bool,
    /// The instance's legacy registration token (`POST /api/v4/runners`);
    /// `None`: registration tokens are disabled, as by default since GitLab
    /// 17.0 (410 Gone).
    pub registration_token: Option<String>,
    /// How long a job handed out under two-phase commit waits for the
    /// runner's commit; each `PUT state=pending` renews it. Past it the job
    /// is dropped as `runner_provisioning_timeout`. GitLab's
    /// `RUNNER_ACK_QUEUE_EXPIRY_TIME` is 2 minutes (the default); set it
    /// short in tests.
    pub ack_window: Duration,
}

/// Rails' `RUNNER_ACK_QUEUE_EXPIRY_TIME` (reference §2.6).
pub const DEFAULT_ACK_WINDOW: Duration = Duration::from_secs(120);

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            runner_tokens: vec!["glrt-simrunner0000000000".to_string()],
            admin_token: "glpat-simadmin0000000000".to_string(),
            long_poll: Duration::ZERO,
            faults: CoordinatorFaults::default(),
            seed: 0,
            two_phase_commit: true,
            ack_window: DEFAULT_ACK_WINDOW,
            registration_token: None,
        }
    }
}

/// Failures and delays the coordinator injects. The failures stand for a
/// front proxy (nginx, a load balancer) that cannot reach GitLab: they are
/// decided before Workhorse or Rails see the request.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorFaults {
    /// Share of `POST /jobs/request` answered 502 or 503 (0.0 to 1.0).
    pub request_job_unavailable_rate: f64,
    /// Share of the other `/api/v4` requests (runner endpoints and the
    /// project job API) answered 502 or 503 (0.0 to 1.0).
    pub api_error_rate: f64,
    /// Delay added before every `/api/v4` answer.
    pub latency: Duration,
}

/// A job to put in the pending queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSpec {
    /// The only runner token that may take the job; `None`: any runner.
    pub runner_token: Option<String>,
    pub project_id: u64,
    pub name: String,
    /// Project/pipeline variables of the job, in order (later ones win for
    /// the runner, as in GitLab). In JSON, either `[[key, value], …]` or
    /// `{key: value, …}`.
    #[serde(deserialize_with = "deserialize_variables")]
    pub variables: Vec<(String, String)>,
    /// Job timeout sent as `runner_info.timeout`.
    pub timeout_secs: u64,
    /// The job's `tags:`; only runners having all of them take it, and a
    /// job without tags only runners with `run_untagged`.
    pub tags: Vec<String>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            runner_token: None,
            project_id: 1,
            name: "test".to_string(),
            variables: Vec::new(),
            timeout_secs: 3600,
            tags: Vec::new(),
        }
    }
}

/// Status of a job as GitLab names it (the subset the simulator uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
}

impl JobStatus {
    /// The status as GitLab spells it in `Job-Status` headers and entities.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    /// Whether the job has reached a final status.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

/// Everything the coordinator knows about a job, for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: u64,
    pub project_id: u64,
    pub name: String,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The job log as stored (job token masked).
    pub trace: Vec<u8>,
    /// First 8 characters of the token of the runner that took the job.
    pub runner_token_prefix: Option<String>,
    pub queued_at: Instant,
    /// When a runner got the job (201 on `/jobs/request`).
    pub picked_at: Option<Instant>,
    /// When the job became running (`started_at` in GitLab): at
    /// [`picked_at`](Self::picked_at) without two-phase commit, at the
    /// runner's commit (`PUT state=running`) with it. `None` while the job
    /// awaits its commit, and for jobs that never ran.
    pub committed_at: Option<Instant>,
    /// Time of the first accepted (202) log write, whoever sent it.
    pub first_trace_at: Option<Instant>,
    pub finished_at: Option<Instant>,
    /// Every authenticated PATCH of the log with a body that reached the
    /// append step.
    pub trace_writes: Vec<TraceWrite>,
    /// Authenticated PATCHes with an empty body that reached the append
    /// step (probes: they never change the log).
    pub trace_probes: u32,
    /// Number of authenticated `PUT` with a final state (`success` or
    /// `failed`), including those refused because the job had already
    /// finished.
    pub final_updates: u32,
}

/// One `PATCH /jobs/:id/trace` the coordinator judged on its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceWrite {
    /// `start` of the request's `Content-Range`.
    pub offset: u64,
    /// Body length.
    pub len: u64,
    /// `true`: appended (202); `false`: refused with 416.
    pub accepted: bool,
    /// Whether the request's `Content-Range` end was inclusive
    /// (`start + len - 1`), as gitlab-runner sends it. Rails ignores the end,
    /// so this is only recorded for tests of clients.
    pub end_inclusive: bool,
}

/// Counters over the simulator's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorStats {
    pub pending: u64,
    pub running: u64,
    pub success: u64,
    pub failed: u64,
    pub canceled: u64,
    /// `/api/v4` requests received (including faulted ones).
    pub requests_served: u64,
    /// `POST /jobs/request` received (including faulted ones).
    pub job_requests: u64,
    /// Jobs handed out with 201.
    pub jobs_assigned: u64,
    /// Requests sent by jobs' inner runners (`User-Agent` of gitlab-runner).
    #[serde(default)]
    pub inner_runner_requests: u64,
    /// `PUT /api/v4/jobs/:id` not sent by an inner runner (confirmations,
    /// failure reports).
    #[serde(default)]
    pub job_updates: u64,
    /// The other `/api/v4` requests: what dispatchers spend watching jobs
    /// (everything but job requests, job updates and inner runners).
    #[serde(default)]
    pub watch_requests: u64,
    /// Job requests Workhorse held (long polls), finished or not.
    pub long_polls: u64,
    /// Long polls being held right now.
    pub long_polls_waiting: u64,
    /// Requests answered 502/503 by fault injection.
    pub faults_injected: u64,
    /// `/api/v4` requests whose URL carried a token (a `token`,
    /// `job_token` or `private_token` parameter). GitLab accepts them, but
    /// URLs end up in the access logs of every proxy on the way.
    #[serde(default)]
    pub tokens_in_urls: u64,
}

/// A job as `GET /sim/jobs` shows it: times in milliseconds since the
/// simulator started, the log as (lossy) UTF-8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub id: u64,
    pub project_id: u64,
    pub name: String,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    pub trace: String,
    pub runner_token_prefix: Option<String>,
    pub queued_at_ms: u64,
    pub picked_at_ms: Option<u64>,
    /// Absent in snapshots from before two-phase commit was simulated.
    #[serde(default)]
    pub committed_at_ms: Option<u64>,
    pub first_trace_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub trace_writes: Vec<TraceWrite>,
    #[serde(default)]
    pub trace_probes: u32,
    pub final_updates: u32,
}

/// A running coordinator simulator. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct CoordinatorSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: CoordinatorConfig,
    url: String,
    /// When the simulator started, on the monotonic and the wall clock, to
    /// show monotonic times as dates in entities.
    started: Instant,
    started_wall: SystemTime,
    state: Mutex<State>,
    /// Woken on every state change (for [`CoordinatorSim::wait_until`]).
    changed: Notify,
    /// Woken whenever a runner queue version changes (for held long polls).
    queue_ticked: Notify,
    shutdown: watch::Sender<bool>,
}

impl CoordinatorSim {
    /// Serves the simulator on `listener` in a spawned task until
    /// [`shutdown`](Self::shutdown).
    pub async fn start(
        listener: tokio::net::TcpListener,
        config: CoordinatorConfig,
    ) -> std::io::Result<CoordinatorSim> {
        let address = listener.local_addr()?;
        let url = format!("http://{address}");
        let (shutdown, mut shutdown_seen) = watch::channel(false);
        let state = State::new(&config.runner_tokens, config.seed, config.ack_window);
        let sim = CoordinatorSim {
            inner: Arc::new(Inner {
                config,
                url,
                started: Instant::now(),
                started_wall: SystemTime::now(),
                state: Mutex::new(state),
                changed: Notify::new(),
                queue_ticked: Notify::new(),
                shutdown,
            }),
        };
        let router = http::router(sim.clone());
        tokio::spawn(async move {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // An error means every sender is gone: stop as well.
                    let _ = shutdown_seen.wait_for(|stopped| *stopped).await;
                })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "coordinator simulator stopped");
            }
        });
        tokio::spawn(sweep_timed_out_jobs(sim.clone()));
        tracing::debug!(url = %sim.inner.url, "coordinator simulator started");
        Ok(sim)
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (what runners put in `url`).
    pub fn url(&self) -> String {
        self.inner.url.clone()
    }

    /// Adds a pending job and ticks the queue of every runner that may take
    /// it, which releases their held long polls. Returns the job id.
    pub fn enqueue(&self, spec: JobSpec) -> u64 {
        let id = self.lock().enqueue(spec, Instant::now());
        self.inner.queue_ticked.notify_waiters();
        self.notify_changed();
        id
    }

    /// A copy of one job's record.
    pub fn job(&self, id: u64) -> Option<JobRecord> {
        self.lock().job(id).map(|job| job.record.clone())
    }

    /// Copies of all job records, by id.
    pub fn jobs(&self) -> Vec<JobRecord> {
        self.lock().jobs().map(|job| job.record.clone()).collect()
    }

    /// A user cancels the job: pending (including those awaiting their
    /// runner's commit) or running jobs become canceled. Finished or unknown
    /// jobs are left alone.
    pub fn cancel(&self, id: u64) {
        let changed = self.lock().cancel(id, Instant::now());
        if changed {
            self.notify_changed();
        }
    }

    /// The runners the coordinator knows (configured, created or
    /// registered), without their tokens.
    pub fn runners(&self) -> Vec<RunnerInfo> {
        self.lock().runner_infos()
    }

    /// Counters and current job counts per status.
    pub fn stats(&self) -> CoordinatorStats {
        self.lock().stats()
    }

    /// Ends the configured API faults (an outage that is over); latency
    /// stays.
    pub fn end_faults(&self) {
        self.lock().end_faults();
    }

    /// Waits until `pred` holds, re-checking on every state change, for at
    /// most `deadline`. Returns whether it held.
    pub async fn wait_until(
        &self,
        pred: impl Fn(&CoordinatorSim) -> bool,
        deadline: Duration,
    ) -> bool {
        let deadline = Instant::now() + deadline;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            // Register before checking, so a change between the check and
            // the wait is not missed.
            changed.as_mut().enable();
            if pred(self) {
                return true;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => return pred(self),
            }
        }
    }

    /// Stops serving: held long polls answer 204 at once, the server stops
    /// accepting and closes connections once in-flight requests are done.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Records of all jobs in the form `GET /sim/jobs` serves.
    pub fn snapshots(&self) -> Vec<JobSnapshot> {
        let state = self.lock();
        state
            .jobs()
            .map(|job| snapshot(&job.record, self.inner.started))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data behind
        // (every mutation is a few assignments), so poisoning is ignored.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify_changed(&self) {
        self.inner.changed.notify_waiters();
    }
}

/// Fails running jobs that GitLab's periodic workers would drop: past their
/// timeout, or without update for too long. Checks once a second, which is
/// finer than GitLab's cron schedule. Also drops jobs whose two-phase commit
/// window lapsed, at most a second (or half a short window) late; the
/// runner endpoints apply that rule exactly on each request as well.
async fn sweep_timed_out_jobs(sim: CoordinatorSim) {
    let mut shutdown = sim.inner.shutdown.subscribe();
    let period =
        (sim.inner.config.ack_window / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        let changed = sim.lock().drop_timed_out_jobs(Instant::now());
        if changed {
            sim.notify_changed();
        }
    }
}

fn snapshot(record: &JobRecord, started: Instant) -> JobSnapshot {
    let millis = |at: Instant| at.saturating_duration_since(started).as_millis() as u64;
    JobSnapshot {
        id: record.id,
        project_id: record.project_id,
        name: record.name.clone(),
        status: record.status,
        failure_reason: record.failure_reason.clone(),
        exit_code: record.exit_code,
        trace: String::from_utf8_lossy(&record.trace).into_owned(),
        runner_token_prefix: record.runner_token_prefix.clone(),
        queued_at_ms: millis(record.queued_at),
        picked_at_ms: record.picked_at.map(millis),
        committed_at_ms: record.committed_at.map(millis),
        first_trace_at_ms: record.first_trace_at.map(millis),
        finished_at_ms: record.finished_at.map(millis),
        trace_writes: record.trace_writes.clone(),
        trace_probes: record.trace_probes,
        final_updates: record.final_updates,
    }
}

/// Accepts variables as `[[key, value], …]` or as `{key: value, …}`.
fn deserialize_variables<'de, D>(deserializer: D) -> Result<Vec<(String, String)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Variables {
        Pairs(Vec<(String, String)>),
        Map(BTreeMap<String, String>),
    }
    Ok(match Variables::deserialize(deserializer)? {
        Variables::Pairs(pairs) => pairs,
        Variables::Map(map) => map.into_iter().collect(),
    })
}
