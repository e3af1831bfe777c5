//! The noise report (`phiwatch report noise`, the console's Noise page): which detectors make
//! the findings and alerts officers wade through, day by day and user by user, how many of
//! their acknowledged alerts officers judged false positives or routine work, and what to do
//! about it: silence one user's routine alerts, review a detector most of whose alerts are
//! false, mine permits when much of the log is unexplained.
//!
//! Counting is by the access time of a finding (what the detector judged), so replaying last
//! month's logs reports last month.

use crate::detect::cedar::UNEXPLAINED_ID;
use crate::mine::Since;
use crate::time::{format_ms, parse_fhir_time, MS_PER_DAY};
use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

pub mod fleet;

#[derive(Debug, Error)]
pub enum NoiseError {
    #[error("reading the store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// One finding in the window.
pub struct FindingRow {
    pub detector: String,
    pub time: String,
    pub user: String,
    pub severity: String,
}

/// One alert with findings of `detector` in the window; `first` is the first such finding's
/// time.
pub struct AlertRow {
    pub detector: String,
    pub id: i64,
    pub first: String,
    pub status: String,
    pub disposition: Option<String>,
    pub user: String,
    pub category: String,
}

/// What the report reads, from the single process's SQLite store or the fleet's database.
/// Windows are FHIR times (as findings keep them) and, for accesses, epoch ms.
pub trait Rows {
    fn newest_finding(&self) -> Result<Option<String>, NoiseError>;
    fn findings(
        &self,
        window: (&str, &str),
        each: &mut dyn FnMut(FindingRow),
    ) -> Result<(), NoiseError>;
    /// Each alert once per detector with a finding of it in the window.
    fn alerts(
        &self,
        window: (&str, &str),
        each: &mut dyn FnMut(AlertRow),
    ) -> Result<(), NoiseError>;
    fn accesses(&self, from_ms: i64, to_ms: i64) -> Result<u64, NoiseError>;
}

/// Alerts per detector with findings in the window, on the day of the first: the same
/// statement on both stores.
const ALERTS_IN_WINDOW: &str =
    "SELECT af.detector, a.id, min(f.time), a.status, a.ack_disposition, a.user_id, a.category
     FROM alert_findings af
     JOIN alerts a ON a.id = af.alert_id
     JOIN findings f ON f.event_id = af.event_id AND f.detector = af.detector
     WHERE f.time >= $1 AND f.time <= $2
     GROUP BY af.detector, a.id";

const FINDINGS_IN_WINDOW: &str =
    "SELECT detector, time, user_id, severity FROM findings WHERE time >= $1 AND time <= $2";

impl Rows for Connection {
    fn newest_finding(&self) -> Result<Option<String>, NoiseError> {
        Ok(self.query_row("SELECT max(time) FROM findings", [], |r| r.get(0))?)
    }

    fn findings(
        &self,
        (from, to): (&str, &str),
        each: &mut dyn FnMut(FindingRow),
    ) -> Result<(), NoiseError> {
        let mut st = self.prepare(FINDINGS_IN_WINDOW)?;
        let mut rows = st.query(params![from, to])?;
        while let Some(r) = rows.next()? {
            each(FindingRow {
                detector: r.get(0)?,
                time: r.get(1)?,
                user: r.get(2)?,
                severity: r.get(3)?,
            });
        }
        Ok(())
    }

    fn alerts(
        &self,
        (from, to): (&str, &str),
        each: &mut dyn FnMut(AlertRow),
    ) -> Result<(), NoiseError> {
        let mut st = self.prepare(ALERTS_IN_WINDOW)?;
        let mut rows = st.query(params![from, to])?;
        while let Some(r) = rows.next()? {
            each(AlertRow {
                detector: r.get(0)?,
                id: r.get(1)?,
                first: r.get(2)?,
                status: r.get(3)?,
                disposition: r.get(4)?,
                user: r.get(5)?,
                category: r.get(6)?,
            });
        }
        Ok(())
    }

    fn accesses(&self, from_ms: i64, to_ms: i64) -> Result<u64, NoiseError> {
        let n: i64 = self.query_row(
            "SELECT count(*) FROM accesses WHERE time_ms BETWEEN ?1 AND ?2",
            params![from_ms, to_ms],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Start of the window; default 30 days before its end.
    pub since: Since,
    /// End of the window (epoch ms); default the newest finding.
    pub until_ms: Option<i64>,
    /// Users listed per detector.
    pub top_users: usize,
    /// Days are counted in this zone.
    pub timezone: chrono_tz::Tz,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            since: Since::Back(30 * MS_PER_DAY),
            until_ms: None,
            top_users: 5,
            timezone: chrono_tz::UTC,
        }
    }
}

/// Acknowledged alerts a silence suggestion needs for one user and category.
const SILENCE_MIN_ACKS: u64 = 2;
/// Acknowledged alerts of a detector a review suggestion needs, and the false share.
const REVIEW_MIN_ACKS: u64 = 5;
const REVIEW_FALSE_SHARE: f64 = 0.8;
/// Unexplained accesses per 10,000 above which mining permits is suggested.
const MINE_PER_10K: f64 = 50.0;
/// A user making this share of a detector's findings (with at least `DOMINANT_MIN`) is named.
const DOMINANT_SHARE: f64 = 0.5;
const DOMINANT_MIN: u64 = 20;

#[derive(Debug, Default, Serialize)]
pub struct NoiseReport {
    pub from: String,
    pub to: String,
    /// Stored accesses in the window (0: the store keeps no access log).
    pub accesses: u64,
    pub findings: u64,
    pub alerts: u64,
    pub detectors: Vec<DetectorNoise>,
    pub suggestions: Vec<Suggestion>,
}

#[derive(Debug, Default, Serialize)]
pub struct DetectorNoise {
    pub detector: String,
    pub findings: u64,
    /// High and critical findings.
    pub high: u64,
    /// Findings per 10,000 stored accesses (`None` without an access log).
    pub per_10k: Option<f64>,
    /// Alerts holding at least one of its findings in the window.
    pub alerts: u64,
    pub acknowledged: u64,
    pub false_positive: u64,
    pub benign: u64,
    pub confirmed: u64,
    /// Share of acknowledged alerts judged false positive or routine (`None`: none judged).
    pub false_share: Option<f64>,
    pub days: Vec<DayCount>,
    pub top_users: Vec<UserCount>,
}

#[derive(Debug, Default, Serialize)]
pub struct DayCount {
    pub day: String,
    pub findings: u64,
    pub alerts: u64,
}

#[derive(Debug, Serialize)]
pub struct UserCount {
    pub user: String,
    pub findings: u64,
}

#[derive(Debug, Serialize)]
pub struct Suggestion {
    /// `silence`, `review`, `look-at-user` or `mine-permits`.
    pub kind: &'static str,
    pub detector: String,
    pub user: Option<String>,
    pub category: Option<String>,
    /// Why, with the numbers.
    pub evidence: String,
    /// What to run or change.
    pub action: String,
}

#[derive(Default)]
struct Tally {
    findings: u64,
    high: u64,
    days: BTreeMap<String, (u64, u64)>,
    users: HashMap<String, u64>,
    alerts: u64,
    acknowledged: u64,
    dispositions: HashMap<String, u64>,
}

/// Judgements of one user's alerts in one category: (false or routine, confirmed, acked).
type Judged = BTreeMap<(String, String, String), (u64, u64, u64)>;

impl Options {
    /// From a window as people type it: `since` a duration back from `until` (`30d`, `12h`)
    /// or a time; `until` a time (default the newest finding). The error names the bad one.
    pub fn window(since: &str, until: Option<&str>) -> Result<Options, crate::mine::WindowError> {
        let mut o = Options {
            since: Since::parse(since)?,
            ..Options::default()
        };
        if let Some(u) = until.filter(|u| !u.trim().is_empty()) {
            o.until_ms = Some(
                crate::time::parse_date_or_time(u)
                    .ok_or_else(|| crate::mine::WindowError::Until(u.into()))?,
            );
        }
        Ok(o)
    }
}

pub fn report(rows: &impl Rows, o: &Options) -> Result<NoiseReport, NoiseError> {
    let newest = rows.newest_finding()?;
    let to_ms = o
        .until_ms
        .or_else(|| newest.as_deref().and_then(parse_fhir_time))
        .unwrap_or_else(crate::time::now_ms);
    let from_ms = o.since.start(to_ms);
    let (from, to) = (format_ms(from_ms), format_ms(to_ms));
    let day_of = |t: &str| {
        use chrono::TimeZone;
        parse_fhir_time(t)
            .and_then(|ms| o.timezone.timestamp_millis_opt(ms).single())
            .map(|d| d.date_naive().to_string())
            .unwrap_or_else(|| t.get(..10).unwrap_or(t).to_owned())
    };

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut findings = 0;
    rows.findings((&from, &to), &mut |f| {
        findings += 1;
        tally_finding(&mut tallies, f, &day_of)
    })?;
    let mut alert_ids = std::collections::HashSet::new();
    let mut judged: Judged = BTreeMap::new();
    rows.alerts((&from, &to), &mut |a| {
        alert_ids.insert(a.id);
        tally_alert(&mut tallies, &mut judged, a, &day_of)
    })?;
    let accesses = rows.accesses(from_ms, to_ms)?;
    let per_10k = |n: u64| (accesses > 0).then(|| n as f64 * 10_000.0 / accesses as f64);

    let mut rep = NoiseReport {
        from,
        to,
        accesses,
        findings,
        alerts: alert_ids.len() as u64,
        ..NoiseReport::default()
    };
    for (detector, t) in tallies {
        rep.detectors
            .push(detector_noise(detector, t, per_10k, o.top_users));
    }
    rep.detectors.sort_by(|a, b| {
        b.findings
            .cmp(&a.findings)
            .then(a.detector.cmp(&b.detector))
    });
    rep.suggestions = suggest(&rep, &judged);
    Ok(rep)
}

/// A finding in the window counts for its detector: in all, if high, on its day, for its
/// user.
fn tally_finding(
    tallies: &mut BTreeMap<String, Tally>,
    f: FindingRow,
    day_of: &impl Fn(&str) -> String,
) {
    let t = tallies.entry(f.detector).or_default();
    t.findings += 1;
    if f.severity == "high" || f.severity == "critical" {
        t.high += 1;
    }
    t.days.entry(day_of(&f.time)).or_default().0 += 1;
    *t.users.entry(f.user).or_default() += 1;
}

/// An alert counts for each detector with a finding of it in the window, on the day of its
/// first such finding; an officer's judgement of it counts towards the suggestions.
fn tally_alert(
    tallies: &mut BTreeMap<String, Tally>,
    judged: &mut Judged,
    a: AlertRow,
    day_of: &impl Fn(&str) -> String,
) {
    let t = tallies.entry(a.detector.clone()).or_default();
    t.alerts += 1;
    t.days.entry(day_of(&a.first)).or_default().1 += 1;
    if a.status != "open" {
        t.acknowledged += 1;
    }
    if let Some(d) = a.disposition {
        let j = judged.entry((a.detector, a.user, a.category)).or_default();
        j.2 += 1;
        match d.as_str() {
            "confirmed" => j.1 += 1,
            _ => j.0 += 1,
        }
        *t.dispositions.entry(d).or_default() += 1;
    }
}

/// One detector's line of the report, from its tallies.
fn detector_noise(
    detector: String,
    t: Tally,
    per_10k: impl Fn(u64) -> Option<f64>,
    top_users: usize,
) -> DetectorNoise {
    let d = |k: &str| t.dispositions.get(k).copied().unwrap_or(0);
    let (false_positive, benign, confirmed) = (d("false_positive"), d("benign"), d("confirmed"));
    let judged_n = false_positive + benign + confirmed;
    let mut users: Vec<UserCount> = t
        .users
        .into_iter()
        .map(|(user, findings)| UserCount { user, findings })
        .collect();
    users.sort_by(|a, b| b.findings.cmp(&a.findings).then(a.user.cmp(&b.user)));
    users.truncate(top_users);
    DetectorNoise {
        per_10k: per_10k(t.findings),
        findings: t.findings,
        high: t.high,
        alerts: t.alerts,
        acknowledged: t.acknowledged,
        false_positive,
        benign,
        confirmed,
        false_share: (judged_n > 0).then(|| (false_positive + benign) as f64 / judged_n as f64),
        days: t
            .days
            .into_iter()
            .map(|(day, (findings, alerts))| DayCount {
                day,
                findings,
                alerts,
            })
            .collect(),
        top_users: users,
        detector,
    }
}

fn suggest(rep: &NoiseReport, judged: &Judged) -> Vec<Suggestion> {
    let mut out = Vec::new();
    for ((detector, user, category), (false_n, confirmed, acked)) in judged {
        if *false_n >= SILENCE_MIN_ACKS && *confirmed == 0 {
            out.push(Suggestion {
                kind: "silence",
                detector: detector.clone(),
                user: Some(user.clone()),
                category: Some(category.clone()),
                evidence: format!(
                    "officers judged {false_n} of {acked} acknowledged {category} alerts for {user} false positive or routine work, none confirmed"
                ),
                action: format!(
                    "phiwatch silence add --config CONFIG --match user={user} --match category={category} --for 30d --author YOU --reason \"routine work, see alerts\"; if it is their job, a permit for their role (phiwatch explain mine) explains it for good"
                ),
            });
        }
    }
    for d in &rep.detectors {
        let judged_n = d.false_positive + d.benign + d.confirmed;
        if judged_n >= REVIEW_MIN_ACKS && d.false_share.unwrap_or(0.0) >= REVIEW_FALSE_SHARE {
            out.push(Suggestion {
                kind: "review",
                detector: d.detector.clone(),
                user: None,
                category: None,
                evidence: format!(
                    "{} of {judged_n} judged alerts were false positives or routine work ({:.0}%)",
                    d.false_positive + d.benign,
                    100.0 * d.false_share.unwrap_or(0.0)
                ),
                action: format!(
                    "review {}: its conditions (policy) or thresholds (rules settings), then `phiwatch policy test`",
                    d.detector
                ),
            });
        }
        if let Some(top) = d.top_users.first() {
            let share = top.findings as f64 / d.findings.max(1) as f64;
            if d.detector != UNEXPLAINED_ID
                && top.findings >= DOMINANT_MIN
                && share >= DOMINANT_SHARE
                && d.confirmed == 0
            {
                out.push(Suggestion {
                    kind: "look-at-user",
                    detector: d.detector.clone(),
                    user: Some(top.user.clone()),
                    category: None,
                    evidence: format!(
                        "{} makes {} of {} findings ({:.0}%)",
                        top.user,
                        top.findings,
                        d.findings,
                        100.0 * share
                    ),
                    action: format!(
                        "look at {}'s alerts: a snooping spree to investigate, or their work (acknowledge with --as benign; the silence suggestion follows)",
                        top.user
                    ),
                });
            }
        }
        if d.detector == UNEXPLAINED_ID && d.per_10k.unwrap_or(0.0) >= MINE_PER_10K {
            out.push(Suggestion {
                kind: "mine-permits",
                detector: d.detector.clone(),
                user: None,
                category: None,
                evidence: format!(
                    "{} accesses no policy explains ({:.0} per 10,000)",
                    d.findings,
                    d.per_10k.unwrap_or(0.0)
                ),
                action: format!(
                    "phiwatch explain mine --config CONFIG --since {}: proposes permits for the routine patterns among them",
                    rep.from.get(..10).unwrap_or(&rep.from)
                ),
            });
        }
    }
    out
}

impl NoiseReport {
    /// The report as text for a terminal.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "noise from {} to {}: {} findings, {} alerts, {} stored accesses",
            self.from, self.to, self.findings, self.alerts, self.accesses
        );
        if self.detectors.is_empty() {
            s.push_str("no findings in the window\n");
            return s;
        }
        let _ = writeln!(
            s,
            "\n{:<34} {:>8} {:>6} {:>8} {:>7} {:>6} {:>6} {:>6} {:>6}",
            "detector",
            "findings",
            "high",
            "per 10k",
            "alerts",
            "acked",
            "false",
            "benign",
            "conf."
        );
        for d in &self.detectors {
            let _ = writeln!(
                s,
                "{:<34} {:>8} {:>6} {:>8} {:>7} {:>6} {:>6} {:>6} {:>6}",
                d.detector,
                d.findings,
                d.high,
                d.per_10k.map_or("-".into(), |r| format!("{r:.1}")),
                d.alerts,
                d.acknowledged,
                d.false_positive,
                d.benign,
                d.confirmed
            );
        }
        for d in &self.detectors {
            let _ = writeln!(s, "\n{}", d.detector);
            let days: Vec<String> = d
                .days
                .iter()
                .map(|x| format!("{} {}/{}", x.day, x.findings, x.alerts))
                .collect();
            let _ = writeln!(s, "  per day (findings/alerts): {}", days.join(", "));
            let users: Vec<String> = d
                .top_users
                .iter()
                .map(|u| format!("{} {}", u.user, u.findings))
                .collect();
            let _ = writeln!(s, "  top users: {}", users.join(", "));
        }
        if self.suggestions.is_empty() {
            s.push_str("\nno suggestions\n");
        } else {
            s.push_str("\nsuggestions\n");
            for x in &self.suggestions {
                let _ = writeln!(
                    s,
                    "- [{}] {}: {}\n    {}",
                    x.kind, x.detector, x.evidence, x.action
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("phiwatch.db");
        drop(crate::store::Store::open(&p).unwrap());
        let c = crate::store::Store::open_existing(&p).unwrap();
        (dir, c)
    }

    fn finding(c: &Connection, id: &str, detector: &str, time: &str, user: &str, sev: &str) {
        c.execute(
            "INSERT INTO findings (event_id, detector, time, user_id, patient_id, action, category,
               severity, explanation, hipaa) VALUES (?1, ?2, ?3, ?4, 'p', 'read', 'c', ?5, '', '')",
            params![id, detector, time, user, sev],
        )
        .unwrap();
    }

    fn alert(
        c: &Connection,
        id: i64,
        user: &str,
        disposition: Option<&str>,
        findings: &[(&str, &str)],
    ) {
        c.execute(
            "INSERT INTO alerts (id, group_key, fold_key, status, category, severity, user_id,
               department, first_ms, last_ms, findings, incidents, ack_disposition)
             VALUES (?1, 'g', 'f', ?2, 'volume', 'high', ?3, '', 0, 0, 1, 1, ?4)",
            params![
                id,
                if disposition.is_some() {
                    "acknowledged"
                } else {
                    "open"
                },
                user,
                disposition
            ],
        )
        .unwrap();
        for (event, detector) in findings {
            c.execute(
                "INSERT INTO alert_findings (alert_id, event_id, detector, patient_id) VALUES (?1, ?2, ?3, 'p')",
                params![id, event, detector],
            )
            .unwrap();
        }
    }

    #[test]
    fn counts_per_detector_day_and_user_and_suggests_from_dispositions() {
        let (_dir, c) = store();
        for i in 0..30 {
            finding(
                &c,
                &format!("v{i}"),
                "volume-anomaly",
                "2026-03-10T09:00:00.000Z",
                "coder-1",
                "high",
            );
        }
        finding(
            &c,
            "v30",
            "volume-anomaly",
            "2026-03-11T09:00:00.000Z",
            "coder-2",
            "medium",
        );
        finding(
            &c,
            "f1",
            "family-member-access",
            "2026-03-11T10:00:00.000Z",
            "rn-7",
            "high",
        );
        // Outside the window.
        finding(
            &c,
            "old",
            "family-member-access",
            "2026-01-01T10:00:00.000Z",
            "rn-7",
            "high",
        );
        alert(
            &c,
            1,
            "coder-1",
            Some("false_positive"),
            &[("v0", "volume-anomaly"), ("v1", "volume-anomaly")],
        );
        alert(
            &c,
            2,
            "coder-1",
            Some("benign"),
            &[("v2", "volume-anomaly")],
        );
        alert(&c, 3, "coder-2", None, &[("v30", "volume-anomaly")]);
        alert(
            &c,
            4,
            "rn-7",
            Some("confirmed"),
            &[("f1", "family-member-access")],
        );

        let r = report(
            &c,
            &Options {
                since: Since::At(parse_fhir_time("2026-03-01").unwrap()),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(r.findings, 32);
        assert_eq!(r.alerts, 4);
        let v = &r.detectors[0];
        assert_eq!(v.detector, "volume-anomaly");
        assert_eq!(
            (v.findings, v.high, v.alerts, v.acknowledged),
            (31, 30, 3, 2)
        );
        assert_eq!((v.false_positive, v.benign, v.confirmed), (1, 1, 0));
        assert_eq!(v.false_share, Some(1.0));
        assert_eq!(v.days.len(), 2);
        assert_eq!((v.days[0].findings, v.days[0].alerts), (30, 2));
        assert_eq!(v.top_users[0].user, "coder-1");
        assert_eq!(v.per_10k, None, "no access log");
        let f = &r.detectors[1];
        assert_eq!((f.findings, f.confirmed), (1, 1));

        let kinds: Vec<(&str, Option<&str>)> = r
            .suggestions
            .iter()
            .map(|s| (s.kind, s.user.as_deref()))
            .collect();
        assert!(kinds.contains(&("silence", Some("coder-1"))), "{kinds:?}");
        assert!(
            kinds.contains(&("look-at-user", Some("coder-1"))),
            "{kinds:?}"
        );
        assert!(
            !kinds.iter().any(|k| k.1 == Some("rn-7")),
            "confirmed snooping is never silenced: {kinds:?}"
        );
        assert!(
            !kinds.iter().any(|k| k.0 == "review"),
            "two judged alerts are too few to review a detector"
        );
        assert!(r.text().contains("coder-1 30"));
    }
}
