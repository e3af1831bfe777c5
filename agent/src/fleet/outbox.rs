//! The outbox on PostgreSQL: any number of dispatchers share it. Each claims due rows for a
//! while with `FOR UPDATE SKIP LOCKED` (two dispatchers never claim the same row at once, and
//! neither waits for the other), sends them, and settles them. A dispatcher that dies
//! mid-send leaves its claims to expire; another then sends those rows again with the same
//! idempotency key, which the receiver uses to drop the repeat.

use super::FleetError;
use std::time::Duration;
use tokio_postgres::GenericClient;

/// A notification waiting to be sent, as a dispatcher claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub key: String,
    pub receiver: String,
    pub alert_id: Option<i64>,
    pub attempts: i32,
    pub created_ms: i64,
    /// A case's deadline reminder, rendered when it was queued: the case, subject and body.
    pub reminder: Option<(i64, String, String)>,
}

/// Queues a notification unless one with this key is queued already (a batch applied again
/// derives the same key). Returns whether a row was added.
pub async fn enqueue(
    tx: &impl GenericClient,
    key: &str,
    alert_id: Option<i64>,
    receiver: &str,
    now_ms: i64,
    due_ms: i64,
) -> Result<bool, FleetError> {
    let n = tx
        .execute(
            "INSERT INTO outbox (idempotency_key, alert_id, receiver, state, created_ms, due_ms)
             VALUES ($1, $2, $3, 'pending', $4, $5) ON CONFLICT (idempotency_key) DO NOTHING",
            &[&key, &alert_id, &receiver, &now_ms, &due_ms],
        )
        .await
        .map_err(FleetError::sql("queueing a notification"))?;
    Ok(n == 1)
}

/// Claims up to `limit` rows due by `now_ms` and not claimed by a live dispatcher, for `hold`.
pub async fn claim(
    client: &impl GenericClient,
    dispatcher: &str,
    now_ms: i64,
    limit: i64,
    hold: Duration,
) -> Result<Vec<Claimed>, FleetError> {
    let rows = client
        .query(
            "UPDATE outbox SET claimed_by = $1,
                    claimed_until = clock_timestamp() + make_interval(secs => $3)
             WHERE id IN (
                 SELECT id FROM outbox
                 WHERE state = 'pending' AND due_ms <= $2
                   AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
                 ORDER BY due_ms, id LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, idempotency_key, receiver, alert_id, attempts, created_ms, case_id,
                       coalesce(subject, ''), coalesce(body, '')",
            &[&dispatcher, &now_ms, &hold.as_secs_f64(), &limit],
        )
        .await
        .map_err(FleetError::sql("claiming notifications"))?;
    let mut out: Vec<Claimed> = rows
        .into_iter()
        .map(|r| Claimed {
            id: r.get(0),
            key: r.get(1),
            receiver: r.get(2),
            alert_id: r.get(3),
            attempts: r.get(4),
            created_ms: r.get(5),
            reminder: r
                .get::<_, Option<i64>>(6)
                .map(|case| (case, r.get(7), r.get(8))),
        })
        .collect();
    out.sort_by_key(|c| c.id);
    Ok(out)
}

/// How a send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled<'e> {
    Sent,
    /// Try again at this time.
    Retry {
        due_ms: i64,
        error: &'e str,
    },
    /// Given up on: kept for `phiwatch notify dead-letters`.
    Dead {
        error: &'e str,
    },
    /// Not to be sent (the alert was acknowledged or closed, or is inhibited): why.
    Suppressed {
        why: &'e str,
    },
}

/// Records the outcome of a claimed row. `false` when this dispatcher's claim had lapsed and
/// another dispatcher claimed the row meanwhile: its outcome is the one that counts.
pub async fn settle(
    client: &impl GenericClient,
    dispatcher: &str,
    row: &Claimed,
    outcome: Settled<'_>,
    now_ms: i64,
) -> Result<bool, FleetError> {
    // What each outcome changes; the columns it leaves alone are passed as NULL.
    let (state, sent_ms, due_ms, error) = match outcome {
        Settled::Sent => ("sent", Some(now_ms), None, None),
        Settled::Retry { due_ms, error } => ("pending", None, Some(due_ms), Some(error)),
        Settled::Dead { error } => ("dead", None, None, Some(error)),
        Settled::Suppressed { why } => ("suppressed", None, None, Some(why)),
    };
    let n = client
        .execute(
            "UPDATE outbox SET state = $3, sent_ms = coalesce($4, sent_ms),
                    due_ms = coalesce($5, due_ms), last_error = coalesce($6, last_error),
                    attempts = $7, claimed_by = NULL, claimed_until = NULL
             WHERE id = $1 AND claimed_by = $2",
            &[
                &row.id,
                &dispatcher,
                &state,
                &sent_ms,
                &due_ms,
                &error,
                &(row.attempts + 1),
            ],
        )
        .await
        .map_err(FleetError::sql("settling a notification"))?;
    Ok(n == 1)
}

/// Rows waiting to be sent: the outbox depth `/metrics` reports per dispatcher.
pub async fn depth(client: &impl GenericClient) -> Result<i64, FleetError> {
    Ok(client
        .query_one("SELECT count(*) FROM outbox WHERE state = 'pending'", &[])
        .await
        .map_err(FleetError::sql("measuring the outbox"))?
        .get(0))
}

/// Notifications given up on, by id, for `phiwatch notify dead-letters`.
pub async fn dead_letters(
    client: &impl GenericClient,
) -> Result<Vec<crate::outbox::DeadLetter>, FleetError> {
    let rows = client
        .query(
            "SELECT id, coalesce(alert_id, 0), receiver, attempts, idempotency_key, last_error
             FROM outbox WHERE state = 'dead' ORDER BY id",
            &[],
        )
        .await
        .map_err(FleetError::sql("reading dead letters"))?;
    Ok(rows
        .iter()
        .map(|r| crate::outbox::DeadLetter {
            id: r.get(0),
            alert: r.get(1),
            receiver: r.get(2),
            attempts: i64::from(r.get::<_, i32>(3)),
            key: r.get(4),
            error: r.get(5),
        })
        .collect())
}

/// Queues dead letters again (one, or all with `id = None`) under their own keys; returns
/// how many.
pub async fn requeue_dead(
    client: &impl GenericClient,
    id: Option<i64>,
    now_ms: i64,
) -> Result<u64, FleetError> {
    client
        .execute(
            "UPDATE outbox SET state = 'pending', due_ms = $1, created_ms = $1, attempts = 0
             WHERE state = 'dead' AND ($2::bigint IS NULL OR id = $2)",
            &[&now_ms, &id],
        )
        .await
        .map_err(FleetError::sql("queueing dead letters again"))
}
