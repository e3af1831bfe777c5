//! Identity resolution: every way a log or a feed names a person, reduced to lookup keys.
//!
//! Real audit logs name users by EHR login, NPI or directory account, and patients by MRN;
//! FHIR writes literal references (`Practitioner/x`, versioned, absolute), conditional ones
//! (`Practitioner?identifier=system|value`, as Synthea does) and identifiers; HL7 v2 writes
//! CX and XCN strings (`MRN123^^^HOSP^MR`). Each person in the context store has one
//! canonical id and any number of *aliases*: `system|value` keys and, where it names one
//! person only, the bare value. An alias that names two people is *ambiguous*: it resolves
//! to nobody (the access is judged as unresolved) and is reported, never silently picked.

use ahash::AHashMap;

/// What an alias names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    One(u32),
    /// Two or more people share it: it resolves to nobody.
    Ambiguous,
}

/// The result of resolving a name against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Found(u32),
    Ambiguous,
    Missing,
}

/// Alias keys of one kind of person (users or patients).
#[derive(Debug, Default)]
pub struct Aliases {
    map: AHashMap<Box<str>, Alias>,
    /// Keys whose [`loose_form`] differs from them, by that form: for names a log writes
    /// otherwise than the feed (`JSMITH` for `jsmith`, `123987` for `000123987`). Only
    /// consulted when no key matches as written.
    loose: AHashMap<Box<str>, Alias>,
    /// Ambiguous keys, for the coverage report (the first few).
    pub ambiguous: Vec<String>,
    pub ambiguous_count: usize,
}

const MAX_LISTED: usize = 50;

impl Aliases {
    /// Records that `key` names `ix`. A key already naming someone else becomes ambiguous.
    pub fn add(&mut self, key: &str, ix: u32) {
        let key = key.trim();
        if key.is_empty() {
            return;
        }
        if name(&mut self.map, key, ix) {
            self.ambiguous_count += 1;
            if self.ambiguous.len() < MAX_LISTED {
                self.ambiguous.push(key.to_owned());
            }
        }
        self.add_loose(key, ix);
    }

    /// Records that `key`, written loosely, names `ix` (a canonical id, which the exact
    /// id index already holds as written).
    pub fn add_loose(&mut self, key: &str, ix: u32) {
        let l = loose_form(key.trim());
        if !l.is_empty() && l != key.trim() {
            name(&mut self.loose, &l, ix);
        }
    }

    /// Points every key naming `from` at `to` (a merge of two records of one person).
    pub fn redirect(&mut self, from: u32, to: u32) {
        for a in self.map.values_mut().chain(self.loose.values_mut()) {
            if *a == Alias::One(from) {
                *a = Alias::One(to);
            }
        }
    }

    /// Who a key in its [`loose_form`] names: a key written so, or keys written otherwise
    /// with that form. Two people make it ambiguous.
    pub fn get_loose(&self, loose: &str) -> Option<Alias> {
        join(self.map.get(loose).copied(), self.loose.get(loose).copied())
    }

    /// Every key that names exactly one person, with that person.
    pub fn unique(&self) -> impl Iterator<Item = (&str, u32)> {
        self.map.iter().filter_map(|(k, a)| match a {
            Alias::One(ix) => Some((&**k, *ix)),
            Alias::Ambiguous => None,
        })
    }

    pub fn get(&self, key: &str) -> Option<Alias> {
        self.map.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Records `key` → `ix` in `map`; true when that made the key newly ambiguous.
fn name(map: &mut AHashMap<Box<str>, Alias>, key: &str, ix: u32) -> bool {
    match map.get_mut(key) {
        None => {
            map.insert(key.into(), Alias::One(ix));
            false
        }
        Some(Alias::One(other)) if *other == ix => false,
        Some(a @ Alias::One(_)) => {
            *a = Alias::Ambiguous;
            true
        }
        Some(Alias::Ambiguous) => false,
    }
}

/// Two answers for one name: the same person, or ambiguous.
pub fn join(a: Option<Alias>, b: Option<Alias>) -> Option<Alias> {
    match (a, b) {
        (Some(x), Some(y)) if x == y => Some(x),
        (Some(_), Some(_)) => Some(Alias::Ambiguous),
        (x, None) | (None, x) => x,
    }
}

/// A name as systems that disagree on its spelling all write it: letters in lower case
/// (EHR and directory logins are case-insensitive, and extracts upper-case them) and an
/// all-digit value without its leading zeros (an MRN or employee id padded by one system and
/// not by another, or stripped by a spreadsheet). In `system|value` both parts are folded.
pub fn loose_form(key: &str) -> String {
    let (system, value) = match key.rsplit_once('|') {
        Some((s, v)) => (Some(s.trim()), v.trim()),
        None => (None, key.trim()),
    };
    let value = if value.len() > 1 && value.bytes().all(|b| b.is_ascii_digit()) {
        match value.trim_start_matches('0') {
            "" => "0",
            v => v,
        }
    } else {
        value
    };
    match system {
        Some(s) => format!("{}|{}", s.to_lowercase(), value.to_lowercase()),
        None => value.to_lowercase(),
    }
}

/// The alias keys an identifier registers: `system|value`, and the bare value.
pub fn identifier_keys(system: Option<&str>, value: &str) -> [Option<String>; 2] {
    let value = value.trim();
    if value.is_empty() {
        return [None, None];
    }
    let sys = system.map(str::trim).filter(|s| !s.is_empty());
    [sys.map(|s| format!("{s}|{value}")), Some(value.to_owned())]
}

/// How to look a name up, most specific first: each is `Id` (a canonical id) or `Alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Id(String),
    Alias(String),
}

/// The keys of `raw`, a user or patient as an access log or a reference writes it.
///
/// - `Practitioner/x`, `https://ehr/fhir/Patient/x/_history/2`: the id `x`;
/// - `PractitionerRole/r`: the role's alias (it resolves to the practitioner holding it);
/// - `Practitioner?identifier=system|value`, `system|value`: that alias, then the bare value;
/// - `id^check^scheme^authority^type` (HL7 CX/XCN): `authority|id`, then `id`;
/// - anything else: the id, then the alias of that text.
pub fn keys(raw: &str) -> Vec<Key> {
    let raw = raw.trim();
    let mut out = Vec::with_capacity(3);
    if raw.is_empty() {
        return out;
    }
    // Conditional reference.
    if let Some((_, query)) = raw.split_once("?identifier=") {
        let query = query.split('&').next().unwrap_or(query);
        push_identifier(&mut out, &percent_decode(query));
        return out;
    }
    // Literal reference (relative or absolute, maybe versioned).
    let path = raw.split("/_history/").next().unwrap_or(raw);
    let mut parts = path.rsplitn(3, '/');
    if let (Some(id), Some(ty)) = (parts.next(), parts.next()) {
        if is_resource_type(ty) && !id.is_empty() {
            if ty == "PractitionerRole" {
                out.push(Key::Alias(format!("PractitionerRole/{id}")));
            } else {
                // The EHR's resource id; a crosswalk or an ADT feed may know it as an alias.
                out.push(Key::Id(id.to_owned()));
                out.push(Key::Alias(id.to_owned()));
            }
            return out;
        }
    }
    // HL7 v2 CX / XCN: ID ^ (check digit | family) ^ ... ^ assigning authority ^ type.
    if raw.contains('^') {
        let comps: Vec<&str> = raw.split('^').collect();
        let id = comps[0].trim();
        if !id.is_empty() {
            // CX puts the assigning authority in component 4, XCN in component 9.
            for at in [3, 8] {
                if let Some(auth) = comps
                    .get(at)
                    .map(|a| hd_namespace(a))
                    .filter(|a| !a.is_empty())
                {
                    out.push(Key::Alias(format!("{auth}|{id}")));
                }
            }
            out.push(Key::Id(id.to_owned()));
            out.push(Key::Alias(id.to_owned()));
        }
        return out;
    }
    if raw.contains('|') {
        push_identifier(&mut out, raw);
        return out;
    }
    out.push(Key::Id(raw.to_owned()));
    out.push(Key::Alias(raw.to_owned()));
    out
}

fn push_identifier(out: &mut Vec<Key>, sys_value: &str) {
    match sys_value.rsplit_once('|') {
        Some((sys, value)) => {
            let value = value.trim();
            if value.is_empty() {
                return;
            }
            if !sys.trim().is_empty() {
                out.push(Key::Alias(format!("{}|{value}", sys.trim())));
            }
            out.push(Key::Id(value.to_owned()));
            out.push(Key::Alias(value.to_owned()));
        }
        None => {
            out.push(Key::Id(sys_value.trim().to_owned()));
            out.push(Key::Alias(sys_value.trim().to_owned()));
        }
    }
}

/// The namespace of an HL7 HD (`HOSP&1.2.3&ISO`): its namespace id, else its universal id.
pub fn hd_namespace(hd: &str) -> &str {
    let mut parts = hd.split('&');
    let ns = parts.next().unwrap_or("").trim();
    if !ns.is_empty() {
        return ns;
    }
    parts.next().unwrap_or("").trim()
}

fn is_resource_type(t: &str) -> bool {
    matches!(
        t,
        "Practitioner" | "PractitionerRole" | "Patient" | "Person" | "RelatedPerson" | "Device"
    )
}

/// `%7C` and friends, as conditional references are written in URLs.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &str) -> Vec<String> {
        keys(raw)
            .into_iter()
            .map(|k| match k {
                Key::Id(s) => format!("id:{s}"),
                Key::Alias(s) => format!("alias:{s}"),
            })
            .collect()
    }

    #[test]
    fn reference_forms() {
        assert_eq!(ids("Practitioner/pr-1"), ["id:pr-1", "alias:pr-1"]);
        assert_eq!(ids("Patient/x/_history/1"), ["id:x", "alias:x"]);
        assert_eq!(
            ids("https://ehr.example.org/fhir/Patient/x"),
            ["id:x", "alias:x"]
        );
        assert_eq!(ids("PractitionerRole/r7"), ["alias:PractitionerRole/r7"]);
        assert_eq!(
            ids("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999941"),
            [
                "alias:http://hl7.org/fhir/sid/us-npi|9999941",
                "id:9999941",
                "alias:9999941"
            ]
        );
        assert_eq!(
            ids("Patient?identifier=urn:oid:1.2.3%7CMRN-7"),
            ["alias:urn:oid:1.2.3|MRN-7", "id:MRN-7", "alias:MRN-7"]
        );
    }

    #[test]
    fn identifiers_and_hl7_strings() {
        assert_eq!(
            ids("urn:ehr:login|jsmith42"),
            [
                "alias:urn:ehr:login|jsmith42",
                "id:jsmith42",
                "alias:jsmith42"
            ]
        );
        assert_eq!(ids("jsmith42"), ["id:jsmith42", "alias:jsmith42"]);
        assert_eq!(
            ids("MRN123^^^HOSP^MR"),
            ["alias:HOSP|MRN123", "id:MRN123", "alias:MRN123"]
        );
        assert_eq!(
            ids("MRN123^^^&1.2.840.1&ISO^MR"),
            ["alias:1.2.840.1|MRN123", "id:MRN123", "alias:MRN123"]
        );
        // XCN: id ^ family ^ given ^ ... ^ assigning authority (component 9).
        assert_eq!(
            ids("1234^Jones^Ann^^^^^^NPI"),
            ["alias:NPI|1234", "id:1234", "alias:1234"]
        );
    }

    #[test]
    fn an_alias_naming_two_people_is_ambiguous() {
        let mut a = Aliases::default();
        a.add("urn:login|amy", 1);
        a.add("amy", 1);
        a.add("amy", 1);
        assert_eq!(a.get("amy"), Some(Alias::One(1)));
        a.add("amy", 2);
        assert_eq!(a.get("amy"), Some(Alias::Ambiguous));
        assert_eq!(a.ambiguous, ["amy"]);
        a.add("amy", 3);
        assert_eq!(a.ambiguous_count, 1);
        a.redirect(1, 9);
        assert_eq!(a.get("urn:login|amy"), Some(Alias::One(9)));
    }

    #[test]
    fn names_written_in_another_case_or_padding_meet_in_their_loose_form() {
        assert_eq!(loose_form("KOBrien"), "kobrien");
        assert_eq!(loose_form("000123987"), "123987");
        assert_eq!(loose_form("SPRINGFIELD|000123987"), "springfield|123987");
        assert_eq!(loose_form("000"), "0");
        assert_eq!(loose_form("0A12"), "0a12");
        let mut a = Aliases::default();
        a.add("KOBRIEN", 1);
        a.add("000123987", 2);
        a.add("jsmith", 3);
        assert_eq!(a.get("kobrien"), None, "as written, only the exact key");
        assert_eq!(a.get_loose("kobrien"), Some(Alias::One(1)));
        assert_eq!(a.get_loose("123987"), Some(Alias::One(2)));
        assert_eq!(a.get_loose("jsmith"), Some(Alias::One(3)));
        // Two people whose names differ only in case: the loose form names nobody.
        a.add("JSmith", 4);
        assert_eq!(a.get("jsmith"), Some(Alias::One(3)));
        assert_eq!(a.get_loose("jsmith"), Some(Alias::Ambiguous));
        assert_eq!(a.ambiguous_count, 0, "no key written so is ambiguous");
        a.redirect(2, 7);
        assert_eq!(a.get_loose("123987"), Some(Alias::One(7)));
    }
}
