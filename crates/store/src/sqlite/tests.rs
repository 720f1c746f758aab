use super::*;
use crate::stored::tests::record;
use crate::stored::{StoredJobV1, StoredJobV2};
use crate::{lock_holder, lock_path, resolve_store_path, store_path, DEFAULT_STORE_FILE};
use paas_core::{Secret, StageRecord};
use std::os::unix::fs::PermissionsExt;

#[test]
fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.save(&record(1, StageRecord::Running)).unwrap();
        store.save(&record(2, StageRecord::Failing)).unwrap();
        store
            .save(&record(1, StageRecord::Decommissioning))
            .unwrap();
        store.forget("abcdefgh", 2).unwrap();
        store.set_meta("system_id", "r_abc").unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
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
    let err = SqliteStore::open(&garbage).unwrap_err().to_string();
    assert!(err.contains("garbage.db"), "{err}");
    assert!(err.contains("not a paas-runner state database"), "{err}");

    let foreign = dir.path().join("foreign.db");
    let conn = Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
    drop(conn);
    let err = SqliteStore::open(&foreign).unwrap_err().to_string();
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
    let owner = SqliteStore::open_exclusive(&path).unwrap();
    owner.save(&record(1, StageRecord::Running)).unwrap();
    let holder = owner.lock().unwrap().holder().clone();
    assert_eq!(lock_holder(&path).unwrap(), Some(holder.clone()));
    match SqliteStore::open_exclusive(&path) {
        Err(StoreError::Locked { holder: found, .. }) => assert_eq!(found, holder),
        other => panic!("{other:?}"),
    }
    // `paas-runner state` reads while the service runs.
    let reader = SqliteStore::open(&path).unwrap();
    assert_eq!(reader.load().unwrap().len(), 1);
    drop(reader);
    drop(owner);
    assert_eq!(lock_holder(&path).unwrap(), None);
    SqliteStore::open_exclusive(&path).unwrap();
}

#[test]
fn mode_0600_is_enforced_on_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // A first connection keeps the side files in place.
    let first = SqliteStore::open(&path).unwrap();
    first.save(&record(1, StageRecord::Running)).unwrap();
    let mut files = side_files(&path).to_vec();
    files.push(path.clone());
    files.push(lock_path(&path));
    std::fs::write(lock_path(&path), "").unwrap();
    for file in &files {
        assert!(file.exists(), "{file:?}");
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let second = SqliteStore::open_exclusive(&path).unwrap();
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
        let store = SqliteStore::open(&path).unwrap();
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
    let store = SqliteStore::open(&path).unwrap();
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
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(reader.load().unwrap(), expected);
        let version: i32 = reader
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, 1);
    }
    // Its owner migrates it.
    for _ in 0..2 {
        let store = SqliteStore::open_exclusive(&path).unwrap();
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
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 3 is newer"), "{err}");
}

#[test]
fn a_forgotten_job_leaves_neither_token_nor_payload_in_the_files() {
    const TOKEN: &str = "glcbt-FORGET-ME-7f3a9c2e";
    const PAYLOAD: &str = "PAYLOAD-FORGET-ME-51b8d0";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = SqliteStore::open_exclusive(&path).unwrap();
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
    let measure = |label: &str, setup: &dyn Fn(&mut SqliteStore), old_layout: bool| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut store = SqliteStore::open_exclusive(&path).unwrap();
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
    let plain = |store: &mut SqliteStore| {
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
        &|store: &mut SqliteStore| store.set_purge_interval(Duration::ZERO),
        false,
    );
}

/// What `save` did in schema version 1: the whole record, payload
/// included, at every stage change.
fn save_as_version_1(store: &SqliteStore, record: &JobRecord) {
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
