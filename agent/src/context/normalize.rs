//! Normalised names and addresses, so "12 Oak Street, Apt 4, 62701" and
//! "12 OAK ST #4, 62701-1234" compare equal. Addresses follow USPS Publication 28 through
//! the `phiwatch-usps` crate, the same code the plugin SDK uses: the Cedar pack and the
//! plugins agree on what one household and one street are.

use crate::fhir::Address;

/// A household address and the street it is on, both normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressKey {
    /// House number, street, unit, and place (ZIP, else city and state).
    pub full: String,
    /// Street and place without house number and unit: the neighbourhood.
    pub street: String,
}

pub fn family(name: &str) -> Option<String> {
    let n = phiwatch_usps::family_key(name);
    (!n.is_empty()).then_some(n)
}

pub fn address(a: &Address<'_>) -> Option<AddressKey> {
    let lines: Vec<&str> = a.line.iter().map(|l| l.as_ref()).collect();
    let parsed = phiwatch_usps::parse(
        &lines,
        a.city.as_deref().unwrap_or(""),
        a.state.as_deref().unwrap_or(""),
        a.postal_code.as_deref().unwrap_or(""),
    )?;
    Some(AddressKey {
        full: parsed.household_key(),
        street: parsed.street_key(),
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
            state: None,
            postal_code: Some(Cow::Borrowed(zip)),
        })
        .unwrap()
    }

    #[test]
    fn same_household_despite_spelling() {
        let a = addr("12 Oak Street, Apt 4", "Springfield", "01101");
        let b = addr("12 oak st apartment 4", "SPRINGFIELD", "01101-4321");
        assert_eq!(a, b);
        let c = addr("3335 Mill Ct", "Troy", "45385-3843");
        let d = addr("3335 MILL COURT", "TROY", "45385-7892");
        assert_eq!(c, d);
    }

    #[test]
    fn neighbours_share_street_not_address() {
        let a = addr("12 Oak Street", "Springfield", "01101");
        let b = addr("14 Oak St #2", "Springfield", "01101");
        assert_ne!(a.full, b.full);
        assert_eq!(a.street, b.street);
        let c = addr("12 Elm Street", "Springfield", "01101");
        assert_ne!(a.street, c.street);
        let upstairs = addr("12 Oak Street Apt 5", "Springfield", "01101");
        assert_ne!(
            addr("12 Oak Street Apt 4", "Springfield", "01101").full,
            upstairs.full,
            "two units of one building are two households"
        );
    }

    #[test]
    fn family_names_fold_case_and_punctuation() {
        assert_eq!(family("O'Brien"), family("obrien"));
        assert_eq!(family("  "), None);
        assert_eq!(family("Garcia-Lopez"), family("GARCIA LOPEZ"));
    }

    #[test]
    fn family_names_as_registries_write_them() {
        assert_eq!(family("SMITH, JOHN A"), family("Smith Jr."));
        assert_ne!(family("Smithson"), family("Smith"));
    }
}
