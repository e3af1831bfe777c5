//! File tailing with durable checkpoints, in the manner of log shippers.
//!
//! A file is known by device + inode *and* a SHA-256 fingerprint of its first bytes, so a
//! recycled inode is never mistaken for the file it replaced. Tracking follows the inode, not
//! the path: a file renamed by rotation keeps being read through its open handle until it has
//! been read to the end and no glob matches it any more. A file that shrinks below the read
//! offset was truncated in place (copytruncate) and is read again from the start. Only whole
//! lines are handed out; a partial last line waits for its newline.
//!
//! Offsets advance only through [`Tailer::commit`], which the caller invokes after the batch's
//! results are stored; checkpoints are written atomically (temp file, fsync, rename, fsync dir).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Bytes of a file's start that identify it.
const FINGERPRINT_LEN: u64 = 1024;

#[derive(Debug, Error)]
pub enum TailError {
    #[error("glob {pattern:?}: {message}")]
    Glob { pattern: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "checkpoint file {path} is corrupt: {message}. Restore it from a backup, or move it \
         aside to read every file again from the start (stored accesses and findings are \
         keyed by event id and are not stored twice)"
    )]
    Checkpoint { path: String, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TailError + '_ {
    move |source| TailError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub key: FileKey,
    pub path: String,
    pub offset: u64,
    /// Lines before `offset`, for line numbers in bad-line reports.
    pub line: u64,
    pub head_len: u64,
    pub head_sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<Checkpoint>,
}

struct Tracked {
    path: PathBuf,
    file: File,
    /// Committed offset: everything before it is stored.
    offset: u64,
    line: u64,
    /// The first bytes as read (up to the fingerprint length): the committed fingerprint is
    /// computed from these, never by reading the file again, which may have been truncated
    /// and rewritten since.
    read_head: Vec<u8>,
    /// Incremented when the file is found truncated: chunks read before belong to old bytes.
    generation: u64,
    /// Read cursor, ahead of the committed offset while chunks are being judged.
    read_offset: u64,
    read_line: u64,
    head_len: u64,
    head: String,
    /// Polls in a row at end of file while no glob matched this inode.
    orphan_polls: u32,
    /// A line longer than the limit is being skipped: where it starts, and how far the
    /// search for its end has got.
    skipping: Option<(u64, u64)>,
}

/// Lines read from one file, not yet committed.
#[derive(Debug)]
pub struct Chunk {
    pub key: FileKey,
    pub path: PathBuf,
    /// Line number (1-based) of the first line.
    pub first_line: u64,
    /// Offset of the first line.
    pub start: u64,
    pub lines: Vec<Vec<u8>>,
    /// The chunk is one line longer than the line limit, of this many bytes (without its
    /// newline); `lines` holds only its first bytes. It is reported once, as one bad line.
    pub oversized: Option<u64>,
    /// How many lines were read (kept when `lines` is moved out for processing).
    pub n_lines: u64,
    /// Offset just past the last whole line.
    pub end: u64,
    /// Fingerprint of the file's first bytes as read up to `end`.
    head_len: u64,
    head: String,
    generation: u64,
}

#[cfg(test)]
impl Chunk {
    /// An empty chunk over a byte range, for tests of what consumes chunks.
    pub fn for_test(key: FileKey, start: u64, end: u64) -> Self {
        Chunk {
            key,
            path: PathBuf::from("test.log"),
            first_line: 1,
            start,
            lines: Vec::new(),
            oversized: None,
            n_lines: 0,
            end,
            head_len: 0,
            head: String::new(),
            generation: 0,
        }
    }
}

pub struct Tailer {
    patterns: Vec<String>,
    /// Where [`Tailer::save`] writes; `None` when the caller keeps the checkpoint itself
    /// ([`Tailer::checkpoint`]: fleet mode's collectors commit it with the batch).
    checkpoint_path: Option<PathBuf>,
    files: HashMap<FileKey, Tracked>,
    saved: HashMap<FileKey, Checkpoint>,
    max_chunk_bytes: usize,
    max_line_bytes: usize,
}

fn parse_checkpoint(bytes: &[u8], label: &str) -> Result<HashMap<FileKey, Checkpoint>, TailError> {
    let cf: CheckpointFile = serde_json::from_slice(bytes).map_err(|e| TailError::Checkpoint {
        path: label.to_owned(),
        message: e.to_string(),
    })?;
    Ok(cf.files.into_iter().map(|c| (c.key, c)).collect())
}

/// The first `len` bytes, or `None` when the file is shorter.
fn read_prefix(file: &mut File, len: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(0))?;
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    Ok(Some(buf))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tailer {
    /// Lines longer than `max_line_bytes` are handed out as one oversized line each.
    pub fn new(
        patterns: Vec<String>,
        checkpoint_path: PathBuf,
        max_chunk_bytes: usize,
        max_line_bytes: usize,
    ) -> Result<Self, TailError> {
        let saved = match std::fs::read(&checkpoint_path) {
            Ok(bytes) => parse_checkpoint(&bytes, &checkpoint_path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(io_err(&checkpoint_path)(e)),
        };
        Tailer::with(
            patterns,
            Some(checkpoint_path),
            saved,
            max_chunk_bytes,
            max_line_bytes,
        )
    }

    /// A tailer resuming from a checkpoint the caller kept (`saved`, as [`Tailer::checkpoint`]
    /// wrote it; empty for a source never read). `label` names it in errors.
    pub fn resume(
        patterns: Vec<String>,
        saved: &str,
        label: &str,
        max_chunk_bytes: usize,
        max_line_bytes: usize,
    ) -> Result<Self, TailError> {
        let saved = match saved.is_empty() {
            true => HashMap::new(),
            false => parse_checkpoint(saved.as_bytes(), label)?,
        };
        Tailer::with(patterns, None, saved, max_chunk_bytes, max_line_bytes)
    }

    fn with(
        patterns: Vec<String>,
        checkpoint_path: Option<PathBuf>,
        saved: HashMap<FileKey, Checkpoint>,
        max_chunk_bytes: usize,
        max_line_bytes: usize,
    ) -> Result<Self, TailError> {
        for p in &patterns {
            glob::Pattern::new(p).map_err(|e| TailError::Glob {
                pattern: p.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Tailer {
            patterns,
            checkpoint_path,
            files: HashMap::new(),
            saved,
            // A chunk always has room for a line of the limit and its newline.
            max_chunk_bytes: max_chunk_bytes.max(max_line_bytes + 1),
            max_line_bytes,
        })
    }

    fn matched_paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in &self.patterns {
            if let Ok(paths) = glob::glob(p) {
                out.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Discovers files, then reads whole lines from each (up to the chunk size per file).
    pub fn poll(&mut self) -> Result<Vec<Chunk>, TailError> {
        let mut seen = Vec::new();
        for path in self.matched_paths() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let key = FileKey {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            seen.push(key);
            if let Some(t) = self.files.get_mut(&key) {
                t.path = path;
                t.orphan_polls = 0;
                continue;
            }
            let Ok(mut file) = File::open(&path) else {
                continue;
            };
            // Resume only where the saved fingerprint still matches: same inode, same bytes.
            let mut start = (0, 0, 0, String::new());
            let mut read_head = Vec::new();
            if let Some(c) = self.saved.get(&key) {
                let prefix = read_prefix(&mut file, c.head_len).map_err(io_err(&path))?;
                if let Some(prefix) = prefix.filter(|p| sha256_hex(p) == c.head_sha256) {
                    if meta.len() >= c.offset {
                        start = (c.offset, c.line, c.head_len, c.head_sha256.clone());
                        read_head = prefix;
                    } else {
                        // Cut below the saved offset while the agent was down (or the
                        // checkpoint was restored from elsewhere): the bytes past the end are
                        // gone, so the file is read again; stored accesses and findings are
                        // keyed by event id and are not stored twice.
                        tracing::warn!(
                            path = %path.display(),
                            checkpoint = c.offset,
                            size = meta.len(),
                            "checkpoint points past the end of the file; reading it again from the start"
                        );
                    }
                }
            }
            self.files.insert(
                key,
                Tracked {
                    path,
                    file,
                    offset: start.0,
                    line: start.1,
                    read_offset: start.0,
                    read_line: start.1,
                    head_len: start.2,
                    head: start.3,
                    read_head,
                    generation: 0,
                    orphan_polls: 0,
                    skipping: None,
                },
            );
        }
        let mut chunks = Vec::new();
        let mut drop_keys = Vec::new();
        for (key, t) in self.files.iter_mut() {
            let len = t.file.metadata().map_err(io_err(&t.path))?.len();
            // Truncated in place, or truncated and rewritten past the old offset between two
            // polls: either way the first bytes are no longer the ones committed.
            // The bytes read so far (committed or in flight) are checked, not just the
            // committed ones: a chunk being judged must not be continued on new content.
            let rewritten = len < t.read_offset
                || (!t.read_head.is_empty()
                    && read_prefix(&mut t.file, t.read_head.len() as u64)
                        .map_err(io_err(&t.path))?
                        .as_deref()
                        != Some(t.read_head.as_slice()));
            if rewritten {
                tracing::info!(path = %t.path.display(), "file truncated in place; reading it again from the start");
                t.offset = 0;
                t.line = 0;
                t.read_offset = 0;
                t.read_line = 0;
                t.head_len = 0;
                t.head.clear();
                t.read_head.clear();
                t.generation += 1;
                t.skipping = None;
            }
            let chunk = read_lines(*key, t, len, self.max_chunk_bytes, self.max_line_bytes)?;
            // Dropped only once everything is committed, never with a chunk still in flight.
            let at_end = chunk.is_none() && t.offset >= len;
            if let Some(c) = chunk {
                chunks.push(c);
            }
            if !seen.contains(key) && at_end {
                t.orphan_polls += 1;
                // Two quiet polls: the writer has moved on to the new file.
                if t.orphan_polls >= 2 {
                    drop_keys.push(*key);
                }
            }
        }
        for k in drop_keys {
            self.files.remove(&k);
        }
        Ok(chunks)
    }

    /// Moves every read cursor back to its committed offset: the chunks read since are
    /// handed out again (after a failed store).
    pub fn rewind(&mut self) {
        for t in self.files.values_mut() {
            t.read_offset = t.offset;
            t.read_line = t.line;
            t.read_head.truncate(t.offset.min(FINGERPRINT_LEN) as usize);
            t.skipping = None;
        }
    }

    /// Marks a chunk's lines as stored. Call [`Tailer::save`] to make it durable.
    pub fn commit(&mut self, chunk: &Chunk) -> Result<(), TailError> {
        let Some(t) = self.files.get_mut(&chunk.key) else {
            return Ok(());
        };
        // A truncation seen since the chunk was read makes its offset meaningless.
        if chunk.generation != t.generation || chunk.first_line != t.line + 1 {
            return Ok(());
        }
        t.offset = chunk.end;
        t.line += chunk.n_lines;
        t.head_len = chunk.head_len;
        t.head = chunk.head.clone();
        Ok(())
    }

    /// Writes every tracked file's committed offset atomically.
    pub fn save(&mut self) -> Result<(), TailError> {
        let body = self.checkpoint();
        if let Some(path) = &self.checkpoint_path {
            write_atomically(path, body.as_bytes())?;
        }
        self.saved = self.committed().map(|c| (c.key, c)).collect();
        Ok(())
    }

    /// Every tracked file's committed offset, as [`Tailer::save`] writes it.
    pub fn checkpoint(&self) -> String {
        serde_json::to_string_pretty(&CheckpointFile {
            version: 1,
            files: self.committed().collect(),
        })
        .expect("checkpoints serialise")
    }

    fn committed(&self) -> impl Iterator<Item = Checkpoint> + '_ {
        self.files.iter().map(|(k, t)| Checkpoint {
            key: *k,
            path: t.path.display().to_string(),
            offset: t.offset,
            line: t.line,
            head_len: t.head_len,
            head_sha256: t.head.clone(),
        })
    }

    /// Bytes written to tracked files but not yet committed.
    pub fn lag_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|t| {
                t.file
                    .metadata()
                    .map(|m| m.len().saturating_sub(t.offset))
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Tracked files whose every byte is committed (paths as last seen).
    pub fn drained(&self) -> Vec<PathBuf> {
        self.files
            .values()
            .filter(|t| t.file.metadata().is_ok_and(|m| m.len() == t.offset))
            .map(|t| t.path.clone())
            .collect()
    }

    pub fn tracked(&self) -> usize {
        self.files.len()
    }
}

fn read_lines(
    key: FileKey,
    t: &mut Tracked,
    len: u64,
    max: usize,
    max_line: usize,
) -> Result<Option<Chunk>, TailError> {
    if t.skipping.is_some() {
        return skip_long_line(key, t, len, max_line);
    }
    if len <= t.read_offset {
        return Ok(None);
    }
    let want = ((len - t.read_offset) as usize).min(max);
    let mut buf = vec![0u8; want];
    t.file
        .seek(SeekFrom::Start(t.read_offset))
        .map_err(io_err(&t.path))?;
    let mut got = 0;
    while got < want {
        match t.file.read(&mut buf[got..]).map_err(io_err(&t.path))? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    let first_nl = buf.iter().position(|&b| b == b'\n');
    if first_nl.map_or(got > max_line, |p| p > max_line) {
        // The first line is over the limit: remember the file's head, keep the line's first
        // bytes for the report, and look for its end without holding the rest in memory.
        remember_head(t, &buf, t.read_offset + got as u64);
        t.skipping = Some((t.read_offset, t.read_offset));
        return skip_long_line(key, t, len, max_line);
    }
    let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok(None);
    };
    // Stop before any later line that is over the limit: it gets a chunk of its own.
    let mut cut = last_nl + 1;
    let mut at = 0;
    for (i, &b) in buf[..=last_nl].iter().enumerate() {
        if b == b'\n' {
            if i - at > max_line {
                cut = at;
                break;
            }
            at = i + 1;
        }
    }
    buf.truncate(cut);
    let end = t.read_offset + buf.len() as u64;
    let (head_len, head) = remember_head(t, &buf, end);
    let lines: Vec<Vec<u8>> = buf[..buf.len() - 1]
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let first_line = t.read_line + 1;
    let start = t.read_offset;
    t.read_offset = end;
    t.read_line += lines.len() as u64;
    Ok(Some(Chunk {
        key,
        path: t.path.clone(),
        first_line,
        start,
        n_lines: lines.len() as u64,
        lines,
        oversized: None,
        end,
        head_len,
        head,
        generation: t.generation,
    }))
}

/// Bytes searched for the end of an over-long line per poll, so one poll never stalls.
const SKIP_SCAN_PER_POLL: u64 = 64 << 20;

/// Looks for the newline that ends the over-long line starting at `t.skipping`. Once found,
/// the whole line is one chunk holding its first `max_line` bytes, flagged oversized.
fn skip_long_line(
    key: FileKey,
    t: &mut Tracked,
    len: u64,
    max_line: usize,
) -> Result<Option<Chunk>, TailError> {
    let Some((line_start, mut scanned)) = t.skipping else {
        return Ok(None);
    };
    let stop = len.min(scanned.saturating_add(SKIP_SCAN_PER_POLL));
    let mut block = vec![0u8; 64 << 10];
    t.file
        .seek(SeekFrom::Start(scanned))
        .map_err(io_err(&t.path))?;
    let mut newline = None;
    while scanned < stop {
        let want = block.len().min((stop - scanned) as usize);
        let n = t.file.read(&mut block[..want]).map_err(io_err(&t.path))?;
        if n == 0 {
            break;
        }
        if let Some(p) = block[..n].iter().position(|&b| b == b'\n') {
            newline = Some(scanned + p as u64);
            break;
        }
        scanned += n as u64;
    }
    let Some(nl) = newline else {
        t.skipping = Some((line_start, scanned));
        return Ok(None);
    };
    let mut first = vec![0u8; max_line.min((nl - line_start) as usize)];
    t.file
        .seek(SeekFrom::Start(line_start))
        .map_err(io_err(&t.path))?;
    t.file.read_exact(&mut first).map_err(io_err(&t.path))?;
    let end = nl + 1;
    let (head_len, head) = remember_head(t, &[], end);
    t.skipping = None;
    let first_line = t.read_line + 1;
    t.read_offset = end;
    t.read_line += 1;
    Ok(Some(Chunk {
        key,
        path: t.path.clone(),
        first_line,
        start: line_start,
        lines: vec![first],
        n_lines: 1,
        oversized: Some(nl - line_start),
        end,
        head_len,
        head,
        generation: t.generation,
    }))
}

/// Extends the bytes-as-read head with `buf` (read at `read_offset`, ending at `end`) and
/// returns the fingerprint a commit up to `end` records.
fn remember_head(t: &mut Tracked, buf: &[u8], end: u64) -> (u64, String) {
    let need = (FINGERPRINT_LEN as usize).saturating_sub(t.read_head.len());
    t.read_head.extend_from_slice(&buf[..need.min(buf.len())]);
    let head_len = end.min(FINGERPRINT_LEN);
    (
        head_len,
        sha256_hex(&t.read_head[..(head_len as usize).min(t.read_head.len())]),
    )
}

/// Temp file in the same directory, fsync, rename over the target, fsync the directory.
pub fn write_atomically(path: &Path, body: &[u8]) -> Result<(), TailError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(body).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut Tailer) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..4 {
            for c in t.poll().unwrap() {
                out.extend(
                    c.lines
                        .iter()
                        .map(|l| String::from_utf8_lossy(l).into_owned()),
                );
                t.commit(&c).unwrap();
            }
        }
        t.save().unwrap();
        out
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn tailer(dir: &Path) -> Tailer {
        Tailer::new(
            vec![format!("{}/app.log*", dir.display())],
            dir.join("state/checkpoints.json"),
            1 << 16,
            1 << 10,
        )
        .unwrap()
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        append(&log, "a\nb");
        let mut t = tailer(d.path());
        assert_eq!(drain(&mut t), ["a"]);
        append(&log, "c\n");
        assert_eq!(drain(&mut t), ["bc"]);
    }

    #[test]
    fn resumes_from_checkpoint_after_restart() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        append(&log, "1\n2\n");
        assert_eq!(drain(&mut tailer(d.path())), ["1", "2"]);
        append(&log, "3\n");
        assert_eq!(drain(&mut tailer(d.path())), ["3"]);
    }

    #[test]
    fn uncommitted_lines_are_read_again() {
        let d = tempfile::tempdir().unwrap();
        append(&d.path().join("app.log"), "1\n2\n");
        let mut t = tailer(d.path());
        assert_eq!(t.poll().unwrap()[0].lines.len(), 2);
        t.save().unwrap();
        assert_eq!(drain(&mut tailer(d.path())), ["1", "2"]);
    }

    #[test]
    fn rename_rotation_reads_old_file_to_end_then_new() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        append(&log, "1\n");
        let mut t = Tailer::new(
            vec![format!("{}/app.log", d.path().display())],
            d.path().join("cp.json"),
            1 << 16,
            1 << 10,
        )
        .unwrap();
        assert_eq!(drain(&mut t), ["1"]);
        append(&log, "2\n");
        std::fs::rename(&log, d.path().join("old.1")).unwrap();
        append(&log, "3\n");
        let mut got = drain(&mut t);
        got.sort();
        assert_eq!(got, ["2", "3"]);
        assert_eq!(t.tracked(), 1, "the rotated file is left once drained");
    }

    #[test]
    fn copytruncate_is_read_again_from_the_start() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        append(&log, "1\n2\n");
        let mut t = tailer(d.path());
        assert_eq!(drain(&mut t), ["1", "2"]);
        std::fs::File::create(&log).unwrap(); // truncate in place
        append(&log, "3\n");
        assert_eq!(drain(&mut t), ["3"]);
    }

    #[test]
    fn copytruncate_then_rewrite_past_old_offset_is_noticed() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        append(&log, "old-1\n");
        let mut t = tailer(d.path());
        assert_eq!(drain(&mut t), ["old-1"]);
        std::fs::File::create(&log).unwrap();
        append(&log, "new-1\nnew-2\n");
        assert_eq!(drain(&mut t), ["new-1", "new-2"]);
    }

    #[test]
    fn recycled_inode_with_new_content_is_a_new_file() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        append(&log, "first line\nsecond\n");
        drain(&mut tailer(d.path()));
        // Same inode (truncate + rewrite) but different bytes while the agent was down.
        std::fs::write(&log, "other line\nmore lines here\n").unwrap();
        assert_eq!(
            drain(&mut tailer(d.path())),
            ["other line", "more lines here"]
        );
    }

    #[test]
    fn long_lines_are_one_oversized_line_each_and_numbering_holds() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        let big = "x".repeat(5000);
        append(&log, &format!("a\n{big}\nb\n{big}"));
        let mut t = tailer(d.path());
        let mut seen = Vec::new();
        for _ in 0..4 {
            for c in t.poll().unwrap() {
                seen.push((c.first_line, c.oversized, c.n_lines, c.lines[0].len()));
                t.commit(&c).unwrap();
            }
        }
        // The second long line has no newline yet: it waits, unreported.
        assert_eq!(
            seen,
            [(1, None, 1, 1), (2, Some(5000), 1, 1024), (3, None, 1, 1)]
        );
        append(&log, "tail\nc\n");
        seen.clear();
        for _ in 0..3 {
            for c in t.poll().unwrap() {
                seen.push((c.first_line, c.oversized, c.n_lines, c.lines[0].len()));
                t.commit(&c).unwrap();
            }
        }
        assert_eq!(seen, [(4, Some(5004), 1, 1024), (5, None, 1, 1)]);
        t.save().unwrap();
        // A restart resumes after the long lines, at the right line number.
        append(&log, "d\n");
        let mut t2 = tailer(d.path());
        let c = t2.poll().unwrap();
        assert_eq!((c[0].first_line, c[0].lines.len()), (6, 1));
    }

    #[test]
    fn a_long_line_within_a_chunk_ends_the_chunk_before_it() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        append(&log, &format!("1\n2\n{}\n3\n", "y".repeat(3000)));
        let mut t = tailer(d.path());
        let mut got = Vec::new();
        for _ in 0..4 {
            for c in t.poll().unwrap() {
                got.push((c.first_line, c.n_lines, c.oversized));
                t.commit(&c).unwrap();
            }
        }
        assert_eq!(got, [(1, 2, None), (3, 1, Some(3000)), (4, 1, None)]);
    }

    #[test]
    fn checkpoint_write_is_atomic_and_readable() {
        let d = tempfile::tempdir().unwrap();
        append(&d.path().join("app.log"), "x\n");
        let mut t = tailer(d.path());
        drain(&mut t);
        let cp: CheckpointFile = serde_json::from_slice(
            &std::fs::read(d.path().join("state/checkpoints.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cp.files.len(), 1);
        assert_eq!(cp.files[0].offset, 2);
        assert!(!d.path().join("state/checkpoints.tmp").exists());
    }
}
