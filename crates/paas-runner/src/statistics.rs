//! Polling cycles, as heptapod-paas-runner counts them: once per
//! `check_interval`, its `JSON statistics` log line (`paas_log_statistics`),
//! a log line whenever the limit holding back a runner's job requests
//! changes, and the end of `--poll-cycles`.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tracing::info;

use crate::snapshot::Snapshot;

/// A statistics line is repeated unchanged at most this often.
const UNCHANGED_REPEAT: Duration = Duration::from_secs(60);

/// What the cycles need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub check_interval: Duration,
    pub log_statistics: bool,
    /// Stop after this many cycles (`--poll-cycles`).
    pub max_cycles: Option<u64>,
}

impl Settings {
    pub fn of(config: &paas_config::Config, max_cycles: Option<u64>) -> Settings {
        Settings {
            check_interval: config.check_interval,
            log_statistics: config.log_statistics,
            max_cycles,
        }
    }
}

/// heptapod-paas-runner's statistics (`paas_dispatcher.py`, `poll_loop`),
/// same keys and meaning, from one snapshot; `held_back` is ours: the limit
/// holding back each runner's job requests, if any.
pub fn statistics(snapshot: &Snapshot) -> serde_json::Value {
    let stats = &snapshot.stats;
    let current_weight = stats.weight + stats.reserved_weight;
    let headroom = stats.quota - current_weight;
    let in_provisioning = stats.queued + stats.provisioning + stats.launching;
    let smallest_request = snapshot
        .runners
        .iter()
        .map(|runner| runner.max_job_weight)
        .fold(f64::INFINITY, f64::min);
    let can_take_job = headroom > 0.0
        && in_provisioning < snapshot.max_provisioning
        && stats.jobs < snapshot.concurrent
        && headroom >= smallest_request;
    let held_back: serde_json::Map<String, serde_json::Value> = snapshot
        .runners
        .iter()
        .zip(&stats.held)
        .filter_map(|(runner, hold)| {
            let hold = hold.as_ref()?;
            Some((runner.name.clone(), json!(hold.to_string())))
        })
        .collect();
    json!({
        "weight_quota": round2(stats.quota),
        "current_weight": round2(current_weight),
        "weight_headroom": round2(headroom),
        "can_take_job": can_take_job,
        "max_jobs_in_provisioning": snapshot.max_provisioning,
        "jobs_in_provisioning": in_provisioning,
        "current_concurrent_jobs": stats.jobs,
        "max_concurrent_jobs": snapshot.concurrent,
        "held_back": held_back,
    })
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Runs the cycles; returns after `max_cycles` of them (never without).
pub async fn run(snapshots: watch::Receiver<Snapshot>, settings: Settings) {
    let mut ticks = tokio::time::interval(settings.check_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cycles = 0u64;
    let mut last_line: Option<(String, tokio::time::Instant)> = None;
    let mut last_held: Vec<Option<String>> = Vec::new();
    loop {
        ticks.tick().await;
        let snapshot = snapshots.borrow().clone();
        let held: Vec<Option<String>> = snapshot
            .stats
            .held
            .iter()
            .map(|hold| hold.as_ref().map(ToString::to_string))
            .collect();
        if held != last_held {
            for (runner, (hold, before)) in snapshot.runners.iter().zip(
                held.iter()
                    .zip(last_held.iter().chain(std::iter::repeat(&None))),
            ) {
                if hold != before {
                    match hold {
                        Some(hold) => {
                            info!(runner = %runner.name, limit = %hold, "job requests held back")
                        }
                        None => info!(runner = %runner.name, "job requests no longer held back"),
                    }
                }
            }
            last_held = held;
        }
        if settings.log_statistics {
            let line = statistics(&snapshot).to_string();
            let now = tokio::time::Instant::now();
            let due = match &last_line {
                Some((previous, at)) => {
                    *previous != line || now.duration_since(*at) >= UNCHANGED_REPEAT
                }
                None => true,
            };
            if due {
                // heptapod-paas-runner's line, for the tools that read it.
                info!("JSON statistics: {line}");
                last_line = Some((line, now));
            }
        }
        // The first tick is at once: N cycles end N intervals later.
        if settings.max_cycles.is_some_and(|max| cycles >= max) {
            return;
        }
        cycles += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::RunnerView;
    use paas_core::{PollHold, Stats};

    fn snapshot(weight: f64, reserved: f64, held: Option<PollHold>) -> Snapshot {
        Snapshot {
            stats: Stats {
                quota: 100.0,
                weight,
                reserved_weight: reserved,
                jobs: 3,
                queued: 1,
                provisioning: 1,
                running: 1,
                held: vec![held],
                ..Stats::default()
            },
            runners: vec![RunnerView {
                name: "main".into(),
                max_job_weight: 40.0,
                ..RunnerView::default()
            }],
            concurrent: 10,
            max_provisioning: 4,
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_statistics_line_has_the_reference_keys_and_meaning() {
        let line = statistics(&snapshot(30.0, 0.0, None));
        assert_eq!(
            line,
            json!({
                "weight_quota": 100.0,
                "current_weight": 30.0,
                "weight_headroom": 70.0,
                "can_take_job": true,
                "max_jobs_in_provisioning": 4,
                "jobs_in_provisioning": 2,
                "current_concurrent_jobs": 3,
                "max_concurrent_jobs": 10,
                "held_back": {},
            })
        );
        // Reserved weight counts as the reference's potential weight; the
        // headroom then no longer fits the largest flavor.
        let hold = PollHold::Quota {
            headroom: 30.0,
            needed: 40.0,
            reserved: 40.0,
        };
        let line = statistics(&snapshot(30.0, 40.0, Some(hold)));
        assert_eq!(line["current_weight"], 70.0);
        assert_eq!(line["weight_headroom"], 30.0);
        assert_eq!(line["can_take_job"], false);
        assert_eq!(
            line["held_back"]["main"],
            "quota: headroom 30.0 below the 40.0 of the largest flavor (40.0 reserved by requests in flight)"
        );
    }
}
