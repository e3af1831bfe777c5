//! Explanation mining (`phiwatch explain mine`): routine access patterns that today's policies
//! leave unexplained, proposed as Cedar permits for an officer to review, test and adopt.
//!
//! Explanation-based auditing (Fabbri & LeFevre, "Explanation-based auditing", VLDB 2011)
//! found that most accesses in a hospital log are explained by relationships mined from the
//! log itself. phiwatch mines one such relationship from its own store: users of a role and
//! department who, day after day and many of them, open the records of patients with a
//! current encounter in another department (consults, pharmacy, imaging). A pattern becomes a
//! proposal only with enough distinct users, accesses and days that it is the department's
//! routine, not one person's habit; and only accesses no other detector flagged count towards
//! it, so a snooper's accesses never make their own excuse. A permit explains; it never
//! silences a forbid (family, VIP, sensitive records and the rest still raise findings).

use crate::context::{ContextStore, Resolved, NONE};
use crate::detect::cedar::UNEXPLAINED_ID;
use crate::settings::Settings;
use crate::time::{format_ms, parse_fhir_time, MS_PER_DAY};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MineError {
    #[error("the store has no access log: `phiwatch run` keeps one; a replay needs `scan --store-accesses`")]
    NoAccessLog,
    #[error("the window from {from} to {to} holds no stored access")]
    EmptyWindow { from: String, to: String },
    #[error("reading the store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

pub mod fleet;

/// An access no policy explains, in the window: who, whose record, when, and whether another
/// detector flagged the same access.
pub struct Unexplained {
    pub user: String,
    pub patient: String,
    pub time: String,
    pub flagged: bool,
}

/// What mining reads, from the single process's store or the fleet's database.
pub trait MineRows {
    fn newest_access(&self) -> Result<Option<i64>, MineError>;
    /// Accesses with times from `from_ms` to `to_ms`, both included.
    fn accesses(&self, from_ms: i64, to_ms: i64) -> Result<u64, MineError>;
    /// The hours (epoch ms / 3,600,000) in the window holding an access.
    fn hours(&self, from_ms: i64, to_ms: i64) -> Result<Vec<i64>, MineError>;
    /// The unexplained findings with FHIR times in the window.
    fn unexplained(
        &self,
        window: (&str, &str),
        each: &mut dyn FnMut(Unexplained),
    ) -> Result<(), MineError>;
}

/// The unexplained findings of the window, flagged by another detector or not: the same
/// statement on both stores.
const UNEXPLAINED_IN_WINDOW: &str = "SELECT f.user_id, f.patient_id, f.time,
        EXISTS (SELECT 1 FROM findings g WHERE g.event_id = f.event_id AND g.detector != f.detector)
     FROM findings f
     WHERE f.detector = $1 AND f.time >= $2 AND f.time <= $3";

impl MineRows for Connection {
    fn newest_access(&self) -> Result<Option<i64>, MineError> {
        Ok(self
            .query_row("SELECT max(time_ms) FROM accesses", [], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn accesses(&self, from_ms: i64, to_ms: i64) -> Result<u64, MineError> {
        let n: i64 = self.query_row(
            "SELECT count(*) FROM accesses WHERE time_ms BETWEEN ?1 AND ?2",
            params![from_ms, to_ms],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn hours(&self, from_ms: i64, to_ms: i64) -> Result<Vec<i64>, MineError> {
        let mut st = self.prepare(
            "SELECT DISTINCT time_ms / 3600000 FROM accesses WHERE time_ms BETWEEN ?1 AND ?2",
        )?;
        let hours = st.query_map(params![from_ms, to_ms], |r| r.get::<_, i64>(0))?;
        Ok(hours.collect::<Result<_, _>>()?)
    }

    fn unexplained(
        &self,
        (from, to): (&str, &str),
        each: &mut dyn FnMut(Unexplained),
    ) -> Result<(), MineError> {
        let mut st = self.prepare(UNEXPLAINED_IN_WINDOW)?;
        let mut rows = st.query(params![UNEXPLAINED_ID, from, to])?;
        while let Some(r) = rows.next()? {
            each(Unexplained {
                user: r.get(0)?,
                patient: r.get(1)?,
                time: r.get(2)?,
                flagged: r.get(3)?,
            });
        }
        Ok(())
    }
}

/// A report window's bound, as people typed it, that names no time.
#[derive(Debug, Error)]
pub enum WindowError {
    #[error("since {0:?}: expected a duration (30d, 12h) or a date (2026-03-10)")]
    Since(String),
    #[error("until {0:?}: expected a date (2026-03-10) or a time")]
    Until(String),
}

/// Where a report's window starts (`--since`): `explain mine`, `report noise`.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    /// This long (ms) before the window's end.
    Back(i64),
    /// At this time (epoch ms).
    At(i64),
}

impl Since {
    /// `30d`, `12h` (back from the end), or a date or time (`2026-03-10`).
    pub fn parse(s: &str) -> Result<Since, WindowError> {
        match crate::alert::routing::parse_duration(s) {
            Ok(d) => Ok(Since::Back(d.as_millis() as i64)),
            Err(_) => crate::time::parse_date_or_time(s)
                .map(Since::At)
                .ok_or_else(|| WindowError::Since(s.into())),
        }
    }

    /// The start of a window ending at `end_ms`.
    pub fn start(self, end_ms: i64) -> i64 {
        match self {
            Since::Back(d) => end_ms - d,
            Since::At(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub since: Since,
    /// End of the window (epoch ms); default the newest stored access.
    pub until_ms: Option<i64>,
    /// Distinct users a pattern needs.
    pub min_users: usize,
    /// Unexplained accesses a pattern needs.
    pub min_accesses: u64,
    /// Distinct days a pattern needs (capped at the days the window spans).
    pub min_days: usize,
    /// The most proposals written, best coverage first.
    pub max_proposals: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            since: Since::Back(30 * MS_PER_DAY),
            until_ms: None,
            min_users: 5,
            min_accesses: 20,
            min_days: 2,
            max_proposals: 20,
        }
    }
}

/// One proposed permit.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub role: String,
    pub department: String,
    pub encounter_department: String,
    pub accesses: u64,
    pub users: usize,
    pub patients: usize,
    pub days: usize,
    /// Unexplained accesses this proposal explains that no earlier proposal did.
    pub adds: u64,
}

impl Proposal {
    pub fn id(&self) -> String {
        format!(
            "mined-{}-{}-to-{}",
            slug(&self.role),
            slug(&self.department),
            slug(&self.encounter_department)
        )
    }
}

/// What mining found over its window.
#[derive(Debug, Clone, Default)]
pub struct Mined {
    pub from_ms: i64,
    pub to_ms: i64,
    pub days: usize,
    /// Stored accesses in the window.
    pub accesses: u64,
    /// Unexplained findings in the window.
    pub unexplained: u64,
    /// Of those, left out: another detector flagged the same access.
    pub flagged: u64,
    /// Left out: no encounter of the patient around the access, so nothing to mine.
    pub without_encounter: u64,
    /// Left out: user or patient unknown to the context, or the user without role or department.
    pub unknown: u64,
    pub proposals: Vec<Proposal>,
    /// Unexplained accesses the proposals explain together.
    pub covered: u64,
}

impl Mined {
    pub fn rate_before(&self) -> f64 {
        self.unexplained as f64 / self.accesses.max(1) as f64
    }

    pub fn rate_after(&self) -> f64 {
        (self.unexplained - self.covered) as f64 / self.accesses.max(1) as f64
    }

    /// The human report (stderr of `explain mine`).
    pub fn report(&self) -> String {
        let mut s = format!(
            "explanation mining over {} .. {} ({} day(s))\n",
            format_ms(self.from_ms),
            format_ms(self.to_ms),
            self.days
        );
        s.push_str(&format!(
            "  accesses {}; unexplained {} ({:.2}%)\n",
            self.accesses,
            self.unexplained,
            100.0 * self.rate_before()
        ));
        s.push_str(&format!(
            "  left out: {} also flagged by another detector, {} with no encounter around the access, {} of unknown users or patients\n",
            self.flagged, self.without_encounter, self.unknown
        ));
        if self.proposals.is_empty() {
            s.push_str("  no routine pattern met the thresholds: nothing to propose\n");
            return s;
        }
        s.push_str(&format!("  proposals ({}):\n", self.proposals.len()));
        for p in &self.proposals {
            s.push_str(&format!(
                "    {:<48} {} accesses, {} users, {} patients, {} day(s); explains {} more\n",
                p.id(),
                p.accesses,
                p.users,
                p.patients,
                p.days,
                p.adds
            ));
        }
        s.push_str(&format!(
            "  with every proposal adopted: unexplained {} ({:.2}%), {:.0}% fewer\n",
            self.unexplained - self.covered,
            100.0 * self.rate_after(),
            100.0 * self.covered as f64 / self.unexplained.max(1) as f64
        ));
        s
    }

    /// The proposals as a Cedar policy file, with their evidence, for review.
    pub fn cedar(&self, generated_at: &str) -> String {
        let mut s = format!(
            "// Proposed by `phiwatch explain mine` at {generated_at}\n\
             // from the stored accesses of {} .. {} ({} day(s)):\n\
             // {} accesses, {} unexplained ({:.2}%); with every proposal below adopted,\n\
             // {} unexplained ({:.2}%).\n\
             //\n\
             // Review each one before adopting it: a permit explains a pattern of access, so an\n\
             // access that fits it raises no `unexplained` finding. It never silences a forbid\n\
             // (self, family, neighbour, coworker, VIP, sensitive, terminated user...). Delete the\n\
             // ones that are not routine work, add a case for each to your `policy test` files,\n\
             // then copy this file into the policy directory (the agent reloads it).\n",
            format_ms(self.from_ms),
            format_ms(self.to_ms),
            self.days,
            self.accesses,
            self.unexplained,
            100.0 * self.rate_before(),
            self.unexplained - self.covered,
            100.0 * self.rate_after()
        );
        for p in &self.proposals {
            s.push_str(&format!(
                "\n@id(\"{id}\")\n\
                 @explain(\"Routine work: {role} users of {dept} open the records of patients with an encounter in {enc} around the access.\")\n\
                 @mined(\"{acc} unexplained accesses by {users} users to {pts} patients on {days} day(s); explains {adds} not explained by an earlier proposal\")\n\
                 permit (principal in Role::{role_lit}, action, resource)\n\
                 when {{\n  principal in Department::{dept_lit} &&\n  context.encounter_departments.contains({enc_lit})\n}};\n",
                id = p.id(),
                role = annotation_text(&p.role),
                dept = annotation_text(&p.department),
                enc = annotation_text(&p.encounter_department),
                acc = p.accesses,
                users = p.users,
                pts = p.patients,
                days = p.days,
                adds = p.adds,
                role_lit = cedar_string(&p.role),
                dept_lit = cedar_string(&p.department),
                enc_lit = cedar_string(&p.encounter_department),
            ));
        }
        s
    }
}

/// A Cedar string literal.
fn cedar_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text inside an annotation's string literal (quotes and controls escaped).
fn annotation_text(s: &str) -> String {
    let lit = cedar_string(s);
    lit[1..lit.len() - 1].to_owned()
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

#[derive(Default)]
struct Pattern {
    accesses: Vec<u32>,
    users: HashSet<u32>,
    patients: HashSet<u32>,
    days: BTreeSet<i64>,
}

/// Mines the store's window against the context.
pub fn mine(
    rows: &impl MineRows,
    ctx: &ContextStore,
    settings: &Settings,
    o: &Options,
) -> Result<Mined, MineError> {
    let newest = rows.newest_access()?.ok_or(MineError::NoAccessLog)?;
    let to_ms = o.until_ms.unwrap_or(newest);
    let from_ms = o.since.start(to_ms);
    let accesses = rows.accesses(from_ms, to_ms)?;
    if accesses == 0 {
        return Err(MineError::EmptyWindow {
            from: format_ms(from_ms),
            to: format_ms(to_ms),
        });
    }
    let local_day = |t: i64| {
        use chrono::TimeZone;
        settings
            .timezone
            .timestamp_millis_opt(t)
            .single()
            .map_or(t.div_euclid(MS_PER_DAY), |d| {
                i64::from(chrono::Datelike::num_days_from_ce(&d.date_naive()))
            })
    };
    let mut m = Mined {
        from_ms,
        to_ms,
        accesses,
        ..Mined::default()
    };
    let days_in_window: BTreeSet<i64> = rows
        .hours(from_ms, to_ms)?
        .into_iter()
        .map(|h| local_day(h * 3_600_000))
        .collect();
    m.days = days_in_window.len();

    let patterns = patterns(rows, ctx, settings, (from_ms, to_ms), &local_day, &mut m)?;
    cover(ctx, o, patterns, &mut m);
    Ok(m)
}

/// Unexplained accesses no other detector flagged, grouped by the user's role and
/// department and the department of the patient's encounter around the access; `m` counts
/// what could not be grouped.
fn patterns(
    rows: &impl MineRows,
    ctx: &ContextStore,
    settings: &Settings,
    (from_ms, to_ms): (i64, i64),
    local_day: &impl Fn(i64) -> i64,
    m: &mut Mined,
) -> Result<BTreeMap<(u32, u32, u32), Pattern>, MineError> {
    let mut patterns: BTreeMap<(u32, u32, u32), Pattern> = BTreeMap::new();
    let mut n = 0u32;
    let window = (format_ms(from_ms), format_ms(to_ms));
    rows.unexplained((&window.0, &window.1), &mut |row| {
        m.unexplained += 1;
        if row.flagged {
            m.flagged += 1;
            return;
        }
        let (Resolved::Found(u), Resolved::Found(p), Some(t)) = (
            ctx.resolve_log_user(&row.user),
            ctx.resolve_log_patient(&row.patient),
            parse_fhir_time(&row.time),
        ) else {
            m.unknown += 1;
            return;
        };
        let (role, dept) = (ctx.user_role_ix(u), ctx.user_department_ix(u));
        if role == NONE || dept == NONE {
            m.unknown += 1;
            return;
        }
        let around: BTreeSet<u32> = ctx
            .encounters_of(p)
            .iter()
            .filter(|e| {
                e.department != NONE
                    && t >= e.start - settings.relationship_lead_ms
                    && t <= e.end + settings.relationship_lag_ms
            })
            .map(|e| e.department)
            .collect();
        if around.is_empty() {
            m.without_encounter += 1;
            return;
        }
        let day = local_day(t);
        for d in around {
            let pat = patterns.entry((role, dept, d)).or_default();
            pat.accesses.push(n);
            pat.users.insert(u);
            pat.patients.insert(p);
            pat.days.insert(day);
        }
        n += 1;
    })?;
    Ok(patterns)
}

/// Proposals by greedy cover: each next one is the pattern that explains the most accesses
/// still unexplained, while it adds enough.
fn cover(
    ctx: &ContextStore,
    o: &Options,
    patterns: BTreeMap<(u32, u32, u32), Pattern>,
    m: &mut Mined,
) {
    let min_days = o.min_days.min(m.days).max(1);
    let mut candidates: Vec<((u32, u32, u32), Pattern)> = patterns
        .into_iter()
        .filter(|(_, p)| {
            p.users.len() >= o.min_users
                && p.accesses.len() as u64 >= o.min_accesses
                && p.days.len() >= min_days
        })
        .collect();
    let mut covered: HashSet<u32> = HashSet::new();
    while m.proposals.len() < o.max_proposals {
        let best = candidates
            .iter()
            .enumerate()
            .map(|(i, (_, p))| {
                (
                    i,
                    p.accesses.iter().filter(|a| !covered.contains(a)).count(),
                )
            })
            .filter(|&(_, adds)| adds as u64 >= o.min_accesses)
            .max_by_key(|&(i, adds)| (adds, std::cmp::Reverse(i)));
        let Some((i, adds)) = best else { break };
        let ((role, dept, enc), p) = candidates.swap_remove(i);
        covered.extend(p.accesses.iter().copied());
        m.proposals.push(Proposal {
            role: ctx.roles.name(role).to_owned(),
            department: ctx.departments.name(dept).to_owned(),
            encounter_department: ctx.departments.name(enc).to_owned(),
            accesses: p.accesses.len() as u64,
            users: p.users.len(),
            patients: p.patients.len(),
            days: p.days.len(),
            adds: adds as u64,
        });
    }
    m.covered = covered.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cedar_safe() {
        assert_eq!(cedar_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(slug("Internal Medicine / ICU"), "internal-medicine-icu");
        let p = Proposal {
            role: "doctor".into(),
            department: "Cardiology \"East\"".into(),
            encounter_department: "icu".into(),
            accesses: 30,
            users: 6,
            patients: 20,
            days: 2,
            adds: 30,
        };
        let m = Mined {
            accesses: 1000,
            unexplained: 40,
            covered: 30,
            proposals: vec![p],
            ..Mined::default()
        };
        let text = m.cedar("now");
        let set: cedar_policy::PolicySet = text.parse().expect("valid Cedar");
        assert_eq!(set.policies().count(), 1);
        assert!(
            text.contains(r#"Department::"Cardiology \"East\"""#),
            "{text}"
        );
    }
}
