//! Who is who: users, patients and the care relationships that explain an access.
//!
//! Ids are interned to dense indices on first sight, so resources may arrive in any order and
//! in any file; a reference to a resource that never arrives stays a placeholder marked unknown
//! and is counted, never fatal. Relationships are indexed by (user, patient) so the question
//! "does user U have a relationship with patient P around time T" is one hash lookup.

pub mod adt;
pub mod feeds;
pub mod identity;
pub mod inline;
mod load;
pub mod normalize;
mod roster;

pub use identity::Resolved;
pub use load::{adt_options, load_context, load_feeds, replay_journal, ContextStats};

use ahash::AHashMap;

pub type UserIx = u32;
pub type PatientIx = u32;

/// Relationship kinds, as bits so a set of them is one byte.
pub mod rel {
    pub const ENCOUNTER: u8 = 1;
    pub const CARE_TEAM: u8 = 2;
    pub const APPOINTMENT: u8 = 4;
    pub const NAMES: [(u8, &str); 3] = [
        (ENCOUNTER, "encounter"),
        (CARE_TEAM, "care_team"),
        (APPOINTMENT, "appointment"),
    ];
}

/// Sensitive-record labels from `meta.security`, as bits.
pub mod sensitive {
    pub const PSY: u8 = 1;
    pub const ETH: u8 = 2;
    pub const HIV: u8 = 4;
    pub const NAMES: [(u8, &str); 3] = [(PSY, "PSY"), (ETH, "ETH"), (HIV, "HIV")];
}

#[derive(Debug, Clone, Default)]
pub struct UserFacts {
    pub id: String,
    /// Present in the directory (a Practitioner resource was loaded).
    pub known: bool,
    pub family: Option<String>,
    pub address: Option<normalize::AddressKey>,
    pub role: String,
    pub department: String,
    /// `Practitioner.active = false` or `PractitionerRole.active = false`.
    pub inactive: bool,
    /// When every role of the user has ended: the last end. Access after it is by a terminated user.
    pub terminated_ms: Option<i64>,
    /// The user's own patient record, from a Person resource linking both.
    pub self_patient: Option<PatientIx>,
    pub written: Written,
}

#[derive(Debug, Clone, Default)]
pub struct PatientFacts {
    pub id: String,
    pub known: bool,
    pub family: Option<String>,
    pub address: Option<normalize::AddressKey>,
    /// Time of death; `Some(i64::MIN)` when only `deceasedBoolean: true` is known.
    pub deceased_ms: Option<i64>,
    pub vip: bool,
    /// Labelled EMP, or linked by a Person resource to a Practitioner.
    pub employee: bool,
    pub sensitive: u8,
    /// Confidentiality R (restricted) or V (very restricted).
    pub restricted: bool,
    /// The workforce member this patient is (Person link).
    pub employee_user: Option<UserIx>,
    pub written: Written,
    /// Known from access-log rows only (see [`inline`]): a feed naming it takes over.
    pub from_log: bool,
    /// Fingerprint of the last access-log row's demographics applied (0: none).
    pub log_digest: u64,
}

/// Family name and home address as the record writes them, for plugins that do their own
/// fuzzy matching (and only when the operator exposes them).
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub family: Box<str>,
    /// "line, city, postal code".
    pub address: Box<str>,
}

impl Written {
    pub fn of(
        names: &[crate::fhir::HumanName<'_>],
        addresses: &[crate::fhir::Address<'_>],
    ) -> Self {
        let family = crate::fhir::family_name(names).unwrap_or("").into();
        let address = crate::fhir::home_address(addresses)
            .map(Written::address_text)
            .unwrap_or_default()
            .into();
        Written { family, address }
    }

    /// "line, city, state postal code", as plugins see an address.
    pub fn address_text(a: &crate::fhir::Address<'_>) -> String {
        let mut parts: Vec<&str> = vec![];
        let line: Vec<&str> = a.line.iter().map(|l| l.as_ref()).collect();
        let line = line.join(" ");
        parts.push(&line);
        if let Some(c) = a.city.as_deref() {
            parts.push(c);
        }
        let place = [a.state.as_deref(), a.postal_code.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !place.is_empty() {
            parts.push(&place);
        }
        parts.join(", ")
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub kind: u8,
}

#[derive(Debug, Clone, Copy)]
pub struct EncounterSpan {
    pub start: i64,
    pub end: i64,
    /// Interned department (index into `ContextStore::departments`), `NONE` when unknown.
    pub department: u32,
}

#[derive(Debug, Default)]
pub struct ContextStore {
    pub users: Vec<UserFacts>,
    pub patients: Vec<PatientFacts>,
    user_ix: AHashMap<String, UserIx>,
    patient_ix: AHashMap<String, PatientIx>,
    /// Every other name of a user or patient (identifiers, role ids, crosswalk ids).
    pub user_alias: identity::Aliases,
    pub patient_alias: identity::Aliases,
    /// Care relationships with their windows, already widened by the configured lead and lag.
    relationships: AHashMap<(UserIx, PatientIx), Vec<Window>>,
    /// Every encounter per patient, unwidened, for department and break-the-glass questions.
    encounters: Vec<Vec<EncounterSpan>>,
    pub departments: Interner,
    pub roles: Interner,
    /// Department and role index per user, parallel to `users`.
    user_department: Vec<u32>,
    user_role: Vec<u32>,
    /// Visits known by number (HL7 v2 PV1-19), so a transfer, discharge or cancellation
    /// finds the encounter and the relationships an admission made.
    visits: AHashMap<String, Visit>,
    /// What access-log rows added (see [`inline`]).
    pub inline: inline::InlineStats,
    /// Department names (Organization.name), folded, to the interned department.
    department_names: AHashMap<String, u32>,
}

/// What one visit added to the store.
#[derive(Debug, Clone, Default)]
struct Visit {
    patient: PatientIx,
    encounter: usize,
    /// (user, patient, index into that pair's windows).
    windows: Vec<(UserIx, PatientIx, usize)>,
}

/// Dense indices for repeated names (departments, roles), so facts compare as integers.
#[derive(Debug, Default)]
pub struct Interner {
    names: Vec<String>,
    ix: AHashMap<String, u32>,
}

/// The index of "no name": an unknown department or role.
pub const NONE: u32 = u32::MAX;

impl Interner {
    pub fn intern(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return NONE;
        }
        if let Some(&ix) = self.ix.get(name) {
            return ix;
        }
        let ix = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ix.insert(name.to_owned(), ix);
        ix
    }

    /// The index of a name already interned.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ix.get(name).copied()
    }

    /// The name of an index; empty for [`NONE`].
    pub fn name(&self, ix: u32) -> &str {
        self.names
            .get(ix as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl ContextStore {
    pub fn user(&self, id: &str) -> Option<UserIx> {
        self.user_ix.get(id).copied()
    }

    pub fn patient(&self, id: &str) -> Option<PatientIx> {
        self.patient_ix.get(id).copied()
    }

    /// The user a log names, by id, reference, identifier or alias (see [`identity::keys`]).
    pub fn resolve_user(&self, raw: &str) -> Resolved {
        resolve(raw, &self.user_ix, &self.user_alias, false)
    }

    /// The patient a log names, by id, reference, identifier, MRN or alias.
    pub fn resolve_patient(&self, raw: &str) -> Resolved {
        resolve(raw, &self.patient_ix, &self.patient_alias, false)
    }

    /// The user an access log names: as [`Self::resolve_user`], else by the name's
    /// [`identity::loose_form`] (another case, another zero padding). Feeds are joined
    /// exactly; only a log's names, which no feed vouches for, are matched loosely.
    pub fn resolve_log_user(&self, raw: &str) -> Resolved {
        resolve(raw, &self.user_ix, &self.user_alias, true)
    }

    /// The patient an access log names: as [`Self::resolve_patient`], else loosely (see
    /// [`Self::resolve_log_user`]).
    pub fn resolve_log_patient(&self, raw: &str) -> Resolved {
        resolve(raw, &self.patient_ix, &self.patient_alias, true)
    }

    pub fn user_facts(&self, ix: UserIx) -> &UserFacts {
        &self.users[ix as usize]
    }

    pub fn patient_facts(&self, ix: PatientIx) -> &PatientFacts {
        &self.patients[ix as usize]
    }

    pub fn user_department_ix(&self, ix: UserIx) -> u32 {
        self.user_department
            .get(ix as usize)
            .copied()
            .unwrap_or(NONE)
    }

    pub fn user_role_ix(&self, ix: UserIx) -> u32 {
        self.user_role.get(ix as usize).copied().unwrap_or(NONE)
    }

    /// Relationship kinds (bits of [`rel`]) linking user and patient at time `t`.
    pub fn relationship_at(&self, user: UserIx, patient: PatientIx, t: i64) -> u8 {
        self.relationships
            .get(&(user, patient))
            .map(|ws| {
                ws.iter()
                    .filter(|w| w.start <= t && t <= w.end)
                    .fold(0, |acc, w| acc | w.kind)
            })
            .unwrap_or(0)
    }

    /// Encounters of the patient, for questions about departments and nearby visits.
    pub fn encounters_of(&self, patient: PatientIx) -> &[EncounterSpan] {
        self.encounters
            .get(patient as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn relationship_count(&self) -> usize {
        self.relationships.values().map(Vec::len).sum()
    }

    fn intern_user(&mut self, id: &str) -> UserIx {
        if let Some(&ix) = self.user_ix.get(id) {
            return ix;
        }
        let ix = self.users.len() as UserIx;
        self.users.push(UserFacts {
            id: id.to_owned(),
            ..UserFacts::default()
        });
        self.user_ix.insert(id.to_owned(), ix);
        self.user_alias.add_loose(id, ix);
        ix
    }

    fn intern_patient(&mut self, id: &str) -> PatientIx {
        if let Some(&ix) = self.patient_ix.get(id) {
            return ix;
        }
        let ix = self.patients.len() as PatientIx;
        self.patients.push(PatientFacts {
            id: id.to_owned(),
            ..PatientFacts::default()
        });
        self.patient_ix.insert(id.to_owned(), ix);
        self.patient_alias.add_loose(id, ix);
        self.encounters.push(Vec::new());
        ix
    }

    /// The patient any of `keys` names, else a new one with canonical id `id`; every key
    /// becomes an alias of the patient (a feed's MRN, account number, EHR id).
    pub fn upsert_patient(&mut self, id: &str, keys: &[String]) -> PatientIx {
        let found = std::iter::once(id)
            .chain(keys.iter().map(String::as_str))
            .find_map(|k| match self.resolve_patient(k) {
                Resolved::Found(ix) => Some(ix),
                _ => None,
            });
        let ix = found.unwrap_or_else(|| self.intern_patient(id));
        self.patients[ix as usize].known = true;
        self.patients[ix as usize].from_log = false;
        for k in keys {
            self.patient_alias.add(k, ix);
        }
        ix
    }

    pub fn patient_mut(&mut self, ix: PatientIx) -> &mut PatientFacts {
        &mut self.patients[ix as usize]
    }

    pub fn user_mut(&mut self, ix: UserIx) -> &mut UserFacts {
        &mut self.users[ix as usize]
    }

    /// Adds or replaces the encounter of visit `visit` (a transfer moves it, an update
    /// re-times it) with relationships to `staff`, windows widened by `lead`/`lag`.
    pub fn upsert_visit(
        &mut self,
        visit: &str,
        patient: PatientIx,
        span: EncounterSpan,
        staff: &[UserIx],
        lead_lag: (i64, i64),
    ) {
        let window = |kind| Window {
            start: span.start.saturating_sub(lead_lag.0),
            end: span.end.saturating_add(lead_lag.1),
            kind,
        };
        let v = match self.visits.get(visit).cloned() {
            Some(v) if v.patient == patient => {
                self.encounters[patient as usize][v.encounter] = span;
                for &(u, p, i) in &v.windows {
                    if let Some(w) = self
                        .relationships
                        .get_mut(&(u, p))
                        .and_then(|ws| ws.get_mut(i))
                    {
                        *w = window(rel::ENCOUNTER);
                    }
                }
                v
            }
            _ => {
                let encounters = &mut self.encounters[patient as usize];
                encounters.push(span);
                Visit {
                    patient,
                    encounter: encounters.len() - 1,
                    windows: Vec::new(),
                }
            }
        };
        let mut v = v;
        for &u in staff {
            if v.windows.iter().any(|&(wu, _, _)| wu == u) {
                continue;
            }
            let ws = self.relationships.entry((u, patient)).or_default();
            ws.push(window(rel::ENCOUNTER));
            v.windows.push((u, patient, ws.len() - 1));
        }
        self.visits.insert(visit.to_owned(), v);
    }

    /// Records that `name` is another name of department `id`.
    pub fn name_department(&mut self, name: &str, id: &str) {
        let ix = self.departments.intern(id);
        let key = crate::tabular::fold(name);
        if ix != NONE && !key.is_empty() {
            self.department_names.insert(key, ix);
        }
    }

    /// The department a log names, by its id or its name (case and spacing aside).
    pub fn department_named(&self, name: &str) -> Option<u32> {
        self.departments.get(name).or_else(|| {
            self.department_names
                .get(&crate::tabular::fold(name))
                .copied()
        })
    }

    /// Adds an encounter known by the visit numbers `visits` (a FHIR Encounter's identifiers).
    pub fn add_encounter(&mut self, patient: PatientIx, span: EncounterSpan, visits: &[String]) {
        let encounters = &mut self.encounters[patient as usize];
        encounters.push(span);
        let encounter = encounters.len() - 1;
        for v in visits {
            self.visits.insert(
                v.clone(),
                Visit {
                    patient,
                    encounter,
                    windows: Vec::new(),
                },
            );
        }
    }

    /// The patient and the encounter of a visit number an access names.
    pub fn visit_of(&self, visit: &str) -> Option<(PatientIx, EncounterSpan)> {
        let v = self.visits.get(visit)?;
        let span = self.encounters.get(v.patient as usize)?.get(v.encounter)?;
        Some((v.patient, *span))
    }

    /// The encounter of a visit, to re-time it (discharge, cancelled discharge).
    pub fn visit_span(&self, visit: &str) -> Option<EncounterSpan> {
        self.visit_of(visit).map(|(_, span)| span)
    }

    /// Undoes a visit (cancelled admission or registration): its encounter and the
    /// relationships it made explain nothing any more.
    pub fn cancel_visit(&mut self, visit: &str) -> bool {
        let Some(v) = self.visits.remove(visit) else {
            return false;
        };
        let never = EncounterSpan {
            start: i64::MAX,
            end: i64::MIN,
            department: NONE,
        };
        if let Some(e) = self.encounters[v.patient as usize].get_mut(v.encounter) {
            *e = never;
        }
        for (u, p, i) in v.windows {
            if let Some(w) = self
                .relationships
                .get_mut(&(u, p))
                .and_then(|ws| ws.get_mut(i))
            {
                w.start = i64::MAX;
                w.end = i64::MIN;
            }
        }
        true
    }

    /// Two records of one patient become one (HL7 v2 A40): every name of `from` resolves to
    /// `into`, and its encounters and relationships move there.
    pub fn merge_patients(&mut self, from: PatientIx, into: PatientIx) {
        if from == into {
            return;
        }
        self.patient_alias.redirect(from, into);
        let old_id = self.patients[from as usize].id.clone();
        self.patient_ix.insert(old_id.clone(), into);
        self.patient_alias.add(&old_id, into);
        let moved = std::mem::take(&mut self.encounters[from as usize]);
        let base = self.encounters[into as usize].len();
        self.encounters[into as usize].extend(moved);
        let pairs: Vec<(UserIx, PatientIx)> = self
            .relationships
            .keys()
            .filter(|(_, p)| *p == from)
            .copied()
            .collect();
        let mut remap: AHashMap<(UserIx, usize), usize> = AHashMap::new();
        for (u, p) in pairs {
            if let Some(ws) = self.relationships.remove(&(u, p)) {
                let into_ws = self.relationships.entry((u, into)).or_default();
                for (i, w) in ws.into_iter().enumerate() {
                    into_ws.push(w);
                    remap.insert((u, i), into_ws.len() - 1);
                }
            }
        }
        for v in self.visits.values_mut().filter(|v| v.patient == from) {
            v.patient = into;
            v.encounter += base;
            for w in &mut v.windows {
                if let Some(&ni) = remap.get(&(w.0, w.2)) {
                    *w = (w.0, into, ni);
                }
            }
        }
        let f = self.patients[from as usize].clone();
        let t = &mut self.patients[into as usize];
        t.family = t.family.take().or(f.family);
        t.address = t.address.take().or(f.address);
        t.vip |= f.vip;
        t.restricted |= f.restricted;
        t.sensitive |= f.sensitive;
        t.employee |= f.employee;
        t.employee_user = t.employee_user.or(f.employee_user);
        t.deceased_ms = t.deceased_ms.or(f.deceased_ms);
        t.known = true;
        if let Some(u) = f.employee_user {
            self.users[u as usize].self_patient = Some(into);
        }
        self.patients[from as usize].known = false;
    }

    /// The user any of `keys` names, if one does.
    pub fn find_user(&self, keys: &[String]) -> Option<UserIx> {
        keys.iter().find_map(|k| match self.resolve_user(k) {
            Resolved::Found(ix) => Some(ix),
            _ => None,
        })
    }

    /// Department and role indexes per user, from their role and department names.
    fn index_users(&mut self) {
        self.user_department.clear();
        self.user_role.clear();
        for i in 0..self.users.len() {
            let d = self.users[i].department.clone();
            let dept = self.departments.intern(&d);
            let r = self.users[i].role.clone();
            let role = self.roles.intern(&r);
            self.user_department.push(dept);
            self.user_role.push(role);
        }
    }

    /// The user and the patient are one human (a Person resource or a crosswalk row):
    /// self-access, coworkers and the user's household follow.
    fn link_same_person(&mut self, user: UserIx, patient: PatientIx) {
        self.users[user as usize].self_patient = Some(patient);
        let pf = &mut self.patients[patient as usize];
        pf.employee = true;
        pf.employee_user = Some(user);
    }

    fn add_relationship(&mut self, user: UserIx, patient: PatientIx, w: Window) {
        self.relationships
            .entry((user, patient))
            .or_default()
            .push(w);
    }
}

/// `raw` by id or alias, each of its keys as written; then, when `loosely`, each in its
/// loose form. The keys are worked out once for both passes.
fn resolve(
    raw: &str,
    ids: &AHashMap<String, u32>,
    aliases: &identity::Aliases,
    loosely: bool,
) -> Resolved {
    if let Some(&ix) = ids.get(raw) {
        return Resolved::Found(ix);
    }
    let keys = identity::keys(raw);
    for key in &keys {
        match key {
            identity::Key::Id(id) => {
                if let Some(&ix) = ids.get(id) {
                    return Resolved::Found(ix);
                }
            }
            identity::Key::Alias(a) => match aliases.get(a) {
                Some(identity::Alias::One(ix)) => return Resolved::Found(ix),
                Some(identity::Alias::Ambiguous) => return Resolved::Ambiguous,
                None => {}
            },
        }
    }
    if !loosely {
        return Resolved::Missing;
    }
    for key in &keys {
        let (identity::Key::Id(k) | identity::Key::Alias(k)) = key;
        let loose = identity::loose_form(k);
        let by_id = ids.get(&loose).map(|&ix| identity::Alias::One(ix));
        match identity::join(by_id, aliases.get_loose(&loose)) {
            Some(identity::Alias::One(ix)) => return Resolved::Found(ix),
            Some(identity::Alias::Ambiguous) => return Resolved::Ambiguous,
            None => {}
        }
    }
    Resolved::Missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(lines: &[&str]) -> (ContextStore, ContextStats) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("all.ndjson"), lines.join("\n")).unwrap();
        let settings = crate::settings::Settings::default();
        load_context(d.path(), &settings).unwrap()
    }

    /// Third-party shapes: identifiers on Practitioner and Patient, a role that names its
    /// practitioner by identifier, encounter participants named by conditional reference
    /// (as Synthea writes them) and by PractitionerRole, a subject named by MRN.
    #[test]
    fn people_resolve_by_every_name_a_log_or_feed_uses() {
        let (c, stats) = load(&[
            r#"{"resourceType":"Practitioner","id":"pr-1","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"9999941"},{"system":"urn:ehr:login","value":"jsmith42"}],"name":[{"family":"Smith"}]}"#,
            r#"{"resourceType":"PractitionerRole","id":"role-1","practitioner":{"identifier":{"system":"urn:ehr:login","value":"jsmith42"}},"code":[{"coding":[{"code":"doctor"}]}],"organization":{"reference":"Organization/cardiology"}}"#,
            r#"{"resourceType":"Patient","id":"pt-1","identifier":[{"system":"urn:oid:1.2.3","value":"MRN-77"}],"name":[{"family":"Doe"}]}"#,
            r#"{"resourceType":"Encounter","subject":{"reference":"Patient?identifier=urn:oid:1.2.3|MRN-77"},"participant":[{"individual":{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999941"}}],"period":{"start":"2026-03-10T08:00:00Z","end":"2026-03-10T18:00:00Z"},"serviceProvider":{"reference":"Organization/cardiology"}}"#,
            r#"{"resourceType":"CareTeam","subject":{"reference":"Patient/pt-1"},"participant":[{"member":{"reference":"PractitionerRole/role-1"}}]}"#,
        ]);
        let u = c.user("pr-1").unwrap();
        let p = c.patient("pt-1").unwrap();
        for name in [
            "pr-1",
            "Practitioner/pr-1",
            "https://ehr.example.org/fhir/Practitioner/pr-1/_history/2",
            "urn:ehr:login|jsmith42",
            "jsmith42",
            "http://hl7.org/fhir/sid/us-npi|9999941",
            "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999941",
            "PractitionerRole/role-1",
        ] {
            assert_eq!(c.resolve_user(name), Resolved::Found(u), "{name}");
        }
        for name in [
            "pt-1",
            "urn:oid:1.2.3|MRN-77",
            "MRN-77",
            "MRN-77^^^1.2.3^MR",
        ] {
            assert_eq!(c.resolve_patient(name), Resolved::Found(p), "{name}");
        }
        assert_eq!(c.resolve_user("nobody"), Resolved::Missing);
        let t = crate::time::parse_fhir_time("2026-03-10T12:00:00Z").unwrap();
        assert_eq!(
            c.relationship_at(u, p, t),
            rel::ENCOUNTER | rel::CARE_TEAM,
            "both the conditional and the role reference resolve"
        );
        assert_eq!(c.user_facts(u).role, "doctor");
        assert_eq!(c.encounters_of(p).len(), 1);
        assert_eq!(
            stats.unresolved_users + stats.unresolved_patients,
            0,
            "{stats:?}"
        );
    }

    #[test]
    fn an_identifier_shared_by_two_people_resolves_to_nobody() {
        let (c, stats) = load(&[
            r#"{"resourceType":"Practitioner","id":"a","identifier":[{"system":"urn:ad","value":"jdoe"}]}"#,
            r#"{"resourceType":"Practitioner","id":"b","identifier":[{"system":"urn:ehr","value":"jdoe"}]}"#,
        ]);
        assert_eq!(c.resolve_user("jdoe"), Resolved::Ambiguous);
        assert_eq!(
            c.resolve_user("urn:ad|jdoe"),
            Resolved::Found(c.user("a").unwrap())
        );
        assert_eq!(stats.ambiguous_users, 1);
        assert_eq!(c.user_alias.ambiguous, ["jdoe"]);
    }

    /// Logs upper-case logins and drop an MRN's zero padding; feeds are still joined as
    /// written, and a name written exactly always wins over a loose match.
    #[test]
    fn a_log_naming_people_in_another_case_or_padding_finds_them() {
        let (c, _) = load(&[
            r#"{"resourceType":"Practitioner","id":"pr-1","identifier":[{"system":"urn:ehr:login","value":"jsmith42"}]}"#,
            r#"{"resourceType":"Practitioner","id":"E1002"}"#,
            r#"{"resourceType":"Patient","id":"pt-1","identifier":[{"system":"urn:oid:1.2.3","value":"000123987"}]}"#,
            r#"{"resourceType":"Patient","id":"pt-2","identifier":[{"system":"urn:oid:1.2.3","value":"0555"}]}"#,
            r#"{"resourceType":"Patient","id":"pt-3","identifier":[{"system":"urn:oid:1.2.3","value":"555"}]}"#,
        ]);
        let (u, e) = (c.user("pr-1").unwrap(), c.user("E1002").unwrap());
        for name in ["JSMITH42", "urn:ehr:login|JSmith42", "jsmith42"] {
            assert_eq!(c.resolve_log_user(name), Resolved::Found(u), "{name}");
        }
        assert_eq!(
            c.resolve_user("JSMITH42"),
            Resolved::Missing,
            "feeds join exactly"
        );
        assert_eq!(c.resolve_log_user("e1002"), Resolved::Found(e));
        assert_eq!(c.resolve_log_user("Practitioner/e1002"), Resolved::Found(e));
        let p = c.patient("pt-1").unwrap();
        for name in [
            "123987",
            "00123987",
            "urn:oid:1.2.3|123987",
            "123987^^^1.2.3^MR",
        ] {
            assert_eq!(c.resolve_log_patient(name), Resolved::Found(p), "{name}");
        }
        // 0555 and 555 are two patients: each as written is found, 00555 is neither.
        assert_eq!(
            c.resolve_log_patient("555"),
            Resolved::Found(c.patient("pt-3").unwrap())
        );
        assert_eq!(
            c.resolve_log_patient("0555"),
            Resolved::Found(c.patient("pt-2").unwrap())
        );
        assert_eq!(c.resolve_log_patient("00555"), Resolved::Ambiguous);
        assert_eq!(c.resolve_log_user("jsmith43"), Resolved::Missing);
    }
}
