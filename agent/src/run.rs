//! `phiwatch run`: the daemon. Sources tail logs and hand batches of lines to one detection
//! thread through a bounded channel (back-pressure: a slow detector slows the readers, memory
//! stays flat). A batch's accesses and findings are stored in one transaction before the source
//! commits its checkpoint, so a crash replays at most the batches in flight, and the store's
//! idempotent keys make that replay invisible.

use crate::alert::{self, Routing, SharedRouting};
use crate::config::{Config, Source};
use crate::context::adt::Adt;
use crate::decode::{Item, LineDecoder};
use crate::detect::FileDetector;
use crate::metrics::{Metrics, SourceMetrics};
use crate::notify::Dispatcher;
use crate::pipeline::{Judged, Pipeline};
use crate::plugin::PluginSet;
use crate::quarantine::{self, Quarantine, Verdict};
use crate::reload::{Inputs, Loaded};
use crate::spool::{SharedSpool, Spool, DEFAULT_MAX_BYTES};
use crate::store::Store;
use crate::syslog;
use crate::tail::{Chunk, Tailer};
use crate::time::now_ms;
use crate::watch::FolderWatch;
use anyhow::{Context as _, Result};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// Batches waiting for detection; beyond this, sources block.
const QUEUE: usize = 4;
/// Bytes a source reads per file per poll.
const CHUNK_BYTES: usize = 4 << 20;
/// Longest line a spooled source (syslog, folder events) hands to its decoder.
const DEFAULT_MAX_LINE_BYTES: usize = 4 << 20;
/// Spools are local and appended by the agent itself: poll them often.
const SPOOL_POLL: Duration = Duration::from_millis(50);
/// Checkpoint writes while a source is catching up.
const SAVE_EVERY: Duration = Duration::from_millis(500);
/// How often the dispatcher looks for due notifications.
const DISPATCH_TICK: Duration = Duration::from_millis(250);
/// How often received messages are forced to disk.
const SPOOL_SYNC: Duration = Duration::from_millis(200);

struct Batch {
    items: Vec<Item>,
    reply: SyncSender<Result<(), String>>,
    /// When the source handed it over: detection lag is measured from here.
    sent_ms: i64,
}

/// A chunk handed to detection, and where the answer comes (`None`: nothing to store).
type InFlight = (Chunk, Option<Receiver<Result<(), String>>>);

/// How a source's records reach its tailer.
struct Reader {
    ix: usize,
    name: String,
    patterns: Vec<String>,
    decoder: LineDecoder,
    poll: Duration,
    /// Spool sources: the file still being appended to (drained rotated segments are deleted).
    spool_active: Option<PathBuf>,
    max_line_bytes: usize,
    bad_log: BadLog,
}

/// Bad lines logged one by one per interval; past that, one summary line per interval.
const BAD_LOG_EVERY: Duration = Duration::from_secs(10);
const BAD_LOG_LINES: u32 = 10;

#[derive(Default)]
struct BadLog(std::cell::Cell<(Option<std::time::Instant>, u32, u64)>);

enum LogBudget {
    Log,
    /// Say how many went unlogged.
    Summarise(u64),
    Quiet,
}

impl BadLog {
    fn take(&self) -> LogBudget {
        let (start, logged, quiet) = self.0.get();
        let now = std::time::Instant::now();
        match start {
            Some(t) if now.duration_since(t) < BAD_LOG_EVERY => {
                if logged < BAD_LOG_LINES {
                    self.0.set((start, logged + 1, quiet));
                    LogBudget::Log
                } else {
                    self.0.set((start, logged, quiet + 1));
                    LogBudget::Quiet
                }
            }
            _ => {
                self.0.set((Some(now), 1, 0));
                if quiet > 0 {
                    LogBudget::Summarise(quiet + 1)
                } else {
                    LogBudget::Log
                }
            }
        }
    }
}

impl Reader {
    /// A source that receives (syslog, folder events): its spool, and the reader following it.
    fn spooled(
        ix: usize,
        name: &str,
        decoder: LineDecoder,
        spool_dir: &Path,
        cap: u64,
        intake: Arc<crate::spool::IntakeMetrics>,
    ) -> Result<(Reader, Spool)> {
        let spool = Spool::open(spool_dir, name, DEFAULT_MAX_BYTES)
            .with_context(|| format!("opening the spool of source {name:?}"))?
            .with_cap(cap, intake);
        let reader = Reader {
            ix,
            name: name.to_owned(),
            patterns: vec![Spool::pattern(spool_dir, name)],
            decoder,
            poll: SPOOL_POLL,
            spool_active: Some(spool.active().to_owned()),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            bad_log: BadLog::default(),
        };
        Ok((reader, spool))
    }
}

pub fn run(config_path: &Path) -> Result<()> {
    // The store, checkpoints and spools hold PHI: readable by this account only, whatever
    // umask the agent was started with (systemd sets UMask=0077 too).
    // SAFETY: umask(2) only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let cfg = Config::load(config_path)?;
    let inputs = Inputs {
        rules: cfg.rules.clone(),
        policies: cfg.policies.clone(),
        context: cfg.context_feeds(),
        journal: Some(cfg.data_dir.join("phiwatch.db")),
        plugins: cfg.plugin_inputs(),
    };
    let stamp = inputs.stamp();
    let loaded = inputs.load()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let db_path = cfg.data_dir.join("phiwatch.db");
    let store = Store::open(&db_path)?;
    let routing: Option<(PathBuf, SharedRouting)> = match &cfg.routing {
        Some(p) => {
            let r = Routing::load(p)?;
            Some((p.clone(), Arc::new(std::sync::RwLock::new(Arc::new(r)))))
        }
        None => None,
    };
    let spool_dir = cfg.data_dir.join("spool");
    let fhir_context = cfg.fhir_context();

    let console_ix = cfg.sources.len();
    // MLLP context feeds are read back from their spools like sources, after the console.
    let mllp_feeds = cfg.mllp_feeds();
    let mllp_ix = console_ix + usize::from(cfg.console.is_some());
    let mut plan = match cfg.console {
        Some(_) => Some(crate::case::plan_for(&cfg)?),
        None => None,
    };
    let metrics = Arc::new(Metrics {
        sources: cfg
            .sources
            .iter()
            .map(|s| s.name())
            // Console views are read back like any other source.
            .chain(cfg.console.as_ref().map(|_| crate::console::audit::SOURCE))
            .chain(mllp_feeds.iter().map(|f| f.name.as_str()))
            .map(|name| SourceMetrics {
                name: name.to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    if let Ok(mut l) = metrics.loaded.write() {
        *l = Some(loaded.summary());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let open_files = crate::net::raise_open_files();
    let wanted: usize = cfg
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Syslog(s) if s.transport != crate::config::Transport::Udp => {
                Some(s.max_connections)
            }
            _ => None,
        })
        .sum::<usize>()
        + cfg.console.as_ref().map_or(0, |c| c.max_connections)
        + 64;
    if (wanted as u64) + 256 > open_files {
        tracing::warn!(
            open_files,
            connections = wanted,
            "the connection caps add up to more than the descriptor limit leaves room for: raise LimitNOFILE or lower max_connections"
        );
    }
    let inflight = Arc::new(tokio::sync::Semaphore::new(cfg.limits.inflight_bytes));

    // Everything that can fail on bad configuration happens before any thread starts.
    let mut readers = Vec::new();
    let mut listeners = Vec::new();
    let mut watchers = Vec::new();
    let mut spools = Vec::new();
    let mut folders = Vec::new();
    for (ix, src) in cfg.sources.into_iter().enumerate() {
        let name = src.name().to_owned();
        match src {
            Source::File(f) => readers.push(Reader {
                ix,
                decoder: f
                    .decoder(metrics.sources[ix].unknown_actions.clone())
                    .map_err(anyhow::Error::msg)?,
                name,
                patterns: f.paths,
                poll: Duration::from_millis(f.poll_ms.max(10)),
                spool_active: None,
                max_line_bytes: f.max_line_bytes,
                bad_log: BadLog::default(),
            }),
            Source::Syslog(s) => {
                let intake = metrics.sources[ix].intake.clone();
                let (reader, spool) = Reader::spooled(
                    ix,
                    &name,
                    LineDecoder::Syslog(Box::new(crate::decode::siem::SiemDecoder::new(s.zone()))),
                    &spool_dir,
                    s.spool_max_bytes,
                    intake.clone(),
                )?;
                let listener = rt.block_on(syslog::bind(&s))?;
                tracing::info!(source = %name, listen = %listener.local_addr()?, transport = ?s.transport, "receiving syslog (ATNA, CEF, LEEF)");
                readers.push(reader);
                let spool = spool.shared();
                spools.push(spool.clone());
                listeners.push((
                    listener,
                    name,
                    syslog::StreamLimits::of(&s, inflight.clone()),
                    spool,
                    intake,
                ));
            }
            Source::Folder(f) => {
                let (reader, spool) = Reader::spooled(
                    ix,
                    &name,
                    LineDecoder::FileEvents,
                    &spool_dir,
                    crate::spool::DEFAULT_CAP_BYTES,
                    metrics.sources[ix].intake.clone(),
                )?;
                folders.extend(f.paths.iter().map(|p| p.display().to_string()));
                readers.push(reader);
                let snapshot = spool_dir.join(format!("{name}.snapshot.json"));
                watchers.push(FolderWatch::new(
                    f,
                    spool.shared(),
                    snapshot,
                    metrics.sources[ix].intake.clone(),
                )?);
            }
        }
    }

    let console = match &cfg.console {
        Some(c) => {
            let (reader, spool) = Reader::spooled(
                console_ix,
                crate::console::audit::SOURCE,
                LineDecoder::Fhir(chrono_tz::UTC),
                &spool_dir,
                crate::spool::DEFAULT_CAP_BYTES,
                metrics.sources[console_ix].intake.clone(),
            )?;
            readers.push(reader);
            let spool = spool.shared();
            spools.push(spool.clone());
            let (jurisdictions, response) = plan.take().context("case rules")?;
            let plan = Arc::new(crate::case::schedule::Plan {
                jurisdictions,
                response,
            });
            let inputs = crate::console::ConsoleInputs {
                db: db_path.clone(),
                evidence_dir: cfg.data_dir.join("attachments"),
                plan,
                context: fhir_context.clone(),
                metrics: Some(metrics.clone()),
                views: Some(spool),
            };
            let (addr, serve) = rt.block_on(crate::console::bind(c, inputs))?;
            tracing::info!(listen = %addr, "console ready");
            Some(serve)
        }
        None => None,
    };

    let mut mllp_listeners = Vec::new();
    for (i, f) in mllp_feeds.iter().enumerate() {
        let ix = mllp_ix + i;
        let intake = metrics.sources[ix].intake.clone();
        let (reader, spool) = Reader::spooled(
            ix,
            &f.name,
            LineDecoder::Hl7(f.name.clone()),
            &spool_dir,
            crate::spool::DEFAULT_CAP_BYTES,
            intake.clone(),
        )?;
        readers.push(reader);
        let spool = spool.shared();
        spools.push(spool.clone());
        let l = rt.block_on(crate::mllp::bind(f))?;
        tracing::info!(feed = %f.name, listen = %l.local_addr()?, "receiving HL7 v2 over MLLP");
        mllp_listeners.push((l, f.clone(), spool, intake));
    }

    let dispatcher = match &routing {
        Some((_, r)) => Some(
            Dispatcher::new(
                &db_path,
                r.clone(),
                loaded.settings.timezone,
                metrics.notify.clone(),
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "routing {}: {e}",
                    cfg.routing
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            })?,
        ),
        None => None,
    };
    let (tx, rx) = sync_channel::<Batch>(QUEUE);
    let m = metrics.clone();
    m.detection_alive.store(true, Ordering::Relaxed);
    let detection = std::thread::Builder::new()
        .name("detect".into())
        .spawn(move || {
            detect_loop(
                rx,
                Detection {
                    inputs,
                    loaded,
                    stamp,
                    store,
                    folders,
                    routing,
                    adt: mllp_feeds
                        .iter()
                        .map(|f| {
                            (
                                f.name.clone(),
                                crate::context::adt_options(
                                    &f.departments,
                                    f.timezone,
                                    f.labels.as_deref(),
                                ),
                            )
                        })
                        .collect(),
                },
                m,
            )
        })?;
    if let Some(d) = dispatcher {
        rt.spawn(d.run(DISPATCH_TICK));
    }
    if let Some(serve) = console {
        rt.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!("console stopped: {e:#}");
            }
        });
    }

    let mut threads = Vec::new();
    for r in readers {
        let cp = cfg
            .data_dir
            .join("checkpoints")
            .join(format!("{}.json", r.name));
        let tailer = Tailer::new(r.patterns.clone(), cp, CHUNK_BYTES, r.max_line_bytes)?;
        let quarantine = Quarantine::open(
            cfg.data_dir
                .join("checkpoints")
                .join(format!("{}.decoding", r.name)),
            cfg.data_dir
                .join("rejects")
                .join(format!("{}.ndjson", r.name)),
        );
        let (tx, stop, m) = (tx.clone(), stop.clone(), metrics.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("tail-{}", r.name))
                .spawn(move || tail_loop(r, tailer, quarantine, tx, stop, m))?,
        );
    }
    drop(tx);
    for w in watchers {
        let stop = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("watch".into())
                .spawn(move || {
                    if let Err(e) = w.run(stop) {
                        tracing::error!("folder watcher stopped: {e:#}");
                    }
                })?,
        );
    }
    for (listener, name, limits, spool, m) in listeners {
        rt.spawn(syslog::serve(listener, name, limits, spool, m));
    }
    for (l, f, spool, m) in mllp_listeners {
        rt.spawn(crate::mllp::serve(l, f, inflight.clone(), spool, m));
    }
    let syncing = spools.clone();
    rt.spawn(async move {
        let mut tick = tokio::time::interval(SPOOL_SYNC);
        loop {
            tick.tick().await;
            sync_spools(&syncing);
        }
    });

    let served = rt.block_on(serve_until_signal(&cfg.http, metrics.clone()));
    // Receivers stop first so nothing arrives after the spools' last sync.
    rt.shutdown_timeout(Duration::from_secs(2));
    sync_spools(&spools);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let _ = detection.join();
    tracing::info!("stopped: checkpoints saved, store closed");
    served
}

fn sync_spools(spools: &[SharedSpool]) {
    for s in spools {
        if let Ok(mut s) = s.lock() {
            if let Err(e) = s.sync() {
                tracing::error!("syncing a spool: {e}");
            }
        }
    }
}

async fn serve_until_signal(http: &crate::config::Http, metrics: Arc<Metrics>) -> Result<()> {
    use axum::routing::get;
    let listen = http.listen;
    let max_lag = Duration::from_secs(http.max_detection_lag_seconds);
    let health = metrics.clone();
    let metrics_for_hup = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let verdict = health.health(max_lag);
                async move {
                    match verdict {
                        Ok(()) => (axum::http::StatusCode::OK, "ok\n".to_owned()),
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("{why}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener {listen}"))?;
    tracing::info!(%listen, "serving /healthz and /metrics");
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let reload = metrics_for_hup;
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading settings, policies and context");
                    reload.reload_requested.store(true, Ordering::SeqCst);
                }
            }
        }
        tracing::info!("shutting down: finishing in-flight batches");
    };
    let limits = crate::net::HttpLimits {
        max_connections: 64,
        header_timeout: Duration::from_secs(http.header_timeout_seconds),
        ..Default::default()
    };
    crate::net::serve_http(
        listener,
        None,
        app,
        limits,
        Arc::new(crate::net::HttpCounters::default()),
        "metrics",
        shutdown,
    )
    .await;
    Ok(())
}

/// How often the detection thread looks for changed inputs.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// What the detection thread owns.
struct Detection {
    inputs: Inputs,
    loaded: Loaded,
    /// Stamp of the inputs `loaded` came from.
    stamp: u64,
    store: Store,
    folders: Vec<String>,
    /// The routing file and the rules in force (shared with the dispatcher).
    routing: Option<(PathBuf, SharedRouting)>,
    /// How each MLLP feed's messages map onto the context.
    adt: std::collections::HashMap<String, crate::context::adt::AdtOptions>,
}

fn detect_loop(rx: Receiver<Batch>, d: Detection, metrics: Arc<Metrics>) {
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
    let no_routing = Arc::new(Routing::default());
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
            adt: adt
                .iter()
                .map(|(feed, o)| (feed.clone(), Adt::new(&loaded.settings, o.clone())))
                .collect(),
            unjournaled: Vec::new(),
        };
        let mut last_check = std::time::Instant::now();
        let next = loop {
            match rx.recv_timeout(RELOAD_CHECK) {
                Ok(batch) => {
                    // The rules in force for this batch (a reload swaps them between batches).
                    // Without a routing file, the default grouping still fills the alert
                    // queue; there is simply nobody to notify.
                    let rules = routing
                        .as_ref()
                        .map_or_else(|| no_routing.clone(), |(_, r)| alert::current(r));
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
            let now = inputs.stamp();
            if !asked && now == stamp {
                continue;
            }
            // Remember the stamp even on failure: retry when the files change again.
            stamp = now;
            match inputs.load() {
                Ok(new) => break Some(new),
                Err(e) => {
                    metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("reload rejected, the previous version keeps running: {e:#}");
                }
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

/// Swaps in changed routing rules once they load and their receivers can be built; a bad
/// file is rejected and the rules in force stay.
fn reload_routing(
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
    for item in batch.items {
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
            for &i in &fresh_context {
                let (feed, message) = &judged.journal[i];
                if let Some(adt) = j.adt.get_mut(feed) {
                    if let crate::context::adt::Applied::Refused(why) = adt.apply_text(ctx, message)
                    {
                        tracing::warn!(feed = %feed, "HL7 v2 message not applied: {why}");
                    }
                }
            }
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
            e.to_string()
        });
    *metrics.inline.lock().unwrap_or_else(|e| e.into_inner()) = ctx.inline;
    metrics
        .detect_last_lag_ms
        .store(now_ms() - batch.sent_ms, Ordering::Relaxed);
    metrics.detect_batch_sent_ms.store(0, Ordering::Relaxed);
    let _ = batch.reply.send(result);
}

fn tail_loop(
    mut r: Reader,
    mut tailer: Tailer,
    mut quarantine: Quarantine,
    tx: SyncSender<Batch>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let m = &metrics.sources[r.ix];
    let mut unsaved = false;
    let mut last_save = std::time::Instant::now();
    // Chunks handed to detection, oldest first. One may be in flight while the next is read
    // and decoded here, so reading and judging overlap; commits stay in order.
    let mut pending: VecDeque<InFlight> = VecDeque::new();
    let (wake_tx, wake) = sync_channel::<()>(1);
    let _watcher = watch_dirs(&r.patterns, wake_tx, &r.name);
    while !stop.load(Ordering::SeqCst) {
        let chunks = match tailer.poll() {
            Ok(c) => c,
            Err(e) => {
                m.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = %r.name, "reading: {e}");
                std::thread::sleep(r.poll);
                continue;
            }
        };
        let caught_up = chunks.is_empty();
        let mut progressed = false;
        let mut failed = false;
        for mut chunk in chunks {
            let items = decode_chunk(&mut r, &mut quarantine, &chunk, m);
            chunk.lines = Vec::new();
            let answer = match send(items, &tx) {
                Ok(a) => a,
                Err(e) => {
                    failed = true;
                    tracing::error!(source = %r.name, "{e}");
                    break;
                }
            };
            pending.push_back((chunk, answer));
            while pending.len() > 1 && !failed {
                failed = !finish(&mut pending, &mut tailer, &r.name, m);
                progressed |= !failed;
            }
            if failed {
                break;
            }
        }
        while caught_up && !failed && !pending.is_empty() {
            failed = !finish(&mut pending, &mut tailer, &r.name, m);
            progressed |= !failed;
        }
        if failed {
            // Everything after the last commit is read and judged again; the store is
            // idempotent, so batches that did land are not duplicated.
            pending.clear();
            tailer.rewind();
            std::thread::sleep(r.poll);
        }
        unsaved |= progressed;
        // While catching up, checkpoints are written at most every SAVE_EVERY: a crash then
        // replays a little more, which the idempotent store absorbs, for far fewer fsyncs.
        if unsaved && (caught_up || last_save.elapsed() >= SAVE_EVERY) {
            last_save = std::time::Instant::now();
            unsaved = false;
            match tailer.save() {
                Ok(()) => m.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed),
                Err(e) => {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(source = %r.name, "saving checkpoint: {e}");
                }
            }
            if let Some(active) = &r.spool_active {
                // Rotated spool segments are deleted once their checkpoint is durable.
                for done in tailer.drained().into_iter().filter(|p| p != active) {
                    if let Err(e) = std::fs::remove_file(&done) {
                        tracing::warn!(source = %r.name, "removing drained spool {}: {e}", done.display());
                    }
                }
            }
        }
        m.lag_bytes.store(tailer.lag_bytes(), Ordering::Relaxed);
        m.files.store(tailer.tracked() as u64, Ordering::Relaxed);
        if caught_up {
            // Woken early by a change in a watched directory; the poll interval is the
            // fallback for file systems without inotify (NFS, some container mounts).
            let _ = wake.recv_timeout(r.poll);
            while wake.try_recv().is_ok() {}
        }
    }
    // Shutdown: wait for what is in flight so its checkpoint can be saved.
    while !pending.is_empty() {
        if !finish(&mut pending, &mut tailer, &r.name, m) {
            break;
        }
    }
    if let Err(e) = tailer.save() {
        tracing::error!(source = %r.name, "saving checkpoint at shutdown: {e}");
    }
}

/// Watches the fixed directory part of each glob, so a write wakes the tailer at once.
/// Returns the watcher (dropping it stops the watch); `None` means polling only.
fn watch_dirs(
    patterns: &[String],
    wake: SyncSender<()>,
    name: &str,
) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Only changes to data wake the tailer: its own directory listings and opens would
        // otherwise wake it forever.
        let relevant = res.is_ok_and(|e| match e.kind {
            EventKind::Create(_) | EventKind::Remove(_) => true,
            EventKind::Modify(ModifyKind::Metadata(_)) => false,
            EventKind::Modify(_) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            _ => false,
        });
        if relevant {
            // A full channel already holds a wake-up: nothing is lost by dropping this one.
            let _ = wake.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(source = %name, "no file notifications, polling only: {e}"))
    .ok()?;
    let mut dirs: Vec<PathBuf> = patterns
        .iter()
        .filter_map(|p| {
            let fixed: PathBuf = Path::new(p)
                .components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect();
            // A pattern without wildcards names a file: watch its directory.
            let dir = if fixed.as_os_str() == p.as_str() {
                fixed.parent()?.to_owned()
            } else {
                fixed
            };
            dir.is_dir().then_some(dir)
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if let Err(e) = w.watch(&d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(source = %name, dir = %d.display(), "cannot watch, polling only: {e}");
        }
    }
    Some(w)
}

/// Waits for the oldest pending chunk's result and commits it. False when it was not stored.
fn finish(
    pending: &mut VecDeque<InFlight>,
    tailer: &mut Tailer,
    name: &str,
    m: &SourceMetrics,
) -> bool {
    let Some((chunk, answer)) = pending.pop_front() else {
        return true;
    };
    let stored = match answer {
        None => Ok(()),
        Some(rx) => rx
            .recv()
            .unwrap_or_else(|_| Err("detection thread stopped".to_owned())),
    };
    if let Err(e) = stored {
        m.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(source = %name, "storing a batch failed, will retry: {e}");
        return false;
    }
    if let Err(e) = tailer.commit(&chunk) {
        m.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(source = %name, "commit: {e}");
        return false;
    }
    true
}

/// Decodes a chunk's lines in the source's own thread, so sources decode in parallel and
/// the detection thread only enriches and judges. A line that cannot be decoded, is too
/// long, panics the decoder or killed the process before is counted, reported with its
/// place, written to the rejects file and skipped: it never stops the source.
fn decode_chunk(r: &mut Reader, q: &mut Quarantine, chunk: &Chunk, m: &SourceMetrics) -> Vec<Item> {
    let file = (chunk.key.dev, chunk.key.ino);
    if chunk.first_line == 1 {
        r.decoder.forget(file);
    }
    let name = r.name.clone();
    let budget = &r.bad_log;
    let reject = |q: &Quarantine, line_no: u64, offset: u64, reason: &str, line: &[u8]| {
        m.bad_lines.fetch_add(1, Ordering::Relaxed);
        // A flood of bad records must not become a flood of log lines: the first few per
        // interval are logged, every one is counted and kept in the rejects file.
        match budget.take() {
            LogBudget::Log => tracing::warn!(
                source = %name,
                "bad line {}:{line_no}: {reason}",
                chunk.path.display(),
            ),
            LogBudget::Summarise(n) => tracing::warn!(
                source = %name,
                "{n} more bad lines in the last {} s, each in {}",
                BAD_LOG_EVERY.as_secs(),
                q.rejects_path().display()
            ),
            LogBudget::Quiet => {}
        }
        q.reject(&chunk.path, line_no, offset, reason, line);
    };
    if let Some(bytes) = chunk.oversized {
        m.lines.fetch_add(1, Ordering::Relaxed);
        let reason = format!(
            "line of {bytes} bytes exceeds max_line_bytes {}",
            r.max_line_bytes
        );
        reject(q, chunk.first_line, chunk.start, &reason, &chunk.lines[0]);
        return Vec::new();
    }
    let mut items = Vec::with_capacity(chunk.lines.len());
    q.begin(chunk);
    let mut offset = chunk.start;
    for (i, line) in chunk.lines.iter().enumerate() {
        let at = offset;
        offset += line.len() as u64 + 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        m.lines.fetch_add(1, Ordering::Relaxed);
        let line_no = chunk.first_line + i as u64;
        if q.line(chunk, at) == Verdict::Poison {
            m.quarantined.fetch_add(1, Ordering::Relaxed);
            reject(
                q,
                line_no,
                at,
                "quarantined: the agent died decoding this line",
                line,
            );
            continue;
        }
        crate::fault::abort_on(line);
        match quarantine::contain(|| r.decoder.decode(&chunk.path, file, line)) {
            Ok(Ok(item)) => {
                match &item {
                    Item::Access(_) | Item::File(_) | Item::Context { .. } => {
                        m.accesses.fetch_add(1, Ordering::Relaxed);
                    }
                    Item::Many { accesses, over_cap } => {
                        m.accesses
                            .fetch_add(accesses.len() as u64, Ordering::Relaxed);
                        m.patients_over_cap.fetch_add(*over_cap, Ordering::Relaxed);
                    }
                    Item::Nothing => {}
                }
                items.push(item);
            }
            Ok(Err(e)) => reject(q, line_no, at, &e.to_string(), line),
            Err(_panic) => {
                m.quarantined.fetch_add(1, Ordering::Relaxed);
                // The panic message may quote the input: it is not logged.
                reject(
                    q,
                    line_no,
                    at,
                    "quarantined: the decoder panicked on this line",
                    line,
                );
            }
        }
    }
    q.end(chunk);
    items
}

/// Hands items to detection; the receiver answers once their results are stored (`None`:
/// nothing to store, done already).
fn send(
    items: Vec<Item>,
    tx: &SyncSender<Batch>,
) -> Result<Option<Receiver<Result<(), String>>>, String> {
    if items.is_empty() {
        return Ok(None);
    }
    let (reply, answer) = sync_channel(1);
    tx.send(Batch {
        items,
        reply,
        sent_ms: now_ms(),
    })
    .map_err(|_| "detection thread stopped".to_owned())?;
    Ok(Some(answer))
}
