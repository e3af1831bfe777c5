//! The tutorial plugin (plugins/README.md): exports and prints of a record between midnight
//! and 6 in the morning. Also the "trivial plugin" of `phiwatch bench --plugins`.

use phiwatch_plugin_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    /// Local hour (exclusive) until which an export counts as at night.
    until_hour: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { until_hour: 6 }
    }
}

pub struct NightExport {
    until_hour: u8,
}

impl Detector for NightExport {
    fn describe() -> Description {
        Description::new("night-export", env!("CARGO_PKG_VERSION"), &["night_export"])
    }

    fn configure(config: &str) -> Result<Self, String> {
        let s: Settings = phiwatch_plugin_sdk::parse_config(config)?;
        Ok(NightExport {
            until_hour: s.until_hour,
        })
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        for a in &batch.accesses {
            if night_export(a, self.until_hour) {
                let user = batch.user_of(a);
                out.push(Finding::new(
                    "night_export",
                    Severity::Medium,
                    format!(
                        "User {} exported patient {}'s record at {}:00.",
                        user.id,
                        batch.patient_of(a).id,
                        a.local_hour
                    ),
                    a.id,
                ));
            }
        }
    }
}

/// The whole rule, shared with the native baseline of the benchmark.
pub fn night_export(a: &Access, until_hour: u8) -> bool {
    matches!(a.action, Action::Export | Action::Print) && a.local_hour < until_hour
}

phiwatch_plugin_sdk::export_detector!(NightExport);

#[cfg(test)]
mod tests {
    use super::*;
    use phiwatch_plugin_sdk::testing::{access, batch_of};

    #[test]
    fn flags_night_exports_only() {
        let mut d = NightExport::configure("{}").unwrap();
        let night = access(2 * 3_600_000, "u1", "p1").with(|a| a.action = Action::Export);
        let day = access(10 * 3_600_000, "u1", "p2").with(|a| a.action = Action::Export);
        let view = access(3 * 3_600_000, "u1", "p3");
        let mut out = Vec::new();
        d.detect(&batch_of(vec![night, day, view]), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].explanation.contains("p1"));
    }
}
