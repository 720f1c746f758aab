//! The HTTP side of the status server: the accept loop under
//! [`ServerLimits`], one hyper connection per accepted socket, the request
//! filter, the routes and the sampling task.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::{
    json::history_document, render_metrics, render_openmetrics, render_page, status_document,
    unix_secs, History, Sample, ServerLimits, StatusConfig, ACCEPT_ERROR_PAUSE, MAX_HEADERS,
    MAX_HEADER_BYTES,
};
use crate::snapshot::Snapshot;

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
    let snapshot = state.snapshot();
    no_store(Json(status_document(&snapshot, &state.config)))
}

async fn history_json(State(state): State<AppState>) -> Response {
    let history = state.history.borrow().clone();
    no_store(Json(history_document(&history, &state.config)))
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
