//! `listen_address` end to end: the real binary serves its status endpoints
//! while it runs jobs from the simulators, and refuses to start when the
//! address is taken.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, DEADLINE, SIGTERM};
use paas_sim::cluster::ClusterSettings;
use paas_sim::vars;

fn quick() -> ClusterSettings {
    ClusterSettings {
        long_poll: Duration::from_millis(500),
        repo_ready_delay: Duration::from_millis(50),
        boot_delay: Duration::from_millis(100),
        ..ClusterSettings::default()
    }
}

/// Pause between two looks at a condition polled with a deadline.
const POLL_STEP: Duration = Duration::from_millis(50);

/// The address the runner logged (`listen_address` asks for port 0).
async fn logged_status_address(harness: &Harness) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let logs = strip_ansi(&harness.logs());
        let address = logs
            .lines()
            .filter(|line| line.contains("status server listening"))
            .find_map(|line| line.split("address=").nth(1))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(address) = address {
            return address.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no status address logged:\n{logs}"
        );
        tokio::time::sleep(POLL_STEP).await;
    }
}

/// Polls `url` until `accept` holds for its status and body.
async fn get_until(url: &str, accept: impl Fn(u16, &str) -> bool, harness: &Harness) -> String {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = match http.get(url).timeout(DEADLINE).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                Some((status, response.text().await.unwrap_or_default()))
            }
            Err(_) => None,
        };
        if let Some((status, body)) = &answer {
            if accept(*status, body) {
                return body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url}: last answer {answer:?}\n{}",
            harness.logs()
        );
        tokio::time::sleep(POLL_STEP).await;
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_server_follows_the_running_service() {
    let mut harness = Harness::start(quick(), |options| {
        options.extra_global = "listen_address = \"127.0.0.1:0\"\n".into();
    })
    .await;
    harness.spawn_runner();
    let base = format!("http://{}", logged_status_address(&harness).await);

    get_until(
        &format!("{base}/health/ready"),
        |status, body| status == 200 && body == "ok",
        &harness,
    )
    .await;
    let metrics = get_until(
        &format!("{base}/metrics"),
        |status, body| {
            status == 200
                && metric_value(body, "paas_runner_quota").is_some_and(|quota| quota > 0.0)
        },
        &harness,
    )
    .await;
    assert!(
        metrics.contains("paas_runner_runner_max_job_weight{runner=\"sim-runner-0\",runner_key=\""),
        "{metrics}"
    );

    let id = harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "200")]);
    harness.wait_all_done(&[id]).await;
    let metrics = get_until(
        &format!("{base}/metrics"),
        |_, body| metric_value(body, "paas_runner_jobs_done_total") == Some(1.0),
        &harness,
    )
    .await;
    assert_eq!(
        metric_value(&metrics, "paas_runner_jobs_acquired_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "paas_runner_jobs_failed_total"),
        Some(0.0),
        "{metrics}"
    );
    let page = get_until(&format!("{base}/"), |status, _| status == 200, &harness).await;
    assert!(page.contains("sim-runner-0"), "{page}");
    let json = get_until(
        &format!("{base}/status.json"),
        |status, _| status == 200,
        &harness,
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(
        json["system_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("r_")),
        "{json}"
    );
    // SQLite: one process owns the store through its lock, no lease.
    let pid = harness
        .child
        .as_ref()
        .and_then(|child| child.id())
        .expect("running");
    let replica = &json["replica"];
    assert_eq!(replica["role"], "single", "{json}");
    assert_eq!(replica["epoch"], serde_json::Value::Null, "{json}");
    assert!(
        replica["replica"]
            .as_str()
            .is_some_and(|name| name.ends_with(&format!(":{pid}"))),
        "{json}"
    );
    assert_eq!(replica["active"], replica["replica"], "{json}");
    assert!(
        replica["active_for_secs"]
            .as_f64()
            .is_some_and(|secs| (0.0..600.0).contains(&secs)),
        "{json}"
    );
    assert!(page.contains("Role: <b>single</b>"), "{page}");
    assert!(
        metrics
            .lines()
            .any(|line| line == "paas_runner_replica_active 1"),
        "{metrics}"
    );

    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        harness.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_address_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let harness = Harness::start(quick(), |options| {
        options.extra_global = format!("listen_address = \"{address}\"\n");
    })
    .await;
    let output = harness.run_command(&["run"]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let config = std::fs::read_to_string(&harness.config_path).expect("config");
    let line = config
        .lines()
        .position(|line| line.starts_with("listen_address"))
        .expect("listen_address line")
        + 1;
    let location = format!(
        "{}:{line}: key `listen_address`: cannot listen on {address}",
        harness.config_path.display()
    );
    assert!(stderr.contains(&location), "{location}\n{stderr}");
    assert!(stderr.contains("127.0.0.1:9252"), "what to write: {stderr}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_listen_address_is_a_configuration_error() {
    let harness = Harness::start(quick(), |options| {
        options.extra_global = "listen_address = \"http://127.0.0.1:9252\"\n".into();
    })
    .await;
    let output = harness.run_command(&["run"]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("key `listen_address`"), "{stderr}");
    assert!(
        stderr.contains("neither an IP address nor a host name"),
        "{stderr}"
    );
    assert!(stderr.contains("127.0.0.1:9252"), "{stderr}");
}

/// Open files allowed to the runner in the flood test (soft and hard, so
/// that raising the soft limit at start gains nothing).
const FLOOD_OPEN_FILES: u64 = 128;
/// Connections that send half a request and keep the socket open.
const FLOOD_HALF_SENT: usize = 300;
/// Connections that send nothing.
const FLOOD_IDLE: usize = 100;
/// Pace of each flooding connection's reconnections once the server closed
/// it (load generation, not a wait for a condition).
const FLOOD_RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// One flooding client: connects, sends `prefix`, holds the socket until the
/// server closes it, then starts again, until `stop` is set.
async fn flood_client(
    address: String,
    prefix: &'static [u8],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pace = tokio::time::interval(FLOOD_RECONNECT_EVERY);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(&address)).await
        else {
            continue;
        };
        if !prefix.is_empty() && stream.write_all(prefix).await.is_err() {
            continue;
        }
        let mut buffer = [0u8; 256];
        // Held until the server closes it (or the flood stops).
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(read)) => {
                    if buffer[..read].starts_with(b"HTTP/1.1 503") {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_under_a_low_file_limit_loses_no_job() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let mut harness = Harness::start(quick(), |options| {
        options.extra_global = "listen_address = \"127.0.0.1:0\"\n".into();
    })
    .await;
    harness.spawn_runner_with(|command| {
        // SAFETY: setrlimit(2) only, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let limit = rustix::process::Rlimit {
                    current: Some(FLOOD_OPEN_FILES),
                    maximum: Some(FLOOD_OPEN_FILES),
                };
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                    .map_err(std::io::Error::from)
            });
        }
    });
    let address = logged_status_address(&harness).await;
    let base = format!("http://{address}");
    get_until(
        &format!("{base}/health/ready"),
        |status, _| status == 200,
        &harness,
    )
    .await;
    assert!(
        strip_ansi(&harness.logs()).contains("max_connections=32"),
        "the cap follows the file limit:\n{}",
        harness.logs()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for index in 0..FLOOD_HALF_SENT + FLOOD_IDLE {
        let prefix: &'static [u8] = if index < FLOOD_HALF_SENT {
            b"GET /metrics HTTP/1.1\r\nHost: status\r\nX-Slow: "
        } else {
            b""
        };
        flood.push(tokio::spawn(flood_client(
            address.clone(),
            prefix,
            stop.clone(),
            refused.clone(),
        )));
    }
    // The flood is on once the server refuses connections.
    let deadline = Instant::now() + DEADLINE;
    while refused.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no connection refused");
        tokio::time::sleep(POLL_STEP).await;
    }

    let ids: Vec<u64> = (0..12)
        .map(|_| harness.enqueue(&[(vars::FLAVOR, "S"), (vars::JOB_DURATION_MS, "1500")]))
        .collect();
    harness.wait_all_done(&ids).await;
    let refused_during = refused.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for client in flood {
        client.await.expect("flood client");
    }
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(
            job.status,
            paas_sim::coordinator::JobStatus::Success,
            "job {id}: {:?}\n{}",
            job.failure_reason,
            harness.logs()
        );
    }
    assert!(refused_during > 0);

    // Once the flood stops, the status page answers again.
    let metrics = get_until(
        &format!("{base}/metrics"),
        |status, body| {
            status == 200 && metric_value(body, "paas_runner_jobs_done_total") == Some(12.0)
        },
        &harness,
    )
    .await;
    assert_eq!(
        metric_value(&metrics, "paas_runner_jobs_failed_total"),
        Some(0.0),
        "{metrics}"
    );
    let logs = strip_ansi(&harness.logs());
    assert!(!logs.contains("job failed"), "{logs}");
    // The service never ran out of file descriptors (EMFILE).
    assert!(!logs.contains("os error 24"), "{logs}");
    assert!(!logs.contains("Too many open files"), "{logs}");
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{status:?}\n{}", harness.logs());
}
