//! Signals and systemd notifications, with the real binary: `SIGUSR1` dumps
//! the state and `SIGHUP` reloads the configuration (see `reload.rs`),
//! neither stops the service (even before it is ready); `SIGQUIT` stops it gracefully with status 0; under a fake
//! `NOTIFY_SOCKET` the service sends `READY=1`, `WATCHDOG=1`, `STOPPING=1`.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, DEADLINE, SIGHUP, SIGQUIT, SIGTERM, SIGUSR1};
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::{CoordinatorFaults, JobStatus};
use paas_sim::vars;

fn quick() -> ClusterSettings {
    ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr1_dumps_the_state_hup_reloads_and_quit_stops_gracefully() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let (job, _) = harness
        .run_one(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "100")])
        .await;
    assert_eq!(job.status, JobStatus::Success);

    // A long job in flight, so that the dump has something to show.
    let long_job = harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "4000")]);
    let coordinator = harness.cluster.coordinator.clone();
    assert!(
        coordinator
            .wait_until(
                move |sim| sim
                    .job(long_job)
                    .is_some_and(|job| job.status == JobStatus::Running),
                DEADLINE
            )
            .await,
        "{}",
        harness.logs()
    );

    // The dump shows the service's published figures, whose job list is
    // refreshed every 250 ms: dump until the running job shows.
    let dump = harness.dir.path().join("state.db.dump.json");
    assert!(!dump.exists());
    let start = Instant::now();
    let document = loop {
        harness.send_signal(SIGUSR1);
        harness.wait_for_log_line("state dump").await;
        if let Ok(bytes) = std::fs::read(&dump) {
            let document: serde_json::Value =
                serde_json::from_slice(&bytes).expect("the dump is JSON");
            let shows_job = document["jobs"]
                .as_array()
                .expect("jobs listed")
                .iter()
                .any(|job| job["job_id"] == long_job && job["stage"] == "running");
            if shows_job {
                break document;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no dump showing job {long_job}\n{}",
            harness.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(document["stats"]["quota"].as_f64().unwrap() > 0.0);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&dump).unwrap();
    for token in &harness.cluster.runner_tokens {
        assert!(!text.contains(token.as_str()), "runner token in the dump");
    }
    assert!(!text.contains(&harness.cluster.clever.config().token));

    // An unchanged file: reloaded, nothing changes.
    harness.send_signal(SIGHUP);
    harness
        .wait_for_log_line("configuration reload applied")
        .await;
    assert!(harness.is_running(), "{}", harness.logs());

    // Still taking jobs after both signals.
    let next = harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "100")]);
    harness.wait_all_done(&[long_job, next]).await;
    assert_eq!(harness.job(next).status, JobStatus::Success);

    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
    let logs = harness.logs();
    assert!(logs.contains("SIGQUIT"), "{logs}");
    assert!(!logs.contains("core dumped"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_before_the_service_is_ready_do_not_kill_it() {
    // Every runner API call fails with 502/503: the service stays in the
    // retries of its credentials check, not ready.
    let settings = ClusterSettings {
        coordinator_faults: CoordinatorFaults {
            api_error_rate: 1.0,
            ..CoordinatorFaults::default()
        },
        ..quick()
    };
    let mut harness = Harness::start(settings, |_| {}).await;
    harness.spawn_runner();
    harness.wait_for_log_line("retrying").await;
    harness.send_signal(SIGUSR1);
    harness
        .wait_for_log_line("the service is still starting")
        .await;
    harness.send_signal(SIGHUP);
    harness
        .wait_for_log_line("configuration reload requested")
        .await;
    assert!(harness.is_running(), "{}", harness.logs());
    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
    assert!(harness
        .logs()
        .contains("stopped before the service was ready"));
}

/// Reads notifications until one contains `wanted`; false at the deadline.
async fn receive_until(
    socket: &tokio::net::UnixDatagram,
    wanted: &str,
    received: &mut Vec<String>,
) -> bool {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut buffer = vec![0u8; 4096];
    loop {
        if received.iter().any(|message| message.contains(wanted)) {
            return true;
        }
        match tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
            Ok(Ok(length)) => {
                received.push(String::from_utf8_lossy(&buffer[..length]).into_owned())
            }
            _ => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_watchdog_and_stopping() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let socket_path = harness.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    harness.spawn_runner_with(|command| {
        command
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID");
    });
    let mut received = Vec::new();
    assert!(
        receive_until(&socket, "READY=1", &mut received).await,
        "{received:?}\n{}",
        harness.logs()
    );
    // The service takes jobs once it said so.
    let id = harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "100")]);
    harness.wait_all_done(&[id]).await;
    assert!(
        receive_until(&socket, "WATCHDOG=1", &mut received).await,
        "{received:?}"
    );
    assert!(!received
        .iter()
        .any(|message| message.contains("STOPPING=1")));
    harness.send_signal(SIGTERM);
    assert!(
        receive_until(&socket, "STOPPING=1", &mut received).await,
        "{received:?}"
    );
    let ready_at = received.iter().position(|m| m.contains("READY=1"));
    let stopping_at = received.iter().position(|m| m.contains("STOPPING=1"));
    assert!(ready_at < stopping_at, "{received:?}");
    let status = harness.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
}
