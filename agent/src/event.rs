//! The access event every source produces, whatever its wire format.

use serde::Serialize;

/// What the user did to the record, in the vocabulary of the Cedar schema's actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
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

/// One access to one patient's record by one user. Serialised as decoded (fleet mode's
/// collectors queue it for the detector).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// The department the user worked in for this access (the login or workstation
    /// department an EHR extract names), empty when absent.
    pub department: String,
    /// The encounter (Epic CSN, visit number) the access was made in, empty when absent.
    pub encounter: String,
    /// What the log's row says about the patient and the user (extracts that carry names
    /// and addresses on every row); applied to the context before the access is judged.
    pub inline: Option<Box<Inline>>,
}

/// Demographics an access-log row carries inline. Every field may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inline {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_family: String,
    /// Street lines, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patient_lines: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_city: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_postal_code: String,
    /// Other names of the user on the row (employee id, login) than the one in `user`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_family: String,
}

impl Inline {
    pub fn is_empty(&self) -> bool {
        self == &Inline::default()
    }
}

/// What happened to a file in a watched PHI folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileChange {
    Created,
    Modified,
    Renamed,
    Deleted,
    /// Mode bits changed so that more accounts can read or write the file.
    Permissions,
    /// Many files opened for reading (copied out) within the burst window.
    #[serde(rename = "bulk-read")]
    BulkRead,
    /// Many files deleted within the burst window.
    #[serde(rename = "bulk-delete")]
    BulkDelete,
}

impl FileChange {
    /// The Cedar action name in `policies/files/schema.cedarschema`.
    pub fn action(self) -> &'static str {
        match self {
            FileChange::Created => "file_created",
            FileChange::Modified => "file_modified",
            FileChange::Renamed => "file_renamed",
            FileChange::Deleted => "file_deleted",
            FileChange::Permissions => "file_permissions",
            FileChange::BulkRead => "file_bulk_read",
            FileChange::BulkDelete => "file_bulk_delete",
        }
    }
}

/// One change in a watched PHI folder, as the folder watcher spools it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileEvent {
    pub id: String,
    pub time_ms: i64,
    pub change: FileChange,
    pub path: String,
    /// The new name of a renamed file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to_path: String,
    /// The file's owner account, as the platform reports it; empty when it cannot tell
    /// (a deleted file nobody saw before).
    #[serde(default)]
    pub owner: String,
    /// Unix mode bits (permissions only), 0 when unknown.
    #[serde(default)]
    pub mode: u32,
    /// Mode bits before the change, 0 when unknown.
    #[serde(default)]
    pub old_mode: u32,
    /// Files involved: 1, or the burst size.
    #[serde(default = "one")]
    pub count: u32,
    /// Length of the burst window in seconds (bursts only).
    #[serde(default)]
    pub window_seconds: u32,
}

fn one() -> u32 {
    1
}
