//! End to end: the real binary against the simulators over loopback HTTP.

mod common;

use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_succeed_and_their_logs_are_intact() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    harness.spawn_runner();
    let ids: Vec<u64> = ["XS", "S", "M"]
        .iter()
        .map(|flavor| {
            harness.enqueue(&[
                (vars::FLAVOR, flavor),
                (vars::JOB_DURATION_MS, "300"),
                (vars::JOB_LOG_LINES, "4"),
            ])
        })
        .collect();
    harness.wait_all_done(&ids).await;
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(
            job.status,
            JobStatus::Success,
            "job {id}: {}\n{}",
            harness.trace(*id),
            harness.logs()
        );
        // The inner runner's log, untouched: it starts at offset 0 with its
        // own first line, and no write of it was refused.
        let trace = harness.trace(*id);
        assert!(
            trace.starts_with("Running with gitlab-runner"),
            "job {id} log: {trace:?}"
        );
        assert!(
            job.trace_writes.iter().all(|write| write.accepted),
            "job {id}: {:?}",
            job.trace_writes
        );
    }
    let apps = harness.cluster.clever.apps();
    assert_eq!(apps.len(), 3, "one application per job");
    for app in &apps {
        assert_eq!(app.pushes, 1, "{app:?}");
        assert_eq!(app.lifetime, "TASK");
        assert_eq!(
            app.env.get("CC_MOUNT_DOCKER_SOCKET").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            app.env.get("CC_ENABLE_HEPTAPOD_RUNNER").map(String::as_str),
            Some("true")
        );
    }
    assert!(apps.iter().any(|app| app.flavor == "heptapod-runner-M"));
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        harness.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_flavor_fails_the_job_with_the_allowed_list() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    harness.spawn_runner();
    let upper = harness.enqueue(&[(vars::FLAVOR, "5XL")]);
    let lower = harness.enqueue(&[(vars::FLAVOR, "xs")]);
    harness.wait_all_done(&[upper, lower]).await;
    for id in [upper, lower] {
        let job = harness.job(id);
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
        let trace = harness.trace(id);
        assert!(trace.contains("does not exist"), "{trace}");
        assert!(
            trace.contains("Allowed flavors on this runner: XS, S, M, L, XL, 2XL."),
            "{trace}"
        );
    }
    assert!(
        harness.trace(lower).contains("did you mean \"XS\""),
        "{}",
        harness.trace(lower)
    );
    assert_eq!(
        harness.cluster.clever.stats().apps_created,
        0,
        "no machine for a bad flavor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flavor_above_maximum_names_the_maximum() {
    let mut harness =
        Harness::start(quick(), |options| options.max_flavor = Some("M".into())).await;
    let (job, trace) = harness.run_one(&[(vars::FLAVOR, "XL")]).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        trace.contains("larger than the maximum flavor \"M\""),
        "{trace}"
    );
    assert!(trace.contains("CI_CLEVER_CLOUD_FLAVOR"), "{trace}");
    assert_eq!(harness.cluster.clever.stats().apps_created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clever_cloud_create_error_reaches_the_job_log() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    harness.cluster.clever.inject_create_error(
        "-",
        400,
        4242,
        "Your organisation has reached its maximum number of applications",
    );
    let (job, trace) = harness.run_one(&[]).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(trace.contains("4242"), "{trace}");
    assert!(trace.contains("maximum number of applications"), "{trace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_repository_never_ready_fails_within_its_timeout() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    harness.cluster.clever.set_repo_never_ready("-");
    // A short wait: the generated configuration says 10 s.
    let text = std::fs::read_to_string(&harness.config_path)
        .unwrap()
        .replace(
            "cc_deployment_repo_timeout = 10",
            "cc_deployment_repo_timeout = 2.5",
        );
    std::fs::write(&harness.config_path, text).unwrap();
    let (job, trace) = harness.run_one(&[]).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(
        trace.contains("was not ready after 2.5 seconds, the longest this runner waits for it."),
        "{trace}"
    );
    // From the job's pickup (the application is created at once) to the
    // red message: the configured wait, plus a little, not several waits.
    let picked_at = job.picked_at.expect("picked");
    let failed_at = job.first_trace_at.expect("message written");
    let took = failed_at.duration_since(picked_at);
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(5500),
        "failed {took:?} after the pickup\n{}",
        harness.logs()
    );
    let logs = harness.logs();
    assert_eq!(
        logs.matches("deployment repository not ready within cc_deployment_repo_timeout")
            .count(),
        1,
        "one wait, not retried:\n{logs}"
    );
    assert!(!logs.contains("deploy: retrying"), "{logs}");
    let stats = harness.cluster.clever.stats();
    assert!(stats.apps_created >= 1 && stats.apps_live == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_timeout_writes_the_red_line_and_fails_the_job() {
    let mut harness = Harness::start(quick(), |options| options.watch_timeout_secs = 1.0).await;
    let (job, trace) = harness.run_one(&[(vars::VM_NEVER_STARTS, "true")]).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        trace.contains("\x1b[31;1mJob not active (no log) after 1 seconds\x1b[0;m\n"),
        "{trace:?}"
    );
    // The stated wait is the real one: from the pickup (creation and
    // deployment take a fraction of a second here) to the red line.
    let took = job
        .first_trace_at
        .expect("message written")
        .duration_since(job.picked_at.expect("picked"));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "failed {took:?} after the pickup\n{}",
        harness.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_a_machine_that_never_starts_the_job_fails_it() {
    let mut harness = Harness::start(quick(), |options| {
        options.trace_watch = false;
        options.watch_timeout_secs = 1.0;
    })
    .await;
    let config = std::fs::read_to_string(&harness.config_path).unwrap();
    assert!(
        !config.contains(&harness.cluster.admin_token),
        "no admin token in {config}"
    );
    let (job, trace) = harness.run_one(&[(vars::VM_NEVER_STARTS, "true")]).await;
    assert_eq!(job.status, JobStatus::Failed, "{}", harness.logs());
    assert_eq!(job.failure_reason.as_deref(), Some("runner_system_failure"));
    assert!(
        trace.contains("\x1b[31;1mJob not active (no log) after 1 seconds\x1b[0;m\n"),
        "{trace:?}\n{}",
        harness.logs()
    );
    // Launch checks were probes, which wrote nothing: the red message is
    // the only write, at offset 0.
    assert!(job.trace_probes >= 1, "{job:?}");
    assert_eq!(job.trace_writes.len(), 1, "{:?}", job.trace_writes);
    assert_eq!(job.trace_writes[0].offset, 0);
    let stats = harness.cluster.clever.stats();
    assert!(stats.apps_created == 1 && stats.apps_live == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_jobs_succeed_with_intact_logs() {
    let mut harness = Harness::start(quick(), |options| options.trace_watch = false).await;
    harness.spawn_runner();
    let ids: Vec<u64> = (0..3)
        .map(|_| harness.enqueue(&[(vars::JOB_DURATION_MS, "300"), (vars::JOB_LOG_LINES, "3")]))
        .collect();
    harness.wait_all_done(&ids).await;
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(job.status, JobStatus::Success, "{}", harness.logs());
        let trace = harness.trace(*id);
        assert!(trace.starts_with("Running with gitlab-runner"), "{trace:?}");
        assert!(
            job.trace_writes.iter().all(|write| write.accepted),
            "job {id}: {:?}",
            job.trace_writes
        );
    }
    let logs = harness.logs();
    assert!(logs.contains("job launched"), "{logs}");
    assert_eq!(harness.cluster.clever.stats().apps_live, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_context_carries_no_credential_of_the_runner() {
    let mut harness = Harness::start(quick(), |options| {
        // Keep the machine, hence its deployment repository, to inspect it.
        options.extra_global = "paas_finished_jobs_keep_resources = true\n".into();
    })
    .await;
    harness.spawn_runner();
    let id = harness.enqueue(&[(vars::JOB_DURATION_MS, "200")]);
    let finished = harness
        .cluster
        .coordinator
        .wait_until(
            move |sim| sim.job(id).is_some_and(|job| job.status.is_finished()),
            DEADLINE,
        )
        .await;
    assert!(finished, "{}", harness.logs());
    let (job, trace) = (harness.job(id), harness.trace(id));
    assert_eq!(
        job.status,
        JobStatus::Success,
        "{trace}\n{}",
        harness.logs()
    );
    let runner_token = harness.cluster.runner_tokens[0].clone();
    // The log header shows the runner's short token (9 characters after
    // `glrt-`), kept by the placeholder.
    let short = &runner_token["glrt-".len().."glrt-".len() + 9];
    assert!(
        trace.contains(&format!("on sim-runner-0 {short}\n")),
        "{trace}"
    );
    let apps = harness.cluster.clever.apps();
    assert_eq!(apps.len(), 1);
    let files = harness
        .cluster
        .clever
        .pushed_files(&apps[0].id)
        .await
        .expect("the deployment repository is kept");
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["Dockerfile", "job.json", "runner.toml"]);
    let clever_token = harness.cluster.clever.config().token.clone();
    for (name, content) in &files {
        let text = String::from_utf8_lossy(content);
        for secret in [&runner_token, &clever_token, &harness.cluster.admin_token] {
            assert!(
                !text.contains(secret.as_str()),
                "{name} holds a credential:\n{text}"
            );
        }
    }
    let runner_toml = String::from_utf8_lossy(&files[2].1).into_owned();
    let placeholder = format!("{}.placeholder.not.a.token", &runner_token[..14]);
    assert!(
        runner_toml.contains(&format!("token = \"{placeholder}\"")),
        "{runner_toml}"
    );
}

/// Runs `count` jobs of 3 s; returns (watching requests per launched job,
/// worst finish-to-delete).
async fn watch_cost(harness: &mut Harness, count: usize) -> (f64, Duration) {
    harness.spawn_runner();
    let ids: Vec<u64> = (0..count)
        .map(|_| harness.enqueue(&[(vars::JOB_DURATION_MS, "3000")]))
        .collect();
    harness.wait_all_done(&ids).await;
    let mut worst = Duration::ZERO;
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(job.status, JobStatus::Success, "{}", harness.logs());
        let app = harness
            .cluster
            .clever
            .apps()
            .into_iter()
            .find(|app| app.name.ends_with(&format!("-{id}")))
            .expect("the job's application");
        let finished = job.finished_at.expect("finished").into_std();
        let deleted = app.deleted_at.expect("deleted");
        worst = worst.max(deleted.saturating_duration_since(finished));
    }
    let stats = harness.cluster.coordinator.stats();
    let pushes = harness.cluster.clever.stats().pushes;
    (stats.watch_requests as f64 / pushes as f64, worst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_listing_tells_when_jobs_end_at_a_few_requests_each() {
    let mut harness = Harness::start(quick(), |options| {
        options.trace_watch = false;
        options.watch_poll_step_secs = 1.0;
    })
    .await;
    let (per_job, worst) = watch_cost(&mut harness, 4).await;
    // A launch probe one poll step after the push (416: started), then one
    // probe when the listing says the machine ended.
    assert!(
        per_job <= 2.5,
        "{per_job} requests per job\n{}",
        harness.logs()
    );
    assert!(
        worst < Duration::from_millis(1500),
        "deleted {worst:?} after the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cloud_listing_jobs_are_watched_one_by_one() {
    let mut harness = Harness::start(quick(), |options| {
        options.trace_watch = false;
        options.watch_poll_step_secs = 1.0;
    })
    .await;
    harness.cluster.clever.set_organisation_deployments(false);
    let (per_job, worst) = watch_cost(&mut harness, 4).await;
    // Checks 0.5 s, 1 s, 2 s, … after the launch: a few more requests, a
    // later deletion, every job done.
    assert!(
        per_job <= 6.0,
        "{per_job} requests per job\n{}",
        harness.logs()
    );
    assert!(
        worst < Duration::from_secs(5),
        "deleted {worst:?} after the end"
    );
    assert!(
        harness
            .logs()
            .contains("the cloud offers no listing of deployments"),
        "{}",
        harness.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_502s_during_polling_do_not_lose_jobs() {
    let mut settings = quick();
    settings.coordinator_faults.request_job_unavailable_rate = 0.4;
    settings.seed = 7;
    let mut harness = Harness::start(settings, |_| {}).await;
    harness.spawn_runner();
    let ids: Vec<u64> = (0..6)
        .map(|_| harness.enqueue(&[(vars::JOB_DURATION_MS, "200")]))
        .collect();
    harness.wait_all_done(&ids).await;
    for id in &ids {
        assert_eq!(
            harness.job(*id).status,
            JobStatus::Success,
            "job {id}\n{}",
            harness.logs()
        );
    }
    assert!(harness.cluster.coordinator.stats().faults_injected > 0);
    assert!(
        harness.logs().contains("coordinator unavailable"),
        "{}",
        harness.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_restart_resumes_jobs_in_flight() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    harness.spawn_runner();
    let ids: Vec<u64> = (0..4)
        .map(|_| harness.enqueue(&[(vars::JOB_DURATION_MS, "3000")]))
        .collect();
    // Wait until every job is running on its machine.
    let running = {
        let ids = ids.clone();
        harness
            .cluster
            .coordinator
            .wait_until(
                move |sim| {
                    ids.iter()
                        .all(|id| sim.job(*id).is_some_and(|job| job.first_trace_at.is_some()))
                },
                DEADLINE,
            )
            .await
    };
    assert!(running, "jobs did not start\n{}", harness.logs());
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(
        status.success(),
        "graceful stop: {status:?}\n{}",
        harness.logs()
    );
    assert_eq!(
        harness.cluster.clever.stats().apps_live,
        4,
        "machines of running jobs stay"
    );

    harness.spawn_runner();
    harness.wait_all_done(&ids).await;
    for id in &ids {
        assert_eq!(harness.job(*id).status, JobStatus::Success);
    }
    let stats = harness.cluster.clever.stats();
    assert_eq!(stats.apps_created, 4, "no job provisioned twice: {stats:?}");
    assert_eq!(stats.pushes, 4, "no job launched twice: {stats:?}");
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "concurrent = -3\n[quota_computation]\nreference_runner = \"x\"\nreference_flavor = \"M\"\nreference_jobs_count = 2\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .arg("run")
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:1"), "{stderr}");
    assert!(stderr.contains("concurrent"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_too_small_for_the_largest_flavor_is_refused_at_start() {
    let harness = Harness::start(quick(), |options| {
        options.reference_flavor = "S".into();
        options.reference_jobs_count = 2;
        options.max_flavor = None;
    })
    .await;
    let output = harness.run_command(&["run"]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could never take a job"), "{stderr}");
    assert!(stderr.contains("cc_max_flavor"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_our_orphans_are_deleted_at_start_and_reap_deletes_foreign_ones_on_request() {
    let mut harness = Harness::start(quick(), |options| {
        options.extra_global = "paas_orphan_min_age = 1\n".into();
    })
    .await;
    // The installation's store exists (the service ran before) with its
    // system id; the cloud holds, under this runner's key, an application
    // of ours that no job accounts for (a lost record, say), one of
    // another installation and one without owner marker; and one of
    // another runner.
    let store_path = harness.dir.path().join("state.db");
    let store = paas_store::Store::open(&store_path).unwrap();
    store.set_meta("system_id", "r_e2eowner").unwrap();
    drop(store);
    let clever = paas_clever::api::CleverClient::new(
        &harness.cluster.clever.api_url(),
        &harness.cluster.clever.config().orga_id,
        paas_core::Secret::new(harness.cluster.clever.config().token.clone()),
        reqwest::Client::new(),
    )
    .unwrap();
    let version = clever.docker_instance_version().await.unwrap();
    let spec = |name: &str, description: &str| paas_clever::api::CreateApp {
        name: name.into(),
        zone: "par".into(),
        instance_version: version.clone(),
        instance_variant: "70d676a0-a775-4dc9-a43d-3121036e8515".into(),
        flavor_api_name: "heptapod-runner-XS".into(),
        description: description.into(),
    };
    let orphan = clever
        .create_app(&spec(
            "hpd-job-glrt-000-424242",
            &paas_core::naming::owner_marker(424242, "r_e2eowner"),
        ))
        .await
        .unwrap();
    let foreign = clever
        .create_app(&spec(
            "hpd-job-glrt-000-424243",
            &paas_core::naming::owner_marker(424243, "r_someoneelse"),
        ))
        .await
        .unwrap();
    let unmarked = clever
        .create_app(&spec("hpd-job-glrt-000-424244", ""))
        .await
        .unwrap();
    let other_runner = clever
        .create_app(&spec("hpd-job-otherrun-7", ""))
        .await
        .unwrap();

    let (config_path, dir) = (harness.config_path.clone(), harness.dir.path().to_owned());
    let reap = |args: &'static [&'static str]| {
        let (config_path, dir) = (config_path.clone(), dir.clone());
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
                .arg("reap")
                .arg(&config_path)
                .args(args)
                .current_dir(dir)
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        }
    };
    let stdout = reap(&[]).await;
    for app in [&orphan, &foreign, &unmarked] {
        assert!(stdout.contains(&app.id), "{stdout}");
    }
    assert!(!stdout.contains(&other_runner.id), "{stdout}");
    assert!(stdout.contains("owner=r_someoneelse"), "{stdout}");
    assert!(stdout.contains("owner=unmarked"), "{stdout}");
    assert!(stdout.contains("--include-foreign"), "{stdout}");
    assert_eq!(
        harness.cluster.clever.stats().apps_live,
        4,
        "reap without --yes deletes nothing"
    );

    harness.spawn_runner();
    let orphan_id = orphan.id.clone();
    let gone = harness
        .cluster
        .clever
        .wait_until(
            move |sim| sim.app(&orphan_id).is_some_and(|app| !app.is_live()),
            DEADLINE,
        )
        .await;
    assert!(gone, "orphan not deleted\n{}", harness.logs());
    // Listed at start and at every reconciliation: never deleted.
    for app in [&foreign, &unmarked, &other_runner] {
        assert!(
            harness.cluster.clever.app(&app.id).unwrap().is_live(),
            "{} stays\n{}",
            app.name,
            harness.logs()
        );
    }
    let logs = harness.logs();
    assert!(
        logs.contains("deleting an application of this installation that no job accounts for")
            && logs.contains("age="),
        "{logs}"
    );
    assert!(
        logs.contains("is not this installation's") && logs.contains("owner=r_someoneelse"),
        "{logs}"
    );
    // The store held no job while the organisation held applications of
    // the runner's key: said loudly, with the store's path.
    assert!(
        logs.contains("the state store tracks no job")
            && logs.contains(&store_path.display().to_string()),
        "{logs}"
    );

    // `state` lists them as the last reconciliation saw them.
    let state = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .arg("state")
        .arg(&harness.config_path)
        .current_dir(harness.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&state.stdout);
    assert!(state.status.success(), "{stdout}");
    assert!(
        stdout
            .contains("2 application(s) under this configuration's runner keys belong to another")
            && stdout.contains(&format!(
                "app={} name=hpd-job-glrt-000-424243 owner=r_someoneelse",
                foreign.id
            ))
            && stdout.contains(&format!(
                "app={} name=hpd-job-glrt-000-424244 owner=unmarked",
                unmarked.id
            )),
        "{stdout}"
    );

    // Asked explicitly, reap deletes the foreign ones of this runner key.
    let stdout = reap(&["--yes", "--include-foreign"]).await;
    assert!(
        stdout.contains("2 of other installations or unmarked; 2 deleted"),
        "{stdout}"
    );
    for app in [&foreign, &unmarked] {
        assert!(!harness.cluster.clever.app(&app.id).unwrap().is_live());
    }
    assert!(harness
        .cluster
        .clever
        .app(&other_runner.id)
        .unwrap()
        .is_live());

    // `state` shows tracked jobs without their tokens.
    let id = harness.enqueue(&[(vars::JOB_DURATION_MS, "20000")]);
    let started = harness
        .cluster
        .coordinator
        .wait_until(
            move |sim| sim.job(id).is_some_and(|job| job.first_trace_at.is_some()),
            DEADLINE,
        )
        .await;
    assert!(started, "{}", harness.logs());
    let state = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .arg("state")
        .arg(&harness.config_path)
        .current_dir(harness.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&state.stdout);
    assert!(state.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 tracked job(s)")
            && stdout.contains(&id.to_string())
            && (stdout.contains("running") || stdout.contains("launching")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("glcbt-") && !stdout.contains("glrt-000sim"),
        "no token in `state`: {stdout}"
    );
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_both_apis_leak_nothing_and_lose_no_job() {
    let mut settings = quick();
    settings.seed = 17;
    settings.coordinator_faults.request_job_unavailable_rate = 0.10;
    settings.coordinator_faults.api_error_rate = 0.10;
    settings.clever_faults.error_rate = 0.05;
    settings.clever_faults.error_after_effect_rate = 0.05;
    let mut harness = Harness::start(settings, |_| {}).await;
    harness.spawn_runner();
    let ids: Vec<u64> = (0..30)
        .map(|n| {
            harness.enqueue(&[
                (vars::FLAVOR, ["XS", "S", "M"][n % 3]),
                (vars::JOB_DURATION_MS, "300"),
            ])
        })
        .collect();
    harness.wait_all_done(&ids).await;
    let failed: Vec<String> = ids
        .iter()
        .map(|id| harness.job(*id))
        .filter(|job| job.status != JobStatus::Success)
        .map(|job| {
            format!(
                "{} {:?} {}",
                job.id,
                job.failure_reason,
                String::from_utf8_lossy(&job.trace)
            )
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{}", harness.logs());
    let stats = harness.cluster.clever.stats();
    assert!(stats.api_errors_injected > 0, "{stats:?}");
    assert_eq!(stats.apps_live, 0, "{stats:?}");
    assert_eq!(stats.pushes, 30, "one deployment per job: {stats:?}");
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(
        status.success(),
        "the process never exits on its own, and stops cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_launch_gets_a_notice_and_the_job_still_runs() {
    let mut settings = quick();
    settings.boot_delay = Duration::from_millis(2500);
    let mut harness = Harness::start(settings, |options| {
        options.extra_global = "paas_slow_provisioning_notice = 1\n".into();
    })
    .await;
    harness.spawn_runner();
    let id = harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "200")]);
    harness.wait_all_done(&[id]).await;
    let job = harness.job(id);
    assert_eq!(job.status, JobStatus::Success, "{}", harness.logs());
    let trace = harness.trace(id);
    let notice_end = trace.find('\n').map(|i| i + 1).unwrap_or(0);
    let notice = &trace[..notice_end];
    assert!(notice.starts_with("\x1b[0;33mPreparing a Clever Cloud machine for this job (flavor S: 2 vCPUs, 4 GiB of RAM, zone par)"), "{trace:?}");
    assert!(notice.contains("taking longer than usual"), "{notice:?}");
    // The documented cost: the inner runner, which starts writing at offset
    // 0, skips as many of its own bytes as the notice took.
    let app = harness.cluster.clever.apps().into_iter().next().unwrap();
    assert_eq!(
        app.vm.log_bytes - app.vm.log_bytes_sent,
        notice.len() as u64,
        "{:?}",
        app.vm
    );
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}

/// Cancels the job once its application exists, then expects the
/// application gone within a few seconds.
async fn cancel_during_provisioning(harness: &mut Harness, id: u64) {
    let created = harness
        .cluster
        .clever
        .wait_until(|sim| sim.stats().apps_created == 1, DEADLINE)
        .await;
    assert!(created, "{}", harness.logs());
    harness.cluster.coordinator.cancel(id);
    let cancelled_at = std::time::Instant::now();
    let gone = harness
        .cluster
        .clever
        .wait_until(|sim| sim.stats().apps_live == 0, DEADLINE)
        .await;
    assert!(gone, "{}", harness.logs());
    let took = cancelled_at.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "application deleted {took:?} after the cancellation\n{}",
        harness.logs()
    );
    assert_eq!(harness.job(id).status, JobStatus::Canceled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_while_the_repository_gets_ready_deletes_the_machine() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    harness.cluster.clever.set_repo_never_ready("-");
    harness.spawn_runner();
    let id = harness.enqueue(&[]);
    cancel_during_provisioning(&mut harness, id).await;
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_while_the_machine_boots_deletes_it() {
    let mut harness = Harness::start(quick(), |options| options.watch_timeout_secs = 60.0).await;
    harness.spawn_runner();
    let id = harness.enqueue(&[(vars::VM_NEVER_STARTS, "true")]);
    cancel_during_provisioning(&mut harness, id).await;
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_cancelling_while_the_machine_boots_deletes_it() {
    let mut harness = Harness::start(quick(), |options| {
        options.trace_watch = false;
        options.watch_timeout_secs = 60.0;
    })
    .await;
    harness.spawn_runner();
    let id = harness.enqueue(&[(vars::VM_NEVER_STARTS, "true")]);
    // The launch probe gets 403 with `Job-Status: canceled`.
    cancel_during_provisioning(&mut harness, id).await;
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_state_store_stops_the_service_and_nothing_is_lost() {
    let mut settings = quick();
    settings.ack_window = Duration::from_secs(2);
    let mut harness = Harness::start(settings, |_| {}).await;
    harness.spawn_runner();
    let running = harness.enqueue(&[(vars::JOB_DURATION_MS, "3000")]);
    let started = harness
        .cluster
        .coordinator
        .wait_until(
            move |sim| {
                sim.job(running)
                    .is_some_and(|job| job.first_trace_at.is_some())
            },
            DEADLINE,
        )
        .await;
    assert!(started, "{}", harness.logs());

    // From now on every record of a new job fails, as on a full disk. The
    // running job's own records still go through, so that the failure is
    // met by the next job taken and not by whichever stage change of the
    // running job happens to come first.
    let db = rusqlite::Connection::open(harness.dir.path().join("state.db")).unwrap();
    db.execute_batch(&format!(
        "CREATE TRIGGER refuse_inserts BEFORE INSERT ON jobs WHEN NEW.job_id != {running} \
         BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;"
    ))
    .unwrap();
    let unrecorded = harness.enqueue(&[(vars::JOB_DURATION_MS, "200")]);
    let mut child = harness.child.take().unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1), "{}", harness.logs());
    assert!(
        harness.logs().contains("the state store fails"),
        "{}",
        harness.logs()
    );

    // Once the store works again, nothing is lost: the recorded job runs to
    // its end; the job taken but never recorded was never confirmed, so the
    // coordinator gave it back visibly instead of leaving it stuck.
    db.execute_batch("DROP TRIGGER refuse_inserts;").unwrap();
    harness.spawn_runner();
    harness.wait_all_done(&[running, unrecorded]).await;
    assert_eq!(
        harness.job(running).status,
        JobStatus::Success,
        "{}",
        harness.logs()
    );
    let dropped = harness.job(unrecorded);
    assert_eq!(
        dropped.failure_reason.as_deref(),
        Some("runner_provisioning_timeout"),
        "{dropped:?}"
    );
    assert_eq!(harness.cluster.clever.stats().apps_live, 0);
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success());
}
