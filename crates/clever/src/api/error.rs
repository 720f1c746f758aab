//! [`CleverError`]: why a call failed, never with the credentials; and how
//! an error answer of the API becomes one.

use paas_core::{sanitize, Secret};
use serde_json::Value;

use super::transport::MAX_QUOTED_CHARS;

/// Error id of an unknown application (seen by the reference runner).
pub(super) const ERROR_ID_NOT_FOUND: i64 = 4004;

/// Why an API call failed. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum CleverError {
    /// The API answered with an error status (other than 401 and 403).
    #[error("{action}: clever cloud api error (HTTP {status}{}): {message}", id.map(|id| format!(", id {id}")).unwrap_or_default())]
    Api {
        action: &'static str,
        status: u16,
        id: Option<i64>,
        message: String,
    },
    /// The API refused the token (HTTP 401 or 403).
    #[error("{action}: clever cloud refused the credentials (HTTP {status})")]
    Unauthorized { action: &'static str, status: u16 },
    /// The API could not be reached or did not answer in time.
    #[error("{action}: clever cloud api unreachable{}: {detail}", if *timed_out { " (timed out)" } else { "" })]
    Transport {
        action: &'static str,
        detail: String,
        timed_out: bool,
    },
    /// The API answered success with a body this client cannot read.
    #[error("{action}: unexpected answer from clever cloud: {detail}")]
    Decode {
        action: &'static str,
        detail: String,
    },
    /// The API URL or an id would not make a valid request URL.
    #[error("invalid clever cloud api url: {0}")]
    InvalidUrl(String),
    /// The token cannot be sent in an HTTP header (control characters).
    #[error("the clever cloud token contains characters not allowed in an HTTP header")]
    InvalidToken,
}

impl CleverError {
    /// Whether the same call may succeed later: server errors (5xx), 408,
    /// 429 and transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            CleverError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            CleverError::Transport { .. } => true,
            CleverError::Unauthorized { .. }
            | CleverError::Decode { .. }
            | CleverError::InvalidUrl(_)
            | CleverError::InvalidToken => false,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            CleverError::Api { status, .. } | CleverError::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The Clever Cloud error id (`{"id": 9017, …}`), when the answer had one.
    pub fn api_id(&self) -> Option<i64> {
        match self {
            CleverError::Api { id, .. } => *id,
            _ => None,
        }
    }

    /// Whether the API reported the object unknown: any HTTP 404, whatever
    /// its error id (usually 4004), as `@clevercloud/client` 12's commands
    /// take it (`GetApplicationCommand` and the listings: 404 is "none").
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A sentence for a job log, e.g. `Clever Cloud error 9017: The
    /// specified instance does not exist`.
    pub fn user_message(&self) -> String {
        match self {
            CleverError::Api {
                id: Some(id),
                message,
                ..
            } => format!("Clever Cloud error {id}: {message}"),
            CleverError::Api {
                status,
                id: None,
                message,
                ..
            } => {
                format!("Clever Cloud error (HTTP {status}): {message}")
            }
            CleverError::Unauthorized { status, .. } => {
                format!("Clever Cloud refused the runner's credentials (HTTP {status})")
            }
            CleverError::Transport {
                timed_out: true, ..
            } => "Clever Cloud did not answer in time".to_owned(),
            CleverError::Transport {
                timed_out: false, ..
            } => "Clever Cloud could not be reached".to_owned(),
            CleverError::Decode { .. } => {
                "Clever Cloud gave an answer the runner does not understand".to_owned()
            }
            CleverError::InvalidUrl(_) | CleverError::InvalidToken => {
                "the runner's Clever Cloud settings are invalid".to_owned()
            }
        }
    }
}

/// An error answer: `{"id": 4004, "message": "…", "type": "error"}`, or
/// any other body quoted as the message; either way sanitised (cut,
/// control characters escaped, `cc_token` scrubbed: see
/// [`paas_core::sanitize`]), since it reaches operator and job logs.
pub(super) fn api_error(
    action: &'static str,
    status: u16,
    body: &[u8],
    secrets: &[&Secret],
) -> CleverError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let id = parsed
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_i64);
    let message = match parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
    {
        Some(message) => sanitize(message.trim(), MAX_QUOTED_CHARS, secrets),
        None => sanitize(
            String::from_utf8_lossy(body).trim(),
            MAX_QUOTED_CHARS,
            secrets,
        ),
    };
    let message = if message.is_empty() {
        "(empty answer)".to_owned()
    } else {
        message
    };
    CleverError::Api {
        action,
        status,
        id,
        message,
    }
}

pub(super) fn missing_id(action: &'static str) -> CleverError {
    CleverError::Decode {
        action,
        detail: "application without a plain Clever Cloud id".to_owned(),
    }
}
