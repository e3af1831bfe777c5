//! The alert stage's read model: the queue, one alert with its evidence, findings. The
//! console, the API and the CLI read alerts through here; writes stay in `group` and `admin`.

use crate::store::{nonempty, QueryError};
use crate::time::format_ms;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Severity ranks for sorting, most severe first: the expression of the store's `alerts_rank`
/// index, so the queue's first screen is read off the index, not sorted.
pub(crate) const SEVERITY_RANK: &str =
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

    pub fn status(&self) -> Result<&str, QueryError> {
        match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => Ok("open"),
            Some(s @ ("open" | "acknowledged" | "all")) => Ok(s),
            Some(other) => Err(QueryError::Invalid(format!(
                "status {other:?}: expected open, acknowledged or all"
            ))),
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

pub fn alerts(conn: &Connection, f: &AlertFilter) -> Result<AlertPage, QueryError> {
    let status = f.status()?;
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
    let mut st = conn.prepare_cached(&format!(
        "SELECT a.severity, a.category, count(*) FROM alerts a WHERE {filter}
             GROUP BY a.severity, a.category"
    ))?;
    let mut rows = st.query(args)?;
    while let Some(r) = rows.next()? {
        let (s, c, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        *by_severity.entry(s).or_insert(0) += n;
        *by_category.entry(c).or_insert(0) += n;
        total += n;
    }
    drop(rows);
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts a WHERE {filter}
             ORDER BY {SEVERITY_RANK}, a.last_ms DESC, a.id DESC LIMIT ?6 OFFSET ?7"
    ))?;
    let alerts = st
        .query_map(
            rusqlite::params_from_iter(
                args.iter()
                    .copied()
                    .chain(params![f.limit(), f.offset.unwrap_or(0)].iter().copied()),
            ),
            alert_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AlertPage {
        total,
        limit: f.limit(),
        offset: f.offset.unwrap_or(0),
        by_severity,
        by_category,
        alerts,
    })
}

/// Every open alert (`all`: every alert), by id.
pub fn list(conn: &Connection, all: bool) -> Result<Vec<AlertRow>, QueryError> {
    let mut st = conn.prepare(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts a WHERE ?1 OR a.status = 'open' ORDER BY a.id"
    ))?;
    let rows = st.query_map([all], alert_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What routing, silences and inhibition look at in an alert.
#[derive(Debug, Clone)]
pub struct Labels {
    pub id: i64,
    pub status: String,
    pub user: String,
    pub category: String,
    pub severity: String,
    pub department: String,
}

const LABEL_COLUMNS: &str = "a.id, a.status, a.user_id, a.category, a.severity, a.department";

fn labels_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Labels> {
    Ok(Labels {
        id: r.get(0)?,
        status: r.get(1)?,
        user: r.get(2)?,
        category: r.get(3)?,
        severity: r.get(4)?,
        department: r.get(5)?,
    })
}

pub fn labels(conn: &Connection, id: i64) -> rusqlite::Result<Option<Labels>> {
    conn.query_row(
        &format!("SELECT {LABEL_COLUMNS} FROM alerts a WHERE a.id = ?1"),
        [id],
        labels_row,
    )
    .optional()
}

/// Open alerts last notified at or before `ms` (never-notified ones are not repeats).
pub fn sent_before(conn: &Connection, ms: i64) -> rusqlite::Result<Vec<Labels>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {LABEL_COLUMNS} FROM alerts a
         WHERE a.status = 'open' AND a.last_sent_ms > 0 AND a.last_sent_ms <= ?1"
    ))?;
    let rows = st.query_map([ms], labels_row)?;
    rows.collect()
}

/// Whether `user` has an open critical alert other than `besides`.
pub fn open_critical_besides(
    conn: &Connection,
    user: &str,
    besides: i64,
) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM alerts WHERE user_id = ?1 AND severity = 'critical'
           AND status = 'open' AND id != ?2)",
        params![user, besides],
        |r| r.get(0),
    )
}

/// A silence that has not ended (it may start later).
#[derive(Debug, Clone)]
pub struct Silence {
    pub id: i64,
    /// The label matchers as stored: a JSON object.
    pub matchers: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub author: String,
    pub reason: String,
}

/// How `silence add` confirms a new silence.
impl std::fmt::Display for Silence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "silence #{} until {}", self.id, format_ms(self.ends_ms))
    }
}

impl Silence {
    /// Whether this silence is in force at `now_ms` and every one of its matchers matches
    /// the alert's labels.
    pub fn mutes(&self, a: &Labels, now_ms: i64) -> bool {
        if self.starts_ms > now_ms || self.ends_ms <= now_ms {
            return false;
        }
        let m: std::collections::HashMap<String, String> =
            serde_json::from_str(&self.matchers).unwrap_or_default();
        let value = |k: &str| match k {
            "user" => Some(a.user.as_str()),
            "category" => Some(a.category.as_str()),
            "severity" => Some(a.severity.as_str()),
            "department" => Some(a.department.as_str()),
            _ => None,
        };
        !m.is_empty() && m.iter().all(|(k, v)| value(k) == Some(v.as_str()))
    }
}

/// Silences not ended at `now_ms`, by id.
pub fn silences(conn: &Connection, now_ms: i64) -> rusqlite::Result<Vec<Silence>> {
    let mut st = conn.prepare_cached(
        "SELECT id, matchers, starts_ms, ends_ms, author, reason FROM silences
         WHERE ends_ms > ?1 ORDER BY id",
    )?;
    let rows = st.query_map([now_ms], |r| {
        Ok(Silence {
            id: r.get(0)?,
            matchers: r.get(1)?,
            starts_ms: r.get(2)?,
            ends_ms: r.get(3)?,
            author: r.get(4)?,
            reason: r.get(5)?,
        })
    })?;
    rows.collect()
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

pub(crate) const FINDING_COLUMNS: &str =
    "f.event_id, f.detector, f.time, f.user_id, f.patient_id, f.action,
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

/// What the dashboard counts, read from either store.
pub struct Overview {
    /// Alerts per day (UTC) and category over the last days of data.
    pub per_day: BTreeMap<String, BTreeMap<String, i64>>,
    /// The ten users with the most findings.
    pub top_users: Vec<(String, i64)>,
    pub per_detector: Vec<(String, i64)>,
    pub accesses: i64,
}

/// The dashboard's counts from the single process's store.
pub fn overview(conn: &Connection, by: ChartBy, days: i64) -> Result<Overview, QueryError> {
    Ok(Overview {
        per_day: per_day(conn, by, days)?,
        top_users: top_users(conn, 10)?,
        per_detector: per_detector(conn)?,
        accesses: crate::store::access_count(conn)?,
    })
}

/// Alerts per day (UTC) and category over the last `days` days of data, by `by`'s time.
pub fn per_day(
    conn: &Connection,
    by: ChartBy,
    days: i64,
) -> Result<BTreeMap<String, BTreeMap<String, i64>>, QueryError> {
    // Alerts stored before access times were kept fall back to their storage time.
    let at = match by {
        ChartBy::Stored => "first_ms",
        ChartBy::Access => "coalesce(first_access_ms, first_ms)",
    };
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let last: Option<i64> =
        conn.query_row(&format!("SELECT max({at}) FROM alerts"), [], |r| r.get(0))?;
    let Some(last) = last else {
        return Ok(out);
    };
    let mut st = conn.prepare_cached(&format!(
        "SELECT date({at} / 1000, 'unixepoch'), category, count(*) FROM alerts
         WHERE {at} > ?1 GROUP BY 1, 2"
    ))?;
    let rows = st.query_map([last - days * 86_400_000], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (d, c, n) = row?;
        out.entry(d).or_default().insert(c, n);
    }
    Ok(out)
}

/// The `n` users with the most findings, most first.
pub fn top_users(conn: &Connection, n: u32) -> Result<Vec<(String, i64)>, QueryError> {
    let mut st = conn.prepare_cached(
        "SELECT user_id, count(*) FROM findings GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT ?1",
    )?;
    let rows = st.query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Findings per detector, most first.
pub fn per_detector(conn: &Connection) -> Result<Vec<(String, i64)>, QueryError> {
    let mut st = conn.prepare_cached(
        "SELECT detector, count(*) FROM findings GROUP BY detector ORDER BY 2 DESC",
    )?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
