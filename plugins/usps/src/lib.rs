//! US postal addresses normalised after USPS Publication 28 (Postal Addressing Standards),
//! so that "3335 Mill Ct, 45385-3843" and "3335 MILL COURT, 45385" are one household.
//!
//! - street suffixes, their long forms and common variants (Appendix C1: COURT, CRT → CT);
//! - directionals (NORTH → N, NORTHEAST → NE);
//! - secondary unit designators (Appendix C2: APARTMENT, APT, UNIT, SUITE, #, ...): the
//!   *number* of the unit is kept, the designator is not, so "Apt 4", "Unit 4" and "#4" are
//!   the same unit and "Apt 4" and "Apt 5" are two households in one building;
//! - case, punctuation and spacing; ZIP+4 → ZIP; state names → their two-letter codes.
//!
//! The place of an address is its 5-digit ZIP when it has one, else its city and state.
//! Both the agent's enrich stage and the plugin SDK use this crate: one table, one answer.

/// An address broken into the parts households are compared on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Address {
    /// House number (`3335`, `12-B`).
    pub number: String,
    /// Street words, standardised (`mill ct`, `n oak st`).
    pub street: String,
    /// Unit number within the building, without its designator (`4`), or empty.
    pub unit: String,
    /// ZIP (first five digits), else "city state".
    pub place: String,
}

impl Address {
    /// The household: number, street, unit and place.
    pub fn household_key(&self) -> String {
        let mut k = String::with_capacity(self.number.len() + self.street.len() + 16);
        k.push_str(&self.number);
        k.push(' ');
        k.push_str(&self.street);
        if !self.unit.is_empty() {
            k.push_str(" #");
            k.push_str(&self.unit);
        }
        k.push('|');
        k.push_str(&self.place);
        k
    }

    /// The street: street words and place, without number and unit (the neighbourhood).
    pub fn street_key(&self) -> String {
        format!("{}|{}", self.street, self.place)
    }
}

/// Whether two addresses are the same household.
pub fn same_address(a: &Address, b: &Address) -> bool {
    a.household_key() == b.household_key()
}

/// Whether two addresses are on the same street.
pub fn same_street(a: &Address, b: &Address) -> bool {
    a.street_key() == b.street_key()
}

/// Parses an address from its parts as records keep them (the lines, city, state, ZIP).
pub fn parse(lines: &[&str], city: &str, state: &str, zip: &str) -> Option<Address> {
    let mut words: Vec<String> = Vec::new();
    for l in lines {
        words.extend(tokens(l));
    }
    let mut a = street_parts(&words)?;
    a.place = place(city, state, zip);
    Some(a)
}

/// Parses "3335 Mill Ct, Springfield, OH 45385-3843" (the line, then the place, separated
/// by commas; the city, state and ZIP may come in one or several parts).
pub fn parse_text(text: &str) -> Option<Address> {
    let mut parts = text.split(',');
    let line = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let rest = rest.join(" ");
    let mut city = Vec::new();
    let mut state = "";
    let mut zip = "";
    for w in rest.split_whitespace() {
        let bare = w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-');
        if zip.is_empty() && is_zip(bare) {
            zip = bare;
        } else if state.is_empty() && state_code(bare).is_some() && w.len() == 2 {
            state = bare;
        } else {
            city.push(bare);
        }
    }
    let mut a = street_parts(&tokens(line))?;
    a.place = place(&city.join(" "), state, zip);
    Some(a)
}

fn is_zip(w: &str) -> bool {
    let digits = w.split('-').next().unwrap_or("");
    digits.len() == 5 && digits.chars().all(|c| c.is_ascii_digit())
}

/// Lowercase words of a line, punctuation dropped (but `#` kept as its own word, and
/// hyphens inside house and unit numbers kept).
fn tokens(line: &str) -> Vec<String> {
    let spaced = line.replace('#', " # ");
    spaced
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == ';')
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '#')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn street_parts(words: &[String]) -> Option<Address> {
    let mut a = Address::default();
    let mut street: Vec<&str> = Vec::new();
    let mut i = 0;
    if words
        .first()
        .is_some_and(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        a.number = words[0].clone();
        i = 1;
    }
    while i < words.len() {
        let w = words[i].as_str();
        // A designator counts only where a unit number follows it ("Apt 4", "Ste B"):
        // "Front", "Rear" or "Lot" are street names too.
        let number_follows = words
            .get(i + 1)
            .is_some_and(|n| n.chars().any(|c| c.is_ascii_digit()) || n.len() == 1);
        if w == "#" || (unit_designator(w) && number_follows && !street.is_empty()) {
            if let Some(next) = words.get(i + 1) {
                a.unit = next.trim_start_matches('#').to_owned();
                i += 2;
                continue;
            }
            i += 1;
            continue;
        }
        if let Some(stripped) = w.strip_prefix('#') {
            a.unit = stripped.to_owned();
            i += 1;
            continue;
        }
        street.push(standard(w));
        i += 1;
    }
    if street.is_empty() {
        return None;
    }
    a.street = street.join(" ");
    Some(a)
}

fn place(city: &str, state: &str, zip: &str) -> String {
    let zip5: String = zip
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if zip5.len() >= 5 {
        return zip5[..5].to_owned();
    }
    let city: Vec<String> = tokens(city)
        .iter()
        .map(|w| standard(w).to_owned())
        .collect();
    let state = state_code(state.trim()).unwrap_or("");
    format!("{} {}", city.join(" "), state).trim().to_owned()
}

/// A word in its Publication 28 standard form (suffix or directional), else as it is.
fn standard(w: &str) -> &str {
    SUFFIXES
        .iter()
        .chain(DIRECTIONALS)
        .find(|(long, _)| *long == w)
        .map_or(w, |(_, short)| short)
}

fn unit_designator(w: &str) -> bool {
    UNITS.contains(&w)
}

/// A family name as registries that disagree on its spelling all write it: letters only,
/// in lower case (`O'Brien`, `OBRIEN`); what comes before a comma (`SMITH, JOHN A`, as
/// Epic's PAT_NAME and many rosters' one name column write it; `Smith, Jr.`); without a
/// trailing generational suffix (`SMITH JR`, `Smith III`). Not USPS, but the other half of
/// a household: the agent and the plugin SDK fold names here so they agree, as on addresses.
pub fn family_key(name: &str) -> String {
    let name = name.split(',').next().unwrap_or(name);
    let mut words: Vec<String> = name
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphabetic())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    while words.len() > 1
        && words
            .last()
            .is_some_and(|w| GENERATIONS.contains(&w.as_str()))
    {
        words.pop();
    }
    words.concat()
}

const GENERATIONS: [&str; 5] = ["jr", "sr", "ii", "iii", "iv"];

/// The two-letter code of a state, from its code or its name (any case).
pub fn state_code(s: &str) -> Option<&'static str> {
    let l = s.to_lowercase();
    STATES
        .iter()
        .find(|(code, name)| code.eq_ignore_ascii_case(&l) || *name == l)
        .map(|(code, _)| *code)
}

/// Publication 28 Appendix C1: street suffixes, each long form and common variant with its
/// standard abbreviation (the abbreviation maps to itself implicitly).
const SUFFIXES: &[(&str, &str)] = &[
    ("alley", "aly"),
    ("allee", "aly"),
    ("ally", "aly"),
    ("annex", "anx"),
    ("anex", "anx"),
    ("annx", "anx"),
    ("arcade", "arc"),
    ("avenue", "ave"),
    ("av", "ave"),
    ("aven", "ave"),
    ("avenu", "ave"),
    ("avn", "ave"),
    ("avnue", "ave"),
    ("bayou", "byu"),
    ("bayoo", "byu"),
    ("beach", "bch"),
    ("bend", "bnd"),
    ("bluff", "blf"),
    ("bluf", "blf"),
    ("bottom", "btm"),
    ("bot", "btm"),
    ("bottm", "btm"),
    ("boulevard", "blvd"),
    ("boul", "blvd"),
    ("boulv", "blvd"),
    ("branch", "br"),
    ("brnch", "br"),
    ("bridge", "brg"),
    ("brdge", "brg"),
    ("brook", "brk"),
    ("burg", "bg"),
    ("bypass", "byp"),
    ("bypa", "byp"),
    ("bypas", "byp"),
    ("byps", "byp"),
    ("camp", "cp"),
    ("cmp", "cp"),
    ("canyon", "cyn"),
    ("canyn", "cyn"),
    ("cnyn", "cyn"),
    ("cape", "cpe"),
    ("causeway", "cswy"),
    ("causwa", "cswy"),
    ("center", "ctr"),
    ("cen", "ctr"),
    ("cent", "ctr"),
    ("centr", "ctr"),
    ("centre", "ctr"),
    ("cnter", "ctr"),
    ("cntr", "ctr"),
    ("circle", "cir"),
    ("circ", "cir"),
    ("circl", "cir"),
    ("crcl", "cir"),
    ("crcle", "cir"),
    ("cliff", "clf"),
    ("cliffs", "clfs"),
    ("club", "clb"),
    ("common", "cmn"),
    ("corner", "cor"),
    ("corners", "cors"),
    ("course", "crse"),
    ("court", "ct"),
    ("crt", "ct"),
    ("courts", "cts"),
    ("cove", "cv"),
    ("creek", "crk"),
    ("crescent", "cres"),
    ("crsent", "cres"),
    ("crsnt", "cres"),
    ("crest", "crst"),
    ("crossing", "xing"),
    ("crssng", "xing"),
    ("dale", "dl"),
    ("dam", "dm"),
    ("divide", "dv"),
    ("div", "dv"),
    ("dvd", "dv"),
    ("drive", "dr"),
    ("driv", "dr"),
    ("drv", "dr"),
    ("estate", "est"),
    ("estates", "ests"),
    ("expressway", "expy"),
    ("exp", "expy"),
    ("expr", "expy"),
    ("express", "expy"),
    ("expw", "expy"),
    ("extension", "ext"),
    ("extn", "ext"),
    ("extnsn", "ext"),
    ("falls", "fls"),
    ("ferry", "fry"),
    ("frry", "fry"),
    ("field", "fld"),
    ("fields", "flds"),
    ("flat", "flt"),
    ("flats", "flts"),
    ("ford", "frd"),
    ("forest", "frst"),
    ("forests", "frst"),
    ("forge", "frg"),
    ("forg", "frg"),
    ("fork", "frk"),
    ("forks", "frks"),
    ("fort", "ft"),
    ("frt", "ft"),
    ("freeway", "fwy"),
    ("freewy", "fwy"),
    ("frway", "fwy"),
    ("frwy", "fwy"),
    ("garden", "gdn"),
    ("gardn", "gdn"),
    ("grden", "gdn"),
    ("grdn", "gdn"),
    ("gardens", "gdns"),
    ("gateway", "gtwy"),
    ("gatewy", "gtwy"),
    ("gatway", "gtwy"),
    ("gtway", "gtwy"),
    ("glen", "gln"),
    ("green", "grn"),
    ("grove", "grv"),
    ("grov", "grv"),
    ("harbor", "hbr"),
    ("harb", "hbr"),
    ("harbr", "hbr"),
    ("hrbor", "hbr"),
    ("haven", "hvn"),
    ("heights", "hts"),
    ("ht", "hts"),
    ("highway", "hwy"),
    ("highwy", "hwy"),
    ("hiway", "hwy"),
    ("hiwy", "hwy"),
    ("hway", "hwy"),
    ("hill", "hl"),
    ("hills", "hls"),
    ("hollow", "holw"),
    ("hllw", "holw"),
    ("hollows", "holw"),
    ("holws", "holw"),
    ("island", "is"),
    ("islnd", "is"),
    ("islands", "iss"),
    ("junction", "jct"),
    ("jction", "jct"),
    ("jctn", "jct"),
    ("junctn", "jct"),
    ("juncton", "jct"),
    ("key", "ky"),
    ("knoll", "knl"),
    ("knol", "knl"),
    ("lake", "lk"),
    ("lakes", "lks"),
    ("landing", "lndg"),
    ("lndng", "lndg"),
    ("lane", "ln"),
    ("light", "lgt"),
    ("lodge", "ldg"),
    ("ldge", "ldg"),
    ("lodg", "ldg"),
    ("manor", "mnr"),
    ("meadow", "mdw"),
    ("meadows", "mdws"),
    ("medows", "mdws"),
    ("mill", "ml"),
    ("mills", "mls"),
    ("mission", "msn"),
    ("missn", "msn"),
    ("mssn", "msn"),
    ("mount", "mt"),
    ("mnt", "mt"),
    ("mountain", "mtn"),
    ("mntain", "mtn"),
    ("mntn", "mtn"),
    ("mountin", "mtn"),
    ("mtin", "mtn"),
    ("neck", "nck"),
    ("orchard", "orch"),
    ("orchrd", "orch"),
    ("overpass", "opas"),
    ("parkway", "pkwy"),
    ("parkwy", "pkwy"),
    ("pkway", "pkwy"),
    ("pky", "pkwy"),
    ("pine", "pne"),
    ("pines", "pnes"),
    ("place", "pl"),
    ("plain", "pln"),
    ("plains", "plns"),
    ("plaza", "plz"),
    ("plza", "plz"),
    ("point", "pt"),
    ("points", "pts"),
    ("port", "prt"),
    ("prairie", "pr"),
    ("prr", "pr"),
    ("ranch", "rnch"),
    ("ranches", "rnch"),
    ("rnchs", "rnch"),
    ("ridge", "rdg"),
    ("rdge", "rdg"),
    ("ridges", "rdgs"),
    ("river", "riv"),
    ("rvr", "riv"),
    ("rivr", "riv"),
    ("road", "rd"),
    ("roads", "rds"),
    ("route", "rte"),
    ("shoal", "shl"),
    ("shore", "shr"),
    ("shoar", "shr"),
    ("shores", "shrs"),
    ("spring", "spg"),
    ("spng", "spg"),
    ("sprng", "spg"),
    ("springs", "spgs"),
    ("square", "sq"),
    ("sqr", "sq"),
    ("sqre", "sq"),
    ("squ", "sq"),
    ("station", "sta"),
    ("statn", "sta"),
    ("stn", "sta"),
    ("stravenue", "stra"),
    ("stream", "strm"),
    ("streme", "strm"),
    ("street", "st"),
    ("strt", "st"),
    ("str", "st"),
    ("streets", "sts"),
    ("summit", "smt"),
    ("sumit", "smt"),
    ("sumitt", "smt"),
    ("terrace", "ter"),
    ("terr", "ter"),
    ("throughway", "trwy"),
    ("trace", "trce"),
    ("traces", "trce"),
    ("track", "trak"),
    ("tracks", "trak"),
    ("trk", "trak"),
    ("trks", "trak"),
    ("trafficway", "trfy"),
    ("trail", "trl"),
    ("trails", "trl"),
    ("trls", "trl"),
    ("tunnel", "tunl"),
    ("tunel", "tunl"),
    ("tunls", "tunl"),
    ("tunnels", "tunl"),
    ("tunnl", "tunl"),
    ("turnpike", "tpke"),
    ("trnpk", "tpke"),
    ("turnpk", "tpke"),
    ("underpass", "upas"),
    ("union", "un"),
    ("valley", "vly"),
    ("vally", "vly"),
    ("vlly", "vly"),
    ("viaduct", "via"),
    ("vdct", "via"),
    ("viadct", "via"),
    ("view", "vw"),
    ("village", "vlg"),
    ("vill", "vlg"),
    ("villag", "vlg"),
    ("villg", "vlg"),
    ("villiage", "vlg"),
    ("ville", "vl"),
    ("vista", "vis"),
    ("vist", "vis"),
    ("vst", "vis"),
    ("vsta", "vis"),
    ("walks", "walk"),
    ("well", "wl"),
    ("wells", "wls"),
];

/// Publication 28 directionals.
const DIRECTIONALS: &[(&str, &str)] = &[
    ("north", "n"),
    ("south", "s"),
    ("east", "e"),
    ("west", "w"),
    ("northeast", "ne"),
    ("northwest", "nw"),
    ("southeast", "se"),
    ("southwest", "sw"),
];

/// Publication 28 Appendix C2: secondary unit designators, long and short.
const UNITS: &[&str] = &[
    "apartment",
    "apt",
    "basement",
    "bsmt",
    "building",
    "bldg",
    "department",
    "dept",
    "floor",
    "fl",
    "front",
    "frnt",
    "hangar",
    "hngr",
    "lobby",
    "lbby",
    "lot",
    "lower",
    "lowr",
    "office",
    "ofc",
    "penthouse",
    "ph",
    "pier",
    "rear",
    "room",
    "rm",
    "side",
    "slip",
    "space",
    "spc",
    "stop",
    "suite",
    "ste",
    "trailer",
    "trlr",
    "unit",
    "upper",
    "uppr",
    "no",
    "number",
];

const STATES: &[(&str, &str)] = &[
    ("AL", "alabama"),
    ("AK", "alaska"),
    ("AZ", "arizona"),
    ("AR", "arkansas"),
    ("CA", "california"),
    ("CO", "colorado"),
    ("CT", "connecticut"),
    ("DE", "delaware"),
    ("DC", "district of columbia"),
    ("FL", "florida"),
    ("GA", "georgia"),
    ("HI", "hawaii"),
    ("ID", "idaho"),
    ("IL", "illinois"),
    ("IN", "indiana"),
    ("IA", "iowa"),
    ("KS", "kansas"),
    ("KY", "kentucky"),
    ("LA", "louisiana"),
    ("ME", "maine"),
    ("MD", "maryland"),
    ("MA", "massachusetts"),
    ("MI", "michigan"),
    ("MN", "minnesota"),
    ("MS", "mississippi"),
    ("MO", "missouri"),
    ("MT", "montana"),
    ("NE", "nebraska"),
    ("NV", "nevada"),
    ("NH", "new hampshire"),
    ("NJ", "new jersey"),
    ("NM", "new mexico"),
    ("NY", "new york"),
    ("NC", "north carolina"),
    ("ND", "north dakota"),
    ("OH", "ohio"),
    ("OK", "oklahoma"),
    ("OR", "oregon"),
    ("PA", "pennsylvania"),
    ("RI", "rhode island"),
    ("SC", "south carolina"),
    ("SD", "south dakota"),
    ("TN", "tennessee"),
    ("TX", "texas"),
    ("UT", "utah"),
    ("VT", "vermont"),
    ("VA", "virginia"),
    ("WA", "washington"),
    ("WV", "west virginia"),
    ("WI", "wisconsin"),
    ("WY", "wyoming"),
    ("PR", "puerto rico"),
    ("GU", "guam"),
    ("VI", "virgin islands"),
    ("AS", "american samoa"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_as_registries_write_them() {
        assert_eq!(family_key("O'Brien"), family_key("OBRIEN"));
        assert_eq!(family_key("Garcia-Lopez"), family_key("GARCIA LOPEZ"));
        for written in [
            "SMITH, JOHN A",
            "Smith Jr.",
            "SMITH JR",
            "Smith, Jr.",
            "smith III",
        ] {
            assert_eq!(family_key(written), "smith", "{written}");
        }
        // A suffix alone is someone's name, not nothing.
        assert_eq!(family_key("Jr"), "jr");
        assert_eq!(family_key(" , "), "");
    }
    use proptest::prelude::*;

    fn text(s: &str) -> Address {
        parse_text(s).unwrap()
    }

    #[test]
    fn the_households_real_data_missed() {
        // From a held-out hospital week: same family, same house, different spellings.
        assert!(same_address(
            &text("3335 Mill Ct, 45385-3843"),
            &text("3335 MILL COURT, 45385-7892")
        ));
        assert!(same_address(
            &text("5413 Church Ln, 45373"),
            &text("5413 Church Lane, 45373-5956")
        ));
        assert!(same_address(
            &parse(
                &["12 N. Oak St.", "Apt 4"],
                "Springfield",
                "Illinois",
                "62701-1234"
            )
            .unwrap(),
            &text("12 north oak street #4, Springfield, IL 62701")
        ));
    }

    #[test]
    fn units_in_one_building_are_two_households_on_one_street() {
        let a = text("200 Main St Apt 4, 62701");
        let b = text("200 Main Street Apartment 5, 62701");
        assert!(!same_address(&a, &b));
        assert!(same_street(&a, &b));
        assert!(same_address(&a, &text("200 MAIN ST UNIT 4, 62701")));
        assert!(same_address(&a, &text("200 Main St #4, 62701-0001")));
        assert!(!same_address(&a, &text("202 Main St Apt 4, 62701")));
        assert!(!same_street(&a, &text("200 Main St Apt 4, 62702")));
    }

    #[test]
    fn designator_words_that_name_streets() {
        assert!(!same_address(
            &text("12 Front St, 01101"),
            &text("12 Main St, 01101")
        ));
        assert_eq!(
            text("12 Front St, 01101").street,
            "frnt st".replace("frnt", "front")
        );
        assert_eq!(text("12 Lot Rd Lot 7, 01101").unit, "7");
    }

    #[test]
    fn places_without_a_zip_are_city_and_state() {
        let a = parse(&["9 Pine Rd"], "Lake Forest", "Illinois", "").unwrap();
        let b = parse(&["9 PINE ROAD"], "LAKE FOREST", "IL", "").unwrap();
        assert!(same_address(&a, &b));
        assert_eq!(a.place, "lk frst IL");
        assert_eq!(state_code("new york"), Some("NY"));
        assert_eq!(state_code("Ny"), Some("NY"));
    }

    /// Every Appendix C1 entry: the long form and the abbreviation are the same street.
    #[test]
    fn every_suffix_of_appendix_c1() {
        for (long, short) in SUFFIXES {
            let a = text(&format!("10 Maple {long}, 01101"));
            let b = text(&format!("10 MAPLE {}, 01101-2222", short.to_uppercase()));
            assert!(same_address(&a, &b), "{long} / {short}");
        }
    }

    proptest! {
        /// For every pair of USPS-equivalent spellings of one address, same_address holds;
        /// for another unit of the building it does not.
        #[test]
        fn equivalent_spellings_are_one_household(
            n in 1u32..9999,
            name in prop::sample::select(vec!["oak", "mill", "church", "martin luther king", "elm"]),
            suffix in prop::sample::select(SUFFIXES.to_vec()),
            dir in prop::sample::select(DIRECTIONALS.to_vec()),
            unit in 1u32..400,
            designators in (prop::sample::select(vec!["apt", "apartment", "unit", "#", "ste", "suite"]),
                            prop::sample::select(vec!["apt", "apartment", "unit", "#", "ste", "suite"])),
            forms in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
            plus4 in (1000u32..9999, 1000u32..9999),
        ) {
            let (d1, d2) = designators;
            let one = format!(
                "{n} {} {name} {} {d1} {unit}, 45385-{}",
                if forms.0 { dir.0 } else { dir.1 },
                if forms.1 { suffix.0 } else { suffix.1 },
                plus4.0
            );
            let two = format!(
                "{n} {} {} {}{}{}{unit}, {}",
                (if forms.2 { dir.0 } else { dir.1 }).to_uppercase(),
                name.to_uppercase(),
                (if forms.3 { suffix.0 } else { suffix.1 }).to_uppercase(),
                if d2 == "#" { " #" } else { " " },
                if d2 == "#" { String::new() } else { format!("{} ", d2.to_uppercase()) },
                if plus4.1 % 2 == 0 { "45385".to_owned() } else { format!("45385-{}", plus4.1) },
            );
            let (a, b) = (text(&one), text(&two));
            prop_assert!(same_address(&a, &b), "{one} / {two}: {a:?} {b:?}");
            let other_unit = text(&one.replace(&format!(" {unit},"), &format!(" {},", unit + 1)));
            prop_assert!(!same_address(&a, &other_unit));
            prop_assert!(same_street(&a, &other_unit));
        }
    }
}
