//! A source's on-disk spool: listeners and watchers append records here, and the same tailer
//! that reads log files reads them back with checkpoints. A message is therefore durable as
//! soon as it is received, a restart resumes where detection stopped, and a slow detector
//! makes the spool grow on disk instead of the agent's memory.
//!
//! One record per line: line breaks inside a record become spaces (XML and JSON treat them
//! alike). The active file `NAME.log` is renamed to `NAME.log.<millis>` when it passes the
//! size limit; the tailer reads the renamed file to its end and then deletes it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// What a listener or watcher took into its spool, for `/metrics`.
#[derive(Default)]
pub struct IntakeMetrics {
    pub received: std::sync::atomic::AtomicU64,
    pub rejected: std::sync::atomic::AtomicU64,
    pub connections: std::sync::atomic::AtomicU64,
}

pub struct Spool {
    active: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    dirty: bool,
}

pub type SharedSpool = Arc<Mutex<Spool>>;

impl Spool {
    pub fn active_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.log"))
    }

    /// The glob the source's tailer follows: the active file and its rotated segments.
    pub fn pattern(dir: &Path, name: &str) -> String {
        format!(
            "{}*",
            glob::Pattern::escape(&Self::active_path(dir, name).display().to_string())
        )
    }

    pub fn open(dir: &Path, name: &str, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let active = Self::active_path(dir, name);
        let file = OpenOptions::new().create(true).append(true).open(&active)?;
        let size = file.metadata()?.len();
        Ok(Spool {
            active,
            file,
            size,
            max_bytes,
            dirty: false,
        })
    }

    pub fn shared(self) -> SharedSpool {
        Arc::new(Mutex::new(self))
    }

    /// Appends one record as one line (a single write, so records never interleave).
    pub fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend(
            record
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        self.dirty = true;
        if self.size >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        let stamp = chrono::Utc::now().timestamp_millis();
        let mut rotated = self.active.with_extension(format!("log.{stamp}"));
        let mut n = 0;
        while rotated.exists() {
            n += 1;
            rotated = self.active.with_extension(format!("log.{stamp}-{n}"));
        }
        std::fs::rename(&self.active, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.active)?;
        self.size = 0;
        self.dirty = false;
        if let Some(dir) = self.active.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Makes appended records survive a power loss (a process crash cannot lose them).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn active(&self) -> &Path {
        &self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_lines_and_rotate() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), "atna", 40).unwrap();
        s.append(b"<a>\n  <b/>\r\n</a>").unwrap();
        assert_eq!(std::fs::read(s.active()).unwrap(), b"<a>   <b/>  </a>\n");
        s.append(b"0123456789012345678901234567890").unwrap();
        s.sync().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[0], "atna.log");
        assert!(names[1].starts_with("atna.log."), "{names:?}");
        assert_eq!(std::fs::read(s.active()).unwrap(), b"");
        let pattern = Spool::pattern(d.path(), "atna");
        assert_eq!(glob::glob(&pattern).unwrap().count(), 2);
    }
}
