//! The provider's side of the job steps (`paas_provider::Provider`): one
//! task each, its outcome turned into an [`Event`] for the core.

use std::time::Duration;

use paas_core::{Flavor, JobKey, ReadyCheck, RunnerIdx, StepOutcome};
use paas_provider::CreateRequest;
use tracing::{debug, warn};

use super::notices::age_of;
use super::Event;
use crate::runners::Runners;

/// The runner's catalogue, read again (a failure keeps the current one).
pub(super) async fn refresh_flavors(runners: Runners, runner: RunnerIdx) -> Event {
    let io = &runners[runner];
    let table = match io.provider.flavors().await {
        Ok(table) => Some(table),
        Err(error) => {
            warn!(runner = %io.name, %error, "flavor catalogue refresh failed; keeping the previous one");
            None
        }
    };
    Event::Flavors { runner, table }
}

/// Creates (or adopts, when `may_exist`) the job's machine.
pub(super) async fn create(
    runners: Runners,
    job: JobKey,
    name: String,
    flavor: Flavor,
    may_exist: bool,
    system_id: String,
) -> Event {
    let request = CreateRequest {
        job_id: job.job_id,
        name: &name,
        flavor: &flavor,
        may_exist,
        system_id: &system_id,
    };
    let outcome = runners[job.runner].provider.create_or_adopt(request).await;
    Event::Created { job, outcome }
}

/// One readiness check of the job's machine, cut at `timeout` (then "not
/// yet").
pub(super) async fn check_ready(
    runners: Runners,
    job: JobKey,
    app_id: String,
    timeout: Duration,
) -> Event {
    let runner = &runners[job.runner];
    let check = match tokio::time::timeout(timeout, runner.provider.check_ready(&app_id)).await {
        Ok(check) => check,
        Err(_elapsed) => {
            warn!(runner = %runner.name, app_id, "reading application state: no answer before the deadline");
            ReadyCheck::NotYet
        }
    };
    Event::Ready { job, check }
}

/// Hands the job to its ready machine at `target`.
pub(super) async fn deploy(
    runners: Runners,
    job: JobKey,
    app_id: String,
    payload: String,
    target: String,
) -> Event {
    let outcome = runners[job.runner]
        .provider
        .deploy(&app_id, &target, &payload)
        .await;
    Event::Deployed { job, outcome }
}

/// The runner's machines in the cloud (reconciliation).
pub(super) async fn list_apps(
    runners: Runners,
    runner: RunnerIdx,
    default_weight: f64,
    system_id: String,
) -> Event {
    let io = &runners[runner];
    let apps = match io
        .provider
        .list_owned(&io.key, default_weight, &system_id)
        .await
    {
        Ok(apps) => {
            debug!(runner = %io.name, apps = apps.len(), "reconciliation: applications listed");
            Some(apps)
        }
        Err(error) => {
            warn!(runner = %io.name, %error, "reconciliation: could not list applications");
            None
        }
    };
    Event::AppList { runner, apps }
}

/// The cloud's batch signal: which machines' tasks ended.
pub(super) async fn list_machines(runners: Runners, runner: RunnerIdx) -> Event {
    let listing = runners[runner].provider.list_machines().await;
    Event::Machines { runner, listing }
}

/// Deletes a machine of this installation that no job accounts for.
pub(super) async fn delete_orphan(
    runners: Runners,
    runner: RunnerIdx,
    app_id: String,
    name: String,
    created_ms: Option<i64>,
    system_id: String,
) -> Event {
    let io = &runners[runner];
    let age = created_ms
        .map(age_of)
        .unwrap_or_else(|| "unknown".to_owned());
    warn!(runner = %io.name, app_id = %app_id, app = %name, owner = %system_id, age = %age, "deleting an application of this installation that no job accounts for");
    let deleted = matches!(
        io.provider.delete(Some(&app_id), &name, &system_id).await,
        StepOutcome::Done(())
    );
    Event::OrphanDeleted { app_id, deleted }
}

/// Deletes the job's machine, by id or by name.
pub(super) async fn delete(
    runners: Runners,
    job: JobKey,
    app_id: Option<String>,
    name: String,
    system_id: String,
) -> Event {
    let outcome = runners[job.runner]
        .provider
        .delete(app_id.as_deref(), &name, &system_id)
        .await;
    Event::Deleted { job, outcome }
}
