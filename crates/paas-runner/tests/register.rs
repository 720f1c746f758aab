//! `register`, `verify` and `unregister` with the real binary against the
//! coordinator simulator, then `run` on the written configuration: the
//! announced runner (tags `docker-registry-push,clever`, untagged jobs,
//! default flavor S, maximum 2XL) takes its jobs and leaves the others.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{Harness, DEADLINE, SIGQUIT};
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::{JobSpec, JobStatus};

fn quick() -> ClusterSettings {
    ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

/// Runs the binary with `args` and `envs`, without inheriting tokens from
/// the test's environment.
async fn paas_runner(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"));
    command.args(args).current_dir(dir);
    for name in [
        "CI_SERVER_TOKEN",
        "REGISTRATION_TOKEN",
        "PAAS_RUNNER_ACCESS_TOKEN",
        "CC_TOKEN",
        "CONFIG_FILE",
    ] {
        command.env_remove(name);
    }
    for (name, value) in envs {
        command.env(name, value);
    }
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("command ends in time")
        .expect("command runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `token` of the runner named `name` in the file.
fn token_of(config: &Path, name: &str) -> String {
    let document: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    document["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|runner| runner["name"].as_str() == Some(name))
        .and_then(|runner| runner["token"].as_str())
        .expect("runner in the file")
        .to_owned()
}

fn tagged(tags: &[&str]) -> JobSpec {
    JobSpec {
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        ..JobSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announced_runner_is_registered_runs_its_jobs_and_unregisters() {
    let mut harness = Harness::start(quick(), |_| {}).await;
    let dir = harness.dir.path().to_path_buf();
    let config = dir.join("registered.toml");
    let coordinator_url = harness.cluster.coordinator.url();
    let clever = harness.cluster.clever.config().clone();
    let admin = harness.cluster.admin_token.clone();
    let state_file = dir.join("registered.db");
    let register_args = |name: &str| -> Vec<String> {
        [
            "register",
            config.to_str().unwrap(),
            "--url",
            &coordinator_url,
            "--name",
            name,
            "--tag-list",
            "docker-registry-push,clever",
            "--run-untagged",
            "--description",
            "Clever Cloud shared runner",
            "--cc-api-url",
            &harness.cluster.clever.api_url(),
            "--cc-orga-id",
            &clever.orga_id,
            "--cc-default-flavor",
            "S",
            "--cc-max-flavor",
            "2XL",
            "--state-file",
            state_file.to_str().unwrap(),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect()
    };
    let envs = [
        ("PAAS_RUNNER_ACCESS_TOKEN", admin.as_str()),
        ("CC_TOKEN", clever.token.as_str()),
        ("PAAS_JOB_TRACE_WATCH_TOKEN", admin.as_str()),
    ];
    let args = register_args("clever-shared");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = paas_runner(&dir, &args, &envs).await;
    assert!(output.status.success(), "{}", text(&output));
    let token = token_of(&config, "clever-shared");
    assert!(token.starts_with("glrt-"));
    for secret in [&token, &admin, &clever.token] {
        assert!(
            !text(&output).contains(secret.as_str()),
            "{}",
            text(&output)
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let runner = harness
        .cluster
        .coordinator
        .runners()
        .into_iter()
        .find(|runner| runner.origin == "created")
        .expect("runner created on the coordinator");
    assert_eq!(runner.tags, ["docker-registry-push", "clever"]);
    assert!(runner.run_untagged);
    assert_eq!(runner.description, "Clever Cloud shared runner");

    // The same name again is refused, comments and order are kept.
    let edited = format!(
        "# operator's note, kept\n{}",
        std::fs::read_to_string(&config).unwrap()
    );
    std::fs::write(&config, &edited).unwrap();
    let output = paas_runner(&dir, &args, &envs).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--replace"), "{}", text(&output));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // Run it: tagged and untagged jobs are taken, a job needing another tag
    // is not.
    harness.config_path = config.clone();
    harness.spawn_runner();
    let coordinator = harness.cluster.coordinator.clone();
    let ids = [
        coordinator.enqueue(tagged(&["clever"])),
        coordinator.enqueue(tagged(&["docker-registry-push", "clever"])),
        coordinator.enqueue(JobSpec::default()),
    ];
    let gpu = coordinator.enqueue(tagged(&["clever", "gpu"]));
    harness.wait_all_done(&ids).await;
    for id in ids {
        let job = harness.job(id);
        assert_eq!(job.status, JobStatus::Success, "{job:?}");
        assert_eq!(
            job.runner_token_prefix.as_deref(),
            Some(&token[..8]),
            "taken by the registered runner"
        );
    }
    assert!(harness.job(gpu).picked_at.is_none());
    let status = harness.signal_and_wait(SIGQUIT).await;
    assert_eq!(status.code(), Some(0), "{}", harness.logs());

    // verify: valid.
    let output = paas_runner(&dir, &["verify", config.to_str().unwrap()], &[]).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("\"clever-shared\""),
        "{}",
        text(&output)
    );

    // unregister: this host's runner manager goes, the runner stays in
    // GitLab (where it was created), the section goes.
    let managers_before = harness
        .cluster
        .coordinator
        .runners()
        .into_iter()
        .find(|r| r.id == runner.id)
        .unwrap()
        .managers;
    assert_eq!(managers_before.len(), 1, "{managers_before:?}");
    // A second runner created in GitLab, registered with its token once the
    // service ran here: verified under the service's runner manager.
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{coordinator_url}/api/v4/user/runners"))
        .header("PRIVATE-TOKEN", admin.as_str())
        .json(&serde_json::json!({"runner_type": "instance_type"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_token = created["token"].as_str().unwrap().to_owned();
    let cc_api_url = harness.cluster.clever.api_url();
    let output = paas_runner(
        &dir,
        &[
            "register",
            config.to_str().unwrap(),
            "--url",
            &coordinator_url,
            "--name",
            "second",
            "--cc-api-url",
            &cc_api_url,
            "--cc-orga-id",
            &clever.orga_id,
        ],
        &[
            ("CI_SERVER_TOKEN", second_token.as_str()),
            ("CC_TOKEN", clever.token.as_str()),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let second_id = created["id"].as_u64().unwrap();
    let second = harness
        .cluster
        .coordinator
        .runners()
        .into_iter()
        .find(|r| r.id == second_id)
        .unwrap();
    assert_eq!(second.managers, managers_before, "the service's system id");

    let output = paas_runner(
        &dir,
        &["unregister", config.to_str().unwrap(), "--all-runners"],
        &[],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        text(&output).matches("runner manager deleted").count(),
        2,
        "{}",
        text(&output)
    );
    assert!(harness
        .cluster
        .coordinator
        .runners()
        .iter()
        .all(|r| r.managers.is_empty()));
    let after = harness
        .cluster
        .coordinator
        .runners()
        .into_iter()
        .find(|r| r.id == runner.id)
        .expect("the runner stays");
    assert!(after.managers.is_empty());
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(!written.contains("[[runners]]"), "{written}");
    assert!(
        written.starts_with("# operator's note, kept\n"),
        "{written}"
    );
    assert!(!written.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_registration_verify_delete_and_glrt_tokens() {
    let harness = Harness::start(quick(), |_| {}).await;
    let dir = harness.dir.path().to_path_buf();
    // Register into the harness's own configuration (one runner already).
    let config = harness.config_path.clone();
    let coordinator_url = harness.cluster.coordinator.url();
    let clever = harness.cluster.clever.config();
    let registration = harness.cluster.registration_token.clone();
    let common_args = |name: &'static str| {
        vec![
            "register".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--url".into(),
            coordinator_url.clone(),
            "--name".into(),
            name.into(),
            "--cc-api-url".into(),
            harness.cluster.clever.api_url(),
            "--cc-orga-id".into(),
            clever.orga_id.clone(),
        ]
    };
    let as_str = |args: &[String]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut args = common_args("legacy");
    args.extend(as_str(&["--tag-list".into(), "clever".into()]));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = paas_runner(
        &dir,
        &argv,
        &[
            ("REGISTRATION_TOKEN", registration.as_str()),
            ("CC_TOKEN", clever.token.as_str()),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains(&registration));
    let legacy_token = token_of(&config, "legacy");
    assert!(!legacy_token.starts_with("glrt-"));
    let legacy = harness
        .cluster
        .coordinator
        .runners()
        .into_iter()
        .find(|runner| runner.origin == "registered")
        .expect("registered");
    assert_eq!(legacy.tags, ["clever"]);
    assert!(!legacy.run_untagged, "tags given, --run-untagged not");
    // The configuration still loads, with both runners.
    let loaded = paas_config::load(&config).expect("loads");
    assert_eq!(loaded.runners.len(), 2);

    // A wrong registration token: precise refusal, nothing written.
    let before = std::fs::read_to_string(&config).unwrap();
    let args = common_args("other");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = paas_runner(
        &dir,
        &argv,
        &[
            ("REGISTRATION_TOKEN", "GR1348941wrong"),
            ("CC_TOKEN", clever.token.as_str()),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("refused the registration token"),
        "{}",
        text(&output)
    );
    assert!(!text(&output).contains("GR1348941wrong"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    // An option the configuration cannot take is refused before anything is
    // registered.
    let runners_before = harness.cluster.coordinator.runners().len();
    let mut args = common_args("bad-flavor");
    args.extend(["--cc-default-flavor".to_owned(), String::new()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = paas_runner(
        &dir,
        &argv,
        &[
            ("REGISTRATION_TOKEN", registration.as_str()),
            ("CC_TOKEN", "secret:missing"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("nothing was registered"),
        "{}",
        text(&output)
    );
    assert_eq!(harness.cluster.coordinator.runners().len(), runners_before);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    // A glrt- token with tags is refused as gitlab-runner does.
    let mut args = common_args("glrt");
    args.extend(as_str(&["--tag-list".into(), "clever".into()]));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = paas_runner(
        &dir,
        &argv,
        &[
            ("CI_SERVER_TOKEN", harness.cluster.runner_tokens[0].as_str()),
            ("CC_TOKEN", clever.token.as_str()),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("belong to the runner in GitLab"));

    // A runner created in GitLab (its glrt- token given): verified, then
    // written with its id; --replace replaces it in place.
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{coordinator_url}/api/v4/user/runners"))
        .header("PRIVATE-TOKEN", harness.cluster.admin_token.as_str())
        .json(&serde_json::json!({"runner_type": "instance_type", "tag_list": "clever"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created_token = created["token"].as_str().unwrap().to_owned();
    let args = common_args("from-gitlab");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let envs = [
        ("CI_SERVER_TOKEN", created_token.as_str()),
        ("CC_TOKEN", clever.token.as_str()),
    ];
    let output = paas_runner(&dir, &argv, &envs).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains(&created_token));
    assert_eq!(token_of(&config, "from-gitlab"), created_token);
    let document: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    let section = document["runners"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(section["id"].as_integer(), created["id"].as_i64());
    let output = paas_runner(&dir, &argv, &envs).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "same token again: {}",
        text(&output)
    );
    let mut args = args.clone();
    args.push("--replace".into());
    args.extend(["--cc-max-flavor".to_owned(), "XL".to_owned()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = paas_runner(&dir, &argv, &envs).await;
    assert!(output.status.success(), "{}", text(&output));
    let loaded = paas_config::load(&config).expect("loads");
    let names: Vec<&str> = loaded.runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sim-runner-0", "legacy", "from-gitlab"]);
    assert_eq!(loaded.runners[2].cc.max_flavor.as_deref(), Some("XL"));
    // Removed again so that the rest of the test sees two runners.
    let output = paas_runner(
        &dir,
        &[
            "unregister",
            config.to_str().unwrap(),
            "--name",
            "from-gitlab",
        ],
        &[],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));

    // The legacy runner is deleted on GitLab behind our back: verify says
    // so, and --delete removes its section only.
    let deleted = reqwest::Client::new()
        .delete(format!("{coordinator_url}/api/v4/runners"))
        .json(&serde_json::json!({ "token": legacy_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let output = paas_runner(&dir, &["verify", config.to_str().unwrap()], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("\"legacy\""));
    assert!(text(&output).contains("REFUSED"));
    let output = paas_runner(&dir, &["verify", config.to_str().unwrap(), "--delete"], &[]).await;
    assert!(output.status.success(), "{}", text(&output));
    let loaded = paas_config::load(&config).expect("loads");
    assert_eq!(
        loaded
            .runners
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["sim-runner-0"]
    );
}
