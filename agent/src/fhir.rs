//! The FHIR R4 data types phiwatch reads, deserialised with borrowed strings.
//!
//! Only the elements detection needs are declared; serde skips the rest (narrative `text`,
//! extensions) without allocating. Strings borrow from the input line unless they contain
//! escapes, which keeps decoding close to the cost of a raw JSON parse.

use serde::Deserialize;
use std::borrow::Cow;

pub type Str<'a> = Cow<'a, str>;

#[derive(Debug, Default, Deserialize)]
pub struct Coding<'a> {
    #[serde(borrow, default)]
    pub system: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub code: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub display: Option<Str<'a>>,
}

impl Coding<'_> {
    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CodeableConcept<'a> {
    #[serde(borrow, default)]
    pub coding: Vec<Coding<'a>>,
    #[serde(borrow, default)]
    pub text: Option<Str<'a>>,
}

impl CodeableConcept<'_> {
    pub fn has_code(&self, code: &str) -> bool {
        self.coding.iter().any(|c| c.code() == code)
    }

    /// The first code, else the text: the value a site's directory most likely keys on.
    pub fn first_code(&self) -> Option<&str> {
        self.coding
            .iter()
            .find_map(|c| c.code.as_deref())
            .or(self.text.as_deref())
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Identifier<'a> {
    #[serde(borrow, default)]
    pub system: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub value: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Reference<'a> {
    #[serde(borrow, default)]
    pub reference: Option<Str<'a>>,
    #[serde(borrow, default, rename = "type")]
    pub type_: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub identifier: Option<Identifier<'a>>,
    #[serde(borrow, default)]
    pub display: Option<Str<'a>>,
}

impl Reference<'_> {
    /// The id this reference points at when it targets `resource_type`
    /// (`Patient/123`, `https://ehr/fhir/Patient/123/_history/2`, or a typed identifier).
    pub fn id_of(&self, resource_type: &str) -> Option<&str> {
        if let Some(r) = self.reference.as_deref() {
            return reference_id(r, resource_type);
        }
        if self.type_.as_deref() == Some(resource_type) {
            return self.identifier.as_ref()?.value.as_deref();
        }
        None
    }

    /// The resource type and id of a relative or absolute literal reference.
    pub fn target(&self) -> Option<(&str, &str)> {
        let r = self.reference.as_deref()?;
        let r = r.split("/_history/").next().unwrap_or(r);
        let mut parts = r.rsplitn(3, '/');
        let id = parts.next()?;
        let ty = parts.next()?;
        Some((ty, id))
    }
}

/// `Patient/123` → `123` when `r` targets `resource_type`; tolerates absolute URLs and `_history`.
pub fn reference_id<'r>(r: &'r str, resource_type: &str) -> Option<&'r str> {
    let r = r.split("/_history/").next().unwrap_or(r);
    let mut parts = r.rsplitn(3, '/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (ty == resource_type && !id.is_empty()).then_some(id)
}

#[derive(Debug, Default, Deserialize)]
pub struct Period<'a> {
    #[serde(borrow, default)]
    pub start: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub end: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HumanName<'a> {
    #[serde(borrow, default, rename = "use")]
    pub use_: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub family: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Address<'a> {
    #[serde(borrow, default, rename = "use")]
    pub use_: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub line: Vec<Str<'a>>,
    #[serde(borrow, default)]
    pub city: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub state: Option<Str<'a>>,
    #[serde(borrow, default, rename = "postalCode")]
    pub postal_code: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Meta<'a> {
    #[serde(borrow, default)]
    pub security: Vec<Coding<'a>>,
}

/// The family name to compare: the official name if marked, else the first one.
pub fn family_name<'n>(names: &'n [HumanName<'_>]) -> Option<&'n str> {
    names
        .iter()
        .find(|n| n.use_.as_deref() == Some("official"))
        .or_else(|| names.first())
        .and_then(|n| n.family.as_deref())
}

/// The home address if marked, else the first one.
pub fn home_address<'n, 'a>(addresses: &'n [Address<'a>]) -> Option<&'n Address<'a>> {
    addresses
        .iter()
        .find(|a| a.use_.as_deref() == Some("home"))
        .or_else(|| addresses.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_ids() {
        assert_eq!(reference_id("Patient/p1", "Patient"), Some("p1"));
        assert_eq!(
            reference_id("Patient/example/_history/1", "Patient"),
            Some("example")
        );
        assert_eq!(
            reference_id("https://ehr.example/fhir/Patient/p9", "Patient"),
            Some("p9")
        );
        assert_eq!(reference_id("Practitioner/p1", "Patient"), None);
        assert_eq!(reference_id("p1", "Patient"), None);
        assert_eq!(reference_id("Patient/", "Patient"), None);
    }
}
