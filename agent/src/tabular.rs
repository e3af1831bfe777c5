//! Delimited files as hospitals export them: comma, tab, pipe or semicolon (declared or
//! sniffed from the header), quoting, a UTF-8 byte order mark, CRLF line ends, and header
//! names that drift between exports ("Employee ID", "EmployeeID", "employee_id"). Columns
//! are named by header text (one name or a list of accepted names, compared without regard
//! to case, spaces, underscores or punctuation) or by 1-based position.

use serde::Deserialize;
use std::io::Read;
use std::path::Path;

/// How a mapping names a column.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    Position(usize),
    Name(String),
    /// Any of these names: the first one the header has.
    Names(Vec<String>),
}

impl ColumnSpec {
    /// The 0-based index of the column in `header`.
    pub fn find(&self, header: &[String]) -> Option<usize> {
        match self {
            ColumnSpec::Position(p) => p.checked_sub(1),
            ColumnSpec::Name(n) => find_name(header, n),
            ColumnSpec::Names(ns) => ns.iter().find_map(|n| find_name(header, n)),
        }
    }

    /// For messages: the names it accepts.
    pub fn describe(&self) -> String {
        match self {
            ColumnSpec::Position(p) => format!("column {p}"),
            ColumnSpec::Name(n) => format!("{n:?}"),
            ColumnSpec::Names(ns) => ns
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

/// Header text folded for comparison: lowercase letters and digits only.
pub fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn find_name(header: &[String], name: &str) -> Option<usize> {
    let want = fold(name);
    header.iter().position(|h| fold(h) == want)
}

/// The delimiter of a header line: the most frequent of `,` `\t` `|` `;` outside quotes.
pub fn sniff(header: &[u8]) -> u8 {
    let mut counts = [0usize; 4];
    let cands = [b',', b'\t', b'|', b';'];
    let mut quoted = false;
    for &b in header {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if let Some(i) = cands.iter().position(|&c| c == b) {
                counts[i] += 1;
            }
        }
    }
    let best = (0..4).max_by_key(|&i| (counts[i], 4 - i)).unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        cands[best]
    }
}

/// A whole delimited file: its header and records, with the 1-based line of each record.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(u64, Vec<String>)>,
    /// Records that could not be read (`line: reason`).
    pub bad: Vec<(u64, String)>,
}

/// Reads `path` with a header line. `delimiter` `None` sniffs it from the header.
pub fn read(path: &Path, delimiter: Option<u8>) -> std::io::Result<Table> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    Ok(parse(&bytes, delimiter))
}

pub fn parse(bytes: &[u8], delimiter: Option<u8>) -> Table {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or(b"");
    let delim = delimiter.unwrap_or_else(|| sniff(first));
    let mut records = Records {
        bytes,
        at: 0,
        line: 1,
        delim,
    };
    let header: Vec<String> = match records.next() {
        Some((_, Ok(h))) => h.into_iter().map(|f| f.trim().to_owned()).collect(),
        _ => Vec::new(),
    };
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (line, rec) in records {
        match rec {
            Ok(fields) => {
                if fields.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                rows.push((
                    line,
                    fields.into_iter().map(|f| f.trim().to_owned()).collect(),
                ));
            }
            Err(reason) => bad.push((line, reason.to_owned())),
        }
    }
    Table { header, rows, bad }
}

/// RFC 4180 records: fields split on the delimiter, double quotes around a field (with `""`
/// for a quote) that may hold delimiters and line breaks, records ended by LF or CRLF. Each
/// record comes with the line it starts on.
struct Records<'b> {
    bytes: &'b [u8],
    at: usize,
    line: u64,
    delim: u8,
}

impl Iterator for Records<'_> {
    type Item = (u64, Result<Vec<String>, &'static str>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.bytes;
        if self.at >= b.len() {
            return None;
        }
        let start_line = self.line;
        let mut fields = Vec::new();
        let mut field: Vec<u8> = Vec::new();
        let mut quoted = false;
        let mut was_quoted = false;
        let mut malformed = false;
        while self.at < b.len() {
            let c = b[self.at];
            self.at += 1;
            if quoted {
                match c {
                    b'"' if b.get(self.at) == Some(&b'"') => {
                        field.push(b'"');
                        self.at += 1;
                    }
                    b'"' => quoted = false,
                    b'\n' => {
                        self.line += 1;
                        field.push(c);
                    }
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                b'"' if field.iter().all(u8::is_ascii_whitespace) && !was_quoted => {
                    field.clear();
                    quoted = true;
                    was_quoted = true;
                }
                b'"' => malformed = true,
                b'\n' => {
                    self.line += 1;
                    break;
                }
                b'\r' if b.get(self.at) == Some(&b'\n') => {}
                _ if c == self.delim => {
                    fields.push(std::mem::take(&mut field));
                    was_quoted = false;
                }
                _ => field.push(c),
            }
        }
        if quoted {
            malformed = true;
        }
        fields.push(field);
        if malformed {
            return Some((start_line, Err("malformed quoting")));
        }
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            match String::from_utf8(f) {
                Ok(s) => out.push(s),
                Err(_) => return Some((start_line, Err("not UTF-8"))),
            }
        }
        Some((start_line, Ok(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_per_rfc_4180() {
        let t = parse(
            b"a,b\n\"x, \"\"y\"\"\",2\n\"multi\nline\",3\nnext,4\nbad\"quote,5\n",
            None,
        );
        assert_eq!(t.rows[0].1, ["x, \"y\"", "2"]);
        assert_eq!(t.rows[1], (3, vec!["multi\nline".into(), "3".into()]));
        assert_eq!(t.rows[2].0, 5);
        assert_eq!(t.bad, [(6, "malformed quoting".to_owned())]);
    }

    #[test]
    fn drifting_headers_bom_crlf_and_sniffed_delimiters() {
        let t = parse(
            b"\xEF\xBB\xBFEmployee ID|Last Name|\"Job, Title\"\r\nE1|Doe|\"Nurse, RN\"\r\n\r\nE2|Roe|Clerk\r\n",
            None,
        );
        assert_eq!(t.header, ["Employee ID", "Last Name", "Job, Title"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].1[2], "Nurse, RN");
        assert_eq!(t.rows[1].0, 4, "line numbers count the blank line");
        let id = ColumnSpec::Names(vec!["Worker ID".into(), "employee_id".into()]);
        assert_eq!(id.find(&t.header), Some(0));
        assert_eq!(ColumnSpec::Name("LASTNAME".into()).find(&t.header), Some(1));
        assert_eq!(ColumnSpec::Position(3).find(&t.header), Some(2));
        assert_eq!(ColumnSpec::Name("Missing".into()).find(&t.header), None);
        assert_eq!(sniff(b"a\tb\tc"), b'\t');
        assert_eq!(sniff(b"a;b;c"), b';');
        assert_eq!(sniff(b"\"a,b\"|c"), b'|');
        assert_eq!(sniff(b"single"), b',');
    }
}
