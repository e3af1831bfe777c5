//! A source's tailer thread: reads chunks of lines, decodes them, hands them to detection and
//! commits each chunk's checkpoint only once detection answers that it is stored.

use super::detection::{Batch, BatchError};
use crate::decode::Item;
use crate::metrics::{Metrics, SourceMetrics};
use crate::quarantine::{self, Quarantine, Verdict};
use crate::source::{LogBudget, Reader, BAD_LOG_EVERY};
use crate::tail::{Chunk, Tailer};
use crate::time::now_ms;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// Checkpoint writes while a source is catching up.
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// A chunk handed to detection, and where the answer comes (`None`: nothing to store).
type InFlight = (Chunk, Option<Receiver<Result<(), BatchError>>>);

pub fn tail_loop(
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
            remove_drained(&r, &tailer);
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

/// Deletes rotated spool segments whose every record is behind a durable checkpoint.
pub(super) fn remove_drained(r: &Reader, tailer: &Tailer) {
    if let Some(active) = &r.spool_active {
        for done in tailer.drained().into_iter().filter(|p| p != active) {
            if let Err(e) = std::fs::remove_file(&done) {
                tracing::warn!(source = %r.name, "removing drained spool {}: {e}", done.display());
            }
        }
    }
}

/// Watches the fixed directory part of each glob, so a write wakes the tailer at once.
/// Returns the watcher (dropping it stops the watch); `None` means polling only.
pub(super) fn watch_dirs(
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
        Some(rx) => rx.recv().unwrap_or(Err(BatchError::Stopped)),
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
pub(super) fn decode_chunk(
    r: &mut Reader,
    q: &mut Quarantine,
    chunk: &Chunk,
    m: &SourceMetrics,
) -> Vec<Item> {
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
) -> Result<Option<Receiver<Result<(), BatchError>>>, BatchError> {
    if items.is_empty() {
        return Ok(None);
    }
    let (reply, answer) = sync_channel(1);
    tx.send(Batch {
        items,
        reply,
        sent_ms: now_ms(),
    })
    .map_err(|_| BatchError::Stopped)?;
    Ok(Some(answer))
}
