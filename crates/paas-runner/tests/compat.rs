//! Files and command lines written for gitlab-runner or heptapod-paas-runner
//! start the real binary: `check_interval = 0`, `[session_server]`,
//! `log_format` from the file, and heptapod-paas-runner's options
//! (`--poll-interval`, `--job-progress-poll-interval`, `--poll-cycles`,
//! `--debug-signal`, `-l LEVEL`) as its unit files use them.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Harness, DEADLINE};
use paas_sim::cluster::ClusterSettings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_unit_command_line_on_a_gitlab_runner_file_runs_and_stops() {
    let harness = Harness::start(
        ClusterSettings {
            long_poll: Duration::from_millis(300),
            ..ClusterSettings::default()
        },
        |options| {
            // As `gitlab-runner register` writes them.
            options.check_interval_secs = 0.0;
            options.extra_global = "log_format = \"json\"\nlog_level = \"debug\"\n\
                                    shutdown_timeout = 0\n\n[session_server]\n  \
                                    session_timeout = 1800\n"
                .to_owned();
        },
    )
    .await;
    let config = std::fs::read_to_string(&harness.config_path).expect("config");
    assert!(config.contains("check_interval = 0\n"), "{config}");
    let log_path = harness.dir.path().join("reference.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // heptapod-paas-runner's unit: `heptapod-paas-runner CONFIG` and its
    // options, only the program's name changed.
    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .arg("-l")
        .arg("INFO")
        .arg(&harness.config_path)
        .args([
            "--poll-interval",
            "1",
            "--job-progress-poll-interval",
            "30",
            "--poll-cycles",
            "3",
            "--debug-signal",
        ])
        .current_dir(harness.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn paas-runner");
    // Three cycles of one second, then a graceful stop.
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("stops by itself after its polling cycles")
        .expect("wait");
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(status.success(), "{status:?}\n{logs}");
    // `--poll-interval 1` beat `check_interval`: 3 cycles of 1 s.
    // (The default check_interval, 3 s, would take 9 s.)
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );

    // The file's `log_format = "json"` holds; `-l INFO` beats its
    // `log_level = "debug"`.
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}\n{logs}"))
        })
        .collect();
    assert!(lines.iter().all(|line| line["level"] != "DEBUG"), "{logs}");
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["message"].as_str())
        .collect();
    // One warning per key without effect, naming the file once.
    let session_warnings: Vec<&&str> = messages
        .iter()
        .filter(|message| message.contains("session_server"))
        .collect();
    assert_eq!(session_warnings.len(), 1, "{logs}");
    let path = harness.config_path.display().to_string();
    assert_eq!(session_warnings[0].matches(&path).count(), 1, "{logs}");
    assert!(
        messages
            .iter()
            .any(|message| message.contains("--poll-interval is deprecated")),
        "{logs}"
    );
    // heptapod-paas-runner's statistics line, once per cycle while it
    // changes (`paas_log_statistics` defaults to true, as there).
    let statistics: Vec<serde_json::Value> = messages
        .iter()
        .filter_map(|message| message.strip_prefix("JSON statistics: "))
        .map(|json| serde_json::from_str(json).expect("statistics are JSON"))
        .collect();
    assert!(!statistics.is_empty(), "{logs}");
    for key in [
        "weight_quota",
        "current_weight",
        "weight_headroom",
        "can_take_job",
        "max_jobs_in_provisioning",
        "jobs_in_provisioning",
        "current_concurrent_jobs",
        "max_concurrent_jobs",
    ] {
        assert!(
            statistics[0].get(key).is_some(),
            "no {key}: {}",
            statistics[0]
        );
    }
    assert_eq!(statistics[0]["max_concurrent_jobs"], 1000);
    assert!(
        messages
            .iter()
            .any(|message| message.contains("polling cycles done")),
        "{logs}"
    );

    // `paas-runner state CONFIG | head`: the reader is gone before the
    // command writes; it ends quietly, without a panic.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .arg("state")
        .arg(&harness.config_path)
        .current_dir(harness.dir.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run state");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
