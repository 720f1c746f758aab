//! Property tests of the weighted quota: random job mixes, limits and
//! answer delays, with the invariants checked after every step of the
//! harness.

mod common;

use std::time::Duration;

use common::*;
use paas_core::FailureKind;
use proptest::prelude::*;

/// A random workload and configuration, kept as plain values so that
/// proptest shrinks them.
#[derive(Debug, Clone)]
struct Mix {
    /// Per runner: `quota_max_fraction`, whether launches are watched.
    runners: Vec<(f64, bool)>,
    allowed_fraction_per_runner: f64,
    /// Quota: a whole number of jobs of flavor `FLAVORS[reference]`: `extra`
    /// more than every runner needs to take a 2XL, or just `extra + 1` when
    /// `starved` (then some runners may never poll).
    reference: usize,
    extra: u32,
    starved: bool,
    concurrent: usize,
    max_provisioning: usize,
    min_between_launches_ms: u64,
    repoll_immediately: bool,
    /// Per job: runner (modulo the runner count), flavor choice (see
    /// [`requested_flavor`]), arrival, boot and duration in ms.
    jobs: Vec<(usize, usize, u64, u64, u64)>,
    delay_max_ms: u64,
    seed: u64,
}

/// 0: none (the default, S); 1..=7: XS..3XL; 8: a case mistake; 9: a
/// flavor the cloud does not have.
fn requested_flavor(choice: usize) -> Option<String> {
    match choice {
        0 => None,
        1..=7 => Some(FLAVORS[choice - 1].0.to_owned()),
        8 => Some("xl".to_owned()),
        _ => Some("4XL".to_owned()),
    }
}

prop_compose! {
    fn mix()(
        runners in prop::collection::vec((0.05f64..=1.0, prop::bool::weighted(0.7)), 1..=3),
        allowed_fraction_per_runner in 0.1f64..=1.0,
        reference in 0..FLAVORS.len(),
        extra in 0u32..=20,
        starved in prop::bool::weighted(0.1),
        concurrent in 1usize..=25,
        max_provisioning in 1usize..=10,
        min_between_launches_ms in prop_oneof![Just(0u64), 1u64..=5_000],
        repoll_immediately in any::<bool>(),
        jobs in prop::collection::vec(
            (
                0usize..3,
                0usize..=9,
                0u64..=300_000,
                500u64..=90_000,
                1_000u64..=400_000,
            ),
            1..40,
        ),
        delay_max_ms in prop_oneof![Just(0u64), 1u64..=5_000],
        seed in any::<u64>(),
    ) -> Mix {
        Mix {
            runners,
            allowed_fraction_per_runner,
            reference,
            extra,
            starved,
            concurrent,
            max_provisioning,
            min_between_launches_ms,
            repoll_immediately,
            jobs,
            delay_max_ms,
            seed,
        }
    }
}

fn setup(mix: &Mix) -> Setup {
    let mut setup = Setup::new();
    setup.seed = mix.seed;
    setup.label = "quota property".to_owned();
    setup.runners = mix
        .runners
        .iter()
        .enumerate()
        .map(|(idx, &(fraction, watched))| {
            // Watched as `runner_spec` sets it: 60 s, checked every 5 s.
            let mut spec = runner_spec(idx);
            spec.quota_max_fraction = fraction;
            if !watched {
                spec.launch_watch = None;
            }
            spec
        })
        .collect();
    let config = &mut setup.config;
    config.allowed_fraction_per_runner = mix.allowed_fraction_per_runner;
    let reference_weight = weight(FLAVORS[mix.reference].0);
    let smallest_share = mix
        .runners
        .iter()
        .map(|&(fraction, _)| fraction.min(mix.allowed_fraction_per_runner))
        .fold(1.0, f64::min);
    let needed = (weight("2XL") / smallest_share / reference_weight).ceil() as u32;
    let count = if mix.starved {
        mix.extra + 1
    } else {
        needed + mix.extra
    };
    config.quota = reference_weight * f64::from(count);
    config.concurrent = mix.concurrent;
    config.max_provisioning = mix.max_provisioning;
    config.min_between_launches = Duration::from_millis(mix.min_between_launches_ms);
    config.repoll_immediately = mix.repoll_immediately;
    // Half the cases reconcile (a listing before the first poll, then
    // every interval); the seed decides, to keep the strategy's tuple small.
    if mix.seed.is_multiple_of(2) {
        config.reconcile_interval = RECONCILE_INTERVAL;
    }
    for &(runner, choice, arrival_ms, boot_ms, duration_ms) in &mix.jobs {
        let mut spec = JobSpec::new(runner % mix.runners.len());
        spec.flavor = requested_flavor(choice);
        spec.arrival = Duration::from_millis(arrival_ms);
        spec.boot = Some(Duration::from_millis(boot_ms));
        spec.duration = Duration::from_millis(duration_ms);
        setup.jobs.push(spec);
    }
    if mix.delay_max_ms > 0 {
        setup.delays.random_max = Some(Duration::from_millis(mix.delay_max_ms));
    }
    setup
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// With or without reconciliation, at every step: tracked weight +
    /// reserved poll weight and the cloud's live weight within the quota, each runner within its share, jobs
    /// within `concurrent` and `max_provisioning`. At the end: nothing
    /// leaked, every job launched or failed with a message, none deployed
    /// twice, and flavor mistakes reported as the user's.
    #[test]
    fn quota_and_limits_hold_at_every_step(mix in mix()) {
        let mut harness = setup(&mix).build();
        harness.tracing = false;
        let driven = harness.drive_bounded(300_000);
        prop_assert!(driven.is_ok(), "{}", driven.unwrap_err());
        prop_assert!(harness.violations.is_empty(), "{}", harness.violations.join("\n"));
        let found = harness.final_violations();
        prop_assert!(found.is_empty(), "{}", found.join("\n"));
        prop_assert!(harness.maxima.weight <= harness.config.quota + EPSILON);
        prop_assert!(harness.cloud.max_live_weight <= harness.config.quota + EPSILON);

        for job in harness.coordinator.jobs.values() {
            let id = job.key.job_id;
            if !harness.runner_can_poll(job.key.runner) {
                prop_assert_eq!(job.state, CoordState::Pending, "j{} of a runner that cannot poll", id);
                continue;
            }
            let created = harness.cloud.created_for.get(&job.key).copied().unwrap_or(0);
            prop_assert!(created <= 1, "j{} got {} applications", id, created);
            let flavor_error = match job.spec.flavor.as_deref() {
                Some("3XL") => Some("larger than the maximum flavor \"2XL\""),
                Some("xl") => Some("did you mean \"XL\"?"),
                Some("4XL") => Some("\"4XL\" requested by the CI_CLEVER_CLOUD_FLAVOR job variable does not exist"),
                _ => None,
            };
            match flavor_error {
                Some(text) => {
                    prop_assert!(job.log.contains(text), "j{} log {:?}", id, job.log);
                    prop_assert_eq!(&job.failure_reports, &[FailureKind::User]);
                    prop_assert_eq!(created, 0, "j{} with a bad flavor got an application", id);
                }
                None => prop_assert!(
                    job.failure_reports.iter().all(|kind| *kind == FailureKind::System),
                    "j{} {:?}", id, job.failure_reports
                ),
            }
        }
    }
}
