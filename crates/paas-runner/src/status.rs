//! The operators' status server (`listen_address`): Prometheus metrics,
//! health checks, the live figures as JSON, and an HTML page with plots, all
//! read from the [`Snapshot`]s the driver publishes.
//!
//! Nothing here mutates the driver's state: handlers read the latest snapshot
//! from the watch channel, and one sampling task keeps a bounded history of
//! figures (one [`Sample`] per period) for the plots.
//!
//! The server may face strangers (a port on the network), so it can never
//! take from the service what the service needs: connections are capped
//! ([`ServerLimits::max_connections`], excess closed at once), each one has a
//! header-read timeout and a whole-connection time limit, requests are small
//! (`GET`/`HEAD`, bounded headers, no body), and accept errors (out of file
//! descriptors) pause the accept loop instead of spinning.
//!
//! `server.rs` holds the accept loop, the connection limits and the
//! routes; `json.rs` the documents of `/status.json` and `/history.json`
//! (the snapshot's `Serialize` types); `page.rs` and `plot.rs` the HTML
//! page and its SVG plots.

mod json;
mod page;
mod plot;
mod server;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::snapshot::{ReplicaStatus, Snapshot};

pub use json::{
    history_document, history_value, status_document, status_value, HistoryDocument,
    ReplicaDocument, StatusDocument,
};
pub use page::render_page;
pub use plot::plot_window_secs;
pub use server::serve;

/// Jobs per stage (defined with the metrics, which show them too).
pub use crate::metrics::stage_counts;

/// Port used when `listen_address` names no port (gitlab-runner's default).
pub const DEFAULT_PORT: u16 = 9252;
/// Period of the history samples.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// Number of history samples kept: 15 minutes at one per second.
pub const HISTORY_LEN: usize = 900;
/// Jobs listed on the HTML page at most (all are in `/status.json`).
pub const PAGE_JOB_ROWS: usize = 500;

/// Connections served at once by default (see [`connection_cap`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers (also the longest an
/// idle kept-alive connection stays open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection stays open, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head (request line and headers) read, in bytes
/// (hyper's smallest buffer).
pub const MAX_HEADER_BYTES: usize = 8192;
/// Largest number of request headers.
pub const MAX_HEADERS: usize = 32;
/// Pause of the accept loop after an accept error (such as `EMFILE`).
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// What the status server shows besides the snapshots.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub version: String,
    pub system_id: String,
    pub started_at: SystemTime,
    pub sample_period: Duration,
    pub history_len: usize,
    pub limits: ServerLimits,
    /// This process's role among replicas (`crate::ha::replica_status`),
    /// read at each rendering; `None` until one is published.
    pub replica: watch::Receiver<Option<ReplicaStatus>>,
}

/// Bounds of the status server's use of the process's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; more are accepted and closed at once
    /// (after a non-blocking `503` line), never queued.
    pub max_connections: usize,
    /// Time to send a request's headers, and to send the next request on a
    /// kept-alive connection.
    pub header_read_timeout: Duration,
    /// A connection is closed this long after it was accepted.
    pub connection_lifetime: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            connection_lifetime: CONNECTION_LIFETIME,
        }
    }
}

/// The status server's connection cap for a process allowed `open_files`
/// file descriptors (its soft `RLIMIT_NOFILE`): [`DEFAULT_MAX_CONNECTIONS`],
/// but never more than a quarter of the limit, so that the service's own
/// connections (coordinators, Clever Cloud, git pushes) and its state
/// database always find descriptors.
pub fn connection_cap(open_files: Option<u64>) -> usize {
    let quarter = open_files.map_or(usize::MAX, |limit| {
        usize::try_from(limit / 4).unwrap_or(usize::MAX)
    });
    DEFAULT_MAX_CONNECTIONS.min(quarter).max(1)
}

impl StatusConfig {
    /// This build's version, with the default history (15 minutes, 1 s).
    pub fn new(system_id: impl Into<String>, started_at: SystemTime) -> StatusConfig {
        StatusConfig {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            system_id: system_id.into(),
            started_at,
            sample_period: SAMPLE_PERIOD,
            history_len: HISTORY_LEN,
            limits: ServerLimits::default(),
            replica: watch::channel(None).1,
        }
    }
}

/// The `host:port` to bind for a configured `listen_address`: as in
/// gitlab-runner, the port defaults to [`DEFAULT_PORT`], and an empty host
/// (`:9252`) means every interface.
pub fn bind_address(listen_address: &str) -> String {
    let address = listen_address.trim();
    if let Ok(ip) = address.parse::<std::net::Ipv6Addr>() {
        return format!("[{ip}]:{DEFAULT_PORT}");
    }
    if address.starts_with('[') {
        return match address.rsplit_once("]:") {
            Some((_, port)) if !port.is_empty() => address.to_owned(),
            Some((host, _)) => format!("{host}]:{DEFAULT_PORT}"),
            None => format!("{address}:{DEFAULT_PORT}"),
        };
    }
    let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let port = if port.is_empty() {
        DEFAULT_PORT.to_string()
    } else {
        port.to_owned()
    };
    format!("{host}:{port}")
}

/// One point of the plots (an element of `/history.json`'s `samples`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Unix time, in seconds.
    #[serde(rename = "time")]
    pub time_secs: f64,
    pub quota: f64,
    pub weight_used: f64,
    pub weight_reserved: f64,
    pub jobs: usize,
    /// Queued, provisioning or launching.
    pub starting: usize,
    pub running: usize,
    pub failing: usize,
    #[serde(rename = "jobs_failed_total")]
    pub failed_total: u64,
}

impl Sample {
    pub fn of(snapshot: &Snapshot, time_secs: f64) -> Sample {
        let stats = &snapshot.stats;
        Sample {
            time_secs,
            quota: stats.quota,
            weight_used: stats.weight,
            weight_reserved: stats.reserved_weight,
            jobs: stats.jobs,
            starting: stats.queued + stats.provisioning + stats.launching,
            running: stats.running,
            failing: stats.failing,
            failed_total: stats.failed_total,
        }
    }
}

/// The last samples, oldest first, at most `capacity`.
#[derive(Debug, Clone)]
pub struct History {
    capacity: usize,
    samples: VecDeque<Sample>,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            capacity: capacity.max(1),
            samples: VecDeque::with_capacity(capacity.max(1)),
        }
    }

    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// The most samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot and of the
/// event counters ([`crate::metrics`]).
pub fn render_metrics(snapshot: &Snapshot, config: &StatusConfig) -> String {
    crate::metrics::render_text(snapshot, &metrics_info(snapshot, config))
}

/// The OpenMetrics exposition of the same figures.
pub fn render_openmetrics(snapshot: &Snapshot, config: &StatusConfig) -> String {
    crate::metrics::render_openmetrics(snapshot, &metrics_info(snapshot, config))
}

fn metrics_info(snapshot: &Snapshot, config: &StatusConfig) -> crate::metrics::MetricsInfo {
    crate::metrics::MetricsInfo {
        version: config.version.clone(),
        system_id: config.system_id.clone(),
        started_at_unix_secs: unix_secs(config.started_at),
        concurrent: snapshot.concurrent,
        runner_limits: snapshot.runners.iter().map(|runner| runner.limit).collect(),
    }
}

/// The runners whose job requests a limit holds back, with that limit.
pub fn held_back(snapshot: &Snapshot) -> Vec<(&str, &paas_core::PollHold)> {
    snapshot
        .runners
        .iter()
        .zip(&snapshot.stats.held)
        .filter_map(|(runner, hold)| Some((runner.name.as_str(), hold.as_ref()?)))
        .collect()
}

/// What each stage means, the same words on the page and in the README.
pub fn stage_meaning(stage: &str) -> &'static str {
    match stage {
        "queued" => "taken from the coordinator, waiting for its machine to be created",
        "provisioning" => "its machine is being created and the build context pushed",
        "launching" => "pushed; waiting for the job to start on its machine",
        "running" => "running on its machine",
        "failing" => "failed; the failure is being reported",
        "decommissioning" => "over; its machine is being deleted",
        _ => "",
    }
}

fn unix_secs(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}
