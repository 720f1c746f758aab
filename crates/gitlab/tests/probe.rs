//! `CoordinatorClient::probe_trace` and the client-wide rate limit, against
//! scripted fake coordinators on loopback.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use paas_core::Secret;
use paas_gitlab::{CoordinatorClient, GitlabError, TraceProbe};
use tokio::net::TcpListener;

const JOB_TOKEN: &str = "glcbt-64_job-SECRET-4d5e6f";

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

type Script = VecDeque<(u16, Vec<(&'static str, &'static str)>, &'static str)>;

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<Script>,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.seen.lock().expect("lock").push(Seen {
        method,
        uri,
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    let (status, headers, body) =
        shared
            .script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or((599, Vec::new(), "unscripted"));
    let mut response = Response::builder().status(StatusCode::from_u16(status).expect("status"));
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(Body::from(body)).expect("response")
}

async fn fake(script: Script) -> (CoordinatorClient, Arc<Shared>) {
    let shared = Arc::new(Shared {
        seen: Mutex::default(),
        script: Mutex::new(script),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = paas_gitlab::http_client_builder()
        .no_proxy()
        .build()
        .expect("client");
    (CoordinatorClient::new(&url, http).expect("client"), shared)
}

fn token() -> Secret {
    Secret::new(JOB_TOKEN)
}

#[tokio::test]
async fn probes_send_nothing_and_read_what_gitlab_answers() {
    let (client, shared) = fake(VecDeque::from([
        (202, vec![("Range", "0-0"), ("Job-Status", "running")], ""),
        (416, vec![("Range", "0-42")], ""),
        (
            400,
            vec![],
            r#"{"message":"400 Bad request - Missing header Content-Range"}"#,
        ),
        (403, vec![("Job-Status", "success")], ""),
        (403, vec![], r#"{"message":"403 Forbidden"}"#),
        (400, vec![], r#"{"error":"something else"}"#),
    ]))
    .await;
    let job_token = token();
    let probe = |at| client.probe_trace(7, &job_token, at);
    assert_eq!(
        probe(Some(0)).await.expect("202"),
        TraceProbe::Unchanged {
            length: 0,
            job_status: Some("running".into())
        }
    );
    assert_eq!(
        probe(Some(0)).await.expect("416"),
        TraceProbe::Moved { length: 42 }
    );
    assert_eq!(probe(None).await.expect("400"), TraceProbe::Executing);
    assert_eq!(
        probe(None).await.expect("403"),
        TraceProbe::Ended {
            job_status: Some("success".into())
        }
    );
    assert_eq!(
        probe(Some(3)).await.expect("403"),
        TraceProbe::Ended { job_status: None }
    );
    // A 400 that is not about the missing range is not taken for "running".
    let error = probe(None).await.expect_err("unexpected 400");
    assert!(
        matches!(error, GitlabError::Unexpected { status: 400, .. }),
        "{error:?}"
    );

    let seen = shared.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 6);
    for (index, request) in seen.iter().enumerate() {
        assert_eq!(request.method, Method::PATCH);
        assert_eq!(request.uri.path(), "/api/v4/jobs/7/trace");
        assert_eq!(request.uri.query(), None, "no token in the url");
        assert!(request.body.is_empty(), "a probe writes nothing");
        assert_eq!(
            request
                .headers
                .get("job-token")
                .and_then(|v| v.to_str().ok()),
            Some(JOB_TOKEN)
        );
        let range = request
            .headers
            .get("content-range")
            .and_then(|v| v.to_str().ok());
        let expected = match index {
            0 | 1 => Some("0-0"),
            4 => Some("3-3"),
            _ => None,
        };
        assert_eq!(range, expected, "request {index}");
    }
}

#[tokio::test]
async fn a_429_slows_every_later_call_of_the_client() {
    let (client, shared) = fake(VecDeque::from([
        (429, vec![("Retry-After", "1")], ""),
        (
            400,
            vec![],
            r#"{"message":"400 Bad request - Missing header Content-Range"}"#,
        ),
    ]))
    .await;
    let error = client.job_status(&token()).await.expect_err("rate limited");
    assert!(error.is_transient(), "{error:?}");
    // Another call, of another kind, waits out the pause.
    let clone = client.clone();
    assert_eq!(
        clone.probe_trace(7, &token(), None).await.expect("probe"),
        TraceProbe::Executing
    );
    let seen = shared.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(
        gap >= Duration::from_millis(900),
        "sent {gap:?} after the 429"
    );
}
