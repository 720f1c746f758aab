//! Per-runner IO handles: the coordinator client and the Clever Cloud
//! provider of each `[[runners]]` entry, and the steps they perform.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paas_clever::api::{
    App as CleverApp, CleverClient, CleverError, CreateApp, Credentials, DeleteOutcome,
};
use paas_clever::{build_context, git_push};
use paas_config::RunnerConfig;
use paas_core::naming::{self, AppOwner};
use paas_core::{messages, App, Flavor, FlavorTable, ListedApp, Secret, StepOutcome};
use paas_gitlab::CoordinatorClient;
use tokio::sync::Mutex;
use tracing::{info, warn};

/// How long a Docker instance version read from the catalogue is trusted.
const INSTANCE_VERSION_TTL: Duration = Duration::from_secs(600);
/// Timeout of a git push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the readiness check made at the end of the repository wait may
/// take beyond `cc_deployment_repo_timeout`.
const LAST_CHECK_GRACE: Duration = Duration::from_secs(2);

/// Everything needed to act for one `[[runners]]` entry.
pub struct RunnerIo {
    pub name: String,
    /// First 8 characters of the runner token.
    pub key: String,
    pub token: Secret,
    pub coordinator: CoordinatorClient,
    pub clever: CleverClient,
    pub http: reqwest::Client,
    pub config: RunnerConfig,
    instance_version: Mutex<Option<(String, tokio::time::Instant)>>,
}

impl RunnerIo {
    pub fn new(config: RunnerConfig, http: reqwest::Client) -> anyhow::Result<RunnerIo> {
        // Private certificate authorities (`tls-ca-file`, `cc_tls_ca_file`)
        // need clients of their own; the shared one otherwise.
        let (coordinator_http, http) = crate::tls::clients_for(&config, &http)?;
        let coordinator = CoordinatorClient::new(&config.url, coordinator_http)
            .map_err(|e| anyhow::anyhow!("runner {:?}: coordinator url: {e}", config.name))?
            .with_observer(crate::metrics::coordinator_observer(&config.name));
        let clever = CleverClient::with_credentials(
            &config.cc.api_url,
            &config.cc.orga_id,
            clever_credentials(&config.cc.auth),
            http.clone(),
        )
        .map_err(|e| anyhow::anyhow!("runner {:?}: cc_api_url: {e}", config.name))?
        .with_observer(crate::metrics::cloud_observer());
        Ok(RunnerIo {
            name: config.name.clone(),
            key: config.unique_id(),
            token: config.token.clone(),
            coordinator,
            clever,
            http,
            config,
            instance_version: Mutex::new(None),
        })
    }

    /// Every secret of this runner's configuration (runner token, Clever
    /// Cloud credentials, watch token), to scrub from outside text
    /// ([`paas_core::sanitize`]).
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = vec![&self.token];
        secrets.extend(self.config.cc.auth.secrets());
        secrets.extend(self.config.trace_watch.token.as_ref());
        secrets
    }

    /// The runner's flavor catalogue.
    pub async fn flavors(&self) -> Result<FlavorTable, CleverError> {
        let flavors = self
            .clever
            .flavors(
                &self.config.cc.flavor_context,
                &self.config.cc.flavor_name_prefix,
            )
            .await?;
        Ok(FlavorTable::new(flavors))
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
        let version = self.clever.docker_instance_version().await?;
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
            .clever
            .list_apps()
            .await?
            .into_iter()
            .filter(|app| app.name == name)
            .filter(|app| {
                AppOwner::classify(app.description.as_deref(), system_id) == AppOwner::Ours
            })
            .collect())
    }

    /// Creates (or adopts, when `may_exist`) the application of job
    /// `job_id`, marked as owned by the installation `system_id`, and sets
    /// its environment.
    pub async fn create_app(
        &self,
        job_id: u64,
        name: &str,
        flavor: &Flavor,
        may_exist: bool,
        system_id: &str,
    ) -> StepOutcome<App> {
        match self
            .create_app_inner(job_id, name, flavor, may_exist, system_id)
            .await
        {
            Ok(app) => StepOutcome::Done(app),
            Err(error) => {
                warn!(runner = %self.name, app = name, %error, "application creation failed");
                StepOutcome::Failed {
                    transient: error.is_transient(),
                    user_message: create_message(&error),
                }
            }
        }
    }

    async fn create_app_inner(
        &self,
        job_id: u64,
        name: &str,
        flavor: &Flavor,
        may_exist: bool,
        system_id: &str,
    ) -> Result<App, CleverError> {
        let existing = if may_exist {
            self.find_by_name(name, system_id).await?.into_iter().next()
        } else {
            None
        };
        let app = match existing {
            Some(app) => {
                info!(runner = %self.name, app_id = %app.id, app = name, "adopting existing application");
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
                match self.clever.create_app(&spec).await {
                    Err(error) if error.api_id() == Some(9017) => {
                        // The Docker version may have changed: read it again once.
                        spec.instance_version = self.instance_version(true).await?;
                        self.clever.create_app(&spec).await?
                    }
                    other => other?,
                }
            }
        };
        let mut env = BTreeMap::new();
        env.insert("CC_MOUNT_DOCKER_SOCKET".to_owned(), "true".to_owned());
        env.extend(self.config.cc.extra_env.clone());
        self.clever.set_env(&app.id, &env).await?;
        let weight = match &app.max_flavor {
            Some(max) => paas_core::weight_of_ram_mib(max.ram_mib),
            None => flavor.weight(),
        };
        info!(runner = %self.name, app_id = %app.id, app = name, flavor = %flavor.name, "application created");
        Ok(App { id: app.id, weight })
    }

    /// Pushes the build context to the deployment repository at `url`
    /// (once [`RunnerIo::wait_for_repository`] gave it).
    pub async fn push_build_context(
        &self,
        app_id: &str,
        url: &str,
        payload: &str,
    ) -> StepOutcome<()> {
        let files = match build_context::files(
            &self.config.heptapod_runner_main_image,
            &self.config.inner_config,
            payload,
        )
        .and_then(|files| {
            let credentials = self.secrets();
            build_context::check_no_credentials(&files, &credentials).map(|()| files)
        }) {
            Ok(files) => files,
            Err(error) => {
                return StepOutcome::Failed {
                    transient: false,
                    user_message: format!("Could not prepare the job for its machine: {error}"),
                }
            }
        };
        let plain_http_host = git_push::plain_http_host(&self.config.cc.api_url);
        let git = self
            .clever
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
                info!(runner = %self.name, app_id, %commit, "build context pushed");
                StepOutcome::Done(())
            }
            Ok(git_push::PushOutcome::AlreadyDeployed { head }) => {
                warn!(runner = %self.name, app_id, %head, "deployment branch already present: not pushing again");
                StepOutcome::Done(())
            }
            Err(error) => {
                warn!(runner = %self.name, app_id, %error, "git push failed");
                StepOutcome::Failed {
                    transient: error.is_transient(),
                    user_message: format!(
                        "Could not deploy the job to its Clever Cloud application: {error}"
                    ),
                }
            }
        }
    }

    /// The deployment repository's URL once the application says it is
    /// created, within `cc_deployment_repo_timeout`; then push with
    /// [`RunnerIo::push_build_context`].
    ///
    /// The wait lasts `cc_deployment_repo_timeout` and no longer: each
    /// readiness check is cut at the deadline (plus [`LAST_CHECK_GRACE`] for
    /// the last one), and a repository still not ready then is a final
    /// failure, not a transient one, so the core does not wait all over again.
    pub async fn wait_for_repository(&self, app_id: &str) -> Result<String, StepOutcome<()>> {
        let timeout = self.config.cc.deployment_repo_timeout;
        let step = self
            .config
            .cc
            .deployment_repo_wait_step
            .max(Duration::from_millis(10));
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        loop {
            let check_deadline = deadline.max(tokio::time::Instant::now()) + LAST_CHECK_GRACE;
            match tokio::time::timeout_at(check_deadline, self.clever.get_app(app_id)).await {
                Ok(Ok(app)) if app.repo_state.as_deref() == Some("CREATED") => {
                    return match app.http_url {
                        Some(url) => Ok(url),
                        None => Err(StepOutcome::Failed {
                            transient: false,
                            user_message: format!(
                                "The Clever Cloud application {app_id} has no git deployment URL."
                            ),
                        }),
                    };
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) if error.is_transient() => {
                    warn!(runner = %self.name, app_id, %error, "reading application state failed");
                }
                Ok(Err(error)) => {
                    return Err(StepOutcome::Failed {
                        transient: false,
                        user_message: format!(
                            "Clever Cloud: cannot read application {app_id}: {}",
                            error.user_message()
                        ),
                    })
                }
                Err(_elapsed) => {
                    warn!(runner = %self.name, app_id, "reading application state: no answer before the deadline");
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                warn!(
                    runner = %self.name,
                    app_id,
                    waited_secs = now.duration_since(started).as_secs_f64(),
                    timeout_secs = timeout.as_secs_f64(),
                    "deployment repository not ready within cc_deployment_repo_timeout"
                );
                // Final: the wait already lasted its whole configured time.
                return Err(StepOutcome::Failed {
                    transient: false,
                    user_message: messages::deployment_repo_not_ready(app_id, timeout),
                });
            }
            // The last check is made at the deadline itself.
            tokio::time::sleep_until((now + step).min(deadline)).await;
        }
    }

    /// The runner's applications (named `hpd-job-<key>-<job id>`) in the
    /// cloud, whoever owns them, each with its owner as seen by the
    /// installation `system_id` and its age. `default_weight` stands for an
    /// application whose flavor is unknown.
    pub async fn list_own_apps(
        &self,
        default_weight: f64,
        system_id: &str,
    ) -> Result<Vec<ListedApp>, CleverError> {
        let now_ms = unix_now_ms();
        Ok(self
            .clever
            .list_apps()
            .await?
            .into_iter()
            .filter(|app| naming::job_id_of(&app.name, &self.key).is_some())
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

    /// Deletes the application by id, or every application named `name`
    /// that the installation `system_id` owns.
    pub async fn delete_app(
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
                match self.clever.delete_app(&id).await? {
                    DeleteOutcome::Deleted => info!(runner = %self.name, app_id = %id, app = name, "application deleted"),
                    DeleteOutcome::AlreadyGone => {
                        info!(runner = %self.name, app_id = %id, app = name, "application already gone")
                    }
                }
            }
            Ok::<(), CleverError>(())
        }
        .await;
        match result {
            Ok(()) => StepOutcome::Done(()),
            Err(error) => {
                warn!(runner = %self.name, app = name, %error, "application deletion failed");
                StepOutcome::Failed {
                    transient: error.is_transient(),
                    user_message: error.user_message(),
                }
            }
        }
    }
}

/// What the CI user reads when the cloud refuses to create the machine.
fn create_message(error: &CleverError) -> String {
    format!(
        "Clever Cloud could not create the machine for this job: {}",
        error.user_message()
    )
}

/// Age of something created at `created_ms` (Unix epoch, ms) at `now_ms`;
/// a date in the future (clocks apart) makes it brand new.
pub fn age_at(created_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms.saturating_sub(created_ms)).unwrap_or(0))
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_now_ms() -> i64 {
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

/// The runners of a configuration, shared by the driver's tasks.
/// Each runner's IO, by [`paas_core::RunnerIdx`]. A configuration reload
/// replaces the vector (appending new runners, never moving one); calls
/// under way keep the handles they started with.
pub type Runners = Arc<Vec<Arc<RunnerIo>>>;

/// The API client's form of a runner's credentials.
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
