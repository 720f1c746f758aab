//! Durable state of paas-runner: one embedded SQLite database (WAL mode).
//!
//! Every job transition is written here before the side effect it announces
//! is started, so that a process killed at any instant can be restarted from
//! the last recorded intent. Stored rows are versioned JSON documents of their
//! own type ([`StoredJob`]), separate from the core's types; a job's payload
//! is written once, in its own table, not with every stage change.
//!
//! One process owns a store ([`Store::open_exclusive`], [`StoreLock`]); its
//! files are private (mode 0600, [`PRIVATE_MODE`]); what a forgotten job
//! stored (its token, its payload) is overwritten in the database and gone
//! from the write-ahead file soon after ([`Store::purge_if_due`]).

mod files;
mod lock;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paas_core::{FailureKind, JobRecord, Secret, StageRecord};
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::{Deserialize, Serialize};

pub use files::{enforce_private_mode, side_files, PRIVATE_MODE};
pub use lock::{lock_holder, lock_path, Holder, StoreLock};

/// Marks our databases (`PRAGMA application_id`): "PaRu".
const APPLICATION_ID: i32 = 0x5061_5275;
/// Schema version of the tables: 1 kept the payload in each job row; 2 keeps
/// it once in `payloads`.
const SCHEMA_VERSION: i32 = 2;

/// How long a write waits for another connection (a reader such as
/// `paas-runner state`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database used when no `state_file` is configured, relative to the
/// current directory.
pub const DEFAULT_STORE_FILE: &str = "paas-runner-state.db";

/// Forgotten jobs' data is purged from the write-ahead file at most this often
/// (a checkpoint costs a few file syncs).
pub const PURGE_MIN_INTERVAL: Duration = Duration::from_secs(1);

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
    #[error("state store {path}: schema version {found} is newer than this program understands ({SCHEMA_VERSION}); upgrade paas-runner")]
    TooNew { path: PathBuf, found: i32 },
    #[error("state store {path}: record of job {job_id} is unreadable: {detail}")]
    Corrupt {
        path: PathBuf,
        job_id: i64,
        detail: String,
    },
    /// Another process owns the store.
    #[error("state store {path} is in use by another paas-runner ({holder}): stop that one first, or give this configuration its own state_file")]
    Locked { path: PathBuf, holder: Holder },
}

/// The state database.
pub struct Store {
    // Declared before `lock`: the database is closed before the lock is
    // released.
    conn: Connection,
    path: PathBuf,
    /// Jobs whose payload row is known to exist: later saves skip it.
    payload_saved: RefCell<HashSet<(String, u64)>>,
    /// A job was forgotten since the last purge of the write-ahead file.
    purge_pending: Cell<bool>,
    last_purge: Cell<Option<Instant>>,
    purge_interval: Duration,
    /// Schema version of the file: 1 only when opened by a reader
    /// ([`Store::open`]), which does not migrate.
    schema: Cell<i32>,
    lock: Option<StoreLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
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

impl Store {
    /// Opens (creating it with mode 0600 if needed) the database at `path`,
    /// without owning it: for commands that read while a service runs. A
    /// database of an earlier schema is read as it is, not migrated (its
    /// owner may be an earlier version still running): only `load` and
    /// `get_meta` work on it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(&absolute(path), None)
    }

    /// Takes the store's lock ([`StoreLock`]), then opens it, migrating an
    /// earlier schema: fails at once with [`StoreError::Locked`] while
    /// another process owns it. The lock is held as long as the `Store`
    /// lives.
    pub fn open_exclusive(path: &Path) -> Result<Store, StoreError> {
        let path = absolute(path);
        let lock = StoreLock::acquire(&path)?;
        Store::open_with(&path, Some(lock))
    }

    fn open_with(path: &Path, lock: Option<StoreLock>) -> Result<Store, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(PRIVATE_MODE)
                .open(path)
                .map_err(io_err)?;
        }
        // SQLite creates its side files with the database's mode: the
        // database first.
        enforce_private_mode(path)?;
        for side_file in side_files(path) {
            enforce_private_mode(&side_file)?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| StoreError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            payload_saved: RefCell::default(),
            purge_pending: Cell::new(false),
            last_purge: Cell::new(None),
            purge_interval: PURGE_MIN_INTERVAL,
            schema: Cell::new(SCHEMA_VERSION),
            lock,
        };
        store.init()?;
        for side_file in side_files(path) {
            enforce_private_mode(&side_file)?;
        }
        Ok(store)
    }

    /// A database in memory (tests, demo without persistence).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        let store = Store {
            conn,
            path: PathBuf::from(":memory:"),
            payload_saved: RefCell::default(),
            purge_pending: Cell::new(false),
            last_purge: Cell::new(None),
            purge_interval: PURGE_MIN_INTERVAL,
            schema: Cell::new(SCHEMA_VERSION),
            lock: None,
        };
        store.init()?;
        Ok(store)
    }

    /// The absolute path of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the least time between two purges of the write-ahead file
    /// ([`PURGE_MIN_INTERVAL`] by default): for tests and measurements.
    pub fn set_purge_interval(&mut self, interval: Duration) {
        self.purge_interval = interval;
    }

    /// The lock this store is owned through ([`Store::open_exclusive`]).
    pub fn lock(&self) -> Option<&StoreLock> {
        self.lock.as_ref()
    }

    fn sql_err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| match &source {
            rusqlite::Error::SqliteFailure(err, _)
                if err.code == rusqlite::ErrorCode::NotADatabase =>
            {
                StoreError::Foreign {
                    path: self.path.clone(),
                }
            }
            _ => StoreError::Sqlite {
                path: self.path.clone(),
                source,
            },
        }
    }

    fn init(&self) -> Result<(), StoreError> {
        let err = self.sql_err();
        let app_id: i32 = self
            .conn
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(&err)?;
        let user_version: i32 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(&err)?;
        let table_count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(&err)?;
        if app_id == 0 && table_count == 0 {
            self.conn
                .execute_batch(&format!(
                    "PRAGMA journal_mode = WAL;
                     PRAGMA application_id = {APPLICATION_ID};
                     BEGIN;
                     {CREATE_JOBS}
                     {CREATE_PAYLOADS}
                     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     PRAGMA user_version = {SCHEMA_VERSION};
                     COMMIT;"
                ))
                .map_err(&err)?;
        } else if app_id != APPLICATION_ID {
            return Err(StoreError::Foreign {
                path: self.path.clone(),
            });
        } else if user_version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: user_version,
            });
        }
        // `secure_delete`: what a deleted or replaced row held is overwritten
        // with zeros, so a forgotten job's token does not stay in the file.
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA secure_delete = ON;",
            )
            .map_err(&err)?;
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(&err)?;
        if app_id == APPLICATION_ID && user_version == 1 {
            if self.lock.is_some() {
                self.migrate_v1_to_v2()?;
            } else {
                self.schema.set(1);
            }
        }
        // Integrity of what is there, so a damaged file is reported at start.
        let check: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(&err)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                job_id: -1,
                detail: check,
            });
        }
        Ok(())
    }

    /// Version 1 kept the payload in every job row: moved to `payloads`, in
    /// one transaction (a crash leaves version 1 intact).
    fn migrate_v1_to_v2(&self) -> Result<(), StoreError> {
        let err = self.sql_err();
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(&err)?;
        tx.execute_batch(CREATE_PAYLOADS).map_err(&err)?;
        let rows: Vec<(String, i64, String)> = tx
            .prepare("SELECT runner_key, job_id, record FROM jobs")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .map_err(&err)?;
        let count = rows.len();
        for (runner_key, job_id, text) in rows {
            let corrupt = |detail: String| StoreError::Corrupt {
                path: self.path.clone(),
                job_id,
                detail,
            };
            let stored: StoredJob =
                serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            let (job, payload) = match stored {
                StoredJob::V1(v1) => (v1.job, v1.payload),
                // Written by a newer program between versions: already moved.
                StoredJob::V2(_) => continue,
            };
            let record =
                serde_json::to_string(&StoredJob::V2(job)).map_err(|e| corrupt(e.to_string()))?;
            tx.execute(
                "INSERT OR REPLACE INTO payloads (runner_key, job_id, payload) VALUES (?1, ?2, ?3)",
                params![runner_key, job_id, payload],
            )
            .map_err(&err)?;
            tx.execute(
                "UPDATE jobs SET record = ?3 WHERE runner_key = ?1 AND job_id = ?2",
                params![runner_key, job_id, record],
            )
            .map_err(&err)?;
        }
        tx.execute_batch("PRAGMA user_version = 2;").map_err(&err)?;
        tx.commit().map_err(&err)?;
        tracing::info!(store = %self.path.display(), jobs = count, "state store upgraded to schema version 2 (payloads stored once)");
        Ok(())
    }

    /// Inserts or replaces a job record. Its payload is written the first
    /// time only.
    pub fn save(&self, record: &JobRecord) -> Result<(), StoreError> {
        let stored =
            serde_json::to_string(&StoredJob::V2(StoredJobV2::from(record))).map_err(|source| {
                StoreError::Corrupt {
                    path: self.path.clone(),
                    job_id: record.job_id as i64,
                    detail: source.to_string(),
                }
            })?;
        let err = self.sql_err();
        let key = (record.runner_key.clone(), record.job_id);
        let first_save = !self.payload_saved.borrow().contains(&key);
        let tx = if first_save {
            Some(
                Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)
                    .map_err(&err)?,
            )
        } else {
            None
        };
        if first_save {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO payloads (runner_key, job_id, payload) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![record.runner_key, record.job_id as i64, record.payload])
                })
                .map_err(&err)?;
        }
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO jobs (runner_key, job_id, record) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![record.runner_key, record.job_id as i64, stored])
            })
            .map_err(&err)?;
        if let Some(tx) = tx {
            tx.commit().map_err(&err)?;
            self.payload_saved.borrow_mut().insert(key);
        }
        Ok(())
    }

    /// Drops a job record and its payload. What they held is overwritten in
    /// the database at once and purged from the write-ahead file within
    /// [`PURGE_MIN_INTERVAL`] of the next call to `forget` or
    /// [`Store::purge_if_due`], or when the store is closed.
    pub fn forget(&self, runner_key: &str, job_id: u64) -> Result<(), StoreError> {
        let err = self.sql_err();
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred).map_err(&err)?;
        for sql in [
            "DELETE FROM jobs WHERE runner_key = ?1 AND job_id = ?2",
            "DELETE FROM payloads WHERE runner_key = ?1 AND job_id = ?2",
        ] {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute(params![runner_key, job_id as i64]))
                .map_err(&err)?;
        }
        tx.commit().map_err(&err)?;
        self.payload_saved
            .borrow_mut()
            .remove(&(runner_key.to_owned(), job_id));
        self.purge_pending.set(true);
        self.purge_if_due()?;
        Ok(())
    }

    /// Purges forgotten jobs' data from the write-ahead file if a job was
    /// forgotten since the last purge and the last purge is at least
    /// [`PURGE_MIN_INTERVAL`] old (or never happened). Cheap when there is nothing to do: the
    /// service calls it at every turn of its event loop. Returns whether it
    /// purged.
    pub fn purge_if_due(&self) -> Result<bool, StoreError> {
        if !self.purge_pending.get()
            || self
                .last_purge
                .get()
                .is_some_and(|at| at.elapsed() < self.purge_interval)
        {
            return Ok(false);
        }
        self.purge_now()
    }

    /// Copies the write-ahead file into the database and truncates it
    /// (`wal_checkpoint(TRUNCATE)`). A reader (`paas-runner state`) can
    /// prevent it: it is then tried again later. Returns whether it purged.
    pub fn purge_now(&self) -> Result<bool, StoreError> {
        self.last_purge.set(Some(Instant::now()));
        // Without waiting: a checkpoint that waits for readers would stall
        // the event loop.
        let err = self.sql_err();
        self.conn.busy_timeout(Duration::ZERO).map_err(&err)?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            });
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(&err)?;
        let busy = match busy {
            Ok(busy) => busy,
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                1
            }
            Err(error) => return Err(err(error)),
        };
        let done = busy == 0;
        if done {
            self.purge_pending.set(false);
        }
        Ok(done)
    }

    /// Every recorded job, ordered by runner and job id.
    pub fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(if self.schema.get() == 1 {
                // Version 1 rows carry their payload.
                "SELECT job_id, record, NULL FROM jobs ORDER BY runner_key, job_id"
            } else {
                "SELECT jobs.job_id, jobs.record, payloads.payload FROM jobs \
                 LEFT JOIN payloads USING (runner_key, job_id) \
                 ORDER BY jobs.runner_key, jobs.job_id"
            })
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(self.sql_err())?;
        let mut records = Vec::new();
        for row in rows {
            let (job_id, text, payload) = row.map_err(self.sql_err())?;
            let corrupt = |detail: String| StoreError::Corrupt {
                path: self.path.clone(),
                job_id,
                detail,
            };
            let stored: StoredJob =
                serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            records.push(stored.into_record(payload).map_err(corrupt)?);
        }
        let mut saved = self.payload_saved.borrow_mut();
        for record in &records {
            saved.insert((record.runner_key.clone(), record.job_id));
        }
        Ok(records)
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql_err())
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(self.sql_err())?;
        Ok(())
    }
}

impl Drop for Store {
    /// A clean close leaves no forgotten job's data in the write-ahead file
    /// (SQLite also checkpoints when the last connection closes, but keeps
    /// the file when another process reads).
    fn drop(&mut self) {
        if self.purge_pending.get() {
            if let Err(error) = self.purge_now() {
                tracing::warn!(%error, "could not purge the state store's write-ahead file at close");
            }
        }
    }
}

const CREATE_JOBS: &str = "CREATE TABLE jobs (
    runner_key TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (runner_key, job_id)
);";

const CREATE_PAYLOADS: &str = "CREATE TABLE payloads (
    runner_key TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (runner_key, job_id)
);";

/// A stored job, tagged with its format version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum StoredJob {
    /// Schema version 1 (payload in the row); read only to migrate.
    #[serde(rename = "1")]
    V1(StoredJobV1),
    #[serde(rename = "2")]
    V2(StoredJobV2),
}

/// Version 1 of the stored job: version 2 plus the payload, in the same
/// flat JSON object.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredJobV1 {
    #[serde(flatten)]
    pub job: StoredJobV2,
    pub payload: String,
}

/// Version 2 of the stored job: the payload is in the `payloads` table.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredJobV2 {
    pub runner_key: String,
    pub job_id: u64,
    pub token: String,
    pub project_id: Option<u64>,
    pub failure_reasons: Option<Vec<String>>,
    pub flavor: String,
    pub expected_weight: f64,
    pub stage: String,
    pub app_id: Option<String>,
    pub app_weight: f64,
    pub app_maybe: bool,
    pub failure_kind: Option<String>,
    pub failure_message: Option<String>,
    pub message_written: bool,
    pub failed: bool,
    /// Absent in records written before two-phase commit support.
    #[serde(default = "confirmed_by_default")]
    pub confirmed: bool,
    #[serde(default)]
    pub log_bytes: u64,
    #[serde(default)]
    pub slow_notice_sent: bool,
}

fn confirmed_by_default() -> bool {
    true
}

impl From<&JobRecord> for StoredJobV2 {
    fn from(record: &JobRecord) -> Self {
        StoredJobV2 {
            runner_key: record.runner_key.clone(),
            job_id: record.job_id,
            token: record.token.expose().to_owned(),
            project_id: record.project_id,
            failure_reasons: record.failure_reasons.clone(),
            flavor: record.flavor.clone(),
            expected_weight: record.expected_weight,
            stage: record.stage.as_str().to_owned(),
            app_id: record.app_id.clone(),
            app_weight: record.app_weight,
            app_maybe: record.app_maybe,
            failure_kind: record.failure_kind.map(|kind| match kind {
                FailureKind::User => "user".to_owned(),
                FailureKind::System => "system".to_owned(),
            }),
            failure_message: record.failure_message.clone(),
            message_written: record.message_written,
            failed: record.failed,
            confirmed: record.confirmed,
            log_bytes: record.log_bytes,
            slow_notice_sent: record.slow_notice_sent,
        }
    }
}

impl StoredJob {
    /// The core's record, with the payload read from the `payloads` table
    /// (`None` when it has no row there). The only way back to core types.
    fn into_record(self, payload_row: Option<String>) -> Result<JobRecord, String> {
        let (job, payload) = match (self, payload_row) {
            (StoredJob::V1(v1), _) => (v1.job, v1.payload),
            (StoredJob::V2(job), Some(payload)) => (job, payload),
            (StoredJob::V2(_), None) => return Err("its payload is missing".to_owned()),
        };
        let stage = StageRecord::parse(&job.stage)
            .ok_or_else(|| format!("unknown stage {:?}", job.stage))?;
        let failure_kind = match job.failure_kind.as_deref() {
            None => None,
            Some("user") => Some(FailureKind::User),
            Some("system") => Some(FailureKind::System),
            Some(other) => return Err(format!("unknown failure kind {other:?}")),
        };
        Ok(JobRecord {
            runner_key: job.runner_key,
            job_id: job.job_id,
            token: Secret::new(job.token),
            project_id: job.project_id,
            payload,
            failure_reasons: job.failure_reasons,
            flavor: job.flavor,
            expected_weight: job.expected_weight,
            stage,
            app_id: job.app_id,
            app_weight: job.app_weight,
            app_maybe: job.app_maybe,
            failure_kind,
            failure_message: job.failure_message,
            message_written: job.message_written,
            failed: job.failed,
            confirmed: job.confirmed,
            log_bytes: job.log_bytes,
            slow_notice_sent: job.slow_notice_sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(job_id: u64, stage: StageRecord) -> JobRecord {
        JobRecord {
            runner_key: "abcdefgh".into(),
            job_id,
            token: Secret::new("glcbt-job-token"),
            project_id: Some(7),
            payload: r#"{"id":1}"#.into(),
            failure_reasons: Some(vec!["script_failure".into()]),
            flavor: "S".into(),
            expected_weight: 5.65,
            stage,
            app_id: Some("app_1".into()),
            app_weight: 5.65,
            app_maybe: false,
            failure_kind: Some(FailureKind::User),
            failure_message: Some("bad flavor".into()),
            message_written: true,
            failed: true,
            confirmed: true,
            log_bytes: 0,
            slow_notice_sent: false,
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            store.save(&record(1, StageRecord::Running)).unwrap();
            store.save(&record(2, StageRecord::Failing)).unwrap();
            store
                .save(&record(1, StageRecord::Decommissioning))
                .unwrap();
            store.forget("abcdefgh", 2).unwrap();
            store.set_meta("system_id", "r_abc").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.path().is_absolute());
        assert_eq!(
            store.load().unwrap(),
            vec![record(1, StageRecord::Decommissioning)]
        );
        assert_eq!(
            store.get_meta("system_id").unwrap().as_deref(),
            Some("r_abc")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn foreign_and_garbage_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(
            &garbage,
            b"this is not a database at all, just some text padding it out......",
        )
        .unwrap();
        let err = Store::open(&garbage).unwrap_err().to_string();
        assert!(err.contains("garbage.db"), "{err}");
        assert!(err.contains("not a paas-runner state database"), "{err}");

        let foreign = dir.path().join("foreign.db");
        let conn = Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
        drop(conn);
        let err = Store::open(&foreign).unwrap_err().to_string();
        assert!(
            err.contains("foreign.db") && err.contains("not a paas-runner"),
            "{err}"
        );
    }

    #[test]
    fn json_state_file_maps_to_sibling_db() {
        assert_eq!(
            store_path(Path::new("/srv/state.json")),
            Path::new("/srv/state.db")
        );
        assert_eq!(
            store_path(Path::new("/srv/state.sqlite")),
            Path::new("/srv/state.sqlite")
        );
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    /// The database and its write-ahead file, as bytes.
    fn raw_files(path: &Path) -> (Vec<u8>, Vec<u8>) {
        let [wal, _] = side_files(path);
        (
            std::fs::read(path).unwrap(),
            std::fs::read(wal).unwrap_or_default(),
        )
    }

    #[test]
    fn a_relative_path_is_made_absolute() {
        let store = resolve_store_path(None);
        assert!(store.is_absolute() && store.ends_with(DEFAULT_STORE_FILE));
        let json = resolve_store_path(Some(Path::new("state/x.json")));
        assert!(
            json.is_absolute() && json.ends_with("state/x.db"),
            "{json:?}"
        );
    }

    #[test]
    fn an_exclusive_store_refuses_a_second_owner_but_not_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let owner = Store::open_exclusive(&path).unwrap();
        owner.save(&record(1, StageRecord::Running)).unwrap();
        let holder = owner.lock().unwrap().holder().clone();
        assert_eq!(lock_holder(&path).unwrap(), Some(holder.clone()));
        match Store::open_exclusive(&path) {
            Err(StoreError::Locked { holder: found, .. }) => assert_eq!(found, holder),
            other => panic!("{other:?}"),
        }
        // `paas-runner state` reads while the service runs.
        let reader = Store::open(&path).unwrap();
        assert_eq!(reader.load().unwrap().len(), 1);
        drop(reader);
        drop(owner);
        assert_eq!(lock_holder(&path).unwrap(), None);
        Store::open_exclusive(&path).unwrap();
    }

    #[test]
    fn mode_0600_is_enforced_on_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // A first connection keeps the side files in place.
        let first = Store::open(&path).unwrap();
        first.save(&record(1, StageRecord::Running)).unwrap();
        let mut files = side_files(&path).to_vec();
        files.push(path.clone());
        files.push(lock_path(&path));
        std::fs::write(lock_path(&path), "").unwrap();
        for file in &files {
            assert!(file.exists(), "{file:?}");
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let second = Store::open_exclusive(&path).unwrap();
        for file in &files {
            assert_eq!(mode_of(file), 0o600, "{file:?}");
        }
        assert_eq!(second.load().unwrap().len(), 1);
        // Nothing to change: no change reported.
        assert!(!enforce_private_mode(&path).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(enforce_private_mode(&path).unwrap());
        assert!(!enforce_private_mode(&dir.path().join("absent")).unwrap());
    }

    #[test]
    fn the_payload_is_written_once_not_with_every_stage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let payload = format!("{{\"big\":\"{}\"}}", "p".repeat(100_000));
        {
            let store = Store::open(&path).unwrap();
            let mut job = record(1, StageRecord::Queued);
            job.payload = payload.clone();
            store.save(&job).unwrap();
            job.stage = StageRecord::Running;
            store.save(&job).unwrap();
            let rows: Vec<String> = store
                .conn
                .prepare("SELECT record FROM jobs")
                .unwrap()
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len(), 1);
            assert!(
                rows[0].len() < 1000 && !rows[0].contains("ppp"),
                "{}",
                rows[0]
            );
            // A payload once written is not rewritten, even after a restart
            // (the core never changes it).
            job.payload = "changed".into();
            store.save(&job).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mut job = record(1, StageRecord::Failing);
        job.payload = "changed again".into();
        store.save(&job).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].payload, payload);
        assert_eq!(loaded[0].stage, StageRecord::Failing);
        store.forget("abcdefgh", 1).unwrap();
        let payloads: i64 = store
            .conn
            .query_row("SELECT count(*) FROM payloads", [], |row| row.get(0))
            .unwrap();
        assert_eq!(payloads, 0);
    }

    /// The tables and rows as the previous version (schema 1) wrote them.
    const V1_SCHEMA: &str = "PRAGMA journal_mode = WAL;
         PRAGMA application_id = 1348555381;
         BEGIN;
         CREATE TABLE jobs (
             runner_key TEXT NOT NULL,
             job_id INTEGER NOT NULL,
             record TEXT NOT NULL,
             PRIMARY KEY (runner_key, job_id)
         );
         CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         PRAGMA user_version = 1;
         COMMIT;";
    const V1_ROWS: [(&str, i64, &str); 2] = [
        (
            "abcdefgh",
            1,
            r#"{"v":"1","runner_key":"abcdefgh","job_id":1,"token":"glcbt-job-token","project_id":7,"payload":"{\"id\":1}","failure_reasons":["script_failure"],"flavor":"S","expected_weight":5.65,"stage":"running","app_id":"app_1","app_weight":5.65,"app_maybe":false,"failure_kind":"user","failure_message":"bad flavor","message_written":true,"failed":true,"confirmed":true,"log_bytes":0,"slow_notice_sent":false}"#,
        ),
        // Written before two-phase commit and log offsets were recorded.
        (
            "abcdefgh",
            2,
            r#"{"v":"1","runner_key":"abcdefgh","job_id":2,"token":"glcbt-job-token","project_id":7,"payload":"{\"id\":1}","failure_reasons":["script_failure"],"flavor":"S","expected_weight":5.65,"stage":"failing","app_id":"app_1","app_weight":5.65,"app_maybe":false,"failure_kind":"user","failure_message":"bad flavor","message_written":true,"failed":true}"#,
        ),
    ];

    #[test]
    fn a_version_1_database_is_migrated_and_every_job_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(V1_SCHEMA).unwrap();
            for (key, id, text) in V1_ROWS {
                conn.execute(
                    "INSERT INTO jobs (runner_key, job_id, record) VALUES (?1, ?2, ?3)",
                    params![key, id, text],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('system_id', 'r_old')",
                [],
            )
            .unwrap();
        }
        let expected = vec![
            record(1, StageRecord::Running),
            record(2, StageRecord::Failing),
        ];
        // A reader (`paas-runner state`, maybe next to an earlier version
        // still running) reads it without migrating it.
        {
            let reader = Store::open(&path).unwrap();
            assert_eq!(reader.load().unwrap(), expected);
            let version: i32 = reader
                .conn
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .unwrap();
            assert_eq!(version, 1);
        }
        // Its owner migrates it.
        for _ in 0..2 {
            let store = Store::open_exclusive(&path).unwrap();
            assert_eq!(store.load().unwrap(), expected);
            assert_eq!(
                store.get_meta("system_id").unwrap().as_deref(),
                Some("r_old")
            );
            let version: i32 = store
                .conn
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            let old_rows: i64 = store
                .conn
                .query_row(
                    r#"SELECT count(*) FROM jobs WHERE record LIKE '%"v":"1"%' OR record LIKE '%payload%'"#,
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(old_rows, 0);
        }
        // Written by a newer program: refused, not misread.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 3;").unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 3 is newer"), "{err}");
    }

    #[test]
    fn a_forgotten_job_leaves_neither_token_nor_payload_in_the_files() {
        const TOKEN: &str = "glcbt-FORGET-ME-7f3a9c2e";
        const PAYLOAD: &str = "PAYLOAD-FORGET-ME-51b8d0";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut store = Store::open_exclusive(&path).unwrap();
        // No automatic purge: the test decides when.
        store.set_purge_interval(Duration::from_secs(3600));
        store.purge_now().unwrap();
        for id in 100..140 {
            store.save(&record(id, StageRecord::Running)).unwrap();
        }
        let mut job = record(1, StageRecord::Queued);
        job.token = Secret::new(TOKEN);
        job.payload = format!("{{\"marker\":\"{}\"}}", PAYLOAD.repeat(300));
        for stage in [
            StageRecord::Queued,
            StageRecord::Provisioning,
            StageRecord::Running,
            StageRecord::Decommissioning,
        ] {
            job.stage = stage;
            store.save(&job).unwrap();
        }
        // Checkpointed once, so the database file holds them too.
        store.purge_now().unwrap();
        job.stage = StageRecord::Failing;
        store.save(&job).unwrap();
        let (db, wal) = raw_files(&path);
        assert!(
            contains(&db, TOKEN) && contains(&db, PAYLOAD),
            "test sees nothing"
        );
        assert!(
            contains(&wal, TOKEN),
            "test sees nothing in the write-ahead file"
        );

        store.forget("abcdefgh", 1).unwrap();
        for id in 100..110 {
            store.forget("abcdefgh", id).unwrap();
        }
        let (_, wal) = raw_files(&path);
        assert!(contains(&wal, TOKEN), "purged before it was due");
        assert!(store.purge_now().unwrap());
        let (db, wal) = raw_files(&path);
        for (name, bytes) in [("database", &db), ("write-ahead file", &wal)] {
            assert!(!contains(bytes, TOKEN), "token left in the {name}");
            assert!(!contains(bytes, PAYLOAD), "payload left in the {name}");
        }
        // The other jobs are intact.
        assert_eq!(store.load().unwrap().len(), 30);

        // A reader in the middle of a read does not make the purge wait: it
        // is tried again later.
        job.job_id = 4;
        store.save(&job).unwrap();
        let reader = Connection::open(&path).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM jobs;")
            .unwrap();
        store.forget("abcdefgh", 4).unwrap();
        let started = Instant::now();
        assert!(!store.purge_now().unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        reader.execute_batch("COMMIT;").unwrap();
        drop(reader);
        assert!(store.purge_now().unwrap());
        let (db, wal) = raw_files(&path);
        assert!(!contains(&db, TOKEN) && !contains(&wal, TOKEN));

        // Purges come by themselves when due, and at close.
        store.set_purge_interval(Duration::ZERO);
        job.job_id = 2;
        store.save(&job).unwrap();
        store.forget("abcdefgh", 2).unwrap();
        let (db, wal) = raw_files(&path);
        assert!(!contains(&db, TOKEN) && !contains(&wal, TOKEN));
        assert!(!store.purge_if_due().unwrap(), "nothing pending");
        store.set_purge_interval(Duration::from_secs(3600));
        job.job_id = 3;
        store.save(&job).unwrap();
        store.forget("abcdefgh", 3).unwrap();
        let reader = Connection::open(&path).unwrap();
        drop(store);
        let (db, wal) = raw_files(&path);
        assert!(!contains(&db, TOKEN) && !contains(&wal, TOKEN));
        drop(reader);
    }

    /// Cost of the job writes of the event loop, printed (not asserted):
    /// run with `--nocapture` to see it.
    #[test]
    fn save_and_forget_cost_is_printed() {
        const JOBS: u64 = 300;
        let payload = format!("{{\"script\":\"{}\"}}", "x".repeat(64 * 1024));
        let measure = |label: &str, setup: &dyn Fn(&mut Store), old_layout: bool| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let mut store = Store::open_exclusive(&path).unwrap();
            setup(&mut store);
            let start = Instant::now();
            for id in 0..JOBS {
                let mut job = record(id, StageRecord::Queued);
                job.payload = payload.clone();
                for stage in [
                    StageRecord::Queued,
                    StageRecord::Provisioning,
                    StageRecord::Deploying,
                    StageRecord::Launching,
                    StageRecord::Running,
                    StageRecord::Decommissioning,
                ] {
                    job.stage = stage;
                    if old_layout {
                        save_as_version_1(&store, &job);
                    } else {
                        store.save(&job).unwrap();
                    }
                }
                store.forget("abcdefgh", id).unwrap();
            }
            let elapsed = start.elapsed();
            println!(
                "{label}: {JOBS} jobs (64 KiB payload, 6 saves + forget each): {:.1} ms total, {:.0} us per job",
                elapsed.as_secs_f64() * 1000.0,
                elapsed.as_secs_f64() * 1e6 / JOBS as f64
            );
        };
        let plain = |store: &mut Store| {
            store.set_purge_interval(Duration::from_secs(3600));
            store
                .conn
                .execute_batch("PRAGMA secure_delete = OFF;")
                .unwrap();
        };
        measure(
            "version 1 layout, no secure_delete, no purge (before)",
            &plain,
            true,
        );
        measure("payload once, no secure_delete, no purge", &plain, false);
        measure(
            "payload once, secure_delete, purge at most 1/s (shipped)",
            &|_| {},
            false,
        );
        measure(
            "payload once, secure_delete, purge at every forget",
            &|store: &mut Store| store.set_purge_interval(Duration::ZERO),
            false,
        );
    }

    /// What `save` did in schema version 1: the whole record, payload
    /// included, at every stage change.
    fn save_as_version_1(store: &Store, record: &JobRecord) {
        let stored = serde_json::to_string(&StoredJob::V1(StoredJobV1 {
            job: StoredJobV2::from(record),
            payload: record.payload.clone(),
        }))
        .unwrap();
        store
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO jobs (runner_key, job_id, record) VALUES (?1, ?2, ?3)",
            )
            .unwrap()
            .execute(params![record.runner_key, record.job_id as i64, stored])
            .unwrap();
    }
}
