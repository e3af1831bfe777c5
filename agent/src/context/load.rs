//! Loads the context store from FHIR R4 NDJSON (Bulk Data export shape: one resource per line,
//! one resource type per file or mixed). Bad lines and unknown types are counted and reported
//! with file and line; they never stop the load.

use super::adt::{Adt, AdtOptions, Applied};
use super::feeds::ContextFeed;
use super::roster::{self, Account, Link, Name, Worker};
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
    /// HR rows, crosswalk rows and directory accounts read.
    pub workers: usize,
    pub links: usize,
    pub accounts: usize,
    /// Job titles the feed's role table does not map.
    pub unmapped_titles: usize,
    /// Records of one person found twice (by two feeds, or twice in one) and merged.
    pub merged_users: usize,
    pub merged_patients: usize,
    /// HL7 v2 messages applied, ignored (other types) and refused, from files and the
    /// store's journal.
    pub adt: super::adt::AdtStats,
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
        if s.workers + s.links + s.accounts > 0 {
            out.push_str(&format!(
                "  {} HR row(s), {} crosswalk row(s), {} directory account(s); {} record(s) of one person merged\n",
                s.workers,
                s.links,
                s.accounts,
                s.merged_users + s.merged_patients
            ));
        }
        if s.unmapped_titles > 0 {
            out.push_str(&format!(
                "  {} HR row(s) with a job title the roles table does not map (used as the role)\n",
                s.unmapped_titles
            ));
        }
        let a = &s.adt;
        if a.applied + a.ignored + a.refused > 0 {
            out.push_str(&format!(
                "  HL7 v2: {} message(s) applied, {} ignored, {} refused; {} merge(s), {} cancellation(s); {} staff id(s) unresolved\n",
                a.applied, a.ignored, a.refused, a.merges, a.cancelled, a.unresolved_staff
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

    pub(super) fn problem(&mut self, file: &Path, line: usize, reason: impl std::fmt::Display) {
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
        b.fhir_file(file)?;
    }
    Ok(b.finish())
}

/// Loads every context feed: FHIR first, then the HR roster, crosswalk and directory
/// accounts merged with it by identity (one person per human, whichever feeds name them),
/// then HL7 v2 files in name order, then `journal`: `(feed, message)` pairs received live
/// (ADT messages; demographics learned from access-log rows), kept in the store, in the order
/// they came.
pub fn load_feeds(
    feeds: &[ContextFeed],
    settings: &Settings,
    journal: &[(String, String)],
) -> std::io::Result<(ContextStore, ContextStats)> {
    let mut b = Builder::new(settings);
    let zone = settings.timezone;
    for feed in feeds {
        match feed {
            ContextFeed::Fhir(f) => {
                for file in super::feeds::fhir_files(&f.path) {
                    b.stats.files += 1;
                    b.fhir_file(&file)?;
                }
                if !f.path.exists() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{}: no such file or directory", f.path.display()),
                    ));
                }
            }
            ContextFeed::HrCsv(f) => {
                for file in feed.files() {
                    b.stats.files += 1;
                    let w = roster::workers(f, &file, zone, &mut b.stats);
                    b.stats.workers += w.len();
                    b.workers.extend(w);
                }
            }
            ContextFeed::CrosswalkCsv(f) => {
                for file in feed.files() {
                    b.stats.files += 1;
                    let l = roster::links(f, &file, &mut b.stats);
                    b.stats.links += l.len();
                    b.links.extend(l);
                }
            }
            ContextFeed::DisabledAccountsCsv(f) => {
                for file in feed.files() {
                    b.stats.files += 1;
                    let a = roster::accounts(f, &file, zone, &mut b.stats);
                    b.stats.accounts += a.len();
                    b.accounts.extend(a);
                }
            }
            ContextFeed::Hl7v2(_) | ContextFeed::Mllp(_) => {}
        }
    }
    let (mut store, mut stats) = b.finish();
    for feed in feeds {
        let ContextFeed::Hl7v2(f) = feed else {
            continue;
        };
        let mut adt = Adt::new(
            settings,
            adt_options(&f.departments, f.timezone, f.labels.as_deref()),
        );
        for file in feed.files() {
            stats.files += 1;
            let text = std::fs::read(&file)?;
            let text = String::from_utf8_lossy(&text);
            for (line, msg) in crate::decode::hl7v2::split_messages(&text) {
                if let Applied::Refused(why) = adt.apply_text(&mut store, &msg) {
                    stats.problem(&file, line, why);
                }
            }
        }
        merge_adt_stats(&mut stats.adt, &adt.stats);
    }
    if !journal.is_empty() {
        let adt = replay_journal(&mut store, feeds, settings, journal);
        merge_adt_stats(&mut stats.adt, &adt);
    }
    Ok((store, stats))
}

/// Applies journaled `(feed, message)` pairs to a loaded context, in order: demographics
/// learned from access-log rows, and ADT messages as the MLLP feed maps them.
pub fn replay_journal(
    store: &mut ContextStore,
    feeds: &[ContextFeed],
    settings: &Settings,
    journal: &[(String, String)],
) -> super::adt::AdtStats {
    let options = feeds
        .iter()
        .find_map(|f| match f {
            ContextFeed::Mllp(m) => {
                Some(adt_options(&m.departments, m.timezone, m.labels.as_deref()))
            }
            _ => None,
        })
        .unwrap_or_default();
    let mut adt = Adt::new(settings, options);
    for (feed, msg) in journal {
        if feed == super::inline::FEED {
            super::inline::Learned::replay(store, msg);
        } else {
            adt.apply_text(store, msg);
        }
    }
    adt.stats
}

/// How a feed's configuration maps its messages onto the context.
pub fn adt_options(
    departments: &std::collections::BTreeMap<String, String>,
    zone: Option<chrono_tz::Tz>,
    labels: Option<&str>,
) -> AdtOptions {
    AdtOptions {
        departments: departments
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        zone,
        labels: labels.and_then(|l| {
            let (seg, n) = l.split_once('-')?;
            Some((seg.to_owned(), n.parse().ok()?))
        }),
    }
}

fn merge_adt_stats(into: &mut super::adt::AdtStats, s: &super::adt::AdtStats) {
    into.applied += s.applied;
    into.ignored += s.ignored;
    into.refused += s.refused;
    into.merges += s.merges;
    into.cancelled += s.cancelled;
    into.unresolved_staff += s.unresolved_staff;
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
struct OrganizationJson<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct EncounterJson<'a> {
    #[serde(borrow, default)]
    identifier: Vec<Identifier<'a>>,
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
    visits: Vec<String>,
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
    workers: Vec<Worker>,
    links: Vec<Link>,
    accounts: Vec<Account>,
    /// Users and patients found to be another record of someone already loaded.
    user_redirect: ahash::AHashMap<u32, u32>,
    patient_redirect: ahash::AHashMap<u32, u32>,
    /// What the HR roster says about each user it describes (applied after roles).
    from_hr: Vec<(u32, usize)>,
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
            workers: Vec::new(),
            links: Vec::new(),
            accounts: Vec::new(),
            user_redirect: Default::default(),
            patient_redirect: Default::default(),
            from_hr: Vec::new(),
        }
    }

    fn fhir_file(&mut self, file: &Path) -> std::io::Result<()> {
        let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
        let mut line_no = 0;
        for line in reader.split(b'\n') {
            line_no += 1;
            let line = line?;
            if line.trim_ascii().is_empty() {
                continue;
            }
            self.line(file, line_no, &line);
        }
        Ok(())
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
            "Organization" => self.organization(line),
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
        // An access log names the encounter by its number (Epic CSN, visit number): the
        // identifiers are visits an access can be tied to.
        let visits: Vec<String> = e
            .identifier
            .iter()
            .filter_map(|i| i.value.as_deref())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        match &patient {
            Who::Ix(p) => self.store.add_encounter(*p, es, &visits),
            Who::Key(k) => self.pending_encounters.push(PendingEncounter {
                patient: k.clone(),
                span: es,
                visits,
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

    /// Departments are named by reference (`Organization/emergency`); an access log names
    /// them by their name ("Emergency Department"), which becomes an alias.
    fn organization(&mut self, line: &[u8]) -> serde_json::Result<()> {
        let o: OrganizationJson<'_> = serde_json::from_slice(line)?;
        if let Some(name) = o.name.as_deref() {
            self.store.name_department(name, &o.id);
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
        let redirect = if patient {
            &self.patient_redirect
        } else {
            &self.user_redirect
        };
        match w {
            Who::Ix(ix) => Some(redirect.get(ix).copied().unwrap_or(*ix)),
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
        self.merge_identities();
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
        // The roster is the authority on employment: its termination and status apply
        // whatever the EHR's directory still says.
        for &(u, w) in &self.from_hr {
            let w = &self.workers[w];
            let f = &mut self.store.users[u as usize];
            if let Some(end) = w.terminated_ms {
                f.terminated_ms = Some(f.terminated_ms.map_or(end, |t| t.min(end)));
            }
            f.inactive |= w.inactive;
        }
        for a in std::mem::take(&mut self.accounts) {
            let Some(u) = self.store.find_user(&a.keys) else {
                self.stats.unresolved_users += 1;
                continue;
            };
            let f = &mut self.store.users[u as usize];
            f.inactive |= a.disabled;
            if let Some(end) = a.expires_ms {
                f.terminated_ms = Some(f.terminated_ms.map_or(end, |t| t.min(end)));
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
                Resolved::Found(p) => self.store.add_encounter(p, e.span, &e.visits),
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

/// Disjoint sets over string nodes: which names belong to one human.
#[derive(Default)]
struct Sets {
    ix: ahash::AHashMap<String, usize>,
    parent: Vec<usize>,
}

impl Sets {
    fn node(&mut self, name: &str) -> usize {
        if let Some(&i) = self.ix.get(name) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.ix.insert(name.to_owned(), i);
        i
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: &str, b: &str) {
        let (a, b) = (self.node(a), self.node(b));
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            self.parent[rb] = ra;
        }
    }

    /// Nodes grouped by set.
    fn groups(&mut self) -> Vec<Vec<String>> {
        let names: Vec<(String, usize)> = self.ix.iter().map(|(k, &v)| (k.clone(), v)).collect();
        let mut by_root: ahash::AHashMap<usize, Vec<String>> = Default::default();
        for (name, i) in names {
            let r = self.root(i);
            by_root.entry(r).or_default().push(name);
        }
        let mut groups: Vec<Vec<String>> = by_root.into_values().collect();
        for g in &mut groups {
            g.sort();
        }
        groups.sort();
        groups
    }
}

impl Builder<'_> {
    /// One person per human: records of the HR roster, the crosswalk's links and the FHIR
    /// context's identifiers are grouped by the `system|value` names they share; a group
    /// holding two records of the context merges them (the first loaded survives), a group
    /// holding only roster rows becomes a new user, and every name in a group becomes an
    /// alias of its person (bare values too, where they name one person only).
    fn merge_identities(&mut self) {
        if self.workers.is_empty() && self.links.is_empty() {
            return;
        }
        self.merge_users();
        self.merge_patients();
        for l in std::mem::take(&mut self.links) {
            if l.user.is_empty() || l.patient.is_empty() {
                continue;
            }
            let u = l.user.iter().find_map(|n| self.named_user(n));
            let p = l.patient.iter().find_map(|n| self.named_patient(n));
            if let (Some(u), Some(p)) = (u, p) {
                self.store.link_same_person(u, p);
            }
        }
    }

    fn named_user(&self, n: &Name) -> Option<u32> {
        match n {
            Name::Id(id) => self.store.user(id),
            Name::Key(k) => match self.store.user_alias.get(k) {
                Some(identity::Alias::One(ix)) => Some(ix),
                _ => None,
            },
        }
    }

    fn named_patient(&self, n: &Name) -> Option<u32> {
        match n {
            Name::Id(id) => self.store.patient(id),
            Name::Key(k) => match self.store.patient_alias.get(k) {
                Some(identity::Alias::One(ix)) => Some(ix),
                _ => None,
            },
        }
    }

    fn merge_users(&mut self) {
        let mut sets = Sets::default();
        for ix in 0..self.store.users.len() {
            sets.node(&format!("#u{ix}"));
        }
        let qualified: Vec<(String, u32)> = self
            .store
            .user_alias
            .unique()
            .filter(|(k, _)| k.contains('|'))
            .map(|(k, ix)| (k.to_owned(), ix))
            .collect();
        for (k, ix) in &qualified {
            sets.union(&format!("#u{ix}"), k);
        }
        for (w, worker) in self.workers.iter().enumerate() {
            let node = format!("#w{w}");
            sets.node(&node);
            for k in &worker.keys {
                sets.union(&node, k);
            }
        }
        for l in &self.links {
            let names: Vec<String> = l
                .user
                .iter()
                .map(|n| match n {
                    Name::Id(id) => match self.store.user(id) {
                        Some(ix) => format!("#u{ix}"),
                        None => format!("#id:{id}"),
                    },
                    Name::Key(k) => k.clone(),
                })
                .collect();
            for pair in names.windows(2) {
                sets.union(&pair[0], &pair[1]);
            }
            if let Some(only) = names.first() {
                sets.node(only);
            }
        }
        for group in sets.groups() {
            let mut users: Vec<u32> = group
                .iter()
                .filter_map(|n| n.strip_prefix("#u")?.parse().ok())
                .collect();
            users.sort_unstable();
            let workers: Vec<usize> = group
                .iter()
                .filter_map(|n| n.strip_prefix("#w")?.parse().ok())
                .collect();
            let keys: Vec<&String> = group.iter().filter(|n| !n.starts_with('#')).collect();
            let user = match (users.first(), workers.first()) {
                (Some(&u), _) => u,
                (None, Some(&w)) => {
                    // The id the EHR's logs use (a crosswalk `id` column) is the one to keep;
                    // else the roster's.
                    let id = group
                        .iter()
                        .find_map(|n| n.strip_prefix("#id:"))
                        .map(str::to_owned)
                        .unwrap_or_else(|| self.workers[w].id.clone());
                    self.user(&id)
                }
                (None, None) => continue,
            };
            for &other in users.iter().skip(1) {
                self.merge_user(other, user);
            }
            for k in keys {
                self.store.user_alias.add(k, user);
                if let Some((_, bare)) = k.rsplit_once('|') {
                    self.store.user_alias.add(bare, user);
                }
            }
            for &w in &workers {
                self.apply_worker(user, w);
            }
        }
    }

    /// `from` is another record of `into`: its names, roles and references go there.
    fn merge_user(&mut self, from: u32, into: u32) {
        self.stats.merged_users += 1;
        self.user_redirect.insert(from, into);
        self.store.user_alias.redirect(from, into);
        let old = self.store.users[from as usize].clone();
        self.store.user_alias.add(&old.id, into);
        let roles = std::mem::take(&mut self.roles_by_user[from as usize]);
        self.roles_by_user[into as usize].extend(roles);
        let u = &mut self.store.users[into as usize];
        u.known |= old.known;
        u.inactive |= old.inactive;
        u.family = u.family.take().or(old.family);
        u.address = u.address.take().or(old.address);
        self.store.users[from as usize].known = false;
        self.user_defined[from as usize] = true;
    }

    /// What the roster says about `user`: facts the FHIR directory lacks, and (applied after
    /// roles are settled) its termination and status.
    fn apply_worker(&mut self, user: u32, w: usize) {
        if self.roles_by_user.len() <= user as usize {
            self.roles_by_user.resize_with(user as usize + 1, Vec::new);
        }
        self.user_defined[user as usize] = true;
        let worker = &self.workers[w];
        if self.roles_by_user[user as usize].is_empty()
            && !(worker.role.is_empty() && worker.department.is_empty())
        {
            self.roles_by_user[user as usize].push(Role {
                role: worker.role.clone(),
                department: worker.department.clone(),
                start: worker.hired_ms,
                end: None,
                inactive: false,
            });
        }
        let u = &mut self.store.users[user as usize];
        u.known = true;
        if u.family.is_none() {
            u.family = worker.family.clone();
            u.written.family = worker.written.family.clone();
        }
        if u.address.is_none() {
            u.address = worker.address.clone();
            u.written.address = worker.written.address.clone();
        }
        self.from_hr.push((user, w));
    }

    fn merge_patients(&mut self) {
        let mut sets = Sets::default();
        let qualified: Vec<(String, u32)> = self
            .store
            .patient_alias
            .unique()
            .filter(|(k, _)| k.contains('|'))
            .map(|(k, ix)| (k.to_owned(), ix))
            .collect();
        for (k, ix) in &qualified {
            sets.union(&format!("#p{ix}"), k);
        }
        for l in &self.links {
            let names: Vec<String> = l
                .patient
                .iter()
                .map(|n| match n {
                    Name::Id(id) => match self.store.patient(id) {
                        Some(ix) => format!("#p{ix}"),
                        None => format!("#id:{id}"),
                    },
                    Name::Key(k) => k.clone(),
                })
                .collect();
            for pair in names.windows(2) {
                sets.union(&pair[0], &pair[1]);
            }
            if let Some(only) = names.first() {
                sets.node(only);
            }
        }
        for group in sets.groups() {
            let mut patients: Vec<u32> = group
                .iter()
                .filter_map(|n| n.strip_prefix("#p")?.parse().ok())
                .collect();
            patients.sort_unstable();
            let patient = match patients.first() {
                Some(&p) => p,
                None => {
                    // Named only by the crosswalk so far: a placeholder that an ADT feed
                    // (applied after) finds by one of these names and fills in.
                    let id = group
                        .iter()
                        .find_map(|n| n.strip_prefix("#id:"))
                        .or_else(|| {
                            group
                                .iter()
                                .find(|n| !n.starts_with('#'))
                                .and_then(|k| k.rsplit_once('|').map(|(_, v)| v))
                        })
                        .map(str::to_owned);
                    let Some(id) = id else { continue };
                    let ix = self.patient(&id);
                    self.patient_defined[ix as usize] = true;
                    ix
                }
            };
            for &other in patients.iter().skip(1) {
                self.stats.merged_patients += 1;
                self.patient_redirect.insert(other, patient);
                self.store.merge_patients(other, patient);
                self.patient_defined[other as usize] = true;
            }
            for k in group.iter().filter(|n| !n.starts_with('#')) {
                self.store.patient_alias.add(k, patient);
                if let Some((_, bare)) = k.rsplit_once('|') {
                    self.store.patient_alias.add(bare, patient);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{rel, Resolved};

    fn feeds(d: &Path, toml_text: &str) -> Vec<ContextFeed> {
        #[derive(serde::Deserialize)]
        struct T {
            context: Vec<ContextFeed>,
        }
        let mut t: T = toml::from_str(toml_text).unwrap();
        for f in &mut t.context {
            f.rebase(d);
        }
        t.context
    }

    /// A hospital without FHIR: an HR roster, a crosswalk, a directory export and ADT
    /// files. Logs name users by login or the EHR's id, patients by MRN or the EHR's id.
    #[test]
    fn a_hospital_from_roster_crosswalk_directory_and_adt() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("roster.csv"),
            "\u{feff}Worker ID,Last Name,First Name,Home Address,City,ZIP,Dept,Job Title,Termination Date,Status,EHR Login\r\n\
             E1,Smith,Ann,12 Oak Street,Springfield,62701,Cardiology Nursing,Registered Nurse,,Active,asmith\r\n\
             E2,Jones,Bob,4 Elm St,Springfield,62701,Billing,Billing Specialist,2026-02-01,Terminated,bjones\r\n\
             E3,Wu,Cy,9 Pine Rd,Springfield,62701,Cardiology,Cardiologist,,Active,cwu\r\n",
        )
        .unwrap();
        std::fs::write(
            d.join("xwalk.tsv"),
            "EHR User\tEmployee\tMRN\n\
             pr-ann\tE1\t\n\
             pr-cy\tE3\tM-900\n",
        )
        .unwrap();
        std::fs::write(
            d.join("ad.csv"),
            "sAMAccountName;userAccountControl;accountExpires\ncwu;514;0\n",
        )
        .unwrap();
        std::fs::write(
            d.join("adt.hl7"),
            "MSH|^~\\&|EHR|H|PW|H|20260310080000||ADT^A01|1|P|2.5\r\
             PID|1||M-100^^^HOSP^MR~pt-100^^^EHR^PI||DOE^JANE||||||12 Oak St^^Springfield^IL^62701-4444\r\
             PV1|1|I|CARD||||cwu^Wu^Cy|||CAR|||||||||V1|||||||||||||||||||||||||20260310080000\r\
             MSH|^~\\&|EHR|H|PW|H|20260310080000||ADT^A04|2|P|2.5\r\
             PID|1||M-900^^^HOSP^MR||WU^CY\r",
        )
        .unwrap();
        let f = feeds(
            d,
            r#"
[[context]]
kind = "hr-csv"
path = "roster.csv"
id_system = "urn:hr"
[context.columns]
id = ["Employee ID", "Worker ID"]
family = "Last Name"
address = "Home Address"
city = "City"
postal_code = "ZIP"
department = "Dept"
job_title = "Job Title"
termination_date = "Termination Date"
status = "Status"
[context.identifiers]
"EHR Login" = "urn:login"
[context.roles]
"Registered Nurse" = "nurse"
"Cardiologist" = "doctor"
"Billing Specialist" = "billing"
[context.departments]
"Cardiology Nursing" = "cardiology"

[[context]]
kind = "crosswalk-csv"
path = "xwalk.tsv"
[context.users]
"EHR User" = "urn:ehr"
"Employee" = "urn:hr"
[context.patients]
"MRN" = "HOSP"

[[context]]
kind = "disabled-accounts-csv"
path = "ad.csv"
system = "urn:login"
[context.columns]
account = "sAMAccountName"
user_account_control = "userAccountControl"
account_expires = "accountExpires"

[[context]]
kind = "hl7v2"
paths = ["*.hl7"]
[context.departments]
CAR = "cardiology"
"#,
        );
        let settings = Settings::default();
        let (c, stats) = load_feeds(&f, &settings, &[]).unwrap();
        assert_eq!(stats.bad_lines, 0, "{:?}", stats.problems);
        let ann = c.user("E1").unwrap();
        for name in [
            "asmith",
            "urn:login|asmith",
            "pr-ann",
            "Practitioner/pr-ann",
            "urn:hr|E1",
        ] {
            assert_eq!(c.resolve_user(name), Resolved::Found(ann), "{name}");
        }
        let af = c.user_facts(ann);
        assert_eq!(
            (af.role.as_str(), af.department.as_str()),
            ("nurse", "cardiology")
        );
        assert!(af.family.is_some() && af.address.is_some());
        let bob = c.user("E2").unwrap();
        assert!(c.user_facts(bob).terminated_ms.is_some() && c.user_facts(bob).inactive);
        let cy = c.user("E3").unwrap();
        assert!(
            c.user_facts(cy).inactive,
            "disabled in the directory (UAC 514)"
        );
        // The ADT admission names the attending by login; the visit explains access.
        let jane = match c.resolve_patient("pt-100") {
            Resolved::Found(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.resolve_patient("M-100"), Resolved::Found(jane));
        let t = crate::time::parse_fhir_time("2026-03-10T12:00:00Z").unwrap();
        assert_eq!(c.relationship_at(cy, jane, t), rel::ENCOUNTER);
        // Ann's household is Jane's: "12 Oak Street, 62701" is "12 Oak St, 62701-4444".
        assert_eq!(
            c.patient_facts(jane).address.as_ref().map(|a| &a.full),
            af.address.as_ref().map(|a| &a.full)
        );
        // Cy is also patient M-900 (crosswalk): self-access and coworkers follow.
        let cy_patient = match c.resolve_patient("M-900") {
            Resolved::Found(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.user_facts(cy).self_patient, Some(cy_patient));
        assert!(c.patient_facts(cy_patient).employee && c.patient_facts(cy_patient).known);
    }
}
