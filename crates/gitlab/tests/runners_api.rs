//! The runner lifecycle calls against a scripted coordinator on loopback:
//! what is sent (tokens in bodies and headers only), how answers are read
//! (old GitLab's plain `200`, capped bodies), and that errors never quote a
//! token.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use paas_core::Secret;
use paas_gitlab::{CoordinatorClient, GitlabError, RunnerSettings, Unregistered};
use serde_json::{json, Value};

const TOKEN: &str = "glrt-SECRET-runner-token";
const ADMIN: &str = "glpat-SECRET-admin-token";

/// A request as received: path and query, `PRIVATE-TOKEN`, JSON body.
type Seen = (String, Option<String>, Value);

#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<Vec<(u16, String)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handle(
    State(script): State<Script>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let private = headers
        .get("private-token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    script
        .seen
        .lock()
        .unwrap()
        .push((uri.to_string(), private, body));
    let (status, text) = script.answers.lock().unwrap().remove(0);
    (StatusCode::from_u16(status).unwrap(), text).into_response()
}

async fn start(answers: Vec<(u16, String)>) -> (CoordinatorClient, Script) {
    let script = Script {
        answers: Arc::new(Mutex::new(answers)),
        ..Script::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(script.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = paas_gitlab::http_client_builder().build().unwrap();
    (CoordinatorClient::new(&url, http).unwrap(), script)
}

#[tokio::test]
async fn verify_reads_new_and_old_answers_and_refusals_quote_no_token() {
    let (client, script) = start(vec![
        (
            200,
            json!({"id": 42, "token": TOKEN, "token_expires_at": null}).to_string(),
        ),
        (200, "200".to_owned()),
        (
            403,
            json!({"message": format!("403 Forbidden - {TOKEN}")}).to_string(),
        ),
        (503, "maintenance".to_owned()),
    ])
    .await;
    let token = Secret::new(TOKEN);
    let verified = client.verify_runner(&token, Some("s_host")).await.unwrap();
    assert_eq!(verified.id, Some(42));
    let old = client.verify_runner(&token, None).await.unwrap();
    assert_eq!(old.id, None, "old GitLab answers a plain 200");
    let refused = client.verify_runner(&token, None).await.unwrap_err();
    assert!(matches!(refused, GitlabError::Forbidden { .. }));
    assert!(!refused.to_string().contains(TOKEN), "{refused}");
    assert!(refused.to_string().contains("[REDACTED]"));
    let down = client.verify_runner(&token, None).await.unwrap_err();
    assert!(down.is_transient());

    let seen = script.seen.lock().unwrap();
    assert_eq!(seen[0].0, "/api/v4/runners/verify");
    assert_eq!(seen[0].2, json!({"token": TOKEN, "system_id": "s_host"}));
    assert_eq!(seen[1].2, json!({"token": TOKEN}));
}

#[tokio::test]
async fn creation_sends_settings_and_the_access_token_in_a_header() {
    let (client, script) = start(vec![
        (
            201,
            json!({"id": 7, "token": "glrt-new", "token_expires_at": null}).to_string(),
        ),
        (401, json!({"message": "401 Unauthorized"}).to_string()),
        (201, "x".repeat(200_000)),
    ])
    .await;
    let settings = RunnerSettings {
        description: "shared".into(),
        tags: vec!["docker-registry-push".into(), "clever".into()],
        run_untagged: true,
        paused: false,
        ..RunnerSettings::default()
    };
    let admin = Secret::new(ADMIN);
    let created = client
        .create_instance_runner(&admin, &settings)
        .await
        .unwrap();
    assert_eq!(created.id, 7);
    assert_eq!(created.token.expose(), "glrt-new");
    let refused = client
        .create_instance_runner(&admin, &settings)
        .await
        .unwrap_err();
    assert!(matches!(refused, GitlabError::Forbidden { .. }));
    // A huge answer is cut, and reported as undecodable, not kept whole.
    let huge = client
        .create_instance_runner(&admin, &settings)
        .await
        .unwrap_err();
    assert!(matches!(huge, GitlabError::Decode { .. }), "{huge}");

    let seen = script.seen.lock().unwrap();
    assert_eq!(seen[0].0, "/api/v4/user/runners", "no token in the url");
    assert_eq!(seen[0].1.as_deref(), Some(ADMIN));
    assert_eq!(
        seen[0].2,
        json!({"runner_type": "instance_type", "description": "shared",
               "tag_list": "docker-registry-push,clever", "run_untagged": true,
               "paused": false, "locked": false})
    );
}

#[tokio::test]
async fn unregistering_by_manager_or_runner() {
    let (client, script) = start(vec![
        (204, String::new()),
        (404, json!({"message": "404 Not found"}).to_string()),
        (204, String::new()),
        (403, json!({"message": "403 Forbidden"}).to_string()),
    ])
    .await;
    let token = Secret::new(TOKEN);
    assert_eq!(
        client
            .delete_runner_manager(&token, "s_host")
            .await
            .unwrap(),
        Unregistered::Deleted
    );
    assert_eq!(
        client
            .delete_runner_manager(&token, "s_host")
            .await
            .unwrap(),
        Unregistered::NoSuchManager
    );
    assert_eq!(
        client.delete_runner(&token).await.unwrap(),
        Unregistered::Deleted
    );
    assert!(matches!(
        client.delete_runner(&token).await,
        Err(GitlabError::Forbidden { .. })
    ));
    let seen = script.seen.lock().unwrap();
    assert_eq!(seen[0].0, "/api/v4/runners/managers");
    assert_eq!(seen[0].2, json!({"token": TOKEN, "system_id": "s_host"}));
    assert_eq!(seen[2].0, "/api/v4/runners");
}
