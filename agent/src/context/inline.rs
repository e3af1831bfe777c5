//! Demographics an access log carries on its rows (Purview-style extracts write the
//! patient's name and address and the employee's login and id on every row).
//!
//! A patient first seen in the log becomes known with the row's family name and address, so
//! household and neighbour detection work with no patient feed. A row naming the user twice
//! (login and employee id) links the two names. Feeds are richer and win: a row only fills
//! what a feed left empty, and a row that disagrees with a feed is counted, never applied.
//! What a row changes is journaled in the store (feed [`FEED`]) and replayed after the feeds
//! on every load, so nothing learned is lost on restart and feeds still win on reload.

use super::{identity::Resolved, normalize, ContextStore, PatientIx, Written};
use crate::event::Inline;
use serde::{Deserialize, Serialize};

/// The journal's feed name for facts learned from access logs (MLLP feed names cannot
/// start with `@`).
pub const FEED: &str = "@access-log";

/// What access-log rows did to the context.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InlineStats {
    /// Patients the context learned of from the log alone.
    pub patients_added: u64,
    /// Family names and addresses filled in where the context had none.
    pub facts_filled: u64,
    /// Rows whose name, address or user link disagreed with a feed (the feed's kept).
    pub conflicts: u64,
    /// Other names of a user linked to them (login <-> employee id).
    pub users_linked: u64,
}

/// One row's facts, as journaled.
#[derive(Debug, Serialize, Deserialize)]
pub struct Learned {
    /// The access the row recorded: a patient who moves back is journaled again.
    #[serde(default)]
    pub access: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    pub user: String,
    #[serde(flatten)]
    pub inline: Inline,
}

impl Learned {
    /// Applies a journaled row (a message that no longer parses is skipped: it was written
    /// by this module, so only a hand-edited store gets here).
    pub fn replay(store: &mut ContextStore, message: &str) -> bool {
        match serde_json::from_str::<Learned>(message) {
            Ok(l) => learn(store, l.patient.as_deref(), &l.user, &l.inline),
            Err(_) => false,
        }
    }
}

/// Applies what a row says about its patient and user; true when the context changed (the
/// row is then worth journaling).
pub fn learn(store: &mut ContextStore, patient: Option<&str>, user: &str, row: &Inline) -> bool {
    let mut changed = false;
    if let Some(p) = patient.filter(|p| !p.trim().is_empty()) {
        changed |= learn_patient(store, p, row);
    }
    changed | learn_user(store, user, row)
}

fn learn_patient(store: &mut ContextStore, raw: &str, row: &Inline) -> bool {
    // An extract repeats a patient's household on every row: a row written as the last one
    // was changes nothing, and is not normalised again.
    let digest = digest(row);
    let found = store.resolve_log_patient(raw);
    if let Resolved::Found(ix) = found {
        let f = &store.patients[ix as usize];
        if f.known && f.log_digest == digest {
            return false;
        }
    }
    let family = normalize::family(&row.patient_family);
    fn written(v: &str) -> Option<std::borrow::Cow<'_, str>> {
        (!v.is_empty()).then_some(std::borrow::Cow::Borrowed(v))
    }
    let home = (!row.patient_lines.is_empty()).then(|| crate::fhir::Address {
        use_: None,
        line: row
            .patient_lines
            .iter()
            .filter_map(|l| written(l))
            .collect(),
        city: written(&row.patient_city),
        state: written(&row.patient_state),
        postal_code: written(&row.patient_postal_code),
    });
    let address = home.as_ref().and_then(normalize::address);
    if family.is_none() && address.is_none() {
        return false;
    }
    let ix: PatientIx = match found {
        Resolved::Ambiguous => return false,
        Resolved::Found(ix) if store.patients[ix as usize].known => ix,
        found => {
            let ix = match found {
                Resolved::Found(ix) => ix,
                _ => store.intern_patient(raw.trim()),
            };
            let f = &mut store.patients[ix as usize];
            f.known = true;
            f.from_log = true;
            store.inline.patients_added += 1;
            ix
        }
    };
    let stats = &mut store.inline;
    let f = &mut store.patients[ix as usize];
    f.log_digest = digest;
    let mut changed = merge(&mut f.family, family, f.from_log, stats);
    let moved = merge(&mut f.address, address, f.from_log, stats);
    changed |= moved;
    if changed {
        let family = if row.patient_family.is_empty() {
            f.written.family.clone()
        } else {
            row.patient_family.as_str().into()
        };
        let address = match (&home, moved) {
            (Some(h), true) => Written::address_text(h).into(),
            _ => f.written.address.clone(),
        };
        f.written = Written { family, address };
    }
    changed
}

fn learn_user(store: &mut ContextStore, user: &str, row: &Inline) -> bool {
    let names = || std::iter::once(user).chain(row.user_ids.iter().map(String::as_str));
    let Some(u) = names().find_map(|k| match store.resolve_log_user(k) {
        Resolved::Found(u) if store.users[u as usize].known => Some(u),
        _ => None,
    }) else {
        // A user the directory lacks stays unknown: the log cannot vouch for its own users.
        return false;
    };
    let mut changed = false;
    let others: Vec<String> = names().map(str::to_owned).collect();
    for k in others {
        match store.resolve_log_user(&k) {
            Resolved::Missing => {
                store.user_alias.add(&k, u);
                store.inline.users_linked += 1;
                changed = true;
            }
            Resolved::Found(other) if other != u => store.inline.conflicts += 1,
            Resolved::Ambiguous => store.inline.conflicts += 1,
            Resolved::Found(_) => {}
        }
    }
    let family = normalize::family(&row.user_family);
    let f = &mut store.users[u as usize];
    changed | merge(&mut f.family, family, false, &mut store.inline)
}

/// Fills an empty fact; replaces one the log itself wrote (the patient moved); counts a
/// disagreement with a feed.
fn merge<T: PartialEq>(
    slot: &mut Option<T>,
    new: Option<T>,
    from_log: bool,
    stats: &mut InlineStats,
) -> bool {
    let Some(new) = new else { return false };
    match slot {
        None => {
            *slot = Some(new);
            stats.facts_filled += 1;
            true
        }
        Some(old) if *old == new => false,
        Some(_) if from_log => {
            *slot = Some(new);
            true
        }
        Some(_) => {
            stats.conflicts += 1;
            false
        }
    }
}

/// A fingerprint of the row's patient columns as written.
fn digest(row: &Inline) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (
        &row.patient_family,
        &row.patient_lines,
        &row.patient_city,
        &row.patient_state,
        &row.patient_postal_code,
    )
        .hash(&mut h);
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(family: &str, line: &str, zip: &str) -> Inline {
        Inline {
            patient_family: family.into(),
            patient_lines: vec![line.into()],
            patient_city: "Springfield".into(),
            patient_state: "IL".into(),
            patient_postal_code: zip.into(),
            ..Inline::default()
        }
    }

    #[test]
    fn a_patient_first_seen_in_the_log_gets_its_household() {
        let mut s = ContextStore::default();
        assert!(learn(
            &mut s,
            Some("MRN7"),
            "jdoe",
            &row("Ito", "12 Oak Street", "62701")
        ));
        let p = match s.resolve_patient("MRN7") {
            Resolved::Found(p) => p,
            other => panic!("{other:?}"),
        };
        let f = s.patient_facts(p);
        assert!(f.known && f.from_log);
        assert_eq!(f.family.as_deref(), Some("ito"));
        assert_eq!(&*f.written.address, "12 Oak Street, Springfield, IL 62701");
        // The same row again changes nothing (it is not journaled twice).
        assert!(!learn(
            &mut s,
            Some("MRN7"),
            "jdoe",
            &row("ITO", "12 Oak St", "62701-1234")
        ));
        // A later row of the log moves the patient.
        assert!(learn(
            &mut s,
            Some("MRN7"),
            "jdoe",
            &row("Ito", "40 Elm St", "62701")
        ));
        assert_eq!(s.inline.patients_added, 1);
        assert_eq!(s.inline.conflicts, 0);
    }

    #[test]
    fn a_feed_wins_and_disagreements_are_counted() {
        let mut s = ContextStore::default();
        let p = s.upsert_patient("pat-1", &["MRN9".into()]);
        s.patient_mut(p).family = normalize::family("Ito");
        // The feed has no address: the row fills it, and keeps the feed's family name.
        assert!(learn(
            &mut s,
            Some("MRN9"),
            "u",
            &row("Smith", "12 Oak Street", "62701")
        ));
        let f = s.patient_facts(p);
        assert_eq!(f.family.as_deref(), Some("ito"));
        assert!(f.address.is_some() && !f.from_log);
        assert_eq!(s.inline.conflicts, 1);
        assert_eq!(s.inline.facts_filled, 1);
        // A different address on a later row is a disagreement with what is now known.
        assert!(!learn(
            &mut s,
            Some("MRN9"),
            "u",
            &row("Ito", "99 Pine Road", "62701")
        ));
        assert_eq!(s.inline.conflicts, 2);
    }

    #[test]
    fn a_row_links_a_login_to_the_directory_user_and_never_invents_users() {
        let mut s = ContextStore::default();
        let u = s.intern_user("E1001");
        s.users[u as usize].known = true;
        let linked = Inline {
            user_ids: vec!["E1001".into()],
            ..Inline::default()
        };
        assert!(learn(&mut s, None, "JDOE", &linked));
        assert_eq!(s.resolve_user("JDOE"), Resolved::Found(u));
        assert_eq!(s.inline.users_linked, 1);
        // Nobody in the directory: nothing is created.
        let stranger = Inline {
            user_ids: vec!["E9999".into()],
            user_family: "Ghost".into(),
            ..Inline::default()
        };
        assert!(!learn(&mut s, None, "GHOST", &stranger));
        assert_eq!(s.resolve_user("GHOST"), Resolved::Missing);
    }
}
