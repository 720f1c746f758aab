//! One owner per machine, end to end: two installations sharing a Clever
//! Cloud organisation and a runner key, `reap` without its store, and a
//! machine deleted behind the service's back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{run_to_exit, Harness, DEADLINE, SIGTERM};
use paas_clever::api::CleverClient;
use paas_sim::cluster::{ClusterSettings, ConfigOptions};
use paas_sim::coordinator::JobStatus;
use paas_sim::vars;
use tokio::process::{Child, Command};

fn quick() -> ClusterSettings {
    ClusterSettings {
        long_poll: std::time::Duration::from_millis(500),
        repo_ready_delay: std::time::Duration::from_millis(50),
        boot_delay: std::time::Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

/// Reconciliation often, orphans deletable after a second.
const RECONCILING: &str = "paas_reconcile_interval = 0.5\npaas_orphan_min_age = 1\n";

fn clever_client(harness: &Harness) -> CleverClient {
    CleverClient::new(
        &harness.cluster.clever.api_url(),
        &harness.cluster.clever.config().orga_id,
        paas_core::Secret::new(harness.cluster.clever.config().token.clone()),
        reqwest::Client::new(),
    )
    .expect("client")
}

/// Starts the binary on `config` in `dir`, logging to `log`.
fn spawn_service(config: &Path, dir: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .arg("--log-level")
        .arg("info,paas_runner=debug")
        .arg("run")
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).expect("log file")))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn paas-runner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_on_one_organisation_leave_each_other_alone() {
    // Installation A: the harness's service. Installation B: another state
    // file, same coordinator, same runner token (so the same runner key),
    // same Clever Cloud organisation. Each holds at most three jobs, so
    // both take some of the six.
    let mut harness = Harness::start(quick(), |options| {
        options.concurrent = 3;
        options.extra_global = RECONCILING.into();
    })
    .await;
    let other_dir = tempfile::Builder::new()
        .prefix("paas-runner-it-b-")
        .tempdir()
        .expect("tempdir");
    let mut options = ConfigOptions::new(other_dir.path().join("state.db"));
    options.check_interval_secs = 0.2;
    options.watch_poll_step_secs = 0.1;
    options.concurrent = 3;
    options.extra_global = RECONCILING.into();
    let other_config = other_dir.path().join("config.toml");
    std::fs::write(&other_config, harness.cluster.config_toml(&options)).expect("config");
    let other_log = other_dir.path().join("runner.log");

    harness.spawn_runner();
    let mut other = spawn_service(&other_config, other_dir.path(), &other_log);
    let ids: Vec<u64> = (0..6)
        .map(|_| harness.enqueue(&[(vars::JOB_DURATION_MS, "4000")]))
        .collect();

    // Both have machines live at once (several reconciliations each).
    let clever = clever_client(&harness);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let owners = loop {
        let apps = clever.list_apps().await.expect("list");
        let owners: std::collections::BTreeSet<String> = apps
            .iter()
            .filter_map(|app| app.description.as_deref())
            .filter_map(paas_core::naming::owner_of)
            .map(str::to_owned)
            .collect();
        if owners.len() == 2 {
            break owners;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never both installations live: {apps:?}\n{}",
            harness.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };

    harness.wait_all_done(&ids).await;
    let other_logs = std::fs::read_to_string(&other_log).unwrap_or_default();
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(
            job.status,
            JobStatus::Success,
            "job {id}: {:?} {}\nA:\n{}\nB:\n{other_logs}",
            job.failure_reason,
            harness.trace(*id),
            harness.logs()
        );
    }
    let logs = harness.logs();
    for (name, text) in [("A", &logs), ("B", &other_logs)] {
        assert!(
            !text.contains("deleting an application"),
            "{name} deleted an application as an orphan:\n{text}"
        );
        assert!(
            text.contains("is not this installation's"),
            "{name} never saw the other's machines:\n{text}"
        );
        assert!(text.contains("job acquired"), "{name} took no job:\n{text}");
    }
    // Every machine was deleted once, by its owner, after its job.
    let stats = harness.cluster.clever.stats();
    assert_eq!(stats.apps_created, 6, "{stats:?}");
    assert_eq!(stats.apps_deleted, 6, "{stats:?}");
    assert_eq!(owners.len(), 2);

    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
    other.start_kill().expect("stop B");
    let _ = other.wait().await;
}

async fn reap(config: &Path, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec![std::ffi::OsStr::new("reap"), config.as_os_str()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let output = run_to_exit(dir, &all).await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_yes_without_its_store_refuses_and_deletes_nothing() {
    // The configuration names a relative state file: the service, run from
    // its directory, keeps its store there; `reap --yes` run from another
    // directory finds none.
    let mut harness = Harness::start(quick(), |options| {
        options.state_file = PathBuf::from("state.db");
        options.extra_global = RECONCILING.into();
    })
    .await;
    harness.spawn_runner();
    let id = harness.enqueue(&[(vars::JOB_DURATION_MS, "30000")]);
    let started = harness.wait_started(id).await;
    assert!(started, "{}", harness.logs());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = reap(
        &harness.config_path,
        elsewhere.path(),
        &["--yes", "--include-foreign"],
    )
    .await;
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    let looked_at = std::path::absolute(elsewhere.path().join("state.db")).unwrap();
    assert!(
        stderr.contains(&looked_at.display().to_string()) && stderr.contains("refusing"),
        "{stderr}"
    );
    let stats = harness.cluster.clever.stats();
    assert_eq!((stats.apps_live, stats.apps_deleted), (1, 0), "{stats:?}");

    // From the service's directory the store is found: the live job's
    // machine is tracked, so nothing is deleted either.
    let (code, stdout, stderr) = reap(&harness.config_path, harness.dir.path(), &["--yes"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("no untracked application"), "{stdout}");
    assert_eq!(harness.cluster.clever.stats().apps_live, 1);
    assert_eq!(harness.job(id).status, JobStatus::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_deleted_behind_the_back_ends_its_job_and_frees_the_quota() {
    // Room for one S job only: the next job runs only once the weight of
    // the first is released.
    let mut harness = Harness::start(quick(), |options| {
        options.reference_flavor = "S".into();
        options.reference_jobs_count = 1;
        options.default_flavor = "S".into();
        options.max_flavor = Some("S".into());
        options.extra_global = RECONCILING.into();
    })
    .await;
    harness.spawn_runner();
    let first = harness.enqueue(&[(vars::JOB_DURATION_MS, "600000")]);
    let started = harness.wait_started(first).await;
    assert!(started, "{}", harness.logs());
    let second = harness.enqueue(&[(vars::JOB_DURATION_MS, "300")]);

    // Someone deletes the machine through the API.
    let clever = clever_client(&harness);
    let apps = clever.list_apps().await.expect("list");
    assert_eq!(apps.len(), 1, "{apps:?}");
    clever.delete_app(&apps[0].id).await.expect("delete");

    harness.wait_all_done(&[first, second]).await;
    let job = harness.job(first);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    let trace = harness.trace(first);
    assert!(trace.contains("was deleted outside paas-runner"), "{trace}");
    assert!(trace.contains(&apps[0].id), "{trace}");
    assert_eq!(harness.job(second).status, JobStatus::Success);
    let logs = harness.logs();
    assert!(
        logs.contains("the job's application was deleted outside paas-runner"),
        "{logs}"
    );
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}
