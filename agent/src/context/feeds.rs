//! The context feeds a hospital actually has, declared as `[[context]]` tables:
//!
//! | `kind` | what | gives |
//! |---|---|---|
//! | `fhir` | FHIR R4 NDJSON (Bulk Data export) | users, roles, patients, encounters, care teams, appointments, Person links |
//! | `hr-csv` | the HR roster (Workday or similar) | workforce members: ids and logins, names, home address, department, job title → role, hire/termination dates, status |
//! | `crosswalk-csv` | the identity crosswalk | which ids name one person: EHR login ↔ employee id ↔ AD account ↔ NPI; MRN ↔ EHR patient id; an employee who is also a patient |
//! | `disabled-accounts-csv` | directory export (AD `userAccountControl`, `accountExpires`) | disabled and expired accounts |
//! | `hl7v2` | HL7 v2 ADT files (MLLP-framed or segment per line) | patients, visits, attending/referring/consulting/admitting relationships, merges |
//! | `mllp` | an MLLP listener (TCP, optional TLS) | the same, live; each message acknowledged once spooled |
//!
//! Every column is named by header text (a list of accepted names for exports whose headers
//! drift) or by position; comparison ignores case, spaces and punctuation. A row that cannot
//! be used is counted and reported with file and line, never with its values.

use crate::tabular::ColumnSpec;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `[[context]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ContextFeed {
    Fhir(FhirFeed),
    HrCsv(Box<HrFeed>),
    CrosswalkCsv(CrosswalkFeed),
    DisabledAccountsCsv(DisabledFeed),
    Hl7v2(Hl7Feed),
    Mllp(Box<MllpFeed>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirFeed {
    /// A directory of `*.ndjson`/`*.json` files, or one file.
    pub path: PathBuf,
    /// `phiwatch check` calls the feed stale when its newest file is older than this.
    pub max_age_hours: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HrFeed {
    /// The roster file (or a glob: every match is read, in name order).
    pub path: PathBuf,
    /// `,` `\t` `|` `;`; default: sniffed from the header.
    pub delimiter: Option<char>,
    /// The identifier system of the id column: other feeds and logs name the worker as
    /// `SYSTEM|ID`. Default `hr`.
    #[serde(default = "hr_system")]
    pub id_system: String,
    pub columns: HrColumns,
    /// Further columns that name the worker: column header → identifier system
    /// (`"EHR Login" = "urn:ehr:login"`, `"NPI" = "http://hl7.org/fhir/sid/us-npi"`).
    #[serde(default)]
    pub identifiers: BTreeMap<String, String>,
    /// Job title → phiwatch role (the roles `rules/detection.toml` calls clinical or
    /// business-need); compared without regard to case. Titles not listed become their own
    /// role, lowercased, and are counted.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// HR department name → the department id encounters use; unmapped names are used
    /// lowercased.
    #[serde(default)]
    pub departments: BTreeMap<String, String>,
    /// chrono format of the date columns; default ISO (`2026-03-10`), `03/10/2026` and
    /// `2026-03-10T...` are tried too.
    pub date_format: Option<String>,
    /// Status values that mean the worker may no longer use the EHR (compared without
    /// regard to case). Default: terminated, inactive, separated, retired, deceased.
    #[serde(default = "inactive_statuses")]
    pub inactive_statuses: Vec<String>,
    pub max_age_hours: Option<u64>,
}

fn hr_system() -> String {
    "hr".into()
}

fn inactive_statuses() -> Vec<String> {
    ["terminated", "inactive", "separated", "retired", "deceased"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HrColumns {
    pub id: ColumnSpec,
    pub family: Option<ColumnSpec>,
    pub given: Option<ColumnSpec>,
    pub address: Option<ColumnSpec>,
    pub address2: Option<ColumnSpec>,
    pub city: Option<ColumnSpec>,
    pub state: Option<ColumnSpec>,
    pub postal_code: Option<ColumnSpec>,
    pub department: Option<ColumnSpec>,
    pub job_title: Option<ColumnSpec>,
    /// A phiwatch role directly (instead of the job title table).
    pub role: Option<ColumnSpec>,
    pub hire_date: Option<ColumnSpec>,
    pub termination_date: Option<ColumnSpec>,
    pub last_working_day: Option<ColumnSpec>,
    pub status: Option<ColumnSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrosswalkFeed {
    pub path: PathBuf,
    pub delimiter: Option<char>,
    /// Columns naming one workforce member: column header → identifier system. The system
    /// `id` means the context's own user id (a FHIR Practitioner id).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Columns naming one patient: column header → identifier system (`id`: the context's
    /// own patient id). A row with both is an employee who is also a patient.
    #[serde(default)]
    pub patients: BTreeMap<String, String>,
    pub max_age_hours: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisabledFeed {
    pub path: PathBuf,
    pub delimiter: Option<char>,
    /// The identifier system of the account column (the system logs and the crosswalk use
    /// for directory accounts); the bare value is tried too.
    pub system: Option<String>,
    pub columns: DisabledColumns,
    pub max_age_hours: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisabledColumns {
    pub account: ColumnSpec,
    /// AD `userAccountControl`: bit 2 (ACCOUNTDISABLE) means disabled.
    pub user_account_control: Option<ColumnSpec>,
    /// AD `accountExpires`: a Windows FILETIME (0 and 9223372036854775807 never expire) or
    /// a date.
    pub account_expires: Option<ColumnSpec>,
    /// A yes/no column saying the account is disabled.
    pub disabled: Option<ColumnSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Feed {
    /// Globs of message files (`/srv/adt/*.hl7`), read in name order.
    pub paths: Vec<String>,
    /// PV1-10 hospital service (or PV1-3 point of care) → department id.
    #[serde(default)]
    pub departments: BTreeMap<String, String>,
    /// IANA zone of times written without an offset; default: detection settings' zone.
    pub timezone: Option<chrono_tz::Tz>,
    /// A site-defined field holding the patient's security labels (CEL/VIP, EMP, PSY, ETH,
    /// HIV, R, V), as `SEG-N` (e.g. `ZPD-1`, repeated with `~`). HL7 v2 has no standard
    /// field for them; sites that send them use a Z-segment of their own.
    pub labels: Option<String>,
    pub max_age_hours: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpFeed {
    /// Names the feed's spool and metrics.
    pub name: String,
    pub listen: std::net::SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, senders must present a certificate it signed.
    pub tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    pub departments: BTreeMap<String, String>,
    pub timezone: Option<chrono_tz::Tz>,
    /// As for `hl7v2` files: the site's field of security labels (`ZPD-1`).
    pub labels: Option<String>,
    /// Larger messages are answered AR and the connection closed.
    #[serde(default = "default_mllp_max")]
    pub max_message_bytes: usize,
    #[serde(default = "default_mllp_connections")]
    pub max_connections: usize,
    #[serde(default = "default_mllp_idle")]
    pub idle_timeout_seconds: u64,
    #[serde(default = "default_mllp_frame")]
    pub frame_timeout_seconds: u64,
}

fn default_mllp_max() -> usize {
    1 << 20
}
fn default_mllp_connections() -> usize {
    64
}
fn default_mllp_idle() -> u64 {
    600
}
fn default_mllp_frame() -> u64 {
    30
}

impl ContextFeed {
    pub fn kind(&self) -> &'static str {
        match self {
            ContextFeed::Fhir(_) => "fhir",
            ContextFeed::HrCsv(_) => "hr-csv",
            ContextFeed::CrosswalkCsv(_) => "crosswalk-csv",
            ContextFeed::DisabledAccountsCsv(_) => "disabled-accounts-csv",
            ContextFeed::Hl7v2(_) => "hl7v2",
            ContextFeed::Mllp(_) => "mllp",
        }
    }

    /// The files the feed reads (globs expanded), for loading, the reload stamp and the
    /// staleness check. An MLLP listener reads none: its messages are kept in the store.
    pub fn files(&self) -> Vec<PathBuf> {
        let globbed = |p: &str| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = glob::glob(p)
                .map(|g| g.filter_map(Result::ok).filter(|p| p.is_file()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        match self {
            ContextFeed::Fhir(f) => fhir_files(&f.path),
            ContextFeed::HrCsv(f) => globbed(&f.path.display().to_string()),
            ContextFeed::CrosswalkCsv(f) => globbed(&f.path.display().to_string()),
            ContextFeed::DisabledAccountsCsv(f) => globbed(&f.path.display().to_string()),
            ContextFeed::Hl7v2(f) => f.paths.iter().flat_map(|p| globbed(p)).collect(),
            ContextFeed::Mllp(_) => Vec::new(),
        }
    }

    /// What to watch for changes (directories too, so an added file is noticed).
    pub fn watched(&self) -> Vec<PathBuf> {
        match self {
            ContextFeed::Fhir(f) => vec![f.path.clone()],
            _ => self.files(),
        }
    }

    pub fn max_age_hours(&self) -> Option<u64> {
        match self {
            ContextFeed::Fhir(f) => f.max_age_hours,
            ContextFeed::HrCsv(f) => f.max_age_hours,
            ContextFeed::CrosswalkCsv(f) => f.max_age_hours,
            ContextFeed::DisabledAccountsCsv(f) => f.max_age_hours,
            ContextFeed::Hl7v2(f) => f.max_age_hours,
            ContextFeed::Mllp(_) => None,
        }
    }

    /// Relative paths are taken from the configuration file's directory.
    pub fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            ContextFeed::Fhir(f) => fix(&mut f.path),
            ContextFeed::HrCsv(f) => fix(&mut f.path),
            ContextFeed::CrosswalkCsv(f) => fix(&mut f.path),
            ContextFeed::DisabledAccountsCsv(f) => fix(&mut f.path),
            ContextFeed::Hl7v2(f) => {
                for p in &mut f.paths {
                    if Path::new(p).is_relative() {
                        *p = base.join(&*p).display().to_string();
                    }
                }
            }
            ContextFeed::Mllp(f) => {
                for p in [&mut f.tls_cert, &mut f.tls_key, &mut f.tls_client_ca]
                    .into_iter()
                    .flatten()
                {
                    fix(p);
                }
            }
        }
    }

    /// What can be checked before reading any file.
    pub fn validate(&self) -> Result<(), crate::invalid::Invalid> {
        let delim = |d: Option<char>| match d {
            Some(c) if !matches!(c, ',' | '\t' | '|' | ';') => {
                Err(crate::invalid::Invalid(format!(
                    "delimiter {c:?}: use ',', '\\t', '|' or ';' (or leave it out to sniff it)"
                )))
            }
            _ => Ok(()),
        };
        match self {
            ContextFeed::HrCsv(f) => delim(f.delimiter),
            ContextFeed::CrosswalkCsv(f) => {
                delim(f.delimiter)?;
                if f.users.is_empty() && f.patients.is_empty() {
                    return Err(crate::invalid::Invalid(
                        "a crosswalk needs [context.users] or [context.patients] columns".into(),
                    ));
                }
                Ok(())
            }
            ContextFeed::DisabledAccountsCsv(f) => delim(f.delimiter),
            ContextFeed::Hl7v2(f) if f.paths.is_empty() => {
                Err(crate::invalid::Invalid("hl7v2: no paths".into()))
            }
            ContextFeed::Hl7v2(Hl7Feed {
                labels: Some(l), ..
            }) if !valid_field(l) => Err(crate::invalid::Invalid(format!(
                "labels {l:?}: expected SEG-N, e.g. ZPD-1"
            ))),
            ContextFeed::Mllp(f) => {
                if f.tls_cert.is_some() != f.tls_key.is_some() {
                    return Err(crate::invalid::Invalid(
                        "mllp: tls_cert and tls_key go together".into(),
                    ));
                }
                if f.name.is_empty()
                    || !f
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(crate::invalid::Invalid(format!(
                        "mllp name {:?}: use letters, digits, - and _",
                        f.name
                    )));
                }
                if f.max_connections == 0
                    || f.idle_timeout_seconds == 0
                    || f.frame_timeout_seconds == 0
                {
                    return Err(crate::invalid::Invalid(
                        "mllp: max_connections and the timeouts must be above 0".into(),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn valid_field(spec: &str) -> bool {
    spec.split_once('-').is_some_and(|(s, n)| {
        s.len() == 3
            && s.chars().all(|c| c.is_ascii_alphanumeric())
            && n.parse::<usize>().is_ok_and(|n| n > 0)
    })
}

/// The FHIR files of a context directory (or the one file).
pub fn fhir_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_owned()];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("ndjson" | "jsonl" | "json")
                        )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A date as HR and directory exports write it: `date_format` if given, else ISO, US
/// (`03/10/2026`), or the date part of a date-time; as epoch ms of the end of that day
/// (a termination dated today still allows today's work).
pub fn end_of_day(text: &str, format: Option<&str>, zone: chrono_tz::Tz) -> Option<i64> {
    use chrono::NaiveDate;
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let d = format
        .and_then(|f| {
            NaiveDate::parse_from_str(t, f).ok().or_else(|| {
                chrono::NaiveDateTime::parse_from_str(t, f)
                    .ok()
                    .map(|dt| dt.date())
            })
        })
        .or_else(|| NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok())
        .or_else(|| NaiveDate::parse_from_str(t, "%m/%d/%Y").ok())
        .or_else(|| NaiveDate::parse_from_str(t.split_whitespace().next()?, "%m/%d/%Y").ok())?;
    let next = d.succ_opt()?.and_hms_opt(0, 0, 0)?;
    crate::time::local_ms(zone, next).map(|t| t - 1)
}

/// An AD `accountExpires` value: Windows FILETIME (100 ns since 1601), 0 or i64::MAX for
/// never, or a date.
pub fn account_expires(text: &str, zone: chrono_tz::Tz) -> Option<i64> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i64>() {
        if n <= 0 || n == i64::MAX {
            return None;
        }
        // 11,644,473,600 s from 1601-01-01 to 1970-01-01.
        return Some(n / 10_000 - 11_644_473_600_000);
    }
    end_of_day(t, None, zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_filetimes() {
        let utc = chrono_tz::UTC;
        let eod = crate::time::parse_fhir_time("2026-03-11T00:00:00Z").unwrap() - 1;
        assert_eq!(end_of_day("2026-03-10", None, utc), Some(eod));
        assert_eq!(end_of_day("03/10/2026", None, utc), Some(eod));
        assert_eq!(end_of_day("2026-03-10T08:00:00", None, utc), Some(eod));
        assert_eq!(end_of_day("10.03.2026", Some("%d.%m.%Y"), utc), Some(eod));
        assert_eq!(end_of_day("", None, utc), None);
        assert_eq!(account_expires("0", utc), None);
        assert_eq!(account_expires("9223372036854775807", utc), None);
        // 2026-03-10T00:00:00Z as FILETIME.
        let ft = (crate::time::parse_fhir_time("2026-03-10T00:00:00Z").unwrap()
            + 11_644_473_600_000)
            * 10_000;
        assert_eq!(
            account_expires(&ft.to_string(), utc),
            crate::time::parse_fhir_time("2026-03-10T00:00:00Z")
        );
    }

    #[test]
    fn feeds_parse_from_toml() {
        #[derive(Deserialize)]
        struct T {
            context: Vec<ContextFeed>,
        }
        let t: T = toml::from_str(
            r#"
[[context]]
kind = "hr-csv"
path = "roster.csv"
[context.columns]
id = ["Employee ID", "Worker ID"]
job_title = "Job Title"
[context.identifiers]
"EHR Login" = "urn:ehr:login"
[context.roles]
"Registered Nurse" = "nurse"

[[context]]
kind = "crosswalk-csv"
path = "xwalk.csv"
[context.users]
"EHR Login" = "urn:ehr:login"
"Employee ID" = "hr"
[context.patients]
"MRN" = "urn:mrn"

[[context]]
kind = "hl7v2"
paths = ["adt/*.hl7"]

[[context]]
kind = "mllp"
name = "adt-live"
listen = "127.0.0.1:2575"
"#,
        )
        .unwrap();
        assert_eq!(t.context.len(), 4);
        assert_eq!(t.context[0].kind(), "hr-csv");
        for f in &t.context {
            f.validate().unwrap();
        }
    }
}
