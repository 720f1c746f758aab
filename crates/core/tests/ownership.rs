//! Ownership of the cloud's applications: reconciliation deletes only what
//! this installation owns, and only once old enough; it reports and counts
//! the others; it ends jobs whose machine was deleted behind its back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use paas_core::{
    AppOwner, Command, Dispatcher, FailureKind, ListedApp, Notice, PollOutcome, StageRecord,
};

fn foreign_notices(harness: &Harness) -> Vec<String> {
    harness
        .notices
        .iter()
        .filter_map(|(_, notice)| match notice {
            Notice::Foreign { app_id, owner, .. } => Some(format!("{app_id} {owner:?}")),
            _ => None,
        })
        .collect()
}

#[test]
fn young_orphan_counts_in_the_quota_and_is_deleted_once_old_enough() {
    let mut setup = Setup::new().leftover(0, 1000, "S").reconciling();
    setup.config.orphan_min_age = secs(100);
    let mut harness = setup.build();
    harness.run_until(secs(99));
    assert!(harness.times_of("DeleteOrphan").is_empty());
    assert!((harness.dispatcher.orphan_weight() - weight("S")).abs() < EPSILON);
    harness.run_until(secs(200));
    // Due at its age of 100 s, not at the next listing (120 s).
    assert_eq!(harness.times_of("DeleteOrphan"), [100]);
    assert_eq!(harness.cloud.orphan_deletions, 1);
    harness.assert_no_violations();
}

#[test]
fn foreign_and_unmarked_applications_are_counted_reported_once_and_kept() {
    let mut setup = Setup::new().job(JobSpec::new(0)).reconciling();
    // Room for one S job beside two foreign S applications.
    setup.config.quota = weight("S") * 3.0;
    setup.runners[0].max_flavor = Some("S".to_owned());
    let mut harness = setup.build();
    let other = harness.add_foreign(0, 1000, "S", AppOwner::Foreign("r_other".into()));
    let unmarked = harness.add_foreign(0, 1001, "S", AppOwner::Unmarked);
    harness.run_until(secs(200));
    assert_eq!(
        foreign_notices(&harness),
        [
            format!("{other} Foreign(\"r_other\")"),
            format!("{unmarked} Unmarked")
        ],
        "each reported once over several listings"
    );
    assert!(harness.times_of("DeleteOrphan").is_empty());
    assert!(harness.cloud.apps.contains_key(&other));
    assert!(harness.cloud.apps.contains_key(&unmarked));
    let stats = harness.dispatcher.stats();
    assert_eq!(stats.foreign_apps, 2);
    assert!((stats.foreign_weight - 2.0 * weight("S")).abs() < EPSILON);
    assert!(
        (stats.weight - 2.0 * weight("S")).abs() < EPSILON,
        "{stats:?}"
    );
    assert_eq!(
        harness.coordinator.job(1).state,
        CoordState::Success,
        "our own job ran beside them"
    );

    // Its owner deletes one: it counts no more after the next listing.
    harness.cloud.apps.remove(&other);
    harness.run_until(secs(240));
    let stats = harness.dispatcher.stats();
    assert_eq!(stats.foreign_apps, 1);
    assert!((stats.weight - weight("S")).abs() < EPSILON, "{stats:?}");
    harness.assert_no_violations();
}

#[test]
fn foreign_applications_fill_the_quota_like_our_own() {
    // The organisation's quota is shared: a foreign 2XL under our runner
    // key leaves no room for a poll of a 2XL.
    let mut setup = Setup::new().job(JobSpec::new(0)).reconciling();
    setup.config.quota = weight("2XL");
    let mut harness = setup.build();
    let other = harness.add_foreign(0, 1000, "S", AppOwner::Foreign("r_other".into()));
    harness.run_until(secs(100));
    assert!(harness.times_of("RequestJob").is_empty(), "no room to poll");
    harness.cloud.apps.remove(&other);
    harness.drive();
    harness.assert_final();
    // Polled once the next listing showed it gone.
    assert_eq!(harness.times_of("RequestJob")[0], 120);
}

#[test]
fn a_job_named_application_of_another_owner_is_neither_adopted_nor_deleted() {
    // The job's creation outcome is unknown when the process restarts;
    // another installation holds an application of the same name.
    let mut setup = Setup::new().job(JobSpec::new(0)).reconciling();
    setup.config.quota = weight("2XL") * 4.0;
    let mut harness = setup.build();
    let other = harness.add_foreign(0, 1, "S", AppOwner::Foreign("r_other".into()));
    harness.run_until(secs(300));
    assert!(harness.cloud.apps.contains_key(&other), "left alone");
    assert!(
        !harness
            .notices
            .iter()
            .any(|(_, notice)| matches!(notice, Notice::Adopted { .. })),
        "not adopted"
    );
    assert_eq!(harness.coordinator.job(1).state, CoordState::Success);
    assert_eq!(harness.cloud.creations, 1, "the job got its own machine");
    harness.cloud.apps.remove(&other);
    harness.drive();
    harness.assert_final();
}

#[test]
fn machine_deleted_behind_the_back_ends_the_job_and_releases_its_weight() {
    let mut harness = Setup::new()
        .job(JobSpec::new(0).duration(500))
        .reconciling()
        .build();
    harness.run_until(secs(40));
    assert_eq!(harness.dispatcher.jobs().count(), 1);
    let app_id = harness
        .remove_behind_back(1)
        .expect("the job's application");
    harness.run_until(secs(80));
    let trace = harness.trace_matching(&["Notice vanished", "ReportFailure", "DeleteApp"]);
    assert_lines(
        &trace,
        &format!(
            r"
            60s Notice vanished j1 {app_id}
            60s ReportFailure j1 System
            "
        ),
    );
    assert_eq!(harness.dispatcher.jobs().count(), 0, "forgotten");
    assert_eq!(harness.dispatcher.stats().weight, 0.0);
    let job = harness.coordinator.job(1);
    assert_eq!(job.state, CoordState::Failed(FailureKind::System));
    assert!(
        job.log.contains("deleted outside paas-runner"),
        "{:?}",
        job.log
    );
    harness.drive();
    harness.assert_final();
}

/// A fixed origin of virtual time (the core never reads the clock; tests
/// only need some instant).
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// A dispatcher with one runner, listing every 30 s, with its first
/// listing under way at `t0`.
fn listing_dispatcher(min_age: Duration, t0: Instant) -> Dispatcher {
    let mut config = config();
    config.reconcile_interval = RECONCILE_INTERVAL;
    config.orphan_min_age = min_age;
    let mut dispatcher = Dispatcher::new(config, vec![runner_spec(0)]);
    dispatcher.restore(Vec::new(), t0);
    let commands: Vec<Command> = std::iter::from_fn(|| dispatcher.poll_command()).collect();
    assert!(
        matches!(commands[..], [Command::ListApps { runner: 0 }]),
        "{commands:?}"
    );
    dispatcher
}

fn listed(id: &str, job_id: u64, owner: AppOwner, age: Option<Duration>) -> ListedApp {
    ListedApp {
        id: id.to_owned(),
        name: runner_spec(0).app_name(job_id),
        weight: weight("S"),
        created_ms: None,
        owner,
        age,
    }
}

fn deletions(dispatcher: &mut Dispatcher) -> Vec<String> {
    std::iter::from_fn(|| dispatcher.poll_command())
        .filter_map(|command| match command {
            Command::DeleteOrphan { app_id, .. } => Some(app_id),
            _ => None,
        })
        .collect()
}

#[test]
fn orphans_of_unknown_age_are_never_deleted_old_ones_are() {
    let t0 = origin();
    let mut dispatcher = listing_dispatcher(secs(600), t0);
    let apps = vec![
        listed("app-unknown", 10, AppOwner::Ours, None),
        listed("app-old", 11, AppOwner::Ours, Some(secs(601))),
        listed("app-young", 12, AppOwner::Ours, Some(secs(30))),
        listed(
            "app-other",
            13,
            AppOwner::Foreign("r_x".into()),
            Some(secs(9999)),
        ),
        listed("app-unmarked", 14, AppOwner::Unmarked, Some(secs(9999))),
    ];
    dispatcher.handle_app_list(0, Some(apps.clone()), t0);
    assert_eq!(deletions(&mut dispatcher), ["app-old"]);
    dispatcher.handle_orphan_deleted("app-old", true, t0);
    // 570 s later the young one is 600 s old; the unknown one never is.
    let later = t0 + secs(570);
    assert_eq!(dispatcher.poll_timeout().map(|at| at <= later), Some(true));
    dispatcher.handle_timeout(later);
    assert_eq!(deletions(&mut dispatcher), ["app-young"]);
    dispatcher.handle_orphan_deleted("app-young", true, later);
    let much_later = t0 + secs(100_000);
    dispatcher.handle_timeout(much_later);
    let still: Vec<ListedApp> = apps
        .into_iter()
        .filter(|app| app.id != "app-old" && app.id != "app-young")
        .collect();
    dispatcher.handle_app_list(0, Some(still), much_later);
    assert!(deletions(&mut dispatcher).is_empty());
    let stats = dispatcher.stats();
    assert_eq!(stats.foreign_apps, 2);
    // The unknown-aged orphan and the two foreign ones count.
    assert!(
        (stats.weight - 3.0 * weight("S")).abs() < EPSILON,
        "{stats:?}"
    );
}

#[test]
fn a_creation_landing_after_the_listing_started_is_not_taken_for_vanished() {
    let t0 = origin();
    let mut dispatcher = listing_dispatcher(secs(600), t0);
    dispatcher.handle_app_list(0, Some(Vec::new()), t0);
    // The second listing starts at 30 s; a job's creation lands at 31 s,
    // and the listing (which did not see it) answers at 32 s.
    let mut now = t0;
    let mut job_id = None;
    let mut commands = Vec::new();
    while now < t0 + secs(31) {
        now += Duration::from_millis(500);
        dispatcher.handle_timeout(now);
        commands.extend(std::iter::from_fn(|| dispatcher.poll_command()));
        for command in std::mem::take(&mut commands) {
            match command {
                Command::RequestJob { runner } if job_id.is_none() => {
                    job_id = Some(7);
                    let job = paas_core::NewJob {
                        job_id: 7,
                        token: paas_core::Secret::new("t"),
                        project_id: None,
                        requested_flavor: None,
                        failure_reasons: None,
                        payload: "{}".into(),
                    };
                    dispatcher.handle_poll(runner, PollOutcome::Job(job), now);
                }
                Command::RequestJob { runner } => {
                    dispatcher.handle_poll(runner, PollOutcome::NoJob, now)
                }
                Command::ConfirmJob { job, .. } => {
                    dispatcher.handle_confirmed(job, paas_core::ConfirmCheck::Confirmed, now)
                }
                _ => {}
            }
            commands.extend(std::iter::from_fn(|| dispatcher.poll_command()));
        }
    }
    let key = dispatcher.jobs().next().expect("the job").key;
    dispatcher.handle_created(
        key,
        paas_core::StepOutcome::Done(paas_core::App {
            id: "app-7".into(),
            weight: weight("S"),
        }),
        t0 + secs(31),
    );
    // Its deployment is being retried (nothing in flight) when the
    // listing answers.
    dispatcher.handle_deployed(
        key,
        paas_core::StepOutcome::Failed {
            transient: true,
            user_message: "repository not ready".into(),
        },
        t0 + secs(31),
    );
    dispatcher.handle_app_list(0, Some(Vec::new()), t0 + secs(32));
    let job = dispatcher.job(key).expect("still tracked");
    assert!(!job.failed, "{:?}", job.stage);
    assert_eq!(job.app_id(), Some("app-7"));
    // A listing started after the creation and missing it does end it.
    dispatcher.handle_timeout(t0 + secs(60));
    let commands: Vec<Command> = std::iter::from_fn(|| dispatcher.poll_command()).collect();
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::ListApps { .. })),
        "{commands:?}"
    );
    dispatcher.handle_app_list(0, Some(Vec::new()), t0 + secs(61));
    // The deployment retried at 60 s is in flight: the job is ended when
    // its outcome comes.
    let commands: Vec<Command> = std::iter::from_fn(|| dispatcher.poll_command()).collect();
    assert!(
        !commands
            .iter()
            .any(|command| matches!(command, Command::Notice(Notice::MachineVanished { .. }))),
        "{commands:?}"
    );
    dispatcher.handle_deployed(
        key,
        paas_core::StepOutcome::Failed {
            transient: true,
            user_message: "repository not ready".into(),
        },
        t0 + secs(62),
    );
    let commands: Vec<Command> = std::iter::from_fn(|| dispatcher.poll_command()).collect();
    assert!(
        commands.iter().any(|command| matches!(
            command,
            Command::Notice(Notice::MachineVanished { app_id, .. }) if app_id == "app-7"
        )),
        "{commands:?}"
    );
    let job = dispatcher.job(key).expect("failing");
    assert!(job.failed);
    assert_eq!(job.weight(), 0.0, "weight released at once");
    let saved = commands.iter().any(
        |command| matches!(command, Command::Save(record) if record.stage == StageRecord::Failing),
    );
    assert!(saved, "{commands:?}");
}
