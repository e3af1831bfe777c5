//! Rows of the delimited context feeds (HR roster, identity crosswalk, disabled accounts)
//! read into records; `load` merges them with the FHIR context so that one human is one
//! person, whichever feeds name them.

use super::feeds::{account_expires, end_of_day, CrosswalkFeed, DisabledFeed, HrFeed};
use super::normalize::{self, AddressKey};
use super::{ContextStats, Written};
use crate::tabular::{self, ColumnSpec, Table};
use std::path::Path;

/// A workforce member as the HR roster describes them.
#[derive(Debug, Clone, Default)]
pub struct Worker {
    /// The id column's value: the user's id if no other feed knows them.
    pub id: String,
    /// `system|value` keys: the id and every identifier column.
    pub keys: Vec<String>,
    pub family: Option<String>,
    pub address: Option<AddressKey>,
    pub written: Written,
    pub role: String,
    pub department: String,
    pub hired_ms: Option<i64>,
    /// End of the last working day, or the termination date.
    pub terminated_ms: Option<i64>,
    pub inactive: bool,
}

/// A name of a person in a crosswalk row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// The context's own id (a FHIR resource id).
    Id(String),
    /// `system|value`.
    Key(String),
}

/// One crosswalk row: the names of one workforce member and/or one patient.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub user: Vec<Name>,
    pub patient: Vec<Name>,
}

/// A directory account's state.
#[derive(Debug, Clone)]
pub struct Account {
    pub keys: Vec<String>,
    pub disabled: bool,
    pub expires_ms: Option<i64>,
}

fn read_table(path: &Path, delimiter: Option<char>, stats: &mut ContextStats) -> Option<Table> {
    match tabular::read(path, delimiter.map(|c| c as u8)) {
        Ok(t) => {
            for (line, why) in &t.bad {
                stats.problem(path, *line as usize, why);
            }
            Some(t)
        }
        Err(e) => {
            stats.problem(path, 0, format!("cannot read: {}", e.kind()));
            None
        }
    }
}

/// Column indexes of a mapping in one file; a required column that is missing is reported.
fn column(
    t: &Table,
    spec: Option<&ColumnSpec>,
    path: &Path,
    what: &str,
    stats: &mut ContextStats,
) -> Option<usize> {
    let spec = spec?;
    let ix = spec.find(&t.header);
    if ix.is_none() {
        stats.problem(
            path,
            1,
            format!(
                "no {what} column: the header has none named {}",
                spec.describe()
            ),
        );
    }
    ix
}

pub fn workers(
    f: &HrFeed,
    path: &Path,
    zone: chrono_tz::Tz,
    stats: &mut ContextStats,
) -> Vec<Worker> {
    let Some(t) = read_table(path, f.delimiter, stats) else {
        return Vec::new();
    };
    let c = &f.columns;
    let Some(id) = column(&t, Some(&c.id), path, "id", stats) else {
        return Vec::new();
    };
    let mut col =
        |spec: &Option<ColumnSpec>, what: &str| column(&t, spec.as_ref(), path, what, stats);
    let family = col(&c.family, "family");
    let given = col(&c.given, "given");
    let address = col(&c.address, "address");
    let address2 = col(&c.address2, "address2");
    let city = col(&c.city, "city");
    let state = col(&c.state, "state");
    let postal = col(&c.postal_code, "postal_code");
    let department = col(&c.department, "department");
    let title = col(&c.job_title, "job_title");
    let role = col(&c.role, "role");
    let hired = col(&c.hire_date, "hire_date");
    let terminated = col(&c.termination_date, "termination_date");
    let last_day = col(&c.last_working_day, "last_working_day");
    let status = col(&c.status, "status");
    let identifiers: Vec<(usize, &str)> = f
        .identifiers
        .iter()
        .filter_map(|(h, sys)| {
            let ix = ColumnSpec::Name(h.clone()).find(&t.header);
            if ix.is_none() {
                stats.problem(path, 1, format!("no identifier column named {h:?}"));
            }
            Some((ix?, sys.as_str()))
        })
        .collect();
    let roles: std::collections::HashMap<String, String> = f
        .roles
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.to_lowercase()))
        .collect();
    let departments: std::collections::HashMap<String, String> = f
        .departments
        .iter()
        .map(|(k, v)| (tabular::fold(k), v.clone()))
        .collect();
    let inactive: Vec<String> = f
        .inactive_statuses
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let mut out = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let get = |ix: Option<usize>| {
            ix.and_then(|i| row.get(i))
                .map(String::as_str)
                .unwrap_or("")
        };
        let id_value = get(Some(id));
        if id_value.is_empty() {
            stats.problem(path, *line as usize, "no id in this row");
            continue;
        }
        let mut keys = vec![format!("{}|{id_value}", f.id_system)];
        for (ix, sys) in &identifiers {
            let v = get(Some(*ix));
            if !v.is_empty() {
                keys.push(format!("{sys}|{v}"));
            }
        }
        let fam = get(family);
        let street = get(address);
        let line2 = get(address2);
        let addr = (!street.is_empty()).then(|| {
            let lines: Vec<std::borrow::Cow<'_, str>> = [street, line2]
                .into_iter()
                .filter(|l| !l.is_empty())
                .map(std::borrow::Cow::Borrowed)
                .collect();
            crate::fhir::Address {
                use_: None,
                line: lines,
                city: Some(std::borrow::Cow::Borrowed(get(city))),
                state: Some(std::borrow::Cow::Borrowed(get(state))),
                postal_code: Some(std::borrow::Cow::Borrowed(get(postal))),
            }
        });
        let role_value = match role.map(|_| get(role)).filter(|r| !r.is_empty()) {
            Some(r) => r.to_lowercase(),
            None => {
                let t = get(title);
                match roles.get(&t.to_lowercase()) {
                    Some(r) => r.clone(),
                    None => {
                        if !t.is_empty() {
                            stats.unmapped_titles += 1;
                        }
                        t.to_lowercase()
                    }
                }
            }
        };
        let dept = get(department);
        let dept = departments
            .get(&tabular::fold(dept))
            .cloned()
            .unwrap_or_else(|| dept.to_lowercase());
        let fmt = f.date_format.as_deref();
        let ended = [get(terminated), get(last_day)]
            .into_iter()
            .filter_map(|d| end_of_day(d, fmt, zone))
            .min();
        let st = get(status).to_lowercase();
        let _ = get(given);
        out.push(Worker {
            id: id_value.to_owned(),
            keys,
            family: normalize::family(fam),
            address: addr.as_ref().and_then(normalize::address),
            written: Written {
                family: fam.into(),
                address: addr
                    .as_ref()
                    .map(|_| format!("{street}, {}, {} {}", get(city), get(state), get(postal)))
                    .unwrap_or_default()
                    .into(),
            },
            role: role_value,
            department: dept,
            hired_ms: end_of_day(get(hired), fmt, zone),
            terminated_ms: ended,
            inactive: !st.is_empty() && inactive.contains(&st),
        });
    }
    out
}

pub fn links(f: &CrosswalkFeed, path: &Path, stats: &mut ContextStats) -> Vec<Link> {
    let Some(t) = read_table(path, f.delimiter, stats) else {
        return Vec::new();
    };
    let cols = |m: &std::collections::BTreeMap<String, String>, stats: &mut ContextStats| {
        m.iter()
            .filter_map(|(h, sys)| {
                let ix = ColumnSpec::Name(h.clone()).find(&t.header);
                if ix.is_none() {
                    stats.problem(path, 1, format!("no crosswalk column named {h:?}"));
                }
                Some((ix?, sys.clone()))
            })
            .collect::<Vec<_>>()
    };
    let users = cols(&f.users, stats);
    let patients = cols(&f.patients, stats);
    let names = |row: &[String], cols: &[(usize, String)]| -> Vec<Name> {
        cols.iter()
            .filter_map(|(ix, sys)| {
                let v = row.get(*ix).map(String::as_str).unwrap_or("").trim();
                if v.is_empty() {
                    return None;
                }
                Some(if sys == "id" {
                    Name::Id(v.to_owned())
                } else {
                    Name::Key(format!("{sys}|{v}"))
                })
            })
            .collect()
    };
    t.rows
        .iter()
        .map(|(_, row)| Link {
            user: names(row, &users),
            patient: names(row, &patients),
        })
        .filter(|l| {
            l.user.len() + l.patient.len() > 1 || !l.user.is_empty() && !l.patient.is_empty()
        })
        .collect()
}

pub fn accounts(
    f: &DisabledFeed,
    path: &Path,
    zone: chrono_tz::Tz,
    stats: &mut ContextStats,
) -> Vec<Account> {
    let Some(t) = read_table(path, f.delimiter, stats) else {
        return Vec::new();
    };
    let c = &f.columns;
    let Some(account) = column(&t, Some(&c.account), path, "account", stats) else {
        return Vec::new();
    };
    let uac = column(
        &t,
        c.user_account_control.as_ref(),
        path,
        "user_account_control",
        stats,
    );
    let expires = column(
        &t,
        c.account_expires.as_ref(),
        path,
        "account_expires",
        stats,
    );
    let disabled = column(&t, c.disabled.as_ref(), path, "disabled", stats);
    let mut out = Vec::new();
    for (line, row) in &t.rows {
        let get = |ix: Option<usize>| {
            ix.and_then(|i| row.get(i))
                .map(String::as_str)
                .unwrap_or("")
        };
        let a = get(Some(account));
        if a.is_empty() {
            stats.problem(path, *line as usize, "no account in this row");
            continue;
        }
        let mut keys = Vec::new();
        if let Some(s) = &f.system {
            keys.push(format!("{s}|{a}"));
        }
        keys.push(a.to_owned());
        let flag_off = get(uac).parse::<u64>().is_ok_and(|v| v & 2 != 0);
        let said = matches!(
            get(disabled).to_ascii_lowercase().as_str(),
            "1" | "y" | "yes" | "true" | "disabled"
        );
        out.push(Account {
            keys,
            disabled: flag_off || said,
            expires_ms: account_expires(get(expires), zone),
        });
    }
    out
}
