//! The Cedar policy pack: load, validate against the schema, evaluate.
//!
//! Each `forbid` is a detection rule whose annotations (`@id`, `@category`, `@severity`,
//! `@explain`, `@hipaa`) describe the finding it raises; each `permit` is an explanation.
//! A Deny with satisfied forbids yields one finding per forbid; a Deny with none (no permit
//! matched) yields one `unexplained` finding; an Allow yields nothing.
//!
//! Speed: the request Cedar sees is built from the [`FactKey`] alone (ids aside), so the
//! decision is a pure function of the key. When no policy names a specific User or Patient,
//! ids cannot matter and each distinct key is evaluated once and remembered. A pack that does
//! name users or patients is evaluated per event, correctly but slower.

use super::{explain, locate};
use crate::context::{sensitive, ContextStore, NONE};
use crate::enrich::{
    ctx_flag, patient_flag, relationship_names, user_flag, EnrichedAccess, FactKey,
    MAX_ENCOUNTER_DEPARTMENTS,
};
use crate::event::Action;
use crate::finding::{Finding, Severity};
use ahash::AHashMap;
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use thiserror::Error;

/// Every problem found while loading a pack, one `file:line:column: message` per line.
#[derive(Debug, Error)]
#[error("{}", .problems.join("\n"))]
pub struct PolicyError {
    pub problems: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub file: String,
    pub line: usize,
    pub forbid: bool,
    pub category: String,
    pub severity: Severity,
    pub explain: String,
    pub hipaa: String,
}

/// Index of the default-deny rule in verdicts.
pub const UNEXPLAINED: u16 = u16::MAX;
/// The default-deny rule's id: the detector of every `unexplained` finding.
pub const UNEXPLAINED_ID: &str = "default-deny";

fn unexplained_rule() -> Rule {
    Rule {
        id: UNEXPLAINED_ID.into(),
        file: String::new(),
        line: 0,
        forbid: true,
        category: "unexplained".into(),
        severity: Severity::Low,
        explain: "No care relationship, department encounter, business need or documented emergency explains user {user} ({role}, {department}) opening patient {patient}'s record ({action} at {local_time}).".into(),
        hipaa: "45 CFR 164.308(a)(1)(ii)(D) information system activity review".into(),
    }
}

const EMBEDDED_SCHEMA: (&str, &str) = (
    "policies/schema.cedarschema",
    include_str!("../../../policies/schema.cedarschema"),
);

const EMBEDDED_FILE_SCHEMA: (&str, &str) = (
    "policies/files/schema.cedarschema",
    include_str!("../../../policies/files/schema.cedarschema"),
);

pub const EMBEDDED_FILE_POLICIES: &[(&str, &str)] = &[(
    "policies/files/files.cedar",
    include_str!("../../../policies/files/files.cedar"),
)];

/// The default pack, compiled in so `scan` and `demo` need no files.
pub const EMBEDDED_POLICIES: &[(&str, &str)] = &[
    (
        "policies/accounts.cedar",
        include_str!("../../../policies/accounts.cedar"),
    ),
    (
        "policies/explanations.cedar",
        include_str!("../../../policies/explanations.cedar"),
    ),
    (
        "policies/sensitive.cedar",
        include_str!("../../../policies/sensitive.cedar"),
    ),
    (
        "policies/snooping.cedar",
        include_str!("../../../policies/snooping.cedar"),
    ),
];

pub struct PolicyPack {
    pub(super) set: PolicySet,
    pub(super) schema: Schema,
    rules: Vec<Rule>,
    pub(super) rule_ix: AHashMap<String, u16>,
    unexplained: Rule,
    /// No policy names a specific User or Patient: decisions may be memoised by fact key.
    memo_safe: bool,
    /// Some policy reads `context.encounter_departments`. When none does, the departments
    /// are left out of the memo key: they would only split identical decisions (measured on
    /// the demo: 2.4 times the Cedar evaluations).
    reads_encounter_departments: bool,
}

/// The schema validator's complaints about a file's policies, one per problem (not one per
/// action a policy applies to), naming policies by their `@id`.
fn validation_problems(
    validator: &Validator,
    file_set: &PolicySet,
    name: &str,
    text: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let result = validator.validate(file_set, ValidationMode::Strict);
    let mut seen = HashSet::new();
    for err in result.validation_errors() {
        let pid = err.policy_id().to_string();
        let shown = file_set
            .policy(err.policy_id())
            .and_then(|p| p.annotation("id"))
            .unwrap_or(&pid)
            .to_owned();
        for msg in diagnostics(err, name, text) {
            // One message per problem, not one per action the policy applies to.
            let msg = without_action(&msg).replace(&format!("`{pid}`"), &format!("`{shown}`"));
            if seen.insert(msg.clone()) {
                out.push(msg);
            }
        }
    }
    out
}

/// A policy's rule from its annotations; a forbid must carry all four, and a readable
/// severity.
fn rule_of(
    p: &cedar_policy::Policy,
    id: &str,
    name: &str,
    line: usize,
    here: &str,
    problems: &mut Vec<String>,
) -> Rule {
    let ann = |k: &str| p.annotation(k).map(str::to_owned);
    let forbid = p.effect() == cedar_policy::Effect::Forbid;
    let mut rule = Rule {
        id: id.to_owned(),
        file: name.to_owned(),
        line,
        forbid,
        category: ann("category").unwrap_or_default(),
        severity: Severity::Low,
        explain: ann("explain").unwrap_or_default(),
        hipaa: ann("hipaa").unwrap_or_default(),
    };
    if forbid {
        for key in ["category", "explain", "hipaa", "severity"] {
            if p.annotation(key).is_none_or(str::is_empty) {
                problems.push(format!(
                    "{here}: forbid policy `{id}` has no @{key} annotation"
                ));
            }
        }
        if let Some(s) = p.annotation("severity") {
            match s.parse() {
                Ok(sev) => rule.severity = sev,
                Err(msg) => problems.push(format!("{here}: policy `{id}`: {msg}")),
            }
        }
    }
    rule
}

/// The text of a pack: its schema and policy files (a draft is made by replacing some).
#[derive(Debug, Clone)]
pub struct PackSources {
    pub schema_name: String,
    pub schema: String,
    /// (file name as messages show it, text), in load order.
    pub files: Vec<(String, String)>,
}

impl PackSources {
    /// `DIR/schema.cedarschema` and every `DIR/*.cedar`; without a directory, the built-in
    /// pack's.
    pub fn read(dir: Option<&Path>) -> Result<Self, PolicyError> {
        let fail = |m: String| PolicyError { problems: vec![m] };
        let Some(dir) = dir else {
            return Ok(PackSources {
                schema_name: EMBEDDED_SCHEMA.0.into(),
                schema: EMBEDDED_SCHEMA.1.into(),
                files: EMBEDDED_POLICIES
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.to_string()))
                    .collect(),
            });
        };
        let schema_path = dir.join("schema.cedarschema");
        let schema = std::fs::read_to_string(&schema_path)
            .map_err(|e| fail(format!("{}: {e}", schema_path.display())))?;
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| fail(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(fail(format!("{}: no *.cedar policy files", dir.display())));
        }
        let mut files = Vec::new();
        for p in paths {
            let text =
                std::fs::read_to_string(&p).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            files.push((p.display().to_string(), text));
        }
        Ok(PackSources {
            schema_name: schema_path.display().to_string(),
            schema,
            files,
        })
    }

    pub fn compile(&self) -> Result<PolicyPack, PolicyError> {
        PolicyPack::from_sources(&self.schema_name, &self.schema, &self.files)
    }

    /// The file whose base name is `base` replaced by `text`, or added when there is none.
    pub fn with_file(mut self, base: &str, text: &str) -> Self {
        let same = |n: &str| Path::new(n).file_name().is_some_and(|f| f == base);
        match self.files.iter_mut().find(|(n, _)| same(n)) {
            Some(f) => f.1 = text.to_owned(),
            None => self.files.push((format!("draft/{base}"), text.to_owned())),
        }
        self
    }
}

impl PolicyPack {
    pub fn embedded() -> Self {
        let files: Vec<(String, String)> = EMBEDDED_POLICIES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        PolicyPack::from_sources(EMBEDDED_SCHEMA.0, EMBEDDED_SCHEMA.1, &files)
            .expect("embedded policy pack is valid")
    }

    /// Loads `DIR/schema.cedarschema` and every `DIR/*.cedar`.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        PackSources::read(Some(dir))?.compile()
    }

    pub fn from_sources(
        schema_name: &str,
        schema_text: &str,
        files: &[(String, String)],
    ) -> Result<Self, PolicyError> {
        let schema = match Schema::from_cedarschema_str(schema_text) {
            Ok((s, _warnings)) => s,
            Err(e) => {
                return Err(PolicyError {
                    problems: diagnostics(&e, schema_name, schema_text),
                })
            }
        };
        let validator = Validator::new(schema.clone());
        let mut problems = Vec::new();
        let mut set = PolicySet::new();
        let mut rules = Vec::new();
        let mut rule_ix = AHashMap::new();
        let mut memo_safe = true;
        let mut reads_encounter_departments = false;
        for (name, text) in files {
            let file_set = match PolicySet::from_str(text) {
                Ok(s) => s,
                Err(e) => {
                    problems.extend(diagnostics(&e, name, text));
                    continue;
                }
            };
            if file_set.templates().next().is_some() {
                problems.push(format!(
                    "{name}: policy templates are not supported; write static policies"
                ));
                continue;
            }
            problems.extend(validation_problems(&validator, &file_set, name, text));
            let starts = locate::statement_starts(text);
            let mut policies: Vec<_> = file_set.policies().collect();
            policies.sort_by_key(|p| auto_index(p.id()));
            for p in policies {
                let at = auto_index(p.id())
                    .and_then(|n| starts.get(n).copied())
                    .unwrap_or(0);
                let (line, col) = locate::line_col(text, at);
                let here = format!("{name}:{line}:{col}");
                let ann = |k: &str| p.annotation(k).map(str::to_owned);
                let Some(id) = ann("id") else {
                    problems.push(format!("{here}: policy has no @id annotation"));
                    continue;
                };
                if rule_ix.contains_key(&id) {
                    problems.push(format!(
                        "{here}: @id(\"{id}\") is already used by another policy"
                    ));
                    continue;
                }
                let rule = rule_of(p, &id, name, line, &here, &mut problems);
                memo_safe &= !names_user_or_patient(p);
                reads_encounter_departments |= p.to_string().contains("encounter_departments");
                if let Err(e) = set.add(p.new_id(PolicyId::new(&id))) {
                    problems.push(format!("{here}: {e}"));
                    continue;
                }
                rule_ix.insert(id, rules.len() as u16);
                rules.push(rule);
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        if rules.len() >= UNEXPLAINED as usize {
            return Err(PolicyError {
                problems: vec![format!(
                    "{} policies: at most {} are supported",
                    rules.len(),
                    UNEXPLAINED - 1
                )],
            });
        }
        Ok(PolicyPack {
            set,
            schema,
            rules,
            rule_ix,
            unexplained: unexplained_rule(),
            memo_safe,
            reads_encounter_departments,
        })
    }

    /// The raised forbid rules of a Cedar response; the default deny when none matched.
    pub(super) fn raised(&self, response: &cedar_policy::Response) -> Vec<u16> {
        match response.decision() {
            Decision::Allow => Vec::new(),
            Decision::Deny => {
                let mut ids: Vec<u16> = response
                    .diagnostics()
                    .reason()
                    .filter_map(|id| self.rule_ix.get(id.to_string().as_str()).copied())
                    .filter(|&ix| self.rules[ix as usize].forbid)
                    .collect();
                ids.sort_unstable();
                if ids.is_empty() {
                    ids.push(UNEXPLAINED);
                }
                ids
            }
        }
    }

    /// The folder-event pack built in: `policies/files/`.
    pub fn embedded_files() -> Self {
        let files: Vec<(String, String)> = EMBEDDED_FILE_POLICIES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        PolicyPack::from_sources(EMBEDDED_FILE_SCHEMA.0, EMBEDDED_FILE_SCHEMA.1, &files)
            .expect("embedded file policy pack is valid")
            .for_files()
    }

    /// Loads a folder-event pack (`DIR/files/` of a policy directory).
    pub fn load_files_dir(dir: &Path) -> Result<Self, PolicyError> {
        Ok(PolicyPack::load_dir(dir)?.for_files())
    }

    fn for_files(mut self) -> Self {
        self.unexplained = Rule {
            explain: "No policy explains {action} of {path} in PHI folder {folder} (owner {user})."
                .into(),
            hipaa: "45 CFR 164.308(a)(1)(ii)(D) information system activity review".into(),
            ..unexplained_rule()
        };
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, ix: u16) -> &Rule {
        if ix == UNEXPLAINED {
            &self.unexplained
        } else {
            &self.rules[ix as usize]
        }
    }

    pub fn memo_safe(&self) -> bool {
        self.memo_safe
    }
}

/// `policyN` → N: the parser numbers policies in source order.
fn auto_index(id: &PolicyId) -> Option<usize> {
    id.to_string().strip_prefix("policy")?.parse().ok()
}

fn names_user_or_patient(p: &cedar_policy::Policy) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                let is_literal = m.get("id").is_some_and(|i| i.is_string())
                    && matches!(
                        m.get("type").and_then(|t| t.as_str()),
                        Some("User" | "Patient")
                    );
                is_literal || m.values().any(walk)
            }
            serde_json::Value::Array(a) => a.iter().any(walk),
            _ => false,
        }
    }
    // Unserialisable means unknown: assume it names someone and stay exact.
    p.to_json().map_or(true, |j| walk(&j))
}

/// Drops the ` for Action::"view"` part Cedar adds to per-action validation messages.
fn without_action(msg: &str) -> String {
    let Some(at) = msg.find(" for Action::\"") else {
        return msg.to_owned();
    };
    let rest = &msg[at + " for Action::\"".len()..];
    match rest.find('"') {
        Some(end) => format!("{}{}", &msg[..at], &rest[end + 1..]),
        None => msg.to_owned(),
    }
}

/// Flattens a miette diagnostic (and its related ones) into `file:line:col: message` lines.
fn diagnostics(d: &dyn Diagnostic, file: &str, text: &str) -> Vec<String> {
    let mut out = vec![one_diagnostic(d, file, text)];
    if let Some(related) = d.related() {
        out.extend(related.map(|r| one_diagnostic(r, file, text)));
    }
    out
}

fn one_diagnostic(d: &dyn Diagnostic, file: &str, text: &str) -> String {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let mut msg = match offset {
        Some(o) => {
            let (line, col) = locate::line_col(text, o);
            format!("{file}:{line}:{col}: {d}")
        }
        None => format!("{file}: {d}"),
    };
    if let Some(help) = d.help() {
        msg.push_str(&format!(" (help: {help})"));
    }
    msg
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DetectStats {
    /// Cedar authorisation calls actually made.
    pub evaluations: u64,
    pub memo_hits: u64,
    /// Policies that raised an evaluation error (they are skipped by Cedar, so counted here).
    pub eval_errors: u64,
}

const MEMO_CAP: usize = 1 << 20;

pub struct Detector<'p> {
    pack: &'p PolicyPack,
    authorizer: Authorizer,
    memo: AHashMap<FactKey, Arc<[u16]>>,
    user_type: EntityTypeName,
    patient_type: EntityTypeName,
    department_type: EntityTypeName,
    role_type: EntityTypeName,
    actions: HashMap<Action, EntityUid>,
    pub stats: DetectStats,
}

impl<'p> Detector<'p> {
    pub fn new(pack: &'p PolicyPack) -> Self {
        let ty = |s: &str| EntityTypeName::from_str(s).expect("static type name");
        let action_ty = ty("Action");
        Detector {
            pack,
            authorizer: Authorizer::new(),
            memo: AHashMap::new(),
            user_type: ty("User"),
            patient_type: ty("Patient"),
            department_type: ty("Department"),
            role_type: ty("Role"),
            actions: Action::ALL
                .iter()
                .map(|a| {
                    let uid = EntityUid::from_type_name_and_id(
                        action_ty.clone(),
                        EntityId::new(a.as_str()),
                    );
                    (*a, uid)
                })
                .collect(),
            stats: DetectStats::default(),
        }
    }

    pub fn pack(&self) -> &PolicyPack {
        self.pack
    }

    /// Rule indices raised by this access (empty: explained and allowed).
    pub fn judge(&mut self, a: &EnrichedAccess, store: &ContextStore) -> Arc<[u16]> {
        if !self.pack.memo_safe {
            return self.evaluate(
                a,
                store,
                &a.event.user,
                a.event.patient.as_deref().unwrap_or(""),
            );
        }
        let mut key = a.facts;
        if !self.pack.reads_encounter_departments {
            key.encounter_departments = [crate::context::NONE; MAX_ENCOUNTER_DEPARTMENTS];
        }
        if let Some(v) = self.memo.get(&key) {
            self.stats.memo_hits += 1;
            return v.clone();
        }
        let verdict = self.evaluate(a, store, "*", "*");
        if self.memo.len() >= MEMO_CAP {
            self.memo.clear();
        }
        self.memo.insert(key, verdict.clone());
        verdict
    }

    /// Judges without the memo: the raw Cedar cost, for benchmarks and cross-checks.
    pub fn judge_uncached(&mut self, a: &EnrichedAccess, store: &ContextStore) -> Arc<[u16]> {
        self.evaluate(
            a,
            store,
            &a.event.user,
            a.event.patient.as_deref().unwrap_or(""),
        )
    }

    /// The policies that determined the decision (satisfied forbids when denied, satisfied
    /// permits when allowed), by `@id`, and whether the access was allowed.
    pub fn determining(
        &mut self,
        a: &EnrichedAccess,
        store: &ContextStore,
    ) -> Result<(bool, Vec<String>), super::RequestError> {
        let (request, entities) = self.request(
            &a.facts,
            store,
            &a.event.user,
            a.event.patient.as_deref().unwrap_or(""),
        )?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.pack.set, &entities);
        if let Some(e) = response.diagnostics().errors().next() {
            return Err(e.clone().into());
        }
        let mut ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        Ok((response.decision() == Decision::Allow, ids))
    }

    pub fn findings(&mut self, a: &EnrichedAccess, store: &ContextStore, out: &mut Vec<Finding>) {
        let verdict = self.judge(a, store);
        for &ix in verdict.iter() {
            let rule = self.pack.rule(ix);
            out.push(Finding {
                event_id: a.event.id.clone(),
                time: crate::time::format_ms(a.event.time_ms),
                user: a.event.user.clone(),
                department: store.departments.name(a.facts.department).to_owned(),
                patient: a.event.patient.clone().unwrap_or_default(),
                action: a.event.action.as_str().to_owned(),
                category: rule.category.clone(),
                severity: rule.severity,
                detector: rule.id.clone(),
                explanation: explain::fill(&rule.explain, a, store),
                hipaa: rule.hipaa.clone(),
            });
        }
    }

    fn evaluate(
        &mut self,
        a: &EnrichedAccess,
        store: &ContextStore,
        user: &str,
        patient: &str,
    ) -> Arc<[u16]> {
        self.stats.evaluations += 1;
        let (request, entities) = match self.request(&a.facts, store, user, patient) {
            Ok(r) => r,
            Err(e) => {
                // Only a schema/enrich mismatch can get here; count it and treat it as unexplained.
                tracing::error!(error = %e, "cannot build the Cedar request");
                self.stats.eval_errors += 1;
                return Arc::from(vec![UNEXPLAINED]);
            }
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.pack.set, &entities);
        let errors = response.diagnostics().errors().count() as u64;
        if errors > 0 {
            self.stats.eval_errors += errors;
        }
        Arc::from(self.pack.raised(&response))
    }

    fn request(
        &self,
        f: &FactKey,
        store: &ContextStore,
        user: &str,
        patient: &str,
    ) -> Result<(Request, Entities), super::RequestError> {
        let b = RestrictedExpression::new_bool;
        let principal =
            EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(user));
        let resource =
            EntityUid::from_type_name_and_id(self.patient_type.clone(), EntityId::new(patient));
        let mut parents = HashSet::new();
        if f.department != NONE {
            parents.insert(EntityUid::from_type_name_and_id(
                self.department_type.clone(),
                EntityId::new(store.departments.name(f.department)),
            ));
        }
        if f.role != NONE {
            parents.insert(EntityUid::from_type_name_and_id(
                self.role_type.clone(),
                EntityId::new(store.roles.name(f.role)),
            ));
        }
        let ub = |bit| b(f.user & bit != 0);
        let user_entity = Entity::new(
            principal.clone(),
            HashMap::from([
                ("known".into(), ub(user_flag::KNOWN)),
                ("identified".into(), ub(user_flag::IDENTIFIED)),
                ("clinical".into(), ub(user_flag::CLINICAL)),
                ("active".into(), ub(user_flag::ACTIVE)),
                (
                    "business_need_role".into(),
                    ub(user_flag::BUSINESS_NEED_ROLE),
                ),
            ]),
            parents,
        )?;
        let pb = |bit| b(f.patient & bit != 0);
        let labels = sensitive::NAMES
            .iter()
            .filter(|(bit, _)| f.sensitive & bit != 0)
            .map(|(_, n)| RestrictedExpression::new_string((*n).to_owned()));
        let patient_entity = Entity::new(
            resource.clone(),
            HashMap::from([
                ("known".into(), pb(patient_flag::KNOWN)),
                ("vip".into(), pb(patient_flag::VIP)),
                ("employee".into(), pb(patient_flag::EMPLOYEE)),
                ("restricted".into(), pb(patient_flag::RESTRICTED)),
                ("deceased".into(), pb(patient_flag::DECEASED)),
                ("sensitive".into(), RestrictedExpression::new_set(labels)),
            ]),
            HashSet::new(),
        )?;

        let c = |bit| b(f.has(bit));
        let treating = f.relationships != 0;
        let clinical = f.user & user_flag::CLINICAL != 0;
        let relationship = treating || (clinical && f.has(ctx_flag::DEPARTMENT_ENCOUNTER));
        let kinds = relationship_names(f.relationships)
            .into_iter()
            .map(|k| RestrictedExpression::new_string(k.to_owned()));
        let context = Context::from_pairs([
            ("break_glass".into(), c(ctx_flag::BREAK_GLASS)),
            ("after_hours".into(), c(ctx_flag::AFTER_HOURS)),
            ("weekend".into(), c(ctx_flag::WEEKEND)),
            (
                "hour".into(),
                RestrictedExpression::new_long(i64::from(f.hour)),
            ),
            ("treating".into(), b(treating)),
            ("relationship".into(), b(relationship)),
            (
                "relationship_kinds".into(),
                RestrictedExpression::new_set(kinds),
            ),
            (
                "department_encounter".into(),
                c(ctx_flag::DEPARTMENT_ENCOUNTER),
            ),
            ("recent_encounter".into(), c(ctx_flag::RECENT_ENCOUNTER)),
            ("encounter_near".into(), c(ctx_flag::ENCOUNTER_NEAR)),
            ("self_access".into(), c(ctx_flag::SELF_ACCESS)),
            ("same_family_name".into(), c(ctx_flag::SAME_FAMILY_NAME)),
            ("same_address".into(), c(ctx_flag::SAME_ADDRESS)),
            ("same_street".into(), c(ctx_flag::SAME_STREET)),
            ("coworker".into(), c(ctx_flag::COWORKER)),
            (
                "days_since_death".into(),
                RestrictedExpression::new_long(i64::from(f.days_since_death)),
            ),
            ("long_after_death".into(), c(ctx_flag::LONG_AFTER_DEATH)),
            ("succeeded".into(), c(ctx_flag::SUCCEEDED)),
            (
                "encounter_departments".into(),
                RestrictedExpression::new_set(f.encounter_departments().map(|d| {
                    RestrictedExpression::new_string(store.departments.name(d).to_owned())
                })),
            ),
        ])?;
        let schema = Some(&self.pack.schema);
        let request = Request::new(
            principal,
            self.actions[&f.action].clone(),
            resource,
            context,
            schema,
        )?;
        let entities = Entities::from_entities([user_entity, patient_entity], schema)?;
        Ok((request, entities))
    }
}
