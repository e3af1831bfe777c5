//! What a breach case produces: letters to individuals (45 CFR 164.404(c)), the HHS breach
//! report (164.408), the annual log of breaches under 500, and accountings of disclosures
//! (164.528, six-year look-back).

use super::response::Response;
use super::{CaseError, Cases};
use chrono::NaiveDate;
use rusqlite::OptionalExtension;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn sql(e: rusqlite::Error) -> CaseError {
    CaseError::Invalid(format!("store: {e}"))
}

/// Users and patients of the case's alerts.
pub fn involved(cases: &Cases, id: i64) -> Result<(Vec<String>, Vec<String>), CaseError> {
    involved_in(cases.conn(), id)
}

/// [`involved`], on a connection (or a transaction).
pub fn involved_in(
    conn: &rusqlite::Connection,
    id: i64,
) -> Result<(Vec<String>, Vec<String>), CaseError> {
    let mut users = Vec::new();
    let mut patients = Vec::new();
    let mut st = conn
        .prepare(
            "SELECT DISTINCT a.user_id, af.patient_id FROM case_alerts ca
             JOIN alerts a ON a.id = ca.alert_id
             JOIN alert_findings af ON af.alert_id = a.id
             WHERE ca.case_id = ?1 ORDER BY a.user_id, af.patient_id",
        )
        .map_err(sql)?;
    let rows = st
        .query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql)?;
    for row in rows {
        let (u, p) = row.map_err(sql)?;
        if !users.contains(&u) {
            users.push(u);
        }
        if !p.is_empty() && !patients.contains(&p) {
            patients.push(p);
        }
    }
    Ok((users, patients))
}

/// First and last access of the evidence timeline (epoch ms).
fn span(cases: &Cases, id: i64) -> Result<Option<(i64, i64)>, CaseError> {
    cases
        .conn()
        .query_row(
            "WITH involved AS (
               SELECT DISTINCT a.user_id, af.patient_id FROM case_alerts ca
               JOIN alerts a ON a.id = ca.alert_id
               JOIN alert_findings af ON af.alert_id = a.id WHERE ca.case_id = ?1)
             SELECT min(time_ms), max(time_ms) FROM accesses
             WHERE user_id IN (SELECT user_id FROM involved)
               AND patient_id IN (SELECT patient_id FROM involved)",
            [id],
            |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
        )
        .map(|(a, b)| a.zip(b))
        .map_err(sql)
}

fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_default()
}

fn dates(span: Option<(i64, i64)>) -> String {
    match span {
        Some((a, b)) if day(a) == day(b) => day(a),
        Some((a, b)) => format!("{} to {}", day(a), day(b)),
        None => "a date under investigation".into(),
    }
}

/// What letters and the HHS report are written from, read from either store.
pub struct Notice {
    pub determination: Option<String>,
    pub assessment: super::Assessment,
    pub breach: super::clock::Breach,
    pub patients: Vec<String>,
    /// First and last access of the evidence timeline (epoch ms).
    pub span: Option<(i64, i64)>,
}

/// The case's [`Notice`] from the single process's store.
pub fn notice(cases: &Cases, id: i64) -> Result<Notice, CaseError> {
    let determination: Option<String> = cases
        .conn()
        .query_row("SELECT determination FROM cases WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql)?
        .flatten();
    Ok(Notice {
        determination,
        assessment: cases.assessment(id)?.unwrap_or_default(),
        breach: cases.breach(id)?,
        patients: involved(cases, id)?.1,
        span: span(cases, id)?,
    })
}

fn determined_breach(n: &Notice, id: i64) -> Result<(), CaseError> {
    match n.determination.as_deref() {
        Some("breach") => Ok(()),
        _ => Err(CaseError::Invalid(format!(
            "case #{id} is not determined a breach: there is nothing to notify"
        ))),
    }
}

/// One letter per involved patient in `out` (`letter-<patient>.txt`). `name` gives a patient's
/// name when the context knows it.
pub fn letters(
    n: &Notice,
    id: i64,
    r: &Response,
    name: &dyn Fn(&str) -> Option<String>,
    today: NaiveDate,
    out: &Path,
) -> Result<Vec<PathBuf>, CaseError> {
    let texts = letter_texts(n, id, r, name, today)?;
    std::fs::create_dir_all(out)
        .map_err(|e| CaseError::Invalid(format!("{}: {e}", out.display())))?;
    let mut written = Vec::new();
    for (p, text) in texts {
        let safe: String = p
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = out.join(format!("letter-{safe}.txt"));
        std::fs::write(&path, text)
            .map_err(|e| CaseError::Invalid(format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// The letters of [`letters`] as (patient id, text).
pub fn letter_texts(
    n: &Notice,
    id: i64,
    r: &Response,
    name: &dyn Fn(&str) -> Option<String>,
    today: NaiveDate,
) -> Result<Vec<(String, String)>, CaseError> {
    determined_breach(n, id)?;
    let template = r.letter().map_err(|e| CaseError::Invalid(e.to_string()))?;
    let (a, b) = (&n.assessment, &n.breach);
    let when = dates(n.span);
    let mut out = Vec::new();
    for p in &n.patients {
        let patient = name(p).unwrap_or_else(|| format!("patient {p}"));
        let value = |k: &str| {
            Some(match k {
                "date" => today.to_string(),
                "patient" => patient.clone(),
                "organization" => r.organization.name.clone(),
                "organization_address" => r.organization.address.clone(),
                "breach_dates" => when.clone(),
                "discovery_date" => b.discovered.map(|d| d.to_string()).unwrap_or_default(),
                "phi_involved" => a.nature_and_extent.clone(),
                "what_happened" => format!(
                    "Someone who was not permitted to see your record opened it: {}. {}.",
                    a.unauthorized_person, a.acquired_or_viewed
                ),
                "what_we_are_doing" => a.mitigation.clone(),
                "contact" => r.contact(),
                _ => return None,
            })
        };
        out.push((
            p.clone(),
            crate::detect::explain::fill_with(&template, value),
        ));
    }
    Ok(out)
}

/// The fields of the HHS breach portal form, as JSON.
pub fn hhs_report(n: &Notice, id: i64, r: &Response) -> Result<Value, CaseError> {
    determined_breach(n, id)?;
    let (a, b, s) = (&n.assessment, &n.breach, n.span);
    let affected = b.affected();
    Ok(json!({
        "covered_entity": {
            "name": r.organization.name,
            "address": r.organization.address,
            "type": r.organization.entity_type,
            "contact_phone": r.organization.phone,
            "contact_email": r.organization.email,
        },
        "breach": {
            "case_id": id,
            "start_date": s.map(|(x, _)| day(x)),
            "end_date": s.map(|(_, y)| day(y)),
            "discovery_date": b.discovered.map(|d| d.to_string()),
            "individuals_affected": affected,
            "residents_by_state": b.residents,
            "type_of_breach": "Unauthorized Access/Disclosure",
            "location_of_breached_information": "Electronic Medical Record",
            "type_of_phi_involved": a.nature_and_extent,
            "unauthorized_person": a.unauthorized_person,
            "acquired_or_viewed": a.acquired_or_viewed,
            "safeguards_in_place": "Role-based access to the EHR; access logging and monitoring (phiwatch).",
            "actions_taken": a.mitigation,
            "business_associate_involved": false,
        },
        "report": if affected >= 500 { "within 60 days of discovery (500 or more)" } else { "annual log (fewer than 500)" },
    }))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The cases determined a breach and discovered in `year`, by id.
pub fn breaches_in(cases: &Cases, year: i32) -> Result<Vec<i64>, CaseError> {
    let mut st = cases
        .conn()
        .prepare(
            "SELECT id FROM cases WHERE determination = 'breach' AND substr(discovered, 1, 4) = ?1
             ORDER BY id",
        )
        .map_err(sql)?;
    let rows = st
        .query_map([year.to_string()], |r| r.get(0))
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

/// Breaches under 500, one CSV row each, for the annual HHS submission: the notices of the
/// breaches discovered in the year ([`breaches_in`]), by case id.
pub fn annual_log(breaches: &[(i64, Notice)]) -> String {
    let mut out = String::from(
        "case_id,discovery_date,breach_start,breach_end,individuals_affected,type_of_breach,location,phi_involved,actions_taken\n",
    );
    for (id, n) in breaches {
        let (a, b, s) = (&n.assessment, &n.breach, n.span);
        if b.affected() >= 500 {
            continue;
        }
        let row = [
            id.to_string(),
            b.discovered.map(|d| d.to_string()).unwrap_or_default(),
            s.map(|(x, _)| day(x)).unwrap_or_default(),
            s.map(|(_, y)| day(y)).unwrap_or_default(),
            b.affected().to_string(),
            "Unauthorized Access/Disclosure".into(),
            "Electronic Medical Record".into(),
            a.nature_and_extent.clone(),
            a.mitigation.clone(),
        ];
        out.push_str(
            &row.iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// One breach case's look at a patient's record, for their accounting of disclosures.
pub struct Disclosure {
    pub case_id: i64,
    pub user: String,
    pub category: String,
    /// The case's stored assessment (JSON), naming the unauthorized person.
    pub assessment: Option<String>,
    /// The user's first access to the patient (epoch ms).
    pub first_ms: Option<i64>,
}

/// The breach cases involving `patient`, from the single process's store.
pub fn disclosures(cases: &Cases, patient: &str) -> Result<Vec<Disclosure>, CaseError> {
    let mut st = cases
        .conn()
        .prepare(
            "SELECT DISTINCT c.id, a.user_id, a.category, c.assessment,
                    (SELECT min(time_ms) FROM accesses x
                     WHERE x.user_id = a.user_id AND x.patient_id = ?1)
             FROM cases c
             JOIN case_alerts ca ON ca.case_id = c.id
             JOIN alerts a ON a.id = ca.alert_id
             JOIN alert_findings af ON af.alert_id = a.id
             WHERE c.determination = 'breach' AND af.patient_id = ?1 ORDER BY c.id",
        )
        .map_err(sql)?;
    let rows = st
        .query_map([patient], |r| {
            Ok(Disclosure {
                case_id: r.get(0)?,
                user: r.get(1)?,
                category: r.get(2)?,
                assessment: r.get(3)?,
                first_ms: r.get(4)?,
            })
        })
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

/// The accounting of disclosures owed to one patient (164.528): every breach case involving
/// them ([`disclosures`]) in the six years before `today`.
pub fn accounting(patient: &str, rows: &[Disclosure], today: NaiveDate) -> String {
    let since = today - chrono::Duration::days(6 * 365 + 1);
    let mut out = format!(
        "Accounting of disclosures for patient {patient}, {since} to {today} (45 CFR 164.528)\n"
    );
    out.push_str("date,recipient,description,purpose\n");
    let mut n = 0;
    for d in rows {
        let when = d.first_ms.map(day).unwrap_or_default();
        if NaiveDate::parse_from_str(&when, "%Y-%m-%d").is_ok_and(|d| d < since) {
            continue;
        }
        let recipient = d
            .assessment
            .as_deref()
            .and_then(|t| serde_json::from_str::<super::Assessment>(t).ok())
            .map(|a| a.unauthorized_person)
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("workforce member {}", d.user));
        out.push_str(&format!(
            "{},{},{},{}\n",
            csv_field(&when),
            csv_field(&recipient),
            csv_field(&format!("record viewed ({})", d.category)),
            csv_field(&format!("impermissible access, breach case #{}", d.case_id)),
        ));
        n += 1;
    }
    if n == 0 {
        out.push_str("(no disclosures to account for)\n");
    }
    out
}

/// A file or directory of the context that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct ReadError {
    path: String,
    source: std::io::Error,
}

/// Patient id -> "Given Family" from a context directory's Patient resources, for letters.
pub fn patient_names(
    context: Option<&Path>,
) -> Result<std::collections::HashMap<String, String>, ReadError> {
    let mut names = std::collections::HashMap::new();
    let Some(dir) = context else {
        return Ok(names);
    };
    let read_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| ReadError { path, source }
    };
    for e in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let p = e.map_err(read_err(dir))?.path();
        if p.extension().is_none_or(|x| x != "ndjson") {
            continue;
        }
        let text = std::fs::read_to_string(&p).map_err(read_err(&p))?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["resourceType"] != "Patient" {
                continue;
            }
            let (Some(id), Some(n)) = (v["id"].as_str(), v["name"].get(0)) else {
                continue;
            };
            let given: Vec<&str> = n["given"]
                .as_array()
                .map(|g| g.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            let full = format!("{} {}", given.join(" "), n["family"].as_str().unwrap_or(""))
                .trim()
                .to_owned();
            if !full.is_empty() {
                names.insert(id.to_owned(), full);
            }
        }
    }
    Ok(names)
}
