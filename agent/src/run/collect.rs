//! Fleet mode's `collect` role: the sources are built and read as in the single process
//! (tailers, receivers and their spools, folder watchers), each record decoded here, and each
//! chunk's items appended to the database's ingest queue as the source's next batch, with
//! the source's checkpoint in the same transaction. A collector killed at any point resumes
//! from the checkpoint of the last batch it appended: nothing lost, nothing appended twice.

use super::tail::{decode_chunk, remove_drained, watch_dirs};
use crate::decode::Item;
use crate::fleet::{pg, queue, FleetError};
use crate::metrics::{Metrics, SourceMetrics};
use crate::quarantine::Quarantine;
use crate::source::Reader;
use crate::tail::{Chunk, Tailer};
use crate::time::now_ms;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// Waits between attempts to reach the database.
const RETRY: Duration = Duration::from_secs(1);

/// What one source's collector thread needs.
pub struct Collector {
    pub reader: Reader,
    pub quarantine: Quarantine,
    pub db: pg::DatabaseConfig,
    pub node: String,
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

/// The thread's connection and the tailer resumed from the checkpoint it last committed.
struct Position {
    client: Client,
    tailer: Tailer,
    /// Chunks read since the last durable checkpoint that made no batch.
    unsaved: bool,
}

pub fn collect_loop(c: Collector) {
    let Collector {
        mut reader,
        mut quarantine,
        db,
        node,
        stop,
        metrics,
    } = c;
    // The thread's own runtime for its database calls: the agent's runtime (receivers, the
    // metrics endpoint) stops first at shutdown, while this thread finishes its batch.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(source = %reader.name, "collector cannot start: {e}");
            return;
        }
    };
    let m = &metrics.sources[reader.ix];
    let (wake_tx, wake) = sync_channel::<()>(1);
    let _watcher = watch_dirs(&reader.patterns, wake_tx, &reader.name);
    let mut at: Option<Position> = None;
    while !stop.load(Ordering::SeqCst) {
        let pos = match at.as_mut() {
            Some(p) => p,
            None => match rt.block_on(resume(&db, &reader, &node)) {
                Ok(p) => at.insert(p),
                Err(e) => {
                    metrics.fleet.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(source = %reader.name, "{e:#}; retrying");
                    std::thread::sleep(RETRY);
                    continue;
                }
            },
        };
        let caught_up = match step(pos, &mut reader, &mut quarantine, &rt, &node, m, &metrics) {
            Ok(caught_up) => caught_up,
            Err(e) => {
                // Unknown whether the last append committed: the checkpoint in the database
                // says, so the tailer is resumed from it on a fresh connection.
                metrics.fleet.errors.fetch_add(1, Ordering::Relaxed);
                m.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = %reader.name, "appending to the ingest queue: {e}; resuming from the stored checkpoint");
                at = None;
                std::thread::sleep(RETRY);
                continue;
            }
        };
        m.lag_bytes.store(pos.tailer.lag_bytes(), Ordering::Relaxed);
        m.files
            .store(pos.tailer.tracked() as u64, Ordering::Relaxed);
        if caught_up {
            // Woken early by a change in a watched directory; the poll interval is the
            // fallback for file systems without inotify.
            let _ = wake.recv_timeout(reader.poll);
            while wake.try_recv().is_ok() {}
        }
    }
}

/// Connects and rebuilds the tailer from the source's stored checkpoint.
async fn resume(db: &pg::DatabaseConfig, r: &Reader, node: &str) -> anyhow::Result<Position> {
    let client = pg::connect(db, &format!("phiwatch-collect-{node}")).await?;
    let saved = queue::checkpoint(&client, &r.name)
        .await?
        .unwrap_or_default();
    let label = format!("the stored checkpoint of source {}", r.name);
    let tailer = Tailer::resume(
        r.patterns.clone(),
        &saved,
        &label,
        super::CHUNK_BYTES,
        r.max_line_bytes,
    )?;
    Ok(Position {
        client,
        tailer,
        unsaved: false,
    })
}

/// Reads what the source has, appends a batch per chunk that decoded to something, and
/// answers whether the source is caught up.
fn step(
    pos: &mut Position,
    r: &mut Reader,
    q: &mut Quarantine,
    rt: &tokio::runtime::Runtime,
    node: &str,
    m: &SourceMetrics,
    metrics: &Metrics,
) -> Result<bool, FleetError> {
    let chunks = match pos.tailer.poll() {
        Ok(c) => c,
        Err(e) => {
            m.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(source = %r.name, "reading: {e}");
            std::thread::sleep(r.poll);
            return Ok(false);
        }
    };
    let caught_up = chunks.is_empty();
    for mut chunk in chunks {
        let records = encode(decode_chunk(r, q, &chunk, m), &r.name);
        chunk.lines = Vec::new();
        commit(&mut pos.tailer, &chunk, &r.name);
        if records.is_empty() {
            pos.unsaved = true;
            continue;
        }
        let checkpoint = pos.tailer.checkpoint();
        rt.block_on(queue::append(
            &mut pos.client,
            &r.name,
            node,
            &records,
            &checkpoint,
        ))?;
        pos.unsaved = false;
        metrics
            .fleet
            .batches_appended
            .fetch_add(1, Ordering::Relaxed);
        m.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed);
        remove_drained(r, &pos.tailer);
    }
    if caught_up && pos.unsaved {
        let checkpoint = pos.tailer.checkpoint();
        rt.block_on(queue::advance(&pos.client, &r.name, node, &checkpoint))?;
        pos.unsaved = false;
        m.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed);
        remove_drained(r, &pos.tailer);
    }
    Ok(caught_up)
}

/// Marks the chunk read in the tailer's position; that position becomes durable only with
/// the batch (or checkpoint) written next.
fn commit(tailer: &mut Tailer, chunk: &Chunk, name: &str) {
    if let Err(e) = tailer.commit(chunk) {
        tracing::error!(source = %name, "commit: {e}");
    }
}

/// The items worth queueing, serialised: a header row or a record naming no patient is
/// nothing to judge.
fn encode(items: Vec<Item>, name: &str) -> Vec<Vec<u8>> {
    items
        .into_iter()
        .filter(|i| !matches!(i, Item::Nothing))
        .filter_map(|i| match serde_json::to_vec(&i) {
            Ok(v) => Some(v),
            Err(e) => {
                // Every item type serialises; a failure here is a bug, said loudly.
                tracing::error!(source = %name, "an item could not be serialised: {e}");
                None
            }
        })
        .collect()
}
