//! `phiwatch migrate`: brings a store's schema to the version this phiwatch needs.

use anyhow::{bail, Context, Result};
use clap::Args;
use phiwatch::config::Config;
use phiwatch::fleet::pg::DatabaseConfig;
use std::path::PathBuf;

#[derive(Args)]
pub struct MigrateArgs {
    /// The agent's config: its [database] (fleet mode's PostgreSQL) if it has one, else the
    /// SQLite store in its data_dir.
    #[arg(long, conflicts_with_all = ["database", "store"])]
    config: Option<PathBuf>,
    /// A PostgreSQL URL (`postgres://phiwatch@db1,db2/phiwatch`); the password is best given
    /// in PGPASSFILE or ~/.pgpass, not here, where `ps` shows it.
    #[arg(long, conflicts_with = "store")]
    database: Option<String>,
    /// --database: the PEM CA that signed the server's certificate (required for a server
    /// that is not this machine; its name is checked against the certificate).
    #[arg(long, requires = "database")]
    ca_file: Option<PathBuf>,
    /// A SQLite store file (`phiwatch.db`).
    #[arg(long)]
    store: Option<PathBuf>,
}

pub fn run(a: MigrateArgs) -> Result<()> {
    let (database, store) = match (a.config, a.database, a.store) {
        (Some(path), _, _) => {
            let cfg = Config::load(&path)?;
            match cfg.database {
                Some(db) => (Some(db), None),
                None => (None, Some(cfg.data_dir.join("phiwatch.db"))),
            }
        }
        (None, Some(url), _) => (Some(DatabaseConfig::at(url, a.ca_file)), None),
        (None, None, Some(store)) => (None, Some(store)),
        (None, None, None) => bail!("say which store: --config, --database or --store"),
    };
    if let Some(db) = database {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (from, to) = rt.block_on(async {
            let mut client = phiwatch::fleet::pg::connect(&db, "phiwatch-migrate").await?;
            phiwatch::fleet::schema::migrate(&mut client).await
        })?;
        let at = phiwatch::fleet::pg::describe(&db.url);
        match from == to {
            true => println!("database {at}: schema version {to}, up to date"),
            false => println!("database {at}: schema version {from} -> {to}"),
        }
    }
    if let Some(path) = store {
        let existed = path.exists();
        let before = match existed {
            true => phiwatch::store::Store::read_version(&path)
                .with_context(|| format!("reading {}", path.display()))?,
            false => 0,
        };
        let s = phiwatch::store::Store::open(&path)?;
        let after = s.schema_version()?;
        match (existed, before == after) {
            (false, _) => println!("store {}: created, schema version {after}", path.display()),
            (true, true) => println!(
                "store {}: schema version {after}, up to date",
                path.display()
            ),
            (true, false) => println!(
                "store {}: schema version {before} -> {after}",
                path.display()
            ),
        }
    }
    Ok(())
}
