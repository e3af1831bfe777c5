//! One day of EHR access: normal shift traffic, injected violations of every category, and the
//! hard negatives a careless detector would flag. Written as BALP-shaped AuditEvent NDJSON.

use super::hospital::{EncounterClass, Hospital, Shift, DEPARTMENTS, EMERGENCY};
use super::names::{rare_family, COMMON_FAMILY};
use crate::time::{format_ms, MS_PER_HOUR};
use rand::rngs::SmallRng;
use rand::Rng;
use std::io::Write;
use std::path::Path;

/// Injected violation categories, as the policies name them.
pub const CATEGORIES: &[&str] = &[
    "self_access",
    "family",
    "neighbor",
    "coworker",
    "vip",
    "sensitive",
    "deceased",
    "terminated_user",
    "break_glass",
    "after_hours",
    "unexplained",
];

/// Scenarios only the shipped WASM plugins catch (volume, repeated or unusual break-the-glass,
/// spelling-variant relatives, first-time sensitive access), injected the same way.
pub const PLUGIN_CATEGORIES: &[&str] = &[
    "volume_anomaly",
    "break_glass_misuse",
    "family_fuzzy",
    "first_time_sensitive",
];

/// Accesses a careless detector would flag high: relatives under the user's own care, night
/// shifts, break-the-glass on an emergency visit, and routine consults no policy explains yet.
pub const HARD_NEGATIVES: &[&str] = &[
    "common_name_treated",
    "night_shift_nurse",
    "break_glass_ed",
    "routine_consult",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    Normal,
    Violation(&'static str),
    HardNegative(&'static str),
}

pub struct Access {
    pub t: i64,
    pub staff: usize,
    pub patient: usize,
    pub kind: usize,
    pub break_glass: bool,
    pub label: Label,
}

/// (action code, subtype, weight)
const KINDS: &[(&str, &str, u32)] = &[
    ("R", "read", 70),
    ("E", "search", 10),
    ("U", "update", 12),
    ("C", "create", 3),
    ("R", "print", 3),
    ("R", "export", 2),
];

fn kind(rng: &mut SmallRng) -> usize {
    let mut x = rng.random_range(0..100);
    for (i, k) in KINDS.iter().enumerate() {
        if x < k.2 {
            return i;
        }
        x -= k.2;
    }
    0
}

/// Relative traffic per local hour: busy days, quieter nights.
const HOUR_WEIGHT: [u32; 24] = [
    2, 2, 2, 2, 2, 3, 4, 6, 10, 10, 10, 10, 9, 10, 10, 10, 10, 8, 6, 5, 4, 3, 3, 2,
];

fn on_shift(shift: Shift, hour: i64) -> bool {
    match shift {
        Shift::Day => (7..19).contains(&hour),
        Shift::Night => !(7..19).contains(&hour),
        Shift::Office => (8..17).contains(&hour),
    }
}

fn pick<T: Copy>(rng: &mut SmallRng, v: &[T]) -> Option<T> {
    (!v.is_empty()).then(|| v[rng.random_range(0..v.len())])
}

/// The demo's days of access, in time order.
#[derive(Default)]
pub struct DayPlan {
    pub accesses: Vec<Access>,
}

impl DayPlan {
    /// Adds the hospital's current day: `events` accesses in all, `per_category` injected
    /// violations and hard negatives of each kind.
    pub fn add_day(
        &mut self,
        h: &mut Hospital,
        rng: &mut SmallRng,
        events: usize,
        per_category: usize,
    ) {
        let mut acc = Vec::with_capacity(events);
        inject(h, rng, per_category, &mut acc);
        inject_plugin_scenarios(h, rng, per_category, &mut acc);
        hard_negatives(h, rng, per_category, &mut acc);
        consults(h, rng, events / 100, &mut acc);
        drop_hard_negatives_inside_sprees(&mut acc);
        heavy_users(h, rng, &mut acc);
        normal(h, rng, events.saturating_sub(acc.len()), &mut acc);
        acc.sort_by_key(|a| a.t);
        h.broke_glass
            .extend(acc.iter().filter(|a| a.break_glass).map(|a| a.staff));
        self.accesses.extend(acc);
    }

    /// Writes the day. `identifier_percent` of the events name the user by EHR login and the
    /// patient by MRN (identifiers) instead of by FHIR reference, as many real logs do; a
    /// third of those write the login in upper case, as EHR extracts do where the roster
    /// has it in lower case.
    pub fn write(
        &self,
        h: &Hospital,
        events: &Path,
        truth: &Path,
        identifier_percent: u32,
    ) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(events)?);
        let mut tw = std::io::BufWriter::new(std::fs::File::create(truth)?);
        for (i, a) in self.accesses.iter().enumerate() {
            let id = format!("ae-{i:08}");
            // Spread over the day, independent of the injection order.
            let by_identifier =
                (i as u64).wrapping_mul(2_654_435_761) % 100 < u64::from(identifier_percent);
            let naming = match by_identifier {
                false => Naming::Reference,
                true if (i / 7) % 3 == 0 => Naming::ShoutedLogin,
                true => Naming::Login,
            };
            write_event(&mut w, &id, a, h, naming)?;
            match a.label {
                Label::Normal => {}
                Label::Violation(c) => writeln!(
                    tw,
                    r#"{{"event_id":"{id}","kind":"violation","category":"{c}"}}"#
                )?,
                Label::HardNegative(c) => writeln!(
                    tw,
                    r#"{{"event_id":"{id}","kind":"hard_negative","scenario":"{c}"}}"#
                )?,
            }
        }
        w.flush()?;
        tw.flush()
    }
}

/// How an event names its user and patient.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// FHIR references.
    Reference,
    /// EHR login and MRN.
    Login,
    /// EHR login in upper case, and MRN.
    ShoutedLogin,
}

fn write_event(
    w: &mut impl Write,
    id: &str,
    a: &Access,
    h: &Hospital,
    naming: Naming,
) -> std::io::Result<()> {
    let (code, subtype, _) = KINDS[a.kind];
    let staff = &h.staff[a.staff];
    let patient = &h.patients[a.patient];
    let (who, what) = if naming != Naming::Reference {
        let login = h.login(a.staff);
        (
            format!(
                r#"{{"identifier":{{"system":"{}","value":"{}"}}}}"#,
                super::feeds::LOGIN_SYSTEM,
                match naming {
                    Naming::ShoutedLogin => login.to_uppercase(),
                    _ => login,
                }
            ),
            format!(
                r#"{{"identifier":{{"system":"{}","value":"{}"}}}}"#,
                super::feeds::MRN_SYSTEM,
                h.mrn(a.patient)
            ),
        )
    } else {
        (
            format!(r#"{{"reference":"Practitioner/{}"}}"#, staff.id),
            format!(r#"{{"reference":"Patient/{}"}}"#, patient.id),
        )
    };
    let purpose = if a.break_glass {
        r#","purposeOfEvent":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"ETREAT","display":"Emergency Treatment"}]}]"#
    } else {
        ""
    };
    let data = match subtype {
        "search" => String::new(),
        _ => format!(
            r#",{{"what":{{"reference":"Observation/obs-{}"}},"type":{{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"2"}},"role":{{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"4","display":"Domain Resource"}}}}"#,
            a.t % 1_000_003
        ),
    };
    writeln!(
        w,
        r#"{{"resourceType":"AuditEvent","id":"{id}","meta":{{"profile":["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]}},"type":{{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest","display":"Restful Operation"}},"subtype":[{{"system":"http://hl7.org/fhir/restful-interaction","code":"{subtype}"}}],"action":"{code}","recorded":"{}","outcome":"0"{purpose},"agent":[{{"type":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/v3-ParticipationType","code":"IRCP","display":"information recipient"}}]}},"who":{who},"requestor":true,"network":{{"address":"ws-{}-{:03}","type":"1"}}}},{{"type":{{"coding":[{{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110153","display":"Source Role ID"}}]}},"who":{{"display":"ehr.demo.hospital"}},"requestor":false}}],"source":{{"observer":{{"display":"ehr.demo.hospital"}},"type":[{{"system":"http://terminology.hl7.org/CodeSystem/security-source-type","code":"4","display":"Application Server"}}]}},"entity":[{{"what":{what},"type":{{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"1"}},"role":{{"system":"http://terminology.hl7.org/CodeSystem/object-role","code":"1","display":"Patient"}}}}{data}]}}"#,
        format_ms(a.t),
        staff.dept,
        a.staff % 997,
    )
}

fn time_in(h: &Hospital, rng: &mut SmallRng, hours: std::ops::Range<i64>) -> i64 {
    let hour = rng.random_range(hours);
    h.day_start + hour * MS_PER_HOUR + rng.random_range(0..MS_PER_HOUR)
}

fn shift_time(h: &Hospital, rng: &mut SmallRng, shift: Shift) -> i64 {
    match shift {
        Shift::Day => time_in(h, rng, 7..19),
        Shift::Office => time_in(h, rng, 8..17),
        Shift::Night => {
            if rng.random_bool(0.4) {
                time_in(h, rng, 0..7)
            } else {
                time_in(h, rng, 19..24)
            }
        }
    }
}

/// A patient nobody is treating and who carries no label or coincidence with `staff`.
fn quiet_patient(h: &Hospital, rng: &mut SmallRng, staff: usize) -> Option<usize> {
    let s = &h.staff[staff];
    for _ in 0..1000 {
        let p = rng.random_range(0..h.patients.len());
        let pt = &h.patients[p];
        let coincidence = pt.family == s.family || pt.addr.is_some_and(|a| a.same_street(&s.addr));
        if !pt.special
            && pt.encounters.is_empty()
            && !pt.vip
            && pt.sensitive.is_none()
            && pt.deceased_ms.is_none()
            && !coincidence
        {
            return Some(p);
        }
    }
    None
}

fn active_staff(h: &Hospital, pred: impl Fn(&super::hospital::Staff) -> bool) -> Vec<usize> {
    (0..h.staff.len())
        .filter(|&s| !h.staff[s].terminated && pred(&h.staff[s]))
        .collect()
}

fn inject(h: &mut Hospital, rng: &mut SmallRng, k: usize, acc: &mut Vec<Access>) {
    let pools = Pools::of(h);
    for &category in CATEGORIES {
        let mut made = 0;
        let mut tries = 0;
        while made < k && tries < k * 200 {
            tries += 1;
            let any = pick(rng, &pools.clinical).unwrap_or(0);
            let (staff, patient, t, btg) = match attempt(h, rng, &pools, category, any) {
                Attempt::Made(s, p, t, btg) => (s, p, t, btg),
                Attempt::Retry => continue,
                Attempt::GiveUp => break,
            };
            h.patients[patient].frozen = true;
            acc.push(Access {
                t,
                staff,
                patient,
                kind: kind(rng),
                break_glass: btg,
                label: Label::Violation(category),
            });
            made += 1;
        }
    }
}

/// Who and whom the injected violations are drawn from.
struct Pools {
    clinical: Vec<usize>,
    office: Vec<usize>,
    with_self: Vec<usize>,
    terminated: Vec<usize>,
    vips: Vec<usize>,
    sensitive: Vec<usize>,
    deceased: Vec<usize>,
}

impl Pools {
    fn of(h: &Hospital) -> Pools {
        let patients = |f: &dyn Fn(&super::hospital::Patient) -> bool| -> Vec<usize> {
            (0..h.patients.len())
                .filter(|&p| f(&h.patients[p]))
                .collect()
        };
        Pools {
            clinical: active_staff(h, |s| s.clinical()),
            office: active_staff(h, |s| !s.clinical()),
            with_self: active_staff(h, |s| s.self_patient.is_some()),
            terminated: (0..h.staff.len())
                .filter(|&s| h.staff[s].terminated)
                .collect(),
            vips: patients(&|p| p.vip),
            sensitive: patients(&|p| p.sensitive.is_some()),
            deceased: patients(&|p| p.deceased_ms.is_some()),
        }
    }
}

/// One try at a violation of a category.
enum Attempt {
    /// Staff, patient, time, break-the-glass.
    Made(usize, usize, i64, bool),
    /// This draw does not fit; draw again.
    Retry,
    /// Nobody can commit this violation in this hospital.
    GiveUp,
}

/// Draws a violation of `category`; `any` is a clinician already drawn for categories that
/// take anyone.
fn attempt(
    h: &mut Hospital,
    rng: &mut SmallRng,
    pools: &Pools,
    category: &'static str,
    any: usize,
) -> Attempt {
    match category {
        "self_access" => {
            let Some(s) = pick(rng, &pools.with_self) else {
                return Attempt::GiveUp;
            };
            let p = h.staff[s].self_patient.unwrap_or(0);
            Attempt::Made(s, p, shift_time(h, rng, h.staff[s].shift), false)
        }
        "family" => {
            let s = any;
            let (fam, addr) = (h.staff[s].family.clone(), h.staff[s].addr);
            let p = h.add_special_patient(fam, Some(addr));
            Attempt::Made(s, p, shift_time(h, rng, h.staff[s].shift), false)
        }
        "neighbor" => {
            let s = any;
            let mut addr = h.staff[s].addr;
            addr.number = if addr.number > 200 {
                addr.number - 7
            } else {
                addr.number + 7
            };
            let mut fam = rare_family(rng.random_range(0..500));
            if fam == h.staff[s].family {
                fam = COMMON_FAMILY[0].to_owned();
            }
            if fam == h.staff[s].family {
                return Attempt::Retry;
            }
            let p = h.add_special_patient(fam, Some(addr));
            Attempt::Made(s, p, shift_time(h, rng, h.staff[s].shift), false)
        }
        "coworker" => {
            let Some(c) = pick(rng, &pools.with_self) else {
                return Attempt::GiveUp;
            };
            let dept = h.staff[c].dept;
            let peers: Vec<usize> = pools
                .clinical
                .iter()
                .copied()
                .filter(|&s| s != c && h.staff[s].dept == dept)
                .collect();
            let Some(s) = pick(rng, &peers) else {
                return Attempt::Retry;
            };
            let p = h.staff[c].self_patient.unwrap_or(0);
            Attempt::Made(s, p, shift_time(h, rng, h.staff[s].shift), false)
        }
        "vip" | "sensitive" | "deceased" => {
            let pool = match category {
                "vip" => &pools.vips,
                "sensitive" => &pools.sensitive,
                _ => &pools.deceased,
            };
            let Some(p) = pick(rng, pool) else {
                return Attempt::GiveUp;
            };
            if h.related(any, p) {
                return Attempt::Retry;
            }
            h.opened_sensitive.insert((any, p));
            Attempt::Made(any, p, shift_time(h, rng, h.staff[any].shift), false)
        }
        "terminated_user" => {
            let Some(s) = pick(rng, &pools.terminated) else {
                return Attempt::GiveUp;
            };
            let Some(p) = quiet_patient(h, rng, s) else {
                return Attempt::Retry;
            };
            Attempt::Made(s, p, time_in(h, rng, 0..24), false)
        }
        "break_glass" => {
            let Some(p) = quiet_patient(h, rng, any) else {
                return Attempt::Retry;
            };
            Attempt::Made(any, p, shift_time(h, rng, h.staff[any].shift), true)
        }
        "after_hours" => {
            let Some(s) = pick(rng, &pools.office) else {
                return Attempt::GiveUp;
            };
            let Some(p) = quiet_patient(h, rng, s) else {
                return Attempt::Retry;
            };
            let t = if rng.random_bool(0.5) {
                time_in(h, rng, 0..6)
            } else {
                time_in(h, rng, 20..24)
            };
            Attempt::Made(s, p, t, false)
        }
        _ => {
            let Some(p) = quiet_patient(h, rng, any) else {
                return Attempt::Retry;
            };
            Attempt::Made(any, p, shift_time(h, rng, h.staff[any].shift), false)
        }
    }
}

/// A spelling variant of a family name that sounds the same: one vowel changed.
fn variant(family: &str) -> Option<String> {
    let chars: Vec<char> = family.chars().collect();
    let i = (1..chars.len()).find(|&i| "aeiou".contains(chars[i]))?;
    let swap = match chars[i] {
        'a' => 'e',
        'e' => 'a',
        'i' => 'y',
        'o' => 'u',
        _ => 'o',
    };
    let mut v = chars.clone();
    v[i] = swap;
    Some(v.into_iter().collect())
}

/// A patient `s` may open without any label, household or workforce coincidence.
fn plain(h: &Hospital, s: usize, p: usize) -> bool {
    let pt = &h.patients[p];
    !pt.vip
        && pt.sensitive.is_none()
        && pt.deceased_ms.is_none()
        && pt.employee_of.is_none()
        && pt.family != h.staff[s].family
        && !pt.addr.is_some_and(|a| a.same_street(&h.staff[s].addr))
}

/// Routine consults: (role, consultant's department, patient's department). The consultant
/// is on no encounter or care team of the patient, so today's policies leave these
/// unexplained; they repeat every day across many users, which is what explanation mining
/// learns from.
const CONSULTS: &[(&str, &str, &str)] = &[
    ("doctor", "cardiology", "icu"),
    ("doctor", "neurology", "emergency"),
    ("doctor", "psychiatry", "internal-medicine"),
    ("therapist", "orthopedics", "surgery"),
    ("pharmacist", "internal-medicine", "icu"),
];

fn dept_ix(id: &str) -> usize {
    DEPARTMENTS
        .iter()
        .position(|d| d.id == id)
        .expect("a demo department")
}

fn consults(h: &Hospital, rng: &mut SmallRng, n: usize, acc: &mut Vec<Access>) {
    let patterns: Vec<(Vec<usize>, usize)> = CONSULTS
        .iter()
        .map(|&(role, from, to)| {
            let from = dept_ix(from);
            let staff = active_staff(h, |s| {
                s.role == role && s.dept == from && s.shift == Shift::Day
            });
            (staff, dept_ix(to))
        })
        .filter(|(staff, to)| !staff.is_empty() && !h.dept_patients[*to].is_empty())
        .collect();
    let mut made = 0;
    for _ in 0..n * 20 {
        if made == n {
            break;
        }
        if patterns.is_empty() {
            break;
        }
        let (staff, to) = &patterns[rng.random_range(0..patterns.len())];
        let (Some(s), Some(p)) = (pick(rng, staff), pick(rng, &h.dept_patients[*to])) else {
            continue;
        };
        if h.related(s, p) || !plain(h, s, p) || h.staff[s].self_patient == Some(p) {
            continue;
        }
        acc.push(Access {
            t: shift_time(h, rng, Shift::Day),
            staff: s,
            patient: p,
            kind: kind(rng),
            break_glass: false,
            label: Label::HardNegative("routine_consult"),
        });
        made += 1;
    }
}

/// Steady heavy users: health-information coders and radiology technicians who open 60 to
/// 90 distinct charts in every hour of their shift, every day. Their work is explained (a
/// business need, a department encounter); only a volume detector that judges them against
/// lighter peers instead of their own history would flag them.
fn heavy_users(h: &Hospital, rng: &mut SmallRng, acc: &mut Vec<Access>) {
    let radiology = dept_ix("radiology");
    let coders: Vec<usize> = active_staff(h, |s| s.role == "him")
        .into_iter()
        .take(3)
        .collect();
    let techs: Vec<usize> = active_staff(h, |s| {
        s.role == "technician" && s.dept == radiology && s.shift == Shift::Day
    })
    .into_iter()
    .take(3)
    .collect();
    for (users, hours) in [(coders, 8..17), (techs, 7..19)] {
        for s in users {
            let pool: Vec<usize> = if h.staff[s].role == "him" {
                h.recent_patients.clone()
            } else {
                h.dept_patients[radiology].clone()
            };
            let pool: Vec<usize> = pool.into_iter().filter(|&p| plain(h, s, p)).collect();
            if pool.len() < 100 {
                continue;
            }
            for hour in hours.clone() {
                let n = rng.random_range(60..=90);
                let start = h.day_start + hour * MS_PER_HOUR;
                for j in 0..n {
                    acc.push(Access {
                        t: start + j * (MS_PER_HOUR / n) + rng.random_range(0..MS_PER_HOUR / n),
                        staff: s,
                        patient: pool[rng.random_range(0..pool.len())],
                        kind: kind(rng),
                        break_glass: false,
                        label: Label::Normal,
                    });
                }
            }
        }
    }
}

fn inject_plugin_scenarios(h: &mut Hospital, rng: &mut SmallRng, k: usize, acc: &mut Vec<Access>) {
    let clinical = active_staff(h, |s| s.clinical());
    let day_clinical = active_staff(h, |s| s.clinical() && s.shift == Shift::Day);
    inject_volume(h, rng, k, acc, &day_clinical);
    inject_break_glass(h, rng, k, acc, &clinical);
    inject_family_fuzzy(h, rng, k, acc, &clinical);
    inject_first_sensitive(h, rng, k, acc, &clinical);
}

/// Volume: a user opens 45 of their department's patients within about 40 minutes.
fn inject_volume(
    h: &mut Hospital,
    rng: &mut SmallRng,
    k: usize,
    acc: &mut Vec<Access>,
    day_clinical: &[usize],
) {
    let bursts = (k / 10).max(2);
    for _ in 0..bursts * 20 {
        if acc
            .iter()
            .filter(|a| a.label == Label::Violation("volume_anomaly"))
            .count()
            >= bursts * 45
        {
            break;
        }
        let Some(s) = pick(rng, day_clinical) else {
            break;
        };
        let mut pool: Vec<usize> = h.dept_patients[h.staff[s].dept]
            .iter()
            .copied()
            .filter(|&p| plain(h, s, p))
            .collect();
        if pool.len() < 45 {
            continue;
        }
        let t0 = time_in(h, rng, 10..15);
        for j in 0..45 {
            let p = pool.swap_remove(rng.random_range(0..pool.len()));
            acc.push(Access {
                t: t0 + j * 55_000,
                staff: s,
                patient: p,
                kind: 0,
                break_glass: false,
                label: Label::Violation("volume_anomaly"),
            });
        }
    }
}

/// Break-the-glass: an Emergency colleague breaks the glass three times on one visit
/// (the third is the misuse); staff from other departments break it on an Emergency visit.
fn inject_break_glass(
    h: &mut Hospital,
    rng: &mut SmallRng,
    k: usize,
    acc: &mut Vec<Access>,
    clinical: &[usize],
) {
    let ed_staff = active_staff(h, |s| s.dept == EMERGENCY && s.clinical());
    let other_staff: Vec<usize> = clinical
        .iter()
        .copied()
        .filter(|&s| h.staff[s].dept != EMERGENCY && h.staff[s].shift == Shift::Day)
        .collect();
    let ed_visits: Vec<usize> = (0..h.encounters.len())
        .filter(|&e| {
            let enc = &h.encounters[e];
            enc.class == EncounterClass::Emergency
                && enc.start >= h.day_start + 11 * MS_PER_HOUR
                && enc.start < h.day_start + 17 * MS_PER_HOUR
        })
        .collect();
    let mut made = 0;
    for _ in 0..k * 50 {
        if made == k {
            break;
        }
        let Some(e) = pick(rng, &ed_visits) else {
            break;
        };
        let (patient, start, participants) = {
            let enc = &h.encounters[e];
            (enc.patient, enc.start, enc.participants.clone())
        };
        let repeat = made % 2 == 0;
        let Some(s) = pick(rng, if repeat { &ed_staff } else { &other_staff }) else {
            continue;
        };
        if participants.contains(&s)
            || h.related(s, patient) && !repeat
            || !repeat && h.broke_glass.contains(&s)
            || h.staff[s].self_patient == Some(patient)
        {
            continue;
        }
        let first = start + rng.random_range(0..30 * 60_000);
        let times: Vec<i64> = if repeat {
            vec![first, first + 2 * MS_PER_HOUR, first + 4 * MS_PER_HOUR]
        } else {
            vec![first]
        };
        let last = times.len() - 1;
        for (i, t) in times.into_iter().enumerate() {
            acc.push(Access {
                t,
                staff: s,
                patient,
                kind: 0,
                break_glass: true,
                label: if i == last {
                    Label::Violation("break_glass_misuse")
                } else {
                    Label::Normal
                },
            });
        }
        made += 1;
    }
}

/// Fuzzy family: a relative whose family name is spelt differently, at the user's home
/// address written another way.
fn inject_family_fuzzy(
    h: &mut Hospital,
    rng: &mut SmallRng,
    k: usize,
    acc: &mut Vec<Access>,
    clinical: &[usize],
) {
    let mut made = 0;
    for _ in 0..k * 20 {
        if made == k {
            break;
        }
        let Some(s) = pick(rng, clinical) else { break };
        let Some(fam) = variant(&h.staff[s].family) else {
            continue;
        };
        let addr = h.staff[s].addr;
        let p = h.add_special_patient(fam, Some(addr));
        h.patients[p].alt_address = true;
        acc.push(Access {
            t: shift_time(h, rng, h.staff[s].shift),
            staff: s,
            patient: p,
            kind: kind(rng),
            break_glass: false,
            label: Label::Violation("family_fuzzy"),
        });
        made += 1;
    }
}

/// First-time sensitive or VIP record, by a user from outside the patient's departments.
fn inject_first_sensitive(
    h: &mut Hospital,
    rng: &mut SmallRng,
    k: usize,
    acc: &mut Vec<Access>,
    clinical: &[usize],
) {
    let pool: Vec<usize> = (0..h.patients.len())
        .filter(|&p| h.patients[p].vip || h.patients[p].sensitive.is_some())
        .collect();
    let mut made = 0;
    for _ in 0..k * 50 {
        if made == k {
            break;
        }
        let (Some(s), Some(p)) = (pick(rng, clinical), pick(rng, &pool)) else {
            break;
        };
        if h.related(s, p)
            || h.staff[s].self_patient == Some(p)
            || !h.opened_sensitive.insert((s, p))
        {
            continue;
        }
        h.patients[p].frozen = true;
        acc.push(Access {
            t: shift_time(h, rng, h.staff[s].shift),
            staff: s,
            patient: p,
            kind: kind(rng),
            break_glass: false,
            label: Label::Violation("first_time_sensitive"),
        });
        made += 1;
    }
}

/// A hard negative must be judged on its own merits. One that falls within an hour of its
/// user's injected volume spree is part of that spree (the volume detector rightly counts it),
/// so the truth could not call it a negative: it is left out, and ordinary traffic fills in.
fn drop_hard_negatives_inside_sprees(acc: &mut Vec<Access>) {
    const HOUR_MS: i64 = 3_600_000;
    let mut sprees: std::collections::HashMap<usize, (i64, i64)> = Default::default();
    for a in acc
        .iter()
        .filter(|a| a.label == Label::Violation("volume_anomaly"))
    {
        let e = sprees.entry(a.staff).or_insert((a.t, a.t));
        e.0 = e.0.min(a.t);
        e.1 = e.1.max(a.t);
    }
    acc.retain(|a| {
        !matches!(a.label, Label::HardNegative(_))
            || sprees
                .get(&a.staff)
                .is_none_or(|&(t0, t1)| a.t < t0 - HOUR_MS || a.t > t1 + HOUR_MS)
    });
}

fn hard_negatives(h: &mut Hospital, rng: &mut SmallRng, k: usize, acc: &mut Vec<Access>) {
    let common: Vec<usize> = (0..h.staff.len())
        .filter(|&s| {
            let st = &h.staff[s];
            !st.terminated
                && st.clinical()
                && !h.panel[s].is_empty()
                && COMMON_FAMILY[..10].contains(&st.family.as_str())
        })
        .collect();
    for i in 0..k {
        let Some(s) = pick(rng, &common) else { break };
        let Some(p) = pick(rng, &h.panel[s]) else {
            continue;
        };
        if h.patients[p].employee_of.is_some() {
            continue;
        }
        h.patients[p].family = h.staff[s].family.clone();
        if i % 2 == 0 {
            // A relative under this user's care: same name and household, and explained.
            h.patients[p].addr = Some(h.staff[s].addr);
        }
        let t = shift_time(h, rng, h.staff[s].shift);
        acc.push(Access {
            t,
            staff: s,
            patient: p,
            kind: kind(rng),
            break_glass: false,
            label: Label::HardNegative("common_name_treated"),
        });
    }

    let night_nurses = active_staff(h, |s| s.role == "nurse" && s.shift == Shift::Night);
    let night_nurses: Vec<usize> = night_nurses
        .into_iter()
        .filter(|&s| !h.panel[s].is_empty())
        .collect();
    for _ in 0..k {
        let Some(s) = pick(rng, &night_nurses) else {
            break;
        };
        let Some(p) = pick(rng, &h.panel[s]) else {
            continue;
        };
        acc.push(Access {
            t: time_in(h, rng, 0..6),
            staff: s,
            patient: p,
            kind: kind(rng),
            break_glass: false,
            label: Label::HardNegative("night_shift_nurse"),
        });
    }

    let ed_staff = active_staff(h, |s| s.dept == EMERGENCY && s.clinical());
    let ed_visits: Vec<usize> = (0..h.encounters.len())
        .filter(|&e| h.encounters[e].class == EncounterClass::Emergency)
        .collect();
    let mut made = 0;
    for _ in 0..k * 50 {
        if made == k {
            break;
        }
        let (Some(s), Some(e)) = (pick(rng, &ed_staff), pick(rng, &ed_visits)) else {
            break;
        };
        let enc = &h.encounters[e];
        if enc.participants.contains(&s) || h.staff[s].self_patient == Some(enc.patient) {
            continue;
        }
        let end = enc.end.unwrap_or(enc.start + MS_PER_HOUR);
        let t = rng.random_range(enc.start..end);
        let patient = enc.patient;
        acc.push(Access {
            t,
            staff: s,
            patient,
            kind: kind(rng),
            break_glass: true,
            label: Label::HardNegative("break_glass_ed"),
        });
        made += 1;
    }
}

fn normal(h: &Hospital, rng: &mut SmallRng, n: usize, acc: &mut Vec<Access>) {
    let by_shift = |shift: Shift| -> Vec<usize> {
        active_staff(h, |s| s.shift == shift)
            .into_iter()
            .filter(|&s| {
                if h.staff[s].clinical() {
                    !h.panel[s].is_empty() || !h.dept_patients[h.staff[s].dept].is_empty()
                } else {
                    matches!(h.staff[s].role, "billing" | "registration" | "him")
                }
            })
            .collect()
    };
    let day_staff = by_shift(Shift::Day);
    let night_staff = by_shift(Shift::Night);
    let office_staff = by_shift(Shift::Office);
    let dept_ok: Vec<Vec<usize>> = h
        .dept_patients
        .iter()
        .map(|ps| {
            ps.iter()
                .copied()
                .filter(|&p| h.patients[p].sensitive.is_none())
                .collect()
        })
        .collect();
    let total: u32 = HOUR_WEIGHT.iter().sum();
    let target = acc.len() + n;
    let mut attempts = 0;
    while acc.len() < target && attempts < n * 4 {
        attempts += 1;
        let mut x = rng.random_range(0..total);
        let mut hour = 0;
        while x >= HOUR_WEIGHT[hour] {
            x -= HOUR_WEIGHT[hour];
            hour += 1;
        }
        let t = h.day_start + hour as i64 * MS_PER_HOUR + rng.random_range(0..MS_PER_HOUR);
        let office_hour = on_shift(Shift::Office, hour as i64);
        let (staff, patient) = if office_hour && rng.random_bool(0.12) {
            let Some(s) = pick(rng, &office_staff) else {
                continue;
            };
            let Some(p) = pick(rng, &h.recent_patients) else {
                continue;
            };
            // A VIP chart opened without care is flagged even with a billing reason: by design.
            if h.patients[p].vip {
                continue;
            }
            (s, p)
        } else {
            let pool = if on_shift(Shift::Day, hour as i64) {
                &day_staff
            } else {
                &night_staff
            };
            let Some(s) = pick(rng, pool) else { continue };
            let panel = &h.panel[s];
            let p = if !panel.is_empty() && rng.random_bool(0.85) {
                pick(rng, panel)
            } else {
                pick(rng, &dept_ok[h.staff[s].dept])
            };
            let Some(p) = p else { continue };
            if h.staff[s].self_patient == Some(p) {
                continue;
            }
            (s, p)
        };
        acc.push(Access {
            t,
            staff,
            patient,
            kind: kind(rng),
            break_glass: false,
            label: Label::Normal,
        });
    }
}
