//! `paas-runner store migrate FROM TO`: copies the state of one store into
//! another (SQLite ↔ PostgreSQL), refusing while a service holds either.
//!
//! FROM and TO are each a configuration file (`*.toml`: its `state_file` or
//! `[store]`, password from its secrets file) or a SQLite database path. A
//! SQLite FROM whose `state_file` is heptapod-paas-runner's JSON state (or
//! that JSON file itself) imports it first, as `run` does.
//! The copy holds both: the SQLite store's lock, the PostgreSQL store's
//! lease (so no replica starts meanwhile, and no write of the copy lands
//! after one did). The target must track no job.
//!
//! The lease is an ordinary one (the configured `lease_seconds`), renewed
//! every third of it while the copy runs, as an active replica does: a
//! migration that dies mid-way (SIGKILL, host loss) holds the replicas
//! back for one lease at most. If a renewal fails until shortly before the
//! lease could expire (or another process took it), the copy stops at once
//! with an error, before a replica could start on a half-copied store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paas_config::{PostgresSettings, StoreSettings};
use paas_core::{GuardAction, LeaseGuard, LeaseLost, LeaseTiming, Renewal};
use paas_store::postgres::lease::Lease;
use paas_store::postgres::PgStore;
use paas_store::{JobStore, SqliteStore, StoreWrite};
use tokio::sync::watch;

use crate::driver::FOREIGN_META_KEY;

/// Meta data entries copied with the jobs.
const META_KEYS: &[&str] = &["system_id", FOREIGN_META_KEY];

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every job and the installation's identity from FROM to TO
    /// (each a configuration file or a SQLite database path).
    Migrate { from: PathBuf, to: PathBuf },
}

pub async fn main(command: StoreCommand) -> ExitCode {
    let StoreCommand::Migrate { from, to } = command;
    match migrate(&from, &to).await {
        Ok(jobs) => {
            println!(
                "copied {jobs} job(s) from {} to {}",
                from.display(),
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("paas-runner store migrate: {error:#}");
            ExitCode::from(crate::run::EXIT_CONFIG)
        }
    }
}

fn settings_of(path: &Path) -> anyhow::Result<StoreSettings> {
    if path.extension().is_some_and(|ext| ext == "toml") {
        return Ok(paas_config::load(path)?.store);
    }
    Ok(StoreSettings::Sqlite {
        state_file: Some(path.to_path_buf()),
    })
}

/// A store held for the copy: the lock or the lease is released on drop /
/// by [`Held::release`].
struct Held {
    store: Box<dyn JobStore>,
    lease: Option<HeldLease>,
}

/// The lease of a PostgreSQL store held for the copy, and its renewal.
struct HeldLease {
    lease: Arc<Lease>,
    epoch: i64,
    location: String,
    renewal: tokio::task::JoinHandle<()>,
    /// Why the lease was lost, once it was.
    lost: watch::Receiver<Option<String>>,
}

impl HeldLease {
    /// Resolves once the lease is lost, with the error to report; never
    /// while it is held.
    async fn lost(&mut self) -> anyhow::Error {
        let reason = match self.lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The renewal ended without a word: it panicked.
            Err(_) => "its renewal stopped".to_owned(),
        };
        anyhow::anyhow!(
            "the lease on {} was lost during the copy: {reason}; the copy was stopped before \
             the lease could expire, and the target may hold part of it: start again with a \
             new target",
            self.location
        )
    }
}

impl Held {
    /// Opens and holds the store of `settings`; a `source` SQLite store
    /// first imports heptapod-paas-runner's JSON state, as `run` does.
    async fn open(settings: &StoreSettings, source: bool) -> anyhow::Result<Held> {
        match settings {
            StoreSettings::Sqlite { state_file } => {
                let path = paas_store::resolve_store_path(state_file.as_deref());
                // Refused with the holder's name while a service runs.
                let store = SqliteStore::open_exclusive(&path)?;
                if let Some(json) = state_file.as_deref().filter(|_| source) {
                    if paas_store::store_path(json) != json {
                        crate::import::import_if_present(json, &store)?;
                    }
                }
                Ok(Held {
                    store: Box::new(store),
                    lease: None,
                })
            }
            StoreSettings::Postgres(settings) => open_postgres(settings).await,
        }
    }

    async fn release(self) {
        if let Some(held) = self.lease {
            held.renewal.abort();
            let _ = held.lease.release(held.epoch).await;
        }
    }
}

/// Resolves once a store's lease is lost (never without one: SQLite).
async fn lost(lease: &mut Option<HeldLease>) -> anyhow::Error {
    match lease {
        Some(held) => held.lost().await,
        None => std::future::pending().await,
    }
}

async fn open_postgres(settings: &PostgresSettings) -> anyhow::Result<Held> {
    let store = PgStore::open(settings).await?;
    let identity = format!("store-migrate:{}", std::process::id());
    let lease = Lease::connect(settings, identity).await?;
    let sent_at = Instant::now();
    let Some(acquired) = lease.try_acquire().await? else {
        let info = lease.read().await?;
        anyhow::bail!(
            "{} is in use by a paas-runner service ({}): stop every replica first",
            settings.url,
            crate::ha::lease_line(&info)
        );
    };
    store.fence_with(acquired.epoch);
    let lease = Arc::new(lease);
    let (lost_tx, lost) = watch::channel(None);
    let renewal = tokio::spawn({
        let lease = lease.clone();
        async move {
            let reason = keep_renewed(&lease, acquired.epoch, sent_at).await;
            lost_tx.send_replace(Some(reason));
        }
    });
    Ok(Held {
        store: Box::new(store),
        lease: Some(HeldLease {
            lease,
            epoch: acquired.epoch,
            location: settings.url.clone(),
            renewal,
            lost,
        }),
    })
}

/// Renews the lease taken under `epoch` (its request sent at `sent_at`)
/// every third of its duration; returns why it was lost: another process
/// holds it, or no renewal succeeded until the margin before it
/// could expire (the core's [`LeaseGuard`], as the service's guard).
async fn keep_renewed(lease: &Lease, epoch: i64, sent_at: Instant) -> String {
    let timing = LeaseTiming::new(lease.duration());
    let mut guard = LeaseGuard::new(timing, epoch, sent_at);
    let mut last_error: Option<String> = None;
    loop {
        match guard.poll(Instant::now()) {
            GuardAction::Lost(_) => return not_renewed(timing.duration, last_error),
            GuardAction::Wait(until) => tokio::time::sleep_until(until.into()).await,
            GuardAction::Renew => {
                let renewal = tokio::time::timeout_at(
                    guard.act_until().into(),
                    lease.renew(epoch, timing.renew_period()),
                )
                .await;
                let renewal = match renewal {
                    Ok(Ok(true)) => {
                        last_error = None;
                        Renewal::Extended
                    }
                    Ok(Ok(false)) => Renewal::Refused,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, epoch, "could not renew the lease; trying again");
                        last_error = Some(error.to_string());
                        Renewal::Failed
                    }
                    Err(_) => Renewal::Failed,
                };
                if let Some(LeaseLost::Deposed) = guard.renewed(Instant::now(), renewal) {
                    return "another process holds it now".to_owned();
                }
            }
        }
    }
}

fn not_renewed(duration: Duration, last_error: Option<String>) -> String {
    format!(
        "it could not be renewed in time (lease_seconds = {}){}",
        duration.as_secs(),
        last_error
            .map(|error| format!("; last error: {error}"))
            .unwrap_or_default()
    )
}

async fn write(store: &mut dyn JobStore, write: StoreWrite) -> anyhow::Result<()> {
    match store.submit(write) {
        paas_store::Pending::Done(result) => Ok(result?),
        paas_store::Pending::Later(done) => Ok(done
            .await
            .map_err(|_| anyhow::anyhow!("the store's writer stopped"))??),
    }
}

async fn migrate(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let (from_settings, to_settings) = (settings_of(from)?, settings_of(to)?);
    if from_settings == to_settings {
        anyhow::bail!("FROM and TO are the same store");
    }
    if let StoreSettings::Sqlite { state_file } = &from_settings {
        let path = paas_store::resolve_store_path(state_file.as_deref());
        let json = state_file
            .as_deref()
            .filter(|json| json.exists() && *json != path);
        if !path.exists() && json.is_none() {
            anyhow::bail!("no state database at {}", path.display());
        }
    }
    let mut source = Held::open(&from_settings, true).await?;
    let mut target = match Held::open(&to_settings, false).await {
        Ok(target) => target,
        Err(error) => {
            source.release().await;
            return Err(error);
        }
    };
    // The copy stops at once when a lease is lost.
    let result = tokio::select! {
        result = copy(source.store.as_mut(), target.store.as_mut()) => result,
        error = lost(&mut source.lease) => Err(error),
        error = lost(&mut target.lease) => Err(error),
    };
    source.release().await;
    target.release().await;
    result
}

async fn copy(source: &mut dyn JobStore, target: &mut dyn JobStore) -> anyhow::Result<usize> {
    let existing = target.load().await?.len();
    if existing > 0 {
        anyhow::bail!(
            "{} already tracks {existing} job(s): the target must be a new store",
            target.location()
        );
    }
    let records = source.load().await?;
    for key in META_KEYS {
        if let Some(value) = source.get_meta(key).await? {
            target.set_meta(key, &value).await?;
        }
    }
    for record in &records {
        write(target, StoreWrite::Save(record.clone())).await?;
        // A SQLite write completes without waiting: let the loss of a
        // lease stop the copy between two writes.
        tokio::task::yield_now().await;
    }
    let copied = target.load().await?;
    if copied != records {
        anyhow::bail!(
            "{} holds {} job(s) after the copy of {}: not the same",
            target.location(),
            copied.len(),
            records.len()
        );
    }
    Ok(records.len())
}
