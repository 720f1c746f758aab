//! A Clever Cloud API simulator: products, applications, env, git deployment
//! repositories and simulated VMs, over real HTTP on loopback.
//!
//! It follows `reference/clever-cloud-api.md` (what Clever Cloud really
//! does), not the convenience of our runner: the unmodified reference runner
//! (heptapod-paas-runner 1.1.1) can run jobs end to end against it. Where the
//! reference is unsure, comments say UNVERIFIED.
//!
//! Layout: this module holds the public handle ([`CleverSim`]) and its
//! settings; `state.rs` the shared state and its rules; `http.rs` (with
//! `http/create.rs`, `http/env.rs`) the `/v2` routes; `catalogue.rs` the
//! products; `http/deployments.rs` the organisation's deployments; [`git_http`]
//! serves the deployment repositories and [`machines`] runs what a push
//! deploys. The children use this module; it uses none of them back but
//! through their entry points (`http::router`, `machines::spawn`).

mod auth;
mod catalogue;
pub mod git_http;
mod http;
mod inspect;
pub mod machines;
mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

pub use auth::AuthKinds;
pub use catalogue::{
    SimFlavor, DEFAULT_DOCKER_VERSION, DEFAULT_FLAVOR_NAME, DOCKER_VARIANT_ID,
    HEPTAPOD_RUNNER_VARIANT_ID,
};

use machines::VmRecord;
use state::{InjectedCreateError, SimState};

/// Configuration of a [`CleverSim`].
#[derive(Debug, Clone)]
pub struct CleverConfig {
    /// The only organisation the token may act on.
    pub orga_id: String,
    /// Legacy token: `Authorization: token <token>` (scheme of the
    /// reference runner); also the git password that goes with it.
    pub token: String,
    /// API token: `Authorization: Bearer <api_token>`.
    pub api_token: String,
    /// OAuth 1 consumer (key, secret) and token (token, secret): the API
    /// checks the PLAINTEXT signature, git takes the token and its secret
    /// as Basic user and password (as clever-tools pushes).
    pub oauth_consumer_key: String,
    pub oauth_consumer_secret: String,
    pub oauth_token: String,
    pub oauth_secret: String,
    /// Which of the three kinds are accepted (all by default).
    pub auth_kinds: AuthKinds,
    /// If set, the HTTP Basic user of git requests must be this one (when
    /// credentials are sent at all). The reference runner uses `Jenkins`.
    pub git_user: Option<String>,
    /// Git requests without credentials get 401 with a Basic challenge (git
    /// then retries with the URL's credentials). When false, credentials are
    /// checked only if sent: the reference runner puts them in the URL only
    /// for `https://` deployment URLs, so it sends none to this plain-HTTP
    /// simulator.
    pub require_git_credentials: bool,
    /// `deployment.repoState` goes from `CREATING` to `CREATED` this long
    /// after creation.
    pub repo_ready_delay: Duration,
    /// After a push to master: VM boot and image build, before the inner
    /// runner starts.
    pub boot_delay: Duration,
    pub faults: CleverFaults,
    /// Seed of the fault injection and of the generated ids.
    pub seed: u64,
    /// The flavor catalogue ([`SimFlavor::default_catalogue`]).
    pub flavors: Vec<SimFlavor>,
    /// Directory where the bare deployment repositories live.
    pub git_root: PathBuf,
}

impl CleverConfig {
    /// A configuration with quick delays, no faults, the default catalogue,
    /// `require_git_credentials` false and no git user check.
    pub fn new(git_root: PathBuf) -> CleverConfig {
        CleverConfig {
            orga_id: "orga_00000000-0000-4000-8000-000000000001".to_owned(),
            token: "sim-clever-token".to_owned(),
            api_token: "sim-clever-api-token".to_owned(),
            oauth_consumer_key: "sim-oauth-consumer-key".to_owned(),
            oauth_consumer_secret: "sim-oauth-consumer-secret".to_owned(),
            oauth_token: "sim-oauth-token".to_owned(),
            oauth_secret: "sim-oauth-secret".to_owned(),
            auth_kinds: AuthKinds::ALL,
            git_user: None,
            require_git_credentials: false,
            repo_ready_delay: Duration::from_millis(100),
            boot_delay: Duration::from_millis(200),
            faults: CleverFaults::default(),
            seed: 0,
            flavors: SimFlavor::default_catalogue(),
            git_root,
        }
    }
}

/// Injected API faults, drawn from a generator seeded with
/// [`CleverConfig::seed`], on authenticated `/v2` calls only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleverFaults {
    /// Probability of a 500 answered before the call takes effect.
    pub error_rate: f64,
    /// Probability of a 500 answered after the call took effect (e.g. the
    /// application was created but the client sees an error).
    pub error_after_effect_rate: f64,
    /// Added to every `/v2` call.
    pub latency: Duration,
}

/// What the simulator knows of one application, live or deleted.
#[derive(Debug, Clone)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    /// API name of the max flavor, which sizes the VM.
    pub flavor: String,
    pub mem_mib: u64,
    pub cpus: u32,
    /// Weight of the flavor: (mem MiB / 1024) ^ 1.25.
    pub weight: f64,
    /// `REGULAR`, `TASK` or `MIGRATION`.
    pub lifetime: String,
    pub created_at: Instant,
    pub deleted_at: Option<Instant>,
    /// When `deployment.repoState` became `CREATED`.
    pub repo_ready_at: Option<Instant>,
    pub env: BTreeMap<String, String>,
    /// Pushes that moved `refs/heads/master`.
    pub pushes: u32,
    /// Head of master after the last push.
    pub commit_id: Option<String>,
    /// The VM of the latest deployment.
    pub vm: VmRecord,
}

impl AppRecord {
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }
}

/// Counters over the simulator's lifetime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleverStats {
    pub apps_created: u64,
    pub apps_deleted: u64,
    pub apps_live: u64,
    /// Summed weight of the live applications.
    pub live_weight: f64,
    /// Maximum over time of `live_weight`.
    pub max_live_weight: f64,
    pub max_live_apps: u64,
    /// Pushes that moved `refs/heads/master` (so started a deployment).
    pub pushes: u64,
    /// 500s injected by [`CleverFaults`], before or after effect.
    pub api_errors_injected: u64,
    /// Authenticated `/v2` calls received (including refused ones).
    pub api_calls: u64,
}

/// A running Clever Cloud simulator. Cheap to clone.
#[derive(Clone)]
pub struct CleverSim {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: CleverConfig,
    /// `http://127.0.0.1:PORT`, without `/v2`.
    base_url: String,
    state: Mutex<SimState>,
    changed: Notify,
    shutdown: watch::Sender<bool>,
    /// Client the simulated VMs use to reach coordinators.
    pub(crate) http: reqwest::Client,
    /// Bounds the concurrent `git http-backend` processes.
    pub(crate) git_slots: Arc<tokio::sync::Semaphore>,
    /// See [`CleverSim::set_git_url_base`].
    git_url_base: std::sync::RwLock<Option<String>>,
}

impl CleverSim {
    /// Serves the simulator on `listener` until [`CleverSim::shutdown`].
    pub async fn start(
        listener: tokio::net::TcpListener,
        config: CleverConfig,
    ) -> std::io::Result<CleverSim> {
        let local = listener.local_addr()?;
        let reachable = if local.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
        } else {
            local
        };
        tokio::fs::create_dir_all(&config.git_root).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(std::io::Error::other)?;
        let (shutdown, mut shutdown_rx) = watch::channel(false);
        let seed = config.seed;
        let sim = CleverSim {
            shared: Arc::new(Shared {
                config,
                git_url_base: std::sync::RwLock::new(None),
                base_url: format!("http://{reachable}"),
                state: Mutex::new(SimState::new(seed)),
                changed: Notify::new(),
                shutdown,
                http,
                git_slots: Arc::new(tokio::sync::Semaphore::new(git_http::MAX_GIT_PROCESSES)),
            }),
        };
        let router = http::router(sim.clone());
        tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown_rx.wait_for(|stopped| *stopped).await;
            };
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(%error, "clever simulator server failed");
            }
        });
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT/v2`, what goes into `cc_api_url`.
    pub fn api_url(&self) -> String {
        format!("{}/v2", self.shared.base_url)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The deployment repository URL of an application (`deployment.httpUrl`).
    pub fn git_url(&self, app_id: &str) -> String {
        let base = self
            .shared
            .git_url_base
            .read()
            .ok()
            .and_then(|base| base.clone());
        let base = base.as_deref().unwrap_or(&self.shared.base_url);
        format!("{base}/git/{app_id}.git")
    }

    /// From now on, `deployment.httpUrl` points under `base` (e.g.
    /// `http://other-host:port`) instead of the simulator: an API answer
    /// sending the deployment elsewhere, to test where credentials go.
    /// `None` restores the simulator's own repositories.
    pub fn set_git_url_base(&self, base: Option<&str>) {
        if let Ok(mut current) = self.shared.git_url_base.write() {
            *current = base.map(str::to_owned);
        }
    }

    pub fn config(&self) -> &CleverConfig {
        &self.shared.config
    }

    /// All applications ever created, in creation order.
    pub fn apps(&self) -> Vec<AppRecord> {
        let state = self.lock();
        state.apps.iter().map(|app| app.record.clone()).collect()
    }

    /// One application, live or deleted.
    pub fn app(&self, app_id: &str) -> Option<AppRecord> {
        let state = self.lock();
        let index = *state.index.get(app_id)?;
        Some(state.apps[index].record.clone())
    }

    pub fn stats(&self) -> CleverStats {
        self.lock().stats.clone()
    }

    /// Every later create whose name contains `name_contains` fails with
    /// `status` and the body `{"id": id, "message": message, "type": "error"}`,
    /// before taking effect, until [`CleverSim::clear_create_errors`].
    pub fn inject_create_error(&self, name_contains: &str, status: u16, id: i64, message: &str) {
        self.push_create_error(name_contains, status, id, message, None);
    }

    /// Like [`CleverSim::inject_create_error`], for the next `times` matching
    /// creates only.
    pub fn inject_create_error_times(
        &self,
        name_contains: &str,
        status: u16,
        id: i64,
        message: &str,
        times: u32,
    ) {
        self.push_create_error(name_contains, status, id, message, Some(times));
    }

    pub fn clear_create_errors(&self) {
        self.lock().create_errors.clear();
    }

    /// Applications whose name contains `name_contains` and whose repository
    /// is not ready yet keep `repoState` `CREATING` forever.
    pub fn set_repo_never_ready(&self, name_contains: &str) {
        self.lock().never_ready.push(name_contains.to_owned());
    }

    /// The version of the Docker offer; creates must send it.
    pub fn docker_version(&self) -> String {
        self.lock().docker_version.clone()
    }

    /// Publishes a new Docker offer version: creates naming the old one now
    /// fail with 9017, as after a real platform update (reference pitfall 2).
    pub fn set_docker_version(&self, version: &str) {
        self.lock().docker_version = version.to_owned();
    }

    /// Whether `GET /v2/organisations/{o}/deployments` is served (on by
    /// default); off, it answers 404 like an API without the listing.
    pub fn set_organisation_deployments(&self, served: bool) {
        self.lock().no_organisation_deployments = !served;
    }

    /// Waits until `pred` holds, re-checking on every state change, for at
    /// most `deadline`. Returns whether it held.
    pub async fn wait_until(&self, pred: impl Fn(&CleverSim) -> bool, deadline: Duration) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(self) {
                return true;
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return pred(self);
            }
        }
    }

    /// Stops serving and stops every VM. Applications stay recorded.
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        let state = self.lock();
        for app in &state.apps {
            if let Some(vm) = &app.vm {
                vm.stop();
            }
        }
    }

    fn push_create_error(
        &self,
        name_contains: &str,
        status: u16,
        id: i64,
        message: &str,
        remaining: Option<u32>,
    ) {
        self.lock().create_errors.push(InjectedCreateError {
            name_contains: name_contains.to_owned(),
            status,
            id,
            message: message.to_owned(),
            remaining,
        });
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the state half
        // updated in a way worse than a lost update; keep serving.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify_changed(&self) {
        self.shared.changed.notify_waiters();
    }

    pub(crate) fn repo_path(&self, app_id: &str) -> PathBuf {
        self.shared.config.git_root.join(format!("{app_id}.git"))
    }

    /// Whether git may be served for `app_id` now.
    pub(crate) fn git_access(&self, app_id: &str) -> GitAccess {
        let state = self.lock();
        let Some(&index) = state.index.get(app_id) else {
            return GitAccess::Unknown;
        };
        let record = &state.apps[index].record;
        if record.deleted_at.is_some() {
            GitAccess::Unknown
        } else if record.repo_ready_at.is_none() {
            GitAccess::NotReady
        } else {
            GitAccess::Ready
        }
    }

    /// Called by the git server after a push moved `refs/heads/master` to
    /// `commit`: starts (or queues) a deployment on the app's VM.
    pub(crate) fn record_push(&self, app_id: &str, commit: &str) {
        let mut state = self.lock();
        let Some(&index) = state.index.get(app_id) else {
            return;
        };
        if state.apps[index].record.deleted_at.is_some() {
            return;
        }
        state.stats.pushes += 1;
        let app = &mut state.apps[index];
        app.record.pushes += 1;
        app.record.commit_id = Some(commit.to_owned());
        let vm = app
            .vm
            .get_or_insert_with(|| machines::spawn(self.clone(), app_id.to_owned()));
        vm.deploy(commit);
        drop(state);
        self.notify_changed();
    }

    /// Updates the VM record of a live application; ignored once deleted
    /// (deletion writes the VM's final record itself).
    pub(crate) fn update_vm(&self, app_id: &str, update: impl FnOnce(&mut VmRecord)) {
        let mut state = self.lock();
        if let Some(&index) = state.index.get(app_id) {
            let record = &mut state.apps[index].record;
            if record.deleted_at.is_none() {
                update(&mut record.vm);
            }
        }
        drop(state);
        self.notify_changed();
    }
}

/// What the git server may do for an application.
pub(crate) enum GitAccess {
    /// Unknown or deleted.
    Unknown,
    /// `repoState` still `CREATING`.
    NotReady,
    Ready,
}
