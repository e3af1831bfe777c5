//! The synthetic hospital: departments, staff, patients, encounters, care teams, appointments,
//! written as FHIR R4 NDJSON in Bulk Data export shape.

use super::names::{rare_family, CITIES, COMMON_FAMILY, GIVEN, STREETS, STREET_KINDS};
use crate::time::{format_ms, MS_PER_DAY, MS_PER_HOUR};
use rand::rngs::SmallRng;
use rand::Rng;
use std::io::Write;
use std::path::Path;

pub struct Department {
    pub id: &'static str,
    pub name: &'static str,
    pub clinical: bool,
}

pub const DEPARTMENTS: &[Department] = &[
    Department {
        id: "emergency",
        name: "Emergency Department",
        clinical: true,
    },
    Department {
        id: "cardiology",
        name: "Cardiology",
        clinical: true,
    },
    Department {
        id: "oncology",
        name: "Oncology",
        clinical: true,
    },
    Department {
        id: "pediatrics",
        name: "Pediatrics",
        clinical: true,
    },
    Department {
        id: "obstetrics",
        name: "Obstetrics",
        clinical: true,
    },
    Department {
        id: "orthopedics",
        name: "Orthopedics",
        clinical: true,
    },
    Department {
        id: "neurology",
        name: "Neurology",
        clinical: true,
    },
    Department {
        id: "psychiatry",
        name: "Psychiatry",
        clinical: true,
    },
    Department {
        id: "surgery",
        name: "General Surgery",
        clinical: true,
    },
    Department {
        id: "icu",
        name: "Intensive Care Unit",
        clinical: true,
    },
    Department {
        id: "internal-medicine",
        name: "Internal Medicine",
        clinical: true,
    },
    Department {
        id: "radiology",
        name: "Radiology",
        clinical: true,
    },
    Department {
        id: "billing-office",
        name: "Patient Financial Services",
        clinical: false,
    },
    Department {
        id: "registration",
        name: "Patient Access",
        clinical: false,
    },
    Department {
        id: "health-information",
        name: "Health Information Management",
        clinical: false,
    },
    Department {
        id: "it",
        name: "Information Technology",
        clinical: false,
    },
];
pub const EMERGENCY: usize = 0;
const CLINICAL_DEPTS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    Day,
    Night,
    Office,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub number: u32,
    pub street: u16,
    pub kind: u8,
    pub city: u8,
}

type NdjsonFile = std::io::BufWriter<std::fs::File>;

impl Addr {
    pub fn random(rng: &mut SmallRng) -> Self {
        Addr {
            number: rng.random_range(1..400),
            street: rng.random_range(0..STREETS.len() as u16),
            kind: rng.random_range(0..STREET_KINDS.len() as u8),
            city: rng.random_range(0..CITIES.len() as u8),
        }
    }

    pub fn same_street(&self, other: &Addr) -> bool {
        self.street == other.street && self.kind == other.kind && self.city == other.city
    }

    /// The address as one record writes it. Real registries spell one house many ways:
    /// suffixes long or short, upper case, with or without a period, ZIP or ZIP+4 (with a
    /// different +4 on different records). `style` picks one of those spellings and `seed`
    /// the +4; detection must see through all of them (USPS Publication 28).
    pub fn written(&self, style: u8, seed: u64) -> Written {
        let (city, zip) = CITIES[self.city as usize];
        let street = STREETS[self.street as usize];
        let long = STREET_KINDS[self.kind as usize];
        let short = match long {
            "Street" => "St",
            "Avenue" => "Ave",
            "Road" => "Rd",
            "Lane" => "Ln",
            "Drive" => "Dr",
            "Court" => "Ct",
            other => other,
        };
        let plus4 = format!(
            "{zip}-{:04}",
            (seed.wrapping_mul(2_654_435_761) >> 7) % 10_000
        );
        let (line, city, zip) = match style % 4 {
            0 => (
                format!("{} {street} {long}", self.number),
                city.to_owned(),
                zip.to_owned(),
            ),
            1 => (
                format!(
                    "{} {} {}.",
                    self.number,
                    street.to_uppercase(),
                    short.to_uppercase()
                ),
                city.to_uppercase(),
                zip.to_owned(),
            ),
            2 => (
                format!("{} {street} {short}", self.number),
                city.to_owned(),
                plus4,
            ),
            _ => (
                format!(
                    "{} {} {}",
                    self.number,
                    street.to_uppercase(),
                    long.to_uppercase()
                ),
                city.to_uppercase(),
                plus4,
            ),
        };
        Written { line, city, zip }
    }
}

/// One spelling of an address: see [`Addr::written`].
pub struct Written {
    pub line: String,
    pub city: String,
    pub zip: String,
}

impl Written {
    fn json(&self) -> String {
        format!(
            r#"[{{"use":"home","line":["{}"],"city":"{}","state":"IL","postalCode":"{}"}}]"#,
            self.line, self.city, self.zip
        )
    }
}

/// How record `ix` of a kind spells its address: a mix, as in a real registry.
pub fn style_of(kind: u64, ix: usize) -> u8 {
    ((ix as u64 ^ kind).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as u8
}

pub struct Staff {
    pub id: String,
    pub family: String,
    pub addr: Addr,
    pub role: &'static str,
    pub dept: usize,
    pub shift: Shift,
    /// Role ended before the demo day.
    pub terminated: bool,
    /// The staff member's own patient record (Person link).
    pub self_patient: Option<usize>,
}

impl Staff {
    pub fn clinical(&self) -> bool {
        DEPARTMENTS[self.dept].clinical
    }
}

#[derive(Default)]
pub struct Patient {
    pub id: String,
    pub family: String,
    pub addr: Option<Addr>,
    pub vip: bool,
    pub sensitive: Option<&'static str>,
    pub deceased_ms: Option<i64>,
    /// Staff index when this record is a workforce member's own chart.
    pub employee_of: Option<usize>,
    /// Created for an injection (household, neighbour): no encounters, no normal traffic.
    pub special: bool,
    /// The target of an injected violation: no new encounters on later days, which would
    /// explain the access the ground truth calls a violation (the context holds every day's
    /// encounters, and a visit the next day is within the break-the-glass window).
    pub frozen: bool,
    /// The address is written the other way from the staff member it is injected against
    /// (abbreviated, upper case), as another clerk would.
    pub alt_address: bool,
    pub encounters: Vec<usize>,
}

impl Patient {
    /// The spelling patient `ix`'s records use.
    pub fn address_written(&self, a: Addr, ix: usize) -> Written {
        let style = if self.alt_address { 1 } else { style_of(2, ix) };
        a.written(style, ix as u64 ^ 0x5eed)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EncounterClass {
    Inpatient,
    Emergency,
    Outpatient,
    Past,
}

pub struct Encounter {
    pub patient: usize,
    pub dept: usize,
    pub start: i64,
    pub end: Option<i64>,
    pub class: EncounterClass,
    pub participants: Vec<usize>,
}

pub struct CareTeam {
    pub patient: usize,
    pub start: i64,
    pub members: Vec<usize>,
}

pub struct Appointment {
    pub patient: usize,
    pub staff: usize,
    pub start: i64,
    pub end: i64,
}

pub struct Hospital {
    /// Local midnight starting the demo day, as UTC epoch ms.
    pub day_start: i64,
    pub staff: Vec<Staff>,
    pub patients: Vec<Patient>,
    pub encounters: Vec<Encounter>,
    pub care_teams: Vec<CareTeam>,
    pub appointments: Vec<Appointment>,
    /// Per staff: patients they have a care relationship with on the demo day.
    pub panel: Vec<Vec<usize>>,
    /// Per department: patients with an encounter there around the demo day.
    pub dept_patients: Vec<Vec<usize>>,
    /// Patients with an encounter in the last 90 days (business-need traffic).
    pub recent_patients: Vec<usize>,
    /// (staff, patient) pairs of injected accesses to sensitive and VIP records so far: a
    /// "first time" on a later day must really be the first.
    pub opened_sensitive: std::collections::HashSet<(usize, usize)>,
    /// Staff who have broken the glass on an earlier day: a later "first break-the-glass"
    /// violation must not be one of them (the detector rightly knows they have before).
    pub broke_glass: std::collections::HashSet<usize>,
}

pub struct Size {
    pub staff: usize,
    pub patients: usize,
}

fn family_name(rng: &mut SmallRng) -> String {
    if rng.random_bool(0.5) {
        // Zipf-like over the common list.
        let i = (rng.random::<f64>().powi(2) * COMMON_FAMILY.len() as f64) as usize;
        COMMON_FAMILY[i.min(COMMON_FAMILY.len() - 1)].to_owned()
    } else {
        rare_family(rng.random_range(0..500))
    }
}

const ROLES: &[(&str, u32)] = &[
    ("doctor", 20),
    ("nurse", 45),
    ("therapist", 5),
    ("pharmacist", 4),
    ("technician", 4),
    ("billing", 8),
    ("registration", 7),
    ("him", 4),
    ("admin", 3),
];

fn pick_role(rng: &mut SmallRng) -> &'static str {
    let total: u32 = ROLES.iter().map(|r| r.1).sum();
    let mut x = rng.random_range(0..total);
    for (r, w) in ROLES {
        if x < *w {
            return r;
        }
        x -= w;
    }
    "nurse"
}

impl Hospital {
    pub fn generate(rng: &mut SmallRng, size: &Size, day_start: i64) -> Hospital {
        let mut h = Hospital {
            day_start,
            staff: Vec::new(),
            patients: Vec::new(),
            encounters: Vec::new(),
            care_teams: Vec::new(),
            appointments: Vec::new(),
            panel: Vec::new(),
            dept_patients: vec![Vec::new(); DEPARTMENTS.len()],
            recent_patients: Vec::new(),
            opened_sensitive: Default::default(),
            broke_glass: Default::default(),
        };
        for i in 0..size.staff {
            let role = pick_role(rng);
            let dept = match role {
                "billing" => 12,
                "registration" => 13,
                "him" => 14,
                "admin" => 15,
                // Emergency and inpatient units are the busiest.
                _ if rng.random_bool(0.2) => EMERGENCY,
                _ => rng.random_range(0..CLINICAL_DEPTS),
            };
            let shift = if dept >= CLINICAL_DEPTS {
                Shift::Office
            } else if rng.random_bool(0.35) {
                Shift::Night
            } else {
                Shift::Day
            };
            h.staff.push(Staff {
                id: format!("pr-{i:05}"),
                family: family_name(rng),
                addr: Addr::random(rng),
                role,
                dept,
                shift,
                terminated: rng.random_bool(0.02),
                self_patient: None,
            });
        }
        for i in 0..size.patients {
            let mut p = Patient {
                id: format!("pt-{i:06}"),
                family: family_name(rng),
                addr: Some(Addr::random(rng)),
                ..Patient::default()
            };
            let r: f64 = rng.random();
            if r < 0.003 {
                p.vip = true;
            } else if r < 0.013 {
                p.sensitive = Some(["PSY", "ETH", "HIV"][rng.random_range(0..3)]);
            } else if r < 0.025 {
                p.deceased_ms = Some(day_start - rng.random_range(45..720) * MS_PER_DAY);
            }
            h.patients.push(p);
        }
        // A third of the workforce also has a chart here (the employee health plan).
        for s in 0..h.staff.len() {
            if rng.random_bool(0.33) {
                let ix = h.add_special_patient(h.staff[s].family.clone(), Some(h.staff[s].addr));
                h.patients[ix].employee_of = Some(s);
                h.staff[s].self_patient = Some(ix);
            }
        }
        h.generate_encounters(rng, size, true);
        h
    }

    /// Moves to the next working day: that day's admissions, emergency visits and clinic
    /// appointments join the record, and yesterday's stay on as follow-up relationships.
    pub fn advance_to(&mut self, rng: &mut SmallRng, size: &Size, day_start: i64) {
        self.day_start = day_start;
        self.generate_encounters(rng, size, false);
    }

    pub fn add_special_patient(&mut self, family: String, addr: Option<Addr>) -> usize {
        let ix = self.patients.len();
        self.patients.push(Patient {
            id: format!("pt-{ix:06}"),
            family,
            addr,
            special: true,
            ..Patient::default()
        });
        ix
    }

    fn staff_of(&self, dept: usize, pred: impl Fn(&Staff) -> bool) -> Vec<usize> {
        (0..self.staff.len())
            .filter(|&s| {
                let st = &self.staff[s];
                st.dept == dept && !st.terminated && pred(st)
            })
            .collect()
    }

    /// The day's encounters; on the `first` day also the stays in progress and the past
    /// months' visits.
    fn generate_encounters(&mut self, rng: &mut SmallRng, size: &Size, first: bool) {
        let by_dept: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = (0..CLINICAL_DEPTS)
            .map(|d| {
                (
                    self.staff_of(d, |s| s.role == "doctor"),
                    self.staff_of(d, |s| s.role == "nurse"),
                    self.staff_of(d, |s| {
                        matches!(s.role, "therapist" | "pharmacist" | "technician")
                    }),
                )
            })
            .collect();
        let eligible: Vec<usize> = (0..self.patients.len())
            .filter(|&p| {
                let pt = &self.patients[p];
                !pt.special && !pt.frozen && pt.deceased_ms.is_none()
            })
            .collect();
        let scale = size.patients as f64 / 30_000.0;
        // Stays average about five days: a fifth of the census is admitted each day.
        let (inpatient, past) = if first {
            (1500.0, 12000.0)
        } else {
            (300.0, 0.0)
        };
        let plan = [
            (EncounterClass::Inpatient, (inpatient * scale) as usize),
            (EncounterClass::Emergency, (350.0 * scale) as usize),
            (EncounterClass::Outpatient, (2500.0 * scale) as usize),
            (EncounterClass::Past, (past * scale) as usize),
        ];
        let day = self.day_start;
        for (class, count) in plan {
            for _ in 0..count {
                let patient = eligible[rng.random_range(0..eligible.len())];
                let dept = match class {
                    EncounterClass::Emergency => EMERGENCY,
                    _ => rng.random_range(0..CLINICAL_DEPTS),
                };
                let (docs, nurses, others) = &by_dept[dept];
                if docs.is_empty() || nurses.is_empty() {
                    continue;
                }
                let (start, end) = match class {
                    EncounterClass::Inpatient if first => {
                        (day - rng.random_range(1..10 * 24) * MS_PER_HOUR, None)
                    }
                    EncounterClass::Inpatient => {
                        (day + rng.random_range(0..20 * 60) * 60_000, None)
                    }
                    EncounterClass::Emergency => {
                        let s = day + rng.random_range(0..22 * 60) * 60_000;
                        (s, Some(s + rng.random_range(2..6) * MS_PER_HOUR))
                    }
                    EncounterClass::Outpatient => {
                        let s = day + rng.random_range(8 * 4..17 * 4) * 15 * 60_000;
                        (s, Some(s + 30 * 60_000))
                    }
                    EncounterClass::Past => {
                        let s = day - rng.random_range(2..60) * MS_PER_DAY;
                        (s, Some(s + rng.random_range(1..48) * MS_PER_HOUR))
                    }
                };
                let mut participants = vec![docs[rng.random_range(0..docs.len())]];
                let n_nurses = if class == EncounterClass::Outpatient {
                    1
                } else {
                    2
                };
                for _ in 0..n_nurses {
                    participants.push(nurses[rng.random_range(0..nurses.len())]);
                }
                // Nobody is on their own care team.
                participants.retain(|&s| self.staff[s].self_patient != Some(patient));
                participants.dedup();
                let enc = self.encounters.len();
                self.patients[patient].encounters.push(enc);
                if class == EncounterClass::Inpatient {
                    let mut members = participants.clone();
                    for pool in [docs, nurses, others] {
                        if !pool.is_empty() {
                            members.push(pool[rng.random_range(0..pool.len())]);
                        }
                    }
                    members.retain(|&s| self.staff[s].self_patient != Some(patient));
                    members.sort_unstable();
                    members.dedup();
                    self.care_teams.push(CareTeam {
                        patient,
                        start,
                        members,
                    });
                }
                if class == EncounterClass::Outpatient {
                    self.appointments.push(Appointment {
                        patient,
                        staff: participants[0],
                        start,
                        end: end.unwrap_or(start),
                    });
                }
                self.encounters.push(Encounter {
                    patient,
                    dept,
                    start,
                    end,
                    class,
                    participants,
                });
            }
        }
        self.index_relationships();
    }

    /// Panels and department lists that normal traffic draws from. Only relationships valid
    /// all demo day are used: past encounters within the 30-day follow-up window.
    fn index_relationships(&mut self) {
        let day = self.day_start;
        let mut panel = vec![Vec::new(); self.staff.len()];
        let mut recent = Vec::new();
        for d in &mut self.dept_patients {
            d.clear();
        }
        for e in &self.encounters {
            let current = e.class != EncounterClass::Past || e.start > day - 25 * MS_PER_DAY;
            if current {
                for &s in &e.participants {
                    panel[s].push(e.patient);
                }
                self.dept_patients[e.dept].push(e.patient);
            }
            recent.push(e.patient);
        }
        for c in &self.care_teams {
            for &s in &c.members {
                panel[s].push(c.patient);
            }
        }
        for p in panel.iter_mut().chain(self.dept_patients.iter_mut()) {
            p.sort_unstable();
            p.dedup();
        }
        recent.sort_unstable();
        recent.dedup();
        self.panel = panel;
        self.recent_patients = recent;
    }

    /// Does anything in the context explain `staff` opening `patient` on the demo day?
    /// Injections use this to pick victims nobody could be treating.
    pub fn related(&self, staff: usize, patient: usize) -> bool {
        let s = &self.staff[staff];
        self.panel[staff].binary_search(&patient).is_ok()
            || self.patients[patient]
                .encounters
                .iter()
                .any(|&e| self.encounters[e].dept == s.dept)
    }

    pub fn write_context(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let file = |name: &str| -> std::io::Result<NdjsonFile> {
            Ok(std::io::BufWriter::new(std::fs::File::create(
                dir.join(format!("{name}.ndjson")),
            )?))
        };
        let mut w = file("Organization")?;
        for d in DEPARTMENTS {
            writeln!(
                w,
                r#"{{"resourceType":"Organization","id":"{}","active":true,"name":"{}"}}"#,
                d.id, d.name
            )?;
        }
        w.flush()?;

        self.write_staff(&file)?;
        self.write_patients(&file)?;
        self.write_encounters(&file)?;
        self.write_care(&file)
    }

    /// Practitioners (with login and NPI), their roles, and the Person links to their own
    /// charts.
    fn write_staff(
        &self,
        file: &impl Fn(&str) -> std::io::Result<NdjsonFile>,
    ) -> std::io::Result<()> {
        let mut pr = file("Practitioner")?;
        let mut role = file("PractitionerRole")?;
        let mut person = file("Person")?;
        for (i, s) in self.staff.iter().enumerate() {
            writeln!(
                pr,
                r#"{{"resourceType":"Practitioner","id":"{}","identifier":[{{"system":"{}","value":"{}"}},{{"system":"{}","value":"{}"}}],"active":true,"name":[{{"use":"official","family":"{}","given":["{}"]}}],"address":{}}}"#,
                s.id,
                super::feeds::LOGIN_SYSTEM,
                self.login(i),
                super::feeds::NPI_SYSTEM,
                self.npi(i),
                s.family,
                GIVEN[i % GIVEN.len()],
                s.addr.written(style_of(1, i), i as u64).json()
            )?;
            let end = if s.terminated {
                format!(r#","end":"{}""#, format_ms(self.day_start - 7 * MS_PER_DAY))
            } else {
                String::new()
            };
            writeln!(
                role,
                r#"{{"resourceType":"PractitionerRole","id":"role-{}","active":{},"practitioner":{{"reference":"Practitioner/{}"}},"organization":{{"reference":"Organization/{}"}},"code":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/practitioner-role","code":"{}"}}]}}],"period":{{"start":"2015-01-01"{end}}}}}"#,
                s.id, !s.terminated, s.id, DEPARTMENTS[s.dept].id, s.role
            )?;
            if let Some(p) = s.self_patient {
                writeln!(
                    person,
                    r#"{{"resourceType":"Person","id":"person-{}","link":[{{"target":{{"reference":"Practitioner/{}"}}}},{{"target":{{"reference":"Patient/{}"}}}}]}}"#,
                    s.id, s.id, self.patients[p].id
                )?;
            }
        }
        for mut w in [pr, role, person] {
            w.flush()?;
        }
        Ok(())
    }

    /// Patients with their MRN, security labels, address and death.
    fn write_patients(
        &self,
        file: &impl Fn(&str) -> std::io::Result<NdjsonFile>,
    ) -> std::io::Result<()> {
        let mut pt = file("Patient")?;
        for (i, p) in self.patients.iter().enumerate() {
            let mut labels = Vec::new();
            if p.vip {
                labels.push("CEL");
            }
            if p.employee_of.is_some() {
                labels.push("EMP");
            }
            if let Some(s) = p.sensitive {
                labels.push(s);
            }
            let meta = if labels.is_empty() {
                String::new()
            } else {
                let codes: Vec<String> = labels
                    .iter()
                    .map(|c| format!(r#"{{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"{c}"}}"#))
                    .collect();
                format!(r#""meta":{{"security":[{}]}},"#, codes.join(","))
            };
            let deceased = p
                .deceased_ms
                .map(|d| format!(r#","deceasedDateTime":"{}""#, format_ms(d)))
                .unwrap_or_default();
            let addr = p
                .addr
                .map(|a| format!(r#","address":{}"#, p.address_written(a, i).json()))
                .unwrap_or_default();
            writeln!(
                pt,
                r#"{{"resourceType":"Patient","id":"{}",{meta}"identifier":[{{"type":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}}]}},"system":"{}","value":"{}"}}],"name":[{{"use":"official","family":"{}","given":["{}"]}}],"gender":"unknown","birthDate":"{}-0{}-1{}"{addr}{deceased}}}"#,
                p.id,
                super::feeds::MRN_SYSTEM,
                self.mrn(i),
                p.family,
                GIVEN[(i * 7) % GIVEN.len()],
                1930 + i % 90,
                1 + i % 9,
                i % 10
            )?;
        }
        pt.flush()
    }

    fn write_encounters(
        &self,
        file: &impl Fn(&str) -> std::io::Result<NdjsonFile>,
    ) -> std::io::Result<()> {
        let mut enc = file("Encounter")?;
        for (i, e) in self.encounters.iter().enumerate() {
            let parts: Vec<String> = e
                .participants
                .iter()
                .map(|&s| {
                    format!(
                        r#"{{"individual":{{"reference":"Practitioner/{}"}}}}"#,
                        self.staff[s].id
                    )
                })
                .collect();
            let (status, class) = match (e.class, e.end) {
                (EncounterClass::Inpatient, _) => ("in-progress", "IMP"),
                (EncounterClass::Emergency, _) => ("finished", "EMER"),
                _ => ("finished", "AMB"),
            };
            let end = e
                .end
                .map(|t| format!(r#","end":"{}""#, format_ms(t)))
                .unwrap_or_default();
            writeln!(
                enc,
                r#"{{"resourceType":"Encounter","id":"enc-{i:06}","status":"{status}","class":{{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"{class}"}},"subject":{{"reference":"Patient/{}"}},"participant":[{}],"period":{{"start":"{}"{end}}},"serviceProvider":{{"reference":"Organization/{}"}}}}"#,
                self.patients[e.patient].id,
                parts.join(","),
                format_ms(e.start),
                DEPARTMENTS[e.dept].id
            )?;
        }
        enc.flush()
    }

    /// Care teams and appointments: the other relationships that explain an access.
    fn write_care(
        &self,
        file: &impl Fn(&str) -> std::io::Result<NdjsonFile>,
    ) -> std::io::Result<()> {
        let mut ct = file("CareTeam")?;
        for (i, c) in self.care_teams.iter().enumerate() {
            let parts: Vec<String> = c
                .members
                .iter()
                .map(|&s| {
                    format!(
                        r#"{{"member":{{"reference":"Practitioner/{}"}}}}"#,
                        self.staff[s].id
                    )
                })
                .collect();
            writeln!(
                ct,
                r#"{{"resourceType":"CareTeam","id":"ct-{i:06}","status":"active","subject":{{"reference":"Patient/{}"}},"period":{{"start":"{}"}},"participant":[{}]}}"#,
                self.patients[c.patient].id,
                format_ms(c.start),
                parts.join(",")
            )?;
        }
        ct.flush()?;

        let mut ap = file("Appointment")?;
        for (i, a) in self.appointments.iter().enumerate() {
            writeln!(
                ap,
                r#"{{"resourceType":"Appointment","id":"ap-{i:06}","status":"booked","start":"{}","end":"{}","participant":[{{"actor":{{"reference":"Patient/{}"}},"status":"accepted"}},{{"actor":{{"reference":"Practitioner/{}"}},"status":"accepted"}}]}}"#,
                format_ms(a.start),
                format_ms(a.end),
                self.patients[a.patient].id,
                self.staff[a.staff].id
            )?;
        }
        ap.flush()
    }
}
