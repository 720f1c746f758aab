//! Durable state of paas-runner: one embedded SQLite database (WAL mode).
//!
//! Every job transition is written here before the side effect it announces
//! is started, so that a process killed at any instant can be restarted from
//! the last recorded intent. Stored rows are versioned JSON documents of their
//! own type ([`StoredJobV1`]), separate from the core's types.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use paas_core::{FailureKind, JobRecord, Secret, StageRecord};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Marks our databases (`PRAGMA application_id`): "PaRu".
const APPLICATION_ID: i32 = 0x5061_5275;
/// Schema version of the tables.
const SCHEMA_VERSION: i32 = 1;

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
}

/// The state database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
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

impl Store {
    /// Opens (creating it with mode 0600 if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err)?;
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
        };
        store.init()?;
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
        };
        store.init()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
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
                     CREATE TABLE jobs (
                         runner_key TEXT NOT NULL,
                         job_id INTEGER NOT NULL,
                         record TEXT NOT NULL,
                         PRIMARY KEY (runner_key, job_id)
                     );
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
        self.conn
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
            .map_err(&err)?;
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

    /// Inserts or replaces a job record.
    pub fn save(&self, record: &JobRecord) -> Result<(), StoreError> {
        let stored =
            serde_json::to_string(&StoredJob::V1(StoredJobV1::from(record))).map_err(|source| {
                StoreError::Corrupt {
                    path: self.path.clone(),
                    job_id: record.job_id as i64,
                    detail: source.to_string(),
                }
            })?;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO jobs (runner_key, job_id, record) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![record.runner_key, record.job_id as i64, stored])
            })
            .map_err(self.sql_err())?;
        Ok(())
    }

    /// Drops a job record.
    pub fn forget(&self, runner_key: &str, job_id: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM jobs WHERE runner_key = ?1 AND job_id = ?2")
            .and_then(|mut stmt| stmt.execute(params![runner_key, job_id as i64]))
            .map_err(self.sql_err())?;
        Ok(())
    }

    /// Every recorded job, ordered by runner and job id.
    pub fn load(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT job_id, record FROM jobs ORDER BY runner_key, job_id")
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(self.sql_err())?;
        let mut records = Vec::new();
        for row in rows {
            let (job_id, text) = row.map_err(self.sql_err())?;
            let corrupt = |detail: String| StoreError::Corrupt {
                path: self.path.clone(),
                job_id,
                detail,
            };
            let stored: StoredJob =
                serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            let StoredJob::V1(v1) = stored;
            records.push(v1.into_record().map_err(corrupt)?);
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

/// A stored job, tagged with its format version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum StoredJob {
    #[serde(rename = "1")]
    V1(StoredJobV1),
}

/// Version 1 of the stored job.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredJobV1 {
    pub runner_key: String,
    pub job_id: u64,
    pub token: String,
    pub project_id: Option<u64>,
    pub payload: String,
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

impl From<&JobRecord> for StoredJobV1 {
    fn from(record: &JobRecord) -> Self {
        StoredJobV1 {
            runner_key: record.runner_key.clone(),
            job_id: record.job_id,
            token: record.token.expose().to_owned(),
            project_id: record.project_id,
            payload: record.payload.clone(),
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

impl StoredJobV1 {
    fn into_record(self) -> Result<JobRecord, String> {
        let stage = StageRecord::parse(&self.stage)
            .ok_or_else(|| format!("unknown stage {:?}", self.stage))?;
        let failure_kind = match self.failure_kind.as_deref() {
            None => None,
            Some("user") => Some(FailureKind::User),
            Some("system") => Some(FailureKind::System),
            Some(other) => return Err(format!("unknown failure kind {other:?}")),
        };
        Ok(JobRecord {
            runner_key: self.runner_key,
            job_id: self.job_id,
            token: Secret::new(self.token),
            project_id: self.project_id,
            payload: self.payload,
            failure_reasons: self.failure_reasons,
            flavor: self.flavor,
            expected_weight: self.expected_weight,
            stage,
            app_id: self.app_id,
            app_weight: self.app_weight,
            app_maybe: self.app_maybe,
            failure_kind,
            failure_message: self.failure_message,
            message_written: self.message_written,
            failed: self.failed,
            confirmed: self.confirmed,
            log_bytes: self.log_bytes,
            slow_notice_sent: self.slow_notice_sent,
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
}
