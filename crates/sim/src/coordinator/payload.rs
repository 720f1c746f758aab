//! JSON bodies the coordinator sends: the 201 job payload (reference §2.5)
//! and the job entity of `GET /api/v4/job` (reference §7).
//!
//! The simulated instance has one namespace, `sim`, holding one project per
//! project id, `sim/project-<id>`, whose default branch `main` is the ref of
//! every job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::state::{Job, FAILURE_REASONS};
use super::{Instant, JobStatus};

const NAMESPACE: &str = "sim";
const NAMESPACE_ID: u64 = 1;
const USER_ID: u64 = 1;
const USERNAME: &str = "sim-user";
const REF: &str = "main";
const STAGE: &str = "test";
const IMAGE: &str = "debian:bookworm";

/// Where the simulated instance lives, in space and time.
pub(crate) struct Site<'a> {
    pub base_url: &'a str,
    pub started: Instant,
    pub started_wall: SystemTime,
}

impl Site<'_> {
    fn project_path(&self, project_id: u64) -> String {
        format!("{NAMESPACE}/project-{project_id}")
    }

    fn project_url(&self, project_id: u64) -> String {
        format!("{}/{}", self.base_url, self.project_path(project_id))
    }

    fn host(&self) -> (String, u16, String) {
        match url::Url::parse(self.base_url) {
            Ok(url) => (
                url.host_str().unwrap_or("localhost").to_string(),
                url.port_or_known_default().unwrap_or(80),
                url.scheme().to_string(),
            ),
            Err(_) => ("localhost".to_string(), 80, "http".to_string()),
        }
    }

    /// The HTTPS/HTTP clone URL with `gitlab-ci-token:<job token>@` in it.
    fn repo_url(&self, job: &Job) -> String {
        let path = format!("/{}.git", self.project_path(job.spec.project_id));
        match url::Url::parse(self.base_url) {
            Ok(mut url) => {
                url.set_path(&path);
                // Setting credentials fails only for URLs that cannot have
                // them (no host), which a listener's URL always has.
                let _ = url.set_username("gitlab-ci-token");
                let _ = url.set_password(Some(&job.token));
                url.to_string()
            }
            Err(_) => format!("{}{}", self.base_url, path),
        }
    }

    fn date(&self, at: Instant) -> String {
        iso8601(self.started_wall + at.saturating_duration_since(self.started))
    }
}

/// The body of a 201 on `POST /jobs/request`.
pub(crate) fn job_payload(
    site: &Site<'_>,
    job: &Job,
    now: Instant,
    queue_size: u64,
    queue_depth: u64,
) -> Value {
    let id = job.record.id;
    let project_id = job.spec.project_id;
    let project_name = format!("project-{project_id}");
    let timeout = job.spec.timeout_secs;
    let time_in_queue = now
        .saturating_duration_since(job.record.queued_at)
        .as_secs_f64();
    json!({
        "id": id,
        "token": job.token,
        "allow_git_fetch": true,
        "job_info": {
            "id": id,
            "name": job.spec.name,
            "stage": STAGE,
            "pipeline_id": job.pipeline_id,
            "project_id": project_id,
            "project_name": project_name,
            "project_full_path": site.project_path(project_id),
            "namespace_id": NAMESPACE_ID,
            "root_namespace_id": NAMESPACE_ID,
            "organization_id": 1,
            "user_id": USER_ID,
            "scoped_user_id": null,
            "time_in_queue_seconds": time_in_queue,
            // A string in GitLab, not a number (reference §2.5).
            "project_jobs_running_on_instance_runners_count": "0",
            "queue_size": queue_size,
            "queue_depth": queue_depth,
        },
        "git_info": {
            "repo_url": site.repo_url(job),
            "repo_object_format": "sha1",
            "ref": REF,
            "sha": job.sha,
            "before_sha": job.before_sha,
            "ref_type": "branch",
            "refspecs": [
                format!("+refs/pipelines/{0}:refs/pipelines/{0}", job.pipeline_id),
                format!("+refs/heads/{REF}:refs/remotes/origin/{REF}"),
            ],
            "depth": 20,
            "protected": false,
        },
        "runner_info": {
            "timeout": timeout,
            "runner_session_url": null,
        },
        "variables": variables(site, job),
        "steps": [{
            "name": "script",
            "script": [format!("echo 'simulated job {}'", job.spec.name)],
            "timeout": timeout,
            "when": "on_success",
            "allow_failure": false,
        }],
        "hooks": [],
        "image": {
            "name": IMAGE,
            "entrypoint": null,
            "ports": [],
            "executor_opts": {},
            "pull_policy": null,
        },
        "services": [],
        "artifacts": [],
        "cache": [],
        "credentials": [{
            "type": "registry",
            "url": format!("{}:5050", site.host().0),
            "username": "gitlab-ci-token",
            "password": job.token,
        }],
        "dependencies": [],
        "features": {
            "trace_sections": true,
            "failure_reasons": FAILURE_REASONS,
        },
    })
}

/// The `Entities::Ci::Job` of `GET /api/v4/job` and the cancel call.
pub(crate) fn job_entity(site: &Site<'_>, job: &Job) -> Value {
    let record = &job.record;
    let project_id = job.spec.project_id;
    let created_at = site.date(record.queued_at);
    // `started_at` is set when the job becomes running: under two-phase
    // commit at the commit, so preparation time is neither in `duration`
    // nor billed (reference §2.6).
    let started_at = record.committed_at.map(|at| site.date(at));
    let finished_at = record.finished_at.map(|at| site.date(at));
    let duration = record.committed_at.map(|started| {
        record
            .finished_at
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(started)
            .as_secs_f64()
    });
    let queued_duration = record
        .committed_at
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(record.queued_at)
        .as_secs_f64();
    let project_url = site.project_url(project_id);
    let mut entity = json!({
        "id": record.id,
        "status": record.status.as_str(),
        "stage": STAGE,
        "name": job.spec.name,
        "ref": REF,
        "tag": false,
        "coverage": null,
        "allow_failure": false,
        "created_at": created_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "erased_at": null,
        "duration": duration,
        "queued_duration": queued_duration,
        "user": {
            "id": USER_ID,
            "username": USERNAME,
            "name": "Sim User",
            "state": "active",
            "web_url": format!("{}/{USERNAME}", site.base_url),
        },
        "commit": {
            "id": job.sha,
            "short_id": &job.sha[..8.min(job.sha.len())],
            "title": "Simulated commit",
            "message": "Simulated commit\n",
            "author_name": "Sim User",
            "created_at": created_at,
            "parent_ids": [job.before_sha],
        },
        "pipeline": {
            "id": job.pipeline_id,
            "iid": record.id,
            "project_id": project_id,
            "sha": job.sha,
            "ref": REF,
            "status": record.status.as_str(),
            "source": "push",
            "created_at": created_at,
            "updated_at": site.date(job.updated_at),
            "web_url": format!("{project_url}/-/pipelines/{}", job.pipeline_id),
        },
        "web_url": format!("{project_url}/-/jobs/{}", record.id),
        "project": { "ci_job_token_scope_enabled": false },
        "artifacts": [],
        "runner": null,
        "runner_manager": null,
        "artifacts_expire_at": null,
        "archived": false,
        "tag_list": [],
    });
    if record.status == JobStatus::Failed {
        entity["failure_reason"] = json!(record.failure_reason);
    }
    entity
}

fn variables(site: &Site<'_>, job: &Job) -> Vec<Value> {
    let id = job.record.id;
    let project_id = job.spec.project_id;
    let project_path = site.project_path(project_id);
    let project_url = site.project_url(project_id);
    let (host, port, protocol) = site.host();
    let public = |key: &str, value: String| json!({"key": key, "value": value, "public": true, "masked": false});
    let secret = |key: &str, value: String| json!({"key": key, "value": value, "public": false, "masked": true});
    let mut variables = vec![
        public("CI_PIPELINE_ID", job.pipeline_id.to_string()),
        public(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", job.pipeline_id),
        ),
        public("CI_PIPELINE_SOURCE", "push".to_string()),
        public("CI_JOB_ID", id.to_string()),
        public("CI_JOB_URL", format!("{project_url}/-/jobs/{id}")),
        public("CI_JOB_NAME", job.spec.name.clone()),
        public("CI_JOB_STAGE", STAGE.to_string()),
        secret("CI_JOB_TOKEN", job.token.clone()),
        public("CI_REGISTRY_USER", "gitlab-ci-token".to_string()),
        secret("CI_REGISTRY_PASSWORD", job.token.clone()),
        json!({"key": "CI_REPOSITORY_URL", "value": site.repo_url(job), "public": false, "masked": false}),
        public("CI", "true".to_string()),
        public("GITLAB_CI", "true".to_string()),
        public("CI_SERVER", "yes".to_string()),
        public("CI_SERVER_NAME", "GitLab".to_string()),
        public("CI_SERVER_URL", site.base_url.to_string()),
        public("CI_SERVER_HOST", host),
        public("CI_SERVER_PORT", port.to_string()),
        public("CI_SERVER_PROTOCOL", protocol),
        public("CI_API_V4_URL", format!("{}/api/v4", site.base_url)),
        public("CI_PROJECT_ID", project_id.to_string()),
        public("CI_PROJECT_NAME", format!("project-{project_id}")),
        public("CI_PROJECT_TITLE", format!("Project {project_id}")),
        public("CI_PROJECT_PATH", project_path.clone()),
        public("CI_PROJECT_PATH_SLUG", project_path.replace('/', "-")),
        public("CI_PROJECT_NAMESPACE", NAMESPACE.to_string()),
        public("CI_PROJECT_NAMESPACE_ID", NAMESPACE_ID.to_string()),
        public("CI_PROJECT_ROOT_NAMESPACE", NAMESPACE.to_string()),
        public("CI_PROJECT_URL", project_url),
        public("CI_PROJECT_VISIBILITY", "public".to_string()),
        public("CI_DEFAULT_BRANCH", REF.to_string()),
        public("CI_COMMIT_SHA", job.sha.clone()),
        public(
            "CI_COMMIT_SHORT_SHA",
            job.sha[..8.min(job.sha.len())].to_string(),
        ),
        public("CI_COMMIT_BEFORE_SHA", job.before_sha.clone()),
        public("CI_COMMIT_REF_NAME", REF.to_string()),
        public("CI_COMMIT_REF_SLUG", REF.to_string()),
        public("CI_COMMIT_BRANCH", REF.to_string()),
        public("CI_NODE_TOTAL", "1".to_string()),
        public("GITLAB_USER_ID", USER_ID.to_string()),
        public("GITLAB_USER_LOGIN", USERNAME.to_string()),
    ];
    // Project and pipeline variables come after the predefined ones, so a
    // user's value wins for the runner, as in GitLab.
    variables.extend(
        job.spec.variables.iter().map(
            |(key, value)| json!({"key": key, "value": value, "public": false, "masked": false}),
        ),
    );
    variables
}

/// `2024-05-01T12:34:56.789Z`, the form GitLab's API uses.
fn iso8601(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso8601_utc() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let time = UNIX_EPOCH + Duration::from_millis(1_709_251_199_250);
        assert_eq!(iso8601(time), "2024-02-29T23:59:59.250Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
