//! The join coverage report of `phiwatch check`: over a sample of the configured logs, how
//! many accesses name a user and a patient the context knows, which names do not resolve
//! (most frequent first), which aliases name two people, and which feeds are stale.
//!
//! A hospital's first week with phiwatch is mostly this: a login column that is not in the
//! roster, a crosswalk missing the contractors, an MRN with another assigning authority.

use crate::config::{Config, Source};
use crate::context::{ContextStore, Resolved};
use crate::decode::Item;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;

/// Lines read per file source for the sample.
pub const SAMPLE_LINES: usize = 20_000;
const TOP: usize = 10;

#[derive(Debug, Default)]
pub struct Coverage {
    pub accesses: u64,
    pub users_resolved: u64,
    pub patients_resolved: u64,
    /// Of those, patients no feed describes whose row carries their family name or address
    /// (Purview-style extracts): detection learns them from the log (`context::inline`).
    pub patients_from_log: u64,
    pub unidentified: u64,
    pub unresolved_users: HashMap<String, u64>,
    pub unresolved_patients: HashMap<String, u64>,
    pub ambiguous_users: u64,
    pub ambiguous_patients: u64,
    /// (feed kind, file, age in hours, limit).
    pub stale: Vec<(String, PathBuf, u64, u64)>,
}

impl Coverage {
    pub fn render(&self, ctx: &ContextStore) -> String {
        let pct = |n: u64| {
            if self.accesses == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.accesses as f64
            }
        };
        let mut out = format!(
            "coverage over {} sampled access(es): users {:.1}% resolved, patients {:.1}% resolved ({} by unidentified users)\n",
            self.accesses,
            pct(self.users_resolved),
            pct(self.patients_resolved),
            self.unidentified
        );
        if self.patients_from_log > 0 {
            out.push_str(&format!(
                "  {} of the resolved patients no feed describes: the log's rows carry their name or address, which detection learns\n",
                self.patients_from_log
            ));
        }
        for (what, map) in [
            ("users", &self.unresolved_users),
            ("patients", &self.unresolved_patients),
        ] {
            if map.is_empty() {
                continue;
            }
            let mut top: Vec<(&String, &u64)> = map.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let list: Vec<String> = top
                .iter()
                .take(TOP)
                .map(|(k, n)| format!("{k} ({n})"))
                .collect();
            out.push_str(&format!(
                "  unresolved {what} ({} distinct, most frequent first): {}\n",
                map.len(),
                list.join(", ")
            ));
        }
        if self.ambiguous_users + self.ambiguous_patients > 0 {
            out.push_str(&format!(
                "  {} access(es) named an ambiguous user alias, {} an ambiguous patient alias\n",
                self.ambiguous_users, self.ambiguous_patients
            ));
        }
        for (what, a) in [("user", &ctx.user_alias), ("patient", &ctx.patient_alias)] {
            if a.ambiguous_count > 0 {
                out.push_str(&format!(
                    "  ambiguous {what} aliases (each names two or more people, never used): {} — {}\n",
                    a.ambiguous_count,
                    a.ambiguous.iter().take(TOP).cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for (kind, file, age, max) in &self.stale {
            out.push_str(&format!(
                "  stale feed: {kind} {} is {age} h old (max_age_hours {max})\n",
                file.display()
            ));
        }
        out
    }
}

/// Samples the file sources of `cfg` and resolves every access against `ctx`.
pub fn measure(cfg: &Config, ctx: &ContextStore) -> Coverage {
    let mut c = Coverage::default();
    for src in &cfg.sources {
        let Source::File(f) = src else { continue };
        // `check` reports a mapping's own error.
        let Ok(mut decoder) = f.decoder(Default::default()) else {
            continue;
        };
        // The newest file: what the source reads now.
        let newest = f
            .paths
            .iter()
            .flat_map(|g| glob::glob(g).into_iter().flatten().flatten())
            .filter(|p| p.is_file())
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let Some(path) = newest else { continue };
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let key = {
            use std::os::unix::fs::MetadataExt as _;
            file.metadata()
                .map(|m| (m.dev(), m.ino()))
                .unwrap_or((0, 0))
        };
        let reader = std::io::BufReader::new(file);
        for line in reader.split(b'\n').take(SAMPLE_LINES).map_while(Result::ok) {
            let Ok(item) = decoder.decode(&path, key, &line) else {
                continue;
            };
            let accesses = match &item {
                Item::Access(a) => std::slice::from_ref(a),
                Item::Many { accesses, .. } => accesses.as_slice(),
                _ => continue,
            };
            for a in accesses {
                c.accesses += 1;
                if a.user.starts_with(crate::decode::audit_event::UNIDENTIFIED) {
                    c.unidentified += 1;
                } else {
                    tally_user(&mut c, ctx, a);
                }
                tally_patient(&mut c, ctx, a);
            }
        }
    }
    let now = std::time::SystemTime::now();
    for feed in cfg.context_feeds() {
        let Some(max) = feed.max_age_hours() else {
            continue;
        };
        for file in feed.files() {
            let age = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .map_or(0, |d| d.as_secs() / 3600);
            if age > max {
                c.stale.push((feed.kind().to_owned(), file, age, max));
            }
        }
    }
    c
}

/// A user resolves by the row's user or by another name the row gives them (an extract's
/// employee id beside the login), as detection links them.
fn tally_user(c: &mut Coverage, ctx: &ContextStore, a: &crate::event::AccessEvent) {
    let others = a.inline.iter().flat_map(|i| i.user_ids.iter());
    let mut ambiguous = false;
    for name in std::iter::once(&a.user).chain(others) {
        match ctx.resolve_log_user(name) {
            Resolved::Found(u) if ctx.user_facts(u).known => {
                c.users_resolved += 1;
                return;
            }
            Resolved::Ambiguous => ambiguous = true,
            _ => {}
        }
    }
    if ambiguous {
        c.ambiguous_users += 1;
    } else {
        *c.unresolved_users.entry(a.user.clone()).or_default() += 1;
    }
}

fn tally_patient(c: &mut Coverage, ctx: &ContextStore, a: &crate::event::AccessEvent) {
    let p = a.patient.as_deref().unwrap_or("");
    let described = a.inline.as_ref().is_some_and(|i| {
        !i.patient_family.trim().is_empty() || i.patient_lines.iter().any(|l| !l.trim().is_empty())
    });
    match ctx.resolve_log_patient(p) {
        Resolved::Found(ix) if ctx.patient_facts(ix).known => c.patients_resolved += 1,
        Resolved::Ambiguous => c.ambiguous_patients += 1,
        _ if described && !p.trim().is_empty() => {
            c.patients_resolved += 1;
            c.patients_from_log += 1;
        }
        _ => *c.unresolved_patients.entry(p.to_owned()).or_default() += 1,
    }
}
