//! Step harness for the dispatcher, in the style of quinn's `Pair`: a virtual
//! clock, in-memory models of a coordinator, a cloud and a durable store,
//! scripted or seeded faults and delays, crashes and graceful restarts, and
//! the invariants every run must keep.
//!
//! Shared by the scenario tests, the quota property tests and the seeded
//! simulation; each test crate uses only part of it. One model per file:
//! `coordinator.rs` (jobs, logs, inner runners), `cloud.rs` (applications),
//! `faults.rs` (faults and delays), `setup.rs` (what a run starts from),
//! `harness.rs` (the dispatcher, the clock, crashes and restarts),
//! `execute.rs` (the harness as the driver: commands against the models),
//! `invariants.rs` and `trace.rs`; `replicas.rs` (several replicas sharing a
//! database with a lease) and `workload.rs` (seeded workloads).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use paas_core::AppOwner;
use paas_core::{
    App, Command, ConfirmCheck, Dispatcher, DispatcherConfig, FailureKind, Flavor, FlavorTable,
    JobKey, JobRecord, LaunchCheck, LaunchWatch, ListedApp, MachineListing, NewJob, Notice,
    PollAnswer, PollOutcome, ReadyCheck, ReadyWait, RunnerIdx, RunnerSpec, Secret, StageRecord,
    StatusCheck, StepOutcome, WatchConfig,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod cloud;
mod coordinator;
mod execute;
mod faults;
mod harness;
mod invariants;
mod replicas;
mod setup;
mod trace;
mod workload;
pub use cloud::*;
pub use coordinator::*;
pub use faults::*;
pub use harness::*;
#[allow(unused_imports)]
pub use replicas::*;
pub use setup::*;
pub use trace::*;
#[allow(unused_imports)]
pub use workload::*;

/// Tolerance of weight comparisons in the invariants.
pub const EPSILON: f64 = 1e-6;

/// The `heptapod-runner` flavors of the model cloud: name, RAM in MiB, CPUs.
pub const FLAVORS: [(&str, u64, u32); 7] = [
    ("XS", 1024, 1),
    ("S", 4096, 2),
    ("M", 8192, 4),
    ("L", 16384, 6),
    ("XL", 32768, 8),
    ("2XL", 65536, 16),
    ("3XL", 98304, 24),
];

/// First bytes of every line the dispatcher writes into a job log (red).
pub const RED: &str = "\x1b[31;1m";

pub fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

pub fn flavor(name: &str) -> Flavor {
    let (name, ram_mib, cpus) = FLAVORS
        .iter()
        .copied()
        .find(|(flavor_name, _, _)| *flavor_name == name)
        .unwrap_or_else(|| panic!("no flavor {name} in the model catalogue"));
    Flavor {
        name: name.to_owned(),
        api_name: format!("heptapod-runner-{name}"),
        ram_mib,
        cpus,
    }
}

pub fn flavor_table() -> FlavorTable {
    FlavorTable::new(FLAVORS.iter().map(|(name, _, _)| flavor(name)))
}

pub fn weight(name: &str) -> f64 {
    flavor(name).weight()
}

/// Short id of runner `idx` (8 characters, like a token prefix).
pub fn runner_key(idx: RunnerIdx) -> String {
    format!("runner-{idx}")
}

/// A runner with the deployment's settings: default S, maximum 2XL, launch
/// confirmed by watching the job log (60 s timeout, checked every 5 s).
pub fn runner_spec(idx: RunnerIdx) -> RunnerSpec {
    RunnerSpec {
        key: runner_key(idx),
        name: format!("runner {idx}"),
        quota_max_fraction: 1.0,
        default_flavor: "S".to_owned(),
        max_flavor: Some("2XL".to_owned()),
        flavors: flavor_table(),
        zone: "par".to_owned(),
        launch_watch: Some(LaunchWatch {
            timeout: secs(60),
            poll_step: secs(5),
        }),
        limit: None,
        ready_wait: ReadyWait {
            timeout: secs(120),
            step: secs(5),
        },
    }
}

/// Interval of reconciliations where a test turns them on.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// GitLab's two-phase commit window: a job handed out and not confirmed
/// within it is dropped by the coordinator.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(120);

/// Settings roomy enough that no limit is hit by a handful of jobs.
/// Reconciliation is off, so that traces hold only the jobs' commands.
pub fn config() -> DispatcherConfig {
    DispatcherConfig {
        concurrent: 10,
        check_interval: secs(3),
        status_interval: secs(10),
        max_provisioning: 10,
        min_between_launches: Duration::ZERO,
        keep_resources: false,
        decommission_launch_failures: true,
        repoll_immediately: false,
        quota: weight("2XL") * 4.0,
        allowed_fraction_per_runner: 1.0,
        reconcile_interval: Duration::ZERO,
        orphan_min_age: Duration::ZERO,
        slow_notice_after: Duration::ZERO,
    }
}

/// Asserts that `actual` equals `expected` line by line, ignoring the
/// indentation of `expected` (so it can sit in an indented raw string).
#[track_caller]
pub fn assert_lines(actual: &str, expected: &str) {
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let actual_lines: Vec<&str> = actual.lines().map(str::trim).collect();
    if expected != actual_lines {
        panic!(
            "trace mismatch\n--- expected\n{}\n--- actual\n{}",
            expected.join("\n"),
            actual_lines.join("\n")
        );
    }
}

/// Asserts that the first line starting with `first` comes before the first
/// line starting with `second`.
#[track_caller]
pub fn assert_before(trace: &str, first: &str, second: &str) {
    let position = |prefix: &str| {
        trace
            .lines()
            .position(|line| {
                line.split_once(' ')
                    .is_some_and(|(_, text)| text.trim_start().starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{trace}"))
    };
    assert!(
        position(first) < position(second),
        "{first:?} not before {second:?} in\n{trace}"
    );
}
