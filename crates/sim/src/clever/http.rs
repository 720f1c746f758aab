//! The `/v2` routes of the Clever Cloud simulator: the frame every
//! authenticated call goes through (latency, credentials, organisation,
//! injected faults), the catalogue, applications, instances. Creation is in
//! `http/create.rs`, environment variables in `http/env.rs`.

mod account;
mod create;
mod deployments;
mod env;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};

use super::catalogue::{self, SimFlavor};
use super::machines::VmState;
use super::state::{live_app, live_app_mut, recompute_live_weight, repo_state, AppEntry};
use super::CleverSim;

pub(super) fn router(sim: CleverSim) -> Router {
    Router::new()
        .route("/v2/products/flavors", get(get_flavors))
        .route("/v2/products/instances", get(get_instances))
        .route(
            "/v2/organisations/{orga}/applications",
            get(list_apps).post(create::create_app),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}",
            get(get_app).delete(delete_app),
        )
        .route(
            "/v2/organisations/{orga}/deployments",
            get(deployments::list_organisation_deployments),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/env",
            get(env::get_env).put(env::put_env),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/env/{name}",
            put(env::put_env_var).delete(env::delete_env_var),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/instances",
            get(get_instances_of_app),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/deployments",
            get(deployments::list_app_deployments),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/deployments/{uuid}",
            get(deployments::get_app_deployment),
        )
        .route(
            "/v2/organisations/{orga}/instances",
            get(deployments::list_organisation_instances),
        )
        .route("/v2/self", get(account::get_self))
        .route("/v2/summary", get(account::get_summary))
        .route(
            "/v2/organisations/{orga}/applications/{app}/addons/env",
            get(account::get_linked_env),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/dependencies/env",
            get(account::get_linked_env),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/vhosts",
            get(account::get_vhosts),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/vhosts/favourite",
            get(account::get_favourite_vhost),
        )
        .route("/git/{*path}", any(super::git_http::serve))
        .fallback(unknown_route)
        .with_state(sim)
}

/// Any other route: 404, logged so that what a client needs and the
/// simulator lacks shows (the path is a field, never part of the message).
async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    tracing::info!(%method, path = uri.path(), query = uri.query().unwrap_or(""), "clever simulator: unknown route");
    not_found()
}

/// A Clever-style error: `{"id": …, "message": …, "type": "error"}`.
pub(crate) fn error_response(status: StatusCode, id: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"id": id, "message": message, "type": "error"})),
    )
        .into_response()
}

pub(super) fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, 4004, "Not Found")
}

/// An API error not yet turned into a response (keeps `Result`s small).
pub(crate) struct ApiError {
    status: StatusCode,
    id: i64,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, id: i64, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, self.id, &self.message)
    }
}

pub(super) fn bad_request(message: &str) -> ApiError {
    // UNVERIFIED: the ids of validation errors other than 9017 are unknown;
    // 400 with a clear message is what matters to clients.
    ApiError::new(StatusCode::BAD_REQUEST, 4000, message)
}

async fn get_flavors(
    State(sim): State<CleverSim>,
    Query(_query): Query<HashMap<String, String>>,
) -> Response {
    // No authentication: the reference runner calls the catalogue without
    // any Authorization header (reference §3). UNVERIFIED how `context`
    // filters: the reference runner's recorded responses mix contexts, so the
    // whole catalogue is returned and clients filter by prefix.
    sleep_latency(&sim).await;
    let flavors: Vec<Value> = sim
        .shared
        .config
        .flavors
        .iter()
        .map(SimFlavor::to_json)
        .collect();
    Json(Value::Array(flavors)).into_response()
}

async fn get_instances(State(sim): State<CleverSim>) -> Response {
    sleep_latency(&sim).await;
    let version = sim.docker_version();
    Json(catalogue::instances_json(
        &version,
        &sim.shared.config.flavors,
    ))
    .into_response()
}

pub(super) async fn sleep_latency(sim: &CleverSim) {
    let latency = sim.shared.config.faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// The frame of every authenticated `/v2` call: latency, authentication,
/// organisation, then injected faults around the action.
pub(super) async fn authenticated<F, Fut>(
    sim: &CleverSim,
    headers: &HeaderMap,
    orga: &str,
    action: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    sleep_latency(sim).await;
    let (fail_before, fail_after) = {
        let mut state = sim.lock();
        state.stats.api_calls += 1;
        // Both draws happen on every call so that the fault sequence for a
        // seed depends only on the sequence of calls.
        let faults = &sim.shared.config.faults;
        let before = state.fault_rng.gen::<f64>() < faults.error_rate;
        let after = state.fault_rng.gen::<f64>() < faults.error_after_effect_rate;
        (before, after)
    };
    if !super::auth::api_authorized(&sim.shared.config, headers) {
        // UNVERIFIED: id and message of Clever's 401 body.
        return error_response(StatusCode::UNAUTHORIZED, 401, "Not authenticated");
    }
    if orga != sim.shared.config.orga_id {
        // UNVERIFIED: Clever may answer 404 rather than 403 for an
        // organisation the credentials cannot see.
        return error_response(
            StatusCode::FORBIDDEN,
            403,
            "You don't have access to this organisation",
        );
    }
    if fail_before {
        return injected_error(sim);
    }
    let response = action().await;
    if fail_after {
        return injected_error(sim);
    }
    response
}

fn injected_error(sim: &CleverSim) -> Response {
    sim.lock().stats.api_errors_injected += 1;
    sim.notify_changed();
    // UNVERIFIED: the body of Clever's 500s; some are not even JSON.
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        500,
        "Internal server error (injected by the simulator)",
    )
}

async fn list_apps(
    State(sim): State<CleverSim>,
    Path(orga): Path<String>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let state = sim.lock();
        let apps: Vec<Value> = state
            .live_apps_of(&orga)
            .map(|app| app_json(&sim, app))
            .collect();
        Json(Value::Array(apps)).into_response()
    })
    .await
}

async fn get_app(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        Json(app_json(&sim, app)).into_response()
    })
    .await
}

/// An authenticated read of one live application of `orga`: `answer`
/// on it, or 404 when there is none.
pub(super) async fn read_live_app(
    sim: &CleverSim,
    headers: &HeaderMap,
    orga: &str,
    app_id: &str,
    answer: impl FnOnce(&AppEntry) -> Response,
) -> Response {
    authenticated(sim, headers, orga, || async {
        let state = sim.lock();
        match live_app(&state, orga, app_id) {
            Some(app) => answer(app),
            None => not_found(),
        }
    })
    .await
}

pub(super) fn env_json(env: &BTreeMap<String, String>) -> Value {
    Value::Array(
        env.iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The application object (reference §4.2).
pub(super) fn app_json(sim: &CleverSim, app: &AppEntry) -> Value {
    let record = &app.record;
    let zone_host = format!(
        "push-n2-{}-clevercloud-customers.services.clever-cloud.com",
        app.zone
    );
    let allowed_flavors: Vec<Value> = sim
        .shared
        .config
        .flavors
        .iter()
        .filter(|flavor| flavor.available)
        .map(SimFlavor::to_json)
        .collect();
    json!({
        "id": record.id,
        "ownerId": app.orga,
        "name": record.name,
        "description": app.description,
        "zone": app.zone,
        "zoneId": format!("zone-{}", app.zone),
        "instance": {
            "type": "docker",
            "version": app.instance_version,
            "variant": catalogue::variant_json(&app.variant_id),
            "minInstances": app.min_instances,
            "maxInstances": app.max_instances,
            "maxAllowedInstances": 40,
            "minFlavor": app.min_flavor.to_json(),
            "maxFlavor": app.max_flavor.to_json(),
            "flavors": allowed_flavors,
            "defaultEnv": {"CC_DOCKERFILE": "Dockerfile"},
            "lifetime": record.lifetime,
            "instanceAndVersion": format!("docker-{}", app.instance_version),
        },
        "deployment": {
            "shutdownable": false,
            "type": "GIT",
            "repoState": repo_state(record),
            "url": format!("git+ssh://git@{zone_host}/{}.git", record.id),
            "httpUrl": sim.git_url(&record.id),
        },
        "vhosts": [{"fqdn": account::default_fqdn(&record.id)}],
        "creationDate": app.creation_epoch_ms,
        "last_deploy": record.vm.deployments,
        "archived": false,
        "stickySessions": false,
        "homogeneous": false,
        "favourite": false,
        "cancelOnPush": false,
        "webhookUrl": null,
        "webhookSecret": null,
        "separateBuild": false,
        // A flavor object, never null: clever-tools' `status` reads its
        // `name` (UNVERIFIED which flavor the real API gives without a
        // separate build; here the max flavor).
        "buildFlavor": app.max_flavor.to_json(),
        "forceHttps": "DISABLED",
        "appliance": null,
        "branch": "master",
        "commitId": record.commit_id,
        "state": "SHOULD_BE_UP",
        "env": env_json(&record.env),
        "tags": app.tags,
    })
}

async fn delete_app(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let deleted = {
            let mut state = sim.lock();
            let deleted = match live_app_mut(&mut state, &orga, &app_id) {
                Some(app) => {
                    let now = Instant::now();
                    app.record.deleted_at = Some(now);
                    // Deleting stops the VM at once (whether Clever's
                    // teardown is synchronous is UNVERIFIED).
                    super::machines::record_deletion(&mut app.record.vm, now);
                    if let Some(vm) = &app.vm {
                        vm.stop();
                    }
                    true
                }
                None => false,
            };
            if deleted {
                if let Some(&index) = state.index.get(&app_id) {
                    state.live.remove(&index);
                }
                state.stats.apps_deleted += 1;
                state.stats.apps_live -= 1;
                recompute_live_weight(&mut state);
            }
            deleted
        };
        if !deleted {
            return not_found();
        }
        sim.notify_changed();
        let path = sim.repo_path(&app_id);
        tokio::spawn(async move {
            if let Err(error) = tokio::fs::remove_dir_all(&path).await {
                tracing::debug!(%error, path = %path.display(), "cannot remove a deleted repository");
            }
        });
        tracing::debug!(app_id, "application deleted");
        (
            StatusCode::OK,
            Json(json!({"id": 302, "message": "deleted", "type": "success"})),
        )
            .into_response()
    })
    .await
}
async fn get_instances_of_app(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        let instances: Vec<Value> = instance_json(app).into_iter().collect();
        Json(Value::Array(instances)).into_response()
    })
    .await
}

/// The instance of an application's VM, if one runs. UNVERIFIED: the full
/// list of v2 instance states; clever-tools knows `UP` and `DEPLOYING`. A
/// stopped TASK VM is simply absent.
fn instance_json(app: &AppEntry) -> Option<Value> {
    let instance_state = match app.record.vm.state {
        VmState::Booting => "DEPLOYING",
        VmState::Running | VmState::Stalled => "UP",
        VmState::NotDeployed | VmState::Stopped => return None,
    };
    Some(json!({
        "id": format!("{}-instance-{}", app.record.id, app.record.vm.deployments),
        "appId": app.record.id,
        "ip": "127.0.0.1",
        "appPort": 8080,
        "state": instance_state,
        "flavor": app.max_flavor.to_json(),
        "commit": app.record.commit_id,
        "deployNumber": app.record.vm.deployments,
        "instanceNumber": 0,
        "displayName": "sim",
        "creationDate": app.creation_epoch_ms,
    }))
}
