//! Per-runner IO handles: the coordinator client and the cloud
//! [`Provider`] of each `[[runners]]` entry. [`provider_for`] is the one
//! place that maps the configuration's executor to a provider.

use std::sync::Arc;

use paas_clever::api::{CleverClient, Credentials};
use paas_clever::provider::CleverProvider;
use paas_config::{Executor, RunnerConfig};
use paas_core::Secret;
use paas_gitlab::CoordinatorClient;
use paas_provider::Provider;

/// Everything needed to act for one `[[runners]]` entry.
pub struct RunnerIo {
    pub name: String,
    /// First 8 characters of the runner token.
    pub key: String,
    pub token: Secret,
    pub coordinator: CoordinatorClient,
    /// The cloud that runs this runner's jobs.
    pub provider: Arc<dyn Provider>,
    pub config: RunnerConfig,
}

impl RunnerIo {
    pub fn new(config: RunnerConfig, http: reqwest::Client) -> anyhow::Result<RunnerIo> {
        // Private certificate authorities (`tls-ca-file`, `cc_tls_ca_file`)
        // need clients of their own; the shared one otherwise.
        let (coordinator_http, http) = crate::tls::clients_for(&config, &http)?;
        let coordinator = CoordinatorClient::new(&config.url, coordinator_http)
            .map_err(|e| anyhow::anyhow!("runner {:?}: coordinator url: {e}", config.name))?
            .with_observer(crate::metrics::coordinator_observer(&config.name));
        let provider = provider_for(&config, http)?;
        Ok(RunnerIo {
            name: config.name.clone(),
            key: config.unique_id(),
            token: config.token.clone(),
            coordinator,
            provider,
            config,
        })
    }

    /// Every secret of this runner's configuration (runner token,
    /// `cc_token`, watch token), to scrub from outside text
    /// ([`paas_core::sanitize`]).
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = vec![&self.token];
        secrets.extend(self.config.cc.auth.secrets());
        secrets.extend(self.config.trace_watch.token.as_ref());
        secrets
    }
}

/// The provider of a runner's executor: adding a cloud adds one arm here
/// (and one variant of [`Executor`]). `http` is the client for the cloud
/// (its private certificate authority applies).
pub fn provider_for(
    config: &RunnerConfig,
    http: reqwest::Client,
) -> anyhow::Result<Arc<dyn Provider>> {
    match config.executor {
        Executor::CleverDocker => {
            let client = CleverClient::with_credentials(
                &config.cc.api_url,
                &config.cc.orga_id,
                clever_credentials(&config.cc.auth),
                http.clone(),
            )
            .map_err(|e| anyhow::anyhow!("runner {:?}: cc_api_url: {e}", config.name))?
            .with_observer(crate::metrics::cloud_observer());
            Ok(Arc::new(CleverProvider::new(config.clone(), client, http)))
        }
    }
}

/// The runners of a configuration, shared by the driver's tasks.
/// Each runner's IO, by [`paas_core::RunnerIdx`]. A configuration reload
/// replaces the vector (appending new runners, never moving one); calls
/// under way keep the handles they started with.
pub type Runners = Arc<Vec<Arc<RunnerIo>>>;

/// The API client's form of a runner's Clever Cloud credentials.
fn clever_credentials(auth: &paas_config::CleverAuth) -> Credentials {
    match auth {
        paas_config::CleverAuth::Token(token) => Credentials::Token(token.clone()),
        paas_config::CleverAuth::OAuth1 {
            consumer_key,
            consumer_secret,
            token,
            token_secret,
        } => Credentials::OAuth1 {
            consumer_key: consumer_key.clone(),
            consumer_secret: consumer_secret.clone(),
            token: token.clone(),
            token_secret: token_secret.clone(),
        },
        paas_config::CleverAuth::ApiToken(token) => Credentials::ApiToken(token.clone()),
    }
}
