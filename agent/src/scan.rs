//! Scan: replays event files through decode → enrich → detect → store, writing findings.

use crate::finding::Severity;
use crate::pipeline::{Judged, LineKind, Pipeline};
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScanError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing findings: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("starting the decoding thread: {0}")]
    Thread(std::io::Error),
}

/// How many reasons to keep for the summary; every bad line is still counted.
const MAX_REPORTED: usize = 20;
/// Accesses per store transaction.
const BATCH: usize = 10_000;
/// Longest line judged; a longer one is one bad line, read past without holding it.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// One line of a file, read with a bound on memory.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    Eof,
    /// The line is in the buffer, without its newline.
    Line,
    /// The line had this many bytes: too many. The buffer holds its first `max`.
    TooLong(u64),
}

/// Reads up to the next newline, keeping at most `max` bytes of the line in `buf`.
pub fn read_line_bounded(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut total: u64 = 0;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (n, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(p) => (p, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        total += n as u64;
        r.consume(if done { n + 1 } else { n });
        if done {
            break;
        }
    }
    Ok(match (any, total > max as u64) {
        (false, _) => LineRead::Eof,
        (true, false) => LineRead::Line,
        (true, true) => LineRead::TooLong(total),
    })
}

#[derive(Debug, Default)]
pub struct ScanSummary {
    pub files: usize,
    pub lines: u64,
    /// Patient accesses judged.
    pub events: u64,
    /// Valid AuditEvents that touch no patient (logins, logouts...).
    pub no_patient: u64,
    pub bad_lines: u64,
    /// `file:line: reason` for the first bad lines.
    pub problems: Vec<String>,
    pub unknown_users: u64,
    pub unknown_patients: u64,
    pub findings: u64,
    pub by_category: BTreeMap<String, u64>,
    pub by_severity: BTreeMap<Severity, u64>,
    /// Findings that were new to the store (a replay adds none).
    pub stored_new: u64,
    pub store_enabled: bool,
    pub cedar_evaluations: u64,
    pub cedar_errors: u64,
    /// Failed plugin calls per plugin.
    pub plugin_failures: BTreeMap<String, u64>,
    /// `plugin (kind): first line of the message` for the first failed calls.
    pub plugin_failure_examples: Vec<String>,
    pub elapsed: Duration,
}

impl ScanSummary {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "scanned {} file(s), {} lines: {} patient accesses, {} without a patient, {} bad lines\n",
            self.files, self.lines, self.events, self.no_patient, self.bad_lines
        );
        for p in &self.problems {
            s.push_str(&format!("  bad line {p}\n"));
        }
        if self.bad_lines as usize > self.problems.len() {
            s.push_str(&format!(
                "  ... and {} more bad lines (use --rejects FILE to list all)\n",
                self.bad_lines as usize - self.problems.len()
            ));
        }
        if self.unknown_users + self.unknown_patients > 0 {
            s.push_str(&format!(
                "context gaps: {} accesses by users not in the directory, {} to patients not in the context\n",
                self.unknown_users, self.unknown_patients
            ));
        }
        if self.store_enabled {
            s.push_str(&format!(
                "findings: {} ({} new in store)\n",
                self.findings, self.stored_new
            ));
        } else {
            s.push_str(&format!("findings: {} (no store)\n", self.findings));
        }
        let sev: Vec<String> = self
            .by_severity
            .iter()
            .rev()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !sev.is_empty() {
            s.push_str(&format!("  by severity: {}\n", sev.join(", ")));
        }
        for (k, v) in &self.by_category {
            s.push_str(&format!("  {k:<16} {v}\n"));
        }
        for (p, n) in &self.plugin_failures {
            s.push_str(&format!(
                "plugin {p}: {n} failed call(s), their findings dropped\n"
            ));
        }
        if self.cedar_errors > 0 {
            s.push_str(&format!(
                "policy evaluation errors: {}\n",
                self.cedar_errors
            ));
        }
        s.push_str(&format!(
            "{:.0} events/s ({:.2} s, {} Cedar evaluations)\n",
            self.events_per_sec(),
            self.elapsed.as_secs_f64(),
            self.cedar_evaluations
        ));
        s
    }
}

/// Where findings go besides the store.
pub struct Sinks<'a> {
    pub findings: &'a mut dyn Write,
    pub rejects: Option<&'a mut dyn Write>,
    pub store: Option<&'a mut Store>,
    /// Also keep every access in the store (the access log case timelines read).
    pub store_accesses: bool,
    /// Emit and count only this detector's findings (`plugin test`); the store gets all.
    pub only_detector: Option<&'a str>,
    /// How stored findings group into alerts (the routing file's `[grouping]`); `None` is
    /// the default grouping. A scan never queues notifications.
    pub grouping: Option<&'a crate::alert::Routing>,
}

/// Files of one format, and the decoder that reads them.
pub struct ScanSource {
    pub paths: Vec<PathBuf>,
    pub decoder: crate::decode::LineDecoder,
    pub max_line_bytes: usize,
}

/// Replays FHIR AuditEvent NDJSON files.
pub fn scan_files(
    paths: &[PathBuf],
    ctx: &mut crate::context::ContextStore,
    pipeline: &mut Pipeline<'_>,
    sinks: &mut Sinks<'_>,
) -> Result<ScanSummary, ScanError> {
    scan_sources(
        &mut [ScanSource {
            paths: paths.to_vec(),
            decoder: crate::decode::LineDecoder::Fhir(chrono_tz::UTC),
            max_line_bytes: MAX_LINE_BYTES,
        }],
        ctx,
        pipeline,
        sinks,
    )
}

/// Lines decoded ahead of judging per message, and messages in flight: enough to keep the
/// decoding thread busy while the judging thread works, few enough that memory stays flat.
const DECODED_CHUNK: usize = 1024;
const DECODED_QUEUE: usize = 4;

/// What the decoding thread hands the judging thread, in file order.
enum Decoded {
    /// The next file begins; its name as messages show it.
    File(std::sync::Arc<str>),
    /// Lines of the current file: the line number and what it decoded to, or why not.
    Lines(Vec<(u64, Result<crate::decode::Item, LineError>)>),
}

/// Why a line was rejected (the reason written beside its place).
#[derive(Debug, thiserror::Error)]
enum LineError {
    #[error("line of {bytes} bytes exceeds max_line_bytes {max}")]
    TooLong { bytes: u64, max: usize },
    #[error(transparent)]
    Decode(#[from] crate::decode::DecodeError),
    #[error("the decoder panicked on this line")]
    Panicked,
}

/// Replays files of every format once (a configuration's file sources): each line decoded
/// by its source's decoder, judged, stored and emitted as `run` would. Decoding runs on a
/// thread of its own, a few thousand lines ahead, as each source's thread decodes for `run`:
/// lines are judged in the order they were read, so the result is the same as decoding in
/// turn.
pub fn scan_sources(
    sources: &mut [ScanSource],
    ctx: &mut crate::context::ContextStore,
    pipeline: &mut Pipeline<'_>,
    sinks: &mut Sinks<'_>,
) -> Result<ScanSummary, ScanError> {
    let started = Instant::now();
    let mut sum = ScanSummary {
        store_enabled: sinks.store.is_some(),
        ..ScanSummary::default()
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(DECODED_QUEUE);
    std::thread::scope(|scope| -> Result<(), ScanError> {
        let decoding = std::thread::Builder::new()
            .name("scan-decode".into())
            .spawn_scoped(scope, move || decode_ahead(sources, tx))
            .map_err(ScanError::Thread)?;
        // Should judging stop early, `rx` is dropped and the decoder ends at its next send.
        let judged = judge_all(rx, ctx, pipeline, sinks, &mut sum);
        let read = decoding
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        judged?;
        (sum.files, sum.lines) = read?;
        Ok(())
    })?;
    sinks.findings.flush().map_err(ScanError::Write)?;
    sum.unknown_users = pipeline.enricher.stats.unknown_users;
    sum.unknown_patients = pipeline.enricher.stats.unknown_patients;
    sum.cedar_evaluations = pipeline.detector.stats.evaluations;
    sum.cedar_errors = pipeline.detector.stats.eval_errors;
    sum.elapsed = started.elapsed();
    Ok(sum)
}

/// Reads and decodes every file of every source in order; returns the files and non-blank
/// lines read. Stops quietly when the judging side has gone.
fn decode_ahead(
    sources: &mut [ScanSource],
    tx: std::sync::mpsc::SyncSender<Decoded>,
) -> Result<(usize, u64), ScanError> {
    let (mut files, mut lines) = (0usize, 0u64);
    let mut line = Vec::with_capacity(4096);
    for src in sources.iter_mut() {
        let max_line = src.max_line_bytes;
        for path in &src.paths {
            let read_err = |source| ScanError::Read {
                path: path.display().to_string(),
                source,
            };
            let file = std::fs::File::open(path).map_err(read_err)?;
            let key = {
                use std::os::unix::fs::MetadataExt as _;
                let m = file.metadata().map_err(read_err)?;
                (m.dev(), m.ino())
            };
            src.decoder.forget(key);
            files += 1;
            if tx
                .send(Decoded::File(path.display().to_string().into()))
                .is_err()
            {
                return Ok((files, lines));
            }
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let mut line_no = 0u64;
            let mut chunk = Vec::with_capacity(DECODED_CHUNK);
            loop {
                let read = read_line_bounded(&mut reader, &mut line, max_line).map_err(read_err)?;
                if read == LineRead::Eof {
                    break;
                }
                line_no += 1;
                if line.trim_ascii().is_empty() {
                    continue;
                }
                lines += 1;
                let decoded = match read {
                    LineRead::TooLong(n) => Err(LineError::TooLong {
                        bytes: n,
                        max: max_line,
                    }),
                    _ => {
                        match crate::quarantine::contain(|| src.decoder.decode(path, key, &line)) {
                            Ok(r) => r.map_err(LineError::from),
                            Err(_) => Err(LineError::Panicked),
                        }
                    }
                };
                chunk.push((line_no, decoded));
                if chunk.len() == DECODED_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(DECODED_CHUNK));
                    if tx.send(Decoded::Lines(full)).is_err() {
                        return Ok((files, lines));
                    }
                }
            }
            if !chunk.is_empty() && tx.send(Decoded::Lines(chunk)).is_err() {
                return Ok((files, lines));
            }
        }
    }
    Ok((files, lines))
}

/// Judges decoded lines in order, storing and emitting a batch at a time.
fn judge_all(
    rx: std::sync::mpsc::Receiver<Decoded>,
    ctx: &mut crate::context::ContextStore,
    pipeline: &mut Pipeline<'_>,
    sinks: &mut Sinks<'_>,
    sum: &mut ScanSummary,
) -> Result<(), ScanError> {
    let mut batch = Judged::default();
    let mut path: std::sync::Arc<str> = "".into();
    for message in rx {
        let lines = match message {
            Decoded::File(p) => {
                path = p;
                continue;
            }
            Decoded::Lines(lines) => lines,
        };
        for (line_no, decoded) in lines {
            let judged = decoded.map(|item| match item {
                crate::decode::Item::Access(ev) => {
                    pipeline.judge(ctx, ev, &mut batch);
                    LineKind::Access
                }
                crate::decode::Item::Many { accesses, .. } => {
                    for ev in accesses {
                        pipeline.judge(ctx, ev, &mut batch);
                    }
                    LineKind::Access
                }
                _ => LineKind::NoPatient,
            });
            match judged {
                Ok(LineKind::Access) => sum.events += 1,
                Ok(LineKind::NoPatient) => sum.no_patient += 1,
                Err(e) => {
                    sum.bad_lines += 1;
                    let msg = format!("{path}:{line_no}: {e}");
                    if let Some(r) = sinks.rejects.as_deref_mut() {
                        writeln!(r, "{msg}").map_err(ScanError::Write)?;
                    }
                    if sum.problems.len() < MAX_REPORTED {
                        sum.problems.push(msg);
                    }
                }
            }
            if batch.accesses.len() >= BATCH {
                pipeline.finish(ctx, &mut batch);
                flush(&mut batch, sum, sinks)?;
            }
        }
    }
    pipeline.finish(ctx, &mut batch);
    flush(&mut batch, sum, sinks)
}

/// Store first, then emit: a finding on stdout is always also in the store.
fn flush(
    batch: &mut Judged,
    sum: &mut ScanSummary,
    sinks: &mut Sinks<'_>,
) -> Result<(), ScanError> {
    if let Some(store) = sinks.store.as_deref_mut() {
        let accesses: &[_] = if sinks.store_accesses {
            &batch.accesses
        } else {
            &[]
        };
        let grouping = match sinks.grouping {
            Some(r) => r.grouping_only(),
            None => crate::alert::Routing::default(),
        };
        let now = crate::time::now_ms();
        let (_, new_findings) =
            store.insert_batch_then(accesses, &batch.findings, |tx, fresh| {
                batch.write_plugin_state(tx)?;
                crate::alert::apply(tx, fresh, &grouping, chrono_tz::UTC, now).map(|_| ())
            })?;
        sum.stored_new += new_findings as u64;
    }
    for f in &batch.plugin_failures {
        *sum.plugin_failures.entry(f.plugin.clone()).or_default() += 1;
        if sum.plugin_failure_examples.len() < MAX_REPORTED {
            sum.plugin_failure_examples.push(format!(
                "{} ({}): {}",
                f.plugin,
                f.kind.as_str(),
                f.message.lines().next().unwrap_or("")
            ));
        }
    }
    for f in batch
        .findings
        .iter()
        .filter(|f| sinks.only_detector.is_none_or(|d| f.detector == d))
    {
        sum.findings += 1;
        *sum.by_category.entry(f.category.clone()).or_default() += 1;
        *sum.by_severity.entry(f.severity).or_default() += 1;
        serde_json::to_writer(&mut *sinks.findings, f).map_err(|e| ScanError::Write(e.into()))?;
        sinks.findings.write_all(b"\n").map_err(ScanError::Write)?;
    }
    batch.clear();
    Ok(())
}

/// Expands directories into their `*.ndjson` files, sorted; keeps files as given.
pub fn expand_event_paths(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_ndjson(f))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn is_ndjson(p: &Path) -> bool {
    p.is_file()
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("ndjson" | "jsonl")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_with_bounded_memory() {
        let data = format!("a\n{}\nb\n{}", "x".repeat(100), "y".repeat(50));
        let mut r = std::io::BufReader::with_capacity(16, data.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut r, &mut buf, 10).unwrap() {
                LineRead::Eof => break,
                x => got.push((x, buf.len())),
            }
        }
        assert_eq!(
            got,
            [
                (LineRead::Line, 1),
                (LineRead::TooLong(100), 10),
                (LineRead::Line, 1),
                (LineRead::TooLong(50), 10)
            ]
        );
        // An endless stream without a newline holds only `max` bytes.
        let mut zeros = std::io::BufReader::new(std::io::Read::take(std::io::repeat(0), 1 << 24));
        assert_eq!(
            read_line_bounded(&mut zeros, &mut buf, 1024).unwrap(),
            LineRead::TooLong(1 << 24)
        );
        assert_eq!(buf.len(), 1024);
    }
}
