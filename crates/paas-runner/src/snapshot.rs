//! What the driver publishes for the status page, `/status.json`,
//! `/metrics`, the state dump and progress displays: read by those, written
//! only by the driver (`driver/snapshot.rs`), so that none of the readers
//! depends on the driver.

use std::time::{Duration, SystemTime};

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

/// This process's role among the replicas of a runner, as `crate::ha`
/// publishes it (and the metrics' `paas_runner_replica_*` show it) for the
/// status page, `/status.json` and the state dump.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// [`ROLE_SINGLE`], [`ROLE_ACTIVE`] or [`ROLE_STANDBY`].
    pub role: &'static str,
    /// This process: `name:pid:tag` as in the lease (PostgreSQL), or
    /// `host:pid` (SQLite).
    pub replica: String,
    /// The lease's epoch as last seen; `None` with SQLite (no lease).
    pub epoch: Option<i64>,
    /// The active replica as last seen: itself when active (or single),
    /// `None` when no replica holds the lease.
    pub active: Option<String>,
    /// When the active replica took the lease (single: opened the store),
    /// on this host's clock; `None` when unknown.
    pub active_since: Option<SystemTime>,
    /// On a standby: when the active replica's lease expires unless
    /// renewed (in the past once it expired), as last read; `None`
    /// otherwise.
    pub lease_expires_at: Option<SystemTime>,
}

/// The SQLite store: this process owns the state database through its
/// lock; there is no lease, no epoch and no standby.
pub const ROLE_SINGLE: &str = "single";
/// PostgreSQL store: this replica holds the lease and acts.
pub const ROLE_ACTIVE: &str = "active";
/// PostgreSQL store: this replica waits for the lease (hot standby).
pub const ROLE_STANDBY: &str = "standby";
