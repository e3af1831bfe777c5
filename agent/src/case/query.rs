//! The case stage's read model: the case list with each open case's next deadline, and one
//! case with its facts, tasks, deadlines and log. Writes stay in `Cases`.

use super::clock::Jurisdictions;
use super::schedule::Clock;
use super::{Assessment, Cases};
use crate::store::QueryError;
use crate::time::format_ms;
use chrono::NaiveDate;
use rusqlite::OptionalExtension;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct CaseRow {
    pub id: i64,
    pub title: String,
    pub state: String,
    pub assignee: Option<String>,
    pub determination: Option<String>,
    pub resolution: Option<String>,
    pub discovered: Option<String>,
    pub created: String,
    pub updated: String,
    pub alerts: Vec<i64>,
    /// The soonest deadline of an open case (firm or provisional).
    pub next_deadline: Option<DeadlineRow>,
}

fn case_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CaseRow> {
    Ok(CaseRow {
        id: r.get(0)?,
        title: r.get(1)?,
        state: r.get(2)?,
        assignee: r.get(3)?,
        determination: r.get(4)?,
        resolution: r.get(5)?,
        discovered: r.get(6)?,
        created: format_ms(r.get(7)?),
        updated: format_ms(r.get(8)?),
        next_deadline: None,
        alerts: r
            .get::<_, Option<String>>(9)?
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default(),
    })
}

const CASE_COLUMNS: &str = "c.id, c.title, c.state, c.assignee, c.determination, c.resolution,
    c.discovered, c.created_ms, c.updated_ms,
    (SELECT group_concat(alert_id, ',') FROM case_alerts WHERE case_id = c.id)";

/// Every case, open ones first by their soonest deadline (the most urgent on top), then
/// open ones without a clock, then closed ones, newest first.
pub fn cases(
    cases: &Cases,
    j: &Jurisdictions,
    today: NaiveDate,
) -> Result<Vec<CaseRow>, QueryError> {
    let mut st = cases.conn().prepare_cached(&format!(
        "SELECT {CASE_COLUMNS} FROM cases c ORDER BY c.state = 'closed', c.id DESC"
    ))?;
    let mut rows: Vec<CaseRow> = st.query_map([], case_row)?.collect::<Result<_, _>>()?;
    for r in rows.iter_mut().filter(|r| r.state != "closed") {
        let c = cases.clocks(r.id, j)?;
        r.next_deadline = c.next().map(|c| deadline_row(c, today));
    }
    by_urgency(&mut rows);
    Ok(rows)
}

/// Open cases first by their soonest deadline, then open ones without a clock, then closed
/// ones, newest first.
pub(crate) fn by_urgency(rows: &mut [CaseRow]) {
    rows.sort_by_key(|r| {
        (
            r.state == "closed",
            r.next_deadline.is_none(),
            r.next_deadline.as_ref().map(|d| d.due.clone()),
            std::cmp::Reverse(r.id),
        )
    });
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadlineRow {
    pub notify: String,
    pub due: String,
    pub basis: String,
    /// Until a breach is determined and the residents are recorded.
    pub provisional: bool,
    /// Why the clock applies, or might.
    pub why: String,
    /// Days from today (negative: overdue).
    pub days_left: i64,
    /// Midnight UTC at the end of the due day, for the console's countdown.
    pub due_end_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub n: i64,
    pub text: String,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub before: String,
    pub after: String,
}

impl From<super::log::Entry> for LogRow {
    fn from(e: super::log::Entry) -> Self {
        LogRow {
            seq: e.seq,
            at: format_ms(e.at_ms),
            actor: e.actor,
            action: e.action,
            before: e.before,
            after: e.after,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CaseDetail {
    pub case: CaseRow,
    pub residents: BTreeMap<String, u32>,
    pub licensed_in: Vec<String>,
    pub assessment: Option<Assessment>,
    pub tasks: Vec<Task>,
    pub users: Vec<String>,
    pub patients: Vec<String>,
    /// The notification deadlines. Before a breach is determined, or while the affected
    /// residents are not recorded, they are provisional: the 60-day clock runs from
    /// discovery whatever the outcome will be.
    pub deadlines: Vec<DeadlineRow>,
    pub deadlines_provisional: bool,
    pub deadline_error: Option<String>,
    /// Why no clock runs, also when the case was determined not to be a breach.
    pub no_clock: Option<String>,
    pub log: Vec<LogRow>,
}

pub(crate) fn deadline_rows(cs: &[Clock], today: NaiveDate) -> Vec<DeadlineRow> {
    cs.iter().map(|c| deadline_row(c, today)).collect()
}

pub(crate) fn deadline_row(c: &Clock, today: NaiveDate) -> DeadlineRow {
    DeadlineRow {
        days_left: (c.due - today).num_days(),
        due_end_ms: (c.due + chrono::Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or(0),
        due: c.due.to_string(),
        notify: c.notify.clone(),
        basis: c.basis.clone(),
        provisional: c.provisional,
        why: c.why.clone(),
    }
}

pub fn case(
    cases: &Cases,
    id: i64,
    j: &Jurisdictions,
    today: NaiveDate,
) -> Result<Option<CaseDetail>, QueryError> {
    let conn = cases.conn();
    let Some(case) = conn
        .query_row(
            &format!("SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = ?1"),
            [id],
            case_row,
        )
        .optional()?
    else {
        return Ok(None);
    };
    let (users, patients) = super::output::involved(cases, id)?;
    let mut st =
        conn.prepare_cached("SELECT n, text, done FROM case_tasks WHERE case_id = ?1 ORDER BY n")?;
    let tasks = st
        .query_map([id], |r| {
            Ok(Task {
                n: r.get(0)?,
                text: r.get(1)?,
                done: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let log = super::log::entries(conn, Some(id))?
        .into_iter()
        .map(LogRow::from)
        .collect();
    Ok(Some(assemble(
        Parts {
            case,
            breach: cases.breach(id)?,
            assessment: cases.assessment(id)?,
            users,
            patients,
            tasks,
            log,
        },
        j,
        today,
    )))
}

/// What a case's page shows, as read from either store.
pub(crate) struct Parts {
    pub case: CaseRow,
    pub breach: super::clock::Breach,
    pub assessment: Option<Assessment>,
    pub users: Vec<String>,
    pub patients: Vec<String>,
    pub tasks: Vec<Task>,
    pub log: Vec<LogRow>,
}

/// The case's page, with its clocks as of `today`.
pub(crate) fn assemble(p: Parts, j: &Jurisdictions, today: NaiveDate) -> CaseDetail {
    let (residents, licensed_in) = (p.breach.residents.clone(), p.breach.licensed_in.clone());
    let clocks = super::schedule::clocks(
        p.breach,
        p.case.determination.as_deref(),
        p.patients.len(),
        j,
    );
    // A case determined not to be a breach has no clocks, which is no error.
    let deadline_error = clocks
        .none_because
        .clone()
        .filter(|_| p.case.determination.is_none());
    CaseDetail {
        assessment: p.assessment,
        licensed_in,
        residents,
        case: p.case,
        tasks: p.tasks,
        users: p.users,
        patients: p.patients,
        deadlines: deadline_rows(&clocks.clocks, today),
        deadlines_provisional: clocks.provisional,
        deadline_error,
        no_clock: clocks.none_because,
        log: p.log,
    }
}

/// Open cases whose notices are not all sent yet (not closed, not notifying): id and title.
pub fn unsent(conn: &rusqlite::Connection) -> Result<Vec<(i64, String)>, QueryError> {
    let mut st = conn
        .prepare_cached("SELECT id, title FROM cases WHERE state NOT IN ('closed', 'notifying')")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A case's deadlines as of `today`: only the clocks, not the case page's tasks or log.
pub fn deadlines(
    cases: &Cases,
    id: i64,
    j: &Jurisdictions,
    today: NaiveDate,
) -> Result<Vec<DeadlineRow>, QueryError> {
    Ok(deadline_rows(&cases.clocks(id, j)?.clocks, today))
}

/// The accesses by a case's users to its patients, oldest first: the case's evidence.
pub fn evidence(cases: &Cases, id: i64) -> Result<Vec<super::timeline::TimelineRow>, QueryError> {
    Ok(super::timeline::case_timeline(cases.conn(), id)?)
}
