//! The seeded workloads of the simulations: runners, limits, jobs,
//! faults, delays, leftovers and foreign applications drawn from a seed.

use super::*;

/// Job ids of leftovers: above every workload's.
pub const LEFTOVER_IDS: u64 = 1000;
/// Job ids of the foreign applications (none of the workload or leftovers).
pub const FOREIGN_IDS: u64 = 900_000;
/// Knobs of a simulated run beyond its [`Setup`].
#[derive(Debug)]
pub struct Chaos {
    /// Chance, per step, that the process stops (crash or graceful).
    pub restart_rate: f64,
    /// Share of the stops that are crashes rather than graceful.
    pub crash_share: f64,
    pub max_restarts: u32,
    /// Chance, per stop, that applications no record accounts for appear
    /// while the process is down.
    pub leftover_rate: f64,
    /// Chance, per step, that someone deletes the machine of a job under
    /// way behind the dispatcher's back (reconciling runs only).
    pub vanish_rate: f64,
    /// Applications of another installation under the runners' names, there
    /// from the start and deleted by their owner at some step.
    pub foreign: Vec<(RunnerIdx, &'static str, AppOwner)>,
}

pub fn random_setup(seed: u64) -> (Setup, Chaos) {
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
pub fn add_leftovers(harness: &mut Harness, rng: &mut SmallRng) {
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

/// A number from the environment (seed counts, a seed to replay).
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} is a number, not {value:?}"))
    })
}

/// Runs `run` on every seed of `seeds`, spread over the cores (seeds are
/// independent): each worker adds to its own figures, merged at the end;
/// the failures (`run`'s first violation of a seed) come in seed order.
/// Returns the figures, the failures and the number of workers.
pub fn spread_seeds<F: Default + Send>(
    seeds: std::ops::Range<u64>,
    run: impl Fn(u64, &mut F) -> Option<String> + Sync,
    merge: impl Fn(&mut F, F),
) -> (F, Vec<String>, usize) {
    let count = seeds.end.saturating_sub(seeds.start);
    let workers = std::thread::available_parallelism()
        .map_or(1, |cores| cores.get())
        .min(usize::try_from(count).unwrap_or(1).max(1));
    let run = &run;
    let results: Vec<(F, Vec<(u64, String)>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let seeds = seeds.clone();
                scope.spawn(move || {
                    let mut figures = F::default();
                    let mut failures = Vec::new();
                    for seed in seeds.skip(worker).step_by(workers) {
                        if let Some(first) = run(seed, &mut figures) {
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
    let mut figures = F::default();
    let mut failures = Vec::new();
    for (worker_figures, worker_failures) in results {
        merge(&mut figures, worker_figures);
        failures.extend(worker_failures);
    }
    failures.sort();
    let failures = failures.into_iter().map(|(_, text)| text).collect();
    (figures, failures, workers)
}
