//! A Clever Cloud API simulator: products, applications, env, git deployment
//! repositories and simulated VMs, over real HTTP on loopback.
//!
//! It follows `reference/clever-cloud-api.md` (what Clever Cloud really
//! does), not the convenience of our runner: the unmodified reference runner
//! (heptapod-paas-runner 1.1.1) can run jobs end to end against it. Where the
//! reference is unsure, comments say UNVERIFIED.
//!
//! Layout: this module holds the public handle ([`CleverSim`]), the shared
//! state and the `/v2` handlers; [`crate::git_http`] serves the deployment
//! repositories; [`crate::vm`] runs what a push deploys.

mod catalogue;
mod deployments;
mod inspect;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Json, Router};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};

pub use catalogue::{
    SimFlavor, DEFAULT_DOCKER_VERSION, DEFAULT_FLAVOR_NAME, DOCKER_VARIANT_ID,
    HEPTAPOD_RUNNER_VARIANT_ID,
};

use crate::vm::{VmHandle, VmRecord, VmState};

/// Configuration of a [`CleverSim`].
#[derive(Debug, Clone)]
pub struct CleverConfig {
    /// The only organisation the token may act on.
    pub orga_id: String,
    /// API token: `Authorization: token <token>` (legacy scheme of the
    /// reference runner) or `Bearer <token>`; also the git password.
    pub token: String,
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

struct SimState {
    apps: Vec<AppEntry>,
    index: HashMap<String, usize>,
    /// Indices of the live applications in `apps`, in creation order.
    live: BTreeSet<usize>,
    stats: CleverStats,
    fault_rng: SmallRng,
    id_rng: SmallRng,
    create_errors: Vec<InjectedCreateError>,
    never_ready: Vec<String>,
    docker_version: String,
    /// `GET …/deployments` answers 404 (an API without the listing).
    no_organisation_deployments: bool,
}

struct AppEntry {
    record: AppRecord,
    orga: String,
    description: String,
    zone: String,
    variant_id: String,
    min_flavor: SimFlavor,
    max_flavor: SimFlavor,
    min_instances: u64,
    max_instances: u64,
    instance_version: String,
    creation_epoch_ms: u64,
    tags: Vec<Value>,
    vm: Option<VmHandle>,
}

struct InjectedCreateError {
    name_contains: String,
    status: u16,
    id: i64,
    message: String,
    /// `None`: every matching create fails; `Some(n)`: the next `n` do.
    remaining: Option<u32>,
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
                state: Mutex::new(SimState {
                    apps: Vec::new(),
                    index: HashMap::new(),
                    live: BTreeSet::new(),
                    stats: CleverStats::default(),
                    fault_rng: SmallRng::seed_from_u64(seed),
                    id_rng: SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
                    create_errors: Vec::new(),
                    never_ready: Vec::new(),
                    docker_version: DEFAULT_DOCKER_VERSION.to_owned(),
                    no_organisation_deployments: false,
                }),
                changed: Notify::new(),
                shutdown,
                http,
                git_slots: Arc::new(tokio::sync::Semaphore::new(
                    crate::git_http::MAX_GIT_PROCESSES,
                )),
            }),
        };
        let router = router(sim.clone());
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
            .get_or_insert_with(|| crate::vm::spawn(self.clone(), app_id.to_owned()));
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

fn router(sim: CleverSim) -> Router {
    Router::new()
        .route("/v2/products/flavors", get(get_flavors))
        .route("/v2/products/instances", get(get_instances))
        .route(
            "/v2/organisations/{orga}/applications",
            get(list_apps).post(create_app),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}",
            get(get_app).delete(delete_app),
        )
        .route(
            "/v2/organisations/{orga}/deployments",
            get(deployments::list_organisation_deployments),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/env",
            get(get_env).put(put_env),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/env/{name}",
            put(put_env_var).delete(delete_env_var),
        )
        .route(
            "/v2/organisations/{orga}/applications/{app}/instances",
            get(get_instances_of_app),
        )
        .route("/git/{*path}", any(crate::git_http::serve))
        .fallback(|| async { not_found() })
        .with_state(sim)
}

/// A Clever-style error: `{"id": …, "message": …, "type": "error"}`.
pub(crate) fn error_response(status: StatusCode, id: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"id": id, "message": message, "type": "error"})),
    )
        .into_response()
}

fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, 4004, "Not Found")
}

/// An API error not yet turned into a response (keeps `Result`s small).
pub(crate) struct ApiError {
    status: StatusCode,
    id: i64,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, id: i64, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, self.id, &self.message)
    }
}

fn bad_request(message: &str) -> ApiError {
    // UNVERIFIED: the ids of validation errors other than 9017 are unknown;
    // 400 with a clear message is what matters to clients.
    ApiError::new(StatusCode::BAD_REQUEST, 4000, message)
}

fn epoch_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

async fn get_flavors(
    State(sim): State<CleverSim>,
    Query(_query): Query<HashMap<String, String>>,
) -> Response {
    // No authentication: the reference runner calls the catalogue without
    // any Authorization header (reference §3). UNVERIFIED how `context`
    // filters: the reference runner's recorded responses mix contexts, so the
    // whole catalogue is returned and clients filter by prefix.
    sleep_latency(&sim).await;
    let flavors: Vec<Value> = sim
        .shared
        .config
        .flavors
        .iter()
        .map(SimFlavor::to_json)
        .collect();
    Json(Value::Array(flavors)).into_response()
}

async fn get_instances(State(sim): State<CleverSim>) -> Response {
    sleep_latency(&sim).await;
    let version = sim.docker_version();
    Json(catalogue::instances_json(
        &version,
        &sim.shared.config.flavors,
    ))
    .into_response()
}

async fn sleep_latency(sim: &CleverSim) {
    let latency = sim.shared.config.faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// The frame of every authenticated `/v2` call: latency, authentication,
/// organisation, then injected faults around the action.
async fn authenticated<F, Fut>(
    sim: &CleverSim,
    headers: &HeaderMap,
    orga: &str,
    action: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    sleep_latency(sim).await;
    let (fail_before, fail_after) = {
        let mut state = sim.lock();
        state.stats.api_calls += 1;
        // Both draws happen on every call so that the fault sequence for a
        // seed depends only on the sequence of calls.
        let faults = &sim.shared.config.faults;
        let before = state.fault_rng.gen::<f64>() < faults.error_rate;
        let after = state.fault_rng.gen::<f64>() < faults.error_after_effect_rate;
        (before, after)
    };
    if !authorized(&sim.shared.config.token, headers) {
        // UNVERIFIED: id and message of Clever's 401 body.
        return error_response(StatusCode::UNAUTHORIZED, 401, "Not authenticated");
    }
    if orga != sim.shared.config.orga_id {
        // UNVERIFIED: Clever may answer 404 rather than 403 for an
        // organisation the credentials cannot see.
        return error_response(
            StatusCode::FORBIDDEN,
            403,
            "You don't have access to this organisation",
        );
    }
    if fail_before {
        return injected_error(sim);
    }
    let response = action().await;
    if fail_after {
        return injected_error(sim);
    }
    response
}

fn injected_error(sim: &CleverSim) -> Response {
    sim.lock().stats.api_errors_injected += 1;
    sim.notify_changed();
    // UNVERIFIED: the body of Clever's 500s; some are not even JSON.
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        500,
        "Internal server error (injected by the simulator)",
    )
}

fn authorized(token: &str, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, credential)) = value.trim().split_once(' ') else {
        return false;
    };
    let scheme_ok = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    scheme_ok && credential.trim() == token
}

async fn list_apps(
    State(sim): State<CleverSim>,
    Path(orga): Path<String>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let state = sim.lock();
        let apps: Vec<Value> = state
            .live
            .iter()
            .map(|&index| &state.apps[index])
            .filter(|app| app.orga == orga)
            .map(|app| app_json(&sim, app))
            .collect();
        Json(Value::Array(apps)).into_response()
    })
    .await
}

async fn get_app(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        Json(app_json(&sim, app)).into_response()
    })
    .await
}

/// An authenticated read of one live application of `orga`: `answer`
/// on it, or 404 when there is none.
async fn read_live_app(
    sim: &CleverSim,
    headers: &HeaderMap,
    orga: &str,
    app_id: &str,
    answer: impl FnOnce(&AppEntry) -> Response,
) -> Response {
    authenticated(sim, headers, orga, || async {
        let state = sim.lock();
        match live_app(&state, orga, app_id) {
            Some(app) => answer(app),
            None => not_found(),
        }
    })
    .await
}

fn live_app<'a>(state: &'a SimState, orga: &str, app_id: &str) -> Option<&'a AppEntry> {
    let index = *state.index.get(app_id)?;
    let app = &state.apps[index];
    (app.record.is_live() && app.orga == orga).then_some(app)
}

fn live_app_mut<'a>(state: &'a mut SimState, orga: &str, app_id: &str) -> Option<&'a mut AppEntry> {
    let index = *state.index.get(app_id)?;
    let app = &mut state.apps[index];
    (app.record.is_live() && app.orga == orga).then_some(app)
}

async fn create_app(
    State(sim): State<CleverSim>,
    Path(orga): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authenticated(&sim, &headers, &orga, || do_create(&sim, &orga, &body)).await
}

/// The validated content of a create body.
struct CreateRequest {
    name: String,
    description: String,
    zone: String,
    variant_id: String,
    instance_version: String,
    lifetime: String,
    min_flavor: SimFlavor,
    max_flavor: SimFlavor,
    min_instances: u64,
    max_instances: u64,
    env: BTreeMap<String, String>,
    tags: Vec<Value>,
}

fn parse_create(sim: &CleverSim, body: &[u8]) -> Result<CreateRequest, ApiError> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad_request("The request body must be a JSON object"));
    };
    let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
    let name = match text("name") {
        Some(name) if !name.trim().is_empty() => name,
        _ => return Err(bad_request("Field 'name' is required")),
    };
    if let Some(response) = take_injected_create_error(sim, &name) {
        return Err(response);
    }

    // Type, version and variant must designate a current offer, else 9017
    // (seen by the reference runner without instanceVersion; presumably the
    // same for any unknown type/version/variant, reference §4.1, §5).
    let instance_type = text("instanceType").unwrap_or_default();
    let instance_version = text("instanceVersion").unwrap_or_default();
    let variant_id = text("instanceVariant").unwrap_or_else(|| DOCKER_VARIANT_ID.to_owned());
    if !instance_type.eq_ignore_ascii_case("docker")
        || instance_version != sim.docker_version()
        || !catalogue::variant_is_known(&variant_id)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            9017,
            "The specified instance does not exist",
        ));
    }

    // `js` copies minFlavor to maxFlavor when absent; the server presumably
    // does the same (UNVERIFIED), and both absent gives the default flavor.
    let min_name = text("minFlavor");
    let max_name = text("maxFlavor");
    let (min_name, max_name) = match (min_name, max_name) {
        (Some(min), Some(max)) => (min, max),
        (Some(one), None) | (None, Some(one)) => (one.clone(), one),
        (None, None) => (
            DEFAULT_FLAVOR_NAME.to_owned(),
            DEFAULT_FLAVOR_NAME.to_owned(),
        ),
    };
    let min_flavor = available_flavor(sim, &min_name)?;
    let max_flavor = available_flavor(sim, &max_name)?;
    if min_flavor.mem_mib > max_flavor.mem_mib {
        return Err(bad_request(&format!(
            "minFlavor '{min_name}' is larger than maxFlavor '{max_name}'"
        )));
    }

    let lifetime = text("instanceLifetime").unwrap_or_else(|| "REGULAR".to_owned());
    if !matches!(lifetime.as_str(), "REGULAR" | "TASK" | "MIGRATION") {
        return Err(bad_request(&format!(
            "Unknown instanceLifetime '{lifetime}': expected REGULAR, TASK or MIGRATION"
        )));
    }
    let zone = text("zone").unwrap_or_else(|| "par".to_owned());
    if !catalogue::KNOWN_ZONES.contains(&zone.as_str()) {
        return Err(bad_request(&format!("Unknown zone '{zone}'")));
    }
    let count = |key: &str| -> Result<u64, ApiError> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(1),
            Some(value) => value
                .as_u64()
                .filter(|count| *count >= 1)
                .ok_or_else(|| bad_request(&format!("Field '{key}' must be a positive integer"))),
        }
    };
    let min_instances = count("minInstances")?;
    let max_instances = count("maxInstances")?;
    if min_instances > max_instances {
        return Err(bad_request("minInstances is larger than maxInstances"));
    }
    // Env in the create body is supported since 2024-03 (reference §4.1).
    let env = match fields.get("env") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(vars)) => env_from_object(vars)?,
        Some(_) => return Err(bad_request("Field 'env' must be an object")),
    };
    let tags = match fields.get("tags") {
        Some(Value::Array(tags)) => tags.clone(),
        _ => Vec::new(),
    };
    Ok(CreateRequest {
        description: text("description").unwrap_or_else(|| name.clone()),
        name,
        zone,
        variant_id,
        instance_version,
        lifetime,
        min_flavor,
        max_flavor,
        min_instances,
        max_instances,
        env,
        tags,
    })
}

fn take_injected_create_error(sim: &CleverSim, name: &str) -> Option<ApiError> {
    let mut state = sim.lock();
    let position = state
        .create_errors
        .iter()
        .position(|error| name.contains(&error.name_contains))?;
    let error = &mut state.create_errors[position];
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = ApiError::new(status, error.id, error.message.clone());
    if let Some(remaining) = &mut error.remaining {
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            state.create_errors.remove(position);
        }
    }
    Some(response)
}

fn available_flavor(sim: &CleverSim, name: &str) -> Result<SimFlavor, ApiError> {
    let flavors = &sim.shared.config.flavors;
    match flavors.iter().find(|flavor| flavor.name == name) {
        Some(flavor) if flavor.available => Ok(flavor.clone()),
        Some(_) => Err(bad_request(&format!("Flavor '{name}' is not available"))),
        None => Err(bad_request(&format!(
            "Unknown flavor '{name}'; available flavors: {}",
            flavors
                .iter()
                .filter(|flavor| flavor.available)
                .map(|flavor| flavor.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn env_from_object(vars: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut env = BTreeMap::new();
    for (name, value) in vars {
        // Lenient name rule of `js` (reference §4.4).
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
        if !name_ok {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                557,
                format!("Application environment is invalid: bad variable name '{name}'"),
            ));
        }
        // UNVERIFIED: whether Clever coerces non-string values; refusing
        // them keeps clients honest.
        let Some(value) = value.as_str() else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                557,
                format!("Application environment is invalid: value of '{name}' is not a string"),
            ));
        };
        env.insert(name.clone(), value.to_owned());
    }
    Ok(env)
}

fn new_uuid(rng: &mut SmallRng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

async fn do_create(sim: &CleverSim, orga: &str, body: &[u8]) -> Response {
    let request = match parse_create(sim, body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    // Names are not unique (reference §4.1): duplicates are created.
    let app_id = {
        let mut state = sim.lock();
        loop {
            let candidate = format!("app_{}", new_uuid(&mut state.id_rng));
            if !state.index.contains_key(&candidate) {
                break candidate;
            }
        }
    };
    if let Err(error) = create_bare_repo(&sim.repo_path(&app_id)).await {
        tracing::error!(%error, app_id, "cannot create the deployment repository");
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            500,
            "Cannot create the deployment repository",
        );
    }
    let now = Instant::now();
    let weight = request.max_flavor.weight();
    let entry = AppEntry {
        record: AppRecord {
            id: app_id.clone(),
            name: request.name,
            flavor: request.max_flavor.name.clone(),
            mem_mib: request.max_flavor.mem_mib,
            cpus: request.max_flavor.cpus,
            weight,
            lifetime: request.lifetime,
            created_at: now,
            deleted_at: None,
            repo_ready_at: None,
            env: request.env,
            pushes: 0,
            commit_id: None,
            vm: VmRecord::default(),
        },
        orga: orga.to_owned(),
        description: request.description,
        zone: request.zone,
        variant_id: request.variant_id,
        min_flavor: request.min_flavor,
        max_flavor: request.max_flavor,
        min_instances: request.min_instances,
        max_instances: request.max_instances,
        instance_version: request.instance_version,
        creation_epoch_ms: epoch_ms_now(),
        tags: request.tags,
        vm: None,
    };
    let delay = sim.shared.config.repo_ready_delay;
    let response = {
        let mut state = sim.lock();
        let never_ready = state
            .never_ready
            .iter()
            .any(|pattern| entry.record.name.contains(pattern.as_str()));
        let mut entry = entry;
        if delay.is_zero() && !never_ready {
            entry.record.repo_ready_at = Some(now);
        }
        let response = Json(app_json(sim, &entry)).into_response();
        let index = state.apps.len();
        state.index.insert(app_id.clone(), index);
        state.apps.push(entry);
        state.live.insert(index);
        let stats = &mut state.stats;
        stats.apps_created += 1;
        stats.apps_live += 1;
        stats.max_live_apps = stats.max_live_apps.max(stats.apps_live);
        recompute_live_weight(&mut state);
        if !delay.is_zero() && !never_ready {
            spawn_repo_ready_timer(sim.clone(), app_id.clone(), delay);
        }
        response
    };
    sim.notify_changed();
    tracing::debug!(app_id, "application created");
    // UNVERIFIED: 200 vs 201 on create; no client checks it (reference §4.1).
    response
}

/// Live weight is recomputed from the live set rather than updated
/// incrementally, so that float rounding cannot drift over long runs.
fn recompute_live_weight(state: &mut SimState) {
    let live: f64 = state
        .live
        .iter()
        .map(|&index| state.apps[index].record.weight)
        .sum();
    state.stats.live_weight = live;
    if live > state.stats.max_live_weight {
        state.stats.max_live_weight = live;
    }
}

fn spawn_repo_ready_timer(sim: CleverSim, app_id: String, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        {
            let mut state = sim.lock();
            let never_ready = state.never_ready.clone();
            let Some(&index) = state.index.get(&app_id) else {
                return;
            };
            let record = &mut state.apps[index].record;
            let stalled = never_ready
                .iter()
                .any(|pattern| record.name.contains(pattern.as_str()));
            if record.is_live() && !stalled {
                record.repo_ready_at = Some(Instant::now());
            }
        }
        sim.notify_changed();
    });
}

/// Writes a bare repository by hand, as `git init --bare` would, with pushes
/// over HTTP allowed.
async fn create_bare_repo(path: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(path.join("objects/info")).await?;
    tokio::fs::create_dir_all(path.join("objects/pack")).await?;
    tokio::fs::create_dir_all(path.join("refs/heads")).await?;
    tokio::fs::create_dir_all(path.join("refs/tags")).await?;
    tokio::fs::write(path.join("HEAD"), "ref: refs/heads/master\n").await?;
    tokio::fs::write(
        path.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n\
         [http]\n\treceivepack = true\n",
    )
    .await?;
    Ok(())
}

fn repo_state(record: &AppRecord) -> &'static str {
    if record.deleted_at.is_some() {
        "DELETED"
    } else if record.repo_ready_at.is_some() {
        "CREATED"
    } else {
        "CREATING"
    }
}

fn env_json(env: &BTreeMap<String, String>) -> Value {
    Value::Array(
        env.iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The application object (reference §4.2).
fn app_json(sim: &CleverSim, app: &AppEntry) -> Value {
    let record = &app.record;
    let zone_host = format!(
        "push-n2-{}-clevercloud-customers.services.clever-cloud.com",
        app.zone
    );
    let allowed_flavors: Vec<Value> = sim
        .shared
        .config
        .flavors
        .iter()
        .filter(|flavor| flavor.available)
        .map(SimFlavor::to_json)
        .collect();
    json!({
        "id": record.id,
        "ownerId": app.orga,
        "name": record.name,
        "description": app.description,
        "zone": app.zone,
        "zoneId": format!("zone-{}", app.zone),
        "instance": {
            "type": "docker",
            "version": app.instance_version,
            "variant": catalogue::variant_json(&app.variant_id),
            "minInstances": app.min_instances,
            "maxInstances": app.max_instances,
            "maxAllowedInstances": 40,
            "minFlavor": app.min_flavor.to_json(),
            "maxFlavor": app.max_flavor.to_json(),
            "flavors": allowed_flavors,
            "defaultEnv": {"CC_DOCKERFILE": "Dockerfile"},
            "lifetime": record.lifetime,
            "instanceAndVersion": format!("docker-{}", app.instance_version),
        },
        "deployment": {
            "shutdownable": false,
            "type": "GIT",
            "repoState": repo_state(record),
            "url": format!("git+ssh://git@{zone_host}/{}.git", record.id),
            "httpUrl": sim.git_url(&record.id),
        },
        "vhosts": [{"fqdn": format!("{}.cleverapps.io", record.id.replace('_', "-"))}],
        "creationDate": app.creation_epoch_ms,
        "last_deploy": record.vm.deployments,
        "archived": false,
        "stickySessions": false,
        "homogeneous": false,
        "favourite": false,
        "cancelOnPush": false,
        "webhookUrl": null,
        "webhookSecret": null,
        "separateBuild": false,
        "buildFlavor": null,
        "forceHttps": "DISABLED",
        "appliance": null,
        "branch": "master",
        "commitId": record.commit_id,
        "state": "SHOULD_BE_UP",
        "env": env_json(&record.env),
        "tags": app.tags,
    })
}

async fn delete_app(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let deleted = {
            let mut state = sim.lock();
            let deleted = match live_app_mut(&mut state, &orga, &app_id) {
                Some(app) => {
                    let now = Instant::now();
                    app.record.deleted_at = Some(now);
                    // Deleting stops the VM at once (whether Clever's
                    // teardown is synchronous is UNVERIFIED).
                    crate::vm::record_deletion(&mut app.record.vm, now);
                    if let Some(vm) = &app.vm {
                        vm.stop();
                    }
                    true
                }
                None => false,
            };
            if deleted {
                if let Some(&index) = state.index.get(&app_id) {
                    state.live.remove(&index);
                }
                state.stats.apps_deleted += 1;
                state.stats.apps_live -= 1;
                recompute_live_weight(&mut state);
            }
            deleted
        };
        if !deleted {
            return not_found();
        }
        sim.notify_changed();
        let path = sim.repo_path(&app_id);
        tokio::spawn(async move {
            if let Err(error) = tokio::fs::remove_dir_all(&path).await {
                tracing::debug!(%error, path = %path.display(), "cannot remove a deleted repository");
            }
        });
        tracing::debug!(app_id, "application deleted");
        (
            StatusCode::OK,
            Json(json!({"id": 302, "message": "deleted", "type": "success"})),
        )
            .into_response()
    })
    .await
}

async fn get_env(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        Json(env_json(&app.record.env)).into_response()
    })
    .await
}

async fn put_env(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let Ok(Value::Object(vars)) = serde_json::from_slice::<Value>(&body) else {
            return bad_request("The request body must be a JSON object of variables")
                .into_response();
        };
        let env = match env_from_object(&vars) {
            Ok(env) => env,
            Err(error) => return error.into_response(),
        };
        // PUT /env replaces the whole set (reference §4.4, pitfall 8).
        update_env(&sim, &orga, &app_id, |current| *current = env)
    })
    .await
}

async fn put_env_var(
    State(sim): State<CleverSim>,
    Path((orga, app_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        let value = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|body| body.get("value").and_then(Value::as_str).map(str::to_owned));
        let Some(value) = value else {
            return bad_request("The request body must be {\"value\": \"...\"}").into_response();
        };
        let mut single = Map::new();
        single.insert(name.clone(), Value::String(value.clone()));
        if let Err(error) = env_from_object(&single) {
            return error.into_response();
        }
        update_env(&sim, &orga, &app_id, |current| {
            current.insert(name, value);
        })
    })
    .await
}

async fn delete_env_var(
    State(sim): State<CleverSim>,
    Path((orga, app_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    authenticated(&sim, &headers, &orga, || async {
        update_env(&sim, &orga, &app_id, |current| {
            current.remove(&name);
        })
    })
    .await
}

/// Applies an env change and answers with the application object, which
/// carries the `env` array `js` reads (UNVERIFIED whether Clever answers
/// with the full application or a smaller object with `env`).
fn update_env(
    sim: &CleverSim,
    orga: &str,
    app_id: &str,
    change: impl FnOnce(&mut BTreeMap<String, String>),
) -> Response {
    let response = {
        let mut state = sim.lock();
        let Some(app) = live_app_mut(&mut state, orga, app_id) else {
            return not_found();
        };
        change(&mut app.record.env);
        Json(app_json(sim, app)).into_response()
    };
    sim.notify_changed();
    response
}

async fn get_instances_of_app(
    State(sim): State<CleverSim>,
    Path((orga, app_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_live_app(&sim, &headers, &orga, &app_id, |app| {
        // UNVERIFIED: the full list of v2 instance states; `cli` knows UP
        // and DEPLOYING. A stopped TASK VM is simply absent.
        let instance_state = match app.record.vm.state {
            VmState::Booting => Some("DEPLOYING"),
            VmState::Running | VmState::Stalled => Some("UP"),
            VmState::NotDeployed | VmState::Stopped => None,
        };
        let instances: Vec<Value> = instance_state
            .map(|instance_state| {
                json!({
                    "id": format!("{}-instance-{}", app.record.id, app.record.vm.deployments),
                    "appId": app.record.id,
                    "ip": "127.0.0.1",
                    "appPort": 8080,
                    "state": instance_state,
                    "flavor": app.max_flavor.to_json(),
                    "commit": app.record.commit_id,
                    "deployNumber": app.record.vm.deployments,
                    "instanceNumber": 0,
                    "displayName": "sim",
                    "creationDate": app.creation_epoch_ms,
                })
            })
            .into_iter()
            .collect();
        Json(Value::Array(instances)).into_response()
    })
    .await
}
