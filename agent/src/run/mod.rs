//! `phiwatch run`: the daemon. Sources tail logs and hand batches of lines to one detection
//! thread through a bounded channel (back-pressure: a slow detector slows the readers, memory
//! stays flat). A batch's accesses and findings are stored in one transaction before the source
//! commits its checkpoint, so a crash replays at most the batches in flight, and the store's
//! idempotent keys make that replay invisible.
//!
//! The lifecycle is [`App::new`] (everything that can fail on bad configuration: inputs
//! loaded, store opened, sources built and bound), [`App::start`] (threads and tasks), then
//! [`Running::serve`] until a signal and [`Running::shutdown`]: receivers stop first, spools
//! are synced, tailers finish what is in flight and save their checkpoints, detection drains.

mod collect;
mod detection;
mod dispatch;
mod fleet_detect;
mod fleet_write;
mod http;
mod roles;
mod tail;

use crate::alert::{Routing, SharedRouting};
use crate::config::{Config, Source};
use crate::fleet::Role;
use crate::metrics::{Metrics, SourceMetrics};
use crate::notify::Dispatcher;
use crate::quarantine::Quarantine;
use crate::reload::{Inputs, Loaded};
use crate::source::{Env, Intake};
use crate::spool::{SharedSpool, Spool};
use crate::store::Store;
use crate::tail::Tailer;
use anyhow::{Context as _, Result};
use detection::{Batch, Detection};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

/// Batches waiting for detection; beyond this, sources block.
const QUEUE: usize = 4;
/// Bytes a source reads per file per poll.
const CHUNK_BYTES: usize = 4 << 20;
/// How often the dispatcher looks for due notifications.
const DISPATCH_TICK: Duration = Duration::from_millis(250);
/// How often received messages are forced to disk.
const SPOOL_SYNC: Duration = Duration::from_millis(200);

/// Runs the agent until SIGTERM or Ctrl-C, in the role the config (or `role`) names.
pub fn run(config_path: &Path, role: Option<Role>, node: Option<String>) -> Result<()> {
    // The store, checkpoints and spools hold PHI: readable by this account only, whatever
    // umask the agent was started with (systemd sets UMask=0077 too).
    // SAFETY: umask(2) only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let mut cfg = Config::load(config_path)?;
    if let Some(r) = role {
        cfg.fleet.role = r;
    }
    if node.is_some() {
        cfg.fleet.node = node;
    }
    let role = cfg.fleet.role;
    match (role, cfg.database.clone()) {
        (Role::All, None) => {
            let running = App::new(cfg)?.start()?;
            let served = running.serve();
            running.shutdown();
            served
        }
        // Running on the SQLite store while the operator named PostgreSQL would put the
        // accesses where nobody looks for them.
        (Role::All, Some(db)) => anyhow::bail!(
            "{}: [database] names fleet mode's PostgreSQL ({}): give this node a role with \
             [fleet] role = \"collect\", \"detect\", \"dispatch\" or \"console\" (or --role), or remove [database] to \
             run everything in one process on the SQLite store in {}",
            config_path.display(),
            crate::fleet::pg::describe(&db.url),
            cfg.data_dir.display()
        ),
        (_, None) => anyhow::bail!(
            "{}: role {} is fleet mode's and needs [database] (the fleet's PostgreSQL)",
            config_path.display(),
            role.as_str()
        ),
        (Role::Collect, Some(db)) => roles::collect(cfg, db),
        (Role::Detect, Some(db)) => roles::detect(cfg, db),
        (Role::Dispatch, Some(db)) => roles::dispatch(cfg, db),
        (Role::Console, Some(db)) => roles::console(cfg, db),
    }
}

/// The agent built from its configuration, nothing started yet.
pub struct App {
    rt: tokio::runtime::Runtime,
    metrics: Arc<Metrics>,
    intake: Intake,
    detection: Detection,
    dispatcher: Option<Dispatcher>,
    data_dir: PathBuf,
    http: crate::config::Http,
}

impl App {
    /// Loads the inputs, opens the store, builds every source and binds every listener.
    pub fn new(cfg: Config) -> Result<App> {
        // Before anything reads the store (the context journal below) or writes it.
        Store::check(&cfg.data_dir.join("phiwatch.db"))?;
        let inputs = Inputs::of_config(&cfg, Some(cfg.data_dir.join("phiwatch.db")));
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
        let metrics = metrics_for(&cfg, Some(&loaded));
        let rt = runtime()?;
        warn_if_descriptors_short(&cfg);
        let env = env(&cfg, &metrics, &rt);
        let mut intake = Intake::default();
        // Source indices: the configured sources, then the console's view log, then the
        // MLLP feeds; `metrics_for` lists them in the same order.
        let console_ix = cfg.sources.len();
        let mllp_ix = console_ix + usize::from(cfg.console.is_some());
        let mllp_feeds = cfg.mllp_feeds();
        let adt = mllp_options(&cfg);
        let console = match &cfg.console {
            Some(c) => {
                let (jurisdictions, response) = crate::case::plan_for(&cfg)?;
                let inputs = crate::console::ConsoleInputs {
                    db: db_path.clone(),
                    evidence_dir: cfg.data_dir.join("attachments"),
                    plan: Arc::new(crate::case::schedule::Plan {
                        jurisdictions,
                        response,
                    }),
                    context: cfg.fhir_context(),
                    metrics: Some(metrics.clone()),
                    views: None,
                    detection: Some(crate::console::DetectionInputs {
                        inputs: Inputs::of_config(&cfg, Some(db_path.clone())),
                        grouping: routing
                            .as_ref()
                            .map(|(_, r)| crate::alert::current(r).grouping.clone())
                            .unwrap_or_default(),
                    }),
                    fleet: None,
                };
                Some((c, inputs))
            }
            None => None,
        };
        crate::source::build(cfg.sources, &env, &mut intake)?;
        if let Some((c, inputs)) = console {
            crate::source::console::build(c, inputs, console_ix, &env, &mut intake)?;
        }
        for (i, f) in mllp_feeds.iter().enumerate() {
            crate::source::mllp::build(f, mllp_ix + i, &env, &mut intake)?;
        }
        let dispatcher = match &routing {
            Some((path, r)) => Some(
                Dispatcher::new(
                    &db_path,
                    r.clone(),
                    loaded.settings.timezone,
                    metrics.notify.clone(),
                )
                .map_err(|e| anyhow::anyhow!("routing {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let detection = Detection {
            inputs,
            loaded,
            stamp,
            store,
            folders: std::mem::take(&mut intake.folders),
            routing,
            adt,
        };
        Ok(App {
            rt,
            metrics,
            intake,
            detection,
            dispatcher,
            data_dir: cfg.data_dir,
            http: cfg.http,
        })
    }

    /// Starts detection, the dispatcher, a tailer per source, the folder watchers, the
    /// receivers and the spool sync, in that order.
    pub fn start(self) -> Result<Running> {
        let App {
            rt,
            metrics,
            intake,
            detection,
            dispatcher,
            data_dir,
            http,
        } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<Batch>(QUEUE);
        let m = metrics.clone();
        m.detection_alive.store(true, Ordering::Relaxed);
        let detecting = std::thread::Builder::new()
            .name("detect".into())
            .spawn(move || detection::detect_loop(rx, detection, m))?;
        if let Some(d) = dispatcher {
            rt.spawn(d.run(DISPATCH_TICK));
        }
        let mut threads = Vec::new();
        for r in intake.readers {
            let checkpoints = data_dir.join("checkpoints");
            let cp = checkpoints.join(format!("{}.json", r.name));
            let tailer = Tailer::new(r.patterns.clone(), cp, CHUNK_BYTES, r.max_line_bytes)?;
            let quarantine = quarantine(&data_dir, &r.name);
            let (tx, stop, m) = (tx.clone(), stop.clone(), metrics.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tail-{}", r.name))
                    .spawn(move || tail::tail_loop(r, tailer, quarantine, tx, stop, m))?,
            );
        }
        drop(tx);
        start_receivers(
            &rt,
            intake.watchers,
            intake.tasks,
            &intake.spools,
            &stop,
            &mut threads,
        )?;
        Ok(Running {
            rt,
            metrics,
            http,
            spools: intake.spools,
            stop,
            threads,
            detecting,
        })
    }
}

/// The agent with its threads and tasks running.
pub struct Running {
    rt: tokio::runtime::Runtime,
    metrics: Arc<Metrics>,
    http: crate::config::Http,
    spools: Vec<SharedSpool>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    detecting: std::thread::JoinHandle<()>,
}

impl Running {
    /// Serves `/healthz` and `/metrics` until SIGTERM or Ctrl-C.
    pub fn serve(&self) -> Result<()> {
        self.rt
            .block_on(http::serve_until_signal(&self.http, self.metrics.clone()))
    }

    /// Receivers stop first so nothing arrives after the spools' last sync; then tailers
    /// finish their in-flight batches and save checkpoints; detection ends when they are gone.
    pub fn shutdown(self) {
        self.rt.shutdown_timeout(Duration::from_secs(2));
        sync_spools(&self.spools);
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let _ = self.detecting.join();
        tracing::info!("stopped: checkpoints saved, store closed");
    }
}

/// How each MLLP feed's messages map onto the context, by feed name.
fn mllp_options(
    cfg: &Config,
) -> std::collections::HashMap<String, crate::context::adt::AdtOptions> {
    cfg.mllp_feeds()
        .iter()
        .map(|f| {
            let o = crate::context::adt_options(&f.departments, f.timezone, f.labels.as_deref());
            (f.name.clone(), o)
        })
        .collect()
}

/// A source's decode marker and rejects file under `data_dir`.
fn quarantine(data_dir: &Path, source: &str) -> Quarantine {
    Quarantine::open(
        data_dir
            .join("checkpoints")
            .join(format!("{source}.decoding")),
        data_dir.join("rejects").join(format!("{source}.ndjson")),
    )
}

/// The runtime receivers, the metrics endpoint and the dispatcher run on.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// What every source's build shares: the spool directory, the counters, the runtime and the
/// bytes-in-flight budget of the stream receivers.
fn env<'a>(cfg: &Config, metrics: &'a Arc<Metrics>, rt: &'a tokio::runtime::Runtime) -> Env<'a> {
    Env {
        spool_dir: cfg.data_dir.join("spool"),
        metrics,
        rt,
        inflight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.inflight_bytes)),
    }
}

/// Counters for every source, in source-index order: the configured sources, the console's
/// view log, the MLLP feeds.
fn metrics_for(cfg: &Config, loaded: Option<&Loaded>) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics {
        sources: cfg
            .sources
            .iter()
            .map(|s| s.name())
            .chain(cfg.console.as_ref().map(|_| crate::console::audit::SOURCE))
            .chain(cfg.mllp_feeds().iter().map(|f| f.name.as_str()))
            .map(|name| SourceMetrics {
                name: name.to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    if let (Some(loaded), Ok(mut l)) = (loaded, metrics.loaded.write()) {
        *l = Some(loaded.summary());
    }
    metrics
}

pub(super) fn warn_if_descriptors_short(cfg: &Config) {
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
}

/// Starts the folder watchers (a thread each), the receivers' tasks and the spools' sync.
fn start_receivers(
    rt: &tokio::runtime::Runtime,
    watchers: Vec<crate::watch::FolderWatch>,
    tasks: Vec<crate::source::Task>,
    spools: &[SharedSpool],
    stop: &Arc<AtomicBool>,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<()> {
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
    for task in tasks {
        rt.spawn(task);
    }
    let syncing = spools.to_vec();
    rt.spawn(async move {
        let mut tick = tokio::time::interval(SPOOL_SYNC);
        loop {
            tick.tick().await;
            // fsync blocks: off the workers that receive.
            let spools = syncing.clone();
            let _ = tokio::task::spawn_blocking(move || sync_spools(&spools)).await;
        }
    });
    Ok(())
}

fn sync_spools(spools: &[SharedSpool]) {
    for s in spools {
        if let Err(e) = Spool::sync_shared(s) {
            tracing::error!("syncing a spool: {e}");
        }
    }
}
