//! Detection settings (`rules/detection.toml`): time zone, business hours, relationship windows.

use crate::time::{MS_PER_DAY, MS_PER_HOUR};
use chrono::Weekday;
use chrono_tz::Tz;
use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

/// The shipped defaults, embedded so `scan` and `demo` run without any file.
pub const DEFAULT_TOML: &str = include_str!("../../rules/detection.toml");

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    timezone: Option<String>,
    business_hours: Option<[u32; 2]>,
    business_days: Option<Vec<String>>,
    relationship_lead_hours: Option<u32>,
    relationship_lag_days: Option<u32>,
    open_encounter_days: Option<u32>,
    break_glass_window_hours: Option<u32>,
    business_need_days: Option<u32>,
    deceased_after_days: Option<u32>,
    clinical_roles: Option<Vec<String>>,
    business_need_roles: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub timezone: Tz,
    pub business_start_hour: u32,
    pub business_end_hour: u32,
    pub business_days: Vec<Weekday>,
    pub relationship_lead_ms: i64,
    pub relationship_lag_ms: i64,
    pub open_encounter_ms: i64,
    pub break_glass_window_ms: i64,
    pub business_need_ms: i64,
    pub deceased_after_days: i64,
    pub clinical_roles: Vec<String>,
    pub business_need_roles: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::parse(DEFAULT_TOML, "<embedded rules/detection.toml>")
            .expect("embedded detection settings are valid")
    }
}

impl Settings {
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Settings::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, SettingsError> {
        let invalid = |message: String| SettingsError::Invalid {
            path: path.to_owned(),
            message,
        };
        // toml's message already names line and column and quotes the offending line.
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let d = Fallback::default();
        let timezone = match raw.timezone {
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| invalid(format!("timezone {name:?} is not an IANA time zone name")))?,
            None => d.timezone,
        };
        let [start, end] = raw.business_hours.unwrap_or([7, 19]);
        if start >= end || end > 24 {
            return Err(invalid(format!(
                "business_hours = [{start}, {end}]: expected [start, end) with start < end <= 24"
            )));
        }
        let business_days = match raw.business_days {
            Some(days) => days
                .iter()
                .map(|d| {
                    d.parse::<Weekday>().map_err(|_| {
                        invalid(format!("business_days: {d:?} is not a weekday (Mon..Sun)"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => d.business_days,
        };
        let lower = |v: Vec<String>| v.into_iter().map(|s| s.to_ascii_lowercase()).collect();
        Ok(Settings {
            timezone,
            business_start_hour: start,
            business_end_hour: end,
            business_days,
            relationship_lead_ms: i64::from(raw.relationship_lead_hours.unwrap_or(24))
                * MS_PER_HOUR,
            relationship_lag_ms: i64::from(raw.relationship_lag_days.unwrap_or(30)) * MS_PER_DAY,
            open_encounter_ms: i64::from(raw.open_encounter_days.unwrap_or(30)) * MS_PER_DAY,
            break_glass_window_ms: i64::from(raw.break_glass_window_hours.unwrap_or(24))
                * MS_PER_HOUR,
            business_need_ms: i64::from(raw.business_need_days.unwrap_or(90)) * MS_PER_DAY,
            deceased_after_days: i64::from(raw.deceased_after_days.unwrap_or(30)),
            clinical_roles: lower(raw.clinical_roles.unwrap_or(d.clinical_roles)),
            business_need_roles: lower(raw.business_need_roles.unwrap_or(d.business_need_roles)),
        })
    }

    pub fn is_clinical(&self, role: &str) -> bool {
        self.clinical_roles
            .iter()
            .any(|r| r.eq_ignore_ascii_case(role))
    }

    pub fn has_business_need_role(&self, role: &str) -> bool {
        self.business_need_roles
            .iter()
            .any(|r| r.eq_ignore_ascii_case(role))
    }
}

/// Defaults for keys a site's file leaves out.
struct Fallback {
    timezone: Tz,
    business_days: Vec<Weekday>,
    clinical_roles: Vec<String>,
    business_need_roles: Vec<String>,
}

impl Default for Fallback {
    fn default() -> Self {
        use Weekday::*;
        Fallback {
            timezone: Tz::UTC,
            business_days: vec![Mon, Tue, Wed, Thu, Fri],
            clinical_roles: ["doctor", "physician", "nurse", "pharmacist", "therapist"]
                .map(String::from)
                .to_vec(),
            business_need_roles: ["billing", "registration", "him"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_load() {
        let s = Settings::default();
        assert_eq!(s.timezone, chrono_tz::America::New_York);
        assert!(s.is_clinical("Nurse"));
        assert!(!s.is_clinical("billing"));
        assert_eq!(s.deceased_after_days, 30);
    }

    #[test]
    fn unknown_keys_are_rejected_with_line() {
        let err = Settings::parse("timezone = \"UTC\"\nshift_lenght = 3\n", "d.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("d.toml: "), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("shift_lenght"), "{msg}");
    }

    #[test]
    fn bad_values_are_explained() {
        let msg = Settings::parse("timezone = \"Mars/Olympus\"", "d.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("Mars/Olympus"), "{msg}");
        let msg = Settings::parse("business_hours = [19, 7]", "d.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("start < end"), "{msg}");
        let msg = Settings::parse("business_days = [\"Funday\"]", "d.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("Funday"), "{msg}");
    }
}
