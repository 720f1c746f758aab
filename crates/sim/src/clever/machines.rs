//! Simulated Clever Cloud VMs: what a push to a TASK Docker application
//! deploys when its image runs `gitlab-runner exec-fetched-job runner.toml
//! job.json`, as the reference runner's build context does.
//!
//! On each push to master the VM reads `Dockerfile`, `runner.toml` and
//! `job.json` from the pushed commit, validates them as a real image build
//! and runner start would, boots for [`CleverConfig::boot_delay`], then plays
//! gitlab-runner towards the coordinator named in `runner.toml`: trace
//! PATCHes and a final PUT with the semantics of
//! `reference/gitlab-runner-api.md` §3–§6, including the loss of its own log
//! bytes when someone else wrote to the job log first (§15 item 20).
//!
//! Each VM is a tokio task; deleting the application stops it at once.
//! Deployments of one application run one at a time, later pushes queue
//! (reference clever §4.9). REGULAR applications are simulated like TASK
//! ones: the container runs once and the VM stops (a real REGULAR app would
//! restart it and keep billing).
//!
//! [`CleverConfig::boot_delay`]: crate::clever::CleverConfig::boot_delay

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::CleverSim;
use crate::vars;

/// The lifecycle of the VM of an application's latest deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmState {
    /// Nothing pushed yet.
    #[default]
    NotDeployed,
    /// Boot and image build after a push.
    Booting,
    /// The inner runner is running the job.
    Running,
    /// Booted, but the inner runner never starts (`SIM_VM_NEVER_STARTS`).
    Stalled,
    /// The task ended, or the application was deleted.
    Stopped,
}

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The inner runner sent its final update; see
    /// [`VmRecord::reported_state`].
    Completed,
    /// The application was deleted while the VM was booting or running.
    Deleted,
    /// The coordinator told the inner runner to stop (403, or `Job-Status`
    /// `canceled`/`failed`), or it canceled gracefully on `canceling`.
    Canceled,
    /// The pushed build context is not something the image could run.
    InvalidBuild(String),
    /// The VM booted but its runner never started; it ran until deleted.
    NeverStarted,
    /// The coordinator stayed unreachable through every retry.
    CoordinatorUnreachable(String),
}

/// What happened on an application's VM, for its latest deployment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmRecord {
    pub state: VmState,
    /// Deployments started (pushes that moved master).
    pub deployments: u32,
    /// Commit of the latest deployment.
    pub commit: Option<String>,
    pub pushed_at: Option<Instant>,
    /// End of boot and image build: the container starts.
    pub booted_at: Option<Instant>,
    /// The inner runner's first write to the job log.
    pub job_started_at: Option<Instant>,
    pub finished_at: Option<Instant>,
    pub exit: Option<VmExit>,
    /// Job id read from `job.json`.
    pub job_id: Option<u64>,
    /// Size of the inner runner's own log (what its checksum covers).
    pub log_bytes: u64,
    /// Bytes of that log the coordinator accepted; the difference was lost
    /// to 416 jumps (or never sent).
    pub log_bytes_sent: u64,
    /// `state` of the final PUT (`success` or `failed`), once sent.
    pub reported_state: Option<String>,
}

impl VmRecord {
    fn start_deployment(&mut self, commit: &str, now: Instant) {
        *self = VmRecord {
            state: VmState::Booting,
            deployments: self.deployments + 1,
            commit: Some(commit.to_owned()),
            pushed_at: Some(now),
            ..VmRecord::default()
        };
    }
}

/// Writes the end of a VM's life on application deletion, synchronously,
/// so that the record is final when the DELETE answers.
pub(crate) fn record_deletion(vm: &mut VmRecord, now: Instant) {
    let exit = match vm.state {
        VmState::Booting | VmState::Running => VmExit::Deleted,
        VmState::Stalled => VmExit::NeverStarted,
        VmState::NotDeployed | VmState::Stopped => return,
    };
    vm.state = VmState::Stopped;
    vm.finished_at = Some(now);
    vm.exit = Some(exit);
}

/// The simulator's handle on one application's VM task.
pub(crate) struct VmHandle {
    deployments: mpsc::Sender<String>,
    stop: watch::Sender<bool>,
}

/// Deployments queued behind a running one; Clever runs one at a time per
/// application (reference clever §4.9).
const MAX_QUEUED_DEPLOYMENTS: usize = 16;

impl VmHandle {
    /// Queues a deployment of `commit`.
    pub(crate) fn deploy(&self, commit: &str) {
        if self.deployments.try_send(commit.to_owned()).is_err() {
            tracing::warn!(commit, "simulated VM: deployment queue full, push ignored");
        }
    }

    /// Stops the VM at once, whatever it is doing.
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Starts the VM task of `app_id`, idle until a deployment is queued.
pub(crate) fn spawn(sim: CleverSim, app_id: String) -> VmHandle {
    let (deployments_tx, deployments_rx) = mpsc::channel(MAX_QUEUED_DEPLOYMENTS);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(vm_main(sim, app_id, deployments_rx, stop_rx));
    VmHandle {
        deployments: deployments_tx,
        stop: stop_tx,
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the simulator is gone: stop as well.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn vm_main(
    sim: CleverSim,
    app_id: String,
    mut deployments: mpsc::Receiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let commit = tokio::select! {
            _ = stopped(&mut stop) => return,
            commit = deployments.recv() => match commit {
                Some(commit) => commit,
                None => return,
            },
        };
        let pushed_at = Instant::now();
        sim.update_vm(&app_id, |vm| vm.start_deployment(&commit, pushed_at));
        let exit = tokio::select! {
            // The deleter has written the final record.
            _ = stopped(&mut stop) => return,
            exit = run_deployment(&sim, &app_id, &commit) => exit,
        };
        tracing::debug!(app_id, ?exit, "simulated VM stopped");
        let finished_at = Instant::now();
        sim.update_vm(&app_id, |vm| {
            vm.state = VmState::Stopped;
            vm.finished_at = Some(finished_at);
            vm.exit = Some(exit);
        });
    }
}

/// One deployment: build, boot, run the job. Returns only when the task
/// ends; a VM that never starts its runner waits here until deleted.
async fn run_deployment(sim: &CleverSim, app_id: &str, commit: &str) -> VmExit {
    let build = read_build(&sim.repo_path(app_id), commit).await;
    // The image build and the boot take this long whether or not the build
    // context is valid; a broken one fails at its end.
    tokio::time::sleep(sim.config().boot_delay).await;
    let build = match build {
        Ok(Some(build)) => build,
        Ok(None) => return run_plain_container(sim, app_id).await,
        Err(reason) => {
            tracing::info!(app_id, reason, "simulated VM: invalid build context");
            return VmExit::InvalidBuild(reason);
        }
    };
    let booted_at = Instant::now();
    let never_starts = build.job.flag(vars::VM_NEVER_STARTS);
    sim.update_vm(app_id, |vm| {
        vm.booted_at = Some(booted_at);
        vm.job_id = Some(build.job.id);
        vm.state = if never_starts {
            VmState::Stalled
        } else {
            VmState::Running
        };
    });
    if never_starts {
        // The VM is up (and billed) but nothing ever reaches the coordinator.
        std::future::pending::<()>().await;
    }
    let mut runner = InnerRunner::new(sim, app_id, &build);
    match runner.run(&build).await {
        Ok(exit) => exit,
        Err(Stop::Canceled) => VmExit::Canceled,
        Err(Stop::Unreachable(error)) => VmExit::CoordinatorUnreachable(error),
    }
}

/// A pushed commit with a `Dockerfile` but no inner runner (what a user of
/// clever-tools deploys): the container runs. A TASK application's runs
/// once and ends (deployment `OK`); a REGULAR one's stays up until the
/// application is deleted, as a real web application would (its
/// deployment is `OK` once up). UNVERIFIED: a real TASK deployment's end
/// state.
async fn run_plain_container(sim: &CleverSim, app_id: &str) -> VmExit {
    let booted_at = Instant::now();
    let task = sim.app(app_id).is_some_and(|app| app.lifetime == "TASK");
    sim.update_vm(app_id, |vm| {
        vm.booted_at = Some(booted_at);
        vm.state = VmState::Running;
    });
    if !task {
        std::future::pending::<()>().await;
    }
    VmExit::Completed
}

/// What the VM read from the pushed commit.
struct Build {
    runner: RunnerEntry,
    job: JobSpec,
}

/// The single `[[runners]]` entry of `runner.toml`.
struct RunnerEntry {
    name: String,
    url: String,
    /// Only the source of the short token in the log header: as
    /// gitlab-runner does for a fetched job, every call authenticates with
    /// the job token (`docs/protocol-notes.md` §2.1), so a placeholder
    /// works as well as the runner token here.
    token: String,
}

/// The parts of `job.json` the simulated runner uses.
struct JobSpec {
    id: u64,
    token: String,
    variables: HashMap<String, String>,
}

impl JobSpec {
    fn variable(&self, key: &str) -> Option<&str> {
        self.variables.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.variable(key).is_some_and(|value| {
            matches!(
                value.trim().to_ascii_lowercase().as_str(),
                "true" | "1" | "yes"
            )
        })
    }

    fn number(&self, key: &str, default: u64) -> u64 {
        self.variable(key)
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(default)
    }
}

async fn git_file(repo: &Path, commit: &str, path: &str) -> Option<Vec<u8>> {
    let output = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .arg("cat-file")
        .arg("blob")
        .arg(format!("{commit}:{path}"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    output.status.success().then_some(output.stdout)
}

/// Reads and validates the build context like the image build and the
/// inner runner's start would; `Err` holds the reason of the failure,
/// `None` means a valid `Dockerfile` without `runner.toml` nor `job.json`
/// (a plain container, not a job).
async fn read_build(repo: &Path, commit: &str) -> Result<Option<Build>, String> {
    let dockerfile = git_file(repo, commit, "Dockerfile")
        .await
        .ok_or("Dockerfile: not found in the pushed commit")?;
    let has_from = String::from_utf8_lossy(&dockerfile)
        .lines()
        .any(|line| line.trim_start().to_ascii_uppercase().starts_with("FROM "));
    if !has_from {
        return Err("Dockerfile: no FROM instruction".to_owned());
    }
    let runner_toml = git_file(repo, commit, "runner.toml").await;
    let job_json = git_file(repo, commit, "job.json").await;
    if runner_toml.is_none() && job_json.is_none() {
        return Ok(None);
    }
    let runner_toml = runner_toml.ok_or("runner.toml: not found in the pushed commit")?;
    let runner = parse_runner_toml(&runner_toml)?;
    let job_json = job_json.ok_or("job.json: not found in the pushed commit")?;
    let job = parse_job_json(&job_json)?;
    Ok(Some(Build { runner, job }))
}

fn parse_runner_toml(bytes: &[u8]) -> Result<RunnerEntry, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "runner.toml: not UTF-8".to_owned())?;
    let config: toml::Table = text
        .parse()
        .map_err(|error| format!("runner.toml: invalid TOML: {error}"))?;
    let runners = config
        .get("runners")
        .and_then(toml::Value::as_array)
        .ok_or("runner.toml: no [[runners]] entry")?;
    let [entry] = runners.as_slice() else {
        return Err(format!(
            "runner.toml: expected exactly one [[runners]] entry, found {}",
            runners.len()
        ));
    };
    let entry = entry
        .as_table()
        .ok_or("runner.toml: [[runners]] entry is not a table")?;
    let text_key = |key: &str| entry.get(key).and_then(toml::Value::as_str);
    let url = text_key("url").ok_or("runner.toml: [[runners]] has no url")?;
    let parsed =
        url::Url::parse(url).map_err(|error| format!("runner.toml: bad url {url:?}: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("runner.toml: url {url:?} is not http(s)"));
    }
    let token = text_key("token").ok_or("runner.toml: [[runners]] has no token")?;
    match text_key("executor") {
        Some("docker") => {}
        Some(other) => {
            return Err(format!(
            "runner.toml: executor {other:?} is not supported by this image, expected \"docker\""
        ))
        }
        None => return Err("runner.toml: [[runners]] has no executor".to_owned()),
    }
    Ok(RunnerEntry {
        name: text_key("name").unwrap_or("paas-runner").to_owned(),
        url: url.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
    })
}

fn parse_job_json(bytes: &[u8]) -> Result<JobSpec, String> {
    let job: Value = serde_json::from_slice(bytes)
        .map_err(|error| format!("job.json: invalid JSON: {error}"))?;
    let id = job
        .get("id")
        .and_then(Value::as_u64)
        .ok_or("job.json: no integer id")?;
    let token = job
        .get("token")
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or("job.json: no token")?
        .to_owned();
    let mut variables = HashMap::new();
    // Lenient, like gitlab-runner: `variables` may be null, items may lack
    // fields (reference gitlab §2.5).
    if let Some(items) = job.get("variables").and_then(Value::as_array) {
        for item in items {
            if let (Some(key), Some(value)) = (
                item.get("key").and_then(Value::as_str),
                item.get("value").and_then(Value::as_str),
            ) {
                variables.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    Ok(JobSpec {
        id,
        token,
        variables,
    })
}

/// Why the inner runner stopped early.
enum Stop {
    /// 403 or `Job-Status: canceled|failed`: abort without a final PUT.
    Canceled,
    Unreachable(String),
}

/// gitlab-runner sends at most 1 MiB per trace PATCH.
const MAX_PATCH_BYTES: usize = 1024 * 1024;
/// Attempts of a request that must get through (final log, final PUT).
const MAX_ATTEMPTS: u32 = 8;
/// A keep-alive PUT after this long without contact (gitlab §5).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// 416 answers in a row before the runner treats the log as failing.
const MAX_RANGE_MISMATCHES: u32 = 32;
/// Rails applies a final state anyway after 5 minutes of 202s (gitlab §3).
const MAX_FINAL_UPDATE_WAIT: Duration = Duration::from_secs(6 * 60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff before retry number `attempt` (1-based): 100 ms doubling, 1 s
/// cap, so that [`MAX_ATTEMPTS`] span about 5 s.
fn backoff(attempt: u32) -> Duration {
    let millis = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    Duration::from_millis(millis.min(1000))
}

/// The simulated gitlab-runner inside the VM.
struct InnerRunner<'a> {
    sim: &'a CleverSim,
    app_id: &'a str,
    http: reqwest::Client,
    job_url: String,
    job_token: String,
    /// Everything this runner wrote to its log.
    log: Vec<u8>,
    /// Where the runner believes the server's log ends.
    offset: usize,
    /// Bytes of `log` the server accepted.
    sent: usize,
    /// After a 404 on PATCH gitlab-runner stops sending the log.
    trace_disabled: bool,
    /// `Job-Status: canceling` seen: finish gracefully.
    cancel_requested: bool,
    started: bool,
    last_contact: tokio::time::Instant,
}

impl<'a> InnerRunner<'a> {
    fn new(sim: &'a CleverSim, app_id: &'a str, build: &Build) -> InnerRunner<'a> {
        InnerRunner {
            sim,
            app_id,
            http: sim.shared.http.clone(),
            job_url: format!("{}/api/v4/jobs/{}", build.runner.url, build.job.id),
            job_token: build.job.token.clone(),
            log: Vec::new(),
            offset: 0,
            sent: 0,
            trace_disabled: false,
            cancel_requested: false,
            started: false,
            last_contact: tokio::time::Instant::now(),
        }
    }

    async fn run(&mut self, build: &Build) -> Result<VmExit, Stop> {
        let job = &build.job;
        let duration = Duration::from_millis(job.number(vars::JOB_DURATION_MS, 1000));
        let lines = job.number(vars::JOB_LOG_LINES, 5);
        let failed = job
            .variable(vars::JOB_RESULT)
            .is_some_and(|result| result.trim().eq_ignore_ascii_case("failed"));

        self.write(&format!(
            "Running with gitlab-runner 15.11.0 (heptapod-runner sim)\n  on {} {}\n",
            build.runner.name,
            short_token(&build.runner.token)
        ));
        self.write("Preparing the \"docker\" executor\n");
        self.flush(false).await?;

        let script_start = tokio::time::Instant::now();
        if lines == 0 {
            self.idle_until(script_start + duration).await?;
        }
        for line in 1..=lines {
            if self.cancel_requested {
                break;
            }
            // Lines are spread evenly; the last one ends the duration.
            let at = script_start + duration.mul_f64(line as f64 / lines as f64);
            self.idle_until(at).await?;
            if self.cancel_requested {
                break;
            }
            self.write(&format!("$ sim step {line}/{lines} of job {}\n", job.id));
            self.flush(false).await?;
        }

        let (state, failure_reason, exit_code) = if self.cancel_requested {
            // gitlab-runner reports a canceled job as failed + unknown_failure,
            // which moves a `canceling` job to `canceled` (gitlab §3, §6).
            self.write("WARNING: Job was canceled\nERROR: Job failed: canceled\n");
            ("failed", Some("unknown_failure"), None)
        } else if failed {
            self.write("ERROR: Job failed: exit code 1\n");
            ("failed", Some("script_failure"), Some(1))
        } else {
            self.write("Job succeeded\n");
            ("success", None, None)
        };
        self.flush(true).await?;
        self.final_update(state, failure_reason, exit_code).await?;
        Ok(if self.cancel_requested {
            VmExit::Canceled
        } else {
            VmExit::Completed
        })
    }

    fn write(&mut self, text: &str) {
        self.log.extend_from_slice(text.as_bytes());
    }

    fn checksum(&self) -> String {
        // gitlab-runner's checksum covers its own buffer, whatever the
        // server ended up storing (gitlab §3, §15.20).
        format!("crc32:{:08x}", crc32fast::hash(&self.log))
    }

    fn record_progress(&self) {
        let (log_bytes, sent) = (self.log.len() as u64, self.sent as u64);
        self.sim.update_vm(self.app_id, |vm| {
            vm.log_bytes = log_bytes;
            vm.log_bytes_sent = sent;
        });
    }

    /// Sends the log from `offset` on, like gitlab-runner's trace PATCHes
    /// (gitlab §4). Transient failures are left for the next flush, except
    /// on the final one, which retries a bounded number of times.
    async fn flush(&mut self, final_flush: bool) -> Result<(), Stop> {
        let mut failures = 0;
        let mut mismatches = 0;
        loop {
            if self.trace_disabled || self.offset >= self.log.len() {
                self.record_progress();
                return Ok(());
            }
            let end = self.log.len().min(self.offset + MAX_PATCH_BYTES);
            let chunk = self.log[self.offset..end].to_vec();
            let chunk_len = chunk.len();
            if !self.started {
                self.started = true;
                let now = Instant::now();
                self.sim
                    .update_vm(self.app_id, |vm| vm.job_started_at = Some(now));
            }
            let result = self
                .http
                .patch(format!("{}/trace", self.job_url))
                .timeout(REQUEST_TIMEOUT)
                .header("JOB-TOKEN", &self.job_token)
                // The request's end is inclusive (gitlab §4, §15.5).
                .header("Content-Range", format!("{}-{}", self.offset, end - 1))
                .header("Content-Type", "text/plain")
                .header("User-Agent", USER_AGENT)
                .body(chunk)
                .send()
                .await;
            let failure = match result {
                Ok(response) => {
                    self.last_contact = tokio::time::Instant::now();
                    let job_status = header_text(&response, "Job-Status");
                    match response.status().as_u16() {
                        202 => {
                            self.offset = end;
                            self.sent += chunk_len;
                            failures = 0;
                            mismatches = 0;
                            match job_status.as_deref() {
                                Some("canceled" | "failed") => return Err(Stop::Canceled),
                                Some("canceling") => self.cancel_requested = true,
                                _ => {}
                            }
                            continue;
                        }
                        416 => {
                            // Jump to the server's length and send the rest
                            // of the buffer from there: every byte someone
                            // else appended costs one of ours (gitlab §15.20).
                            let server_length = header_text(&response, "Range")
                                .as_deref()
                                .and_then(parse_range_end);
                            match server_length {
                                Some(length) if mismatches < MAX_RANGE_MISMATCHES => {
                                    mismatches += 1;
                                    self.offset = length;
                                    continue;
                                }
                                _ => "416 without a usable Range header".to_owned(),
                            }
                        }
                        403 => return Err(Stop::Canceled),
                        404 => {
                            self.trace_disabled = true;
                            continue;
                        }
                        status => {
                            if matches!(job_status.as_deref(), Some("canceled" | "failed")) {
                                return Err(Stop::Canceled);
                            }
                            format!("trace PATCH answered {status}")
                        }
                    }
                }
                Err(error) => format!("trace PATCH failed: {error}"),
            };
            self.record_progress();
            if !final_flush {
                tracing::debug!(
                    app_id = self.app_id,
                    failure,
                    "simulated runner: log not sent, will retry"
                );
                return Ok(());
            }
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                return Err(Stop::Unreachable(failure));
            }
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    /// Waits until `at`, sending keep-alive PUTs if the job would otherwise
    /// be silent for too long (gitlab §5).
    async fn idle_until(&mut self, at: tokio::time::Instant) -> Result<(), Stop> {
        loop {
            let keepalive_at = self.last_contact + KEEPALIVE_INTERVAL;
            if at <= keepalive_at {
                tokio::time::sleep_until(at).await;
                return Ok(());
            }
            tokio::time::sleep_until(keepalive_at).await;
            self.keepalive().await?;
            if self.cancel_requested {
                return Ok(());
            }
        }
    }

    async fn keepalive(&mut self) -> Result<(), Stop> {
        let body = json!({
            "token": self.job_token,
            "state": "running",
            "output": {"checksum": self.checksum(), "bytesize": self.log.len()},
        });
        let result = self
            .http
            .put(&self.job_url)
            .timeout(REQUEST_TIMEOUT)
            .header("JOB-TOKEN", &self.job_token)
            .header("User-Agent", USER_AGENT)
            .json(&body)
            .send()
            .await;
        // Whatever the outcome, wait a full interval before the next one.
        self.last_contact = tokio::time::Instant::now();
        if let Ok(response) = result {
            let job_status = header_text(&response, "Job-Status");
            if response.status().as_u16() == 403
                || matches!(job_status.as_deref(), Some("canceled" | "failed"))
            {
                return Err(Stop::Canceled);
            }
            if job_status.as_deref() == Some("canceling") {
                self.cancel_requested = true;
            }
        }
        Ok(())
    }

    /// The final `PUT /api/v4/jobs/:id`, repeated on 202 (gitlab §3, §5).
    async fn final_update(
        &mut self,
        state: &str,
        failure_reason: Option<&str>,
        exit_code: Option<i32>,
    ) -> Result<(), Stop> {
        let checksum = self.checksum();
        let mut body = json!({
            "token": self.job_token,
            "state": state,
            "output": {"checksum": checksum, "bytesize": self.log.len()},
            "checksum": checksum,
        });
        if let Some(reason) = failure_reason {
            body["failure_reason"] = json!(reason);
        }
        if let Some(code) = exit_code {
            body["exit_code"] = json!(code);
        }
        let accepted_wait_end = tokio::time::Instant::now() + MAX_FINAL_UPDATE_WAIT;
        let mut failures = 0;
        loop {
            let result = self
                .http
                .put(&self.job_url)
                .timeout(REQUEST_TIMEOUT)
                .header("JOB-TOKEN", &self.job_token)
                .header("User-Agent", USER_AGENT)
                .json(&body)
                .send()
                .await;
            let failure = match result {
                Ok(response) => {
                    let job_status = header_text(&response, "Job-Status");
                    match response.status().as_u16() {
                        200 => {
                            let reported = state.to_owned();
                            self.sim
                                .update_vm(self.app_id, |vm| vm.reported_state = Some(reported));
                            return Ok(());
                        }
                        403 => return Err(Stop::Canceled),
                        _ if matches!(job_status.as_deref(), Some("canceled" | "failed")) => {
                            return Err(Stop::Canceled)
                        }
                        202 => {
                            // Not applied yet: repeat after the interval.
                            let interval_secs =
                                header_text(&response, "X-GitLab-Trace-Update-Interval")
                                    .and_then(|value| value.trim().parse::<u64>().ok())
                                    .unwrap_or(0);
                            let wait = Duration::from_secs(interval_secs.min(64))
                                .max(Duration::from_millis(50));
                            if tokio::time::Instant::now() + wait > accepted_wait_end {
                                return Err(Stop::Unreachable(
                                    "final update still not accepted after 6 minutes".to_owned(),
                                ));
                            }
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        status => format!("final PUT answered {status}"),
                    }
                }
                Err(error) => format!("final PUT failed: {error}"),
            };
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                return Err(Stop::Unreachable(failure));
            }
            tokio::time::sleep(backoff(failures)).await;
        }
    }
}

const USER_AGENT: &str = "gitlab-runner 15.11.0 (heptapod-runner-sim; go1.20; linux/amd64)";

fn header_text(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The end of a `Range: 0-<length>` answer: the server's log length.
fn parse_range_end(header: &str) -> Option<usize> {
    let (_, end) = header.trim().split_once('-')?;
    let end = end.trim();
    if end.is_empty() || !end.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    end.parse().ok()
}

/// What gitlab-runner (>= 18.2, `helpers.ShortenToken`) prints as the
/// runner's short token: 9 characters after the prefix it strips
/// (`docs/protocol-notes.md` §2.2). The token comes from `runner.toml`,
/// which holds a placeholder that keeps exactly these characters.
fn short_token(token: &str) -> String {
    let bare = [
        "glrt-t1_", "glrt-t2_", "glrt-t3_", "glrt-", "glrtr-", "glcbt-",
    ]
    .iter()
    .find_map(|prefix| token.strip_prefix(prefix))
    .unwrap_or(token);
    bare.chars().take(9).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_toml_is_validated() {
        let ok = b"[[runners]]\nname = \"r\"\nurl = \"http://127.0.0.1:1/\"\ntoken = \"t\"\nexecutor = \"docker\"\n";
        let entry = parse_runner_toml(ok).expect("valid");
        assert_eq!(entry.url, "http://127.0.0.1:1");
        let shell = b"[[runners]]\nurl = \"http://x/\"\ntoken = \"t\"\nexecutor = \"shell\"\n";
        assert!(parse_runner_toml(shell).is_err());
        let two = b"[[runners]]\nurl = \"http://x/\"\ntoken = \"t\"\nexecutor = \"docker\"\n[[runners]]\nurl = \"http://x/\"\ntoken = \"t\"\nexecutor = \"docker\"\n";
        assert!(parse_runner_toml(two).is_err());
        assert!(parse_runner_toml(b"[[runners]\n").is_err());
    }

    #[test]
    fn job_json_is_validated() {
        let job = parse_job_json(
            br#"{"id": 7, "token": "jt", "variables": [{"key": "A", "value": "1"}, {"key": "B"}]}"#,
        )
        .expect("valid");
        assert_eq!(
            (job.id, job.variable("A"), job.variable("B")),
            (7, Some("1"), None)
        );
        assert!(parse_job_json(br#"{"id": "7", "token": "jt"}"#).is_err());
        assert!(parse_job_json(br#"{"id": 7}"#).is_err());
        assert!(parse_job_json(b"nope").is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(parse_range_end("0-42"), Some(42));
        assert_eq!(parse_range_end("0-"), None);
        assert_eq!(short_token("glrt-abcdefghij"), "abcdefghi");
        assert_eq!(short_token("glrt-t1_abcdefghi.x"), "abcdefghi");
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_millis(1000));
    }
}
