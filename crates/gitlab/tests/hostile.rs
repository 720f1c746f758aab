//! `CoordinatorClient` against coordinators that answer too much or answer hostile text: bounded reads, sanitised messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use paas_core::Secret;
use paas_gitlab::{
    CoordinatorClient, GitlabError, JobRequest, JobRequestOutcome, MAX_ERROR_BODY_BYTES,
    MAX_JOB_PAYLOAD_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RUNNER_TOKEN: &str = "glrt-runner-SECRET-1a2b3c";
const JOB_TOKEN: &str = "glcbt-64_job-SECRET-4d5e6f";
/// What the hostile servers claim to send: far more than any limit.
const HUGE_BYTES: u64 = 400_000_000;

/// A server that answers every request with `head` (status line and
/// headers), then `start`, then filler bytes up to `HUGE_BYTES`, generated
/// on the fly; it counts what it managed to send before the client hung up.
struct FloodServer {
    url: String,
    sent: Arc<AtomicU64>,
}

impl FloodServer {
    async fn start(status_line: &'static str, start: Vec<u8>, filler: u8) -> FloodServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    // Read the request head (bodies here are small).
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\n\
                         Content-Length: {HUGE_BYTES}\r\n\r\n"
                    );
                    if socket.write_all(head.as_bytes()).await.is_err()
                        || socket.write_all(&start).await.is_err()
                    {
                        return;
                    }
                    let mut total = start.len() as u64;
                    let block = vec![filler; 64 * 1024];
                    while total < HUGE_BYTES {
                        let size = block.len().min((HUGE_BYTES - total) as usize);
                        if socket.write_all(&block[..size]).await.is_err() {
                            break;
                        }
                        total += size as u64;
                        counter.store(total, Ordering::SeqCst);
                    }
                });
            }
        });
        FloodServer { url, sent }
    }

    fn client(&self) -> CoordinatorClient {
        let http = paas_gitlab::http_client_builder()
            .no_proxy()
            .build()
            .expect("reqwest client");
        CoordinatorClient::new(&self.url, http).expect("client")
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Peak resident memory of this process, from /proc (Linux), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

async fn request_job(client: &CoordinatorClient) -> Result<JobRequestOutcome, GitlabError> {
    let token = Secret::new(RUNNER_TOKEN);
    let request = JobRequest {
        token: &token,
        system_id: "s_0123456789ab",
        last_update: None,
    };
    client.request_job(&request, Duration::from_secs(60)).await
}

/// Nothing near the claimed size was sent: the client stopped reading soon
/// after its limit (socket buffers hold a few MiB more at most).
fn assert_stopped_early(server: &FloodServer, limit: usize) {
    let sent = server.sent();
    assert!(
        sent < limit as u64 + (32 << 20),
        "the client read on: {sent} bytes sent for a limit of {limit}"
    );
}

#[tokio::test]
async fn an_oversized_job_payload_is_cut_and_its_id_and_token_kept() {
    let before = peak_rss_mib();
    let start = format!(
        r#"{{"id":4242,"token":"{JOB_TOKEN}","allow_git_fetch":true,"variables":[{{"key":"BIG","value":""#
    );
    let server = FloodServer::start("201 Created", start.into_bytes(), b'x').await;
    let outcome = request_job(&server.client()).await.expect("an answer");
    let JobRequestOutcome::TooLarge {
        id_and_token: Some((id, token)),
        limit_bytes,
    } = outcome
    else {
        panic!("expected TooLarge with id and token, got {outcome:?}");
    };
    assert_eq!(id, 4242);
    assert_eq!(token.expose(), JOB_TOKEN);
    assert_eq!(limit_bytes, MAX_JOB_PAYLOAD_BYTES as u64);
    assert_stopped_early(&server, MAX_JOB_PAYLOAD_BYTES);
    let after = peak_rss_mib();
    println!(
        "400 MB job payload: {} bytes sent before the client hung up; peak RSS {before:?} MiB -> {after:?} MiB",
        server.sent()
    );
    if let (Some(before), Some(after)) = (before, after) {
        // The payload limit plus copies, not the claimed 400 MB.
        assert!(
            after.saturating_sub(before) < 160,
            "{before} -> {after} MiB"
        );
    }
}

#[tokio::test]
async fn an_oversized_job_payload_without_id_first_is_reported_without_them() {
    let server = FloodServer::start(
        "201 Created",
        br#"{"variables":[{"key":"BIG","value":""#.to_vec(),
        b'y',
    )
    .await;
    let outcome = request_job(&server.client()).await.expect("an answer");
    assert!(
        matches!(
            outcome,
            JobRequestOutcome::TooLarge {
                id_and_token: None,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_stopped_early(&server, MAX_JOB_PAYLOAD_BYTES);
}

#[tokio::test]
async fn an_oversized_error_body_is_cut_to_a_few_kib() {
    let server = FloodServer::start("500 Internal Server Error", b"<html>".to_vec(), b'z').await;
    let client = server.client();
    let error = request_job(&client).await.expect_err("500");
    assert!(error.is_transient(), "{error:?}");
    let shown = error.to_string();
    assert!(shown.len() < 2048, "{} bytes: {shown}", shown.len());
    assert!(shown.ends_with("…[cut]"), "{shown}");
    let error = client
        .job_status(&Secret::new(JOB_TOKEN))
        .await
        .expect_err("500");
    assert!(error.to_string().len() < 2048);
    assert_stopped_early(&server, MAX_ERROR_BODY_BYTES);
}

#[tokio::test]
async fn hostile_error_messages_are_sanitised_and_scrubbed() {
    // Raw control characters in the body, and JSON-escaped ones in the
    // message: neither may reach a log line as such.
    let bodies = [
        format!("{{\"message\":\"bad token {RUNNER_TOKEN}\\n2026-01-01T00:00:00Z ERROR forged \\u001b[2J\\u202e\"}}"),
        format!("bad token {RUNNER_TOKEN}\n2026-01-01T00:00:00Z ERROR forged \x1b[2J\u{202e}"),
    ];
    for body in bodies {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let answer = format!(
            "HTTP/1.1 418 I'm a teapot\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        let http = paas_gitlab::http_client_builder()
            .no_proxy()
            .build()
            .expect("client");
        let client = CoordinatorClient::new(&url, http).expect("client");
        let error = request_job(&client).await.expect_err("418");
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains(RUNNER_TOKEN), "{shown}");
            assert!(
                !shown.chars().any(paas_core::sanitize::is_unsafe_char),
                "{shown:?}"
            );
        }
        assert!(error.to_string().contains("[REDACTED]"), "{error}");
        assert!(error.to_string().contains("\\n2026"), "{error}");
    }
}
