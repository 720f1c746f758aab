//! Clever Cloud as a [`Provider`]: one application per job, deployed by a
//! git push of its build context. Everything a runner does in Clever Cloud
//! goes through here; what the CI user and the operator read of it is
//! worded in [`messages`].

use std::collections::BTreeMap;
use std::time::Duration;

use paas_config::RunnerConfig;
use paas_core::naming::{self, AppOwner};
use paas_core::{App, FlavorTable, ListedApp, MachineListing, ReadyCheck, StepOutcome};
use paas_provider::{Access, AccessError, BoxFuture, CreateRequest, Provider, ProviderError};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::api::{
    App as CleverApp, CleverClient, CleverError, CreateApp, DeleteOutcome, DeploymentState,
};
use crate::{build_context, git_push};

pub mod messages;

/// How long a Docker instance version read from the catalogue is trusted.
const INSTANCE_VERSION_TTL: Duration = Duration::from_secs(600);
/// Timeout of a git push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// Clever Cloud for one `[[runners]]` entry (its `cc_*` settings).
pub struct CleverProvider {
    /// The runner's name, for logs.
    runner: String,
    client: CleverClient,
    /// For git pushes (the runner's `cc_tls_ca_file` applies).
    http: reqwest::Client,
    config: RunnerConfig,
    instance_version: Mutex<Option<(String, tokio::time::Instant)>>,
}

impl CleverProvider {
    /// `client` talks to `config.cc.api_url` for `config.cc.orga_id`;
    /// `http` carries the git pushes.
    pub fn new(config: RunnerConfig, client: CleverClient, http: reqwest::Client) -> Self {
        CleverProvider {
            runner: config.name.clone(),
            client,
            http,
            config,
            instance_version: Mutex::new(None),
        }
    }

    async fn instance_version(&self, refresh: bool) -> Result<String, CleverError> {
        let mut cached = self.instance_version.lock().await;
        if !refresh {
            if let Some((version, at)) = cached.as_ref() {
                if at.elapsed() < INSTANCE_VERSION_TTL {
                    return Ok(version.clone());
                }
            }
        }
        let version = self.client.docker_instance_version().await?;
        *cached = Some((version.clone(), tokio::time::Instant::now()));
        Ok(version)
    }

    /// The applications named `name` that the installation `system_id`
    /// owns (by the marker in their description): only those are adopted
    /// or deleted by name.
    async fn find_by_name(
        &self,
        name: &str,
        system_id: &str,
    ) -> Result<Vec<CleverApp>, CleverError> {
        Ok(self
            .client
            .list_apps()
            .await?
            .into_iter()
            .filter(|app| app.name == name)
            .filter(|app| {
                AppOwner::classify(app.description.as_deref(), system_id) == AppOwner::Ours
            })
            .collect())
    }

    async fn create_app(&self, request: CreateRequest<'_>) -> StepOutcome<App> {
        match self.create_app_inner(request).await {
            Ok(app) => StepOutcome::Done(app),
            Err(error) => {
                warn!(runner = %self.runner, app = request.name, %error, "application creation failed");
                StepOutcome::Failed {
                    transient: error.is_transient(),
                    user_message: messages::create_failed(&error),
                }
            }
        }
    }

    async fn create_app_inner(&self, request: CreateRequest<'_>) -> Result<App, CleverError> {
        let CreateRequest {
            job_id,
            name,
            flavor,
            may_exist,
            system_id,
        } = request;
        let existing = if may_exist {
            self.find_by_name(name, system_id).await?.into_iter().next()
        } else {
            None
        };
        let app = match existing {
            Some(app) => {
                info!(runner = %self.runner, app_id = %app.id, app = name, "adopting existing application");
                app
            }
            None => {
                let mut spec = CreateApp {
                    name: name.to_owned(),
                    zone: self.config.cc.zone.clone(),
                    instance_version: self.instance_version(false).await?,
                    instance_variant: self.config.cc.instance_variant_uuid.clone(),
                    flavor_api_name: flavor.api_name.clone(),
                    description: naming::owner_marker(job_id, system_id),
                };
                match self.client.create_app(&spec).await {
                    Err(error) if error.api_id() == Some(9017) => {
                        // The Docker version may have changed: read it again once.
                        spec.instance_version = self.instance_version(true).await?;
                        self.client.create_app(&spec).await?
                    }
                    other => other?,
                }
            }
        };
        let mut env = BTreeMap::new();
        env.insert("CC_MOUNT_DOCKER_SOCKET".to_owned(), "true".to_owned());
        env.extend(self.config.cc.extra_env.clone());
        self.client.set_env(&app.id, &env).await?;
        let weight = match &app.max_flavor {
            Some(max) => paas_core::weight_of_ram_mib(max.ram_mib),
            None => flavor.weight(),
        };
        info!(runner = %self.runner, app_id = %app.id, app = name, flavor = %flavor.name, "application created");
        Ok(App { id: app.id, weight })
    }

    /// Whether the application's deployment repository is ready (its URL
    /// then): one read of the application. The core paces the checks and
    /// ends the wait at `cc_deployment_repo_timeout`.
    async fn repository_ready(&self, app_id: &str) -> ReadyCheck {
        match self.client.get_app(app_id).await {
            Ok(app) if app.repo_state.as_deref() == Some("CREATED") => match app.http_url {
                Some(url) => ReadyCheck::Ready { target: url },
                None => ReadyCheck::Failed {
                    user_message: messages::no_deployment_url(app_id),
                },
            },
            Ok(_) => ReadyCheck::NotYet,
            Err(error) if error.is_transient() => {
                warn!(runner = %self.runner, app_id, %error, "reading application state failed");
                ReadyCheck::NotYet
            }
            Err(error) => ReadyCheck::Failed {
                user_message: messages::cannot_read_app(app_id, &error),
            },
        }
    }

    /// Pushes the build context to the deployment repository at `url`.
    async fn push_build_context(&self, app_id: &str, url: &str, payload: &str) -> StepOutcome<()> {
        let files = match build_context::files(
            &self.config.heptapod_runner_main_image,
            &self.config.inner_config,
            payload,
        )
        .and_then(|files| {
            let mut credentials = vec![&self.config.token];
            credentials.extend(self.config.cc.auth.secrets());
            credentials.extend(self.config.trace_watch.token.as_ref());
            build_context::check_no_credentials(&files, &credentials).map(|()| files)
        }) {
            Ok(files) => files,
            Err(error) => {
                return StepOutcome::Failed {
                    transient: false,
                    user_message: messages::cannot_prepare(&error),
                }
            }
        };
        let plain_http_host = git_push::plain_http_host(&self.config.cc.api_url);
        let git = self
            .client
            .credentials()
            .git_credentials(&self.config.cc.auth_user);
        let request = git_push::PushRequest {
            repo_url: url,
            user: git.user,
            password: git.password,
            auth_after_challenge: git.after_challenge,
            plain_http_host: plain_http_host.as_deref(),
            files: &files,
            message: "Job definition",
            author_name: "Heptapod Paas Runner",
            author_email: "paasrunner@heptapod.test",
            timestamp_secs: unix_now(),
        };
        match git_push::push(&self.http, &request, PUSH_TIMEOUT).await {
            Ok(git_push::PushOutcome::Pushed { commit }) => {
                info!(runner = %self.runner, app_id, %commit, "build context pushed");
                StepOutcome::Done(())
            }
            Ok(git_push::PushOutcome::AlreadyDeployed { head }) => {
                warn!(runner = %self.runner, app_id, %head, "deployment branch already present: not pushing again");
                StepOutcome::Done(())
            }
            Err(error) => {
                warn!(runner = %self.runner, app_id, %error, "git push failed");
                StepOutcome::Failed {
                    transient: error.is_transient(),
                    user_message: messages::push_failed(&error),
                }
            }
        }
    }

    async fn delete_app(
        &self,
        app_id: Option<&str>,
        name: &str,
        system_id: &str,
    ) -> StepOutcome<()> {
        let result = async {
            let ids: Vec<String> = match app_id {
                Some(id) => vec![id.to_owned()],
                None => self
                    .find_by_name(name, system_id)
                    .await?
                    .into_iter()
                    .map(|app| app.id)
                    .collect(),
            };
            for id in ids {
                match self.client.delete_app(&id).await? {
                    DeleteOutcome::Deleted => info!(runner = %self.runner, app_id = %id, app = name, "application deleted"),
                    DeleteOutcome::AlreadyGone => {
                        info!(runner = %self.runner, app_id = %id, app = name, "application already gone")
                    }
                }
            }
            Ok::<(), CleverError>(())
        }
        .await;
        match result {
            Ok(()) => StepOutcome::Done(()),
            Err(error) => {
                warn!(runner = %self.runner, app = name, %error, "application deletion failed");
                StepOutcome::Failed {
                    transient: error.is_transient(),
                    user_message: error.user_message(),
                }
            }
        }
    }

    async fn list_owned_apps(
        &self,
        runner_key: &str,
        default_weight: f64,
        system_id: &str,
    ) -> Result<Vec<ListedApp>, CleverError> {
        let now_ms = unix_now_ms();
        Ok(self
            .client
            .list_apps()
            .await?
            .into_iter()
            .filter(|app| naming::job_id_of(&app.name, runner_key).is_some())
            .map(|app| ListedApp {
                weight: app
                    .max_flavor
                    .as_ref()
                    .map(|flavor| paas_core::weight_of_ram_mib(flavor.ram_mib))
                    .unwrap_or(default_weight),
                owner: AppOwner::classify(app.description.as_deref(), system_id),
                age: app.creation_date_ms.map(|created| age_at(created, now_ms)),
                id: app.id,
                name: app.name,
                created_ms: app.creation_date_ms,
            })
            .collect())
    }

    /// The cloud's batch signal: one listing of the organisation's
    /// deployments says which machines' tasks ended. A 404 or an answer of
    /// another shape means the cloud has no such listing (per-job pacing
    /// then, see `paas_core::WatchConfig`); the states it gives are
    /// UNVERIFIED for the real Clever Cloud ([`DeploymentState`]), so an
    /// end only triggers a coordinator check.
    async fn machines(&self) -> MachineListing {
        match self.client.organisation_deployments().await {
            Ok(states) => MachineListing::Listed {
                ended: states
                    .into_iter()
                    .filter(|(_, state)| matches!(state, DeploymentState::Ended(_)))
                    .map(|(app_id, _)| app_id)
                    .collect(),
            },
            Err(error)
                if error.status() == Some(404) || matches!(error, CleverError::Decode { .. }) =>
            {
                warn!(runner = %self.runner, %error, "the cloud offers no listing of deployments: running jobs are checked one by one, paced by age");
                MachineListing::Unsupported
            }
            Err(error) => {
                debug!(runner = %self.runner, %error, "could not list deployments");
                MachineListing::Failed
            }
        }
    }

    async fn access(&self, index: usize) -> Result<Access, AccessError> {
        let orga = &self.config.cc.orga_id;
        match self.client.list_apps().await {
            Ok(apps) => Ok(Access {
                account: orga.clone(),
                machines: apps.len(),
            }),
            Err(error) => Err(
                match messages::access_refused(&error, orga, index, self.config.cc.auth.token_key())
                {
                    Some(message) => AccessError::Refused(message),
                    None => AccessError::Failed(provider_error(&error)),
                },
            ),
        }
    }
}

impl Provider for CleverProvider {
    fn name(&self) -> &'static str {
        "Clever Cloud"
    }

    fn flavors(&self) -> BoxFuture<'_, Result<FlavorTable, ProviderError>> {
        Box::pin(async move {
            let flavors = self
                .client
                .flavors(
                    &self.config.cc.flavor_context,
                    &self.config.cc.flavor_name_prefix,
                )
                .await
                .map_err(|error| provider_error(&error))?;
            Ok(FlavorTable::new(flavors))
        })
    }

    fn empty_catalogue_message(&self) -> String {
        messages::empty_catalogue(&self.config.cc.api_url, &self.config.cc.flavor_name_prefix)
    }

    fn create_or_adopt<'a>(
        &'a self,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, StepOutcome<App>> {
        Box::pin(self.create_app(request))
    }

    fn check_ready<'a>(&'a self, app_id: &'a str) -> BoxFuture<'a, ReadyCheck> {
        Box::pin(self.repository_ready(app_id))
    }

    fn deploy<'a>(
        &'a self,
        app_id: &'a str,
        target: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, StepOutcome<()>> {
        Box::pin(self.push_build_context(app_id, target, payload))
    }

    fn delete<'a>(
        &'a self,
        app_id: Option<&'a str>,
        name: &'a str,
        system_id: &'a str,
    ) -> BoxFuture<'a, StepOutcome<()>> {
        Box::pin(self.delete_app(app_id, name, system_id))
    }

    fn list_owned<'a>(
        &'a self,
        runner_key: &'a str,
        default_weight: f64,
        system_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ListedApp>, ProviderError>> {
        Box::pin(async move {
            self.list_owned_apps(runner_key, default_weight, system_id)
                .await
                .map_err(|error| provider_error(&error))
        })
    }

    fn list_machines(&self) -> BoxFuture<'_, MachineListing> {
        Box::pin(self.machines())
    }

    fn check_access(&self, index: usize) -> BoxFuture<'_, Result<Access, AccessError>> {
        Box::pin(self.access(index))
    }
}

fn provider_error(error: &CleverError) -> ProviderError {
    ProviderError {
        message: error.to_string(),
        transient: error.is_transient(),
    }
}

/// Age of something created at `created_ms` (Unix epoch, ms) at `now_ms`;
/// a date in the future (clocks apart) makes it brand new.
pub fn age_at(created_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms.saturating_sub(created_ms)).unwrap_or(0))
}

/// Now, in milliseconds since the Unix epoch.
fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
