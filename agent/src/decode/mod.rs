//! Decoders turn one source record into an [`AccessEvent`](crate::event::AccessEvent).

pub mod audit_event;

pub use audit_event::{decode_audit_event, Decoded};

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

/// Replaces every double-quoted run with `"…"` and drops serde's trailing position text.
fn redact_quoted(msg: &str) -> String {
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
