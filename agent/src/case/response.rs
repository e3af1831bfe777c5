//! `rules/response.toml`: the organization (for letters and the HHS report) and when deadline
//! reminders go out.

use super::RulesError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub organization: Organization,
    #[serde(default)]
    pub reminders: Reminders,
    pub letter_template: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    pub name: String,
    pub address: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub website: Option<String>,
    #[serde(default = "provider")]
    pub entity_type: String,
}

fn provider() -> String {
    "Healthcare Provider".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reminders {
    #[serde(default = "default_days")]
    pub days_before: Vec<u32>,
    #[serde(default)]
    pub receivers: Vec<String>,
    #[serde(default)]
    pub escalate_to: Vec<String>,
}

impl Default for Reminders {
    fn default() -> Self {
        Reminders {
            days_before: default_days(),
            receivers: Vec::new(),
            escalate_to: Vec::new(),
        }
    }
}

fn default_days() -> Vec<u32> {
    vec![30, 14, 7, 2]
}

pub const EMBEDDED: &str = include_str!("../../../rules/response.toml");
pub const LETTER: &str = include_str!("../../../rules/letter-template.txt");

impl Response {
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let r: Response = toml::from_str(text).map_err(|e| RulesError::Invalid(e.to_string()))?;
        let o = &r.organization;
        if o.phone.is_none()
            && o.email.is_none()
            && o.website.is_none()
            && o.address.trim().is_empty()
        {
            return Err(RulesError::Invalid("organization: 45 CFR 164.404(c)(1)(E) needs a toll-free number, email, website or postal address".into()));
        }
        Ok(r)
    }

    pub fn load(path: &Path) -> Result<Self, RulesError> {
        RulesError::load(path, Self::parse)
    }

    pub fn letter(&self) -> Result<String, RulesError> {
        match &self.letter_template {
            Some(p) => RulesError::load(p, |text| Ok(text.to_owned())),
            None => Ok(LETTER.to_owned()),
        }
    }

    pub fn contact(&self) -> String {
        let o = &self.organization;
        let mut lines = Vec::new();
        if let Some(p) = &o.phone {
            lines.push(format!("Call us toll-free at {p}."));
        }
        if let Some(e) = &o.email {
            lines.push(format!("Write to {e}."));
        }
        if let Some(w) = &o.website {
            lines.push(format!("Visit {w}."));
        }
        lines.push(format!("Or write to us at {}.", o.address));
        lines.join("\n")
    }
}
