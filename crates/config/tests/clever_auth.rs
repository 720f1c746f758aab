//! The three kinds of Clever Cloud credentials: their keys, the API URL
//! each implies, `secret:NAME` values, and the errors of mixed or
//! incomplete sets (file, line, key; no secret shown).

use paas_config::{CleverAuth, DEFAULT_CC_API_BRIDGE_URL, DEFAULT_CC_API_URL};

/// The `[[runners]]` header is line 6; the credentials start at line 11.
fn file(credentials: &str) -> String {
    format!(
        "[quota_computation]\nreference_runner = \"main\"\nreference_flavor = \"M\"\n\
         reference_jobs_count = 4\n\n[[runners]]\nname = \"main\"\n\
         url = \"https://heptapod.example/\"\ntoken = \"glrt-main-token-value\"\n\
         executor = \"clever-docker\"\n{credentials}cc_orga_id = \"orga_x\"\n"
    )
}

const SECRET_VALUES: &[&str] = &[
    "legacy-value",
    "consumer-secret-value",
    "oauth-token-value",
    "oauth-secret-value",
    "api-token-value",
];

fn load(credentials: &str) -> Result<paas_config::Config, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        "cs = \"consumer-secret-value\"\nts = \"oauth-secret-value\"\n",
    )
    .expect("write");
    let text = file(&credentials.replace("SECRETS", &secrets.display().to_string()));
    let path = dir.path().join("paas.toml");
    std::fs::write(&path, &text).expect("write");
    paas_config::load(&path).map_err(|error| {
        let message = error.to_string();
        for secret in SECRET_VALUES {
            assert!(!message.contains(secret), "{message}");
        }
        // The path of the temporary directory differs at each run.
        message.replace(&path.display().to_string(), "paas.toml")
    })
}

#[test]
fn legacy_token_is_the_default_kind() {
    let config = load("cc_token = \"legacy-value\"\n").expect("valid");
    let cc = &config.runners[0].cc;
    assert_eq!(
        cc.auth,
        CleverAuth::Token(paas_core::Secret::new("legacy-value"))
    );
    assert_eq!(cc.api_url, DEFAULT_CC_API_URL);
    assert_eq!(cc.auth.kind(), "token");
}

#[test]
fn oauth1_with_values_from_the_secrets_file() {
    let config = load(
        "secrets_file = \"SECRETS\"\ncc_oauth_consumer_key = \"consumer-key\"\n\
         cc_oauth_consumer_secret = \"secret:cs\"\ncc_oauth_token = \"oauth-token-value\"\n\
         cc_oauth_secret = \"secret:ts\"\ncc_api_url = \"http://127.0.0.1:9/v2\"\n",
    )
    .expect("valid");
    let runner = &config.runners[0];
    let CleverAuth::OAuth1 {
        consumer_key,
        consumer_secret,
        token,
        token_secret,
    } = &runner.cc.auth
    else {
        panic!("{:?}", runner.cc.auth)
    };
    assert_eq!(consumer_key, "consumer-key");
    assert_eq!(consumer_secret.expose(), "consumer-secret-value");
    assert_eq!(token.expose(), "oauth-token-value");
    assert_eq!(token_secret.expose(), "oauth-secret-value");
    assert_eq!(runner.cc.api_url, "http://127.0.0.1:9/v2");
    assert_eq!(runner.cc.auth.secrets().len(), 3);
    let shown = format!("{runner:?}");
    for secret in SECRET_VALUES {
        assert!(!shown.contains(secret), "{shown}");
    }
    // None of the keys reaches the inner runner's configuration.
    assert!(runner
        .inner_config
        .keys()
        .all(|key| !key.starts_with("cc_")));
}

#[test]
fn api_token_goes_to_the_bridge() {
    let config = load("cc_api_token = \"api-token-value\"\n").expect("valid");
    let cc = &config.runners[0].cc;
    assert_eq!(cc.auth.kind(), "api-token");
    assert_eq!(cc.api_url, DEFAULT_CC_API_BRIDGE_URL);
    let config = load(
        "cc_api_token = \"api-token-value\"\ncc_api_bridge_url = \"http://127.0.0.1:9/v2/\"\n",
    )
    .expect("valid");
    assert_eq!(config.runners[0].cc.api_url, "http://127.0.0.1:9/v2");
}

#[test]
fn mixed_incomplete_or_misplaced_credentials_are_refused() {
    for (credentials, expect) in [
        (
            "cc_token = \"legacy-value\"\ncc_api_token = \"api-token-value\"\n",
            "paas.toml:12: key `runners[0].cc_api_token`: Clever Cloud credentials of more \
             than one kind (cc_token, cc_api_token): set only one of `cc_token` (legacy token), \
             the four `cc_oauth_*` keys (OAuth 1) or `cc_api_token` (API token)",
        ),
        (
            "cc_oauth_token = \"oauth-token-value\"\ncc_token = \"legacy-value\"\n",
            "paas.toml:12: key `runners[0].cc_token`: Clever Cloud credentials of more \
             than one kind (cc_token, cc_oauth_*): set only one of `cc_token` (legacy token), \
             the four `cc_oauth_*` keys (OAuth 1) or `cc_api_token` (API token)",
        ),
        (
            "cc_oauth_consumer_key = \"k\"\ncc_oauth_consumer_secret = \"consumer-secret-value\"\n\
             cc_oauth_token = \"oauth-token-value\"\n",
            "paas.toml:11: key `runners[0].cc_oauth_consumer_key`: OAuth 1 credentials need \
             all four of `cc_oauth_consumer_key`, `cc_oauth_consumer_secret`, `cc_oauth_token` \
             and `cc_oauth_secret`: `cc_oauth_secret` is missing",
        ),
        (
            "cc_api_token = \"api-token-value\"\ncc_api_url = \"https://api.example/v2\"\n",
            "paas.toml:12: key `runners[0].cc_api_url`: API tokens (`cc_api_token`) go to the \
             API bridge: set `cc_api_bridge_url` instead of `cc_api_url`",
        ),
        (
            "cc_token = \"legacy-value\"\ncc_api_bridge_url = \"https://bridge.example/v2\"\n",
            "paas.toml:12: key `runners[0].cc_api_bridge_url`: only used with an API token \
             (`cc_api_token`); other credentials go to `cc_api_url`",
        ),
        (
            "cc_oauth_consumer_key = \"k\"\ncc_oauth_consumer_secret = \"a\\\"b\"\n\
             cc_oauth_token = \"oauth-token-value\"\ncc_oauth_secret = \"oauth-secret-value\"\n",
            "paas.toml:12: key `runners[0].cc_oauth_consumer_secret`: the OAuth consumer secret \
             contains a quote or a comma, which an OAuth header cannot carry",
        ),
        (
            "",
            "paas.toml:6: key `runners[0].cc_token`: missing required key",
        ),
    ] {
        assert_eq!(load(credentials).expect_err(credentials), expect);
    }
}
