//! Who may do what. Every route names one permission (see `routes::ROUTES`); a role holds a
//! fixed set of them. Administrators run the agent and see no PHI; auditors read everything
//! and change nothing; investigators work cases but leave the breach decision, silences and
//! case assignment to the privacy officer.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    PrivacyOfficer,
    Investigator,
    Auditor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::PrivacyOfficer,
        Role::Investigator,
        Role::Auditor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PrivacyOfficer => "privacy-officer",
            Role::Investigator => "investigator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn may(self, p: Perm) -> bool {
        use Perm::*;
        match self {
            Role::PrivacyOfficer => true,
            Role::Investigator => matches!(
                p,
                Signed | ReadAlerts | Triage | ReadCases | OpenCase | WorkCase
            ),
            Role::Auditor => matches!(p, Signed | ReadAlerts | ReadCases | ReadStatus),
            Role::Admin => matches!(p, Signed | ReadStatus),
        }
    }

    /// Where the console sends this role after login.
    pub fn home(self) -> &'static str {
        match self {
            Role::Admin => "/status",
            _ => "/alerts",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Perm {
    /// Anyone, signed in or not (login page, static assets).
    Public,
    /// Any signed-in user (their own session).
    Signed,
    /// Alerts, their findings and the dashboards.
    ReadAlerts,
    /// Acknowledge alerts.
    Triage,
    /// Create and expire silences.
    Silence,
    /// Cases, their timelines, deadlines, letters and logs.
    ReadCases,
    /// Open a case from alerts.
    OpenCase,
    /// Facts, assessment, tasks, notes, evidence.
    WorkCase,
    /// Assign, determine, move to notifying, close.
    DecideCase,
    /// Policies, plugins and metrics.
    ReadStatus,
    /// Backtest draft policies against the stored access log (the policy-author permission).
    AuthorPolicies,
}

impl Perm {
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Public => "public",
            Perm::Signed => "signed",
            Perm::ReadAlerts => "read-alerts",
            Perm::Triage => "triage",
            Perm::Silence => "silence",
            Perm::ReadCases => "read-cases",
            Perm::OpenCase => "open-case",
            Perm::WorkCase => "work-case",
            Perm::DecideCase => "decide-case",
            Perm::ReadStatus => "read-status",
            Perm::AuthorPolicies => "author-policies",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_sees_no_phi_and_auditor_changes_nothing() {
        for p in [Perm::ReadAlerts, Perm::ReadCases, Perm::Triage] {
            assert!(!Role::Admin.may(p));
        }
        for p in [
            Perm::Triage,
            Perm::Silence,
            Perm::OpenCase,
            Perm::WorkCase,
            Perm::DecideCase,
        ] {
            assert!(!Role::Auditor.may(p));
        }
        assert!(Role::Investigator.may(Perm::WorkCase));
        assert!(!Role::Investigator.may(Perm::DecideCase));
        assert_eq!(Role::parse("auditor"), Some(Role::Auditor));
        assert_eq!(Role::parse("root"), None);
    }
}
