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

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::driver::Snapshot;

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

/// Serves the status endpoints on `listener` and samples the history, until
/// the future is dropped (with the process). Accept errors are logged and
/// waited out; they never end the server.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Snapshot>,
    config: StatusConfig,
) -> std::io::Result<()> {
    let (history_tx, history_rx) = watch::channel(History::new(config.history_len));
    let sampler = sample_history(snapshots.clone(), history_tx, config.sample_period);
    let limits = config.limits.clone();
    let state = AppState {
        snapshots,
        history: history_rx,
        config: Arc::new(config),
    };
    let router = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/status.json", get(status_json))
        .route("/history.json", get(history_json))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .layer(axum::middleware::from_fn(small_requests_only))
        .with_state(state);
    tokio::select! {
        never = accept_loop(listener, router, limits) => match never {},
        never = sampler => match never {},
    }
}

/// Accepts connections while fewer than `limits.max_connections` are open;
/// the others are closed at once.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
) -> std::convert::Infallible {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut refused = RateLimitedCount::default();
    let mut accept_errors = RateLimitedCount::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors (EMFILE, ENFILE) or memory: the
                // pending connection stays queued and accept would fail
                // again at once, so pause rather than spin.
                if let Some(count) = accept_errors.count() {
                    warn!(%error, errors = count, "status server: cannot accept connections; pausing");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let service = TowerToHyperService::new(router.clone());
                tokio::spawn(serve_connection(stream, service, limits.clone(), permit));
            }
            Err(_) => {
                if let Some(count) = refused.count() {
                    warn!(
                        refused = count,
                        max_connections = limits.max_connections,
                        "status server: too many connections; closing new ones at once"
                    );
                }
                // Best effort, never waiting: the socket buffer of a new
                // connection has room for one short line.
                let _ = stream.try_write(REFUSAL);
            }
        }
    }
}

/// What a connection over the cap reads before it is closed.
const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// One connection, under the header-read timeout and the lifetime limit;
/// `permit` is its place under the cap.
async fn serve_connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    limits: ServerLimits,
    permit: OwnedSemaphorePermit,
) {
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.connection_lifetime, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(%error, "status server: connection ended"),
        Err(_elapsed) => debug!("status server: connection closed at its time limit"),
    }
    drop(permit);
}

/// Refuses what the pages never need: methods other than `GET` and `HEAD`,
/// and request bodies.
async fn small_requests_only(request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return close(response);
    }
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if has_body {
        return close(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    next.run(request).await
}

/// The response, and the connection closed after it (its request's body,
/// if any, is never read).
fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Counts events and says when to log them: the first one, then at most
/// one line per [`LOG_PERIOD`] with the count since the last line.
#[derive(Default)]
struct RateLimitedCount {
    since_logged: u64,
    logged_at: Option<tokio::time::Instant>,
}

const LOG_PERIOD: Duration = Duration::from_secs(60);

impl RateLimitedCount {
    fn count(&mut self) -> Option<u64> {
        self.since_logged += 1;
        let now = tokio::time::Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < LOG_PERIOD)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

/// One point of the plots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix time, in seconds.
    pub time_secs: f64,
    pub quota: f64,
    pub weight_used: f64,
    pub weight_reserved: f64,
    pub jobs: usize,
    /// Queued, provisioning or launching.
    pub starting: usize,
    pub running: usize,
    pub failing: usize,
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

/// The snapshot as operators read it (no token, no job payload).
pub fn status_value(snapshot: &Snapshot, config: &StatusConfig) -> Value {
    let stats = &snapshot.stats;
    let stages: serde_json::Map<String, Value> = stage_counts(snapshot)
        .iter()
        .map(|(stage, count)| ((*stage).to_owned(), json!(count)))
        .collect();
    json!({
        "version": config.version,
        "system_id": config.system_id,
        "started_at": unix_secs(config.started_at),
        "shutting_down": snapshot.shutting_down,
        "stats": {
            "quota": stats.quota,
            "weight_used": stats.weight,
            "weight_reserved": stats.reserved_weight,
            "jobs": stats.jobs,
            "stages": stages,
            "polls_in_flight": stats.polls_in_flight,
            "foreign_apps": stats.foreign_apps,
            "foreign_weight": stats.foreign_weight,
            "jobs_acquired_total": stats.acquired_total,
            "jobs_launched_total": stats.launched_total,
            "jobs_failed_total": stats.failed_total,
            "jobs_done_total": stats.done_total,
        },
        "runners": snapshot.runners.iter().enumerate().map(|(idx, runner)| json!({
            "name": runner.name,
            "key": runner.key,
            "jobs": runner.jobs,
            "weight": runner.weight,
            "max_job_weight": runner.max_job_weight,
            "quota_max_fraction": runner.quota_max_fraction,
            // The limit holding back its job requests, if any.
            "held_by": stats.held.get(idx).and_then(Option::as_ref).map(|hold| json!({
                "limit": hold.name(),
                "detail": hold.to_string(),
            })),
        })).collect::<Vec<_>>(),
        "jobs": snapshot.jobs.iter().map(|job| json!({
            "runner": job.runner,
            "job_id": job.job_id,
            "stage": job.stage,
            "flavor": job.flavor,
            "weight": job.weight,
            "app_id": job.app_id,
        })).collect::<Vec<_>>(),
    })
}

/// The history as JSON: the period and the samples, oldest first.
pub fn history_value(history: &History, config: &StatusConfig) -> Value {
    json!({
        "period_secs": config.sample_period.as_secs_f64(),
        "capacity": history.capacity,
        "samples": history.samples().map(|sample| json!({
            "time": sample.time_secs,
            "quota": sample.quota,
            "weight_used": sample.weight_used,
            "weight_reserved": sample.weight_reserved,
            "jobs": sample.jobs,
            "starting": sample.starting,
            "running": sample.running,
            "failing": sample.failing,
            "jobs_failed_total": sample.failed_total,
        })).collect::<Vec<_>>(),
    })
}

/// The HTML status page: self-contained, refreshed every 2 s by a few lines
/// of script (a meta refresh without script).
pub fn render_page(snapshot: &Snapshot, history: &History, config: &StatusConfig) -> String {
    let stats = &snapshot.stats;
    let mut html = String::with_capacity(16 * 1024);
    html.push_str(PAGE_HEAD);
    let _ = write!(
        html,
        "<header><h1>paas-runner</h1><span>version {} &middot; system {} &middot; started {} UTC</span>\
         <span id=\"conn\"></span></header>\n<main id=\"main\">\n",
        escape_html(&config.version),
        escape_html(&config.system_id),
        format_utc(config.started_at),
    );
    if snapshot.shutting_down {
        html.push_str(
            "<p class=\"banner\">Shutting down: no job is acquired any more; \
             in-flight operations complete.</p>\n",
        );
    }

    // Quota bar.
    let free = (stats.quota - stats.weight - stats.reserved_weight).max(0.0);
    let _ = writeln!(
        html,
        "<section><h2>Quota</h2><p class=\"figures\">\
         <span class=\"used\">used {:.1}</span> &middot; <span class=\"reserved\">reserved {:.1}</span> \
         &middot; <span class=\"free\">free {:.1}</span> &middot; quota {:.1}</p>",
        stats.weight, stats.reserved_weight, free, stats.quota
    );
    let (used_pct, reserved_pct) = if stats.quota > 0.0 {
        let used = (stats.weight / stats.quota * 100.0).clamp(0.0, 100.0);
        let reserved = (stats.reserved_weight / stats.quota * 100.0).clamp(0.0, 100.0 - used);
        (used, reserved)
    } else {
        (0.0, 0.0)
    };
    let _ = writeln!(
        html,
        "<div class=\"bar\" title=\"used {used_pct:.0}%, reserved {reserved_pct:.0}%\">\
         <div class=\"used\" style=\"width:{used_pct:.2}%\"></div>\
         <div class=\"reserved\" style=\"width:{reserved_pct:.2}%\"></div></div>"
    );
    let held = held_back(snapshot);
    if !held.is_empty() {
        html.push_str("<p class=\"figures\" id=\"held\">Job requests held back: ");
        let parts: Vec<String> = held
            .iter()
            .map(|(runner, hold)| {
                format!(
                    "<b>{}</b> by {}",
                    escape_html(runner),
                    escape_html(&hold.to_string())
                )
            })
            .collect();
        html.push_str(&parts.join(" &middot; "));
        html.push_str("</p>\n");
    }
    if stats.foreign_apps > 0 {
        let _ = writeln!(
            html,
            "<p class=\"figures bad\" id=\"foreign\">{} application(s) of another installation \
             (or unmarked) under this runner's key: weight {:.1} counted in the quota, never \
             deleted by this service (<code>paas-runner state</code> lists them)</p>",
            stats.foreign_apps, stats.foreign_weight
        );
    }
    html.push_str("</section>\n");

    // Jobs by stage and totals.
    html.push_str("<section><h2>Jobs</h2><div class=\"tiles\">\n");
    for (stage, count) in stage_counts(snapshot) {
        let class = if stage == "failing" && count > 0 {
            "tile alert"
        } else {
            "tile"
        };
        let _ = writeln!(
            html,
            "<div class=\"{class}\" title=\"{}\"><b>{count}</b>{stage}</div>",
            stage_meaning(stage)
        );
    }
    let (failed_recently, window_minutes) =
        match (history.samples().next(), history.samples().last()) {
            (Some(first), Some(last)) => (
                last.failed_total.saturating_sub(first.failed_total),
                ((last.time_secs - first.time_secs) / 60.0).ceil().max(1.0),
            ),
            _ => (0, 1.0),
        };
    let _ = writeln!(
        html,
        "</div><p class=\"figures\">{} tracked &middot; {} polls in flight &middot; \
         totals: {} acquired, {} launched, {} done, <span class=\"{}\">{} failed</span> \
         ({failed_recently} in the last {window_minutes} min)</p></section>",
        stats.jobs,
        stats.polls_in_flight,
        stats.acquired_total,
        stats.launched_total,
        stats.done_total,
        if stats.failed_total > 0 { "bad" } else { "" },
        stats.failed_total,
    );

    // Plots, over a window that fits the data (a minute at first, up to the
    // whole history).
    let samples: Vec<&Sample> = history.samples().collect();
    let times: Vec<f64> = samples.iter().map(|sample| sample.time_secs).collect();
    let window_secs = plot_window_secs(
        times
            .last()
            .zip(times.first())
            .map_or(0.0, |(last, first)| last - first),
        config.sample_period.as_secs_f64() * history.capacity as f64,
    );
    let quota = samples.last().map_or(stats.quota, |sample| sample.quota);
    html.push_str("<section class=\"plots\"><div><h2>Weight</h2>\n");
    html.push_str(&render_plot(
        &times,
        window_secs,
        &[
            Series {
                label: "used + reserved",
                class: "reserved",
                values: samples
                    .iter()
                    .map(|sample| sample.weight_used + sample.weight_reserved)
                    .collect(),
                area: true,
            },
            Series {
                label: "used",
                class: "used",
                values: samples.iter().map(|sample| sample.weight_used).collect(),
                area: true,
            },
        ],
        Some(quota),
    ));
    html.push_str("</div><div><h2>Jobs</h2>\n");
    html.push_str(&render_plot(
        &times,
        window_secs,
        &[
            Series {
                label: "tracked",
                class: "total",
                values: samples.iter().map(|sample| sample.jobs as f64).collect(),
                area: false,
            },
            Series {
                label: "running",
                class: "used",
                values: samples.iter().map(|sample| sample.running as f64).collect(),
                area: false,
            },
            Series {
                label: "starting",
                class: "reserved",
                values: samples
                    .iter()
                    .map(|sample| sample.starting as f64)
                    .collect(),
                area: false,
            },
            Series {
                label: "failing",
                class: "bad",
                values: samples.iter().map(|sample| sample.failing as f64).collect(),
                area: false,
            },
        ],
        None,
    ));
    html.push_str("</div></section>\n");

    // Runners.
    html.push_str(
        "<section><h2>Runners</h2><table><tr><th>runner</th><th>key</th><th>jobs</th>\
         <th>weight</th><th>share of quota</th><th>max job weight</th><th>max fraction</th></tr>\n",
    );
    for runner in &snapshot.runners {
        let share = if stats.quota > 0.0 {
            (runner.weight / stats.quota * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{:.1}</td>\
             <td><div class=\"bar small\"><div class=\"used\" style=\"width:{share:.2}%\"></div></div></td>\
             <td>{:.1}</td><td>{}</td></tr>",
            escape_html(&runner.name),
            escape_html(&runner.key),
            runner.jobs,
            runner.weight,
            runner.max_job_weight,
            runner.quota_max_fraction,
        );
    }
    html.push_str("</table></section>\n");

    // Jobs.
    let _ = writeln!(
        html,
        "<section><h2>Tracked jobs ({})</h2><table><tr><th>runner</th><th>job</th><th>stage</th>\
         <th>flavor</th><th>weight</th><th>application</th></tr>",
        snapshot.jobs.len()
    );
    for job in snapshot.jobs.iter().take(PAGE_JOB_ROWS) {
        let _ = writeln!(
            html,
            "<tr class=\"{stage}\"><td>{}</td><td>{}</td><td>{stage}</td><td>{}</td><td>{:.1}</td><td><code>{}</code></td></tr>",
            escape_html(&job.runner),
            job.job_id,
            escape_html(&job.flavor),
            job.weight,
            escape_html(job.app_id.as_deref().unwrap_or("-")),
            stage = escape_html(job.stage),
        );
    }
    html.push_str("</table>\n");
    if snapshot.jobs.len() > PAGE_JOB_ROWS {
        let _ = writeln!(
            html,
            "<p>&hellip; and {} more in <a href=\"status.json\">status.json</a>.</p>",
            snapshot.jobs.len() - PAGE_JOB_ROWS
        );
    }
    html.push_str(
        "</section>\n<footer><a href=\"metrics\">metrics</a> &middot; <a href=\"status.json\">status.json</a> \
         &middot; <a href=\"history.json\">history.json</a></footer>\n</main>\n",
    );
    html.push_str(PAGE_TAIL);
    html
}

// ----- private -----

#[derive(Clone)]
struct AppState {
    snapshots: watch::Receiver<Snapshot>,
    history: watch::Receiver<History>,
    config: Arc<StatusConfig>,
}

impl AppState {
    /// A copy, so that rendering never holds the channel's lock.
    fn snapshot(&self) -> Snapshot {
        self.snapshots.borrow().clone()
    }
}

async fn sample_history(
    snapshots: watch::Receiver<Snapshot>,
    history: watch::Sender<History>,
    period: Duration,
) -> std::convert::Infallible {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let sample = Sample::of(&snapshots.borrow(), unix_secs(SystemTime::now()));
        history.send_modify(|history| history.push(sample));
    }
}

/// OpenMetrics to clients that ask for it (Prometheus does), the 0.0.4
/// text format to the others.
async fn metrics(State(state): State<AppState>, headers: header::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    let snapshot = state.snapshot();
    let (content_type, body) = if openmetrics {
        (
            crate::metrics::OPENMETRICS_CONTENT_TYPE,
            render_openmetrics(&snapshot, &state.config),
        )
    } else {
        (
            crate::metrics::TEXT_CONTENT_TYPE,
            render_metrics(&snapshot, &state.config),
        )
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn status_json(State(state): State<AppState>) -> Response {
    no_store(Json(status_value(&state.snapshot(), &state.config)))
}

async fn history_json(State(state): State<AppState>) -> Response {
    let history = state.history.borrow().clone();
    no_store(Json(history_value(&history, &state.config)))
}

async fn page(State(state): State<AppState>) -> Response {
    let history = state.history.borrow().clone();
    no_store(Html(render_page(
        &state.snapshot(),
        &history,
        &state.config,
    )))
}

async fn live() -> &'static str {
    "ok"
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.snapshots.borrow().shutting_down {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        (StatusCode::OK, "ok")
    }
}

fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The stages of [`paas_core::Stats`], in lifecycle order.
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

/// The time window of the plots: the span of the data rounded up to 10 or
/// 30 seconds, or 1, 2, 5, 10 or 15 minutes, at most `max_secs`: from the
/// first seconds on, the data fills the plot.
pub fn plot_window_secs(span_secs: f64, max_secs: f64) -> f64 {
    [10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0]
        .into_iter()
        .find(|window| *window >= span_secs)
        .unwrap_or(max_secs)
        .min(max_secs.max(10.0))
}

pub(crate) fn stage_counts(snapshot: &Snapshot) -> [(&'static str, usize); 6] {
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

fn unix_secs(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (civil-from-days, Howard Hinnant's algorithm).
fn format_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct Series<'a> {
    label: &'a str,
    /// CSS class giving its colour.
    class: &'a str,
    values: Vec<f64>,
    /// Filled down to zero (drawn in order: later series on top).
    area: bool,
}

const PLOT_WIDTH: f64 = 600.0;
const PLOT_HEIGHT: f64 = 160.0;
const PLOT_LEFT: f64 = 44.0;
const PLOT_BOTTOM: f64 = 18.0;

/// An inline SVG plot of `series` over the last `window_secs` (times in Unix
/// seconds, the last one drawn at the right edge), with an optional dashed
/// limit line.
fn render_plot(
    times: &[f64],
    window_secs: f64,
    series: &[Series<'_>],
    limit: Option<f64>,
) -> String {
    let mut svg = String::new();
    let width = PLOT_WIDTH - PLOT_LEFT;
    let height = PLOT_HEIGHT - PLOT_BOTTOM;
    let _ = write!(
        svg,
        "<svg class=\"plot\" viewBox=\"0 0 {PLOT_WIDTH} {PLOT_HEIGHT}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let Some(&last_time) = times.last() else {
        svg.push_str(
            "<text x=\"50%\" y=\"50%\" text-anchor=\"middle\">no samples yet</text></svg>",
        );
        return svg;
    };
    let data_max = series
        .iter()
        .flat_map(|series| series.values.iter().copied())
        .chain(limit)
        .fold(0.0_f64, f64::max);
    let y_max = nice_ceiling(data_max * 1.05);
    let x_of = |time: f64| PLOT_LEFT + width * (1.0 - (last_time - time) / window_secs).max(0.0);
    let y_of = |value: f64| height * (1.0 - value / y_max);
    // Axes, grid and labels.
    let _ = write!(
        svg,
        "<line class=\"grid\" x1=\"{PLOT_LEFT}\" y1=\"{mid:.1}\" x2=\"{PLOT_WIDTH}\" y2=\"{mid:.1}\"/>\
         <line class=\"axis\" x1=\"{PLOT_LEFT}\" y1=\"{height}\" x2=\"{PLOT_WIDTH}\" y2=\"{height}\"/>\
         <text x=\"{lx}\" y=\"10\" text-anchor=\"end\">{}</text>\
         <text x=\"{lx}\" y=\"{mid_text:.1}\" text-anchor=\"end\">{}</text>\
         <text x=\"{lx}\" y=\"{height}\" text-anchor=\"end\">0</text>\
         <text x=\"{PLOT_LEFT}\" y=\"{PLOT_HEIGHT}\">-{}</text>\
         <text x=\"{PLOT_WIDTH}\" y=\"{PLOT_HEIGHT}\" text-anchor=\"end\">now</text>",
        format_axis(y_max),
        format_axis(y_max / 2.0),
        if window_secs < 60.0 {
            format!("{} s", window_secs.round())
        } else {
            format!("{} min", (window_secs / 60.0).round())
        },
        mid = height / 2.0,
        mid_text = height / 2.0 + 4.0,
        lx = PLOT_LEFT - 4.0,
    );
    for series in series {
        let points: Vec<String> = times
            .iter()
            .zip(&series.values)
            .map(|(&time, &value)| format!("{:.1},{:.1}", x_of(time), y_of(value)))
            .collect();
        if series.area {
            let _ = write!(
                svg,
                "<polygon class=\"area {}\" points=\"{:.1},{height} {} {:.1},{height}\"><title>{}</title></polygon>",
                series.class,
                x_of(times[0]),
                points.join(" "),
                x_of(last_time),
                series.label,
            );
        } else {
            let _ = write!(
                svg,
                "<polyline class=\"line {}\" points=\"{}\"><title>{}</title></polyline>",
                series.class,
                points.join(" "),
                series.label,
            );
        }
    }
    if let Some(limit) = limit {
        let y = y_of(limit);
        let _ = write!(
            svg,
            "<line class=\"limit\" x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_WIDTH}\" y2=\"{y:.1}\">\
             <title>quota {limit:.1}</title></line>"
        );
    }
    svg.push_str("</svg>\n<p class=\"legend\">");
    for series in series {
        let _ = write!(
            svg,
            "<span class=\"key {}\"></span>{} ",
            series.class, series.label
        );
    }
    if limit.is_some() {
        svg.push_str("<span class=\"key limit\"></span>quota");
    }
    svg.push_str("</p>\n");
    svg
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `value` (at
/// least 1).
fn nice_ceiling(value: f64) -> f64 {
    if value.is_nan() || value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_axis(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

const PAGE_HEAD: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>paas-runner status</title>
<noscript><meta http-equiv="refresh" content="2"></noscript>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1280px;padding:0 16px;color:#222;background:#fafafa}
header{display:flex;gap:16px;align-items:baseline;flex-wrap:wrap;border-bottom:1px solid #ddd}
header h1{font-size:20px;margin:8px 0}header span{color:#666}#conn{color:#b00020;font-weight:bold}
h2{font-size:15px;margin:16px 0 6px}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:8px;font-weight:bold}
.figures{margin:4px 0}.used{color:#1b7f3b}.reserved{color:#a86b00}.free{color:#666}.bad{color:#b00020;font-weight:bold}
.bar{display:flex;height:22px;background:#e4e4e4;border-radius:3px;overflow:hidden;max-width:900px}
.bar.small{height:10px;width:120px}.bar .used{background:#2e9e55}.bar .reserved{background:#f0b030}
.tiles{display:flex;gap:8px;flex-wrap:wrap}
.tile{background:#fff;border:1px solid #ddd;border-radius:4px;padding:6px 12px;min-width:90px;color:#555}
.tile b{display:block;font-size:22px;color:#222}.tile.alert{border-color:#b00020}.tile.alert b{color:#b00020}
.plots{display:flex;gap:24px;flex-wrap:wrap}.plots>div{flex:1;min-width:320px}
svg.plot{width:100%;height:auto;background:#fff;border:1px solid #ddd}
svg text{font-size:10px;fill:#666}.axis{stroke:#999}.grid{stroke:#eee}
.limit{stroke:#b00020;stroke-dasharray:5 4;stroke-width:1.5}
.area{stroke:none}.area.used{fill:#2e9e55;opacity:.8}.area.reserved{fill:#f0b030;opacity:.8}
.line{fill:none;stroke-width:1.5}.line.total{stroke:#333}.line.used{stroke:#2e9e55}.line.reserved{stroke:#e09a10}.line.bad{stroke:#b00020}
.legend{margin:2px 0;color:#555}.key{display:inline-block;width:12px;height:4px;margin:0 4px 2px 8px;vertical-align:middle}
.key.total{background:#333}.key.used{background:#2e9e55}.key.reserved{background:#f0b030}.key.bad{background:#b00020}
.key.limit{background:repeating-linear-gradient(90deg,#b00020 0 5px,transparent 5px 9px)}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f0f0f0}tr.failing td{color:#b00020}footer{margin:24px 0;color:#666}
</style></head><body>
"#;

const PAGE_TAIL: &str = r#"<script>
setInterval(function () {
  fetch(location.href, {cache: "no-store"})
    .then(function (response) { if (!response.ok) throw response.status; return response.text(); })
    .then(function (text) {
      var next = new DOMParser().parseFromString(text, "text/html").getElementById("main");
      document.getElementById("main").replaceWith(next);
      document.getElementById("conn").textContent = "";
    })
    .catch(function () { document.getElementById("conn").textContent = "not updated: the service does not answer"; });
}, 2000);
</script>
</body></html>
"#;
