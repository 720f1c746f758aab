//! A job's payload is held in memory only while it may still be deployed:
//! ten thousand running jobs must not keep ten thousand payloads.

mod common;

use std::time::Instant;

use common::*;
use paas_core::{Dispatcher, JobKey, JobRecord, Secret, StageRecord, StepOutcome};

fn record(job_id: u64, stage: StageRecord, app: Option<&str>) -> JobRecord {
    JobRecord {
        runner_key: runner_spec(0).key,
        job_id,
        token: Secret::new(format!("job-token-{job_id}")),
        project_id: Some(1),
        payload: format!("{{\"id\":{job_id},\"padding\":\"{}\"}}", "x".repeat(4096)),
        failure_reasons: None,
        flavor: "S".into(),
        expected_weight: weight("S"),
        stage,
        app_id: app.map(str::to_owned),
        app_weight: if app.is_some() { weight("S") } else { 0.0 },
        app_maybe: false,
        failure_kind: None,
        failure_message: None,
        message_written: false,
        failed: false,
        confirmed: true,
        log_bytes: 0,
        slow_notice_sent: false,
    }
}

/// Tests only need some instant.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

#[test]
fn payload_is_dropped_once_deployed_and_not_restored_for_launched_jobs() {
    let t0 = origin();
    let mut dispatcher = Dispatcher::new(config(), vec![runner_spec(0)]);
    dispatcher.restore(
        vec![
            record(1, StageRecord::Deploying, Some("app-1")),
            record(2, StageRecord::Running, Some("app-2")),
            record(3, StageRecord::Launching, Some("app-3")),
            record(4, StageRecord::Queued, None),
        ],
        t0,
    );
    let payload_len = |dispatcher: &Dispatcher, job_id| {
        dispatcher
            .job(JobKey { runner: 0, job_id })
            .map(|job| job.payload.len())
            .expect("tracked")
    };
    assert!(payload_len(&dispatcher, 1) > 4096, "to be deployed: kept");
    assert!(payload_len(&dispatcher, 4) > 4096, "to be deployed: kept");
    assert_eq!(payload_len(&dispatcher, 2), 0, "running: not kept");
    assert_eq!(payload_len(&dispatcher, 3), 0, "launched: not kept");

    // Job 1's machine is found ready, then deployed: its payload goes.
    let key = JobKey {
        runner: 0,
        job_id: 1,
    };
    let check = std::iter::from_fn(|| dispatcher.poll_command()).find(
        |command| matches!(command, paas_core::Command::CheckReady { job, .. } if *job == key),
    );
    assert!(check.is_some(), "job 1 waits for its machine again");
    dispatcher.handle_ready(
        key,
        paas_core::ReadyCheck::Ready {
            target: "https://git.example/app-1.git".into(),
        },
        t0,
    );
    let deploy = std::iter::from_fn(|| dispatcher.poll_command())
        .find(|command| matches!(command, paas_core::Command::Deploy { job, .. } if *job == key));
    let Some(paas_core::Command::Deploy { payload, .. }) = deploy else {
        panic!("job 1 is deployed again after the restart");
    };
    assert!(
        payload.len() > 4096,
        "the deployment gets the whole payload"
    );
    dispatcher.handle_deployed(key, StepOutcome::Done(()), t0);
    assert_eq!(payload_len(&dispatcher, 1), 0);
    // Its record says where the job is; the store keeps the payload of
    // its first save.
    let saved = std::iter::from_fn(|| dispatcher.poll_command()).any(|command| {
        matches!(command, paas_core::Command::Save(record)
            if record.job_id == 1 && record.stage != StageRecord::Deploying)
    });
    assert!(saved);
}
