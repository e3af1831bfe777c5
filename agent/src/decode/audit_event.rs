//! FHIR R4 `AuditEvent` following IHE Basic Audit Log Patterns (BALP).
//!
//! user    = `who` of the agent with `requestor: true` (a Practitioner reference, else its identifier)
//! patient = the entity with object-role 1 (Patient), else any entity whose `what` is a Patient
//! action  = `action` C/R/U/D/E refined by `type`/`subtype` (export, print, query)
//! break-the-glass = ETREAT in `purposeOfEvent` or in the requestor's `purposeOfUse`

use super::DecodeError;
use crate::event::{AccessEvent, Action};
use crate::fhir::{CodeableConcept, Coding, Identifier, Reference, Str};
#[cfg(test)]
use crate::time::parse_fhir_time;
use crate::time::parse_time_in;
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
    source: Option<Source<'a>>,
    #[serde(borrow, default)]
    entity: Vec<Entity<'a>>,
    #[serde(borrow, default)]
    contained: Vec<Contained<'a>>,
}

/// A resource carried inside the AuditEvent (`"reference": "#pr1"`).
#[derive(Deserialize)]
struct Contained<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    identifier: Vec<Identifier<'a>>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(borrow, default)]
    observer: Option<Reference<'a>>,
}

#[derive(Deserialize)]
struct Agent<'a> {
    #[serde(borrow, default, rename = "type")]
    type_: Option<CodeableConcept<'a>>,
    #[serde(borrow, default)]
    role: Vec<CodeableConcept<'a>>,
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

/// A decoded line: a patient access, one access per patient for a record that names several,
/// or a valid AuditEvent that touches no patient record (login, logout, application start),
/// which detection has nothing to judge.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Access(AccessEvent),
    /// Several patients: the first access keeps the event's id, the others `<id>#<n>`.
    /// `over_cap` patients past [`MAX_PATIENTS`] were counted, not judged.
    Many {
        accesses: Vec<AccessEvent>,
        over_cap: u64,
    },
    NoPatient,
}

const BREAK_GLASS: &str = "ETREAT";
/// Accesses made from one AuditEvent at most; a bulk export of more patients is judged on
/// these and the rest counted (`phiwatch_source_patients_over_cap_total`).
pub const MAX_PATIENTS: usize = 1000;
/// The prefix of a user that the record names only by display text, or not at all.
pub const UNIDENTIFIED: &str = "unidentified:";
/// Agent roles and types of software and devices rather than people (DICOM 110150-110155,
/// and the security role types of systems).
const SYSTEM_ROLES: [&str; 9] = [
    "110150",
    "110151",
    "110152",
    "110153",
    "110154",
    "110155",
    "dataprocessor",
    "datacollector",
    "application",
];

pub fn decode_audit_event(line: &[u8]) -> Result<Decoded, DecodeError> {
    decode_audit_event_in(line, chrono_tz::UTC)
}

/// Decodes one AuditEvent, reading a `recorded` without an offset as local time in `zone`.
pub fn decode_audit_event_in(line: &[u8], zone: chrono_tz::Tz) -> Result<Decoded, DecodeError> {
    let ae: AuditEventJson<'_> =
        serde_json::from_slice(line).map_err(|e| DecodeError::from_json(&e))?;
    match ae.resource_type.as_deref() {
        Some("AuditEvent") => {}
        Some(other) => return Err(DecodeError::WrongResourceType(truncate(other, 40))),
        None => return Err(DecodeError::MissingResourceType),
    }
    let recorded = ae.recorded.as_deref().ok_or(DecodeError::MissingRecorded)?;
    let time_ms = parse_time_in(recorded, zone).ok_or(DecodeError::BadRecorded)?;
    let action_code = match ae.action.as_deref() {
        None => 'E',
        Some(a @ ("C" | "R" | "U" | "D" | "E")) => a.chars().next().unwrap_or('E'),
        Some(_) => return Err(DecodeError::BadAction),
    };

    let (patients, over_cap) = find_patients(&ae.entity, &ae.contained);
    if patients.is_empty() {
        return Ok(Decoded::NoPatient);
    }
    let requestor = find_requestor(&ae.agent);
    // A record of a patient's chart being opened is an access even when it does not say by
    // whom: it is judged as an unidentified user rather than dropped.
    let user = match requestor
        .and_then(|r| r.who.as_ref())
        .and_then(|w| person_key(w, "Practitioner", &ae.contained))
    {
        Some(u) => u,
        None => unidentified(requestor, ae.source.as_ref()),
    };

    let break_glass = ae.purpose_of_event.iter().any(|c| c.has_code(BREAK_GLASS))
        || requestor.is_some_and(|r| r.purpose_of_use.iter().any(|c| c.has_code(BREAK_GLASS)));
    let workstation = requestor
        .and_then(|r| r.network.as_ref())
        .or_else(|| ae.agent.iter().find_map(|a| a.network.as_ref()))
        .and_then(|n| n.address.as_deref())
        .unwrap_or("");
    let subtype = ae.subtype.first().map(Coding::code).unwrap_or("");
    let type_code = ae.type_.as_ref().map(Coding::code).unwrap_or("");

    let id = match ae.id.as_deref() {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => line_hash(line),
    };
    let first = AccessEvent {
        id: id.clone(),
        time_ms,
        user,
        patient: Some(patients[0].clone()),
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
        ..Default::default()
    };
    if patients.len() == 1 {
        return Ok(Decoded::Access(first));
    }
    let mut accesses = Vec::with_capacity(patients.len());
    for (n, p) in patients.iter().enumerate().skip(1) {
        let mut a = first.clone();
        a.id = format!("{id}#{}", n + 1);
        a.patient = Some(p.clone());
        accesses.push(a);
    }
    accesses.insert(0, first);
    Ok(Decoded::Many { accesses, over_cap })
}

/// The user of a record that names the requestor only by display text, or names none: the
/// requestor's display, else the reporting system's, so accesses from one place group.
fn unidentified(requestor: Option<&Agent<'_>>, source: Option<&Source<'_>>) -> String {
    let display = requestor
        .and_then(|r| r.who.as_ref())
        .and_then(|w| w.display.as_deref())
        .or_else(|| {
            let o = source?.observer.as_ref()?;
            o.display
                .as_deref()
                .or_else(|| o.identifier.as_ref()?.value.as_deref())
                .or_else(|| o.target().map(|(_, id)| id))
        })
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("unknown");
    format!("{UNIDENTIFIED}{}", truncate(display, 120))
}

/// Every patient the record names, in order, without repeats: entities with object-role 1
/// (by reference or identifier) and entities whose `what` references a Patient.
fn find_patients(entities: &[Entity<'_>], contained: &[Contained<'_>]) -> (Vec<String>, u64) {
    let mut out: Vec<String> = Vec::new();
    let mut over = 0u64;
    for e in entities {
        let Some(what) = e.what.as_ref() else {
            continue;
        };
        let is_patient_role = e.role.as_ref().is_some_and(|r| r.code() == "1");
        let names_patient = what.id_of("Patient").is_some()
            || what.type_.as_deref() == Some("Patient")
            || what
                .reference
                .as_deref()
                .is_some_and(|r| r.starts_with("Patient?"));
        if !is_patient_role && !names_patient {
            continue;
        }
        let Some(id) = person_key(what, "Patient", contained) else {
            continue;
        };
        if out.contains(&id) {
            continue;
        }
        if out.len() >= MAX_PATIENTS {
            over += 1;
        } else {
            out.push(id);
        }
    }
    (out, over)
}

/// How the record names a person, as a key identity resolution understands (see
/// `context::identity`): the id of a literal reference (relative, absolute or versioned),
/// `PractitionerRole/<id>` for a role, `system|value` for an identifier or a conditional
/// reference, and a contained resource's identifier.
fn person_key(r: &Reference<'_>, ty: &str, contained: &[Contained<'_>]) -> Option<String> {
    if let Some(lit) = r.reference.as_deref().map(str::trim) {
        if let Some(local) = lit.strip_prefix('#') {
            let c = contained.iter().find(|c| c.id.as_deref() == Some(local))?;
            return c.identifier.iter().find_map(identifier_key);
        }
        if let Some((_, query)) = lit.split_once("?identifier=") {
            let v = query.split('&').next().unwrap_or(query).replace("%7C", "|");
            return (!v.trim().is_empty()).then(|| v.trim().to_owned());
        }
        if let Some(id) = r.id_of(ty) {
            return Some(id.to_owned());
        }
        if ty == "Practitioner" {
            if let Some(id) = r.id_of("PractitionerRole") {
                return Some(format!("PractitionerRole/{id}"));
            }
        }
        if let Some((_, id)) = r.target() {
            return (!id.is_empty()).then(|| id.to_owned());
        }
    }
    r.identifier.as_ref().and_then(identifier_key)
}

fn identifier_key(i: &Identifier<'_>) -> Option<String> {
    let value = i
        .value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())?;
    Some(match i.system.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => format!("{s}|{value}"),
        _ => value.to_owned(),
    })
}

/// The requesting agent: among agents marked `requestor`, a person before software (an
/// application listed first must not hide the clinician it acted for); the first listed wins
/// ties. Without a marked requestor, the first agent that references a Practitioner.
fn find_requestor<'g, 'a>(agents: &'g [Agent<'a>]) -> Option<&'g Agent<'a>> {
    let mut best: Option<(i32, &Agent<'a>)> = None;
    for a in agents.iter().filter(|a| a.requestor) {
        let s = person_score(a);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, a));
        }
    }
    best.map(|(_, a)| a).or_else(|| {
        agents.iter().find(|a| {
            a.who
                .as_ref()
                .is_some_and(|w| w.id_of("Practitioner").is_some())
        })
    })
}

fn person_score(a: &Agent<'_>) -> i32 {
    let target = a
        .who
        .as_ref()
        .and_then(|w| w.target().map(|(t, _)| t).or(w.type_.as_deref()));
    let person_ref = matches!(
        target,
        Some("Practitioner" | "PractitionerRole" | "RelatedPerson" | "Patient" | "Person")
    );
    let system_ref = matches!(target, Some("Device" | "Organization"));
    let codes = a
        .type_
        .iter()
        .chain(&a.role)
        .flat_map(|c| c.coding.iter().map(Coding::code));
    let mut human = false;
    let mut system = false;
    for c in codes {
        if c.eq_ignore_ascii_case("humanuser") {
            human = true;
        } else if SYSTEM_ROLES.iter().any(|s| s.eq_ignore_ascii_case(c)) {
            system = true;
        }
    }
    let identified = a
        .who
        .as_ref()
        .is_some_and(|w| w.reference.is_some() || w.identifier.is_some());
    i32::from(person_ref || human) * 2 - i32::from(system_ref || system) * 2 + i32::from(identified)
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
            other => panic!("not one access in {line}: {other:?}"),
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
    fn display_only_or_missing_requestors_are_unidentified_accesses() {
        // IHE BALP examples name the user by display alone ("Betty Jones").
        let display = balp("").replace(
            r#""who":{"reference":"Practitioner/pr-7"}"#,
            r#""who":{"display":"Betty Jones"}"#,
        );
        let a = access(&display);
        assert_eq!(a.user, "unidentified:Betty Jones");
        assert_eq!(a.patient.as_deref(), Some("pt-9"));
        let none = balp(r#","source":{"observer":{"display":"ehr.example.org"}}"#)
            .replace(r#""who":{"reference":"Practitioner/pr-7"},"#, "");
        assert_eq!(access(&none).user, "unidentified:ehr.example.org");
        let bare = balp("").replace(r#""who":{"reference":"Practitioner/pr-7"},"#, "");
        assert_eq!(access(&bare).user, "unidentified:unknown");
    }

    #[test]
    fn people_named_by_identifier_conditional_role_or_contained_reference() {
        let who = |w: &str| {
            access(&balp("").replace(r#""who":{"reference":"Practitioner/pr-7"}"#, w)).user
        };
        assert_eq!(
            who(r#""who":{"identifier":{"system":"urn:ehr:login","value":"jsmith42"}}"#),
            "urn:ehr:login|jsmith42"
        );
        assert_eq!(
            who(r#""who":{"identifier":{"value":"jsmith42"}}"#),
            "jsmith42"
        );
        assert_eq!(
            who(
                r#""who":{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999941"}"#
            ),
            "http://hl7.org/fhir/sid/us-npi|9999941"
        );
        assert_eq!(
            who(r#""who":{"reference":"PractitionerRole/role-3"}"#),
            "PractitionerRole/role-3"
        );
        assert_eq!(
            who(
                r#""who":{"reference":"https://ehr.example.org/fhir/Practitioner/pr-9/_history/4"}"#
            ),
            "pr-9"
        );
        let contained = balp(
            r#","contained":[{"resourceType":"Practitioner","id":"pr1","identifier":[{"system":"urn:ehr:login","value":"bjones"}]}]"#,
        )
        .replace(
            r#""who":{"reference":"Practitioner/pr-7"}"#,
            r##""who":{"reference":"#pr1"}"##,
        );
        assert_eq!(access(&contained).user, "urn:ehr:login|bjones");
        let patient = |e: &str| {
            access(&balp("").replace(r#""what":{"reference":"Patient/pt-9"}"#, e))
                .patient
                .unwrap()
        };
        assert_eq!(
            patient(r#""what":{"identifier":{"system":"urn:mrn","value":"MRN-1"}}"#),
            "urn:mrn|MRN-1"
        );
        assert_eq!(
            patient(r#""what":{"reference":"Patient?identifier=urn:mrn|MRN-2"}"#),
            "urn:mrn|MRN-2"
        );
    }

    #[test]
    fn every_patient_of_a_record_is_judged() {
        let line = balp("").replace(
            r#""entity":[{"what":{"reference":"Patient/pt-9"},"role":{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1"}}]"#,
            r#""entity":[{"what":{"reference":"Patient/pt-9"},"role":{"code":"1"}},{"what":{"reference":"Practitioner/pr-7"}},{"what":{"reference":"Patient/pt-7"},"role":{"code":"1"}},{"what":{"reference":"Patient/pt-9"}}]"#,
        );
        let Decoded::Many { accesses, over_cap } = decode_audit_event(line.as_bytes()).unwrap()
        else {
            panic!("expected one access per patient")
        };
        assert_eq!(over_cap, 0);
        let got: Vec<(&str, &str)> = accesses
            .iter()
            .map(|a| (a.id.as_str(), a.patient.as_deref().unwrap()))
            .collect();
        assert_eq!(got, [("ae1", "pt-9"), ("ae1#2", "pt-7")]);
        assert!(accesses.iter().all(|a| a.user == "pr-7"));

        let many: Vec<String> = (0..MAX_PATIENTS + 5)
            .map(|i| format!(r#"{{"what":{{"reference":"Patient/p{i}"}},"role":{{"code":"1"}}}}"#))
            .collect();
        let bulk = balp("").replace(
            r#"{"what":{"reference":"Patient/pt-9"},"role":{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1"}}"#,
            &many.join(","),
        );
        let Decoded::Many { accesses, over_cap } = decode_audit_event(bulk.as_bytes()).unwrap()
        else {
            panic!("expected many")
        };
        assert_eq!((accesses.len(), over_cap), (MAX_PATIENTS, 5));
    }

    #[test]
    fn a_person_requestor_wins_over_an_application_listed_first() {
        let line = balp("").replace(
            r#""agent":["#,
            r#""agent":[{"type":{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110150"}]},"who":{"reference":"Device/ehr-app"},"requestor":true},"#,
        );
        assert_eq!(access(&line).user, "pr-7");
        // Two people: the first listed.
        let two = balp("").replace(
            r#""agent":["#,
            r#""agent":[{"who":{"reference":"Practitioner/pr-1"},"requestor":true},"#,
        );
        assert_eq!(access(&two).user, "pr-1");
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
        let bad_action = balp("").replace(r#""action":"R""#, r#""action":"X""#);
        assert_eq!(
            decode_audit_event(bad_action.as_bytes()).unwrap_err(),
            DecodeError::BadAction
        );
    }
}
