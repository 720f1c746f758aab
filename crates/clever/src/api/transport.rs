//! One API request: URL building, credentials, the shared pause after a
//! 429, size limits on answers, and error answers made into [`CleverError`]s.

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::Method;
use serde::Serialize;

use paas_core::sanitize;

use super::error::api_error;
use super::{CleverClient, CleverError};

/// Wait after a 429 without `Retry-After`.
const RATE_LIMIT_DEFAULT_PAUSE: Duration = Duration::from_secs(5);
/// Longest wait a `Retry-After` may impose.
const RATE_LIMIT_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Bound on an answer: the application list of a busy organisation is the
/// largest, at a few kilobytes per application.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Bound on an error answer: only quoted, so a few KiB are plenty.
pub const MAX_ERROR_BODY_BYTES: usize = 4 << 10;
/// Messages of error answers (the API's `message`, or the body) are quoted
/// up to this length.
pub(super) const MAX_QUOTED_CHARS: usize = paas_core::sanitize::MAX_MESSAGE_CHARS;
/// Largest flavor believed: 16 TiB of RAM. Beyond it (or at 0) a catalogue
/// entry is skipped rather than made into a weight of absurd size.
pub(super) const MAX_FLAVOR_RAM_MIB: u64 = 16 << 20;
/// Largest number of vCPUs believed in a flavor.
pub(super) const MAX_FLAVOR_CPUS: u32 = 4096;

#[derive(Clone, Copy)]
pub(super) enum Auth {
    /// No `Authorization` header: the catalogue, when the credentials were
    /// refused for it (the reference runner always calls it so).
    Anonymous,
    Credentials,
}

/// Ids go into URL paths: accept the shapes Clever Cloud uses (`orga_…`,
/// `user_…`, `app_…`) and nothing that could change the path.
pub(super) fn check_id(what: &str, id: &str) -> Result<(), CleverError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(CleverError::InvalidUrl(format!(
            "{what} id {id:?} is not a Clever Cloud id"
        )));
    }
    Ok(())
}

impl CleverClient {
    /// A catalogue read (`/v2/products/…`): with the credentials, as the
    /// official clients do; if they are refused (401, 403), once more
    /// without, as the reference runner calls it.
    pub(super) async fn catalogue_json<T: serde::de::DeserializeOwned>(
        &self,
        action: &'static str,
        url: url::Url,
    ) -> Result<T, CleverError> {
        match self
            .call_json(
                action,
                Method::GET,
                url.clone(),
                Auth::Credentials,
                None::<&()>,
            )
            .await
        {
            Err(CleverError::Unauthorized { status, .. }) => {
                tracing::debug!(
                    action,
                    status,
                    "catalogue refused with credentials, reading it anonymously"
                );
                self.call_json(action, Method::GET, url, Auth::Anonymous, None::<&()>)
                    .await
            }
            other => other,
        }
    }

    /// `api_url` followed by `segments`, each percent-encoded as one segment.
    pub(super) fn endpoint(&self, segments: &[&str]) -> Result<url::Url, CleverError> {
        let mut url = self.api_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| {
                CleverError::InvalidUrl(format!("{:?} cannot have a path", self.api_url.as_str()))
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    pub(super) fn applications_endpoint(&self, rest: &[&str]) -> Result<url::Url, CleverError> {
        if let Some(app_id) = rest.first() {
            check_id("application", app_id)?;
        }
        let mut segments = vec!["organisations", self.orga_id.as_str(), "applications"];
        segments.extend_from_slice(rest);
        self.endpoint(&segments)
    }

    pub(super) async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        action: &'static str,
        method: Method,
        url: url::Url,
        auth: Auth,
        body: Option<&impl Serialize>,
    ) -> Result<T, CleverError> {
        let bytes = self.call(action, method, url, auth, body).await?;
        // serde_json's messages may quote the answer.
        serde_json::from_slice(&bytes).map_err(|err| CleverError::Decode {
            action,
            detail: sanitize(
                &err.to_string(),
                MAX_QUOTED_CHARS,
                &self.credentials.secrets(),
            ),
        })
    }

    /// One request; the body of an answer below 400, or the error.
    pub(super) async fn call(
        &self,
        action: &'static str,
        method: Method,
        url: url::Url,
        auth: Auth,
        body: Option<&impl Serialize>,
    ) -> Result<Vec<u8>, CleverError> {
        let path = url.path().to_owned();
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json");
        if let Auth::Credentials = auth {
            request = request.header(AUTHORIZATION, self.authorization.clone());
        }
        if let Some(body) = body {
            // Also sets `Content-Type: application/json`.
            request = request.json(body);
        }
        let pause = self.paused_until.lock().ok().and_then(|until| *until);
        if let Some(until) = pause {
            if until > tokio::time::Instant::now() {
                tokio::time::sleep_until(until).await;
            }
        }
        let started = Instant::now();
        let transport = |err: reqwest::Error| {
            let (detail, timed_out) = crate::describe_http_error(err);
            CleverError::Transport {
                action,
                detail,
                timed_out,
            }
        };
        let sent = request.send().await;
        if let Some(observer) = &self.observer {
            observer(
                action,
                sent.as_ref()
                    .ok()
                    .map(|response| response.status().as_u16()),
            );
        }
        let mut response = sent.map_err(transport)?;
        let status = response.status().as_u16();
        if status == 429 {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(RATE_LIMIT_DEFAULT_PAUSE)
                .min(RATE_LIMIT_MAX_PAUSE);
            tracing::warn!(
                action,
                wait_secs = wait.as_secs(),
                "Clever Cloud API rate limit: slowing down every call"
            );
            if let Ok(mut until) = self.paused_until.lock() {
                let candidate = tokio::time::Instant::now() + wait;
                *until = Some(until.map_or(candidate, |current| current.max(candidate)));
            }
        }
        let mut bytes = Vec::new();
        // An error answer is only quoted: its first few KiB are read, the
        // rest never is.
        let is_error = status >= 400;
        let limit = if is_error {
            MAX_ERROR_BODY_BYTES
        } else {
            MAX_RESPONSE_BYTES
        };
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > limit {
                if is_error {
                    let room = limit - bytes.len();
                    bytes.extend_from_slice(&chunk[..room]);
                    break;
                }
                return Err(CleverError::Decode {
                    action,
                    detail: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        tracing::debug!(
            action,
            %method,
            path,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "clever cloud api call"
        );
        match status {
            0..=399 => Ok(bytes),
            401 | 403 => Err(CleverError::Unauthorized { action, status }),
            _ => Err(api_error(
                action,
                status,
                &bytes,
                &self.credentials.secrets(),
            )),
        }
    }
}
