//! Prometheus metrics, through `prometheus-client`: gauges rendered from the
//! driver's [`Snapshot`] at each scrape, and counters and histograms fed by
//! events (API calls, job stages, log lines) into the process-wide
//! [`Recorder`].
//!
//! Families follow gitlab-runner where one makes sense here
//! (`gitlab_runner_version_info`, `gitlab_runner_jobs`,
//! `gitlab_runner_concurrent`, `gitlab_runner_limit`,
//! `gitlab_runner_api_request_statuses_total`, `gitlab_runner_errors_total`,
//! `gitlab_runner_job_duration_seconds`), so that dashboards built for it
//! show something; ours are `paas_runner_*`. Label values come from fixed
//! sets (endpoint and step names, stages, failure reasons, flavor and
//! runner names of the configuration), never from URLs or outside text, so
//! the number of series is bounded.
//!
//! The recorder is cheap on hot paths: an update takes the family's read
//! lock and an atomic add once the series exists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::snapshot::Snapshot;

/// Labels of one series.
type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic text exposition.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Jobs whose stage times are kept at most (a job is dropped when
/// forgotten; this only bounds a leak).
const MAX_TIMED_JOBS: usize = 100_000;

/// gitlab-runner's buckets of `gitlab_runner_job_duration_seconds`.
const JOB_DURATION_BUCKETS: [f64; 10] = [
    30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0, 18000.0, 36000.0,
];
/// Buckets of provisioning steps, pickup and deletion delays (seconds).
const STEP_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// The replica's role (`crate::ha`).
struct ReplicaGauges {
    active: Gauge,
    epoch: Gauge,
    took_over_at: FloatGauge,
}

impl ReplicaGauges {
    fn register(registry: &mut Registry) -> ReplicaGauges {
        let gauges = ReplicaGauges {
            active: Gauge::default(),
            epoch: Gauge::default(),
            took_over_at: FloatGauge::default(),
        };
        registry.register(
            "paas_runner_replica_active",
            "1 when this process is the active replica (always, with the SQLite store), 0 on a standby",
            gauges.active.clone(),
        );
        registry.register(
            "paas_runner_lease_epoch",
            "Epoch of the lease of the active replica (PostgreSQL store; 0 with SQLite)",
            gauges.epoch.clone(),
        );
        registry.register(
            "paas_runner_last_takeover_timestamp_seconds",
            "When this process became the active replica (Unix time)",
            gauges.took_over_at.clone(),
        );
        gauges
    }
}

/// Figures only the service's events give: counters and histograms.
pub struct Recorder {
    registry: Registry,
    replica: ReplicaGauges,
    api_requests: Family<Labels, Counter>,
    cloud_requests: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    orphans_found: Counter,
    job_duration: HistogramFamily,
    provisioning: HistogramFamily,
    pickup: HistogramFamily,
    finish_to_delete: HistogramFamily,
    /// Per job (runner index, job id): when each stage began.
    job_times: Mutex<HashMap<(usize, u64), JobTimes>>,
}

/// Log events of level warning and error (`gitlab_runner_errors_total`),
/// counted by the logging layer.
pub static WARNINGS_LOGGED: AtomicU64 = AtomicU64::new(0);
pub static ERRORS_LOGGED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Default)]
struct JobTimes {
    runner: String,
    flavor: String,
    acquired: Option<Instant>,
    create_started: Option<Instant>,
    deploy_started: Option<Instant>,
    launch_started: Option<Instant>,
    finished: Option<Instant>,
}

/// A step of provisioning, for `paas_runner_provisioning_duration_seconds`.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// `CreateApp` sent → application created.
    Create,
    /// `Deploy` sent → build context pushed.
    Deploy,
    /// Pushed → the job started on its machine.
    Launch,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Deploy => "deploy",
            Step::Launch => "launch",
        }
    }
}

static RECORDER: LazyLock<Recorder> = LazyLock::new(Recorder::new);

/// The process-wide recorder.
pub fn recorder() -> &'static Recorder {
    &RECORDER
}

/// Histograms of whole jobs, with gitlab-runner's buckets.
fn job_histograms() -> HistogramFamily {
    Family::new_with_constructor(|| Histogram::new(JOB_DURATION_BUCKETS))
}

/// Histograms of steps and delays (seconds to minutes).
fn step_histograms() -> HistogramFamily {
    Family::new_with_constructor(|| Histogram::new(STEP_BUCKETS))
}

impl Recorder {
    fn new() -> Recorder {
        let mut registry = Registry::default();
        let api_requests = Family::<Labels, Counter>::default();
        registry.register(
            "gitlab_runner_api_request_statuses",
            "Coordinator API requests, by runner, endpoint and HTTP status (0: no answer)",
            api_requests.clone(),
        );
        let cloud_requests = Family::<Labels, Counter>::default();
        registry.register(
            "paas_runner_cloud_api_requests",
            "Clever Cloud API requests, by endpoint and HTTP status (0: no answer)",
            cloud_requests.clone(),
        );
        let failures = Family::<Labels, Counter>::default();
        registry.register(
            "paas_runner_job_failures",
            "Jobs reported failed, by runner and failure_reason",
            failures.clone(),
        );
        let orphans_found = Counter::default();
        registry.register(
            "paas_runner_orphans_found",
            "Applications of this installation that no job accounts for, found by reconciliation",
            orphans_found.clone(),
        );
        let job_duration = job_histograms();
        registry.register(
            "gitlab_runner_job_duration_seconds",
            "Jobs from acquisition to the end of their run on the coordinator, by runner",
            job_duration.clone(),
        );
        let provisioning = step_histograms();
        registry.register(
            "paas_runner_provisioning_duration_seconds",
            "Provisioning steps (create, deploy, launch), by runner, flavor and step",
            provisioning.clone(),
        );
        let pickup = step_histograms();
        registry.register(
            "paas_runner_pickup_latency_seconds",
            "From a job's acquisition to its start on its machine, by runner and flavor",
            pickup.clone(),
        );
        let finish_to_delete = step_histograms();
        registry.register(
            "paas_runner_finish_to_delete_seconds",
            "From the end of a job to the deletion of its machine, by runner",
            finish_to_delete.clone(),
        );
        let replica = ReplicaGauges::register(&mut registry);
        Recorder {
            registry,
            replica,
            api_requests,
            cloud_requests,
            failures,
            orphans_found,
            job_duration,
            provisioning,
            pickup,
            finish_to_delete,
            job_times: Mutex::new(HashMap::new()),
        }
    }

    /// This process's role among replicas (`crate::ha`): active or
    /// standby, the lease's epoch, and when it last took the lease.
    pub fn replica(&self, active: bool, epoch: i64, took_over_at: Option<std::time::SystemTime>) {
        self.replica.active.set(i64::from(active));
        self.replica.epoch.set(epoch);
        if let Some(at) = took_over_at {
            let seconds = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_secs_f64())
                .unwrap_or(0.0);
            self.replica.took_over_at.set(seconds);
        }
    }

    /// A coordinator request of `runner` to `endpoint` (a fixed name)
    /// answered with `status` (`None`: no answer).
    pub fn api_request(&self, runner: &str, endpoint: &'static str, status: Option<u16>) {
        self.api_requests
            .get_or_create(&vec![
                ("runner", label(runner)),
                ("endpoint", endpoint.to_owned()),
                ("status", status.unwrap_or(0).to_string()),
            ])
            .inc();
    }

    /// A Clever Cloud API request to `endpoint` (a fixed name, such as
    /// `create application`, labelled `create_application`).
    pub fn cloud_request(&self, endpoint: &'static str, status: Option<u16>) {
        self.cloud_requests
            .get_or_create(&vec![
                ("endpoint", endpoint.replace(' ', "_")),
                ("status", status.unwrap_or(0).to_string()),
            ])
            .inc();
    }

    /// A job reported failed with `reason` (`script_failure`, ...).
    pub fn failure(&self, runner: &str, reason: &'static str) {
        self.failures
            .get_or_create(&vec![
                ("runner", label(runner)),
                ("failure_reason", reason.to_owned()),
            ])
            .inc();
    }

    pub fn orphan_found(&self) {
        self.orphans_found.inc();
    }

    fn with_job(&self, job: (usize, u64), update: impl FnOnce(&mut JobTimes)) {
        if let Ok(mut times) = self.job_times.lock() {
            if times.len() < MAX_TIMED_JOBS || times.contains_key(&job) {
                update(times.entry(job).or_default());
            }
        }
    }

    /// A job was acquired (or resumed at start) by `runner`.
    pub fn job_acquired(&self, job: (usize, u64), runner: &str, flavor: &str, now: Instant) {
        self.with_job(job, |times| {
            times.runner = runner.to_owned();
            times.flavor = flavor.to_owned();
            times.acquired = Some(now);
        });
    }

    /// A provisioning step of `job` began.
    pub fn step_started(&self, job: (usize, u64), step: Step, now: Instant) {
        self.with_job(job, |times| match step {
            Step::Create => times.create_started = Some(now),
            Step::Deploy => times.deploy_started = Some(now),
            Step::Launch => times.launch_started = Some(now),
        });
    }

    /// A provisioning step of `job` succeeded.
    pub fn step_done(&self, job: (usize, u64), step: Step, now: Instant) {
        let Ok(times) = self.job_times.lock() else {
            return;
        };
        let Some(times) = times.get(&job) else {
            return;
        };
        let started = match step {
            Step::Create => times.create_started,
            Step::Deploy => times.deploy_started,
            Step::Launch => times.launch_started,
        };
        if let Some(started) = started {
            self.provisioning
                .get_or_create(&vec![
                    ("runner", label(&times.runner)),
                    ("flavor", label(&times.flavor)),
                    ("step", step.name().to_owned()),
                ])
                .observe(now.saturating_duration_since(started).as_secs_f64());
        }
        if let (Step::Launch, Some(acquired)) = (step, times.acquired) {
            self.pickup
                .get_or_create(&vec![
                    ("runner", label(&times.runner)),
                    ("flavor", label(&times.flavor)),
                ])
                .observe(now.saturating_duration_since(acquired).as_secs_f64());
        }
    }

    /// The job is over on the coordinator (its machine is deleted next).
    pub fn job_finished(&self, job: (usize, u64), now: Instant) {
        self.with_job(job, |times| {
            times.finished = Some(now);
            if let Some(acquired) = times.acquired {
                self.job_duration
                    .get_or_create(&vec![("runner", label(&times.runner))])
                    .observe(now.saturating_duration_since(acquired).as_secs_f64());
            }
        });
    }

    /// The job's machine is deleted and the job forgotten.
    pub fn job_forgotten(&self, job: (usize, u64), now: Instant) {
        let Ok(mut times) = self.job_times.lock() else {
            return;
        };
        if let Some(times) = times.remove(&job) {
            if let Some(finished) = times.finished {
                self.finish_to_delete
                    .get_or_create(&vec![("runner", label(&times.runner))])
                    .observe(now.saturating_duration_since(finished).as_secs_f64());
            }
        }
    }
}

/// A label value as the exposition must spell it (`prometheus-client`
/// writes values as given): backslash, double quote and line feed escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// An observer of one runner's coordinator requests.
pub fn coordinator_observer(runner: &str) -> paas_gitlab::RequestObserver {
    let runner = runner.to_owned();
    std::sync::Arc::new(move |endpoint, status| recorder().api_request(&runner, endpoint, status))
}

/// An observer of Clever Cloud API requests.
pub fn cloud_observer() -> paas_clever::api::RequestObserver {
    std::sync::Arc::new(|action, status| recorder().cloud_request(action, status))
}

/// What the metrics show besides the snapshot (settings).
#[derive(Debug, Clone, Default)]
pub struct MetricsInfo {
    pub version: String,
    pub system_id: String,
    pub started_at_unix_secs: f64,
    /// `concurrent`.
    pub concurrent: usize,
    /// Each runner's `limit`, in configuration order.
    pub runner_limits: Vec<Option<usize>>,
}

/// The OpenMetrics exposition of `snapshot` and of the recorder.
pub fn render_openmetrics(snapshot: &Snapshot, info: &MetricsInfo) -> String {
    let mut out = String::new();
    let registry = snapshot_registry(snapshot, info);
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, &registry);
    let _ = encode_registry(&mut out, &recorder().registry);
    let _ = encode_eof(&mut out);
    // `prometheus-client` writes infinite values as Rust prints them.
    if out.contains(" inf\n") {
        out = out
            .replace(" inf\n", " +Inf\n")
            .replace(" -inf\n", " -Inf\n");
    }
    out
}

/// The classic Prometheus text exposition (format 0.0.4) of the same
/// figures, for clients that do not ask for OpenMetrics (`promtool check
/// metrics`, older scrapers): counters named with their `_total` suffix in
/// `# HELP`/`# TYPE`, no `# UNIT` or `# EOF` line.
pub fn render_text(snapshot: &Snapshot, info: &MetricsInfo) -> String {
    openmetrics_to_text(&render_openmetrics(snapshot, info))
}

/// Rewrites an OpenMetrics exposition as produced by `prometheus-client`
/// into the 0.0.4 text format.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Stage names of [`paas_core::Stats`], in lifecycle order, with the
/// gitlab-runner `state` each maps to.
const STAGES: [(&str, &str); 6] = [
    ("queued", "prepare"),
    ("provisioning", "prepare"),
    ("launching", "prepare"),
    ("running", "running"),
    ("failing", "finish"),
    ("decommissioning", "finish"),
];

/// The stages of [`paas_core::Stats`], in lifecycle order, with their counts.
pub fn stage_counts(snapshot: &Snapshot) -> [(&'static str, usize); 6] {
    let stats = &snapshot.stats;
    [
        ("queued", stats.queued),
        ("provisioning", stats.provisioning),
        ("launching", stats.launching),
        ("running", stats.running),
        ("failing", stats.failing),
        ("decommissioning", stats.decommissioning),
    ]
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = FloatGauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn gauge_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) {
    let family = Family::<Labels, FloatGauge>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

/// Gauges and counters read from one snapshot: every figure of a scrape
/// comes from the same instant.
fn snapshot_registry(snapshot: &Snapshot, info: &MetricsInfo) -> Registry {
    let stats = &snapshot.stats;
    let mut registry = Registry::default();
    let registry = &mut registry;
    gauge_family(
        registry,
        "gitlab_runner_version_info",
        "Version of this runner (always 1), in gitlab-runner's family",
        [(
            vec![
                ("name", "paas-runner".to_owned()),
                ("version", label(&info.version)),
            ],
            1.0,
        )],
    );
    gauge(
        registry,
        "gitlab_runner_concurrent",
        "The `concurrent` setting: jobs handled at once, at most",
        info.concurrent as f64,
    );
    let runner_labels = |idx: usize| -> Labels {
        let runner = &snapshot.runners[idx];
        vec![
            ("runner", label(&runner.key)),
            ("name", label(&runner.name)),
            ("system_id", label(&info.system_id)),
        ]
    };
    gauge_family(
        registry,
        "gitlab_runner_limit",
        "The `limit` setting of each runner (0: none of its own)",
        (0..snapshot.runners.len()).map(|idx| {
            let limit = info.runner_limits.get(idx).copied().flatten().unwrap_or(0);
            (runner_labels(idx), limit as f64)
        }),
    );
    // Per runner and stage, from the job list of the same snapshot.
    let mut by_runner_stage: HashMap<(&str, &str), usize> = HashMap::new();
    for job in &snapshot.jobs {
        *by_runner_stage
            .entry((job.runner.as_str(), job.stage))
            .or_default() += 1;
    }
    gauge_family(
        registry,
        "gitlab_runner_jobs",
        "Jobs handled now, by runner, state (prepare, running, finish) and stage",
        (0..snapshot.runners.len()).flat_map(|idx| {
            let by_runner_stage = &by_runner_stage;
            let name = snapshot.runners[idx].name.as_str();
            STAGES.iter().map(move |(stage, state)| {
                let mut labels = runner_labels(idx);
                labels.push(("state", (*state).to_owned()));
                labels.push(("stage", (*stage).to_owned()));
                let count = by_runner_stage.get(&(name, *stage)).copied().unwrap_or(0);
                (labels, count as f64)
            })
        }),
    );
    let errors = Family::<Labels, Counter>::default();
    errors
        .get_or_create(&vec![("level", "error".to_owned())])
        .inc_by(ERRORS_LOGGED.load(Ordering::Relaxed));
    errors
        .get_or_create(&vec![("level", "warning".to_owned())])
        .inc_by(WARNINGS_LOGGED.load(Ordering::Relaxed));
    registry.register(
        "gitlab_runner_errors",
        "Log lines of level error and warning, by level",
        errors,
    );

    gauge_family(
        registry,
        "paas_runner_version_info",
        "Version of this paas-runner (always 1)",
        [(vec![("version", label(&info.version))], 1.0)],
    );
    gauge(
        registry,
        "paas_runner_start_time_seconds",
        "Start time of the service, in seconds since the Unix epoch",
        info.started_at_unix_secs,
    );
    gauge(
        registry,
        "paas_runner_shutting_down",
        "1 while the service stops: no job is acquired any more",
        f64::from(u8::from(snapshot.shutting_down)),
    );
    gauge(
        registry,
        "paas_runner_quota",
        "Weighted quota: the total weight jobs and polls may use",
        stats.quota,
    );
    gauge(
        registry,
        "paas_runner_weight_used",
        "Total weight of the tracked jobs",
        stats.weight,
    );
    gauge(
        registry,
        "paas_runner_weight_reserved",
        "Weight reserved by in-flight job requests",
        stats.reserved_weight,
    );
    gauge_family(
        registry,
        "paas_runner_jobs",
        "Tracked jobs by stage",
        stage_counts(snapshot)
            .into_iter()
            .map(|(stage, count)| (vec![("stage", stage.to_owned())], count as f64)),
    );
    gauge(
        registry,
        "paas_runner_polls_in_flight",
        "Job requests in flight to the coordinators",
        stats.polls_in_flight as f64,
    );
    gauge(
        registry,
        "paas_runner_foreign_apps",
        "Applications under this service's runner keys that another installation owns or that \
         carry no owner marker, at the last reconciliation: reported and counted in the quota, \
         never deleted",
        stats.foreign_apps as f64,
    );
    for (name, help, value) in [
        (
            "paas_runner_jobs_acquired",
            "Jobs received from coordinators",
            stats.acquired_total,
        ),
        (
            "paas_runner_jobs_launched",
            "Jobs whose launch was confirmed",
            stats.launched_total,
        ),
        (
            "paas_runner_jobs_failed",
            "Jobs reported failed by this runner",
            stats.failed_total,
        ),
        (
            "paas_runner_jobs_done",
            "Jobs finished and forgotten",
            stats.done_total,
        ),
    ] {
        registry.register(name, help, ConstCounter::new(value));
    }
    let per_runner = |value: fn(&crate::snapshot::RunnerView) -> f64| {
        snapshot.runners.iter().map(move |runner| {
            (
                vec![
                    ("runner", label(&runner.name)),
                    ("runner_key", label(&runner.key)),
                ],
                value(runner),
            )
        })
    };
    gauge_family(
        registry,
        "paas_runner_runner_jobs",
        "Tracked jobs of each runner",
        per_runner(|runner| runner.jobs as f64),
    );
    gauge_family(
        registry,
        "paas_runner_runner_weight",
        "Total weight of the tracked jobs of each runner",
        per_runner(|runner| runner.weight),
    );
    gauge_family(
        registry,
        "paas_runner_runner_max_job_weight",
        "Weight of the largest job each runner may receive",
        per_runner(|runner| runner.max_job_weight),
    );
    gauge_family(
        registry,
        "paas_runner_runner_held",
        "1 for each runner whose job requests a limit holds back, labelled by that limit \
         (concurrent, provisioning, runner_limit, quota, runner_share, first_listing, no_flavor)",
        snapshot
            .runners
            .iter()
            .enumerate()
            .filter_map(|(idx, runner)| {
                let hold = stats.held.get(idx)?.as_ref()?;
                Some((
                    vec![
                        ("runner", label(&runner.name)),
                        ("runner_key", label(&runner.key)),
                        ("limit", hold.name().to_owned()),
                    ],
                    1.0,
                ))
            }),
    );
    std::mem::take(registry)
}
