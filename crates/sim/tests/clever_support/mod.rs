//! Helpers shared by the Clever Cloud simulator tests: starting a simulator,
//! calling its API, pushing build contexts with the real git client, and a
//! tiny fake coordinator with Rails' trace and update semantics.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, put};
use axum::Router;
use paas_sim::clever::{CleverConfig, CleverSim};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::Notify;

pub const WAIT: Duration = Duration::from_secs(20);

/// A running simulator and the temp dir holding its repositories.
pub struct Sim {
    pub sim: CleverSim,
    pub api: Api,
    _git_root: TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.sim.shutdown();
    }
}

pub async fn start_sim(adjust: impl FnOnce(&mut CleverConfig)) -> Sim {
    let git_root = TempDir::new().expect("temp dir");
    let mut config = CleverConfig::new(git_root.path().join("repos"));
    config.repo_ready_delay = Duration::from_millis(20);
    config.boot_delay = Duration::from_millis(20);
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = CleverSim::start(listener, config).await.expect("start");
    let api = Api::new(&sim);
    Sim {
        sim,
        api,
        _git_root: git_root,
    }
}

/// A small client of the simulated API, with the legacy token scheme.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub orga: String,
    pub token: String,
}

impl Api {
    pub fn new(sim: &CleverSim) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: sim.api_url(),
            orga: sim.config().orga_id.clone(),
            token: sim.config().token.clone(),
        }
    }

    pub fn apps_url(&self) -> String {
        format!("{}/organisations/{}/applications", self.base, self.orga)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, url)
            .header("Authorization", format!("token {}", self.token));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, &self.apps_url(), Some(body))
            .await
    }

    pub async fn get_app(&self, app_id: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            &format!("{}/{app_id}", self.apps_url()),
            None,
        )
        .await
    }

    pub async fn delete_app(&self, app_id: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::DELETE,
            &format!("{}/{app_id}", self.apps_url()),
            None,
        )
        .await
    }

    pub async fn list(&self) -> (u16, Value) {
        self.call(reqwest::Method::GET, &self.apps_url(), None)
            .await
    }

    /// Creates an app as the reference runner does and returns its id.
    pub async fn create_ok(&self, sim: &CleverSim, name: &str, flavor: &str) -> String {
        let (status, app) = self.create(create_body(sim, name, flavor)).await;
        assert_eq!(status, 200, "create {name}: {app}");
        app["id"].as_str().expect("id").to_owned()
    }
}

/// The create body of the reference runner (reference clever §9 step 3).
pub fn create_body(sim: &CleverSim, name: &str, flavor: &str) -> Value {
    json!({
        "zone": "par",
        "instanceLifetime": "TASK",
        "instanceType": "docker",
        "deploy": "git",
        "instanceVariant": "70d676a0-a775-4dc9-a43d-3121036e8515",
        "maxInstances": 1,
        "minInstances": 1,
        "instanceVersion": sim.docker_version(),
        "minFlavor": format!("heptapod-runner-{flavor}"),
        "maxFlavor": format!("heptapod-runner-{flavor}"),
        "name": name,
    })
}

/// Creates an app and waits until its repository is ready.
pub async fn ready_app(sim: &Sim, name: &str) -> String {
    let app_id = sim.api.create_ok(&sim.sim, name, "S").await;
    let ready = sim
        .sim
        .wait_until(
            |sim| {
                sim.app(&app_id)
                    .is_some_and(|app| app.repo_ready_at.is_some())
            },
            WAIT,
        )
        .await;
    assert!(ready, "repository of {app_id} never ready");
    app_id
}

/// Runs git with an isolated configuration; returns (success, stdout+stderr).
pub async fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env("GIT_AUTHOR_NAME", "Sim Test")
        .env("GIT_AUTHOR_EMAIL", "sim@test.invalid")
        .env("GIT_COMMITTER_NAME", "Sim Test")
        .env("GIT_COMMITTER_EMAIL", "sim@test.invalid")
        .output()
        .await
        .expect("run git");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A build context like the reference runner's (Dockerfile, runner.toml,
/// job.json), committed in a fresh work repository.
pub struct BuildContext {
    pub dir: TempDir,
    pub head: String,
}

pub async fn build_context(files: &[(&str, String)]) -> BuildContext {
    let dir = TempDir::new().expect("temp dir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write file");
    }
    let (ok, out) = git(dir.path(), &["init", "-q", "-b", "master"]).await;
    assert!(ok, "git init: {out}");
    let (ok, out) = git(dir.path(), &["add", "."]).await;
    assert!(ok, "git add: {out}");
    let (ok, out) = git(dir.path(), &["commit", "-q", "-m", "Job definition"]).await;
    assert!(ok, "git commit: {out}");
    let (ok, head) = git(dir.path(), &["rev-parse", "HEAD"]).await;
    assert!(ok);
    BuildContext {
        dir,
        head: head.trim().to_owned(),
    }
}

pub const DOCKERFILE: &str = "FROM registry.heptapod.net:443/heptapod/heptapod-runner/runner:0.7.0\n\
COPY runner.toml /etc/heptapod-runner/runner.toml\n\
COPY job.json /etc/heptapod-runner/job.json\n\
ENTRYPOINT [\"/usr/bin/gitlab-runner\", \"exec-fetched-job\", \"--config\", \"/etc/heptapod-runner/runner.toml\",\"/etc/heptapod-runner/job.json\"]\n";

pub fn runner_toml(coordinator_url: &str) -> String {
    format!(
        "[[runners]]\nname = \"sim-runner\"\nurl = \"{coordinator_url}\"\ntoken = \"glrt-Ab1Cd2Ef3Gh4\"\nexecutor = \"docker\"\n\n[runners.docker]\nimage = \"debian\"\n"
    )
}

pub fn job_json(job_id: u64, job_token: &str, variables: &[(&str, &str)]) -> String {
    let mut vars: Vec<Value> = vec![
        json!({"key": "CI_JOB_ID", "value": job_id.to_string(), "public": true, "masked": false}),
    ];
    for (key, value) in variables {
        vars.push(json!({"key": key, "value": value, "public": true, "masked": false}));
    }
    json!({
        "id": job_id,
        "token": job_token,
        "allow_git_fetch": true,
        "job_info": {"id": job_id, "name": "test", "stage": "test", "project_id": 1, "project_name": "p"},
        "git_info": {"repo_url": "http://gitlab.invalid/p.git", "ref": "main", "sha": "0", "before_sha": "0", "ref_type": "branch", "refspecs": [], "depth": 20},
        "runner_info": {"timeout": 3600, "runner_session_url": null},
        "variables": vars,
        "steps": [{"name": "script", "script": ["true"], "timeout": 3600, "when": "on_success", "allow_failure": false}],
        "image": null,
        "services": [],
        "artifacts": [],
        "cache": [],
        "credentials": [],
        "dependencies": [],
        "features": {"trace_sections": true, "failure_reasons": ["script_failure", "unknown_failure"]},
    })
    .to_string()
}

/// Pushes master of `context` to `url` the way `cli` does (HEAD to
/// refs/heads/master).
pub async fn push(context: &BuildContext, url: &str) -> (bool, String) {
    git(
        context.dir.path(),
        &["push", "-q", url, "HEAD:refs/heads/master"],
    )
    .await
}

/// Inserts `user:password@` into an `http://` URL.
pub fn with_credentials(url: &str, user: &str, password: &str) -> String {
    url.replacen("http://", &format!("http://{user}:{password}@"), 1)
}

// ---------------------------------------------------------------------------
// Fake coordinator
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub struct FakeJob {
    pub token: String,
    /// `running`, `success`, `failed`, `canceled`, `canceling`.
    pub status: String,
    pub trace: Vec<u8>,
    /// (Content-Range header, body length, answer status) of every PATCH.
    pub patches: Vec<(String, usize, u16)>,
    /// Bodies of every PUT, with the answer status.
    pub puts: Vec<(Value, u16)>,
    /// Final PUTs answered 202 before one is applied.
    pub accept_final_after: u32,
}

#[derive(Clone, Default)]
pub struct Coordinator {
    pub jobs: Arc<Mutex<HashMap<u64, FakeJob>>>,
    pub changed: Arc<Notify>,
    pub url: String,
}

impl Coordinator {
    pub async fn start() -> Coordinator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let coordinator = Coordinator {
            url: format!("http://127.0.0.1:{port}/"),
            ..Coordinator::default()
        };
        let router = Router::new()
            .route("/api/v4/jobs/{id}/trace", patch(patch_trace))
            .route("/api/v4/jobs/{id}", put(put_job))
            .with_state(coordinator.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        coordinator
    }

    pub fn add_job(&self, id: u64, token: &str) {
        self.jobs.lock().expect("lock").insert(
            id,
            FakeJob {
                token: token.to_owned(),
                status: "running".to_owned(),
                ..FakeJob::default()
            },
        );
    }

    pub fn job(&self, id: u64) -> FakeJob {
        self.jobs
            .lock()
            .expect("lock")
            .get(&id)
            .cloned()
            .expect("job")
    }

    pub fn update(&self, id: u64, change: impl FnOnce(&mut FakeJob)) {
        if let Some(job) = self.jobs.lock().expect("lock").get_mut(&id) {
            change(job);
        }
        self.changed.notify_waiters();
    }

    /// Someone else (e.g. a dispatcher) appends to the job log.
    pub fn append(&self, id: u64, bytes: &[u8]) {
        self.update(id, |job| job.trace.extend_from_slice(bytes));
    }

    pub async fn wait_until(
        &self,
        pred: impl Fn(&Coordinator) -> bool,
        deadline: Duration,
    ) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(self) {
                return true;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return pred(self);
            }
        }
    }
}

fn executing(status: &str) -> bool {
    status == "running" || status == "canceling"
}

fn forbidden(job_status: Option<&str>) -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        "{\"message\":\"403 Forbidden - Job is not running\"}",
    )
        .into_response();
    if let Some(status) = job_status {
        response
            .headers_mut()
            .insert("Job-Status", status.parse().expect("header"));
    }
    response
}

/// Rails' `PATCH /jobs/:id/trace` (reference gitlab §4): start must equal
/// the stored length, else 416 with `Range: 0-<length>`.
async fn patch_trace(
    State(coordinator): State<Coordinator>,
    UrlPath(id): UrlPath<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = {
        let mut jobs = coordinator.jobs.lock().expect("lock");
        let Some(job) = jobs.get_mut(&id) else {
            return forbidden(None);
        };
        let token = headers.get("JOB-TOKEN").and_then(|v| v.to_str().ok());
        let range = headers
            .get("Content-Range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, response) = if token != Some(job.token.as_str()) {
            (403, forbidden(None))
        } else if !executing(&job.status) {
            (403, forbidden(Some(&job.status)))
        } else {
            match range
                .as_deref()
                .and_then(|r| r.split_once('-'))
                .and_then(|(start, _)| start.parse::<usize>().ok())
            {
                None => (
                    400,
                    (StatusCode::BAD_REQUEST, "Missing header Content-Range").into_response(),
                ),
                Some(start) if start != job.trace.len() => (
                    416,
                    (
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        [("Range", format!("0-{}", job.trace.len()))],
                    )
                        .into_response(),
                ),
                Some(_) => {
                    job.trace.extend_from_slice(&body);
                    (
                        202,
                        (
                            StatusCode::ACCEPTED,
                            [
                                ("Range", format!("0-{}", job.trace.len())),
                                ("Job-Status", job.status.clone()),
                                ("X-GitLab-Trace-Update-Interval", "60".to_owned()),
                            ],
                        )
                            .into_response(),
                    )
                }
            }
        };
        job.patches
            .push((range.unwrap_or_default(), body.len(), status));
        response
    };
    coordinator.changed.notify_waiters();
    response
}

/// Rails' `PUT /jobs/:id` (reference gitlab §3), with optional 202s before
/// a final state is applied.
async fn put_job(
    State(coordinator): State<Coordinator>,
    UrlPath(id): UrlPath<u64>,
    body: Bytes,
) -> Response {
    let response = {
        let mut jobs = coordinator.jobs.lock().expect("lock");
        let Some(job) = jobs.get_mut(&id) else {
            return forbidden(None);
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let token_ok = body["token"].as_str() == Some(job.token.as_str());
        let state = body["state"].as_str().unwrap_or("").to_owned();
        let (status, response) = if !token_ok {
            (403, forbidden(None))
        } else if !executing(&job.status) {
            (403, forbidden(Some(&job.status)))
        } else if state == "running" {
            (
                200,
                (StatusCode::OK, [("Job-Status", job.status.clone())], "200").into_response(),
            )
        } else if state == "success" || state == "failed" {
            if job.accept_final_after > 0 {
                job.accept_final_after -= 1;
                (
                    202,
                    (
                        StatusCode::ACCEPTED,
                        [("X-GitLab-Trace-Update-Interval", "0")],
                        "202",
                    )
                        .into_response(),
                )
            } else {
                job.status = if job.status == "canceling" {
                    "canceled".to_owned()
                } else {
                    state.clone()
                };
                (
                    200,
                    (StatusCode::OK, [("Job-Status", job.status.clone())], "200").into_response(),
                )
            }
        } else {
            (400, (StatusCode::BAD_REQUEST, "400").into_response())
        };
        job.puts.push((body, status));
        response
    };
    coordinator.changed.notify_waiters();
    response
}

pub fn crc32_hex(bytes: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(bytes))
}
