//! Configuration reload with the real binary: `SIGHUP` with a larger quota
//! starts the jobs that waited, an invalid file keeps the running
//! configuration, and a changed file is reloaded without a signal (with a
//! runner added).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Harness, DEADLINE, SIGHUP, SIGQUIT};
use paas_sim::cluster::{ClusterSettings, ConfigOptions};
use paas_sim::coordinator::{JobSpec, JobStatus};
use paas_sim::vars;

/// How often the service checks its configuration file (`reload.rs`).
const WATCH_PERIOD: Duration = Duration::from_secs(3);

fn quick(runners: usize) -> ClusterSettings {
    ClusterSettings {
        runners,
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

/// The harness's settings, with jobs of flavor S only and a quota of
/// `jobs` S jobs.
fn options(dir: &Path, jobs: u32) -> ConfigOptions {
    let mut options = ConfigOptions::new(dir.join("state.db"));
    options.check_interval_secs = 0.2;
    options.watch_poll_step_secs = 0.1;
    options.reference_flavor = "S".into();
    options.reference_jobs_count = jobs;
    options.default_flavor = "S".into();
    options.max_flavor = Some("S".into());
    options
}

/// Replaces the file as editors do (new file renamed over the old one), so
/// that the service never reads half a file.
fn rewrite(path: &Path, text: &str) {
    let temporary = path.with_extension("toml.new");
    std::fs::write(&temporary, text).expect("write config");
    std::fs::rename(&temporary, path).expect("rename config");
}

fn statuses(harness: &Harness, ids: &[u64]) -> Vec<JobStatus> {
    ids.iter().map(|id| harness.job(*id).status).collect()
}

async fn wait_running(harness: &Harness, ids: &[u64], count: usize) {
    let ids = ids.to_vec();
    let reached = harness
        .cluster
        .coordinator
        .wait_until(
            move |sim| {
                ids.iter()
                    .filter(|id| {
                        sim.job(**id)
                            .is_some_and(|job| job.status == JobStatus::Running)
                    })
                    .count()
                    >= count
            },
            DEADLINE,
        )
        .await;
    assert!(reached, "never {count} running\n{}", harness.logs());
}

/// The log lines (current and earlier runs) that contain `text`.
fn lines_with(harness: &Harness, text: &str) -> Vec<String> {
    harness
        .logs()
        .lines()
        .filter(|line| line.contains(text))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_larger_quota_starts_the_waiting_jobs_and_loses_none() {
    let mut harness = Harness::start(quick(1), |_| {}).await;
    let first = options(harness.dir.path(), 1);
    rewrite(&harness.config_path, &harness.cluster.config_toml(&first));
    harness.spawn_runner();
    let long = [(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "6000")];
    let ids: Vec<u64> = (0..3).map(|_| harness.enqueue(&long)).collect();
    wait_running(&harness, &ids, 1).await;
    // Room for one S job: the others wait on the coordinator.
    let pending = statuses(&harness, &ids)
        .into_iter()
        .filter(|status| *status == JobStatus::Pending)
        .count();
    assert_eq!(pending, 2, "{}", harness.logs());

    // Room for 3, a shorter check interval, and a state file that can only
    // change with a restart.
    let mut second = options(harness.dir.path(), 3);
    second.check_interval_secs = 0.3;
    second.state_file = harness.dir.path().join("other.db");
    rewrite(&harness.config_path, &harness.cluster.config_toml(&second));
    harness.send_signal(SIGHUP);
    harness
        .wait_for_log_line("configuration reload applied")
        .await;
    // The other jobs start while the first still runs.
    wait_running(&harness, &ids, 3).await;
    harness.wait_all_done(&ids).await;
    assert!(
        statuses(&harness, &ids)
            .iter()
            .all(|status| *status == JobStatus::Success),
        "{:?}\n{}",
        statuses(&harness, &ids),
        harness.logs()
    );

    // The watch may see the file before the signal: one of the reloads
    // made the change. Weight of S (4 GiB): 4^1.25 = 5.66; the quota goes
    // from 1 to 3 of them.
    let reloaded = lines_with(&harness, "configuration reloaded");
    assert!(
        reloaded.iter().any(|line| line.contains("5.7")
            && line.contains("17.0")
            && line.contains("check_interval")
            && line.contains("quota_computation")),
        "{reloaded:#?}"
    );
    let restart = lines_with(&harness, "needs a restart");
    assert!(
        restart.iter().any(|line| line.contains("state_file")),
        "{}",
        harness.logs()
    );
    assert!(!harness.dir.path().join("other.db").exists());
    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_running_configuration_and_says_where() {
    let mut harness = Harness::start(quick(1), |_| {}).await;
    let first = options(harness.dir.path(), 1);
    let valid = harness.cluster.config_toml(&first);
    rewrite(&harness.config_path, &valid);
    harness.spawn_runner();
    let job = harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "3000")]);
    wait_running(&harness, &[job], 1).await;

    // Line 1: `concurrent = 1000`.
    assert!(valid.starts_with("concurrent = "));
    let invalid = valid.replacen("concurrent = 1000", "concurrent = \"lots\"", 1);
    rewrite(&harness.config_path, &invalid);
    harness.send_signal(SIGHUP);
    harness
        .wait_for_log_line("configuration reload failed")
        .await;
    let failed = lines_with(&harness, "configuration reload failed");
    let line = &failed[0];
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("config.toml:1"), "{line}");
    assert!(line.contains("concurrent"), "{line}");
    assert!(harness.is_running(), "{}", harness.logs());

    // The job in flight ends well; the service still takes jobs.
    harness.wait_all_done(&[job]).await;
    assert_eq!(harness.job(job).status, JobStatus::Success);
    let next = harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "100")]);
    harness.wait_all_done(&[next]).await;
    assert_eq!(harness.job(next).status, JobStatus::Success);
    assert!(lines_with(&harness, "configuration reloaded").is_empty());
    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_without_a_signal_and_a_new_runner_takes_jobs() {
    let mut harness = Harness::start(quick(2), |_| {}).await;
    let full = harness.cluster.config_toml(&options(harness.dir.path(), 1));
    // The first runner only.
    let second_runner = full
        .match_indices("\n[[runners]]")
        .nth(1)
        .map(|(at, _)| at)
        .expect("two runners");
    rewrite(&harness.config_path, &full[..second_runner]);
    harness.spawn_runner();
    harness.wait_for_log_line("paas-runner started").await;

    let both = harness.cluster.config_toml(&options(harness.dir.path(), 4));
    let written_at = Instant::now();
    rewrite(&harness.config_path, &both);
    harness
        .wait_for_log_line("configuration reload applied")
        .await;
    let took = written_at.elapsed();
    // One watch period, plus the new runner's checks on loopback.
    assert!(took < WATCH_PERIOD + Duration::from_secs(5), "{took:?}");
    let applied = lines_with(&harness, "configuration reload applied");
    assert!(
        applied[0].contains("configuration file changed"),
        "{}",
        applied[0]
    );
    let reloaded = lines_with(&harness, "configuration reloaded");
    assert!(reloaded[0].contains("sim-runner-1"), "{}", reloaded[0]);

    // Both runners poll: with enough jobs, each takes some.
    let short = [(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "300")];
    let ids: Vec<u64> = (0..8).map(|_| harness.enqueue(&short)).collect();
    harness.wait_all_done(&ids).await;
    assert!(
        statuses(&harness, &ids)
            .iter()
            .all(|status| *status == JobStatus::Success),
        "{}",
        harness.logs()
    );
    let runner_1_key: String = harness.cluster.runner_tokens[1].chars().take(8).collect();
    let taken_by_1 = harness
        .cluster
        .coordinator
        .jobs()
        .iter()
        .filter(|job| job.runner_token_prefix.as_deref() == Some(runner_1_key.as_str()))
        .count();
    assert!(taken_by_1 > 0, "{}", harness.logs());
    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_runner_takes_no_more_jobs_and_its_job_in_flight_ends_cleanly() {
    let mut harness = Harness::start(quick(2), |_| {}).await;
    let both = harness.cluster.config_toml(&options(harness.dir.path(), 4));
    rewrite(&harness.config_path, &both);
    harness.spawn_runner();
    let token_1 = harness.cluster.runner_tokens[1].clone();
    let token_0 = harness.cluster.runner_tokens[0].clone();
    let pinned = |token: &str, duration: &str| JobSpec {
        runner_token: Some(token.to_owned()),
        variables: vec![
            (vars::FLAVOR.to_owned(), "S".to_owned()),
            (vars::JOB_DURATION_MS.to_owned(), duration.to_owned()),
        ],
        ..JobSpec::default()
    };
    let in_flight = harness
        .cluster
        .coordinator
        .enqueue(pinned(&token_1, "4000"));
    wait_running(&harness, &[in_flight], 1).await;

    // The first runner only.
    let second_runner = both
        .match_indices("\n[[runners]]")
        .nth(1)
        .map(|(at, _)| at)
        .expect("two runners");
    rewrite(&harness.config_path, &both[..second_runner]);
    harness.send_signal(SIGHUP);
    harness
        .wait_for_log_line("configuration reload applied")
        .await;
    let removed = lines_with(&harness, "runner removed from the configuration");
    assert!(
        removed.iter().any(|line| line.contains("sim-runner-1")),
        "{}",
        harness.logs()
    );

    // Its job runs to its end, and its machine is deleted.
    harness.wait_all_done(&[in_flight]).await;
    assert_eq!(harness.job(in_flight).status, JobStatus::Success);

    // Well after any request it had in flight: it polls no more, while the
    // other runner still takes jobs.
    let for_removed = harness.cluster.coordinator.enqueue(pinned(&token_1, "100"));
    let for_kept = harness.cluster.coordinator.enqueue(pinned(&token_0, "100"));
    harness.wait_all_done(&[for_kept]).await;
    assert_eq!(harness.job(for_kept).status, JobStatus::Success);
    assert_eq!(
        harness.job(for_removed).status,
        JobStatus::Pending,
        "{}",
        harness.logs()
    );
    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
}

/// Reads notifications until one contains `wanted`; false at the deadline.
async fn receive_until(
    socket: &tokio::net::UnixDatagram,
    wanted: &str,
    received: &mut Vec<String>,
    from: usize,
) -> bool {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut buffer = vec![0u8; 4096];
    loop {
        if received[from.min(received.len())..]
            .iter()
            .any(|message| message.contains(wanted))
        {
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
async fn systemd_is_told_reloading_with_the_time_then_ready() {
    let mut harness = Harness::start(quick(1), |_| {}).await;
    let socket_path = harness.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    harness.spawn_runner_with(|command| {
        command.env("NOTIFY_SOCKET", &socket_path);
    });
    let mut received = Vec::new();
    assert!(
        receive_until(&socket, "READY=1", &mut received, 0).await,
        "{received:?}\n{}",
        harness.logs()
    );
    let before = received.len();
    harness.send_signal(SIGHUP);
    assert!(
        receive_until(&socket, "RELOADING=1", &mut received, before).await,
        "{received:?}"
    );
    let reloading = received
        .iter()
        .rposition(|message| message.contains("RELOADING=1"))
        .expect("reloading");
    assert!(
        received[reloading].contains("MONOTONIC_USEC="),
        "{received:?}"
    );
    assert!(
        receive_until(&socket, "READY=1", &mut received, reloading + 1).await,
        "{received:?}"
    );
    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());
}
