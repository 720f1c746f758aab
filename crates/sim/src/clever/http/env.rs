//! `GET`/`PUT …/env` and `PUT`/`DELETE …/env/{name}`: an application's
//! environment variables.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use super::super::state::live_app_mut;
use super::super::CleverSim;
use super::create::env_from_object;
use super::{app_json, authenticated, bad_request, env_json, not_found, read_live_app};

pub(super) async fn get_env(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        Json(env_json(&app.record.env)).into_response()
    })
    .await
}

pub(super) async fn put_env(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let Ok(Value::Object(vars)) = serde_json::from_slice::<Value>(&body) else {
            return bad_request("The request body must be a JSON object of variables")
                .into_response();
        };
        let env = match env_from_object(&vars) {
            Ok(env) => env,
            Err(error) => return error.into_response(),
        };
        // PUT /env replaces the whole set (reference §4.4, pitfall 8).
        update_env(&sim, &orga, &app_id, |current| *current = env)
    })
    .await
}

pub(super) async fn put_env_var(
    State(sim): State<CleverSim>,
    Path((orga, app_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let value = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|body| body.get("value").and_then(Value::as_str).map(str::to_owned));
        let Some(value) = value else {
            return bad_request("The request body must be {\"value\": \"...\"}").into_response();
        };
        let mut single = Map::new();
        single.insert(name.clone(), Value::String(value.clone()));
        if let Err(error) = env_from_object(&single) {
            return error.into_response();
        }
        update_env(&sim, &orga, &app_id, |current| {
            current.insert(name, value);
        })
    })
    .await
}

pub(super) async fn delete_env_var(
    State(sim): State<CleverSim>,
    Path((orga, app_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        update_env(&sim, &orga, &app_id, |current| {
            current.remove(&name);
        })
    })
    .await
}

/// Applies an env change and answers with the application object, which
/// carries the `env` array `js` reads (UNVERIFIED whether Clever answers
/// with the full application or a smaller object with `env`).
fn update_env(
    sim: &CleverSim,
    orga: &str,
    app_id: &str,
    change: impl FnOnce(&mut BTreeMap<String, String>),
) -> Response {
    let response = {
        let mut state = sim.lock();
        let Some(app) = live_app_mut(&mut state, orga, app_id) else {
            return not_found();
        };
        change(&mut app.record.env);
        Json(app_json(sim, app)).into_response()
    };
    sim.notify_changed();
    response
}
