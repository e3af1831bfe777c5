//! HL7 version 2 messages: a small strict parser of their structure.
//!
//! A message is segments separated by carriage returns (line feeds and CRLF are accepted, as
//! files written on other systems carry them); `MSH` comes first and declares the separators
//! (field, then component, repetition, escape, subcomponent). Fields are numbered as the
//! standard numbers them: `MSH-1` is the field separator itself, so `MSH-9` is the message
//! type. Escapes (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`, `\Xhh\`) are undone when a value is read.
//!
//! Errors say what is wrong and where (segment and field numbers), never what the value
//! was: messages carry names, addresses and record numbers.
//!
//! Files and streams carry several messages: MLLP framing (`0x0B message 0x1C 0x0D`), or
//! messages back to back, each starting at its `MSH`, with optional batch envelopes
//! (`FHS`, `BHS`, `BTS`, `FTS`) that are skipped.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Hl7Error {
    #[error("the message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH declares no usable separators")]
    BadSeparators,
    #[error("segment {0} has a malformed name")]
    BadSegmentName(usize),
    #[error("the message is not UTF-8 after byte {0}")]
    NotUtf8(usize),
    #[error("{0} is missing")]
    Missing(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'m> {
    pub name: &'m str,
    /// Raw fields, `fields[0]` being the segment name (so `fields[n]` is field n; for MSH,
    /// field 1 is the separator and field 2 the encoding characters).
    fields: Vec<&'m str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'m> {
    pub sep: Separators,
    pub segments: Vec<Segment<'m>>,
}

impl<'m> Message<'m> {
    pub fn parse(text: &'m str) -> Result<Self, Hl7Error> {
        let text = text.trim_start_matches(['\u{feff}', '\n', '\r', ' ', '\x0b']);
        if !text.starts_with("MSH") {
            return Err(Hl7Error::NoMsh);
        }
        let mut chars = text[3..].chars();
        let field = chars.next().ok_or(Hl7Error::BadSeparators)?;
        let enc: Vec<char> = chars.take_while(|c| *c != field).collect();
        // Separators are printable: a line break or control character as one would cut the
        // MSH segment itself apart (found by the hl7v2_adt fuzz target).
        let unfit = |c: &char| c.is_alphanumeric() || c.is_control() || c.is_whitespace();
        if unfit(&field) || enc.len() < 4 || enc.iter().take(4).any(unfit) {
            return Err(Hl7Error::BadSeparators);
        }
        let sep = Separators {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc[2],
            subcomponent: enc[3],
        };
        let mut segments = Vec::new();
        for (n, raw) in text
            .split(['\r', '\n'])
            .map(|s| s.trim_end_matches(['\x1c', '\x0b']))
            .filter(|s| !s.trim().is_empty())
            .enumerate()
        {
            let mut fields: Vec<&str> = raw.split(field).collect();
            let name = fields[0];
            if name.len() != 3
                || !name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            {
                return Err(Hl7Error::BadSegmentName(n + 1));
            }
            if name == "MSH" {
                // MSH-1 is the separator, MSH-2 the encoding characters.
                let enc_field = fields.get(1).copied().unwrap_or("");
                fields.splice(
                    1..2.min(fields.len()),
                    [raw.get(3..3 + field.len_utf8()).unwrap_or(""), enc_field],
                );
            }
            segments.push(Segment { name, fields });
        }
        Ok(Message { sep, segments })
    }

    pub fn segment(&self, name: &str) -> Option<&Segment<'m>> {
        self.segments.iter().find(|s| s.name == name)
    }

    pub fn all(&self, name: &'m str) -> impl Iterator<Item = &Segment<'m>> + '_ {
        self.segments.iter().filter(move |s| s.name == name)
    }

    /// `MSH-9`: message type and trigger event (`ADT`, `A01`).
    pub fn kind(&self) -> (String, String) {
        let Some(msh) = self.segment("MSH") else {
            return (String::new(), String::new());
        };
        let f = msh.field(9);
        (self.component(f, 1), self.component(f, 2))
    }

    /// `MSH-10`, the message control id.
    pub fn control_id(&self) -> String {
        self.segment("MSH")
            .map(|m| self.value(m.field(10)))
            .unwrap_or_default()
    }

    /// The repetitions of a raw field.
    pub fn repetitions<'f>(&self, field: &'f str) -> impl Iterator<Item = &'f str> {
        field.split(self.sep.repetition)
    }

    /// Component `n` (1-based) of a raw field's first repetition, unescaped.
    pub fn component(&self, field: &str, n: usize) -> String {
        let first = field.split(self.sep.repetition).next().unwrap_or("");
        first
            .split(self.sep.component)
            .nth(n.saturating_sub(1))
            .map(|c| self.value(c))
            .unwrap_or_default()
    }

    /// Every component of one repetition, unescaped (subcomponents kept with their `&`).
    pub fn components(&self, repetition: &str) -> Vec<String> {
        repetition
            .split(self.sep.component)
            .map(|c| self.value(c))
            .collect()
    }

    /// A raw value with its escapes undone.
    pub fn value(&self, raw: &str) -> String {
        let e = self.sep.escape;
        if !raw.contains(e) {
            return raw.trim().to_owned();
        }
        let mut out = String::with_capacity(raw.len());
        let mut parts = raw.split(e);
        out.push_str(parts.next().unwrap_or(""));
        let mut in_escape = true;
        for p in parts {
            if in_escape {
                match p {
                    "F" => out.push(self.sep.field),
                    "S" => out.push(self.sep.component),
                    "T" => out.push(self.sep.subcomponent),
                    "R" => out.push(self.sep.repetition),
                    "E" => out.push(e),
                    x if x.starts_with('X') => {
                        // By bytes: the text after \X may be anything, and slicing a str in
                        // the middle of a character panics (found by the hl7v2_adt fuzz
                        // target).
                        let bytes: Vec<u8> = x.as_bytes()[1..]
                            .chunks_exact(2)
                            .filter_map(|pair| {
                                let hex = std::str::from_utf8(pair).ok()?;
                                u8::from_str_radix(hex, 16).ok()
                            })
                            .collect();
                        out.push_str(&String::from_utf8_lossy(&bytes));
                    }
                    // Formatting escapes (.br, H, N...) carry no data.
                    _ => {}
                }
            } else {
                out.push_str(p);
            }
            in_escape = !in_escape;
        }
        out.trim().to_owned()
    }
}

impl<'m> Segment<'m> {
    /// Field `n` as written (empty when absent).
    pub fn field(&self, n: usize) -> &'m str {
        self.fields.get(n).copied().unwrap_or("")
    }
}

/// Splits a file or a stream's bytes into messages: MLLP frames when there are any, else
/// each `MSH` starts a message; batch envelopes are dropped. Returns each message with the
/// 1-based line (or frame) number it starts at.
pub fn split_messages(text: &str) -> Vec<(usize, String)> {
    if text.contains('\x0b') {
        return text
            .split('\x0b')
            .enumerate()
            .filter_map(|(n, f)| {
                let body = f.split('\x1c').next().unwrap_or("");
                (!body.trim().is_empty()).then(|| (n, body.trim_matches(['\r', '\n']).to_owned()))
            })
            .collect();
    }
    let mut out: Vec<(usize, String)> = Vec::new();
    for (n, line) in text.split(['\n', '\r']).enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let tag = line.get(..3).unwrap_or("");
        if matches!(tag, "FHS" | "BHS" | "BTS" | "FTS") {
            continue;
        }
        if tag == "MSH" || out.is_empty() {
            out.push((n + 1, line.to_owned()));
        } else if let Some((_, m)) = out.last_mut() {
            m.push('\r');
            m.push_str(line);
        }
    }
    out
}

/// A general acknowledgement (`ACK`) of `msg`: `AA` accepted, `AE` error, `AR` rejected,
/// with `text` in MSA-3 (a reason without PHI). `raw` is used when the message did not
/// parse enough to know its control id.
pub fn ack(msg: Option<&Message<'_>>, code: &str, text: &str, now: &str) -> String {
    let (sending_app, sending_fac, receiving_app, receiving_fac, control, version) =
        match msg.and_then(|m| Some((m, m.segment("MSH")?))) {
            Some((m, h)) => (
                m.value(h.field(5)),
                m.value(h.field(6)),
                m.value(h.field(3)),
                m.value(h.field(4)),
                m.control_id(),
                m.value(h.field(12)),
            ),
            None => Default::default(),
        };
    let version = if version.is_empty() {
        "2.5".to_owned()
    } else {
        version
    };
    let clean = |s: &str| s.replace(['|', '^', '~', '\\', '&', '\r', '\n'], " ");
    format!(
        "MSH|^~\\&|{}|{}|{}|{}|{now}||ACK|ACK{}|P|{version}\rMSA|{code}|{}|{}\r",
        clean(if sending_app.is_empty() {
            "PHIWATCH"
        } else {
            &sending_app
        }),
        clean(&sending_fac),
        clean(&receiving_app),
        clean(&receiving_fac),
        clean(&control),
        clean(&control),
        clean(text),
    )
}

/// One line of an MLLP feed's spool: the message, JSON-escaped.
pub fn spool_line(message: &str) -> Vec<u8> {
    serde_json::to_vec(message).unwrap_or_default()
}

/// The message of a spool line.
pub fn from_spool_line(line: &[u8]) -> Option<String> {
    serde_json::from_slice(line).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn spool_lines_keep_segment_separators() {
        let m = "MSH|^~\\&|A\rPID|1||X\r";
        let line = spool_line(m);
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
        assert_eq!(from_spool_line(&line).as_deref(), Some(m));
    }

    use super::*;

    const A01: &str = "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|GHH LAB, INC.|GOOD HEALTH HOSPITAL|198808181126|SECURITY|ADT^A01^ADT_A01|MSG00001|P|2.8||\rEVN|A01|200708181123||\rPID|1||PATID1234^5^M11^ADT1^MR^GOOD HEALTH HOSPITAL~123456789^^^USSSA^SS||EVERYMAN^ADAM^A^III||19610615|M||C|2222 HOME STREET^^GREENSBORO^NC^27401-1020|GL|(555) 555-2004|(555)555-2004||S||PATID12345001^2^M10^ADT1^AN^A|444333333|987654^NC|\rNK1|1|NUCLEAR^NELDA^W|SPO^SPOUSE||||NK^NEXT OF KIN\rPV1|1|I|2000^2012^01||||004777^ATTEND^AARON^A|||SUR||||ADM|A0|\r";

    #[test]
    fn fields_components_and_repetitions() {
        let m = Message::parse(A01).unwrap();
        assert_eq!(m.kind(), ("ADT".into(), "A01".into()));
        assert_eq!(m.control_id(), "MSG00001");
        let msh = m.segment("MSH").unwrap();
        assert_eq!(msh.field(1), "|");
        assert_eq!(msh.field(2), "^~\\&");
        assert_eq!(msh.field(12), "2.8");
        let pid = m.segment("PID").unwrap();
        let ids: Vec<Vec<String>> = m
            .repetitions(pid.field(3))
            .map(|r| m.components(r))
            .collect();
        assert_eq!(ids[0][0], "PATID1234");
        assert_eq!(ids[0][3], "ADT1");
        assert_eq!(ids[0][4], "MR");
        assert_eq!(ids[1][3], "USSSA");
        assert_eq!(m.component(pid.field(5), 1), "EVERYMAN");
        assert_eq!(m.component(pid.field(11), 3), "GREENSBORO");
        let pv1 = m.segment("PV1").unwrap();
        assert_eq!(m.component(pv1.field(7), 1), "004777");
        assert_eq!(m.value(pv1.field(10)), "SUR");
    }

    #[test]
    fn escapes_and_line_ends() {
        let m = Message::parse("MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5\nPID|1||X1||O\\S\\BRIEN\\T\\CO\\E\\\\X41\\^ANN\r\n").unwrap();
        let pid = m.segment("PID").unwrap();
        assert_eq!(m.component(pid.field(5), 1), "O^BRIEN&CO\\A");
        assert_eq!(m.component(pid.field(5), 2), "ANN");
        // A hex escape holding more than hex digits, a character cut in two among them.
        let m = Message::parse("MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5\rPID|1||X1||G\\X4é1é\\Z")
            .unwrap();
        let pid = m.segment("PID").unwrap();
        assert_eq!(m.component(pid.field(5), 1), "GZ");
    }

    #[test]
    fn malformed_messages_are_errors_that_name_no_value() {
        assert_eq!(Message::parse("PID|1||X"), Err(Hl7Error::NoMsh));
        assert_eq!(Message::parse("MSH"), Err(Hl7Error::BadSeparators));
        assert_eq!(Message::parse("MSHA^~\\&|x"), Err(Hl7Error::BadSeparators));
        assert_eq!(
            Message::parse("MSH\r\r\r\r\r"),
            Err(Hl7Error::BadSeparators)
        );
        assert_eq!(Message::parse("MSH|^~\\\t|x"), Err(Hl7Error::BadSeparators));
        let e = Message::parse("MSH|^~\\&|A\rSMITH JOHN|1").unwrap_err();
        assert_eq!(e, Hl7Error::BadSegmentName(2));
        assert!(!e.to_string().contains("SMITH"));
    }

    #[test]
    fn files_hold_mllp_frames_or_messages_back_to_back() {
        let framed = format!("\x0b{A01}\x1c\r\x0b{A01}\x1c\r");
        assert_eq!(split_messages(&framed).len(), 2);
        let lines = "FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\nPID|1||X\nMSH|^~\\&|A|B|C|D|2026||ADT^A03|2|P|2.5\nPID|1||Y\nBTS|2\nFTS|1\n";
        let msgs = split_messages(lines);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].0, 5);
        assert_eq!(Message::parse(&msgs[1].1).unwrap().kind().1, "A03");
    }

    #[test]
    fn acknowledgements() {
        let m = Message::parse(A01).unwrap();
        let a = ack(Some(&m), "AA", "", "20260310120000");
        let parsed = Message::parse(&a).unwrap();
        assert_eq!(parsed.kind().0, "ACK");
        let msa = parsed.segment("MSA").unwrap();
        assert_eq!(msa.field(1), "AA");
        assert_eq!(msa.field(2), "MSG00001");
        let e = ack(None, "AE", "not an HL7 message: no MSH | here", "2026");
        assert!(
            e.contains("MSA|AE||not an HL7 message: no MSH   here"),
            "{e}"
        );
    }
}
