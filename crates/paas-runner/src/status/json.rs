//! The documents of `/status.json` (also the `SIGUSR1` dump) and
//! `/history.json`: the driver's published view types ([`RunnerView`],
//! [`JobView`]) and [`Sample`] serialised as they are, with the figures of
//! [`paas_core::Stats`] under the names operators read.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde::ser::{Serialize, Serializer};
use serde_json::Value;

use super::page::format_utc;
use super::{stage_counts, unix_secs, History, Sample, StatusConfig};
use crate::snapshot::{JobView, ReplicaStatus, RunnerView, Snapshot};

/// `/status.json`: the snapshot as operators read it (no token, no job
/// payload).
#[derive(Debug, serde::Serialize)]
pub struct StatusDocument<'a> {
    pub version: &'a str,
    pub system_id: &'a str,
    /// Unix time, in seconds.
    pub started_at: f64,
    pub shutting_down: bool,
    /// This process's role among replicas; `null` until known.
    pub replica: Option<ReplicaDocument>,
    pub stats: StatsDocument,
    pub runners: Vec<RunnerDocument<'a>>,
    pub jobs: &'a [JobView],
}

/// A [`ReplicaStatus`] as operators read it.
#[derive(Debug, serde::Serialize)]
pub struct ReplicaDocument {
    /// `single` (SQLite: no lease), `active` or `standby` (PostgreSQL).
    pub role: &'static str,
    /// This process's identity.
    pub replica: String,
    /// The lease's epoch as last seen (`null` with SQLite).
    pub epoch: Option<i64>,
    /// The active replica as last seen (this one when active or single;
    /// `null` when no replica holds the lease).
    pub active: Option<String>,
    /// When the active replica took the lease (single: opened the store),
    /// RFC 3339 in UTC; `null` when unknown.
    pub active_since: Option<String>,
    /// Seconds since then.
    pub active_for_secs: Option<f64>,
    /// On a standby: seconds until the active replica's lease expires
    /// unless renewed (negative: expired that long ago, a standby takes
    /// over); `null` otherwise.
    pub lease_expires_in_secs: Option<f64>,
}

impl ReplicaDocument {
    /// The document of `status` at `now`.
    pub fn of(status: &ReplicaStatus, now: SystemTime) -> ReplicaDocument {
        ReplicaDocument {
            role: status.role,
            replica: status.replica.clone(),
            epoch: status.epoch,
            active: status.active.clone(),
            active_since: status.active_since.map(rfc3339_utc),
            active_for_secs: status.active_since.map(|since| {
                now.duration_since(since)
                    .map_or(0.0, |elapsed| elapsed.as_secs_f64())
            }),
            lease_expires_in_secs: status
                .lease_expires_at
                .map(|at| match at.duration_since(now) {
                    Ok(left) => left.as_secs_f64(),
                    Err(past) => -past.duration().as_secs_f64(),
                }),
        }
    }
}

/// The counters of [`paas_core::Stats`].
#[derive(Debug, serde::Serialize)]
pub struct StatsDocument {
    pub quota: f64,
    pub weight_used: f64,
    pub weight_reserved: f64,
    pub jobs: usize,
    /// Jobs per stage, in lifecycle order.
    pub stages: StageCounts,
    pub polls_in_flight: usize,
    pub foreign_apps: usize,
    pub foreign_weight: f64,
    pub jobs_acquired_total: u64,
    pub jobs_launched_total: u64,
    pub jobs_failed_total: u64,
    pub jobs_done_total: u64,
}

/// Jobs per stage, serialised as an object keyed by stage name.
#[derive(Debug)]
pub struct StageCounts(pub [(&'static str, usize); 6]);

impl Serialize for StageCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(stage, count)| (*stage, *count)))
    }
}

/// One runner: its [`RunnerView`] and the limit holding back its job
/// requests, if any.
#[derive(Debug, serde::Serialize)]
pub struct RunnerDocument<'a> {
    #[serde(flatten)]
    pub runner: &'a RunnerView,
    pub held_by: Option<HoldDocument>,
}

/// A [`paas_core::PollHold`]: its name and the sentence the page shows.
#[derive(Debug, serde::Serialize)]
pub struct HoldDocument {
    pub limit: &'static str,
    pub detail: String,
}

/// `/history.json`: the period and the samples, oldest first.
#[derive(Debug, serde::Serialize)]
pub struct HistoryDocument<'a> {
    pub period_secs: f64,
    pub capacity: usize,
    pub samples: &'a VecDeque<Sample>,
}

/// The document of `/status.json` for `snapshot`.
pub fn status_document<'a>(snapshot: &'a Snapshot, config: &'a StatusConfig) -> StatusDocument<'a> {
    let stats = &snapshot.stats;
    StatusDocument {
        version: &config.version,
        system_id: &config.system_id,
        started_at: unix_secs(config.started_at),
        shutting_down: snapshot.shutting_down,
        replica: config
            .replica
            .borrow()
            .as_ref()
            .map(|status| ReplicaDocument::of(status, SystemTime::now())),
        stats: StatsDocument {
            quota: stats.quota,
            weight_used: stats.weight,
            weight_reserved: stats.reserved_weight,
            jobs: stats.jobs,
            stages: StageCounts(stage_counts(snapshot)),
            polls_in_flight: stats.polls_in_flight,
            foreign_apps: stats.foreign_apps,
            foreign_weight: stats.foreign_weight,
            jobs_acquired_total: stats.acquired_total,
            jobs_launched_total: stats.launched_total,
            jobs_failed_total: stats.failed_total,
            jobs_done_total: stats.done_total,
        },
        runners: snapshot
            .runners
            .iter()
            .enumerate()
            .map(|(index, runner)| RunnerDocument {
                runner,
                held_by: stats
                    .held
                    .get(index)
                    .and_then(Option::as_ref)
                    .map(|hold| HoldDocument {
                        limit: hold.name(),
                        detail: hold.to_string(),
                    }),
            })
            .collect(),
        jobs: &snapshot.jobs,
    }
}

/// [`status_document`] as a JSON value (for documents that add fields,
/// such as the `SIGUSR1` dump).
pub fn status_value(snapshot: &Snapshot, config: &StatusConfig) -> Value {
    to_value(&status_document(snapshot, config))
}

/// The document of `/history.json`.
pub fn history_document<'a>(history: &'a History, config: &StatusConfig) -> HistoryDocument<'a> {
    HistoryDocument {
        period_secs: config.sample_period.as_secs_f64(),
        capacity: history.capacity,
        samples: &history.samples,
    }
}

/// [`history_document`] as a JSON value.
pub fn history_value(history: &History, config: &StatusConfig) -> Value {
    to_value(&history_document(history, config))
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_utc(time: SystemTime) -> String {
    format!("{}Z", format_utc(time).replacen(' ', "T", 1))
}

/// These documents have string keys and no fallible `Serialize`, so the
/// conversion cannot fail; `null` would stand for a bug, never a panic.
fn to_value(document: &impl Serialize) -> Value {
    serde_json::to_value(document).unwrap_or(Value::Null)
}
