//! `paas-runner store migrate FROM TO`: copies the state of one store into
//! another (SQLite ↔ PostgreSQL), refusing while a service holds either.
//!
//! FROM and TO are each a configuration file (`*.toml`: its `state_file` or
//! `[store]`, password from its secrets file) or a SQLite database path.
//! The copy holds both: the SQLite store's lock, the PostgreSQL store's
//! lease (so no replica starts meanwhile, and no write of the copy lands
//! after one did). The target must track no job.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use paas_config::{PostgresSettings, StoreSettings};
use paas_store::postgres::lease::Lease;
use paas_store::postgres::PgStore;
use paas_store::{JobStore, SqliteStore, StoreWrite};

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
    lease: Option<(Lease, i64)>,
}

impl Held {
    async fn open(settings: &StoreSettings) -> anyhow::Result<Held> {
        match settings {
            StoreSettings::Sqlite { state_file } => {
                let path = paas_store::resolve_store_path(state_file.as_deref());
                // Refused with the holder's name while a service runs.
                let store = SqliteStore::open_exclusive(&path)?;
                Ok(Held {
                    store: Box::new(store),
                    lease: None,
                })
            }
            StoreSettings::Postgres(settings) => open_postgres(settings).await,
        }
    }

    async fn release(self) {
        if let Some((lease, epoch)) = self.lease {
            let _ = lease.release(epoch).await;
        }
    }
}

async fn open_postgres(settings: &PostgresSettings) -> anyhow::Result<Held> {
    let store = PgStore::open(settings).await?;
    let identity = format!("store-migrate:{}", std::process::id());
    // The migration holds the lease for as long as it copies: long enough.
    let mut settings = settings.clone();
    settings.lease = Duration::from_secs(600);
    let lease = Lease::connect(&settings, identity).await?;
    let Some(acquired) = lease.try_acquire().await? else {
        let info = lease.read().await?;
        anyhow::bail!(
            "{} is in use by a paas-runner service ({}): stop every replica first",
            settings.url,
            crate::ha::lease_line(&info)
        );
    };
    store.fence_with(acquired.epoch);
    Ok(Held {
        store: Box::new(store),
        lease: Some((lease, acquired.epoch)),
    })
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
        if !path.exists() {
            anyhow::bail!("no state database at {}", path.display());
        }
    }
    let mut source = Held::open(&from_settings).await?;
    let mut target = match Held::open(&to_settings).await {
        Ok(target) => target,
        Err(error) => {
            source.release().await;
            return Err(error);
        }
    };
    let result = copy(source.store.as_mut(), target.store.as_mut()).await;
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
