//! The status page in a real browser: headless Chromium loads the page of
//! the real binary running jobs from the simulators, runs its script, and
//! what a person sees is asserted on the resulting DOM: the quota bar, the
//! jobs by stage, the plots drawn. A screenshot is kept under the target
//! directory (`target/tmp/status-page.png`).
//!
//! On the way, `/metrics` of the same service is checked while its jobs run
//! (families present with what happened, `promtool check metrics`).
//!
//! Chromium comes from the distribution (`.ci/run` installs the Debian
//! package `chromium`); without it the test prints a note and passes,
//! unless `PAAS_RUNNER_REQUIRE_TOOLS` is set (CI).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Harness, DEADLINE, SIGTERM};
use paas_sim::cluster::ClusterSettings;
use paas_sim::vars;

/// Pause between two looks at a condition polled with a deadline.
const POLL_STEP: Duration = Duration::from_millis(50);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|path| path.is_file())
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or
/// `--screenshot=…`), after the page's scripts ran for a virtual 5 s.
fn run_chromium(browser: &Path, profile: &Path, mode: &str, url: &str) -> String {
    let output = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1600",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium {mode}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The address the runner logged (`listen_address` asks for port 0).
async fn logged_status_address(harness: &Harness) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let logs = harness.logs();
        let address = logs
            .lines()
            .filter(|line| line.contains("status server listening"))
            .find_map(|line| line.split("address").nth(1))
            .and_then(|rest| {
                rest.trim_start_matches(|c: char| !c.is_ascii_digit())
                    .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .next()
            })
            .filter(|address| address.contains(':'));
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

/// Polls `/status.json` until `accept` holds.
async fn status_until(
    base: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
    harness: &Harness,
) -> serde_json::Value {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(response) = http.get(format!("{base}/status.json")).send().await {
            if let Ok(json) = response.json::<serde_json::Value>().await {
                if accept(&json) {
                    return json;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "status.json never matched\n{}",
            harness.logs()
        );
        tokio::time::sleep(POLL_STEP).await;
    }
}

/// `promtool check metrics` on `text`, where promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let Ok(mut promtool) = std::process::Command::new("promtool")
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

/// The number in `<b>N</b>stage` of the page's stage tiles.
fn tile(dom: &str, stage: &str) -> Option<u64> {
    let end = dom.find(&format!("</b>{stage}</div>"))?;
    let start = dom[..end].rfind("<b>")? + 3;
    dom[start..end].parse().ok()
}

/// The width (percent) of the first `<div class="{class}" style="width:…%">`
/// inside the quota bar.
fn bar_width(dom: &str, class: &str) -> Option<f64> {
    let bar = &dom[dom.find("<div class=\"bar\"")?..];
    let marker = format!("<div class=\"{class}\" style=\"width:");
    let rest = &bar[bar.find(&marker)? + marker.len()..];
    rest[..rest.find('%')?].parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_quota_jobs_and_plots_in_a_browser() {
    let mut harness = Harness::start(
        ClusterSettings {
            long_poll: Duration::from_millis(300),
            repo_ready_delay: Duration::from_millis(50),
            boot_delay: Duration::from_millis(100),
            ..ClusterSettings::default()
        },
        |options| {
            options.extra_global = "listen_address = \"127.0.0.1:0\"\n".into();
            // Room for a few jobs: the bar shows a visible share.
            options.reference_jobs_count = 4;
            options.max_flavor = Some("M".into());
        },
    )
    .await;
    harness.spawn_runner();
    let base = format!("http://{}", logged_status_address(&harness).await);
    for flavor in ["S", "M", "S"] {
        harness.enqueue(&[(vars::FLAVOR, flavor), (vars::JOB_DURATION_MS, "60000")]);
    }
    // Three jobs running, and a few seconds of history for the plots.
    let started = Instant::now();
    status_until(
        &base,
        |json| json["stats"]["stages"]["running"] == 3,
        &harness,
    )
    .await;
    let history_deadline = Instant::now() + DEADLINE;
    loop {
        let history: serde_json::Value = reqwest::get(format!("{base}/history.json"))
            .await
            .expect("history")
            .json()
            .await
            .expect("JSON");
        let samples = history["samples"].as_array().map_or(0, Vec::len);
        if samples >= 3 && started.elapsed() >= Duration::from_secs(2) {
            break;
        }
        assert!(Instant::now() < history_deadline, "no history: {history}");
        tokio::time::sleep(POLL_STEP).await;
    }

    // The metrics of the running service: gitlab-runner's families and
    // ours carry what happened, and pass `promtool check metrics`.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for prefix in [
        "gitlab_runner_api_request_statuses_total{runner=\"sim-runner-0\",endpoint=\"request_job\",status=\"201\"} ",
        "paas_runner_cloud_api_requests_total{endpoint=\"create_application\",status=\"200\"} 3",
        "paas_runner_provisioning_duration_seconds_count{runner=\"sim-runner-0\",flavor=\"M\",step=\"create\"} 1",
        "paas_runner_pickup_latency_seconds_count{runner=\"sim-runner-0\",flavor=\"S\"} 2",
        "gitlab_runner_jobs{runner=\"",
        "gitlab_runner_concurrent 1000.0",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(prefix)),
            "no {prefix}\n{metrics}"
        );
    }
    promtool_check(&metrics);

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("PAAS_RUNNER_REQUIRE_TOOLS").is_none(),
            "chromium is required (PAAS_RUNNER_REQUIRE_TOOLS is set) but not installed"
        );
        println!("NOTE: chromium is not installed here: the browser part is skipped");
        let status = harness.signal_and_wait(SIGTERM).await;
        assert!(status.success(), "{status:?}\n{}", harness.logs());
        return;
    };
    let profile = tempfile::tempdir().expect("profile directory");
    let url = format!("{base}/");
    let dom = run_chromium(&browser, profile.path(), "--dump-dom", &url);
    // The script refreshed the page without losing the service.
    assert!(dom.contains("id=\"main\""), "{dom}");
    assert!(dom.contains("<span id=\"conn\"></span>"), "{dom}");
    // The quota bar: used weight drawn, in proportion.
    let used = bar_width(&dom, "used").expect("quota bar");
    assert!(used > 5.0 && used <= 100.0, "used {used}%\n{dom}");
    assert!(dom.contains("class=\"used\">used "), "{dom}");
    // Jobs by stage.
    assert_eq!(tile(&dom, "running"), Some(3), "{dom}");
    assert_eq!(tile(&dom, "failing"), Some(0), "{dom}");
    assert!(dom.contains("Tracked jobs (3)"), "{dom}");
    // Both plots drawn with lines of several points.
    assert_eq!(dom.matches("<svg class=\"plot\"").count(), 2, "{dom}");
    let lines: Vec<&str> = dom
        .split("<polyline class=\"line")
        .skip(1)
        .filter_map(|rest| rest.split("points=\"").nth(1)?.split('"').next())
        .collect();
    assert!(!lines.is_empty(), "no plotted line\n{dom}");
    assert!(
        lines.iter().any(|points| points.split(' ').count() >= 2),
        "{lines:?}"
    );

    // A screenshot for people, kept under target/.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(
        &browser,
        profile.path(),
        &format!("--screenshot={}", screenshot.display()),
        &url,
    );
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "{} bytes", png.len());
    println!("screenshot: {}", screenshot.display());

    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "{status:?}\n{}", harness.logs());
}
