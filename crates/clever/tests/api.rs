//! The Clever Cloud client against a scripted HTTP server on loopback: requests sent, answers read, errors classified.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use paas_clever::api::{App, AppFlavor, CleverClient, CleverError, CreateApp, DeleteOutcome};
use paas_core::{Flavor, Secret};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "s3cret-token-value";

/// One recorded request.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum Answer {
    Reply(u16, String),
    /// Never answers (the client's timeout must fire).
    Hang,
}

#[derive(Default)]
struct Script {
    answers: Mutex<HashMap<String, Answer>>,
    calls: Mutex<Vec<Call>>,
}

struct Mock {
    script: Arc<Script>,
    url: String,
}

impl Mock {
    async fn start() -> Mock {
        let script = Arc::new(Script::default());
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Mock {
            script,
            url: format!("http://{address}/v2"),
        }
    }

    /// Scripts the answer to `"<METHOD> <path>"`.
    fn on(&self, route: &str, status: u16, body: impl Into<String>) {
        self.script
            .answers
            .lock()
            .unwrap()
            .insert(route.to_owned(), Answer::Reply(status, body.into()));
    }

    fn hang(&self, route: &str) {
        self.script
            .answers
            .lock()
            .unwrap()
            .insert(route.to_owned(), Answer::Hang);
    }

    fn calls(&self) -> Vec<Call> {
        self.script.calls.lock().unwrap().clone()
    }

    fn client(&self) -> CleverClient {
        CleverClient::new(
            &self.url,
            "orga_42",
            Secret::new(TOKEN),
            reqwest::Client::new(),
        )
        .unwrap()
    }
}

async fn answer(State(script): State<Arc<Script>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    let route = format!("{} {}", parts.method, parts.uri.path());
    script.calls.lock().unwrap().push(Call {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    });
    let reply = match script.answers.lock().unwrap().get(&route) {
        Some(Answer::Reply(status, body)) => Some((*status, body.clone())),
        Some(Answer::Hang) => None,
        None => Some((
            404,
            r#"{"id":4004,"message":"Not Found","type":"error"}"#.to_owned(),
        )),
    };
    let Some((status, body)) = reply else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn auth_header(call: &Call) -> Option<&str> {
    call.headers
        .get("authorization")
        .map(|v| v.to_str().unwrap())
}

/// Nothing about an error may reveal the token.
fn assert_no_token(err: &CleverError) {
    let all = format!("{err} {err:?} {}", err.user_message());
    assert!(!all.contains(TOKEN), "{all}");
}

fn app_json(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "ownerId": "orga_42",
        "name": name,
        "description": "paas-runner job 12 owner=r_abc",
        "zone": "par",
        "creationDate": 1_700_000_000_123_i64,
        "state": "WANTS_TO_BE_UP",
        "instance": {
            "type": "docker", "version": "20210101", "lifetime": "TASK",
            "minFlavor": {"name": "heptapod-runner-S", "mem": 4096, "cpus": 2, "price": 0.3},
            "maxFlavor": {"name": "heptapod-runner-S", "mem": 4096, "cpus": 2, "price": 0.3, "memory": {"unit": "B", "value": "4294967296"}},
            "defaultEnv": {"CC_X": "1"},
        },
        "deployment": {"type": "GIT", "repoState": "CREATING", "url": "git+ssh://git@push.example/app.git", "httpUrl": "https://push.example/app.git", "shutdownable": false},
        "vhosts": [],
    })
}

#[tokio::test]
async fn flavors_keep_available_entries_of_the_prefix() {
    let mock = Mock::start().await;
    mock.on(
        "GET /v2/products/flavors",
        200,
        json!([
            {"name": "heptapod-runner-M", "mem": 8192, "cpus": 4, "gpus": 0, "disk": null, "price": 0.6, "available": true, "microservice": false, "machine_learning": false, "nice": 0, "price_id": "x", "memory": {"unit": "B", "value": 8589934592_u64, "formatted": "8 GiB"}},
            {"name": "heptapod-runner-S", "mem": 4096, "cpus": 2, "available": true, "memory": {"unit": "B", "value": "4294967296"}},
            {"name": "heptapod-runner-4XL", "mem": 131072, "cpus": 32, "available": false},
            {"name": "jenkins-runner-XL", "mem": 32768, "cpus": 8, "available": true},
            {"name": "heptapod-runner-BROKEN", "available": true},
            {"name": "heptapod-runner-", "mem": 1, "cpus": 1, "available": true},
            {"unexpected": "entry"},
        ])
        .to_string(),
    );
    let flavors = mock
        .client()
        .flavors("heptapod-runner", "heptapod-runner-")
        .await
        .unwrap();
    assert_eq!(
        flavors,
        [
            Flavor {
                name: "M".into(),
                api_name: "heptapod-runner-M".into(),
                ram_mib: 8192,
                cpus: 4
            },
            Flavor {
                name: "S".into(),
                api_name: "heptapod-runner-S".into(),
                ram_mib: 4096,
                cpus: 2
            },
        ]
    );
    let calls = mock.calls();
    assert_eq!(calls[0].query.as_deref(), Some("context=heptapod-runner"));
    // Authenticated, as the official clients always call it.
    assert_eq!(
        auth_header(&calls[0]),
        Some(format!("token {TOKEN}").as_str())
    );
    assert_eq!(calls.len(), 1);
}

#[tokio::test]
async fn catalogue_refused_with_credentials_is_read_anonymously() {
    let mock = Mock::start().await;
    mock.on(
        "GET /v2/products/instances",
        401,
        r#"{"id":401,"message":"Not authenticated","type":"error"}"#,
    );
    let err = mock.client().docker_instance_version().await.unwrap_err();
    assert!(matches!(err, CleverError::Unauthorized { .. }), "{err:?}");
    let calls = mock.calls();
    assert_eq!(calls.len(), 2, "one more try, anonymous");
    assert!(auth_header(&calls[0]).is_some());
    assert_eq!(auth_header(&calls[1]), None);
}

#[tokio::test]
async fn docker_version_is_the_highest_enabled_of_the_docker_slug() {
    let mock = Mock::start().await;
    let docker_variant =
        json!({"id": "uuid-docker", "slug": "docker", "name": "Docker", "deployType": "docker"});
    mock.on(
        "GET /v2/products/instances",
        200,
        json!([
            {"type": "node", "version": "20240101", "name": "Node", "variant": {"slug": "node"}, "enabled": true},
            {"type": "docker", "version": "20210101", "name": "Docker", "variant": docker_variant, "enabled": true, "flavors": []},
            {"type": "docker", "version": "20990101", "name": "Docker", "variant": docker_variant, "enabled": true},
        ])
        .to_string(),
    );
    // Not the first named `Docker` (the reference's rule): the highest.
    assert_eq!(
        mock.client().docker_instance_version().await.unwrap(),
        "20990101"
    );

    mock.on(
        "GET /v2/products/instances",
        200,
        json!([
            {"type": "docker", "version": "20230101", "name": "Docker (new)", "variant": docker_variant, "enabled": true},
            {"type": "docker", "version": "20250101", "name": "Docker (new)", "variant": docker_variant, "enabled": false},
            {"type": "docker", "version": "20240301", "name": "Docker (new)", "variant": docker_variant, "enabled": true},
        ])
        .to_string(),
    );
    assert_eq!(
        mock.client().docker_instance_version().await.unwrap(),
        "20240301"
    );

    mock.on("GET /v2/products/instances", 200, "[]");
    let err = mock.client().docker_instance_version().await.unwrap_err();
    assert!(matches!(err, CleverError::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn create_app_sends_the_reference_body() {
    let mock = Mock::start().await;
    mock.on(
        "POST /v2/organisations/orga_42/applications",
        200,
        app_json("app_1", "hpd-job-abcdefgh-12").to_string(),
    );
    let spec = CreateApp {
        name: "hpd-job-abcdefgh-12".into(),
        zone: "par".into(),
        instance_version: "20210101".into(),
        instance_variant: "70d676a0-a775-4dc9-a43d-3121036e8515".into(),
        flavor_api_name: "heptapod-runner-S".into(),
        description: "paas-runner job 12 owner=r_abc".into(),
    };
    let app = mock.client().create_app(&spec).await.unwrap();
    assert_eq!(
        app,
        App {
            id: "app_1".into(),
            name: "hpd-job-abcdefgh-12".into(),
            repo_state: Some("CREATING".into()),
            http_url: Some("https://push.example/app.git".into()),
            max_flavor: Some(AppFlavor {
                name: "heptapod-runner-S".into(),
                ram_mib: 4096,
                cpus: 2
            }),
            creation_date_ms: Some(1_700_000_000_123),
            description: Some("paas-runner job 12 owner=r_abc".into()),
        }
    );
    let call = &mock.calls()[0];
    assert_eq!(call.method, "POST");
    assert_eq!(auth_header(call), Some(format!("token {TOKEN}").as_str()));
    assert_eq!(
        call.headers.get("content-type").unwrap(),
        "application/json"
    );
    let body: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        body,
        json!({
            "zone": "par", "instanceLifetime": "TASK", "instanceType": "docker", "deploy": "git",
            "instanceVariant": "70d676a0-a775-4dc9-a43d-3121036e8515",
            "maxInstances": 1, "minInstances": 1, "instanceVersion": "20210101",
            "minFlavor": "heptapod-runner-S", "maxFlavor": "heptapod-runner-S",
            "name": "hpd-job-abcdefgh-12", "description": "paas-runner job 12 owner=r_abc",
        })
    );
}

#[tokio::test]
async fn create_app_errors_are_typed() {
    let mock = Mock::start().await;
    let route = "POST /v2/organisations/orga_42/applications";
    mock.on(
        route,
        400,
        r#"{"id":9017,"message":"The specified instance does not exist","type":"error"}"#,
    );
    let spec = CreateApp {
        name: "n".into(),
        zone: "par".into(),
        instance_version: "".into(),
        instance_variant: "v".into(),
        flavor_api_name: "f".into(),
        description: String::new(),
    };
    let err = mock.client().create_app(&spec).await.unwrap_err();
    assert_eq!((err.status(), err.api_id()), (Some(400), Some(9017)));
    assert_eq!(
        err.user_message(),
        "Clever Cloud error 9017: The specified instance does not exist"
    );
    assert!(!err.is_transient());
    assert_no_token(&err);

    mock.on(route, 503, "<html>Service Unavailable</html>");
    let err = mock.client().create_app(&spec).await.unwrap_err();
    assert!(
        matches!(&err, CleverError::Api { status: 503, id: None, message, .. } if message == "<html>Service Unavailable</html>")
    );
    assert!(err.is_transient());

    mock.on(route, 429, "");
    assert!(mock
        .client()
        .create_app(&spec)
        .await
        .unwrap_err()
        .is_transient());

    // A success without an application id cannot be used.
    mock.on(route, 201, r#"{"name":"n"}"#);
    assert!(matches!(
        mock.client().create_app(&spec).await.unwrap_err(),
        CleverError::Decode { .. }
    ));
    mock.on(route, 200, "not json");
    assert!(matches!(
        mock.client().create_app(&spec).await.unwrap_err(),
        CleverError::Decode { .. }
    ));
}

#[tokio::test]
async fn unauthorized_is_not_transient_and_hides_the_token() {
    let mock = Mock::start().await;
    for status in [401, 403] {
        mock.on(
            "GET /v2/organisations/orga_42/applications",
            status,
            r#"{"id":401,"message":"Not logged in","type":"error"}"#,
        );
        let err = mock.client().list_apps().await.unwrap_err();
        assert!(
            matches!(err, CleverError::Unauthorized { status: s, .. } if s == status),
            "{err:?}"
        );
        assert!(!err.is_transient());
        assert_no_token(&err);
    }
}

#[tokio::test]
async fn hostile_application_ids_and_names_are_not_taken_as_they_are() {
    let mock = Mock::start().await;
    mock.on(
        "GET /v2/organisations/orga_42/applications",
        200,
        json!([
            {"id": "../../organisations/orga_other", "name": "path-like id"},
            {"id": "app_1\n2026-01-01 INFO forged", "name": "id with a newline"},
            {"id": "a".repeat(129), "name": "id too long"},
            {"id": "app_2", "name": "hpd-job-x-1\n\u{1b}[31mforged line"},
        ])
        .to_string(),
    );
    let apps = mock.client().list_apps().await.unwrap();
    let ids: Vec<&str> = apps.iter().map(|app| app.id.as_str()).collect();
    assert_eq!(ids, ["app_2"], "only a plain id is taken");
    assert_eq!(apps[0].name, "hpd-job-x-1\\n\\u{1b}[31mforged line");
    assert!(!apps[0]
        .name
        .chars()
        .any(paas_core::sanitize::is_unsafe_char));
}

#[tokio::test]
async fn list_and_get_apps() {
    let mock = Mock::start().await;
    let minimal =
        json!({"id": "app_2", "name": "other", "instance": {"maxFlavor": "M"}, "deployment": null});
    mock.on(
        "GET /v2/organisations/orga_42/applications",
        200,
        json!([app_json("app_1", "hpd-job-abcdefgh-12"), minimal, {"name": "no id"}]).to_string(),
    );
    let apps = mock.client().list_apps().await.unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(
        apps[1],
        App {
            id: "app_2".into(),
            name: "other".into(),
            repo_state: None,
            http_url: None,
            max_flavor: None,
            creation_date_ms: None,
            description: None,
        }
    );

    let mut created = app_json("app_1", "hpd-job-abcdefgh-12");
    created["deployment"]["repoState"] = json!("CREATED");
    mock.on(
        "GET /v2/organisations/orga_42/applications/app_1",
        200,
        created.to_string(),
    );
    assert_eq!(
        mock.client()
            .get_app("app_1")
            .await
            .unwrap()
            .repo_state
            .as_deref(),
        Some("CREATED")
    );

    let err = mock.client().get_app("app_unknown").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn set_env_replaces_the_whole_environment() {
    let mock = Mock::start().await;
    let env: BTreeMap<String, String> = [
        ("CC_MOUNT_DOCKER_SOCKET", "true"),
        ("CC_ENABLE_HEPTAPOD_RUNNER", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (status, body) in [(200, r#"{"env":[]}"#), (204, ""), (200, "not even json")] {
        mock.on(
            "PUT /v2/organisations/orga_42/applications/app_1/env",
            status,
            body,
        );
        mock.client().set_env("app_1", &env).await.unwrap();
    }
    let call = &mock.calls()[0];
    assert_eq!(call.method, "PUT");
    assert_eq!(
        call.path,
        "/v2/organisations/orga_42/applications/app_1/env"
    );
    assert_eq!(auth_header(call), Some(format!("token {TOKEN}").as_str()));
    let body: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        body,
        json!({"CC_ENABLE_HEPTAPOD_RUNNER": "true", "CC_MOUNT_DOCKER_SOCKET": "true"})
    );

    mock.on(
        "PUT /v2/organisations/orga_42/applications/app_1/env",
        400,
        r#"{"id":557,"message":"Application environment is invalid","type":"error","fields":{"X":"bad"}}"#,
    );
    assert_eq!(
        mock.client()
            .set_env("app_1", &env)
            .await
            .unwrap_err()
            .api_id(),
        Some(557)
    );
}

#[tokio::test]
async fn delete_app_outcomes() {
    let mock = Mock::start().await;
    let route = "DELETE /v2/organisations/orga_42/applications/app_1";
    mock.on(
        route,
        200,
        r#"{"id":302,"message":"deleted","type":"success"}"#,
    );
    assert_eq!(
        mock.client().delete_app("app_1").await.unwrap(),
        DeleteOutcome::Deleted
    );

    mock.on(
        route,
        404,
        r#"{"id":4004,"message":"Not Found","type":"error"}"#,
    );
    assert_eq!(
        mock.client().delete_app("app_1").await.unwrap(),
        DeleteOutcome::AlreadyGone
    );

    // Any 404 is "gone", as for heptapod-paas-runner, even one worded
    // differently (a deletion must not be retried forever).
    mock.on(route, 404, "<html>nginx</html>");
    assert_eq!(
        mock.client().delete_app("app_1").await.unwrap(),
        DeleteOutcome::AlreadyGone
    );

    mock.on(
        route,
        500,
        r#"{"id":5000,"message":"Internal","type":"error"}"#,
    );
    assert!(mock
        .client()
        .delete_app("app_1")
        .await
        .unwrap_err()
        .is_transient());
}

#[tokio::test]
async fn timeouts_and_unreachable_servers_are_transient() {
    let mock = Mock::start().await;
    mock.hang("GET /v2/organisations/orga_42/applications");
    let client = mock.client().with_timeout(Duration::from_millis(200));
    let err = client.list_apps().await.unwrap_err();
    assert!(
        matches!(
            err,
            CleverError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(err.user_message(), "Clever Cloud did not answer in time");
    assert_no_token(&err);

    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = CleverClient::new(
        &format!("http://{address}/v2"),
        "orga_42",
        Secret::new(TOKEN),
        reqwest::Client::new(),
    )
    .unwrap();
    let err = client.delete_app("app_1").await.unwrap_err();
    assert!(
        matches!(
            err,
            CleverError::Transport {
                timed_out: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_no_token(&err);
}

#[tokio::test]
async fn flavors_of_absurd_size_are_skipped_not_the_catalogue() {
    let mock = Mock::start().await;
    // Written by hand: `1e400` is out of range for serde_json and `NaN` is
    // no JSON number, yet each must only cost its own entry.
    mock.on(
        "GET /v2/products/flavors",
        200,
        r#"[
            {"name": "heptapod-runner-HUGE", "mem": 1e400, "cpus": 4, "available": true},
            {"name": "heptapod-runner-BIG", "mem": 1e30, "cpus": 4, "available": true},
            {"name": "heptapod-runner-NEG", "mem": -8192, "cpus": 4, "available": true},
            {"name": "heptapod-runner-ZERO", "mem": 0, "cpus": 4, "available": true},
            {"name": "heptapod-runner-NAN", "mem": "NaN", "cpus": 4, "available": true},
            {"name": "heptapod-runner-TB", "mem": 1073741824, "cpus": 4, "available": true},
            {"name": "heptapod-runner-CPU", "mem": 8192, "cpus": 1e12, "available": true},
            {"name": "heptapod-runner-\u001b[2J", "mem": 8192, "cpus": 4, "available": true},
            {"name": "heptapod-runner-M", "mem": 8192, "cpus": 4, "available": true}
        ]"#,
    );
    let flavors = mock
        .client()
        .flavors("heptapod-runner", "heptapod-runner-")
        .await
        .expect("the catalogue is read despite its broken entries");
    let names: Vec<&str> = flavors.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["M"]);
}

#[tokio::test]
async fn clever_error_messages_are_sanitised_and_scrubbed_of_the_token() {
    let mock = Mock::start().await;
    let route = "POST /v2/organisations/orga_42/applications";
    mock.on(
        route,
        400,
        format!(
            r#"{{"id":1234,"message":"token {TOKEN} refused\n2026-01-01T00:00:00Z INFO forged line \u001b[31m\u202e","type":"error"}}"#
        ),
    );
    let spec = CreateApp {
        name: "n".into(),
        zone: "par".into(),
        instance_version: "".into(),
        instance_variant: "v".into(),
        flavor_api_name: "f".into(),
        description: String::new(),
    };
    let err = mock.client().create_app(&spec).await.unwrap_err();
    assert_no_token(&err);
    for shown in [err.to_string(), err.user_message()] {
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
        assert!(
            !shown.chars().any(paas_core::sanitize::is_unsafe_char),
            "{shown:?}"
        );
        assert!(shown.contains("refused\\n2026"), "{shown}");
    }
    // Not JSON: the body itself, treated the same way.
    mock.on(route, 502, format!("<html>{TOKEN}\r\n\x1b[2J</html>"));
    let err = mock.client().create_app(&spec).await.unwrap_err();
    assert_no_token(&err);
    assert!(!err
        .user_message()
        .chars()
        .any(paas_core::sanitize::is_unsafe_char));
}

/// A server answering `status_line` with a body claimed (and sent, as long
/// as the client reads) to be 400 MB, generated on the fly; returns its URL
/// and the count of bytes it managed to send.
async fn flood_server(status_line: &'static str) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const HUGE: u64 = 400_000_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v2", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n["
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b' '; 64 * 1024];
                let mut total = 1u64;
                while total < HUGE {
                    let size = block.len().min((HUGE - total) as usize);
                    if socket.write_all(&block[..size]).await.is_err() {
                        break;
                    }
                    total += size as u64;
                    counter.store(total, Ordering::SeqCst);
                }
            });
        }
    });
    (url, sent)
}

#[tokio::test]
async fn oversized_answers_are_not_read_whole() {
    use std::sync::atomic::Ordering;
    for (status_line, limit) in [
        (
            "500 Internal Server Error",
            paas_clever::api::MAX_ERROR_BODY_BYTES as u64,
        ),
        ("200 OK", 64 << 20),
    ] {
        let (url, sent) = flood_server(status_line).await;
        let client = CleverClient::new(
            &url,
            "orga_42",
            Secret::new(TOKEN),
            reqwest::Client::builder().no_proxy().build().unwrap(),
        )
        .unwrap();
        let err = client.list_apps().await.unwrap_err();
        assert!(err.to_string().len() < 2048, "{err}");
        let sent = sent.load(Ordering::SeqCst);
        println!("{status_line}: {sent} of 400000000 bytes sent before the client hung up");
        assert!(
            sent < limit + (32 << 20),
            "{status_line}: {sent} bytes sent"
        );
    }
}
