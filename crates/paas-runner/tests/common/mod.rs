//! Shared harness of the integration tests: the simulators in the test's
//! process, the real `paas-runner` binary as a child process.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use paas_sim::cluster::{ClusterSettings, ConfigOptions, SimCluster};
use paas_sim::coordinator::{JobRecord, JobSpec};
use tokio::process::{Child, Command};

/// Generous bound for conditions that normally hold within a second or two.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Harness {
    pub cluster: SimCluster,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub child: Option<Child>,
    runs: u32,
}

impl Harness {
    pub async fn start(
        settings: ClusterSettings,
        options: impl FnOnce(&mut ConfigOptions),
    ) -> Harness {
        let cluster = SimCluster::start(&settings)
            .await
            .expect("simulators start");
        let dir = tempfile::Builder::new()
            .prefix("paas-runner-it-")
            .tempdir()
            .expect("tempdir");
        let mut config_options = ConfigOptions::new(dir.path().join("state.db"));
        config_options.check_interval_secs = 0.2;
        config_options.watch_poll_step_secs = 0.1;
        options(&mut config_options);
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, cluster.config_toml(&config_options)).expect("write config");
        Harness {
            cluster,
            dir,
            config_path,
            child: None,
            runs: 0,
        }
    }

    /// Starts the real binary on the harness's configuration.
    pub fn spawn_runner(&mut self) {
        self.spawn_runner_with(|_| {});
    }

    /// Starts the real binary, its command set up by `configure` first.
    pub fn spawn_runner_with(&mut self, configure: impl FnOnce(&mut Command)) {
        assert!(self.child.is_none(), "runner already running");
        self.runs += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("runner-{}.log", self.runs)))
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_paas-runner"));
        configure(&mut command);
        let child = command
            .arg("--log-level")
            .arg("info,paas_runner=debug")
            .arg("run")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn paas-runner");
        self.child = Some(child);
    }

    /// Everything the runner logged so far (all runs).
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for run in 1..=self.runs {
            let path = self.dir.path().join(format!("runner-{run}.log"));
            text.push_str(&format!("----- run {run} -----\n"));
            text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        text
    }

    /// Sends a signal to the runner and waits for it to exit.
    pub async fn signal_and_wait(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("runner running");
        let pid = child.id().expect("pid") as i32;
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc_kill(pid, signal) };
        assert_eq!(rc, 0, "kill failed");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("runner exits in time")
            .expect("wait")
    }

    pub fn enqueue(&self, variables: &[(&str, &str)]) -> u64 {
        self.cluster.coordinator.enqueue(JobSpec {
            variables: variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..JobSpec::default()
        })
    }

    /// Waits until every listed job is finished on the coordinator and no
    /// application is left; panics with the runner's logs otherwise.
    pub async fn wait_all_done(&self, ids: &[u64]) {
        let ids = ids.to_vec();
        let coordinator = self.cluster.coordinator.clone();
        let jobs_done = coordinator
            .wait_until(
                move |sim| {
                    ids.iter()
                        .all(|id| sim.job(*id).is_some_and(|job| job.status.is_finished()))
                },
                DEADLINE,
            )
            .await;
        assert!(
            jobs_done,
            "jobs not finished in time; jobs: {:#?}\nlogs:\n{}",
            self.summaries(),
            self.logs()
        );
        let apps_gone = self
            .cluster
            .clever
            .wait_until(|sim| sim.stats().apps_live == 0, DEADLINE)
            .await;
        assert!(
            apps_gone,
            "applications left: {:?}\nlogs:\n{}",
            self.cluster.clever.stats(),
            self.logs()
        );
    }

    /// Starts the runner if needed, runs one job with `variables` to its
    /// end (no application left), and returns its record and its log.
    pub async fn run_one(&mut self, variables: &[(&str, &str)]) -> (JobRecord, String) {
        if self.child.is_none() {
            self.spawn_runner();
        }
        let id = self.enqueue(variables);
        self.wait_all_done(&[id]).await;
        (self.job(id), self.trace(id))
    }

    pub fn job(&self, id: u64) -> JobRecord {
        self.cluster.coordinator.job(id).expect("job exists")
    }

    pub fn trace(&self, id: u64) -> String {
        String::from_utf8_lossy(&self.job(id).trace).into_owned()
    }

    fn summaries(&self) -> Vec<String> {
        self.cluster
            .coordinator
            .jobs()
            .iter()
            .map(|job| {
                format!(
                    "{} {:?} {:?} {:?}",
                    job.id,
                    job.status,
                    job.failure_reason,
                    String::from_utf8_lossy(&job.trace)
                )
            })
            .collect()
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

pub const SIGHUP: i32 = 1;
pub const SIGQUIT: i32 = 3;
pub const SIGUSR1: i32 = 10;

impl Harness {
    /// Sends a signal to the running runner without waiting for anything.
    pub fn send_signal(&self, signal: i32) {
        let pid = self
            .child
            .as_ref()
            .and_then(|child| child.id())
            .expect("runner running") as i32;
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc_kill(pid, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Whether the runner process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Waits until the logs of the current run contain `text`.
    pub async fn wait_for_log_line(&self, text: &str) {
        let start = std::time::Instant::now();
        while !self
            .logs()
            .rsplit("----- run ")
            .next()
            .unwrap_or_default()
            .contains(text)
        {
            assert!(
                start.elapsed() < DEADLINE,
                "{text:?} never logged\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Harness {
    /// Waits for the runner (already told to stop) to exit.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("runner running");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("runner exits in time")
            .expect("wait")
    }
}

/// Runs the binary with `args` in `dir` to its end (a command that must
/// exit by itself: `state`, `reap`, a refused `run`), within [`DEADLINE`].
pub async fn run_to_exit(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    tokio::time::timeout(
        DEADLINE,
        Command::new(env!("CARGO_BIN_EXE_paas-runner"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("paas-runner exits in time")
    .expect("paas-runner runs")
}

impl Harness {
    /// Runs the binary with `args` followed by the harness's configuration
    /// file, in the harness's directory, to its end.
    pub async fn run_command(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.push(self.config_path.as_os_str());
        run_to_exit(self.dir.path(), &all).await
    }

    /// Waits until the inner runner of job `id` has written to its log
    /// (its machine runs it); false past [`DEADLINE`].
    pub async fn wait_started(&self, id: u64) -> bool {
        self.cluster
            .coordinator
            .wait_until(
                move |sim| sim.job(id).is_some_and(|job| job.first_trace_at.is_some()),
                DEADLINE,
            )
            .await
    }
}
