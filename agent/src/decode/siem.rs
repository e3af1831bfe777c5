//! Epic Security-SIEM events: CEF (ArcSight Common Event Format) or LEEF (IBM QRadar Log
//! Event Extended Format) records, as Epic's "SIEM syslog settings" send them, or as lines of
//! a file a SIEM forwards.
//!
//! Epic does not publish the feed; the keys read here are those the public parsers for it
//! document (Google Security Operations' Epic parser and its UDM mapping table; the Exabeam
//! content library's `epic-siem-leef` parsers, vendor `Epic`, product `Security-SIEM`):
//!
//! user            = `UID`, else `LOGIN_LDAP_ID`, else `usrName` (CEF: else `suser`);
//!                   whichever of `UID` and `LOGIN_LDAP_ID` is not the user is another name
//! patient         = `PATIENT`
//! time            = `devTime` (`MMM dd yyyy HH:mm:ss`, ISO 8601 or epoch ms), else CEF `rt`,
//!                   `end` or `start`; times without an offset in the source's zone
//! action          = from the event id: `MASKED_DATA_PRINTING` print, `PHI_CLIENT_FILE`
//!                   export, anything else a view (kept as the subtype)
//! break-the-glass = an `AC_BREAK_THE_GLASS_*` event, or `BTGREASON`, `BTGEXPLANATION` or
//!                   `BTGNOACCESSREAS` not empty
//! failed          = an event id with `FAILED` or `INAPPROPRIATE`, `ERRMSG`, or `SUCCESS` no
//! workstation     = `shost`, else `CLIENTNAME`; department = `DEP`, else the department the
//!                   user's last login or context change (`NEWDEPARTMENT`) named
//!
//! Events without a patient (logins, context changes, password changes) are no access: they
//! are counted as lines, never rejected, and a login's or context change's department is
//! kept for the user's next accesses. Each access's id is a hash of the record, so a record
//! sent twice is stored once.

use super::audit_event::{line_hash, truncate};
use super::{DecodeError, Item};
use crate::event::{AccessEvent, Action, Inline};
use chrono::{NaiveDateTime, TimeZone};
use std::collections::HashMap;

/// Users whose current department is remembered; beyond it the oldest are forgotten.
const MAX_USERS: usize = 200_000;

/// Decodes one source's records, remembering each user's department between them.
pub struct SiemDecoder {
    zone: chrono_tz::Tz,
    department: HashMap<String, String>,
}

/// One record: its header's event id and its key-value pairs.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    event_id: String,
    fields: Vec<(String, String)>,
}

impl Record {
    /// The first non-empty value of any of `keys` (compared without regard to case).
    fn get(&self, keys: &[&str]) -> &str {
        keys.iter()
            .find_map(|k| {
                self.fields
                    .iter()
                    .find(|(name, v)| name.eq_ignore_ascii_case(k) && !v.trim().is_empty())
                    .map(|(_, v)| v.trim())
            })
            .unwrap_or("")
    }
}

impl SiemDecoder {
    pub fn new(zone: chrono_tz::Tz) -> Self {
        SiemDecoder {
            zone,
            department: HashMap::new(),
        }
    }

    pub fn zone(&self) -> chrono_tz::Tz {
        self.zone
    }

    pub fn decode(&mut self, line: &[u8]) -> Result<Item, DecodeError> {
        let text = std::str::from_utf8(line)
            .map_err(|e| DecodeError::Siem(format!("not UTF-8 after byte {}", e.valid_up_to())))?;
        let at = record_start(line)
            .ok_or_else(|| DecodeError::Siem("no CEF: or LEEF: record".into()))?;
        let record = parse(&text[at..])?;
        let user = record.get(&["UID", "LOGIN_LDAP_ID", "usrName", "suser"]);
        let patient = record.get(&["PATIENT"]);
        let said_department = record.get(&["DEP", "NEWDEPARTMENT"]);
        if patient.is_empty() {
            if !user.is_empty() && !said_department.is_empty() {
                if self.department.len() >= MAX_USERS && !self.department.contains_key(user) {
                    self.department.clear();
                }
                self.department
                    .insert(user.to_owned(), said_department.to_owned());
            }
            return Ok(Item::Nothing);
        }
        if user.is_empty() {
            return Err(DecodeError::NoRequestor);
        }
        let when = record.get(&["devTime", "rt", "end", "start"]);
        if when.is_empty() {
            return Err(DecodeError::Missing("devTime"));
        }
        let time_ms = self.time(when, record.get(&["devTimeFormat"]))?;
        let event = record.event_id.to_ascii_uppercase();
        let action = match event.as_str() {
            "MASKED_DATA_PRINTING" => Action::Print,
            "PHI_CLIENT_FILE" => Action::Export,
            _ => Action::View,
        };
        let break_glass = event.starts_with("AC_BREAK_THE_GLASS")
            || !record
                .get(&["BTGREASON", "BTGEXPLANATION", "BTGNOACCESSREAS"])
                .is_empty();
        let success = record.get(&["SUCCESS"]).to_ascii_lowercase();
        let succeeded = !(event.contains("FAILED")
            || event.contains("INAPPROPRIATE")
            || !record.get(&["ERRMSG"]).is_empty()
            || matches!(success.as_str(), "n" | "no" | "false" | "0"));
        let department = match said_department {
            "" => self.department.get(user).cloned().unwrap_or_default(),
            d => d.to_owned(),
        };
        let other_names: Vec<String> = ["UID", "LOGIN_LDAP_ID"]
            .iter()
            .map(|k| record.get(&[k]))
            .filter(|v| !v.is_empty() && *v != user)
            .map(str::to_owned)
            .collect();
        Ok(Item::Access(AccessEvent {
            id: line_hash(text[at..].trim_end().as_bytes()),
            time_ms,
            user: user.to_owned(),
            patient: Some(patient.to_owned()),
            action,
            action_code: match action {
                Action::Print | Action::Export => 'E',
                _ => 'R',
            },
            subtype: truncate(&record.event_id, 64),
            break_glass,
            workstation: record.get(&["shost", "CLIENTNAME"]).to_owned(),
            succeeded,
            department,
            encounter: String::new(),
            inline: (!other_names.is_empty()).then(|| {
                Box::new(Inline {
                    user_ids: other_names,
                    ..Inline::default()
                })
            }),
        }))
    }

    fn time(&self, v: &str, java_format: &str) -> Result<i64, DecodeError> {
        let bad = || DecodeError::BadTime("devTime");
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = v.parse().map_err(|_| bad())?;
            return Ok(if v.len() <= 11 { n * 1000 } else { n });
        }
        if let Some(t) = crate::time::parse_time_in(&v.replacen(' ', "T", 1), self.zone)
            .filter(|_| v.as_bytes().first().is_some_and(u8::is_ascii_digit))
        {
            return Ok(t);
        }
        // `MMM dd yyyy HH:mm:ss[.SSS] [zone]`, the format the Epic parsers expect; a trailing
        // zone name or offset is honoured.
        let mut parts: Vec<&str> = v.split_whitespace().collect();
        let zone = match parts.len() {
            5 => parts.pop(),
            _ => None,
        };
        let naive = parts.join(" ");
        let fmt = if java_format.contains("MMM") || java_format.is_empty() {
            "%b %d %Y %H:%M:%S%.f"
        } else {
            return Err(bad());
        };
        let n = NaiveDateTime::parse_from_str(&naive, fmt).map_err(|_| bad())?;
        let local = |tz: chrono_tz::Tz| crate::time::local_ms(tz, n);
        match zone {
            None => local(self.zone),
            Some(z) => match z.parse::<chrono_tz::Tz>() {
                Ok(tz) => local(tz),
                Err(_) => chrono::FixedOffset::east_opt(offset_seconds(z).ok_or_else(bad)?)
                    .and_then(|o| o.from_local_datetime(&n).earliest())
                    .map(|t| t.timestamp_millis()),
            },
        }
        .ok_or_else(bad)
    }
}

/// `+0100`, `-05:00`, `Z`, `UTC`, `GMT` as seconds east of UTC.
fn offset_seconds(z: &str) -> Option<i32> {
    if matches!(z, "Z" | "UTC" | "GMT") {
        return Some(0);
    }
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 4 {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// Where a CEF or LEEF record starts in a line or a syslog message: the first `CEF:` or
/// `LEEF:`.
pub fn record_start(line: &[u8]) -> Option<usize> {
    let find = |needle: &[u8]| line.windows(needle.len()).position(|w| w == needle);
    match (find(b"CEF:"), find(b"LEEF:")) {
        (Some(c), Some(l)) => Some(c.min(l)),
        (c, l) => c.or(l),
    }
}

fn parse(text: &str) -> Result<Record, DecodeError> {
    let text = text.trim_end_matches(['\r', '\n']);
    if text.starts_with("CEF:") {
        // CEF:Version|Vendor|Product|Version|Signature ID|Name|Severity|Extension
        let (header, rest) = split_header(text, 7)?;
        Ok(Record {
            event_id: header[4].clone(),
            fields: cef_extension(rest),
        })
    } else {
        // LEEF:1.0|Vendor|Product|Version|EventID|attributes (tab separated), or
        // LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|attributes.
        let (header, rest) = split_header(text, 5)?;
        let v2 = header[0].trim_start_matches("LEEF:").starts_with('2');
        let (delim, attrs) = match rest.split_once('|') {
            Some((d, attrs)) if v2 && !d.contains('=') => (delimiter(d), attrs),
            _ => ('\t', rest),
        };
        let fields = if attrs.contains(delim) || !attrs.contains(' ') {
            attrs
                .split(delim)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .collect()
        } else {
            // Relays that re-join attributes with spaces: read them as CEF pairs.
            cef_extension(attrs)
        };
        Ok(Record {
            event_id: header[4].clone(),
            fields,
        })
    }
}

/// LEEF 2.0's delimiter field: one character, or its code as `x5E` / `0x5E`.
fn delimiter(d: &str) -> char {
    let hex = d
        .strip_prefix("0x")
        .or_else(|| d.strip_prefix("x"))
        .or_else(|| d.strip_prefix("X"));
    match hex.and_then(|h| u32::from_str_radix(h, 16).ok()) {
        Some(c) => char::from_u32(c).unwrap_or('\t'),
        None => d.chars().next().unwrap_or('\t'),
    }
}

/// The first `n` pipe-separated header fields (`\|` and `\\` escaped) and the rest.
fn split_header(text: &str, n: usize) -> Result<(Vec<String>, &str), DecodeError> {
    let mut fields = Vec::with_capacity(n);
    let mut cur = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    cur.push(next);
                }
            }
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == n {
                    return Ok((fields, &text[i + 1..]));
                }
            }
            _ => cur.push(c),
        }
    }
    Err(DecodeError::Siem(format!(
        "a header of {} fields, expected {n}",
        fields.len() + 1
    )))
}

/// CEF extension pairs: `key=value` separated by spaces, where a value may hold spaces and
/// escapes `\=`, `\\`, `\n` and `\r`; a key is the word before an unescaped `=`.
fn cef_extension(s: &str) -> Vec<(String, String)> {
    let b = s.as_bytes();
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'=' => eqs.push(i),
            _ => {}
        }
        i += 1;
    }
    let key_start = |eq: usize| s[..eq].rfind(' ').map_or(0, |sp| sp + 1);
    let mut out = Vec::with_capacity(eqs.len());
    for (n, &eq) in eqs.iter().enumerate() {
        let ks = key_start(eq);
        let key = &s[ks..eq];
        if key.is_empty() {
            continue;
        }
        let end = eqs
            .get(n + 1)
            .map(|&next| key_start(next).saturating_sub(1).max(eq + 1))
            .unwrap_or(s.len());
        let raw = &s[eq + 1..end.max(eq + 1)];
        let mut v = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    Some(other) => v.push(other),
                    None => {}
                }
            } else {
                v.push(c);
            }
        }
        out.push((key.to_owned(), v.trim_end().to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(d: &mut SiemDecoder, line: &str) -> AccessEvent {
        match d.decode(line.as_bytes()) {
            Ok(Item::Access(a)) => a,
            other => panic!("not an access: {other:?}"),
        }
    }

    #[test]
    fn cef_with_spaces_escapes_and_a_syslog_header() {
        let mut d = SiemDecoder::new(chrono_tz::America::Chicago);
        let a = access(
            &mut d,
            r"<134>Mar 10 08:00:00 epicprd01 CEF:0|Epic|Security-SIEM|2024|AC_BREAK_THE_GLASS_ACCESS|Break the glass|5|UID=E1001 LOGIN_LDAP_ID=jdoe usrName=E1001-DOE, JANE- PATIENT=Z7004242 devTime=Mar 10 2026 08:00:05 shost=WS-ED-04 DEP=EMERGENCY DEPARTMENT BTGREASON=Patient in my care BTGEXPLANATION=a\=b\\c",
        );
        assert_eq!(a.user, "E1001");
        assert_eq!(a.patient.as_deref(), Some("Z7004242"));
        assert!(a.break_glass && a.succeeded);
        assert_eq!(a.workstation, "WS-ED-04");
        assert_eq!(a.department, "EMERGENCY DEPARTMENT");
        assert_eq!(
            a.time_ms,
            crate::time::parse_fhir_time("2026-03-10T13:00:05Z").unwrap(),
            "Chicago local time"
        );
        assert_eq!(a.inline.unwrap().user_ids, ["jdoe"]);
    }

    #[test]
    fn leef_one_and_two_and_the_departments_of_context_changes() {
        let mut d = SiemDecoder::new(chrono_tz::UTC);
        // A context change names the user's new department: no access, remembered.
        assert_eq!(
            d.decode(b"LEEF:2.0|Epic|Security-SIEM|2024|CONTEXTCHANGE|^|UID=E2^NEWDEPARTMENT=ONCOLOGY^devTime=Mar 10 2026 07:59:00")
                .unwrap(),
            Item::Nothing
        );
        let a = access(
            &mut d,
            "LEEF:2.0|Epic|Security-SIEM|2024|IC_SERVICE_AUDIT|x5E|UID=E2^PATIENT=Z1^devTime=Mar 10 2026 08:00:00 -0500",
        );
        assert_eq!(a.department, "ONCOLOGY");
        assert_eq!(
            a.time_ms,
            crate::time::parse_fhir_time("2026-03-10T13:00:00Z").unwrap()
        );
        let b = access(
            &mut d,
            "LEEF:1.0|Epic|Security-SIEM|2024|MASKED_DATA_PRINTING|UID=E3\tPATIENT=Z2\tdevTime=2026-03-10T08:00:00Z\tSUCCESS=N",
        );
        assert_eq!(b.action, Action::Print);
        assert!(!b.succeeded);
        assert_ne!(a.id, b.id);
        // A login without a patient is counted as a line, not refused.
        assert_eq!(
            d.decode(b"CEF:0|Epic|Security-SIEM|2024|LOGIN|Login|3|UID=E3 DEP=ED")
                .unwrap(),
            Item::Nothing
        );
    }

    #[test]
    fn broken_records_are_explained_without_their_values() {
        let mut d = SiemDecoder::new(chrono_tz::UTC);
        for (line, want) in [
            ("CEF:0|Epic|Security-SIEM", "expected 7"),
            (
                "CEF:0|Epic|S|1|X|n|3|PATIENT=Z9 devTime=Mar 10 2026 08:00:00",
                "agent.who",
            ),
            ("CEF:0|Epic|S|1|X|n|3|UID=E1 PATIENT=Z9", "devTime"),
            (
                "CEF:0|Epic|S|1|X|n|3|UID=E1 PATIENT=Z9 devTime=tomorrow",
                "devTime",
            ),
        ] {
            let e = d.decode(line.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
            assert!(!e.contains("Z9"), "{e}");
        }
    }
}
