//! `GET /v2/organisations/{o}/deployments`: the latest deployment of every
//! application of the organisation, keyed by application id
//! (`docs/protocol-notes.md` §3.d, `@clevercloud/client` 12
//! `ListOrganisationDeploymentCommand`).
//!
//! Also each application's deployments (`GET …/applications/{a}/deployments`
//! and `…/deployments/{uuid}`, what clever-tools' `deploy` polls) and the
//! organisation's instances (`GET /v2/organisations/{o}/instances`).
//!
//! A deployment is `WIP` while the image builds and the VM boots,
//! `TASK_RUNNING` while the inner runner (or a TASK container) runs, `OK`
//! once a REGULAR container is up, then `OK` once the task
//! ended (the inner runner exits after its final update, or after being
//! told the job is over), `FAIL` if the build context was invalid or the
//! coordinator unreachable. UNVERIFIED: the end states of a real TASK
//! deployment, whether deleted applications are listed (here they are
//! not), and whether the array holds older deployments too (here only the
//! latest, the only one a job's application has).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::super::machines::{VmExit, VmState};
use super::super::state::AppEntry;
use super::super::CleverSim;
use super::{authenticated, not_found, read_live_app};

pub(super) async fn list_organisation_deployments(
    State(sim): State<CleverSim>,
    Path(orga): Path<String>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let state = sim.lock();
        if state.no_organisation_deployments {
            return not_found();
        }
        let mut apps = Map::new();
        for app in state.live_apps_of(&orga) {
            if let Some(deployment) = latest_deployment(app) {
                apps.insert(app.record.id.clone(), Value::Array(vec![deployment]));
            }
        }
        Json(Value::Object(apps)).into_response()
    })
    .await
}

fn latest_deployment(app: &AppEntry) -> Option<Value> {
    let vm = &app.record.vm;
    let state = match vm.state {
        VmState::NotDeployed => return None,
        VmState::Booting => "WIP",
        VmState::Running | VmState::Stalled if app.record.lifetime == "TASK" => "TASK_RUNNING",
        VmState::Running | VmState::Stalled => "OK",
        VmState::Stopped => match vm.exit {
            Some(VmExit::InvalidBuild(_) | VmExit::CoordinatorUnreachable(_)) => "FAIL",
            Some(VmExit::Deleted | VmExit::NeverStarted) => "CANCELLED",
            Some(VmExit::Completed | VmExit::Canceled) | None => "OK",
        },
    };
    let pushed_ms = vm
        .pushed_at
        .map(|at| {
            at.saturating_duration_since(app.record.created_at)
                .as_millis() as u64
        })
        .unwrap_or(0);
    Some(json!({
        "uuid": format!("{}-deployment-{}", app.record.id, vm.deployments),
        "id": vm.deployments,
        "date": app.creation_epoch_ms + pushed_ms,
        "state": state,
        "action": "DEPLOY",
        "commit": vm.commit,
        "cause": "git push",
        "instances": 1,
        "author": {"id": "user_00000000-0000-4000-8000-000000000000", "name": "sim"},
    }))
}

/// `GET …/applications/{a}/deployments?limit&offset&action`: the
/// application's deployments, newest first (here only the latest; see the
/// module's UNVERIFIED notes). `limit`, `offset` and `action` filter as
/// `@clevercloud/client` names them.
pub(super) async fn list_app_deployments(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        let offset: usize = query
            .get("offset")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let limit: usize = query
            .get("limit")
            .and_then(|value| value.parse().ok())
            .unwrap_or(usize::MAX);
        let action = query.get("action");
        let deployments: Vec<Value> = latest_deployment(app)
            .into_iter()
            .filter(|deployment| action.is_none_or(|action| deployment["action"] == **action))
            .skip(offset)
            .take(limit)
            .collect();
        Json(Value::Array(deployments)).into_response()
    })
    .await
}

/// `GET …/applications/{a}/deployments/{uuid}`: one deployment, 404 if
/// unknown.
pub(super) async fn get_app_deployment(
    State(sim): State<CleverSim>,
    Path((orga, app_id, uuid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(
        &sim,
        &headers,
        &orga,
        &app_id,
        |app| match latest_deployment(app).filter(|deployment| deployment["uuid"] == *uuid) {
            Some(deployment) => Json(deployment).into_response(),
            None => not_found(),
        },
    )
    .await
}

/// `GET /v2/organisations/{o}/instances`: the running instances of every
/// application of the organisation. UNVERIFIED: the shape (no client reads
/// it; `docs/protocol-notes.md` §3.d); here an array of the per-application
/// instance objects.
pub(super) async fn list_organisation_instances(
    State(sim): State<CleverSim>,
    Path(orga): Path<String>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let state = sim.lock();
        let instances: Vec<Value> = state
            .live_apps_of(&orga)
            .filter_map(super::instance_json)
            .collect();
        Json(Value::Array(instances)).into_response()
    })
    .await
}
