//! The PostgreSQL store: the same stored documents as SQLite
//! ([`crate::StoredJob`]) in tables of a database that several replicas
//! share, and the lease that makes one of them active ([`lease`]).
//!
//! Writes go through one writer task, in submission order, grouped into
//! transactions (all the writes waiting when one ends go into the next);
//! each transaction first reads the lease row `FOR SHARE` and is refused
//! ([`StoreError::Fenced`]) when the lease's epoch is no longer the one this
//! replica holds: a takeover (which updates that row) waits for a write
//! under way, and every later write of the deposed replica is refused.
//!
//! The schema is created and migrated by the service ([`MIGRATIONS`], one
//! transaction under an advisory lock, so replicas starting together do it
//! once). The password comes from the configuration (`secret:NAME`), is
//! handed to the driver only, and never shown: [`PgStore::location`] is the
//! configured URL, which carries none.

pub mod lease;
pub mod throwaway;
mod tls;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paas_config::PostgresSettings;
use paas_core::JobRecord;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::stored::StoredJob;
use crate::{JobStore, Pending, StoreError, StoreFuture, StoreWrite};

/// Schema versions, each the SQL that brings the previous one to it. The
/// index + 1 is the version. Append only: a version once released never
/// changes (`migrations_apply_in_order_and_keep_rows` in the tests holds
/// the rows written at version 1).
pub const MIGRATIONS: &[&str] = &[
    // 1: jobs (stored documents, `StoredJob`), payloads kept once, meta data.
    "CREATE TABLE paas_runner_jobs (
         runner_key TEXT NOT NULL,
         job_id BIGINT NOT NULL,
         record TEXT NOT NULL,
         PRIMARY KEY (runner_key, job_id)
     );
     CREATE TABLE paas_runner_payloads (
         runner_key TEXT NOT NULL,
         job_id BIGINT NOT NULL,
         payload TEXT NOT NULL,
         PRIMARY KEY (runner_key, job_id)
     );
     CREATE TABLE paas_runner_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 2: the lease of the active replica (one row).
    "CREATE TABLE paas_runner_lease (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         holder TEXT,
         epoch BIGINT NOT NULL,
         expires_at TIMESTAMPTZ,
         acquired_at TIMESTAMPTZ,
         released_by TEXT
     );
     INSERT INTO paas_runner_lease (id, holder, epoch) VALUES (1, NULL, 0);",
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Advisory lock key serialising migrations ("PaRu").
const MIGRATION_LOCK: i64 = 0x5061_5275;

/// The longest a connection attempt, a read or a write transaction may
/// take: past it the service stops (a standby with a working connection
/// takes over).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most writes grouped into one transaction.
const BATCH: usize = 256;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A PostgreSQL store.
pub struct PgStore {
    client: Arc<Client>,
    location: String,
    writes: mpsc::UnboundedSender<(StoreWrite, Reply)>,
    /// The epoch every write is fenced with; 0 while not active (operator
    /// commands, a standby: writes then go unfenced).
    epoch: Arc<AtomicI64>,
    /// Jobs whose payload row is known to exist.
    payload_saved: Arc<Mutex<HashSet<(String, u64)>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish()
    }
}

/// The message of a PostgreSQL error (its `Display` says only "db error").
pub(crate) fn detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                source = inner.source();
            }
            text
        }
    }
}

/// A new connection (its own task drives it), with [`REQUEST_TIMEOUT`],
/// over TLS as the URL's `sslmode` says ([`tls`]).
pub(crate) async fn connect(settings: &PostgresSettings) -> Result<Client, StoreError> {
    let location = settings.url.clone();
    let pg_err = |detail: String| StoreError::Postgres {
        location: location.clone(),
        detail,
    };
    let tls = paas_config::store_tls::pg_tls(&settings.url, settings.ca_file.as_deref())
        .map_err(|message| pg_err(format!("invalid URL: {message}")))?;
    let (ssl_mode, connector) = tls::connector(&tls).map_err(&pg_err)?;
    let mut config = tokio_postgres::Config::from_str(&tls.driver_url)
        .map_err(|error| pg_err(format!("invalid URL: {}", detail(&error))))?;
    if let Some(password) = &settings.password {
        config.password(password.expose());
    }
    config
        .ssl_mode(ssl_mode)
        .application_name("paas-runner")
        .connect_timeout(REQUEST_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    let connected = tokio::time::timeout(REQUEST_TIMEOUT, config.connect(connector))
        .await
        .map_err(|_| StoreError::Timeout {
            location: location.clone(),
            seconds: REQUEST_TIMEOUT.as_secs(),
        })?;
    let (client, connection) = connected.map_err(|error| {
        let hosts = hosts_of(&config);
        match tls::explain(&error, &tls, &hosts) {
            Some(explained) => pg_err(format!("cannot connect: {explained}")),
            None => pg_err(format!("cannot connect: {}", detail(&error))),
        }
    })?;
    let shown = location.clone();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(store = %shown, error = %detail(&error), "connection to the state store ended");
        }
    });
    // A replica cut from the database in the middle of a write transaction
    // leaves its session holding the lease row `FOR SHARE` until the server
    // notices the dead peer (hours with the system's keepalive), and a
    // takeover waits for that row: the server ends such a session itself
    // well within the lease. (`SET` rather than a startup option, which
    // connection poolers may refuse.)
    let idle = (settings.lease / 3).max(Duration::from_secs(1));
    let set = format!(
        "SET idle_in_transaction_session_timeout = {}",
        idle.as_millis()
    );
    match tokio::time::timeout(REQUEST_TIMEOUT, client.batch_execute(&set)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            return Err(pg_err(format!(
                "cannot set up the session: {}",
                detail(&error)
            )))
        }
        Err(_) => {
            return Err(StoreError::Timeout {
                location,
                seconds: REQUEST_TIMEOUT.as_secs(),
            })
        }
    }
    Ok(client)
}

/// The hosts (and ports) `config` connects to, for messages.
fn hosts_of(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            }
        })
        .collect();
    hosts.join(",")
}

impl PgStore {
    /// Connects, then creates or migrates the schema.
    pub async fn open(settings: &PostgresSettings) -> Result<PgStore, StoreError> {
        let location = settings.url.clone();
        let client = connect(settings).await?;
        if let Ok(tls) = paas_config::store_tls::pg_tls(&settings.url, settings.ca_file.as_deref())
        {
            if !tls.local && !tls.mode.requires_tls() {
                tracing::warn!(
                    store = %location,
                    sslmode = tls.mode.as_str(),
                    "the state store is reached over the network without verified TLS: \
                     job tokens may cross it in clear; use sslmode=verify-full"
                );
            } else {
                tracing::debug!(store = %location, sslmode = tls.mode.as_str(), "state store connected");
            }
        }
        // Writes have their own connection: a transaction under way on it
        // never takes in a read or a lease renewal.
        let write_client = connect(settings).await?;
        let client = Arc::new(client);
        migrate(&client, &location).await?;
        let epoch = Arc::new(AtomicI64::new(0));
        let payload_saved = Arc::new(Mutex::new(HashSet::new()));
        let (writes, queue) = mpsc::unbounded_channel();
        tokio::spawn(writer(Writer {
            client: Arc::new(write_client),
            location: location.clone(),
            epoch: epoch.clone(),
            payload_saved: payload_saved.clone(),
            queue,
            failed: None,
        }));
        Ok(PgStore {
            client,
            location,
            writes,
            epoch,
            payload_saved,
        })
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Fences every later write with `epoch` (0: no fencing).
    pub fn fence_with(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    pub fn fenced_epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn err(&self, error: &tokio_postgres::Error) -> StoreError {
        StoreError::Postgres {
            location: self.location.clone(),
            detail: detail(error),
        }
    }

    async fn timed<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(result) => result.map_err(|error| self.err(&error)),
            Err(_) => Err(StoreError::Timeout {
                location: self.location.clone(),
                seconds: REQUEST_TIMEOUT.as_secs(),
            }),
        }
    }

    async fn load_records(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows = self
            .timed(self.client.query(
                "SELECT j.job_id, j.record, p.payload FROM paas_runner_jobs j \
                 LEFT JOIN paas_runner_payloads p USING (runner_key, job_id) \
                 ORDER BY j.runner_key, j.job_id",
                &[],
            ))
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let job_id: i64 = row.get(0);
            let text: String = row.get(1);
            let payload: Option<String> = row.get(2);
            let record =
                StoredJob::parse(&text, payload).map_err(|detail| StoreError::Corrupt {
                    path: self.location.clone().into(),
                    job_id,
                    detail,
                })?;
            records.push(record);
        }
        if let Ok(mut saved) = self.payload_saved.lock() {
            saved.extend(records.iter().map(|r| (r.runner_key.clone(), r.job_id)));
        }
        Ok(records)
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .timed(
                self.client
                    .query_opt("SELECT value FROM paas_runner_meta WHERE key = $1", &[&key]),
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Sets `key` unless it is set already; returns its value. Replicas
    /// starting together agree on one (the system id).
    pub async fn meta_or_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.timed(self.client.execute(
            "INSERT INTO paas_runner_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        ))
        .await?;
        Ok(self.meta(key).await?.unwrap_or_else(|| value.to_owned()))
    }

    /// Writes `write` and waits until it is durable (operator commands).
    pub async fn write_now(&self, write: StoreWrite) -> Result<(), StoreError> {
        match self.submit_write(write) {
            Pending::Done(result) => result,
            Pending::Later(done) => done.await.unwrap_or_else(|_| Err(self.writer_gone())),
        }
    }

    fn writer_gone(&self) -> StoreError {
        StoreError::Postgres {
            location: self.location.clone(),
            detail: "the store's writer stopped".to_owned(),
        }
    }

    fn submit_write(&self, write: StoreWrite) -> Pending {
        let (tx, rx) = oneshot::channel();
        if self.writes.send((write, tx)).is_err() {
            return Pending::Done(Err(self.writer_gone()));
        }
        Pending::Later(rx)
    }
}

impl JobStore for PgStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn load(&mut self) -> StoreFuture<'_, Vec<JobRecord>> {
        Box::pin(self.load_records())
    }

    fn get_meta<'a>(&'a mut self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(self.meta(key))
    }

    fn set_meta<'a>(&'a mut self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.write_now(StoreWrite::Meta {
            key: key.to_owned(),
            value: value.to_owned(),
        }))
    }

    fn submit(&mut self, write: StoreWrite) -> Pending {
        self.submit_write(write)
    }
}

/// Creates or migrates the schema, in one transaction under an advisory
/// lock.
async fn migrate(client: &Client, location: &str) -> Result<(), StoreError> {
    let err = |error: tokio_postgres::Error| StoreError::Postgres {
        location: location.to_owned(),
        detail: format!("schema migration: {}", detail(&error)),
    };
    let run = async {
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
                 CREATE TABLE IF NOT EXISTS paas_runner_schema (version BIGINT NOT NULL);"
            ))
            .await
            .map_err(err)?;
        let result = async {
            let found: Option<i64> = client
                .query_opt("SELECT max(version) FROM paas_runner_schema", &[])
                .await
                .map_err(err)?
                .and_then(|row| row.get(0));
            let found = found.unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    path: location.into(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                client.batch_execute(sql).await.map_err(err)?;
                let version = index as i64 + 1;
                client
                    .execute("DELETE FROM paas_runner_schema", &[])
                    .await
                    .map_err(err)?;
                client
                    .execute(
                        "INSERT INTO paas_runner_schema (version) VALUES ($1)",
                        &[&version],
                    )
                    .await
                    .map_err(err)?;
                tracing::info!(store = %location, version, "state store schema migrated");
            }
            Ok(())
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        client.batch_execute(end).await.map_err(err)?;
        result
    };
    tokio::time::timeout(REQUEST_TIMEOUT * 3, run)
        .await
        .map_err(|_| StoreError::Timeout {
            location: location.to_owned(),
            seconds: (REQUEST_TIMEOUT * 3).as_secs(),
        })?
}

struct Writer {
    client: Arc<Client>,
    location: String,
    epoch: Arc<AtomicI64>,
    payload_saved: Arc<Mutex<HashSet<(String, u64)>>>,
    queue: mpsc::UnboundedReceiver<(StoreWrite, Reply)>,
    /// After a failure every later write fails too: nothing may be written
    /// out of order.
    failed: Option<String>,
}

/// Writes in order, in groups, each group one fenced transaction.
async fn writer(mut writer: Writer) {
    while let Some(first) = writer.queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match writer.queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = match &writer.failed {
            Some(detail) => Err(detail.clone()),
            None => writer.write(&batch).await,
        };
        match result {
            Ok(()) => {
                for (_, reply) in batch {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(first_error) => {
                writer.failed.get_or_insert(first_error.clone());
                for (_, reply) in batch {
                    let _ = reply.send(Err(writer.error(&first_error)));
                }
            }
        }
    }
}

impl Writer {
    /// The error for a failure written as `detail` (a fencing keeps its
    /// kind: see [`Writer::fenced`]).
    fn error(&self, detail: &str) -> StoreError {
        if let Some(rest) = detail.strip_prefix(FENCED) {
            let mut parts = rest.splitn(3, ' ');
            let epoch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let current = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let holder = parts.next().unwrap_or("-").to_owned();
            return StoreError::Fenced {
                location: self.location.clone(),
                epoch,
                current,
                holder,
            };
        }
        if detail == TIMED_OUT {
            return StoreError::Timeout {
                location: self.location.clone(),
                seconds: REQUEST_TIMEOUT.as_secs(),
            };
        }
        StoreError::Postgres {
            location: self.location.clone(),
            detail: detail.to_owned(),
        }
    }

    async fn write(&self, batch: &[(StoreWrite, Reply)]) -> Result<(), String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.transaction(batch)).await {
            Ok(result) => result,
            Err(_) => Err(TIMED_OUT.to_owned()),
        }
    }

    async fn transaction(&self, batch: &[(StoreWrite, Reply)]) -> Result<(), String> {
        let client = &self.client;
        let pg = |error: tokio_postgres::Error| detail(&error);
        client.batch_execute("BEGIN").await.map_err(pg)?;
        let result = async {
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch != 0 {
                let row = client
                    .query_one(
                        "SELECT epoch, coalesce(holder, '-') FROM paas_runner_lease WHERE id = 1 FOR SHARE",
                        &[],
                    )
                    .await
                    .map_err(pg)?;
                let current: i64 = row.get(0);
                if current != epoch {
                    let holder: String = row.get(1);
                    return Err(format!("{FENCED}{epoch} {current} {holder}"));
                }
            }
            let mut new_payloads = Vec::new();
            for (write, _) in batch {
                match write {
                    StoreWrite::Save(record) => {
                        let key = (record.runner_key.clone(), record.job_id);
                        let known = self
                            .payload_saved
                            .lock()
                            .map(|saved| saved.contains(&key))
                            .unwrap_or(false);
                        let job_id = record.job_id as i64;
                        if !known && !new_payloads.contains(&key) {
                            client
                                .execute(
                                    "INSERT INTO paas_runner_payloads (runner_key, job_id, payload) \
                                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                    &[&record.runner_key, &job_id, &record.payload],
                                )
                                .await
                                .map_err(pg)?;
                            new_payloads.push(key);
                        }
                        client
                            .execute(
                                "INSERT INTO paas_runner_jobs (runner_key, job_id, record) \
                                 VALUES ($1, $2, $3) ON CONFLICT (runner_key, job_id) \
                                 DO UPDATE SET record = EXCLUDED.record",
                                &[&record.runner_key, &job_id, &StoredJob::text_of(record)],
                            )
                            .await
                            .map_err(pg)?;
                    }
                    StoreWrite::Forget { runner_key, job_id } => {
                        let id = *job_id as i64;
                        for sql in [
                            "DELETE FROM paas_runner_jobs WHERE runner_key = $1 AND job_id = $2",
                            "DELETE FROM paas_runner_payloads WHERE runner_key = $1 AND job_id = $2",
                        ] {
                            client.execute(sql, &[runner_key, &id]).await.map_err(pg)?;
                        }
                        new_payloads.retain(|key| key != &(runner_key.clone(), *job_id));
                        if let Ok(mut saved) = self.payload_saved.lock() {
                            saved.remove(&(runner_key.clone(), *job_id));
                        }
                    }
                    StoreWrite::Meta { key, value } => {
                        client
                            .execute(
                                "INSERT INTO paas_runner_meta (key, value) VALUES ($1, $2) \
                                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                                &[key, value],
                            )
                            .await
                            .map_err(pg)?;
                    }
                }
            }
            Ok(new_payloads)
        }
        .await;
        match result {
            Ok(new_payloads) => {
                client.batch_execute("COMMIT").await.map_err(pg)?;
                if let Ok(mut saved) = self.payload_saved.lock() {
                    saved.extend(new_payloads);
                }
                Ok(())
            }
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(error)
            }
        }
    }
}

const FENCED: &str = "fenced:";
const TIMED_OUT: &str = "timed out";

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::postgres::lease::Lease;
    use crate::postgres::throwaway::start_or_skip;

    #[tokio::test]
    async fn a_session_left_in_a_transaction_is_ended_before_the_lease_could_expire() {
        let Some(pg) = start_or_skip("a_session_left_in_a_transaction_is_ended")
            .expect("throwaway PostgreSQL cluster")
        else {
            return;
        };
        pg.create_database("stuck").unwrap();
        let lease_time = Duration::from_secs(3);
        let settings = pg.settings("stuck", lease_time);
        let _store = PgStore::open(&settings).await.unwrap();
        // A writer cut from the server in the middle of a transaction: the
        // lease row held `FOR SHARE`, nothing more ever sent.
        let stuck = connect(&settings).await.unwrap();
        stuck
            .batch_execute("BEGIN; SELECT epoch FROM paas_runner_lease WHERE id = 1 FOR SHARE")
            .await
            .unwrap();
        let lease = Lease::connect(&settings, "b".into()).await.unwrap();
        let started = Instant::now();
        let acquired = lease.try_acquire().await.unwrap();
        let waited = started.elapsed();
        assert!(acquired.is_some(), "the free lease is taken");
        // Blocked by the stuck session until the server ended it, well
        // within the lease.
        assert!(
            waited >= Duration::from_millis(800) && waited < lease_time,
            "{waited:?}"
        );
        assert!(stuck.batch_execute("SELECT 1").await.is_err());
        println!(
            "takeover blocked {:.2} s by a session left in a transaction",
            waited.as_secs_f64()
        );
    }
}
