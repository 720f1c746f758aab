//! Watching launched jobs under a `WatchConfig`: how many coordinator checks
//! a job costs and how soon its end is noticed, with and without the cloud's
//! batch signal.

mod common;

use common::*;
use paas_core::WatchConfig;
use std::time::Duration;

/// One job of `duration` on runner 0, booting in 7 s, watched under the
/// deployment's defaults for `check_interval` 3 s.
fn one_job(duration: Duration, machine_listing: bool) -> Harness {
    let mut spec = JobSpec::new(0);
    spec.duration = duration;
    let mut setup = Setup::new().job(spec);
    setup.watch = Some(WatchConfig::new(setup.config.check_interval));
    setup.machine_listing = machine_listing;
    setup.run()
}

/// When the job's end is due in the model: its push, boot and duration.
fn job_end(harness: &Harness, duration: Duration) -> u64 {
    let pushed = harness.times_of("Deploy j1")[0];
    pushed + 7 + duration.as_secs()
}

#[test]
fn with_the_batch_signal_a_job_costs_a_few_checks_and_ends_at_once() {
    for minutes in [1, 10, 30] {
        let duration = secs(60 * minutes);
        let harness = one_job(duration, true);
        let checks = harness.times_of("CheckStatus j1");
        // Safety-net checks 60 s, 180 s, 420 s, … after the launch (the
        // wait doubles up to 10 min), then the one the signal asks for.
        let expected_max = match minutes {
            1 => 2,
            10 => 5,
            _ => 8,
        };
        assert!(
            !checks.is_empty() && checks.len() <= expected_max,
            "{minutes} min: {checks:?}\n{}",
            harness.trace_tail(30)
        );
        let deleted = harness.times_of("DeleteApp j1")[0];
        let end = job_end(&harness, duration);
        assert!(
            deleted >= end && deleted <= end + 3,
            "{minutes} min: ended at {end}s, deleted at {deleted}s\n{}",
            harness.trace_tail(30)
        );
        // Two listings per check interval (3 s) while the job is watched.
        let listings = harness.times_of("ListMachines r0").len() as u64;
        assert!(listings <= (end + 3) * 2 / 3 + 2, "{listings} listings");
    }
}

#[test]
fn without_the_batch_signal_checks_are_paced_by_age() {
    for minutes in [1, 10, 30] {
        let duration = secs(60 * minutes);
        let harness = one_job(duration, false);
        let checks = harness.times_of("CheckStatus j1");
        // 3 s doubling up to 30 s: about 5 checks for the first minute,
        // then two a minute.
        let expected_max = 5 + 2 * minutes as usize;
        assert!(
            checks.len() <= expected_max,
            "{minutes} min: {} checks {checks:?}",
            checks.len()
        );
        let deleted = harness.times_of("DeleteApp j1")[0];
        let end = job_end(&harness, duration);
        assert!(
            deleted >= end && deleted <= end + 30,
            "{minutes} min: ended at {end}s, deleted at {deleted}s"
        );
        // The cloud said once that it has no listing: not asked again
        // within the hour of `redetect_after`.
        let listings = harness.times_of("ListMachines r0");
        assert!(listings.len() <= 2, "{listings:?}");
    }
}

#[test]
fn without_a_watch_config_every_job_is_checked_every_status_interval() {
    let mut spec = JobSpec::new(0);
    spec.duration = secs(600);
    let harness = Setup::new().job(spec).run();
    let checks = harness.times_of("CheckStatus j1");
    // status_interval is 10 s in these settings.
    assert!(checks.len() >= 55, "{} checks", checks.len());
    assert!(harness.times_of("ListMachines").is_empty());
}

#[test]
fn a_listing_the_coordinator_contradicts_costs_one_check_and_is_not_trusted_again() {
    let duration = secs(600);
    let mut spec = JobSpec::new(0);
    spec.duration = duration;
    let mut setup = Setup::new().job(spec);
    setup.watch = Some(WatchConfig::new(setup.config.check_interval));
    setup.machine_listing_lies = true;
    let harness = setup.run();
    let checks = harness.times_of("CheckStatus j1");
    // The false "ended" costs one check; then the safety-net pacing of a
    // job without a trustworthy signal (3 s doubling up to 30 s).
    assert!(
        checks.len() <= 1 + 5 + 2 * 10,
        "{} checks: {checks:?}",
        checks.len()
    );
    // The job is not ended early on the cloud's word.
    let deleted = harness.times_of("DeleteApp j1")[0];
    let end = job_end(&harness, duration);
    assert!(
        deleted >= end && deleted <= end + 30,
        "ended {end}s, deleted {deleted}s"
    );
}
