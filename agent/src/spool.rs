//! A source's on-disk spool: listeners and watchers append records here, and the same tailer
//! that reads log files reads them back with checkpoints. A message is therefore durable as
//! soon as it is received, a restart resumes where detection stopped, and a slow detector
//! makes the spool grow on disk instead of the agent's memory.
//!
//! One record per line: line breaks inside a record become spaces (XML and JSON treat them
//! alike). The active file `NAME.log` is renamed to `NAME.log.<millis>` when it passes the
//! size limit; the tailer reads the renamed file to its end and then deletes it.
//!
//! The spool has a cap on the bytes it holds on disk (active and rotated files): when
//! detection falls that far behind, [`Spool::append`] refuses with [`Full`] instead of
//! filling the disk. Stream receivers then stop reading (the sender's TCP window closes, so
//! nothing is lost); datagrams cannot wait and are dropped, counted and alarmed on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Bytes a spool may hold on disk before it refuses records.
pub const DEFAULT_CAP_BYTES: u64 = 1 << 30;

use std::sync::atomic::AtomicU64;

/// What a listener or watcher took into its spool, for `/metrics`.
#[derive(Default)]
pub struct IntakeMetrics {
    pub received: AtomicU64,
    pub rejected: AtomicU64,
    pub connections: AtomicU64,
    /// Connections closed on arrival because the listener was at its cap.
    pub refused: std::sync::Arc<AtomicU64>,
    /// Connections closed for sending nothing, or not finishing a frame, in time.
    pub timeouts: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Records dropped because the spool was at its cap (datagrams only).
    pub spool_dropped: AtomicU64,
    /// Bytes the spool holds on disk, and 1 while it is at its cap or its disk is full.
    pub spool_bytes: AtomicU64,
    pub spool_full: std::sync::atomic::AtomicBool,
    /// Datagrams the kernel dropped for this socket (`/proc/net/udp*` drops), and the
    /// socket's inode to find them by.
    pub udp_inode: AtomicU64,
}

/// The spool is at its cap: detection is that far behind.
#[derive(Debug, thiserror::Error)]
#[error("spool {path} holds {bytes} bytes, its cap: detection is behind")]
pub struct Full {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Full(#[from] Full),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Spool {
    active: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    /// Records appended, and how many of them a completed fsync covers.
    appended: u64,
    synced: u64,
    cap_bytes: u64,
    /// Bytes of rotated segments not yet deleted, as of the last look.
    rotated_bytes: u64,
    /// The size of the last record refused at the cap (0 once one is taken again).
    refused_len: u64,
    /// The last write failed for want of space on the disk (ENOSPC, EDQUOT).
    disk_full: bool,
    metrics: Option<std::sync::Arc<IntakeMetrics>>,
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
        let mut s = Spool {
            active,
            file,
            size,
            max_bytes,
            appended: 0,
            synced: 0,
            cap_bytes: DEFAULT_CAP_BYTES,
            rotated_bytes: 0,
            refused_len: 0,
            disk_full: false,
            metrics: None,
        };
        s.measure();
        Ok(s)
    }

    /// Sets the on-disk cap and the counters that report it.
    pub fn with_cap(mut self, cap_bytes: u64, metrics: std::sync::Arc<IntakeMetrics>) -> Self {
        self.cap_bytes = cap_bytes;
        // Segments small enough that deleting read ones frees the cap in steps.
        self.max_bytes = self.max_bytes.min((cap_bytes / 4).max(4096));
        self.metrics = Some(metrics);
        self.report();
        self
    }

    /// Bytes on disk: the active file and the rotated segments still there.
    pub fn bytes(&self) -> u64 {
        self.size + self.rotated_bytes
    }

    /// Looks at the rotated segments again (the tailer deletes them once read).
    fn measure(&mut self) {
        let Some(dir) = self.active.parent() else {
            return;
        };
        let Some(prefix) = self.active.file_name().map(|n| {
            let mut p = n.to_os_string();
            p.push(".");
            p
        }) else {
            return;
        };
        let prefix = prefix.to_string_lossy().into_owned();
        self.rotated_bytes = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        self.report();
    }

    fn report(&self) {
        if let Some(m) = &self.metrics {
            use std::sync::atomic::Ordering::Relaxed;
            m.spool_bytes.store(self.bytes(), Relaxed);
            // Full while the last refused record still would not fit: a periodic re-measure
            // must not report room that the records being refused do not have.
            m.spool_full.store(
                self.disk_full || self.bytes() + self.refused_len >= self.cap_bytes,
                Relaxed,
            );
        }
    }

    pub fn shared(self) -> SharedSpool {
        Arc::new(Mutex::new(self))
    }

    /// Appends one record as one line (a single write, so records never interleave).
    /// Refuses with [`AppendError::Full`] at the cap; nothing is written then.
    pub fn append(&mut self, record: &[u8]) -> Result<(), AppendError> {
        if self.bytes() + record.len() as u64 >= self.cap_bytes {
            // Detection may have deleted segments since the last look.
            self.measure();
            if self.bytes() + record.len() as u64 >= self.cap_bytes {
                self.refused_len = record.len() as u64;
                if let Some(m) = &self.metrics {
                    m.spool_full
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(AppendError::Full(Full {
                    path: self.active.display().to_string(),
                    bytes: self.bytes(),
                }));
            }
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend(
            record
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            // A short write (the disk filled mid-line) leaves part of the record: cut it off,
            // so the record written again later starts a line of its own.
            let _ = self.file.set_len(self.size);
            if is_disk_full(&e) {
                self.disk_full = true;
                self.report();
            }
            return Err(e.into());
        }
        self.size += line.len() as u64;
        self.appended += 1;
        self.refused_len = 0;
        if std::mem::take(&mut self.disk_full) {
            self.report();
        }
        if self.size >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Appends, waiting while the spool or its disk is full: for receivers that can hold the
    /// sender back (streams), so a full spool slows the sender instead of losing records.
    /// Gives up after `patience`.
    pub fn append_waiting(
        spool: &SharedSpool,
        record: &[u8],
        patience: std::time::Duration,
    ) -> Result<(), AppendError> {
        let until = std::time::Instant::now() + patience;
        loop {
            let r = spool
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))?
                .append(record);
            match r {
                Err(AppendError::Full(_)) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(AppendError::Io(e))
                    if is_disk_full(&e) && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
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
        self.synced = self.appended;
        if let Some(dir) = self.active.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.measure();
        Ok(())
    }

    /// Makes appended records survive a power loss (a process crash cannot lose them).
    /// Also refreshes the on-disk size, so the cap frees up as detection deletes segments.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.appended > self.synced {
            self.file.sync_data()?;
            self.synced = self.appended;
        }
        self.measure();
        Ok(())
    }

    /// [`Spool::sync`] for a spool receivers share, without holding the lock during the
    /// fsync: a receiver blocked for the fsync's milliseconds lets a UDP socket's buffer
    /// overflow (the kernel default holds about 100 datagrams of 1 KB).
    pub fn sync_shared(spool: &SharedSpool) -> std::io::Result<()> {
        let lock = || {
            spool
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))
        };
        let pending = {
            let s = lock()?;
            if s.appended > s.synced {
                // A second descriptor of the same open file: its fsync covers every write
                // made before it, through either descriptor.
                Some((s.appended, s.file.try_clone()?))
            } else {
                None
            }
        };
        if let Some((upto, file)) = pending {
            file.sync_data()?;
            let mut s = lock()?;
            s.synced = s.synced.max(upto);
        }
        lock()?.measure();
        Ok(())
    }

    pub fn active(&self) -> &Path {
        &self.active
    }
}

/// No space left on the device, or the user's quota is spent: space an operator can free,
/// after which the same write succeeds.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
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

    /// The receivers keep appending while a sync runs outside the lock: a sync covers what
    /// was appended before it began, and what came during it waits for the next one.
    #[test]
    fn a_shared_sync_lets_receivers_append_and_covers_what_came_before() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path(), "udp", 1 << 20).unwrap().shared();
        let pending = |s: &SharedSpool| {
            let s = s.lock().unwrap();
            s.appended - s.synced
        };
        spool.lock().unwrap().append(b"one").unwrap();
        assert_eq!(pending(&spool), 1);
        let appender = {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    spool.lock().unwrap().append(b"more").unwrap();
                }
            })
        };
        for _ in 0..5 {
            Spool::sync_shared(&spool).unwrap();
        }
        appender.join().unwrap();
        Spool::sync_shared(&spool).unwrap();
        assert_eq!(pending(&spool), 0);
        let s = spool.lock().unwrap();
        assert_eq!(s.appended, 2_001);
        assert_eq!(
            std::fs::read(s.active()).unwrap().len(),
            4 + 2_000 * 5,
            "every record on disk once"
        );
    }

    #[test]
    fn a_full_spool_refuses_until_segments_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let m = std::sync::Arc::new(IntakeMetrics::default());
        let mut s = Spool::open(d.path(), "udp", 100)
            .unwrap()
            .with_cap(240, m.clone());
        let rec = [b'x'; 49];
        for _ in 0..4 {
            s.append(&rec).unwrap();
        }
        // 200 bytes on disk (two rotated segments of 100): the next record passes the cap.
        assert!(matches!(s.append(&rec), Err(AppendError::Full(_))));
        assert!(m.spool_full.load(std::sync::atomic::Ordering::Relaxed));
        // A periodic re-measure while records are still refused keeps saying so.
        s.sync().unwrap();
        assert!(m.spool_full.load(std::sync::atomic::Ordering::Relaxed));
        // Detection catches up and deletes the segments.
        for e in std::fs::read_dir(d.path()).unwrap() {
            let p = e.unwrap().path();
            if p != s.active() {
                std::fs::remove_file(p).unwrap();
            }
        }
        s.append(&rec).unwrap();
        s.sync().unwrap();
        assert!(!m.spool_full.load(std::sync::atomic::Ordering::Relaxed));
    }
}
