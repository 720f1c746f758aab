//! One-time import of heptapod-paas-runner's JSON state file, so that an
//! operator switching over keeps tracking (and eventually deleting) the
//! machines of jobs the reference left running.

use std::path::{Path, PathBuf};

use paas_core::{FailureKind, JobRecord, Secret, StageRecord};
use paas_store::Store;
use serde::Deserialize;
use tracing::{info, warn};

/// A job handle as the reference dumps it.
#[derive(Debug, Deserialize)]
struct Handle {
    runner_name: String,
    job_id: u64,
    token: String,
    #[serde(default)]
    expected_weight: f64,
    #[serde(default)]
    paas_resource: Option<Resource>,
}

#[derive(Debug, Deserialize)]
struct Resource {
    id: String,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    launched: bool,
}

#[derive(Debug, Deserialize)]
struct ReferenceState {
    #[serde(default)]
    launched: Vec<Handle>,
    #[serde(default)]
    to_decommission: Vec<Handle>,
    #[serde(default)]
    standby_resources: Vec<Handle>,
    #[serde(default)]
    pending: Vec<(Handle, serde_json::Value)>,
}

/// Imports `path` (the reference's `state_file`) into `store` if it exists,
/// then renames it aside. Returns the number of jobs imported.
pub fn import_if_present(path: &Path, store: &Store) -> anyhow::Result<usize> {
    if !path.exists() {
        return Ok(0);
    }
    let text = std::fs::read_to_string(path).map_err(|error| {
        anyhow::anyhow!(
            "{}: cannot read the heptapod-paas-runner state file: {error}",
            path.display()
        )
    })?;
    let state: ReferenceState = serde_json::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "{}: not a heptapod-paas-runner state file: {error}",
            path.display()
        )
    })?;
    let records = records_of(state);
    for record in &records {
        store.save(record)?;
    }
    let aside = aside_path(path);
    std::fs::rename(path, &aside).map_err(|error| {
        anyhow::anyhow!(
            "{}: imported, but cannot rename it aside: {error}",
            path.display()
        )
    })?;
    info!(jobs = records.len(), from = %path.display(), renamed_to = %aside.display(), "imported heptapod-paas-runner state");
    Ok(records.len())
}

fn aside_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".imported");
    path.with_file_name(name)
}

fn records_of(state: ReferenceState) -> Vec<JobRecord> {
    let mut records = Vec::new();
    for handle in state.launched {
        records.push(record(handle, None, StageRecord::Running));
    }
    for handle in state
        .to_decommission
        .into_iter()
        .chain(state.standby_resources)
    {
        records.push(record(handle, None, StageRecord::Decommissioning));
    }
    for (handle, job_data) in state.pending {
        let stage = match &handle.paas_resource {
            Some(resource) if resource.launched => StageRecord::Launching,
            Some(_) => StageRecord::Deploying,
            // The creation may have happened: it is resolved by name.
            None => StageRecord::Provisioning,
        };
        records.push(record(handle, Some(job_data), stage));
    }
    records
}

fn record(handle: Handle, job_data: Option<serde_json::Value>, stage: StageRecord) -> JobRecord {
    let flavor = job_data
        .as_ref()
        .and_then(|data| data.get("variables"))
        .and_then(|vars| vars.as_array())
        .and_then(|vars| {
            vars.iter()
                .rev()
                .find(|var| {
                    var.get("key").and_then(|k| k.as_str())
                        == Some(paas_core::messages::FLAVOR_VARIABLE)
                })
                .and_then(|var| var.get("value").and_then(|v| v.as_str()).map(str::to_owned))
        })
        .unwrap_or_default();
    let project_id = job_data
        .as_ref()
        .and_then(|data| data.get("job_info"))
        .and_then(|info| info.get("project_id"))
        .and_then(|id| id.as_u64());
    if stage == StageRecord::Provisioning && job_data.is_none() {
        warn!(
            job_id = handle.job_id,
            "imported pending job without its definition"
        );
    }
    let (app_id, app_weight) = match &handle.paas_resource {
        Some(resource) => (
            Some(resource.id.clone()),
            resource.weight.unwrap_or(handle.expected_weight),
        ),
        None => (None, 0.0),
    };
    JobRecord {
        runner_key: handle.runner_name,
        job_id: handle.job_id,
        token: Secret::new(handle.token),
        project_id,
        payload: job_data.map(|data| data.to_string()).unwrap_or_default(),
        failure_reasons: None,
        flavor,
        expected_weight: handle.expected_weight,
        stage,
        app_maybe: app_id.is_none() && stage == StageRecord::Provisioning,
        app_id,
        app_weight,
        failure_kind: None::<FailureKind>,
        failure_message: None,
        message_written: false,
        failed: false,
        // The reference took these jobs without two-phase commit.
        confirmed: true,
        log_bytes: 0,
        slow_notice_sent: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_state_is_imported_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paas-runner-state.json");
        let state = serde_json::json!({
            "launched": [{"runner_name": "glrt-abc", "job_id": 11, "token": "t11", "trace_offset": 0, "expected_weight": 5.6,
                          "paas_resource": {"id": "app_11", "gitlab_namespace": null, "weight": 5.6, "launched": true, "deploy_url": "https://x"}}],
            "to_decommission": [{"runner_name": "glrt-abc", "job_id": 12, "token": "t12", "trace_offset": 0, "expected_weight": 1.0,
                                 "paas_resource": {"id": "app_12", "weight": 1.0, "launched": true, "deploy_url": "https://x"}}],
            "standby_resources": [],
            "pending": [[{"runner_name": "glrt-abc", "job_id": 13, "token": "t13", "trace_offset": 0, "expected_weight": 13.4},
                         {"id": 13, "token": "t13", "job_info": {"project_id": 4},
                          "variables": [{"key": "CI_CLEVER_CLOUD_FLAVOR", "value": "M", "public": true}]}]]
        });
        std::fs::write(&path, state.to_string()).unwrap();
        let store = Store::open_in_memory().unwrap();
        assert_eq!(import_if_present(&path, &store).unwrap(), 3);
        assert!(!path.exists());
        assert!(dir.path().join("paas-runner-state.json.imported").exists());
        let records = store.load().unwrap();
        let by_id = |id: u64| records.iter().find(|r| r.job_id == id).unwrap();
        assert_eq!(by_id(11).stage, StageRecord::Running);
        assert_eq!(by_id(11).app_id.as_deref(), Some("app_11"));
        assert_eq!(by_id(12).stage, StageRecord::Decommissioning);
        assert_eq!(by_id(13).stage, StageRecord::Provisioning);
        assert!(by_id(13).app_maybe);
        assert_eq!(by_id(13).flavor, "M");
        assert_eq!(by_id(13).project_id, Some(4));
        assert_eq!(by_id(13).token.expose(), "t13");
        // A second start finds nothing to import.
        assert_eq!(import_if_present(&path, &store).unwrap(), 0);
    }

    #[test]
    fn garbage_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let store = Store::open_in_memory().unwrap();
        let error = import_if_present(&path, &store).unwrap_err().to_string();
        assert!(
            error.contains("state.json") && error.contains("not a heptapod-paas-runner state file"),
            "{error}"
        );
        assert!(path.exists(), "left in place");
    }
}
