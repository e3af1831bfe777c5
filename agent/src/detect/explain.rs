//! Fills an `@explain` template with the facts of one access.

use crate::context::{sensitive, ContextStore};
use crate::enrich::{relationship_names, EnrichedAccess};
use crate::time::format_ms;

/// Fills a template with the facts of one access.
pub fn fill(template: &str, a: &EnrichedAccess, store: &ContextStore) -> String {
    fill_with(template, |name| value(name, a, store))
}

/// Replaces `{name}` placeholders; unknown names are left as written so a typo shows.
pub fn fill_with(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        match value(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

pub(super) fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        s.to_owned()
    }
}

fn value(name: &str, a: &EnrichedAccess, store: &ContextStore) -> Option<String> {
    let f = &a.facts;
    Some(match name {
        "user" => a.event.user.clone(),
        "patient" => a.event.patient.clone().unwrap_or_default(),
        "action" => a.event.action.as_str().to_owned(),
        "time" => format_ms(a.event.time_ms),
        "local_time" => format!("{:02}h local", f.hour),
        "hour" => f.hour.to_string(),
        "role" => or_unknown(store.roles.name(f.role)),
        "department" => or_unknown(store.departments.name(f.department)),
        "days_since_death" => f.days_since_death.to_string(),
        "workstation" => or_unknown(&a.event.workstation),
        "relationships" => relationship_names(f.relationships).join(", "),
        "sensitive" => sensitive::NAMES
            .iter()
            .filter(|(b, _)| f.sensitive & b != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join("/"),
        _ => return None,
    })
}

/// The facts of one access in the schema's vocabulary, one per line, for `policy explain`.
pub fn facts(a: &EnrichedAccess, store: &ContextStore) -> String {
    use crate::enrich::{ctx_flag, patient_flag, user_flag};
    let f = &a.facts;
    let on = |names: &[(&str, bool)]| -> String {
        let v: Vec<&str> = names.iter().filter(|(_, b)| *b).map(|(n, _)| *n).collect();
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    let u = |b| f.user & b != 0;
    let p = |b| f.patient & b != 0;
    let c = |b| f.has(b);
    format!(
        "event {id}: {action} by {user} of patient {patient}\n\
         user: role {role}, department {dept}; {uflags}\n\
         patient: {pflags}; sensitive {sens}\n\
         relationships at the time: {rels}\n\
         patient's encounter departments around the access: {encdepts}\n\
         context: {cflags}; local hour {hour}; days since death {dsd}\n",
        id = a.event.id,
        action = f.action.as_str(),
        user = a.event.user,
        patient = a.event.patient.as_deref().unwrap_or("-"),
        role = or_unknown(store.roles.name(f.role)),
        dept = or_unknown(store.departments.name(f.department)),
        uflags = on(&[
            ("known", u(user_flag::KNOWN)),
            ("identified", u(user_flag::IDENTIFIED)),
            ("clinical", u(user_flag::CLINICAL)),
            ("active", u(user_flag::ACTIVE)),
            ("business_need_role", u(user_flag::BUSINESS_NEED_ROLE)),
        ]),
        pflags = on(&[
            ("known", p(patient_flag::KNOWN)),
            ("vip", p(patient_flag::VIP)),
            ("employee", p(patient_flag::EMPLOYEE)),
            ("restricted", p(patient_flag::RESTRICTED)),
            ("deceased", p(patient_flag::DECEASED)),
        ]),
        sens = value("sensitive", a, store)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into()),
        rels = {
            let r = relationship_names(f.relationships).join(", ");
            if r.is_empty() {
                "-".to_owned()
            } else {
                r
            }
        },
        cflags = on(&[
            ("break_glass", c(ctx_flag::BREAK_GLASS)),
            ("after_hours", c(ctx_flag::AFTER_HOURS)),
            ("weekend", c(ctx_flag::WEEKEND)),
            ("department_encounter", c(ctx_flag::DEPARTMENT_ENCOUNTER)),
            ("recent_encounter", c(ctx_flag::RECENT_ENCOUNTER)),
            ("encounter_near", c(ctx_flag::ENCOUNTER_NEAR)),
            ("self_access", c(ctx_flag::SELF_ACCESS)),
            ("same_family_name", c(ctx_flag::SAME_FAMILY_NAME)),
            ("same_address", c(ctx_flag::SAME_ADDRESS)),
            ("same_street", c(ctx_flag::SAME_STREET)),
            ("coworker", c(ctx_flag::COWORKER)),
            ("long_after_death", c(ctx_flag::LONG_AFTER_DEATH)),
            ("succeeded", c(ctx_flag::SUCCEEDED)),
        ]),
        encdepts = {
            let d: Vec<&str> = f
                .encounter_departments()
                .map(|d| store.departments.name(d))
                .collect();
            if d.is_empty() {
                "-".to_owned()
            } else {
                d.join(", ")
            }
        },
        hour = f.hour,
        dsd = f.days_since_death,
    )
}
