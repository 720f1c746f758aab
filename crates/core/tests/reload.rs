//! Configuration reload in the core: runners added, retired and changed,
//! and the quota changed, with jobs in flight.

mod common;

use std::time::{Duration, Instant};

use common::*;
use paas_core::{
    App, AppOwner, Command, ConfirmCheck, Dispatcher, DispatcherConfig, JobKey, ListedApp, NewJob,
    Notice, PollOutcome, RunnerSpec, RunnerUpdate, Secret, StepOutcome,
};

/// A runner whose jobs are all of flavor S (default and maximum), so that a
/// poll reserves the weight of one S.
fn small_runner(idx: usize) -> RunnerSpec {
    RunnerSpec {
        max_flavor: Some("S".to_owned()),
        ..runner_spec(idx)
    }
}

fn config_for(jobs_of_s: f64) -> DispatcherConfig {
    DispatcherConfig {
        quota: weight("S") * jobs_of_s,
        ..config()
    }
}

fn drain(dispatcher: &mut Dispatcher) -> Vec<Command> {
    std::iter::from_fn(|| dispatcher.poll_command()).collect()
}

fn requests(commands: &[Command]) -> Vec<usize> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::RequestJob { runner } => Some(*runner),
            _ => None,
        })
        .collect()
}

fn new_job(job_id: u64) -> NewJob {
    NewJob {
        job_id,
        token: Secret::new(format!("job-token-{job_id}")),
        project_id: Some(1),
        requested_flavor: None,
        failure_reasons: None,
        payload: "{}".to_owned(),
    }
}

/// Hands job `job_id` to `runner`'s in-flight poll and confirms it.
fn take_job(dispatcher: &mut Dispatcher, runner: usize, job_id: u64, now: Instant) -> Vec<Command> {
    dispatcher.handle_poll(runner, PollOutcome::Job(new_job(job_id)), now);
    let key = JobKey { runner, job_id };
    let mut commands = drain(dispatcher);
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::ConfirmJob { job, .. } if *job == key)),
        "{commands:?}"
    );
    dispatcher.handle_confirmed(key, ConfirmCheck::Confirmed, now);
    commands.extend(drain(dispatcher));
    commands
}

fn keep(idx: usize, spec: RunnerSpec) -> RunnerUpdate {
    RunnerUpdate {
        continues: Some(idx),
        spec,
    }
}

fn add(spec: RunnerSpec) -> RunnerUpdate {
    RunnerUpdate {
        continues: None,
        spec,
    }
}

#[test]
fn a_larger_quota_lets_waiting_polls_go_and_keeps_jobs_in_flight() {
    let now = origin();
    let mut dispatcher = Dispatcher::new(config_for(1.0), vec![small_runner(0)]);
    dispatcher.handle_timeout(now);
    assert_eq!(requests(&drain(&mut dispatcher)), [0]);
    let commands = take_job(&mut dispatcher, 0, 1, now);
    assert!(requests(&commands).is_empty(), "quota full: {commands:?}");
    let stage_before = dispatcher
        .job(JobKey {
            runner: 0,
            job_id: 1,
        })
        .map(|j| j.stage.clone());

    // Past the check interval: only the quota holds the next poll back.
    let later = now + Duration::from_secs(5);
    dispatcher.handle_timeout(later);
    assert!(requests(&drain(&mut dispatcher)).is_empty());
    let summary =
        dispatcher.handle_reconfigure(config_for(3.0), vec![keep(0, small_runner(0))], later);

    assert!((summary.quota_after - 3.0 * summary.quota_before).abs() < 1e-9);
    assert!(summary.added.is_empty() && summary.retired.is_empty() && summary.changed.is_empty());
    assert_eq!(requests(&drain(&mut dispatcher)), [0], "room for more");
    let key = JobKey {
        runner: 0,
        job_id: 1,
    };
    assert_eq!(dispatcher.job(key).map(|j| j.stage.clone()), stage_before);
    assert!((dispatcher.stats().quota - 3.0 * weight("S")).abs() < 1e-9);
}

#[test]
fn a_quota_below_the_weight_in_use_kills_nothing_and_takes_nothing_until_it_fits() {
    let now = origin();
    let mut dispatcher = Dispatcher::new(config_for(3.0), vec![small_runner(0)]);
    dispatcher.handle_timeout(now);
    drain(&mut dispatcher);
    take_job(&mut dispatcher, 0, 1, now);
    let second = now + Duration::from_secs(5);
    dispatcher.handle_timeout(second);
    assert_eq!(requests(&drain(&mut dispatcher)), [0]);
    take_job(&mut dispatcher, 0, 2, second);
    let third = now + Duration::from_secs(10);
    dispatcher.handle_timeout(third);
    assert_eq!(requests(&drain(&mut dispatcher)), [0]);
    // A third poll is in flight; it comes back empty after the reload.
    let summary =
        dispatcher.handle_reconfigure(config_for(1.0), vec![keep(0, small_runner(0))], third);
    assert!(summary.over_quota(), "{summary:?}");
    assert_eq!(dispatcher.stats().jobs, 2, "nothing is stopped");
    dispatcher.handle_poll(0, PollOutcome::NoJob, third);
    let later = now + Duration::from_secs(20);
    dispatcher.handle_timeout(later);
    assert!(requests(&drain(&mut dispatcher)).is_empty());

    // One job ends (withdrawn before creation would be simplest; here the
    // coordinator no longer has it): still one S in use, no room for a poll.
    finish_without_machine(
        &mut dispatcher,
        JobKey {
            runner: 0,
            job_id: 1,
        },
        later,
    );
    assert!(
        requests(&drain(&mut dispatcher)).is_empty(),
        "S in use, quota S"
    );
    finish_without_machine(
        &mut dispatcher,
        JobKey {
            runner: 0,
            job_id: 2,
        },
        later,
    );
    assert_eq!(requests(&drain(&mut dispatcher)), [0], "fits again");
}

/// Ends a confirmed job whose creation (under way) fails for good: the job
/// fails and is forgotten once its failure is reported.
fn finish_without_machine(dispatcher: &mut Dispatcher, key: JobKey, now: Instant) {
    dispatcher.handle_created(
        key,
        StepOutcome::Failed {
            transient: false,
            user_message: "refused".to_owned(),
        },
        now,
    );
    for _ in 0..10 {
        let commands = drain(dispatcher);
        for command in commands {
            match command {
                Command::CreateApp { job, .. } if job == key => dispatcher.handle_created(
                    key,
                    StepOutcome::Failed {
                        transient: false,
                        user_message: "refused".to_owned(),
                    },
                    now,
                ),
                Command::DeleteApp { job, .. } if job == key => {
                    dispatcher.handle_deleted(key, StepOutcome::Done(()), now)
                }
                Command::AppendLog { job, .. } if job == key => {
                    dispatcher.handle_log_appended(key, StepOutcome::Done(()), now)
                }
                Command::ReportFailure { job, .. } if job == key => {
                    dispatcher.handle_failure_reported(key, StepOutcome::Done(()), now)
                }
                _ => {}
            }
        }
        if dispatcher.job(key).is_none() {
            return;
        }
    }
    panic!("job {key:?} not forgotten");
}

#[test]
fn a_removed_runner_polls_no_more_and_its_jobs_run_to_their_end() {
    let now = origin();
    let mut dispatcher = Dispatcher::new(config_for(4.0), vec![small_runner(0), small_runner(1)]);
    dispatcher.handle_timeout(now);
    assert_eq!(requests(&drain(&mut dispatcher)), [0, 1]);
    let commands = take_job(&mut dispatcher, 1, 7, now);
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::CreateApp { .. })));
    dispatcher.handle_poll(0, PollOutcome::NoJob, now);
    drain(&mut dispatcher);
    let weight_before = dispatcher.stats().weight;

    let summary =
        dispatcher.handle_reconfigure(config_for(4.0), vec![keep(0, small_runner(0))], now);
    assert_eq!(summary.retired.len(), 1);
    assert_eq!((summary.retired[0].runner, summary.retired[0].jobs), (1, 1));
    assert!(dispatcher.is_retired(1) && !dispatcher.is_retired(0));
    assert_eq!(
        dispatcher.stats().weight,
        weight_before,
        "its weight stays counted"
    );

    // Its job goes on: created, deployed, ..., while runner 1 never polls.
    let key = JobKey {
        runner: 1,
        job_id: 7,
    };
    dispatcher.handle_created(
        key,
        StepOutcome::Done(App {
            id: "app_7".to_owned(),
            weight: weight("S"),
        }),
        now,
    );
    let commands = drain(&mut dispatcher);
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::CheckReady { job, .. } if *job == key)));
    for second in 1..100 {
        dispatcher.handle_timeout(now + Duration::from_secs(second));
        let commands = drain(&mut dispatcher);
        assert!(!requests(&commands).contains(&1), "{commands:?}");
        for runner in requests(&commands) {
            dispatcher.handle_poll(
                runner,
                PollOutcome::NoJob,
                now + Duration::from_secs(second),
            );
        }
    }
    assert!(dispatcher.job(key).is_some(), "not orphaned");
}

#[test]
fn an_added_runner_is_listed_then_polled() {
    let now = origin();
    let config = DispatcherConfig {
        reconcile_interval: RECONCILE_INTERVAL,
        ..config_for(4.0)
    };
    let mut dispatcher = Dispatcher::new(config.clone(), vec![small_runner(0)]);
    dispatcher.handle_timeout(now);
    let commands = drain(&mut dispatcher);
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::ListApps { runner: 0 })));
    dispatcher.handle_app_list(0, Some(Vec::new()), now);
    assert_eq!(requests(&drain(&mut dispatcher)), [0]);
    dispatcher.handle_poll(0, PollOutcome::NoJob, now);
    drain(&mut dispatcher);

    let summary = dispatcher.handle_reconfigure(
        config,
        vec![keep(0, small_runner(0)), add(small_runner(1))],
        now,
    );
    assert_eq!(summary.added.len(), 1);
    assert_eq!(summary.added[0].runner, 1);
    let commands = drain(&mut dispatcher);
    assert!(commands
        .iter()
        .any(|c| matches!(c, Command::ListApps { runner: 1 })));
    assert!(
        requests(&commands).is_empty(),
        "leftovers first: {commands:?}"
    );
    dispatcher.handle_app_list(1, Some(Vec::new()), now);
    assert_eq!(requests(&drain(&mut dispatcher)), [1]);
}

#[test]
fn a_changed_runner_keeps_its_index_and_decides_with_its_new_settings() {
    let now = origin();
    let mut dispatcher = Dispatcher::new(config_for(8.0), vec![small_runner(0)]);
    dispatcher.handle_timeout(now);
    drain(&mut dispatcher);
    let larger = RunnerSpec {
        max_flavor: Some("M".to_owned()),
        ..runner_spec(0)
    };
    let summary = dispatcher.handle_reconfigure(config_for(8.0), vec![keep(0, larger)], now);
    assert_eq!(summary.changed.len(), 1);
    assert!(summary.retired.is_empty() && summary.added.is_empty());
    assert_eq!(dispatcher.runner(0).max_job_weight(), weight("M"));
    // An unchanged reload changes nothing.
    let again = RunnerSpec {
        max_flavor: Some("M".to_owned()),
        ..runner_spec(0)
    };
    let summary = dispatcher.handle_reconfigure(config_for(8.0), vec![keep(0, again)], now);
    assert!(summary.is_empty(), "{summary:?}");
}

#[test]
fn a_new_token_with_the_same_key_does_not_take_the_old_jobs_machines_for_orphans() {
    let now = origin();
    let config = DispatcherConfig {
        reconcile_interval: RECONCILE_INTERVAL,
        ..config_for(4.0)
    };
    let mut dispatcher = Dispatcher::new(config.clone(), vec![small_runner(0)]);
    dispatcher.handle_timeout(now);
    drain(&mut dispatcher);
    dispatcher.handle_app_list(0, Some(Vec::new()), now);
    drain(&mut dispatcher);
    take_job(&mut dispatcher, 0, 5, now);
    let key = JobKey {
        runner: 0,
        job_id: 5,
    };
    dispatcher.handle_created(
        key,
        StepOutcome::Done(App {
            id: "app_5".to_owned(),
            weight: weight("S"),
        }),
        now,
    );
    drain(&mut dispatcher);

    // Same key (the token's first 8 characters), other connection
    // settings: the caller retires the old runner and adds it again.
    let summary = dispatcher.handle_reconfigure(config, vec![add(small_runner(0))], now);
    assert_eq!((summary.retired.len(), summary.added.len()), (1, 1));
    drain(&mut dispatcher);
    let app = ListedApp {
        id: "app_5".to_owned(),
        name: small_runner(0).app_name(5),
        weight: weight("S"),
        created_ms: None,
        owner: AppOwner::Ours,
        age: Some(Duration::from_secs(3600)),
    };
    dispatcher.handle_app_list(1, Some(vec![app]), now);
    let commands = drain(&mut dispatcher);
    assert!(
        !commands.iter().any(|c| matches!(
            c,
            Command::DeleteOrphan { .. } | Command::Notice(Notice::Orphan { .. })
        )),
        "{commands:?}"
    );
    assert_eq!(dispatcher.orphan_weight(), 0.0);
    assert!(dispatcher.job(key).is_some());
}

/// A fixed origin of virtual time (the core never reads the clock; tests
/// only need some instant).
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}
