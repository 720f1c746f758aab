//! The Clever Cloud credentials of a runner: one of three kinds, each chosen
//! by its own keys, and the API base URL that goes with it.
//!
//! - `cc_token`: the legacy `Authorization: token …` of heptapod-paas-runner
//!   configurations (the default kind: files written for it load unchanged),
//!   against `cc_api_url`.
//! - `cc_oauth_consumer_key`, `cc_oauth_consumer_secret`, `cc_oauth_token`,
//!   `cc_oauth_secret`: OAuth 1 (PLAINTEXT), as clever-tools signs, against
//!   `cc_api_url`.
//! - `cc_api_token`: an API token (`Bearer`), against the API bridge
//!   `cc_api_bridge_url` (default [`DEFAULT_CC_API_BRIDGE_URL`]).
//!
//! Every secret may be written `secret:NAME` (the secrets file). Two kinds
//! at once, an incomplete OAuth set, or a URL key of the other kind are
//! refused with the file, line and key.

use paas_core::Secret;

use crate::reader::TableReader;
use crate::secrets::Secrets;
use crate::ConfigError;

/// Base URL of the API bridge that accepts API tokens (`/v2` included), as
/// `@clevercloud/client` 12 `cc-api-client.js` `getBaseUrl` names it.
pub const DEFAULT_CC_API_BRIDGE_URL: &str = "https://api-bridge.clever-cloud.com/v2";

/// The keys of this module, besides `cc_token` and `cc_api_url`.
pub(crate) const KEYS: &[&str] = &[
    "cc_oauth_consumer_key",
    "cc_oauth_consumer_secret",
    "cc_oauth_token",
    "cc_oauth_secret",
    "cc_api_token",
    "cc_api_bridge_url",
];

const OAUTH_KEYS: &[&str] = &[
    "cc_oauth_consumer_key",
    "cc_oauth_consumer_secret",
    "cc_oauth_token",
    "cc_oauth_secret",
];

/// Credentials of the Clever Cloud API (`Debug` hides the secrets).
#[derive(Debug, Clone, PartialEq)]
pub enum CleverAuth {
    /// `cc_token`.
    Token(Secret),
    /// `cc_oauth_*`. The consumer key is an identifier, not a secret.
    OAuth1 {
        consumer_key: String,
        consumer_secret: Secret,
        token: Secret,
        token_secret: Secret,
    },
    /// `cc_api_token`.
    ApiToken(Secret),
}

impl CleverAuth {
    /// `token`, `oauth1` or `api-token`.
    pub fn kind(&self) -> &'static str {
        match self {
            CleverAuth::Token(_) => "token",
            CleverAuth::OAuth1 { .. } => "oauth1",
            CleverAuth::ApiToken(_) => "api-token",
        }
    }

    /// Every secret of these credentials (to scrub, and to keep away from
    /// the job's machine).
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            CleverAuth::Token(token) | CleverAuth::ApiToken(token) => vec![token],
            CleverAuth::OAuth1 {
                consumer_secret,
                token,
                token_secret,
                ..
            } => vec![consumer_secret, token, token_secret],
        }
    }

    /// The legacy `cc_token`, if that is the kind.
    /// The key that holds this kind's token, for messages that ask an
    /// operator to fix it.
    pub fn token_key(&self) -> &'static str {
        match self {
            CleverAuth::Token(_) => "cc_token",
            CleverAuth::OAuth1 { .. } => "cc_oauth_token",
            CleverAuth::ApiToken(_) => "cc_api_token",
        }
    }

    pub fn legacy_token(&self) -> Option<&Secret> {
        match self {
            CleverAuth::Token(token) => Some(token),
            _ => None,
        }
    }
}

/// The credentials of `table` and the API base URL they go to: `api_url`
/// (from `cc_api_url`, `None` if absent) for the token and OAuth kinds, the
/// bridge for API tokens. `http_url` checks and normalises a URL value.
pub(crate) fn parse(
    table: &TableReader<'_>,
    secrets: &Secrets,
    api_url: Option<String>,
    default_api_url: &str,
    http_url: impl Fn(&str, String) -> Result<String, ConfigError>,
) -> Result<(CleverAuth, String), ConfigError> {
    let present = |key: &str| table.item(key).is_some();
    let kinds: Vec<(&str, &str)> = [
        ("cc_token", "cc_token"),
        (
            "cc_oauth_*",
            OAUTH_KEYS
                .iter()
                .copied()
                .find(|key| present(key))
                .unwrap_or(""),
        ),
        ("cc_api_token", "cc_api_token"),
    ]
    .into_iter()
    .filter(|(_, key)| !key.is_empty() && present(key))
    .collect();
    if kinds.len() > 1 {
        // Located at the key that comes last in the file.
        let (_, at) = kinds
            .iter()
            .copied()
            .max_by_key(|(_, key)| table.line_of(key).unwrap_or(0))
            .unwrap_or(kinds[0]);
        let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
        return Err(table.error(
            at,
            format!(
                "Clever Cloud credentials of more than one kind ({}): set only one of \
                 `cc_token` (legacy token), the four `cc_oauth_*` keys (OAuth 1) or \
                 `cc_api_token` (API token)",
                names.join(", ")
            ),
        ));
    }
    let bridge_url = table.string("cc_api_bridge_url")?;
    match kinds.first().map(|(name, _)| *name) {
        Some("cc_api_token") => {
            if api_url.is_some() {
                return Err(table.error(
                    "cc_api_url",
                    "API tokens (`cc_api_token`) go to the API bridge: \
                     set `cc_api_bridge_url` instead of `cc_api_url`",
                ));
            }
            let token = checked_secret(table, secrets, "cc_api_token", "Clever Cloud API token")?;
            let url = match bridge_url {
                Some(url) => http_url("cc_api_bridge_url", url)?,
                None => DEFAULT_CC_API_BRIDGE_URL.to_owned(),
            };
            Ok((CleverAuth::ApiToken(token), url))
        }
        other => {
            if bridge_url.is_some() {
                return Err(table.error(
                    "cc_api_bridge_url",
                    "only used with an API token (`cc_api_token`); \
                     other credentials go to `cc_api_url`",
                ));
            }
            let url = api_url.unwrap_or_else(|| default_api_url.to_owned());
            let auth = if other == Some("cc_oauth_*") {
                oauth(table, secrets)?
            } else {
                // Neither: `cc_token` is the key heptapod-paas-runner
                // files have, so its absence is the error shown.
                CleverAuth::Token(checked_secret(
                    table,
                    secrets,
                    "cc_token",
                    "Clever Cloud token",
                )?)
            };
            Ok((auth, url))
        }
    }
}

fn oauth(table: &TableReader<'_>, secrets: &Secrets) -> Result<CleverAuth, ConfigError> {
    if let Some(missing) = OAUTH_KEYS.iter().find(|key| table.item(key).is_none()) {
        let at = OAUTH_KEYS
            .iter()
            .find(|key| table.item(key).is_some())
            .copied()
            .unwrap_or(missing);
        return Err(table.error(
            at,
            format!(
                "OAuth 1 credentials need all four of `cc_oauth_consumer_key`, \
                 `cc_oauth_consumer_secret`, `cc_oauth_token` and `cc_oauth_secret`: \
                 `{missing}` is missing"
            ),
        ));
    }
    let consumer_key = checked_secret(
        table,
        secrets,
        "cc_oauth_consumer_key",
        "OAuth consumer key",
    )?;
    Ok(CleverAuth::OAuth1 {
        consumer_key: consumer_key.expose().to_owned(),
        consumer_secret: checked_secret(
            table,
            secrets,
            "cc_oauth_consumer_secret",
            "OAuth consumer secret",
        )?,
        token: checked_secret(table, secrets, "cc_oauth_token", "OAuth token")?,
        token_secret: checked_secret(table, secrets, "cc_oauth_secret", "OAuth token secret")?,
    })
}

/// A required secret-capable value, resolved, non-empty, and fit for an
/// HTTP header; the OAuth values also exclude `"` (they are quoted in the
/// header).
fn checked_secret(
    table: &TableReader<'_>,
    secrets: &Secrets,
    key: &str,
    label: &str,
) -> Result<Secret, ConfigError> {
    let Some(value) = table.secret_string(key)? else {
        return Err(table.missing(key));
    };
    let value = secrets.resolve(value, table, key)?;
    if value.is_empty() {
        return Err(table.error(key, "empty token"));
    }
    let value = Secret::new(value);
    crate::checks::check_token(table, key, label, &value)?;
    if key.starts_with("cc_oauth_") && value.expose().contains(['"', ',']) {
        return Err(table.error(
            key,
            format!("the {label} contains a quote or a comma, which an OAuth header cannot carry"),
        ));
    }
    Ok(value)
}
