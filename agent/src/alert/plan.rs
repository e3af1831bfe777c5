//! One batch's findings grouped into alerts in memory, for a store where each statement is a
//! network round trip (fleet mode's PostgreSQL): what the store holds is read once per batch
//! ([`Known`]), the findings are folded in order exactly as `group::apply` folds them one
//! statement at a time, and the result ([`Plan`]) is written with one statement per table.
//! The decisions themselves (keys, severity, due times, receivers, idempotency keys) are
//! `group`'s functions, so the two stores cannot drift apart.

use super::group::{self, Applied};
use super::routing::Routing;
use crate::finding::{Finding, Severity};
use std::collections::{HashMap, HashSet};

/// An alert a finding can join: open or acknowledged (new evidence reopens it).
#[derive(Debug, Clone)]
pub struct OpenAlert {
    pub id: i64,
    pub severity: Severity,
    pub last_sent_ms: i64,
    pub notifications: i64,
    pub origin: String,
}

/// What the store holds that grouping a batch reads.
#[derive(Debug, Default)]
pub struct Known {
    /// The newest alert not closed, per fold key the batch names.
    pub open: HashMap<String, OpenAlert>,
    /// (alert, patient) pairs among those alerts and the batch's patients.
    pub patients: HashSet<(i64, String)>,
    /// (alert, receiver) pairs with a notification waiting.
    pub waiting: HashSet<(i64, String)>,
}

/// An alert stored before this batch, or the nth opened by it (its id comes with its insert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertRef {
    Stored(i64),
    New(usize),
}

/// An alert as the batch leaves it. For a stored alert the counts are what the batch adds.
#[derive(Debug, Clone)]
pub struct Slot<'f> {
    pub alert: AlertRef,
    /// The finding that opened a new alert (its labels, and `group_key`).
    pub opener: &'f Finding,
    pub group_key: String,
    pub fold_key: String,
    pub severity: Severity,
    pub first_access_ms: Option<i64>,
    pub last_access_ms: Option<i64>,
    pub findings: i64,
    pub incidents: i64,
    pub notifications: i64,
    pub origin: String,
    last_sent_ms: i64,
    stored_notifications: i64,
}

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub alert: AlertRef,
    pub key: String,
    pub receiver: String,
    pub due_ms: i64,
}

/// What the batch changes: alerts (new ones first, by `AlertRef::New` index), their members,
/// and the notifications queued.
#[derive(Debug, Default)]
pub struct Plan<'f> {
    pub slots: Vec<Slot<'f>>,
    /// (alert, finding) memberships, in the batch's order.
    pub members: Vec<(AlertRef, &'f Finding)>,
    pub notices: Vec<Notice>,
    pub applied: Applied,
}

impl Plan<'_> {
    /// The alerts the batch opens, in the order their `AlertRef::New` indices count.
    pub fn opened(&self) -> impl Iterator<Item = &Slot<'_>> {
        self.slots
            .iter()
            .filter(|s| matches!(s.alert, AlertRef::New(_)))
    }

    /// The stored alerts the batch changes.
    pub fn changed(&self) -> impl Iterator<Item = (i64, &Slot<'_>)> {
        self.slots.iter().filter_map(|s| match s.alert {
            AlertRef::Stored(id) => Some((id, s)),
            AlertRef::New(_) => None,
        })
    }
}

/// Folds `findings` (new to the store, in the batch's order) into alerts.
pub fn plan<'f>(
    findings: &[&'f Finding],
    mut known: Known,
    routing: &Routing,
    tz: chrono_tz::Tz,
    now_ms: i64,
) -> Plan<'f> {
    let g = &routing.grouping;
    let mut plan = Plan::default();
    let mut by_fold: HashMap<String, usize> = HashMap::new();
    let mut patients: HashSet<(AlertRef, String)> = known
        .patients
        .drain()
        .map(|(a, p)| (AlertRef::Stored(a), p))
        .collect();
    let mut waiting: HashSet<(AlertRef, String)> = known
        .waiting
        .drain()
        .map(|(a, r)| (AlertRef::Stored(a), r))
        .collect();
    let mut opened = 0;
    for f in findings {
        let access_ms = crate::time::parse_fhir_time(&f.time);
        let fold_key = group::fold_key(f, g);
        let ix = match by_fold.get(&fold_key) {
            Some(&ix) => {
                plan.applied.updated += 1;
                ix
            }
            None => {
                let slot = match known.open.remove(&fold_key) {
                    Some(a) => {
                        plan.applied.updated += 1;
                        Slot {
                            alert: AlertRef::Stored(a.id),
                            opener: f,
                            group_key: String::new(),
                            fold_key: fold_key.clone(),
                            severity: a.severity,
                            first_access_ms: None,
                            last_access_ms: None,
                            findings: 0,
                            incidents: 0,
                            notifications: 0,
                            origin: a.origin,
                            last_sent_ms: a.last_sent_ms,
                            stored_notifications: a.notifications,
                        }
                    }
                    None => {
                        plan.applied.opened += 1;
                        opened += 1;
                        Slot {
                            alert: AlertRef::New(opened - 1),
                            opener: f,
                            group_key: group::group_key(f, g),
                            fold_key: fold_key.clone(),
                            severity: f.severity,
                            first_access_ms: access_ms,
                            last_access_ms: access_ms,
                            findings: 0,
                            incidents: 0,
                            notifications: 0,
                            origin: group::origin(f),
                            last_sent_ms: 0,
                            stored_notifications: 0,
                        }
                    }
                };
                plan.slots.push(slot);
                by_fold.insert(fold_key, plan.slots.len() - 1);
                plan.slots.len() - 1
            }
        };
        let slot = &mut plan.slots[ix];
        // As `group::apply`: a new alert (never notified, `last_sent_ms` 0) waits
        // `group_wait`; a notified one follows its last notification.
        let due = group::first_due(g, Some(slot.last_sent_ms), now_ms);
        slot.severity = slot.severity.max(f.severity);
        slot.first_access_ms = min_some(slot.first_access_ms, access_ms);
        slot.last_access_ms = max_some(slot.last_access_ms, access_ms);
        let alert = slot.alert;
        slot.findings += 1;
        if patients.insert((alert, f.patient.clone())) {
            slot.incidents += 1;
        }
        plan.members.push((alert, f));
        let labels = (f.category.as_str(), slot.severity, f.department.as_str());
        for r in group::receivers(routing, labels, tz, now_ms) {
            if !waiting.insert((alert, r.clone())) {
                continue;
            }
            slot.notifications += 1;
            let seq = slot.stored_notifications + slot.notifications;
            let id = match alert {
                AlertRef::Stored(id) => id,
                AlertRef::New(_) => 0,
            };
            let key = group::notification_key(Some(slot.origin.clone()), id, seq, &r);
            plan.notices.push(Notice {
                alert,
                key,
                receiver: r,
                due_ms: due,
            });
            plan.applied.queued += 1;
        }
    }
    plan
}

/// SQL's `least`, which ignores NULL.
fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn finding(event: &str, user: &str, patient: &str, sev: Severity, time: &str) -> Finding {
        Finding {
            event_id: event.into(),
            time: time.into(),
            user: user.into(),
            department: "cardiology".into(),
            patient: patient.into(),
            action: "view".into(),
            category: "vip".into(),
            severity: sev,
            detector: "vip".into(),
            explanation: "x".into(),
            hipaa: "y".into(),
        }
    }

    const ROUTING: &str = "[grouping]\ngroup_wait = \"1s\"\ngroup_interval = \"1m\"\n[[receiver]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"http://127.0.0.1:9/\"\n[[receiver]]\nkind = \"webhook\"\nname = \"crit\"\nurl = \"http://127.0.0.1:9/\"\n[[route]]\nreceivers = [\"siem\"]\ncontinue = true\n[[route]]\nmin_severity = \"critical\"\nreceivers = [\"crit\"]\n";

    /// The planner and `group::apply` (statement by statement on SQLite) fold the same
    /// batches into the same alerts, counts, keys and due times, across batches whose
    /// alerts were notified and acknowledged in between.
    #[test]
    fn planning_a_batch_matches_grouping_it_statement_by_statement() {
        let routing = Routing::parse(ROUTING).unwrap_or_else(|e| panic!("{e}"));
        let t = |m: u32| format!("2026-03-10T14:{m:02}:00.000Z");
        let batches = [
            vec![
                finding("e1", "dr-a", "pt-1", Severity::High, &t(5)),
                finding("e2", "dr-a", "pt-2", Severity::Medium, &t(1)),
                finding("e3", "dr-b", "pt-1", Severity::High, &t(2)),
                finding("e4", "dr-a", "pt-2", Severity::Critical, &t(9)),
            ],
            vec![
                finding("e5", "dr-a", "pt-3", Severity::Low, &t(20)),
                finding("e6", "dr-c", "pt-9", Severity::High, &t(21)),
                finding("e7", "dr-b", "pt-1", Severity::High, &t(0)),
            ],
        ];
        let d = tempfile::tempdir().unwrap();
        let mut store = Store::open(&d.path().join("p.db")).unwrap();
        let mut known = Known::default();
        let mut ids: HashMap<usize, i64> = HashMap::new();
        let mut sqlite_keys = Vec::new();
        let mut plan_keys = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            let now = 1_000_000 * (b as i64 + 1);
            let fresh: Vec<&Finding> = batch.iter().collect();
            let plan = plan(
                &fresh,
                std::mem::take(&mut known),
                &routing,
                chrono_tz::UTC,
                now,
            );
            store
                .insert_batch_then(&[], batch, |tx, fresh| {
                    group::apply(tx, fresh, &routing, chrono_tz::UTC, now).map(|_| ())
                })
                .unwrap();
            let conn = rusqlite::Connection::open(d.path().join("p.db")).unwrap();
            // New alerts get the store's next ids in the order the plan opened them.
            let mut next: i64 = conn
                .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
                .unwrap();
            next -= plan.opened().count() as i64;
            for s in plan.opened() {
                next += 1;
                if let AlertRef::New(i) = s.alert {
                    ids.insert(b * 100 + i, next);
                }
            }
            let id_of = |a: AlertRef| match a {
                AlertRef::Stored(id) => id,
                AlertRef::New(i) => ids[&(b * 100 + i)],
            };
            for s in &plan.slots {
                let (sev, findings, incidents, fold): (String, i64, i64, String) = conn
                    .query_row(
                        "SELECT severity, findings, incidents, fold_key FROM alerts WHERE id = ?1",
                        [id_of(s.alert)],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .unwrap();
                assert_eq!(
                    (sev.as_str(), fold.as_str()),
                    (s.severity.as_str(), s.fold_key.as_str())
                );
                if let AlertRef::New(_) = s.alert {
                    assert_eq!((findings, incidents), (s.findings, s.incidents));
                }
            }
            for n in &plan.notices {
                plan_keys.push((id_of(n.alert), n.key.clone(), n.receiver.clone(), n.due_ms));
            }
            let mut st = conn
                .prepare("SELECT alert_id, idempotency_key, receiver, due_ms FROM outbox WHERE created_ms = ?1 ORDER BY id")
                .unwrap();
            sqlite_keys.extend(
                st.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .unwrap()
                    .map(Result::unwrap),
            );
            if b + 1 == batches.len() {
                break;
            }
            // Between the batches: everything sent, the first alert acknowledged.
            conn.execute_batch(
                "UPDATE outbox SET state = 'sent'; UPDATE alerts SET last_sent_ms = 1500000;
                 UPDATE alerts SET status = 'acknowledged' WHERE id = 1;",
            )
            .unwrap();
            known = Known::default();
            let mut st = conn
                .prepare("SELECT fold_key, id, severity, last_sent_ms, notifications, origin FROM alerts WHERE status != 'closed' ORDER BY id")
                .unwrap();
            for row in st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        OpenAlert {
                            id: r.get(1)?,
                            severity: r.get::<_, String>(2)?.parse().unwrap(),
                            last_sent_ms: r.get(3)?,
                            notifications: r.get(4)?,
                            origin: r.get(5)?,
                        },
                    ))
                })
                .unwrap()
            {
                let (k, a) = row.unwrap();
                known.open.insert(k, a);
            }
            let mut st = conn
                .prepare("SELECT alert_id, patient_id FROM alert_findings")
                .unwrap();
            known.patients = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        }
        assert!(plan_keys.len() >= 5, "{plan_keys:?}");
        assert_eq!(plan_keys, sqlite_keys);
        // The acknowledged alert was joined again and reopened by e5 (statement by statement).
        let status: String = rusqlite::Connection::open(d.path().join("p.db"))
            .unwrap()
            .query_row("SELECT status FROM alerts WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(status, "open");
    }
}
