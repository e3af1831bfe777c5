//! Fleet mode's `detect` role: stand by until the detector lease is free, take it, and apply
//! the queued batches in order. Each batch's accesses, findings, plugin state and context
//! journal are written in one transaction that first checks the lease's epoch, and that
//! marks the batch applied: a detector paused past its lease (SIGSTOP, a frozen VM, a
//! partition) finds its late commit refused, and its successor applies the batch instead.
//!
//! Whenever a batch does not commit, what this detector holds in memory (plugin state, the
//! context) may be ahead of the database, so it is thrown away and read again from the
//! database before the next batch: memory is only ever a cache of committed state.

use super::detection::{
    appliers, apply_fresh, inputs_changed, judge_items, reload_rejected, reload_routing,
    rules_in_force, RELOAD_CHECK,
};
use super::fleet_write::{Done, Job, Writer};
use crate::alert::SharedRouting;
use crate::context::adt::AdtOptions;
use crate::decode::Item;
use crate::detect::FileDetector;
use crate::fleet::{lease, pg, queue, state, FleetError, Lease};
use crate::metrics::Metrics;
use crate::pipeline::{Judged, Pipeline};
use crate::plugin::PluginSet;
use crate::reload::{Inputs, LoadError, Loaded};
use crate::time::now_ms;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Batches read from the queue at a time.
const READ_AHEAD: i64 = 8;
/// How often an idle detector looks for new batches.
const IDLE: Duration = Duration::from_millis(100);

/// What the detector role needs.
pub struct FleetDetector {
    pub inputs: Inputs,
    pub db: pg::DatabaseConfig,
    pub node: String,
    pub ttl: Duration,
    /// The folders watched fleet-wide, which the folder-event detector names.
    pub folders: Vec<String>,
    /// How each MLLP feed's messages map onto the context.
    pub adt: HashMap<String, AdtOptions>,
    /// How findings group into alerts and whom those notify: the routing file and the rules
    /// in force (without one, the default grouping and nobody, as in the single process).
    pub routing: Option<(PathBuf, SharedRouting)>,
    /// The detector thread's own runtime for its database calls.
    pub rt: tokio::runtime::Runtime,
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

/// Why the detector left the batches it was applying (it then stands by again, or retries).
#[derive(thiserror::Error)]
enum Interrupted {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(
        "the detector lease (epoch {0}) was not renewed in time: another detector may hold it"
    )]
    LeaseLost(i64),
    #[error("batch {seq} of source {name} holds a record this phiwatch cannot read ({detail}): is its collector a different version?")]
    Record {
        name: String,
        seq: i64,
        detail: String,
    },
    /// The settings, policies, context or plugins changed (or SIGHUP) and load: the
    /// detector takes them up between two batches, keeping its lease.
    #[error("reloading settings, policies and context")]
    Reload(Box<Loaded>),
}

// `Loaded` (compiled policies and plugins) has no useful Debug form: the message serves.
impl std::fmt::Debug for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// When the inputs and the routing file were last looked at, and what they were.
struct Stamps {
    inputs: u64,
    routing: u64,
    checked: Option<Instant>,
    /// Changed inputs being loaded beside the batches: compiling plugins and reading a
    /// hospital's context take seconds, longer than the lease may go unrenewed.
    loading: Option<std::thread::JoinHandle<Result<Loaded, LoadError>>>,
}

impl FleetDetector {
    /// `loaded`: the inputs, loaded at start without any journal, so a standby is ready to
    /// judge the moment it takes the lease (loading a hospital's context takes seconds).
    /// `stamp`: the inputs' stamp when `loaded` was read.
    pub fn run(self, mut loaded: Loaded, stamp: u64) {
        let m = self.metrics.clone();
        let mut stamps = Stamps {
            inputs: stamp,
            routing: self
                .routing
                .as_ref()
                .map_or(0, |(p, _)| crate::reload::stamp_of(p)),
            checked: None,
            loading: None,
        };
        // The lease this process held when a batch failed: taken up again on a new
        // connection if it has not expired meanwhile (nobody else can have it then).
        let mut kept: Option<Lease> = None;
        // Whether `loaded` is as the files left it: once a detector has applied batches its
        // context holds their facts, which the next holder's journal would apply again.
        let mut pristine = true;
        while !self.stop.load(Ordering::SeqCst) {
            if !pristine {
                match self.inputs.load() {
                    Ok(l) => {
                        loaded = l;
                        pristine = true;
                    }
                    Err(e) => {
                        tracing::error!("detector: reloading the inputs: {e}; retrying");
                        self.pause(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let (mut client, lease) = match self.rt.block_on(self.stand_by(kept.take())) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    m.fleet.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("detector: {e}; retrying");
                    self.pause(Duration::from_secs(1));
                    continue;
                }
            };
            m.fleet.lease_held.store(true, Ordering::Relaxed);
            m.fleet.lease_epoch.store(lease.epoch, Ordering::Relaxed);
            pristine = false;
            match self.apply(&mut client, &lease, &mut loaded, &mut stamps) {
                Ok(()) => {
                    // Stopping: a standby takes over at once rather than after the TTL.
                    let _ = self.rt.block_on(lease::release(&client, &lease));
                    tracing::info!(epoch = lease.epoch, "detector lease released");
                }
                Err(Interrupted::Reload(new)) => {
                    // Taken up with the lease kept: the journal and plugin state are read
                    // again into the new inputs, as after a takeover.
                    loaded = *new;
                    pristine = true;
                    if let Ok(mut l) = m.loaded.write() {
                        *l = Some(loaded.summary());
                    }
                    m.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("reloaded settings, policies and context");
                    kept = Some(lease);
                }
                Err(e) => {
                    m.fleet.errors.fetch_add(1, Ordering::Relaxed);
                    m.detect_batch_sent_ms.store(0, Ordering::Relaxed);
                    tracing::warn!(
                        epoch = lease.epoch,
                        "detector: {e}; reading committed state again"
                    );
                    let lost = matches!(
                        e,
                        Interrupted::LeaseLost(_) | Interrupted::Fleet(FleetError::Fenced { .. })
                    );
                    if !lost {
                        kept = Some(lease);
                    }
                    self.pause(Duration::from_secs(1));
                }
            }
            m.fleet.lease_held.store(false, Ordering::Relaxed);
        }
    }

    /// Connects, then takes up `kept` if it is still current, else waits for the lease;
    /// `None` when stopped while waiting.
    async fn stand_by(&self, kept: Option<Lease>) -> Result<Option<(Client, Lease)>, FleetError> {
        let client = pg::connect(&self.db, &format!("phiwatch-detect-{}", self.node)).await?;
        crate::fleet::schema::require_current(&client).await?;
        if let Some(l) = kept {
            if lease::renew(&client, &l, self.ttl).await? {
                return Ok(Some((client, l)));
            }
        }
        // Unique per process: a restarted detector waits out its old self's lease like any
        // other standby, which cannot tell a dead holder from a paused one.
        let holder = format!("{}/{}", self.node, std::process::id());
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if let Some(l) = lease::try_acquire(&client, &holder, self.ttl).await? {
                tracing::info!(epoch = l.epoch, holder = %holder, "detector lease taken");
                return Ok(Some((client, l)));
            }
            if let Ok(b) = queue::backlog(&client).await {
                self.metrics
                    .fleet
                    .backlog_batches
                    .store(b, Ordering::Relaxed);
            }
            // A standby asks a few times per lease period, so it takes over soon after expiry.
            tokio::time::sleep(self.ttl / 5).await;
        }
    }

    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Applies batches under `lease` until stopped (`Ok`) or interrupted.
    fn apply(
        &self,
        client: &mut Client,
        lease: &Lease,
        loaded: &mut Loaded,
        stamps: &mut Stamps,
    ) -> Result<(), Interrupted> {
        let rt = &self.rt;
        let journal = rt.block_on(state::journal(client))?;
        crate::context::replay_journal(
            &mut loaded.context,
            &self.inputs.context,
            &loaded.settings,
            &journal,
        );
        let stored = rt.block_on(state::plugins(client))?;
        let plugins = PluginSet::from_stored(&loaded.plugins, stored, self.metrics.plugins.clone());
        let mut pipeline = Pipeline::new(&loaded.settings, &loaded.pack).with_plugins(plugins);
        let mut files = FileDetector::new(&loaded.file_pack, &self.folders);
        let mut adt = appliers(&self.adt, &loaded.settings);
        let ctx = &mut loaded.context;
        let settings = &loaded.settings;
        let mut writer = rt.block_on(Writer::connect(&self.db, &self.node, lease))?;
        let mut spare = Judged::default();
        let mut renewed = Instant::now();
        let mut counted: Option<Instant> = None;
        let mut applying = || -> Result<(), Interrupted> {
            while !self.stop.load(Ordering::SeqCst) {
                if let Some(new) = self.reload(stamps) {
                    return Err(Interrupted::Reload(Box::new(new)));
                }
                if renewed.elapsed() >= self.ttl / 3 {
                    if !rt.block_on(lease::renew(client, lease, self.ttl))? {
                        return Err(Interrupted::LeaseLost(lease.epoch));
                    }
                    renewed = Instant::now();
                }
                let batches = rt.block_on(queue::pending(client, READ_AHEAD))?;
                // The backlog gauge follows a catch-up too, not only a standby's wait.
                let stale = counted.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if batches.is_empty() || stale {
                    let b = match batches.is_empty() {
                        true => 0,
                        false => rt.block_on(queue::backlog(client))?,
                    };
                    let m = &self.metrics.fleet;
                    m.backlog_batches.store(b, Ordering::Relaxed);
                    counted = Some(Instant::now());
                }
                if batches.is_empty() {
                    std::thread::sleep(IDLE);
                    continue;
                }
                for batch in batches {
                    let sent_ms = now_ms();
                    self.metrics
                        .detect_batch_sent_ms
                        .store(sent_ms, Ordering::Relaxed);
                    crate::fault::pause_detection();
                    let mut judged = std::mem::take(&mut spare);
                    judged.clear();
                    let items = read_records(&batch)?;
                    judge_items(&mut pipeline, &mut files, ctx, items, &mut judged);
                    // Batch N commits before batch N+1 is handed over.
                    if let Some(done) = writer.finish(rt) {
                        spare = self.committed(done, &mut adt, ctx)?;
                    }
                    // Facts a batch journals change how the next is judged: they apply once
                    // it commits, before the next batch is judged.
                    let journals = !judged.journal.is_empty();
                    let rules = rules_in_force(self.routing.as_ref());
                    let tz = settings.timezone;
                    writer.start(
                        rt,
                        Job {
                            batch,
                            judged,
                            rules,
                            tz,
                            sent_ms,
                        },
                    );
                    if journals {
                        if let Some(done) = writer.finish(rt) {
                            spare = self.committed(done, &mut adt, ctx)?;
                        }
                    }
                }
                // Committed before the queue is read again (or the lease renewed).
                if let Some(done) = writer.finish(rt) {
                    spare = self.committed(done, &mut adt, ctx)?;
                }
            }
            Ok(())
        };
        let result = applying();
        // A write still in flight (this detector stopped or failed meanwhile) ends before the
        // detector reads committed state again; its outcome no longer matters.
        let _ = writer.finish(rt);
        result
    }

    /// What follows a batch's commit: its context facts applied, and the counters.
    fn committed(
        &self,
        done: Done,
        adt: &mut HashMap<String, crate::context::adt::Adt<'_>>,
        ctx: &mut crate::context::ContextStore,
    ) -> Result<Judged, Interrupted> {
        let (fresh, a) = done.result?;
        let judged = done.judged;
        let m = &self.metrics;
        m.alerts_opened.fetch_add(a.opened, Ordering::Relaxed);
        m.notifications_queued
            .fetch_add(a.queued, Ordering::Relaxed);
        apply_fresh(adt, ctx, &judged.journal, &fresh);
        let stored_at = now_ms();
        for a in &judged.accesses {
            m.delay.observe(stored_at - a.time_ms);
        }
        m.findings
            .fetch_add(judged.findings.len() as u64, Ordering::Relaxed);
        m.fleet.batches_applied.fetch_add(1, Ordering::Relaxed);
        m.detect_last_lag_ms
            .store(stored_at - done.sent_ms, Ordering::Relaxed);
        m.detect_batch_sent_ms.store(0, Ordering::Relaxed);
        Ok(judged)
    }
}

impl FleetDetector {
    /// Looks at the inputs and the routing file once a second (at once after SIGHUP), as the
    /// single process's detection thread does: changed routing is swapped in place; changed
    /// inputs are loaded on a thread of their own while batches go on (and the lease is
    /// renewed), then returned for the detector to take up between two batches. Inputs that
    /// do not load are refused and those in force stay.
    fn reload(&self, stamps: &mut Stamps) -> Option<Loaded> {
        if stamps.loading.as_ref().is_some_and(|t| t.is_finished()) {
            let done = stamps.loading.take()?.join();
            match done {
                Ok(Ok(new)) => return Some(new),
                Ok(Err(e)) => reload_rejected(&self.metrics, &e),
                Err(_) => tracing::error!("reload rejected: loading the inputs panicked"),
            }
        }
        let asked = self.metrics.reload_requested.swap(false, Ordering::SeqCst);
        let due = stamps.checked.is_none_or(|t| t.elapsed() >= RELOAD_CHECK);
        if !asked && !due {
            return None;
        }
        stamps.checked = Some(Instant::now());
        reload_routing(
            self.routing.as_ref(),
            &mut stamps.routing,
            asked,
            &self.metrics,
        );
        if stamps.loading.is_none() && inputs_changed(&self.inputs, &mut stamps.inputs, asked) {
            let inputs = self.inputs.clone();
            stamps.loading = std::thread::Builder::new()
                .name("reload".into())
                .spawn(move || inputs.load())
                .map_err(|e| tracing::error!("reload: starting the loader: {e}"))
                .ok();
        }
        None
    }
}

/// A batch's records as the collector serialised them.
fn read_records(batch: &queue::Batch) -> Result<Vec<Item>, Interrupted> {
    batch
        .records
        .iter()
        .map(|r| {
            serde_json::from_slice(r).map_err(|e| Interrupted::Record {
                name: batch.source.clone(),
                seq: batch.seq,
                detail: e.to_string(),
            })
        })
        .collect()
}
