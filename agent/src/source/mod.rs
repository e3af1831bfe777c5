//! Sources: each kind of `[[source]]` (and each MLLP context feed, and the console's own
//! view log) builds itself here from its declaration, before any thread starts: a [`Reader`]
//! for the tailer threads, and for receiving kinds the spool, the listener or watcher that
//! fills it, and the task that serves it. Binding happens at build time, so a taken port or
//! a bad certificate stops the agent at start-up. Adding a kind means a module here and a
//! line in [`build`].

pub mod console;
pub mod file;
pub mod folder;
pub mod mllp;
pub mod syslog;

use crate::config::Source;
use crate::decode::LineDecoder;
use crate::metrics::Metrics;
use crate::spool::{SharedSpool, Spool, DEFAULT_MAX_BYTES};
use crate::watch::FolderWatch;
use anyhow::{Context as _, Result};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Longest line a spooled source (syslog, folder events) hands to its decoder.
const DEFAULT_MAX_LINE_BYTES: usize = 4 << 20;
/// How often a spooled source's reader looks for new records.
const SPOOL_POLL: Duration = Duration::from_millis(50);

/// A task serving a receiver until the runtime shuts down.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the sources built, handed to the app to start.
#[derive(Default)]
pub struct Intake {
    /// One per source, for its tailer thread.
    pub readers: Vec<Reader>,
    /// The spools receivers append to, synced by the app on a timer and at shutdown.
    pub spools: Vec<SharedSpool>,
    /// Receivers (syslog, MLLP, the console) to run on the runtime.
    pub tasks: Vec<Task>,
    /// Folder watchers, each on a thread of its own.
    pub watchers: Vec<FolderWatch>,
    /// The folders watched, which the folder-event detector names.
    pub folders: Vec<String>,
}

/// What every source's build shares.
pub struct Env<'a> {
    pub spool_dir: PathBuf,
    pub metrics: &'a Arc<Metrics>,
    pub rt: &'a tokio::runtime::Runtime,
    /// Bytes in flight across all stream receivers.
    pub inflight: Arc<tokio::sync::Semaphore>,
}

/// Builds the configured sources; source `ix` reports into `metrics.sources[ix]`.
pub fn build(sources: Vec<Source>, env: &Env<'_>, intake: &mut Intake) -> Result<()> {
    for (ix, src) in sources.into_iter().enumerate() {
        match src {
            Source::File(f) => file::build(*f, ix, env, intake)?,
            Source::Syslog(s) => syslog::build(s, ix, env, intake)?,
            Source::Folder(f) => folder::build(f, ix, env, intake)?,
        }
    }
    Ok(())
}
/// How a source's records reach its tailer.
pub struct Reader {
    pub ix: usize,
    pub name: String,
    pub patterns: Vec<String>,
    pub decoder: LineDecoder,
    pub poll: Duration,
    /// Spool sources: the file still being appended to (drained rotated segments are deleted).
    pub spool_active: Option<PathBuf>,
    pub max_line_bytes: usize,
    pub bad_log: BadLog,
}

/// Bad lines logged one by one per interval; past that, one summary line per interval.
pub const BAD_LOG_EVERY: Duration = Duration::from_secs(10);
const BAD_LOG_LINES: u32 = 10;

#[derive(Default)]
pub struct BadLog(std::cell::Cell<(Option<std::time::Instant>, u32, u64)>);

pub enum LogBudget {
    Log,
    /// Say how many went unlogged.
    Summarise(u64),
    Quiet,
}

impl BadLog {
    pub fn take(&self) -> LogBudget {
        let (start, logged, quiet) = self.0.get();
        let now = std::time::Instant::now();
        match start {
            Some(t) if now.duration_since(t) < BAD_LOG_EVERY => {
                if logged < BAD_LOG_LINES {
                    self.0.set((start, logged + 1, quiet));
                    LogBudget::Log
                } else {
                    self.0.set((start, logged, quiet + 1));
                    LogBudget::Quiet
                }
            }
            _ => {
                self.0.set((Some(now), 1, 0));
                if quiet > 0 {
                    LogBudget::Summarise(quiet + 1)
                } else {
                    LogBudget::Log
                }
            }
        }
    }
}

impl Reader {
    /// A source that receives (syslog, folder events): its spool, and the reader following it.
    pub fn spooled(
        ix: usize,
        name: &str,
        decoder: LineDecoder,
        spool_dir: &Path,
        cap: u64,
        intake: Arc<crate::spool::IntakeMetrics>,
    ) -> Result<(Reader, Spool)> {
        let spool = Spool::open(spool_dir, name, DEFAULT_MAX_BYTES)
            .with_context(|| format!("opening the spool of source {name:?}"))?
            .with_cap(cap, intake);
        let reader = Reader {
            ix,
            name: name.to_owned(),
            patterns: vec![Spool::pattern(spool_dir, name)],
            decoder,
            poll: SPOOL_POLL,
            spool_active: Some(spool.active().to_owned()),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            bad_log: BadLog::default(),
        };
        Ok((reader, spool))
    }
}
