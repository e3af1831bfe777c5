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
