//! A 429 slows down every later call of the client, not just the refused one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paas_clever::api::CleverClient;
use paas_core::Secret;

#[derive(Default)]
struct Calls {
    at: Mutex<Vec<Instant>>,
}

async fn answer(State(calls): State<Arc<Calls>>) -> Response {
    let mut at = calls.at.lock().unwrap();
    at.push(Instant::now());
    if at.len() == 1 {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response()
    } else {
        (StatusCode::OK, [("content-type", "application/json")], "[]").into_response()
    }
}

#[tokio::test]
async fn rate_limit_pauses_all_calls_of_the_client() {
    let calls = Arc::new(Calls::default());
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = CleverClient::new(
        &format!("http://{address}/v2"),
        "orga_1",
        Secret::new("tok"),
        reqwest::Client::new(),
    )
    .unwrap();

    let first = client.list_apps().await.unwrap_err();
    assert!(first.is_transient(), "{first}");
    assert_eq!(first.status(), Some(429));
    // A clone shares the pause; the next call waits for Retry-After.
    client.clone().list_apps().await.unwrap();
    let at = calls.at.lock().unwrap().clone();
    assert_eq!(at.len(), 2);
    assert!(
        at[1].duration_since(at[0]) >= Duration::from_millis(950),
        "second call came after {:?}",
        at[1].duration_since(at[0])
    );
}
