//! The stored access log a command reads back (`policy backtest`, `explain mine`): a single
//! process's SQLite store, or the fleet's database, with the context journal of the same.

use anyhow::{Context as _, Result};
use phiwatch::backtest;
use phiwatch::mine::{self, MineRows};
use phiwatch::reload::{Inputs, Loaded};
use std::path::PathBuf;

/// The access log replayed: a single process's store, or the fleet's database.
pub enum Log {
    Store(rusqlite::Connection, PathBuf),
    Fleet(tokio::runtime::Runtime, tokio_postgres::Client, String),
}

impl Log {
    /// The config's log: its fleet database, or its data_dir's store; with the store's
    /// path as the journal to replay (the fleet's journal is read by [`Log::load`]).
    pub fn of(cfg: &phiwatch::config::Config) -> Result<(Log, Option<PathBuf>)> {
        Ok(match &cfg.database {
            Some(db) => {
                let (rt, client) = super::alert_store::fleet_client(db)?;
                let at = phiwatch::fleet::pg::describe(&db.url);
                (Log::Fleet(rt, client, at), None)
            }
            None => {
                let db = cfg.data_dir.join("phiwatch.db");
                (Log::open_store(db.clone())?, Some(db))
            }
        })
    }

    pub fn open_store(path: PathBuf) -> Result<Log> {
        let conn = phiwatch::store::Store::open_existing(&path)
            .with_context(|| format!("opening the store {}", path.display()))?;
        Ok(Log::Store(conn, path))
    }

    pub fn name(&self) -> String {
        match self {
            Log::Store(_, p) => p.display().to_string(),
            Log::Fleet(_, _, at) => at.clone(),
        }
    }

    /// The inputs, with the context journal of this log: the store's or the fleet's.
    pub fn load(&self, inputs: &Inputs) -> Result<Loaded> {
        Ok(match self {
            Log::Fleet(rt, client, at) => {
                let journal = rt
                    .block_on(phiwatch::fleet::state::journal(client))
                    .with_context(|| format!("reading the context journal of {at}"))?;
                inputs.load_with_journal(&journal)?
            }
            Log::Store(..) => inputs.load()?,
        })
    }

    pub fn newest(&self) -> Result<Option<i64>> {
        Ok(match self {
            Log::Store(c, _) => phiwatch::store::newest_access(c)?,
            Log::Fleet(rt, c, _) => rt.block_on(phiwatch::fleet::store::newest_access(c))?,
        })
    }
}

impl backtest::AccessLog for Log {
    fn stream(
        &self,
        window: (i64, i64),
        chunk: usize,
        each: &mut dyn FnMut(&mut Vec<phiwatch::event::AccessEvent>),
    ) -> Result<u64, backtest::BacktestError> {
        match self {
            Log::Store(c, _) => c.stream(window, chunk, each),
            Log::Fleet(rt, client, _) => backtest::FleetLog {
                rt: rt.handle(),
                client,
            }
            .stream(window, chunk, each),
        }
    }
}

impl MineRows for Log {
    fn newest_access(&self) -> Result<Option<i64>, mine::MineError> {
        self.with(|m| m.newest_access())
    }
    fn accesses(&self, from_ms: i64, to_ms: i64) -> Result<u64, mine::MineError> {
        self.with(|m| m.accesses(from_ms, to_ms))
    }
    fn hours(&self, from_ms: i64, to_ms: i64) -> Result<Vec<i64>, mine::MineError> {
        self.with(|m| m.hours(from_ms, to_ms))
    }
    fn unexplained(
        &self,
        window: (&str, &str),
        each: &mut dyn FnMut(mine::Unexplained),
    ) -> Result<(), mine::MineError> {
        self.with(|m| m.unexplained(window, each))
    }
}

impl Log {
    /// Runs `f` on this log's mining rows.
    fn with<T>(&self, f: impl FnOnce(&dyn MineRows) -> T) -> T {
        match self {
            Log::Store(c, _) => f(c),
            Log::Fleet(rt, client, _) => f(&mine::fleet::Fleet {
                rt: rt.handle(),
                client,
            }),
        }
    }
}
