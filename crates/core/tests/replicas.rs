//! Deterministic simulation of the service as several replicas sharing one
//! database with a lease (the PostgreSQL store): seeded workloads and
//! faults as in `simulation.rs`, run by two or three replicas of which one
//! at a time is active; the active one is killed, cut from the database
//! for a while (it must stop acting before its lease can expire), or
//! stopped gracefully (it hands the lease over), at random moments.
//! Store writes take a round trip and are fenced with the writer's epoch;
//! the driver holds a job's commands until its write is durable.
//!
//! Invariants, besides the single-process ones (every job exactly once,
//! nothing leaked, quota kept): no replica starts a side effect unless the
//! database's lease row names it, under its epoch, unexpired; no standby is
//! granted the lease while another replica acts; after a kill a standby
//! takes over within the lease's duration (plus polling and latency).
//!
//! `PAAS_SIM_SEEDS=<count>` (100 by default, CI runs 2000), `PAAS_SIM_SEED_START`, and
//! `PAAS_SIM_SEED=<seed>` to replay one seed with its full trace:
//! `PAAS_SIM_SEED=<seed> cargo test -p paas-core --test replicas -- --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::*;
use paas_core::lease::STANDBY_POLL;
use paas_core::LeaseTiming;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEEDS: u64 = 100;
/// Steps after which a seed counts as a livelock (standbys polling and
/// renewals are steps too).
const MAX_STEPS: u64 = 600_000;

/// The replicas' part of a seed.
#[derive(Debug)]
struct ReplicaChaos {
    count: usize,
    lease: Duration,
    latency_max: Duration,
    restart_delay: Duration,
    /// Chance per step of a kill, partition or graceful stop.
    event_rate: f64,
    max_events: u32,
}

fn replica_chaos(seed: u64) -> ReplicaChaos {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6c65_6173_6500);
    ReplicaChaos {
        count: rng.gen_range(2..=3),
        lease: secs(rng.gen_range(3..=30)),
        latency_max: Duration::from_millis(rng.gen_range(1..=300)),
        restart_delay: Duration::from_millis(rng.gen_range(100..=5000)),
        event_rate: rng.gen_range(0.0005..0.005),
        max_events: rng.gen_range(2..=12),
    }
}

fn run_seed(seed: u64, tracing: bool) -> (Harness, ReplicaChaos) {
    // The workload and its faults are those of the single-process
    // simulation; its own crashes, leftovers and foreign applications are
    // left to it.
    let (setup, _) = random_setup(seed);
    let chaos = replica_chaos(seed);
    let mut harness = setup.build();
    harness.tracing = tracing;
    harness.replicate(
        chaos.count,
        LeaseTiming::new(chaos.lease),
        chaos.latency_max,
    );
    if let Some(replicas) = &mut harness.replicas {
        replicas.restart_delay = chaos.restart_delay;
    }
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x00c0_ffee);
    let mut events = 0;
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
        if events < chaos.max_events && rng.gen_bool(chaos.event_rate) {
            events += 1;
            let lease_ms = chaos.lease.as_millis() as u64;
            match rng.gen_range(0..10) {
                0..=3 => harness.kill_active(),
                4..=6 => {
                    if let Some(active) = harness.active_replica() {
                        let cut = Duration::from_millis(rng.gen_range(lease_ms / 4..=lease_ms * 2));
                        harness.partition(active, cut);
                    }
                }
                7 => {
                    let replica = rng.gen_range(0..chaos.count);
                    let cut = Duration::from_millis(rng.gen_range(100..=lease_ms));
                    harness.partition(replica, cut);
                }
                _ => harness.stop_active(),
            }
        }
        if harness.step_until(None) == Step::Idle {
            let tail = harness.trace_tail(40);
            harness
                .violations
                .push(format!("seed {seed}: idle but not settled\n{tail}"));
            break;
        }
    }
    let mut found = harness.final_violations();
    if let Some(replicas) = &harness.replicas {
        // After a kill, with no partition meanwhile, a standby takes over
        // once the lease expired: within its duration after the last
        // renewal, plus a standby's poll and the round trips.
        let bound = chaos.lease + STANDBY_POLL + chaos.latency_max * 4 + chaos.restart_delay;
        for takeover in &replicas.takeovers {
            if takeover.cause == "killed" && !takeover.partitioned && takeover.took > bound {
                found.push(format!(
                    "takeover after a kill took {:?}, over {bound:?}",
                    takeover.took
                ));
            }
        }
    }
    let label = harness.label.clone();
    harness
        .violations
        .extend(found.into_iter().map(|text| format!("{label}: {text}")));
    (harness, chaos)
}

#[derive(Debug, Default)]
struct Figures {
    seeds: u64,
    jobs_taken: u64,
    created: u64,
    exits: std::collections::BTreeMap<&'static str, u64>,
    partitions: u64,
    fenced_writes: u64,
    writes: u64,
    /// Takeover times per cause of the previous end, in milliseconds.
    takeovers: std::collections::BTreeMap<&'static str, Vec<u64>>,
    steps: u64,
}

impl Figures {
    fn add(&mut self, harness: &Harness) {
        self.seeds += 1;
        self.jobs_taken += harness.delivered.len() as u64;
        self.created += harness.cloud.creations;
        self.steps += harness.steps;
        let Some(replicas) = &harness.replicas else {
            return;
        };
        for (name, count) in &replicas.exits {
            *self.exits.entry(name).or_default() += count;
        }
        self.partitions += replicas.partitions;
        self.fenced_writes += replicas.fenced_writes;
        self.writes += replicas.writes_sent;
        for takeover in &replicas.takeovers {
            let cause = if takeover.partitioned {
                "during a partition"
            } else {
                takeover.cause
            };
            self.takeovers
                .entry(cause)
                .or_default()
                .push(takeover.took.as_millis() as u64);
        }
    }

    fn merge(&mut self, other: Figures) {
        self.seeds += other.seeds;
        self.jobs_taken += other.jobs_taken;
        self.created += other.created;
        for (name, count) in other.exits {
            *self.exits.entry(name).or_default() += count;
        }
        self.partitions += other.partitions;
        self.fenced_writes += other.fenced_writes;
        self.writes += other.writes;
        for (cause, mut times) in other.takeovers {
            self.takeovers.entry(cause).or_default().append(&mut times);
        }
        self.steps += other.steps;
    }

    fn exits(&self, name: &str) -> u64 {
        self.exits.get(name).copied().unwrap_or(0)
    }
}

#[test]
fn replicas_sharing_a_lease_keep_the_invariants_through_kills_partitions_and_handovers() {
    if let Some(seed) = env_number("PAAS_SIM_SEED") {
        let (harness, chaos) = run_seed(seed, true);
        println!("{}", harness.trace_tail(usize::MAX));
        println!("{chaos:?}");
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
    let (figures, failures, workers) = spread_seeds(
        seeds.clone(),
        |seed, figures: &mut Figures| {
            let (harness, _) = run_seed(seed, false);
            figures.add(&harness);
            harness.violations.first().cloned()
        },
        |figures, other| figures.merge(other),
    );
    let f = &figures;
    let takeovers: Vec<String> = f
        .takeovers
        .iter()
        .map(|(cause, times)| {
            let mut times = times.clone();
            times.sort_unstable();
            let p50 = times[times.len() / 2];
            let max = times[times.len() - 1];
            format!("{cause}: {} (p50 {p50} ms, max {max} ms)", times.len())
        })
        .collect();
    println!(
        "seeds {}..{} ({} seeds, {workers} threads) in {:.1?}: {} jobs taken, {} applications created; \
         ends of the active replica: {:?}; {} partitions; {} writes, {} refused by fencing; \
         takeovers after {}; {} steps",
        seeds.start,
        seeds.end,
        f.seeds,
        started.elapsed(),
        f.jobs_taken,
        f.created,
        f.exits,
        f.partitions,
        f.writes,
        f.fenced_writes,
        takeovers.join(", "),
        f.steps,
    );
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed (replay one with PAAS_SIM_SEED=<seed>):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The simulation must exercise what it claims to (about half the
    // figures of the default 100 seeds, scaled).
    let at_least = |per_100: u64| per_100 * count / DEFAULT_SEEDS;
    assert!(f.exits("killed") > at_least(100), "too few kills");
    assert!(f.exits("graceful") > at_least(40), "too few graceful stops");
    assert!(
        f.exits("lease not renewed") > at_least(35),
        "too few leases lost to a partition"
    );
    assert!(
        f.fenced_writes > at_least(20),
        "too few writes refused by fencing: {}",
        f.fenced_writes
    );
    assert!(f.created > at_least(600), "too few applications");
}
