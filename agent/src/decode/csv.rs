//! Delimited access-log exports (CSV, tab, pipe) with a column mapping from the source's
//! configuration, or a shipped profile for a published export layout (`profile = "purview-epic"`,
//! see `rules/profiles/`) overridden column by column.
//!
//! Columns are named by header text, one name or a list of accepted names compared without
//! regard to case, spaces or punctuation (`"ACCESS_LOG.ACCESS_TIME"` = `"access log access
//! time"`), or by 1-based position. With a header the first line of every file names the
//! columns; it is read from the file itself, so a restart in the middle of a file still knows
//! them, a nightly extract with drifted headers is read by its own header, and any line equal
//! to the header (exports concatenated into one file) is skipped. The delimiter is declared or
//! sniffed from each file's header.
//!
//! An EHR's action words are its own (Epic has thousands of metric names): a word the mapping
//! does not know is read as `default_action` (view) and counted per word, never a rejected row.

use super::audit_event::{line_hash, truncate};
use super::{DecodeError, Item};
use crate::event::{AccessEvent, Action, Inline};
use crate::invalid::Invalid;
use crate::tabular::{fold, sniff};
use crate::time::parse_fhir_time;
use chrono::NaiveDateTime;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The shipped profiles: name, TOML text (the same keys as `[source.csv]`).
pub const PROFILES: &[(&str, &str)] = &[
    (
        "epic-clarity-access-log",
        include_str!("../../../rules/profiles/epic-clarity-access-log.toml"),
    ),
    (
        "purview-epic",
        include_str!("../../../rules/profiles/purview-epic.toml"),
    ),
    (
        "purview-healthcare",
        include_str!("../../../rules/profiles/purview-healthcare.toml"),
    ),
    (
        "touchworks-patient-access-log",
        include_str!("../../../rules/profiles/touchworks-patient-access-log.toml"),
    ),
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvMapping {
    /// A shipped profile; every other key here overrides the profile's.
    pub profile: Option<String>,
    /// The first line of each file names the columns (default true).
    pub header: Option<bool>,
    /// One ASCII character; default: sniffed from each file's header (comma without one).
    pub delimiter: Option<char>,
    /// chrono format for the time column (`%m/%d/%Y %H:%M:%S`); with a `date` column, for
    /// "DATE TIME". Default: RFC 3339, `2026-03-10 08:00:00`, `03/10/2026 08:00[:00]`, or Unix
    /// seconds / milliseconds when the value is all digits.
    pub time_format: Option<String>,
    /// IANA zone for times without an offset (`America/Chicago`); default UTC.
    pub timezone: Option<String>,
    #[serde(default)]
    pub columns: Columns,
    /// Action words: `"Chart Review" = "view"`, matched without regard to case, before the
    /// built-in words (view/read, modify/update/edit/create/delete, print, export/download,
    /// query/search, and the FHIR codes C R U D E).
    #[serde(default)]
    pub actions: HashMap<String, String>,
    /// More action words from a file: two columns, word and action (`PEND A NOTE,modify`),
    /// comma, tab or pipe separated, an optional header. `actions` wins over it.
    pub actions_file: Option<PathBuf>,
    /// What an unknown action word is read as (view, modify, print, export, query); default
    /// view. Unknown words are counted per word (`/metrics`, the scan summary).
    pub default_action: Option<String>,
    /// Values of the `break_glass` column that mean break-the-glass (default 1, true, yes, y,
    /// t, btg), compared without regard to case.
    pub break_glass_values: Option<Vec<String>>,
    /// Department names as the log writes them -> as the context (roster, ADT feed) names
    /// them: `"EMERGENCY DEPT" = "ED"`. Unlisted names are used as written.
    #[serde(default)]
    pub departments: HashMap<String, String>,
    /// Optional columns named by the profile, not by the site: a header without them reads
    /// on without them (a site's extract need not carry every column a vendor documents).
    #[serde(skip)]
    profile_optional: Vec<&'static str>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub time: Option<Column>,
    /// A separate date column: the time column then holds the time of day.
    pub date: Option<Column>,
    pub user: Option<Column>,
    pub patient: Option<Column>,
    /// Without it every row is a chart view (one row per chart open, as TouchWorks writes).
    pub action: Option<Column>,
    /// Event id; without it (or `id_parts`) the id is a hash of the line, so keep it when
    /// identical rows are distinct accesses.
    pub id: Option<Column>,
    /// An id made of several columns (Epic: the access instant and the process id).
    pub id_parts: Option<Vec<Column>>,
    /// A flag column: `break_glass_values` mark break-the-glass.
    pub break_glass: Option<Column>,
    /// Reason or explanation columns: any non-empty one marks break-the-glass.
    pub break_glass_reason: Option<Vec<Column>>,
    pub workstation: Option<Column>,
    /// Success when empty or one of 0, success, succeeded, ok, true, allowed.
    pub outcome: Option<Column>,
    /// Free-text subtype kept with the access (metric group, report name, screen, ...).
    pub subtype: Option<Column>,
    /// The login or workstation department of the access (explains work in that department).
    pub department: Option<Column>,
    /// The encounter (Epic CSN, visit number) the access was made in.
    pub encounter: Option<Column>,
    /// Inline demographics: the patient's family name and home address, as the row writes
    /// them; they add a patient the context lacks (feeds win over them).
    pub patient_family: Option<Column>,
    /// Street lines: those the header has, in order.
    pub patient_address: Option<Vec<Column>>,
    pub patient_city: Option<Column>,
    pub patient_state: Option<Column>,
    pub patient_postal_code: Option<Column>,
    /// Other names of the user on the row (employee id, login): aliases of the user the
    /// context finds by any of them.
    pub user_ids: Option<Vec<Column>>,
    /// The user's family name, when the directory has none.
    pub user_family: Option<Column>,
}

/// Single columns a profile may name that a site's file need not have.
const OPTIONAL_SINGLES: [&str; 11] = [
    "break_glass",
    "workstation",
    "outcome",
    "subtype",
    "department",
    "encounter",
    "patient_family",
    "patient_city",
    "patient_state",
    "patient_postal_code",
    "user_family",
];

impl Columns {
    fn single(&self, key: &str) -> &Option<Column> {
        match key {
            "break_glass" => &self.break_glass,
            "workstation" => &self.workstation,
            "outcome" => &self.outcome,
            "subtype" => &self.subtype,
            "department" => &self.department,
            "encounter" => &self.encounter,
            "patient_family" => &self.patient_family,
            "patient_city" => &self.patient_city,
            "patient_state" => &self.patient_state,
            "patient_postal_code" => &self.patient_postal_code,
            "user_family" => &self.user_family,
            _ => &None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Column {
    Position(usize),
    Name(String),
    /// Any of these names: the first one the header has.
    Names(Vec<String>),
}

impl Column {
    fn describe(&self) -> String {
        match self {
            Column::Position(p) => format!("column {p}"),
            Column::Name(n) => format!("{:?}", truncate(n, 60)),
            Column::Names(ns) => ns
                .iter()
                .map(|n| format!("{:?}", truncate(n, 60)))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    fn names(&self) -> Vec<&str> {
        match self {
            Column::Position(_) => Vec::new(),
            Column::Name(n) => vec![n.as_str()],
            Column::Names(ns) => ns.iter().map(String::as_str).collect(),
        }
    }
}

fn pick<T: Clone>(mine: &Option<T>, profile: &Option<T>) -> Option<T> {
    mine.clone().or_else(|| profile.clone())
}

impl CsvMapping {
    /// The mapping with its profile applied: this mapping's keys over the profile's.
    pub fn effective(&self) -> Result<CsvMapping, Invalid> {
        let Some(name) = &self.profile else {
            return Ok(self.clone());
        };
        let text = PROFILES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                format!(
                    "profile {name:?} is not one of {}",
                    PROFILES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let p: CsvMapping =
            toml::from_str(text).map_err(|e| format!("shipped profile {name}: {e}"))?;
        let (c, pc) = (&self.columns, &p.columns);
        let mut actions = p.actions.clone();
        actions.extend(self.actions.clone());
        let mut departments = p.departments.clone();
        departments.extend(self.departments.clone());
        let mut profile_optional: Vec<&'static str> = OPTIONAL_SINGLES
            .into_iter()
            .filter(|k| c.single(k).is_none() && pc.single(k).is_some())
            .collect();
        if c.id_parts.is_none() && pc.id_parts.is_some() {
            profile_optional.push("id_parts");
        }
        Ok(CsvMapping {
            // Kept for messages; applying it again changes nothing.
            profile: self.profile.clone(),
            header: pick(&self.header, &p.header),
            delimiter: pick(&self.delimiter, &p.delimiter),
            time_format: pick(&self.time_format, &p.time_format),
            timezone: pick(&self.timezone, &p.timezone),
            columns: Columns {
                time: pick(&c.time, &pc.time),
                date: pick(&c.date, &pc.date),
                user: pick(&c.user, &pc.user),
                patient: pick(&c.patient, &pc.patient),
                action: pick(&c.action, &pc.action),
                id: pick(&c.id, &pc.id),
                id_parts: pick(&c.id_parts, &pc.id_parts),
                break_glass: pick(&c.break_glass, &pc.break_glass),
                break_glass_reason: pick(&c.break_glass_reason, &pc.break_glass_reason),
                workstation: pick(&c.workstation, &pc.workstation),
                outcome: pick(&c.outcome, &pc.outcome),
                subtype: pick(&c.subtype, &pc.subtype),
                department: pick(&c.department, &pc.department),
                encounter: pick(&c.encounter, &pc.encounter),
                patient_family: pick(&c.patient_family, &pc.patient_family),
                patient_address: pick(&c.patient_address, &pc.patient_address),
                patient_city: pick(&c.patient_city, &pc.patient_city),
                patient_state: pick(&c.patient_state, &pc.patient_state),
                patient_postal_code: pick(&c.patient_postal_code, &pc.patient_postal_code),
                user_ids: pick(&c.user_ids, &pc.user_ids),
                user_family: pick(&c.user_family, &pc.user_family),
            },
            actions,
            actions_file: pick(&self.actions_file, &p.actions_file),
            default_action: pick(&self.default_action, &p.default_action),
            break_glass_values: pick(&self.break_glass_values, &p.break_glass_values),
            departments,
            profile_optional,
        })
    }

    /// Checks what can be checked before any file is read (the profile applied).
    pub fn validate(&self) -> Result<(), Invalid> {
        let m = self.effective()?;
        m.check()?;
        Decoding::new(&m).map(|_| ())
    }

    fn check(&self) -> Result<(), Invalid> {
        if let Some(d) = self.delimiter.filter(|d| !d.is_ascii()) {
            return Err(Invalid(format!(
                "delimiter {d:?} is not one ASCII character"
            )));
        }
        if let Some(tz) = &self.timezone {
            tz.parse::<chrono_tz::Tz>()
                .map_err(|_| format!("timezone {tz:?} is not an IANA zone name"))?;
        }
        let c = &self.columns;
        let from = self
            .profile
            .as_deref()
            .map(|p| format!(" (profile {p})"))
            .unwrap_or_default();
        for (name, col) in [
            ("time", &c.time),
            ("user", &c.user),
            ("patient", &c.patient),
        ] {
            if col.is_none() {
                return Err(Invalid(format!("columns.{name} is not set{from}")));
            }
        }
        let header = self.header.unwrap_or(true);
        let singles = [&c.time, &c.date, &c.user, &c.patient, &c.action, &c.id];
        let lists = [
            &c.id_parts,
            &c.break_glass_reason,
            &c.patient_address,
            &c.user_ids,
        ];
        let all = singles
            .into_iter()
            .chain(OPTIONAL_SINGLES.map(|k| c.single(k)))
            .flatten()
            .chain(lists.into_iter().flatten().flatten());
        for col in all {
            match col {
                Column::Position(0) => return Err(Invalid("column positions start at 1".into())),
                Column::Names(ns) if ns.is_empty() => {
                    return Err(Invalid("a column's list of names is empty".into()))
                }
                Column::Name(_) | Column::Names(_) if !header => {
                    return Err(Invalid(
                        "columns are named but header = false: use positions (1, 2, ...)".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn parse_action_name(s: &str) -> Option<Action> {
    Action::ALL.into_iter().find(|a| a.as_str() == s.trim())
}

/// Action words a source did not know, counted per word (at most [`UNKNOWN_CAP`] words; the
/// rest under `(other)`) for `/metrics` and the scan summary.
#[derive(Debug, Default)]
pub struct UnknownNames(Mutex<BTreeMap<String, u64>>);

const UNKNOWN_CAP: usize = 256;

impl UnknownNames {
    fn count(&self, word: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = if m.contains_key(word) || m.len() < UNKNOWN_CAP {
            truncate(word, 80).to_owned()
        } else {
            "(other)".to_owned()
        };
        *m.entry(key).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a mapping decides once loaded: the action table and the break-the-glass values.
#[derive(Debug, Clone)]
struct Decoding {
    actions: HashMap<String, Action>,
    default_action: Action,
    btg_values: Vec<String>,
}

impl Decoding {
    fn new(m: &CsvMapping) -> Result<Decoding, Invalid> {
        let mut actions = HashMap::new();
        if let Some(path) = &m.actions_file {
            let t = crate::tabular::read(path, None)
                .map_err(|e| format!("actions_file {}: {e}", path.display()))?;
            let mut rows: Vec<(u64, Vec<String>)> = t.rows;
            // A header is optional: a first line whose second field is no action is one.
            if parse_action_name(t.header.get(1).map(String::as_str).unwrap_or("")).is_some() {
                rows.insert(0, (1, t.header));
            }
            for (line, fields) in rows {
                let (word, action) = match fields.as_slice() {
                    [w, a, ..] => (w, a),
                    _ => {
                        return Err(Invalid(format!(
                            "actions_file {}:{line}: expected word and action",
                            path.display()
                        )))
                    }
                };
                let a = parse_action_name(&action.to_lowercase()).ok_or_else(|| {
                    format!(
                        "actions_file {}:{line}: {:?} is not view, modify, print, export or query",
                        path.display(),
                        truncate(action, 40)
                    )
                })?;
                actions.insert(word.trim().to_lowercase(), a);
            }
        }
        for (word, action) in &m.actions {
            let a = parse_action_name(action).ok_or_else(|| {
                format!(
                    "actions.{word:?} = {action:?}: expected view, modify, print, export or query"
                )
            })?;
            actions.insert(word.trim().to_lowercase(), a);
        }
        let default_action = match &m.default_action {
            None => Action::View,
            Some(a) => parse_action_name(a).ok_or_else(|| {
                format!("default_action = {a:?}: expected view, modify, print, export or query")
            })?,
        };
        let btg_values = m
            .break_glass_values
            .clone()
            .unwrap_or_else(|| {
                ["1", "true", "yes", "y", "t", "btg"]
                    .map(String::from)
                    .to_vec()
            })
            .into_iter()
            .map(|v| v.trim().to_lowercase())
            .collect();
        Ok(Decoding {
            actions,
            default_action,
            btg_values,
        })
    }
}

/// Column positions (0-based) once the header is known.
#[derive(Debug, Clone)]
struct Resolved {
    delim: u8,
    time: usize,
    date: Option<usize>,
    user: usize,
    patient: usize,
    action: Option<usize>,
    id: Option<usize>,
    id_parts: Vec<usize>,
    break_glass: Option<usize>,
    break_glass_reason: Vec<usize>,
    workstation: Option<usize>,
    outcome: Option<usize>,
    subtype: Option<usize>,
    department: Option<usize>,
    encounter: Option<usize>,
    inline: InlineColumns,
    header_line: Option<Vec<u8>>,
}

/// Positions of the inline demographics columns the header has.
#[derive(Debug, Clone, Default)]
struct InlineColumns {
    patient_family: Option<usize>,
    patient_lines: Vec<usize>,
    patient_city: Option<usize>,
    patient_state: Option<usize>,
    patient_postal_code: Option<usize>,
    user_ids: Vec<usize>,
    user_family: Option<usize>,
}

impl InlineColumns {
    fn any(&self) -> bool {
        self.patient_family.is_some()
            || !self.patient_lines.is_empty()
            || self.patient_postal_code.is_some()
            || !self.user_ids.is_empty()
            || self.user_family.is_some()
    }

    /// What the row says about its patient and user, `None` when it says nothing.
    fn read(&self, record: &Record, user: &str) -> Option<Box<Inline>> {
        if !self.any() {
            return None;
        }
        let opt = |ix: Option<usize>| ix.map(|i| record.get(i)).unwrap_or("").to_owned();
        let inline = Inline {
            patient_family: opt(self.patient_family),
            patient_lines: self
                .patient_lines
                .iter()
                .map(|&i| record.get(i))
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            patient_city: opt(self.patient_city),
            patient_state: opt(self.patient_state),
            patient_postal_code: opt(self.patient_postal_code),
            user_ids: self
                .user_ids
                .iter()
                .map(|&i| record.get(i))
                .filter(|v| !v.is_empty() && *v != user)
                .map(str::to_owned)
                .collect(),
            user_family: opt(self.user_family),
        };
        (!inline.is_empty()).then(|| Box::new(inline))
    }
}

pub struct CsvDecoder {
    mapping: CsvMapping,
    decoding: Decoding,
    tz: Option<chrono_tz::Tz>,
    unknown: Arc<UnknownNames>,
    /// Per file (device, inode): the resolved columns.
    files: HashMap<(u64, u64), Result<Resolved, DecodeError>>,
    /// A row splitter per delimiter, and the scratch record it splits into.
    splitters: HashMap<u8, csv_core::Reader>,
    record: Record,
    /// Index into [`LOCAL_FORMATS`] of the format that read the last time.
    last_format: std::cell::Cell<usize>,
}

impl CsvDecoder {
    /// The mapping's profile applied, its action table loaded; unknown action words are
    /// counted into `unknown`.
    pub fn new(mapping: &CsvMapping, unknown: Arc<UnknownNames>) -> Result<Self, Invalid> {
        let mapping = mapping.effective()?;
        mapping.check()?;
        let decoding = Decoding::new(&mapping)?;
        let tz = mapping.timezone.as_deref().and_then(|t| t.parse().ok());
        Ok(CsvDecoder {
            mapping,
            decoding,
            tz,
            unknown,
            files: HashMap::new(),
            splitters: HashMap::new(),
            record: Record::default(),
            last_format: std::cell::Cell::new(0),
        })
    }

    /// Forgets a file's header (it was truncated and may be rewritten with other columns).
    pub fn forget(&mut self, file: (u64, u64)) {
        self.files.remove(&file);
    }

    pub fn decode(
        &mut self,
        path: &Path,
        file: (u64, u64),
        line: &[u8],
    ) -> Result<Item, DecodeError> {
        if !self.files.contains_key(&file) {
            let header = self.read_header(path)?;
            let r = self.resolve(header);
            self.files.insert(file, r);
        }
        let r = self.files[&file].as_ref().map_err(Clone::clone)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let delim = r.delim;
        if r.header_line.as_deref() == Some(line) {
            return Ok(Item::Nothing);
        }
        let mut record = std::mem::take(&mut self.record);
        let rdr = self
            .splitters
            .entry(delim)
            .or_insert_with(|| csv_core::ReaderBuilder::new().delimiter(delim).build());
        let item = split_into(rdr, line, &mut record).and_then(|()| self.access(r, &record, line));
        self.record = record;
        item
    }

    fn access(&self, r: &Resolved, record: &Record, line: &[u8]) -> Result<Item, DecodeError> {
        let field = |ix: usize| record.get(ix);
        let opt = |ix: Option<usize>| ix.map(field).unwrap_or("");
        let user = field(r.user);
        if user.is_empty() {
            return Err(DecodeError::NoRequestor);
        }
        let patient = field(r.patient);
        if patient.is_empty() {
            return Ok(Item::Nothing);
        }
        let time_ms = match r.date {
            Some(d) => self.time(&format!("{} {}", field(d), field(r.time)))?,
            None => self.time(field(r.time))?,
        };
        let action_word = opt(r.action);
        let action = match r.action {
            None => Action::View,
            Some(_) => self.action(action_word),
        };
        let action_code = match action_word {
            "C" | "R" | "U" | "D" | "E" => action_word.chars().next().unwrap_or('E'),
            _ => match action {
                Action::View | Action::Query => 'R',
                Action::Modify => 'U',
                Action::Print | Action::Export => 'E',
            },
        };
        let id = match (r.id, r.id_parts.is_empty()) {
            (Some(ix), _) if !field(ix).is_empty() => field(ix).to_owned(),
            (_, false) if r.id_parts.iter().any(|&ix| !field(ix).is_empty()) => r
                .id_parts
                .iter()
                .map(|&ix| field(ix))
                .collect::<Vec<_>>()
                .join("|"),
            _ => line_hash(line),
        };
        let flag = opt(r.break_glass).to_lowercase();
        let break_glass = (!flag.is_empty() && self.decoding.btg_values.contains(&flag))
            || r.break_glass_reason.iter().any(|&ix| {
                let v = field(ix);
                !v.is_empty() && !v.eq_ignore_ascii_case("null")
            });
        Ok(Item::Access(AccessEvent {
            id,
            time_ms,
            user: user.to_owned(),
            patient: Some(patient.to_owned()),
            action,
            action_code,
            subtype: opt(r.subtype).to_owned(),
            break_glass,
            workstation: opt(r.workstation).to_owned(),
            succeeded: matches!(
                opt(r.outcome).to_lowercase().as_str(),
                "" | "0" | "success" | "succeeded" | "ok" | "true" | "allowed"
            ),
            department: self.department(opt(r.department)),
            encounter: opt(r.encounter).to_owned(),
            inline: r.inline.read(record, user),
        }))
    }

    /// The context's name for a department the log names.
    fn department(&self, written: &str) -> String {
        self.mapping
            .departments
            .get(written)
            .map_or(written, String::as_str)
            .to_owned()
    }

    /// The file's header line (`None` without one). An I/O error is not kept: the next line
    /// tries again.
    fn read_header(&self, path: &Path) -> Result<Option<Vec<u8>>, DecodeError> {
        Ok(if self.mapping.header.unwrap_or(true) {
            let mut first = Vec::new();
            let f = std::fs::File::open(path)
                .map_err(|e| DecodeError::Csv(format!("reading the header: {e}")))?;
            // A header is never longer than 64 KiB.
            BufReader::new(f.take(64 * 1024))
                .read_until(b'\n', &mut first)
                .map_err(|e| DecodeError::Csv(format!("reading the header: {e}")))?;
            while matches!(first.last(), Some(b'\n' | b'\r')) {
                first.pop();
            }
            if first.starts_with(b"\xEF\xBB\xBF") {
                first.drain(..3);
            }
            Some(first)
        } else {
            None
        })
    }

    /// Column positions from the header: a header without a mapped column fails the same way
    /// for every line of the file, so the caller keeps the failure.
    fn resolve(&self, header: Option<Vec<u8>>) -> Result<Resolved, DecodeError> {
        let delim = match (self.mapping.delimiter, &header) {
            (Some(d), _) => d as u8,
            (None, Some(h)) => sniff(h),
            (None, None) => b',',
        };
        let names: Vec<String> = match &header {
            Some(h) => {
                let mut rec = Record::default();
                split_into(
                    &mut csv_core::ReaderBuilder::new().delimiter(delim).build(),
                    h,
                    &mut rec,
                )?;
                (0..rec.len()).map(|i| rec.get(i).to_owned()).collect()
            }
            None => Vec::new(),
        };
        let folded: Vec<String> = names.iter().map(|n| fold(n)).collect();
        let find = |c: &Column| -> Result<usize, DecodeError> {
            if let Column::Position(p) = c {
                return Ok(p.saturating_sub(1));
            }
            c.names()
                .iter()
                .find_map(|n| {
                    let want = fold(n);
                    folded.iter().position(|h| *h == want)
                })
                .ok_or_else(|| {
                    DecodeError::Csv(format!("the header has no column {}", c.describe()))
                })
        };
        let c = &self.mapping.columns;
        let opt = |c: &Option<Column>| c.as_ref().map(find).transpose();
        // A profile's optional column the header lacks is left out; the site's own is an error.
        let lenient = |key: &str, c: &Option<Column>| {
            if self.mapping.profile_optional.contains(&key) {
                Ok(c.as_ref().and_then(|c| find(c).ok()))
            } else {
                opt(c)
            }
        };
        let single = |key: &str| lenient(key, c.single(key));
        // Lists (reason columns, address lines, user ids): those the header has.
        let some = |cs: &Option<Vec<Column>>| -> Vec<usize> {
            cs.iter().flatten().filter_map(|c| find(c).ok()).collect()
        };
        let required = |c: &Option<Column>| {
            c.as_ref()
                .ok_or_else(|| DecodeError::Csv("mapping without a required column".into()))
                .and_then(find)
        };
        let id_parts = match &c.id_parts {
            Some(parts) => match parts.iter().map(find).collect::<Result<Vec<_>, _>>() {
                Ok(ix) => ix,
                // Without the profile's key columns each row's id is its hash.
                Err(_) if self.mapping.profile_optional.contains(&"id_parts") => Vec::new(),
                Err(e) => return Err(e),
            },
            None => Vec::new(),
        };
        Ok(Resolved {
            delim,
            time: required(&c.time)?,
            date: opt(&c.date)?,
            user: required(&c.user)?,
            patient: required(&c.patient)?,
            action: opt(&c.action)?,
            id: opt(&c.id)?,
            id_parts,
            break_glass: single("break_glass")?,
            break_glass_reason: some(&c.break_glass_reason),
            workstation: single("workstation")?,
            outcome: single("outcome")?,
            subtype: single("subtype")?,
            department: single("department")?,
            encounter: single("encounter")?,
            inline: InlineColumns {
                patient_family: single("patient_family")?,
                patient_lines: some(&c.patient_address),
                patient_city: single("patient_city")?,
                patient_state: single("patient_state")?,
                patient_postal_code: single("patient_postal_code")?,
                user_ids: some(&c.user_ids),
                user_family: single("user_family")?,
            },
            header_line: header,
        })
    }

    fn time(&self, v: &str) -> Result<i64, DecodeError> {
        let bad = || DecodeError::BadTime("time column");
        let v = v.trim();
        let local = |naive: NaiveDateTime| -> Option<i64> {
            match self.tz {
                Some(tz) => crate::time::local_ms(tz, naive),
                None => Some(naive.and_utc().timestamp_millis()),
            }
        };
        if let Some(fmt) = &self.mapping.time_format {
            if let Ok(t) = chrono::DateTime::parse_from_str(v, fmt) {
                return Ok(t.timestamp_millis());
            }
            return NaiveDateTime::parse_from_str(v, fmt)
                .ok()
                .and_then(local)
                .ok_or_else(bad);
        }
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = v.parse().map_err(|_| bad())?;
            // Ten digits are seconds until the year 2286; thirteen are milliseconds.
            return Ok(if v.len() <= 11 { n * 1000 } else { n });
        }
        if !has_offset(v) {
            // A file writes every time alike: the format that read the last one goes first.
            let last = self.last_format.get();
            let order =
                std::iter::once(last).chain((0..LOCAL_FORMATS.len()).filter(|&i| i != last));
            for i in order {
                if let Ok(n) = NaiveDateTime::parse_from_str(v, LOCAL_FORMATS[i]) {
                    self.last_format.set(i);
                    return local(n).ok_or_else(bad);
                }
            }
        }
        parse_fhir_time(&v.replacen(' ', "T", 1)).ok_or_else(bad)
    }

    fn action(&self, word: &str) -> Action {
        let w = word.trim().to_lowercase();
        if let Some(a) = self.decoding.actions.get(&w) {
            return *a;
        }
        match w.as_str() {
            "view" | "read" | "r" | "open" | "access" => Action::View,
            "modify" | "update" | "edit" | "write" | "create" | "delete" | "c" | "u" | "d" => {
                Action::Modify
            }
            "print" => Action::Print,
            "export" | "download" | "e" => Action::Export,
            "query" | "search" => Action::Query,
            _ => {
                self.unknown.count(word.trim());
                self.decoding.default_action
            }
        }
    }
}

/// Local-time formats tried when the mapping names none.
const LOCAL_FORMATS: [&str; 8] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    // US exports (Clarity and most report writers).
    "%m/%d/%Y %H:%M:%S%.f",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
];

/// One record's fields: unquoted text in `buf`, field `i` ending at `ends[i]`.
#[derive(Default)]
struct Record {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Record {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Field `i`, trimmed; empty when the row is shorter.
    fn get(&self, i: usize) -> &str {
        let Some(&end) = self.ends.get(i) else {
            return "";
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        // Checked as UTF-8 when split.
        std::str::from_utf8(&self.buf[start..end])
            .unwrap_or("")
            .trim()
    }
}

/// Splits one line with a reader built once per file: building a CSV reader costs more than
/// splitting a row with it.
fn split_into(
    rdr: &mut csv_core::Reader,
    line: &[u8],
    rec: &mut Record,
) -> Result<(), DecodeError> {
    use csv_core::ReadRecordResult as R;
    rdr.reset();
    rec.buf.clear();
    // Unquoting never lengthens a field.
    rec.buf.resize(line.len() + 1, 0);
    rec.ends.clear();
    rec.ends.resize(64, 0);
    let (mut input, mut out, mut nends) = (line, 0, 0);
    loop {
        // Field ends count from the record's start across calls; an empty input ends it.
        let (res, nin, nout, ne) =
            rdr.read_record(input, &mut rec.buf[out..], &mut rec.ends[nends..]);
        input = &input[nin..];
        out += nout;
        nends += ne;
        match res {
            R::InputEmpty => {}
            R::OutputFull => {
                let n = rec.buf.len() * 2 + 64;
                rec.buf.resize(n, 0);
            }
            R::OutputEndsFull => {
                let n = rec.ends.len() * 2;
                rec.ends.resize(n, 0);
            }
            R::Record | R::End => break,
        }
    }
    rec.buf.truncate(out);
    rec.ends.truncate(nends);
    if std::str::from_utf8(&rec.buf).is_err() {
        return Err(DecodeError::Csv("not UTF-8".into()));
    }
    Ok(())
}

fn has_offset(v: &str) -> bool {
    v.ends_with('Z')
        || v.get(10..)
            .is_some_and(|t| t.contains('+') || t.contains('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(toml_text: &str) -> CsvMapping {
        toml::from_str(toml_text).unwrap()
    }

    fn decoder_with_file(
        m: &str,
        body: &str,
    ) -> (CsvDecoder, tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("access.csv");
        std::fs::write(&p, body).unwrap();
        let m = mapping(m);
        m.validate().unwrap();
        (CsvDecoder::new(&m, Default::default()).unwrap(), d, p)
    }

    fn access(item: Item) -> AccessEvent {
        match item {
            Item::Access(a) => a,
            other => panic!("not an access: {other:?}"),
        }
    }

    const NAMED: &str = "timezone = \"America/Chicago\"\n[columns]\ntime = \"When\"\nuser = \"User ID\"\npatient = \"MRN\"\naction = \"Activity\"\nbreak_glass = \"BTG\"\nid = \"Audit ID\"\n[actions]\n\"Chart Review\" = \"view\"\n";

    #[test]
    fn named_columns_from_the_files_header() {
        let body = "Audit ID,When,User ID,MRN,Activity,BTG\r\nA1,2026-03-01 08:00:00,pr-1,pt-2,Chart Review,Y\r\n";
        let (mut dec, _d, p) = decoder_with_file(NAMED, body);
        let key = (1, 1);
        assert!(matches!(
            dec.decode(&p, key, b"Audit ID,When,User ID,MRN,Activity,BTG\r")
                .unwrap(),
            Item::Nothing
        ));
        let a = access(
            dec.decode(
                &p,
                key,
                b"A1,2026-03-01 08:00:00,pr-1,pt-2,Chart Review,Y\r",
            )
            .unwrap(),
        );
        assert_eq!(a.id, "A1");
        assert_eq!(
            (a.user.as_str(), a.patient.as_deref()),
            ("pr-1", Some("pt-2"))
        );
        assert_eq!(a.action, Action::View);
        assert!(a.break_glass);
        // 08:00 in Chicago in March (CST, UTC-6) is 14:00 UTC.
        assert_eq!(a.time_ms, parse_fhir_time("2026-03-01T14:00:00Z").unwrap());
        let quoted = access(
            dec.decode(&p, key, b"A2,2026-03-01T08:00:00Z,\"pr,9\",pt-2,print,")
                .unwrap(),
        );
        assert_eq!(quoted.user, "pr,9");
        assert_eq!(quoted.action, Action::Print);
        assert_eq!(
            quoted.time_ms,
            parse_fhir_time("2026-03-01T08:00:00Z").unwrap()
        );
    }

    #[test]
    fn positions_without_header_and_epoch_times() {
        let m = "header = false\ndelimiter = \"|\"\n[columns]\ntime = 1\nuser = 2\npatient = 3\naction = 4\n";
        let (mut dec, _d, p) = decoder_with_file(m, "");
        let a = access(
            dec.decode(&p, (1, 2), b"1772352000|pr-1|pt-1|export")
                .unwrap(),
        );
        assert_eq!(a.time_ms, 1_772_352_000_000);
        assert_eq!(a.action, Action::Export);
        assert!(a.id.starts_with("sha256:"));
    }

    #[test]
    fn bad_rows_and_bad_mappings_are_explained() {
        let (mut dec, _d, p) = decoder_with_file(NAMED, "Audit ID,When,User ID,MRN,Activity,BTG\n");
        let e = dec
            .decode(&p, (1, 1), b"A1,yesterday,pr-1,pt-2,view,")
            .unwrap_err();
        assert!(e.to_string().contains("time"), "{e}");
        // An action word nobody mapped is a view, counted by word; never a rejected row.
        let a = access(
            dec.decode(&p, (1, 1), b"A1,2026-03-01 08:00:00,pr-1,pt-2,teleport,")
                .unwrap(),
        );
        assert_eq!(a.action, Action::View);
        assert_eq!(dec.unknown.snapshot().get("teleport"), Some(&1));
        let e = dec
            .decode(&p, (1, 1), b"A1,2026-03-01 08:00:00,,Jane Doe,view,")
            .unwrap_err();
        assert!(!e.to_string().contains("Jane"), "{e}");

        let (mut dec, _d, p) = decoder_with_file(NAMED, "Id,Time\n");
        let e = dec.decode(&p, (2, 2), b"x,y").unwrap_err().to_string();
        assert!(e.contains("no column \"When\""), "{e}");

        let m =
            mapping("header = false\n[columns]\ntime = \"T\"\nuser = 2\npatient = 3\naction = 4\n");
        assert!(m.validate().unwrap_err().0.contains("header = false"));
        let m = mapping(
            "timezone = \"Mars/Olympus\"\n[columns]\ntime = 1\nuser = 2\npatient = 3\naction = 4\n",
        );
        assert!(m.validate().unwrap_err().0.contains("Mars/Olympus"));
        let m = mapping(
            "[columns]\ntime = 1\nuser = 2\npatient = 3\naction = 4\n[actions]\nx = \"peek\"\n",
        );
        assert!(m.validate().unwrap_err().0.contains("peek"));
    }
}
