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

/// Builds batches, interning users and patients so each appears once per batch.
pub struct Builder<'c> {
    ctx: &'c ContextStore,
    batch: t::Batch,
    users: AHashMap<&'c str, u32>,
    unknown_users: AHashMap<String, u32>,
    patients: AHashMap<String, u32>,
}

impl<'c> Builder<'c> {
    pub fn new(ctx: &'c ContextStore) -> Self {
        Builder {
            ctx,
            batch: t::Batch {
                users: Vec::new(),
                patients: Vec::new(),
                accesses: Vec::new(),
            },
            users: AHashMap::new(),
            unknown_users: AHashMap::new(),
            patients: AHashMap::new(),
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
        self.batch.users.clear();
        self.batch.patients.clear();
        self.batch.accesses.clear();
        self.users.clear();
        self.unknown_users.clear();
        self.patients.clear();
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
                workstation: ev.workstation.clone(),
            });
        }
        &self.batch
    }

    fn user(&mut self, p: &Pending, ev: &AccessEvent, names: bool, addresses: bool) -> u32 {
        let ctx = self.ctx;
        let next = self.batch.users.len() as u32;
        let Some(ix) = p.user else {
            let slot = *self.unknown_users.entry(ev.user.clone()).or_insert(next);
            if slot == next {
                self.batch.users.push(t::User {
                    id: ev.user.clone(),
                    role: String::new(),
                    department: String::new(),
                    clinical: false,
                    family_name: String::new(),
                    address: String::new(),
                });
            }
            return slot;
        };
        let u = ctx.user_facts(ix);
        let slot = *self.users.entry(u.id.as_str()).or_insert(next);
        if slot == next {
            self.batch.users.push(t::User {
                id: u.id.clone(),
                role: ctx.roles.name(ctx.user_role_ix(ix)).to_owned(),
                department: ctx.departments.name(ctx.user_department_ix(ix)).to_owned(),
                clinical: p.facts.user & user_flag::CLINICAL != 0,
                family_name: if names {
                    u.written.family.to_string()
                } else {
                    String::new()
                },
                address: if addresses {
                    u.written.address.to_string()
                } else {
                    String::new()
                },
            });
        }
        slot
    }

    fn patient(&mut self, p: &Pending, ev: &AccessEvent, names: bool, addresses: bool) -> u32 {
        let ctx = self.ctx;
        let id = ev.patient.as_deref().unwrap_or("");
        let next = self.batch.patients.len() as u32;
        if let Some(&slot) = self.patients.get(id) {
            return slot;
        }
        self.patients.insert(id.to_owned(), next);
        let f = &p.facts;
        let mut patient = t::Patient {
            id: id.to_owned(),
            departments: Vec::new(),
            vip: f.patient & patient_flag::VIP != 0,
            sensitive: f.sensitive != 0,
            restricted: f.patient & patient_flag::RESTRICTED != 0,
            employee: f.patient & patient_flag::EMPLOYEE != 0,
            family_name: String::new(),
            address: String::new(),
        };
        if let Some(ix) = p.patient {
            let pf = ctx.patient_facts(ix);
            for e in ctx.encounters_of(ix) {
                if e.department != NONE {
                    let d = ctx.departments.name(e.department);
                    if !patient.departments.iter().any(|x| x == d) {
                        patient.departments.push(d.to_owned());
                    }
                }
            }
            if names {
                patient.family_name = pf.written.family.to_string();
            }
            if addresses {
                patient.address = pf.written.address.to_string();
            }
        }
        self.batch.patients.push(patient);
        next
    }
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

/// What a finding needs of an access that may have left the current batch.
struct Recent {
    event_id: String,
    time_ms: i64,
    user: String,
    department: String,
    patient: String,
    action: Action,
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

    pub fn push(&mut self, id: u64, ev: &AccessEvent, ctx: &ContextStore, p: &Pending) {
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
            user: ev.user.clone(),
            department: p
                .user
                .map(|u| ctx.departments.name(ctx.user_department_ix(u)).to_owned())
                .unwrap_or_default(),
            patient: ev.patient.clone().unwrap_or_default(),
            action: ev.action,
        });
    }

    fn get(&self, id: u64) -> Option<&Recent> {
        id.checked_sub(self.first)
            .and_then(|i| self.items.get(i as usize))
    }

    /// One agent finding per access the plugin's finding names (alerts fold them together).
    pub fn findings(&self, c: &Compiled, f: t::Finding, out: &mut Vec<Finding>) {
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
            out.push(Finding {
                event_id: r.event_id.clone(),
                time: crate::time::format_ms(r.time_ms),
                user: r.user.clone(),
                department: r.department.clone(),
                patient: r.patient.clone(),
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
