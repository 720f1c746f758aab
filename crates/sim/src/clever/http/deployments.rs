//! `GET /v2/organisations/{o}/deployments`: the latest deployment of every
//! application of the organisation, keyed by application id
//! (`docs/protocol-notes.md` §3.d, `@clevercloud/client` 12
//! `ListOrganisationDeploymentCommand`).
//!
//! A deployment is `WIP` while the image builds and the VM boots,
//! `TASK_RUNNING` while the inner runner runs, then `OK` once the task
//! ended (the inner runner exits after its final update, or after being
//! told the job is over), `FAIL` if the build context was invalid or the
//! coordinator unreachable. UNVERIFIED: the end states of a real TASK
//! deployment, whether deleted applications are listed (here they are
//! not), and whether the array holds older deployments too (here only the
//! latest, the only one a job's application has).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::super::machines::{VmExit, VmState};
use super::super::state::AppEntry;
use super::super::CleverSim;
use super::{authenticated, not_found};

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
        for &index in &state.live {
            let app = &state.apps[index];
            if app.orga != orga {
                continue;
            }
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
        VmState::Running | VmState::Stalled => "TASK_RUNNING",
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
