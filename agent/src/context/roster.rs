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
    let Some(cols) = RosterColumns::find(f, &t, path, stats) else {
        return Vec::new();
    };
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
    let maps = RosterMaps {
        roles,
        departments,
        inactive,
    };
    let mut out = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let get = |ix: Option<usize>| {
            ix.and_then(|i| row.get(i))
                .map(String::as_str)
                .unwrap_or("")
        };
        match worker(f, &cols, &maps, &get, zone, stats) {
            Some(w) => out.push(w),
            None => stats.problem(path, *line as usize, "no id in this row"),
        }
    }
    out
}

/// Where each of the roster's columns is (`None`: not mapped or not in the file).
struct RosterColumns<'a> {
    id: usize,
    family: Option<usize>,
    address: Option<usize>,
    address2: Option<usize>,
    city: Option<usize>,
    state: Option<usize>,
    postal: Option<usize>,
    department: Option<usize>,
    title: Option<usize>,
    role: Option<usize>,
    hired: Option<usize>,
    terminated: Option<usize>,
    last_day: Option<usize>,
    status: Option<usize>,
    /// Extra identifier columns and the system each names.
    identifiers: Vec<(usize, &'a str)>,
}

impl<'a> RosterColumns<'a> {
    /// `None` when the id column is missing (reported).
    fn find(
        f: &'a HrFeed,
        t: &tabular::Table,
        path: &Path,
        stats: &mut ContextStats,
    ) -> Option<Self> {
        let c = &f.columns;
        let id = column(t, Some(&c.id), path, "id", stats)?;
        let mut col =
            |spec: &Option<ColumnSpec>, what: &str| column(t, spec.as_ref(), path, what, stats);
        let family = col(&c.family, "family");
        // Read so a misnamed column is reported, though no rule uses given names yet.
        let _ = col(&c.given, "given");
        let mut cols = RosterColumns {
            id,
            family,
            address: col(&c.address, "address"),
            address2: col(&c.address2, "address2"),
            city: col(&c.city, "city"),
            state: col(&c.state, "state"),
            postal: col(&c.postal_code, "postal_code"),
            department: col(&c.department, "department"),
            title: col(&c.job_title, "job_title"),
            role: col(&c.role, "role"),
            hired: col(&c.hire_date, "hire_date"),
            terminated: col(&c.termination_date, "termination_date"),
            last_day: col(&c.last_working_day, "last_working_day"),
            status: col(&c.status, "status"),
            identifiers: Vec::new(),
        };
        for (h, sys) in &f.identifiers {
            match ColumnSpec::Name(h.clone()).find(&t.header) {
                Some(ix) => cols.identifiers.push((ix, sys.as_str())),
                None => stats.problem(path, 1, format!("no identifier column named {h:?}")),
            }
        }
        Some(cols)
    }
}

/// The feed's job-title, department and status translations, folded for lookup.
struct RosterMaps {
    roles: std::collections::HashMap<String, String>,
    departments: std::collections::HashMap<String, String>,
    inactive: Vec<String>,
}

/// One roster row as a worker; `None` when the row has no id.
fn worker<'r>(
    f: &HrFeed,
    cols: &RosterColumns<'_>,
    maps: &RosterMaps,
    get: &impl Fn(Option<usize>) -> &'r str,
    zone: chrono_tz::Tz,
    stats: &mut ContextStats,
) -> Option<Worker> {
    let id_value = get(Some(cols.id));
    if id_value.is_empty() {
        return None;
    }
    let mut keys = vec![format!("{}|{id_value}", f.id_system)];
    for (ix, sys) in &cols.identifiers {
        let v = get(Some(*ix));
        if !v.is_empty() {
            keys.push(format!("{sys}|{v}"));
        }
    }
    let fam = get(cols.family);
    let street = get(cols.address);
    let line2 = get(cols.address2);
    let (city, state, postal) = (get(cols.city), get(cols.state), get(cols.postal));
    let addr = (!street.is_empty()).then(|| {
        let lines: Vec<std::borrow::Cow<'_, str>> = [street, line2]
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(std::borrow::Cow::Borrowed)
            .collect();
        crate::fhir::Address {
            use_: None,
            line: lines,
            city: Some(std::borrow::Cow::Borrowed(city)),
            state: Some(std::borrow::Cow::Borrowed(state)),
            postal_code: Some(std::borrow::Cow::Borrowed(postal)),
        }
    });
    let role_value = match cols.role.map(|_| get(cols.role)).filter(|r| !r.is_empty()) {
        Some(r) => r.to_lowercase(),
        None => {
            let t = get(cols.title);
            match maps.roles.get(&t.to_lowercase()) {
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
    let dept = get(cols.department);
    let dept = maps
        .departments
        .get(&tabular::fold(dept))
        .cloned()
        .unwrap_or_else(|| dept.to_lowercase());
    let fmt = f.date_format.as_deref();
    let ended = [get(cols.terminated), get(cols.last_day)]
        .into_iter()
        .filter_map(|d| end_of_day(d, fmt, zone))
        .min();
    let st = get(cols.status).to_lowercase();
    Some(Worker {
        id: id_value.to_owned(),
        keys,
        family: normalize::family(fam),
        address: addr.as_ref().and_then(normalize::address),
        written: Written {
            family: fam.into(),
            address: addr
                .as_ref()
                .map(|_| format!("{street}, {city}, {state} {postal}"))
                .unwrap_or_default()
                .into(),
        },
        role: role_value,
        department: dept,
        hired_ms: end_of_day(get(cols.hired), fmt, zone),
        terminated_ms: ended,
        inactive: !st.is_empty() && maps.inactive.contains(&st),
    })
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
