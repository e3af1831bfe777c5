//! The per-event path every source shares: decode → enrich → detect.
//! `scan` feeds it lines from files; `run` feeds it lines from tailed logs.

use crate::context::ContextStore;
use crate::decode::{decode_audit_event, DecodeError, Decoded};
use crate::detect::{Detector, PolicyPack};
use crate::enrich::Enricher;
use crate::event::AccessEvent;
use crate::finding::Finding;
use crate::plugin::{state::Change, CallFailure, Pending, PluginSet};
use crate::settings::Settings;

/// What a batch of lines produced, ready to be stored in one transaction.
#[derive(Debug, Default)]
pub struct Judged {
    pub accesses: Vec<AccessEvent>,
    pub findings: Vec<Finding>,
    /// Plugin state to write in the same transaction: (plugin, change).
    pub plugin_state: Vec<(String, Change)>,
    /// Plugin calls that failed on this batch.
    pub plugin_failures: Vec<CallFailure>,
    /// Context messages (feed, message) to journal with the batch and then apply.
    pub journal: Vec<(String, String)>,
}

impl Judged {
    pub fn clear(&mut self) {
        self.accesses.clear();
        self.findings.clear();
        self.plugin_state.clear();
        self.plugin_failures.clear();
        self.journal.clear();
    }

    /// Writes the plugin state inside the store transaction that stores the batch.
    pub fn write_plugin_state(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        crate::plugin::state::write(tx, &self.plugin_state)
    }
}

/// What one line was.
#[derive(Debug, PartialEq, Eq)]
pub enum LineKind {
    Access,
    NoPatient,
}

/// The context is passed to each call rather than held: feeds (HL7 v2 ADT, inline
/// demographics) change it between batches while the pipeline, its memo and its plugins live on.
pub struct Pipeline<'c> {
    pub enricher: Enricher<'c>,
    pub detector: Detector<'c>,
    /// WASM plugins, called per batch in [`Pipeline::finish`].
    pub plugins: Option<PluginSet>,
    pending: Vec<Pending>,
}

impl<'c> Pipeline<'c> {
    pub fn new(settings: &'c Settings, pack: &'c PolicyPack) -> Self {
        Pipeline {
            enricher: Enricher::new(settings),
            detector: Detector::new(pack),
            plugins: None,
            pending: Vec::new(),
        }
    }

    pub fn with_plugins(mut self, plugins: PluginSet) -> Self {
        self.plugins = (!plugins.is_empty()).then_some(plugins);
        self
    }

    /// Judges one AuditEvent line, appending the access and its findings to `out`.
    pub fn line(
        &mut self,
        ctx: &ContextStore,
        line: &[u8],
        out: &mut Judged,
    ) -> Result<LineKind, DecodeError> {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        match decode_audit_event(line)? {
            Decoded::NoPatient => Ok(LineKind::NoPatient),
            Decoded::Access(ev) => {
                crate::decode::check(&ev)?;
                self.access(ctx, ev, out);
                Ok(LineKind::Access)
            }
            Decoded::Many { accesses, .. } => {
                for ev in &accesses {
                    crate::decode::check(ev)?;
                }
                for ev in accesses {
                    self.access(ctx, ev, out);
                }
                Ok(LineKind::Access)
            }
        }
    }

    /// Judges one decoded access after applying what its row says about its patient and
    /// user to the context (journaled with the batch when it changed anything).
    pub fn judge(&mut self, ctx: &mut ContextStore, ev: AccessEvent, out: &mut Judged) {
        if let Some(row) = ev.inline.as_deref() {
            if crate::context::inline::learn(ctx, ev.patient.as_deref(), &ev.user, row) {
                let learned = crate::context::inline::Learned {
                    access: ev.id.clone(),
                    patient: ev.patient.clone(),
                    user: ev.user.clone(),
                    inline: row.clone(),
                };
                if let Ok(message) = serde_json::to_string(&learned) {
                    out.journal
                        .push((crate::context::inline::FEED.to_owned(), message));
                }
            }
        }
        self.access(ctx, ev, out);
    }

    /// Judges one decoded access: enrich → detect.
    pub fn access(&mut self, ctx: &ContextStore, ev: AccessEvent, out: &mut Judged) {
        let enriched = self.enricher.enrich(ctx, ev);
        self.detector.findings(&enriched, ctx, &mut out.findings);
        if self.plugins.is_some() {
            self.pending.push(Pending {
                ix: out.accesses.len(),
                user: enriched.user,
                patient: enriched.patient,
                facts: enriched.facts,
            });
        }
        out.accesses.push(enriched.event);
    }

    /// Runs the plugins over the accesses judged since the last call. Call before storing
    /// `out`: plugin findings and state go into the same transaction.
    pub fn finish(&mut self, ctx: &ContextStore, out: &mut Judged) {
        if let Some(p) = self.plugins.as_mut() {
            p.run(
                ctx,
                &self.pending,
                &out.accesses,
                &mut out.findings,
                &mut out.plugin_state,
                &mut out.plugin_failures,
            );
        }
        self.pending.clear();
    }
}
