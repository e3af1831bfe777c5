//! The public HL7 FHIR R4 AuditEvent examples (hl7.fhir.r4.examples 4.0.1, CC0), kept under
//! tests/fixtures/hl7-r4-auditevent/, decode as BALP says they should.

mod common;

use phiwatch::decode::{decode_audit_event, Decoded};
use phiwatch::event::Action;

fn decode(name: &str) -> Decoded {
    let path = common::fixtures().join("hl7-r4-auditevent").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    // Pretty-printed JSON is still one JSON value; the decoder takes bytes of one resource.
    decode_audit_event(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn access(name: &str) -> phiwatch::event::AccessEvent {
    match decode(name) {
        Decoded::Access(a) => a,
        other => panic!("{name}: expected one patient access, got {other:?}"),
    }
}

#[test]
fn rest_vread_of_patient_example() {
    let a = access("AuditEvent-example-rest.json");
    assert_eq!(a.id, "example-rest");
    assert_eq!(a.user, "95");
    assert_eq!(a.patient.as_deref(), Some("example"));
    assert_eq!(a.action, Action::View);
    assert_eq!(a.subtype, "vread");
    assert_eq!(a.workstation, "Workstation1.ehr.familyclinic.com");
}

#[test]
fn disclosure_is_an_export_by_the_requestor() {
    let a = access("AuditEvent-example-disclosure.json");
    assert_eq!(a.user, "SomeIdiot@nowhere");
    assert_eq!(a.patient.as_deref(), Some("example"));
    assert_eq!(a.action, Action::Export);
    assert!(!a.break_glass);
}

#[test]
fn patient_by_identifier_with_object_role_1() {
    let media = access("AuditEvent-example-media.json");
    assert_eq!(
        media.patient.as_deref(),
        Some("e3cdfc81a0d24bd^^^&2.16.840.1.113883.4.2&ISO")
    );
    assert_eq!(media.action, Action::Export);
    assert_eq!(media.user, "95");
    let pix = access("AuditEvent-example-pixQuery.json");
    assert_eq!(pix.patient, media.patient);
    assert_eq!(pix.action, Action::Query);
}

#[test]
fn events_without_a_patient_are_not_accesses() {
    for name in [
        "AuditEvent-example.json",
        "AuditEvent-example-login.json",
        "AuditEvent-example-logout.json",
        "AuditEvent-example-search.json",
        "AuditEvent-example-error.json",
    ] {
        assert_eq!(decode(name), Decoded::NoPatient, "{name}");
    }
}

#[test]
fn scan_reads_the_examples_as_ndjson() {
    let events = common::fixtures().join("hl7-r4-auditevent.ndjson");
    let out = common::phiwatch(&["scan", "--no-store", "--events", events.to_str().unwrap()]);
    let err = common::text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("9 lines: 4 patient accesses, 5 without a patient, 0 bad lines"),
        "{err}"
    );
    // No directory: every access is by an unknown account.
    let f = common::findings(&out.stdout);
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(f.iter().all(|x| x["category"] == "unknown_user"), "{f:?}");
}
