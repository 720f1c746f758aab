//! The stored form of a job: versioned JSON documents of their own type,
//! separate from the core's types. [`StoredJob::from_record`] and
//! [`StoredJob::into_record`] are the one place converting between them;
//! every store (SQLite, PostgreSQL) keeps the same documents.
//!
//! # When a stored version changes
//!
//! A row written by one version of paas-runner is read by the next one, and
//! a database may be opened by an older one during a rolling upgrade. So:
//!
//! - **Same version**: a new field that an older program may ignore
//!   without acting wrongly, with `#[serde(default)]` giving the value a
//!   row written before it means (serde ignores fields it does not know,
//!   so an older program reads the row). Example: `log_bytes` in V2.
//! - **New version** (`StoredJobV3`, tag `"3"`): a field removed, renamed,
//!   or given another type or meaning, or a new field that an older program
//!   would act wrongly by ignoring. Then: the previous version stays as a
//!   read-only variant; `into_record` converts it; the schema version of
//!   each store is raised (an older program then refuses the database with
//!   `StoreError::TooNew` instead of misreading it) and its owner rewrites
//!   the rows at open, in one transaction (see SQLite's `migrate_to_v2`).
//!
//! `the_current_version_is_frozen` (below) holds the exact text of the
//! current version: changing a field makes it fail, and its message points
//! here.

use paas_core::{FailureKind, JobRecord, Secret, StageRecord};
use serde::{Deserialize, Serialize};

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
    /// The current version of `record`, without its payload (stored apart).
    pub fn from_record(record: &JobRecord) -> StoredJob {
        StoredJob::V2(StoredJobV2::from(record))
    }

    /// The JSON text of the current version of `record`.
    pub fn text_of(record: &JobRecord) -> String {
        // A struct of strings, numbers and booleans always serialises.
        serde_json::to_string(&StoredJob::from_record(record)).unwrap_or_default()
    }

    /// Reads a stored document and its payload (see [`StoredJob::into_record`]).
    pub fn parse(text: &str, payload_row: Option<String>) -> Result<JobRecord, String> {
        let stored: StoredJob = serde_json::from_str(text).map_err(|e| e.to_string())?;
        stored.into_record(payload_row)
    }

    /// The core's record, with the payload read from the `payloads` table
    /// (`None` when it has no row there). The only way back to core types.
    pub fn into_record(self, payload_row: Option<String>) -> Result<JobRecord, String> {
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(job_id: u64, stage: StageRecord) -> JobRecord {
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

    /// The exact document of the current version. If this test fails, a
    /// stored field changed: read "When a stored version changes" at the top
    /// of this file, then either update this text (same version: the new
    /// field has a `serde(default)` and the V2 sample below still reads) or
    /// add a version and its migration.
    const CURRENT: &str = r#"{"v":"2","runner_key":"abcdefgh","job_id":1,"token":"glcbt-job-token","project_id":7,"failure_reasons":["script_failure"],"flavor":"S","expected_weight":5.65,"stage":"running","app_id":"app_1","app_weight":5.65,"app_maybe":false,"failure_kind":"user","failure_message":"bad flavor","message_written":true,"failed":true,"confirmed":true,"log_bytes":0,"slow_notice_sent":false}"#;

    #[test]
    fn the_current_version_is_frozen() {
        let job = record(1, StageRecord::Running);
        assert_eq!(
            StoredJob::text_of(&job),
            CURRENT,
            "the stored form changed: see `When a stored version changes` in crates/store/src/stored.rs"
        );
        assert_eq!(
            StoredJob::parse(CURRENT, Some(job.payload.clone())).unwrap(),
            job
        );
    }

    #[test]
    fn every_older_form_still_reads() {
        // V2 as first written: before `log_bytes` and `slow_notice_sent`
        // (fields added in the same version, with defaults).
        let early_v2 = r#"{"v":"2","runner_key":"abcdefgh","job_id":1,"token":"glcbt-job-token","project_id":7,"failure_reasons":["script_failure"],"flavor":"S","expected_weight":5.65,"stage":"running","app_id":"app_1","app_weight":5.65,"app_maybe":false,"failure_kind":"user","failure_message":"bad flavor","message_written":true,"failed":true,"confirmed":true}"#;
        let job = record(1, StageRecord::Running);
        assert_eq!(
            StoredJob::parse(early_v2, Some(job.payload.clone())).unwrap(),
            job
        );
        // V1 carries its payload; a V2 row without its payload is refused.
        let v1 = CURRENT
            .replace(r#""v":"2""#, r#""v":"1""#)
            .replace(r#""job_id":1,"#, r#""job_id":1,"payload":"{\"id\":1}","#);
        assert_eq!(StoredJob::parse(&v1, None).unwrap(), job);
        let missing = StoredJob::parse(CURRENT, None).unwrap_err();
        assert!(missing.contains("payload is missing"), "{missing}");
        // A field of a newer program is ignored by this one.
        let newer = CURRENT.replace(r#""v":"2","#, r#""v":"2","added_later":[1,2],"#);
        assert_eq!(
            StoredJob::parse(&newer, Some(job.payload.clone())).unwrap(),
            job
        );
        // An unknown version is an error, never a misreading.
        let future = CURRENT.replace(r#""v":"2""#, r#""v":"3""#);
        assert!(StoredJob::parse(&future, Some(job.payload)).is_err());
    }
}
