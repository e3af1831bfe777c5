//! `phiwatch run`: the daemon. Sources tail logs and hand batches of lines to one detection
//! thread through a bounded channel (back-pressure: a slow detector slows the readers, memory
//! stays flat). A batch's accesses and findings are stored in one transaction before the source
//! commits its checkpoint, so a crash replays at most the batches in flight, and the store's
//! idempotent keys make that replay invisible.

use crate::config::{Config, FileSource, Source};
use crate::pipeline::{Judged, Pipeline};
use crate::reload::{Inputs, Loaded};
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
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub detection_alive: AtomicBool,
    /// Set by SIGHUP: reload settings, policies and context now.
    pub reload_requested: AtomicBool,
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
            (
                "phiwatch_reloads_total",
                "Successful reloads of settings, policies and context.",
                &self.reloads,
            ),
            (
                "phiwatch_reload_failures_total",
                "Rejected reloads (the previous version keeps running).",
                &self.reload_failures,
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
    let inputs = Inputs {
        rules: cfg.rules.clone(),
        policies: cfg.policies.clone(),
        context: cfg.context.clone(),
    };
    let stamp = inputs.stamp();
    let loaded = inputs.load()?;
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
        .spawn(move || detect_loop(rx, inputs, loaded, stamp, store, m))?;

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
    let metrics_for_hup = metrics.clone();
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("metrics server")
}

/// How often the detection thread looks for changed inputs.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

fn detect_loop(
    rx: Receiver<Batch>,
    inputs: Inputs,
    mut loaded: Loaded,
    mut stamp: u64,
    mut store: Store,
    metrics: Arc<Metrics>,
) {
    let mut judged = Judged::default();
    loop {
        // The pipeline borrows the loaded inputs; it is rebuilt after each reload.
        let mut pipeline = Pipeline::new(&loaded.context, &loaded.settings, &loaded.pack);
        let mut last_check = std::time::Instant::now();
        let next = loop {
            match rx.recv_timeout(RELOAD_CHECK) {
                Ok(batch) => judge_batch(&mut pipeline, &mut judged, &mut store, &metrics, batch),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
            }
            let asked = metrics.reload_requested.swap(false, Ordering::SeqCst);
            if !asked && last_check.elapsed() < RELOAD_CHECK {
                continue;
            }
            last_check = std::time::Instant::now();
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
        drop(pipeline);
        match next {
            Some(new) => {
                loaded = new;
                metrics.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("reloaded settings, policies and context");
            }
            None => break,
        }
    }
    metrics.detection_alive.store(false, Ordering::Relaxed);
}

fn judge_batch(
    pipeline: &mut Pipeline<'_>,
    judged: &mut Judged,
    store: &mut Store,
    metrics: &Metrics,
    batch: Batch,
) {
    judged.clear();
    let m = &metrics.sources[batch.source];
    for (i, line) in batch.lines.iter().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        m.lines.fetch_add(1, Ordering::Relaxed);
        match pipeline.line(line, judged) {
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
