//! Normalised names and addresses, so "12 Oak Street, Apt 4" and "12 oak st #4" compare equal.

use crate::fhir::Address;

/// A household address and the street it is on, both normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressKey {
    /// House number, street, unit, city, postal code.
    pub full: String,
    /// Street, city and postal code without house number and unit: the neighbourhood.
    pub street: String,
}

pub fn family(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    (!n.is_empty()).then_some(n)
}

const ABBREVIATIONS: &[(&str, &str)] = &[
    ("street", "st"),
    ("avenue", "ave"),
    ("road", "rd"),
    ("drive", "dr"),
    ("lane", "ln"),
    ("boulevard", "blvd"),
    ("court", "ct"),
    ("place", "pl"),
    ("terrace", "ter"),
    ("circle", "cir"),
    ("parkway", "pkwy"),
    ("highway", "hwy"),
    ("north", "n"),
    ("south", "s"),
    ("east", "e"),
    ("west", "w"),
    ("apartment", "apt"),
    ("suite", "ste"),
];

const UNIT_WORDS: &[&str] = &["apt", "ste", "unit", "fl", "floor", "rm", "room", "bldg"];

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ',' || c == '.')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_lowercase();
            ABBREVIATIONS
                .iter()
                .find(|(long, _)| *long == w)
                .map(|(_, short)| (*short).to_owned())
                .unwrap_or(w)
        })
        .collect()
}

pub fn address(a: &Address<'_>) -> Option<AddressKey> {
    let line = a.line.first()?;
    let mut w = words(line);
    for extra in a.line.iter().skip(1) {
        w.extend(words(extra));
    }
    if w.is_empty() {
        return None;
    }
    let place: Vec<String> = a
        .city
        .iter()
        .flat_map(|c| words(c))
        .chain(a.postal_code.iter().map(|z| z.trim().to_owned()))
        .collect();

    // Street: drop a leading house number and any unit designation with its number.
    let mut street = Vec::new();
    let mut i = 0;
    if w[0].chars().next().is_some_and(|c| c.is_ascii_digit()) {
        i = 1;
    }
    while i < w.len() {
        let word = &w[i];
        if UNIT_WORDS.contains(&word.as_str()) {
            i += 2;
            continue;
        }
        if word.starts_with('#') {
            i += if word.len() == 1 { 2 } else { 1 };
            continue;
        }
        street.push(word.clone());
        i += 1;
    }
    if street.is_empty() {
        return None;
    }
    let full_words: Vec<&str> = w
        .iter()
        .map(String::as_str)
        .filter(|x| *x != "#")
        .map(|x| x.trim_start_matches('#'))
        .collect();
    Some(AddressKey {
        full: format!("{}|{}", full_words.join(" "), place.join(" ")),
        street: format!("{}|{}", street.join(" "), place.join(" ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn addr(line: &str, city: &str, zip: &str) -> AddressKey {
        address(&Address {
            use_: None,
            line: vec![Cow::Borrowed(line)],
            city: Some(Cow::Borrowed(city)),
            postal_code: Some(Cow::Borrowed(zip)),
        })
        .unwrap()
    }

    #[test]
    fn same_household_despite_spelling() {
        let a = addr("12 Oak Street, Apt 4", "Springfield", "01101");
        let b = addr("12 oak st apartment 4", "SPRINGFIELD", "01101");
        assert_eq!(a, b);
    }

    #[test]
    fn neighbours_share_street_not_address() {
        let a = addr("12 Oak Street", "Springfield", "01101");
        let b = addr("14 Oak St #2", "Springfield", "01101");
        assert_ne!(a.full, b.full);
        assert_eq!(a.street, b.street);
        let c = addr("12 Elm Street", "Springfield", "01101");
        assert_ne!(a.street, c.street);
    }

    #[test]
    fn family_names_fold_case_and_punctuation() {
        assert_eq!(family("O'Brien"), family("obrien"));
        assert_eq!(family("  "), None);
    }
}
