//! `phiwatch silence`: silence alerts matching labels for a while.

use super::{alert_store, StoreArgs};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SilenceCmd {
    /// Silence alerts whose labels all match, e.g. --match user=dr-ana --match category=family.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// label=value with label one of user, category, severity, department.
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for", default_value = "2h")]
        duration: String,
        #[arg(long)]
        author: String,
        #[arg(long)]
        reason: String,
    },
    /// Active silences.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
    },
}

pub fn run(c: SilenceCmd) -> Result<()> {
    let out = match c {
        SilenceCmd::Add {
            store,
            matchers,
            duration,
            author,
            reason,
        } => {
            let d = phiwatch::alert::routing::parse_duration(&duration)
                .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            let s = alert_store::open(&store)?.silence(&matchers, d, &author, &reason)?;
            format!("{s}\n")
        }
        SilenceCmd::List { store } => {
            let silences = alert_store::open(&store)?.silences()?;
            let mut out = String::new();
            for s in &silences {
                out.push_str(&format!(
                    "#{} {} until {} by {}: {}\n",
                    s.id,
                    s.matchers,
                    phiwatch::time::format_ms(s.ends_ms),
                    s.author,
                    s.reason
                ));
            }
            if silences.is_empty() {
                out.push_str("no active silences\n");
            }
            out
        }
        SilenceCmd::Expire { store, id } => {
            alert_store::open(&store)?.expire_silence(id)?;
            format!("silence #{id} expired\n")
        }
    };
    print!("{out}");
    Ok(())
}
