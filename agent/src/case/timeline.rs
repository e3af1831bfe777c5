//! Accesses around a case or a person, in time order: the evidence officers read in a case
//! and the timeline they search.

use crate::store::{nonempty, QueryError};
use crate::time::format_ms;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    pub time: String,
    pub user: String,
    pub patient: String,
    pub action: String,
    pub event_id: String,
    pub workstation: String,
    pub break_glass: bool,
    /// Detectors that flagged this access.
    pub flagged_by: Vec<String>,
}

fn timeline_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TimelineRow> {
    Ok(TimelineRow {
        time: format_ms(r.get(0)?),
        user: r.get(1)?,
        patient: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        action: r.get(3)?,
        event_id: r.get(4)?,
        workstation: r.get(5)?,
        break_glass: r.get(6)?,
        flagged_by: r
            .get::<_, Option<String>>(7)?
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

const TIMELINE_COLUMNS: &str = "x.time_ms, x.user_id, x.patient_id, x.action, x.event_id,
    x.workstation, x.break_glass,
    (SELECT group_concat(f.detector, ',') FROM findings f WHERE f.event_id = x.event_id)";

/// The evidence of a case: every stored access by its users to its patients, in time order.
pub fn case_timeline(conn: &Connection, case_id: i64) -> rusqlite::Result<Vec<TimelineRow>> {
    let mut st = conn.prepare_cached(&format!(
        "WITH involved AS (
           SELECT DISTINCT a.user_id, af.patient_id FROM case_alerts ca
           JOIN alerts a ON a.id = ca.alert_id
           JOIN alert_findings af ON af.alert_id = a.id WHERE ca.case_id = ?1)
         SELECT {TIMELINE_COLUMNS} FROM accesses x
         WHERE x.user_id IN (SELECT user_id FROM involved)
           AND x.patient_id IN (SELECT patient_id FROM involved)
         ORDER BY x.time_ms, x.event_id LIMIT 5000"
    ))?;
    let rows = st.query_map([case_id], timeline_row)?;
    rows.collect()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineFilter {
    pub patient: Option<String>,
    pub user: Option<String>,
    /// RFC 3339 bounds.
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<u32>,
}

impl TimelineFilter {
    /// The time bounds (milliseconds), once the filter names a patient or a user (at least
    /// one is required: a whole-hospital timeline is not a view anyone needs).
    pub fn bounds(&self) -> Result<(i64, i64), QueryError> {
        if nonempty(&self.patient).is_none() && nonempty(&self.user).is_none() {
            return Err(QueryError::Invalid("name a patient or a user".into()));
        }
        let bound = |s: &Option<String>, default: i64| -> Result<i64, QueryError> {
            match nonempty(s) {
                None => Ok(default),
                Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| {
                        QueryError::Invalid(format!("time {t:?}: {e} (expected RFC 3339)"))
                    }),
            }
        };
        Ok((bound(&self.from, i64::MIN)?, bound(&self.to, i64::MAX)?))
    }

    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(1000).clamp(1, 5000)
    }
}

/// Accesses to a patient or by a user.
pub fn timeline(conn: &Connection, f: &TimelineFilter) -> Result<Vec<TimelineRow>, QueryError> {
    let (from, to) = f.bounds()?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT {TIMELINE_COLUMNS} FROM accesses x
             WHERE (?1 IS NULL OR x.patient_id = ?1) AND (?2 IS NULL OR x.user_id = ?2)
               AND x.time_ms >= ?3 AND x.time_ms <= ?4
             ORDER BY x.time_ms, x.event_id LIMIT ?5"
    ))?;
    let rows = st.query_map(
        params![nonempty(&f.patient), nonempty(&f.user), from, to, f.limit()],
        timeline_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
