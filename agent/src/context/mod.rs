//! Who is who: users, patients and the care relationships that explain an access.
//!
//! Ids are interned to dense indices on first sight, so resources may arrive in any order and
//! in any file; a reference to a resource that never arrives stays a placeholder marked unknown
//! and is counted, never fatal. Relationships are indexed by (user, patient) so the question
//! "does user U have a relationship with patient P around time T" is one hash lookup.

mod load;
pub mod normalize;

pub use load::{load_context, ContextStats};

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
            .map(|a| {
                let mut parts: Vec<&str> = vec![];
                let line: Vec<&str> = a.line.iter().map(|l| l.as_ref()).collect();
                let line = line.join(" ");
                parts.push(&line);
                if let Some(c) = a.city.as_deref() {
                    parts.push(c);
                }
                if let Some(z) = a.postal_code.as_deref() {
                    parts.push(z);
                }
                parts.join(", ")
            })
            .unwrap_or_default()
            .into();
        Written { family, address }
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
    /// Care relationships with their windows, already widened by the configured lead and lag.
    relationships: AHashMap<(UserIx, PatientIx), Vec<Window>>,
    /// Every encounter per patient, unwidened, for department and break-the-glass questions.
    encounters: Vec<Vec<EncounterSpan>>,
    pub departments: Interner,
    pub roles: Interner,
    /// Department and role index per user, parallel to `users`.
    user_department: Vec<u32>,
    user_role: Vec<u32>,
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
        self.encounters.push(Vec::new());
        ix
    }

    fn add_relationship(&mut self, user: UserIx, patient: PatientIx, w: Window) {
        self.relationships
            .entry((user, patient))
            .or_default()
            .push(w);
    }
}
