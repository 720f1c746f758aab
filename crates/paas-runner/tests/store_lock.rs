//! One owner per state store, with the real binary: a second service on the
//! same configuration is refused at once (status 2, holder named) while the
//! first finishes its jobs; a lock file left by a stopped service blocks
//! nobody; a `state_file` in a directory that cannot exist is a configuration
//! error.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, DEADLINE, SIGTERM};
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::JobStatus;
use paas_sim::vars;

fn quick() -> ClusterSettings {
    ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

/// Waits until a service holds the store's lock; returns its pid.
async fn wait_for_lock_holder(harness: &Harness) -> u32 {
    let db = harness.dir.path().join("state.db");
    let start = Instant::now();
    loop {
        if let Some(holder) = paas_store::lock_holder(&db).expect("lock file readable") {
            // The holder writes its description just after taking the lock.
            if let Some(pid) = holder.pid {
                return pid;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no service took the store's lock\n{}",
            harness.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_the_same_store_is_refused_while_the_first_finishes() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    harness.spawn_runner();
    let first_pid = harness.child.as_ref().and_then(|child| child.id()).unwrap();
    assert_eq!(wait_for_lock_holder(&harness).await, first_pid);
    let ids: Vec<u64> = (0..3)
        .map(|_| harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "1500")]))
        .collect();
    // The first service has taken a job.
    let coordinator = harness.cluster.coordinator.clone();
    let first_id = ids[0];
    assert!(
        coordinator
            .wait_until(
                move |sim| sim
                    .job(first_id)
                    .is_some_and(|job| job.status != JobStatus::Pending),
                DEADLINE,
            )
            .await,
        "{}",
        harness.logs()
    );

    let started = Instant::now();
    let second = harness.run_command(&["run"]).await;
    let refused_in = started.elapsed();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let db = harness.dir.path().join("state.db");
    for expected in [
        format!(
            "state store {} is in use by another paas-runner",
            db.display()
        ),
        format!("host {}", host.trim()),
        format!("pid {first_pid}"),
        ", since ".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} not in {stderr}");
    }
    // Refused before it read the catalogue or asked for a job: nothing of
    // the first service was touched.
    assert!(
        !stderr.contains("paas-runner started") && !stderr.contains("deleting"),
        "{stderr}"
    );
    println!("second service refused in {refused_in:?}");

    // `state` reads while the service runs, and names who holds the store.
    let state = harness.run_command(&["state"]).await;
    let stdout = String::from_utf8_lossy(&state.stdout);
    assert!(state.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "held by the service: host {}, pid {first_pid}, since ",
            host.trim()
        )),
        "{stdout}"
    );

    harness.wait_all_done(&ids).await;
    for id in &ids {
        assert_eq!(harness.job(*id).status, JobStatus::Success, "job {id}");
    }
    assert_eq!(
        harness.cluster.clever.apps().len(),
        3,
        "one machine per job"
    );
    let child = harness.child.as_mut().unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first service still runs"
    );
    assert!(
        !harness.logs().contains("no job accounts for"),
        "{}",
        harness.logs()
    );
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{status:?}\n{}", harness.logs());

    // The lock file is still there, written by a process that is gone: it
    // does not block the next start.
    assert!(paas_store::lock_path(&db).exists());
    assert_eq!(paas_store::lock_holder(&db).unwrap(), None);
    harness.spawn_runner();
    let second_pid = harness.child.as_ref().and_then(|child| child.id()).unwrap();
    assert_eq!(wait_for_lock_holder(&harness).await, second_pid);
    let id = harness.enqueue(&[(vars::FLAVOR, "S")]);
    harness.wait_all_done(&[id]).await;
    assert_eq!(harness.job(id).status, JobStatus::Success);
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{status:?}\n{}", harness.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_logs_its_absolute_store_path_and_keeps_its_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut harness = Harness::start(quick(), |options| {
        // Relative: resolved against the service's working directory.
        options.state_file = "state.json".into();
    })
    .await;
    let db = harness.dir.path().join("state.db");
    // A database left readable by others, as an older version or a copy
    // could leave it.
    harness.spawn_runner();
    wait_for_lock_holder(&harness).await;
    // Signal handlers are in place once the service has started.
    harness.wait_for_log_line("paas-runner started").await;
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{}", harness.logs());
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    harness.spawn_runner();
    wait_for_lock_holder(&harness).await;
    let id = harness.enqueue(&[(vars::FLAVOR, "S")]);
    harness.wait_all_done(&[id]).await;
    let mut files = paas_store::side_files(&db).to_vec();
    files.push(db.clone());
    files.push(paas_store::lock_path(&db));
    for file in &files {
        if let Ok(metadata) = std::fs::metadata(file) {
            assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{file:?}");
        }
    }
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{}", harness.logs());
    let logs = harness.logs();
    let absolute = db.display().to_string();
    assert!(
        logs.contains(&format!("store={absolute}"))
            && logs.contains("state store opened and locked"),
        "{logs}"
    );
    assert!(
        logs.contains("mode set to 0600") && logs.contains(&format!("path={absolute}")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_in_a_missing_or_impossible_directory_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    // Tests run as root, whom permission bits do not stop: "cannot take
    // files" is provoked with a parent that is a regular file.
    for (state_file, expected) in [
        (
            dir.path().join("missing/state.json"),
            "does not exist: create it",
        ),
        (blocker.join("state.db"), "is not a directory"),
    ] {
        let harness =
            Harness::start(quick(), |options| options.state_file = state_file.clone()).await;
        let output = harness.run_command(&["run"]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        let text = std::fs::read_to_string(&harness.config_path).unwrap();
        let line = text
            .lines()
            .position(|line| line.trim_start().starts_with("state_file"))
            .unwrap()
            + 1;
        let location = format!(
            "{}:{line}: key `state_file`: ",
            harness.config_path.display()
        );
        assert!(
            stderr.contains(&location) && stderr.contains(expected),
            "{location:?} / {expected:?} not in {stderr}"
        );
        assert!(!state_file.exists());
    }
}
