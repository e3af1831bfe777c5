//! `phiwatch notify`: notifications that could not be delivered.

use super::{alert_store, StoreArgs};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum NotifyCmd {
    /// Notifications given up on (permanent failure or retries exhausted), with the reason.
    /// Exits 1 when there are any, for monitoring scripts.
    DeadLetters {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Queue dead letters again, with their original idempotency keys.
    Retry {
        #[command(flatten)]
        store: StoreArgs,
        /// One dead letter's id; without it, all of them.
        id: Option<i64>,
    },
}

pub fn run(c: NotifyCmd) -> Result<()> {
    match c {
        NotifyCmd::DeadLetters { store } => {
            let dead = alert_store::open(&store)?.dead_letters()?;
            if dead.is_empty() {
                println!("no dead letters");
            }
            for d in &dead {
                println!(
                    "#{} alert #{} to {}: {} attempt(s), {} [{}]",
                    d.id,
                    d.alert,
                    d.receiver,
                    d.attempts,
                    d.error.as_deref().unwrap_or_default(),
                    d.key
                );
            }
            if !dead.is_empty() {
                std::process::exit(1);
            }
        }
        NotifyCmd::Retry { store, id } => {
            let n = alert_store::open(&store)?.retry(id)?;
            println!("{n} notification(s) queued again");
        }
    }
    Ok(())
}
