//! The detector lease: exactly one detector works at a time, and one that lost the lease
//! (paused, partitioned, too slow to renew) can never commit again.
//!
//! Taking over bumps the lease's epoch. Every write transaction of a detector begins with
//! [`fence`], which locks the lease row for share and requires the detector's epoch and an
//! unexpired lease: a takeover (an update of that row) therefore waits for a transaction
//! already past its fence to end, and a transaction started after the takeover is refused.
//! Time is the database server's clock, never a node's, so clock skew between nodes
//! cannot give two detectors the lease.

use super::FleetError;
use std::time::Duration;
use tokio_postgres::{Client, GenericClient};

/// The lease this detector holds: its epoch is what its writes are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
}

/// The lease as the database has it, for `phiwatch check` and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseState {
    pub holder: String,
    pub epoch: i64,
    /// Negative once expired.
    pub expires_in: f64,
}

/// Takes the lease if nobody holds an unexpired one; `None` while another detector does.
/// `holder` must be unique per process (node name and process id), so that a restarted
/// detector waits out its own old lease like any other.
pub async fn try_acquire(
    client: &Client,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>, FleetError> {
    let row = client
        .query_opt(
            "INSERT INTO detector_lease (id, holder, epoch, acquired_at, expires_at)
             VALUES (1, $1, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $2))
             ON CONFLICT (id) DO UPDATE
                SET holder = excluded.holder, epoch = detector_lease.epoch + 1,
                    acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
                WHERE detector_lease.expires_at < clock_timestamp()
             RETURNING epoch",
            &[&holder, &ttl.as_secs_f64()],
        )
        .await
        .map_err(FleetError::sql("taking the detector lease"))?;
    Ok(row.map(|r| Lease {
        holder: holder.to_owned(),
        epoch: r.get(0),
    }))
}

/// Extends the lease; `false` once it has expired, taken over or not: a lapsed lease is not
/// revived, the detector must acquire a new epoch and read its progress again.
pub async fn renew(client: &Client, lease: &Lease, ttl: Duration) -> Result<bool, FleetError> {
    let n = client
        .execute(
            "UPDATE detector_lease SET expires_at = clock_timestamp() + make_interval(secs => $3)
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()",
            &[&lease.holder, &lease.epoch, &ttl.as_secs_f64()],
        )
        .await
        .map_err(FleetError::sql("renewing the detector lease"))?;
    Ok(n == 1)
}

/// Gives the lease up at a clean stop, so a standby need not wait for it to expire.
pub async fn release(client: &Client, lease: &Lease) -> Result<(), FleetError> {
    client
        .execute(
            "UPDATE detector_lease SET expires_at = clock_timestamp()
             WHERE id = 1 AND holder = $1 AND epoch = $2",
            &[&lease.holder, &lease.epoch],
        )
        .await
        .map_err(FleetError::sql("releasing the detector lease"))?;
    Ok(())
}

/// The first statement of every detector write transaction: refuses it unless `lease` is
/// still the current, unexpired lease, and keeps a takeover out until it ends.
pub async fn fence(tx: &impl GenericClient, lease: &Lease) -> Result<(), FleetError> {
    let held = tx
        .query_opt(
            "SELECT 1 FROM detector_lease
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()
             FOR SHARE",
            &[&lease.holder, &lease.epoch],
        )
        .await
        .map_err(FleetError::sql("checking the detector lease"))?;
    match held {
        Some(_) => Ok(()),
        None => Err(FleetError::Fenced { epoch: lease.epoch }),
    }
}

pub async fn current(client: &impl GenericClient) -> Result<Option<LeaseState>, FleetError> {
    let row = client
        .query_opt(
            "SELECT holder, epoch,
                    extract(epoch FROM expires_at - clock_timestamp())::float8
             FROM detector_lease WHERE id = 1",
            &[],
        )
        .await
        .map_err(FleetError::sql("reading the detector lease"))?;
    Ok(row.map(|r| LeaseState {
        holder: r.get(0),
        epoch: r.get(1),
        expires_in: r.get(2),
    }))
}
