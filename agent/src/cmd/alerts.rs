//! `phiwatch alerts`: list and acknowledge alerts.

use super::{admin, StoreArgs};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Open alerts (--all: every alert).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        all: bool,
    },
    /// Acknowledge an alert: its pending notifications are dropped and it is not repeated
    /// (new findings reopen it).
    Ack {
        #[command(flatten)]
        store: StoreArgs,
        /// Alert id.
        id: i64,
        /// Who acknowledges (recorded with the time).
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        note: String,
        /// What you concluded: false-positive, benign (routine work) or confirmed. The noise
        /// report (`phiwatch report noise`) counts these per detector.
        #[arg(long = "as")]
        disposition: Option<String>,
    },
}

pub fn run(c: AlertsCmd) -> Result<()> {
    let out = match c {
        AlertsCmd::List { store, all } => admin(&store)?.list_alerts(all)?,
        AlertsCmd::Ack {
            store,
            id,
            by,
            note,
            disposition,
        } => admin(&store)?.ack(id, &by, &note, disposition.as_deref())?,
    };
    print!("{out}");
    Ok(())
}
