//! The commands of the `phiwatch` binary, one module each: its arguments, and printing at the
//! edge; the work is done in the library.

mod access_log;
mod alert_store;
pub mod alerts;
pub mod backtest;
pub mod bench;
pub mod case;
pub mod check;
pub mod demo;
pub mod explain;
pub mod migrate;
pub mod notify;
pub mod plugin;
pub mod policy;
pub mod report;
pub mod retention;
pub mod rules;
pub mod run;
pub mod scan;
pub mod silence;
pub mod user;

use anyhow::{Context as _, Result};
use std::path::PathBuf;

/// `2026-03-10`, or an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<i64> {
    phiwatch::time::parse_date_or_time(s)
        .with_context(|| format!("{s:?}: expected a date (2026-03-10) or an RFC 3339 time"))
}

#[derive(clap::Args)]
pub struct StoreArgs {
    /// The agent's configuration file (its data_dir holds the store; in fleet mode its
    /// [database] names the fleet's, for `alerts`, `silence`, `notify` and `case`).
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(clap::Args)]
pub struct DetectionArgs {
    /// Context directory (or file) of FHIR R4 NDJSON: Practitioner, PractitionerRole, Patient,
    /// Person, Encounter, CareTeam, Appointment.
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// Policy directory (schema.cedarschema + *.cedar). Default: the built-in pack.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Detection settings TOML (time zone, business hours, windows). Default: built-in
    /// rules/detection.toml.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

/// The single process's SQLite store. A fleet node's config is refused: its data_dir holds
/// no store, and reading an empty one would answer "nothing" where the fleet holds the truth.
pub fn sqlite_store(cfg: &phiwatch::config::Config) -> Result<PathBuf> {
    if let Some(db) = &cfg.database {
        anyhow::bail!(
            "[database] names fleet mode's PostgreSQL ({}): this command works on the single \
             process's SQLite store. In fleet mode this release keeps accesses, findings, \
             alerts, silences, notifications, cases and console accounts in PostgreSQL \
             (phiwatch alerts, silence, notify, case, user, report noise, policy backtest and \
             explain mine work on it)",
            phiwatch::fleet::pg::describe(&db.url)
        );
    }
    Ok(cfg.data_dir.join("phiwatch.db"))
}
