//! What the console and the API read, as plain structures: both render the same answers, one
//! as HTML, one as JSON. Alerts and cases are read through their stages' read models; the
//! dashboard here only puts their summaries side by side.

pub use crate::alert::query::{
    alert, alerts, findings, AlertDetail, AlertFilter, AlertPage, AlertRow, ChartBy, FindingFilter,
    FindingRow,
};
use crate::case::book::CaseBook;
use crate::case::clock::Jurisdictions;
pub use crate::case::query::{case, cases, CaseDetail, CaseRow, DeadlineRow, LogRow, Task};
pub use crate::case::timeline::{case_timeline, timeline, TimelineFilter, TimelineRow};
use crate::store::QueryError;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// `?by=stored|access` on the dashboard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardQuery {
    #[serde(default)]
    pub by: ChartBy,
}

pub fn dashboard(
    cases: &CaseBook,
    j: &Jurisdictions,
    today: NaiveDate,
    by: ChartBy,
) -> Result<Dashboard, QueryError> {
    let o = match cases {
        CaseBook::Sqlite(c) => crate::alert::query::overview(c.conn(), by, 30)?,
        CaseBook::Fleet { rt, client, .. } => rt
            .block_on(crate::alert::fleet::overview(client, by, 30))
            .map_err(|e| QueryError::Database(e.to_string()))?,
    };
    let accesses = o.accesses;
    let per_policy = o
        .per_detector
        .into_iter()
        .map(|(detector, n)| PolicyRate {
            detector,
            findings: n,
            per_10k: if accesses > 0 {
                n as f64 * 10_000.0 / accesses as f64
            } else {
                0.0
            },
        })
        .collect();
    let mut due_this_week = Vec::new();
    for (id, title, deadlines) in cases.unsent_deadlines(j, today)? {
        for d in deadlines.into_iter().filter(|d| d.days_left <= 7) {
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
        alerts_by_day: o
            .per_day
            .into_iter()
            .map(|(day, by_category)| DayCount { day, by_category })
            .collect(),
        by,
        top_users: o.top_users,
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
        let cases = CaseBook::Sqlite(crate::case::Cases::open(&db).unwrap());
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
