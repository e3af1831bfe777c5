//! FHIR R4 `AuditEvent` following IHE Basic Audit Log Patterns (BALP).
//!
//! user    = `who` of the agent with `requestor: true` (a Practitioner reference, else its identifier)
//! patient = the entity with object-role 1 (Patient), else any entity whose `what` is a Patient
//! action  = `action` C/R/U/D/E refined by `type`/`subtype` (export, print, query)
//! break-the-glass = ETREAT in `purposeOfEvent` or in the requestor's `purposeOfUse`

use super::DecodeError;
use crate::event::{AccessEvent, Action};
use crate::fhir::{CodeableConcept, Coding, Reference, Str};
use crate::time::parse_fhir_time;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct AuditEventJson<'a> {
    #[serde(borrow, rename = "resourceType")]
    resource_type: Option<Str<'a>>,
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "type")]
    type_: Option<Coding<'a>>,
    #[serde(borrow, default)]
    subtype: Vec<Coding<'a>>,
    #[serde(borrow, default)]
    action: Option<Str<'a>>,
    #[serde(borrow, default)]
    recorded: Option<Str<'a>>,
    #[serde(borrow, default)]
    outcome: Option<Str<'a>>,
    #[serde(borrow, default, rename = "purposeOfEvent")]
    purpose_of_event: Vec<CodeableConcept<'a>>,
    #[serde(borrow, default)]
    agent: Vec<Agent<'a>>,
    #[serde(borrow, default)]
    entity: Vec<Entity<'a>>,
}

#[derive(Deserialize)]
struct Agent<'a> {
    #[serde(borrow, default)]
    who: Option<Reference<'a>>,
    #[serde(default)]
    requestor: bool,
    #[serde(borrow, default)]
    network: Option<Network<'a>>,
    #[serde(borrow, default, rename = "purposeOfUse")]
    purpose_of_use: Vec<CodeableConcept<'a>>,
}

#[derive(Deserialize)]
struct Network<'a> {
    #[serde(borrow, default)]
    address: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Entity<'a> {
    #[serde(borrow, default)]
    what: Option<Reference<'a>>,
    #[serde(borrow, default)]
    role: Option<Coding<'a>>,
}

/// A decoded line: a patient access, or a valid AuditEvent that touches no patient record
/// (login, logout, application start), which detection has nothing to judge.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Access(AccessEvent),
    NoPatient,
}

const BREAK_GLASS: &str = "ETREAT";

pub fn decode_audit_event(line: &[u8]) -> Result<Decoded, DecodeError> {
    let ae: AuditEventJson<'_> =
        serde_json::from_slice(line).map_err(|e| DecodeError::from_json(&e))?;
    match ae.resource_type.as_deref() {
        Some("AuditEvent") => {}
        Some(other) => return Err(DecodeError::WrongResourceType(truncate(other, 40))),
        None => return Err(DecodeError::MissingResourceType),
    }
    let recorded = ae.recorded.as_deref().ok_or(DecodeError::MissingRecorded)?;
    let time_ms = parse_fhir_time(recorded).ok_or(DecodeError::BadRecorded)?;
    let action_code = match ae.action.as_deref() {
        None => 'E',
        Some(a @ ("C" | "R" | "U" | "D" | "E")) => a.chars().next().unwrap_or('E'),
        Some(_) => return Err(DecodeError::BadAction),
    };

    let Some(patient) = find_patient(&ae.entity) else {
        return Ok(Decoded::NoPatient);
    };
    let requestor = find_requestor(&ae.agent).ok_or(DecodeError::NoRequestor)?;
    let user = agent_identity(requestor).ok_or(DecodeError::NoRequestor)?;

    let break_glass = ae.purpose_of_event.iter().any(|c| c.has_code(BREAK_GLASS))
        || requestor
            .purpose_of_use
            .iter()
            .any(|c| c.has_code(BREAK_GLASS));
    let workstation = requestor
        .network
        .as_ref()
        .or_else(|| ae.agent.iter().find_map(|a| a.network.as_ref()))
        .and_then(|n| n.address.as_deref())
        .unwrap_or("");
    let subtype = ae.subtype.first().map(Coding::code).unwrap_or("");
    let type_code = ae.type_.as_ref().map(Coding::code).unwrap_or("");

    Ok(Decoded::Access(AccessEvent {
        id: match ae.id.as_deref() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => line_hash(line),
        },
        time_ms,
        user: user.to_owned(),
        patient: Some(patient.to_owned()),
        action: classify_action(action_code, type_code, |needle| {
            ae.subtype
                .iter()
                .any(|c| c.code().eq_ignore_ascii_case(needle))
        }),
        action_code,
        subtype: subtype.to_owned(),
        break_glass,
        workstation: workstation.to_owned(),
        succeeded: matches!(ae.outcome.as_deref(), None | Some("0")),
    }))
}

fn find_patient<'e>(entities: &'e [Entity<'_>]) -> Option<&'e str> {
    let by_role = entities.iter().find_map(|e| {
        let is_patient_role = e.role.as_ref().is_some_and(|r| r.code() == "1");
        let what = e.what.as_ref()?;
        if is_patient_role {
            what.id_of("Patient")
                .or_else(|| what.identifier.as_ref()?.value.as_deref())
        } else {
            None
        }
    });
    by_role.or_else(|| {
        entities
            .iter()
            .find_map(|e| e.what.as_ref()?.id_of("Patient"))
    })
}

fn find_requestor<'g, 'a>(agents: &'g [Agent<'a>]) -> Option<&'g Agent<'a>> {
    agents
        .iter()
        .find(|a| a.requestor && a.who.is_some())
        .or_else(|| {
            agents.iter().find(|a| {
                a.who
                    .as_ref()
                    .is_some_and(|w| w.id_of("Practitioner").is_some())
            })
        })
}

fn agent_identity<'g>(agent: &'g Agent<'_>) -> Option<&'g str> {
    let who = agent.who.as_ref()?;
    who.id_of("Practitioner")
        .or_else(|| who.id_of("PractitionerRole"))
        .or_else(|| who.identifier.as_ref()?.value.as_deref())
        .or_else(|| who.target().map(|(_, id)| id))
        .filter(|s| !s.is_empty())
}

/// `sub(code)` says whether any subtype (event type) code equals `code`, ignoring case.
pub(super) fn classify_action(code: char, type_code: &str, sub: impl Fn(&str) -> bool) -> Action {
    // DICOM 110106 Export; IHE ITI-32 distributes a document set on media.
    if type_code == "110106" || sub("export") || sub("ITI-32") || sub("disclosure") {
        return Action::Export;
    }
    if sub("print") {
        return Action::Print;
    }
    match code {
        'C' | 'U' | 'D' => Action::Modify,
        'R' => Action::View,
        _ if type_code == "110112" || sub("search") || sub("query") || sub("search-type") => {
            Action::Query
        }
        _ => Action::View,
    }
}

/// A stable event id for an AuditEvent without one: the same line always gets the same id,
/// so a replay stays idempotent.
pub(super) fn line_hash(line: &[u8]) -> String {
    let digest = Sha256::digest(line.trim_ascii());
    let mut s = String::with_capacity(36);
    s.push_str("sha256:");
    for b in &digest[..14] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balp(extra: &str) -> String {
        format!(
            r#"{{"resourceType":"AuditEvent","id":"ae1","type":{{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest"}},"subtype":[{{"system":"http://hl7.org/fhir/restful-interaction","code":"read"}}],"action":"R","recorded":"2024-03-01T14:05:00Z","outcome":"0","agent":[{{"type":{{"coding":[{{"code":"humanuser"}}]}},"who":{{"reference":"Practitioner/pr-7"}},"requestor":true,"network":{{"address":"ws-12","type":"1"}}}}],"entity":[{{"what":{{"reference":"Patient/pt-9"}},"role":{{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1"}}}}]{extra}}}"#
        )
    }

    fn access(line: &str) -> AccessEvent {
        match decode_audit_event(line.as_bytes()).unwrap() {
            Decoded::Access(a) => a,
            Decoded::NoPatient => panic!("no patient in {line}"),
        }
    }

    #[test]
    fn balp_read() {
        let a = access(&balp(""));
        assert_eq!(a.id, "ae1");
        assert_eq!(a.user, "pr-7");
        assert_eq!(a.patient.as_deref(), Some("pt-9"));
        assert_eq!(a.action, Action::View);
        assert_eq!(a.subtype, "read");
        assert_eq!(a.workstation, "ws-12");
        assert!(!a.break_glass);
        assert!(a.succeeded);
        assert_eq!(a.time_ms, parse_fhir_time("2024-03-01T14:05:00Z").unwrap());
    }

    #[test]
    fn break_glass_from_purpose_of_event() {
        let line = balp(
            r#","purposeOfEvent":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"ETREAT"}]}]"#,
        );
        assert!(access(&line).break_glass);
    }

    #[test]
    fn break_glass_from_agent_purpose_of_use() {
        let line = balp("").replace(
            r#""requestor":true"#,
            r#""requestor":true,"purposeOfUse":[{"coding":[{"code":"ETREAT"}]}]"#,
        );
        assert!(access(&line).break_glass);
    }

    #[test]
    fn actions_from_code_and_subtype() {
        let with = |action: &str, sub: &str| {
            access(
                &balp("")
                    .replace(r#""action":"R""#, &format!(r#""action":"{action}""#))
                    .replace(r#""code":"read""#, &format!(r#""code":"{sub}""#)),
            )
            .action
        };
        assert_eq!(with("U", "update"), Action::Modify);
        assert_eq!(with("C", "create"), Action::Modify);
        assert_eq!(with("D", "delete"), Action::Modify);
        assert_eq!(with("E", "search"), Action::Query);
        assert_eq!(with("R", "print"), Action::Print);
        assert_eq!(with("R", "export"), Action::Export);
    }

    #[test]
    fn missing_id_gets_stable_hash() {
        let line = balp("").replace(r#""id":"ae1","#, "");
        let a = access(&line);
        assert!(a.id.starts_with("sha256:"));
        assert_eq!(a.id, access(&line).id);
        assert_ne!(a.id, access(&line.replace("pt-9", "pt-8")).id);
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        type Check = fn(&DecodeError) -> bool;
        let cases: [(&str, Check); 6] = [
            ("{not json", |e| matches!(e, DecodeError::Json { .. })),
            ("", |e| matches!(e, DecodeError::Json { .. })),
            (
                r#"{"resourceType":"Observation"}"#,
                |e| matches!(e, DecodeError::WrongResourceType(t) if t == "Observation"),
            ),
            (r#"{"id":"x"}"#, |e| *e == DecodeError::MissingResourceType),
            (r#"{"resourceType":"AuditEvent","id":"x"}"#, |e| {
                *e == DecodeError::MissingRecorded
            }),
            (
                r#"{"resourceType":"AuditEvent","recorded":"last tuesday"}"#,
                |e| *e == DecodeError::BadRecorded,
            ),
        ];
        for (line, ok) in cases {
            let err = decode_audit_event(line.as_bytes()).unwrap_err();
            assert!(ok(&err), "{line}: {err}");
        }
        let no_agent = balp("").replace(r#""who":{"reference":"Practitioner/pr-7"},"#, "");
        assert_eq!(
            decode_audit_event(no_agent.as_bytes()).unwrap_err(),
            DecodeError::NoRequestor
        );
        let bad_action = balp("").replace(r#""action":"R""#, r#""action":"X""#);
        assert_eq!(
            decode_audit_event(bad_action.as_bytes()).unwrap_err(),
            DecodeError::BadAction
        );
    }
}
