//! Where `alerts`, `silence` and `notify` act: the single process's SQLite store, or the
//! fleet's PostgreSQL when the config names one. Both check their input with the same
//! functions (`alert::admin`), so a command behaves the same on either.

use super::StoreArgs;
use anyhow::Result;
use phiwatch::alert::admin::{self, Admin};
use phiwatch::alert::fleet;
use phiwatch::alert::query::{AlertRow, Silence};
use phiwatch::fleet::pg::{self, DatabaseConfig};
use phiwatch::outbox::DeadLetter;
use phiwatch::time::now_ms;
use std::time::Duration;

pub enum AlertStore {
    Sqlite(Admin),
    Fleet {
        rt: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
        /// The database, without its password, for messages.
        at: String,
    },
}

/// The store the config names.
pub fn open(s: &StoreArgs) -> Result<AlertStore> {
    let cfg = phiwatch::config::Config::load(&s.config)?;
    match cfg.database {
        Some(db) => fleet_store(&db),
        None => Ok(AlertStore::Sqlite(Admin::open(&super::sqlite_store(
            &cfg,
        )?)?)),
    }
}

/// A runtime for a command's calls and a connection to the fleet's current schema.
pub fn fleet_client(
    db: &DatabaseConfig,
) -> Result<(tokio::runtime::Runtime, tokio_postgres::Client)> {
    // A worker thread drives the connection, so a `Handle::block_on` (the cases' calls) makes
    // progress too: on a current-thread runtime only `Runtime::block_on` drives I/O.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = rt.block_on(async {
        let c = pg::connect(db, "phiwatch-admin").await?;
        phiwatch::fleet::schema::require_current(&c).await?;
        anyhow::Ok(c)
    })?;
    Ok((rt, client))
}

fn fleet_store(db: &DatabaseConfig) -> Result<AlertStore> {
    let (rt, client) = fleet_client(db)?;
    Ok(AlertStore::Fleet {
        rt,
        client,
        at: pg::describe(&db.url),
    })
}

/// What is missing is said with the database it is missing from.
fn in_fleet(e: admin::AdminError, at: &str) -> anyhow::Error {
    match e {
        admin::AdminError::NotFound(m) => anyhow::anyhow!("{m} in {at}"),
        other => other.into(),
    }
}

impl AlertStore {
    pub fn alerts(&self, all: bool) -> Result<Vec<AlertRow>> {
        Ok(match self {
            AlertStore::Sqlite(a) => a.alerts(all)?,
            AlertStore::Fleet { rt, client, .. } => rt.block_on(fleet::list(client, all))?,
        })
    }

    pub fn ack(&mut self, id: i64, by: &str, note: &str, disposition: Option<&str>) -> Result<()> {
        match self {
            AlertStore::Sqlite(a) => a.ack(id, by, note, disposition)?,
            AlertStore::Fleet { rt, client, at } => rt
                .block_on(fleet::ack(client, id, by, note, disposition))
                .map_err(|e| in_fleet(e, at))?,
        }
        Ok(())
    }

    pub fn silence(
        &self,
        matchers: &[String],
        duration: Duration,
        author: &str,
        reason: &str,
    ) -> Result<Silence> {
        Ok(match self {
            AlertStore::Sqlite(a) => a.silence(matchers, duration, author, reason)?,
            AlertStore::Fleet { rt, client, .. } => rt.block_on(fleet::add_silence(
                client, matchers, duration, author, reason,
            ))?,
        })
    }

    pub fn silences(&self) -> Result<Vec<Silence>> {
        Ok(match self {
            AlertStore::Sqlite(a) => a.silences()?,
            AlertStore::Fleet { rt, client, .. } => {
                rt.block_on(fleet::silences(client, now_ms()))?
            }
        })
    }

    pub fn expire_silence(&self, id: i64) -> Result<()> {
        match self {
            AlertStore::Sqlite(a) => a.expire_silence(id)?,
            AlertStore::Fleet { rt, client, at } => rt
                .block_on(fleet::expire_silence(client, id))
                .map_err(|e| in_fleet(e, at))?,
        }
        Ok(())
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Ok(match self {
            AlertStore::Sqlite(a) => a.dead_letters()?,
            AlertStore::Fleet { rt, client, .. } => {
                rt.block_on(phiwatch::fleet::outbox::dead_letters(client))?
            }
        })
    }

    /// Queues dead letters again (one, or all); how many.
    pub fn retry(&self, id: Option<i64>) -> Result<usize> {
        Ok(match self {
            AlertStore::Sqlite(a) => a.retry(id)?,
            AlertStore::Fleet { rt, client, .. } => {
                let n = rt.block_on(phiwatch::fleet::outbox::requeue_dead(client, id, now_ms()))?;
                if n == 0 {
                    return Err(admin::nothing_to_retry(id).into());
                }
                n as usize
            }
        })
    }
}
