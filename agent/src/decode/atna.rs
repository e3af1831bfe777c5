//! IHE ATNA audit messages: DICOM PS3.15 A.5 `AuditMessage` XML and its predecessor RFC 3881.
//!
//! user    = `UserID` of an `ActiveParticipant` with `UserIsRequestor` true, preferring a person
//!           (a `UserName`, or a role that is not an application/node role) over the
//!           application that also requests
//! patient = `ParticipantObjectID` of the object with type 1 (person) and role 1 (patient), or
//!           with ID type code 2 (patient number); an HL7 CX value keeps its ID component
//! action  = `EventActionCode` refined by `EventID` (110106 export, 110112 query) and
//!           `EventTypeCode`
//! break-the-glass = `PurposeOfUse` ETREAT or BTG, or `EventID` 110127 (emergency override)
//!
//! Both attribute spellings of coded values are read: DICOM's `csd-code` and RFC 3881's `code`.

use super::audit_event::{classify_action, line_hash, truncate};
use super::{DecodeError, Decoded};
use crate::event::AccessEvent;
#[cfg(test)]
use crate::time::parse_fhir_time;
use crate::time::parse_time_in;
use roxmltree::{Document, Node};

/// Roles of a participant that is software or a network node rather than a person.
const SYSTEM_ROLES: [&str; 6] = ["110150", "110151", "110152", "110153", "110154", "110155"];
const BREAK_GLASS_PURPOSES: [&str; 2] = ["ETREAT", "BTG"];
const EMERGENCY_OVERRIDE: &str = "110127";
/// Deepest element nesting accepted. A real AuditMessage nests four levels.
pub const MAX_DEPTH: usize = 64;

pub fn decode_atna(message: &[u8]) -> Result<Decoded, DecodeError> {
    decode_atna_in(message, chrono_tz::UTC)
}

/// Decodes one message, reading an `EventDateTime` without an offset as local time in `zone`.
pub fn decode_atna_in(message: &[u8], zone: chrono_tz::Tz) -> Result<Decoded, DecodeError> {
    let text = std::str::from_utf8(message).map_err(|e| DecodeError::Xml {
        reason: format!("not UTF-8 after byte {}", e.valid_up_to()),
    })?;
    let text = text.trim_start_matches('\u{feff}').trim();
    // roxmltree descends one call per open element: bound the nesting before parsing, so a
    // hostile message is a bad line rather than a stack overflow.
    if xml_depth_exceeds(text.as_bytes(), MAX_DEPTH) {
        return Err(DecodeError::TooDeep { max: MAX_DEPTH });
    }
    let doc = Document::parse(text).map_err(|e| DecodeError::Xml {
        reason: super::redact_quoted(&e.to_string()),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "AuditMessage" {
        return Err(DecodeError::NotAuditMessage(truncate(
            root.tag_name().name(),
            40,
        )));
    }
    let event =
        child(root, "EventIdentification").ok_or(DecodeError::Missing("EventIdentification"))?;
    let when = event
        .attribute("EventDateTime")
        .ok_or(DecodeError::Missing("EventDateTime"))?;
    let time_ms = parse_time_in(when, zone).ok_or(DecodeError::BadTime("EventDateTime"))?;
    let action_code = match event.attribute("EventActionCode") {
        None => 'E',
        Some(a @ ("C" | "R" | "U" | "D" | "E")) => a.chars().next().unwrap_or('E'),
        Some(_) => return Err(DecodeError::BadAction),
    };
    let event_id = child(event, "EventID").map(code).unwrap_or("");
    let type_codes: Vec<&str> = children(event, "EventTypeCode").map(code).collect();

    let Some(patient) = find_patient(root) else {
        return Ok(Decoded::NoPatient);
    };
    let requestor = find_requestor(root);
    // A patient's record opened by someone the message does not identify is still an
    // access: judged as an unidentified user, never dropped.
    let user = match requestor.and_then(|r| r.attribute("UserID").filter(|u| !u.trim().is_empty()))
    {
        Some(u) => u.trim().to_owned(),
        None => {
            let display = requestor
                .and_then(|r| r.attribute("UserName"))
                .or_else(|| child(root, "AuditSourceIdentification")?.attribute("AuditSourceID"))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .unwrap_or("unknown");
            format!(
                "{}{}",
                super::audit_event::UNIDENTIFIED,
                truncate(display, 120)
            )
        }
    };

    let break_glass = event_id == EMERGENCY_OVERRIDE
        || children(event, "PurposeOfUse")
            .chain(
                requestor
                    .into_iter()
                    .flat_map(|r| children(r, "PurposeOfUse")),
            )
            .any(|p| BREAK_GLASS_PURPOSES.contains(&code(p)));
    let workstation = requestor
        .and_then(|r| r.attribute("NetworkAccessPointID"))
        .unwrap_or("");

    Ok(Decoded::Access(AccessEvent {
        id: line_hash(text.as_bytes()),
        time_ms,
        user,
        patient: Some(patient.to_owned()),
        action: classify_action(action_code, event_id, |needle| {
            type_codes.iter().any(|c| c.eq_ignore_ascii_case(needle))
        }),
        action_code,
        subtype: type_codes.first().copied().unwrap_or("").to_owned(),
        break_glass,
        workstation: workstation.to_owned(),
        // Some senders write success (0) as an empty attribute.
        succeeded: matches!(
            event.attribute("EventOutcomeIndicator"),
            None | Some("0" | "")
        ),
        ..Default::default()
    }))
}

/// Whether elements nest deeper than `max`. Counts open tags minus closing ones, skipping
/// comments, CDATA, processing instructions and declarations and honouring quotes in
/// attribute values (which may hold `>` but never `<`). It may only over-count on malformed
/// input, which the parser rejects anyway.
fn xml_depth_exceeds(s: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    let skip_to = |from: usize, end: &[u8]| {
        s[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(s.len(), |p| from + p + end.len())
    };
    while let Some(p) = s[i..].iter().position(|&b| b == b'<') {
        i += p;
        let rest = &s[i..];
        if rest.starts_with(b"<!--") {
            i = skip_to(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_to(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip_to(i + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = skip_to(i + 2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_to(i + 2, b">");
        } else {
            // An opening tag: find its end outside quotes; `/>` closes it at once.
            let mut j = i + 1;
            let mut quote = None;
            let mut self_closing = false;
            while j < s.len() {
                match (s[j], quote) {
                    (b'"' | b'\'', None) => quote = Some(s[j]),
                    (q, Some(open)) if q == open => quote = None,
                    (b'>', None) => {
                        self_closing = s[j - 1] == b'/';
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            if !self_closing {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            i = j + 1;
        }
        if i >= s.len() {
            break;
        }
    }
    false
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The code of a coded value in either schema's spelling.
fn code<'a>(node: Node<'a, '_>) -> &'a str {
    node.attribute("csd-code")
        .or_else(|| node.attribute("code"))
        .unwrap_or("")
}

fn find_patient<'a>(root: Node<'a, '_>) -> Option<&'a str> {
    let objects: Vec<_> = children(root, "ParticipantObjectIdentification").collect();
    let by_role = objects.iter().find(|o| {
        o.attribute("ParticipantObjectTypeCode") == Some("1")
            && o.attribute("ParticipantObjectTypeCodeRole") == Some("1")
    });
    let by_id_type = || {
        objects
            .iter()
            .find(|o| child(**o, "ParticipantObjectIDTypeCode").is_some_and(|c| code(c) == "2"))
    };
    let id = by_role
        .or_else(by_id_type)?
        .attribute("ParticipantObjectID")?;
    // HL7 v2 CX: ID^check digit^scheme^assigning authority; the context knows the ID.
    let id = id.split('^').next().unwrap_or(id).trim();
    (!id.is_empty()).then_some(id)
}

fn find_requestor<'a, 'i>(root: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    // RFC 3881 defaults UserIsRequestor to true.
    let requestors = children(root, "ActiveParticipant").filter(|p| {
        p.attribute("UserIsRequestor")
            .is_none_or(|v| v == "true" || v == "1")
    });
    let person_score = |p: &Node<'_, '_>| {
        let named = p
            .attribute("UserName")
            .is_some_and(|n| !n.trim().is_empty());
        let roles: Vec<&str> = children(*p, "RoleIDCode").map(code).collect();
        let person_role = roles.iter().any(|r| !SYSTEM_ROLES.contains(r));
        let system_only = !roles.is_empty() && !person_role;
        i32::from(named) * 2 + i32::from(person_role) - i32::from(system_only) * 2
    };
    // max_by_key keeps the last of equals; the first listed requestor should win ties.
    let mut best: Option<(i32, Node<'a, 'i>)> = None;
    for p in requestors {
        let s = person_score(&p);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, p));
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;

    const PATIENT_RECORD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<AuditMessage>
  <EventIdentification EventActionCode="R" EventDateTime="2026-03-01T10:15:00.000Z" EventOutcomeIndicator="0">
    <EventID csd-code="110110" codeSystemName="DCM" originalText="Patient Record"/>
  </EventIdentification>
  <ActiveParticipant UserID="ehr-app" UserIsRequestor="true" NetworkAccessPointID="10.0.0.5" NetworkAccessPointTypeCode="2">
    <RoleIDCode csd-code="110150" codeSystemName="DCM" originalText="Application"/>
  </ActiveParticipant>
  <ActiveParticipant UserID="pr-17" UserName="Alice Carter" UserIsRequestor="true" NetworkAccessPointID="ws-4">
    <RoleIDCode csd-code="6868009" codeSystemName="SNOMED-CT" originalText="Hospital nurse"/>
  </ActiveParticipant>
  <AuditSourceIdentification AuditSourceID="ehr"/>
  <ParticipantObjectIdentification ParticipantObjectID="pt-9^^^&amp;1.2.3&amp;ISO" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">
    <ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number"/>
    <ParticipantObjectName>DOE^JANE</ParticipantObjectName>
  </ParticipantObjectIdentification>
</AuditMessage>"#;

    fn access(xml: &str) -> AccessEvent {
        match decode_atna(xml.as_bytes()).unwrap() {
            Decoded::Access(a) => a,
            other => panic!("not one access: {other:?}"),
        }
    }

    #[test]
    fn patient_record_read_by_the_person_not_the_application() {
        let a = access(PATIENT_RECORD);
        assert_eq!(a.user, "pr-17");
        assert_eq!(a.patient.as_deref(), Some("pt-9"));
        assert_eq!(a.action, Action::View);
        assert_eq!(a.workstation, "ws-4");
        assert_eq!(a.time_ms, parse_fhir_time("2026-03-01T10:15:00Z").unwrap());
        assert!(a.succeeded && !a.break_glass);
        assert!(a.id.starts_with("sha256:"));
        assert_eq!(a.id, access(PATIENT_RECORD).id, "the id is stable");
    }

    #[test]
    fn rfc3881_spelling_query_and_break_glass() {
        let xml = r#"<AuditMessage><EventIdentification EventActionCode="E" EventDateTime="2026-03-01T10:15:00+01:00" EventOutcomeIndicator="4"><EventID code="110112" codeSystemName="DCM" displayName="Query"/><EventTypeCode code="ITI-21" displayName="Patient Demographics Query"/><PurposeOfUse code="BTG"/></EventIdentification><ActiveParticipant UserID="pr-3"/><ParticipantObjectIdentification ParticipantObjectID="pt-1"><ParticipantObjectIDTypeCode code="2"/></ParticipantObjectIdentification></AuditMessage>"#;
        let a = access(xml);
        assert_eq!(a.action, Action::Query);
        assert_eq!(a.subtype, "ITI-21");
        assert_eq!(a.user, "pr-3");
        assert_eq!(a.patient.as_deref(), Some("pt-1"));
        assert!(a.break_glass && !a.succeeded);
    }

    #[test]
    fn export_event_and_login_without_patient() {
        let export = PATIENT_RECORD.replace("csd-code=\"110110\"", "csd-code=\"110106\"");
        assert_eq!(access(&export).action, Action::Export);
        let login = r#"<AuditMessage><EventIdentification EventActionCode="E" EventDateTime="2026-03-01T10:15:00Z" EventOutcomeIndicator="0"><EventID csd-code="110114"/></EventIdentification><ActiveParticipant UserID="pr-3" UserIsRequestor="true"/></AuditMessage>"#;
        assert_eq!(decode_atna(login.as_bytes()).unwrap(), Decoded::NoPatient);
    }

    /// Messages written by the jembi `atna-audit` library (tests/fixtures/atna/generate.js),
    /// as they arrive in RFC 5424 syslog.
    #[test]
    fn messages_from_an_independent_implementation() {
        let text = include_str!("../../../tests/fixtures/atna/messages.json");
        let msgs: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert_eq!(msgs.len(), 6);
        for m in msgs {
            let frame = m["syslog"].as_str().unwrap().as_bytes();
            let body = crate::syslog::message_body(frame).unwrap();
            match (decode_atna(body).unwrap(), m["patient"].as_str()) {
                (Decoded::Access(a), Some(p)) => {
                    assert_eq!(a.patient.as_deref(), Some(p));
                    assert_eq!(
                        a.user,
                        m["user"].as_str().unwrap(),
                        "the person, not the app"
                    );
                    assert_eq!(a.action, Action::View);
                    assert!(a.succeeded, "an empty outcome is success");
                    assert_eq!(a.subtype, "ITI-78");
                }
                (Decoded::NoPatient, None) => {}
                (got, want) => panic!("{}: got {got:?}, want patient {want:?}", m["expect"]),
            }
        }
    }

    #[test]
    fn a_record_without_a_requestor_is_an_unidentified_access() {
        let xml = r#"<AuditMessage><EventIdentification EventDateTime="2026-03-01T10:15:00Z"/><AuditSourceIdentification AuditSourceID="lab-system"/><ParticipantObjectIdentification ParticipantObjectID="pt-4" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"/></AuditMessage>"#;
        let a = access(xml);
        assert_eq!(a.user, "unidentified:lab-system");
        assert_eq!(a.patient.as_deref(), Some("pt-4"));
        let named = PATIENT_RECORD
            .replace(r#"UserID="pr-17" "#, "")
            .replace(r#"UserID="ehr-app" "#, "");
        assert_eq!(access(&named).user, "unidentified:Alice Carter");
    }

    #[test]
    fn deep_nesting_is_a_bad_line_not_a_stack_overflow() {
        // The adversarial message: ~4,000 levels in 28 KB overflowed the tailer's stack.
        let deep = format!(
            "<AuditMessage>{}{}</AuditMessage>",
            "<a x='>'>".repeat(4000),
            "</a>".repeat(4000)
        );
        let e = decode_atna(deep.as_bytes()).unwrap_err();
        assert_eq!(e, DecodeError::TooDeep { max: MAX_DEPTH });
        // Unclosed is as bad as closed.
        let open = format!("<AuditMessage>{}", "<a>".repeat(100_000));
        assert!(matches!(
            decode_atna(open.as_bytes()),
            Err(DecodeError::TooDeep { .. })
        ));
        // 63 levels inside the root, with comments, CDATA and quoted brackets, still parse
        // far enough to be judged on their content.
        let ok = format!(
            "<AuditMessage><!-- <x> --><![CDATA[<y>]]>{}<b v=\"a>b\"/>{}</AuditMessage>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1)
        );
        assert!(!xml_depth_exceeds(ok.as_bytes(), MAX_DEPTH));
        assert!(xml_depth_exceeds(
            format!("<r>{}", "<a>".repeat(MAX_DEPTH)).as_bytes(),
            MAX_DEPTH
        ));
        assert!(!xml_depth_exceeds(PATIENT_RECORD.as_bytes(), 4));
    }

    #[test]
    fn bad_messages_are_errors_that_do_not_echo_phi() {
        let cases = [
            ("<AuditMessage><EventIdentification", "XML"),
            ("<Other/>", "not an AuditMessage"),
            ("<AuditMessage/>", "EventIdentification"),
            (
                r#"<AuditMessage><EventIdentification EventDateTime="yesterday"/></AuditMessage>"#,
                "EventDateTime",
            ),
        ];
        for (xml, expect) in cases {
            let e = decode_atna(xml.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(expect), "{xml}: {e}");
            assert!(!e.contains("DOE"), "{e}");
        }
        let e = decode_atna(b"\xff\xfe<").unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }
}
