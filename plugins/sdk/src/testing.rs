//! Building batches in unit tests: `access(t, user, patient)` with defaults, adjusted with
//! the builder methods, then `batch_of` interns users and patients as the host does.

use crate::{Access, Action, Batch, Patient, Relationships, User};
use std::cell::Cell;

thread_local! {
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

#[derive(Clone)]
pub struct TestAccess {
    pub user: User,
    pub patient: Patient,
    pub access: Access,
    /// Role, department and patient departments by name; interned by `batch_of`.
    pub role: String,
    pub department: String,
    pub patient_departments: Vec<String>,
}

/// A view by a nurse in Medicine at `t` (ms), no relationship, local hour from `t`.
pub fn access(t: i64, user: &str, patient: &str) -> TestAccess {
    let id = NEXT_ID.with(|n| {
        let v = n.get();
        n.set(v + 1);
        v
    });
    TestAccess {
        user: User {
            id: user.to_owned(),
            role: 0,
            department: 0,
            clinical: true,
            family_name: None,
            address: None,
        },
        patient: Patient {
            id: patient.to_owned(),
            departments: Vec::new(),
            vip: false,
            sensitive: false,
            restricted: false,
            employee: false,
            family_name: None,
            address: None,
        },
        role: "nurse".to_owned(),
        department: "Medicine".to_owned(),
        patient_departments: Vec::new(),
        access: Access {
            id,
            time_ms: t,
            local_hour: (t.div_euclid(3_600_000) % 24) as u8,
            action: Action::View,
            user: 0,
            patient: 0,
            relationships: Relationships::empty(),
            break_glass: false,
            department_encounter: false,
            encounter_near: false,
            succeeded: true,
            workstation: None,
        },
    }
}

impl TestAccess {
    pub fn department(mut self, d: &str) -> Self {
        self.department = d.to_owned();
        self
    }
    pub fn role(mut self, r: &str) -> Self {
        self.role = r.to_owned();
        self
    }
    pub fn patient_departments(mut self, ds: &[&str]) -> Self {
        self.patient_departments = ds.iter().map(|d| (*d).to_owned()).collect();
        self
    }
    pub fn user(mut self, f: impl FnOnce(&mut User)) -> Self {
        f(&mut self.user);
        self
    }
    pub fn patient(mut self, f: impl FnOnce(&mut Patient)) -> Self {
        f(&mut self.patient);
        self
    }
    pub fn with(mut self, f: impl FnOnce(&mut Access)) -> Self {
        f(&mut self.access);
        self
    }
}

pub fn batch_of(items: Vec<TestAccess>) -> Batch {
    let mut b = Batch {
        names: vec![String::new()],
        users: Vec::new(),
        patients: Vec::new(),
        accesses: Vec::new(),
    };
    fn intern(names: &mut Vec<String>, n: &str) -> u32 {
        match names.iter().position(|x| x == n) {
            Some(i) => i as u32,
            None => {
                names.push(n.to_owned());
                (names.len() - 1) as u32
            }
        }
    }
    for mut it in items {
        it.user.role = intern(&mut b.names, &it.role);
        it.user.department = intern(&mut b.names, &it.department);
        it.patient.departments = it
            .patient_departments
            .iter()
            .map(|d| intern(&mut b.names, d))
            .collect();
        let u = match b.users.iter().position(|u| u.id == it.user.id) {
            Some(i) => i,
            None => {
                b.users.push(it.user);
                b.users.len() - 1
            }
        };
        let p = match b.patients.iter().position(|p| p.id == it.patient.id) {
            Some(i) => i,
            None => {
                b.patients.push(it.patient);
                b.patients.len() - 1
            }
        };
        it.access.user = u as u32;
        it.access.patient = p as u32;
        b.accesses.push(it.access);
    }
    b
}
