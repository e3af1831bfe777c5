//! `phiwatch notify`: notifications that could not be delivered.

use super::{admin, StoreArgs};
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
            let (n, out) = admin(&store)?.dead_letters()?;
            print!("{out}");
            if n > 0 {
                std::process::exit(1);
            }
        }
        NotifyCmd::Retry { store, id } => print!("{}", admin(&store)?.retry(id)?),
    }
    Ok(())
}
