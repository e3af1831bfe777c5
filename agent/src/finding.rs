//! A finding: one detector's verdict that one access needs a privacy officer's look.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A word that names no severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("severity {0:?} is not one of low, medium, high, critical")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, UnknownSeverity> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownSeverity(s.to_owned()))
    }
}

/// The NDJSON record `scan` writes, one per finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub event_id: String,
    /// RFC 3339 UTC.
    pub time: String,
    pub user: String,
    /// The user's department (empty when unknown): alerts route on it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub department: String,
    pub patient: String,
    pub action: String,
    pub category: String,
    pub severity: Severity,
    /// Policy `@id` or plugin name.
    pub detector: String,
    pub explanation: String,
    pub hipaa: String,
}
