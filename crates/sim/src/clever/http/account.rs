//! What clever-tools reads besides applications: the user (`GET /v2/self`),
//! the summary it resolves names and ids with (`GET /v2/summary`), the
//! environment of linked add-ons and applications (`…/addons/env`,
//! `…/dependencies/env`, always empty here) and the domains
//! (`…/vhosts`, `…/vhosts/favourite`).
//!
//! UNVERIFIED: the fields beyond those the clients read (`id`, `name`,
//! `applications[].id`/`name`, `fqdn`); the simulator's credentials act
//! for one user who is a member of the one organisation.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::super::CleverSim;
use super::{authenticated, error_response, read_live_app};

/// The user the simulator's credentials belong to.
pub(super) const USER_ID: &str = "user_00000000-0000-4000-8000-000000000000";

/// `GET /v2/self`.
pub(super) async fn get_self(State(sim): State<CleverSim>, headers: HeaderMap) -> Response {
    let orga = sim.config().orga_id.clone();
    authenticated(&sim, &headers, &orga, || async {
        Json(self_json()).into_response()
    })
    .await
}

fn self_json() -> Value {
    json!({
        "id": USER_ID,
        "email": "sim@example.invalid",
        "name": "sim",
        "emailValidated": true,
        "admin": false,
    })
}

/// `GET /v2/summary`: the user with no application of their own, and the
/// organisation with its live applications.
pub(super) async fn get_summary(State(sim): State<CleverSim>, headers: HeaderMap) -> Response {
    let orga = sim.config().orga_id.clone();
    authenticated(&sim, &headers, &orga, || async {
        let state = sim.lock();
        let applications: Vec<Value> = state
            .live_apps_of(&orga)
            .map(|app| {
                json!({
                    "id": app.record.id,
                    "name": app.record.name,
                    "variantSlug": "docker",
                    "zone": app.zone,
                })
            })
            .collect();
        let mut user = self_json();
        user["applications"] = json!([]);
        user["addons"] = json!([]);
        Json(json!({
            "user": user,
            "organisations": [{
                "id": orga,
                "name": "sim organisation",
                "applications": applications,
                "addons": [],
            }],
        }))
        .into_response()
    })
    .await
}

/// `GET …/applications/{a}/addons/env` and `…/dependencies/env`: nothing
/// linked.
pub(super) async fn get_linked_env(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |_| {
        Json(Value::Array(Vec::new())).into_response()
    })
    .await
}

/// `GET …/applications/{a}/vhosts`: the default `cleverapps.io` domain.
pub(super) async fn get_vhosts(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        Json(json!([{"fqdn": default_fqdn(&app.record.id)}])).into_response()
    })
    .await
}

/// `GET …/applications/{a}/vhosts/favourite`: none set (clever-tools then
/// lists the domains).
pub(super) async fn get_favourite_vhost(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |_| {
        error_response(StatusCode::NOT_FOUND, 4004, "No favourite vhost")
    })
    .await
}

/// The `cleverapps.io` domain of an application.
pub(super) fn default_fqdn(app_id: &str) -> String {
    format!("{}.cleverapps.io", app_id.replace('_', "-"))
}
