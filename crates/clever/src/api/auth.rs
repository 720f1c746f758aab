//! The three kinds of Clever Cloud credentials, the `Authorization` header
//! each one sends to the API, and the git credentials each one implies.
//!
//! - [`Credentials::Token`]: `Authorization: token <cc_token>`, the legacy
//!   scheme of heptapod-paas-runner (in no official client; UNVERIFIED who
//!   still issues such tokens).
//! - [`Credentials::OAuth1`]: OAuth 1 PLAINTEXT, as `@clevercloud/client`
//!   12 `esm/oauth.js` `addOauthHeader` signs (used by clever-tools 4):
//!   exactly `oauth_consumer_key`, `oauth_token` and `oauth_signature`
//!   (`<consumer secret>%26<token secret>`, neither percent-encoded, as the
//!   official clients send them), no nonce nor timestamp.
//! - [`Credentials::ApiToken`]: `Authorization: Bearer <token>`, on the API
//!   bridge (`@clevercloud/client` 12 `src/lib/auth/cc-auth-api-token.js`,
//!   `cc-api-client.js` `getBaseUrl`).

use std::fmt;

use paas_core::Secret;
use reqwest::header::HeaderValue;

use super::CleverError;

/// Credentials of the Clever Cloud API. `Debug` shows the kind and the
/// OAuth consumer key (public), never a secret.
#[derive(Clone, PartialEq)]
pub enum Credentials {
    /// `cc_token`: the legacy scheme.
    Token(Secret),
    /// `cc_oauth_*`: OAuth 1 PLAINTEXT.
    OAuth1 {
        consumer_key: String,
        consumer_secret: Secret,
        token: Secret,
        token_secret: Secret,
    },
    /// `cc_api_token`: an API token, sent as `Bearer` to the API bridge.
    ApiToken(Secret),
}

/// What a git push to a deployment repository authenticates with: HTTP
/// Basic `user`:`password`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GitCredentials<'a> {
    pub user: &'a str,
    pub password: &'a Secret,
    /// Whether the credentials wait for the server's 401 challenge (as git
    /// and clever-tools do) rather than going with the first request.
    pub after_challenge: bool,
}

impl Credentials {
    /// `token`, `oauth1` or `api-token`: a name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Token(_) => "token",
            Credentials::OAuth1 { .. } => "oauth1",
            Credentials::ApiToken(_) => "api-token",
        }
    }

    /// Every secret these credentials hold, to scrub from outside text and
    /// to keep out of what a job's machine receives.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            Credentials::Token(token) | Credentials::ApiToken(token) => vec![token],
            Credentials::OAuth1 {
                consumer_secret,
                token,
                token_secret,
                ..
            } => vec![consumer_secret, token, token_secret],
        }
    }

    /// The credentials of git pushes. `legacy_user` is `cc_auth_user`
    /// (`Jenkins` by default), used with the legacy token as the reference
    /// runner does, sent at once. With OAuth, clever-tools 4
    /// (`models/git-isomorphic.js` `#onAuth`) sends the OAuth token as user
    /// and its secret as password, after a 401. UNVERIFIED: what git
    /// accepts with an API token; no official client pushes with one. The
    /// token is sent as the password of `legacy_user` after a 401, the
    /// shape of the other two.
    pub fn git_credentials<'a>(&'a self, legacy_user: &'a str) -> GitCredentials<'a> {
        match self {
            Credentials::Token(token) => GitCredentials {
                user: legacy_user,
                password: token,
                after_challenge: false,
            },
            Credentials::OAuth1 {
                token,
                token_secret,
                ..
            } => GitCredentials {
                user: token.expose(),
                password: token_secret,
                after_challenge: true,
            },
            Credentials::ApiToken(token) => GitCredentials {
                user: legacy_user,
                password: token,
                after_challenge: true,
            },
        }
    }

    /// The `Authorization` header of API calls, marked sensitive so that
    /// HTTP debug output hides it.
    pub(crate) fn authorization(&self) -> Result<HeaderValue, CleverError> {
        let text = match self {
            Credentials::Token(token) => format!("token {}", token.expose()),
            Credentials::OAuth1 {
                consumer_key,
                consumer_secret,
                token,
                token_secret,
            } => oauth1_plaintext(consumer_key, consumer_secret, token, token_secret),
            Credentials::ApiToken(token) => format!("Bearer {}", token.expose()),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| CleverError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::OAuth1 { consumer_key, .. } => f
                .debug_struct("OAuth1")
                .field("consumer_key", consumer_key)
                .field("secrets", &"[REDACTED]")
                .finish(),
            other => write!(f, "{}([REDACTED])", other.kind()),
        }
    }
}

/// The OAuth 1 PLAINTEXT header value of the official clients.
fn oauth1_plaintext(
    consumer_key: &str,
    consumer_secret: &Secret,
    token: &Secret,
    token_secret: &Secret,
) -> String {
    format!(
        "OAuth oauth_consumer_key=\"{consumer_key}\", oauth_token=\"{}\", \
         oauth_signature=\"{}%26{}\"",
        token.expose(),
        consumer_secret.expose(),
        token_secret.expose()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth() -> Credentials {
        Credentials::OAuth1 {
            consumer_key: "ck".to_owned(),
            consumer_secret: Secret::new("cs"),
            token: Secret::new("tok"),
            token_secret: Secret::new("ts"),
        }
    }

    #[test]
    fn headers_of_each_kind() {
        let header = |credentials: &Credentials| {
            let value = credentials.authorization().expect("valid");
            assert!(value.is_sensitive());
            value.to_str().expect("ascii").to_owned()
        };
        assert_eq!(
            header(&oauth()),
            r#"OAuth oauth_consumer_key="ck", oauth_token="tok", oauth_signature="cs%26ts""#
        );
        assert_eq!(
            header(&Credentials::Token(Secret::new("legacy"))),
            "token legacy"
        );
        assert_eq!(
            header(&Credentials::ApiToken(Secret::new("api"))),
            "Bearer api"
        );
        let broken = Credentials::ApiToken(Secret::new("a\nb"));
        assert!(matches!(
            broken.authorization(),
            Err(CleverError::InvalidToken)
        ));
    }

    #[test]
    fn git_credentials_of_each_kind() {
        let legacy = Credentials::Token(Secret::new("legacy"));
        let git = legacy.git_credentials("Jenkins");
        assert_eq!(
            (git.user, git.password.expose(), git.after_challenge),
            ("Jenkins", "legacy", false)
        );
        let oauth = oauth();
        let git = oauth.git_credentials("Jenkins");
        assert_eq!(
            (git.user, git.password.expose(), git.after_challenge),
            ("tok", "ts", true)
        );
        let api = Credentials::ApiToken(Secret::new("api"));
        let git = api.git_credentials("Jenkins");
        assert_eq!(
            (git.user, git.password.expose(), git.after_challenge),
            ("Jenkins", "api", true)
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let oauth = Credentials::OAuth1 {
            consumer_key: "public-consumer".to_owned(),
            consumer_secret: Secret::new("hidden-1"),
            token: Secret::new("hidden-2"),
            token_secret: Secret::new("hidden-3"),
        };
        let shown = format!(
            "{oauth:?} {:?} {:?}",
            Credentials::Token(Secret::new("hidden-4")),
            Credentials::ApiToken(Secret::new("hidden-5"))
        );
        assert!(!shown.contains("hidden"), "{shown}");
        assert!(shown.contains("public-consumer"), "{shown}");
    }
}
