//! PHI folder watching with `notify` (inotify on Linux).
//!
//! Changes become [`FileEvent`]s in the source's spool: created, modified (a file closed after
//! writing), renamed, deleted (or moved out), permissions widened, and bursts — many distinct
//! files opened for reading (copied out) or deleted within the burst window.
//!
//! The owner is the file's owning account as the platform reports it; inotify cannot say which
//! process acted. A snapshot of every watched file (owner, mode, size, mtime) is kept in the
//! data directory, so changes made while the agent was stopped are reported at start-up.

use crate::config::FolderSource;
use crate::event::{FileChange, FileEvent};
use crate::spool::{IntakeMetrics, SharedSpool};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A file written within this long after it was created is reported once, as created.
const QUIET_AFTER_CREATE: Duration = Duration::from_secs(2);
const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    uid: u32,
    mode: u32,
    size: u64,
    mtime_ns: i128,
}

impl Seen {
    fn of(meta: &std::fs::Metadata) -> Self {
        Seen {
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Why a folder watcher cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("source {source_name:?}: {path} is not a directory")]
    NotDir { source_name: String, path: String },
    #[error("starting the file watcher: {0}")]
    Start(notify::Error),
    #[error("source {source_name:?}: watching {path}: {error}")]
    Watch {
        source_name: String,
        path: String,
        error: notify::Error,
    },
    #[error("spool lock poisoned")]
    Poisoned,
    #[error("serialising: {0}")]
    Serialise(serde_json::Error),
    #[error("writing the spool: {0}")]
    Append(crate::spool::AppendError),
    #[error("syncing the spool: {0}")]
    Sync(std::io::Error),
    #[error("snapshot {path} is corrupt; move it away to start afresh: {error}")]
    CorruptSnapshot {
        path: String,
        error: serde_json::Error,
    },
    #[error("snapshot {path}: {error}")]
    Snapshot { path: String, error: std::io::Error },
    #[error("saving the folder snapshot: {0}")]
    Save(crate::tail::TailError),
}

pub struct FolderWatch {
    src: FolderSource,
    spool: SharedSpool,
    snapshot_path: PathBuf,
    known: HashMap<PathBuf, Seen>,
    created: HashMap<PathBuf, Instant>,
    written: HashMap<PathBuf, Instant>,
    opened: VecDeque<(Instant, PathBuf)>,
    deleted: VecDeque<(Instant, PathBuf, u32)>,
    seq: u64,
    users: HashMap<u32, String>,
    metrics: Arc<IntakeMetrics>,
}

impl FolderWatch {
    pub fn new(
        src: FolderSource,
        spool: SharedSpool,
        snapshot_path: PathBuf,
        metrics: Arc<IntakeMetrics>,
    ) -> Result<Self, WatchError> {
        for p in &src.paths {
            if !p.is_dir() {
                return Err(WatchError::NotDir {
                    source_name: src.name.clone(),
                    path: p.display().to_string(),
                });
            }
        }
        Ok(FolderWatch {
            src,
            spool,
            snapshot_path,
            known: HashMap::new(),
            created: HashMap::new(),
            written: HashMap::new(),
            opened: VecDeque::new(),
            deleted: VecDeque::new(),
            seq: 0,
            users: HashMap::new(),
            metrics,
        })
    }

    /// Watches until `stop` is set. The watch is registered before the start-up scan, so a
    /// change racing the scan is reported rather than lost.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> Result<(), WatchError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).map_err(WatchError::Start)?;
        let mode = if self.src.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        for p in &self.src.paths {
            watcher.watch(p, mode).map_err(|error| WatchError::Watch {
                source_name: self.src.name.clone(),
                path: p.display().to_string(),
                error,
            })?;
        }
        self.catch_up()?;
        let mut last_snapshot = Instant::now();
        let mut dirty = false;
        while !stop.load(Ordering::SeqCst) {
            let mut events = Vec::new();
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => {
                    events.push(ev);
                    events.extend(rx.try_iter());
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let mut out = Vec::new();
            for ev in events {
                match ev {
                    Ok(ev) => self.handle(ev, &mut out),
                    Err(e) => {
                        self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                        // The error's paths may name patients (PHI folders): log its kind only.
                        tracing::warn!(source = %self.src.name, "watch error: {:?}", e.kind);
                    }
                }
            }
            self.bursts(&mut out);
            if !out.is_empty() {
                dirty = true;
                self.write(&out)?;
            }
            if dirty && last_snapshot.elapsed() >= SNAPSHOT_EVERY {
                self.save_snapshot()?;
                last_snapshot = Instant::now();
                dirty = false;
            }
        }
        self.save_snapshot()
    }

    fn write(&mut self, events: &[FileEvent]) -> Result<(), WatchError> {
        let mut spool = self.spool.lock().map_err(|_| WatchError::Poisoned)?;
        for e in events {
            let line = serde_json::to_vec(e).map_err(WatchError::Serialise)?;
            spool.append(&line).map_err(WatchError::Append)?;
        }
        spool.sync().map_err(WatchError::Sync)?;
        self.metrics
            .received
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn event(&mut self, change: FileChange, path: &Path, seen: Option<Seen>) -> FileEvent {
        self.seq += 1;
        let now = chrono::Utc::now();
        let owner = seen.map(|s| self.user_name(s.uid)).unwrap_or_default();
        FileEvent {
            id: format!(
                "{}:{}:{}",
                self.src.name,
                now.timestamp_nanos_opt().unwrap_or(0),
                self.seq
            ),
            time_ms: now.timestamp_millis(),
            change,
            path: path.display().to_string(),
            to_path: String::new(),
            owner,
            mode: seen.map_or(0, |s| s.mode),
            old_mode: 0,
            count: 1,
            window_seconds: 0,
        }
    }

    fn user_name(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| user_name(uid))
            .clone()
    }

    fn handle(&mut self, ev: notify::Event, out: &mut Vec<FileEvent>) {
        let now = Instant::now();
        match ev.kind {
            EventKind::Create(CreateKind::Folder) => {
                for p in &ev.paths {
                    self.scan_new_dir(p, out);
                }
            }
            EventKind::Create(_) => {
                for p in &ev.paths {
                    self.created_or_moved_in(p, now, out);
                }
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for p in &ev.paths {
                    self.written.insert(p.clone(), now);
                    let fresh = self
                        .created
                        .get(p)
                        .is_some_and(|t| now.duration_since(*t) < QUIET_AFTER_CREATE);
                    let Ok(meta) = std::fs::symlink_metadata(p) else {
                        continue;
                    };
                    let seen = Seen::of(&meta);
                    self.known.insert(p.clone(), seen);
                    if !fresh {
                        let e = self.event(FileChange::Modified, p, Some(seen));
                        out.push(e);
                    }
                }
            }
            EventKind::Access(AccessKind::Open(_)) => {
                for p in &ev.paths {
                    if self.known.contains_key(p) {
                        self.opened.push_back((now, p.clone()));
                    }
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
                let (from, to) = (&ev.paths[0], &ev.paths[1]);
                let seen = self
                    .known
                    .remove(from)
                    .or_else(|| std::fs::symlink_metadata(to).ok().map(|m| Seen::of(&m)));
                if let Some(s) = seen {
                    self.known.insert(to.clone(), s);
                }
                let mut e = self.event(FileChange::Renamed, from, seen);
                e.to_path = to.display().to_string();
                out.push(e);
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                for p in &ev.paths {
                    self.created_or_moved_in(p, now, out);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                let dir_removed = matches!(ev.kind, EventKind::Remove(RemoveKind::Folder));
                for p in &ev.paths {
                    if dir_removed {
                        continue;
                    }
                    let seen = self.known.remove(p);
                    self.created.remove(p);
                    self.deleted
                        .push_back((now, p.clone(), seen.map_or(u32::MAX, |s| s.uid)));
                    let e = self.event(FileChange::Deleted, p, seen);
                    out.push(e);
                }
            }
            EventKind::Modify(ModifyKind::Metadata(_)) => {
                for p in &ev.paths {
                    let Ok(meta) = std::fs::symlink_metadata(p) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    let seen = Seen::of(&meta);
                    let before = self.known.insert(p.clone(), seen);
                    if let Some(old) = before.filter(|b| b.mode != seen.mode) {
                        let mut e = self.event(FileChange::Permissions, p, Some(seen));
                        e.old_mode = old.mode;
                        out.push(e);
                    }
                }
            }
            _ => {}
        }
    }

    fn created_or_moved_in(&mut self, p: &Path, now: Instant, out: &mut Vec<FileEvent>) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        if meta.is_dir() {
            self.scan_new_dir(p, out);
            return;
        }
        if !meta.is_file() {
            return;
        }
        let seen = Seen::of(&meta);
        self.known.insert(p.to_path_buf(), seen);
        self.created.insert(p.to_path_buf(), now);
        let e = self.event(FileChange::Created, p, Some(seen));
        out.push(e);
    }

    /// A directory created (or moved) into a watched tree: its files may predate the watch.
    fn scan_new_dir(&mut self, dir: &Path, out: &mut Vec<FileEvent>) {
        let now = Instant::now();
        let mut files = Vec::new();
        walk(dir, &mut files);
        for (p, seen) in files {
            if self.known.contains_key(&p) {
                continue;
            }
            self.known.insert(p.clone(), seen);
            self.created.insert(p.clone(), now);
            let e = self.event(FileChange::Created, &p, Some(seen));
            out.push(e);
        }
    }

    /// Emits a bulk event when a window holds enough distinct files, then starts the window
    /// afresh so one long copy yields one finding per `burst_files` files, not one per file.
    fn bursts(&mut self, out: &mut Vec<FileEvent>) {
        let now = Instant::now();
        let window = Duration::from_secs(u64::from(self.src.burst_seconds));
        let expired = |t: &Instant| now.duration_since(*t) > window;
        while self.opened.front().is_some_and(|(t, _)| expired(t)) {
            self.opened.pop_front();
        }
        while self.deleted.front().is_some_and(|(t, _, _)| expired(t)) {
            self.deleted.pop_front();
        }
        self.created.retain(|_, t| !expired(t));
        self.written.retain(|_, t| !expired(t));
        // An open that wrote (a copy into the folder, an edit) is not a read.
        let read: HashSet<&PathBuf> = self
            .opened
            .iter()
            .map(|(_, p)| p)
            .filter(|p| !self.created.contains_key(*p) && !self.written.contains_key(*p))
            .collect();
        if read.len() >= self.src.burst_files as usize {
            let uids: Vec<u32> = read
                .iter()
                .filter_map(|p| self.known.get(*p).map(|s| s.uid))
                .collect();
            let count = read.len() as u32;
            let e = self.bulk(FileChange::BulkRead, count, &uids);
            out.push(e);
            self.opened.clear();
        }
        let deleted: HashSet<&PathBuf> = self.deleted.iter().map(|(_, p, _)| p).collect();
        if deleted.len() >= self.src.burst_files as usize {
            let uids: Vec<u32> = self
                .deleted
                .iter()
                .map(|(_, _, u)| *u)
                .filter(|u| *u != u32::MAX)
                .collect();
            let count = deleted.len() as u32;
            let e = self.bulk(FileChange::BulkDelete, count, &uids);
            out.push(e);
            self.deleted.clear();
        }
    }

    fn bulk(&mut self, change: FileChange, count: u32, uids: &[u32]) -> FileEvent {
        let mut tally: HashMap<u32, usize> = HashMap::new();
        for u in uids {
            *tally.entry(*u).or_default() += 1;
        }
        let top = tally
            .into_iter()
            .max_by_key(|(u, n)| (*n, std::cmp::Reverse(*u)))
            .map(|(u, _)| u);
        let folder = self.src.paths.first().cloned().unwrap_or_default();
        let mut e = self.event(change, &folder, None);
        e.owner = top.map(|u| self.user_name(u)).unwrap_or_default();
        e.count = count;
        e.window_seconds = self.src.burst_seconds;
        e
    }

    /// Compares the tree with the snapshot left by the previous run and reports the difference.
    fn catch_up(&mut self) -> Result<(), WatchError> {
        let mut now_files = Vec::new();
        for p in &self.src.paths.clone() {
            if self.src.recursive {
                walk(p, &mut now_files);
            } else if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                        if m.is_file() {
                            now_files.push((e.path(), Seen::of(&m)));
                        }
                    }
                }
            }
        }
        let before: Option<HashMap<PathBuf, Seen>> = match std::fs::read(&self.snapshot_path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|error| {
                WatchError::CorruptSnapshot {
                    path: self.snapshot_path.display().to_string(),
                    error,
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(WatchError::Snapshot {
                    path: self.snapshot_path.display().to_string(),
                    error,
                })
            }
        };
        self.known = now_files.into_iter().collect();
        let Some(before) = before else {
            // First run: everything already there is the baseline, not news.
            return self.save_snapshot();
        };
        let mut out = Vec::new();
        let mut paths: Vec<PathBuf> = self.known.keys().cloned().collect();
        paths.sort();
        for p in &paths {
            let now = self.known[p];
            match before.get(p) {
                None => out.push(self.event(FileChange::Created, p, Some(now))),
                Some(old) => {
                    if old.mode != now.mode {
                        let mut e = self.event(FileChange::Permissions, p, Some(now));
                        e.old_mode = old.mode;
                        out.push(e);
                    }
                    if old.size != now.size || old.mtime_ns != now.mtime_ns {
                        out.push(self.event(FileChange::Modified, p, Some(now)));
                    }
                }
            }
        }
        let mut gone: Vec<(&PathBuf, &Seen)> = before
            .iter()
            .filter(|(p, _)| !self.known.contains_key(*p))
            .collect();
        gone.sort_by(|a, b| a.0.cmp(b.0));
        let gone: Vec<(PathBuf, Seen)> = gone.into_iter().map(|(p, s)| (p.clone(), *s)).collect();
        for (p, s) in gone {
            out.push(self.event(FileChange::Deleted, &p, Some(s)));
        }
        if !out.is_empty() {
            tracing::info!(source = %self.src.name, changes = out.len(), "changes made while the agent was stopped");
            self.write(&out)?;
        }
        self.save_snapshot()
    }

    fn save_snapshot(&self) -> Result<(), WatchError> {
        let body = serde_json::to_vec(&self.known).map_err(WatchError::Serialise)?;
        crate::tail::write_atomically(&self.snapshot_path, &body).map_err(WatchError::Save)
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Seen)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            walk(&p, out);
        } else if m.is_file() {
            out.push((p, Seen::of(&m)));
        }
    }
}

/// The account name for a uid (the uid in decimal when the system has no name for it).
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes we pass; `result`
    // points at `pwd` on success, and pw_name then points into `buf`, alive for this scope.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return uid.to_string();
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf` (see above).
    unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_names() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "4000000000");
    }
}
