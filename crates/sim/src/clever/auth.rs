//! Which credentials the simulator accepts, on the API and on git: the
//! legacy `token` scheme, OAuth 1 PLAINTEXT as the official clients sign
//! (`docs/protocol-notes.md` §3.a) and `Bearer` API tokens, each of which
//! may be switched off ([`AuthKinds`]) to test a client with one kind only.
//!
//! UNVERIFIED: the real API's checks (whether it accepts HMAC signatures
//! besides PLAINTEXT, whether the OAuth parameters may come in another
//! order or encoding, and whether git takes an API token at all).

use axum::http::HeaderMap;
use base64::Engine;

use super::CleverConfig;

/// The kinds of credentials the simulator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthKinds {
    /// `Authorization: token <token>`; git: Basic `<any or git_user>:<token>`.
    pub token: bool,
    /// `Authorization: OAuth …` PLAINTEXT; git: Basic `<oauth token>:<oauth secret>`.
    pub oauth1: bool,
    /// `Authorization: Bearer <api token>`; git: Basic `<any>:<api token>`
    /// (UNVERIFIED).
    pub api_token: bool,
}

impl AuthKinds {
    /// Every kind (the default).
    pub const ALL: AuthKinds = AuthKinds {
        token: true,
        oauth1: true,
        api_token: true,
    };
    /// Only the legacy token.
    pub const TOKEN_ONLY: AuthKinds = AuthKinds {
        token: true,
        oauth1: false,
        api_token: false,
    };
    /// Only OAuth 1.
    pub const OAUTH1_ONLY: AuthKinds = AuthKinds {
        token: false,
        oauth1: true,
        api_token: false,
    };
    /// Only API tokens.
    pub const API_TOKEN_ONLY: AuthKinds = AuthKinds {
        token: false,
        oauth1: false,
        api_token: true,
    };
}

impl Default for AuthKinds {
    fn default() -> Self {
        AuthKinds::ALL
    }
}

/// Whether the `Authorization` header of an API call is accepted.
pub(in crate::clever) fn api_authorized(config: &CleverConfig, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, credential)) = value.trim().split_once(' ') else {
        return false;
    };
    let kinds = config.auth_kinds;
    if scheme.eq_ignore_ascii_case("token") {
        kinds.token && credential.trim() == config.token
    } else if scheme.eq_ignore_ascii_case("bearer") {
        kinds.api_token && credential.trim() == config.api_token
    } else if scheme.eq_ignore_ascii_case("oauth") {
        kinds.oauth1 && oauth1_plaintext_valid(config, credential)
    } else {
        false
    }
}

/// Whether HTTP Basic `user`:`password` may push, by kind.
pub(in crate::clever) fn git_authorized(config: &CleverConfig, user: &str, password: &str) -> bool {
    let kinds = config.auth_kinds;
    let legacy_user_ok = config
        .git_user
        .as_deref()
        .is_none_or(|expected| expected == user);
    (kinds.token && password == config.token && legacy_user_ok)
        || (kinds.oauth1 && user == config.oauth_token && password == config.oauth_secret)
        || (kinds.api_token && password == config.api_token && legacy_user_ok)
}

/// `oauth_consumer_key="…", oauth_token="…", oauth_signature="cs%26ts"`,
/// parameters in any order, other OAuth parameters (nonce, timestamp,
/// `oauth_signature_method="PLAINTEXT"`, version) tolerated. The signature
/// is compared after percent-decoding, so both the raw secrets the
/// official clients send and percent-encoded ones pass.
fn oauth1_plaintext_valid(config: &CleverConfig, parameters: &str) -> bool {
    let mut consumer_key = None;
    let mut token = None;
    let mut signature = None;
    for parameter in parameters.split(',') {
        let Some((name, value)) = parameter.trim().split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches('"');
        match name.trim() {
            "oauth_consumer_key" => consumer_key = Some(value),
            "oauth_token" => token = Some(value),
            "oauth_signature" => signature = Some(value),
            "oauth_signature_method" if !value.eq_ignore_ascii_case("PLAINTEXT") => return false,
            _ => {}
        }
    }
    let (Some(consumer_key), Some(token), Some(signature)) = (consumer_key, token, signature)
    else {
        return false;
    };
    let Some((consumer_secret, token_secret)) = signature.split_once("%26") else {
        return false;
    };
    let decode = |text: &str| percent_decode(text);
    consumer_key == config.oauth_consumer_key
        && token == config.oauth_token
        && decode(consumer_secret).as_deref() == Some(config.oauth_consumer_secret.as_str())
        && decode(token_secret).as_deref() == Some(config.oauth_secret.as_str())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes `Authorization: Basic …` into user and password.
pub(in crate::clever) fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kinds: AuthKinds) -> CleverConfig {
        let mut config = CleverConfig::new(std::path::PathBuf::from("/nonexistent"));
        config.auth_kinds = kinds;
        config
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().expect("header"));
        headers
    }

    #[test]
    fn each_kind_is_checked_and_can_be_switched_off() {
        let all = config(AuthKinds::ALL);
        let oauth = format!(
            "OAuth oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"{}%26{}\"",
            all.oauth_consumer_key, all.oauth_token, all.oauth_consumer_secret, all.oauth_secret
        );
        let token = format!("token {}", all.token);
        let bearer = format!("Bearer {}", all.api_token);
        for (value, kinds, expect) in [
            (&oauth, AuthKinds::ALL, true),
            (&oauth, AuthKinds::OAUTH1_ONLY, true),
            (&oauth, AuthKinds::TOKEN_ONLY, false),
            (&token, AuthKinds::TOKEN_ONLY, true),
            (&token, AuthKinds::API_TOKEN_ONLY, false),
            (&bearer, AuthKinds::API_TOKEN_ONLY, true),
            (&bearer, AuthKinds::OAUTH1_ONLY, false),
        ] {
            assert_eq!(
                api_authorized(&config(kinds), &headers(value)),
                expect,
                "{value} {kinds:?}"
            );
        }
        let wrong_secret = oauth.replace(&all.oauth_secret, "wrong");
        assert!(!api_authorized(&all, &headers(&wrong_secret)));
        let hmac = format!("{oauth}, oauth_signature_method=\"HMAC-SHA512\"");
        assert!(!api_authorized(&all, &headers(&hmac)));
        let reordered = format!(
            "OAuth oauth_signature=\"{}%26{}\", oauth_version=\"1.0\", oauth_token=\"{}\", \
             oauth_consumer_key=\"{}\"",
            all.oauth_consumer_secret, all.oauth_secret, all.oauth_token, all.oauth_consumer_key
        );
        assert!(api_authorized(&all, &headers(&reordered)));
    }

    #[test]
    fn git_credentials_by_kind() {
        let all = config(AuthKinds::ALL);
        assert!(git_authorized(&all, &all.oauth_token, &all.oauth_secret));
        assert!(git_authorized(&all, "Jenkins", &all.token));
        assert!(!git_authorized(
            &config(AuthKinds::API_TOKEN_ONLY),
            "Jenkins",
            &all.token
        ));
        assert!(!git_authorized(
            &config(AuthKinds::TOKEN_ONLY),
            &all.oauth_token,
            &all.oauth_secret
        ));
    }
}
