//! The access event every source produces, whatever its wire format.

use serde::Serialize;

/// What the user did to the record, in the vocabulary of the Cedar schema's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    View,
    Modify,
    Print,
    Export,
    Query,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::View,
        Action::Modify,
        Action::Print,
        Action::Export,
        Action::Query,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Modify => "modify",
            Action::Print => "print",
            Action::Export => "export",
            Action::Query => "query",
        }
    }
}

/// One access to one patient's record by one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    /// `AuditEvent.id`, or a stable hash of the source line when the id is absent.
    pub id: String,
    /// Milliseconds since the Unix epoch (UTC), from `AuditEvent.recorded`.
    pub time_ms: i64,
    /// The requesting agent: a Practitioner id (or the agent's identifier value).
    pub user: String,
    /// The patient whose record was touched, if the event names one.
    pub patient: Option<String>,
    pub action: Action,
    /// The FHIR action code as sent: C, R, U, D or E.
    pub action_code: char,
    /// First subtype code (read, vread, search, ITI-32, ...), empty when absent.
    pub subtype: String,
    pub break_glass: bool,
    /// Workstation or network address of the requesting agent, empty when absent.
    pub workstation: String,
    /// Whether the attempt succeeded (`outcome` 0). Failed attempts are still accesses to judge.
    pub succeeded: bool,
}
