//! Clever Cloud API client for one organisation: the public catalogue, and the applications that run jobs.
//!
//! It authenticates with one of the three [`Credentials`]: the legacy
//! `Authorization: token <cc_token>` scheme that heptapod-paas-runner
//! configurations carry (`reference/clever-cloud-api.md` §2.3), OAuth 1
//! PLAINTEXT or a `Bearer` API token, as the official clients do
//! (`docs/protocol-notes.md` §3.a). Every call is a single attempt
//! bounded by a timeout (30 s unless [`CleverClient::with_timeout`] says
//! otherwise): the caller owns retries, and [`CleverError::is_transient`]
//! tells which failures are worth one. In particular a `create_app` that
//! timed out may have created the application; the caller lists
//! applications by name before trying again.
//!
//! Responses are read leniently: unknown fields are ignored and missing
//! optional ones become `None`, since the API is not formally specified.
//! No secret appears in errors, logs or `Debug` output.
//!
//! UNVERIFIED (reference §2.3, §11): the `token` scheme appears in no public
//! document and no official client; who issues such tokens, their scope and
//! lifetime are unknown. Clever Cloud may stop accepting it, which would
//! show as [`CleverError::Unauthorized`]: OAuth 1 or an API token then.

use paas_core::{sanitize, Flavor, Secret};
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

mod auth;
mod deployments;
mod error;
mod parse;
mod transport;

pub use auth::{Credentials, GitCredentials};
pub use deployments::DeploymentState;
use error::missing_id;
pub use error::CleverError;
use parse::{lenient_u64, parse_app, ListedEntry};
pub use transport::MAX_ERROR_BODY_BYTES;
use transport::{check_id, Auth, MAX_FLAVOR_CPUS, MAX_FLAVOR_RAM_MIB, MAX_QUOTED_CHARS};

/// Timeout of one API call unless [`CleverClient::with_timeout`] sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Client of the Clever Cloud API for one organisation.
#[derive(Clone)]
pub struct CleverClient {
    http: reqwest::Client,
    api_url: url::Url,
    orga_id: String,
    /// The `Authorization` header of [`Credentials::authorization`].
    authorization: HeaderValue,
    /// The credentials, to scrub their secrets from the API's messages.
    credentials: Credentials,
    timeout: Duration,
    /// After a 429, every call of this client (and its clones) waits until
    /// then: a rate limit slows the whole API down, not one call.
    paused_until: std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    /// Told of every request (metrics).
    observer: Option<RequestObserver>,
}

/// Called once per API request with its action (one of a fixed set of
/// names, such as `create application`) and the HTTP status of the answer
/// (`None`: no answer).
pub type RequestObserver = std::sync::Arc<dyn Fn(&'static str, Option<u16>) + Send + Sync>;

/// What [`CleverClient::create_app`] needs to create a job's application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateApp {
    /// Application name; Clever Cloud does not make names unique.
    pub name: String,
    /// Zone, e.g. `par`.
    pub zone: String,
    /// Version of the Docker offer, from [`CleverClient::docker_instance_version`].
    pub instance_version: String,
    /// Variant UUID (`cc_instance_variant_uuid`, the Heptapod Runner variant).
    pub instance_variant: String,
    /// Flavor name as the API knows it, e.g. `heptapod-runner-M`.
    pub flavor_api_name: String,
    /// `description`: free text kept with the application (the owner
    /// marker of the installation; see `paas_core::naming`). Empty: not
    /// sent, like the reference runner.
    pub description: String,
}

/// An application, as far as the runner cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// `app_<uuid>`.
    pub id: String,
    pub name: String,
    /// `deployment.repoState`: `CREATING`, then `CREATED` once the git
    /// repository accepts pushes.
    pub repo_state: Option<String>,
    /// `deployment.httpUrl`: the git repository to push to.
    pub http_url: Option<String>,
    /// `instance.maxFlavor`: the size of the VM.
    pub max_flavor: Option<AppFlavor>,
    /// `creationDate`, in milliseconds since the Unix epoch.
    pub creation_date_ms: Option<i64>,
    /// `description`, as given at creation.
    pub description: Option<String>,
}

/// The flavor of an existing application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFlavor {
    /// API name, e.g. `heptapod-runner-M`.
    pub name: String,
    pub ram_mib: u64,
    pub cpus: u32,
}

/// Result of a successful [`CleverClient::delete_app`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// The API reported the application unknown (HTTP 404).
    AlreadyGone,
}

impl fmt::Debug for CleverClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleverClient")
            .field("api_url", &self.api_url.as_str())
            .field("orga_id", &self.orga_id)
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CleverClient {
    /// A client of `api_url` (`cc_api_url`, which includes `/v2`) for the
    /// organisation `orga_id`, authenticated by the legacy `token`
    /// (`cc_token`).
    pub fn new(
        api_url: &str,
        orga_id: &str,
        token: Secret,
        http: reqwest::Client,
    ) -> Result<Self, CleverError> {
        Self::with_credentials(api_url, orga_id, Credentials::Token(token), http)
    }

    /// A client of `api_url` for `orga_id` with any kind of credentials.
    /// With an API token, `api_url` is the API bridge's (`/v2` included).
    pub fn with_credentials(
        api_url: &str,
        orga_id: &str,
        credentials: Credentials,
        http: reqwest::Client,
    ) -> Result<Self, CleverError> {
        let api_url = url::Url::parse(api_url)
            .map_err(|err| CleverError::InvalidUrl(format!("{api_url:?}: {err}")))?;
        if !matches!(api_url.scheme(), "http" | "https") || api_url.cannot_be_a_base() {
            return Err(CleverError::InvalidUrl(format!(
                "{:?} is not an http(s) base URL",
                api_url.as_str()
            )));
        }
        check_id("organisation", orga_id)?;
        let authorization = credentials.authorization()?;
        Ok(CleverClient {
            http,
            api_url,
            orga_id: orga_id.to_owned(),
            authorization,
            credentials,
            timeout: DEFAULT_TIMEOUT,
            paused_until: Default::default(),
            observer: None,
        })
    }

    /// The same client, telling `observer` of every request.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The same client with another timeout for each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn orga_id(&self) -> &str {
        &self.orga_id
    }

    /// The credentials this client sends (for the git credentials they
    /// imply: [`Credentials::git_credentials`]).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Flavors of the catalogue context `context` (e.g. `heptapod-runner`)
    /// whose name starts with `name_prefix` (e.g. `heptapod-runner-`) and
    /// that are available, named by the rest of their name (`M`).
    ///
    /// Authenticated as the official clients always are (the reference
    /// runner calls it anonymously; whether the real API answers anonymous
    /// calls is UNVERIFIED), anonymous again only if the credentials are
    /// refused. Entries of other contexts, unavailable ones and ones
    /// without a size are skipped.
    pub async fn flavors(
        &self,
        context: &str,
        name_prefix: &str,
    ) -> Result<Vec<Flavor>, CleverError> {
        const ACTION: &str = "list flavors";
        let mut url = self.endpoint(&["products", "flavors"])?;
        url.query_pairs_mut().append_pair("context", context);
        // Each entry is parsed on its own: one broken entry (a number out
        // of range, a wrong type) is skipped, not the whole catalogue.
        let raw_entries: Vec<Box<serde_json::value::RawValue>> =
            self.catalogue_json(ACTION, url).await?;
        let mut flavors = Vec::new();
        for raw in &raw_entries {
            let entry: Value = match serde_json::from_str(raw.get()) {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(
                        error = %sanitize(&error.to_string(), MAX_QUOTED_CHARS, &[]),
                        "unreadable flavor in the catalogue, ignored"
                    );
                    continue;
                }
            };
            let Some(api_name) = entry.get("name").and_then(Value::as_str) else {
                continue;
            };
            let Some(name) = api_name
                .strip_prefix(name_prefix)
                .filter(|name| !name.is_empty())
            else {
                continue;
            };
            if entry.get("available").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let shown_name = sanitize(api_name, MAX_QUOTED_CHARS, &[]);
            if shown_name != api_name {
                // A name that would need escaping is no flavor name.
                tracing::warn!(flavor = %shown_name, "flavor with a malformed name in the catalogue, ignored");
                continue;
            }
            let ram_mib = entry
                .get("mem")
                .and_then(lenient_u64)
                .filter(|mem| (1..=MAX_FLAVOR_RAM_MIB).contains(mem));
            let cpus = entry
                .get("cpus")
                .and_then(lenient_u64)
                .and_then(|c| u32::try_from(c).ok())
                .filter(|c| (1..=MAX_FLAVOR_CPUS).contains(c));
            let (Some(ram_mib), Some(cpus)) = (ram_mib, cpus) else {
                // A flavor without a sane size would weigh nothing (or
                // everything) in the quota.
                tracing::warn!(
                    flavor = api_name,
                    max_ram_mib = MAX_FLAVOR_RAM_MIB,
                    max_cpus = MAX_FLAVOR_CPUS,
                    "flavor without a sane mem or cpus in the catalogue, ignored"
                );
                continue;
            };
            flavors.push(Flavor {
                name: name.to_owned(),
                api_name: api_name.to_owned(),
                ram_mib,
                cpus,
            });
        }
        Ok(flavors)
    }

    /// Version of the Docker offer, to give as `instanceVersion` on creation:
    /// [`choose_docker_offer`] on `GET /v2/products/instances`,
    /// authenticated like [`CleverClient::flavors`].
    pub async fn docker_instance_version(&self) -> Result<String, CleverError> {
        const ACTION: &str = "read the docker offer";
        let url = self.endpoint(&["products", "instances"])?;
        let offers: Vec<Value> = self.catalogue_json(ACTION, url).await?;
        choose_docker_offer(&offers, "docker")
            .map(str::to_owned)
            .ok_or_else(|| CleverError::Decode {
                action: ACTION,
                detail: "no enabled Docker offer in the catalogue".to_owned(),
            })
    }

    /// Creates a one-instance Docker application of lifetime `TASK`,
    /// deployed by git, whose VM has flavor `spec.flavor_api_name`.
    pub async fn create_app(&self, spec: &CreateApp) -> Result<App, CleverError> {
        const ACTION: &str = "create application";
        // The fields the reference runner sends, in its order.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            zone: &'a str,
            instance_lifetime: &'a str,
            instance_type: &'a str,
            deploy: &'a str,
            instance_variant: &'a str,
            max_instances: u32,
            min_instances: u32,
            instance_version: &'a str,
            min_flavor: &'a str,
            max_flavor: &'a str,
            name: &'a str,
            // clever-tools always sends one (the name); the reference runner
            // none. The reference lists `description` in the application
            // object of GET and list answers; that the text is kept as sent
            // (no length cut, no rewriting) is UNVERIFIED.
            #[serde(skip_serializing_if = "str::is_empty")]
            description: &'a str,
        }
        let body = Body {
            zone: &spec.zone,
            instance_lifetime: "TASK",
            instance_type: "docker",
            deploy: "git",
            instance_variant: &spec.instance_variant,
            max_instances: 1,
            min_instances: 1,
            instance_version: &spec.instance_version,
            min_flavor: &spec.flavor_api_name,
            max_flavor: &spec.flavor_api_name,
            name: &spec.name,
            description: &spec.description,
        };
        let url = self.applications_endpoint(&[])?;
        // UNVERIFIED: whether success is 200 or 201; any status below 400 is.
        let app: Value = self
            .call_json(ACTION, Method::POST, url, Auth::Credentials, Some(&body))
            .await?;
        parse_app(&app).ok_or_else(|| missing_id(ACTION))
    }

    /// All applications of the organisation, including ones that are not
    /// the runner's. Entries without an id are skipped.
    pub async fn list_apps(&self) -> Result<Vec<App>, CleverError> {
        const ACTION: &str = "list applications";
        let url = self.applications_endpoint(&[])?;
        // Read into the used fields only (see `ListedFields`).
        let entries: Vec<ListedEntry> = self
            .call_json(ACTION, Method::GET, url, Auth::Credentials, None::<&()>)
            .await?;
        let listed = entries.len();
        let apps: Vec<App> = entries
            .into_iter()
            .filter_map(ListedEntry::into_app)
            .collect();
        if apps.len() != listed {
            tracing::warn!(
                skipped = listed - apps.len(),
                "applications without a plain Clever Cloud id in the list, ignored"
            );
        }
        Ok(apps)
    }

    /// One application; an unknown id gives an error for which
    /// [`CleverError::is_not_found`] is true.
    pub async fn get_app(&self, app_id: &str) -> Result<App, CleverError> {
        const ACTION: &str = "read application";
        let url = self.applications_endpoint(&[app_id])?;
        let app: Value = self
            .call_json(ACTION, Method::GET, url, Auth::Credentials, None::<&()>)
            .await?;
        parse_app(&app).ok_or_else(|| missing_id(ACTION))
    }

    /// Replaces the whole environment of the application by `env`. It is
    /// applied at deployment: set it before the push.
    pub async fn set_env(
        &self,
        app_id: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), CleverError> {
        const ACTION: &str = "set application environment";
        let url = self.applications_endpoint(&[app_id, "env"])?;
        // UNVERIFIED: the success status and body of PUT …/env are unknown;
        // like the reference runner, any status below 400 is success and
        // the body is not read.
        self.call(ACTION, Method::PUT, url, Auth::Credentials, Some(env))
            .await?;
        Ok(())
    }

    /// Deletes the application (its VM, repository and environment).
    ///
    /// Any HTTP 404 counts as "already gone", as for heptapod-paas-runner
    /// and `@clevercloud/client` 12's reads (its `DeleteApplicationCommand`
    /// itself has no 404 rule): an API that words its 404 differently must
    /// not make a deletion retry forever, and a wrong `cc_api_url` is caught
    /// at start (catalogue). UNVERIFIED: whether the instance teardown is
    /// done when the answer comes.
    pub async fn delete_app(&self, app_id: &str) -> Result<DeleteOutcome, CleverError> {
        const ACTION: &str = "delete application";
        let url = self.applications_endpoint(&[app_id])?;
        match self
            .call(ACTION, Method::DELETE, url, Auth::Credentials, None::<&()>)
            .await
        {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(err) if err.is_not_found() => {
                if err.api_id() != Some(error::ERROR_ID_NOT_FOUND) {
                    tracing::warn!(app_id, error = %err, "404 without Clever Cloud's not-found id on delete: taken as already gone");
                }
                Ok(DeleteOutcome::AlreadyGone)
            }
            Err(err) => Err(err),
        }
    }
}

/// The version of the offer of variant `slug` among `offers` (the answer
/// of `GET /v2/products/instances`), chosen as the official clients do
/// (clever-tools 4 `models/application.js` `getInstanceType`): offers that
/// are `enabled` and whose `variant.slug` is `slug`, the highest `version`
/// compared as text (lodash `sortBy` then `reverse`: the last of equal
/// ones). The reference runner's rule (the first offer named `Docker`) is
/// not kept: it ignores `enabled` and the order of the answer decides.
pub fn choose_docker_offer<'a>(offers: &'a [Value], slug: &str) -> Option<&'a str> {
    offers
        .iter()
        .filter(|offer| {
            offer.get("enabled").and_then(Value::as_bool) == Some(true)
                && offer.pointer("/variant/slug").and_then(Value::as_str) == Some(slug)
        })
        .filter_map(|offer| offer.get("version").and_then(Value::as_str))
        .filter(|version| !version.is_empty())
        .max_by(|a, b| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::error::api_error;
    use super::*;

    fn client(api_url: &str) -> Result<CleverClient, CleverError> {
        CleverClient::new(
            api_url,
            "orga_1",
            Secret::new("s3cret"),
            reqwest::Client::new(),
        )
    }

    #[test]
    fn endpoints_are_built_segment_by_segment() {
        for base in ["https://api.example/v2", "https://api.example/v2/"] {
            let client = client(base).unwrap();
            assert_eq!(
                client.endpoint(&["products", "flavors"]).unwrap().as_str(),
                "https://api.example/v2/products/flavors"
            );
            assert_eq!(
                client
                    .applications_endpoint(&["app_1", "env"])
                    .unwrap()
                    .as_str(),
                "https://api.example/v2/organisations/orga_1/applications/app_1/env"
            );
        }
        let client = client("https://api.example/v2").unwrap();
        for bad in ["", "..", "a/b", "app?x", "app 1"] {
            assert!(
                matches!(
                    client.applications_endpoint(&[bad]),
                    Err(CleverError::InvalidUrl(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            client("not a url"),
            Err(CleverError::InvalidUrl(_))
        ));
        assert!(matches!(
            client("mailto:x@example"),
            Err(CleverError::InvalidUrl(_))
        ));
        assert!(matches!(
            CleverClient::new(
                "https://api.example/v2",
                "orga/../x",
                Secret::new("t"),
                reqwest::Client::new()
            ),
            Err(CleverError::InvalidUrl(_))
        ));
        assert!(matches!(
            CleverClient::new(
                "https://api.example/v2",
                "orga_1",
                Secret::new("a\nb"),
                reqwest::Client::new()
            ),
            Err(CleverError::InvalidToken)
        ));
    }

    #[test]
    fn debug_hides_the_token() {
        let debug = format!("{:?}", client("https://api.example/v2").unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("[REDACTED]"));
    }

    #[test]
    fn error_bodies() {
        let token = Secret::new("s3cret-cc-token");
        let err = api_error(
            "create application",
            400,
            br#"{"id":9017,"message":"The specified instance does not exist","type":"error"}"#,
            &[&token],
        );
        assert_eq!(err.api_id(), Some(9017));
        assert_eq!(err.status(), Some(400));
        assert_eq!(
            err.user_message(),
            "Clever Cloud error 9017: The specified instance does not exist"
        );
        assert_eq!(
            err.to_string(),
            "create application: clever cloud api error (HTTP 400, id 9017): The specified instance does not exist"
        );
        assert!(!err.is_transient());

        let long = format!("<html>{}</html>", "x".repeat(2000));
        let err = api_error("list applications", 502, long.as_bytes(), &[&token]);
        let CleverError::Api {
            ref message,
            id: None,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert!(
            message.starts_with("<html>xxx")
                && message.ends_with("…[cut]")
                && message.chars().count() == MAX_QUOTED_CHARS + "…[cut]".chars().count(),
            "{message}"
        );
        assert!(err.is_transient());
        assert_eq!(
            api_error("x", 500, b"", &[&token]).user_message(),
            "Clever Cloud error (HTTP 500): (empty answer)"
        );
        // Hostile messages: forged lines, terminal codes and the token.
        let err = api_error(
            "create application",
            400,
            br#"{"id":1,"message":"no\n2026-01-01 INFO forged \u001b[2J with s3cret-cc-token"}"#,
            &[&token],
        );
        let message = err.user_message();
        assert_eq!(
            message,
            "Clever Cloud error 1: no\\n2026-01-01 INFO forged \\u{1b}[2J with [REDACTED]"
        );
        let err = api_error("x", 502, b"raw\x1b[31m s3cret-cc-token\r\n", &[&token]);
        assert!(!err.to_string().contains("s3cret-cc-token"), "{err}");
        assert!(
            !err.to_string()
                .chars()
                .any(paas_core::sanitize::is_unsafe_char),
            "{err}"
        );
    }

    #[test]
    fn lenient_numbers() {
        for (json, expect) in [
            ("4096", Some(4096)),
            ("4096.0", Some(4096)),
            ("\"4096\"", Some(4096)),
            ("4096.5", None),
            ("null", None),
            ("-1", None),
        ] {
            assert_eq!(
                lenient_u64(&serde_json::from_str(json).unwrap()),
                expect,
                "{json}"
            );
        }
    }

    #[test]
    fn docker_offer_is_chosen_as_the_official_clients_do() {
        let check = |offers: serde_json::Value, expect: Option<&str>| {
            let offers = offers.as_array().expect("array").clone();
            assert_eq!(choose_docker_offer(&offers, "docker"), expect, "{offers:?}");
        };
        let offer = |name: &str, slug: &str, version: &str, enabled: bool| {
            serde_json::json!({"name": name, "type": "docker", "version": version,
                "enabled": enabled, "variant": {"slug": slug, "id": "v"}})
        };
        // The highest version of the enabled ones, wherever it is listed:
        // the reference's "first named Docker" would take 20210101.
        check(
            serde_json::json!([
                offer("Docker", "docker", "20210101", true),
                offer("Docker", "docker", "20240101", true),
                offer("Docker", "docker", "20250101", false),
                offer("Node", "node", "20990101", true),
            ]),
            Some("20240101"),
        );
        // The slug decides, not the name; versions compare as text.
        check(
            serde_json::json!([
                offer("Containers", "docker", "9", true),
                offer("Docker", "docker", "10", true),
            ]),
            Some("9"),
        );
        check(
            serde_json::json!([offer("Docker", "docker", "1", false), {"name": "Docker"}]),
            None,
        );
        check(serde_json::json!([]), None);
    }
}
