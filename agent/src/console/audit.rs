//! The monitor is monitored: each console view of PHI (an alert's evidence, a case, a
//! timeline, letters) becomes one BALP-shaped FHIR AuditEvent per patient shown, appended to
//! the agent's `phiwatch-console` spool. The agent tails that spool like any EHR log, so the
//! views are stored as accesses and judged by the same policies and plugins: a privacy
//! officer opening their own relative's case is flagged like any other family snooping.

use super::accounts::Account;
use crate::spool::SharedSpool;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// The source name the console's spool is read under.
pub const SOURCE: &str = crate::config::CONSOLE_SOURCE;
/// The workstation recorded on console views.
pub const WORKSTATION: &str = "phiwatch-console";

pub struct ViewLog {
    spool: Option<SharedSpool>,
    seq: AtomicU64,
    /// Distinguishes this process's event ids from an earlier run's.
    boot: String,
}

impl ViewLog {
    /// `None`: views are not recorded (only where no detection runs, e.g. benchmarks).
    pub fn new(spool: Option<SharedSpool>) -> Self {
        ViewLog {
            spool,
            seq: AtomicU64::new(0),
            boot: super::session::token()[..10].to_owned(),
        }
    }

    /// The user id views are recorded under: the staff id the account is linked to, else
    /// `console:NAME` (unknown to the directory, which the policies treat as such).
    pub fn user_id(a: &Account) -> String {
        a.staff_id
            .clone()
            .unwrap_or_else(|| format!("console:{}", a.name))
    }

    /// Records a view of `patients` (what: "case 12", "alert 7", ...): one event per distinct
    /// patient, however often a page lists them. Made durable before it returns: a view that
    /// cannot be recorded is not shown.
    pub fn record<'p>(
        &self,
        a: &Account,
        what: &str,
        patients: impl IntoIterator<Item = &'p str>,
    ) -> std::io::Result<()> {
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let patients: std::collections::BTreeSet<&str> =
            patients.into_iter().filter(|p| !p.is_empty()).collect();
        if patients.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let user = Self::user_id(a);
        let mut lines = Vec::with_capacity(patients.len());
        for p in patients {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let ev = json!({
                "resourceType": "AuditEvent",
                "id": format!("console-{}-{n}", self.boot),
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
                "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
                "action": "R",
                "recorded": now,
                "outcome": "0",
                "agent": [{
                    "who": {"reference": format!("Practitioner/{user}")},
                    "altId": a.name,
                    "requestor": true,
                    "network": {"address": WORKSTATION, "type": "1"}
                }],
                "source": {"observer": {"display": "phiwatch console"}},
                "entity": [{
                    "what": {"reference": format!("Patient/{p}")},
                    "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
                    "description": what
                }]
            });
            lines.push(ev.to_string());
        }
        let mut s = spool
            .lock()
            .map_err(|_| std::io::Error::other("console spool lock poisoned"))?;
        for l in lines {
            s.append(l.as_bytes()).map_err(std::io::Error::other)?;
        }
        s.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::audit_event::decode_audit_event;
    use crate::decode::Decoded;

    #[test]
    fn views_decode_as_accesses_by_the_linked_staff_member() {
        let d = tempfile::tempdir().unwrap();
        let spool = crate::spool::Spool::open(d.path(), SOURCE, 1 << 20).unwrap();
        let active = spool.active().to_owned();
        let log = ViewLog::new(Some(spool.shared()));
        let a = Account {
            name: "olivia".into(),
            role: super::super::authz::Role::PrivacyOfficer,
            staff_id: Some("dr-ana".into()),
        };
        // Repeats and blanks are one event per distinct patient.
        log.record(&a, "case 3", ["pt-1", "pt-2", "pt-1", ""])
            .unwrap();
        let text = std::fs::read_to_string(active).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let Decoded::Access(e) = decode_audit_event(lines[1].as_bytes()).unwrap() else {
            panic!("not an access")
        };
        assert_eq!(e.user, "dr-ana");
        assert_eq!(e.patient.as_deref(), Some("pt-2"));
        assert_eq!(e.workstation, WORKSTATION);
        let Decoded::Access(first) = decode_audit_event(lines[0].as_bytes()).unwrap() else {
            panic!("not an access")
        };
        assert_ne!(first.id, e.id);
    }
}
