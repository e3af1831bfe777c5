//! {{name}}: break-the-glass on a patient with no encounter near the access (replace with
//! your rule). Build: `cargo build --release --target wasm32-wasip2`; try:
//! `phiwatch plugin test target/wasm32-wasip2/release/{{crate}}.wasm --cases cases.toml`.

use phiwatch_plugin_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Settings {}

pub struct Plugin;

impl Detector for Plugin {
    fn describe() -> Description {
        Description::new("{{name}}", env!("CARGO_PKG_VERSION"), &["{{category}}"])
    }

    fn configure(config: &str) -> Result<Self, String> {
        let _settings: Settings = phiwatch_plugin_sdk::parse_config(config)?;
        Ok(Plugin)
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        for a in &batch.accesses {
            if a.break_glass && !a.encounter_near {
                let (user, patient) = (batch.user_of(a), batch.patient_of(a));
                out.push(Finding::new(
                    "{{category}}",
                    Severity::Medium,
                    format!(
                        "User {} used break-the-glass on patient {} with no encounter near the access.",
                        user.id, patient.id
                    ),
                    a.id,
                ));
            }
        }
    }
}

phiwatch_plugin_sdk::export_detector!(Plugin);
