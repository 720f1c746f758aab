//! Defaults and every setting read.

use super::*;

#[test]
fn defaults() {
    let config = parse_ok(BASE);
    assert_eq!(config.concurrent, 50);
    assert_eq!(config.check_interval, Duration::from_secs(3));
    assert_eq!(config.job_progress_poll_interval, Duration::from_secs(30));
    assert_eq!(config.state_file, None);
    assert_eq!(config.quota.allowed_fraction_per_runner, 1.0);
    assert_eq!(config.max_concurrent_provisioning, 10);
    assert_eq!(config.min_seconds_between_launches, Duration::ZERO);
    assert!(!config.finished_jobs_keep_resources);
    assert!(config.decommission_launch_failures);
    assert!(config.repoll_same_runner_immediately);
    assert!(config.log_statistics);
    assert_eq!(config.listen_address, None);
    assert!(config.warnings.is_empty());

    let runner = &config.runners[0];
    assert_eq!(runner.line, 6);
    assert_eq!(
        runner.url, "https://heptapod.example",
        "trailing slash trimmed"
    );
    assert_eq!(runner.quota_max_fraction, 1.0);
    assert_eq!(
        runner.heptapod_runner_main_image,
        "registry.heptapod.net:443/heptapod/heptapod-runner/runner:0.7.0"
    );
    assert_eq!(runner.paas_helper_image, None);
    assert_eq!(runner.trace_watch.token, None);
    assert_eq!(runner.trace_watch.timeout, Duration::from_secs(300));
    assert_eq!(runner.trace_watch.poll_step, Duration::from_secs(10));

    let cc = &runner.cc;
    assert_eq!(cc.api_url, "https://api.clever-cloud.com/v2");
    assert_eq!(cc.zone, "par");
    assert_eq!(cc.default_flavor, "M");
    assert_eq!(cc.max_flavor, None);
    assert!(cc.extra_env.is_empty());
    assert_eq!(cc.flavor_context, "heptapod-runner");
    assert_eq!(cc.flavor_name_prefix, "heptapod-runner-");
    assert_eq!(
        cc.instance_variant_uuid,
        "70d676a0-a775-4dc9-a43d-3121036e8515"
    );
    assert_eq!(cc.auth_user, "Jenkins");
    assert_eq!(cc.deployment_repo_timeout, Duration::from_secs(20));
    assert_eq!(cc.deployment_repo_wait_step, Duration::from_secs(2));
}

#[test]
fn every_setting() {
    let text = format!(
        r#"concurrent = 7
check_interval = 0.5
job_progress_poll_interval = 12
listen_address = "127.0.0.1:9252"
paas_max_concurrent_provisioning = 3
paas_min_seconds_between_launches = 0.25
paas_finished_jobs_keep_resources = true
paas_decommission_launch_failures = false
paas_repoll_same_runner_immediately = false
paas_log_statistics = false
log_level = "debug"
shutdown_timeout = 30
[session_server]
listen_address = "[::]:8093"
{}quota_max_fraction = 0.5
cc_api_url = "https://api.example/v2/"
cc_zone = "rbx"
cc_default_flavor = "S"
cc_max_flavor = "2XL"
cc_flavor_context = "ctx"
cc_instance_variant_uuid = "uuid"
cc_auth_user = "someone"
cc_deployment_repo_timeout = 1.5
cc_deployment_repo_wait_step = 0.1
heptapod_runner_main_image = "runner:1"
heptapod_paas_runner_helper_image = "helper:1"
[runners.cc_extra_env]
CC_ENABLE_HEPTAPOD_RUNNER = true
WORKERS = 4
NAME = "x"
[runners.paas_job_trace_watch]
token = "watch-token"
timeout_seconds = 60.5
poll_step = 2
"#,
        BASE.replace(
            "reference_jobs_count = 4\n",
            "reference_jobs_count = 4\nallowed_fraction_per_runner = 0.8\n"
        )
    );
    let config = parse_ok(&text);
    // gitlab-runner's keys without effect here get one warning each.
    assert_eq!(
        config.warnings,
        [
            "/etc/paas.toml:3: key `job_progress_poll_interval`: no effect in paas-runner \
             (polling resumes as soon as capacity frees up; job status checks follow \
             check_interval): ignored",
            "/etc/paas.toml:12: key `shutdown_timeout`: gitlab-runner setting with no effect \
             in paas-runner: ignored",
            "/etc/paas.toml:13: key `session_server`: gitlab-runner setting with no effect in \
             paas-runner: ignored",
        ]
    );
    assert_eq!(config.log_level.as_deref(), Some("debug"));
    assert_eq!(config.concurrent, 7);
    assert_eq!(config.check_interval, Duration::from_millis(500));
    assert_eq!(config.job_progress_poll_interval, Duration::from_secs(12));
    assert_eq!(config.listen_address.as_deref(), Some("127.0.0.1:9252"));
    assert_eq!(config.max_concurrent_provisioning, 3);
    assert_eq!(
        config.min_seconds_between_launches,
        Duration::from_millis(250)
    );
    assert!(config.finished_jobs_keep_resources);
    assert!(!config.decommission_launch_failures);
    assert!(!config.repoll_same_runner_immediately);
    assert!(!config.log_statistics);
    assert_eq!(config.quota.allowed_fraction_per_runner, 0.8);

    let runner = &config.runners[0];
    assert_eq!(runner.quota_max_fraction, 0.5);
    assert_eq!(runner.heptapod_runner_main_image, "runner:1");
    assert_eq!(runner.paas_helper_image.as_deref(), Some("helper:1"));
    assert_eq!(watch_token(runner), Some("watch-token"));
    assert_eq!(runner.trace_watch.timeout, Duration::from_millis(60_500));
    assert_eq!(runner.trace_watch.poll_step, Duration::from_secs(2));
    let cc = &runner.cc;
    assert_eq!(cc.api_url, "https://api.example/v2");
    assert_eq!(cc.zone, "rbx");
    assert_eq!(cc.default_flavor, "S");
    assert_eq!(cc.max_flavor.as_deref(), Some("2XL"));
    assert_eq!(cc.flavor_context, "ctx");
    assert_eq!(cc.flavor_name_prefix, "ctx-");
    assert_eq!(cc.instance_variant_uuid, "uuid");
    assert_eq!(cc.auth_user, "someone");
    assert_eq!(cc.deployment_repo_timeout, Duration::from_millis(1500));
    assert_eq!(cc.deployment_repo_wait_step, Duration::from_millis(100));
    let env: Vec<(&str, &str)> = cc
        .extra_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("CC_ENABLE_HEPTAPOD_RUNNER", "true"),
            ("NAME", "x"),
            ("WORKERS", "4")
        ]
    );
}

#[test]
fn intervals_accept_fractions() {
    let config = parse_ok(&format!("check_interval = 0.5\n{BASE}"));
    assert_eq!(config.check_interval, Duration::from_millis(500));
    let config = parse_ok(&format!("check_interval = 2\n{BASE}"));
    assert_eq!(config.check_interval, Duration::from_secs(2));
}

#[test]
fn orphan_min_age_defaults_to_ten_minutes() {
    let config = parse_ok(BASE);
    assert_eq!(config.orphan_min_age, Duration::from_secs(600));
    let config = parse_ok(&format!("paas_orphan_min_age = 90\n{BASE}"));
    assert_eq!(config.orphan_min_age, Duration::from_secs(90));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}
