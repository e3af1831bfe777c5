//! CSV access-log exports with a column mapping from the source's configuration.
//!
//! Columns are named by header text (`user = "UserID"`) or by 1-based position (`user = 3`).
//! With `header = true` the first line of every file names the columns; it is read from the
//! file itself, so a restart in the middle of a file still knows them, and any line equal to
//! the header (exports concatenated into one file) is skipped.

use super::audit_event::{line_hash, truncate};
use super::{DecodeError, Item};
use crate::event::{AccessEvent, Action};
use crate::time::parse_fhir_time;
use chrono::{NaiveDateTime, TimeZone};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvMapping {
    /// The first line of each file names the columns.
    #[serde(default = "yes")]
    pub header: bool,
    /// One ASCII character.
    #[serde(default = "comma")]
    pub delimiter: char,
    /// chrono format for the time column (`%m/%d/%Y %H:%M:%S`); default: RFC 3339 or FHIR
    /// date-time, or Unix seconds / milliseconds when the value is all digits.
    pub time_format: Option<String>,
    /// IANA zone for times without an offset (`America/Chicago`); default UTC.
    pub timezone: Option<String>,
    pub columns: Columns,
    /// Extra action words: `"Chart Review" = "view"`. Matched without regard to case, before
    /// the built-in words (view/read, modify/update/edit/create/delete, print, export/download,
    /// query/search, and the FHIR codes C R U D E).
    #[serde(default)]
    pub actions: HashMap<String, String>,
}

fn yes() -> bool {
    true
}
fn comma() -> char {
    ','
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub time: Column,
    pub user: Column,
    pub patient: Column,
    pub action: Column,
    /// Event id; without it the id is a hash of the line, so keep it when identical rows
    /// are distinct accesses.
    pub id: Option<Column>,
    /// Truthy (1, true, yes, y, btg) marks break-the-glass.
    pub break_glass: Option<Column>,
    pub workstation: Option<Column>,
    /// Success when empty or one of 0, success, succeeded, ok, true, allowed.
    pub outcome: Option<Column>,
    /// Free-text subtype kept with the access (report name, screen, ...).
    pub subtype: Option<Column>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Column {
    Position(usize),
    Name(String),
}

impl CsvMapping {
    /// Checks what can be checked before any file is read.
    pub fn validate(&self) -> Result<(), String> {
        if !self.delimiter.is_ascii() {
            return Err(format!(
                "delimiter {:?} is not one ASCII character",
                self.delimiter
            ));
        }
        if let Some(tz) = &self.timezone {
            tz.parse::<chrono_tz::Tz>()
                .map_err(|_| format!("timezone {tz:?} is not an IANA zone name"))?;
        }
        for (word, action) in &self.actions {
            parse_action_name(action).ok_or_else(|| {
                format!(
                    "actions.{word:?} = {action:?}: expected view, modify, print, export or query"
                )
            })?;
        }
        let c = &self.columns;
        let all = [
            Some(&c.time),
            Some(&c.user),
            Some(&c.patient),
            Some(&c.action),
            c.id.as_ref(),
            c.break_glass.as_ref(),
            c.workstation.as_ref(),
            c.outcome.as_ref(),
            c.subtype.as_ref(),
        ];
        for col in all.into_iter().flatten() {
            match col {
                Column::Position(0) => return Err("column positions start at 1".into()),
                Column::Name(_) if !self.header => {
                    return Err(
                        "columns are named but header = false: use positions (1, 2, ...)".into(),
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn parse_action_name(s: &str) -> Option<Action> {
    Action::ALL.into_iter().find(|a| a.as_str() == s)
}

/// Column positions (0-based) once the header is known.
#[derive(Debug, Clone)]
struct Resolved {
    time: usize,
    user: usize,
    patient: usize,
    action: usize,
    id: Option<usize>,
    break_glass: Option<usize>,
    workstation: Option<usize>,
    outcome: Option<usize>,
    subtype: Option<usize>,
    header_line: Option<Vec<u8>>,
}

pub struct CsvDecoder {
    mapping: CsvMapping,
    tz: Option<chrono_tz::Tz>,
    actions: HashMap<String, Action>,
    /// Per file (device, inode): the resolved columns.
    files: HashMap<(u64, u64), Resolved>,
}

impl CsvDecoder {
    pub fn new(mapping: CsvMapping) -> Self {
        let tz = mapping.timezone.as_deref().and_then(|t| t.parse().ok());
        let actions = mapping
            .actions
            .iter()
            .filter_map(|(w, a)| Some((w.to_lowercase(), parse_action_name(a)?)))
            .collect();
        CsvDecoder {
            mapping,
            tz,
            actions,
            files: HashMap::new(),
        }
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
            let r = self.resolve(path)?;
            self.files.insert(file, r);
        }
        let r = &self.files[&file];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if r.header_line.as_deref() == Some(line) {
            return Ok(Item::Nothing);
        }
        let record = self.split(line)?;
        let field = |ix: usize| record.get(ix).map(|s| s.trim()).unwrap_or("");
        let opt = |ix: Option<usize>| ix.map(field).unwrap_or("");
        let user = field(r.user);
        if user.is_empty() {
            return Err(DecodeError::NoRequestor);
        }
        let patient = field(r.patient);
        if patient.is_empty() {
            return Ok(Item::Nothing);
        }
        let time_ms = self.time(field(r.time))?;
        let action_word = field(r.action);
        let action = self.action(action_word).ok_or(DecodeError::BadAction)?;
        let action_code = match action_word {
            "C" | "R" | "U" | "D" | "E" => action_word.chars().next().unwrap_or('E'),
            _ => match action {
                Action::View | Action::Query => 'R',
                Action::Modify => 'U',
                Action::Print | Action::Export => 'E',
            },
        };
        let id = opt(r.id);
        Ok(Item::Access(AccessEvent {
            id: if id.is_empty() {
                line_hash(line)
            } else {
                id.to_owned()
            },
            time_ms,
            user: user.to_owned(),
            patient: Some(patient.to_owned()),
            action,
            action_code,
            subtype: opt(r.subtype).to_owned(),
            break_glass: matches!(
                opt(r.break_glass).to_lowercase().as_str(),
                "1" | "true" | "yes" | "y" | "t" | "btg"
            ),
            workstation: opt(r.workstation).to_owned(),
            succeeded: matches!(
                opt(r.outcome).to_lowercase().as_str(),
                "" | "0" | "success" | "succeeded" | "ok" | "true" | "allowed"
            ),
        }))
    }

    fn split(&self, line: &[u8]) -> Result<Vec<String>, DecodeError> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(self.mapping.delimiter as u8)
            .flexible(true)
            .from_reader(line);
        let mut rec = ::csv::StringRecord::new();
        match reader.read_record(&mut rec) {
            Ok(true) => Ok(rec.iter().map(str::to_owned).collect()),
            Ok(false) => Ok(Vec::new()),
            Err(e) => Err(DecodeError::Csv(match e.kind() {
                ::csv::ErrorKind::Utf8 { .. } => "not UTF-8".into(),
                _ => "malformed CSV record".into(),
            })),
        }
    }

    fn resolve(&self, path: &Path) -> Result<Resolved, DecodeError> {
        let header = if self.mapping.header {
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
            Some(first)
        } else {
            None
        };
        let names = match &header {
            Some(h) => self.split(h)?,
            None => Vec::new(),
        };
        let find = |c: &Column| -> Result<usize, DecodeError> {
            match c {
                Column::Position(p) => Ok(p.saturating_sub(1)),
                Column::Name(n) => names
                    .iter()
                    .position(|h| h.trim().eq_ignore_ascii_case(n))
                    .ok_or_else(|| {
                        DecodeError::Csv(format!("the header has no column {:?}", truncate(n, 60)))
                    }),
            }
        };
        let c = &self.mapping.columns;
        let opt = |c: &Option<Column>| c.as_ref().map(find).transpose();
        Ok(Resolved {
            time: find(&c.time)?,
            user: find(&c.user)?,
            patient: find(&c.patient)?,
            action: find(&c.action)?,
            id: opt(&c.id)?,
            break_glass: opt(&c.break_glass)?,
            workstation: opt(&c.workstation)?,
            outcome: opt(&c.outcome)?,
            subtype: opt(&c.subtype)?,
            header_line: header,
        })
    }

    fn time(&self, v: &str) -> Result<i64, DecodeError> {
        let bad = || DecodeError::BadTime("time column");
        let local = |naive: NaiveDateTime| -> Option<i64> {
            match self.tz {
                Some(tz) => tz
                    .from_local_datetime(&naive)
                    .earliest()
                    .map(|t| t.timestamp_millis()),
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
        if self.tz.is_some() && !has_offset(v) {
            for fmt in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ] {
                if let Ok(n) = NaiveDateTime::parse_from_str(v, fmt) {
                    return local(n).ok_or_else(bad);
                }
            }
        }
        parse_fhir_time(&v.replacen(' ', "T", 1)).ok_or_else(bad)
    }

    fn action(&self, word: &str) -> Option<Action> {
        let w = word.to_lowercase();
        if let Some(a) = self.actions.get(&w) {
            return Some(*a);
        }
        Some(match w.as_str() {
            "view" | "read" | "r" | "open" | "access" => Action::View,
            "modify" | "update" | "edit" | "write" | "create" | "delete" | "c" | "u" | "d" => {
                Action::Modify
            }
            "print" => Action::Print,
            "export" | "download" | "e" => Action::Export,
            "query" | "search" => Action::Query,
            _ => return None,
        })
    }
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
        (CsvDecoder::new(m), d, p)
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
        let e = dec
            .decode(&p, (1, 1), b"A1,2026-03-01 08:00:00,pr-1,pt-2,teleport,")
            .unwrap_err();
        assert_eq!(e, DecodeError::BadAction);
        let e = dec
            .decode(&p, (1, 1), b"A1,2026-03-01 08:00:00,,Jane Doe,view,")
            .unwrap_err();
        assert!(!e.to_string().contains("Jane"), "{e}");

        let (mut dec, _d, p) = decoder_with_file(NAMED, "Id,Time\n");
        let e = dec.decode(&p, (2, 2), b"x,y").unwrap_err().to_string();
        assert!(e.contains("no column \"When\""), "{e}");

        let m =
            mapping("header = false\n[columns]\ntime = \"T\"\nuser = 2\npatient = 3\naction = 4\n");
        assert!(m.validate().unwrap_err().contains("header = false"));
        let m = mapping(
            "timezone = \"Mars/Olympus\"\n[columns]\ntime = 1\nuser = 2\npatient = 3\naction = 4\n",
        );
        assert!(m.validate().unwrap_err().contains("Mars/Olympus"));
        let m = mapping(
            "[columns]\ntime = 1\nuser = 2\npatient = 3\naction = 4\n[actions]\nx = \"peek\"\n",
        );
        assert!(m.validate().unwrap_err().contains("peek"));
    }
}
