//! Runner lifecycle calls (register, verify, unregister) and a token check,
//! as `gitlab-runner register`, `verify` and `unregister` make them
//! (reference §10).
//!
//! Each call is single-shot under a timeout, reads at most
//! [`MAX_ANSWER_BYTES`] of the answer, and classifies it like the job
//! calls: transient failures (timeouts, 408, 429, 5xx) are
//! [`GitlabError::Unavailable`], refused credentials
//! [`GitlabError::Forbidden`]. Tokens go in JSON bodies or headers, never in
//! URLs; quoted server messages are scrubbed of the tokens sent.

use crate::client::{sensitive_header, Reply};

use paas_core::Secret;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{CoordinatorClient, DEFAULT_CALL_TIMEOUT, USER_AGENT};
use crate::error::GitlabError;

/// Answers longer than this are cut (the answers read here are a few
/// hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Server messages quoted in errors are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Server-side settings of a new runner (`POST /api/v4/runners` and
/// `POST /api/v4/user/runners`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerSettings {
    /// `description`: the name shown in GitLab.
    pub description: String,
    /// `tag_list`.
    pub tags: Vec<String>,
    /// `run_untagged`: take jobs without tags too. GitLab's own default is
    /// true; gitlab-runner sends true when the tag list is empty.
    pub run_untagged: bool,
    /// `paused`.
    pub paused: bool,
    /// `locked`: locked to its current projects (project runners).
    pub locked: bool,
    /// `access_level`: `not_protected` or `ref_protected`.
    pub access_level: Option<String>,
    /// `maximum_timeout` in seconds.
    pub maximum_timeout: Option<u64>,
    /// `maintenance_note`.
    pub maintenance_note: Option<String>,
}

/// What a registration gives: the runner and its authentication token.
#[derive(Debug, Clone)]
pub struct NewRunner {
    pub id: u64,
    pub token: Secret,
    /// RFC 3339, when the instance makes runner tokens expire.
    pub token_expires_at: Option<String>,
}

/// What `POST /api/v4/runners/verify` told of a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRunner {
    /// Newer GitLab answers the runner id; older ones only `200`.
    pub id: Option<u64>,
    pub token_expires_at: Option<String>,
}

/// Whether an unregistration found something to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregistered {
    /// 204: deleted.
    Deleted,
    /// 404 on `DELETE /runners/managers`: no manager with that system id
    /// (the service never ran with this token, or it was removed already).
    NoSuchManager,
}

/// The user a personal access token belongs to (`GET /api/v4/user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    pub username: String,
    /// `is_admin`, when the instance says (only to administrators).
    pub is_admin: Option<bool>,
}

/// Whether a runner authentication token is one created in GitLab (UI or
/// `POST /user/runners`) rather than returned by a legacy registration;
/// gitlab-runner unregisters the former by runner manager
/// (`network.TokenIsCreatedRunnerToken`).
pub fn is_created_runner_token(token: &Secret) -> bool {
    token.expose().starts_with("glrt-")
}

impl CoordinatorClient {
    /// `POST /api/v4/runners/verify {token, system_id}`: is this runner
    /// token valid? A 403 is [`GitlabError::Forbidden`] (unknown, revoked or
    /// expired token). Rails also creates or refreshes the runner manager
    /// of `system_id` (reference §10).
    pub async fn verify_runner(
        &self,
        token: &Secret,
        system_id: Option<&str>,
    ) -> Result<VerifiedRunner, GitlabError> {
        #[derive(Serialize)]
        struct Body<'a> {
            token: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            system_id: Option<&'a str>,
        }
        let body = Body {
            token: token.expose(),
            system_id,
        };
        let (url, reply) = self
            .lifecycle_call(Method::POST, "runners/verify", &body, None)
            .await?;
        match reply.status {
            200 => {
                // Older GitLab answers the plain body `200` (no id).
                let verified = serde_json::from_slice::<RegistrationDetails>(&reply.body).ok();
                Ok(VerifiedRunner {
                    id: verified.as_ref().and_then(|details| details.id),
                    token_expires_at: verified.and_then(|details| details.token_expires_at),
                })
            }
            403 => Err(forbidden(url, &reply, &[token])),
            _ => Err(reply_error(url, &reply, &[token])),
        }
    }

    /// `POST /api/v4/runners` with a legacy registration token: registers a
    /// runner and returns its own token, which replaces the registration
    /// token from then on. 403: registration token refused; 410: this
    /// instance no longer accepts registration tokens
    /// ([`GitlabError::Unexpected`]).
    pub async fn register_runner(
        &self,
        registration_token: &Secret,
        settings: &RunnerSettings,
    ) -> Result<NewRunner, GitlabError> {
        let body = settings_body(settings, Some(registration_token.expose()), None);
        let (url, reply) = self
            .lifecycle_call(Method::POST, "runners", &body, None)
            .await?;
        match reply.status {
            201 => new_runner(&url, &reply.body),
            403 => Err(forbidden(url, &reply, &[registration_token])),
            _ => Err(reply_error(url, &reply, &[registration_token])),
        }
    }

    /// `POST /api/v4/user/runners` with a personal access token (scope
    /// `create_runner` or `api`): creates an instance runner (administrators
    /// only) and returns its `glrt-` token. 401/403: the access token is
    /// refused or may not create instance runners.
    pub async fn create_instance_runner(
        &self,
        access_token: &Secret,
        settings: &RunnerSettings,
    ) -> Result<NewRunner, GitlabError> {
        let body = settings_body(settings, None, Some("instance_type"));
        let (url, reply) = self
            .lifecycle_call(Method::POST, "user/runners", &body, Some(access_token))
            .await?;
        match reply.status {
            201 => new_runner(&url, &reply.body),
            401 | 403 => Err(forbidden(url, &reply, &[access_token])),
            _ => Err(reply_error(url, &reply, &[access_token])),
        }
    }

    /// `DELETE /api/v4/runners {token}`: deletes the runner (legacy
    /// registrations; also allowed for `glrt-` tokens, where it deletes the
    /// runner for every host using it).
    pub async fn delete_runner(&self, token: &Secret) -> Result<Unregistered, GitlabError> {
        let body = serde_json::json!({ "token": token.expose() });
        let (url, reply) = self
            .lifecycle_call(Method::DELETE, "runners", &body, None)
            .await?;
        match reply.status {
            204 => Ok(Unregistered::Deleted),
            403 => Err(forbidden(url, &reply, &[token])),
            _ => Err(reply_error(url, &reply, &[token])),
        }
    }

    /// `DELETE /api/v4/runners/managers {token, system_id}`: removes this
    /// host's runner manager, leaving the runner (created in GitLab) for
    /// other hosts, as `gitlab-runner unregister` does for `glrt-` tokens.
    pub async fn delete_runner_manager(
        &self,
        token: &Secret,
        system_id: &str,
    ) -> Result<Unregistered, GitlabError> {
        let body = serde_json::json!({ "token": token.expose(), "system_id": system_id });
        let (url, reply) = self
            .lifecycle_call(Method::DELETE, "runners/managers", &body, None)
            .await?;
        match reply.status {
            204 => Ok(Unregistered::Deleted),
            404 => Ok(Unregistered::NoSuchManager),
            403 => Err(forbidden(url, &reply, &[token])),
            _ => Err(reply_error(url, &reply, &[token])),
        }
    }

    /// `GET /api/v4/user` with `PRIVATE-TOKEN`: whose token is this? A
    /// cheap authenticated read (no Gitaly call); 401 is
    /// [`GitlabError::Forbidden`] (unknown, revoked or expired token).
    pub async fn token_user(&self, access_token: &Secret) -> Result<TokenUser, GitlabError> {
        let url = format!("{}/api/v4/user", self.base_url());
        let request = self
            .lifecycle_request(Method::GET, &url)
            .header("PRIVATE-TOKEN", sensitive_header(&url, access_token)?);
        let reply = self
            .exchange(request, &url, DEFAULT_CALL_TIMEOUT, MAX_ANSWER_BYTES)
            .await?;
        match reply.status {
            200 => {
                let user: Value =
                    serde_json::from_slice(&reply.body).map_err(|error| GitlabError::Decode {
                        url: url.clone(),
                        detail: format!("the user is not json: {error}"),
                    })?;
                Ok(TokenUser {
                    username: user
                        .get("username")
                        .and_then(Value::as_str)
                        .map(|name| name.chars().take(255).collect())
                        .unwrap_or_default(),
                    is_admin: user.get("is_admin").and_then(Value::as_bool),
                })
            }
            401 | 403 => Err(forbidden(url, &reply, &[access_token])),
            _ => Err(reply_error(url, &reply, &[access_token])),
        }
    }

    /// Sends `body` as JSON to `<api>/<path>`, with `PRIVATE-TOKEN` when
    /// given; the URL (for errors) and the answer.
    async fn lifecycle_call(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
        private_token: Option<&Secret>,
    ) -> Result<(String, Reply), GitlabError> {
        let url = format!("{}/api/v4/{path}", self.base_url());
        let body = serde_json::to_vec(body).map_err(|error| GitlabError::Decode {
            url: url.clone(),
            detail: format!("cannot encode the request body: {error}"),
        })?;
        let mut request = self
            .lifecycle_request(method, &url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = private_token {
            request = request.header("PRIVATE-TOKEN", sensitive_header(&url, token)?);
        }
        let reply = self
            .exchange(request, &url, DEFAULT_CALL_TIMEOUT, MAX_ANSWER_BYTES)
            .await?;
        Ok((url, reply))
    }

    fn lifecycle_request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.http_client()
            .request(method, url)
            .header(reqwest::header::USER_AGENT, USER_AGENT)
            .header(ACCEPT, "application/json")
    }
}

/// `Entities::Ci::RunnerRegistrationDetails`.
#[derive(Deserialize)]
struct RegistrationDetails {
    id: Option<u64>,
    token: Option<String>,
    token_expires_at: Option<String>,
}

fn new_runner(url: &str, body: &[u8]) -> Result<NewRunner, GitlabError> {
    let decode = |detail: &str| GitlabError::Decode {
        url: url.to_owned(),
        detail: detail.to_owned(),
    };
    let details: RegistrationDetails = serde_json::from_slice(body)
        .map_err(|_| decode("the new runner is not the json GitLab sends"))?;
    let token = details
        .token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| decode("no `token` in the new runner"))?;
    Ok(NewRunner {
        id: details
            .id
            .ok_or_else(|| decode("no `id` in the new runner"))?,
        token: Secret::new(token),
        token_expires_at: details.token_expires_at,
    })
}

fn settings_body(
    settings: &RunnerSettings,
    registration_token: Option<&str>,
    runner_type: Option<&str>,
) -> Value {
    let mut body = serde_json::json!({
        "description": settings.description,
        // gitlab-runner sends the list as a comma-separated string; Rails
        // takes both.
        "tag_list": settings.tags.join(","),
        "run_untagged": settings.run_untagged,
        "paused": settings.paused,
        "locked": settings.locked,
    });
    let object = body.as_object_mut().expect("a json object");
    if let Some(token) = registration_token {
        object.insert("token".into(), token.into());
        object.insert(
            "info".into(),
            serde_json::json!({
                "name": "paas-runner",
                "version": env!("CARGO_PKG_VERSION"),
                "platform": "linux",
                "architecture": "amd64",
                "executor": "docker",
            }),
        );
    }
    if let Some(runner_type) = runner_type {
        object.insert("runner_type".into(), runner_type.into());
    }
    if let Some(level) = &settings.access_level {
        object.insert("access_level".into(), level.as_str().into());
    }
    if let Some(timeout) = settings.maximum_timeout {
        object.insert("maximum_timeout".into(), timeout.into());
    }
    if let Some(note) = &settings.maintenance_note {
        object.insert("maintenance_note".into(), note.as_str().into());
    }
    body
}

fn forbidden(url: String, reply: &Reply, sent: &[&Secret]) -> GitlabError {
    GitlabError::Forbidden {
        message: server_message(reply, sent),
        url,
    }
}

/// Statuses gitlab-runner retries (reference §1) are transient.
fn reply_error(url: String, reply: &Reply, sent: &[&Secret]) -> GitlabError {
    let mut message = server_message(reply, sent);
    if (300..400).contains(&reply.status) {
        if let Some(location) = reply.header("location") {
            message = format!("redirect to {location} not followed; fix the coordinator url");
        }
    }
    let status = reply.status;
    if matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || status >= 512 {
        let detail = match reply.header("retry-after") {
            Some(after) => format!("{message} (Retry-After: {after})"),
            None => message,
        };
        GitlabError::Unavailable {
            url,
            status: Some(status),
            detail,
        }
    } else {
        GitlabError::Unexpected {
            url,
            status,
            message,
        }
    }
}

/// Rails' `{"message": …}` (or Grape's `{"error": …}`), else the text;
/// scrubbed of the tokens sent, control characters removed, shortened.
fn server_message(reply: &Reply, sent: &[&Secret]) -> String {
    let parsed = serde_json::from_slice::<Value>(&reply.body).ok();
    let mut text = match parsed
        .as_ref()
        .and_then(|json| json.get("message").or(json.get("error")))
    {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::from_utf8_lossy(&reply.body).trim().to_owned(),
    };
    for secret in sent {
        if !secret.is_empty() {
            text = text.replace(secret.expose(), "[REDACTED]");
        }
    }
    let text: String = text
        .chars()
        .map(|character| {
            if character.is_control() {
                ' '
            } else {
                character
            }
        })
        .collect();
    if text.trim().is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
