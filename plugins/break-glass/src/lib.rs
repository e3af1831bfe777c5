//! Break-the-glass misuse: the same user breaking the glass on the same patient again and
//! again, and break-the-glass by a user whose peers (same role and department) almost never
//! need it. Break-the-glass with no emergency encounter at all is the Cedar pack's job.

use phiwatch_plugin_sdk::prelude::*;
use phiwatch_plugin_sdk::state;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const HOUR: i64 = 3_600_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Break-the-glass events by one user on one patient within `repeat_window_hours` that
    /// count as repeated.
    pub repeat_count: usize,
    pub repeat_window_hours: i64,
    /// A peer group whose break-the-glass rate is below this (per 1,000 accesses) rarely needs it.
    pub rare_per_thousand: f64,
    /// Accesses a peer group needs before its rate is trusted.
    pub peer_warmup_accesses: u64,
    /// A user with at most this many earlier break-the-glass events is new to it.
    pub user_prior_max: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            repeat_count: 3,
            repeat_window_hours: 24,
            rare_per_thousand: 2.0,
            peer_warmup_accesses: 1000,
            user_prior_max: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Rate {
    accesses: u64,
    break_glass: u64,
}

pub struct BreakGlass {
    s: Settings,
    peers: HashMap<String, Rate>,
    /// Event hour of the last time `peers` was saved.
    saved_hour: i64,
}

impl BreakGlass {
    fn pair_key(user: &str, patient: &str) -> String {
        format!("pair/{user}/{patient}")
    }
}

impl Detector for BreakGlass {
    fn describe() -> Description {
        Description::new("break-glass", env!("CARGO_PKG_VERSION"), &["break_glass_misuse"]).schema(
            r#"{"type":"object","properties":{"repeat_count":{"type":"integer"},"repeat_window_hours":{"type":"integer"},"rare_per_thousand":{"type":"number"},"peer_warmup_accesses":{"type":"integer"},"user_prior_max":{"type":"integer"}},"additionalProperties":false}"#,
        )
    }

    fn configure(config: &str) -> Result<Self, String> {
        Ok(BreakGlass {
            s: phiwatch_plugin_sdk::parse_config(config)?,
            peers: state::get_json("peers").unwrap_or_default(),
            saved_hour: i64::MIN,
        })
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        for a in &batch.accesses {
            let user = batch.user_of(a);
            let patient = batch.patient_of(a);
            // Peers: same role and department; while that group is too small to trust, the
            // department, then the role.
            let (role, department) = (batch.role_of(user), batch.department_of(user));
            let groups = [
                format!("{role}|{department}"),
                format!("|{department}"),
                format!("{role}|"),
            ];
            // The rate before this access: the question is whether peers needed it before.
            let before = groups
                .iter()
                .map(|g| self.peers.get(g).copied().unwrap_or_default())
                .find(|r| r.accesses >= self.s.peer_warmup_accesses)
                .unwrap_or_default();
            for g in groups {
                let rate = self.peers.entry(g).or_default();
                rate.accesses += 1;
                rate.break_glass += u64::from(a.break_glass);
            }
            if !a.break_glass {
                continue;
            }

            let key = BreakGlass::pair_key(&user.id, &patient.id);
            let mut times: Vec<i64> = state::get_json(&key).unwrap_or_default();
            let since = a.time_ms - self.s.repeat_window_hours * HOUR;
            times.retain(|&t| t > since);
            times.push(a.time_ms);
            let _ = state::set_json(&key, &times);

            let prior_key = format!("user/{}", user.id);
            let prior: u64 = state::get_json(&prior_key).unwrap_or(0);
            let _ = state::set_json(&prior_key, &(prior + 1));

            if times.len() >= self.s.repeat_count {
                out.push(
                    Finding::new(
                        "break_glass_misuse",
                        Severity::High,
                        format!(
                            "User {} ({}, {}) broke the glass on patient {}'s record {} times within {} hours; emergency access is for a one-off emergency, not a standing way in.",
                            user.id, role, department, patient.id, times.len(), self.s.repeat_window_hours
                        ),
                        a.id,
                    )
                    .with_score(1.0),
                );
                continue;
            }
            let per_thousand = 1000.0 * before.break_glass as f64 / before.accesses.max(1) as f64;
            if before.accesses >= self.s.peer_warmup_accesses
                && per_thousand < self.s.rare_per_thousand
                && prior <= self.s.user_prior_max
            {
                out.push(
                    Finding::new(
                        "break_glass_misuse",
                        Severity::Medium,
                        format!(
                            "User {} ({}, {}) broke the glass on patient {}'s record; users in this role and department break the glass in {per_thousand:.2} of 1,000 accesses and this user had not before.",
                            user.id, role, department, patient.id
                        ),
                        a.id,
                    )
                    .with_score(0.7),
                );
            }
        }
        let hour = batch
            .accesses
            .last()
            .map_or(self.saved_hour, |a| a.time_ms.div_euclid(HOUR));
        if hour != self.saved_hour {
            self.saved_hour = hour;
            let _ = state::set_json("peers", &self.peers);
        }
    }
}

phiwatch_plugin_sdk::export_detector!(BreakGlass);

#[cfg(test)]
mod tests {
    use super::*;
    use phiwatch_plugin_sdk::testing::{access, batch_of};

    fn radiology(t: i64, user: &str, patient: &str) -> phiwatch_plugin_sdk::testing::TestAccess {
        access(t, user, patient).department("Radiology")
    }

    #[test]
    fn third_break_glass_on_one_patient_is_high() {
        state::clear_for_tests();
        let mut d = BreakGlass::configure("{}").unwrap();
        let mut out = Vec::new();
        let b: Vec<_> = (0..3)
            .map(|i| {
                access(i * 4 * HOUR, "ed1", "p1")
                    .department("Emergency")
                    .with(|a| a.break_glass = true)
            })
            .collect();
        d.detect(&batch_of(b), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].severity, Severity::High);
        // A fourth, 30 hours after the first two, still counts only the window.
        let late = vec![access(30 * HOUR, "ed1", "p1").with(|a| a.break_glass = true)];
        let mut out = Vec::new();
        d.detect(&batch_of(late), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn first_break_glass_in_a_group_that_never_needs_it() {
        state::clear_for_tests();
        let mut d = BreakGlass::configure(r#"{"peer_warmup_accesses": 100}"#).unwrap();
        let mut out = Vec::new();
        let mut b: Vec<_> = (0..200)
            .map(|i| radiology(i * 1000, &format!("r{}", i % 10), &format!("p{i}")))
            .collect();
        b.push(radiology(300_000, "r1", "px").with(|a| a.break_glass = true));
        d.detect(&batch_of(b), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].severity, Severity::Medium);
        // Emergency staff break the glass routinely: no finding.
        let mut out = Vec::new();
        let mut e: Vec<_> = (0..200)
            .map(|i| {
                access(i * 1000, "e1", &format!("q{i}"))
                    .department("Emergency")
                    .with(|a| a.break_glass = i % 20 == 0)
            })
            .collect();
        e.push(
            access(400_000, "e2", "qx")
                .department("Emergency")
                .with(|a| a.break_glass = true),
        );
        d.detect(&batch_of(e), &mut out);
        assert!(
            out.iter()
                .all(|f| f.severity != Severity::Medium || !f.explanation.contains("e2")),
            "{out:?}"
        );
    }
}
