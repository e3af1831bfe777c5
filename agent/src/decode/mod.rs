//! Decoders turn one source record into an [`AccessEvent`] or a [`FileEvent`].

pub mod atna;
pub mod audit_event;
pub mod csv;
pub mod hl7v2;
pub mod siem;

pub use atna::decode_atna;
pub use audit_event::{decode_audit_event, decode_audit_event_in, Decoded};

use crate::event::{AccessEvent, FileEvent};
use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

/// Why a line could not become an access event. Messages never echo field values, because
/// a malformed line may still carry PHI and these reasons end up in logs.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("malformed JSON at column {column}: {reason}")]
    Json { column: usize, reason: String },
    #[error("resourceType is {0:?}, expected \"AuditEvent\"")]
    WrongResourceType(String),
    #[error("resourceType is missing")]
    MissingResourceType,
    #[error("no `recorded` time")]
    MissingRecorded,
    #[error("`recorded` is not a FHIR instant")]
    BadRecorded,
    #[error("no requesting agent with an identity (agent.who)")]
    NoRequestor,
    #[error("action code is not one of C, R, U, D, E")]
    BadAction,
    #[error("XML nests deeper than {max} elements")]
    TooDeep { max: usize },
    #[error("malformed XML: {reason}")]
    Xml { reason: String },
    #[error("root element is <{0}>, not an AuditMessage")]
    NotAuditMessage(String),
    #[error("no {0}")]
    Missing(&'static str),
    #[error("{0} is not a date-time")]
    BadTime(&'static str),
    #[error("CSV: {0}")]
    Csv(String),
    #[error("CEF/LEEF: {0}")]
    Siem(String),
    #[error("file event: {0}")]
    FileEvent(String),
    #[error("{field} is longer than {max} bytes")]
    IdTooLong { field: &'static str, max: usize },
    #[error("{field} contains control or bidirectional formatting characters")]
    IdUnsafe { field: &'static str },
    #[error("time is outside 1980-2099: a broken clock or a forged record")]
    ImplausibleTime,
}

impl DecodeError {
    /// A serde_json error rephrased without the offending value.
    pub fn from_json(e: &serde_json::Error) -> Self {
        DecodeError::Json {
            column: e.column(),
            reason: redact_quoted(&e.to_string()),
        }
    }
}

/// The wire format of a source's lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One FHIR R4 AuditEvent (IHE BALP) per line.
    FhirAuditevent,
    /// One DICOM PS3.15 / RFC 3881 AuditMessage per line.
    AtnaXml,
    /// Comma-separated values with a column mapping (`[source.csv]`).
    Csv,
    /// Epic Security-SIEM records, CEF or LEEF, one per line (a syslog header before them is
    /// skipped); `leef` is the same reader.
    Cef,
    Leef,
}

/// What one line holds. Serialisable: fleet mode's collectors decode, and queue items.
#[derive(Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum Item {
    Access(AccessEvent),
    /// One record naming several patients: an access each (see [`Decoded::Many`]).
    Many {
        accesses: Vec<AccessEvent>,
        over_cap: u64,
    },
    File(FileEvent),
    /// A context message (HL7 v2 ADT received over MLLP) for the detection thread to apply
    /// and journal.
    Context {
        feed: String,
        message: String,
    },
    /// A valid record with nothing to judge: no patient, or a CSV header.
    Nothing,
}

impl From<Decoded> for Item {
    fn from(d: Decoded) -> Self {
        match d {
            Decoded::Access(a) => Item::Access(a),
            Decoded::Many { accesses, over_cap } => Item::Many { accesses, over_cap },
            Decoded::NoPatient => Item::Nothing,
        }
    }
}

impl Item {
    /// The accesses this item holds, in order.
    pub fn accesses(&self) -> &[AccessEvent] {
        match self {
            Item::Access(a) => std::slice::from_ref(a),
            Item::Many { accesses, .. } => accesses,
            Item::File(_) | Item::Context { .. } | Item::Nothing => &[],
        }
    }
}

/// Longest id, user, patient or workstation accepted, in bytes. Real ids are a few dozen
/// bytes; a megabyte id is an attack on every page and log that shows it.
pub const MAX_ID_BYTES: usize = 256;

/// Refuses ids that would be shown wrongly or enormously (control characters, bidirectional
/// overrides that make `dr-ana\u{202E}gnp.exe` read as `dr-anaexe.png`) and times outside
/// the plausibility window. Every decoder's accesses pass here.
pub fn check(a: &AccessEvent) -> Result<(), DecodeError> {
    if !crate::time::plausible(a.time_ms) {
        return Err(DecodeError::ImplausibleTime);
    }
    let fields = [
        ("event id", a.id.as_str()),
        ("user id", a.user.as_str()),
        ("patient id", a.patient.as_deref().unwrap_or("")),
        ("workstation", a.workstation.as_str()),
        ("subtype", a.subtype.as_str()),
    ];
    for (field, v) in fields {
        if v.len() > MAX_ID_BYTES {
            return Err(DecodeError::IdTooLong {
                field,
                max: MAX_ID_BYTES,
            });
        }
        if v.chars().any(unsafe_char) {
            return Err(DecodeError::IdUnsafe { field });
        }
    }
    Ok(())
}

/// Control characters and the invisible formatting characters that reorder or hide text.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A source's decoder, with whatever per-file state its format needs.
pub enum LineDecoder {
    /// FHIR AuditEvent; times without an offset are read in the zone.
    Fhir(chrono_tz::Tz),
    /// ATNA AuditMessage; times without an offset are read in the zone.
    Atna(chrono_tz::Tz),
    /// CEF or LEEF records, one per line, maybe after a syslog header.
    Siem(Box<siem::SiemDecoder>),
    /// A syslog source's message bodies: ATNA AuditMessage XML, CEF or LEEF, told apart per
    /// message.
    Syslog(Box<siem::SiemDecoder>),
    Csv(Box<csv::CsvDecoder>),
    /// The folder watcher's own spool lines.
    FileEvents,
    /// An MLLP feed's spool: one JSON-escaped HL7 v2 message per line.
    Hl7(String),
}

impl LineDecoder {
    /// `(dev, inode)` identifies the file, for formats that learn from its first line.
    pub fn decode(
        &mut self,
        path: &Path,
        file: (u64, u64),
        line: &[u8],
    ) -> Result<Item, DecodeError> {
        // Editors and Windows tools start files (and some senders every record) with a BOM.
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        let item = match self {
            LineDecoder::Fhir(zone) => decode_audit_event_in(line, *zone).map(Item::from),
            LineDecoder::Atna(zone) => atna::decode_atna_in(line, *zone).map(Item::from),
            LineDecoder::Siem(d) => d.decode(line),
            LineDecoder::Syslog(d) if line.starts_with(b"CEF:") || line.starts_with(b"LEEF:") => {
                d.decode(line)
            }
            LineDecoder::Syslog(d) => atna::decode_atna_in(line, d.zone()).map(Item::from),
            LineDecoder::Csv(d) => d.decode(path, file, line),
            LineDecoder::FileEvents => serde_json::from_slice::<FileEvent>(line)
                .map(Item::File)
                .map_err(|e| DecodeError::FileEvent(redact_quoted(&e.to_string()))),
            LineDecoder::Hl7(feed) => hl7v2::from_spool_line(line)
                .map(|message| Item::Context {
                    feed: feed.clone(),
                    message,
                })
                .ok_or_else(|| DecodeError::FileEvent("not an MLLP spool line".into())),
        }?;
        for a in item.accesses() {
            check(a)?;
        }
        Ok(item)
    }

    /// The file was truncated or replaced: per-file state learned from it is stale.
    pub fn forget(&mut self, file: (u64, u64)) {
        if let LineDecoder::Csv(d) = self {
            d.forget(file);
        }
    }
}

/// Replaces every double-quoted run with `"…"` and drops serde's trailing position text.
/// serde writes a string value with its quotes escaped (`string "<div class=\"x\">..."`):
/// an escaped quote does not end the run, or the text after it would be shown.
pub(crate) fn redact_quoted(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    let mut escaped = false;
    for ch in msg.chars() {
        if inside && std::mem::take(&mut escaped) {
            continue;
        }
        match ch {
            '\\' if inside => escaped = true,
            '"' if inside => {
                out.push_str("…\"");
                inside = false;
            }
            '"' => {
                out.push('"');
                inside = true;
            }
            _ if !inside => out.push(ch),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> AccessEvent {
        AccessEvent {
            id: "e1".into(),
            time_ms: crate::time::parse_fhir_time("2026-03-01T10:00:00Z").unwrap(),
            user: "dr-ana".into(),
            patient: Some("pt-1".into()),
            action: crate::event::Action::View,
            action_code: 'R',
            subtype: String::new(),
            break_glass: false,
            workstation: String::new(),
            succeeded: true,
            ..Default::default()
        }
    }

    #[test]
    fn ids_that_display_wrongly_or_hugely_are_refused() {
        assert_eq!(check(&access()), Ok(()));
        let mut a = access();
        a.user = "dr-ana\u{202E}gnp.exe".into();
        assert_eq!(check(&a), Err(DecodeError::IdUnsafe { field: "user id" }));
        a.user = "dr\u{7}ana".into();
        assert!(check(&a).is_err());
        let mut a = access();
        a.patient = Some("p".repeat(1 << 20));
        assert!(matches!(
            check(&a),
            Err(DecodeError::IdTooLong {
                field: "patient id",
                ..
            })
        ));
        let mut a = access();
        a.user = "Dr. Zoë O'Brien-Łukasz 医生".into();
        assert_eq!(check(&a), Ok(()), "names in any script are fine");
        let mut a = access();
        a.time_ms = crate::time::parse_fhir_time("9999-01-01T00:00:00Z").unwrap();
        assert_eq!(check(&a), Err(DecodeError::ImplausibleTime));
    }

    #[test]
    fn a_byte_order_mark_does_not_make_a_bad_line() {
        let line = "\u{feff}{\"resourceType\":\"AuditEvent\",\"recorded\":\"2026-03-01T10:00:00Z\",\"agent\":[{\"who\":{\"reference\":\"Practitioner/a\"},\"requestor\":true}],\"entity\":[{\"what\":{\"reference\":\"Patient/b\"}}]}";
        let mut d = LineDecoder::Fhir(chrono_tz::UTC);
        let item = d.decode(Path::new("x"), (0, 0), line.as_bytes()).unwrap();
        assert_eq!(item.accesses()[0].user, "a");
    }

    #[test]
    fn json_errors_do_not_echo_values() {
        let e = serde_json::from_str::<u32>("\"Jane Doe\"").unwrap_err();
        let msg = DecodeError::from_json(&e).to_string();
        assert!(!msg.contains("Jane"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
        // Found by the fhir_audit_event fuzz target: a value holding escaped quotes (FHIR
        // narrative XHTML) used to end the redaction at the first of them.
        let e = serde_json::from_str::<u32>(
            r#""<div xmlns="http://www.w3.org/1999/xhtml">Jane Doe, MRN 12345 \ "x"</div>""#,
        )
        .unwrap_err();
        let msg = DecodeError::from_json(&e).to_string();
        assert!(!msg.contains("Jane") && !msg.contains("12345"), "{msg}");
        assert!(
            msg.contains("invalid type: string \"…\", expected u32"),
            "{msg}"
        );
    }
}
