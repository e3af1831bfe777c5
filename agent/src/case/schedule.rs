//! A case's clocks, and the reminders they put in the outbox.
//!
//! The clocks do not wait for the breach determination: HIPAA's 60 days (45 CFR 164.404(b))
//! and state clocks such as California's 15 business days run from discovery. So from the
//! moment a case has a discovery date, every clock the facts known so far make applicable is
//! computed; until a breach is determined and the residents are recorded it is *provisional*
//! (shown, reminded, marked so). A determination that there was no breach (or an exclusion)
//! stops them. Clocks counted from the determination (Texas) start, provisionally, at
//! discovery: the earliest they could fall.
//!
//! Reminders are keyed by case, clock, due date, lead time and receiver: recomputing after
//! any change of facts adds the reminders of new or moved clocks, cancels the pending ones
//! of clocks that no longer apply or moved, and never queues one twice.

use super::clock::{self, Breach, Jurisdictions};
use super::response::{Reminders, Response};
use crate::outbox;
use chrono::NaiveDate;
use rusqlite::Transaction;
use serde::Serialize;
use std::collections::BTreeSet;

/// The deadline rules and reminder settings cases are kept to.
#[derive(Debug, Clone)]
pub struct Plan {
    pub jurisdictions: Jurisdictions,
    pub response: Response,
}

/// One notification deadline of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clock {
    /// Stable id of the clock (`individuals`, `hhs`, `rule-...`).
    pub key: String,
    pub notify: String,
    pub due: NaiveDate,
    /// The provision and the facts that make it apply.
    pub basis: String,
    /// True until a breach is determined and the residents are recorded.
    pub provisional: bool,
    /// Why the clock applies, or might.
    pub why: String,
}

/// All clocks of a case, earliest first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Clocks {
    pub clocks: Vec<Clock>,
    pub provisional: bool,
    /// Why there are no clocks: no discovery date, or determined not to be a breach.
    pub none_because: Option<String>,
}

impl Clocks {
    /// The soonest deadline.
    pub fn next(&self) -> Option<&Clock> {
        self.clocks.iter().min_by_key(|c| c.due)
    }
}

/// The clocks of a case from its stored facts, its determination (`breach`, `not_breach`,
/// `excluded` or none) and how many patients its alerts involve.
pub fn clocks(
    mut b: Breach,
    determination: Option<&str>,
    patients: usize,
    j: &Jurisdictions,
) -> Clocks {
    if let Some(d) = determination.filter(|d| *d != "breach") {
        return Clocks {
            none_because: Some(format!("determined {d}: no notification clock runs")),
            ..Clocks::default()
        };
    }
    if b.discovered.is_none() {
        return Clocks {
            none_because: Some("the discovery date is not set".into()),
            ..Clocks::default()
        };
    }
    let residents_known = !b.residents.is_empty();
    if !residents_known {
        // Residence unknown: every involved patient counts, under "??".
        b.residents.insert("??".into(), patients.max(1) as u32);
    }
    let determined = determination == Some("breach");
    let provisional = !determined || !residents_known;
    let why = if provisional {
        let mut gaps = Vec::new();
        if !determined {
            gaps.push("no breach determination yet; the clock runs from discovery all the same");
        }
        if !residents_known {
            gaps.push("affected residents not recorded; the patients involved are counted");
        }
        format!("might apply: {}", gaps.join("; "))
    } else {
        "applies: breach determined".to_owned()
    };
    let clocks = match clock::deadlines(&b, j) {
        Ok(ds) => ds
            .into_iter()
            .map(|d| Clock {
                key: d.key,
                notify: d.notify,
                due: d.due,
                basis: d.basis,
                provisional,
                why: why.clone(),
            })
            .collect(),
        Err(e) => {
            return Clocks {
                none_because: Some(e.to_string()),
                ..Clocks::default()
            }
        }
    };
    Clocks {
        clocks,
        provisional,
        none_because: None,
    }
}

/// An outbox row for a reminder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRow {
    pub key: String,
    pub receiver: String,
    pub due_ms: i64,
    pub subject: String,
    pub body: String,
}

/// Reminders `days_before` each clock (those still ahead of `today`) and an escalation the
/// day after it.
pub fn reminder_rows(
    case_id: i64,
    title: &str,
    clocks: &Clocks,
    r: &Reminders,
    today: NaiveDate,
) -> Vec<ReminderRow> {
    let midnight = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for c in &clocks.clocks {
        let (mark, note) = if c.provisional {
            (
                ", provisional",
                "\nProvisional: this clock runs from discovery; it stops if the case is determined not to be a breach.\n",
            )
        } else {
            ("", "")
        };
        let stem = format!("case-{case_id}-{}-{}", c.key, c.due);
        for days in &r.days_before {
            let on = c.due - chrono::Duration::days(i64::from(*days));
            if on < today {
                continue;
            }
            for rec in &r.receivers {
                out.push(ReminderRow {
                    key: format!("{stem}-{days}d-{rec}"),
                    receiver: rec.clone(),
                    due_ms: midnight(on),
                    subject: format!(
                        "[phiwatch] case #{case_id}: notify {} by {} ({days} days left{mark})",
                        c.notify, c.due
                    ),
                    body: format!(
                        "Case #{case_id} ({title}).\nDeadline {}: notify {}.\nBasis: {}\n{note}",
                        c.due, c.notify, c.basis
                    ),
                });
            }
        }
        let after = c.due + chrono::Duration::days(1);
        for rec in &r.escalate_to {
            out.push(ReminderRow {
                key: format!("{stem}-overdue-{rec}"),
                receiver: rec.clone(),
                due_ms: midnight(after),
                subject: format!(
                    "[phiwatch] OVERDUE case #{case_id}: notify {} was due {}{}",
                    c.notify,
                    c.due,
                    if c.provisional { " (provisional)" } else { "" }
                ),
                body: format!(
                    "Case #{case_id} ({title}) is still open and its deadline has passed.\nDeadline {}: notify {}.\nBasis: {}\n{note}",
                    c.due, c.notify, c.basis
                ),
            });
        }
    }
    out
}

/// What a requeue did to the case's reminders.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requeued {
    pub added: usize,
    pub cancelled: usize,
}

/// Brings the case's pending reminders in line with `rows` inside the transaction that
/// changed the case: rows not yet in the outbox are added (a cancelled one comes back),
/// pending rows no longer wanted are cancelled, and rows already sent stay as they are.
pub fn requeue(
    tx: &Transaction<'_>,
    case_id: i64,
    rows: &[ReminderRow],
    now_ms: i64,
) -> rusqlite::Result<Requeued> {
    let mut done = Requeued::default();
    let wanted: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    for (id, key) in outbox::case_pending(tx, case_id)? {
        if !wanted.contains(key.as_str()) {
            let why = "the deadline moved or no longer applies";
            outbox::settle(tx, id, "cancelled", Some(why), 0)?;
            done.cancelled += 1;
        }
    }
    for r in rows {
        let row = outbox::Reminder {
            key: &r.key,
            receiver: &r.receiver,
            due_ms: r.due_ms,
            subject: &r.subject,
            body: &r.body,
        };
        match outbox::state_of(tx, &r.key)?.as_deref() {
            None => {
                outbox::queue_reminder(tx, case_id, &row, now_ms)?;
                done.added += 1;
            }
            Some("cancelled") => {
                outbox::revive(tx, &row)?;
                done.added += 1;
            }
            // Not sent yet: it carries what is known now (firm rather than provisional).
            Some("pending") => outbox::refresh(tx, &row)?,
            Some(_) => {}
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn plan() -> Plan {
        let mut response = Response::parse(super::super::response::EMBEDDED).unwrap();
        response.reminders.receivers = vec!["officer".into()];
        response.reminders.escalate_to = vec!["ciso".into()];
        Plan {
            jurisdictions: Jurisdictions::parse(Jurisdictions::EMBEDDED).unwrap(),
            response,
        }
    }

    /// Discovered on the Tuesday before Thanksgiving 2026, in a California-licensed facility:
    /// CDPH within 15 business days, Thanksgiving and the day after not counted.
    fn california(residents: &[(&str, u32)]) -> Breach {
        Breach {
            discovered: Some(d("2026-11-24")),
            residents: residents.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            licensed_in: vec!["CA".into()],
            ..Breach::default()
        }
    }

    #[test]
    fn clocks_run_from_discovery_before_any_determination() {
        let p = plan();
        let c = clocks(california(&[("CA", 1)]), None, 1, &p.jurisdictions);
        assert!(c.provisional);
        let cdph = c
            .clocks
            .iter()
            .find(|x| x.notify.contains("California Department of Public Health"))
            .unwrap();
        // Nov 25, (26 and 27 off), Nov 30, Dec 1-4, 7-11, 14-17: the 15th is Dec 17.
        assert_eq!(cdph.due, d("2026-12-17"));
        assert!(cdph.provisional && cdph.why.starts_with("might apply"));
        assert_eq!(c.next().unwrap().due, d("2026-12-17"));
        // Determined a breach with residents recorded: the same clock, firm.
        let firm = clocks(
            california(&[("CA", 1)]),
            Some("breach"),
            1,
            &p.jurisdictions,
        );
        assert!(!firm.provisional);
        assert!(firm.clocks.iter().any(|x| x.due == d("2026-12-17")));
        // Not a breach: no clock.
        let none = clocks(
            california(&[("CA", 1)]),
            Some("not_breach"),
            1,
            &p.jurisdictions,
        );
        assert!(none.clocks.is_empty() && none.none_because.is_some());
    }

    #[test]
    fn reminders_before_the_determination_are_marked_provisional() {
        let p = plan();
        let c = clocks(california(&[("CA", 1)]), None, 1, &p.jurisdictions);
        let rows = reminder_rows(7, "VIP chart", &c, &p.response.reminders, d("2026-11-24"));
        let cdph: Vec<&ReminderRow> = rows
            .iter()
            .filter(|r| r.subject.contains("California Department"))
            .collect();
        let days: Vec<NaiveDate> = cdph
            .iter()
            .map(|r| {
                chrono::DateTime::from_timestamp_millis(r.due_ms)
                    .unwrap()
                    .date_naive()
            })
            .collect();
        // 30 days before (Nov 17) has passed; 14, 7 and 2 days before, and the day after.
        assert_eq!(
            days,
            [
                d("2026-12-03"),
                d("2026-12-10"),
                d("2026-12-15"),
                d("2026-12-18")
            ]
        );
        assert!(cdph.iter().all(|r| r.subject.contains("provisional")));
        assert!(cdph[0].body.contains("Provisional"));
    }

    fn store() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        crate::store::Store::open(&p).unwrap();
        let c = rusqlite::Connection::open(&p).unwrap();
        (dir, c)
    }

    fn pending(c: &rusqlite::Connection) -> Vec<String> {
        c.prepare("SELECT idempotency_key FROM outbox WHERE state = 'pending' ORDER BY 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn apply(c: &mut rusqlite::Connection, b: Breach, determination: Option<&str>) -> Requeued {
        let p = plan();
        let clocks = clocks(b, determination, 1, &p.jurisdictions);
        let rows = reminder_rows(1, "t", &clocks, &p.response.reminders, d("2026-11-24"));
        let tx = c.transaction().unwrap();
        let r = requeue(&tx, 1, &rows, 0).unwrap();
        tx.commit().unwrap();
        r
    }

    #[test]
    fn changed_facts_requeue_without_duplicates_and_not_a_breach_cancels() {
        let (_d, mut c) = store();
        let first = apply(&mut c, california(&[("CA", 499)]), None);
        assert!(first.added > 0);
        let before = pending(&c);
        assert!(before.iter().any(|k| k.contains("hhs-annual-2026")));
        assert!(!before.iter().any(|k| k.contains("-hhs-2")));
        // The same facts again: nothing new.
        assert_eq!(
            apply(&mut c, california(&[("CA", 499)]), None),
            Requeued::default()
        );
        // 500 affected: HHS with the individual notices, once; the annual log's go.
        let more = apply(&mut c, california(&[("CA", 500)]), None);
        let after = pending(&c);
        let hhs: Vec<&String> = after.iter().filter(|k| k.contains("-hhs-2")).collect();
        assert_eq!(
            hhs.len(),
            4 + 1,
            "30, 14, 7, 2 days before and overdue: {hhs:?}"
        );
        assert!(!after.iter().any(|k| k.contains("hhs-annual")));
        assert!(more.added >= 4 && more.cancelled >= 1, "{more:?}");
        assert_eq!(
            apply(&mut c, california(&[("CA", 500)]), None),
            Requeued::default(),
            "applied twice, queued once"
        );
        // Over 500 residents of one state: the media clock joins, once.
        apply(&mut c, california(&[("CA", 501)]), None);
        apply(&mut c, california(&[("CA", 501)]), None);
        let media = pending(&c)
            .into_iter()
            .filter(|k| k.contains("media-CA"))
            .count();
        assert_eq!(media, 5);
        // Determined not a breach: every pending reminder is cancelled.
        let stop = apply(&mut c, california(&[("CA", 501)]), Some("not_breach"));
        assert!(pending(&c).is_empty());
        assert!(stop.cancelled > 0);
        // Reopened as a breach: they come back, still once each.
        apply(&mut c, california(&[("CA", 501)]), Some("breach"));
        let total: i64 = c
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        let distinct: i64 = c
            .query_row(
                "SELECT count(DISTINCT idempotency_key) FROM outbox",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(total, distinct);
    }
}
