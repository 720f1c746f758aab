//! A coordinator's rate limit slows every call of its client: after a 429,
//! no request goes out before the `Retry-After` the coordinator gave (or a
//! default pause), whichever call asks next. GitLab's limits are per
//! runner, per job token or per IP (`docs/protocol-notes.md` §1.1): a
//! client that kept sending its other calls would only dig deeper.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderMap;

/// Pause after a 429 without a usable `Retry-After` (seconds).
const DEFAULT_PAUSE: Duration = Duration::from_secs(5);
/// Longest pause a `Retry-After` may impose.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// When calls may go out again; shared by the clones of a client.
#[derive(Debug, Clone, Default)]
pub(super) struct RateLimit {
    until: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl RateLimit {
    /// Waits out a pause, if one is under way.
    pub(super) async fn wait(&self) {
        let until = self.until.lock().ok().and_then(|until| *until);
        if let Some(until) = until {
            if until > tokio::time::Instant::now() {
                tracing::debug!(
                    wait_ms = until
                        .saturating_duration_since(tokio::time::Instant::now())
                        .as_millis() as u64,
                    "coordinator rate limit: waiting before the next call"
                );
                tokio::time::sleep_until(until).await;
            }
        }
    }

    /// Starts (or lengthens) a pause if the answer was a 429.
    pub(super) fn note(&self, status: u16, headers: &HeaderMap) {
        if status != 429 {
            return;
        }
        let wait = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_PAUSE)
            .min(MAX_PAUSE);
        tracing::warn!(
            wait_secs = wait.as_secs(),
            "coordinator rate limit (429): slowing down every call to it"
        );
        if let Ok(mut until) = self.until.lock() {
            let candidate = tokio::time::Instant::now() + wait;
            *until = Some(until.map_or(candidate, |current| current.max(candidate)));
        }
    }
}
