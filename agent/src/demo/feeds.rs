//! The demo hospital as a hospital without FHIR would hand it over: an HR roster (Workday-
//! like columns), an identity crosswalk (EHR ids, employee ids, logins, MRNs), and HL7 v2 ADT
//! messages (registrations, admissions, visits, discharges), with the `[[context]]` tables
//! that read them (`feeds.toml`).
//!
//! What FHIR says with CareTeam and Appointment, ADT says with the visit's consulting doctors
//! (PV1-9) and an outpatient visit; security labels travel in a site-defined `ZPD` segment,
//! as HL7 v2 has no standard field for them (the feed names it: `labels = "ZPD-1"`).

use super::hospital::{style_of, EncounterClass, Hospital, DEPARTMENTS};
use super::names::GIVEN;
use crate::time::MS_PER_DAY;
use chrono::TimeZone;
use std::io::Write;
use std::path::Path;

/// The identifier systems the demo's feeds and logs use.
pub const LOGIN_SYSTEM: &str = "urn:demo-hospital:ehr-login";
pub const MRN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.5555.1";
pub const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";
/// The MRNs' assigning authority in HL7 v2 (CX.4).
const MRN_AUTHORITY: &str = "SPRINGFIELD";

/// The job titles HR uses for the demo's roles.
const TITLES: &[(&str, &str)] = &[
    ("doctor", "Physician"),
    ("nurse", "Registered Nurse"),
    ("therapist", "Physical Therapist"),
    ("pharmacist", "Clinical Pharmacist"),
    ("technician", "Radiologic Technologist"),
    ("billing", "Patient Account Representative"),
    ("registration", "Patient Access Specialist"),
    ("him", "Health Information Technician"),
    ("admin", "Administrative Assistant"),
];

impl Hospital {
    /// The EHR login of staff member `i`.
    pub fn login(&self, i: usize) -> String {
        let s = &self.staff[i];
        let given = GIVEN[i % GIVEN.len()];
        let family: String = s
            .family
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        format!("{}{family}{i}", given[..1].to_lowercase())
    }

    pub fn npi(&self, i: usize) -> String {
        format!("1{:09}", 100_000 + i)
    }

    pub fn mrn(&self, p: usize) -> String {
        format!("M{p:07}")
    }

    pub fn employee_id(&self, i: usize) -> String {
        format!("E{:06}", 10_000 + i)
    }

    pub fn write_feeds(&self, dir: &Path, zone: chrono_tz::Tz) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        self.write_roster(dir)?;
        self.write_crosswalk(dir)?;
        self.write_adt(dir, zone)?;
        std::fs::write(dir.join("feeds.toml"), FEEDS_TOML)
    }

    fn write_roster(&self, dir: &Path) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join("roster.csv"))?);
        writeln!(
            w,
            "Employee ID,EHR Login,NPI,Last Name,First Name,Home Address Line 1,City,State,ZIP,Department,Job Title,Hire Date,Termination Date,Worker Status"
        )?;
        let day = chrono::DateTime::from_timestamp_millis(self.day_start - 7 * MS_PER_DAY)
            .map(|t| t.format("%m/%d/%Y").to_string())
            .unwrap_or_default();
        for (i, s) in self.staff.iter().enumerate() {
            // The roster is HR's own typing of the address, not the EHR's.
            let a = s.addr.written(style_of(3, i), i as u64 ^ 0x4852);
            let title = TITLES
                .iter()
                .find(|(r, _)| *r == s.role)
                .map_or(s.role, |(_, t)| t);
            writeln!(
                w,
                "{},{},{},{},{},\"{}\",{},IL,{},\"{}\",{title},01/05/2015,{},{}",
                self.employee_id(i),
                self.login(i),
                if s.role == "doctor" {
                    self.npi(i)
                } else {
                    String::new()
                },
                s.family,
                GIVEN[i % GIVEN.len()],
                a.line,
                a.city,
                a.zip,
                DEPARTMENTS[s.dept].name,
                if s.terminated { day.as_str() } else { "" },
                if s.terminated { "Terminated" } else { "Active" },
            )?;
        }
        w.flush()
    }

    /// One row per workforce member (their EHR id, employee id, and the MRN of their own
    /// chart when they have one) and one per patient (EHR id and MRN): an MPI extract.
    fn write_crosswalk(&self, dir: &Path) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join("crosswalk.csv"))?);
        writeln!(w, "EHR User ID,Employee ID,EHR Patient ID,MRN")?;
        for (i, s) in self.staff.iter().enumerate() {
            let (pid, mrn) = match s.self_patient {
                Some(p) => (self.patients[p].id.clone(), self.mrn(p)),
                None => (String::new(), String::new()),
            };
            writeln!(w, "{},{},{pid},{mrn}", s.id, self.employee_id(i))?;
        }
        for (p, pt) in self.patients.iter().enumerate() {
            if pt.employee_of.is_none() {
                writeln!(w, ",,{},{}", pt.id, self.mrn(p))?;
            }
        }
        w.flush()
    }

    fn write_adt(&self, dir: &Path, zone: chrono_tz::Tz) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join("adt.hl7"))?);
        let ts = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| {
                    zone.from_utc_datetime(&t.naive_utc())
                        .format("%Y%m%d%H%M%S%z")
                        .to_string()
                })
                .unwrap_or_default()
        };
        let mut n = 0u64;
        let mut msg = |w: &mut std::io::BufWriter<std::fs::File>,
                       event: &str,
                       at: i64,
                       body: &str|
         -> std::io::Result<()> {
            n += 1;
            write!(
                w,
                "MSH|^~\\&|DEMO-EHR|SPRINGFIELD|PHIWATCH|SPRINGFIELD|{}||ADT^{event}^ADT_A01|DEMO{n:08}|P|2.5.1\r\nEVN|{event}|{}\r\n{body}",
                ts(at),
                ts(at)
            )
        };
        // Every patient is registered (A28, add person information), with their labels.
        for p in 0..self.patients.len() {
            let body = self.pid_segments(p, &ts);
            msg(&mut w, "A28", self.day_start - 400 * MS_PER_DAY, &body)?;
        }
        for (e, enc) in self.encounters.iter().enumerate() {
            let attending = enc.participants.first().copied();
            let mut consulting: Vec<usize> = enc.participants.iter().skip(1).copied().collect();
            // A care team's members are the visit's consulting clinicians.
            for c in self
                .care_teams
                .iter()
                .filter(|c| c.patient == enc.patient && c.start == enc.start)
            {
                consulting.extend(c.members.iter().copied());
            }
            consulting.sort_unstable();
            consulting.dedup();
            consulting.retain(|s| Some(*s) != attending);
            let xcn = |s: usize| {
                format!(
                    "{}^{}^{}",
                    self.login(s),
                    self.staff[s].family,
                    GIVEN[s % GIVEN.len()]
                )
            };
            let mut pv1 = vec![String::new(); 46];
            pv1[0] = "PV1".into();
            pv1[1] = "1".into();
            pv1[2] = match enc.class {
                EncounterClass::Inpatient => "I",
                EncounterClass::Emergency => "E",
                _ => "O",
            }
            .into();
            pv1[3] = format!("{}^^^SPRINGFIELD", DEPARTMENTS[enc.dept].id.to_uppercase());
            pv1[7] = attending.map(xcn).unwrap_or_default();
            pv1[9] = consulting
                .iter()
                .map(|&s| xcn(s))
                .collect::<Vec<_>>()
                .join("~");
            pv1[10] = DEPARTMENTS[enc.dept].id.to_uppercase();
            pv1[19] = format!("V{e:07}");
            pv1[44] = ts(enc.start);
            let event = if enc.class == EncounterClass::Inpatient {
                "A01"
            } else {
                "A04"
            };
            let body = format!(
                "{}{}\r\n",
                self.pid_segments(enc.patient, &ts),
                pv1.join("|")
            );
            msg(&mut w, event, enc.start, &body)?;
            if let Some(end) = enc.end {
                pv1[45] = ts(end);
                let body = format!(
                    "{}{}\r\n",
                    self.pid_segments(enc.patient, &ts),
                    pv1.join("|")
                );
                msg(&mut w, "A03", end, &body)?;
            }
        }
        w.flush()
    }

    /// PID (and ZPD with the security labels) of patient `p`.
    fn pid_segments(&self, p: usize, ts: &dyn Fn(i64) -> String) -> String {
        let pt = &self.patients[p];
        let addr = pt
            .addr
            .map(|a| {
                let w = pt.address_written(a, p);
                format!("{}^^{}^IL^{}", w.line, w.city, w.zip)
            })
            .unwrap_or_default();
        let (died, flag) = match pt.deceased_ms {
            Some(d) => (ts(d), "Y"),
            None => (String::new(), ""),
        };
        let mut pid = vec![String::new(); 31];
        pid[0] = "PID".into();
        pid[1] = "1".into();
        pid[3] = format!("{}^^^{MRN_AUTHORITY}^MR", self.mrn(p));
        pid[5] = format!("{}^{}", pt.family, GIVEN[(p * 7) % GIVEN.len()]);
        pid[11] = addr;
        pid[29] = died;
        pid[30] = flag.into();
        let mut labels = Vec::new();
        if pt.vip {
            labels.push("CEL");
        }
        if pt.employee_of.is_some() {
            labels.push("EMP");
        }
        if let Some(s) = pt.sensitive {
            labels.push(s);
        }
        let zpd = if labels.is_empty() {
            String::new()
        } else {
            format!("ZPD|{}\r\n", labels.join("~"))
        };
        format!("{}\r\n{zpd}", pid.join("|"))
    }
}

/// The `[[context]]` tables that read the demo's feeds (paths relative to this file).
pub const FEEDS_TOML: &str = r#"# The demo hospital's context as a hospital without FHIR hands it over.

[[context]]
kind = "hr-csv"
path = "roster.csv"
id_system = "urn:demo-hospital:employee"
[context.columns]
id = ["Employee ID", "Worker ID"]
family = "Last Name"
given = "First Name"
address = "Home Address Line 1"
city = "City"
state = "State"
postal_code = "ZIP"
department = "Department"
job_title = "Job Title"
hire_date = "Hire Date"
termination_date = "Termination Date"
status = "Worker Status"
[context.identifiers]
"EHR Login" = "urn:demo-hospital:ehr-login"
"NPI" = "http://hl7.org/fhir/sid/us-npi"
[context.roles]
"Physician" = "doctor"
"Registered Nurse" = "nurse"
"Physical Therapist" = "therapist"
"Clinical Pharmacist" = "pharmacist"
"Radiologic Technologist" = "technician"
"Patient Account Representative" = "billing"
"Patient Access Specialist" = "registration"
"Health Information Technician" = "him"
"Administrative Assistant" = "admin"
[context.departments]
"Emergency Department" = "emergency"
"Cardiology" = "cardiology"
"Oncology" = "oncology"
"Pediatrics" = "pediatrics"
"Obstetrics" = "obstetrics"
"Orthopedics" = "orthopedics"
"Neurology" = "neurology"
"Psychiatry" = "psychiatry"
"General Surgery" = "surgery"
"Intensive Care Unit" = "icu"
"Internal Medicine" = "internal-medicine"
"Radiology" = "radiology"
"Patient Financial Services" = "billing-office"
"Patient Access" = "registration"
"Health Information Management" = "health-information"
"Information Technology" = "it"

[[context]]
kind = "crosswalk-csv"
path = "crosswalk.csv"
[context.users]
"EHR User ID" = "id"
"Employee ID" = "urn:demo-hospital:employee"
[context.patients]
"EHR Patient ID" = "id"
"MRN" = "SPRINGFIELD"

[[context]]
kind = "hl7v2"
paths = ["adt.hl7"]
labels = "ZPD-1"
[context.departments]
EMERGENCY = "emergency"
CARDIOLOGY = "cardiology"
ONCOLOGY = "oncology"
PEDIATRICS = "pediatrics"
OBSTETRICS = "obstetrics"
ORTHOPEDICS = "orthopedics"
NEUROLOGY = "neurology"
PSYCHIATRY = "psychiatry"
SURGERY = "surgery"
ICU = "icu"
INTERNAL-MEDICINE = "internal-medicine"
RADIOLOGY = "radiology"
"#;
