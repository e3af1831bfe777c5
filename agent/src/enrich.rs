//! Enrich: turns an access event into the facts detection judges, using the context store.
//!
//! Everything the Cedar policies can see is in [`FactKey`], and nothing else: that makes the
//! policy decision a pure function of the key, which detection exploits to evaluate each
//! distinct situation once (see `detect::cedar`).

use crate::context::{rel, ContextStore, PatientIx, Resolved, UserIx, NONE};
use crate::event::{AccessEvent, Action};
use crate::settings::Settings;
use crate::time::{MS_PER_DAY, MS_PER_HOUR};
use chrono::{Datelike, Offset, TimeZone, Timelike};

pub mod user_flag {
    pub const KNOWN: u8 = 1;
    pub const CLINICAL: u8 = 2;
    /// Neither terminated at the access time nor marked inactive.
    pub const ACTIVE: u8 = 4;
    pub const BUSINESS_NEED_ROLE: u8 = 8;
    /// The log names the user by an id (not only by display text, or not at all).
    pub const IDENTIFIED: u8 = 16;
}

pub mod patient_flag {
    pub const KNOWN: u8 = 1;
    pub const VIP: u8 = 2;
    pub const EMPLOYEE: u8 = 4;
    pub const RESTRICTED: u8 = 8;
    pub const DECEASED: u8 = 16;
}

pub mod ctx_flag {
    pub const BREAK_GLASS: u16 = 1;
    pub const AFTER_HOURS: u16 = 1 << 1;
    pub const WEEKEND: u16 = 1 << 2;
    /// The patient has an encounter in the user's department around the access.
    pub const DEPARTMENT_ENCOUNTER: u16 = 1 << 3;
    /// The patient had an encounter within `business_need_days`.
    pub const RECENT_ENCOUNTER: u16 = 1 << 4;
    /// The patient has an encounter within `break_glass_window_hours` of the access.
    pub const ENCOUNTER_NEAR: u16 = 1 << 5;
    pub const SELF_ACCESS: u16 = 1 << 6;
    pub const SAME_FAMILY_NAME: u16 = 1 << 7;
    pub const SAME_ADDRESS: u16 = 1 << 8;
    pub const SAME_STREET: u16 = 1 << 9;
    pub const COWORKER: u16 = 1 << 10;
    pub const LONG_AFTER_DEATH: u16 = 1 << 11;
    pub const SUCCEEDED: u16 = 1 << 12;
}

/// The facts of one access that policies may test, with ids left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FactKey {
    pub action: Action,
    /// Interned role and department of the user ([`NONE`] when unknown).
    pub role: u32,
    pub department: u32,
    pub user: u8,
    pub patient: u8,
    /// Bits of `context::sensitive`.
    pub sensitive: u8,
    /// Bits of `context::rel` valid at the access time.
    pub relationships: u8,
    pub context: u16,
    /// Local hour of the access, 0..=23.
    pub hour: u8,
    /// Whole days from death to access; -1 when alive or the date is unknown.
    pub days_since_death: i32,
    /// Departments of the patient's encounters around the access (the window of
    /// `department_encounter`), interned, ascending, [`NONE`]-padded. Four is plenty: few
    /// patients are in more departments at once, and a fifth only loses a mined explanation.
    pub encounter_departments: [u32; MAX_ENCOUNTER_DEPARTMENTS],
}

pub const MAX_ENCOUNTER_DEPARTMENTS: usize = 4;

impl FactKey {
    /// The interned departments of [`FactKey::encounter_departments`].
    pub fn encounter_departments(&self) -> impl Iterator<Item = u32> + '_ {
        self.encounter_departments
            .iter()
            .copied()
            .take_while(|&d| d != NONE)
    }
}

impl FactKey {
    pub fn has(&self, ctx_bit: u16) -> bool {
        self.context & ctx_bit != 0
    }
}

#[derive(Debug, Clone)]
pub struct EnrichedAccess {
    pub event: AccessEvent,
    pub user: Option<UserIx>,
    pub patient: Option<PatientIx>,
    pub facts: FactKey,
}

/// Per-run counters for references the context could not resolve.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnrichStats {
    pub unknown_users: u64,
    pub unknown_patients: u64,
    /// Named by an alias that names two or more people (judged as unresolved).
    pub ambiguous_users: u64,
    pub ambiguous_patients: u64,
    /// Named only by display text, or not at all.
    pub unidentified_users: u64,
}

pub struct Enricher<'c> {
    settings: &'c Settings,
    clinical_role: Vec<bool>,
    business_need_role: Vec<bool>,
    /// Local-time offset cache keyed by UTC hour: zone offsets change only on hour boundaries.
    offset_hour: i64,
    offset_ms: i64,
    /// Departments as logs write them -> interned, rebuilt when feeds add departments.
    department_of: ahash::AHashMap<String, u32>,
    departments_seen: usize,
    pub stats: EnrichStats,
}

impl<'c> Enricher<'c> {
    pub fn new(settings: &'c Settings) -> Self {
        Enricher {
            settings,
            clinical_role: Vec::new(),
            business_need_role: Vec::new(),
            offset_hour: i64::MIN,
            offset_ms: 0,
            department_of: Default::default(),
            departments_seen: 0,
            stats: EnrichStats::default(),
        }
    }

    fn local(&mut self, t: i64) -> (u8, chrono::Weekday) {
        let hour_bucket = t.div_euclid(MS_PER_HOUR);
        if hour_bucket != self.offset_hour {
            self.offset_hour = hour_bucket;
            let utc = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
            let off = self
                .settings
                .timezone
                .offset_from_utc_datetime(&utc.naive_utc());
            self.offset_ms = i64::from(off.fix().local_minus_utc()) * 1000;
        }
        let local = chrono::DateTime::from_timestamp_millis(t + self.offset_ms)
            .unwrap_or_default()
            .naive_utc();
        (local.hour() as u8, local.weekday())
    }

    /// Role facts per interned role, extended as feeds add roles.
    fn learn_roles(&mut self, store: &ContextStore) {
        for r in self.clinical_role.len() as u32..store.roles.len() as u32 {
            let name = store.roles.name(r);
            self.clinical_role.push(self.settings.is_clinical(name));
            self.business_need_role
                .push(self.settings.has_business_need_role(name));
        }
    }

    /// The department a log names: by id, by an Organization's name, or by a department's
    /// name written in another case or spacing ("EMERGENCY DEPT." for "Emergency Dept").
    fn department_named(&mut self, store: &ContextStore, written: &str) -> u32 {
        if written.is_empty() {
            return NONE;
        }
        if store.departments.len() != self.departments_seen {
            self.departments_seen = store.departments.len();
            self.department_of.clear();
        }
        if let Some(&d) = self.department_of.get(written) {
            return d;
        }
        let d = store.department_named(written).unwrap_or_else(|| {
            let want = crate::tabular::fold(written);
            (0..store.departments.len() as u32)
                .find(|&i| crate::tabular::fold(store.departments.name(i)) == want)
                .unwrap_or(NONE)
        });
        if self.department_of.len() < 10_000 {
            self.department_of.insert(written.to_owned(), d);
        }
        d
    }

    /// The facts of `event` in `store`, which may change between calls (ADT feeds).
    pub fn enrich(&mut self, store: &ContextStore, mut event: AccessEvent) -> EnrichedAccess {
        let t = event.time_ms;
        if self.clinical_role.len() != store.roles.len() {
            self.learn_roles(store);
        }
        let s = self.settings;
        let identified = !event
            .user
            .starts_with(crate::decode::audit_event::UNIDENTIFIED);
        let (user, patient) = self.resolve(store, &mut event, identified);

        let (hour, weekday) = self.local(t);
        let business_day = s.business_days.contains(&weekday);
        let in_hours = business_day
            && u32::from(hour) >= s.business_start_hour
            && u32::from(hour) < s.business_end_hour;
        let mut context = 0u16;
        for (bit, on) in [
            (ctx_flag::BREAK_GLASS, event.break_glass),
            (ctx_flag::AFTER_HOURS, !in_hours),
            (ctx_flag::WEEKEND, !business_day),
            (ctx_flag::SUCCEEDED, event.succeeded),
        ] {
            if on {
                context |= bit;
            }
        }

        // The department the log says the user worked in for this access (login or
        // workstation department): it explains work there as the directory's does.
        let worked_in = self.department_named(store, event.department.trim());
        let (role, mut department, user_bits) = self.user_side(store, user, identified, t);
        if department == NONE {
            department = worked_in;
        }
        let p = match patient {
            Some(p) => self.patient_side(store, &event, user, p, (department, worked_in)),
            None => PatientSide::default(),
        };

        EnrichedAccess {
            facts: FactKey {
                action: event.action,
                role,
                department,
                user: user_bits,
                patient: p.bits,
                sensitive: p.sensitive,
                relationships: p.relationships,
                context: context | p.context,
                hour,
                days_since_death: p.days_since_death,
                encounter_departments: p.encounter_departments,
            },
            event,
            user,
            patient,
        }
    }

    /// The user and patient the log names, in the context; the event is rewritten to their
    /// canonical ids. Logs name people by login, NPI, MRN or reference; what resolves is
    /// recorded under the person's one id, so findings and alerts group by person.
    #[inline]
    fn resolve(
        &mut self,
        store: &ContextStore,
        event: &mut AccessEvent,
        identified: bool,
    ) -> (Option<u32>, Option<u32>) {
        let user = match store.resolve_log_user(&event.user) {
            Resolved::Found(u) if store.user_facts(u).known => {
                event.user.clone_from(&store.user_facts(u).id);
                Some(u)
            }
            Resolved::Ambiguous => {
                self.stats.ambiguous_users += 1;
                None
            }
            _ => None,
        };
        let patient = match event
            .patient
            .as_deref()
            .map(|p| store.resolve_log_patient(p))
        {
            Some(Resolved::Found(p)) if store.patient_facts(p).known => {
                event.patient = Some(store.patient_facts(p).id.clone());
                Some(p)
            }
            Some(Resolved::Ambiguous) => {
                self.stats.ambiguous_patients += 1;
                None
            }
            _ => None,
        };
        if !identified {
            self.stats.unidentified_users += 1;
        } else if user.is_none() {
            self.stats.unknown_users += 1;
        }
        if patient.is_none() {
            self.stats.unknown_patients += 1;
        }
        (user, patient)
    }

    /// The user's role, directory department and flags at time `t`.
    #[inline]
    fn user_side(
        &self,
        store: &ContextStore,
        user: Option<u32>,
        identified: bool,
        t: i64,
    ) -> (u32, u32, u8) {
        let mut bits = if identified { user_flag::IDENTIFIED } else { 0 };
        let Some(u) = user else {
            // No directory entry: no evidence of termination either.
            return (NONE, NONE, bits | user_flag::ACTIVE);
        };
        let uf = store.user_facts(u);
        let role = store.user_role_ix(u);
        bits |= user_flag::KNOWN;
        let terminated = uf.terminated_ms.is_some_and(|end| t > end);
        let role_is = |table: &[bool]| table.get(role as usize).copied().unwrap_or(false);
        for (on, bit) in [
            (!uf.inactive && !terminated, user_flag::ACTIVE),
            (role_is(&self.clinical_role), user_flag::CLINICAL),
            (
                role_is(&self.business_need_role),
                user_flag::BUSINESS_NEED_ROLE,
            ),
        ] {
            if on {
                bits |= bit;
            }
        }
        (role, store.user_department_ix(u), bits)
    }

    /// What the patient's record and the user's relation to it add: flags, sensitivity,
    /// relationships, death, encounters near the access, household and coworker matches.
    /// `departments` are the user's directory department and the one the log names.
    #[inline]
    fn patient_side(
        &self,
        store: &ContextStore,
        event: &AccessEvent,
        user: Option<u32>,
        p: u32,
        (department, worked_in): (u32, u32),
    ) -> PatientSide {
        let s = self.settings;
        let t = event.time_ms;
        let pf = store.patient_facts(p);
        let mut out = PatientSide {
            bits: patient_flag::KNOWN,
            sensitive: pf.sensitive,
            ..PatientSide::default()
        };
        let mut context = 0u16;
        let mut set = |bit: u16, on: bool| {
            if on {
                context |= bit
            }
        };
        for (on, bit) in [
            (pf.vip, patient_flag::VIP),
            (pf.employee, patient_flag::EMPLOYEE),
            (pf.restricted, patient_flag::RESTRICTED),
            (pf.deceased_ms.is_some(), patient_flag::DECEASED),
        ] {
            if on {
                out.bits |= bit;
            }
        }
        if let Some(died) = pf.deceased_ms.filter(|&d| d != i64::MIN && t >= d) {
            let days = (t - died) / MS_PER_DAY;
            out.days_since_death = days.min(i64::from(i32::MAX)) as i32;
            set(ctx_flag::LONG_AFTER_DEATH, days > s.deceased_after_days);
        }
        let in_department = |d: u32| d != NONE && (d == department || d == worked_in);
        for e in store.encounters_of(p) {
            let near =
                t >= e.start - s.break_glass_window_ms && t <= e.end + s.break_glass_window_ms;
            set(ctx_flag::ENCOUNTER_NEAR, near);
            let from = e.start - s.relationship_lead_ms;
            set(
                ctx_flag::RECENT_ENCOUNTER,
                t >= from && t <= e.end + s.business_need_ms,
            );
            let around = t >= from && t <= e.end + s.relationship_lag_ms;
            set(
                ctx_flag::DEPARTMENT_ENCOUNTER,
                around && in_department(e.department),
            );
            if around && e.department != NONE {
                add_department(&mut out.encounter_departments, e.department);
            }
        }
        // An access made in an encounter of this patient (the log names it) is work in
        // that encounter's department, whenever it is done (late charting included).
        let named = Some(event.encounter.trim()).filter(|v| !v.is_empty());
        if let Some((_, e)) = named
            .and_then(|v| store.visit_of(v))
            .filter(|&(vp, _)| vp == p)
        {
            set(ctx_flag::DEPARTMENT_ENCOUNTER, in_department(e.department));
            if e.department != NONE {
                add_department(&mut out.encounter_departments, e.department);
            }
        }
        if let Some(u) = user {
            out.relationships = store.relationship_at(u, p, t);
            let uf = store.user_facts(u);
            set(ctx_flag::SELF_ACCESS, uf.self_patient == Some(p));
            // A user's household comes from the directory, else from their own chart.
            let own = uf.self_patient.map(|sp| store.patient_facts(sp));
            let family = uf.family.as_ref().or(own.and_then(|o| o.family.as_ref()));
            let address = uf.address.as_ref().or(own.and_then(|o| o.address.as_ref()));
            set(
                ctx_flag::SAME_FAMILY_NAME,
                family.is_some() && family == pf.family.as_ref(),
            );
            if let (Some(a), Some(b)) = (address, pf.address.as_ref()) {
                set(ctx_flag::SAME_ADDRESS, a.full == b.full);
                set(ctx_flag::SAME_STREET, a.street == b.street);
            }
            set(
                ctx_flag::COWORKER,
                pf.employee_user.is_some_and(|eu| {
                    eu != u && department != NONE && store.user_department_ix(eu) == department
                }),
            );
        }
        out.context = context;
        out
    }
}

/// The patient's part of an access's facts.
struct PatientSide {
    bits: u8,
    sensitive: u8,
    relationships: u8,
    days_since_death: i32,
    encounter_departments: [u32; MAX_ENCOUNTER_DEPARTMENTS],
    context: u16,
}

impl Default for PatientSide {
    fn default() -> Self {
        PatientSide {
            bits: 0,
            sensitive: 0,
            relationships: 0,
            days_since_death: -1,
            encounter_departments: [NONE; MAX_ENCOUNTER_DEPARTMENTS],
            context: 0,
        }
    }
}

/// Inserts `d` into an ascending, NONE-padded set; a full set keeps its lowest four.
fn add_department(set: &mut [u32; MAX_ENCOUNTER_DEPARTMENTS], d: u32) {
    if set.contains(&d) {
        return;
    }
    if let Some(slot) = set.iter().position(|&x| x == NONE || x > d) {
        set[slot..].rotate_right(1);
        set[slot] = d;
    }
}

/// Relationship kind names for explanations.
pub fn relationship_names(bits: u8) -> Vec<&'static str> {
    rel::NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A float nurse (directory department: the float pool) charting in the emergency
    /// department: the login department and the encounter the log names explain it.
    #[test]
    fn the_logs_department_and_encounter_explain_department_work() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "Organization",
                r#"{"resourceType":"Organization","id":"emergency","name":"Emergency Department"}"#,
            ),
            (
                "Practitioner",
                r#"{"resourceType":"Practitioner","id":"pr-1","identifier":[{"system":"urn:login","value":"nurse1"}]}"#,
            ),
            (
                "PractitionerRole",
                r#"{"resourceType":"PractitionerRole","id":"r1","practitioner":{"reference":"Practitioner/pr-1"},"organization":{"reference":"Organization/float-pool"},"code":[{"coding":[{"code":"nurse"}]}]}"#,
            ),
            (
                "Patient",
                r#"{"resourceType":"Patient","id":"pt-1","identifier":[{"system":"urn:mrn","value":"M1"}]}"#,
            ),
            (
                "Encounter",
                r#"{"resourceType":"Encounter","id":"enc-1","identifier":[{"system":"urn:csn","value":"CSN-77"}],"subject":{"reference":"Patient/pt-1"},"period":{"start":"2026-03-10T08:00:00Z","end":"2026-03-10T12:00:00Z"},"serviceProvider":{"reference":"Organization/emergency"}}"#,
            ),
        ];
        for (name, line) in files {
            std::fs::write(dir.path().join(format!("{name}.ndjson")), line).unwrap();
        }
        let settings = Settings::default();
        let (store, _) = crate::context::load_context(dir.path(), &settings).unwrap();
        let mut e = Enricher::new(&settings);
        let mut judge = |time: &str, department: &str, encounter: &str| {
            let ev = AccessEvent {
                id: "a".into(),
                time_ms: crate::time::parse_fhir_time(time).unwrap(),
                user: "nurse1".into(),
                patient: Some("M1".into()),
                department: department.into(),
                encounter: encounter.into(),
                ..AccessEvent::default()
            };
            e.enrich(&store, ev)
                .facts
                .has(ctx_flag::DEPARTMENT_ENCOUNTER)
        };
        let (during, later) = ("2026-03-10T09:00:00Z", "2026-09-10T09:00:00Z");
        assert!(!judge(during, "", ""), "the float pool has no encounter");
        assert!(
            judge(during, "EMERGENCY DEPARTMENT", ""),
            "logged in to the ED"
        );
        assert!(judge(during, "emergency", ""), "by the department's id");
        assert!(
            !judge(later, "Emergency Department", ""),
            "six months later"
        );
        assert!(
            judge(later, "Emergency Department", "CSN-77"),
            "late charting in the patient's ED encounter"
        );
        assert!(
            !judge(later, "", "CSN-77"),
            "the encounter is not in the user's department"
        );
        assert!(
            !judge(during, "Cardiology", "CSN-77"),
            "another department's login"
        );
    }

    #[test]
    fn encounter_departments_are_a_small_ascending_set() {
        let mut s = [NONE; MAX_ENCOUNTER_DEPARTMENTS];
        for d in [7, 3, 7, 9, 1, 12] {
            add_department(&mut s, d);
        }
        // Duplicates once; a full set keeps its lowest four.
        assert_eq!(s, [1, 3, 7, 9]);
        let key = FactKey {
            action: Action::View,
            role: NONE,
            department: NONE,
            user: 0,
            patient: 0,
            sensitive: 0,
            relationships: 0,
            context: 0,
            hour: 12,
            days_since_death: -1,
            encounter_departments: [2, 5, NONE, NONE],
        };
        assert_eq!(key.encounter_departments().collect::<Vec<_>>(), [2, 5]);
    }
}
