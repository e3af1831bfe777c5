//! Decoders turn one source record into an [`AccessEvent`] or a [`FileEvent`].

pub mod atna;
pub mod audit_event;
pub mod csv;

pub use atna::decode_atna;
pub use audit_event::{decode_audit_event, Decoded};

use crate::event::{AccessEvent, FileEvent};
use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

/// Why a line could not become an access event. Messages never echo field values, because
/// a malformed line may still carry PHI and these reasons end up in logs.
#[derive(Debug, Error, PartialEq, Eq)]
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
    #[error("file event: {0}")]
    FileEvent(String),
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
}

/// What one line holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Access(AccessEvent),
    File(FileEvent),
    /// A valid record with nothing to judge: no patient, or a CSV header.
    Nothing,
}

impl From<Decoded> for Item {
    fn from(d: Decoded) -> Self {
        match d {
            Decoded::Access(a) => Item::Access(a),
            Decoded::NoPatient => Item::Nothing,
        }
    }
}

/// A source's decoder, with whatever per-file state its format needs.
pub enum LineDecoder {
    Fhir,
    Atna,
    Csv(Box<csv::CsvDecoder>),
    /// The folder watcher's own spool lines.
    FileEvents,
}

impl LineDecoder {
    /// `(dev, inode)` identifies the file, for formats that learn from its first line.
    pub fn decode(
        &mut self,
        path: &Path,
        file: (u64, u64),
        line: &[u8],
    ) -> Result<Item, DecodeError> {
        match self {
            LineDecoder::Fhir => decode_audit_event(line).map(Item::from),
            LineDecoder::Atna => decode_atna(line).map(Item::from),
            LineDecoder::Csv(d) => d.decode(path, file, line),
            LineDecoder::FileEvents => serde_json::from_slice::<FileEvent>(line)
                .map(Item::File)
                .map_err(|e| DecodeError::FileEvent(redact_quoted(&e.to_string()))),
        }
    }

    /// The file was truncated or replaced: per-file state learned from it is stale.
    pub fn forget(&mut self, file: (u64, u64)) {
        if let LineDecoder::Csv(d) = self {
            d.forget(file);
        }
    }
}

/// Replaces every double-quoted run with `"…"` and drops serde's trailing position text.
pub(crate) fn redact_quoted(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for ch in msg.chars() {
        if ch == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_do_not_echo_values() {
        let e = serde_json::from_str::<u32>("\"Jane Doe\"").unwrap_err();
        let msg = DecodeError::from_json(&e).to_string();
        assert!(!msg.contains("Jane"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
    }
}
