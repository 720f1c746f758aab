//! Runner lifecycle endpoints (reference §10): legacy registration
//! `POST /api/v4/runners`, creation `POST /api/v4/user/runners`,
//! `POST /api/v4/runners/verify`, `DELETE /api/v4/runners`,
//! `DELETE /api/v4/runners/managers`, and `GET /api/v4/user` (the cheap
//! authenticated read of an access token).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::state::registry::{ManagerDeletion, NewRunnerSettings};
use super::super::CoordinatorSim;
use super::{admin_token, grape_error, message};

/// Fields of the registration and creation bodies (Rails' params).
#[derive(Deserialize)]
struct SettingsBody {
    token: Option<String>,
    runner_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// A comma-separated string (what gitlab-runner sends) or an array.
    #[serde(default)]
    tag_list: Option<Value>,
    run_untagged: Option<bool>,
    paused: Option<bool>,
    /// Deprecated opposite of `paused`; exclusive with it.
    active: Option<bool>,
    locked: Option<bool>,
}

impl SettingsBody {
    /// Rails' validation of the new runner; the error body on failure.
    fn settings(&self) -> Result<NewRunnerSettings, Box<Response>> {
        if self.paused.is_some() && self.active.is_some() {
            return Err(Box::new(grape_error(
                "paused, active are mutually exclusive",
            )));
        }
        let tags: Vec<String> = match &self.tag_list {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => text
                .split(',')
                .map(str::trim)
                .filter(|tag| !tag.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|tag| !tag.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(_) => return Err(Box::new(grape_error("tag_list is invalid"))),
        };
        // The model's default is true.
        let run_untagged = self.run_untagged.unwrap_or(true);
        if !run_untagged && tags.is_empty() {
            return Err(Box::new(message(
                StatusCode::BAD_REQUEST,
                "400 Bad request - tags_list can not be empty when runner is not allowed to pick untagged jobs",
            )));
        }
        Ok(NewRunnerSettings {
            description: self.description.clone().unwrap_or_default(),
            tags,
            run_untagged,
            paused: self.paused.unwrap_or(false) || self.active == Some(false),
            locked: self.locked.unwrap_or(false),
        })
    }
}

fn registration_details(id: u64, token: &str) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({ "id": id, "token": token, "token_expires_at": null })),
    )
        .into_response()
}

/// `POST /api/v4/runners`: legacy registration with a registration token.
pub(super) async fn register(State(sim): State<CoordinatorSim>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<SettingsBody>(&body) else {
        return grape_error("message body does not match declared format");
    };
    let Some(token) = request.token.as_deref() else {
        return grape_error("token is missing");
    };
    let Some(registration_token) = sim.inner.config.registration_token.as_deref() else {
        // Registration tokens disabled (the default since GitLab 17.0).
        return message(StatusCode::GONE, "410 Gone");
    };
    if token != registration_token {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    let settings = match request.settings() {
        Ok(settings) => settings,
        Err(response) => return *response,
    };
    let (id, token) = sim.lock().create_runner(settings, false);
    sim.notify_changed();
    registration_details(id, &token)
}

/// `POST /api/v4/user/runners` with a personal access token.
pub(super) async fn create(
    State(sim): State<CoordinatorSim>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if admin_token(&headers, &query).as_deref() != Some(sim.inner.config.admin_token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let Ok(request) = serde_json::from_slice::<SettingsBody>(&body) else {
        return grape_error("message body does not match declared format");
    };
    match request.runner_type.as_deref() {
        None => return grape_error("runner_type is missing"),
        Some("instance_type") => {}
        Some("group_type" | "project_type") => {
            // Not simulated: the simulator has no groups or projects to own
            // runners.
            return message(
                StatusCode::BAD_REQUEST,
                "400 Bad request - only instance_type runners are simulated",
            );
        }
        Some(_) => return grape_error("runner_type does not have a valid value"),
    }
    let settings = match request.settings() {
        Ok(settings) => settings,
        Err(response) => return *response,
    };
    let (id, token) = sim.lock().create_runner(settings, true);
    sim.notify_changed();
    registration_details(id, &token)
}

#[derive(Deserialize)]
struct TokenBody {
    token: Option<String>,
    system_id: Option<String>,
}

fn token_body(body: &[u8]) -> Result<(String, Option<String>), Box<Response>> {
    let request: TokenBody = serde_json::from_slice(body)
        .map_err(|_| Box::new(grape_error("message body does not match declared format")))?;
    let token = request
        .token
        .ok_or_else(|| Box::new(grape_error("token is missing")))?;
    Ok((token, request.system_id))
}

/// `POST /api/v4/runners/verify`: newer GitLab's answer with the id.
pub(super) async fn verify(State(sim): State<CoordinatorSim>, body: Bytes) -> Response {
    let (token, system_id) = match token_body(&body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let verified = sim.lock().verify_runner(&token, system_id.as_deref());
    sim.notify_changed();
    match verified {
        Some(id) => (
            StatusCode::OK,
            Json(json!({ "id": id, "token": token, "token_expires_at": null })),
        )
            .into_response(),
        None => message(StatusCode::FORBIDDEN, "403 Forbidden"),
    }
}

/// `DELETE /api/v4/runners`: the whole runner.
pub(super) async fn delete(State(sim): State<CoordinatorSim>, body: Bytes) -> Response {
    let (token, _) = match token_body(&body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let known = sim.lock().delete_runner(&token);
    sim.notify_changed();
    if known {
        StatusCode::NO_CONTENT.into_response()
    } else {
        message(StatusCode::FORBIDDEN, "403 Forbidden")
    }
}

/// `DELETE /api/v4/runners/managers`: one host's manager.
pub(super) async fn delete_manager(State(sim): State<CoordinatorSim>, body: Bytes) -> Response {
    let (token, system_id) = match token_body(&body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let Some(system_id) = system_id else {
        return grape_error("system_id is missing");
    };
    let outcome = sim.lock().delete_runner_manager(&token, &system_id);
    sim.notify_changed();
    match outcome {
        ManagerDeletion::Deleted => StatusCode::NO_CONTENT.into_response(),
        ManagerDeletion::UnknownToken => message(StatusCode::FORBIDDEN, "403 Forbidden"),
        ManagerDeletion::NoSuchManager => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

/// `GET /api/v4/user`: the administrator behind the admin token.
pub(super) async fn current_user(
    State(sim): State<CoordinatorSim>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if admin_token(&headers, &query).as_deref() != Some(sim.inner.config.admin_token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    Json(json!({ "id": 1, "username": "root", "name": "Administrator", "state": "active", "is_admin": true }))
        .into_response()
}

/// `GET /sim/runners`: the runners, without tokens.
pub(super) async fn list(State(sim): State<CoordinatorSim>) -> Response {
    Json(sim.runners()).into_response()
}
