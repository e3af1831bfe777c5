//! The detection thread: judges each batch the sources hand over, stores its accesses,
//! findings, plugin state, journal and alerts in one transaction, then answers the source so
//! it can commit its checkpoint. Reloads of settings, policies, context and routing happen
//! here, between batches.

use crate::alert::{self, Routing, SharedRouting};
use crate::context::adt::Adt;
use crate::decode::Item;
use crate::detect::FileDetector;
use crate::metrics::Metrics;
use crate::pipeline::{Judged, Pipeline};
use crate::plugin::PluginSet;
use crate::reload::{Inputs, Loaded};
use crate::store::{Store, StoreError};
use crate::time::now_ms;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// Lines of one chunk, decoded, on their way to detection.
pub struct Batch {
    pub items: Vec<Item>,
    pub reply: SyncSender<Result<(), BatchError>>,
    /// When the source handed it over: detection lag is measured from here.
    pub sent_ms: i64,
}

/// Why a batch was not stored: the source reads it again.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("detection thread stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often the detection thread looks for changed inputs.
pub(super) const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// What the detection thread owns.
pub struct Detection {
    pub inputs: Inputs,
    pub loaded: Loaded,
    /// Stamp of the inputs `loaded` came from.
    pub stamp: u64,
    pub store: Store,
    pub folders: Vec<String>,
    /// The routing file and the rules in force (shared with the dispatcher).
    pub routing: Option<(PathBuf, SharedRouting)>,
    /// How each MLLP feed's messages map onto the context.
    pub adt: std::collections::HashMap<String, crate::context::adt::AdtOptions>,
}

pub fn detect_loop(rx: Receiver<Batch>, d: Detection, metrics: Arc<Metrics>) {
    let Detection {
        inputs,
        mut loaded,
        mut stamp,
        mut store,
        folders,
        routing,
        adt,
    } = d;
    let mut judged = Judged::default();
    let mut routing_stamp = routing
        .as_ref()
        .map_or(0, |(p, _)| crate::reload::stamp_of(p));
    loop {
        // The pipeline borrows the loaded inputs; it is rebuilt after each reload.
        let plugins =
            match PluginSet::new(&loaded.plugins, Some(store.conn()), metrics.plugins.clone()) {
                Ok(p) => p,
                Err(e) => {
                    // Without its state a plugin would start from scratch and alert on everything.
                    tracing::error!(
                        "reading plugin state from the store failed; detection stops: {e}"
                    );
                    break;
                }
            };
        let mut judges = Judges {
            pipeline: Pipeline::new(&loaded.settings, &loaded.pack).with_plugins(plugins),
            files: FileDetector::new(&loaded.file_pack, &folders),
            judged: std::mem::take(&mut judged),
            adt: appliers(&adt, &loaded.settings),
            unjournaled: Vec::new(),
        };
        let mut last_check = std::time::Instant::now();
        let next = loop {
            match rx.recv_timeout(RELOAD_CHECK) {
                Ok(batch) => {
                    // The rules in force for this batch (a reload swaps them between batches).
                    // Without a routing file, the default grouping still fills the alert
                    // queue; there is simply nobody to notify.
                    let rules = rules_in_force(routing.as_ref());
                    judge_batch(
                        &mut judges,
                        &mut loaded.context,
                        &mut store,
                        (&rules, loaded.settings.timezone),
                        &metrics,
                        batch,
                    )
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
            }
            let asked = metrics.reload_requested.swap(false, Ordering::SeqCst);
            if !asked && last_check.elapsed() < RELOAD_CHECK {
                continue;
            }
            last_check = std::time::Instant::now();
            reload_routing(routing.as_ref(), &mut routing_stamp, asked, &metrics);
            if let Some(new) = reloaded(&inputs, &mut stamp, asked, &metrics) {
                break Some(new);
            }
        };
        judged = std::mem::take(&mut judges.judged);
        drop(judges);
        match next {
            Some(new) => {
                loaded = new;
                if let Ok(mut l) = metrics.loaded.write() {
                    *l = Some(loaded.summary());
                }
                metrics.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("reloaded settings, policies and context");
            }
            None => break,
        }
    }
    metrics.detection_alive.store(false, Ordering::Relaxed);
}

/// The inputs loaded again when their files changed since `stamp` (or a reload was
/// `asked`); `None` when nothing changed or the new files do not load (said in the log, and
/// the inputs in force stay until the files change again).
fn reloaded(inputs: &Inputs, stamp: &mut u64, asked: bool, metrics: &Metrics) -> Option<Loaded> {
    if !inputs_changed(inputs, stamp, asked) {
        return None;
    }
    inputs.load().map_err(|e| reload_rejected(metrics, &e)).ok()
}

/// Whether the inputs' files changed since `stamp` (or a reload was `asked`); the new stamp
/// is kept either way, so a load that fails is tried again when the files change again.
pub(super) fn inputs_changed(inputs: &Inputs, stamp: &mut u64, asked: bool) -> bool {
    let now = inputs.stamp();
    let changed = asked || now != *stamp;
    *stamp = now;
    changed
}

/// Inputs that did not load: counted and said; those in force keep running.
pub(super) fn reload_rejected(metrics: &Metrics, e: &crate::reload::LoadError) {
    metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
    tracing::error!("reload rejected, the previous version keeps running: {e:#}");
}

/// The routing rules in force: the file's as last (re)loaded, else the default grouping and
/// nobody to notify (alerts still fill the queue).
pub(super) fn rules_in_force(routing: Option<&(PathBuf, SharedRouting)>) -> Arc<Routing> {
    routing.map_or_else(|| Arc::new(Routing::default()), |(_, r)| alert::current(r))
}

/// Swaps in changed routing rules once they load and their receivers can be built; a bad
/// file is rejected and the rules in force stay.
pub(super) fn reload_routing(
    routing: Option<&(PathBuf, SharedRouting)>,
    stamp: &mut u64,
    asked: bool,
    metrics: &Metrics,
) {
    let Some((path, shared)) = routing else {
        return;
    };
    let now = crate::reload::stamp_of(path);
    if !asked && now == *stamp {
        return;
    }
    *stamp = now;
    let candidate = Routing::load(path)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            crate::notify::transports(&r)
                .map(|_| r)
                .map_err(|e| e.to_string())
        });
    match candidate {
        Ok(r) => {
            match shared.write() {
                Ok(mut g) => *g = Arc::new(r),
                Err(p) => *p.into_inner() = Arc::new(r),
            }
            metrics.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!("reloaded routing rules");
        }
        Err(e) => {
            metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("routing reload rejected, the rules in force stay: {e}");
        }
    }
}

/// What judges a batch, rebuilt after each reload: the access pipeline (its memo and
/// plugins), the folder-event detector, and the reusable output buffers.
struct Judges<'l> {
    pipeline: Pipeline<'l>,
    files: FileDetector<'l>,
    judged: Judged,
    /// The ADT applier of each MLLP feed.
    adt: std::collections::HashMap<String, Adt<'l>>,
    /// Journal entries of access-log facts whose batch failed to store.
    unjournaled: Vec<(String, String)>,
}

/// The ADT applier of each MLLP feed, for the settings in force.
pub(super) fn appliers<'l>(
    options: &std::collections::HashMap<String, crate::context::adt::AdtOptions>,
    settings: &'l crate::settings::Settings,
) -> std::collections::HashMap<String, Adt<'l>> {
    options
        .iter()
        .map(|(feed, o)| (feed.clone(), Adt::new(settings, o.clone())))
        .collect()
}

/// Judges one batch's items into `judged`: accesses through the pipeline (its plugins run at
/// the end), folder events through their detector, context messages kept for the journal.
pub(super) fn judge_items(
    pipeline: &mut Pipeline<'_>,
    files: &mut FileDetector<'_>,
    ctx: &mut crate::context::ContextStore,
    items: Vec<Item>,
    judged: &mut Judged,
) {
    for item in items {
        match item {
            Item::Access(ev) => pipeline.judge(ctx, ev, judged),
            Item::Many { accesses, .. } => {
                for ev in accesses {
                    pipeline.judge(ctx, ev, judged);
                }
            }
            Item::File(ev) => files.findings(&ev, &mut judged.findings),
            Item::Context { feed, message } => judged.journal.push((feed, message)),
            Item::Nothing => {}
        }
    }
    pipeline.finish(ctx, judged);
}

/// Applies the context messages journaled for the first time (indexes into `journal`) once
/// their batch has committed: a message read again after a crash is not applied twice.
pub(super) fn apply_fresh(
    adt: &mut std::collections::HashMap<String, Adt<'_>>,
    ctx: &mut crate::context::ContextStore,
    journal: &[(String, String)],
    fresh: &[usize],
) {
    for &i in fresh {
        let (feed, message) = &journal[i];
        if let Some(adt) = adt.get_mut(feed) {
            if let crate::context::adt::Applied::Refused(why) = adt.apply_text(ctx, message) {
                tracing::warn!(feed = %feed, "HL7 v2 message not applied: {why}");
            }
        }
    }
}

fn judge_batch(
    j: &mut Judges<'_>,
    ctx: &mut crate::context::ContextStore,
    store: &mut Store,
    alerting: (&Routing, chrono_tz::Tz),
    metrics: &Metrics,
    batch: Batch,
) {
    let (pipeline, files, judged) = (&mut j.pipeline, &mut j.files, &mut j.judged);
    metrics
        .detect_batch_sent_ms
        .store(batch.sent_ms, Ordering::Relaxed);
    crate::fault::pause_detection();
    judged.clear();
    // Facts learned from rows of a batch that failed to store: the rows come again, but the
    // context has them already, so their journal entries are carried to this batch.
    judged.journal.append(&mut j.unjournaled);
    judge_items(pipeline, files, ctx, batch.items, judged);
    let stored_at = now_ms();
    let mut fresh_context = Vec::new();
    let result = store
        .insert_batch_then(&judged.accesses, &judged.findings, |tx, fresh| {
            judged.write_plugin_state(tx)?;
            // Journaled in the batch's transaction, applied once it commits: a message read
            // again after a crash finds its key and is not applied twice.
            fresh_context = crate::store::journal_new(tx, &judged.journal, stored_at)?;
            let (routing, tz) = alerting;
            let a = alert::apply(tx, fresh, routing, tz, stored_at)?;
            metrics.alerts_opened.fetch_add(a.opened, Ordering::Relaxed);
            metrics
                .notifications_queued
                .fetch_add(a.queued, Ordering::Relaxed);
            Ok(())
        })
        .map(|(_, new)| {
            apply_fresh(&mut j.adt, ctx, &judged.journal, &fresh_context);
            for a in &judged.accesses {
                metrics.delay.observe(stored_at - a.time_ms);
            }
            metrics
                .findings
                .fetch_add(judged.findings.len() as u64, Ordering::Relaxed);
            metrics
                .findings_new
                .fetch_add(new as u64, Ordering::Relaxed);
        })
        .map_err(|e| {
            metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            j.unjournaled.extend(
                judged
                    .journal
                    .drain(..)
                    .filter(|(feed, _)| feed == crate::context::inline::FEED),
            );
            BatchError::Store(e)
        });
    *metrics.inline.lock().unwrap_or_else(|e| e.into_inner()) = ctx.inline;
    metrics
        .detect_last_lag_ms
        .store(now_ms() - batch.sent_ms, Ordering::Relaxed);
    metrics.detect_batch_sent_ms.store(0, Ordering::Relaxed);
    let _ = batch.reply.send(result);
}
