//! The service's store, opened for `run`, and the replicas' roles.
//!
//! With SQLite ([`paas_config::StoreSettings::Sqlite`]) the service owns the
//! database through its lock, as always. With PostgreSQL every `run`
//! process with the same settings is a replica of one runner: it connects,
//! migrates the schema, checks its credentials and reads the catalogue
//! (hot standby), then waits for the lease ([`Lease`]); the one holding it
//! is active: it restores the jobs and runs the driver, every write fenced
//! with its epoch. The active replica renews the lease every third of its
//! duration; if it cannot renew before `lease - margin` (counted from the
//! sending of the last successful renewal, so before the database can
//! expire it), or a write is refused because another replica took over, it
//! stops every side effect at once by exiting ([`EXIT_LEASE_LOST`]; a
//! supervisor restarts it as a standby). A graceful stop releases the lease
//! once the driver has drained, and a standby takes over at its next
//! attempt ([`STANDBY_POLL`]).

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

use paas_config::{PostgresSettings, StoreSettings};
use paas_core::{GuardAction, LeaseGuard, LeaseTiming, Renewal};
use paas_store::postgres::lease::{Acquired, Lease, LeaseInfo};
use paas_store::postgres::PgStore;
use paas_store::{JobStore, SqliteStore};
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::snapshot::{ReplicaStatus, ROLE_ACTIVE, ROLE_SINGLE, ROLE_STANDBY};

/// Exit status of an active replica that lost its lease.
pub const EXIT_LEASE_LOST: i32 = 3;
pub use paas_core::lease::STANDBY_POLL;

/// This replica's role, as the log, `paas-runner state`, metrics and the
/// status server show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplicaView {
    /// `active` or `standby` (`single` with SQLite: [`ROLE_SINGLE`]).
    pub role: &'static str,
    pub replica: String,
    pub epoch: i64,
    /// The active replica's identity, as last seen.
    pub active: Option<String>,
    /// When the active replica took the lease: this replica's takeover
    /// when active, as the lease row says on a standby (if known).
    #[serde(skip)]
    pub since: Option<Instant>,
    /// On a standby: when the active replica's lease expires unless
    /// renewed (in the past once expired), as last read.
    #[serde(skip)]
    pub lease_until: Option<SystemTime>,
}

/// Publishes this process's role: the `paas_runner_replica_*` gauges and
/// what the status server renders ([`replica_status`]).
fn set_view(view: ReplicaView) {
    let active = view.role != ROLE_STANDBY;
    let active_since = view
        .since
        .and_then(|since| SystemTime::now().checked_sub(since.elapsed()));
    // The gauge tells when *this* process became active.
    crate::metrics::recorder().replica(active, view.epoch, active_since.filter(|_| active));
    PUBLISHED.send_replace(Some(ReplicaStatus {
        role: view.role,
        epoch: (view.role != ROLE_SINGLE).then_some(view.epoch),
        active: view.active,
        replica: view.replica,
        active_since,
        lease_expires_at: view.lease_until,
    }));
}

/// The latest role [`set_view`] published; the status server reads it
/// at each rendering (a process-wide value, like the metrics recorder).
static PUBLISHED: LazyLock<watch::Sender<Option<ReplicaStatus>>> =
    LazyLock::new(|| watch::Sender::new(None));

/// This process's role among replicas as it changes, for the status page,
/// `/status.json` and the state dump.
pub fn replica_status() -> watch::Receiver<Option<ReplicaStatus>> {
    PUBLISHED.subscribe()
}

/// What a standby knows from the lease row `info`.
fn standby_view(identity: &str, info: &LeaseInfo) -> ReplicaView {
    ReplicaView {
        role: ROLE_STANDBY,
        replica: identity.to_owned(),
        epoch: info.epoch,
        active: info.holder.clone(),
        since: info
            .held_secs
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .and_then(|held| Instant::now().checked_sub(held)),
        lease_until: info.remaining_secs.and_then(|left| {
            let now = SystemTime::now();
            let by = Duration::try_from_secs_f64(left.abs()).ok()?;
            match left >= 0.0 {
                true => now.checked_add(by),
                false => now.checked_sub(by),
            }
        }),
    }
}

/// The store of a service, before and after it becomes active.
pub struct ServiceStore {
    store: Option<Box<dyn JobStore>>,
    pub system_id: String,
    /// Where the state is (no password), for logs.
    pub location: String,
    /// Where `SIGUSR1` dumps go.
    pub dump_file: PathBuf,
    replica: Option<Replica>,
}

struct Replica {
    settings: PostgresSettings,
    lease: Lease,
    epoch: i64,
    identity: String,
}

fn new_system_id() -> String {
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("r_{suffix}")
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "replica".to_owned())
}

/// This process's identity in the lease: the configured name (or the host
/// name), the process id and a random part.
fn replica_identity(settings: &PostgresSettings) -> String {
    let name = settings.replica_name.clone().unwrap_or_else(host_name);
    let tag: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(4)
        .map(char::from)
        .collect();
    format!("{name}:{}:{tag}", std::process::id())
}

impl ServiceStore {
    /// Opens the store `run` uses: SQLite locked (and the reference's JSON
    /// state imported), or PostgreSQL connected and migrated.
    pub async fn open(config: &paas_config::Config, config_path: &Path) -> anyhow::Result<Self> {
        match &config.store {
            StoreSettings::Sqlite { state_file } => open_sqlite(state_file.as_deref()),
            StoreSettings::Postgres(settings) => open_postgres(settings, config_path).await,
        }
    }

    /// Waits to be the active replica (at once with SQLite). `false` when
    /// `shutdown` came first.
    pub async fn become_active(
        &mut self,
        shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<bool> {
        let Some(replica) = &mut self.replica else {
            return Ok(true);
        };
        tokio::select! {
            acquired = wait_for_lease(&replica.lease, &replica.identity) => {
                let (acquired, sent_at) = acquired?;
                replica.epoch = acquired.epoch;
                let pg = PgStore::open(&replica.settings).await?;
                pg.fence_with(acquired.epoch);
                self.store = Some(Box::new(pg));
                let lease = Lease::connect(&replica.settings, replica.identity.clone()).await?;
                spawn_guard(lease, acquired.epoch, sent_at);
                Ok(true)
            }
            () = shutdown => {
                info!(replica = %replica.identity, "stopped while standby");
                Ok(false)
            }
        }
    }

    /// The store for the driver (once active).
    pub fn take_store(&mut self) -> anyhow::Result<Box<dyn JobStore>> {
        self.store
            .take()
            .ok_or_else(|| anyhow::anyhow!("the store is not open"))
    }

    /// After a graceful stop: hands the lease over at once.
    pub async fn release(&mut self) {
        let Some(replica) = &self.replica else {
            return;
        };
        match replica.lease.release(replica.epoch).await {
            Ok(true) => info!(
                replica = %replica.identity,
                epoch = replica.epoch,
                "lease released: a standby takes over now"
            ),
            Ok(false) => {
                warn!(replica = %replica.identity, "lease already taken by another replica")
            }
            Err(error) => {
                warn!(%error, "could not release the lease: a standby takes over once it expires")
            }
        }
    }
}

fn open_sqlite(state_file: Option<&Path>) -> anyhow::Result<ServiceStore> {
    // The store's lock comes before anything touches the store (import,
    // restore, reconciliation): a second service stops here.
    let store_path = paas_store::resolve_store_path(state_file);
    if state_file.is_none() {
        warn!(
            store = %store_path.display(),
            "NO state_file CONFIGURED: the state database is in the current directory; \
             a service started from another directory would not see these jobs; \
             set state_file to an absolute path"
        );
    }
    let store = SqliteStore::open_exclusive(&store_path)?;
    info!(
        store = %store.path().display(),
        lock = %store.lock().map(|lock| lock.path().display().to_string()).unwrap_or_default(),
        "state store opened and locked"
    );
    if let Some(state_file) = state_file.filter(|path| paas_store::store_path(path) != *path) {
        crate::import::import_if_present(state_file, &store)?;
    }
    let system_id = match store.get_meta("system_id")? {
        Some(id) => id,
        None => {
            let id = new_system_id();
            store.set_meta("system_id", &id)?;
            id
        }
    };
    let identity = format!("{}:{}", host_name(), std::process::id());
    set_view(ReplicaView {
        role: ROLE_SINGLE,
        replica: identity.clone(),
        epoch: 0,
        active: Some(identity),
        since: Some(Instant::now()),
        lease_until: None,
    });
    Ok(ServiceStore {
        system_id,
        location: store.path().display().to_string(),
        dump_file: crate::signals::dump_path(store.path()),
        store: Some(Box::new(store)),
        replica: None,
    })
}

async fn open_postgres(
    settings: &PostgresSettings,
    config_path: &Path,
) -> anyhow::Result<ServiceStore> {
    let store = PgStore::open(settings).await?;
    let system_id = store.meta_or_init("system_id", &new_system_id()).await?;
    let identity = replica_identity(settings);
    let lease = Lease::connect(settings, identity.clone()).await?;
    info!(
        store = %settings.url,
        replica = %identity,
        lease_seconds = settings.lease.as_secs(),
        "state store opened (PostgreSQL): this replica starts as a standby"
    );
    if let Ok(info) = lease.read().await {
        set_view(standby_view(&identity, &info));
    }
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned());
    Ok(ServiceStore {
        store: None,
        system_id,
        location: settings.url.clone(),
        dump_file: crate::signals::dump_path(&absolute),
        replica: Some(Replica {
            settings: settings.clone(),
            lease,
            epoch: 0,
            identity,
        }),
    })
}

/// Tries to take the lease every [`STANDBY_POLL`] until it succeeds; the
/// instant the successful request was sent comes with it.
async fn wait_for_lease(lease: &Lease, identity: &str) -> anyhow::Result<(Acquired, Instant)> {
    let mut last_seen: Option<(Option<String>, i64)> = None;
    let mut last_error: Option<String> = None;
    loop {
        let sent_at = Instant::now();
        match lease.try_acquire().await {
            Ok(Some(acquired)) => {
                let how = match (&acquired.released_by, &acquired.previous_holder) {
                    (Some(by), _) => format!("released by {by} (graceful stop)"),
                    (None, Some(previous)) => format!(
                        "the lease of {previous} expired {:.1} s ago",
                        acquired.expired_secs_ago.unwrap_or(0.0)
                    ),
                    (None, None) => "no replica held the lease".to_owned(),
                };
                info!(
                    replica = %identity,
                    epoch = acquired.epoch,
                    previous = acquired.previous_holder.as_deref().unwrap_or("-"),
                    reason = %how,
                    "this replica is now ACTIVE"
                );
                set_view(ReplicaView {
                    role: ROLE_ACTIVE,
                    replica: identity.to_owned(),
                    epoch: acquired.epoch,
                    active: Some(identity.to_owned()),
                    since: Some(Instant::now()),
                    lease_until: None,
                });
                return Ok((acquired, sent_at));
            }
            Ok(None) => {
                last_error = None;
                if let Ok(info) = lease.read().await {
                    let seen = Some((info.holder.clone(), info.epoch));
                    if seen != last_seen {
                        info!(
                            replica = %identity,
                            active = info.holder.as_deref().unwrap_or("-"),
                            epoch = info.epoch,
                            "standby: another replica is active"
                        );
                        last_seen = seen;
                    }
                    // At every attempt: the lease's expiry moves with
                    // each renewal.
                    set_view(standby_view(identity, &info));
                }
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    warn!(%error, "standby: cannot reach the state store; trying again");
                    last_error = Some(text);
                }
            }
        }
        tokio::time::sleep(STANDBY_POLL).await;
    }
}

/// Renews the lease; exits the process before the lease can expire if it
/// cannot (the decisions are the core's [`LeaseGuard`]).
fn spawn_guard(lease: Lease, epoch: i64, acquired_sent_at: Instant) {
    let timing = LeaseTiming::new(lease.duration());
    let mut guard = LeaseGuard::new(timing, epoch, acquired_sent_at);
    tokio::spawn(async move {
        loop {
            ACT_UNTIL.set(epoch, guard.act_until());
            match guard.poll(Instant::now()) {
                GuardAction::Lost(why) => lost(epoch, why.reason()),
                GuardAction::Wait(until) => tokio::time::sleep_until(until.into()).await,
                GuardAction::Renew => {
                    let give_up_at = guard.act_until();
                    let renewal = tokio::time::timeout_at(
                        give_up_at.into(),
                        lease.renew(epoch, timing.renew_period()),
                    )
                    .await;
                    let renewal = match renewal {
                        Ok(Ok(true)) => Renewal::Extended,
                        Ok(Ok(false)) => Renewal::Refused,
                        Ok(Err(error)) => {
                            warn!(%error, epoch, "could not renew the lease; trying again");
                            Renewal::Failed
                        }
                        // Past `act_until`: the next poll says lost.
                        Err(_) => Renewal::Failed,
                    };
                    if let Some(why) = guard.renewed(Instant::now(), renewal) {
                        lost(epoch, why.reason());
                    }
                }
            }
        }
    });
}

/// Until when this replica may start a side effect, for
/// [`check_may_act`]: set by the lease guard; unset (always) with SQLite.
static ACT_UNTIL: ActUntil = ActUntil(std::sync::Mutex::new(None));

struct ActUntil(std::sync::Mutex<Option<(i64, Instant)>>);

impl ActUntil {
    fn set(&self, epoch: i64, until: Instant) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((epoch, until));
        }
    }

    fn get(&self) -> Option<(i64, Instant)> {
        self.0.lock().ok().and_then(|slot| *slot)
    }
}

/// Called by the driver before each command: a replica whose lease may
/// be over (the process was frozen, the guard could not run) stops before
/// starting anything.
pub fn check_may_act() {
    if let Some((epoch, until)) = ACT_UNTIL.get() {
        if Instant::now() >= until {
            lost(
                epoch,
                "the lease may have expired (the process did not run in time)",
            );
        }
    }
}

/// Stops every side effect at once: the process ends (in-flight requests
/// with it), as a crash would; what was recorded is resumed by the new
/// active replica.
fn lost(epoch: i64, reason: &str) -> ! {
    error!(
        epoch,
        reason,
        "LEASE LOST: this replica stops acting now (exit {EXIT_LEASE_LOST}); \
         restarted, it waits as a standby"
    );
    std::process::exit(EXIT_LEASE_LOST);
}

/// `paas-runner state` on a PostgreSQL store: prints where it is and the
/// lease, and returns the jobs.
pub async fn print_state(settings: &PostgresSettings) -> anyhow::Result<Vec<paas_core::JobRecord>> {
    let mut store = PgStore::open(settings).await?;
    let info = store.lease_info().await?;
    println!("state database: {} (PostgreSQL)", settings.url);
    println!("{}", lease_line(&info));
    Ok(store.load().await?)
}

/// `paas-runner reap` on a PostgreSQL store: the tracked jobs and the
/// system id.
pub async fn tracked(
    settings: &PostgresSettings,
) -> anyhow::Result<(Vec<paas_core::JobRecord>, Option<String>)> {
    let mut store = PgStore::open(settings).await?;
    let records = store.load().await?;
    Ok((records, store.meta("system_id").await?))
}

/// The lease as one line of `paas-runner state`.
pub fn lease_line(info: &LeaseInfo) -> String {
    match (&info.holder, info.remaining_secs) {
        (Some(holder), Some(left)) if left > 0.0 => format!(
            "active replica: {holder} (epoch {}, lease renewed, {left:.1} s left, active for {:.0} s)",
            info.epoch,
            info.held_secs.unwrap_or(0.0)
        ),
        (Some(holder), _) => format!(
            "no active replica: the lease of {holder} (epoch {}) expired; a standby takes over",
            info.epoch
        ),
        (None, _) => format!(
            "no active replica (epoch {}{})",
            info.epoch,
            info.released_by
                .as_deref()
                .map(|by| format!(", released by {by}"))
                .unwrap_or_default()
        ),
    }
}

/// For `paas-runner bench --postgres`: starts a throwaway PostgreSQL cluster
/// and points the configuration at `config_path` to it (`[store]`, the
/// password in a secrets file in `dir`). The cluster stops when dropped.
pub fn use_throwaway_postgres(
    config_path: &Path,
    dir: &Path,
) -> anyhow::Result<paas_store::postgres::throwaway::Throwaway> {
    use paas_store::postgres::throwaway::{Throwaway, PASSWORD};
    let cluster = Throwaway::start().map_err(|error| anyhow::anyhow!("PostgreSQL: {error}"))?;
    cluster
        .create_database("bench")
        .map_err(|error| anyhow::anyhow!("PostgreSQL: {error}"))?;
    let secrets = dir.join("secrets.toml");
    std::fs::write(&secrets, format!("store_password = {PASSWORD:?}\n"))?;
    let text = std::fs::read_to_string(config_path)?;
    let mut text: String = text
        .lines()
        .filter(|line| !line.starts_with("state_file"))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!(
        "\n[store]\nurl = {:?}\npassword = \"secret:store_password\"\nsecrets_file = {:?}\n",
        cluster.url_via(cluster.port(), "bench"),
        secrets.display().to_string()
    ));
    std::fs::write(config_path, text)?;
    Ok(cluster)
}
