//! First-time access to a sensitive or VIP record by a user from outside the patient's
//! departments with no care relationship to the patient. The pairs already seen are kept in plugin
//! state, so a restart does not make every user "new" again.

use phiwatch_plugin_sdk::prelude::*;
use phiwatch_plugin_sdk::state;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Treat restricted (confidentiality R/V) records like sensitive ones.
    pub include_restricted: bool,
    /// Treat records of employees like VIP ones.
    pub include_employees: bool,
    /// Judge clinical users only: registration, billing and records staff open charts across
    /// departments as their job, and the Cedar pack judges their business need.
    pub clinical_only: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            include_restricted: true,
            include_employees: false,
            clinical_only: true,
        }
    }
}

pub struct FirstAccess {
    s: Settings,
}

impl Detector for FirstAccess {
    fn describe() -> Description {
        Description::new("first-access", env!("CARGO_PKG_VERSION"), &["first_time_sensitive"]).schema(
            r#"{"type":"object","properties":{"include_restricted":{"type":"boolean"},"include_employees":{"type":"boolean"},"clinical_only":{"type":"boolean"}},"additionalProperties":false}"#,
        )
    }

    fn configure(config: &str) -> Result<Self, String> {
        Ok(FirstAccess {
            s: phiwatch_plugin_sdk::parse_config(config)?,
        })
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        for a in &batch.accesses {
            let patient = batch.patient_of(a);
            let user = batch.user_of(a);
            if self.s.clinical_only && !user.clinical {
                continue;
            }
            let kind = if patient.vip {
                "a VIP"
            } else if patient.sensitive {
                "a sensitive"
            } else if patient.restricted && self.s.include_restricted {
                "a restricted"
            } else if patient.employee && self.s.include_employees {
                "an employee's"
            } else {
                continue;
            };
            let key = format!("seen/{}/{}", user.id, patient.id);
            if state::get(&key).is_some() {
                continue;
            }
            let _ = state::set(&key, &[1]);
            // Any care relationship (an appointment too) or the patient's own department
            // explains a first look.
            let related = !a.relationships.is_empty();
            let own_department = batch.in_patient_departments(user, patient);
            if related || own_department || a.department_encounter {
                continue;
            }
            let severity = Severity::High;
            out.push(
                Finding::new(
                    "first_time_sensitive",
                    severity,
                    format!(
                        "User {} ({}, {}) opened {kind} record (patient {}) for the first time, from outside the patient's departments and without treating the patient.",
                        user.id, batch.role_of(user), batch.department_of(user), patient.id
                    ),
                    a.id,
                )
                .with_score(0.9),
            );
        }
    }
}

phiwatch_plugin_sdk::export_detector!(FirstAccess);

#[cfg(test)]
mod tests {
    use super::*;
    use phiwatch_plugin_sdk::testing::{access, batch_of};

    #[test]
    fn only_the_first_outside_access_is_reported() {
        state::clear_for_tests();
        let mut d = FirstAccess::configure("{}").unwrap();
        let vip = |t, u: &str| {
            access(t, u, "vip1")
                .patient(|p| p.vip = true)
                .patient_departments(&["Cardiology"])
        };
        let mut out = Vec::new();
        d.detect(&batch_of(vec![vip(1, "n1"), vip(2, "n1")]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].severity, Severity::High);
        // The patient's own department and the care team are not flagged.
        let mut out = Vec::new();
        let cardio = vip(3, "c1").department("Cardiology");
        let team = vip(4, "n2").with(|a| a.relationships = Relationships::CARE_TEAM);
        let plain = access(5, "n3", "p-plain");
        d.detect(&batch_of(vec![cardio, team, plain]), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
