//! Poison lines: no input may kill a source's worker, or the agent, for good.
//!
//! A line whose decoding panics is caught and quarantined at once. A line that aborts the
//! process (a stack overflow cannot be caught) is found on the next start: before decoding
//! a chunk the source writes a *marker* naming the chunk's byte range, and removes it once
//! the chunk is decoded. A marker left behind means the process died decoding that range;
//! the restarted source then decodes that range one line at a time, writing the line's
//! offset to the marker before each. If it dies again, the marker names the exact line, and
//! the third start quarantines that line without decoding it. So a poison message already
//! in a spool costs at most two restarts, never a crash loop, and nothing else is lost.
//!
//! Quarantined lines and bad lines are appended to `data_dir/rejects/<source>.ndjson`
//! (path, line number, offset, reason and the bytes, capped) so an operator can see what
//! was skipped and replay it once fixed. The rejects file is rotated once at its size limit
//! (`.1`); it holds PHI like the spool and is created with the agent's 0077 umask.
//!
//! The marker is written without fsync: it guards against a process dying, which keeps the
//! page cache; a power loss is not a poison line.

use crate::tail::{Chunk, FileKey};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Bytes of a rejected line kept in the rejects file.
const KEEP_BYTES: usize = 64 << 10;
/// Size at which the rejects file is rotated.
const REJECTS_MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    key: FileKey,
    start: u64,
    end: u64,
    /// Set while decoding one line at a time: the offset of the line being decoded.
    line: Option<u64>,
}

/// What a line is to the quarantine before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Decode,
    /// The process died decoding this very line before: skip it.
    Poison,
}

/// One rejected line, as written to the rejects file.
#[derive(Serialize)]
struct Reject<'a> {
    at: String,
    path: String,
    line: u64,
    offset: u64,
    reason: &'a str,
    bytes: usize,
    /// The line (lossy UTF-8), cut at 64 KiB.
    data: String,
}

pub struct Quarantine {
    marker: PathBuf,
    rejects: PathBuf,
    /// A range the previous process died in, decoded line by line.
    suspect: Option<Marker>,
    /// The line the previous process died on.
    poison: Option<(FileKey, u64)>,
    /// Whether the current chunk is decoded line by line.
    per_line: bool,
}

impl Quarantine {
    /// Reads a marker left by a process that died decoding.
    pub fn open(marker: PathBuf, rejects: PathBuf) -> Self {
        let left: Option<Marker> = std::fs::read(&marker)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (suspect, poison) = match left {
            Some(m @ Marker { line: None, .. }) => {
                tracing::warn!(marker = %marker.display(), "the agent stopped while decoding; that range is decoded line by line to find a poison line");
                (Some(m), None)
            }
            Some(Marker {
                key,
                line: Some(at),
                ..
            }) => {
                tracing::error!(marker = %marker.display(), offset = at, "the agent died decoding one line; it is quarantined");
                (None, Some((key, at)))
            }
            None => (None, None),
        };
        Quarantine {
            marker,
            rejects,
            suspect,
            poison,
            per_line: false,
        }
    }

    /// Call before decoding a chunk.
    pub fn begin(&mut self, chunk: &Chunk) {
        self.per_line = self
            .suspect
            .is_some_and(|m| m.key == chunk.key && chunk.start < m.end && m.start < chunk.end)
            || self
                .poison
                .is_some_and(|(k, at)| k == chunk.key && (chunk.start..chunk.end).contains(&at));
        if !self.per_line {
            self.write(Marker {
                key: chunk.key,
                start: chunk.start,
                end: chunk.end,
                line: None,
            });
        }
    }

    /// Call before decoding the line at `offset` of the chunk.
    pub fn line(&mut self, chunk: &Chunk, offset: u64) -> Verdict {
        if self.poison == Some((chunk.key, offset)) {
            self.poison = None;
            return Verdict::Poison;
        }
        if self.per_line {
            self.write(Marker {
                key: chunk.key,
                start: chunk.start,
                end: chunk.end,
                line: Some(offset),
            });
        }
        Verdict::Decode
    }

    /// Call after the chunk is decoded: its range is no longer suspect.
    pub fn end(&mut self, chunk: &Chunk) {
        if self
            .suspect
            .is_some_and(|m| m.key == chunk.key && chunk.end >= m.end)
        {
            self.suspect = None;
        }
        self.per_line = false;
        if let Err(e) = std::fs::remove_file(&self.marker) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(marker = %self.marker.display(), "removing the decode marker: {e}");
            }
        }
    }

    fn write(&self, m: Marker) {
        let body = serde_json::to_vec(&m).unwrap_or_default();
        let written = self
            .marker
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&self.marker, body));
        if let Err(e) = written {
            tracing::warn!(marker = %self.marker.display(), "writing the decode marker: {e}");
        }
    }

    /// Appends a rejected line to the rejects file. Failures are logged, never fatal.
    pub fn reject(&self, path: &Path, line_no: u64, offset: u64, reason: &str, line: &[u8]) {
        let r = Reject {
            at: crate::time::format_ms(crate::time::now_ms()),
            path: path.display().to_string(),
            line: line_no,
            offset,
            reason,
            bytes: line.len(),
            data: String::from_utf8_lossy(&line[..line.len().min(KEEP_BYTES)]).into_owned(),
        };
        if let Err(e) = append_rejects(&self.rejects, &r) {
            tracing::warn!(rejects = %self.rejects.display(), "writing a rejected line: {e}");
        }
    }

    pub fn rejects_path(&self) -> &Path {
        &self.rejects
    }
}

fn append_rejects(path: &Path, r: &Reject<'_>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= REJECTS_MAX_BYTES) {
        std::fs::rename(path, path.with_extension("ndjson.1"))?;
    }
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&line)
}

/// A panic caught by [`contain`], with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Panicked(pub String);

/// Runs `f`, turning a panic into `Err(message)`. A panic inside a decoder must cost one
/// line, not the source's thread.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        Panicked(
            p.downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: u64, end: u64) -> Chunk {
        Chunk::for_test(FileKey { dev: 1, ino: 2 }, start, end)
    }

    #[test]
    fn a_death_mid_chunk_narrows_to_the_line_then_skips_it() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("cp/src.decoding");
        let rejects = d.path().join("rejects/src.ndjson");
        let c = chunk(100, 400);
        // First life: dies while decoding the chunk (the marker stays).
        let mut q = Quarantine::open(marker.clone(), rejects.clone());
        q.begin(&c);
        assert_eq!(q.line(&c, 100), Verdict::Decode);
        assert!(marker.exists());
        // Second life: the chunk is decoded line by line; dies on the line at 250.
        let mut q = Quarantine::open(marker.clone(), rejects.clone());
        q.begin(&c);
        assert_eq!(q.line(&c, 100), Verdict::Decode);
        assert_eq!(q.line(&c, 250), Verdict::Decode);
        // Third life: that line is poison, the others decode, the marker goes.
        let mut q = Quarantine::open(marker.clone(), rejects.clone());
        q.begin(&c);
        assert_eq!(q.line(&c, 100), Verdict::Decode);
        assert_eq!(q.line(&c, 250), Verdict::Poison);
        assert_eq!(q.line(&c, 300), Verdict::Decode);
        q.end(&c);
        assert!(!marker.exists());
        // A fourth life has nothing left over.
        let mut q = Quarantine::open(marker.clone(), rejects);
        q.begin(&c);
        assert_eq!(q.line(&c, 250), Verdict::Decode);
    }

    #[test]
    fn rejects_keep_the_place_and_the_bytes() {
        let d = tempfile::tempdir().unwrap();
        let q = Quarantine::open(d.path().join("m"), d.path().join("r/src.ndjson"));
        q.reject(
            Path::new("/spool/a.log"),
            7,
            512,
            "XML nests too deep",
            b"<a><a>",
        );
        let text = std::fs::read_to_string(q.rejects_path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["line"], 7);
        assert_eq!(v["offset"], 512);
        assert_eq!(v["data"], "<a><a>");
    }

    #[test]
    fn panics_are_contained() {
        assert_eq!(contain(|| 3), Ok(3));
        let e = contain(|| -> u8 { panic!("bad {}", "input") }).unwrap_err();
        assert_eq!(e.0, "bad input");
    }
}
