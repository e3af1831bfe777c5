//! What each case action changes, and what it refuses, whichever store holds the case: the
//! single process's SQLite (`Cases`) or the fleet's PostgreSQL (`fleet`). Each returns the
//! columns to set; the store sets them and logs their values before and after.

use super::clock::LawEnforcementDelay;
use super::{invalid, need, Assessment, CaseError};
use chrono::NaiveDate;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Columns of `cases` to set, with their new values.
pub type Set = Vec<(&'static str, Value)>;

/// What an action may look at before deciding what it sets: the case as it stands (in
/// fleet mode, with its row locked until the change commits).
pub struct Current {
    pub state: String,
    pub assessment: Option<Assessment>,
}

/// Assigns the case; a new case moves to investigating.
pub fn assign_set(state: &str, assignee: &str) -> Result<Set, CaseError> {
    need(assignee, "the assignee")?;
    let mut set = vec![("assignee", json!(assignee))];
    if state == "new" {
        set.push(("state", json!("investigating")));
    }
    Ok(set)
}

/// The facts the clocks need.
pub fn facts_set(
    discovered: Option<NaiveDate>,
    residents: Option<BTreeMap<String, u32>>,
    delays: Option<Vec<LawEnforcementDelay>>,
    licensed_in: Option<Vec<String>>,
) -> Result<Set, CaseError> {
    let mut set = Vec::new();
    if let Some(d) = discovered {
        set.push(("discovered", json!(d.to_string())));
    }
    if let Some(r) = residents {
        for s in r.keys() {
            if s.len() != 2 || !s.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(invalid(format!(
                    "state {s:?}: use the two-letter code (CA, TX, ...)"
                )));
            }
        }
        set.push(("residents", json!(r)));
    }
    if let Some(ds) = delays {
        let v: Vec<Value> = ds
            .iter()
            .map(|d| match d {
                LawEnforcementDelay::Written { from, until } => {
                    json!({ "kind": "written", "from": from.to_string(), "until": until.to_string() })
                }
                LawEnforcementDelay::Oral { from, days } => {
                    json!({ "kind": "oral", "from": from.to_string(), "days": days })
                }
            })
            .collect();
        set.push(("delays", Value::Array(v)));
    }
    if let Some(l) = licensed_in {
        set.push(("licensed_in", json!(l)));
    }
    if set.is_empty() {
        return Err(invalid("nothing to set"));
    }
    Ok(set)
}

/// The four-factor risk assessment; the case moves to risk assessment.
pub fn assess_set(a: &Assessment) -> Result<Set, CaseError> {
    for (name, text) in [
        (
            "nature and extent of the PHI (--nature)",
            &a.nature_and_extent,
        ),
        ("the unauthorized person (--person)", &a.unauthorized_person),
        (
            "whether the PHI was acquired or viewed (--viewed)",
            &a.acquired_or_viewed,
        ),
        ("the extent of mitigation (--mitigation)", &a.mitigation),
        ("the conclusion (--conclusion)", &a.conclusion),
    ] {
        if text.trim().is_empty() {
            return Err(invalid(format!(
                "the assessment needs {name}: 45 CFR 164.402(2) names four factors"
            )));
        }
    }
    Ok(vec![
        ("assessment", serde_json::to_value(a).unwrap_or_default()),
        ("state", json!("risk_assessment")),
    ])
}

/// `breach`, `not_breach` or `excluded`. A breach is presumed (164.402): the other two need
/// an assessment that shows a low probability of compromise, or an exclusion.
pub fn determine_set(
    outcome: &str,
    assessment: Option<&Assessment>,
    on: Option<NaiveDate>,
) -> Result<Set, CaseError> {
    match outcome {
        "breach" => {}
        "not_breach" => {
            if !assessment.is_some_and(|a| a.low_probability) {
                return Err(invalid(
                    "a breach is presumed (45 CFR 164.402) unless the risk assessment demonstrates a low probability that the PHI has been compromised: record it with `case assess ... --low-probability`",
                ));
            }
        }
        "excluded" => {
            if assessment.is_none_or(|a| a.exclusion.is_none()) {
                return Err(invalid(
                    "`excluded` needs an assessment naming the exclusion (--exclusion)",
                ));
            }
        }
        other => {
            return Err(invalid(format!(
                "outcome {other:?}: expected breach, not_breach or excluded"
            )))
        }
    }
    let on = on.unwrap_or_else(|| chrono::Utc::now().date_naive());
    Ok(vec![
        ("determination", json!(outcome)),
        ("determined", json!(on.to_string())),
        ("state", json!("determined")),
    ])
}

/// A determined case moves to notifying (notices are going out).
pub fn notifying_set(id: i64, state: &str) -> Result<Set, CaseError> {
    if state != "determined" {
        return Err(invalid(format!("case #{id} is not determined yet")));
    }
    Ok(vec![("state", json!("notifying"))])
}

/// `true_positive`, `false_positive` or `duplicate`.
pub fn close_set(resolution: &str) -> Result<Set, CaseError> {
    if !["true_positive", "false_positive", "duplicate"].contains(&resolution) {
        return Err(invalid(format!(
            "resolution {resolution:?}: expected true_positive, false_positive or duplicate"
        )));
    }
    Ok(vec![
        ("resolution", json!(resolution)),
        ("state", json!("closed")),
    ])
}

/// A case opened without a title is named after its first alert (`summary`).
pub fn title_or(title: &str, summary: Option<String>) -> String {
    if title.is_empty() {
        summary.unwrap_or_else(|| "case opened by hand".into())
    } else {
        title.to_owned()
    }
}
