//! Fuzz targets for every parser that reads untrusted bytes: each decoder (FHIR AuditEvent,
//! ATNA XML, CSV with a mapping, Epic CEF/LEEF, HL7 v2 ADT), each framing (syslog octet
//! counting and newline, the RFC 5424 header, MLLP) and each file an operator writes (the
//! agent's TOML configuration, the rules files, the Cedar schema and policies).
//!
//! One body serves two engines (bolero):
//! - `cargo test -p phiwatch --test fuzz` (stable, what CI runs): every kept input under
//!   `tests/fuzz/__fuzz__/<target>/{corpus,crashes}` and then random inputs for
//!   `BOLERO_RANDOM_TEST_TIME_MS` (1 s by default; `.ci/run` gives each target 30 s);
//! - `tests/fuzz/run [SECONDS]` (libFuzzer through cargo-bolero, coverage guided, 256 MB RSS
//!   cap): grows the corpus and writes any crash into `crashes/`, where the plain test run
//!   replays it from then on.
//!
//! Inputs starting with an even byte are raw bytes; with an odd byte, the rest is cut at 0xFF
//! into field values and written into a well-formed record of the format ("shaped"), so that
//! random bytes reach past the syntax into the field logic. Every target asserts invariants,
//! not only "no panic": a decoded access carries the ids it was given and passes
//! `decode::check`; a refused record's reason never repeats a field value (a planted canary
//! in its place must not show up in the reason); errors stay short.

use bolero::check;
use phiwatch::decode::{self, DecodeError, Item};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Longest error text: a reason, never a copy of the input.
const MAX_REASON: usize = 600;

/// `(shaped, rest)`: the mode byte and the bytes after it.
fn mode(data: &[u8]) -> Option<(bool, &[u8])> {
    let (&m, rest) = data.split_first()?;
    Some((m % 2 == 1, rest))
}

/// `n` field values cut from `data` at 0xFF; missing ones are a fixed plausible value.
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let mut out: Vec<String> = data
        .split(|&b| b == 0xFF)
        .take(n)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    while out.len() < n {
        out.push(format!("v{}", out.len()));
    }
    out
}

/// A stand-in of the same length that no template contains.
fn canary(len: usize) -> String {
    "Qz7Wk".chars().cycle().take(len.max(5)).collect()
}

/// Panics when a refusal repeats a field value: for each value the first reason contains,
/// the record is built again with a canary in its place and the canary must not appear.
fn assert_no_echo(reason: &str, values: &[String], again: impl Fn(&[String]) -> Option<String>) {
    assert!(
        reason.len() <= MAX_REASON,
        "reason of {} bytes: {reason}",
        reason.len()
    );
    for (i, v) in values.iter().enumerate() {
        let v = v.trim();
        if v.chars().count() < 4 || !reason.contains(v) {
            continue;
        }
        let mut planted = values.to_vec();
        let c = canary(v.chars().count());
        planted[i] = c.clone();
        if let Some(r) = again(&planted) {
            assert!(!r.contains(&c), "the reason repeats field {i}: {r}");
        }
    }
}

/// What every decoded access must satisfy, whatever the input.
fn assert_sound(item: &Item) {
    for a in item.accesses() {
        decode::check(a).unwrap_or_else(|e| panic!("decoded access fails check ({e}): {a:?}"));
        assert!(!a.user.is_empty(), "access without a user: {a:?}");
        assert!(
            a.patient.as_deref().is_some_and(|p| !p.is_empty()),
            "access without a patient: {a:?}"
        );
    }
}

/// What any outcome of raw bytes must satisfy: a sound item, or a short reason.
fn assert_raw(r: &Result<Item, DecodeError>) {
    match r {
        Ok(item) => assert_sound(item),
        Err(e) => assert!(e.to_string().len() <= MAX_REASON, "{e}"),
    }
}

fn reason(r: &Result<Item, DecodeError>) -> Option<String> {
    r.as_ref().err().map(ToString::to_string)
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('>', "&gt;")
}

fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `[id, user, patient, workstation]` as a BALP patient-read AuditEvent.
fn audit_event(v: &[String]) -> String {
    format!(
        r#"{{"resourceType":"AuditEvent","id":{},"type":{{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest"}},"subtype":[{{"system":"http://hl7.org/fhir/restful-interaction","code":"read"}}],"action":"R","recorded":"2026-03-10T08:00:00Z","outcome":"0","agent":[{{"type":{{"coding":[{{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110153"}}]}},"who":{{"display":"ehr"}},"requestor":false}},{{"who":{{"identifier":{{"value":{}}}}},"requestor":true,"network":{{"address":{},"type":"2"}}}}],"source":{{"observer":{{"display":"ehr"}}}},"entity":[{{"what":{{"reference":{}}},"role":{{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1"}}}}]}}"#,
        json(&v[0]),
        json(&v[1]),
        json(&v[3]),
        json(&format!("Patient/{}", v[2])),
    )
}

#[test]
fn fhir_audit_event() {
    check!().for_each(|data: &[u8]| {
        let Some((shaped, rest)) = mode(data) else {
            return;
        };
        let decode = |line: &[u8]| {
            decode::LineDecoder::Fhir(chrono_tz::UTC).decode(Path::new("f"), (1, 1), line)
        };
        if !shaped {
            assert_raw(&decode(rest));
            return;
        }
        let v = fields(rest, 4);
        let r = decode(audit_event(&v).as_bytes());
        match &r {
            Ok(Item::Access(a)) => {
                assert_sound(&Item::Access(a.clone()));
                if !v[0].is_empty() {
                    assert_eq!(a.id, v[0], "the event id round-trips");
                }
                assert!(
                    a.user.starts_with(decode::audit_event::UNIDENTIFIED)
                        || a.user == v[1].trim()
                        || a.user.contains(v[1].trim()),
                    "user {:?} from {:?}",
                    a.user,
                    v[1]
                );
                // A FHIR id (`[A-Za-z0-9.-]{1,64}`) comes back as it was; anything else in
                // the reference may be read as a search (`Patient?identifier=...`).
                let p = a.patient.as_deref().unwrap_or_default();
                if is_fhir_id(&v[2]) {
                    assert_eq!(p, v[2], "the patient id round-trips");
                }
            }
            Ok(other) => assert_sound(other),
            Err(e) => assert_no_echo(&e.to_string(), &v, |w| {
                reason(&decode(audit_event(w).as_bytes()))
            }),
        }
    });
}

/// `[user, patient, workstation, source id]` as a DICOM PS3.15 patient-record read.
fn atna(v: &[String]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification EventActionCode="R" EventDateTime="2026-03-10T14:00:01.000Z" EventOutcomeIndicator="0"><EventID csd-code="110110" codeSystemName="DCM" originalText="Patient Record"/></EventIdentification><ActiveParticipant UserID="{}" UserIsRequestor="true" NetworkAccessPointID="{}" NetworkAccessPointTypeCode="2"/><AuditSourceIdentification AuditSourceID="{}"/><ParticipantObjectIdentification ParticipantObjectID="{}" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number"/></ParticipantObjectIdentification></AuditMessage>"#,
        xml(&v[0]),
        xml(&v[2]),
        xml(&v[3]),
        xml(&v[1]),
    )
}

#[test]
fn atna_xml() {
    check!().for_each(|data: &[u8]| {
        let Some((shaped, rest)) = mode(data) else {
            return;
        };
        let decode = |line: &[u8]| {
            decode::LineDecoder::Atna(chrono_tz::UTC).decode(Path::new("a"), (1, 1), line)
        };
        if !shaped {
            assert_raw(&decode(rest));
            return;
        }
        let v = fields(rest, 4);
        match &decode(atna(&v).as_bytes()) {
            Ok(item) => {
                assert_sound(item);
                // XML reads CR LF and a lone CR as LF, then each white-space character of
                // an attribute value as a space.
                let given = v[1].replace("\r\n", "\n").replace(['\t', '\n', '\r'], " ");
                for a in item.accesses() {
                    let p = a.patient.as_deref().unwrap_or_default();
                    assert!(given.contains(p), "patient {p:?} from {given:?}");
                }
            }
            Err(e) => assert_no_echo(&e.to_string(), &v, |w| reason(&decode(atna(w).as_bytes()))),
        }
    });
}

fn cef_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
}

/// `[user, patient, workstation, department, reason]` as an Epic Security-SIEM CEF record
/// after an RFC 3164 header (the shape of the decoder's own unit tests).
fn cef(v: &[String]) -> String {
    format!(
        "<134>Mar 10 08:00:00 epicprd01 CEF:0|Epic|Security-SIEM|2024|AC_BREAK_THE_GLASS_ACCESS|Break the glass|5|UID={} PATIENT={} devTime=Mar 10 2026 08:00:05 shost={} DEP={} BTGREASON={}",
        cef_escape(&v[0]),
        cef_escape(&v[1]),
        cef_escape(&v[2]),
        cef_escape(&v[3]),
        cef_escape(&v[4]),
    )
}

#[test]
fn cef_leef() {
    check!().for_each(|data: &[u8]| {
        let Some((shaped, rest)) = mode(data) else {
            return;
        };
        let decode = |line: &[u8]| {
            let siem = decode::siem::SiemDecoder::new(chrono_tz::America::Chicago);
            decode::LineDecoder::Siem(Box::new(siem)).decode(Path::new("s"), (1, 1), line)
        };
        if !shaped {
            assert_raw(&decode(rest));
            return;
        }
        let v = fields(rest, 5);
        match &decode(cef(&v).as_bytes()) {
            Ok(item) => assert_sound(item),
            Err(e) => assert_no_echo(&e.to_string(), &v, |w| reason(&decode(cef(w).as_bytes()))),
        }
    });
}

/// A CSV mapping in the shape sites write (`[source.csv]`), one column per field.
const CSV_MAPPING: &str = r#"
time_format = "%m/%d/%Y %H:%M:%S"
timezone = "America/New_York"
[columns]
time = "Access Time"
user = "User ID"
patient = "MRN"
action = "Action"
id = "Audit ID"
workstation = "Workstation"
department = "Department"
"#;
const CSV_HEADER: &str = "Audit ID,Access Time,User ID,MRN,Action,Workstation,Department";

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\"").replace(['\n', '\r'], " "))
}

/// `[id, user, patient, action, workstation, department]` as one row under [`CSV_HEADER`].
fn csv_row(v: &[String]) -> String {
    format!(
        "{},03/10/2026 08:00:00,{},{},{},{},{}",
        csv_field(&v[0]),
        csv_field(&v[1]),
        csv_field(&v[2]),
        csv_field(&v[3]),
        csv_field(&v[4]),
        csv_field(&v[5]),
    )
}

/// Decodes `rows` of a file whose first line is `header`, as a tailed CSV source does.
fn decode_csv(header: &[u8], rows: &[&[u8]]) -> Vec<Result<Item, DecodeError>> {
    let mapping: decode::csv::CsvMapping = toml::from_str(CSV_MAPPING).unwrap();
    let csv = decode::csv::CsvDecoder::new(&mapping, Arc::default()).unwrap();
    let mut d = decode::LineDecoder::Csv(Box::new(csv));
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(header).unwrap();
    f.write_all(b"\n").unwrap();
    f.flush().unwrap();
    rows.iter()
        .map(|row| d.decode(f.path(), (1, 1), row))
        .collect()
}

#[test]
fn csv_row_with_mapping() {
    check!().for_each(|data: &[u8]| {
        let Some((shaped, rest)) = mode(data) else {
            return;
        };
        if !shaped {
            // The file's header and its rows are all the fuzzer's.
            let mut lines = rest.split(|&b| b == b'\n');
            let header = lines.next().unwrap_or_default();
            let rows: Vec<&[u8]> = lines.take(64).collect();
            for r in decode_csv(header, &rows) {
                assert_raw(&r);
            }
            return;
        }
        let v = fields(rest, 6);
        let one = |w: &[String]| {
            decode_csv(CSV_HEADER.as_bytes(), &[csv_row(w).as_bytes()])
                .pop()
                .unwrap()
        };
        match &one(&v) {
            Ok(item) => {
                assert_sound(item);
                // A row is one line: csv_field wrote line breaks as spaces.
                let written = |s: &str| s.replace(['\n', '\r'], " ");
                for a in item.accesses() {
                    let p = a.patient.as_deref().unwrap_or_default();
                    assert!(written(&v[2]).contains(p), "patient {p:?} from {:?}", v[2]);
                    let user = written(&v[1]);
                    assert!(user.contains(&a.user), "user {:?} from {user:?}", a.user);
                }
            }
            Err(e) => assert_no_echo(&e.to_string(), &v, |w| reason(&one(w))),
        }
    });
}

/// `[mrn, family, given, street, zip, attending, department]` in an A01 admit, the shape of
/// tests/fixtures/hl7v2/messages.hl7.
fn adt(v: &[String]) -> String {
    let f = |s: &str| s.replace(['|', '^', '~', '\\', '&', '\r', '\n'], " ");
    format!(
        "MSH|^~\\&|EPIC|HOSP|PHIWATCH|HOSP|20260310083000||ADT^A01^ADT_A01|MSG0001|P|2.5\rEVN|A01|20260310083000\rPID|1||{}^^^HOSP^MR||{}^{}||||||{}^^Troy^OH^{}\rPV1||I|{}^301^A^HOSP||||{}^HOUSE^GREGORY^^^^^^NPI|||CAR|||||||||V1001\r",
        f(&v[0]),
        f(&v[1]),
        f(&v[2]),
        f(&v[3]),
        f(&v[4]),
        f(&v[6]),
        f(&v[5]),
    )
}

#[test]
fn hl7v2_adt() {
    use phiwatch::context::adt::{Adt, AdtOptions, Applied};
    check!().for_each(|data: &[u8]| {
        let Some((shaped, rest)) = mode(data) else {
            return;
        };
        let settings = phiwatch::settings::Settings::default();
        let apply = |text: &str| {
            let mut store = phiwatch::context::ContextStore::default();
            Adt::new(&settings, AdtOptions::default()).apply_text(&mut store, text)
        };
        if !shaped {
            let text = String::from_utf8_lossy(rest);
            for (_, m) in decode::hl7v2::split_messages(&text).into_iter().take(16) {
                let parsed = decode::hl7v2::Message::parse(&m).ok();
                let ack = decode::hl7v2::ack(parsed.as_ref(), "AA", "ok", "20260310083000");
                assert!(ack.starts_with("MSH|"), "{ack:?}");
                assert!(ack.contains("\rMSA|AA|"), "{ack:?}");
                if let Applied::Refused(r) | Applied::Ignored(r) = apply(&m) {
                    assert!(r.len() <= MAX_REASON, "{} bytes: {:.300}", r.len(), r);
                }
            }
            return;
        }
        let v = fields(rest, 7);
        if let Applied::Refused(r) = apply(&adt(&v)) {
            assert_no_echo(&r, &v, |w| match apply(&adt(w)) {
                Applied::Refused(r) => Some(r),
                _ => None,
            });
        }
    });
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Frames are never longer than the limit, never more than the bytes given, and a stream
/// ends in an error or a clean end, never a hang.
#[test]
fn syslog_framing() {
    const MAX: usize = 512;
    check!().for_each(|data: &[u8]| {
        block_on(async {
            let mut r = tokio::io::BufReader::with_capacity(64, data);
            let mut total = 0;
            for _ in 0..=data.len() {
                match phiwatch::syslog::read_frame(&mut r, MAX).await {
                    Ok(Some(f)) => {
                        assert!(f.len() <= MAX + 1, "frame of {} bytes", f.len());
                        total += f.len();
                        assert!(total <= data.len());
                        if let Ok(body) = phiwatch::syslog::message_body(&f) {
                            assert!(f.ends_with(body), "the body is the frame's tail");
                        }
                    }
                    Ok(None) | Err(_) => return,
                }
            }
            panic!("more frames than bytes");
        })
    });
}

/// The MSG of an RFC 5424 (or 3164) header is a tail of the frame, found in one pass.
#[test]
fn rfc5424_header() {
    check!().for_each(|data: &[u8]| {
        if let Ok(body) = phiwatch::syslog::message_body(data) {
            assert!(data.ends_with(body));
            assert!(!body.starts_with(b"\xEF\xBB\xBF"), "the BOM is skipped");
        }
    });
}

#[test]
fn mllp_framing() {
    const MAX: usize = 512;
    check!().for_each(|data: &[u8]| {
        block_on(async {
            let budget = Arc::new(tokio::sync::Semaphore::new(4 * MAX));
            let mut r = tokio::io::BufReader::with_capacity(64, data);
            let mut total = 0;
            for _ in 0..=data.len() {
                match phiwatch::mllp::read_frame(&mut r, MAX, &budget).await {
                    Ok(Some((f, permit))) => {
                        assert!(f.len() <= MAX, "frame of {} bytes", f.len());
                        assert!(
                            !f.contains(&0x0b) && !f.contains(&0x1c),
                            "framing bytes kept"
                        );
                        total += f.len();
                        assert!(total <= data.len());
                        drop(permit);
                    }
                    Ok(None) | Err(_) => return,
                }
            }
            panic!("more frames than bytes");
        })
    });
}

/// The agent's configuration file as `phiwatch run` loads it: any text is a config or an
/// error naming the file.
#[test]
fn config_toml() {
    check!().for_each(|data: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phiwatch.toml");
        std::fs::write(&path, data).unwrap();
        if let Err(e) = phiwatch::config::Config::load(&path) {
            let msg = format!("{e}");
            assert!(msg.contains("phiwatch.toml"), "no file named: {msg}");
        }
    });
}

/// The rules files (routing, response, jurisdictions, detection settings): the mode byte
/// picks one.
#[test]
fn rules_files() {
    check!().for_each(|data: &[u8]| {
        let Some((&which, rest)) = data.split_first() else {
            return;
        };
        let text = String::from_utf8_lossy(rest);
        let ok = match which % 4 {
            0 => phiwatch::alert::routing::Routing::parse(&text).is_ok(),
            1 => phiwatch::case::response::Response::parse(&text).is_ok(),
            2 => phiwatch::case::clock::Jurisdictions::parse(&text).is_ok(),
            _ => phiwatch::settings::Settings::parse(&text, "detection.toml").is_ok(),
        };
        let _ = ok;
    });
}

/// A policy pack as the agent loads it: a fuzzed policy file beside the shipped pack (odd
/// mode byte), or a fuzzed schema under the shipped policies (even). A pack that compiles
/// must also answer a request.
#[test]
fn cedar_pack() {
    use phiwatch::detect::cedar::PackSources;
    check!().for_each(|data: &[u8]| {
        let Some((shaped, rest)) = mode(data) else {
            return;
        };
        let text = String::from_utf8_lossy(rest);
        let sources = PackSources::read(None).unwrap();
        let sources = if shaped {
            sources.with_file("fuzz.cedar", &text)
        } else {
            PackSources {
                schema: text.into_owned(),
                ..sources
            }
        };
        match sources.compile() {
            Ok(pack) => {
                let settings = phiwatch::settings::Settings::default();
                let store = phiwatch::context::ContextStore::default();
                let access = phiwatch::event::AccessEvent {
                    id: "e1".into(),
                    time_ms: 1_773_129_600_000,
                    user: "dr-ana".into(),
                    patient: Some("pt-1".into()),
                    ..Default::default()
                };
                let enriched = phiwatch::enrich::Enricher::new(&settings).enrich(&store, access);
                let mut findings = Vec::new();
                phiwatch::detect::cedar::Detector::new(&pack).findings(
                    &enriched,
                    &store,
                    &mut findings,
                );
                for f in &findings {
                    assert!(
                        f.detector == phiwatch::detect::cedar::UNEXPLAINED_ID
                            || pack.rules().iter().any(|r| r.id == f.detector),
                        "{f:?}"
                    );
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
}
