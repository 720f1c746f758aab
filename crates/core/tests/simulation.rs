//! Deterministic simulation of the dispatcher: seeded random workloads,
//! faults of every external call, crashes (the process dies, in-flight
//! answers are lost, their effects stay) and graceful restarts, checked
//! against the invariants of the design.
//!
//! The coordinator drops jobs not confirmed within its window (a crash
//! between a job's hand-out and its record leaves it to that), creations may
//! take effect although they failed, and applications no record accounts
//! for appear while the process is down or land after their job is over:
//! reconciliation must remove every one.
//!
//! `PAAS_SIM_SEEDS=<count>` sets the number of seeds (300 by default, CI runs
//! 10000), `PAAS_SIM_SEED_START=<first>` the first one. A failing seed
//! replays alone, with its full trace:
//! `PAAS_SIM_SEED=<seed> cargo test -p paas-core --test simulation -- --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::*;
use paas_core::Notice;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Seeds run by default; each is a different workload.
const DEFAULT_SEEDS: u64 = 300;
/// Steps after which a seed counts as a livelock.
const MAX_STEPS: u64 = 200_000;

/// Runs one seed to the end; the harness holds every violation found.
fn run_seed(seed: u64, tracing: bool) -> Harness {
    let (setup, chaos) = random_setup(seed);
    let mut harness = setup.build();
    harness.tracing = tracing;
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x00c0_ffee);
    let mut stops = 0;
    let mut foreign: Vec<String> = chaos
        .foreign
        .iter()
        .enumerate()
        .map(|(index, (runner, flavor, owner))| {
            harness.add_foreign(*runner, FOREIGN_IDS + index as u64, flavor, owner.clone())
        })
        .collect();
    loop {
        if !foreign.is_empty() && (harness.steps > 20_000 || rng.gen_bool(0.0005)) {
            // Their owner deletes them (the run could not settle else).
            for id in foreign.drain(..) {
                harness.cloud.apps.remove(&id);
            }
        }
        if chaos.vanish_rate > 0.0 && rng.gen_bool(chaos.vanish_rate) {
            let with_machine: Vec<u64> = harness
                .dispatcher
                .jobs()
                .filter(|job| job.app_id().is_some())
                .map(|job| job.key.job_id)
                .collect();
            if !with_machine.is_empty() {
                let job_id = with_machine[rng.gen_range(0..with_machine.len())];
                harness.remove_behind_back(job_id);
            }
        }
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
            if chaos.leftover_rate > 0.0 && rng.gen_bool(chaos.leftover_rate) {
                add_leftovers(&mut harness, &mut rng);
            }
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

/// Figures over a run of many seeds (what the simulation exercised).
#[derive(Debug, Default)]
struct Figures {
    seeds: u64,
    crashes: u64,
    graceful_stops: u64,
    jobs_taken: u64,
    dropped: u64,
    withdrawn: u64,
    confirm_given_up: u64,
    faults: u64,
    created: u64,
    adopted: u64,
    orphans: u64,
    strays: u64,
    late_creations: u64,
    vanished: u64,
    jobs_over: u64,
    steps: u64,
    machine_listings: u64,
    status_checks: u64,
}

impl Figures {
    fn merge(&mut self, other: &Figures) {
        self.seeds += other.seeds;
        self.crashes += other.crashes;
        self.graceful_stops += other.graceful_stops;
        self.jobs_taken += other.jobs_taken;
        self.dropped += other.dropped;
        self.withdrawn += other.withdrawn;
        self.confirm_given_up += other.confirm_given_up;
        self.faults += other.faults;
        self.created += other.created;
        self.adopted += other.adopted;
        self.orphans += other.orphans;
        self.strays += other.strays;
        self.late_creations += other.late_creations;
        self.vanished += other.vanished;
        self.jobs_over += other.jobs_over;
        self.steps += other.steps;
        self.machine_listings += other.machine_listings;
        self.status_checks += other.status_checks;
    }

    fn add(&mut self, harness: &Harness) {
        self.seeds += 1;
        self.crashes += u64::from(harness.crashes);
        self.graceful_stops += u64::from(harness.restarts - harness.crashes);
        self.jobs_taken += harness.delivered.len() as u64;
        self.dropped += harness.dropped() as u64;
        for (_, notice) in &harness.notices {
            match notice {
                Notice::Withdrawn { .. } => self.withdrawn += 1,
                Notice::GaveUp {
                    step: "confirm job",
                    ..
                } => self.confirm_given_up += 1,
                Notice::Adopted { .. } => self.adopted += 1,
                Notice::Orphan { .. } => self.orphans += 1,
                Notice::MachineVanished { .. } => self.vanished += 1,
                _ => {}
            }
        }
        self.faults += harness.faults_injected;
        self.created += harness.cloud.creations;
        self.strays += harness.cloud.strays;
        self.late_creations += harness.late_creations;
        self.jobs_over += harness.job_overs;
        self.steps += harness.steps;
        self.machine_listings += harness.machine_listings;
        self.status_checks += harness
            .executed
            .iter()
            .filter(|((kind, _), _)| *kind == Kind::CheckStatus)
            .map(|(_, count)| u64::from(*count))
            .sum::<u64>();
    }
}

#[test]
fn seeded_workloads_with_faults_and_crashes_keep_the_invariants() {
    if let Some(seed) = env_number("PAAS_SIM_SEED") {
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
    let count = env_number("PAAS_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_number("PAAS_SIM_SEED_START").unwrap_or(0);
    let seeds = first..first + count;
    // Only to report how long the run took.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    // Seeds are independent: spread them over the cores; each worker
    // keeps its figures and failures, merged in seed order.
    let (figures, failures, workers) = spread_seeds(
        seeds.clone(),
        |seed, figures: &mut Figures| {
            let harness = run_seed(seed, false);
            figures.add(&harness);
            harness.violations.first().cloned()
        },
        |figures, other| figures.merge(&other),
    );
    let f = &figures;
    println!(
        "seeds {}..{} ({} seeds, {workers} threads) in {:.1?}: {} crashes, {} graceful stops; {} jobs taken, \
         {} dropped by the coordinator, {} withdrawn, {} confirmations given up; {} faults \
         injected; {} applications created, {} adopted, {} orphans found, {} strays \
         ({} late creations), {} jobs over mid-step, {} machines vanished; {} machine listings, {} status checks; {} steps",
        seeds.start,
        seeds.end,
        f.seeds,
        started.elapsed(),
        f.crashes,
        f.graceful_stops,
        f.jobs_taken,
        f.dropped,
        f.withdrawn,
        f.confirm_given_up,
        f.faults,
        f.created,
        f.adopted,
        f.orphans,
        f.strays,
        f.late_creations,
        f.jobs_over,
        f.vanished,
        f.machine_listings,
        f.status_checks,
        f.steps,
    );
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed (replay one with PAAS_SIM_SEED=<seed>):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The simulation must exercise what it claims to (figures of the
    // default 300 seeds, scaled).
    let at_least = |per_300: u64| per_300 * count / DEFAULT_SEEDS;
    assert!(f.crashes > at_least(50), "too few crashes: {}", f.crashes);
    assert!(
        f.created > at_least(1000),
        "too few applications: {}",
        f.created
    );
    assert!(
        f.dropped > at_least(3),
        "too few dropped jobs: {}",
        f.dropped
    );
    assert!(f.adopted > at_least(3), "too few adoptions: {}", f.adopted);
    assert!(f.orphans > at_least(20), "too few orphans: {}", f.orphans);
    assert!(
        f.vanished > at_least(3),
        "too few vanished machines: {}",
        f.vanished
    );
    assert!(
        f.jobs_over > at_least(5),
        "too few jobs over mid-step: {}",
        f.jobs_over
    );
    assert!(
        f.machine_listings > at_least(1000),
        "too few machine listings: {}",
        f.machine_listings
    );
    assert!(
        f.confirm_given_up > 0 || count < 100,
        "no confirmation given up"
    );
}
