//! Fuzzy family and neighbour matching: the patient's family name is a spelling variant of
//! the user's (Soundex and Jaro-Winkler, parts of hyphenated names) and the two live in the
//! same household or on the same street, with addresses normalised USPS-style. Common family
//! names weigh less. Exact name-and-address matches are the Cedar pack's `family-member`
//! rule; this plugin catches what exact matching misses.
//!
//! Needs the operator to expose names and addresses (`expose = ["names", "addresses"]`).

use phiwatch_plugin_sdk::prelude::*;
use phiwatch_plugin_sdk::text::{self, Nearness};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Name similarity (0..1) from which two family names count as a variant of each other.
    pub name_threshold: f64,
    /// Score (0..1) from which a finding is high; from `medium_score` it is medium.
    pub high_score: f64,
    pub medium_score: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name_threshold: 0.88,
            high_score: 0.85,
            medium_score: 0.7,
        }
    }
}

pub struct FamilyMatch {
    s: Settings,
}

/// Score of a user-patient pair and why, or `None` when nothing links them.
pub fn assess(s: &Settings, user: &User, patient: &Patient) -> Option<(f64, Nearness, f64)> {
    let (Some(user_name), Some(patient_name)) = (&user.family_name, &patient.family_name) else {
        return None;
    };
    let user_address = user.address.as_deref().unwrap_or("");
    let patient_address = patient.address.as_deref().unwrap_or("");
    let exact_name = text::fold_name(user_name) == text::fold_name(patient_name);
    let sim = text::name_similarity(user_name, patient_name);
    if sim < s.name_threshold {
        return None;
    }
    let near = match (
        text::parse_address(user_address),
        text::parse_address(patient_address),
    ) {
        (Some(ua), Some(pa)) => text::nearness(&ua, &pa),
        _ => Nearness::Unrelated,
    };
    if near == Nearness::Unrelated {
        return None;
    }
    // The Cedar pack already judges the same name at the same (normalised) address: family,
    // or the user's own chart.
    if exact_name && near == Nearness::SameHousehold {
        return None;
    }
    let rarity = text::name_rarity(patient_name).min(text::name_rarity(user_name));
    let place = if near == Nearness::SameHousehold {
        1.0
    } else {
        0.5
    };
    Some((0.5 * sim * rarity.max(0.7) + 0.5 * place, near, sim))
}

impl Detector for FamilyMatch {
    fn describe() -> Description {
        Description::new("family-match", env!("CARGO_PKG_VERSION"), &["family_fuzzy"])
            .needs(&[Fact::Names, Fact::Addresses])
            .schema(
                r#"{"type":"object","properties":{"name_threshold":{"type":"number"},"high_score":{"type":"number"},"medium_score":{"type":"number"}},"additionalProperties":false}"#,
            )
    }

    fn configure(config: &str) -> Result<Self, String> {
        let s: Settings = phiwatch_plugin_sdk::parse_config(config)?;
        if !(0.0..=1.0).contains(&s.name_threshold) {
            return Err(format!(
                "name_threshold {} is not within 0..1",
                s.name_threshold
            ));
        }
        Ok(FamilyMatch { s })
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        for a in &batch.accesses {
            if !a.relationships.is_empty() {
                continue;
            }
            let user = batch.user_of(a);
            let patient = batch.patient_of(a);
            if user.id.is_empty() {
                continue;
            }
            let Some((score, near, sim)) = assess(&self.s, user, patient) else {
                continue;
            };
            let severity = if score >= self.s.high_score {
                Severity::High
            } else if score >= self.s.medium_score {
                Severity::Medium
            } else {
                continue;
            };
            let place = match near {
                Nearness::SameHousehold => "at the user's home address",
                _ => "on the user's street",
            };
            out.push(
                Finding::new(
                    "family_fuzzy",
                    severity,
                    format!(
                        "User {} ({}, {}) opened the record of patient {}, whose family name closely matches the user's (similarity {sim:.2}) and who lives {place}, with no care relationship.",
                        user.id, batch.role_of(user), batch.department_of(user), patient.id
                    ),
                    a.id,
                )
                .with_score(score),
            );
        }
    }
}

phiwatch_plugin_sdk::export_detector!(FamilyMatch);

#[cfg(test)]
mod tests {
    use super::*;
    use phiwatch_plugin_sdk::testing::{access, batch_of};

    fn pair(user_name: &str, user_addr: &str, pt_name: &str, pt_addr: &str) -> Vec<Finding> {
        let mut d = FamilyMatch::configure("{}").unwrap();
        let a = access(1, "u1", "p1")
            .user(|u| {
                u.family_name = Some(user_name.into());
                u.address = Some(user_addr.into());
            })
            .patient(|p| {
                p.family_name = Some(pt_name.into());
                p.address = Some(pt_addr.into());
            });
        let mut out = Vec::new();
        d.detect(&batch_of(vec![a]), &mut out);
        out
    }

    #[test]
    fn spelling_variant_at_home_is_high() {
        let out = pair(
            "Okafor",
            "12 Oak Street, Springfield, 01101",
            "Okafour",
            "12 Oak St., Springfield, 01101",
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].severity, Severity::High);
        let out = pair(
            "Garcia-Lopez",
            "5 West Elm Avenue Apt 2, Riverton, 01102",
            "Lopez",
            "5 W Elm Ave #2, Riverton, 01102",
        );
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn what_it_leaves_alone() {
        // Exact match: the Cedar pack's rule reports it.
        assert!(pair(
            "Okafor",
            "12 Oak St, Springfield, 01101",
            "Okafor",
            "12 Oak St, Springfield, 01101"
        )
        .is_empty());
        // Same common name across town.
        assert!(pair(
            "Smith",
            "12 Oak St, Springfield, 01101",
            "Smyth",
            "80 Pine Rd, Springfield, 01101"
        )
        .is_empty());
        // Different names at the same address (a lodger): the neighbour rule's business.
        assert!(pair(
            "Okafor",
            "12 Oak St, Springfield, 01101",
            "Jones",
            "12 Oak St, Springfield, 01101"
        )
        .is_empty());
    }
}
