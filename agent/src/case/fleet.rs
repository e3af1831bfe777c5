//! Cases in fleet mode, on the fleet's PostgreSQL: the same actions as [`super::Cases`] (their
//! rules are in [`super::change`]), from any number of nodes at once.
//!
//! Every change locks its case's row before reading the state it checks, so two officers
//! cannot both act on a case that one of them just closed; and every log entry locks the
//! log's one head row before chaining from it, so concurrent writers append one after the
//! other: the sequence has no gap and the chain no fork (a `MAX(seq) + 1` read, as SQLite's
//! single writer allows, would hand two PostgreSQL transactions the same number).

use super::change::{title_or, Current, Set};
use super::log::{self, Broken, Entry};
use super::query::{CaseDetail, CaseRow, LogRow, Parts, Task};
use super::{invalid, need, not_found, CaseError};
use crate::fleet::FleetError;
use crate::time::{format_ms, now_ms};
use chrono::NaiveDate;
use serde_json::{json, Value};
use tokio_postgres::{Client, GenericClient, Row, Transaction};

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> CaseError {
    move |e| CaseError::Fleet(FleetError::sql(what)(e))
}

/// Locks case `id`'s row for the rest of `tx`; refuses a missing case and, unless
/// `closed_ok`, a closed one.
async fn lock(tx: &Transaction<'_>, id: i64, closed_ok: bool) -> Result<Current, CaseError> {
    let row = tx
        .query_opt(
            "SELECT state, assessment FROM cases WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(sql("locking the case"))?
        .ok_or_else(|| not_found(format!("no case #{id}")))?;
    let state: String = row.get(0);
    if state == "closed" && !closed_ok {
        return Err(invalid(format!("case #{id} is closed")));
    }
    let assessment: Option<String> = row.get(1);
    Ok(Current {
        state,
        assessment: super::assessment_of(assessment),
    })
}

/// Appends one entry inside `tx`, after the log's head, which it locks until `tx` ends.
pub async fn append(
    tx: &Transaction<'_>,
    case_id: i64,
    actor: &str,
    action: &str,
    before: &Value,
    after: &Value,
) -> Result<Entry, CaseError> {
    let e = sql("appending to the case log");
    let head = tx
        .query_one("SELECT seq, hash FROM case_log_head FOR UPDATE", &[])
        .await
        .map_err(&e)?;
    let entry = log::seal(
        (head.get(0), head.get(1)),
        case_id,
        actor,
        action,
        before,
        after,
        now_ms(),
    );
    tx.execute(
        "INSERT INTO case_log (seq, case_id, at_ms, actor, action, before, after, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &entry.seq,
            &entry.case_id,
            &entry.at_ms,
            &entry.actor,
            &entry.action,
            &entry.before,
            &entry.after,
            &entry.prev_hash,
            &entry.hash,
        ],
    )
    .await
    .map_err(&e)?;
    tx.execute(
        "UPDATE case_log_head SET seq = $1, hash = $2",
        &[&entry.seq, &entry.hash],
    )
    .await
    .map_err(&e)?;
    Ok(entry)
}

/// Opens a case on alerts (none: by hand). The discovery date defaults to today.
pub async fn create(
    client: &mut Client,
    plan: Option<&super::schedule::Plan>,
    actor: &str,
    title: &str,
    alerts: &[i64],
    discovered: Option<NaiveDate>,
) -> Result<i64, CaseError> {
    need(actor, "--by")?;
    let discovered = discovered.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let e = sql("opening a case");
    let tx = client.transaction().await.map_err(&e)?;
    let mut summary = None;
    for a in alerts {
        let row = tx
            .query_opt(
                "SELECT category || ' by ' || user_id FROM alerts WHERE id = $1",
                &[a],
            )
            .await
            .map_err(&e)?
            .ok_or_else(|| not_found(format!("no alert #{a}")))?;
        summary = summary.or(Some(row.get(0)));
    }
    let title = title_or(title, summary);
    let now = now_ms();
    let id: i64 = tx
        .query_one(
            "INSERT INTO cases (title, state, discovered, created_ms, updated_ms)
             VALUES ($1, 'new', $2, $3, $3) RETURNING id",
            &[&title, &discovered.to_string(), &now],
        )
        .await
        .map_err(&e)?
        .get(0);
    for a in alerts {
        tx.execute(
            "INSERT INTO case_alerts (case_id, alert_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, a],
        )
        .await
        .map_err(&e)?;
    }
    let after = json!({ "title": title, "alerts": alerts, "discovered": discovered.to_string() });
    append(&tx, id, actor, "open", &json!({}), &after).await?;
    if let Some(p) = plan {
        requeue(&tx, id, p).await?;
    }
    tx.commit().await.map_err(&e)?;
    Ok(id)
}

/// Sets the columns `decide` returns for the case as locked, logging their values before and
/// after, in one transaction, with the case's reminders brought in line (given a plan). A
/// closed case is refused before `decide` sees it.
pub async fn change(
    client: &mut Client,
    plan: Option<&super::schedule::Plan>,
    id: i64,
    actor: &str,
    action: &str,
    decide: impl FnOnce(&Current) -> Result<Set, CaseError>,
) -> Result<(), CaseError> {
    need(actor, "--by")?;
    let e = sql("changing a case");
    let tx = client.transaction().await.map_err(&e)?;
    let set = decide(&lock(&tx, id, false).await?)?;
    let mut before = serde_json::Map::new();
    let mut after = serde_json::Map::new();
    for (col, value) in &set {
        // Column names come from `change`'s builders, never from input.
        let old: Option<String> = tx
            .query_one(&format!("SELECT {col} FROM cases WHERE id = $1"), &[&id])
            .await
            .map_err(&e)?
            .get(0);
        let stored = match value {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        tx.execute(
            &format!("UPDATE cases SET {col} = $2, updated_ms = $3 WHERE id = $1"),
            &[&id, &stored, &now_ms()],
        )
        .await
        .map_err(&e)?;
        before.insert((*col).to_owned(), old.map_or(Value::Null, Value::String));
        after.insert((*col).to_owned(), value.clone());
    }
    append(
        &tx,
        id,
        actor,
        action,
        &Value::Object(before),
        &Value::Object(after),
    )
    .await?;
    if let Some(p) = plan {
        requeue(&tx, id, p).await?;
    }
    tx.commit().await.map_err(&e)
}

/// Adds a note to the case's log (a closed case too, as in the single process).
pub async fn note(client: &mut Client, id: i64, actor: &str, text: &str) -> Result<(), CaseError> {
    need(text, "the note")?;
    need(actor, "--by")?;
    let e = sql("adding a note");
    let tx = client.transaction().await.map_err(&e)?;
    lock(&tx, id, true).await?;
    append(&tx, id, actor, "note", &json!({}), &json!({ "note": text })).await?;
    tx.commit().await.map_err(&e)
}

/// Adds a task; returns its number.
pub async fn add_task(
    client: &mut Client,
    id: i64,
    actor: &str,
    text: &str,
) -> Result<i64, CaseError> {
    need(text, "the task")?;
    need(actor, "--by")?;
    let e = sql("adding a task");
    let tx = client.transaction().await.map_err(&e)?;
    lock(&tx, id, false).await?;
    // The case's row is locked: no other task of this case is numbered meanwhile.
    let n: i64 = tx
        .query_one(
            "INSERT INTO case_tasks (case_id, n, text)
             SELECT $1, coalesce(max(n), 0) + 1, $2 FROM case_tasks WHERE case_id = $1
             RETURNING n",
            &[&id, &text],
        )
        .await
        .map_err(&e)?
        .get(0);
    let after = json!({ "task": n, "text": text });
    append(&tx, id, actor, "task", &json!({}), &after).await?;
    tx.commit().await.map_err(&e)?;
    Ok(n)
}

pub async fn finish_task(
    client: &mut Client,
    id: i64,
    actor: &str,
    n: i64,
) -> Result<(), CaseError> {
    need(actor, "--by")?;
    let e = sql("finishing a task");
    let tx = client.transaction().await.map_err(&e)?;
    lock(&tx, id, true).await?;
    let changed = tx
        .execute(
            "UPDATE case_tasks SET done = true WHERE case_id = $1 AND n = $2 AND NOT done",
            &[&id, &n],
        )
        .await
        .map_err(&e)?;
    if changed == 0 {
        return Err(invalid(format!("case #{id} has no open task {n}")));
    }
    append(
        &tx,
        id,
        actor,
        "task_done",
        &json!({ "task": n, "done": false }),
        &json!({ "task": n, "done": true }),
    )
    .await?;
    tx.commit().await.map_err(&e)
}

/// The log's entries (of one case, or all), in sequence order.
pub async fn entries(
    client: &impl GenericClient,
    case_id: Option<i64>,
) -> Result<Vec<Entry>, CaseError> {
    let rows = client
        .query(
            "SELECT seq, case_id, at_ms, actor, action, before, after, prev_hash, hash
             FROM case_log WHERE $1::bigint IS NULL OR case_id = $1 ORDER BY seq",
            &[&case_id],
        )
        .await
        .map_err(sql("reading the case log"))?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            seq: r.get(0),
            case_id: r.get(1),
            at_ms: r.get(2),
            actor: r.get(3),
            action: r.get(4),
            before: r.get(5),
            after: r.get(6),
            prev_hash: r.get(7),
            hash: r.get(8),
        })
        .collect())
}

/// Checks the whole chain. `Ok((entries, head hash))` when it holds.
pub async fn verify(
    client: &impl GenericClient,
) -> Result<Result<(usize, String), Broken>, CaseError> {
    Ok(log::check(&entries(client, None).await?))
}

const CASE_COLUMNS: &str = "c.id, c.title, c.state, c.assignee, c.determination, c.resolution,
    c.discovered, c.created_ms, c.updated_ms,
    ARRAY(SELECT alert_id FROM case_alerts WHERE case_id = c.id ORDER BY alert_id),
    c.residents, c.delays, c.licensed_in, c.determined, c.assessment";

fn case_row(r: &Row) -> CaseRow {
    CaseRow {
        id: r.get(0),
        title: r.get(1),
        state: r.get(2),
        assignee: r.get(3),
        determination: r.get(4),
        resolution: r.get(5),
        discovered: r.get(6),
        created: format_ms(r.get(7)),
        updated: format_ms(r.get(8)),
        alerts: r.get(9),
        next_deadline: None,
    }
}

fn breach(r: &Row) -> super::clock::Breach {
    super::breach_of((r.get(6), r.get(13), r.get(10), r.get(11), r.get(12)))
}

/// The users and patients of the case's alerts.
async fn involved(
    client: &impl GenericClient,
    id: i64,
) -> Result<(Vec<String>, Vec<String>), CaseError> {
    let row = client
        .query_one(
            "SELECT ARRAY(SELECT DISTINCT a.user_id FROM case_alerts ca
                          JOIN alerts a ON a.id = ca.alert_id
                          WHERE ca.case_id = $1 ORDER BY 1),
                    ARRAY(SELECT DISTINCT af.patient_id FROM case_alerts ca
                          JOIN alert_findings af ON af.alert_id = ca.alert_id
                          WHERE ca.case_id = $1 AND af.patient_id <> '' ORDER BY 1)",
            &[&id],
        )
        .await
        .map_err(sql("reading a case's users and patients"))?;
    Ok((row.get(0), row.get(1)))
}

/// Every case, the most urgent first (as [`super::query::cases`]).
pub async fn list(
    client: &impl GenericClient,
    j: &super::clock::Jurisdictions,
    today: NaiveDate,
) -> Result<Vec<CaseRow>, CaseError> {
    let rows = client
        .query(&format!("SELECT {CASE_COLUMNS} FROM cases c"), &[])
        .await
        .map_err(sql("listing cases"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut row = case_row(r);
        if row.state != "closed" {
            let clocks = clocks_of(client, r, j).await?;
            row.next_deadline = clocks.next().map(|c| super::query::deadline_row(c, today));
        }
        out.push(row);
    }
    super::query::by_urgency(&mut out);
    Ok(out)
}

/// The clocks of a case read with `CASE_COLUMNS`, from what is recorded so far.
async fn clocks_of(
    client: &impl GenericClient,
    r: &Row,
    j: &super::clock::Jurisdictions,
) -> Result<super::schedule::Clocks, CaseError> {
    let (_, patients) = involved(client, r.get(0)).await?;
    let determination: Option<String> = r.get(4);
    Ok(super::schedule::clocks(
        breach(r),
        determination.as_deref(),
        patients.len(),
        j,
    ))
}

/// A case's deadlines as of `today` (as [`super::query::deadlines`]): only the clocks, not
/// the case page's tasks or log.
pub async fn deadlines(
    client: &impl GenericClient,
    id: i64,
    j: &super::clock::Jurisdictions,
    today: NaiveDate,
) -> Result<Vec<super::query::DeadlineRow>, CaseError> {
    let Some(r) = client
        .query_opt(
            &format!("SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = $1"),
            &[&id],
        )
        .await
        .map_err(sql("reading a case"))?
    else {
        return Ok(Vec::new());
    };
    let clocks = clocks_of(client, &r, j).await?;
    Ok(super::query::deadline_rows(&clocks.clocks, today))
}

/// One case: facts, tasks, deadlines as of `today`, log.
pub async fn detail(
    client: &impl GenericClient,
    id: i64,
    j: &super::clock::Jurisdictions,
    today: NaiveDate,
) -> Result<Option<CaseDetail>, CaseError> {
    let Some(r) = client
        .query_opt(
            &format!("SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = $1"),
            &[&id],
        )
        .await
        .map_err(sql("reading a case"))?
    else {
        return Ok(None);
    };
    let (users, patients) = involved(client, id).await?;
    let tasks = client
        .query(
            "SELECT n, text, done FROM case_tasks WHERE case_id = $1 ORDER BY n",
            &[&id],
        )
        .await
        .map_err(sql("reading a case's tasks"))?
        .iter()
        .map(|t| Task {
            n: t.get(0),
            text: t.get(1),
            done: t.get(2),
        })
        .collect();
    let log = entries(client, Some(id))
        .await?
        .into_iter()
        .map(LogRow::from)
        .collect();
    let assessment: Option<String> = r.get(14);
    Ok(Some(super::query::assemble(
        Parts {
            case: case_row(&r),
            breach: breach(&r),
            assessment: super::assessment_of(assessment),
            users,
            patients,
            tasks,
            log,
        },
        j,
        today,
    )))
}

const TIMELINE_COLUMNS: &str = "x.time_ms, x.user_id, x.patient_id, x.action, x.event_id,
    x.workstation, x.break_glass,
    ARRAY(SELECT f.detector FROM findings f WHERE f.event_id = x.event_id ORDER BY f.detector)";

fn timeline_row(r: &Row) -> super::timeline::TimelineRow {
    super::timeline::TimelineRow {
        time: format_ms(r.get(0)),
        user: r.get(1),
        patient: r.get::<_, Option<String>>(2).unwrap_or_default(),
        action: r.get(3),
        event_id: r.get(4),
        workstation: r.get(5),
        break_glass: r.get(6),
        flagged_by: r.get(7),
    }
}

/// The accesses by the case's users to its patients, oldest first: the case's evidence (as
/// [`super::timeline::case_timeline`]).
pub async fn evidence(
    client: &impl GenericClient,
    id: i64,
) -> Result<Vec<super::timeline::TimelineRow>, CaseError> {
    let rows = client
        .query(
            &format!(
                "WITH involved AS (
                   SELECT DISTINCT a.user_id, af.patient_id FROM case_alerts ca
                   JOIN alerts a ON a.id = ca.alert_id
                   JOIN alert_findings af ON af.alert_id = a.id WHERE ca.case_id = $1)
                 SELECT {TIMELINE_COLUMNS} FROM accesses x
                 WHERE x.user_id IN (SELECT user_id FROM involved)
                   AND x.patient_id IN (SELECT patient_id FROM involved)
                 ORDER BY x.time_ms, x.event_id LIMIT 5000"
            ),
            &[&id],
        )
        .await
        .map_err(sql("reading a case's evidence"))?;
    Ok(rows.iter().map(timeline_row).collect())
}

/// Accesses to a patient or by a user (as [`super::timeline::timeline`]).
pub async fn timeline(
    client: &impl GenericClient,
    f: &super::timeline::TimelineFilter,
) -> Result<Vec<super::timeline::TimelineRow>, crate::store::QueryError> {
    use crate::store::nonempty;
    let (from, to) = f.bounds()?;
    let rows = client
        .query(
            &format!(
                "SELECT {TIMELINE_COLUMNS} FROM accesses x
                 WHERE ($1::text IS NULL OR x.patient_id = $1)
                   AND ($2::text IS NULL OR x.user_id = $2)
                   AND x.time_ms >= $3 AND x.time_ms <= $4
                 ORDER BY x.time_ms, x.event_id LIMIT $5"
            ),
            &[
                &nonempty(&f.patient),
                &nonempty(&f.user),
                &from,
                &to,
                &i64::from(f.limit()),
            ],
        )
        .await
        .map_err(|e| {
            crate::store::QueryError::Database(
                FleetError::sql("reading the timeline")(e).to_string(),
            )
        })?;
    Ok(rows.iter().map(timeline_row).collect())
}

/// Brings case `id`'s deadline reminders in the fleet's outbox in line with its clocks, inside
/// the transaction that changed the case (as [`super::schedule::requeue`] does in SQLite): rows
/// not queued yet are added (a cancelled one comes back), pending rows no longer wanted are
/// cancelled, rows sent stay. A closed case keeps none pending.
pub async fn requeue(
    tx: &Transaction<'_>,
    id: i64,
    plan: &super::schedule::Plan,
) -> Result<(), CaseError> {
    let e = sql("queueing a case's reminders");
    let r = tx
        .query_one(
            &format!("SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = $1"),
            &[&id],
        )
        .await
        .map_err(&e)?;
    let case = case_row(&r);
    let rows = if case.state == "closed" {
        Vec::new()
    } else {
        let clocks = clocks_of(tx, &r, &plan.jurisdictions).await?;
        let today = chrono::Utc::now().date_naive();
        super::schedule::reminder_rows(id, &case.title, &clocks, &plan.response.reminders, today)
    };
    let wanted: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    tx.execute(
        "UPDATE outbox SET state = 'cancelled',
                last_error = 'the deadline moved or no longer applies'
         WHERE case_id = $1 AND state = 'pending' AND NOT (idempotency_key = ANY($2))",
        &[&id, &wanted],
    )
    .await
    .map_err(&e)?;
    let now = now_ms();
    for row in &rows {
        // New: queued; cancelled: pending again with what is known now; pending: what is
        // known now (firm rather than provisional); sent or dead: as it is.
        tx.execute(
            "INSERT INTO outbox (idempotency_key, receiver, state, created_ms, due_ms, case_id,
                                 subject, body)
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7)
             ON CONFLICT (idempotency_key) DO UPDATE SET
                 state = 'pending',
                 last_error = CASE WHEN outbox.state = 'cancelled' THEN NULL
                                   ELSE outbox.last_error END,
                 due_ms = CASE WHEN outbox.state = 'cancelled' THEN excluded.due_ms
                               ELSE outbox.due_ms END,
                 subject = excluded.subject, body = excluded.body
             WHERE outbox.state IN ('pending', 'cancelled')",
            &[
                &row.key,
                &row.receiver,
                &now,
                &row.due_ms,
                &id,
                &row.subject,
                &row.body,
            ],
        )
        .await
        .map_err(&e)?;
    }
    Ok(())
}

/// Reminders of case `id` waiting in the fleet's outbox.
pub async fn pending_reminders(client: &impl GenericClient, id: i64) -> Result<usize, CaseError> {
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox WHERE case_id = $1 AND state = 'pending'",
            &[&id],
        )
        .await
        .map_err(sql("counting a case's reminders"))?
        .get(0);
    Ok(n as usize)
}

/// Whether case `id` exists and is not closed (a dispatcher sends its reminders only then).
pub async fn is_open(client: &impl GenericClient, id: i64) -> Result<bool, FleetError> {
    let state: Option<String> = client
        .query_opt("SELECT state FROM cases WHERE id = $1", &[&id])
        .await
        .map_err(FleetError::sql("reading a case's state"))?
        .map(|r| r.get(0));
    Ok(state.is_some_and(|s| s != "closed"))
}

/// What letters and the HHS report are written from (as [`super::output::notice`]).
pub async fn notice(
    client: &impl GenericClient,
    id: i64,
) -> Result<super::output::Notice, CaseError> {
    let e = sql("reading a case");
    let r = client
        .query_opt(
            &format!("SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = $1"),
            &[&id],
        )
        .await
        .map_err(&e)?
        .ok_or_else(|| not_found(format!("no case #{id}")))?;
    let span = client
        .query_one(
            "WITH involved AS (
               SELECT DISTINCT a.user_id, af.patient_id FROM case_alerts ca
               JOIN alerts a ON a.id = ca.alert_id
               JOIN alert_findings af ON af.alert_id = a.id WHERE ca.case_id = $1)
             SELECT min(time_ms), max(time_ms) FROM accesses
             WHERE user_id IN (SELECT user_id FROM involved)
               AND patient_id IN (SELECT patient_id FROM involved)",
            &[&id],
        )
        .await
        .map_err(&e)?;
    let span: (Option<i64>, Option<i64>) = (span.get(0), span.get(1));
    let assessment: Option<String> = r.get(14);
    Ok(super::output::Notice {
        determination: r.get(4),
        assessment: super::assessment_of(assessment).unwrap_or_default(),
        breach: breach(&r),
        patients: involved(client, id).await?.1,
        span: span.0.zip(span.1),
    })
}

/// The cases determined a breach and discovered in `year` (as [`super::output::breaches_in`]).
pub async fn breaches_in(client: &impl GenericClient, year: i32) -> Result<Vec<i64>, CaseError> {
    Ok(client
        .query(
            "SELECT id FROM cases WHERE determination = 'breach' AND substr(discovered, 1, 4) = $1
             ORDER BY id",
            &[&year.to_string()],
        )
        .await
        .map_err(sql("reading the year's breaches"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The breach cases involving `patient` (as [`super::output::disclosures`]).
pub async fn disclosures(
    client: &impl GenericClient,
    patient: &str,
) -> Result<Vec<super::output::Disclosure>, CaseError> {
    Ok(client
        .query(
            "SELECT DISTINCT c.id, a.user_id, a.category, c.assessment,
                    (SELECT min(time_ms) FROM accesses x
                     WHERE x.user_id = a.user_id AND x.patient_id = $1)
             FROM cases c
             JOIN case_alerts ca ON ca.case_id = c.id
             JOIN alerts a ON a.id = ca.alert_id
             JOIN alert_findings af ON af.alert_id = a.id
             WHERE c.determination = 'breach' AND af.patient_id = $1 ORDER BY c.id",
            &[&patient],
        )
        .await
        .map_err(sql("reading a patient's disclosures"))?
        .iter()
        .map(|r| super::output::Disclosure {
            case_id: r.get(0),
            user: r.get(1),
            category: r.get(2),
            assessment: r.get(3),
            first_ms: r.get(4),
        })
        .collect())
}

/// Stores evidence for case `id` by its SHA-256 (once, however many cases attach it) and
/// records it in the case log, in one transaction (as [`super::Cases::attach_bytes`]).
pub async fn attach(
    client: &mut Client,
    id: i64,
    actor: &str,
    name: &str,
    bytes: &[u8],
) -> Result<String, CaseError> {
    need(actor, "--by")?;
    let sha = super::sha256_hex(bytes);
    let e = sql("attaching evidence");
    let tx = client.transaction().await.map_err(&e)?;
    lock(&tx, id, false).await?;
    tx.execute(
        "INSERT INTO case_evidence (sha256, bytes, created_ms) VALUES ($1, $2, $3)
         ON CONFLICT (sha256) DO NOTHING",
        &[&sha, &bytes, &now_ms()],
    )
    .await
    .map_err(&e)?;
    let after = json!({ "file": name, "sha256": sha, "bytes": bytes.len() });
    append(&tx, id, actor, "attach", &json!({}), &after).await?;
    tx.commit().await.map_err(&e)?;
    Ok(sha)
}

/// Open cases whose notices are not all sent yet: id and title (as
/// [`super::query::unsent`]).
pub async fn unsent(client: &impl GenericClient) -> Result<Vec<(i64, String)>, CaseError> {
    Ok(client
        .query(
            "SELECT id, title FROM cases WHERE state NOT IN ('closed', 'notifying') ORDER BY id",
            &[],
        )
        .await
        .map_err(sql("reading open cases"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
