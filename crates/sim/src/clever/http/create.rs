//! `POST /v2/organisations/{o}/applications`: the create body checked as
//! Clever Cloud does (offer, flavors, zone, lifetime, env), the new
//! application and its deployment repository.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use super::super::catalogue::{self, SimFlavor, DEFAULT_FLAVOR_NAME, DOCKER_VARIANT_ID};
use super::super::machines::VmRecord;
use super::super::state::{epoch_ms_now, new_uuid, recompute_live_weight, AppEntry};
use super::super::{AppRecord, CleverSim};
use super::{app_json, authenticated, bad_request, error_response, ApiError};

pub(super) async fn create_app(
    State(sim): State<CleverSim>,
    Path(orga): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authenticated(&sim, &headers, &orga, || do_create(&sim, &orga, &body)).await
}

/// The validated content of a create body.
struct CreateRequest {
    name: String,
    description: String,
    zone: String,
    variant_id: String,
    instance_version: String,
    lifetime: String,
    min_flavor: SimFlavor,
    max_flavor: SimFlavor,
    min_instances: u64,
    max_instances: u64,
    env: BTreeMap<String, String>,
    tags: Vec<Value>,
}

fn parse_create(sim: &CleverSim, body: &[u8]) -> Result<CreateRequest, ApiError> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad_request("The request body must be a JSON object"));
    };
    let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
    let name = match text("name") {
        Some(name) if !name.trim().is_empty() => name,
        _ => return Err(bad_request("Field 'name' is required")),
    };
    if let Some(response) = take_injected_create_error(sim, &name) {
        return Err(response);
    }

    // Type, version and variant must designate a current offer, else 9017
    // (seen by the reference runner without instanceVersion; presumably the
    // same for any unknown type/version/variant, reference §4.1, §5).
    let instance_type = text("instanceType").unwrap_or_default();
    let instance_version = text("instanceVersion").unwrap_or_default();
    let variant_id = text("instanceVariant").unwrap_or_else(|| DOCKER_VARIANT_ID.to_owned());
    if !instance_type.eq_ignore_ascii_case("docker")
        || instance_version != sim.docker_version()
        || !catalogue::variant_is_known(&variant_id)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            9017,
            "The specified instance does not exist",
        ));
    }

    // `js` copies minFlavor to maxFlavor when absent; the server presumably
    // does the same (UNVERIFIED), and both absent gives the default flavor.
    let min_name = text("minFlavor");
    let max_name = text("maxFlavor");
    let (min_name, max_name) = match (min_name, max_name) {
        (Some(min), Some(max)) => (min, max),
        (Some(one), None) | (None, Some(one)) => (one.clone(), one),
        (None, None) => (
            DEFAULT_FLAVOR_NAME.to_owned(),
            DEFAULT_FLAVOR_NAME.to_owned(),
        ),
    };
    let min_flavor = available_flavor(sim, &min_name)?;
    let max_flavor = available_flavor(sim, &max_name)?;
    if min_flavor.mem_mib > max_flavor.mem_mib {
        return Err(bad_request(&format!(
            "minFlavor '{min_name}' is larger than maxFlavor '{max_name}'"
        )));
    }

    let lifetime = text("instanceLifetime").unwrap_or_else(|| "REGULAR".to_owned());
    if !matches!(lifetime.as_str(), "REGULAR" | "TASK" | "MIGRATION") {
        return Err(bad_request(&format!(
            "Unknown instanceLifetime '{lifetime}': expected REGULAR, TASK or MIGRATION"
        )));
    }
    let zone = text("zone").unwrap_or_else(|| "par".to_owned());
    if !catalogue::KNOWN_ZONES.contains(&zone.as_str()) {
        return Err(bad_request(&format!("Unknown zone '{zone}'")));
    }
    let count = |key: &str| -> Result<u64, ApiError> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(1),
            Some(value) => value
                .as_u64()
                .filter(|count| *count >= 1)
                .ok_or_else(|| bad_request(&format!("Field '{key}' must be a positive integer"))),
        }
    };
    let min_instances = count("minInstances")?;
    let max_instances = count("maxInstances")?;
    if min_instances > max_instances {
        return Err(bad_request("minInstances is larger than maxInstances"));
    }
    // Env in the create body is supported since 2024-03 (reference §4.1).
    let env = match fields.get("env") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(vars)) => env_from_object(vars)?,
        Some(_) => return Err(bad_request("Field 'env' must be an object")),
    };
    let tags = match fields.get("tags") {
        Some(Value::Array(tags)) => tags.clone(),
        _ => Vec::new(),
    };
    Ok(CreateRequest {
        description: text("description").unwrap_or_else(|| name.clone()),
        name,
        zone,
        variant_id,
        instance_version,
        lifetime,
        min_flavor,
        max_flavor,
        min_instances,
        max_instances,
        env,
        tags,
    })
}

fn take_injected_create_error(sim: &CleverSim, name: &str) -> Option<ApiError> {
    let mut state = sim.lock();
    let position = state
        .create_errors
        .iter()
        .position(|error| name.contains(&error.name_contains))?;
    let error = &mut state.create_errors[position];
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = ApiError::new(status, error.id, error.message.clone());
    if let Some(remaining) = &mut error.remaining {
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            state.create_errors.remove(position);
        }
    }
    Some(response)
}

fn available_flavor(sim: &CleverSim, name: &str) -> Result<SimFlavor, ApiError> {
    let flavors = &sim.shared.config.flavors;
    match flavors.iter().find(|flavor| flavor.name == name) {
        Some(flavor) if flavor.available => Ok(flavor.clone()),
        Some(_) => Err(bad_request(&format!("Flavor '{name}' is not available"))),
        None => Err(bad_request(&format!(
            "Unknown flavor '{name}'; available flavors: {}",
            flavors
                .iter()
                .filter(|flavor| flavor.available)
                .map(|flavor| flavor.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub(super) fn env_from_object(
    vars: &Map<String, Value>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut env = BTreeMap::new();
    for (name, value) in vars {
        // Lenient name rule of `js` (reference §4.4).
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
        if !name_ok {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                557,
                format!("Application environment is invalid: bad variable name '{name}'"),
            ));
        }
        // UNVERIFIED: whether Clever coerces non-string values; refusing
        // them keeps clients honest.
        let Some(value) = value.as_str() else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                557,
                format!("Application environment is invalid: value of '{name}' is not a string"),
            ));
        };
        env.insert(name.clone(), value.to_owned());
    }
    Ok(env)
}

async fn do_create(sim: &CleverSim, orga: &str, body: &[u8]) -> Response {
    let request = match parse_create(sim, body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    // Names are not unique (reference §4.1): duplicates are created.
    let app_id = {
        let mut state = sim.lock();
        loop {
            let candidate = format!("app_{}", new_uuid(&mut state.id_rng));
            if !state.index.contains_key(&candidate) {
                break candidate;
            }
        }
    };
    if let Err(error) = create_bare_repo(&sim.repo_path(&app_id)).await {
        tracing::error!(%error, app_id, "cannot create the deployment repository");
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            500,
            "Cannot create the deployment repository",
        );
    }
    let now = Instant::now();
    let weight = request.max_flavor.weight();
    let entry = AppEntry {
        record: AppRecord {
            id: app_id.clone(),
            name: request.name,
            flavor: request.max_flavor.name.clone(),
            mem_mib: request.max_flavor.mem_mib,
            cpus: request.max_flavor.cpus,
            weight,
            lifetime: request.lifetime,
            created_at: now,
            deleted_at: None,
            repo_ready_at: None,
            env: request.env,
            pushes: 0,
            commit_id: None,
            vm: VmRecord::default(),
        },
        orga: orga.to_owned(),
        description: request.description,
        zone: request.zone,
        variant_id: request.variant_id,
        min_flavor: request.min_flavor,
        max_flavor: request.max_flavor,
        min_instances: request.min_instances,
        max_instances: request.max_instances,
        instance_version: request.instance_version,
        creation_epoch_ms: epoch_ms_now(),
        tags: request.tags,
        vm: None,
    };
    let delay = sim.shared.config.repo_ready_delay;
    let response = {
        let mut state = sim.lock();
        let never_ready = state
            .never_ready
            .iter()
            .any(|pattern| entry.record.name.contains(pattern.as_str()));
        let mut entry = entry;
        if delay.is_zero() && !never_ready {
            entry.record.repo_ready_at = Some(now);
        }
        let response = Json(app_json(sim, &entry)).into_response();
        let index = state.apps.len();
        state.index.insert(app_id.clone(), index);
        state.apps.push(entry);
        state.live.insert(index);
        let stats = &mut state.stats;
        stats.apps_created += 1;
        stats.apps_live += 1;
        stats.max_live_apps = stats.max_live_apps.max(stats.apps_live);
        recompute_live_weight(&mut state);
        if !delay.is_zero() && !never_ready {
            spawn_repo_ready_timer(sim.clone(), app_id.clone(), delay);
        }
        response
    };
    sim.notify_changed();
    tracing::debug!(app_id, "application created");
    // UNVERIFIED: 200 vs 201 on create; no client checks it (reference §4.1).
    response
}

/// Live weight is recomputed from the live set rather than updated
/// incrementally, so that float rounding cannot drift over long runs.
fn spawn_repo_ready_timer(sim: CleverSim, app_id: String, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        {
            let mut state = sim.lock();
            let never_ready = state.never_ready.clone();
            let Some(&index) = state.index.get(&app_id) else {
                return;
            };
            let record = &mut state.apps[index].record;
            let stalled = never_ready
                .iter()
                .any(|pattern| record.name.contains(pattern.as_str()));
            if record.is_live() && !stalled {
                record.repo_ready_at = Some(Instant::now());
            }
        }
        sim.notify_changed();
    });
}

/// Writes a bare repository by hand, as `git init --bare` would, with pushes
/// over HTTP allowed.
async fn create_bare_repo(path: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(path.join("objects/info")).await?;
    tokio::fs::create_dir_all(path.join("objects/pack")).await?;
    tokio::fs::create_dir_all(path.join("refs/heads")).await?;
    tokio::fs::create_dir_all(path.join("refs/tags")).await?;
    tokio::fs::write(path.join("HEAD"), "ref: refs/heads/master\n").await?;
    tokio::fs::write(
        path.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n\
         [http]\n\treceivepack = true\n",
    )
    .await?;
    Ok(())
}
