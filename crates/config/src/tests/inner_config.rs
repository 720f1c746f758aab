//! The inner runner's configuration forwarded to the job machine.

use super::*;

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
