//! Fuzzy matching of family names and addresses: Soundex, Jaro-Winkler, USPS-style address
//! normalisation, and how common a family name is.

/// American Soundex: letter plus three digits ("Smyth" and "Smith" are both S530).
pub fn soundex(name: &str) -> String {
    fn code(c: char) -> u8 {
        match c {
            'b' | 'f' | 'p' | 'v' => b'1',
            'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => b'2',
            'd' | 't' => b'3',
            'l' => b'4',
            'm' | 'n' => b'5',
            'r' => b'6',
            'h' | 'w' => b'h',
            _ => b'0',
        }
    }
    let letters: Vec<char> = name
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let Some(&first) = letters.first() else {
        return String::new();
    };
    let mut out = vec![first.to_ascii_uppercase() as u8];
    let mut last = code(first);
    for &c in &letters[1..] {
        let k = code(c);
        if k == b'h' {
            // h and w do not separate letters with the same code.
            continue;
        }
        if k != b'0' && k != last {
            out.push(k);
            if out.len() == 4 {
                break;
            }
        }
        last = k;
    }
    while out.len() < 4 {
        out.push(b'0');
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Jaro-Winkler similarity in 0..=1, case-insensitive.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut a_match = vec![false; a.len()];
    let mut b_match = vec![false; b.len()];
    let mut matches = 0usize;
    for i in 0..a.len() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(b.len());
        for j in lo..hi {
            if !b_match[j] && a[i] == b[j] {
                a_match[i] = true;
                b_match[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut j = 0;
    for i in 0..a.len() {
        if a_match[i] {
            while !b_match[j] {
                j += 1;
            }
            if a[i] != b[j] {
                transpositions += 1;
            }
            j += 1;
        }
    }
    let m = matches as f64;
    let jaro =
        (m / a.len() as f64 + m / b.len() as f64 + (m - transpositions as f64 / 2.0) / m) / 3.0;
    let prefix = a.iter().zip(&b).take(4).take_while(|(x, y)| x == y).count() as f64;
    jaro + prefix * 0.1 * (1.0 - jaro)
}

/// A family name folded as the agent folds it ([`phiwatch_usps::family_key`]): lower-case
/// letters only ("O'Brien-Smith" → "obriensmith"), before a comma, no "Jr"/"III" suffix.
pub fn fold_name(name: &str) -> String {
    phiwatch_usps::family_key(name)
}

/// How alike two family names are, 0..=1: exact, a part of a hyphenated name, same Soundex
/// code with close spelling, or plain Jaro-Winkler.
pub fn name_similarity(a: &str, b: &str) -> f64 {
    let (fa, fb) = (fold_name(a), fold_name(b));
    if fa.is_empty() || fb.is_empty() {
        return 0.0;
    }
    if fa == fb {
        return 1.0;
    }
    let parts = |s: &str| -> Vec<String> {
        s.split(['-', ' '])
            .map(fold_name)
            .filter(|p| p.len() > 1)
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    if (pa.len() > 1 || pb.len() > 1) && pa.iter().any(|x| pb.contains(x)) {
        return 0.95;
    }
    let jw = jaro_winkler(&fa, &fb);
    // One letter apart in a three-letter name (Lee, Lae) is exactly 0.8: the margin keeps
    // such variants from falling on either side of the line by rounding.
    if soundex(&fa) == soundex(&fb) && jw >= 0.78 {
        jw.max(0.92)
    } else {
        jw
    }
}

/// The 100 most common US family names (Census 2010), most common first. A shared common
/// name is weak evidence of kinship; a shared rare one is strong.
pub const COMMON_FAMILY_NAMES: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "gomez",
    "phillips",
    "evans",
    "turner",
    "diaz",
    "parker",
    "cruz",
    "edwards",
    "collins",
    "reyes",
    "stewart",
    "morris",
    "morales",
    "murphy",
    "cook",
    "rogers",
    "gutierrez",
    "ortiz",
    "morgan",
    "cooper",
    "peterson",
    "bailey",
    "reed",
    "kelly",
    "howard",
    "ramos",
    "kim",
    "cox",
    "ward",
    "richardson",
    "watson",
    "brooks",
    "chavez",
    "wood",
    "james",
    "bennett",
    "gray",
    "mendoza",
    "ruiz",
    "hughes",
    "price",
    "alvarez",
    "castillo",
    "sanders",
    "patel",
    "myers",
    "long",
    "ross",
    "foster",
    "jimenez",
];

/// Weight of a family name as evidence, 0.5 (the most common) to 1.0 (not in the table).
pub fn name_rarity(name: &str) -> f64 {
    let f = fold_name(name);
    match COMMON_FAMILY_NAMES.iter().position(|n| *n == f) {
        Some(rank) => 0.5 + 0.4 * (rank as f64 / COMMON_FAMILY_NAMES.len() as f64),
        None => 1.0,
    }
}

/// An address broken into the parts households are compared on: the agent's own USPS
/// Publication 28 normalisation (`phiwatch-usps`), so a plugin and the Cedar pack agree on
/// what one household is.
pub type Address = phiwatch_usps::Address;

/// Parses "12 North Oak Street Apt 4, Springfield, IL 62701-1234" (or with `#4`) into
/// parts: standard suffixes and directionals, the unit number, the 5-digit ZIP.
pub fn parse_address(text: &str) -> Option<Address> {
    phiwatch_usps::parse_text(text)
}

/// How two addresses relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nearness {
    Unrelated,
    SameStreet,
    /// Same house number and street (units may be written differently or be missing).
    SameHousehold,
}

pub fn nearness(a: &Address, b: &Address) -> Nearness {
    if a.place != b.place && !a.place.is_empty() && !b.place.is_empty() {
        return Nearness::Unrelated;
    }
    if jaro_winkler(&a.street, &b.street) < 0.93 {
        return Nearness::Unrelated;
    }
    let units_agree = a.unit.is_empty() || b.unit.is_empty() || a.unit == b.unit;
    if !a.number.is_empty() && a.number == b.number && units_agree {
        Nearness::SameHousehold
    } else {
        Nearness::SameStreet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soundex_reference_values() {
        // Examples from the US National Archives' description of the coding.
        assert_eq!(soundex("Robert"), "R163");
        assert_eq!(soundex("Rupert"), "R163");
        assert_eq!(soundex("Rubin"), "R150");
        assert_eq!(soundex("Ashcraft"), "A261");
        assert_eq!(soundex("Tymczak"), "T522");
        assert_eq!(soundex("Pfister"), "P236");
        assert_eq!(soundex("Smith"), soundex("Smyth"));
    }

    #[test]
    fn jaro_winkler_reference_values() {
        // The classic pairs from Winkler's papers.
        assert!((jaro_winkler("MARTHA", "MARHTA") - 0.961).abs() < 0.001);
        assert!((jaro_winkler("DWAYNE", "DUANE") - 0.84).abs() < 0.001);
        assert!((jaro_winkler("DIXON", "DICKSONX") - 0.813).abs() < 0.001);
        assert_eq!(jaro_winkler("abc", "xyz"), 0.0);
    }

    #[test]
    fn names_that_match_and_names_that_do_not() {
        assert_eq!(name_similarity("Smith", "smith"), 1.0);
        assert!(name_similarity("Smith", "Smyth") >= 0.92);
        assert!(name_similarity("Garcia-Lopez", "Lopez") >= 0.95);
        assert!(name_similarity("Okafor", "Okafour") >= 0.92);
        assert!(
            name_similarity("Lee", "Lae") >= 0.92,
            "short names one letter apart"
        );
        assert!(name_similarity("Lee", "Low") < 0.88);
        assert!(name_similarity("Smith", "Jones") < 0.6);
        assert!(name_rarity("Smith") < name_rarity("Okafor"));
    }

    #[test]
    fn addresses_normalise_like_usps() {
        let a = parse_address("12 North Oak Street Apt 4, Springfield, 01101").unwrap();
        let b = parse_address("12 N. Oak St #4, springfield, 01101-7777").unwrap();
        assert_eq!(a, b);
        assert_eq!(nearness(&a, &b), Nearness::SameHousehold);
        let c = parse_address("40 N Oak St, Springfield, 01101").unwrap();
        assert_eq!(nearness(&a, &c), Nearness::SameStreet);
        let d = parse_address("12 Oak St, Riverton, 01102").unwrap();
        assert_eq!(nearness(&a, &d), Nearness::Unrelated);
        let typo = parse_address("12 North Oak Stret, Springfield, 01101").unwrap();
        assert_eq!(nearness(&a, &typo), Nearness::SameHousehold);
    }
}
