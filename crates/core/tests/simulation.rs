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
use paas_core::{AppOwner, LaunchWatch, Notice, ReadyWait, RunnerIdx, WatchConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Seeds run by default; each is a different workload.
const DEFAULT_SEEDS: u64 = 300;
/// Job ids of leftovers: above every workload's.
const LEFTOVER_IDS: u64 = 1000;
/// Job ids of the foreign applications (none of the workload or leftovers).
const FOREIGN_IDS: u64 = 900_000;
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
    /// Chance, per stop, that applications no record accounts for appear
    /// while the process is down.
    leftover_rate: f64,
    /// Chance, per step, that someone deletes the machine of a job under
    /// way behind the dispatcher's back (reconciling runs only).
    vanish_rate: f64,
    /// Applications of another installation under the runners' names, there
    /// from the start and deleted by their owner at some step.
    foreign: Vec<(RunnerIdx, &'static str, AppOwner)>,
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
    // Mostly the deployment's interval; sometimes a quicker or slower one,
    // sometimes none (then nothing may appear behind the dispatcher's back).
    let reconciling = rng.gen_bool(0.9);
    config.reconcile_interval = match rng.gen_range(0..10) {
        _ if !reconciling => Duration::ZERO,
        0..=6 => secs(30),
        _ => secs(rng.gen_range(5..=90)),
    };
    // Slow-launch notices, sometimes due before the machines boot.
    config.slow_notice_after = if rng.gen_bool(0.5) {
        secs(rng.gen_range(5..=60))
    } else {
        Duration::ZERO
    };
    setup.confirm_window = if rng.gen_bool(0.7) {
        CONFIRM_WINDOW
    } else {
        secs(rng.gen_range(10..=120))
    };
    setup.job_over_watch = rng.gen_bool(0.5);
    if reconciling && setup.job_over_watch {
        setup.late_create_rate = rng.gen_range(0.0..=1.0);
    }
    // Users cancel jobs, early ones mostly while they are provisioned.
    let cancel_rate = if setup.job_over_watch {
        rng.gen_range(0.05..0.3)
    } else {
        0.08
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
        if rng.gen_bool(cancel_rate) {
            let within_ms = if rng.gen_bool(0.5) { 30_000 } else { 200_000 };
            spec.cancel_after = Some(Duration::from_millis(rng.gen_range(0..=within_ms)));
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
        // Confirmations too, mostly: after five failures the dispatcher
        // goes on unconfirmed, and the coordinator drops the job.
        if rng.gen_bool(0.9) {
            faults.max_consecutive.insert(Kind::Confirm, 2);
        } else {
            faults
                .transient_rate
                .insert(Kind::Confirm, rng.gen_range(0.2..0.6));
        }
        faults.max_consecutive.insert(Kind::List, 3);
        faults.max_consecutive.insert(Kind::DeleteOrphan, 3);
    }
    if setup.job_over_watch {
        // Creations that fail without effect may land late once dropped.
        setup
            .faults
            .transient_rate
            .insert(Kind::Create, rng.gen_range(0.1..0.4));
    }
    if rng.gen_bool(0.7) {
        setup.delays.random_max = Some(Duration::from_millis(rng.gen_range(1..=4000)));
    }
    if rng.gen_bool(if setup.job_over_watch { 0.7 } else { 0.3 }) {
        // Creations and pushes that take a while, as on the real cloud.
        setup
            .delays
            .fixed
            .insert(Kind::Create, secs(rng.gen_range(1..=20)));
        setup
            .delays
            .fixed
            .insert(Kind::Deploy, secs(rng.gen_range(1..=20)));
    }

    let leftover_rate = if reconciling {
        rng.gen_range(0.0..0.6)
    } else {
        0.0
    };
    if reconciling && rng.gen_bool(0.2) {
        // Left by an earlier deployment.
        let runner = rng.gen_range(0..runner_count);
        let flavor = FLAVORS[rng.gen_range(0..3)].0;
        if weight(flavor) < config.quota {
            setup = setup.leftover(runner, LEFTOVER_IDS, flavor);
        }
    }
    let vanish_rate = if reconciling && rng.gen_bool(0.3) {
        rng.gen_range(0.0002..0.003)
    } else {
        0.0
    };
    let mut foreign = Vec::new();
    if reconciling && rng.gen_bool(0.2) {
        let owner = if rng.gen_bool(0.5) {
            AppOwner::Foreign("r_other".to_owned())
        } else {
            AppOwner::Unmarked
        };
        let flavor = FLAVORS[rng.gen_range(0..2)].0;
        if weight(flavor) * 2.0 < setup.config.quota {
            foreign.push((rng.gen_range(0..runner_count), flavor, owner));
        }
    }
    let chaos = if rng.gen_bool(0.2) {
        Chaos {
            restart_rate: 0.0,
            crash_share: 0.0,
            max_restarts: 0,
            leftover_rate,
            vanish_rate,
            foreign,
        }
    } else {
        Chaos {
            restart_rate: rng.gen_range(0.0005..0.01),
            crash_share: 0.75,
            max_restarts: rng.gen_range(1..=8),
            leftover_rate,
            vanish_rate,
            foreign,
        }
    };
    // Orphans deleted at once, or only once old enough.
    setup.config.orphan_min_age = if rng.gen_bool(0.5) {
        Duration::ZERO
    } else {
        secs(rng.gen_range(1..=120))
    };
    // How launched jobs are watched, drawn apart so that the draws above
    // stay those of each seed: mostly paced with a cloud listing, which
    // the model cloud sometimes lacks; sometimes every status_interval.
    let mut watch_rng = SmallRng::seed_from_u64(seed ^ 0x0077_6174_6368);
    if watch_rng.gen_bool(0.7) {
        let mut watch = WatchConfig::new(setup.config.check_interval);
        watch.safety_first = secs(watch_rng.gen_range(5..=60));
        watch.safety_max = watch.safety_first * watch_rng.gen_range(1..=10);
        watch.max_interval = secs(watch_rng.gen_range(5..=30));
        watch.redetect_after = secs(watch_rng.gen_range(10..=600));
        if watch_rng.gen_bool(0.1) {
            watch.listing_interval = None;
        }
        setup.watch = Some(watch);
        setup.machine_listing = watch_rng.gen_bool(0.8);
    }
    // Machines slow to be ready, watched by the core meanwhile (drawn
    // apart too): sometimes longer than their wait, which then fails.
    let mut ready_rng = SmallRng::seed_from_u64(seed ^ 0x7265_6164_7900);
    if ready_rng.gen_bool(0.3) {
        setup.ready_after = secs(ready_rng.gen_range(1..=40));
        for spec in &mut setup.runners {
            spec.ready_wait = ReadyWait {
                timeout: secs(ready_rng.gen_range(10..=60)),
                step: Duration::from_millis(ready_rng.gen_range(200..=8000)),
            };
        }
    }
    (setup, chaos)
}

/// Leaves one or two applications no record accounts for, as long as they
/// fit beside what the records will count: the dispatcher must count them
/// before it takes another job, and delete them.
fn add_leftovers(harness: &mut Harness, rng: &mut SmallRng) {
    for _ in 0..rng.gen_range(1..=2) {
        let room = harness.config.quota - harness.committed_weight();
        let fitting: Vec<&str> = FLAVORS
            .iter()
            .map(|(name, _, _)| *name)
            .filter(|name| weight(name) <= room - EPSILON)
            .collect();
        if fitting.is_empty() {
            return;
        }
        let flavor = fitting[rng.gen_range(0..fitting.len())];
        let runner = rng.gen_range(0..harness.runners.len());
        let job_id = LEFTOVER_IDS + 1 + harness.cloud.strays;
        harness.add_leftover(runner, job_id, flavor);
    }
}

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

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} is a number, not {value:?}"))
    })
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
    let workers = std::thread::available_parallelism()
        .map_or(1, |cores| cores.get())
        .min(usize::try_from(count).unwrap_or(1).max(1));
    let results: Vec<(Figures, Vec<(u64, String)>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let seeds = seeds.clone();
                scope.spawn(move || {
                    let mut figures = Figures::default();
                    let mut failures = Vec::new();
                    for seed in seeds.skip(worker).step_by(workers) {
                        let harness = run_seed(seed, false);
                        figures.add(&harness);
                        if let Some(first) = harness.violations.first() {
                            failures.push((seed, format!("seed {seed}: {first}")));
                        }
                    }
                    (figures, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("simulation worker panicked"))
            .collect()
    });
    let mut figures = Figures::default();
    let mut failures = Vec::new();
    for (worker_figures, worker_failures) in &results {
        figures.merge(worker_figures);
        failures.extend(worker_failures.iter().cloned());
    }
    failures.sort();
    let failures: Vec<String> = failures.into_iter().map(|(_, text)| text).collect();
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
