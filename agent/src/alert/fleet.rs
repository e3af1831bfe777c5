//! Alerts in fleet mode's PostgreSQL: the counterpart of `alert::group::apply`, called
//! by the detector inside the fenced transaction of the batch whose findings it groups, so
//! an alert, its counters and the notifications it queues commit with the batch or not at
//! all. The decisions (keys, severity, when a notification is due, which receivers, the
//! idempotency key) are `alert::group`'s own functions; only the statements differ.
//!
//! The detector is the only writer of new evidence; dispatchers mark alerts sent and queue
//! repeats, and officers acknowledge them (`phiwatch alerts ack`).

use super::group::{self, Applied};
use super::query::{AlertRow, Silence};
use super::Routing;
use crate::finding::{Finding, Severity};
use crate::fleet::{outbox, FleetError};
use tokio_postgres::{GenericClient, Transaction};

/// Groups `findings` (new to the store) into alerts and queues their notifications.
/// Statements are prepared once per call: a batch's findings reuse them.
pub async fn apply(
    tx: &Transaction<'_>,
    findings: &[&Finding],
    routing: &Routing,
    tz: chrono_tz::Tz,
    now_ms: i64,
) -> Result<Applied, FleetError> {
    let mut done = Applied::default();
    if findings.is_empty() {
        return Ok(done);
    }
    let e = FleetError::sql("grouping findings into alerts");
    let find_open = tx
        .prepare(
            "SELECT id, severity, last_sent_ms FROM alerts
             WHERE fold_key = $1 AND status <> 'closed' ORDER BY id DESC LIMIT 1",
        )
        .await
        .map_err(&e)?;
    let open_new = tx
        .prepare(
            "INSERT INTO alerts (group_key, fold_key, status, category, severity, user_id,
                 department, first_ms, last_ms, first_access_ms, last_access_ms, origin)
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $7, $8, $8, $9) RETURNING id",
        )
        .await
        .map_err(&e)?;
    // New evidence reopens an acknowledged alert: someone must look again.
    let update = tx
        .prepare(
            "UPDATE alerts SET status = 'open', severity = $2, last_ms = $3,
                 first_access_ms = least(first_access_ms, $4),
                 last_access_ms = greatest(last_access_ms, $4)
             WHERE id = $1",
        )
        .await
        .map_err(&e)?;
    // Counters move by what the finding adds, as in the single process: one probe, no recount.
    let add = tx
        .prepare(
            "WITH known AS (
                 SELECT EXISTS (SELECT 1 FROM alert_findings
                                WHERE alert_id = $1 AND patient_id = $4) AS seen),
             added AS (
                 INSERT INTO alert_findings (alert_id, event_id, detector, patient_id)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1)
             UPDATE alerts SET findings = findings + 1,
                 incidents = incidents + CASE WHEN (SELECT seen FROM known) THEN 0 ELSE 1 END
             WHERE id = $1 AND EXISTS (SELECT 1 FROM added)",
        )
        .await
        .map_err(&e)?;
    let g = &routing.grouping;
    for f in findings {
        let access_ms = crate::time::parse_fhir_time(&f.time);
        let fold_key = group::fold_key(f, g);
        let open = tx.query_opt(&find_open, &[&fold_key]).await.map_err(&e)?;
        let (alert, due, severity) = match open {
            None => {
                let id: i64 = tx
                    .query_one(
                        &open_new,
                        &[
                            &group::group_key(f, g),
                            &fold_key,
                            &f.category,
                            &f.severity.as_str(),
                            &f.user,
                            &f.department,
                            &now_ms,
                            &access_ms,
                            &group::origin(f),
                        ],
                    )
                    .await
                    .map_err(&e)?
                    .get(0);
                done.opened += 1;
                (id, group::first_due(g, None, now_ms), f.severity)
            }
            Some(row) => {
                let (id, stored, last_sent): (i64, String, i64) =
                    (row.get(0), row.get(1), row.get(2));
                done.updated += 1;
                let sev = group::merged(&stored, f.severity);
                tx.execute(&update, &[&id, &sev.as_str(), &now_ms, &access_ms])
                    .await
                    .map_err(&e)?;
                (id, group::first_due(g, Some(last_sent), now_ms), sev)
            }
        };
        tx.execute(&add, &[&alert, &f.event_id, &f.detector, &f.patient])
            .await
            .map_err(&e)?;
        let labels = (f.category.as_str(), severity, f.department.as_str());
        let receivers = group::receivers(routing, labels, tz, now_ms);
        done.queued += enqueue(tx, alert, &receivers, now_ms, due).await?;
    }
    Ok(done)
}

/// Queues one notification per receiver unless one already waits (it carries the alert as
/// it is when sent).
async fn enqueue(
    tx: &Transaction<'_>,
    alert: i64,
    receivers: &[String],
    now_ms: i64,
    due_ms: i64,
) -> Result<u64, FleetError> {
    let e = FleetError::sql("queueing an alert's notifications");
    let mut added = 0;
    for r in receivers {
        let waiting: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE alert_id = $1 AND receiver = $2
                   AND state = 'pending')",
                &[&alert, r],
            )
            .await
            .map_err(&e)?
            .get(0);
        if waiting {
            continue;
        }
        let row = tx
            .query_one(
                "UPDATE alerts SET notifications = notifications + 1 WHERE id = $1
                 RETURNING notifications, origin",
                &[&alert],
            )
            .await
            .map_err(&e)?;
        let key = group::notification_key(Some(row.get(1)), alert, row.get(0), r);
        if outbox::enqueue(tx, &key, Some(alert), r, now_ms, due_ms).await? {
            added += 1;
        }
    }
    Ok(added)
}

/// Queues another notification of each open alert last notified `repeat_interval` ago or
/// more with none waiting, as the single process's dispatcher does. Every dispatcher runs
/// this: the alert rows it repeats are locked (`FOR UPDATE SKIP LOCKED`, the others pass
/// them by) and marked notified in the same transaction, so each repeat is queued once.
pub async fn schedule_repeats(
    client: &mut tokio_postgres::Client,
    routing: &Routing,
    tz: chrono_tz::Tz,
    now_ms: i64,
) -> Result<u64, FleetError> {
    let e = FleetError::sql("scheduling repeat notifications");
    let repeat = routing.grouping.repeat_interval.as_millis() as i64;
    let tx = client.transaction().await.map_err(&e)?;
    let stale = tx
        .query(
            "SELECT id, category, severity, department FROM alerts a
             WHERE status = 'open' AND last_sent_ms > 0 AND last_sent_ms <= $1
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.alert_id = a.id
                               AND o.state = 'pending')
             ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED",
            &[&(now_ms - repeat)],
        )
        .await
        .map_err(&e)?;
    let mut queued = 0;
    for a in &stale {
        let severity = a.get::<_, String>(2).parse().unwrap_or(Severity::Low);
        let labels = (a.get(1), severity, a.get(3));
        let receivers = group::receivers(routing, labels, tz, now_ms);
        queued += enqueue(&tx, a.get(0), &receivers, now_ms, now_ms).await?;
        // Counted as notified now, so an alert with no receiver is not examined forever.
        mark_sent(&tx, a.get(0), now_ms).await?;
    }
    tx.commit().await.map_err(&e)?;
    Ok(queued)
}

/// The alert's notification went out at `now_ms`: repeats are timed from here.
pub async fn mark_sent(
    client: &impl GenericClient,
    alert: i64,
    now_ms: i64,
) -> Result<(), FleetError> {
    client
        .execute(
            "UPDATE alerts SET last_sent_ms = greatest(last_sent_ms, $2) WHERE id = $1",
            &[&alert, &now_ms],
        )
        .await
        .map_err(FleetError::sql("marking an alert notified"))?;
    Ok(())
}

/// Whether `user` has an open critical alert other than `alert` (which then inhibits the
/// lower-severity one's notifications, with `inhibit_lower_for_critical`).
pub async fn open_critical_besides(
    client: &impl GenericClient,
    user: &str,
    alert: i64,
) -> Result<bool, FleetError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM alerts WHERE user_id = $1 AND id <> $2
               AND status = 'open' AND severity = 'critical')",
            &[&user, &alert],
        )
        .await
        .map_err(FleetError::sql("reading a user's open alerts"))?
        .get(0))
}

/// Every open alert (or every alert), oldest first, as `alerts list` prints them.
pub async fn list(client: &impl GenericClient, all: bool) -> Result<Vec<AlertRow>, FleetError> {
    let rows = client
        .query(
            "SELECT a.id, a.status, a.severity, a.category, a.user_id, a.department,
                    a.first_ms, a.last_ms, a.findings, a.incidents, a.ack_by, a.ack_note,
                    (SELECT f.explanation FROM alert_findings af JOIN findings f
                       ON f.event_id = af.event_id AND f.detector = af.detector
                     WHERE af.alert_id = a.id ORDER BY f.time DESC LIMIT 1),
                    a.ack_disposition
             FROM alerts a WHERE $1 OR a.status = 'open' ORDER BY a.id",
            &[&all],
        )
        .await
        .map_err(FleetError::sql("listing alerts"))?;
    Ok(rows
        .iter()
        .map(|r| AlertRow {
            id: r.get(0),
            status: r.get(1),
            severity: r.get(2),
            category: r.get(3),
            user: r.get(4),
            department: r.get(5),
            first: crate::time::format_ms(r.get(6)),
            last: crate::time::format_ms(r.get(7)),
            findings: r.get(8),
            patients: r.get(9),
            acknowledged_by: r.get(10),
            ack_note: r.get(11),
            explanation: r.get::<_, Option<String>>(12).unwrap_or_default(),
            // Cases are not kept in the fleet's database yet.
            case_id: None,
            disposition: r.get(13),
        })
        .collect())
}

/// Records who acknowledged alert `id`, when and what they concluded (checked by
/// [`crate::alert::admin::ack_fields`]), and drops its waiting notifications, in one
/// transaction. `false` when there is no such alert.
pub async fn ack(
    client: &mut tokio_postgres::Client,
    id: i64,
    by: &str,
    note: &str,
    disposition: Option<&str>,
    now_ms: i64,
) -> Result<bool, FleetError> {
    let e = FleetError::sql("acknowledging an alert");
    let tx = client.transaction().await.map_err(&e)?;
    let n = tx
        .execute(
            "UPDATE alerts SET status = 'acknowledged', ack_by = $2, ack_ms = $3, ack_note = $4,
                 ack_disposition = $5
             WHERE id = $1",
            &[&id, &by, &now_ms, &note, &disposition],
        )
        .await
        .map_err(&e)?;
    if n == 0 {
        return Ok(false);
    }
    // A row a dispatcher holds is being sent already: its outcome stands.
    tx.execute(
        "UPDATE outbox SET state = 'suppressed', last_error = 'alert acknowledged'
         WHERE alert_id = $1 AND state = 'pending'
           AND (claimed_until IS NULL OR claimed_until < clock_timestamp())",
        &[&id],
    )
    .await
    .map_err(&e)?;
    tx.commit().await.map_err(&e)?;
    Ok(true)
}

/// Stores a silence (its matchers checked by [`crate::alert::admin::silence_fields`]) from
/// `now_ms` to `ends_ms`.
pub async fn add_silence(
    client: &impl GenericClient,
    matchers: String,
    (now_ms, ends_ms): (i64, i64),
    author: &str,
    reason: &str,
) -> Result<Silence, FleetError> {
    let id: i64 = client
        .query_one(
            "INSERT INTO silences (matchers, starts_ms, ends_ms, author, reason, created_ms)
             VALUES ($1, $2, $3, $4, $5, $2) RETURNING id",
            &[&matchers, &now_ms, &ends_ms, &author, &reason],
        )
        .await
        .map_err(FleetError::sql("storing a silence"))?
        .get(0);
    Ok(Silence {
        id,
        matchers,
        starts_ms: now_ms,
        ends_ms,
        author: author.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Silences not ended at `now_ms`, by id.
pub async fn silences(
    client: &impl GenericClient,
    now_ms: i64,
) -> Result<Vec<Silence>, FleetError> {
    let rows = client
        .query(
            "SELECT id, matchers, starts_ms, ends_ms, author, reason FROM silences
             WHERE ends_ms > $1 ORDER BY id",
            &[&now_ms],
        )
        .await
        .map_err(FleetError::sql("reading silences"))?;
    Ok(rows
        .iter()
        .map(|r| Silence {
            id: r.get(0),
            matchers: r.get(1),
            starts_ms: r.get(2),
            ends_ms: r.get(3),
            author: r.get(4),
            reason: r.get(5),
        })
        .collect())
}

/// Ends silence `id` at `now_ms`; `false` when there is no such silence.
pub async fn expire_silence(
    client: &impl GenericClient,
    id: i64,
    now_ms: i64,
) -> Result<bool, FleetError> {
    let n = client
        .execute(
            "UPDATE silences SET ends_ms = $2 WHERE id = $1",
            &[&id, &now_ms],
        )
        .await
        .map_err(FleetError::sql("ending a silence"))?;
    Ok(n == 1)
}
