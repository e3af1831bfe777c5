//! The per-event path every source shares: decode → enrich → detect.
//! `scan` feeds it lines from files; `run` feeds it lines from tailed logs.

use crate::context::ContextStore;
use crate::decode::{decode_audit_event, DecodeError, Decoded};
use crate::detect::{Detector, PolicyPack};
use crate::enrich::Enricher;
use crate::event::AccessEvent;
use crate::finding::Finding;
use crate::settings::Settings;

/// What a batch of lines produced, ready to be stored in one transaction.
#[derive(Debug, Default)]
pub struct Judged {
    pub accesses: Vec<AccessEvent>,
    pub findings: Vec<Finding>,
}

impl Judged {
    pub fn clear(&mut self) {
        self.accesses.clear();
        self.findings.clear();
    }
}

/// What one line was.
#[derive(Debug, PartialEq, Eq)]
pub enum LineKind {
    Access,
    NoPatient,
}

pub struct Pipeline<'c> {
    pub context: &'c ContextStore,
    pub enricher: Enricher<'c>,
    pub detector: Detector<'c>,
}

impl<'c> Pipeline<'c> {
    pub fn new(context: &'c ContextStore, settings: &'c Settings, pack: &'c PolicyPack) -> Self {
        Pipeline {
            context,
            enricher: Enricher::new(context, settings),
            detector: Detector::new(pack),
        }
    }

    /// Judges one AuditEvent line, appending the access and its findings to `out`.
    pub fn line(&mut self, line: &[u8], out: &mut Judged) -> Result<LineKind, DecodeError> {
        match decode_audit_event(line)? {
            Decoded::NoPatient => Ok(LineKind::NoPatient),
            Decoded::Access(ev) => {
                self.access(ev, out);
                Ok(LineKind::Access)
            }
        }
    }

    /// Judges one decoded access: enrich → detect.
    pub fn access(&mut self, ev: AccessEvent, out: &mut Judged) {
        let enriched = self.enricher.enrich(ev);
        self.detector
            .findings(&enriched, self.context, &mut out.findings);
        out.accesses.push(enriched.event);
    }
}
