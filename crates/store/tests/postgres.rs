//! The PostgreSQL store and its lease against a real server: a throwaway
//! cluster per test (skipped with a notice when PostgreSQL is not
//! installed, unless `PAAS_RUNNER_REQUIRE_TOOLS=1`).

use std::time::{Duration, Instant};

use paas_core::{FailureKind, JobRecord, Secret, StageRecord};
use paas_store::postgres::lease::Lease;
use paas_store::postgres::throwaway::{start_or_skip, Throwaway};
use paas_store::postgres::{PgStore, MIGRATIONS, SCHEMA_VERSION};
use paas_store::{JobStore, Pending, StoreError, StoreWrite};

fn cluster(test: &str) -> Option<Throwaway> {
    start_or_skip(test).expect("throwaway PostgreSQL cluster")
}

fn record(job_id: u64, stage: StageRecord) -> JobRecord {
    JobRecord {
        runner_key: "abcdefgh".into(),
        job_id,
        token: Secret::new("glcbt-job-token"),
        project_id: Some(7),
        payload: format!(r#"{{"id":{job_id}}}"#),
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

async fn durable(store: &mut PgStore, write: StoreWrite) -> Result<(), StoreError> {
    match store.submit(write) {
        Pending::Done(result) => result,
        Pending::Later(done) => done.await.expect("writer answers"),
    }
}

const LEASE: Duration = Duration::from_secs(3);

/// A plain connection, to arrange the database by hand.
async fn raw_client(pg: &Throwaway, database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} dbname={database} password={}",
            pg.port(),
            paas_store::postgres::throwaway::USER,
            paas_store::postgres::throwaway::PASSWORD
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn jobs_and_meta_survive_reopening_and_the_schema_is_created_once() {
    let Some(pg) = cluster("jobs_and_meta_survive_reopening") else {
        return;
    };
    pg.create_database("state").unwrap();
    let settings = pg.settings("state", LEASE);
    // Two replicas starting together migrate once.
    let (first, second) = tokio::join!(PgStore::open(&settings), PgStore::open(&settings));
    let (mut store, _other) = (first.unwrap(), second.unwrap());
    assert!(!store
        .location()
        .contains(paas_store::postgres::throwaway::PASSWORD));
    for write in [
        StoreWrite::Save(record(1, StageRecord::Queued)),
        StoreWrite::Save(record(2, StageRecord::Running)),
        StoreWrite::Save(record(1, StageRecord::Decommissioning)),
        StoreWrite::Forget {
            runner_key: "abcdefgh".into(),
            job_id: 2,
        },
    ] {
        durable(&mut store, write).await.unwrap();
    }
    store.set_meta("system_id", "r_pg").await.unwrap();
    assert_eq!(
        store.meta_or_init("system_id", "r_other").await.unwrap(),
        "r_pg"
    );
    drop(store);
    let mut store = PgStore::open(&settings).await.unwrap();
    assert_eq!(
        store.load().await.unwrap(),
        vec![record(1, StageRecord::Decommissioning)]
    );
    assert_eq!(
        store.get_meta("system_id").await.unwrap().as_deref(),
        Some("r_pg")
    );
}

#[tokio::test]
async fn migrations_apply_in_order_and_keep_rows() {
    let Some(pg) = cluster("migrations_apply_in_order_and_keep_rows") else {
        return;
    };
    pg.create_database("old").unwrap();
    let settings = pg.settings("old", LEASE);
    // A database at schema version 1, with a job, as version 1 wrote it.
    {
        let client = raw_client(&pg, "old").await;
        client
            .batch_execute(&format!(
                "CREATE TABLE paas_runner_schema (version BIGINT NOT NULL);
                 INSERT INTO paas_runner_schema VALUES (1);
                 {}",
                MIGRATIONS[0]
            ))
            .await
            .unwrap();
        let job = record(5, StageRecord::Running);
        let text = paas_store::StoredJob::text_of(&job);
        client
            .execute(
                "INSERT INTO paas_runner_jobs VALUES ('abcdefgh', 5, $1)",
                &[&text],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO paas_runner_payloads VALUES ('abcdefgh', 5, $1)",
                &[&job.payload],
            )
            .await
            .unwrap();
        // Opened by the current program: migrated, the job kept.
        let mut store = PgStore::open(&settings).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![job]);
        let version: i64 = client
            .query_one("SELECT max(version) FROM paas_runner_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, SCHEMA_VERSION);
        let lease = store.lease_info().await.unwrap();
        assert_eq!((lease.holder, lease.epoch), (None, 0));
        // Written by a newer program: refused.
        client
            .execute("UPDATE paas_runner_schema SET version = 99", &[])
            .await
            .unwrap();
    }
    let error = PgStore::open(&settings).await.unwrap_err().to_string();
    assert!(error.contains("schema version 99 is newer"), "{error}");
}

#[tokio::test]
async fn one_replica_holds_the_lease_and_a_deposed_one_cannot_write() {
    let Some(pg) = cluster("one_replica_holds_the_lease") else {
        return;
    };
    pg.create_database("ha").unwrap();
    let settings = pg.settings("ha", LEASE);
    let mut store_a = PgStore::open(&settings).await.unwrap();
    let mut store_b = PgStore::open(&settings).await.unwrap();
    let lease_a = Lease::connect(&settings, "a".into()).await.unwrap();
    let lease_b = Lease::connect(&settings, "b".into()).await.unwrap();

    let a = lease_a.try_acquire().await.unwrap().expect("free lease");
    assert_eq!(a.epoch, 1);
    assert!(lease_b.try_acquire().await.unwrap().is_none(), "held by a");
    store_a.fence_with(a.epoch);
    durable(
        &mut store_a,
        StoreWrite::Save(record(1, StageRecord::Queued)),
    )
    .await
    .unwrap();
    assert!(lease_a.renew(a.epoch, LEASE).await.unwrap());
    let info = lease_b.read().await.unwrap();
    assert_eq!(info.holder.as_deref(), Some("a"));
    assert!(info.is_held());

    // a stops renewing: b takes over once the lease expired, not before.
    let started = Instant::now();
    let b = loop {
        if let Some(b) = lease_b.try_acquire().await.unwrap() {
            break b;
        }
        assert!(started.elapsed() < LEASE * 2, "no takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(started.elapsed() >= LEASE - Duration::from_millis(500));
    assert_eq!(b.epoch, 2);
    assert_eq!(b.previous_holder.as_deref(), Some("a"));
    store_b.fence_with(b.epoch);

    // a's writes are refused from now on, and so is its renewal.
    let error = durable(
        &mut store_a,
        StoreWrite::Save(record(1, StageRecord::Running)),
    )
    .await
    .unwrap_err();
    assert!(error.is_fenced(), "{error}");
    assert!(error.to_string().contains("epoch 1 is over"), "{error}");
    assert!(!lease_a.renew(a.epoch, LEASE).await.unwrap());
    // b's writes go through; a's refused write left nothing.
    durable(
        &mut store_b,
        StoreWrite::Save(record(2, StageRecord::Queued)),
    )
    .await
    .unwrap();
    let stages: Vec<_> = store_b
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.job_id, r.stage))
        .collect();
    assert_eq!(
        stages,
        vec![(1, StageRecord::Queued), (2, StageRecord::Queued)]
    );

    // A graceful stop hands over at once.
    assert!(lease_b.release(b.epoch).await.unwrap());
    let c = lease_a
        .try_acquire()
        .await
        .unwrap()
        .expect("released lease");
    assert_eq!(c.epoch, 3);
    assert_eq!(c.released_by.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_write_under_way_delays_a_takeover_and_is_not_lost() {
    let Some(pg) = cluster("a_write_under_way_delays_a_takeover") else {
        return;
    };
    pg.create_database("race").unwrap();
    let settings = pg.settings("race", LEASE);
    let mut store = PgStore::open(&settings).await.unwrap();
    let lease_a = Lease::connect(&settings, "a".into()).await.unwrap();
    let lease_b = Lease::connect(&settings, "b".into()).await.unwrap();
    let a = lease_a.try_acquire().await.unwrap().unwrap();
    store.fence_with(a.epoch);
    // Writes in flight while b takes over: each is either durable before
    // the takeover or refused, never durable after it.
    let raw = raw_client(&pg, "race").await;
    let mut pending = Vec::new();
    let mut b = None;
    for id in 0..2000 {
        match store.submit(StoreWrite::Save(record(id, StageRecord::Queued))) {
            Pending::Later(done) => pending.push((id, done)),
            Pending::Done(result) => panic!("{result:?}"),
        }
        if id == 1000 {
            // a's lease expires (as time would make it), b takes over.
            raw.execute(
                "UPDATE paas_runner_lease SET expires_at = now() - interval '1 second'",
                &[],
            )
            .await
            .unwrap();
            b = lease_b.try_acquire().await.unwrap();
        }
    }
    let b = b.expect("took over");
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for (id, done) in pending {
        match done.await.unwrap() {
            Ok(()) => {
                assert_eq!(refused, 0, "job {id} written after a refusal");
                acknowledged.push(id)
            }
            Err(error) => {
                assert!(error.is_fenced(), "{error}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && !acknowledged.is_empty(), "{refused} refused");
    println!(
        "{} writes durable before the takeover, {refused} refused after it",
        acknowledged.len()
    );
    let loaded: Vec<u64> = store
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    acknowledged.sort_unstable();
    let mut loaded_sorted = loaded.clone();
    loaded_sorted.sort_unstable();
    assert_eq!(
        loaded_sorted, acknowledged,
        "acknowledged = durable, nothing else"
    );
    assert_eq!(b.epoch, a.epoch + 1);
}
