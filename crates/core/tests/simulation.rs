//! Deterministic simulation of the dispatcher: seeded random workloads,
//! faults of every external call, crashes (the process dies, in-flight
//! answers are lost, their effects stay) and graceful restarts, checked
//! against the invariants of the design.
//!
//! A failing seed replays alone, with its full trace:
//! `PAAS_SIM_SEED=<seed> cargo test -p paas-core --test simulation -- --nocapture`

mod common;

use std::time::Duration;

use common::*;
use paas_core::LaunchWatch;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Seeds run by the test; each is a different workload.
const SEEDS: u64 = 300;
/// Steps after which a seed counts as a livelock.
const MAX_STEPS: u64 = 200_000;

/// Knobs of a simulated run beyond its [`Setup`].
#[derive(Debug)]
struct Chaos {
    /// Chance, per step, that the process stops (crash or graceful).
    restart_rate: f64,
    /// Share of the stops that are crashes rather than graceful.
    crash_share: f64,
    max_restarts: u32,
}

fn random_setup(seed: u64) -> (Setup, Chaos) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut setup = Setup::new();
    setup.seed = seed;
    setup.label = format!("seed {seed}");
    let runner_count = rng.gen_range(1..=3);
    setup.runners = (0..runner_count)
        .map(|idx| {
            let mut spec = runner_spec(idx);
            if rng.gen_bool(0.3) {
                spec.quota_max_fraction = rng.gen_range(0.3..=1.0);
            }
            spec.launch_watch = rng.gen_bool(0.8).then(|| LaunchWatch {
                timeout: secs(rng.gen_range(20..=120)),
                poll_step: secs(rng.gen_range(1..=10)),
            });
            spec
        })
        .collect();
    let config = &mut setup.config;
    config.concurrent = rng.gen_range(1..=20);
    config.max_provisioning = rng.gen_range(1..=8);
    config.min_between_launches = if rng.gen_bool(0.5) {
        Duration::ZERO
    } else {
        Duration::from_millis(rng.gen_range(100..=5000))
    };
    config.repoll_immediately = rng.gen_bool(0.5);
    config.check_interval = secs(rng.gen_range(1..=5));
    config.status_interval = secs(rng.gen_range(2..=15));
    config.allowed_fraction_per_runner = if rng.gen_bool(0.5) {
        1.0
    } else {
        rng.gen_range(0.3..=1.0)
    };
    // Quota: room for `count` jobs of a reference flavor, mostly enough for
    // every runner to take its largest job.
    let (reference, _, _) = FLAVORS[rng.gen_range(0..FLAVORS.len())];
    let smallest_share = setup
        .runners
        .iter()
        .map(|spec| {
            spec.quota_max_fraction
                .min(config.allowed_fraction_per_runner)
        })
        .fold(1.0, f64::min);
    let needed = (weight("2XL") / smallest_share / weight(reference)).ceil() as u32;
    let count = if rng.gen_bool(0.9) {
        rng.gen_range(needed..=needed + 10)
    } else {
        rng.gen_range(1..=needed + 5)
    };
    config.quota = weight(reference) * f64::from(count);

    let job_count = rng.gen_range(5..=30);
    for _ in 0..job_count {
        let mut spec = JobSpec::new(rng.gen_range(0..runner_count));
        spec.flavor = match rng.gen_range(0..100) {
            0..=59 => None,
            60..=89 => Some(FLAVORS[rng.gen_range(0..6)].0.to_owned()),
            90..=94 => Some("3XL".to_owned()),
            95..=97 => Some("xl".to_owned()),
            _ => Some("4XL".to_owned()),
        };
        spec.arrival = Duration::from_millis(rng.gen_range(0..=300_000));
        spec.boot = match rng.gen_range(0..100) {
            0..=84 => Some(Duration::from_millis(rng.gen_range(500..=40_000))),
            85..=94 => Some(secs(rng.gen_range(40..=150))),
            _ => None,
        };
        spec.duration = Duration::from_millis(rng.gen_range(1000..=300_000));
        if rng.gen_bool(0.05) {
            spec.cancel_after = Some(secs(rng.gen_range(0..=200)));
        }
        setup.jobs.push(spec);
    }

    let faults = &mut setup.faults;
    if rng.gen_bool(0.8) {
        for kind in ALL_KINDS {
            faults.transient_rate.insert(kind, rng.gen_range(0.0..0.2));
        }
        for kind in [Kind::Poll, Kind::Create, Kind::Deploy, Kind::Delete] {
            faults.permanent_rate.insert(kind, rng.gen_range(0.0..0.05));
        }
        // Writes to the coordinator fail in short bursts only: the
        // dispatcher gives up on them after a few attempts (see the
        // scenario tests), which would lose the message.
        faults.max_consecutive.insert(Kind::AppendLog, 2);
        faults.max_consecutive.insert(Kind::ReportFailure, 2);
    }
    if rng.gen_bool(0.7) {
        setup.delays.random_max = Some(Duration::from_millis(rng.gen_range(1..=4000)));
    }

    let chaos = if rng.gen_bool(0.2) {
        Chaos {
            restart_rate: 0.0,
            crash_share: 0.0,
            max_restarts: 0,
        }
    } else {
        Chaos {
            restart_rate: rng.gen_range(0.0005..0.01),
            crash_share: 0.75,
            max_restarts: rng.gen_range(1..=8),
        }
    };
    (setup, chaos)
}

/// Runs one seed to the end; the harness holds every violation found.
fn run_seed(seed: u64, tracing: bool) -> Harness {
    let (setup, chaos) = random_setup(seed);
    let mut harness = setup.build();
    harness.tracing = tracing;
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x00c0_ffee);
    let mut stops = 0;
    loop {
        if harness.is_done(Harness::is_settled) {
            break;
        }
        if harness.steps > MAX_STEPS {
            let tail = harness.trace_tail(40);
            harness.violations.push(format!(
                "seed {seed}: livelock after {MAX_STEPS} steps\n{tail}"
            ));
            break;
        }
        if stops < chaos.max_restarts
            && chaos.restart_rate > 0.0
            && rng.gen_bool(chaos.restart_rate)
        {
            stops += 1;
            if rng.gen_bool(chaos.crash_share) {
                harness.crash();
            } else {
                harness.shutdown();
                if let Err(error) = harness.drive_to_quiescence(10_000) {
                    harness.violations.push(format!("graceful stop: {error}"));
                    break;
                }
            }
            harness.advance_clock(Duration::from_millis(rng.gen_range(0..=20_000)));
            harness.restart();
            continue;
        }
        if harness.step_until(None) == Step::Idle {
            if !harness.is_done(Harness::is_settled) {
                let tail = harness.trace_tail(40);
                harness
                    .violations
                    .push(format!("seed {seed}: idle but not settled\n{tail}"));
            }
            break;
        }
    }
    let found = harness.final_violations();
    let label = harness.label.clone();
    harness
        .violations
        .extend(found.into_iter().map(|text| format!("{label}: {text}")));
    harness
}

#[test]
fn seeded_workloads_with_faults_and_crashes_keep_the_invariants() {
    if let Ok(seed) = std::env::var("PAAS_SIM_SEED") {
        let seed: u64 = seed.parse().expect("PAAS_SIM_SEED is a number");
        let harness = run_seed(seed, true);
        println!("{}", harness.trace_tail(usize::MAX));
        println!("{:?}", random_setup(seed).1);
        assert!(
            harness.violations.is_empty(),
            "{}",
            harness.violations.join("\n")
        );
        return;
    }
    let mut failures = Vec::new();
    let mut totals = (0u32, 0u64, 0u64, 0usize);
    for seed in 0..SEEDS {
        let harness = run_seed(seed, false);
        totals.0 += harness.crashes;
        totals.1 += harness.cloud.creations;
        totals.2 += harness.steps;
        totals.3 += harness.delivered.len();
        if let Some(first) = harness.violations.first() {
            failures.push(format!("seed {seed}: {first}"));
        }
    }
    println!(
        "{SEEDS} seeds: {} crashes, {} applications created, {} jobs taken, {} steps",
        totals.0, totals.1, totals.3, totals.2
    );
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} seeds failed (replay one with PAAS_SIM_SEED=<seed>):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The simulation must exercise what it claims to.
    assert!(totals.0 > 50, "too few crashes: {}", totals.0);
    assert!(totals.1 > 1000, "too few applications: {}", totals.1);
}
