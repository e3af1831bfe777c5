//! HL7 v2 ADT messages applied to the context store: who the patient is and which staff a
//! visit puts in a care relationship with them.
//!
//! | message | effect |
//! |---|---|
//! | A01 admit, A04 register, A05 pre-admit, A02 transfer, A08 update | the patient (PID) and the visit (PV1): its encounter and the attending, referring, consulting and admitting doctors' relationships |
//! | A03 discharge | the visit ends (PV1-45, else the event time) |
//! | A11 cancel admit/visit | the visit's encounter and relationships are undone |
//! | A13 cancel discharge | the visit is open again |
//! | A40 merge patient | the MRG-1 record becomes the PID-3 patient: every access under the old MRN resolves to the merged patient |
//!
//! Patients: PID-3 identifiers (each `authority|id` and the bare id become aliases; the
//! first MR, else the first id, is a new patient's id), PID-5 family name, PID-11 address,
//! PID-29/30 death, PD1-12 protection indicator (restricted), PV1-16 VIP indicator. Staff
//! (XCN) resolve through the same aliases as access logs: an id nobody has is counted.
//! Times without an offset are local to the feed's zone.

use super::{normalize, ContextStore, EncounterSpan, UserIx, Written};
use crate::decode::hl7v2::Message;
use crate::settings::Settings;
use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use std::collections::HashMap;

/// How a feed's messages map onto the store.
#[derive(Debug, Clone, Default)]
pub struct AdtOptions {
    /// PV1-10 hospital service (or PV1-3 point of care) → department id; unmapped codes are
    /// used as they are, lowercased.
    pub departments: HashMap<String, String>,
    /// Zone of times written without an offset.
    pub zone: Option<chrono_tz::Tz>,
    /// The site's field of security labels: segment and field number (`ZPD`, 1).
    pub labels: Option<(String, usize)>,
}

/// What applying one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A valid message with nothing for the context (another type or event).
    Ignored(String),
    /// The message cannot be applied; the reason names no value.
    Refused(String),
}

/// Counts of what ADT feeds did, for the load summary and the coverage report.
#[derive(Debug, Default, Clone)]
pub struct AdtStats {
    pub applied: u64,
    pub ignored: u64,
    pub refused: u64,
    pub merges: u64,
    pub cancelled: u64,
    /// Attending/referring/consulting/admitting ids that named nobody in the directory.
    pub unresolved_staff: u64,
}

pub struct Adt<'s> {
    pub settings: &'s Settings,
    pub options: AdtOptions,
    pub stats: AdtStats,
}

impl<'s> Adt<'s> {
    pub fn new(settings: &'s Settings, options: AdtOptions) -> Self {
        Adt {
            settings,
            options,
            stats: AdtStats::default(),
        }
    }

    /// Applies one message's text to `store`.
    pub fn apply_text(&mut self, store: &mut ContextStore, text: &str) -> Applied {
        let out = match Message::parse(text) {
            Ok(m) => self.apply(store, &m),
            Err(e) => Applied::Refused(e.to_string()),
        };
        match &out {
            Applied::Done => self.stats.applied += 1,
            Applied::Ignored(_) => self.stats.ignored += 1,
            Applied::Refused(_) => self.stats.refused += 1,
        }
        out
    }

    pub fn apply(&mut self, store: &mut ContextStore, m: &Message<'_>) -> Applied {
        let (kind, event) = m.kind();
        // EVN-1 carries the event in old versions; MSH-9.2 in current ones.
        let event = if event.is_empty() {
            m.segment("EVN")
                .map(|e| m.value(e.field(1)))
                .unwrap_or_default()
        } else {
            event
        };
        if kind != "ADT" {
            return Applied::Ignored(format!("message type {} is not ADT", code(&kind)));
        }
        match event.as_str() {
            "A01" | "A02" | "A04" | "A05" | "A08" | "A03" | "A11" | "A13" | "A40" | "A28"
            | "A31" => {}
            other => {
                return Applied::Ignored(format!("ADT event {} changes no context", code(other)))
            }
        }
        let Some(patient) = self.patient(store, m) else {
            return Applied::Refused("PID-3 names no patient identifier".into());
        };
        let at = self.event_time(m);
        match event.as_str() {
            "A40" => {
                let Some(mrg) = m.segment("MRG") else {
                    return Applied::Refused("A40 without an MRG segment".into());
                };
                let keys = cx_keys(m, mrg.field(1));
                let Some(prior) = keys.iter().find_map(|k| match store.resolve_patient(k) {
                    super::Resolved::Found(ix) => Some(ix),
                    _ => None,
                }) else {
                    // The prior record was never seen: its ids now name the survivor.
                    for k in &keys {
                        store.patient_alias.add(k, patient);
                    }
                    self.stats.merges += 1;
                    return Applied::Done;
                };
                store.merge_patients(prior, patient);
                self.stats.merges += 1;
                Applied::Done
            }
            // Person information only: the patient is recorded, no visit.
            "A28" | "A31" => Applied::Done,
            "A11" => {
                if let Some(v) = self.visit_id(m, patient) {
                    if store.cancel_visit(&v) {
                        self.stats.cancelled += 1;
                    }
                }
                Applied::Done
            }
            "A03" | "A13" => {
                let Some(visit) = self.visit_id(m, patient) else {
                    return Applied::Done;
                };
                let pv1 = m.segment("PV1");
                let end = if event == "A03" {
                    pv1.and_then(|p| self.time(&m.component(p.field(45), 1)))
                        .or(at)
                } else {
                    None
                };
                let span = match store.visit_span(&visit) {
                    Some(s) => s,
                    // A discharge for a visit never seen: record what it says.
                    None => match self.span(store, m) {
                        Some(s) => s,
                        None => return Applied::Done,
                    },
                };
                let open = span.start.saturating_add(self.settings.open_encounter_ms);
                let span = EncounterSpan {
                    end: end.unwrap_or(open).max(span.start),
                    ..span
                };
                let staff = self.staff(store, m);
                store.upsert_visit(&visit, patient, span, &staff, self.lead_lag());
                Applied::Done
            }
            _ => {
                if let (Some(visit), Some(span)) = (self.visit_id(m, patient), self.span(store, m))
                {
                    let staff = self.staff(store, m);
                    store.upsert_visit(&visit, patient, span, &staff, self.lead_lag());
                }
                Applied::Done
            }
        }
    }

    fn lead_lag(&self) -> (i64, i64) {
        (
            self.settings.relationship_lead_ms,
            self.settings.relationship_lag_ms,
        )
    }

    /// The PID patient, created or updated.
    fn patient(&mut self, store: &mut ContextStore, m: &Message<'_>) -> Option<u32> {
        let pid = m.segment("PID")?;
        let ids: Vec<Vec<String>> = m
            .repetitions(pid.field(3))
            .map(|r| m.components(r))
            .filter(|c| c.first().is_some_and(|id| !id.is_empty()))
            .collect();
        let canonical = ids
            .iter()
            .find(|c| c.get(4).is_some_and(|t| t == "MR"))
            .or(ids.first())
            .map(|c| c[0].clone())?;
        let mut keys = Vec::new();
        for c in &ids {
            let auth = c
                .get(3)
                .map(|a| crate::context::identity::hd_namespace(a).to_owned());
            if let Some(a) = auth.filter(|a| !a.is_empty()) {
                keys.push(format!("{a}|{}", c[0]));
            }
            keys.push(c[0].clone());
        }
        let ix = store.upsert_patient(&canonical, &keys);
        let family = m.component(pid.field(5), 1);
        let street = m.component(pid.field(11), 1);
        let other = m.component(pid.field(11), 2);
        let city = m.component(pid.field(11), 3);
        let state = m.component(pid.field(11), 4);
        let zip = m.component(pid.field(11), 5);
        let died = self.time(&m.component(pid.field(29), 1));
        let death_flag = m.value(pid.field(30)) == "Y";
        let protected = m
            .segment("PD1")
            .is_some_and(|p| m.value(p.field(12)) == "Y");
        let vip = m
            .segment("PV1")
            .map(|p| m.value(p.field(16)))
            .is_some_and(|v| !v.is_empty() && v != "N");
        let f = store.patient_mut(ix);
        if !family.is_empty() {
            f.family = normalize::family(&family);
        }
        if !street.is_empty() {
            let lines: Vec<std::borrow::Cow<'_, str>> = [street.as_str(), other.as_str()]
                .into_iter()
                .filter(|l| !l.is_empty())
                .map(std::borrow::Cow::Borrowed)
                .collect();
            let a = crate::fhir::Address {
                use_: None,
                line: lines,
                city: Some(std::borrow::Cow::Borrowed(city.as_str())),
                state: Some(std::borrow::Cow::Borrowed(state.as_str())),
                postal_code: Some(std::borrow::Cow::Borrowed(zip.as_str())),
            };
            f.address = normalize::address(&a);
            f.written = Written {
                family: family.as_str().into(),
                address: format!("{street}, {city}, {state} {zip}").into(),
            };
        }
        if let Some(t) = died {
            f.deceased_ms = Some(t);
        } else if death_flag && f.deceased_ms.is_none() {
            f.deceased_ms = Some(i64::MIN);
        }
        f.restricted |= protected;
        f.vip |= vip;
        if let Some((seg, n)) = &self.options.labels {
            if let Some(s) = m.segment(seg) {
                for rep in m.repetitions(s.field(*n)) {
                    match m.component(rep, 1).to_ascii_uppercase().as_str() {
                        "CEL" | "VIP" => f.vip = true,
                        "EMP" => f.employee = true,
                        "PSY" | "PSYTHPN" => f.sensitive |= super::sensitive::PSY,
                        "ETH" => f.sensitive |= super::sensitive::ETH,
                        "HIV" => f.sensitive |= super::sensitive::HIV,
                        "R" | "V" => f.restricted = true,
                        _ => {}
                    }
                }
            }
        }
        Some(ix)
    }

    /// The visit's key: PV1-19 visit number, else patient and admission time.
    fn visit_id(&self, m: &Message<'_>, patient: u32) -> Option<String> {
        let pv1 = m.segment("PV1")?;
        let number = m.component(pv1.field(19), 1);
        if !number.is_empty() {
            return Some(number);
        }
        let admit = m.component(pv1.field(44), 1);
        (!admit.is_empty()).then(|| format!("p{patient}@{admit}"))
    }

    /// The visit's encounter: PV1-44 admission to PV1-45 discharge (open while none), in
    /// the department of PV1-10 (else PV1-3's point of care).
    fn span(&self, store: &mut ContextStore, m: &Message<'_>) -> Option<EncounterSpan> {
        let pv1 = m.segment("PV1")?;
        let start = self
            .time(&m.component(pv1.field(44), 1))
            .or_else(|| self.event_time(m))?;
        let end = self
            .time(&m.component(pv1.field(45), 1))
            .unwrap_or(start.saturating_add(self.settings.open_encounter_ms))
            .max(start);
        let service = m.value(pv1.field(10));
        let code = if service.is_empty() {
            m.component(pv1.field(3), 1)
        } else {
            service
        };
        let dept = self
            .options
            .departments
            .get(&code)
            .cloned()
            .unwrap_or_else(|| code.to_lowercase());
        Some(EncounterSpan {
            start,
            end,
            department: store.departments.intern(&dept),
        })
    }

    /// Attending, referring, consulting and admitting doctors (PV1-7, 8, 9, 17), resolved.
    fn staff(&mut self, store: &ContextStore, m: &Message<'_>) -> Vec<UserIx> {
        let Some(pv1) = m.segment("PV1") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in [7, 8, 9, 17] {
            for rep in m.repetitions(pv1.field(f)) {
                let c = m.components(rep);
                let Some(id) = c.first().filter(|id| !id.is_empty()) else {
                    continue;
                };
                let mut keys = Vec::new();
                if let Some(auth) = c
                    .get(8)
                    .map(|a| crate::context::identity::hd_namespace(a))
                    .filter(|a| !a.is_empty())
                {
                    keys.push(format!("{auth}|{id}"));
                }
                keys.push(id.clone());
                match store.find_user(&keys) {
                    Some(u) if !out.contains(&u) => out.push(u),
                    Some(_) => {}
                    None => self.stats.unresolved_staff += 1,
                }
            }
        }
        out
    }

    /// EVN-6 occurred, else EVN-2 recorded, else MSH-7.
    fn event_time(&self, m: &Message<'_>) -> Option<i64> {
        let evn = m.segment("EVN");
        evn.and_then(|e| self.time(&m.component(e.field(6), 1)))
            .or_else(|| evn.and_then(|e| self.time(&m.component(e.field(2), 1))))
            .or_else(|| {
                m.segment("MSH")
                    .and_then(|h| self.time(&m.component(h.field(7), 1)))
            })
    }

    /// An HL7 TS/DTM: `YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`.
    fn time(&self, ts: &str) -> Option<i64> {
        hl7_time(ts, self.options.zone.unwrap_or(self.settings.timezone))
    }
}

/// An HL7 v2 date-time; without an offset, local to `zone`.
pub fn hl7_time(ts: &str, zone: chrono_tz::Tz) -> Option<i64> {
    let ts = ts.trim();
    if ts.len() < 8 || !ts.as_bytes()[..8].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (body, offset) = match ts.find(['+', '-']) {
        Some(i) if i >= 8 => (&ts[..i], Some(&ts[i..])),
        _ => (ts, None),
    };
    let body = body.split('.').next().unwrap_or(body);
    let digits: String = format!("{body:0<14}").chars().take(14).collect();
    let naive = NaiveDateTime::parse_from_str(&digits, "%Y%m%d%H%M%S")
        .ok()
        .or_else(|| {
            // By `get`: the text may hold any character, and slicing inside one panics
            // (found by the hl7v2_adt fuzz target).
            NaiveDate::parse_from_str(digits.get(..8)?, "%Y%m%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    match offset {
        Some(o) if o.len() == 5 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let h: i32 = o.get(1..3)?.parse().ok()?;
            let mi: i32 = o.get(3..5)?.parse().ok()?;
            let fixed = chrono::FixedOffset::east_opt(sign * (h * 3600 + mi * 60))?;
            fixed
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.timestamp_millis())
        }
        _ => crate::time::local_ms(zone, naive),
    }
}

/// The alias keys of a CX list field: `authority|id` and the bare id of each repetition.
fn cx_keys(m: &Message<'_>, field: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for rep in m.repetitions(field) {
        let c = m.components(rep);
        let Some(id) = c.first().filter(|id| !id.is_empty()) else {
            continue;
        };
        if let Some(a) = c
            .get(3)
            .map(|a| crate::context::identity::hd_namespace(a))
            .filter(|a| !a.is_empty())
        {
            keys.push(format!("{a}|{id}"));
        }
        keys.push(id.clone());
    }
    keys
}

/// A message type or trigger event as reasons show it: HL7 table 0076 and 0003 codes are a
/// few letters and digits; anything else is whatever the sender put there (found by the
/// hl7v2_adt fuzz target: 800 bytes of it in a log line), so it is not repeated.
fn code(s: &str) -> String {
    if (1..=7).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        format!("{s:?}")
    } else {
        "(not a code)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{rel, Resolved};

    /// A PV1 segment with `fields` (number, value) set.
    fn pv1_of(fields: &[(usize, &str)]) -> String {
        let mut f = vec![String::new(); 46];
        f[0] = "PV1".into();
        for (n, v) in fields {
            f[*n] = (*v).to_owned();
        }
        f.join("|")
    }

    fn msg(event: &str, pid3: &str, pv1: &str) -> String {
        format!(
            "MSH|^~\\&|EHR|HOSP|PHIWATCH|HOSP|20260310080000||ADT^{event}|{event}-1|P|2.5\rEVN|{event}|20260310080000\rPID|1||{pid3}||DOE^JANE||19700101|F|||12 Oak Street^Apt 4^Springfield^IL^62701-1234\r{pv1}\r"
        )
    }

    fn store_with_doctor() -> ContextStore {
        let mut s = ContextStore::default();
        let u = s.intern_user("pr-1");
        s.users[u as usize].known = true;
        s.user_alias.add("NPI|1234", u);
        s.user_alias.add("1234", u);
        s.index_users();
        s
    }

    #[test]
    fn admission_transfer_discharge_and_cancellation() {
        let settings = Settings::default();
        let mut adt = Adt::new(&settings, AdtOptions::default());
        let mut s = store_with_doctor();
        let admit = [
            (1, "1"),
            (2, "I"),
            (3, "CARD^201^1"),
            (7, "1234^House^Greg^^^^^^NPI"),
            (10, "CAR"),
            (19, "V100"),
            (44, "20260310080000"),
        ];
        let pv1 = &pv1_of(&admit);
        assert_eq!(
            adt.apply_text(&mut s, &msg("A01", "MRN1^^^HOSP^MR", pv1)),
            Applied::Done
        );
        let p = match s.resolve_patient("HOSP|MRN1") {
            Resolved::Found(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(s.resolve_patient("MRN1^^^HOSP^MR"), Resolved::Found(p));
        let u = s.user("pr-1").unwrap();
        let noon = crate::time::parse_fhir_time("2026-03-10T18:00:00Z").unwrap();
        assert_eq!(s.relationship_at(u, p, noon), rel::ENCOUNTER);
        assert_eq!(s.departments.name(s.encounters_of(p)[0].department), "car");
        assert!(s.patient_facts(p).address.is_some());
        // Discharged the next morning: the relationship ends then (plus the lag).
        let mut discharged = admit.to_vec();
        discharged.push((45, "20260311090000"));
        let a03 = pv1_of(&discharged);
        adt.apply_text(&mut s, &msg("A03", "MRN1^^^HOSP^MR", &a03));
        // (the lag is relationship_lag_days, 30, after the discharge)
        let much_later = crate::time::parse_fhir_time("2026-04-25T12:00:00Z").unwrap();
        assert_eq!(s.relationship_at(u, p, much_later), 0);
        assert_eq!(
            s.encounters_of(p).len(),
            1,
            "the same visit, not a second one"
        );
        // Cancelled: nothing explains an access any more.
        adt.apply_text(&mut s, &msg("A11", "MRN1^^^HOSP^MR", pv1));
        assert_eq!(s.relationship_at(u, p, noon), 0);
        assert_eq!(adt.stats.cancelled, 1);
    }

    #[test]
    fn a_merge_moves_the_old_mrn_to_the_surviving_patient() {
        let settings = Settings::default();
        let mut adt = Adt::new(&settings, AdtOptions::default());
        let mut s = store_with_doctor();
        let visit = pv1_of(&[
            (2, "O"),
            (7, "1234^House"),
            (10, "EMR"),
            (19, "V7"),
            (44, "20260310080000"),
        ]);
        adt.apply_text(&mut s, &msg("A04", "OLD9^^^HOSP^MR", &visit));
        adt.apply_text(&mut s, &msg("A04", "NEW1^^^HOSP^MR", "PV1|1|O"));
        let old = s.patient("OLD9").unwrap();
        let new = s.patient("NEW1").unwrap();
        let a40 = "MSH|^~\\&|EHR|HOSP|X|Y|20260310090000||ADT^A40|m40|P|2.5\rEVN|A40|20260310090000\rPID|1||NEW1^^^HOSP^MR||DOE^JANE\rMRG|OLD9^^^HOSP^MR\r";
        assert_eq!(adt.apply_text(&mut s, a40), Applied::Done);
        assert_eq!(s.resolve_patient("OLD9"), Resolved::Found(new));
        assert_eq!(s.resolve_patient("HOSP|OLD9"), Resolved::Found(new));
        assert!(!s.patient_facts(old).known);
        let u = s.user("pr-1").unwrap();
        let t = crate::time::parse_fhir_time("2026-03-10T12:00:00Z").unwrap();
        assert_eq!(s.relationship_at(u, new, t), rel::ENCOUNTER);
    }

    #[test]
    fn other_messages_and_broken_ones() {
        let settings = Settings::default();
        let mut adt = Adt::new(&settings, AdtOptions::default());
        let mut s = ContextStore::default();
        let oru = "MSH|^~\\&|LAB|H|X|Y|2026||ORU^R01|1|P|2.5\rPID|1||X1";
        assert!(matches!(adt.apply_text(&mut s, oru), Applied::Ignored(_)));
        let no_pid = "MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPV1|1|I";
        assert!(matches!(
            adt.apply_text(&mut s, no_pid),
            Applied::Refused(_)
        ));
        assert!(matches!(
            adt.apply_text(&mut s, "garbage"),
            Applied::Refused(_)
        ));
        assert_eq!(adt.stats.refused, 2);
    }

    #[test]
    fn hl7_times() {
        let utc = chrono_tz::UTC;
        assert_eq!(
            hl7_time("20260310143000", utc),
            crate::time::parse_fhir_time("2026-03-10T14:30:00Z")
        );
        assert_eq!(
            hl7_time("202603101430-0500", utc),
            crate::time::parse_fhir_time("2026-03-10T19:30:00Z")
        );
        assert_eq!(
            hl7_time("20260310", utc),
            crate::time::parse_fhir_time("2026-03-10T00:00:00Z")
        );
        assert_eq!(hl7_time("2026", utc), None);
        assert_eq!(hl7_time("garbage!", utc), None);
        // Characters cut by the fixed positions: no time, never a panic.
        assert_eq!(hl7_time("20260310+0é0", utc), None);
        assert_eq!(hl7_time("2026aaa\u{e9}1", utc), None);
    }

    /// Messages written by an independent HL7 v2 library (hl7apy 1.3.5, MIT; see
    /// tests/fixtures/hl7v2/generate.py), MLLP-framed as a sender puts them on the wire.
    #[test]
    fn messages_from_an_independent_library() {
        let text = include_str!("../../../tests/fixtures/hl7v2/messages.hl7");
        let settings = Settings::default();
        let options = AdtOptions {
            departments: [("CAR", "cardiology")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into_iter()
                .collect(),
            zone: Some(chrono_tz::UTC),
            labels: None,
        };
        let mut adt = Adt::new(&settings, options);
        let mut s = ContextStore::default();
        for (id, keys) in [
            ("dr-house", ["NPI|1234567890", "1234567890"]),
            ("dr-watson", ["urn:login|jwatson", "jwatson"]),
        ] {
            let u = s.intern_user(id);
            s.users[u as usize].known = true;
            for k in keys {
                s.user_alias.add(k, u);
            }
        }
        s.index_users();
        let msgs = crate::decode::hl7v2::split_messages(text);
        assert_eq!(msgs.len(), 9);
        for (_, m) in &msgs {
            assert_eq!(
                adt.apply_text(&mut s, m),
                Applied::Done,
                "{}",
                m.lines().next().unwrap_or("")
            );
        }
        assert_eq!(adt.stats.unresolved_staff, 0);
        let found = |name: &str| match s.resolve_patient(name) {
            Resolved::Found(p) => p,
            other => panic!("{name}: {other:?}"),
        };
        let mary = found("MRN-2001");
        assert_eq!(found("EHR-77"), mary);
        assert_eq!(found("SPRINGFIELD|MRN-2001"), mary);
        assert_eq!(found("MRN-9999"), mary, "merged by A40");
        let t = |iso: &str| crate::time::parse_fhir_time(iso).unwrap();
        let (house, watson) = (s.user("dr-house").unwrap(), s.user("dr-watson").unwrap());
        assert_eq!(
            s.relationship_at(house, mary, t("2026-03-10T12:00:00Z")),
            rel::ENCOUNTER
        );
        assert_eq!(
            s.relationship_at(watson, mary, t("2026-03-10T12:00:00Z")),
            rel::ENCOUNTER
        );
        assert_eq!(
            s.relationship_at(house, mary, t("2026-05-01T12:00:00Z")),
            0,
            "discharged on 11 March; the lag is 30 days"
        );
        assert!(s
            .encounters_of(mary)
            .iter()
            .any(|e| s.departments.name(e.department) == "cardiology"));
        let star = found("MRN-3001");
        assert!(s.patient_facts(star).vip);
        assert!(s.patient_facts(found("MRN-4001")).deceased_ms.is_some());
        let error = found("MRN-5001");
        assert_eq!(
            s.relationship_at(watson, error, t("2026-03-10T13:00:00Z")),
            0,
            "the admission was cancelled (A11)"
        );
        assert_eq!(adt.stats.cancelled, 1);
        assert_eq!(adt.stats.merges, 1);
    }
}
