//! Tests of loading configurations: the reference examples, defaults, secrets and every error.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::{parse, parse_with, Config, ConfigError, RunnerConfig};

mod checks;
mod errors;
mod examples;
mod inner_config;
mod secrets;
mod settings;

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
