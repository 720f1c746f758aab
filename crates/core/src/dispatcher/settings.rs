//! The dispatcher's settings: global ([`DispatcherConfig`]) and per
//! runner ([`RunnerSpec`], [`LaunchWatch`]).

use super::*;

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
    /// How long, and how often, a new machine is checked until it can
    /// take its job.
    pub ready_wait: ReadyWait,
}

/// Waiting for a new machine to take its job (for Clever Cloud,
/// `cc_deployment_repo_timeout` and `cc_deployment_repo_wait_step`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadyWait {
    /// The whole wait.
    pub timeout: Duration,
    /// Between two readiness checks (at least [`MIN_READY_STEP`]); the
    /// coordinator is asked as often (at least every [`MIN_DEPLOY_WATCH`])
    /// whether the job is over meanwhile.
    pub step: Duration,
}

impl ReadyWait {
    /// The period of the cancellation watch during the wait.
    pub fn watch_every(&self) -> Duration {
        self.step.max(MIN_DEPLOY_WATCH)
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
