//! The outbox: notifications waiting to be sent, sent, or given up on. Alerts and case
//! reminders queue rows in the transaction that made them, so a crash between the decision
//! and the send loses nothing; the dispatcher takes due rows and records each outcome.
//!
//! Every statement on the `outbox` table is here: the grouping stage, the case schedule, the
//! dispatcher and the admin commands call these functions, so a second store backend has one
//! module to answer for this table.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

/// A row due for sending.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    /// The idempotency key receivers see (the same on every attempt).
    pub key: String,
    /// The alert, or 0 for a case reminder.
    pub alert: i64,
    pub receiver: String,
    pub attempts: i64,
    pub created_ms: i64,
    /// Set for a case reminder, with its rendered subject and body.
    pub case_id: Option<i64>,
    pub subject: String,
    pub body: String,
}

/// Pending rows due at `now_ms`, the oldest due first, at most `limit`.
pub fn due(conn: &Connection, now_ms: i64, limit: u32) -> rusqlite::Result<Vec<Due>> {
    let mut st = conn.prepare_cached(
        "SELECT id, idempotency_key, alert_id, receiver, attempts, created_ms, case_id,
                subject, body FROM outbox
         WHERE state = 'pending' AND due_ms <= ?1 ORDER BY due_ms, id LIMIT ?2",
    )?;
    let rows = st.query_map(params![now_ms, limit], |r| {
        Ok(Due {
            id: r.get(0)?,
            key: r.get(1)?,
            alert: r.get(2)?,
            receiver: r.get(3)?,
            attempts: r.get(4)?,
            created_ms: r.get(5)?,
            case_id: r.get(6)?,
            subject: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            body: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
        })
    })?;
    rows.collect()
}

/// The wall clock went back `back_ms` (an NTP step, a VM restored from a snapshot): alert
/// notifications queued since, whose creation now lies in the future, move back with it, so
/// their group wait is counted from when they were queued rather than held for the hours the
/// clock lost. Case reminders are calendar dates and stay. Returns the rows moved.
pub fn rebase(tx: &Transaction<'_>, now_ms: i64, back_ms: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE outbox SET due_ms = due_ms - ?2, created_ms = created_ms - ?2
         WHERE state = 'pending' AND case_id IS NULL AND created_ms > ?1",
        params![now_ms, back_ms],
    )
}

/// Whether a notification of `alert` waits for `receiver`.
pub fn waiting(conn: &Connection, alert: i64, receiver: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE alert_id = ?1 AND receiver = ?2
           AND state = 'pending')",
        params![alert, receiver],
        |r| r.get(0),
    )
}

/// The alerts with a notification waiting, in one query.
pub fn alerts_waiting(conn: &Connection) -> rusqlite::Result<std::collections::HashSet<i64>> {
    let mut st = conn.prepare_cached(
        "SELECT DISTINCT alert_id FROM outbox WHERE state = 'pending' AND case_id IS NULL",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Queues an alert's notification to one receiver.
pub fn queue_alert(
    tx: &Transaction<'_>,
    key: &str,
    alert: i64,
    receiver: &str,
    now_ms: i64,
    due_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO outbox (idempotency_key, alert_id, receiver, state, created_ms, due_ms)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
        params![key, alert, receiver, now_ms, due_ms],
    )?;
    Ok(())
}

/// A case reminder as the schedule wants it queued.
pub struct Reminder<'a> {
    pub key: &'a str,
    pub receiver: &'a str,
    pub due_ms: i64,
    pub subject: &'a str,
    pub body: &'a str,
}

/// The state of the row with this key, if there is one.
pub fn state_of(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT state FROM outbox WHERE idempotency_key = ?1",
        [key],
        |x| x.get(0),
    )
    .optional()
}

/// The case's pending reminders: row id and key.
pub fn case_pending(tx: &Transaction<'_>, case_id: i64) -> rusqlite::Result<Vec<(i64, String)>> {
    tx.prepare_cached(
        "SELECT id, idempotency_key FROM outbox WHERE case_id = ?1 AND state = 'pending'",
    )?
    .query_map([case_id], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// How many of the case's reminders wait.
pub fn case_pending_count(conn: &Connection, case_id: i64) -> rusqlite::Result<usize> {
    conn.query_row(
        "SELECT count(*) FROM outbox WHERE case_id = ?1 AND state = 'pending'",
        [case_id],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
}

pub fn queue_reminder(
    tx: &Transaction<'_>,
    case_id: i64,
    r: &Reminder<'_>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO outbox (idempotency_key, alert_id, receiver, state,
         created_ms, due_ms, case_id, subject, body)
         VALUES (?1, 0, ?2, 'pending', ?3, ?4, ?5, ?6, ?7)",
        params![r.key, r.receiver, now_ms, r.due_ms, case_id, r.subject, r.body],
    )?;
    Ok(())
}

/// A cancelled reminder wanted again: pending, with what is known now.
pub fn revive(tx: &Transaction<'_>, r: &Reminder<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE outbox SET state = 'pending', last_error = NULL, due_ms = ?2,
           subject = ?3, body = ?4 WHERE idempotency_key = ?1",
        params![r.key, r.due_ms, r.subject, r.body],
    )?;
    Ok(())
}

/// A pending reminder carries what is known now (firm rather than provisional).
pub fn refresh(tx: &Transaction<'_>, r: &Reminder<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE outbox SET subject = ?2, body = ?3 WHERE idempotency_key = ?1
           AND (subject IS NOT ?2 OR body IS NOT ?3)",
        params![r.key, r.subject, r.body],
    )?;
    Ok(())
}

/// Settles a row without sending it (`cancelled`, `suppressed`, `dead`), saying why;
/// `attempt` is 1 when a send was tried.
pub fn settle(
    conn: &Connection,
    id: i64,
    state: &str,
    why: Option<&str>,
    attempt: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE outbox SET state = ?2, last_error = ?3, attempts = attempts + ?4 WHERE id = ?1",
        params![id, state, why, attempt],
    )?;
    Ok(())
}

/// Every pending notification of an alert is suppressed (the alert was acknowledged).
pub fn suppress_alert(tx: &Transaction<'_>, alert: i64, why: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE outbox SET state = 'suppressed', last_error = ?2
         WHERE alert_id = ?1 AND state = 'pending'",
        params![alert, why],
    )?;
    Ok(())
}

pub fn sent(tx: &Transaction<'_>, id: i64, now_ms: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE outbox SET state = 'sent', sent_ms = ?2, attempts = attempts + 1,
         last_error = NULL WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

/// A failed attempt to be tried again at `due_ms`.
pub fn retry_at(conn: &Connection, id: i64, due_ms: i64, error: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, due_ms = ?2, last_error = ?3 WHERE id = ?1",
        params![id, due_ms, error],
    )?;
    Ok(())
}

pub fn count(conn: &Connection, state: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM outbox WHERE state = ?1",
        [state],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// A notification given up on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub alert: i64,
    pub receiver: String,
    pub attempts: i64,
    pub key: String,
    pub error: Option<String>,
}

pub fn dead_letters(conn: &Connection) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut st = conn.prepare(
        "SELECT id, alert_id, receiver, attempts, idempotency_key, last_error FROM outbox
         WHERE state = 'dead' ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(DeadLetter {
            id: r.get(0)?,
            alert: r.get(1)?,
            receiver: r.get(2)?,
            attempts: r.get(3)?,
            key: r.get(4)?,
            error: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Puts dead letters back in the queue (one, or all with `id = None`) under the same keys;
/// returns how many.
pub fn requeue_dead(conn: &Connection, id: Option<i64>, now_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE outbox SET state = 'pending', due_ms = ?1, created_ms = ?1, attempts = 0
         WHERE state = 'dead' AND (?2 IS NULL OR id = ?2)",
        params![now_ms, id],
    )
}
