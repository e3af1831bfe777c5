//! `phiwatch run`: the daemon. Sources tail logs and hand batches of lines to one detection
//! thread through a bounded channel (back-pressure: a slow detector slows the readers, memory
//! stays flat). A batch's accesses and findings are stored in one transaction before the source
//! commits its checkpoint, so a crash replays at most the batches in flight, and the store's
//! idempotent keys make that replay invisible.

use crate::config::{Config, FileSource, Source};
use crate::context::load_context;
use crate::detect::PolicyPack;
use crate::pipeline::{Judged, Pipeline};
use crate::settings::Settings;
use crate::store::Store;
use crate::tail::{Chunk, Tailer};
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// Batches waiting for detection; beyond this, sources block.
const QUEUE: usize = 4;
/// Bytes a source reads per file per poll.
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Default)]
pub struct SourceMetrics {
    pub name: String,
    pub lines: AtomicU64,
    pub accesses: AtomicU64,
    pub bad_lines: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub files: AtomicU64,
    pub last_checkpoint_ms: AtomicI64,
    pub errors: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    pub sources: Vec<SourceMetrics>,
    pub findings: AtomicU64,
    pub findings_new: AtomicU64,
    pub store_errors: AtomicU64,
    pub detection_alive: AtomicBool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP phiwatch_up 1 while the detection thread runs.\n# TYPE phiwatch_up gauge\n",
        );
        out.push_str(&format!(
            "phiwatch_up {}\n",
            u8::from(self.detection_alive.load(Ordering::Relaxed))
        ));
        type Gauge = fn(&SourceMetrics) -> f64;
        let per_source: [(&str, &str, &str, Gauge); 7] = [
            (
                "phiwatch_source_lines_total",
                "counter",
                "Lines read per source.",
                |m| m.lines.load(Ordering::Relaxed) as f64,
            ),
            (
                "phiwatch_source_events_total",
                "counter",
                "Patient accesses decoded per source.",
                |m| m.accesses.load(Ordering::Relaxed) as f64,
            ),
            (
                "phiwatch_source_bad_lines_total",
                "counter",
                "Lines rejected by the decoder per source.",
                |m| m.bad_lines.load(Ordering::Relaxed) as f64,
            ),
            (
                "phiwatch_source_lag_bytes",
                "gauge",
                "Bytes written to tailed files but not yet processed.",
                |m| m.lag_bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "phiwatch_source_files",
                "gauge",
                "Files tracked per source.",
                |m| m.files.load(Ordering::Relaxed) as f64,
            ),
            (
                "phiwatch_source_errors_total",
                "counter",
                "Read or store failures per source (retried).",
                |m| m.errors.load(Ordering::Relaxed) as f64,
            ),
            (
                "phiwatch_checkpoint_age_seconds",
                "gauge",
                "Seconds since the source last saved its checkpoint.",
                |m| {
                    let last = m.last_checkpoint_ms.load(Ordering::Relaxed);
                    if last == 0 {
                        -1.0
                    } else {
                        (now_ms() - last) as f64 / 1000.0
                    }
                },
            ),
        ];
        for (name, kind, help, get) in per_source {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for m in &self.sources {
                out.push_str(&format!("{name}{{source=\"{}\"}} {}\n", m.name, get(m)));
            }
        }
        for (name, help, v) in [
            (
                "phiwatch_findings_total",
                "Findings raised (including replays).",
                &self.findings,
            ),
            (
                "phiwatch_findings_stored_total",
                "Findings new to the store.",
                &self.findings_new,
            ),
            (
                "phiwatch_store_errors_total",
                "Store transactions that failed.",
                &self.store_errors,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

struct Batch {
    source: usize,
    path: PathBuf,
    first_line: u64,
    lines: Vec<Vec<u8>>,
    reply: SyncSender<Result<(), String>>,
}

pub fn run(config_path: &Path) -> Result<()> {
    let cfg = Config::load(config_path)?;
    let settings = match &cfg.rules {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    let pack = match &cfg.policies {
        Some(d) => PolicyPack::load_dir(d)
            .map_err(|e| anyhow::anyhow!("policy pack {} is invalid:\n{e}", d.display()))?,
        None => PolicyPack::embedded(),
    };
    let context = match &cfg.context {
        Some(dir) => {
            let (c, stats) = load_context(dir, &settings)
                .with_context(|| format!("loading context from {}", dir.display()))?;
            tracing::info!(
                users = c.users.len(),
                patients = c.patients.len(),
                relationships = c.relationship_count(),
                bad_lines = stats.bad_lines,
                "context loaded"
            );
            for p in &stats.problems {
                tracing::warn!("context: {p}");
            }
            c
        }
        None => Default::default(),
    };
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let store = Store::open(&cfg.data_dir.join("phiwatch.db"))?;

    let metrics = Arc::new(Metrics {
        sources: cfg
            .sources
            .iter()
            .map(|Source::File(s)| SourceMetrics {
                name: s.name.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = sync_channel::<Batch>(QUEUE);

    let m = metrics.clone();
    m.detection_alive.store(true, Ordering::Relaxed);
    let detection = std::thread::Builder::new()
        .name("detect".into())
        .spawn(move || detect_loop(rx, context, settings, pack, store, m))?;

    let mut readers = Vec::new();
    for (ix, Source::File(src)) in cfg.sources.into_iter().enumerate() {
        let cp = cfg
            .data_dir
            .join("checkpoints")
            .join(format!("{}.json", src.name));
        let tailer = Tailer::new(src.paths.clone(), cp, CHUNK_BYTES)?;
        let (tx, stop, m) = (tx.clone(), stop.clone(), metrics.clone());
        readers.push(
            std::thread::Builder::new()
                .name(format!("tail-{}", src.name))
                .spawn(move || tail_loop(ix, src, tailer, tx, stop, m))?,
        );
    }
    drop(tx);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(serve_until_signal(cfg.http.listen, metrics.clone()));
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        let _ = r.join();
    }
    let _ = detection.join();
    tracing::info!("stopped: checkpoints saved, store closed");
    served
}

async fn serve_until_signal(listen: std::net::SocketAddr, metrics: Arc<Metrics>) -> Result<()> {
    use axum::routing::get;
    let health = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let alive = health.detection_alive.load(Ordering::Relaxed);
                async move {
                    if alive {
                        (axum::http::StatusCode::OK, "ok\n")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "detection stopped\n",
                        )
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
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight batches");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("metrics server")
}

fn detect_loop(
    rx: Receiver<Batch>,
    context: crate::context::ContextStore,
    settings: Settings,
    pack: PolicyPack,
    mut store: Store,
    metrics: Arc<Metrics>,
) {
    let mut pipeline = Pipeline::new(&context, &settings, &pack);
    let mut judged = Judged::default();
    for batch in rx {
        judged.clear();
        let m = &metrics.sources[batch.source];
        for (i, line) in batch.lines.iter().enumerate() {
            if line.trim_ascii().is_empty() {
                continue;
            }
            m.lines.fetch_add(1, Ordering::Relaxed);
            match pipeline.line(line, &mut judged) {
                Ok(crate::pipeline::LineKind::Access) => {
                    m.accesses.fetch_add(1, Ordering::Relaxed);
                }
                Ok(crate::pipeline::LineKind::NoPatient) => {}
                Err(e) => {
                    m.bad_lines.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        source = %m.name,
                        "bad line {}:{}: {e}",
                        batch.path.display(),
                        batch.first_line + i as u64
                    );
                }
            }
        }
        let result = store
            .insert_batch(&judged.accesses, &judged.findings)
            .map(|(_, new)| {
                metrics
                    .findings
                    .fetch_add(judged.findings.len() as u64, Ordering::Relaxed);
                metrics
                    .findings_new
                    .fetch_add(new as u64, Ordering::Relaxed);
            })
            .map_err(|e| {
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                e.to_string()
            });
        let _ = batch.reply.send(result);
    }
    metrics.detection_alive.store(false, Ordering::Relaxed);
}

fn tail_loop(
    ix: usize,
    src: FileSource,
    mut tailer: Tailer,
    tx: SyncSender<Batch>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let m = &metrics.sources[ix];
    let poll = Duration::from_millis(src.poll_ms.max(10));
    while !stop.load(Ordering::SeqCst) {
        let chunks = match tailer.poll() {
            Ok(c) => c,
            Err(e) => {
                m.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = %src.name, "reading: {e}");
                std::thread::sleep(poll);
                continue;
            }
        };
        let mut progressed = false;
        for mut chunk in chunks {
            match process(ix, &mut chunk, &tx) {
                Ok(()) => {
                    if let Err(e) = tailer.commit(&chunk) {
                        tracing::error!(source = %src.name, "commit: {e}");
                        break;
                    }
                    progressed = true;
                }
                Err(e) => {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(source = %src.name, "storing a batch failed, will retry: {e}");
                    break;
                }
            }
        }
        if progressed {
            match tailer.save() {
                Ok(()) => m.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed),
                Err(e) => {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(source = %src.name, "saving checkpoint: {e}");
                }
            }
        }
        m.lag_bytes.store(tailer.lag_bytes(), Ordering::Relaxed);
        m.files.store(tailer.tracked() as u64, Ordering::Relaxed);
        if !progressed {
            std::thread::sleep(poll);
        }
    }
    if let Err(e) = tailer.save() {
        tracing::error!(source = %src.name, "saving checkpoint at shutdown: {e}");
    }
}

fn process(source: usize, chunk: &mut Chunk, tx: &SyncSender<Batch>) -> Result<(), String> {
    let (reply, answer) = sync_channel(1);
    tx.send(Batch {
        source,
        path: chunk.path.clone(),
        first_line: chunk.first_line,
        lines: std::mem::take(&mut chunk.lines),
        reply,
    })
    .map_err(|_| "detection thread stopped".to_owned())?;
    answer
        .recv()
        .map_err(|_| "detection thread stopped".to_owned())?
}
