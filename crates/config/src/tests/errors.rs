//! Refused files: every error, with its file, line and key; warnings for unknown keys.

use super::*;

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
