//! The simulated Clever Cloud `/v2` API: catalogue, applications, env,
//! errors, authentication, repository readiness, faults and weights.

mod clever_support;

use std::time::Duration;

use clever_support::{create_body, start_sim, WAIT};
use paas_sim::clever::{CleverFaults, SimFlavor};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn catalogue_is_public_and_shaped_like_the_reference() {
    let sim = start_sim(|_| {}).await;
    let http = reqwest::Client::new();
    let flavors: Value = http
        .get(format!(
            "{}/products/flavors?context=heptapod-runner",
            sim.sim.api_url()
        ))
        .send()
        .await
        .expect("flavors")
        .json()
        .await
        .expect("json");
    let flavors = flavors.as_array().expect("array");
    let find = |name: &str| {
        flavors
            .iter()
            .find(|flavor| flavor["name"] == name)
            .unwrap_or_else(|| panic!("flavor {name} missing"))
    };
    let s = find("heptapod-runner-S");
    assert_eq!(
        (s["mem"].as_u64(), s["cpus"].as_u64()),
        (Some(4096), Some(2))
    );
    assert_eq!(s["available"], true);
    assert_eq!(
        s["memory"],
        json!({"unit": "B", "value": "4294967296", "formatted": "4 GiB"})
    );
    for key in [
        "gpus",
        "disk",
        "price",
        "price_id",
        "microservice",
        "machine_learning",
        "nice",
    ] {
        assert!(s.get(key).is_some(), "flavor field {key} missing");
    }
    assert_eq!(find("heptapod-runner-M")["mem"], 8192);
    assert_eq!(find("heptapod-runner-3XL")["cpus"], 24);
    assert_eq!(find("heptapod-runner-4XL")["available"], false);
    find("jenkins-runner-XL");
    find("pico");
    // The reference runner's filter keeps exactly XS..3XL.
    let mut runner_sizes: Vec<&str> = flavors
        .iter()
        .filter(|flavor| flavor["available"] == true)
        .filter_map(|flavor| flavor["name"].as_str()?.strip_prefix("heptapod-runner-"))
        .collect();
    runner_sizes.sort();
    assert_eq!(runner_sizes, ["2XL", "3XL", "L", "M", "S", "XL", "XS"]);

    let instances: Value = http
        .get(format!("{}/products/instances", sim.sim.api_url()))
        .send()
        .await
        .expect("instances")
        .json()
        .await
        .expect("json");
    let docker = instances
        .as_array()
        .expect("array")
        .iter()
        .find(|offer| offer["name"] == "Docker")
        .expect("Docker offer");
    assert_eq!(docker["type"], "docker");
    assert_eq!(docker["version"], sim.sim.docker_version());
    assert_eq!(docker["variant"]["slug"], "docker");
    assert_eq!(docker["enabled"], true);
    assert!(instances.as_array().expect("array").len() > 1);
}

#[tokio::test]
async fn description_and_creation_date_are_kept_and_listed() {
    let sim = start_sim(|_| {}).await;
    let mut body = create_body(&sim.sim, "hpd-job-abcdefgh-5", "S");
    body["description"] = json!("paas-runner job 5 owner=r_abc");
    let (status, app) = sim.api.create(body).await;
    assert_eq!(status, 200, "{app}");
    let app_id = app["id"].as_str().expect("id").to_owned();
    let created = app["creationDate"].as_u64().expect("creationDate");
    let (_, got) = sim.api.get_app(&app_id).await;
    assert_eq!(got["description"], "paas-runner job 5 owner=r_abc");
    assert_eq!(got["creationDate"].as_u64(), Some(created));
    let (_, list) = sim.api.list().await;
    let listed = list
        .as_array()
        .expect("array")
        .iter()
        .find(|item| item["id"] == app_id.as_str())
        .expect("listed");
    assert_eq!(listed["description"], "paas-runner job 5 owner=r_abc");
    assert_eq!(listed["creationDate"].as_u64(), Some(created));
}

#[tokio::test]
async fn application_lifecycle() {
    let sim = start_sim(|_| {}).await;
    let api = &sim.api;
    let (status, app) = api
        .create(create_body(&sim.sim, "hpd-job-abcdefgh-1", "M"))
        .await;
    assert_eq!(status, 200, "{app}");
    let app_id = app["id"].as_str().expect("id").to_owned();
    assert!(app_id.starts_with("app_"), "{app_id}");
    assert_eq!(app["name"], "hpd-job-abcdefgh-1");
    assert_eq!(app["deployment"]["type"], "GIT");
    assert_eq!(app["deployment"]["repoState"], "CREATING");
    assert_eq!(app["deployment"]["httpUrl"], sim.sim.git_url(&app_id));
    assert!(app["deployment"]["url"]
        .as_str()
        .expect("url")
        .starts_with("git+ssh://"));
    assert_eq!(app["instance"]["maxFlavor"]["name"], "heptapod-runner-M");
    assert_eq!(app["instance"]["maxFlavor"]["mem"], 8192);
    assert_eq!(app["instance"]["minFlavor"]["cpus"], 4);
    assert_eq!(app["instance"]["lifetime"], "TASK");
    assert_eq!(
        app["instance"]["variant"]["id"],
        "70d676a0-a775-4dc9-a43d-3121036e8515"
    );
    assert_eq!(app["state"], "SHOULD_BE_UP");
    assert!(app["creationDate"].as_u64().expect("creationDate") > 1_600_000_000_000);

    // Names are not unique.
    let (status, twin) = api
        .create(create_body(&sim.sim, "hpd-job-abcdefgh-1", "S"))
        .await;
    assert_eq!(status, 200);
    assert_ne!(twin["id"], app["id"]);

    let (status, got) = api.get_app(&app_id).await;
    assert_eq!((status, &got["id"]), (200, &app["id"]));
    let (status, list) = api.list().await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().expect("array").len(), 2);

    let env_url = format!("{}/{app_id}/env", api.apps_url());
    let (status, answer) = api
        .call(
            Method::PUT,
            &env_url,
            Some(json!({"CC_MOUNT_DOCKER_SOCKET": "true", "A": "1"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["env"].is_array());
    // PUT /env replaces the whole set.
    let (status, _) = api
        .call(
            Method::PUT,
            &env_url,
            Some(json!({"CC_MOUNT_DOCKER_SOCKET": "true", "CC_ENABLE_HEPTAPOD_RUNNER": "true"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, env) = api.call(Method::GET, &env_url, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        env,
        json!([
            {"name": "CC_ENABLE_HEPTAPOD_RUNNER", "value": "true"},
            {"name": "CC_MOUNT_DOCKER_SOCKET", "value": "true"},
        ])
    );
    let (status, _) = api.call(Method::PUT, &env_url, Some(json!({"A": 1}))).await;
    assert_eq!(status, 400, "non-string env values are refused");

    let (status, deleted) = api.delete_app(&app_id).await;
    assert_eq!(status, 200);
    assert_eq!(
        deleted,
        json!({"id": 302, "message": "deleted", "type": "success"})
    );
    let gone = json!({"id": 4004, "message": "Not Found", "type": "error"});
    assert_eq!(api.get_app(&app_id).await, (404, gone.clone()));
    assert_eq!(api.delete_app(&app_id).await, (404, gone.clone()));
    assert_eq!(
        api.call(Method::GET, &env_url, None).await,
        (404, gone.clone())
    );
    let (_, list) = api.list().await;
    assert_eq!(list.as_array().expect("array").len(), 1);
    assert_eq!(api.get_app("app_unknown").await, (404, gone));

    let records = sim.sim.apps();
    assert_eq!(records.len(), 2);
    assert!(records[0].deleted_at.is_some() && records[1].deleted_at.is_none());
    assert_eq!(
        records[0]
            .env
            .get("CC_ENABLE_HEPTAPOD_RUNNER")
            .map(String::as_str),
        Some("true")
    );
}

#[tokio::test]
async fn create_validation() {
    let sim = start_sim(|_| {}).await;
    let api = &sim.api;
    let mut body = create_body(&sim.sim, "hpd-job-x-1", "S");
    let instance_error =
        json!({"id": 9017, "message": "The specified instance does not exist", "type": "error"});

    let mut no_version = body.clone();
    no_version
        .as_object_mut()
        .expect("object")
        .remove("instanceVersion");
    assert_eq!(api.create(no_version).await, (400, instance_error.clone()));
    body["instanceVersion"] = json!("20000101");
    assert_eq!(
        api.create(body.clone()).await,
        (400, instance_error.clone())
    );

    // A platform update makes the old version stale.
    let old = create_body(&sim.sim, "hpd-job-x-1", "S");
    sim.sim.set_docker_version("20250202");
    assert_eq!(api.create(old).await, (400, instance_error));

    let mut big = create_body(&sim.sim, "hpd-job-x-2", "4XL");
    let (status, error) = api.create(big.clone()).await;
    assert_eq!(status, 400);
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("heptapod-runner-4XL"),
        "{error}"
    );
    big["minFlavor"] = json!("heptapod-runner-HUGE");
    big["maxFlavor"] = json!("heptapod-runner-HUGE");
    let (status, error) = api.create(big).await;
    assert_eq!(status, 400);
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("available flavors"),
        "{error}"
    );

    let (status, _) = api.create(json!({"instanceType": "docker"})).await;
    assert_eq!(status, 400, "name is required");
    let (status, _) = api.call(Method::POST, &api.apps_url(), None).await;
    assert_eq!(status, 400, "empty body");
    assert_eq!(sim.sim.stats().apps_created, 0);
}

#[tokio::test]
async fn authentication_and_organisation() {
    let sim = start_sim(|_| {}).await;
    let http = reqwest::Client::new();
    let url = sim.api.apps_url();
    for authorization in [None, Some("token wrong"), Some("Basic abc")] {
        let mut request = http.get(&url);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401, "{authorization:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["type"], "error");
        assert!(body["id"].is_i64() && body["message"].is_string());
    }
    let response = http
        .get(&url)
        .header(
            "Authorization",
            format!("Bearer {}", sim.sim.config().api_token),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);

    let mut other = sim.api.clone();
    other.orga = "orga_other".to_owned();
    let (status, body) = other.list().await;
    assert_eq!(status, 403);
    assert_eq!(body["type"], "error");
    assert_eq!(sim.sim.stats().apps_created, 0);
}

#[tokio::test]
async fn repo_state_goes_from_creating_to_created() {
    let sim = start_sim(|config| config.repo_ready_delay = Duration::from_millis(150)).await;
    sim.sim.set_repo_never_ready("stuck");
    let stuck_id = sim.api.create_ok(&sim.sim, "hpd-job-stuck-2", "S").await;
    let app_id = sim.api.create_ok(&sim.sim, "hpd-job-r-1", "S").await;
    let (_, app) = sim.api.get_app(&app_id).await;
    assert_eq!(app["deployment"]["repoState"], "CREATING");

    // Poll the API like the reference runner does, with a deadline.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, app) = sim.api.get_app(&app_id).await;
        if app["deployment"]["repoState"] == "CREATED" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "repo never CREATED");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record = sim.sim.app(&app_id).expect("record");
    let waited = record.repo_ready_at.expect("ready") - record.created_at;
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    // The never-ready app, created first, is past its delay as well.
    let (_, stuck) = sim.api.get_app(&stuck_id).await;
    assert_eq!(stuck["deployment"]["repoState"], "CREATING");
    assert!(sim
        .sim
        .app(&stuck_id)
        .expect("record")
        .repo_ready_at
        .is_none());
}

#[tokio::test]
async fn injected_create_errors() {
    let sim = start_sim(|_| {}).await;
    sim.sim
        .inject_create_error_times("-77", 503, 1234, "Service unavailable", 1);
    let body = |name: &str| create_body(&sim.sim, name, "S");
    let expected = json!({"id": 1234, "message": "Service unavailable", "type": "error"});
    assert_eq!(sim.api.create(body("hpd-job-a-77")).await, (503, expected));
    assert_eq!(sim.api.create(body("hpd-job-a-77")).await.0, 200);

    sim.sim
        .inject_create_error("-88", 400, 9017, "The specified instance does not exist");
    assert_eq!(sim.api.create(body("hpd-job-a-88")).await.0, 400);
    assert_eq!(sim.api.create(body("hpd-job-a-88")).await.0, 400);
    assert_eq!(sim.api.create(body("hpd-job-a-99")).await.0, 200);
    sim.sim.clear_create_errors();
    assert_eq!(sim.api.create(body("hpd-job-a-88")).await.0, 200);
    assert_eq!(sim.sim.stats().apps_created, 3);
}

/// Runs a fixed call sequence and returns the statuses seen.
async fn fault_sequence(seed: u64) -> Vec<u16> {
    let sim = start_sim(|config| {
        config.seed = seed;
        config.faults = CleverFaults {
            error_rate: 0.3,
            error_after_effect_rate: 0.2,
            latency: Duration::ZERO,
        };
    })
    .await;
    let mut statuses = Vec::new();
    for index in 0..30 {
        let (status, _) = sim
            .api
            .create(create_body(&sim.sim, &format!("hpd-job-f-{index}"), "XS"))
            .await;
        statuses.push(status);
        statuses.push(sim.api.list().await.0);
    }
    statuses
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed() {
    let first = fault_sequence(42).await;
    assert_eq!(first, fault_sequence(42).await);
    assert_ne!(first, fault_sequence(43).await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn after_effect_errors_leave_the_effect() {
    let sim = start_sim(|config| {
        config.faults.error_after_effect_rate = 1.0;
    })
    .await;
    let (status, body) = sim
        .api
        .create(create_body(&sim.sim, "hpd-job-e-1", "S"))
        .await;
    assert_eq!(status, 500);
    assert_eq!(body["type"], "error");
    // The app exists though the client saw an error; listing also fails now,
    // so look at the simulator's records.
    let apps = sim.sim.apps();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].name, "hpd-job-e-1");
    assert!(apps[0].is_live());
    let stats = sim.sim.stats();
    assert_eq!((stats.apps_created, stats.api_errors_injected), (1, 1));

    // Delete takes effect too.
    let (status, _) = sim.api.delete_app(&apps[0].id).await;
    assert_eq!(status, 500);
    assert!(!sim.sim.apps()[0].is_live());

    let before_only = start_sim(|config| config.faults.error_rate = 1.0).await;
    let (status, _) = before_only
        .api
        .create(create_body(&before_only.sim, "hpd-job-e-2", "S"))
        .await;
    assert_eq!(status, 500);
    assert!(before_only.sim.apps().is_empty());
    // The catalogue is not subject to faults.
    let flavors = reqwest::get(format!("{}/products/flavors", before_only.sim.api_url()))
        .await
        .expect("flavors");
    assert_eq!(flavors.status(), 200);
}

#[tokio::test]
async fn live_weight_accounting() {
    let sim = start_sim(|_| {}).await;
    let weight = |flavor: &str| {
        SimFlavor::default_catalogue()
            .into_iter()
            .find(|entry| entry.name == format!("heptapod-runner-{flavor}"))
            .expect("flavor")
            .weight()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(weight("S"), 4f64.powf(1.25)));
    let s = sim.api.create_ok(&sim.sim, "hpd-job-w-1", "S").await;
    let m = sim.api.create_ok(&sim.sim, "hpd-job-w-2", "M").await;
    let stats = sim.sim.stats();
    assert!(close(stats.live_weight, weight("S") + weight("M")));
    assert_eq!(stats.max_live_apps, 2);
    sim.api.delete_app(&s).await;
    let xs = sim.api.create_ok(&sim.sim, "hpd-job-w-3", "XS").await;
    let stats = sim.sim.stats();
    assert!(close(stats.live_weight, weight("M") + weight("XS")));
    assert!(close(stats.max_live_weight, weight("S") + weight("M")));
    sim.api.delete_app(&m).await;
    sim.api.delete_app(&xs).await;
    let stats = sim.sim.stats();
    assert!(close(stats.live_weight, 0.0));
    assert!(close(stats.max_live_weight, weight("S") + weight("M")));
    assert_eq!(
        (
            stats.apps_created,
            stats.apps_deleted,
            stats.apps_live,
            stats.max_live_apps
        ),
        (3, 3, 0, 2)
    );
    let records = sim.sim.apps();
    assert_eq!(records[1].flavor, "heptapod-runner-M");
    assert_eq!((records[1].mem_mib, records[1].cpus), (8192, 4));
    assert!(close(records[1].weight, weight("M")));
}
