//! `phiwatch policy test DIR`: test cases for the policy pack, in the manner of `opa test` and
//! `cedar run-tests`. A case states the facts of one access in the schema's own vocabulary and
//! the findings it must raise (policy `@id`s, `default-deny` for an unexplained access, or none).
//!
//! ```toml
//! [[case]]
//! name = "nurse opens a VIP chart with no care relationship"
//! policy = "vip-record"          # the policy this case is about (for coverage)
//! expect = ["vip-record"]        # [] = explained, no finding
//! action = "view"                # default view
//! hour = 14                      # local hour, default 12
//! [case.user]                    # role, department, known, clinical, active, business_need_role
//! role = "nurse"
//! clinical = true
//! [case.patient]                 # known, vip, employee, restricted, deceased, sensitive = ["PSY"]
//! vip = true
//! [case.context]                 # AccessContext attributes; treating/relationship derive
//! relationship_kinds = []        # from relationship_kinds and department_encounter
//! encounter_departments = ["icu"] # departments of the patient's encounters around the access
//! ```
//!
//! Coverage: a policy is covered positively by a case where it determined the decision, and
//! negatively by a case about it where it did not.

use super::cedar::{Detector, PolicyPack};
use crate::context::{rel, sensitive, ContextStore, NONE};
use crate::enrich::{
    ctx_flag, patient_flag, user_flag, EnrichedAccess, FactKey, MAX_ENCOUNTER_DEPARTMENTS,
};
use crate::event::{AccessEvent, Action};
use crate::invalid::Invalid;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    policy: String,
    expect: Vec<String>,
    #[serde(default = "view")]
    action: String,
    #[serde(default = "noon")]
    hour: u8,
    #[serde(default)]
    user: UserFacts,
    #[serde(default)]
    patient: PatientFacts,
    #[serde(default)]
    context: ContextFacts,
}

fn view() -> String {
    "view".into()
}
fn noon() -> u8 {
    12
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFacts {
    #[serde(default)]
    role: String,
    #[serde(default)]
    department: String,
    #[serde(default = "yes")]
    known: bool,
    /// The log names the user by an id (false: only by display text, or not at all).
    #[serde(default = "yes")]
    identified: bool,
    #[serde(default)]
    clinical: bool,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    business_need_role: bool,
}

impl Default for UserFacts {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatientFacts {
    #[serde(default = "yes")]
    known: bool,
    #[serde(default)]
    vip: bool,
    #[serde(default)]
    employee: bool,
    #[serde(default)]
    restricted: bool,
    #[serde(default)]
    deceased: bool,
    #[serde(default)]
    sensitive: Vec<String>,
}

impl Default for PatientFacts {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextFacts {
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    after_hours: bool,
    #[serde(default)]
    weekend: bool,
    #[serde(default)]
    relationship_kinds: Vec<String>,
    #[serde(default)]
    department_encounter: bool,
    #[serde(default)]
    recent_encounter: bool,
    #[serde(default)]
    encounter_near: bool,
    #[serde(default)]
    self_access: bool,
    #[serde(default)]
    same_family_name: bool,
    #[serde(default)]
    same_address: bool,
    #[serde(default)]
    same_street: bool,
    #[serde(default)]
    coworker: bool,
    days_since_death: Option<i32>,
    #[serde(default)]
    long_after_death: bool,
    succeeded: Option<bool>,
    /// Departments of the patient's encounters around the access.
    #[serde(default)]
    encounter_departments: Vec<String>,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: Vec<String>,
    /// Policies with no case where they determined the decision.
    pub no_positive: Vec<String>,
    /// Policies with no case about them where they did not.
    pub no_negative: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.failed {
            out.push_str(&format!("FAIL {f}\n"));
        }
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.passed,
            self.failed.len()
        ));
        if !self.no_positive.is_empty() {
            out.push_str(&format!(
                "policies with no positive case: {}\n",
                self.no_positive.join(", ")
            ));
        }
        if !self.no_negative.is_empty() {
            out.push_str(&format!(
                "policies with no negative case: {}\n",
                self.no_negative.join(", ")
            ));
        }
        out
    }
}

fn facts(c: &Case, store: &mut ContextStore) -> Result<FactKey, Invalid> {
    let action = Action::ALL
        .into_iter()
        .find(|a| a.as_str() == c.action)
        .ok_or_else(|| {
            format!(
                "action {:?}: expected view, modify, print, export or query",
                c.action
            )
        })?;
    if c.hour > 23 {
        return Err(Invalid(format!("hour {} is not 0-23", c.hour)));
    }
    let bit = |on: bool, b: u8| if on { b } else { 0 };
    let u = &c.user;
    let p = &c.patient;
    let mut sens = 0;
    for label in &p.sensitive {
        sens |= sensitive::NAMES
            .iter()
            .find(|(_, n)| n == label)
            .map(|(b, _)| *b)
            .ok_or_else(|| format!("sensitive label {label:?}: expected PSY, ETH or HIV"))?;
    }
    let mut rels = 0;
    for k in &c.context.relationship_kinds {
        rels |= rel::NAMES
            .iter()
            .find(|(_, n)| n == k)
            .map(|(b, _)| *b)
            .ok_or_else(|| {
                format!("relationship kind {k:?}: expected encounter, care_team or appointment")
            })?;
    }
    let x = &c.context;
    let cbit = |on: bool, b: u16| if on { b } else { 0 };
    if x.encounter_departments.len() > MAX_ENCOUNTER_DEPARTMENTS {
        return Err(Invalid(format!(
            "encounter_departments: at most {MAX_ENCOUNTER_DEPARTMENTS}, as detection sees"
        )));
    }
    let mut encounter_departments = [NONE; MAX_ENCOUNTER_DEPARTMENTS];
    let mut ds: Vec<u32> = x
        .encounter_departments
        .iter()
        .map(|d| store.departments.intern(d))
        .collect();
    ds.sort_unstable();
    ds.dedup();
    encounter_departments[..ds.len()].copy_from_slice(&ds);
    Ok(FactKey {
        action,
        role: store.roles.intern(&u.role),
        department: store.departments.intern(&u.department),
        user: bit(u.known, user_flag::KNOWN)
            | bit(u.identified, user_flag::IDENTIFIED)
            | bit(u.clinical, user_flag::CLINICAL)
            | bit(u.active, user_flag::ACTIVE)
            | bit(u.business_need_role, user_flag::BUSINESS_NEED_ROLE),
        patient: bit(p.known, patient_flag::KNOWN)
            | bit(p.vip, patient_flag::VIP)
            | bit(p.employee, patient_flag::EMPLOYEE)
            | bit(p.restricted, patient_flag::RESTRICTED)
            | bit(p.deceased, patient_flag::DECEASED),
        sensitive: sens,
        relationships: rels,
        context: cbit(x.break_glass, ctx_flag::BREAK_GLASS)
            | cbit(x.after_hours, ctx_flag::AFTER_HOURS)
            | cbit(x.weekend, ctx_flag::WEEKEND)
            | cbit(x.department_encounter, ctx_flag::DEPARTMENT_ENCOUNTER)
            | cbit(x.recent_encounter, ctx_flag::RECENT_ENCOUNTER)
            | cbit(x.encounter_near, ctx_flag::ENCOUNTER_NEAR)
            | cbit(x.self_access, ctx_flag::SELF_ACCESS)
            | cbit(x.same_family_name, ctx_flag::SAME_FAMILY_NAME)
            | cbit(x.same_address, ctx_flag::SAME_ADDRESS)
            | cbit(x.same_street, ctx_flag::SAME_STREET)
            | cbit(x.coworker, ctx_flag::COWORKER)
            | cbit(x.long_after_death, ctx_flag::LONG_AFTER_DEATH)
            | cbit(x.succeeded.unwrap_or(true), ctx_flag::SUCCEEDED),
        hour: c.hour,
        days_since_death: x.days_since_death.unwrap_or(-1),
        encounter_departments,
    })
}

/// The access a test case stands for: only its facts matter to the policies.
fn test_access(key: FactKey) -> EnrichedAccess {
    EnrichedAccess {
        event: AccessEvent {
            id: "test".into(),
            time_ms: 0,
            user: "test-user".into(),
            patient: Some("test-patient".into()),
            action: key.action,
            action_code: 'R',
            subtype: String::new(),
            break_glass: key.has(ctx_flag::BREAK_GLASS),
            workstation: String::new(),
            succeeded: key.has(ctx_flag::SUCCEEDED),
            ..Default::default()
        },
        user: None,
        patient: None,
        facts: key,
    }
}

/// Why a directory of policy tests cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum TestDirError {
    #[error("{dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("{0}: no *.toml test files")]
    Empty(String),
    #[error("{name}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: {source}")]
    Parse {
        name: String,
        source: toml::de::Error,
    },
}

/// Runs every `*.toml` under `dir` against `pack`.
pub fn run(dir: &Path, pack: &PolicyPack) -> Result<Report, TestDirError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| TestDirError::Dir {
            dir: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(TestDirError::Empty(dir.display().to_string()));
    }
    let known: BTreeMap<&str, bool> = pack
        .rules()
        .iter()
        .map(|r| (r.id.as_str(), r.forbid))
        .collect();
    let mut positive: BTreeMap<String, bool> =
        known.keys().map(|k| (k.to_string(), false)).collect();
    let mut negative = positive.clone();
    let mut report = Report::default();
    let mut store = ContextStore::default();
    let mut detector = Detector::new(pack);
    for path in paths {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| TestDirError::Read {
            name: name.clone(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|source| TestDirError::Parse {
            name: name.clone(),
            source,
        })?;
        for c in file.cases {
            let here = format!("{name}: {:?}", c.name);
            if !known.contains_key(c.policy.as_str()) {
                report
                    .failed
                    .push(format!("{here}: policy {:?} is not in the pack", c.policy));
                continue;
            }
            for e in &c.expect {
                if e != "default-deny" && !known.get(e.as_str()).copied().unwrap_or(false) {
                    report.failed.push(format!(
                        "{here}: expect {e:?} is not a forbid policy of the pack"
                    ));
                }
            }
            let key = match facts(&c, &mut store) {
                Ok(k) => k,
                Err(e) => {
                    report.failed.push(format!("{here}: {e}"));
                    continue;
                }
            };
            let access = test_access(key);
            let (allowed, reasons) = match detector.determining(&access, &store) {
                Ok(r) => r,
                Err(e) => {
                    report.failed.push(format!("{here}: evaluation error: {e}"));
                    continue;
                }
            };
            let mut raised: Vec<String> = if allowed {
                Vec::new()
            } else if reasons.is_empty() {
                vec!["default-deny".into()]
            } else {
                reasons.clone()
            };
            raised.sort();
            let mut expect = c.expect.clone();
            expect.sort();
            if raised == expect {
                report.passed += 1;
            } else {
                report.failed.push(format!(
                    "{here}: expected {expect:?}, got {raised:?} (determining: {reasons:?})"
                ));
            }
            for r in &reasons {
                if let Some(v) = positive.get_mut(r) {
                    *v = true;
                }
            }
            if !reasons.contains(&c.policy) {
                if let Some(v) = negative.get_mut(&c.policy) {
                    *v = true;
                }
            }
        }
    }
    report.no_positive = positive
        .into_iter()
        .filter(|(_, v)| !v)
        .map(|(k, _)| k)
        .collect();
    report.no_negative = negative
        .into_iter()
        .filter(|(_, v)| !v)
        .map(|(k, _)| k)
        .collect();
    Ok(report)
}
