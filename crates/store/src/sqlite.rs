//! The embedded store: one SQLite database (WAL mode), owned by one
//! process at a time ([`SqliteStore::open_exclusive`]).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paas_core::JobRecord;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::files::{enforce_private_mode, side_files, PRIVATE_MODE};
use crate::lock::StoreLock;
use crate::stored::StoredJob;
use crate::{absolute, JobStore, Pending, StoreError, StoreFuture, StoreWrite};

#[cfg(test)]
mod tests;

/// Marks our databases (`PRAGMA application_id`): "PaRu".
const APPLICATION_ID: i32 = 0x5061_5275;
/// Schema version of the tables: 1 kept the payload in each job row; 2 keeps
/// it once in `payloads`.
const SCHEMA_VERSION: i32 = 2;

/// How long a write waits for another connection (a reader such as
/// `paas-runner state`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Forgotten jobs' data is purged from the write-ahead file at most this often
/// (a checkpoint costs a few file syncs).
pub const PURGE_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The state database.
pub struct SqliteStore {
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

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}
impl SqliteStore {
    /// Opens (creating it with mode 0600 if needed) the database at `path`,
    /// without owning it: for commands that read while a service runs. A
    /// database of an earlier schema is read as it is, not migrated (its
    /// owner may be an earlier version still running): only `load` and
    /// `get_meta` work on it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(&absolute(path), None)
    }

    /// Takes the store's lock ([`StoreLock`]), then opens it, migrating an
    /// earlier schema: fails at once with [`StoreError::Locked`] while
    /// another process owns it. The lock is held as long as the `Store`
    /// lives.
    pub fn open_exclusive(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = absolute(path);
        let lock = StoreLock::acquire(&path)?;
        SqliteStore::open_with(&path, Some(lock))
    }

    fn open_with(path: &Path, lock: Option<StoreLock>) -> Result<SqliteStore, StoreError> {
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
        let store = SqliteStore {
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
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        let store = SqliteStore {
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
                found: user_version.into(),
                supported: SCHEMA_VERSION.into(),
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
        let stored = serde_json::to_string(&StoredJob::from_record(record)).map_err(|source| {
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

impl Drop for SqliteStore {
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

impl JobStore for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&mut self) -> StoreFuture<'_, Vec<JobRecord>> {
        let result = SqliteStore::load(self);
        Box::pin(std::future::ready(result))
    }

    fn get_meta<'a>(&'a mut self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        let result = SqliteStore::get_meta(self, key);
        Box::pin(std::future::ready(result))
    }

    fn set_meta<'a>(&'a mut self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        let result = SqliteStore::set_meta(self, key, value);
        Box::pin(std::future::ready(result))
    }

    /// Written before it returns: a local write takes tens of microseconds.
    fn submit(&mut self, write: StoreWrite) -> Pending {
        Pending::Done(match write {
            StoreWrite::Save(record) => self.save(&record),
            StoreWrite::Forget { runner_key, job_id } => self.forget(&runner_key, job_id),
            StoreWrite::Meta { key, value } => SqliteStore::set_meta(self, &key, &value),
        })
    }

    fn tick(&mut self) -> Result<(), StoreError> {
        self.purge_if_due().map(drop)
    }
}
