//! The reference's examples and spellings, and files other tools write.

use super::*;

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
