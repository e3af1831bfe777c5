//! Alerts in fleet mode's PostgreSQL: the counterpart of `alert::group::apply`, called
//! by the detector inside the fenced transaction of the batch whose findings it groups, so
//! an alert, its counters and the notifications it queues commit with the batch or not at
//! all. The decisions (keys, severity, when a notification is due, which receivers, the
//! idempotency key) are `alert::group`'s own functions; only the statements differ.
//!
//! The detector is the only writer of new evidence; dispatchers mark alerts sent and queue
//! repeats, and officers acknowledge them (`phiwatch alerts ack`).

use super::admin::AdminError;
use super::group::{self, Applied};
use super::plan::{self, AlertRef, Known, OpenAlert, Plan};
use super::query::{AlertRow, Silence};
use super::Routing;
use crate::finding::{Finding, Severity};
use crate::fleet::{outbox, FleetError};
use std::collections::{BTreeSet, HashMap};
use tokio_postgres::{GenericClient, Transaction};

/// Groups `findings` (new to the store, in the batch's order) into alerts and queues their
/// notifications: what the alerts hold is read once ([`plan::Known`]), the batch is folded in
/// memory ([`plan::plan`], the single process's decisions), and the result written with one
/// statement per table. Per finding statements cost a network round trip each, and made
/// grouping a third of the detector's time on a day with 20,000 findings.
pub async fn apply(
    tx: &Transaction<'_>,
    findings: &[&Finding],
    routing: &Routing,
    tz: chrono_tz::Tz,
    now_ms: i64,
) -> Result<Applied, FleetError> {
    if findings.is_empty() {
        return Ok(Applied::default());
    }
    let known = known(tx, findings, routing).await?;
    let plan = plan::plan(findings, known, routing, tz, now_ms);
    let e = FleetError::sql("grouping findings into alerts");
    let new_ids = open_new(tx, &plan, now_ms).await?;
    let id_of = |a: AlertRef| match a {
        AlertRef::Stored(id) => id,
        AlertRef::New(i) => new_ids[i],
    };
    let changed: Vec<(i64, &plan::Slot<'_>)> = plan.changed().collect();
    if !changed.is_empty() {
        let col =
            |f: fn(&plan::Slot<'_>) -> i64| changed.iter().map(|(_, s)| f(s)).collect::<Vec<_>>();
        let opt = |f: fn(&plan::Slot<'_>) -> Option<i64>| {
            changed.iter().map(|(_, s)| f(s)).collect::<Vec<_>>()
        };
        let ids: Vec<i64> = changed.iter().map(|(id, _)| *id).collect();
        let sev: Vec<&str> = changed.iter().map(|(_, s)| s.severity.as_str()).collect();
        // New evidence reopens an acknowledged alert: someone must look again.
        tx.execute(
            "UPDATE alerts a SET status = 'open', severity = u.s, last_ms = $8,
                 first_access_ms = least(a.first_access_ms, u.fa),
                 last_access_ms = greatest(a.last_access_ms, u.la),
                 findings = a.findings + u.nf, incidents = a.incidents + u.ni,
                 notifications = a.notifications + u.nn
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::bigint[]) AS u(id, s, fa, la, nf, ni, nn)
             WHERE a.id = u.id",
            &[
                &ids,
                &sev,
                &opt(|s| s.first_access_ms),
                &opt(|s| s.last_access_ms),
                &col(|s| s.findings),
                &col(|s| s.incidents),
                &col(|s| s.notifications),
                &now_ms,
            ],
        )
        .await
        .map_err(&e)?;
    }
    let m = &plan.members;
    tx.execute(
        "INSERT INTO alert_findings (alert_id, event_id, detector, patient_id)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT DO NOTHING",
        &[
            &m.iter().map(|(a, _)| id_of(*a)).collect::<Vec<_>>(),
            &m.iter()
                .map(|(_, f)| f.event_id.as_str())
                .collect::<Vec<_>>(),
            &m.iter()
                .map(|(_, f)| f.detector.as_str())
                .collect::<Vec<_>>(),
            &m.iter()
                .map(|(_, f)| f.patient.as_str())
                .collect::<Vec<_>>(),
        ],
    )
    .await
    .map_err(&e)?;
    let n = &plan.notices;
    let queued = tx
        .execute(
            "INSERT INTO outbox (idempotency_key, alert_id, receiver, state, created_ms, due_ms)
             SELECT k, a, r, 'pending', $5, d
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS t(k, a, r, d)
             ON CONFLICT (idempotency_key) DO NOTHING",
            &[
                &n.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(),
                &n.iter().map(|x| id_of(x.alert)).collect::<Vec<_>>(),
                &n.iter().map(|x| x.receiver.as_str()).collect::<Vec<_>>(),
                &n.iter().map(|x| x.due_ms).collect::<Vec<_>>(),
                &now_ms,
            ],
        )
        .await
        .map_err(&e)?;
    Ok(Applied {
        queued,
        ..plan.applied
    })
}

/// What grouping the batch reads: the alerts its fold keys name (locked for the batch), which
/// of the batch's patients those hold, and which receivers have a notification of them waiting.
async fn known(
    tx: &Transaction<'_>,
    findings: &[&Finding],
    routing: &Routing,
) -> Result<Known, FleetError> {
    let e = FleetError::sql("reading the alerts a batch joins");
    let g = &routing.grouping;
    let folds: BTreeSet<String> = findings.iter().map(|f| group::fold_key(f, g)).collect();
    let folds: Vec<String> = folds.into_iter().collect();
    let mut known = Known::default();
    let rows = tx
        .query(
            "SELECT DISTINCT ON (fold_key) id, fold_key FROM alerts
             WHERE fold_key = ANY($1) AND status <> 'closed' ORDER BY fold_key, id DESC",
            &[&folds],
        )
        .await
        .map_err(&e)?;
    let mut fold_of: HashMap<i64, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if fold_of.is_empty() {
        return Ok(known);
    }
    let ids: Vec<i64> = fold_of.keys().copied().collect();
    // Locked until the batch commits, then read: a dispatcher queueing a repeat (it passes
    // locked alerts by) cannot take the notification numbers this batch's keys will use.
    let rows = tx
        .query(
            "SELECT id, severity, last_sent_ms, notifications, origin FROM alerts
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await
        .map_err(&e)?;
    for r in rows {
        let id: i64 = r.get(0);
        let Some(fold) = fold_of.remove(&id) else {
            continue;
        };
        let alert = OpenAlert {
            id,
            severity: r.get::<_, String>(1).parse().unwrap_or(Severity::Low),
            last_sent_ms: r.get(2),
            notifications: r.get(3),
            origin: r.get(4),
        };
        known.open.insert(fold, alert);
    }
    let patients: BTreeSet<&str> = findings.iter().map(|f| f.patient.as_str()).collect();
    let patients: Vec<&str> = patients.into_iter().collect();
    for r in tx
        .query(
            "SELECT alert_id, patient_id FROM alert_findings
             WHERE alert_id = ANY($1) AND patient_id = ANY($2)",
            &[&ids, &patients],
        )
        .await
        .map_err(&e)?
    {
        known.patients.insert((r.get(0), r.get(1)));
    }
    for r in tx
        .query(
            "SELECT alert_id, receiver FROM outbox WHERE alert_id = ANY($1) AND state = 'pending'",
            &[&ids],
        )
        .await
        .map_err(&e)?
    {
        known.waiting.insert((r.get(0), r.get(1)));
    }
    Ok(known)
}

/// Inserts the alerts the plan opens; their ids, by `AlertRef::New` index.
async fn open_new(
    tx: &Transaction<'_>,
    plan: &Plan<'_>,
    now_ms: i64,
) -> Result<Vec<i64>, FleetError> {
    let opened: Vec<&plan::Slot<'_>> = plan.opened().collect();
    if opened.is_empty() {
        return Ok(Vec::new());
    }
    let text = |f: for<'a> fn(&'a plan::Slot<'_>) -> &'a str| {
        opened.iter().map(|s| f(s)).collect::<Vec<&str>>()
    };
    let num = |f: fn(&plan::Slot<'_>) -> i64| opened.iter().map(|s| f(s)).collect::<Vec<i64>>();
    let opt =
        |f: fn(&plan::Slot<'_>) -> Option<i64>| opened.iter().map(|s| f(s)).collect::<Vec<_>>();
    let rows = tx
        .query(
            "INSERT INTO alerts (group_key, fold_key, status, category, severity, user_id,
                 department, first_ms, last_ms, findings, incidents, notifications,
                 first_access_ms, last_access_ms, origin)
             SELECT g, f, 'open', c, s, u, d, $13, $13, nf, ni, nn, fa, la, o
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                         $12::text[]) AS t(g, f, c, s, u, d, nf, ni, nn, fa, la, o)
             RETURNING fold_key, id",
            &[
                &text(|s| &s.group_key),
                &text(|s| &s.fold_key),
                &text(|s| &s.opener.category),
                &text(|s| s.severity.as_str()),
                &text(|s| &s.opener.user),
                &text(|s| &s.opener.department),
                &num(|s| s.findings),
                &num(|s| s.incidents),
                &num(|s| s.notifications),
                &opt(|s| s.first_access_ms),
                &opt(|s| s.last_access_ms),
                &text(|s| &s.origin),
                &now_ms,
            ],
        )
        .await
        .map_err(FleetError::sql("opening alerts"))?;
    // A batch opens at most one alert per fold key.
    let ids: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(opened.iter().map(|s| ids[&s.fold_key]).collect())
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

const COLUMNS: &str = "a.id, a.status, a.severity, a.category, a.user_id, a.department,
    a.first_ms, a.last_ms, a.findings, a.incidents, a.ack_by, a.ack_note,
    (SELECT f.explanation FROM alert_findings af JOIN findings f
       ON f.event_id = af.event_id AND f.detector = af.detector
     WHERE af.alert_id = a.id ORDER BY f.time DESC LIMIT 1),
    a.ack_disposition,
    (SELECT min(case_id) FROM case_alerts ca WHERE ca.alert_id = a.id)";

fn row(r: &tokio_postgres::Row) -> AlertRow {
    AlertRow {
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
        disposition: r.get(13),
        case_id: r.get(14),
    }
}

/// Every open alert (or every alert), oldest first, as `alerts list` prints them.
pub async fn list(client: &impl GenericClient, all: bool) -> Result<Vec<AlertRow>, FleetError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM alerts a WHERE $1 OR a.status = 'open' ORDER BY a.id"),
            &[&all],
        )
        .await
        .map_err(FleetError::sql("listing alerts"))?;
    Ok(rows.iter().map(row).collect())
}

fn finding_row(r: &tokio_postgres::Row) -> super::query::FindingRow {
    super::query::FindingRow {
        event_id: r.get(0),
        detector: r.get(1),
        time: r.get(2),
        user: r.get(3),
        patient: r.get(4),
        action: r.get(5),
        category: r.get(6),
        severity: r.get(7),
        explanation: r.get(8),
        hipaa: r.get(9),
    }
}

/// Findings by user, patient, category or detector, newest first (as
/// [`super::query::findings`]).
pub async fn findings(
    client: &impl GenericClient,
    f: &super::query::FindingFilter,
) -> Result<Vec<super::query::FindingRow>, FleetError> {
    use crate::store::nonempty;
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM findings f
                 WHERE ($1::text IS NULL OR f.user_id = $1) AND ($2::text IS NULL OR f.patient_id = $2)
                   AND ($3::text IS NULL OR f.category = $3) AND ($4::text IS NULL OR f.detector = $4)
                 ORDER BY f.time DESC, f.event_id LIMIT $5 OFFSET $6",
                super::query::FINDING_COLUMNS
            ),
            &[
                &nonempty(&f.user),
                &nonempty(&f.patient),
                &nonempty(&f.category),
                &nonempty(&f.detector),
                &i64::from(f.limit.unwrap_or(100).clamp(1, 1000)),
                &i64::from(f.offset.unwrap_or(0)),
            ],
        )
        .await
        .map_err(FleetError::sql("reading findings"))?;
    Ok(rows.iter().map(finding_row).collect())
}

/// One alert with its evidence (its findings, oldest first), as [`super::query::alert`].
pub async fn detail(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<super::query::AlertDetail>, FleetError> {
    let e = FleetError::sql("reading an alert");
    let Some(alert) = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM alerts a WHERE a.id = $1"),
            &[&id],
        )
        .await
        .map_err(&e)?
    else {
        return Ok(None);
    };
    let findings = client
        .query(
            &format!(
                "SELECT {} FROM alert_findings af JOIN findings f
                   ON f.event_id = af.event_id AND f.detector = af.detector
                 WHERE af.alert_id = $1 ORDER BY f.time, f.event_id LIMIT 1000",
                super::query::FINDING_COLUMNS
            ),
            &[&id],
        )
        .await
        .map_err(&e)?
        .iter()
        .map(finding_row)
        .collect();
    Ok(Some(super::query::AlertDetail {
        alert: row(&alert),
        findings,
    }))
}

/// The console's alert queue, as [`super::query::alerts`]: the filter's alerts, most severe
/// first, then newest, one page of them, with counts per severity and category.
pub async fn page(
    client: &impl GenericClient,
    f: &super::query::AlertFilter,
) -> Result<super::query::AlertPage, crate::store::QueryError> {
    use crate::store::nonempty;
    let status = f.status()?;
    let filter = "($1 = 'all' OR a.status = $1) AND ($2::text IS NULL OR a.severity = $2)
        AND ($3::text IS NULL OR a.category = $3) AND ($4::text IS NULL OR a.user_id = $4)
        AND ($5::text IS NULL OR a.department = $5)";
    let (sev, cat, user, dept) = (
        nonempty(&f.severity),
        nonempty(&f.category),
        nonempty(&f.user),
        nonempty(&f.department),
    );
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&status, &sev, &cat, &user, &dept];
    let e =
        |e| crate::store::QueryError::Database(FleetError::sql("reading alerts")(e).to_string());
    let mut page = super::query::AlertPage {
        total: 0,
        limit: f.limit(),
        offset: f.offset.unwrap_or(0),
        by_severity: Default::default(),
        by_category: Default::default(),
        alerts: Vec::new(),
    };
    let counts = client
        .query(
            &format!(
                "SELECT a.severity, a.category, count(*) FROM alerts a WHERE {filter}
                 GROUP BY a.severity, a.category"
            ),
            &args,
        )
        .await
        .map_err(e)?;
    for r in counts {
        let (s, c, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        *page.by_severity.entry(s).or_insert(0) += n;
        *page.by_category.entry(c).or_insert(0) += n;
        page.total += n;
    }
    let (limit, offset) = (i64::from(page.limit), i64::from(page.offset));
    let mut paged: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args.to_vec();
    paged.push(&limit);
    paged.push(&offset);
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM alerts a WHERE {filter}
                 ORDER BY {}, a.last_ms DESC, a.id DESC LIMIT $6 OFFSET $7",
                super::query::SEVERITY_RANK
            ),
            &paged,
        )
        .await
        .map_err(e)?;
    page.alerts = rows.iter().map(row).collect();
    Ok(page)
}

/// Records who acknowledged alert `id`, when and what they concluded (checked by
/// [`crate::alert::admin::ack_fields`]), and drops its waiting notifications, in one
/// transaction.
pub async fn ack(
    client: &mut tokio_postgres::Client,
    id: i64,
    by: &str,
    note: &str,
    disposition: Option<&str>,
) -> Result<(), AdminError> {
    let disposition = crate::alert::admin::ack_fields(by, disposition)?;
    let now_ms = crate::time::now_ms();
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
        return Err(AdminError::NotFound(format!("no alert #{id}")));
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
    Ok(())
}

/// Stores a silence from now for `duration`, its input checked as the single process checks
/// it ([`crate::alert::admin::silence_fields`]).
pub async fn add_silence(
    client: &impl GenericClient,
    matchers: &[String],
    duration: std::time::Duration,
    author: &str,
    reason: &str,
) -> Result<Silence, AdminError> {
    let matchers = crate::alert::admin::silence_fields(matchers, author, reason)?;
    let now_ms = crate::time::now_ms();
    let ends_ms = now_ms + duration.as_millis() as i64;
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
pub async fn expire_silence(client: &impl GenericClient, id: i64) -> Result<(), AdminError> {
    let n = client
        .execute(
            "UPDATE silences SET ends_ms = $2 WHERE id = $1",
            &[&id, &crate::time::now_ms()],
        )
        .await
        .map_err(FleetError::sql("ending a silence"))?;
    match n {
        1 => Ok(()),
        _ => Err(AdminError::NotFound(format!("no silence #{id}"))),
    }
}

/// The dashboard's counts from the fleet's database (as the single process's
/// [`super::query::per_day`], [`super::query::top_users`] and [`super::query::per_detector`],
/// and the number of accesses stored).
pub async fn overview(
    client: &impl GenericClient,
    by: super::query::ChartBy,
    days: i64,
) -> Result<super::query::Overview, FleetError> {
    let e = FleetError::sql("reading the dashboard's counts");
    let at = match by {
        super::query::ChartBy::Stored => "first_ms",
        super::query::ChartBy::Access => "coalesce(first_access_ms, first_ms)",
    };
    let mut per_day: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
        Default::default();
    let rows = client
        .query(
            &format!(
                "SELECT to_char(to_timestamp({at} / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
                        category, count(*)
                 FROM alerts WHERE {at} > (SELECT max({at}) FROM alerts) - $1 GROUP BY 1, 2"
            ),
            &[&(days * 86_400_000)],
        )
        .await
        .map_err(&e)?;
    for r in rows {
        per_day
            .entry(r.get(0))
            .or_default()
            .insert(r.get(1), r.get(2));
    }
    let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let top_users = client
        .query(
            "SELECT user_id, count(*) FROM findings GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 10",
            &[],
        )
        .await
        .map_err(&e)?;
    let per_detector = client
        .query(
            "SELECT detector, count(*) FROM findings GROUP BY detector ORDER BY 2 DESC",
            &[],
        )
        .await
        .map_err(&e)?;
    // Large months by the planner's estimate: years of a large system's accesses are not
    // scanned for one figure on a page.
    let (accesses, _) = crate::fleet::retention::count_between(client, None).await?;
    Ok(super::query::Overview {
        per_day,
        top_users: pairs(top_users),
        per_detector: pairs(per_detector),
        accesses: accesses as i64,
    })
}
