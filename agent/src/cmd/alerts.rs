//! `phiwatch alerts`: list and acknowledge alerts.

use super::{alert_store, StoreArgs};
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
        AlertsCmd::List { store, all } => alert_list(&alert_store::open(&store)?.alerts(all)?),
        AlertsCmd::Ack {
            store,
            id,
            by,
            note,
            disposition,
        } => {
            alert_store::open(&store)?.ack(id, &by, &note, disposition.as_deref())?;
            format!("alert #{id} acknowledged by {by}\n")
        }
    };
    print!("{out}");
    Ok(())
}

/// One line per alert under a header, as `alerts list` prints them.
fn alert_list(rows: &[phiwatch::alert::query::AlertRow]) -> String {
    let mut out = format!(
        "{:>6} {:<13} {:<9} {:<18} {:<14} {:<14} {:>8} {:>8}  last change\n",
        "id", "status", "severity", "category", "user", "department", "findings", "patients"
    );
    for a in rows {
        out.push_str(&format!(
            "{:>6} {:<13} {:<9} {:<18} {:<14} {:<14} {:>8} {:>8}  {}{}\n",
            a.id,
            a.status,
            a.severity,
            a.category,
            a.user,
            a.department,
            a.findings,
            a.patients,
            a.last,
            a.acknowledged_by
                .as_ref()
                .map(|b| format!("  (acknowledged by {b})"))
                .unwrap_or_default(),
        ));
    }
    out
}
