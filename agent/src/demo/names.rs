//! Name and street tables for the synthetic hospital. Common family names are frequent on
//! purpose: they are the hard negatives a family-snooping rule must not flag on name alone.

/// Common US family names, most frequent first.
pub const COMMON_FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
];

const SYLLABLES_A: &[&str] = &[
    "Ash", "Bel", "Cor", "Dal", "Eck", "Fen", "Gar", "Hol", "Ing", "Jas", "Kel", "Lor", "Mar",
    "Nor", "Orl", "Pem", "Quin", "Ros", "Sel", "Tam", "Ulm", "Vor", "Wes", "Yar", "Zel",
];
const SYLLABLES_B: &[&str] = &[
    "ford", "ton", "wick", "by", "stein", "berg", "ley", "more", "wood", "field", "man", "ski",
    "son", "dale", "ridge", "well", "hurst", "croft", "ham", "ett",
];

/// A rarer family name made of two syllables (25 × 20 = 500 of them).
pub fn rare_family(i: usize) -> String {
    format!(
        "{}{}",
        SYLLABLES_A[i % SYLLABLES_A.len()],
        SYLLABLES_B[(i / SYLLABLES_A.len()) % SYLLABLES_B.len()]
    )
}

pub const GIVEN: &[&str] = &[
    "Alex", "Blair", "Casey", "Dana", "Eli", "Frankie", "Gale", "Harper", "Indra", "Jordan", "Kai",
    "Lane", "Morgan", "Noel", "Oakley", "Parker", "Quinn", "Reese", "Sage", "Taylor",
];

pub const STREETS: &[&str] = &[
    "Oak",
    "Maple",
    "Cedar",
    "Pine",
    "Elm",
    "Birch",
    "Walnut",
    "Chestnut",
    "Spruce",
    "Willow",
    "Aspen",
    "Hickory",
    "Magnolia",
    "Sycamore",
    "Poplar",
    "Juniper",
    "Laurel",
    "Holly",
    "Ivy",
    "Hawthorn",
    "Lake",
    "Hill",
    "River",
    "Park",
    "Meadow",
    "Forest",
    "Valley",
    "Ridge",
    "Spring",
    "Sunset",
    "Highland",
    "Church",
    "Mill",
    "School",
    "Market",
    "Bridge",
    "Union",
    "Franklin",
    "Washington",
    "Lincoln",
    "Jefferson",
    "Madison",
    "Adams",
    "Jackson",
    "Monroe",
    "Harrison",
    "Grant",
    "Wilson",
    "Main",
    "Center",
];
pub const STREET_KINDS: &[&str] = &["Street", "Avenue", "Road", "Lane", "Drive", "Court"];
pub const CITIES: &[(&str, &str)] = &[
    ("Springfield", "01101"),
    ("Riverton", "01102"),
    ("Lakeside", "01103"),
    ("Fairview", "01104"),
];
