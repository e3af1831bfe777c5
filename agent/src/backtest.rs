//! `phiwatch policy backtest`: what a draft pack (and draft plugins) would have flagged over
//! the stored access log, beside the pack in force, and what it would have stopped flagging.
//!
//! The stored accesses are read back in time order, a chunk at a time, and each chunk is
//! judged by two pipelines with the same settings and the context as it is now: the pack
//! and plugins in force, and the draft. Both sides see the same reconstructed accesses and
//! start their plugins with empty state at the window's start, so every difference is the
//! draft's doing. Memory stays at one chunk plus the per-day, per-user and per-alert counts,
//! however long the window.

use crate::alert::routing::Grouping;
use crate::context::ContextStore;
use crate::detect::PolicyPack;
use crate::finding::Finding;
use crate::pipeline::{Judged, Pipeline};
use crate::plugin::{Compiled, PluginSet};
use crate::settings::Settings;
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use thiserror::Error;

/// Accesses judged per call to the plugins.
const CHUNK: usize = 1024;

#[derive(Debug, Error)]
pub enum BacktestError {
    #[error("reading the stored access log: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("reading the stored access log: {0}")]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("the store has no stored accesses in the window: the agent stores them as it runs (scan stores them with --store-accesses)")]
    Empty,
    #[error("writing the differences: {0}")]
    Write(#[source] std::io::Error),
}

/// Where the replayed accesses are read: the single process's store or the fleet's database.
pub trait AccessLog {
    /// The accesses with `since_ms <= time_ms < until_ms` in time order, `chunk` at a time,
    /// to `each`; answers how many.
    fn stream(
        &self,
        window: (i64, i64),
        chunk: usize,
        each: &mut dyn FnMut(&mut Vec<crate::event::AccessEvent>),
    ) -> Result<u64, BacktestError>;
}

impl AccessLog for Connection {
    fn stream(
        &self,
        (since_ms, until_ms): (i64, i64),
        chunk: usize,
        each: &mut dyn FnMut(&mut Vec<crate::event::AccessEvent>),
    ) -> Result<u64, BacktestError> {
        Ok(crate::store::stored_accesses(
            self, since_ms, until_ms, chunk, each,
        )?)
    }
}

/// The fleet's access log, read from a blocking thread through `rt`.
pub struct FleetLog<'a> {
    pub rt: &'a tokio::runtime::Handle,
    pub client: &'a tokio_postgres::Client,
}

impl AccessLog for FleetLog<'_> {
    fn stream(
        &self,
        window: (i64, i64),
        chunk: usize,
        each: &mut dyn FnMut(&mut Vec<crate::event::AccessEvent>),
    ) -> Result<u64, BacktestError> {
        let read = crate::fleet::store::stored_accesses(self.client, window, chunk, each);
        Ok(self.rt.block_on(read)?)
    }
}

/// One side of the comparison.
pub struct Side<'a> {
    pub pack: &'a PolicyPack,
    pub plugins: &'a [Arc<Compiled>],
}

/// Added or removed by the draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
}

/// Findings added and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub added: u64,
    pub removed: u64,
}

impl Counts {
    fn add(&mut self, c: Change) {
        match c {
            Change::Added => self.added += 1,
            Change::Removed => self.removed += 1,
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub since_ms: i64,
    pub until_ms: i64,
    pub accesses: u64,
    /// Findings of the pack in force and of the draft over the window.
    pub in_force: u64,
    pub draft: u64,
    pub total: Counts,
    /// Per (UTC day, detector).
    pub per_day: BTreeMap<(String, String), Counts>,
    pub per_user: HashMap<String, Counts>,
    /// Alerts (routing's fold keys, as if none were acknowledged in the window) each side
    /// would have made, and how many of them only the draft or only the pack in force makes.
    pub alerts_in_force: u64,
    pub alerts_draft: u64,
    pub alerts: Counts,
    /// A few explanations per (change, detector).
    pub samples: BTreeMap<(Change, String), Vec<String>>,
    pub plugin_failures: u64,
}

/// Replays the stored accesses of `[since_ms, until_ms)` through both sides; every
/// difference goes to `out` as it is found and into the report.
#[allow(clippy::too_many_arguments)]
pub fn run(
    log: &impl AccessLog,
    ctx: &ContextStore,
    settings: &Settings,
    grouping: &Grouping,
    in_force: Side<'_>,
    draft: Side<'_>,
    (since_ms, until_ms): (i64, i64),
    samples: usize,
    out: &mut dyn FnMut(Change, &Finding) -> std::io::Result<()>,
) -> Result<Report, BacktestError> {
    let (mut old, mut new) = (pipeline(settings, &in_force)?, pipeline(settings, &draft)?);
    let (mut a, mut b) = (Judged::default(), Judged::default());
    let mut report = Report {
        since_ms,
        until_ms,
        ..Report::default()
    };
    let (mut keys_old, mut keys_new) = (HashSet::new(), HashSet::new());
    let mut failed: Option<std::io::Error> = None;
    report.accesses = log.stream((since_ms, until_ms), CHUNK, &mut |chunk| {
        if failed.is_some() {
            return;
        }
        for (p, j) in [(&mut old, &mut a), (&mut new, &mut b)] {
            j.clear();
            for ev in chunk.iter() {
                p.access(ctx, ev.clone(), j);
            }
            p.finish(ctx, j);
        }
        report.in_force += a.findings.len() as u64;
        report.draft += b.findings.len() as u64;
        report.plugin_failures += (a.plugin_failures.len() + b.plugin_failures.len()) as u64;
        keys_old.extend(
            a.findings
                .iter()
                .map(|f| crate::alert::group::fold_key(f, grouping)),
        );
        keys_new.extend(
            b.findings
                .iter()
                .map(|f| crate::alert::group::fold_key(f, grouping)),
        );
        for (change, f) in differences(&a.findings, &b.findings) {
            report.note(change, f, samples);
            if let Err(e) = out(change, f) {
                failed = Some(e);
                return;
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(BacktestError::Write(e));
    }
    if report.accesses == 0 {
        return Err(BacktestError::Empty);
    }
    report.alerts_in_force = keys_old.len() as u64;
    report.alerts_draft = keys_new.len() as u64;
    report.alerts = Counts {
        added: keys_new.difference(&keys_old).count() as u64,
        removed: keys_old.difference(&keys_new).count() as u64,
    };
    Ok(report)
}

/// One side's pipeline, its plugins starting with empty state.
fn pipeline<'a>(settings: &'a Settings, s: &Side<'a>) -> Result<Pipeline<'a>, BacktestError> {
    let plugins = PluginSet::new(s.plugins, None, Default::default())?;
    Ok(Pipeline::new(settings, s.pack).with_plugins(plugins))
}

/// The findings only one side has, matched by access and detector (as a multiset: a
/// detector that flags one access twice must do so twice on the other side too).
fn differences<'f>(old: &'f [Finding], new: &'f [Finding]) -> Vec<(Change, &'f Finding)> {
    let mut balance: HashMap<(&str, &str), i64> = HashMap::new();
    for f in old {
        *balance.entry((&f.event_id, &f.detector)).or_default() -= 1;
    }
    for f in new {
        *balance.entry((&f.event_id, &f.detector)).or_default() += 1;
    }
    let mut out = Vec::new();
    for (change, side, sign) in [(Change::Removed, old, -1), (Change::Added, new, 1)] {
        for f in side {
            let b = balance.get_mut(&(f.event_id.as_str(), f.detector.as_str()));
            if let Some(b) = b.filter(|b| **b * sign > 0) {
                *b -= sign;
                out.push((change, f));
            }
        }
    }
    out
}

impl Report {
    fn note(&mut self, change: Change, f: &Finding, samples: usize) {
        self.total.add(change);
        let day = f.time.get(..10).unwrap_or("").to_owned();
        self.per_day
            .entry((day, f.detector.clone()))
            .or_default()
            .add(change);
        self.per_user.entry(f.user.clone()).or_default().add(change);
        let s = self
            .samples
            .entry((change, f.detector.clone()))
            .or_default();
        if s.len() < samples {
            s.push(f.explanation.clone());
        }
    }

    /// The report as text: totals, per day and detector, top users, samples.
    pub fn render(&self, top: usize) -> String {
        use std::fmt::Write as _;
        let day = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default()
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "backtest {} .. {} UTC: {} stored accesses replayed",
            day(self.since_ms),
            day(self.until_ms),
            self.accesses
        );
        let _ = writeln!(
            s,
            "  in force: {} findings, {} alerts; draft: {} findings, {} alerts",
            self.in_force, self.alerts_in_force, self.draft, self.alerts_draft
        );
        let _ = writeln!(
            s,
            "  the draft adds {} findings ({} new alerts) and removes {} ({} alerts no longer made)",
            self.total.added, self.alerts.added, self.total.removed, self.alerts.removed
        );
        if self.plugin_failures > 0 {
            let _ = writeln!(s, "  plugin calls failed: {}", self.plugin_failures);
        }
        if self.per_day.is_empty() {
            let _ = writeln!(s, "no differences");
            return s;
        }
        let _ = writeln!(
            s,
            "\n{:<12} {:<40} {:>8} {:>8}",
            "day", "detector", "added", "removed"
        );
        for ((d, det), c) in &self.per_day {
            let _ = writeln!(s, "{d:<12} {det:<40} {:>8} {:>8}", c.added, c.removed);
        }
        for (change, label) in [(Change::Added, "added"), (Change::Removed, "removed")] {
            let mut users: Vec<(&String, u64)> = self
                .per_user
                .iter()
                .map(|(u, c)| {
                    (
                        u,
                        if change == Change::Added {
                            c.added
                        } else {
                            c.removed
                        },
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            if users.is_empty() {
                continue;
            }
            users.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
            let _ = writeln!(s, "\ntop users, findings {label}:");
            for (u, n) in users.into_iter().take(top) {
                let _ = writeln!(s, "  {u:<32} {n:>8}");
            }
        }
        let _ = writeln!(s, "\nsamples:");
        for ((change, det), list) in &self.samples {
            let sign = if *change == Change::Added { '+' } else { '-' };
            for e in list {
                let _ = writeln!(s, "  {sign} {det}: {e}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(event: &str, detector: &str) -> Finding {
        Finding {
            event_id: event.into(),
            time: "2026-03-10T08:00:00Z".into(),
            user: "u1".into(),
            department: String::new(),
            patient: "p1".into(),
            action: "view".into(),
            category: "c".into(),
            severity: crate::finding::Severity::High,
            detector: detector.into(),
            explanation: format!("{event} by {detector}"),
            hipaa: String::new(),
        }
    }

    #[test]
    fn differences_match_by_access_and_detector_as_a_multiset() {
        let old = [f("e1", "a"), f("e1", "b"), f("e2", "a"), f("e2", "a")];
        let new = [f("e1", "a"), f("e3", "a"), f("e2", "a")];
        let d: Vec<(Change, String)> = differences(&old, &new)
            .into_iter()
            .map(|(c, f)| (c, f.explanation.clone()))
            .collect();
        assert_eq!(
            d,
            [
                (Change::Removed, "e1 by b".to_owned()),
                (Change::Removed, "e2 by a".to_owned()),
                (Change::Added, "e3 by a".to_owned()),
            ]
        );
        assert!(differences(&old, &old).is_empty());
    }
}
