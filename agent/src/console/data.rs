//! What the console and the API read from the store, as plain structures: both render the
//! same answers, one as HTML, one as JSON.

use crate::case::clock::Jurisdictions;
use crate::case::timeline::nonempty;
pub use crate::case::timeline::{case_timeline, timeline, TimelineFilter, TimelineRow};
use crate::case::{Assessment, Cases};
use crate::time::format_ms;
use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Severity ranks for sorting, most severe first: the expression of the store's `alerts_rank`
/// index, so the queue's first screen is read off the index, not sorted.
const SEVERITY_RANK: &str =
    "(CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END)";

#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub status: String,
    pub severity: String,
    pub category: String,
    pub user: String,
    pub department: String,
    pub first: String,
    pub last: String,
    pub findings: i64,
    pub patients: i64,
    /// The plain-language sentence of the alert's latest finding.
    pub explanation: String,
    pub acknowledged_by: Option<String>,
    pub ack_note: Option<String>,
    /// false_positive, benign or confirmed, when the officer said.
    pub disposition: Option<String>,
    pub case_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFilter {
    /// `open` (default), `acknowledged` or `all`.
    pub status: Option<String>,
    pub severity: Option<String>,
    pub category: Option<String>,
    pub user: Option<String>,
    pub department: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl AlertFilter {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn limit(&self) -> u32 {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }

    pub fn status(&self) -> Result<&str, String> {
        match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => Ok("open"),
            Some(s @ ("open" | "acknowledged" | "all")) => Ok(s),
            Some(other) => Err(format!(
                "status {other:?}: expected open, acknowledged or all"
            )),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AlertPage {
    /// Alerts matching the filter, before paging.
    pub total: i64,
    pub limit: u32,
    pub offset: u32,
    /// Counts per severity and per category among the matching alerts.
    pub by_severity: BTreeMap<String, i64>,
    pub by_category: BTreeMap<String, i64>,
    pub alerts: Vec<AlertRow>,
}

const ALERT_COLUMNS: &str = "a.id, a.status, a.severity, a.category, a.user_id, a.department,
    a.first_ms, a.last_ms, a.findings, a.incidents, a.ack_by, a.ack_note,
    (SELECT f.explanation FROM alert_findings af JOIN findings f
       ON f.event_id = af.event_id AND f.detector = af.detector
     WHERE af.alert_id = a.id ORDER BY f.time DESC LIMIT 1),
    (SELECT min(case_id) FROM case_alerts ca WHERE ca.alert_id = a.id), a.ack_disposition";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        status: r.get(1)?,
        severity: r.get(2)?,
        category: r.get(3)?,
        user: r.get(4)?,
        department: r.get(5)?,
        first: format_ms(r.get(6)?),
        last: format_ms(r.get(7)?),
        findings: r.get(8)?,
        patients: r.get(9)?,
        acknowledged_by: r.get(10)?,
        ack_note: r.get(11)?,
        explanation: r.get::<_, Option<String>>(12)?.unwrap_or_default(),
        case_id: r.get(13)?,
        disposition: r.get(14)?,
    })
}

pub fn alerts(conn: &Connection, f: &AlertFilter) -> Result<AlertPage, String> {
    let status = f.status()?;
    let sql = |e: rusqlite::Error| format!("store: {e}");
    // Filters are bound parameters; an empty one matches everything.
    let filter = "(?1 = 'all' OR a.status = ?1) AND (?2 IS NULL OR a.severity = ?2)
        AND (?3 IS NULL OR a.category = ?3) AND (?4 IS NULL OR a.user_id = ?4)
        AND (?5 IS NULL OR a.department = ?5)";
    let args = params![
        status,
        nonempty(&f.severity),
        nonempty(&f.category),
        nonempty(&f.user),
        nonempty(&f.department)
    ];
    let mut by_severity = BTreeMap::new();
    let mut by_category = BTreeMap::new();
    let mut total = 0;
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT a.severity, a.category, count(*) FROM alerts a WHERE {filter}
             GROUP BY a.severity, a.category"
        ))
        .map_err(sql)?;
    let mut rows = st.query(args).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let (s, c, n): (String, String, i64) = (
            r.get(0).map_err(sql)?,
            r.get(1).map_err(sql)?,
            r.get(2).map_err(sql)?,
        );
        *by_severity.entry(s).or_insert(0) += n;
        *by_category.entry(c).or_insert(0) += n;
        total += n;
    }
    drop(rows);
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a WHERE {filter}
             ORDER BY {SEVERITY_RANK}, a.last_ms DESC, a.id DESC LIMIT ?6 OFFSET ?7"
        ))
        .map_err(sql)?;
    let alerts = st
        .query_map(
            rusqlite::params_from_iter(
                args.iter()
                    .copied()
                    .chain(params![f.limit(), f.offset.unwrap_or(0)].iter().copied()),
            ),
            alert_row,
        )
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    Ok(AlertPage {
        total,
        limit: f.limit(),
        offset: f.offset.unwrap_or(0),
        by_severity,
        by_category,
        alerts,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingRow {
    pub event_id: String,
    pub detector: String,
    pub time: String,
    pub user: String,
    pub patient: String,
    pub action: String,
    pub category: String,
    pub severity: String,
    pub explanation: String,
    pub hipaa: String,
}

const FINDING_COLUMNS: &str = "f.event_id, f.detector, f.time, f.user_id, f.patient_id, f.action,
    f.category, f.severity, f.explanation, f.hipaa";

fn finding_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FindingRow> {
    Ok(FindingRow {
        event_id: r.get(0)?,
        detector: r.get(1)?,
        time: r.get(2)?,
        user: r.get(3)?,
        patient: r.get(4)?,
        action: r.get(5)?,
        category: r.get(6)?,
        severity: r.get(7)?,
        explanation: r.get(8)?,
        hipaa: r.get(9)?,
    })
}

#[derive(Debug, Serialize)]
pub struct AlertDetail {
    pub alert: AlertRow,
    /// The evidence: the findings grouped into this alert, oldest first.
    pub findings: Vec<FindingRow>,
}

pub fn alert(conn: &Connection, id: i64) -> rusqlite::Result<Option<AlertDetail>> {
    let Some(alert) = conn
        .query_row(
            &format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ?1"),
            [id],
            alert_row,
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = conn.prepare(&format!(
        "SELECT {FINDING_COLUMNS} FROM alert_findings af JOIN findings f
           ON f.event_id = af.event_id AND f.detector = af.detector
         WHERE af.alert_id = ?1 ORDER BY f.time, f.event_id LIMIT 1000"
    ))?;
    let findings = st.query_map([id], finding_row)?.collect::<Result<_, _>>()?;
    Ok(Some(AlertDetail { alert, findings }))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingFilter {
    pub user: Option<String>,
    pub patient: Option<String>,
    pub category: Option<String>,
    pub detector: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

pub fn findings(conn: &Connection, f: &FindingFilter) -> rusqlite::Result<Vec<FindingRow>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {FINDING_COLUMNS} FROM findings f
         WHERE (?1 IS NULL OR f.user_id = ?1) AND (?2 IS NULL OR f.patient_id = ?2)
           AND (?3 IS NULL OR f.category = ?3) AND (?4 IS NULL OR f.detector = ?4)
         ORDER BY f.time DESC, f.event_id LIMIT ?5 OFFSET ?6"
    ))?;
    let rows = st.query_map(
        params![
            nonempty(&f.user),
            nonempty(&f.patient),
            nonempty(&f.category),
            nonempty(&f.detector),
            f.limit.unwrap_or(100).clamp(1, 1000),
            f.offset.unwrap_or(0)
        ],
        finding_row,
    )?;
    rows.collect()
}

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
pub fn cases(cases: &Cases, j: &Jurisdictions, today: NaiveDate) -> Result<Vec<CaseRow>, String> {
    let sql = |e: rusqlite::Error| format!("store: {e}");
    let mut st = cases
        .conn()
        .prepare_cached(&format!(
            "SELECT {CASE_COLUMNS} FROM cases c ORDER BY c.state = 'closed', c.id DESC"
        ))
        .map_err(sql)?;
    let mut rows: Vec<CaseRow> = st
        .query_map([], case_row)
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    for r in rows.iter_mut().filter(|r| r.state != "closed") {
        let c = cases.clocks(r.id, j).map_err(|e| e.to_string())?;
        r.next_deadline = c.next().map(|c| deadline_row(c, today));
    }
    rows.sort_by_key(|r| {
        (
            r.state == "closed",
            r.next_deadline.is_none(),
            r.next_deadline.as_ref().map(|d| d.due.clone()),
            std::cmp::Reverse(r.id),
        )
    });
    Ok(rows)
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
    pub log: Vec<LogRow>,
}

fn deadline_rows(cs: &[crate::case::schedule::Clock], today: NaiveDate) -> Vec<DeadlineRow> {
    cs.iter().map(|c| deadline_row(c, today)).collect()
}

fn deadline_row(c: &crate::case::schedule::Clock, today: NaiveDate) -> DeadlineRow {
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
) -> Result<Option<CaseDetail>, String> {
    let conn = cases.conn();
    let sql = |e: rusqlite::Error| format!("store: {e}");
    let Some(case) = conn
        .query_row(
            &format!("SELECT {CASE_COLUMNS} FROM cases c WHERE c.id = ?1"),
            [id],
            case_row,
        )
        .optional()
        .map_err(sql)?
    else {
        return Ok(None);
    };
    let b = cases.breach(id).map_err(|e| e.to_string())?;
    let (users, patients) = crate::case::output::involved(cases, id).map_err(|e| e.to_string())?;
    let (residents, licensed_in) = (b.residents.clone(), b.licensed_in.clone());
    let clocks = cases.clocks(id, j).map_err(|e| e.to_string())?;
    // A case determined not to be a breach has no clocks, which is no error.
    let deadline_error = clocks
        .none_because
        .clone()
        .filter(|_| case.determination.is_none());
    let mut st = conn
        .prepare_cached("SELECT n, text, done FROM case_tasks WHERE case_id = ?1 ORDER BY n")
        .map_err(sql)?;
    let tasks = st
        .query_map([id], |r| {
            Ok(Task {
                n: r.get(0)?,
                text: r.get(1)?,
                done: r.get(2)?,
            })
        })
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let log = crate::case::log::entries(conn, Some(id))
        .map_err(sql)?
        .into_iter()
        .map(|e| LogRow {
            seq: e.seq,
            at: format_ms(e.at_ms),
            actor: e.actor,
            action: e.action,
            before: e.before,
            after: e.after,
        })
        .collect();
    Ok(Some(CaseDetail {
        assessment: cases.assessment(id).map_err(|e| e.to_string())?,
        licensed_in,
        residents,
        case,
        tasks,
        users,
        patients,
        deadlines: deadline_rows(&clocks.clocks, today),
        deadlines_provisional: clocks.provisional,
        deadline_error,
        log,
    }))
}

#[derive(Debug, Serialize)]
pub struct DayCount {
    pub day: String,
    pub by_category: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize)]
pub struct PolicyRate {
    pub detector: String,
    pub findings: i64,
    /// Findings per 10,000 stored accesses.
    pub per_10k: f64,
}

#[derive(Debug, Serialize)]
pub struct Due {
    pub case_id: i64,
    pub title: String,
    pub notify: String,
    pub due: String,
    pub days_left: i64,
    pub provisional: bool,
}

#[derive(Debug, Serialize)]
pub struct Dashboard {
    /// Alerts per day, per category, over the last 30 days of data: by the day they were
    /// stored, or (`by = access`) by the day of their first access.
    pub alerts_by_day: Vec<DayCount>,
    pub by: ChartBy,
    pub top_users: Vec<(String, i64)>,
    pub accesses: i64,
    pub per_policy: Vec<PolicyRate>,
    /// Deadlines of open cases due within 7 days (or overdue).
    pub due_this_week: Vec<Due>,
}

/// Which time the alerts chart plots an alert at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartBy {
    /// When the alert was stored: what the queue saw arrive.
    #[default]
    Stored,
    /// When its first access happened: what an officer replaying old logs expects.
    Access,
}

/// `?by=stored|access` on the dashboard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardQuery {
    #[serde(default)]
    pub by: ChartBy,
}

pub fn dashboard(
    cases: &Cases,
    j: &Jurisdictions,
    today: NaiveDate,
    by: ChartBy,
) -> Result<Dashboard, String> {
    let conn = cases.conn();
    let sql = |e: rusqlite::Error| format!("store: {e}");
    // Alerts stored before access times were kept fall back to their storage time.
    let at = match by {
        ChartBy::Stored => "first_ms",
        ChartBy::Access => "coalesce(first_access_ms, first_ms)",
    };
    let last: Option<i64> = conn
        .query_row(&format!("SELECT max({at}) FROM alerts"), [], |r| r.get(0))
        .map_err(sql)?;
    let mut by_day: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    if let Some(last) = last {
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT date({at} / 1000, 'unixepoch'), category, count(*) FROM alerts
                 WHERE {at} > ?1 GROUP BY 1, 2"
            ))
            .map_err(sql)?;
        let rows = st
            .query_map([last - 30 * 86_400_000], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(sql)?;
        for row in rows {
            let (d, c, n) = row.map_err(sql)?;
            by_day.entry(d).or_default().insert(c, n);
        }
    }
    let mut st = conn
        .prepare_cached(
            "SELECT user_id, count(*) FROM findings GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 10",
        )
        .map_err(sql)?;
    let top_users = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let accesses: i64 = conn
        .query_row("SELECT count(*) FROM accesses", [], |r| r.get(0))
        .map_err(sql)?;
    let mut st = conn
        .prepare_cached("SELECT detector, count(*) FROM findings GROUP BY detector ORDER BY 2 DESC")
        .map_err(sql)?;
    let per_policy = st
        .query_map([], |r| {
            let n: i64 = r.get(1)?;
            Ok(PolicyRate {
                detector: r.get(0)?,
                findings: n,
                per_10k: if accesses > 0 {
                    n as f64 * 10_000.0 / accesses as f64
                } else {
                    0.0
                },
            })
        })
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let mut due_this_week = Vec::new();
    let open: Vec<(i64, String, Option<String>)> = {
        let mut st = conn
            .prepare_cached(
                "SELECT id, title, determination FROM cases
                 WHERE state NOT IN ('closed', 'notifying')",
            )
            .map_err(sql)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)?
    };
    // Only the clocks: the case page's tasks, assessment and log are not needed here.
    for (id, title, _) in open {
        let c = cases.clocks(id, j).map_err(|e| e.to_string())?;
        for d in deadline_rows(&c.clocks, today)
            .into_iter()
            .filter(|d| d.days_left <= 7)
        {
            due_this_week.push(Due {
                case_id: id,
                title: title.clone(),
                notify: d.notify,
                due: d.due,
                days_left: d.days_left,
                provisional: d.provisional,
            });
        }
    }
    due_this_week.sort_by(|a, b| a.due.cmp(&b.due));
    Ok(Dashboard {
        alerts_by_day: by_day
            .into_iter()
            .map(|(day, by_category)| DayCount { day, by_category })
            .collect(),
        by,
        top_users,
        accesses,
        per_policy,
        due_this_week,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Findings from last month's logs, stored today: charted on the day stored by default,
    /// on the day of the access with `by = access`.
    #[test]
    fn alerts_chart_by_storage_or_access_day() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("p.db");
        let mut store = crate::store::Store::open(&db).unwrap();
        let routing = crate::alert::Routing::parse(
            "[grouping]\ngroup_wait = \"1s\"\nfold_repeat_offenders = false\n",
        )
        .unwrap();
        let finding = |id: &str, time: &str| crate::finding::Finding {
            event_id: id.into(),
            time: time.into(),
            user: "dr-a".into(),
            department: "cardiology".into(),
            patient: format!("pt-{id}"),
            action: "view".into(),
            category: "family".into(),
            severity: crate::finding::Severity::High,
            detector: "family-member".into(),
            explanation: "x".into(),
            hipaa: "y".into(),
        };
        let stored = crate::time::parse_fhir_time("2026-12-01T12:00:00Z").unwrap();
        let batch = [
            finding("a", "2026-11-02T09:00:00Z"),
            finding("b", "2026-11-03T09:00:00Z"),
        ];
        store
            .insert_batch_then(&[], &batch, |tx, fresh| {
                crate::alert::apply(tx, fresh, &routing, chrono_tz::UTC, stored).map(|_| ())
            })
            .unwrap();
        let cases = Cases::open(&db).unwrap();
        let j = Jurisdictions::parse(Jurisdictions::EMBEDDED).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let days = |by| {
            dashboard(&cases, &j, today, by)
                .unwrap()
                .alerts_by_day
                .into_iter()
                .map(|d| (d.day, d.by_category["family"]))
                .collect::<Vec<_>>()
        };
        assert_eq!(days(ChartBy::Stored), [("2026-12-01".to_owned(), 2)]);
        assert_eq!(
            days(ChartBy::Access),
            [("2026-11-02".to_owned(), 1), ("2026-11-03".to_owned(), 1)]
        );
    }
}
