//! From enriched accesses to the WIT batch a plugin sees, and from a plugin's findings back
//! to the agent's findings.

use super::sandbox::t;
use super::Compiled;
use crate::context::{rel, ContextStore, PatientIx, UserIx, NONE};
use crate::enrich::{ctx_flag, patient_flag, user_flag, FactKey};
use crate::event::{AccessEvent, Action};
use crate::finding::{Finding, Severity};
use ahash::AHashMap;
use std::collections::VecDeque;

/// How many recent accesses a finding may name (a plugin reporting an access older than
/// this loses that reference; the finding stays attached to the others).
pub const RING_CAPACITY: usize = 200_000;
const MAX_EXPLANATION: usize = 1000;
/// Accesses one finding may name.
const MAX_EVENTS_PER_FINDING: usize = 10_000;

/// An access judged in this batch, waiting for the plugins.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// Index into the batch's accesses.
    pub ix: usize,
    pub user: Option<UserIx>,
    pub patient: Option<PatientIx>,
    pub facts: FactKey,
}

/// Builds batches, interning users, patients and role and department names so each crosses
/// into the sandbox once per batch.
pub struct Builder<'c> {
    ctx: &'c ContextStore,
    batch: t::Batch,
    /// Context index (or, for ids the context lacks, the id) → index in the batch.
    users: AHashMap<UserIx, u32>,
    unknown_users: AHashMap<String, u32>,
    patients: AHashMap<PatientIx, u32>,
    unknown_patients: AHashMap<String, u32>,
    /// (is a department, interner index) → index into `batch.names`.
    names: AHashMap<(bool, u32), u32>,
}

impl<'c> Builder<'c> {
    pub fn new(ctx: &'c ContextStore) -> Self {
        Builder {
            ctx,
            batch: t::Batch {
                names: Vec::new(),
                users: Vec::new(),
                patients: Vec::new(),
                accesses: Vec::new(),
            },
            users: AHashMap::new(),
            unknown_users: AHashMap::new(),
            patients: AHashMap::new(),
            unknown_patients: AHashMap::new(),
            names: AHashMap::new(),
        }
    }

    pub fn build(
        &mut self,
        chunk: &[Pending],
        accesses: &[AccessEvent],
        first_id: u64,
        names: bool,
        addresses: bool,
    ) -> &t::Batch {
        self.batch.names.clear();
        self.batch.names.push(String::new());
        self.batch.users.clear();
        self.batch.patients.clear();
        self.batch.accesses.clear();
        self.users.clear();
        self.unknown_users.clear();
        self.patients.clear();
        self.unknown_patients.clear();
        self.names.clear();
        for (i, p) in chunk.iter().enumerate() {
            let Some(ev) = accesses.get(p.ix) else {
                continue;
            };
            let user = self.user(p, ev, names, addresses);
            let patient = self.patient(p, ev, names, addresses);
            let f = &p.facts;
            self.batch.accesses.push(t::Access {
                id: first_id + i as u64,
                time_ms: ev.time_ms,
                local_hour: f.hour,
                action: match ev.action {
                    Action::View => t::Action::View,
                    Action::Modify => t::Action::Modify,
                    Action::Print => t::Action::Print,
                    Action::Export => t::Action::Export,
                    Action::Query => t::Action::Query,
                },
                user,
                patient,
                relationships: relationships(f.relationships),
                break_glass: f.has(ctx_flag::BREAK_GLASS),
                department_encounter: f.has(ctx_flag::DEPARTMENT_ENCOUNTER),
                encounter_near: f.has(ctx_flag::ENCOUNTER_NEAR),
                succeeded: f.has(ctx_flag::SUCCEEDED),
                workstation: (!ev.workstation.is_empty()).then(|| ev.workstation.clone()),
            });
        }
        &self.batch
    }

    fn name(&mut self, department: bool, ix: u32) -> u32 {
        if ix == NONE {
            return 0;
        }
        let next = self.batch.names.len() as u32;
        let slot = *self.names.entry((department, ix)).or_insert(next);
        if slot == next {
            let interner = if department {
                &self.ctx.departments
            } else {
                &self.ctx.roles
            };
            self.batch.names.push(interner.name(ix).to_owned());
        }
        slot
    }

    fn user(&mut self, p: &Pending, ev: &AccessEvent, names: bool, addresses: bool) -> u32 {
        let ctx = self.ctx;
        let next = self.batch.users.len() as u32;
        let Some(ix) = p.user else {
            let slot = *self.unknown_users.entry(ev.user.clone()).or_insert(next);
            if slot == next {
                self.batch.users.push(t::User {
                    id: ev.user.clone(),
                    role: 0,
                    department: 0,
                    clinical: false,
                    family_name: None,
                    address: None,
                });
            }
            return slot;
        };
        let u = ctx.user_facts(ix);
        let slot = *self.users.entry(ix).or_insert(next);
        if slot == next {
            let role = self.name(false, ctx.user_role_ix(ix));
            let department = self.name(true, ctx.user_department_ix(ix));
            self.batch.users.push(t::User {
                id: u.id.clone(),
                role,
                department,
                clinical: p.facts.user & user_flag::CLINICAL != 0,
                family_name: written(names, &u.written.family),
                address: written(addresses, &u.written.address),
            });
        }
        slot
    }

    fn patient(&mut self, p: &Pending, ev: &AccessEvent, names: bool, addresses: bool) -> u32 {
        let ctx = self.ctx;
        let id = ev.patient.as_deref().unwrap_or("");
        let next = self.batch.patients.len() as u32;
        let slot = match p.patient {
            Some(ix) => *self.patients.entry(ix).or_insert(next),
            None => match self.unknown_patients.get(id) {
                Some(&slot) => slot,
                None => {
                    self.unknown_patients.insert(id.to_owned(), next);
                    next
                }
            },
        };
        if slot != next {
            return slot;
        }
        let f = &p.facts;
        let mut patient = t::Patient {
            id: id.to_owned(),
            departments: Vec::new(),
            vip: f.patient & patient_flag::VIP != 0,
            sensitive: f.sensitive != 0,
            restricted: f.patient & patient_flag::RESTRICTED != 0,
            employee: f.patient & patient_flag::EMPLOYEE != 0,
            family_name: None,
            address: None,
        };
        if let Some(ix) = p.patient {
            let pf = ctx.patient_facts(ix);
            for e in ctx.encounters_of(ix) {
                let d = self.name(true, e.department);
                if d != 0 && !patient.departments.contains(&d) {
                    patient.departments.push(d);
                }
            }
            patient.family_name = written(names, &pf.written.family);
            patient.address = written(addresses, &pf.written.address);
        }
        self.batch.patients.push(patient);
        next
    }
}

fn written(exposed: bool, text: &str) -> Option<String> {
    (exposed && !text.is_empty()).then(|| text.to_owned())
}

fn relationships(bits: u8) -> t::Relationships {
    let mut r = t::Relationships::empty();
    if bits & rel::ENCOUNTER != 0 {
        r |= t::Relationships::ENCOUNTER;
    }
    if bits & rel::CARE_TEAM != 0 {
        r |= t::Relationships::CARE_TEAM;
    }
    if bits & rel::APPOINTMENT != 0 {
        r |= t::Relationships::APPOINTMENT;
    }
    r
}

/// What a finding needs of an access that may have left the current batch. Users and
/// patients known to the context are kept as indexes (a reload builds a new plugin set, and
/// with it a new ring); only unknown ones keep their id.
struct Recent {
    event_id: String,
    time_ms: i64,
    user: Who,
    patient: Who,
    action: Action,
}

enum Who {
    User(UserIx),
    Patient(PatientIx),
    Unknown(String),
}

/// The most recent accesses by id: ids are consecutive, so lookup is an index.
pub struct Ring {
    items: VecDeque<Recent>,
    first: u64,
    capacity: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Ring {
            items: VecDeque::new(),
            first: 0,
            capacity,
        }
    }

    pub fn push(&mut self, id: u64, ev: &AccessEvent, p: &Pending) {
        if self.items.is_empty() || id != self.first + self.items.len() as u64 {
            self.items.clear();
            self.first = id;
        }
        if self.items.len() == self.capacity {
            self.items.pop_front();
            self.first += 1;
        }
        self.items.push_back(Recent {
            event_id: ev.id.clone(),
            time_ms: ev.time_ms,
            user: p
                .user
                .map_or_else(|| Who::Unknown(ev.user.clone()), Who::User),
            patient: p.patient.map_or_else(
                || Who::Unknown(ev.patient.clone().unwrap_or_default()),
                Who::Patient,
            ),
            action: ev.action,
        });
    }

    fn get(&self, id: u64) -> Option<&Recent> {
        id.checked_sub(self.first)
            .and_then(|i| self.items.get(i as usize))
    }

    /// One agent finding per access the plugin's finding names (alerts fold them together).
    pub fn findings(
        &self,
        ctx: &ContextStore,
        c: &Compiled,
        f: t::Finding,
        out: &mut Vec<Finding>,
    ) {
        if !c.description.categories.contains(&f.category) {
            tracing::warn!(plugin = %c.name, category = %f.category, "plugin reported a category it did not declare; finding dropped");
            return;
        }
        let mut explanation = f.explanation;
        if explanation.len() > MAX_EXPLANATION {
            let mut cut = MAX_EXPLANATION;
            while !explanation.is_char_boundary(cut) {
                cut -= 1;
            }
            explanation.truncate(cut);
            explanation.push('…');
        }
        let severity = match f.severity {
            t::Severity::Low => Severity::Low,
            t::Severity::Medium => Severity::Medium,
            t::Severity::High => Severity::High,
            t::Severity::Critical => Severity::Critical,
        };
        let mut seen = ahash::AHashSet::new();
        for id in f.events.iter().take(MAX_EVENTS_PER_FINDING) {
            if !seen.insert(*id) {
                continue;
            }
            let Some(r) = self.get(*id) else {
                continue;
            };
            let (user, department) = match &r.user {
                Who::User(u) => (
                    ctx.user_facts(*u).id.clone(),
                    ctx.departments.name(ctx.user_department_ix(*u)).to_owned(),
                ),
                Who::Patient(_) => (String::new(), String::new()),
                Who::Unknown(id) => (id.clone(), String::new()),
            };
            let patient = match &r.patient {
                Who::Patient(p) => ctx.patient_facts(*p).id.clone(),
                Who::User(_) => String::new(),
                Who::Unknown(id) => id.clone(),
            };
            out.push(Finding {
                event_id: r.event_id.clone(),
                time: crate::time::format_ms(r.time_ms),
                user,
                department,
                patient,
                action: r.action.as_str().to_owned(),
                category: f.category.clone(),
                severity,
                detector: format!("plugin:{}", c.name),
                explanation: explanation.clone(),
                hipaa: "45 CFR 164.308(a)(1)(ii)(D) information system activity review".to_owned(),
            });
        }
    }
}
