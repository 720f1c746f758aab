//! Rules that used to live in the binary's driver, now decided by the
//! core: may-exist of a creation, the flavor refresh timer, long polling
//! and the cancellation watch period of a deployment.

mod common;

use std::time::{Duration, Instant};

use common::*;
use paas_core::{
    Command, ConfirmCheck, Dispatcher, JobKey, NewJob, PollAnswer, PollOutcome, ReadyCheck, Secret,
    StepOutcome, FLAVOR_REFRESH, LAST_CHECK_GRACE,
};

fn drain(dispatcher: &mut Dispatcher) -> Vec<Command> {
    std::iter::from_fn(|| dispatcher.poll_command()).collect()
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

/// A dispatcher with one runner whose job 7 is confirmed; returns the
/// commands that followed the confirmation.
fn confirmed_job(now: Instant) -> (Dispatcher, JobKey, Vec<Command>) {
    let mut dispatcher = Dispatcher::new(config(), vec![runner_spec(0)]);
    dispatcher.handle_timeout(now);
    drain(&mut dispatcher);
    dispatcher.handle_poll(0, PollOutcome::Job(new_job(7)), now);
    drain(&mut dispatcher);
    let key = JobKey {
        runner: 0,
        job_id: 7,
    };
    dispatcher.handle_confirmed(key, ConfirmCheck::Confirmed, now);
    let commands = drain(&mut dispatcher);
    (dispatcher, key, commands)
}

fn create_of(commands: &[Command]) -> Option<bool> {
    commands.iter().find_map(|command| match command {
        Command::CreateApp { may_exist, .. } => Some(*may_exist),
        _ => None,
    })
}

#[test]
fn a_creation_may_exist_only_after_an_attempt() {
    let now = origin();
    let (mut dispatcher, key, commands) = confirmed_job(now);
    assert_eq!(create_of(&commands), Some(false), "{commands:?}");
    dispatcher.handle_created(
        key,
        StepOutcome::Failed {
            transient: true,
            user_message: "503".to_owned(),
        },
        now,
    );
    drain(&mut dispatcher);
    dispatcher.handle_timeout(now + Duration::from_secs(5));
    let commands = drain(&mut dispatcher);
    assert_eq!(create_of(&commands), Some(true), "{commands:?}");
}

/// A confirmed job whose application `app_7` was just created; returns
/// the commands that followed.
fn created_job(now: Instant) -> (Dispatcher, JobKey, Vec<Command>) {
    let (mut dispatcher, key, _) = confirmed_job(now);
    dispatcher.handle_created(
        key,
        StepOutcome::Done(paas_core::App {
            id: "app_7".to_owned(),
            weight: weight("S"),
        }),
        now,
    );
    let commands = drain(&mut dispatcher);
    (dispatcher, key, commands)
}

fn ready_check_of(commands: &[Command]) -> Option<(Duration, bool)> {
    commands.iter().find_map(|command| match command {
        Command::CheckReady { timeout, first, .. } => Some((*timeout, *first)),
        _ => None,
    })
}

#[test]
fn a_deployment_waits_for_its_machine_then_hands_the_job_over() {
    let now = origin();
    let wait = runner_spec(0).ready_wait;
    let (mut dispatcher, key, commands) = created_job(now);
    assert_eq!(
        ready_check_of(&commands),
        Some((wait.timeout + LAST_CHECK_GRACE, true))
    );
    dispatcher.handle_ready(key, ReadyCheck::NotYet, now);
    dispatcher.handle_timeout(now + wait.step - Duration::from_millis(1));
    assert_eq!(
        ready_check_of(&drain(&mut dispatcher)),
        None,
        "not before its step"
    );
    let later = now + wait.step;
    dispatcher.handle_timeout(later);
    let commands = drain(&mut dispatcher);
    // Each check is cut at the wait's end (plus the grace of the last).
    assert_eq!(
        ready_check_of(&commands),
        Some((wait.timeout - wait.step + LAST_CHECK_GRACE, false)),
        "{commands:?}"
    );
    let target = "https://git.example/app_7.git".to_owned();
    dispatcher.handle_ready(
        key,
        ReadyCheck::Ready {
            target: target.clone(),
        },
        later,
    );
    let deploy = drain(&mut dispatcher)
        .into_iter()
        .find_map(|command| match command {
            Command::Deploy { target, .. } => Some(target),
            _ => None,
        });
    assert_eq!(deploy, Some(target));
}

#[test]
fn a_machine_not_ready_within_the_wait_fails_the_job_once() {
    let now = origin();
    let wait = runner_spec(0).ready_wait;
    let (mut dispatcher, key, _) = created_job(now);
    let mut at = now;
    let mut checks = 1;
    'wait: loop {
        dispatcher.handle_ready(key, ReadyCheck::NotYet, at);
        loop {
            let commands = drain(&mut dispatcher);
            if let Some(text) = commands.iter().find_map(|command| match command {
                Command::AppendLog { text, .. } => Some(text.clone()),
                _ => None,
            }) {
                assert!(text.contains("deployment repository"), "{text}");
                break 'wait;
            }
            if ready_check_of(&commands).is_some() {
                checks += 1;
                break;
            }
            at = dispatcher.poll_timeout().expect("a next check");
            assert!(at <= now + wait.timeout, "the wait outlasts its timeout");
            dispatcher.handle_timeout(at);
        }
    }
    assert_eq!(at, now + wait.timeout, "the last check is at the deadline");
    let expected = wait.timeout.as_millis() / wait.step.as_millis() + 1;
    assert_eq!(checks as u128, expected);
}

#[test]
fn a_job_over_while_its_machine_gets_ready_is_decommissioned() {
    let now = origin();
    let wait = runner_spec(0).ready_wait;
    let (mut dispatcher, key, _) = created_job(now);
    // The check is slow; the watch comes first.
    let at = now + wait.watch_every();
    dispatcher.handle_timeout(at);
    let commands = drain(&mut dispatcher);
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::WatchJob { job, .. } if *job == key)),
        "{commands:?}"
    );
    dispatcher.handle_job_watch(key, true, at);
    let commands = drain(&mut dispatcher);
    assert!(
        !commands
            .iter()
            .any(|command| matches!(command, Command::DeleteApp { .. })),
        "not while its readiness check is under way: {commands:?}"
    );
    dispatcher.handle_ready(key, ReadyCheck::NotYet, at);
    let commands = drain(&mut dispatcher);
    assert!(
        commands
            .iter()
            .any(|command| matches!(command, Command::DeleteApp { app_id: Some(id), .. } if id == "app_7")),
        "{commands:?}"
    );
}

#[test]
fn flavors_are_read_again_every_hour_until_shutdown() {
    let start = origin();
    let mut dispatcher = Dispatcher::new(config(), vec![runner_spec(0), runner_spec(1)]);
    dispatcher.handle_timeout(start);
    let refreshes = |commands: Vec<Command>| {
        commands
            .iter()
            .filter_map(|command| match command {
                Command::RefreshFlavors { runner } => Some(*runner),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(refreshes(drain(&mut dispatcher)).is_empty());
    assert!(dispatcher
        .poll_timeout()
        .is_some_and(|at| at <= start + FLAVOR_REFRESH));
    dispatcher.handle_timeout(start + FLAVOR_REFRESH - Duration::from_secs(1));
    assert!(refreshes(drain(&mut dispatcher)).is_empty());
    dispatcher.handle_timeout(start + FLAVOR_REFRESH);
    assert_eq!(refreshes(drain(&mut dispatcher)), [0, 1]);
    dispatcher.shutdown();
    dispatcher.handle_timeout(start + FLAVOR_REFRESH * 2);
    assert!(refreshes(drain(&mut dispatcher)).is_empty());
}

#[test]
fn a_held_request_is_followed_at_once_a_quick_one_after_check_interval() {
    let now = origin();
    let mut dispatcher = Dispatcher::new(config(), vec![runner_spec(0)]);
    dispatcher.handle_timeout(now);
    drain(&mut dispatcher);
    let held = PollAnswer {
        from_rails: false,
        held: Duration::from_secs(20),
    };
    dispatcher.handle_poll_answer(0, PollOutcome::NoJob, held, now);
    let again = drain(&mut dispatcher);
    assert!(
        again
            .iter()
            .any(|command| matches!(command, Command::RequestJob { runner: 0 })),
        "{again:?}"
    );
    let quick = PollAnswer {
        from_rails: true,
        held: Duration::ZERO,
    };
    // Rails with a fresh version after a hold: at once too.
    dispatcher.handle_poll_answer(0, PollOutcome::NoJob, quick, now);
    assert!(drain(&mut dispatcher)
        .iter()
        .any(|command| matches!(command, Command::RequestJob { runner: 0 })));
    // Rails again at once: that request was not held, back to pacing.
    dispatcher.handle_poll_answer(0, PollOutcome::NoJob, quick, now);
    assert!(!drain(&mut dispatcher)
        .iter()
        .any(|command| matches!(command, Command::RequestJob { .. })));
}

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}
