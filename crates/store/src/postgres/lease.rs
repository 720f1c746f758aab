//! The lease of the active replica: one row (`paas_runner_lease`) with the
//! holder, an epoch raised at every takeover, and an expiry time in the
//! database's clock (replicas' clocks never compare).
//!
//! A standby takes the lease only once it has expired (or was released);
//! the active replica renews it every third of its duration, and must stop
//! every side effect before it can expire: it counts the lease from the
//! moment it *sent* its last successful renewal (the database set the
//! expiry later than that), on its own monotonic clock. Every write of the
//! active replica is fenced with its epoch ([`super::PgStore::fence_with`]).
//! The lease has its own connection: a renewal never waits behind writes.

use std::time::Duration;

use paas_config::PostgresSettings;
use tokio_postgres::Client;

use super::{connect, detail, REQUEST_TIMEOUT};
use crate::StoreError;

/// The lease row as read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LeaseInfo {
    /// The active replica, if any (`None` once released).
    pub holder: Option<String>,
    pub epoch: i64,
    /// Until expiry (negative: expired that long ago); `None` when free.
    pub remaining_secs: Option<f64>,
    /// Since the holder took it.
    pub held_secs: Option<f64>,
    /// The replica that released it last (graceful stop).
    pub released_by: Option<String>,
}

impl LeaseInfo {
    /// Whether a replica may act under it now.
    pub fn is_held(&self) -> bool {
        self.holder.is_some() && self.remaining_secs.is_some_and(|left| left > 0.0)
    }
}

/// The lease, taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Acquired {
    pub epoch: i64,
    /// The lease before: who held it, and how long ago it expired.
    pub previous_holder: Option<String>,
    pub expired_secs_ago: Option<f64>,
    pub released_by: Option<String>,
}

/// One replica's handle on the lease.
pub struct Lease {
    client: Client,
    location: String,
    replica: String,
    duration: Duration,
}

const READ: &str = "SELECT holder, epoch, \
     extract(epoch FROM (expires_at - now()))::float8, \
     extract(epoch FROM (now() - acquired_at))::float8, released_by \
     FROM paas_runner_lease WHERE id = 1";

/// Reads the lease through any connection of the store.
pub(crate) async fn read_with(client: &Client, location: &str) -> Result<LeaseInfo, StoreError> {
    let row = tokio::time::timeout(REQUEST_TIMEOUT, client.query_one(READ, &[]))
        .await
        .map_err(|_| StoreError::Timeout {
            location: location.to_owned(),
            seconds: REQUEST_TIMEOUT.as_secs(),
        })?
        .map_err(|error| StoreError::Postgres {
            location: location.to_owned(),
            detail: detail(&error),
        })?;
    let holder: Option<String> = row.get(0);
    let remaining: Option<f64> = row.get(2);
    Ok(LeaseInfo {
        epoch: row.get(1),
        remaining_secs: holder.as_ref().and(remaining),
        held_secs: holder.as_ref().and(row.get::<_, Option<f64>>(3)),
        holder,
        released_by: row.get(4),
    })
}

impl super::PgStore {
    /// The lease as it is now.
    pub async fn lease_info(&self) -> Result<LeaseInfo, StoreError> {
        read_with(self.client(), &self.location).await
    }
}

impl Lease {
    /// A handle for `replica` (unique per process), on its own connection.
    pub async fn connect(
        settings: &PostgresSettings,
        replica: String,
    ) -> Result<Lease, StoreError> {
        Ok(Lease {
            client: connect(settings).await?,
            location: settings.url.clone(),
            replica,
            duration: settings.lease,
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    async fn timed<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(timeout, request).await {
            Ok(result) => result.map_err(|error| StoreError::Postgres {
                location: self.location.clone(),
                detail: detail(&error),
            }),
            Err(_) => Err(StoreError::Timeout {
                location: self.location.clone(),
                seconds: timeout.as_secs(),
            }),
        }
    }

    /// The lease as it is now.
    pub async fn read(&self) -> Result<LeaseInfo, StoreError> {
        read_with(&self.client, &self.location).await
    }

    /// Takes the lease if it is free or expired: `Some` with the new epoch.
    pub async fn try_acquire(&self) -> Result<Option<Acquired>, StoreError> {
        let seconds = self.duration.as_secs_f64();
        let row = self
            .timed(
                self.client.query_opt(
                    "WITH old AS (SELECT holder, expires_at, released_by FROM paas_runner_lease WHERE id = 1) \
                     UPDATE paas_runner_lease l SET holder = $1, epoch = l.epoch + 1, \
                         expires_at = now() + make_interval(secs => $2), acquired_at = now(), \
                         released_by = NULL \
                     FROM old \
                     WHERE l.id = 1 AND (l.holder IS NULL OR l.expires_at IS NULL OR l.expires_at <= now()) \
                     RETURNING l.epoch, old.holder, \
                         extract(epoch FROM (now() - old.expires_at))::float8, old.released_by",
                    &[&self.replica, &seconds],
                ),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(row.map(|row| Acquired {
            epoch: row.get(0),
            previous_holder: row.get(1),
            expired_secs_ago: row.get(2),
            released_by: row.get(3),
        }))
    }

    /// Extends the lease held under `epoch`; `false` when another replica
    /// holds it now. Gives up after `timeout`.
    pub async fn renew(&self, epoch: i64, timeout: Duration) -> Result<bool, StoreError> {
        let seconds = self.duration.as_secs_f64();
        let updated = self
            .timed(
                self.client.execute(
                    "UPDATE paas_runner_lease SET expires_at = now() + make_interval(secs => $3) \
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&self.replica, &epoch, &seconds],
                ),
                timeout,
            )
            .await?;
        Ok(updated == 1)
    }

    /// Gives the lease up at once (graceful stop): a standby takes it at
    /// its next attempt. `false` when it was not held under `epoch`.
    pub async fn release(&self, epoch: i64) -> Result<bool, StoreError> {
        let updated = self
            .timed(
                self.client.execute(
                    "UPDATE paas_runner_lease SET holder = NULL, expires_at = NULL, released_by = $1 \
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&self.replica, &epoch],
                ),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(updated == 1)
    }
}
