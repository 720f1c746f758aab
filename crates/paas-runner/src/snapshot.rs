//! What the driver publishes for the status page, `/status.json`,
//! `/metrics`, the state dump and progress displays: read by those, written
//! only by the driver (`driver/snapshot.rs`), so that none of the readers
//! depends on the driver.

use std::time::Duration;

use paas_core::Stats;

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

/// How often the [`Snapshot`] is rebuilt at most (a change is published at
/// the latest this long after it happened).
pub const JOB_LIST_PERIOD: Duration = Duration::from_millis(250);
