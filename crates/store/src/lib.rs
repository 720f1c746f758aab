//! Durable state of paas-runner, behind one seam ([`JobStore`]): the
//! embedded SQLite database ([`SqliteStore`], WAL mode, the default) or a
//! PostgreSQL database shared by replicas ([`postgres::PgStore`], with a
//! lease that makes one replica active at a time).
//!
//! Every job transition is written here before the side effect it announces
//! is started, so that a process killed at any instant can be restarted from
//! the last recorded intent. Stored rows are versioned JSON documents of their
//! own type ([`StoredJob`], the one place converting to and from the core's
//! [`JobRecord`]); a job's payload is written once, in its own table, not
//! with every stage change.
//!
//! One process owns a SQLite store ([`SqliteStore::open_exclusive`],
//! [`StoreLock`]); its files are private (mode 0600, [`PRIVATE_MODE`]); what
//! a forgotten job stored (its token, its payload) is overwritten in the
//! database and gone from the write-ahead file soon after
//! ([`SqliteStore::purge_if_due`]).

mod files;
mod lock;
pub mod postgres;
mod sqlite;
mod stored;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use paas_core::JobRecord;

pub use files::{enforce_private_mode, side_files, PRIVATE_MODE};
pub use lock::{lock_holder, lock_path, Holder, StoreLock};
pub use paas_config::DEFAULT_STATE_FILE as DEFAULT_STORE_FILE;
pub use sqlite::{SqliteStore, PURGE_MIN_INTERVAL};
pub use stored::{StoredJob, StoredJobV1, StoredJobV2};

/// The embedded store under its former name.
pub type Store = SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state store {path}: not a paas-runner state database (refusing to touch it)")]
    Foreign { path: PathBuf },
    #[error("state store {path}: schema version {found} is newer than this program understands ({supported}); upgrade paas-runner")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("state store {path}: record of job {job_id} is unreadable: {detail}")]
    Corrupt {
        path: PathBuf,
        job_id: i64,
        detail: String,
    },
    /// Another process owns the store.
    #[error("state store {path} is in use by another paas-runner ({holder}): stop that one first, or give this configuration its own state_file")]
    Locked { path: PathBuf, holder: Holder },
    /// The PostgreSQL server refused or failed a request (`location` has no
    /// password).
    #[error("state store {location}: {detail}")]
    Postgres { location: String, detail: String },
    /// The PostgreSQL server did not answer in time.
    #[error("state store {location}: no answer within {seconds} s")]
    Timeout { location: String, seconds: u64 },
    /// Another replica holds the lease now: this one's writes are refused.
    #[error("state store {location}: lease lost: epoch {epoch} is over (now epoch {current}, held by {holder}); this replica stops acting")]
    Fenced {
        location: String,
        epoch: i64,
        current: i64,
        holder: String,
    },
}

impl StoreError {
    /// Whether another replica took the lease over (this one must stop).
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

/// A future returned by a [`JobStore`] method.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A job write, in the order the core emitted it.
#[derive(Debug, Clone)]
pub enum StoreWrite {
    /// Insert or replace the job's record (its payload is written once).
    Save(JobRecord),
    /// Drop the job's record and payload.
    Forget { runner_key: String, job_id: u64 },
    /// Set a meta data entry (what `paas-runner state` shows besides jobs).
    Meta { key: String, value: String },
}

/// A write handed to the store.
#[derive(Debug)]
pub enum Pending {
    /// Done, durable or failed, before `submit` returned (SQLite).
    Done(Result<(), StoreError>),
    /// Durable once this resolves to `Ok` (a store over a network): the
    /// caller holds back the job's next effects until then. Writes complete
    /// in the order they were submitted.
    Later(tokio::sync::oneshot::Receiver<Result<(), StoreError>>),
}

/// What the service needs of a durable store. The event loop never waits
/// on it: [`JobStore::submit`] returns at once, and the loop holds back a
/// job's next commands until its write is durable ([`Pending`]); reads
/// ([`JobStore::load`], meta data) happen at start and by operator
/// commands.
///
/// Adding a store: implement this trait in a module of this crate, give it a
/// variant of `paas_config::StoreSettings`, and open it in
/// `paas-runner`'s `store_open.rs`.
pub trait JobStore: Send {
    /// Where the state is, for logs and messages (never a password).
    fn location(&self) -> String;
    /// Every recorded job, ordered by runner and job id.
    fn load(&mut self) -> StoreFuture<'_, Vec<JobRecord>>;
    fn get_meta<'a>(&'a mut self, key: &'a str) -> StoreFuture<'a, Option<String>>;
    fn set_meta<'a>(&'a mut self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()>;
    /// Starts a write.
    fn submit(&mut self, write: StoreWrite) -> Pending;
    /// Housekeeping, called at every turn of the event loop: cheap when
    /// there is nothing to do.
    fn tick(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where the database lives for a `state_file` setting: a reference-style
/// `*.json` path gets a sibling `*.db`; any other path is used as is.
pub fn store_path(state_file: &Path) -> PathBuf {
    if state_file.extension().is_some_and(|ext| ext == "json") {
        state_file.with_extension("db")
    } else {
        state_file.to_path_buf()
    }
}

/// The absolute path of the database for an optional `state_file` setting
/// ([`DEFAULT_STORE_FILE`] in the current directory when unset).
pub fn resolve_store_path(state_file: Option<&Path>) -> PathBuf {
    let path = state_file.map_or_else(|| PathBuf::from(DEFAULT_STORE_FILE), store_path);
    absolute(&path)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
