//! Fleet mode's roles as processes: what each builds from the config, starts, serves and
//! stops. A `collect` node builds the sources exactly as the single process does and queues
//! what they read; a `detect` node builds no source, and judges what the queue holds.

use super::collect::{collect_loop, Collector};
use super::dispatch::FleetDispatcher;
use super::fleet_detect::FleetDetector;
use super::{
    env, http, metrics_for, mllp_options, quarantine, runtime, start_receivers, sync_spools,
    warn_if_descriptors_short,
};
use crate::alert::Routing;
use crate::config::{Config, Source};
use crate::fleet::pg::DatabaseConfig;
use crate::fleet::{pg, schema, Role};
use crate::source::Intake;
use anyhow::{Context as _, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Checked before anything is bound: an unreachable or unmigrated database stops the node
/// at start-up with the reason, instead of a node that runs and queues nothing.
fn database_ready(rt: &tokio::runtime::Runtime, db: &DatabaseConfig, role: Role) -> Result<()> {
    rt.block_on(async {
        let c = pg::connect(db, &format!("phiwatch-{}", role.as_str())).await?;
        schema::require_current(&c).await
    })
    .with_context(|| format!("the fleet's database ({})", pg::describe(&db.url)))?;
    Ok(())
}

/// A `collect` node: every configured source and MLLP feed, read, decoded and queued.
pub fn collect(cfg: Config, db: DatabaseConfig) -> Result<()> {
    // Indices as metrics_for lists them: the sources, the console's view log, the feeds.
    let mllp_ix = cfg.sources.len() + usize::from(cfg.console.is_some());
    let feeds = cfg.mllp_feeds();
    queueing(cfg, db, Role::Collect, move |cfg, env, intake| {
        crate::source::build(std::mem::take(&mut cfg.sources), env, intake)?;
        for (i, f) in feeds.iter().enumerate() {
            crate::source::mllp::build(f, mllp_ix + i, env, intake)?;
        }
        Ok(())
    })
}

/// A `console` node: the console on the fleet's database, its own view log queued like a
/// collector's source (so officers' looks at PHI are judged by the detector too).
pub fn console(cfg: Config, db: DatabaseConfig) -> Result<()> {
    let c = cfg.console_node().map_err(anyhow::Error::msg)?.clone();
    let fleet = Some(db.clone());
    queueing(cfg, db, Role::Console, move |cfg, env, intake| {
        let (jurisdictions, response) = crate::case::plan_for(cfg)?;
        let inputs = crate::console::ConsoleInputs {
            db: cfg.data_dir.join("phiwatch.db"),
            evidence_dir: cfg.data_dir.join("attachments"),
            plan: Arc::new(crate::case::schedule::Plan {
                jurisdictions,
                response,
            }),
            context: cfg.fhir_context(),
            metrics: Some(env.metrics.clone()),
            views: None,
            // What the Backtest page replays the fleet's access log through: the inputs in
            // force, loaded per backtest (with the fleet's context journal), not held.
            detection: Some(crate::console::DetectionInputs {
                inputs: crate::reload::Inputs::of_config(cfg, None),
                grouping: match &cfg.routing {
                    Some(p) => {
                        crate::alert::Routing::load(p)
                            .map_err(|e| anyhow::anyhow!("routing {}: {e}", p.display()))?
                            .grouping
                    }
                    None => Default::default(),
                },
            }),
            fleet,
        };
        // The view log is the node's only source: index 0, as metrics_for lists it.
        crate::source::console::build(&c, inputs, 0, env, intake)
    })
}

/// Runs a node that queues what its readers read: `build` makes the readers (and any
/// server that feeds them); each reader gets a collector that appends its batches.
fn queueing(
    mut cfg: Config,
    db: DatabaseConfig,
    role: Role,
    build: impl FnOnce(&mut Config, &super::Env<'_>, &mut Intake) -> Result<()>,
) -> Result<()> {
    let rt = runtime()?;
    database_ready(&rt, &db, role)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let metrics = metrics_for(&cfg, None);
    let _ = metrics.fleet.role.set(role);
    warn_if_descriptors_short(&cfg);
    let node = cfg.fleet.node_name();
    let env = env(&cfg, &metrics, &rt);
    let mut intake = Intake::default();
    build(&mut cfg, &env, &mut intake)?;
    let stop = Arc::new(AtomicBool::new(false));
    metrics.detection_alive.store(true, Ordering::Relaxed);
    let mut threads = Vec::new();
    for reader in intake.readers {
        let c = Collector {
            quarantine: quarantine(&cfg.data_dir, &reader.name),
            db: db.clone(),
            node: node.clone(),
            stop: stop.clone(),
            metrics: metrics.clone(),
            reader,
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("collect-{}", c.reader.name))
                .spawn(move || collect_loop(c))?,
        );
    }
    start_receivers(
        &rt,
        intake.watchers,
        intake.tasks,
        &intake.spools,
        &stop,
        &mut threads,
    )?;
    tracing::info!(node = %node, sources = threads.len(), "collecting into {}", pg::describe(&db.url));
    let served = rt.block_on(http::serve_until_signal(&cfg.http, metrics.clone()));
    // Receivers stop first, so nothing arrives after the spools' last sync; then each
    // collector finishes the batch in hand.
    rt.shutdown_timeout(Duration::from_secs(2));
    sync_spools(&intake.spools);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("stopped: batches appended, checkpoints stored with them");
    served
}

/// A `detect` node: the active detector while it holds the lease, a standby otherwise.
pub fn detect(cfg: Config, db: DatabaseConfig) -> Result<()> {
    let rt = runtime()?;
    database_ready(&rt, &db, Role::Detect)?;
    // The journal is the database's (fleet::state), read when the lease is taken.
    let inputs = crate::reload::Inputs::of_config(&cfg, None);
    // Bad policies, rules or plugins stop the node now, not when it first takes the lease;
    // and a standby holds them loaded, ready to take over.
    let stamp = inputs.stamp();
    let loaded = inputs.load()?;
    let metrics = metrics_for(&cfg, Some(&loaded));
    let _ = metrics.fleet.role.set(Role::Detect);
    let folders = cfg
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Folder(f) => Some(f.paths.iter().map(|p| p.display().to_string())),
            _ => None,
        })
        .flatten()
        .collect();
    let adt = mllp_options(&cfg);
    let routing = match &cfg.routing {
        Some(p) => Some((
            p.clone(),
            Arc::new(RwLock::new(Arc::new(Routing::load(p)?))),
        )),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let detector = FleetDetector {
        routing,
        inputs,
        db: db.clone(),
        node: cfg.fleet.node_name(),
        ttl: cfg.fleet.lease(),
        folders,
        adt,
        // A worker thread of its own: the writer's transaction and both connections make
        // progress while the detector thread judges the next batch.
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("detect-db")
            .enable_all()
            .build()?,
        stop: stop.clone(),
        metrics: metrics.clone(),
    };
    metrics.detection_alive.store(true, Ordering::Relaxed);
    let detecting = std::thread::Builder::new()
        .name("detect".into())
        .spawn(move || detector.run(loaded, stamp))?;
    tracing::info!(node = %cfg.fleet.node_name(), "detector standing by for the lease in {}", pg::describe(&db.url));
    let served = rt.block_on(http::serve_until_signal(&cfg.http, metrics.clone()));
    stop.store(true, Ordering::SeqCst);
    let _ = detecting.join();
    metrics.detection_alive.store(false, Ordering::Relaxed);
    tracing::info!("stopped");
    served
}

/// A `dispatch` node: sends what the outbox holds, beside any number of other dispatchers.
pub fn dispatch(cfg: Config, db: DatabaseConfig) -> Result<()> {
    let rt = runtime()?;
    database_ready(&rt, &db, Role::Dispatch)?;
    let Some(path) = &cfg.routing else {
        anyhow::bail!(
            "role dispatch sends to the receivers of a routing file: set routing = \"...\" \
             in the config (the same file the detect nodes use)"
        );
    };
    let routing = Arc::new(Routing::load(path)?);
    // A bad CA file or a missing password variable stops the node now, not at the first alert.
    let smtp = crate::notify::transports(&routing)?;
    let tz = match &cfg.rules {
        Some(p) => crate::settings::Settings::load(p)?.timezone,
        None => crate::settings::Settings::default().timezone,
    };
    let metrics = metrics_for(&cfg, None);
    let _ = metrics.fleet.role.set(Role::Dispatch);
    let node = cfg.fleet.node_name();
    let dispatcher = FleetDispatcher {
        db: db.clone(),
        node: node.clone(),
        routing_file: (path.clone(), Arc::new(RwLock::new(routing.clone()))),
        routing,
        tz,
        smtp,
        http: crate::notify::http_client()?,
        metrics: metrics.clone(),
    };
    let sending = rt.spawn(dispatcher.run());
    tracing::info!(node = %node, "dispatching notifications from {}", pg::describe(&db.url));
    let served = rt.block_on(http::serve_until_signal(&cfg.http, metrics.clone()));
    // A send cut short leaves its row claimed: it goes out again once the claim lapses.
    sending.abort();
    rt.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("stopped");
    served
}
