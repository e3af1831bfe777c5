//! `phiwatch report noise`: which detectors make the work, and what officers made of it.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use phiwatch::noise::{self, Options};
use phiwatch::store::Store;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ReportCmd {
    /// Findings and alerts per detector per day, the users behind them, the share of
    /// acknowledged alerts officers judged false positive or routine work
    /// (`alerts ack --as false-positive|benign|confirmed`), and suggested silences, reviews and
    /// permits. Counted by access time: a replay of last month reports last month.
    Noise(NoiseArgs),
}

#[derive(Args)]
pub struct NoiseArgs {
    /// The agent's configuration: its store (data_dir) and time zone (rules settings).
    #[arg(long, conflicts_with = "store")]
    config: Option<PathBuf>,
    /// Without --config: the SQLite store.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Start of the window: a duration back from --until (`30d`, `12h`) or a time
    /// (`2026-03-10`, `2026-03-10T08:00:00Z`).
    #[arg(long, default_value = "30d")]
    since: String,
    /// End of the window (a time); default: the newest finding.
    #[arg(long)]
    until: Option<String>,
    /// Users listed per detector.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ReportCmd) -> Result<()> {
    let ReportCmd::Noise(a) = cmd;
    let (store_path, timezone) = match (&a.config, &a.store) {
        (Some(c), _) => {
            let cfg = phiwatch::config::Config::load(c)?;
            let tz = match &cfg.rules {
                Some(r) => phiwatch::settings::Settings::load(r)?.timezone,
                None => chrono_tz::UTC,
            };
            (super::sqlite_store(&cfg)?, tz)
        }
        (None, Some(s)) => (s.clone(), chrono_tz::UTC),
        (None, None) => bail!("give --config, or --store"),
    };
    let conn = Store::open_existing(&store_path)?;
    let o = Options {
        top_users: a.top,
        timezone,
        ..Options::window(&a.since, a.until.as_deref())?
    };
    let rep = noise::report(&conn, &o)
        .with_context(|| format!("noise report from {}", store_path.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{}", rep.text());
    }
    Ok(())
}
