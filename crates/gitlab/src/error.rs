//! Errors of coordinator calls, each classified as transient (retry later) or not.

/// Why a coordinator call did not give a usable answer.
///
/// No variant ever holds a token: URLs carry none (tokens go in headers and
/// bodies) and quoted server messages are scrubbed of the tokens sent.
#[derive(Debug, thiserror::Error)]
pub enum GitlabError {
    /// The coordinator could not be reached in time, or answered with a
    /// status that gitlab-runner retries (408, 429, 500, 502, 503, 504,
    /// and anything from 512 on). Transient: try again later.
    #[error("coordinator unavailable at {url}{}: {detail}", status_suffix(*.status))]
    Unavailable {
        url: String,
        /// `None` for timeouts and connection errors.
        status: Option<u16>,
        detail: String,
    },
    /// The coordinator refused our credentials (403 on `/jobs/request`:
    /// unknown, expired or revoked runner token). Not transient: the token
    /// has to change.
    #[error("coordinator at {url} refused the token: {message}")]
    Forbidden { url: String, message: String },
    /// An answer this client does not expect from the endpoint.
    #[error("unexpected status {status} from {url}: {message}")]
    Unexpected {
        url: String,
        status: u16,
        message: String,
    },
    /// A success status whose body or headers could not be understood.
    #[error("cannot decode the answer of {url}: {detail}")]
    Decode { url: String, detail: String },
    /// The configured coordinator URL is unusable.
    #[error("invalid coordinator url: {0}")]
    InvalidUrl(String),
}

impl GitlabError {
    /// Whether the same call may succeed later without any change on our
    /// side (the caller decides when, with its own backoff and budget).
    pub fn is_transient(&self) -> bool {
        matches!(self, GitlabError::Unavailable { .. })
    }

    /// The HTTP status the coordinator answered, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitlabError::Unavailable { status, .. } => *status,
            GitlabError::Forbidden { .. } => Some(403),
            GitlabError::Unexpected { status, .. } => Some(*status),
            GitlabError::Decode { .. } | GitlabError::InvalidUrl(_) => None,
        }
    }
}

fn status_suffix(status: Option<u16>) -> String {
    match status {
        Some(status) => format!(" (status {status})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::GitlabError;

    #[test]
    fn only_unavailable_is_transient() {
        let unavailable = GitlabError::Unavailable {
            url: "http://gitlab.test/api/v4/jobs/request".into(),
            status: Some(503),
            detail: "maintenance".into(),
        };
        assert!(unavailable.is_transient());
        assert_eq!(unavailable.status(), Some(503));
        assert_eq!(
            unavailable.to_string(),
            "coordinator unavailable at http://gitlab.test/api/v4/jobs/request (status 503): maintenance"
        );

        let timeout = GitlabError::Unavailable {
            url: "http://gitlab.test/api/v4/job".into(),
            status: None,
            detail: "no answer within 5s".into(),
        };
        assert_eq!(
            timeout.to_string(),
            "coordinator unavailable at http://gitlab.test/api/v4/job: no answer within 5s"
        );
        assert_eq!(timeout.status(), None);

        let forbidden = GitlabError::Forbidden {
            url: "u".into(),
            message: "403 Forbidden".into(),
        };
        assert!(!forbidden.is_transient());
        assert_eq!(forbidden.status(), Some(403));
        assert!(!GitlabError::InvalidUrl("x".into()).is_transient());
        assert!(!GitlabError::Decode {
            url: "u".into(),
            detail: "d".into()
        }
        .is_transient());
    }
}
