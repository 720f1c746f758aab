//! `secret:NAME` values resolved from the secrets file; no token in errors or `Debug`.

use super::*;

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
fn debug_shows_no_token() {
    let text = format!(
        "{BASE}[runners.paas_job_trace_watch]\ntoken = \"glrt-second-token\"\n\
         [runners.cache.s3]\nSecretKey = \"from-secrets-s3-key\"\n"
    );
    let debug = format!("{:?}", parse_ok(&text));
    assert_no_secret(&debug);
    assert!(debug.contains("[REDACTED]"));
}
