//! The phiwatch plugin SDK: implement [`Detector`] and call [`export_detector!`].
//!
//! ```ignore
//! use phiwatch_plugin_sdk::prelude::*;
//!
//! struct NightExports;
//!
//! impl Detector for NightExports {
//!     fn describe() -> Description { Description::new("night-exports", "0.1.0", &["night_export"]) }
//!     fn configure(_config: &str) -> Result<Self, String> { Ok(NightExports) }
//!     fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
//!         for a in &batch.accesses {
//!             if a.action == Action::Export && a.local_hour < 6 {
//!                 out.push(Finding::new("night_export", Severity::Medium, "Export at night.", a.id));
//!             }
//!         }
//!     }
//! }
//!
//! phiwatch_plugin_sdk::export_detector!(NightExports);
//! ```
//!
//! Everything but the host calls also compiles for the build machine, so a plugin's logic is
//! unit-tested with plain `cargo test`; there [`state`] is an in-memory map.

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code: state-set's lowering takes 8 words
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "detector",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "phiwatch_plugin_sdk::bindings",
    });
}

pub mod host;
pub mod state;
pub mod stats;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod text;

pub use bindings::phiwatch::detector::types::{
    Access, Action, Batch, Description, Fact, Finding, Patient, Relationships, Severity, User,
};

pub mod prelude {
    pub use crate::{
        Access, Action, Batch, BatchExt, Description, Detector, Fact, Finding, Patient,
        Relationships, Severity, User,
    };
}

/// A detection plugin. One value lives per plugin instance; `detect` is called with batches
/// in event-time order.
pub trait Detector: Sized + 'static {
    fn describe() -> Description;
    /// `config` is the plugin's settings as a JSON object (`{}` when none are given).
    fn configure(config: &str) -> Result<Self, String>;
    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>);
}

impl Description {
    pub fn new(name: &str, version: &str, categories: &[&str]) -> Self {
        Description {
            name: name.to_owned(),
            version: version.to_owned(),
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
            config_schema: "{}".to_owned(),
            needs: Vec::new(),
        }
    }

    pub fn needs(mut self, facts: &[Fact]) -> Self {
        self.needs = facts.to_vec();
        self
    }

    pub fn schema(mut self, json_schema: &str) -> Self {
        self.config_schema = json_schema.to_owned();
        self
    }
}

impl Finding {
    pub fn new(
        category: &str,
        severity: Severity,
        explanation: impl Into<String>,
        event: u64,
    ) -> Self {
        Finding {
            category: category.to_owned(),
            severity,
            explanation: explanation.into(),
            events: vec![event],
            score: None,
        }
    }

    pub fn with_events(mut self, events: impl IntoIterator<Item = u64>) -> Self {
        self.events = events.into_iter().collect();
        self
    }

    pub fn with_score(mut self, score: f64) -> Self {
        self.score = Some(score.clamp(0.0, 1.0));
        self
    }
}

/// Lookups from an access to the user and patient it names, and of role and department names.
pub trait BatchExt {
    fn user_of(&self, a: &Access) -> &User;
    fn patient_of(&self, a: &Access) -> &Patient;
    /// A name from `names` ("" when out of range).
    fn name(&self, ix: u32) -> &str;
    fn role_of(&self, u: &User) -> &str {
        self.name(u.role)
    }
    fn department_of(&self, u: &User) -> &str {
        self.name(u.department)
    }
    /// Whether the patient has encounters in the user's department.
    fn in_patient_departments(&self, u: &User, p: &Patient) -> bool {
        u.department != 0 && p.departments.contains(&u.department)
    }
}

impl BatchExt for Batch {
    fn user_of(&self, a: &Access) -> &User {
        &self.users[a.user as usize]
    }
    fn patient_of(&self, a: &Access) -> &Patient {
        &self.patients[a.patient as usize]
    }
    fn name(&self, ix: u32) -> &str {
        self.names.get(ix as usize).map_or("", String::as_str)
    }
}

/// Parses a plugin's JSON settings into `T`, with the field at fault in the error.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    let config = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(config).map_err(|e| format!("plugin settings: {e}"))
}

#[doc(hidden)]
pub mod runtime {
    use super::*;
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        static DETECTOR: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn configure<D: Detector>(config: &str) -> Result<(), String> {
        let d = D::configure(config)?;
        DETECTOR.with(|slot| *slot.borrow_mut() = Some(Box::new(d)));
        Ok(())
    }

    pub fn detect<D: Detector>(batch: Batch) -> Vec<Finding> {
        if let Some(t) = batch.accesses.iter().map(|a| a.time_ms).max() {
            crate::host::observe_time(t);
        }
        let mut out = Vec::new();
        DETECTOR.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_none() {
                // The host always configures first; a plugin called without settings uses its defaults.
                match D::configure("{}") {
                    Ok(d) => *slot = Some(Box::new(d)),
                    Err(e) => panic!("detect called before configure, and defaults fail: {e}"),
                }
            }
            if let Some(d) = slot.as_mut().and_then(|d| d.downcast_mut::<D>()) {
                d.detect(&batch, &mut out);
            }
        });
        out
    }
}

/// Exports a [`Detector`] as the plugin's component interface.
#[macro_export]
macro_rules! export_detector {
    ($detector:ty) => {
        #[doc(hidden)]
        pub struct __PhiwatchPlugin;

        impl $crate::bindings::Guest for __PhiwatchPlugin {
            fn describe() -> $crate::Description {
                <$detector as $crate::Detector>::describe()
            }
            fn configure(config: String) -> Result<(), String> {
                $crate::runtime::configure::<$detector>(&config)
            }
            fn detect(batch: $crate::Batch) -> Vec<$crate::Finding> {
                $crate::runtime::detect::<$detector>(batch)
            }
        }

        $crate::bindings::__export_world!(__PhiwatchPlugin with_types_in $crate::bindings);
    };
}
