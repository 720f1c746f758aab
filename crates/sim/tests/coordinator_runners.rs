//! The coordinator simulator's runner lifecycle over real HTTP (reference
//! §10): registration, creation, verification, deletion, and job requests
//! honouring tags, `run_untagged` and `paused`.

mod coordinator_support;

use coordinator_support::{config, start, ADMIN, RUNNER};
use paas_sim::coordinator::{CoordinatorConfig, JobSpec};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const REGISTRATION: &str = "GR1348941registration";

async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    private_token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = client.request(method, url).json(&body);
    if let Some(token) = private_token {
        request = request.header("PRIVATE-TOKEN", token);
    }
    let response = request.send().await.expect("answer");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn request_job(client: &Client, url: &str, token: &str) -> StatusCode {
    client
        .post(format!("{url}/api/v4/jobs/request"))
        .json(&json!({"token": token, "system_id": "s_host1"}))
        .send()
        .await
        .expect("answer")
        .status()
}

fn tagged(tags: &[&str]) -> JobSpec {
    JobSpec {
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        ..JobSpec::default()
    }
}

#[tokio::test]
async fn legacy_registration_needs_the_instance_token_and_keeps_tags() {
    let (disabled, client) = start(config()).await;
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/v4/runners", disabled.url()),
        None,
        json!({"token": REGISTRATION}),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "registration tokens disabled");

    let (sim, client) = start(CoordinatorConfig {
        registration_token: Some(REGISTRATION.into()),
        ..config()
    })
    .await;
    let url = format!("{}/api/v4/runners", sim.url());
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        url.clone(),
        None,
        json!({"token": "wrong"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        url.clone(),
        None,
        json!({"token": REGISTRATION, "run_untagged": false}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no tags, no untagged jobs");
    assert!(body["message"].as_str().unwrap().contains("tags_list"));

    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        url,
        None,
        json!({"token": REGISTRATION, "description": "paas", "tag_list": "clever, docker-registry-push",
               "run_untagged": false, "paused": false}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = body["token"].as_str().expect("token").to_owned();
    assert!(body["id"].as_u64().is_some());
    assert!(!token.starts_with("glrt-"));
    let runner = sim
        .runners()
        .into_iter()
        .find(|runner| runner.origin == "registered")
        .expect("registered runner listed");
    assert_eq!(runner.tags, ["clever", "docker-registry-push"]);
    assert!(!runner.run_untagged);
    assert_eq!(runner.description, "paas");

    // Tags decide: an untagged job and a job needing another tag stay.
    let untagged = sim.enqueue(JobSpec::default());
    let gpu = sim.enqueue(tagged(&["clever", "gpu"]));
    let clever = sim.enqueue(tagged(&["clever"]));
    assert_eq!(
        request_job(&client, &sim.url(), &token).await,
        StatusCode::CREATED
    );
    assert!(sim.job(clever).unwrap().picked_at.is_some());
    assert_eq!(
        request_job(&client, &sim.url(), &token).await,
        StatusCode::NO_CONTENT
    );
    assert!(sim.job(untagged).unwrap().picked_at.is_none());
    assert!(sim.job(gpu).unwrap().picked_at.is_none());
    // The configured runner (untagged jobs only) takes the untagged one.
    assert_eq!(
        request_job(&client, &sim.url(), RUNNER).await,
        StatusCode::CREATED
    );
    assert!(sim.job(untagged).unwrap().picked_at.is_some());

    // DELETE /runners removes the runner: its token is refused after.
    let delete = format!("{}/api/v4/runners", sim.url());
    let (status, _) = call(
        &client,
        reqwest::Method::DELETE,
        delete.clone(),
        None,
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        &client,
        reqwest::Method::DELETE,
        delete,
        None,
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        request_job(&client, &sim.url(), &token).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn created_runners_verify_pause_and_lose_their_managers() {
    let (sim, client) = start(config()).await;
    let url = format!("{}/api/v4/user/runners", sim.url());
    let settings = json!({"runner_type": "instance_type", "description": "paas",
                          "tag_list": ["docker-registry-push", "clever"], "run_untagged": true,
                          "paused": true});
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        url.clone(),
        Some("glpat-wrong"),
        settings.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        url.clone(),
        Some(ADMIN),
        json!({"description": "no type"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "runner_type is missing");
    let (status, body) = call(&client, reqwest::Method::POST, url, Some(ADMIN), settings).await;
    assert_eq!(status, StatusCode::CREATED);
    let token = body["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("glrt-"));
    let id = body["id"].as_u64().expect("id");

    let verify = format!("{}/api/v4/runners/verify", sim.url());
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        verify.clone(),
        None,
        json!({"token": "glrt-unknown"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &client,
        reqwest::Method::POST,
        verify,
        None,
        json!({"token": token, "system_id": "s_host1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], id);
    let runner = sim.runners().into_iter().find(|r| r.id == id).unwrap();
    assert_eq!(runner.managers, ["s_host1"]);
    assert!(runner.paused);

    // Paused: no job, even an untagged one.
    let job = sim.enqueue(JobSpec::default());
    assert_eq!(
        request_job(&client, &sim.url(), &token).await,
        StatusCode::NO_CONTENT
    );
    assert!(sim.job(job).unwrap().picked_at.is_none());

    let managers = format!("{}/api/v4/runners/managers", sim.url());
    let (status, _) = call(
        &client,
        reqwest::Method::DELETE,
        managers.clone(),
        None,
        json!({"token": token, "system_id": "s_other"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &client,
        reqwest::Method::DELETE,
        managers,
        None,
        json!({"token": token, "system_id": "s_host1"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let runner = sim.runners().into_iter().find(|r| r.id == id).unwrap();
    assert!(runner.managers.is_empty(), "the runner itself stays");

    let user = format!("{}/api/v4/user", sim.url());
    let (status, body) = call(
        &client,
        reqwest::Method::GET,
        user.clone(),
        Some(ADMIN),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["is_admin"], true);
    let (status, _) = call(
        &client,
        reqwest::Method::GET,
        user,
        Some("glpat-wrong"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
