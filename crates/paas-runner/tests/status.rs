//! The status server (`listen_address`) in the test's process, fed with
//! hand-made snapshots through a watch channel, over loopback HTTP.
//!
//! The real `status` and `metrics` modules of the binary's library, with
//! the driver's real snapshot types.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use paas_core::Stats;
use paas_runner::driver::{JobView, RunnerView, Snapshot};
use paas_runner::metrics;
use paas_runner::snapshot::{ReplicaStatus, ROLE_ACTIVE, ROLE_SINGLE, ROLE_STANDBY};
use paas_runner::status::{self, History, Sample, ServerLimits, StatusConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(20);

fn snapshot() -> Snapshot {
    Snapshot {
        stats: Stats {
            queued: 1,
            provisioning: 2,
            launching: 0,
            running: 3,
            failing: 1,
            decommissioning: 0,
            jobs: 7,
            weight: 12.5,
            reserved_weight: 4.75,
            quota: 45.25,
            polls_in_flight: 2,
            foreign_apps: 1,
            foreign_weight: 2.0,
            acquired_total: 40,
            launched_total: 30,
            failed_total: 5,
            done_total: 27,
            held: vec![
                None,
                Some(paas_core::PollHold::RunnerLimit { jobs: 2, limit: 2 }),
            ],
        },
        runners: vec![
            RunnerView {
                name: "shared".into(),
                key: "glrt-abc".into(),
                jobs: 5,
                weight: 10.0,
                max_job_weight: 9.5,
                quota_max_fraction: 1.0,
                limit: None,
            },
            RunnerView {
                name: "we\"ird\\<name>".into(),
                key: "12345678".into(),
                jobs: 2,
                weight: 2.5,
                max_job_weight: 4.0,
                quota_max_fraction: 0.5,
                limit: Some(2),
            },
        ],
        jobs: vec![
            JobView {
                runner: "shared".into(),
                job_id: 4242,
                stage: "running",
                flavor: "M".into(),
                weight: 5.66,
                app_id: Some("app_0123-abcd".into()),
            },
            JobView {
                runner: "shared".into(),
                job_id: 4243,
                stage: "failing",
                flavor: "XXL".into(),
                weight: 0.0,
                app_id: None,
            },
        ],
        shutting_down: false,
        concurrent: 7,
        max_provisioning: 4,
    }
}

fn config() -> StatusConfig {
    StatusConfig {
        system_id: "r_testsystem1".into(),
        ..StatusConfig::new("ignored", UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }
}

struct Server {
    address: SocketAddr,
    snapshots: watch::Sender<Snapshot>,
    http: reqwest::Client,
}

impl Server {
    async fn start(snapshot: Snapshot) -> Server {
        Server::start_with(snapshot, ServerLimits::default()).await
    }

    async fn start_with(snapshot: Snapshot, limits: ServerLimits) -> Server {
        Server::start_configured(snapshot, StatusConfig { limits, ..config() }).await
    }

    async fn start_configured(snapshot: Snapshot, config: StatusConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (snapshots, receiver) = watch::channel(snapshot);
        tokio::spawn(status::serve(listener, receiver, config));
        Server {
            address,
            snapshots,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.address))
            .timeout(DEADLINE)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, content_type, response.text().await.expect("body"))
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

/// The sample lines (not comments) of an exposition, for exact comparison.
fn sample_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|line| !line.starts_with('#')).collect()
}

#[test]
fn metrics_follow_the_text_format() {
    let text = status::render_metrics(&snapshot(), &config());
    let version = env!("CARGO_PKG_VERSION");
    let expected = [
        format!("paas_runner_version_info{{version=\"{version}\"}} 1.0"),
        format!("gitlab_runner_version_info{{name=\"paas-runner\",version=\"{version}\"}} 1.0"),
        "paas_runner_start_time_seconds 1700000000.0".into(),
        "paas_runner_shutting_down 0.0".into(),
        "paas_runner_quota 45.25".into(),
        "paas_runner_weight_used 12.5".into(),
        "paas_runner_weight_reserved 4.75".into(),
        "paas_runner_jobs{stage=\"queued\"} 1.0".into(),
        "paas_runner_jobs{stage=\"provisioning\"} 2.0".into(),
        "paas_runner_jobs{stage=\"launching\"} 0.0".into(),
        "paas_runner_jobs{stage=\"running\"} 3.0".into(),
        "paas_runner_jobs{stage=\"failing\"} 1.0".into(),
        "paas_runner_jobs{stage=\"decommissioning\"} 0.0".into(),
        "paas_runner_polls_in_flight 2.0".into(),
        "paas_runner_foreign_apps 1.0".into(),
        "paas_runner_jobs_acquired_total 40".into(),
        "paas_runner_jobs_launched_total 30".into(),
        "paas_runner_jobs_failed_total 5".into(),
        "paas_runner_jobs_done_total 27".into(),
        "paas_runner_runner_jobs{runner=\"shared\",runner_key=\"glrt-abc\"} 5.0".into(),
        "paas_runner_runner_jobs{runner=\"we\\\"ird\\\\<name>\",runner_key=\"12345678\"} 2.0".into(),
        "paas_runner_runner_weight{runner=\"shared\",runner_key=\"glrt-abc\"} 10.0".into(),
        "paas_runner_runner_max_job_weight{runner=\"shared\",runner_key=\"glrt-abc\"} 9.5".into(),
        "paas_runner_runner_held{runner=\"we\\\"ird\\\\<name>\",runner_key=\"12345678\",limit=\"runner_limit\"} 1.0".into(),
        "gitlab_runner_concurrent 7.0".into(),
        "gitlab_runner_limit{runner=\"12345678\",name=\"we\\\"ird\\\\<name>\",system_id=\"r_testsystem1\"} 2.0".into(),
        "gitlab_runner_jobs{runner=\"glrt-abc\",name=\"shared\",system_id=\"r_testsystem1\",state=\"running\",stage=\"running\"} 1.0".into(),
        "gitlab_runner_jobs{runner=\"glrt-abc\",name=\"shared\",system_id=\"r_testsystem1\",state=\"finish\",stage=\"failing\"} 1.0".into(),
    ];
    let samples = sample_lines(&text);
    for line in &expected {
        assert!(samples.contains(&line.as_str()), "missing {line}\n{text}");
    }

    // Every family has one HELP and one TYPE line, before its samples, and
    // counters are named `_total`.
    let mut families = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty() && !help.ends_with(".."), "{line}");
            assert!(!families.contains(&name.to_owned()), "family {name} twice");
            families.push(name.to_owned());
            current = Some((name.to_owned(), String::new()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            let (current_name, current_kind) = current.as_mut().expect("TYPE after HELP");
            assert_eq!(name, current_name, "{line}");
            assert!(matches!(kind, "gauge" | "counter" | "histogram"), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            *current_kind = kind.to_owned();
        } else {
            assert!(!line.starts_with('#'), "{line}");
            let (name, current_kind) = current.as_ref().expect("sample after HELP");
            assert!(!current_kind.is_empty(), "sample before TYPE: {line}");
            let metric = line.split(['{', ' ']).next().expect("name");
            if current_kind == "histogram" {
                assert!(metric.starts_with(name.as_str()), "{line}");
            } else {
                assert_eq!(metric, name, "{line}");
            }
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    assert!(text.ends_with('\n'));
    for family in [
        "gitlab_runner_version_info",
        "gitlab_runner_jobs",
        "gitlab_runner_concurrent",
        "gitlab_runner_limit",
        "gitlab_runner_api_request_statuses_total",
        "gitlab_runner_errors_total",
        "gitlab_runner_job_duration_seconds",
        "paas_runner_quota",
        "paas_runner_weight_used",
        "paas_runner_provisioning_duration_seconds",
        "paas_runner_pickup_latency_seconds",
        "paas_runner_finish_to_delete_seconds",
        "paas_runner_job_failures_total",
        "paas_runner_cloud_api_requests_total",
        "paas_runner_orphans_found_total",
    ] {
        assert!(
            families.iter().any(|name| name == family),
            "no {family}: {families:?}"
        );
    }
}

/// Events recorded (API calls, steps of a job) show in histograms and
/// labelled counters, and the whole exposition passes `promtool check
/// metrics` (Debian package `prometheus`; CI installs it).
#[test]
fn recorded_events_pass_promtool() {
    let recorder = metrics::recorder();
    let start = Instant::now();
    recorder.api_request("shared", "request_job", Some(201));
    recorder.api_request("shared", "request_job", None);
    recorder.cloud_request("create application", Some(500));
    recorder.failure("shared", "runner_system_failure");
    recorder.orphan_found();
    let job = (0, 99);
    recorder.job_acquired(job, "shared", "M", start);
    recorder.step_started(job, metrics::Step::Create, start);
    recorder.step_done(
        job,
        metrics::Step::Create,
        start + Duration::from_millis(300),
    );
    recorder.step_started(job, metrics::Step::Launch, start + Duration::from_secs(1));
    recorder.step_done(job, metrics::Step::Launch, start + Duration::from_secs(4));
    recorder.job_finished(job, start + Duration::from_secs(100));
    recorder.job_forgotten(job, start + Duration::from_secs(102));
    let text = status::render_metrics(&snapshot(), &config());
    let samples = sample_lines(&text);
    for line in [
        "gitlab_runner_api_request_statuses_total{runner=\"shared\",endpoint=\"request_job\",status=\"201\"} 1",
        "gitlab_runner_api_request_statuses_total{runner=\"shared\",endpoint=\"request_job\",status=\"0\"} 1",
        "paas_runner_cloud_api_requests_total{endpoint=\"create_application\",status=\"500\"} 1",
        "paas_runner_job_failures_total{runner=\"shared\",failure_reason=\"runner_system_failure\"} 1",
        "paas_runner_orphans_found_total 1",
        "paas_runner_provisioning_duration_seconds_count{runner=\"shared\",flavor=\"M\",step=\"create\"} 1",
        "paas_runner_provisioning_duration_seconds_bucket{le=\"0.5\",runner=\"shared\",flavor=\"M\",step=\"create\"} 1",
        "paas_runner_pickup_latency_seconds_sum{runner=\"shared\",flavor=\"M\"} 4.0",
        "gitlab_runner_job_duration_seconds_sum{runner=\"shared\"} 100.0",
        "paas_runner_finish_to_delete_seconds_sum{runner=\"shared\"} 2.0",
    ] {
        assert!(samples.contains(&line), "missing {line}\n{text}");
    }
    let openmetrics = status::render_openmetrics(&snapshot(), &config());
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE gitlab_runner_api_request_statuses counter"));

    let Ok(promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("PAAS_RUNNER_REQUIRE_TOOLS").is_none(),
            "promtool is required (PAAS_RUNNER_REQUIRE_TOOLS is set) but not installed"
        );
        println!("NOTE: promtool is not installed here: `promtool check metrics` skipped");
        return;
    };
    let mut promtool = promtool;
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = promtool.wait_with_output().expect("promtool ran");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn shutting_down_and_special_values_are_exposed() {
    let mut snapshot = snapshot();
    snapshot.shutting_down = true;
    snapshot.stats.quota = f64::INFINITY;
    snapshot.stats.weight = f64::NAN;
    let text = status::render_metrics(&snapshot, &config());
    let lines = sample_lines(&text);
    assert!(lines.contains(&"paas_runner_shutting_down 1.0"), "{text}");
    assert!(lines.contains(&"paas_runner_quota +Inf"), "{text}");
    assert!(lines.contains(&"paas_runner_weight_used NaN"), "{text}");
}

#[test]
fn listen_addresses_default_to_port_9252() {
    for (configured, expected) in [
        ("127.0.0.1:9252", "127.0.0.1:9252"),
        ("127.0.0.1", "127.0.0.1:9252"),
        ("localhost:8080", "localhost:8080"),
        ("localhost", "localhost:9252"),
        (":9000", "0.0.0.0:9000"),
        ("[::]:8093", "[::]:8093"),
        ("[::1]", "[::1]:9252"),
        ("::1", "[::1]:9252"),
        ("0.0.0.0:", "0.0.0.0:9252"),
    ] {
        assert_eq!(status::bind_address(configured), expected, "{configured}");
    }
}

#[test]
fn history_is_bounded_and_oldest_first() {
    let mut history = History::new(3);
    for second in 0..5 {
        let mut sample = Sample::of(&snapshot(), f64::from(second));
        sample.jobs = second as usize;
        history.push(sample);
    }
    let times: Vec<f64> = history.samples().map(|sample| sample.time_secs).collect();
    assert_eq!(times, [2.0, 3.0, 4.0]);
    let sample = history.samples().last().copied().expect("sample");
    assert_eq!(sample.starting, 3, "queued + provisioning + launching");
    assert_eq!(sample.running, 3);
    assert_eq!(sample.weight_reserved, 4.75);
}

#[test]
fn page_shows_the_key_figures_and_escapes_names() {
    let mut history = History::new(900);
    let mut earlier = snapshot();
    earlier.stats.failed_total = 2;
    earlier.stats.weight = 3.0;
    history.push(Sample::of(&earlier, 1_700_000_100.0));
    history.push(Sample::of(&snapshot(), 1_700_000_101.0));
    let page = status::render_page(&snapshot(), &history, &config());
    for expected in [
        "<!DOCTYPE html>",
        "used 12.5",
        "reserved 4.8",
        "free 28.0",
        "quota 45.2",
        "r_testsystem1",
        "2023-11-14 22:13:20 UTC",
        "<b>3</b>running",
        "<b>1</b>failing",
        "40 acquired, 30 launched, 27 done",
        "5 failed</span> (3 in the last 1 min)",
        "we&quot;ird\\&lt;name&gt;",
        "<td>4242</td><td>running</td><td>M</td><td>5.7</td><td><code>app_0123-abcd</code>",
        "<td>4243</td><td>failing</td><td>XXL</td><td>0.0</td><td><code>-</code>",
        "Tracked jobs (2)",
        "<polygon class=\"area used\"",
        "<polyline class=\"line total\"",
        "<line class=\"limit\"",
        "setInterval(",
        "1 application(s) of another installation (or unmarked) under this runner's key: weight 2.0",
    ] {
        assert!(page.contains(expected), "missing {expected:?} in\n{page}");
    }
    assert!(!page.contains("we\"ird"), "unescaped name");
    assert!(!page.contains("src=\"http"), "external asset");
    assert!(!page.contains("href=\"http"), "external asset");
    assert!(!page.contains("Shutting down"));

    let empty = status::render_page(&Snapshot::default(), &History::new(10), &config());
    assert!(empty.contains("no samples yet"), "{empty}");
    assert!(!empty.contains("another installation"), "{empty}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answers_every_endpoint() {
    let server = Server::start(snapshot()).await;

    let (status, content_type, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        body.lines()
            .any(|line| line == "paas_runner_weight_used 12.5"),
        "{body}"
    );

    assert_eq!(server.get("/health/live").await.0, 200);
    let (status, _, body) = server.get("/health/ready").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    let json = server.json("/status.json").await;
    assert_eq!(json["system_id"], "r_testsystem1");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["shutting_down"], false);
    assert_eq!(json["stats"]["quota"], 45.25);
    assert_eq!(json["stats"]["weight_used"], 12.5);
    assert_eq!(json["stats"]["weight_reserved"], 4.75);
    assert_eq!(json["stats"]["jobs"], 7);
    assert_eq!(json["stats"]["stages"]["running"], 3);
    assert_eq!(json["stats"]["stages"]["provisioning"], 2);
    assert_eq!(json["stats"]["jobs_failed_total"], 5);
    assert_eq!(json["runners"][0]["name"], "shared");
    assert_eq!(json["runners"][0]["key"], "glrt-abc");
    assert_eq!(json["runners"][1]["max_job_weight"], 4.0);
    assert_eq!(json["jobs"][0]["job_id"], 4242);
    assert_eq!(json["jobs"][0]["app_id"], "app_0123-abcd");
    assert_eq!(json["jobs"][1]["app_id"], serde_json::Value::Null);
    // The handler serialises the same document as the state dump's.
    assert_eq!(json, status::status_value(&snapshot(), &config()));
    let runner_keys: Vec<&String> = json["runners"][1]
        .as_object()
        .expect("runner object")
        .keys()
        .collect();
    assert_eq!(
        runner_keys,
        [
            "held_by",
            "jobs",
            "key",
            "limit",
            "max_job_weight",
            "name",
            "quota_max_fraction",
            "weight"
        ]
    );
    assert_eq!(json["runners"][0]["limit"], serde_json::Value::Null);
    assert_eq!(json["runners"][1]["limit"], 2);
    let job_keys: Vec<&String> = json["jobs"][0]
        .as_object()
        .expect("job object")
        .keys()
        .collect();
    assert_eq!(
        job_keys,
        ["app_id", "flavor", "job_id", "runner", "stage", "weight"],
        "no token nor payload"
    );

    let (status, content_type, page) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains("used 12.5"), "{page}");
    assert!(page.contains("<td>4242</td>"), "{page}");

    assert_eq!(server.get("/nowhere").await.0, 404);

    // The sampler takes its first sample at start.
    let deadline = Instant::now() + DEADLINE;
    let history = loop {
        let history = server.json("/history.json").await;
        if !history["samples"].as_array().expect("samples").is_empty() {
            break history;
        }
        assert!(Instant::now() < deadline, "no sample: {history}");
        tokio::task::yield_now().await;
    };
    assert_eq!(history["period_secs"], 1.0);
    assert_eq!(history["capacity"], 900);
    let sample = &history["samples"][0];
    assert_eq!(sample["weight_used"], 12.5);
    assert_eq!(sample["quota"], 45.25);
    assert_eq!(sample["jobs"], 7);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let time = sample["time"].as_f64().expect("time");
    assert!((now - time).abs() < 60.0, "sample time {time}, now {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_once_shutting_down() {
    let server = Server::start(snapshot()).await;
    assert_eq!(server.get("/health/ready").await.0, 200);

    server
        .snapshots
        .send_modify(|snapshot| snapshot.shutting_down = true);
    let (status, _, body) = server.get("/health/ready").await;
    assert_eq!((status, body.as_str()), (503, "shutting down"));
    assert_eq!(server.get("/health/live").await.0, 200, "still alive");

    let (_, _, metrics) = server.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "paas_runner_shutting_down 1.0"),
        "{metrics}"
    );
    let (_, _, page) = server.get("/").await;
    assert!(page.contains("Shutting down"), "{page}");
    assert_eq!(server.json("/status.json").await["shutting_down"], true);
}

// ----- limits: the server cannot hurt the service -----

/// Limits with short timeouts, so that no test waits long.
fn short_limits(max_connections: usize) -> ServerLimits {
    ServerLimits {
        max_connections,
        header_read_timeout: Duration::from_millis(300),
        connection_lifetime: Duration::from_secs(30),
    }
}

/// Reads until the server closes the connection (or resets it); returns
/// what was read. Fails if the connection is still open after `DEADLINE`.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => panic!(
                "connection still open after {DEADLINE:?}; read {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// Sends one keep-alive request and reads its whole (small) answer.
async fn keep_alive_request(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|length| length.trim().parse::<usize>().ok());
            if length.is_some_and(|length| body.len() >= length) {
                return text;
            }
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(read > 0, "closed early: {text:?}");
        received.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let server = Server::start_with(snapshot(), short_limits(8)).await;
    // Timed from before the connection: the server's timer starts at its
    // accept, which a loaded machine may run before `connect` returns here.
    let started = Instant::now();
    let mut half_sent = TcpStream::connect(server.address).await.expect("connect");
    half_sent
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: te")
        .await
        .expect("write");
    read_until_closed(&mut half_sent).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );

    // A connection that sends nothing is closed the same way.
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.address).await.expect("connect");
    read_until_closed(&mut idle).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    // So is a kept-alive connection once its request is answered.
    let mut kept = TcpStream::connect(server.address).await.expect("connect");
    let answer = keep_alive_request(&mut kept, "/health/live").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    read_until_closed(&mut kept).await;

    // The server still answers.
    assert_eq!(server.get("/health/live").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_at_once() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(30),
        ..short_limits(2)
    };
    let server = Server::start_with(snapshot(), limits).await;
    // Two connections hold the two places (each answered once, so each is
    // known to be accepted), idle.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        let answer = keep_alive_request(&mut stream, "/health/live").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        holders.push(stream);
    }
    // The third is closed at once, with a 503 line, not queued.
    for _ in 0..3 {
        let mut refused = TcpStream::connect(server.address).await.expect("connect");
        let started = Instant::now();
        let _ = refused
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: test\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut refused).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A place freed is taken again.
    holders.pop();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = read_until_closed(&mut stream).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {answer}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_small_get_or_head_without_body() {
    let server = Server::start_with(snapshot(), short_limits(8)).await;
    let exchange = |request: Vec<u8>| async move {
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        let _ = stream.write_all(&request).await;
        read_until_closed(&mut stream).await
    };
    let answer = exchange(
        b"POST /metrics HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let answer =
        exchange(b"GET /metrics HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello".to_vec())
            .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = exchange(
        b"GET /metrics HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nhost: t\r\n".to_vec();
    for index in 0..400 {
        huge.extend_from_slice(format!("x-filler-{index}: {}\r\n", "a".repeat(40)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let answer = exchange(huge).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let answer =
        exchange(b"HEAD /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_vec()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn the_connection_cap_leaves_most_files_to_the_service() {
    assert_eq!(
        status::connection_cap(None),
        status::DEFAULT_MAX_CONNECTIONS
    );
    assert_eq!(status::connection_cap(Some(1_048_576)), 64);
    assert_eq!(status::connection_cap(Some(256)), 64);
    assert_eq!(status::connection_cap(Some(128)), 32);
    assert_eq!(status::connection_cap(Some(2)), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_does_not_extend_the_header_timeout() {
    let server = Server::start_with(snapshot(), short_limits(8)).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    let started = Instant::now();
    // One byte every 50 ms: the head would take seconds; the timeout counts
    // from its first byte, not from the last.
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let head = b"GET /metrics HTTP/1.1\r\nhost: status\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for byte in head {
        pace.tick().await;
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
    }
    let answer = read_until_closed(&mut stream).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(50) * 40,
        "closed after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_closed_at_its_time_limit() {
    let limits = ServerLimits {
        max_connections: 8,
        header_read_timeout: Duration::from_secs(30),
        connection_lifetime: Duration::from_millis(500),
    };
    let server = Server::start_with(snapshot(), limits).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    let started = Instant::now();
    let answer = keep_alive_request(&mut stream, "/health/live").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    read_until_closed(&mut stream).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
}

/// Every metric the sample Grafana dashboard queries is exported.
#[test]
fn the_sample_dashboard_queries_exported_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let text = status::render_metrics(&snapshot(), &config());
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("paas_runner_") || word.starts_with("gitlab_runner_")) {
                    continue;
                }
                let family = word.strip_suffix("_bucket").unwrap_or(word);
                queried += 1;
                assert!(
                    text.contains(&format!("# TYPE {family} ")),
                    "{word} of panel {} is not exported",
                    panel["title"]
                );
            }
        }
    }
    assert!(queried >= 10, "{queried}");
}

/// The limit holding back a runner's job requests is on the page and in
/// `/status.json`, with the same words; stages say what they mean.
#[test]
fn held_back_requests_are_shown_with_their_limit() {
    let snapshot = snapshot();
    let page = status::render_page(&snapshot, &History::new(10), &config());
    assert!(
        page.contains(
            "Job requests held back: <b>we&quot;ird\\&lt;name&gt;</b> by runner limit: 2 of 2 jobs"
        ),
        "{page}"
    );
    assert!(
        page.contains("title=\"taken from the coordinator, waiting for its machine to be created\"><b>1</b>queued"),
        "{page}"
    );
    let json = status::status_value(&snapshot, &config());
    assert_eq!(json["runners"][0]["held_by"], serde_json::Value::Null);
    assert_eq!(json["runners"][1]["held_by"]["limit"], "runner_limit");
    assert_eq!(
        json["runners"][1]["held_by"]["detail"],
        "runner limit: 2 of 2 jobs"
    );
}

#[test]
fn plots_fit_their_window_to_the_data() {
    for (span, window) in [
        (0.0, 10.0),
        (4.0, 10.0),
        (25.0, 30.0),
        (59.0, 60.0),
        (61.0, 120.0),
        (250.0, 300.0),
        (899.0, 900.0),
        (5000.0, 900.0),
    ] {
        assert_eq!(status::plot_window_secs(span, 900.0), window, "{span}");
    }
}

// ----- the replica's role -----

/// A configuration showing the role published on the returned sender.
fn config_with_role(
    status: Option<ReplicaStatus>,
) -> (StatusConfig, watch::Sender<Option<ReplicaStatus>>) {
    let (published, replica) = watch::channel(status);
    (
        StatusConfig {
            replica,
            ..config()
        },
        published,
    )
}

fn role(role: &'static str, epoch: Option<i64>, active: Option<&str>, ago: u64) -> ReplicaStatus {
    ReplicaStatus {
        role,
        replica: "host<1>:42:abcd".into(),
        epoch,
        active: active.map(str::to_owned),
        active_since: SystemTime::now().checked_sub(Duration::from_secs(ago)),
        lease_expires_at: None,
    }
}

fn page_with(config: &StatusConfig) -> String {
    status::render_page(&Snapshot::default(), &History::new(10), config)
}

#[test]
fn the_single_sqlite_process_says_it_has_no_lease() {
    let (unknown, _published) = config_with_role(None);
    assert!(!page_with(&unknown).contains("id=\"replica\""));
    assert_eq!(
        status::status_value(&Snapshot::default(), &unknown)["replica"],
        serde_json::Value::Null
    );

    let (single, published) =
        config_with_role(Some(role(ROLE_SINGLE, None, Some("host<1>:42:abcd"), 90)));
    let page = page_with(&single);
    for expected in [
        "Role: <b>single</b> (SQLite store: this process owns the state database through its lock; no lease, no standby)",
        "<code>host&lt;1&gt;:42:abcd</code>",
        "UTC (1 min ago)",
    ] {
        assert!(page.contains(expected), "missing {expected:?} in\n{page}");
    }
    assert!(!page.contains("host<1>"), "unescaped name");
    assert!(!page.contains("Standby"), "{page}");
    let json = status::status_value(&Snapshot::default(), &single);
    let replica = &json["replica"];
    assert_eq!(replica["role"], "single");
    assert_eq!(replica["replica"], "host<1>:42:abcd");
    assert_eq!(
        replica["epoch"],
        serde_json::Value::Null,
        "no lease, no epoch"
    );
    assert_eq!(replica["active"], "host<1>:42:abcd");
    let ago = replica["active_for_secs"].as_f64().expect("seconds");
    assert!((90.0..150.0).contains(&ago), "{replica}");

    // A fixed time, in RFC 3339.
    published.send_modify(|status| {
        if let Some(status) = status {
            status.active_since = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        }
    });
    let json = status::status_value(&Snapshot::default(), &single);
    assert_eq!(json["replica"]["active_since"], "2023-11-14T22:13:20Z");
    assert!(page_with(&single).contains("since 2023-11-14 22:13:20 UTC"));
    let keys: Vec<&String> = json["replica"]
        .as_object()
        .expect("object")
        .keys()
        .collect();
    assert_eq!(
        keys,
        [
            "active",
            "active_for_secs",
            "active_since",
            "epoch",
            "lease_expires_in_secs",
            "replica",
            "role"
        ]
    );
}

#[test]
fn a_standby_page_says_it_waits_and_names_the_active_replica() {
    let (standby, published) = config_with_role(Some(role(
        ROLE_STANDBY,
        Some(7),
        Some("other\"<b>:9:wxyz"),
        5,
    )));
    let page = page_with(&standby);
    for expected in [
        "<p class=\"banner\" id=\"replica\">Standby: this replica (<code>host&lt;1&gt;:42:abcd</code>) waits for the lease",
        "the active replica is <code>other&quot;&lt;b&gt;:9:wxyz</code> (lease epoch 7, active since",
        "(5 s ago)",
    ] {
        assert!(page.contains(expected), "missing {expected:?} in\n{page}");
    }
    assert!(!page.contains("other\"<b>"), "unescaped name");
    let json = status::status_value(&Snapshot::default(), &standby);
    assert_eq!(json["replica"]["role"], "standby");
    assert_eq!(json["replica"]["epoch"], 7);
    assert_eq!(json["replica"]["active"], "other\"<b>:9:wxyz");
    assert_eq!(
        json["replica"]["lease_expires_in_secs"],
        serde_json::Value::Null
    );

    // The active replica's lease as last read: renewed, then expired.
    published.send_modify(|status| {
        if let Some(status) = status {
            status.lease_expires_at = SystemTime::now().checked_add(Duration::from_secs(12));
        }
    });
    let page = page_with(&standby);
    assert!(page.contains("its lease expires in 1"), "{page}");
    let left = status::status_value(&Snapshot::default(), &standby)["replica"]
        ["lease_expires_in_secs"]
        .as_f64()
        .expect("seconds");
    assert!((5.0..=12.0).contains(&left), "{left}");
    published.send_modify(|status| {
        if let Some(status) = status {
            status.lease_expires_at = SystemTime::now().checked_sub(Duration::from_secs(4));
        }
    });
    let page = page_with(&standby);
    assert!(
        page.contains("its lease expired 4 s ago: a standby takes over at its next attempt"),
        "{page}"
    );
    let left = status::status_value(&Snapshot::default(), &standby)["replica"]
        ["lease_expires_in_secs"]
        .as_f64()
        .expect("seconds");
    assert!((-60.0..=-4.0).contains(&left), "{left}");

    // Released: nobody holds the lease; the time of the last takeover is
    // not known.
    published.send_replace(Some(ReplicaStatus {
        active: None,
        active_since: None,
        ..role(ROLE_STANDBY, Some(8), None, 0)
    }));
    let page = page_with(&standby);
    assert!(
        page.contains(
            "no replica holds the lease now (epoch 8): a standby takes it at its next attempt"
        ),
        "{page}"
    );
    let json = status::status_value(&Snapshot::default(), &standby);
    assert_eq!(json["replica"]["active"], serde_json::Value::Null);
    assert_eq!(json["replica"]["active_since"], serde_json::Value::Null);
    assert_eq!(json["replica"]["active_for_secs"], serde_json::Value::Null);

    published.send_replace(Some(role(ROLE_ACTIVE, Some(9), Some("host<1>:42:abcd"), 3)));
    let page = page_with(&standby);
    assert!(
        page.contains(
            "Role: <b>active</b> replica <code>host&lt;1&gt;:42:abcd</code> &middot; lease epoch 9 &middot; active since"
        ),
        "{page}"
    );
    assert!(!page.contains("Standby"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_role_follows_what_is_published() {
    let (config, published) = config_with_role(None);
    let server = Server::start_configured(snapshot(), config).await;
    assert_eq!(
        server.json("/status.json").await["replica"],
        serde_json::Value::Null
    );
    published.send_replace(Some(role(ROLE_STANDBY, Some(3), Some("a:1:x"), 2)));
    let json = server.json("/status.json").await;
    assert_eq!(json["replica"]["role"], "standby", "{json}");
    assert_eq!(json["replica"]["active"], "a:1:x");
    let (_, _, page) = server.get("/").await;
    assert!(page.contains("Standby: this replica"), "{page}");

    published.send_replace(Some(role(ROLE_ACTIVE, Some(4), Some("host<1>:42:abcd"), 0)));
    let json = server.json("/status.json").await;
    assert_eq!(json["replica"]["role"], "active", "{json}");
    assert_eq!(json["replica"]["epoch"], 4);
    // Everything else as before.
    assert_eq!(json["stats"]["quota"], 45.25);
}
