//! Workloads: which jobs arrive at a simulated coordinator, when, and how
//! they behave, for the demo, `paas-runner sim --workload FILE` and the
//! benchmarks.
//!
//! A workload is a TOML file (see `crates/sim/workloads/mixed.toml`):
//!
//! ```toml
//! seed = 42
//! [sim]
//! long_poll_ms = 2000
//! [[jobs]]
//! count = 10
//! flavor = "M"
//! duration_ms = 1500
//! spread_ms = 5000
//! ```
//!
//! Job behaviour travels as job variables ([`crate::vars`]), which the
//! simulated VMs read from the job definition like a real inner runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::coordinator::{CoordinatorSim, JobSpec};
use crate::vars;

/// A set of job groups and the simulator settings to run them with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Seed of arrival times and durations; `None` means 0.
    pub seed: Option<u64>,
    #[serde(default)]
    pub sim: SimSettings,
    #[serde(default)]
    pub jobs: Vec<JobGroup>,
}

/// Knobs of the simulators a workload runs against (wired by the caller).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// Time a simulated VM takes to boot before its job starts.
    pub boot_delay_ms: u64,
    /// Time a new application's deployment repository takes to be ready.
    pub repo_ready_delay_ms: u64,
    /// Workhorse long polling hold; 0 turns it off.
    pub long_poll_ms: u64,
    /// Share of coordinator requests failing with 502/503.
    pub coordinator_error_rate: f64,
    /// Share of cloud API requests failing.
    pub cloud_error_rate: f64,
    /// Share of cloud API requests failing with 500 AFTER taking effect
    /// (e.g. an application created, but the client is told it failed).
    pub cloud_error_after_effect_rate: f64,
    /// Whether the deployment git repository demands credentials. Off by
    /// default: heptapod-paas-runner sends none to a plain-http repository
    /// (it only puts them in `https://` URLs), and must be able to run
    /// against `paas-runner sim`. Credentials sent are always checked.
    pub require_git_credentials: bool,
    /// Latency added to every simulated API answer.
    pub latency_ms: u64,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            boot_delay_ms: 300,
            repo_ready_delay_ms: 200,
            long_poll_ms: 2000,
            coordinator_error_rate: 0.0,
            cloud_error_rate: 0.0,
            cloud_error_after_effect_rate: 0.0,
            require_git_credentials: false,
            latency_ms: 0,
        }
    }
}

/// `count` similar jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobGroup {
    pub count: u32,
    /// `CI_CLEVER_CLOUD_FLAVOR`; `None`: the runner's default flavor.
    pub flavor: Option<String>,
    /// How long each job's script runs once its VM is up.
    pub duration_ms: u64,
    /// Each job's duration is drawn uniformly in
    /// `duration_ms ..= duration_ms + duration_spread_ms`.
    pub duration_spread_ms: u64,
    /// `success` (default) or `failed`.
    pub result: Option<String>,
    /// Log lines each job prints; `None`: the VM's default.
    pub log_lines: Option<u32>,
    /// When the group's first job may arrive, from the workload's start.
    pub start_after_ms: u64,
    /// Arrivals are drawn uniformly in
    /// `start_after_ms ..= start_after_ms + spread_ms`.
    pub spread_ms: u64,
    /// Index of the runner token allowed to take the jobs; `None`: any.
    pub runner: Option<usize>,
    /// Job name; `None`: derived from the flavor and the job's index.
    pub name: Option<String>,
    pub project_id: u64,
    pub timeout_secs: u64,
    /// More job variables; the fields above win over these.
    pub variables: BTreeMap<String, String>,
    /// The jobs' `tags:` (a runner takes them only if it has them all).
    pub tags: Vec<String>,
}

impl Default for JobGroup {
    fn default() -> Self {
        JobGroup {
            count: 1,
            flavor: None,
            duration_ms: 1000,
            duration_spread_ms: 0,
            result: None,
            log_lines: None,
            start_after_ms: 0,
            spread_ms: 0,
            runner: None,
            name: None,
            project_id: 1,
            timeout_secs: 3600,
            variables: BTreeMap::new(),
            tags: Vec::new(),
        }
    }
}

/// One job and when it arrives, counted from the workload's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub at: Duration,
    pub spec: JobSpec,
}

/// Why a workload could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The file could not be read.
    #[error("workload {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The text is not a valid workload (the message gives line and key).
    #[error("workload{}: {source}", path_suffix(.path))]
    Parse {
        path: Option<PathBuf>,
        source: toml::de::Error,
    },
    /// A value is out of its range.
    #[error("workload{}: job group {group}: {message}", path_suffix(.path))]
    Invalid {
        path: Option<PathBuf>,
        group: usize,
        message: String,
    },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|path| format!(" {}", path.display()))
        .unwrap_or_default()
}

/// Flavors of [`Workload::sample`] and their shares, in per mille.
const SAMPLE_FLAVORS: &[(&str, u32)] = &[
    ("XS", 300),
    ("S", 350),
    ("M", 150),
    ("L", 100),
    ("XL", 60),
    ("2XL", 40),
];

impl Workload {
    /// Parses a workload from TOML text.
    pub fn from_toml(text: &str) -> Result<Workload, WorkloadError> {
        let workload: Workload =
            toml::from_str(text).map_err(|source| WorkloadError::Parse { path: None, source })?;
        workload.validate()?;
        Ok(workload)
    }

    /// Reads and parses a workload file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Workload, WorkloadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Workload::from_toml(&text).map_err(|error| match error {
            WorkloadError::Parse { source, .. } => WorkloadError::Parse {
                path: Some(path.to_path_buf()),
                source,
            },
            WorkloadError::Invalid { group, message, .. } => WorkloadError::Invalid {
                path: Some(path.to_path_buf()),
                group,
                message,
            },
            other => other,
        })
    }

    /// The demo's workload: `jobs` jobs of mixed flavors (mostly XS and S,
    /// some M and L, few XL and 2XL), each running 0.5 to 4 s, arriving
    /// over `jobs × 100 ms` (at most a minute). Same seed, same workload.
    pub fn sample(jobs: u32, seed: u64) -> Workload {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0u32; SAMPLE_FLAVORS.len()];
        for _ in 0..jobs {
            let mut roll = rng.gen_range(0..1000);
            for (index, (_, share)) in SAMPLE_FLAVORS.iter().enumerate() {
                if roll < *share {
                    counts[index] += 1;
                    break;
                }
                roll -= share;
            }
        }
        let spread_ms = (u64::from(jobs) * 100).min(60_000);
        let groups = SAMPLE_FLAVORS
            .iter()
            .zip(counts)
            .filter(|(_, count)| *count > 0)
            .map(|((flavor, _), count)| JobGroup {
                count,
                flavor: Some(flavor.to_string()),
                duration_ms: 500,
                duration_spread_ms: 3500,
                spread_ms,
                ..JobGroup::default()
            })
            .collect();
        Workload {
            seed: Some(seed),
            sim: SimSettings::default(),
            jobs: groups,
        }
    }

    /// Total number of jobs.
    pub fn job_count(&self) -> u64 {
        self.jobs.iter().map(|group| u64::from(group.count)).sum()
    }

    /// Checks that every group's `runner` index is below `runner_count`.
    pub fn check_runners(&self, runner_count: usize) -> Result<(), WorkloadError> {
        for (group, job_group) in self.jobs.iter().enumerate() {
            if let Some(runner) = job_group.runner {
                if runner >= runner_count {
                    return Err(WorkloadError::Invalid {
                        path: None,
                        group,
                        message: format!(
                            "runner {runner} does not exist (there are {runner_count})"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every job with its arrival time, sorted by time (ties keep file
    /// order). The same workload and tokens always give the same list.
    ///
    /// A group naming a runner index beyond `runner_tokens` (see
    /// [`check_runners`](Self::check_runners)) gets a token no runner has,
    /// so its jobs stay pending, visibly.
    pub fn arrivals(&self, runner_tokens: &[String]) -> Vec<Arrival> {
        let mut rng = SmallRng::seed_from_u64(self.seed.unwrap_or(0));
        let mut arrivals = Vec::with_capacity(self.job_count() as usize);
        let mut job_number = 0u64;
        for (group_index, group) in self.jobs.iter().enumerate() {
            let runner_token = group.runner.map(|index| {
                runner_tokens.get(index).cloned().unwrap_or_else(|| {
                    tracing::warn!(group = group_index, runner = index, "no such runner");
                    format!("no-runner-{index}")
                })
            });
            for _ in 0..group.count {
                job_number += 1;
                let at_ms = group.start_after_ms + rng.gen_range(0..=group.spread_ms);
                let duration_ms = group.duration_ms + rng.gen_range(0..=group.duration_spread_ms);
                let mut variables = group.variables.clone();
                if let Some(flavor) = &group.flavor {
                    variables.insert(vars::FLAVOR.to_string(), flavor.clone());
                }
                variables.insert(vars::JOB_DURATION_MS.to_string(), duration_ms.to_string());
                if let Some(result) = &group.result {
                    variables.insert(vars::JOB_RESULT.to_string(), result.clone());
                }
                if let Some(lines) = group.log_lines {
                    variables.insert(vars::JOB_LOG_LINES.to_string(), lines.to_string());
                }
                let name = match (&group.name, &group.flavor) {
                    (Some(name), _) => name.clone(),
                    (None, Some(flavor)) => format!("job-{job_number}-{flavor}"),
                    (None, None) => format!("job-{job_number}"),
                };
                arrivals.push(Arrival {
                    at: Duration::from_millis(at_ms),
                    spec: JobSpec {
                        runner_token: runner_token.clone(),
                        project_id: group.project_id,
                        name,
                        variables: variables.into_iter().collect(),
                        timeout_secs: group.timeout_secs,
                        tags: group.tags.clone(),
                    },
                });
            }
        }
        arrivals.sort_by_key(|arrival| arrival.at);
        arrivals
    }

    fn validate(&self) -> Result<(), WorkloadError> {
        for (group, job_group) in self.jobs.iter().enumerate() {
            let invalid = |message: String| WorkloadError::Invalid {
                path: None,
                group,
                message,
            };
            if let Some(result) = &job_group.result {
                if result != "success" && result != "failed" {
                    return Err(invalid(format!(
                        "result must be \"success\" or \"failed\", not {result:?}"
                    )));
                }
            }
            // Guard the arithmetic of `arrivals`.
            if job_group
                .start_after_ms
                .checked_add(job_group.spread_ms)
                .is_none()
                || job_group
                    .duration_ms
                    .checked_add(job_group.duration_spread_ms)
                    .is_none()
            {
                return Err(invalid("times too large".to_string()));
            }
        }
        Ok(())
    }
}

/// Enqueues each arrival at its time, counted from now. Returns the job ids
/// in arrival order.
pub async fn feed(coordinator: &CoordinatorSim, arrivals: Vec<Arrival>) -> Vec<u64> {
    let start = tokio::time::Instant::now();
    let mut ids = Vec::with_capacity(arrivals.len());
    for arrival in arrivals {
        tokio::time::sleep_until(start + arrival.at).await;
        ids.push(coordinator.enqueue(arrival.spec));
    }
    ids
}
