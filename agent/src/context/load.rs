//! Loads the context store from FHIR R4 NDJSON (Bulk Data export shape: one resource per line,
//! one resource type per file or mixed). Bad lines and unknown types are counted and reported
//! with file and line; they never stop the load.

use super::{identity, normalize, Resolved};
use super::{ContextStore, EncounterSpan, PatientIx, UserIx, Window, Written};
use crate::context::{rel, sensitive};
use crate::fhir::{
    family_name, home_address, Address, CodeableConcept, HumanName, Identifier, Meta, Period,
    Reference, Str,
};
use crate::settings::Settings;
use crate::time::parse_fhir_time;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// What a load saw. Printed by `scan` so an operator can tell a thin directory from a bad one.
#[derive(Debug, Default)]
pub struct ContextStats {
    pub files: usize,
    pub resources: BTreeMap<String, usize>,
    pub unknown_types: BTreeMap<String, usize>,
    pub bad_lines: usize,
    /// The first problems, `file:line: reason`, for the operator. All are counted in `bad_lines`.
    pub problems: Vec<String>,
    pub unresolved_users: usize,
    pub unresolved_patients: usize,
    /// Aliases (identifiers, logins, MRNs) that name two or more people.
    pub ambiguous_users: usize,
    pub ambiguous_patients: usize,
    /// References that resolved to an ambiguous alias.
    pub ambiguous_references: usize,
}

const MAX_REPORTED: usize = 20;

impl ContextStats {
    /// The operator-facing summary `scan` and `demo` print.
    pub fn render(&self) -> String {
        let s = self;
        let mut out = format!("context: {} file(s)", s.files);
        for (k, v) in &s.resources {
            out.push_str(&format!(", {v} {k}"));
        }
        out.push('\n');
        for (k, v) in &s.unknown_types {
            out.push_str(&format!(
                "  skipped {v} resource(s) of unsupported type {k}\n"
            ));
        }
        if s.bad_lines > 0 {
            out.push_str(&format!("  {} bad context line(s):\n", s.bad_lines));
            for p in &s.problems {
                out.push_str(&format!("    {p}\n"));
            }
        }
        if s.unresolved_users + s.unresolved_patients > 0 {
            out.push_str(&format!(
                "  unresolved references: {} to practitioners, {} to patients not in the context\n",
                s.unresolved_users, s.unresolved_patients
            ));
        }
        if s.ambiguous_users + s.ambiguous_patients > 0 {
            out.push_str(&format!(
                "  ambiguous aliases (naming two or more people, never used): {} of users, {} of patients\n",
                s.ambiguous_users, s.ambiguous_patients
            ));
        }
        out
    }

    fn problem(&mut self, file: &Path, line: usize, reason: impl std::fmt::Display) {
        self.bad_lines += 1;
        if self.problems.len() < MAX_REPORTED {
            self.problems
                .push(format!("{}:{line}: {reason}", file.display()));
        }
    }
}

/// Loads every `*.ndjson` / `*.json` file in `dir` (or the single file `dir`).
pub fn load_context(
    dir: &Path,
    settings: &Settings,
) -> std::io::Result<(ContextStore, ContextStats)> {
    let files = context_files(dir)?;
    let mut b = Builder::new(settings);
    for file in &files {
        b.stats.files += 1;
        let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
        let mut line_no = 0;
        for line in reader.split(b'\n') {
            line_no += 1;
            let line = line?;
            if line.trim_ascii().is_empty() {
                continue;
            }
            b.line(file, line_no, &line);
        }
    }
    Ok(b.finish())
}

fn context_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("ndjson" | "jsonl" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "resourceType")]
    resource_type: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct PractitionerJson<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow, default)]
    identifier: Vec<Identifier<'a>>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(borrow, default)]
    name: Vec<HumanName<'a>>,
    #[serde(borrow, default)]
    address: Vec<Address<'a>>,
}

#[derive(Deserialize)]
struct PractitionerRoleJson<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    identifier: Vec<Identifier<'a>>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(borrow, default)]
    practitioner: Option<Reference<'a>>,
    #[serde(borrow, default)]
    organization: Option<Reference<'a>>,
    #[serde(borrow, default)]
    code: Vec<CodeableConcept<'a>>,
    #[serde(borrow, default)]
    specialty: Vec<CodeableConcept<'a>>,
    #[serde(borrow, default)]
    period: Option<Period<'a>>,
}

#[derive(Deserialize)]
struct PatientJson<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow, default)]
    identifier: Vec<Identifier<'a>>,
    #[serde(borrow, default)]
    meta: Option<Meta<'a>>,
    #[serde(borrow, default)]
    name: Vec<HumanName<'a>>,
    #[serde(borrow, default)]
    address: Vec<Address<'a>>,
    #[serde(borrow, default, rename = "deceasedDateTime")]
    deceased_date_time: Option<Str<'a>>,
    #[serde(default, rename = "deceasedBoolean")]
    deceased_boolean: Option<bool>,
}

#[derive(Deserialize)]
struct PersonJson<'a> {
    #[serde(borrow, default)]
    link: Vec<PersonLink<'a>>,
}

#[derive(Deserialize)]
struct PersonLink<'a> {
    #[serde(borrow)]
    target: Reference<'a>,
}

#[derive(Deserialize)]
struct EncounterJson<'a> {
    #[serde(borrow, default)]
    subject: Option<Reference<'a>>,
    #[serde(borrow, default)]
    participant: Vec<EncounterParticipant<'a>>,
    #[serde(borrow, default)]
    period: Option<Period<'a>>,
    #[serde(borrow, default, rename = "serviceProvider")]
    service_provider: Option<Reference<'a>>,
}

#[derive(Deserialize)]
struct EncounterParticipant<'a> {
    #[serde(borrow, default)]
    individual: Option<Reference<'a>>,
    #[serde(borrow, default)]
    period: Option<Period<'a>>,
}

#[derive(Deserialize)]
struct CareTeamJson<'a> {
    #[serde(borrow, default)]
    subject: Option<Reference<'a>>,
    #[serde(borrow, default)]
    participant: Vec<CareTeamParticipant<'a>>,
    #[serde(borrow, default)]
    period: Option<Period<'a>>,
}

#[derive(Deserialize)]
struct CareTeamParticipant<'a> {
    #[serde(borrow, default)]
    member: Option<Reference<'a>>,
    #[serde(borrow, default)]
    period: Option<Period<'a>>,
}

#[derive(Deserialize)]
struct AppointmentJson<'a> {
    #[serde(borrow, default)]
    start: Option<Str<'a>>,
    #[serde(borrow, default)]
    end: Option<Str<'a>>,
    #[serde(borrow, default)]
    participant: Vec<AppointmentParticipant<'a>>,
}

#[derive(Deserialize)]
struct AppointmentParticipant<'a> {
    #[serde(borrow, default)]
    actor: Option<Reference<'a>>,
}

/// A person a context resource refers to: by literal id (interned at once), or by an
/// identifier, conditional reference or role id, resolved once every alias is known.
#[derive(Debug, Clone)]
enum Who {
    Ix(u32),
    Key(String),
}

struct Role {
    role: String,
    department: String,
    start: Option<i64>,
    end: Option<i64>,
    inactive: bool,
}

struct PendingRelationship {
    member: Who,
    patient: Who,
    window: Window,
}

struct PendingRole {
    practitioner: Who,
    id: Option<String>,
    identifiers: Vec<String>,
    role: Role,
}

struct PendingEncounter {
    patient: String,
    span: EncounterSpan,
}

struct Builder<'s> {
    settings: &'s Settings,
    store: ContextStore,
    stats: ContextStats,
    roles_by_user: Vec<Vec<Role>>,
    pending_roles: Vec<PendingRole>,
    pending: Vec<PendingRelationship>,
    pending_encounters: Vec<PendingEncounter>,
    pending_people: Vec<(Vec<Who>, Vec<Who>)>,
    user_defined: Vec<bool>,
    patient_defined: Vec<bool>,
}

impl<'s> Builder<'s> {
    fn new(settings: &'s Settings) -> Self {
        Builder {
            settings,
            store: ContextStore::default(),
            stats: ContextStats::default(),
            roles_by_user: Vec::new(),
            pending_roles: Vec::new(),
            pending: Vec::new(),
            pending_encounters: Vec::new(),
            pending_people: Vec::new(),
            user_defined: Vec::new(),
            patient_defined: Vec::new(),
        }
    }

    fn user(&mut self, id: &str) -> UserIx {
        let ix = self.store.intern_user(id);
        if self.roles_by_user.len() <= ix as usize {
            self.roles_by_user.resize_with(ix as usize + 1, Vec::new);
            self.user_defined.resize(ix as usize + 1, false);
        }
        ix
    }

    fn patient(&mut self, id: &str) -> PatientIx {
        let ix = self.store.intern_patient(id);
        if self.patient_defined.len() <= ix as usize {
            self.patient_defined.resize(ix as usize + 1, false);
        }
        ix
    }

    fn line(&mut self, file: &Path, line_no: usize, line: &[u8]) {
        let env: Envelope<'_> = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(e) => {
                let err = crate::decode::DecodeError::from_json(&e);
                return self.stats.problem(file, line_no, err);
            }
        };
        let Some(rt) = env.resource_type.as_deref() else {
            return self.stats.problem(file, line_no, "no resourceType");
        };
        let result = match rt {
            "Practitioner" => self.practitioner(line),
            "PractitionerRole" => self.practitioner_role(line),
            "Patient" => self.patient_resource(line),
            "Person" => self.person(line),
            "Encounter" => self.encounter(line),
            "CareTeam" => self.care_team(line),
            "Appointment" => self.appointment(line),
            // Departments are named by reference; the Organization resource adds nothing yet.
            "Organization" => Ok(()),
            other => {
                *self
                    .stats
                    .unknown_types
                    .entry(other.chars().take(40).collect())
                    .or_default() += 1;
                return;
            }
        };
        match result {
            Ok(()) => *self.stats.resources.entry(rt.to_owned()).or_default() += 1,
            Err(e) => {
                let reason = format!("{rt}: {}", crate::decode::DecodeError::from_json(&e));
                self.stats.problem(file, line_no, reason)
            }
        }
    }

    fn practitioner(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let p: PractitionerJson<'_> = serde_json::from_slice(line)?;
        let ix = self.user(&p.id);
        self.user_defined[ix as usize] = true;
        for i in &p.identifier {
            alias_identifier(&mut self.store.user_alias, i, ix);
        }
        let u = &mut self.store.users[ix as usize];
        u.known = true;
        u.inactive |= p.active == Some(false);
        u.family = family_name(&p.name).and_then(normalize::family);
        u.address = home_address(&p.address).and_then(normalize::address);
        u.written = Written::of(&p.name, &p.address);
        Ok(())
    }

    fn practitioner_role(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let r: PractitionerRoleJson<'_> = serde_json::from_slice(line)?;
        let Some(practitioner) = r
            .practitioner
            .as_ref()
            .and_then(|p| self.who(p, "Practitioner"))
        else {
            return Ok(());
        };
        let department = r
            .organization
            .as_ref()
            .and_then(|o| o.id_of("Organization"))
            .or_else(|| r.specialty.iter().find_map(CodeableConcept::first_code))
            .unwrap_or("")
            .to_owned();
        let period = r.period.as_ref();
        let role = Role {
            role: r
                .code
                .iter()
                .find_map(CodeableConcept::first_code)
                .unwrap_or("")
                .to_ascii_lowercase(),
            department,
            start: period
                .and_then(|p| p.start.as_deref())
                .and_then(parse_fhir_time),
            end: period
                .and_then(|p| p.end.as_deref())
                .and_then(parse_fhir_time),
            inactive: r.active == Some(false),
        };
        let identifiers = r
            .identifier
            .iter()
            .flat_map(|i| {
                identity::identifier_keys(i.system.as_deref(), i.value.as_deref().unwrap_or(""))
            })
            .flatten()
            .collect();
        self.pending_roles.push(PendingRole {
            practitioner,
            id: r.id.as_deref().map(str::to_owned),
            identifiers,
            role,
        });
        Ok(())
    }

    fn patient_resource(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let p: PatientJson<'_> = serde_json::from_slice(line)?;
        let ix = self.patient(&p.id);
        self.patient_defined[ix as usize] = true;
        for i in &p.identifier {
            alias_identifier(&mut self.store.patient_alias, i, ix);
        }
        let f = &mut self.store.patients[ix as usize];
        f.known = true;
        f.family = family_name(&p.name).and_then(normalize::family);
        f.address = home_address(&p.address).and_then(normalize::address);
        f.written = Written::of(&p.name, &p.address);
        f.deceased_ms = match (p.deceased_date_time.as_deref(), p.deceased_boolean) {
            (Some(t), _) => parse_fhir_time(t).or(Some(i64::MIN)),
            (None, Some(true)) => Some(i64::MIN),
            _ => None,
        };
        for label in p.meta.iter().flat_map(|m| m.security.iter()) {
            match label.code() {
                "CEL" | "VIP" => f.vip = true,
                "EMP" => f.employee = true,
                "PSY" | "PSYTHPN" => f.sensitive |= sensitive::PSY,
                "ETH" => f.sensitive |= sensitive::ETH,
                "HIV" => f.sensitive |= sensitive::HIV,
                "R" | "V" => f.restricted = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// A reference to a person of resource type `ty` ("Practitioner" or "Patient"); a
    /// PractitionerRole counts as its practitioner.
    fn who(&mut self, r: &Reference<'_>, ty: &str) -> Option<Who> {
        if let Some(lit) = r.reference.as_deref() {
            if lit.starts_with('#') {
                // A contained resource: it has no identity outside the resource.
                return None;
            }
            if let Some(id) = r.id_of(ty).filter(|_| !lit.contains('?')) {
                return Some(Who::Ix(match ty {
                    "Patient" => self.patient(id),
                    _ => self.user(id),
                }));
            }
            let role_ref = ty == "Practitioner" && r.id_of("PractitionerRole").is_some();
            if lit.contains("?identifier=") || role_ref {
                return Some(Who::Key(lit.to_owned()));
            }
            return None;
        }
        let i = r.identifier.as_ref()?;
        let value = i.value.as_deref().filter(|v| !v.trim().is_empty())?;
        if r.type_
            .as_deref()
            .is_some_and(|t| t != ty && !(ty == "Practitioner" && t == "PractitionerRole"))
        {
            return None;
        }
        Some(Who::Key(match i.system.as_deref() {
            Some(s) if !s.is_empty() => format!("{s}|{value}"),
            _ => value.to_owned(),
        }))
    }

    fn person(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let p: PersonJson<'_> = serde_json::from_slice(line)?;
        let mut users = Vec::new();
        let mut patients = Vec::new();
        for l in &p.link {
            let t = &l.target;
            let is_patient = t.id_of("Patient").is_some()
                || t.reference
                    .as_deref()
                    .is_some_and(|r| r.starts_with("Patient?"))
                || t.type_.as_deref() == Some("Patient");
            if is_patient {
                patients.extend(self.who(t, "Patient"));
            } else {
                users.extend(self.who(t, "Practitioner"));
            }
        }
        self.pending_people.push((users, patients));
        Ok(())
    }

    fn window(&self, period: Option<&Period<'_>>, fallback: (i64, i64)) -> (i64, i64) {
        let start = period
            .and_then(|p| p.start.as_deref())
            .and_then(parse_fhir_time)
            .unwrap_or(fallback.0);
        let end = period
            .and_then(|p| p.end.as_deref())
            .and_then(parse_fhir_time)
            .unwrap_or(fallback.1);
        (start, end.max(start))
    }

    fn widen(&self, (start, end): (i64, i64), kind: u8) -> Window {
        Window {
            start: start.saturating_sub(self.settings.relationship_lead_ms),
            end: end.saturating_add(self.settings.relationship_lag_ms),
            kind,
        }
    }

    fn encounter(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let e: EncounterJson<'_> = serde_json::from_slice(line)?;
        let Some(patient) = e.subject.as_ref().and_then(|s| self.who(s, "Patient")) else {
            return Ok(());
        };
        let start = e
            .period
            .as_ref()
            .and_then(|p| p.start.as_deref())
            .and_then(parse_fhir_time);
        let Some(start) = start else { return Ok(()) };
        let open_end = start.saturating_add(self.settings.open_encounter_ms);
        let span = self.window(e.period.as_ref(), (start, open_end));
        let dept = e
            .service_provider
            .as_ref()
            .and_then(|o| o.id_of("Organization"))
            .unwrap_or("");
        let department = self.store.departments.intern(dept);
        let es = EncounterSpan {
            start: span.0,
            end: span.1,
            department,
        };
        match &patient {
            Who::Ix(p) => self.store.encounters[*p as usize].push(es),
            Who::Key(k) => self.pending_encounters.push(PendingEncounter {
                patient: k.clone(),
                span: es,
            }),
        }
        for part in &e.participant {
            let Some(member) = part
                .individual
                .as_ref()
                .and_then(|r| self.who(r, "Practitioner"))
            else {
                continue;
            };
            let own = self.window(part.period.as_ref(), span);
            let window = self.widen(own, rel::ENCOUNTER);
            self.pending.push(PendingRelationship {
                member,
                patient: patient.clone(),
                window,
            });
        }
        Ok(())
    }

    fn care_team(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let c: CareTeamJson<'_> = serde_json::from_slice(line)?;
        let Some(patient) = c.subject.as_ref().and_then(|s| self.who(s, "Patient")) else {
            return Ok(());
        };
        let team = self.window(c.period.as_ref(), (i64::MIN, i64::MAX));
        for part in &c.participant {
            let Some(member) = part
                .member
                .as_ref()
                .and_then(|r| self.who(r, "Practitioner"))
            else {
                continue;
            };
            let own = self.window(part.period.as_ref(), team);
            let window = self.widen(own, rel::CARE_TEAM);
            self.pending.push(PendingRelationship {
                member,
                patient: patient.clone(),
                window,
            });
        }
        Ok(())
    }

    fn appointment(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let a: AppointmentJson<'_> = serde_json::from_slice(line)?;
        let Some(start) = a.start.as_deref().and_then(parse_fhir_time) else {
            return Ok(());
        };
        let end = a
            .end
            .as_deref()
            .and_then(parse_fhir_time)
            .unwrap_or(start)
            .max(start);
        let actors: Vec<&Reference<'_>> = a
            .participant
            .iter()
            .filter_map(|p| p.actor.as_ref())
            .collect();
        let is_patient = |r: &Reference<'_>| {
            r.id_of("Patient").is_some()
                || r.type_.as_deref() == Some("Patient")
                || r.reference
                    .as_deref()
                    .is_some_and(|x| x.starts_with("Patient?"))
        };
        let Some(patient) = actors
            .iter()
            .find(|r| is_patient(r))
            .and_then(|r| self.who(r, "Patient"))
        else {
            return Ok(());
        };
        let window = self.widen((start, end), rel::APPOINTMENT);
        for r in actors.into_iter().filter(|r| !is_patient(r)) {
            if let Some(member) = self.who(r, "Practitioner") {
                self.pending.push(PendingRelationship {
                    member,
                    patient: patient.clone(),
                    window,
                });
            }
        }
        Ok(())
    }

    /// The index a deferred reference resolves to, once every alias is known.
    fn resolve(&mut self, w: &Who, patient: bool) -> Option<u32> {
        match w {
            Who::Ix(ix) => Some(*ix),
            Who::Key(k) => {
                let r = if patient {
                    self.store.resolve_patient(k)
                } else {
                    self.store.resolve_user(k)
                };
                match r {
                    Resolved::Found(ix) => Some(ix),
                    Resolved::Ambiguous => {
                        self.stats.ambiguous_references += 1;
                        None
                    }
                    Resolved::Missing => None,
                }
            }
        }
    }

    fn finish(mut self) -> (ContextStore, ContextStats) {
        // Roles first: their ids are aliases that encounters and care teams may use.
        for r in std::mem::take(&mut self.pending_roles) {
            let Some(u) = self.resolve(&r.practitioner, false) else {
                self.stats.unresolved_users += 1;
                continue;
            };
            if let Some(id) = &r.id {
                self.store
                    .user_alias
                    .add(&format!("PractitionerRole/{id}"), u);
            }
            for k in &r.identifiers {
                self.store.user_alias.add(k, u);
            }
            if self.roles_by_user.len() <= u as usize {
                self.roles_by_user.resize_with(u as usize + 1, Vec::new);
            }
            self.roles_by_user[u as usize].push(r.role);
        }
        // Primary role: the open one that started last, else the one that ended last.
        for (ix, roles) in self.roles_by_user.iter().enumerate() {
            let open = roles
                .iter()
                .filter(|r| r.end.is_none())
                .max_by_key(|r| r.start.unwrap_or(i64::MIN));
            let primary = open.or_else(|| roles.iter().max_by_key(|r| r.end.unwrap_or(i64::MIN)));
            let u = &mut self.store.users[ix];
            if let Some(r) = primary {
                u.role = r.role.clone();
                u.department = r.department.clone();
                u.inactive |= r.inactive && open.is_some_and(|o| std::ptr::eq(o, r));
            }
            if open.is_none() && !roles.is_empty() {
                u.terminated_ms = roles.iter().filter_map(|r| r.end).max();
            }
        }
        self.store.index_users();

        for (users, patients) in std::mem::take(&mut self.pending_people) {
            let users: Vec<u32> = users
                .iter()
                .filter_map(|w| self.resolve(w, false))
                .collect();
            let patients: Vec<u32> = patients
                .iter()
                .filter_map(|w| self.resolve(w, true))
                .collect();
            for &u in &users {
                for &pt in &patients {
                    self.store.link_same_person(u, pt);
                }
            }
        }
        for e in std::mem::take(&mut self.pending_encounters) {
            match self.store.resolve_patient(&e.patient) {
                Resolved::Found(p) => self.store.encounters[p as usize].push(e.span),
                _ => self.stats.unresolved_patients += 1,
            }
        }
        for p in std::mem::take(&mut self.pending) {
            let (user, patient) = (
                self.resolve(&p.member, false),
                self.resolve(&p.patient, true),
            );
            match (user, patient) {
                (Some(u), Some(pt)) => self.store.add_relationship(u, pt, p.window),
                (None, _) => self.stats.unresolved_users += 1,
                (_, None) => self.stats.unresolved_patients += 1,
            }
        }
        self.stats.unresolved_users += self.user_defined.iter().filter(|d| !**d).count();
        self.stats.unresolved_patients += self.patient_defined.iter().filter(|d| !**d).count();
        self.stats.ambiguous_users = self.store.user_alias.ambiguous_count;
        self.stats.ambiguous_patients = self.store.patient_alias.ambiguous_count;
        (self.store, self.stats)
    }
}

/// Registers an identifier's keys as aliases of `ix`.
fn alias_identifier(aliases: &mut identity::Aliases, i: &Identifier<'_>, ix: u32) {
    let Some(value) = i.value.as_deref() else {
        return;
    };
    for k in identity::identifier_keys(i.system.as_deref(), value)
        .into_iter()
        .flatten()
    {
        aliases.add(&k, ix);
    }
}
