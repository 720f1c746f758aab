//! Simulated VMs: a push runs the job against a (fake) coordinator like
//! gitlab-runner would, and deletion stops it at once.

mod clever_support;

use std::time::Duration;

use clever_support::{
    build_context, crc32_hex, job_json, push, ready_app, runner_toml, start_sim, Coordinator, Sim,
    DOCKERFILE, WAIT,
};
use paas_sim::vm::{VmExit, VmState};

const JOB_TOKEN: &str = "glcbt-job-token";

/// Creates an app, pushes a build context for `job_id` and returns the app id.
async fn deploy(
    sim: &Sim,
    coordinator: &Coordinator,
    job_id: u64,
    vars: &[(&str, &str)],
) -> String {
    deploy_files(
        sim,
        &[
            ("Dockerfile", DOCKERFILE.to_owned()),
            ("runner.toml", runner_toml(&coordinator.url)),
            ("job.json", job_json(job_id, JOB_TOKEN, vars)),
        ],
    )
    .await
}

async fn deploy_files(sim: &Sim, files: &[(&str, String)]) -> String {
    let app_id = ready_app(sim, "hpd-job-vm").await;
    let context = build_context(files).await;
    let (ok, out) = push(&context, &sim.sim.git_url(&app_id)).await;
    assert!(ok, "push: {out}");
    app_id
}

async fn wait_vm_exit(sim: &Sim, app_id: &str) -> VmExit {
    let done = sim
        .sim
        .wait_until(
            |sim| sim.app(app_id).is_some_and(|app| app.vm.exit.is_some()),
            WAIT,
        )
        .await;
    assert!(
        done,
        "VM of {app_id} never stopped: {:?}",
        sim.sim.app(app_id)
    );
    sim.sim
        .app(app_id)
        .and_then(|app| app.vm.exit)
        .expect("exit")
}

fn final_puts(coordinator: &Coordinator, job_id: u64) -> Vec<(serde_json::Value, u16)> {
    coordinator
        .job(job_id)
        .puts
        .into_iter()
        .filter(|(body, _)| body["state"] != "running")
        .collect()
}

#[tokio::test]
async fn a_pushed_job_runs_end_to_end() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(101, JOB_TOKEN);
    let app_id = deploy(
        &sim,
        &coordinator,
        101,
        &[("SIM_JOB_DURATION_MS", "200"), ("SIM_JOB_LOG_LINES", "4")],
    )
    .await;
    assert_eq!(wait_vm_exit(&sim, &app_id).await, VmExit::Completed);

    let job = coordinator.job(101);
    assert_eq!(job.status, "success");
    let log = String::from_utf8(job.trace.clone()).expect("utf-8 log");
    assert!(
        log.starts_with(
            "Running with gitlab-runner 15.11.0 (heptapod-runner sim)\n  on sim-runner Ab1Cd2Ef3\n"
        ),
        "{log}"
    );
    for line in 1..=4 {
        assert!(
            log.contains(&format!("$ sim step {line}/4 of job 101\n")),
            "{log}"
        );
    }
    assert!(log.ends_with("Job succeeded\n"), "{log}");
    // Every PATCH was accepted at the right offset, with an inclusive end.
    let mut offset = 0;
    for (range, length, status) in &job.patches {
        assert_eq!(*status, 202);
        assert_eq!(range, &format!("{}-{}", offset, offset + length - 1));
        offset += length;
    }
    let puts = final_puts(&coordinator, 101);
    assert_eq!(puts.len(), 1);
    let (body, status) = &puts[0];
    assert_eq!(*status, 200);
    assert_eq!(body["token"], JOB_TOKEN);
    assert_eq!(body["state"], "success");
    assert!(body.get("failure_reason").is_none() && body.get("exit_code").is_none());
    assert_eq!(body["output"]["checksum"], crc32_hex(&job.trace));
    assert_eq!(body["output"]["bytesize"], job.trace.len());

    let vm = sim.sim.app(&app_id).expect("record").vm;
    assert_eq!(vm.state, VmState::Stopped);
    assert_eq!(vm.reported_state.as_deref(), Some("success"));
    assert_eq!(vm.job_id, Some(101));
    assert_eq!(
        (vm.log_bytes, vm.log_bytes_sent),
        (job.trace.len() as u64, job.trace.len() as u64)
    );
    let (pushed, booted, started, finished) = (
        vm.pushed_at.expect("pushed"),
        vm.booted_at.expect("booted"),
        vm.job_started_at.expect("started"),
        vm.finished_at.expect("finished"),
    );
    assert!(booted - pushed >= Duration::from_millis(20), "boot delay");
    assert!(started >= booted && finished - started >= Duration::from_millis(200));
    // A TASK app stays after its VM stopped; the runner must delete it.
    assert!(sim.sim.app(&app_id).expect("record").is_live());
}

#[tokio::test]
async fn a_failing_job_reports_script_failure_after_202s() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(102, JOB_TOKEN);
    coordinator.update(102, |job| job.accept_final_after = 2);
    let app_id = deploy(
        &sim,
        &coordinator,
        102,
        &[("SIM_JOB_DURATION_MS", "0"), ("SIM_JOB_RESULT", "failed")],
    )
    .await;
    assert_eq!(wait_vm_exit(&sim, &app_id).await, VmExit::Completed);
    let job = coordinator.job(102);
    assert_eq!(job.status, "failed");
    assert!(job.trace.ends_with(b"ERROR: Job failed: exit code 1\n"));
    let puts = final_puts(&coordinator, 102);
    let statuses: Vec<u16> = puts.iter().map(|(_, status)| *status).collect();
    assert_eq!(statuses, [202, 202, 200], "the same PUT is repeated on 202");
    for (body, _) in &puts {
        assert_eq!(body["state"], "failed");
        assert_eq!(body["failure_reason"], "script_failure");
        assert_eq!(body["exit_code"], 1);
        assert_eq!(body["output"]["checksum"], crc32_hex(&job.trace));
    }
}

#[tokio::test]
async fn foreign_log_bytes_cost_the_runner_as_many_of_its_own() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(103, JOB_TOKEN);
    // A dispatcher reports provisioning progress before the runner starts.
    let foreign = b"Provisioning...\n";
    coordinator.append(103, foreign);
    let app_id = deploy(&sim, &coordinator, 103, &[("SIM_JOB_DURATION_MS", "50")]).await;
    assert_eq!(wait_vm_exit(&sim, &app_id).await, VmExit::Completed);

    let job = coordinator.job(103);
    let lost = foreign.len();
    // The first PATCH at 0 got 416, then the runner resumed at the server's
    // length with the rest of its own buffer.
    assert_eq!(job.patches[0].2, 416);
    assert!(job.patches[0].0.starts_with("0-"));
    assert!(job.patches[1].0.starts_with(&format!("{lost}-")));
    assert_eq!(&job.trace[..lost], foreign);
    let header = b"Running with gitlab-runner 15.11.0 (heptapod-runner sim)\n";
    assert_eq!(&job.trace[lost..header.len()], &header[lost..]);

    let vm = sim.sim.app(&app_id).expect("record").vm;
    assert_eq!(vm.log_bytes - vm.log_bytes_sent, lost as u64);
    // The runner's own log has exactly the server's length, but its checksum
    // covers its own first bytes, not the foreign ones.
    let mut runner_log = header[..lost].to_vec();
    runner_log.extend_from_slice(&job.trace[lost..]);
    let (body, _) = &final_puts(&coordinator, 103)[0];
    assert_eq!(body["output"]["bytesize"], job.trace.len());
    assert_eq!(body["output"]["checksum"], crc32_hex(&runner_log));
    assert_ne!(body["output"]["checksum"], crc32_hex(&job.trace));
}

#[tokio::test]
async fn deletion_stops_the_vm_at_once() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(104, JOB_TOKEN);
    let app_id = deploy(
        &sim,
        &coordinator,
        104,
        &[("SIM_JOB_DURATION_MS", "1500"), ("SIM_JOB_LOG_LINES", "3")],
    )
    .await;
    assert!(
        coordinator
            .wait_until(|c| !c.job(104).patches.is_empty(), WAIT)
            .await
    );
    let (status, _) = sim.api.delete_app(&app_id).await;
    assert_eq!(status, 200);
    // The record is final as soon as the DELETE answers.
    let vm = sim.sim.app(&app_id).expect("record").vm;
    assert_eq!(
        (vm.state, vm.exit),
        (VmState::Stopped, Some(VmExit::Deleted))
    );
    // Nothing more reaches the coordinator, past the job's whole duration.
    let patches = coordinator.job(104).patches.len();
    let more = coordinator
        .wait_until(
            |c| c.job(104).patches.len() > patches || !c.job(104).puts.is_empty(),
            Duration::from_millis(2000),
        )
        .await;
    assert!(!more, "the VM kept talking: {:?}", coordinator.job(104));
}

#[tokio::test]
async fn a_vm_that_never_starts_stays_silent_until_deleted() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(105, JOB_TOKEN);
    let app_id = deploy(&sim, &coordinator, 105, &[("SIM_VM_NEVER_STARTS", "true")]).await;
    let stalled = sim
        .sim
        .wait_until(
            |sim| {
                sim.app(&app_id)
                    .is_some_and(|app| app.vm.state == VmState::Stalled)
            },
            WAIT,
        )
        .await;
    assert!(stalled);
    let vm = sim.sim.app(&app_id).expect("record").vm;
    assert!(vm.booted_at.is_some() && vm.job_started_at.is_none());
    sim.api.delete_app(&app_id).await;
    assert_eq!(
        sim.sim.app(&app_id).expect("record").vm.exit,
        Some(VmExit::NeverStarted)
    );
    let job = coordinator.job(105);
    assert!(job.patches.is_empty() && job.puts.is_empty());
}

#[tokio::test]
async fn invalid_build_contexts_stop_the_vm() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    let cases = [
        (
            vec![
                ("runner.toml", runner_toml(&coordinator.url)),
                ("job.json", job_json(1, JOB_TOKEN, &[])),
            ],
            "Dockerfile",
        ),
        (
            vec![
                ("Dockerfile", DOCKERFILE.to_owned()),
                (
                    "runner.toml",
                    runner_toml(&coordinator.url).replace("\"docker\"", "\"shell\""),
                ),
                ("job.json", job_json(1, JOB_TOKEN, &[])),
            ],
            "executor",
        ),
        (
            vec![
                ("Dockerfile", DOCKERFILE.to_owned()),
                ("runner.toml", "[[runners]\n".to_owned()),
                ("job.json", job_json(1, JOB_TOKEN, &[])),
            ],
            "runner.toml",
        ),
        (
            vec![
                ("Dockerfile", DOCKERFILE.to_owned()),
                ("runner.toml", runner_toml(&coordinator.url)),
                ("job.json", "{\"id\": 1}".to_owned()),
            ],
            "token",
        ),
    ];
    for (files, expected) in cases {
        let app_id = deploy_files(&sim, &files).await;
        match wait_vm_exit(&sim, &app_id).await {
            VmExit::InvalidBuild(reason) => assert!(reason.contains(expected), "{reason}"),
            other => panic!("expected an invalid build about {expected}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn cancellation_stops_the_runner_without_a_final_update() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(106, JOB_TOKEN);
    let app_id = deploy(
        &sim,
        &coordinator,
        106,
        &[("SIM_JOB_DURATION_MS", "600"), ("SIM_JOB_LOG_LINES", "3")],
    )
    .await;
    assert!(
        coordinator
            .wait_until(|c| !c.job(106).patches.is_empty(), WAIT)
            .await
    );
    coordinator.update(106, |job| job.status = "canceled".to_owned());
    assert_eq!(wait_vm_exit(&sim, &app_id).await, VmExit::Canceled);
    let job = coordinator.job(106);
    assert_eq!(job.patches.last().map(|patch| patch.2), Some(403));
    assert!(job.puts.is_empty());
}

#[tokio::test]
async fn graceful_cancellation_sends_a_final_update() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(107, JOB_TOKEN);
    let app_id = deploy(
        &sim,
        &coordinator,
        107,
        &[("SIM_JOB_DURATION_MS", "600"), ("SIM_JOB_LOG_LINES", "3")],
    )
    .await;
    assert!(
        coordinator
            .wait_until(|c| !c.job(107).patches.is_empty(), WAIT)
            .await
    );
    coordinator.update(107, |job| job.status = "canceling".to_owned());
    assert_eq!(wait_vm_exit(&sim, &app_id).await, VmExit::Canceled);
    let job = coordinator.job(107);
    assert_eq!(job.status, "canceled");
    let (body, _) = &final_puts(&coordinator, 107)[0];
    assert_eq!(
        (&body["state"], &body["failure_reason"]),
        (&"failed".into(), &"unknown_failure".into())
    );
}

#[tokio::test]
async fn an_unreachable_coordinator_is_retried_then_given_up() {
    let sim = start_sim(|_| {}).await;
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}/", listener.local_addr().expect("addr"));
    drop(listener);
    let app_id = deploy_files(
        &sim,
        &[
            ("Dockerfile", DOCKERFILE.to_owned()),
            ("runner.toml", runner_toml(&dead_url)),
            (
                "job.json",
                job_json(108, JOB_TOKEN, &[("SIM_JOB_DURATION_MS", "0")]),
            ),
        ],
    )
    .await;
    match wait_vm_exit(&sim, &app_id).await {
        VmExit::CoordinatorUnreachable(error) => assert!(error.contains("PATCH"), "{error}"),
        other => panic!("expected CoordinatorUnreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn live_weight_counts_apps_until_deleted_not_until_their_vm_stops() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(109, JOB_TOKEN);
    let app_id = deploy(&sim, &coordinator, 109, &[("SIM_JOB_DURATION_MS", "0")]).await;
    assert_eq!(wait_vm_exit(&sim, &app_id).await, VmExit::Completed);
    let weight = sim.sim.app(&app_id).expect("record").weight;
    assert!((sim.sim.stats().live_weight - weight).abs() < 1e-9);
    sim.api.delete_app(&app_id).await;
    let stats = sim.sim.stats();
    assert!(stats.live_weight.abs() < 1e-9);
    assert!((stats.max_live_weight - weight).abs() < 1e-9);
    // Deleting a finished VM keeps its exit.
    assert_eq!(
        sim.sim.app(&app_id).expect("record").vm.exit,
        Some(VmExit::Completed)
    );
}

/// `GET /v2/organisations/{o}/deployments` as an official client reads it.
async fn organisation_deployments(sim: &Sim) -> (u16, serde_json::Value) {
    let url = format!(
        "{}/organisations/{}/deployments",
        sim.api.base, sim.api.orga
    );
    sim.api.call(reqwest::Method::GET, &url, None).await
}

#[tokio::test]
async fn the_organisation_deployments_say_when_a_task_ended() {
    let sim = start_sim(|_| {}).await;
    let coordinator = Coordinator::start().await;
    coordinator.add_job(301, JOB_TOKEN);
    let idle = ready_app(&sim, "hpd-job-idle").await;
    let app_id = deploy(&sim, &coordinator, 301, &[("SIM_JOB_DURATION_MS", "600")]).await;

    // While it builds or runs: WIP or TASK_RUNNING; an application that was
    // never deployed is not listed.
    let (status, listing) = organisation_deployments(&sim).await;
    assert_eq!(status, 200, "{listing}");
    let entries = listing[&app_id].as_array().expect("array of deployments");
    assert_eq!(entries.len(), 1, "{listing}");
    let state = entries[0]["state"].as_str().expect("state");
    assert!(matches!(state, "WIP" | "TASK_RUNNING"), "{listing}");
    assert!(entries[0]["date"].is_u64() && entries[0]["uuid"].is_string());
    assert!(listing.get(&idle).is_none(), "{listing}");

    assert_eq!(wait_vm_exit(&sim, &app_id).await, VmExit::Completed);
    let (_, listing) = organisation_deployments(&sim).await;
    assert_eq!(listing[&app_id][0]["state"], "OK", "{listing}");

    // An API without the listing: 404, as official clients expect.
    sim.sim.set_organisation_deployments(false);
    let (status, _) = organisation_deployments(&sim).await;
    assert_eq!(status, 404);
}
