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
    /// The agent's configuration: its store (data_dir, or in fleet mode the [database]) and
    /// time zone (rules settings).
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
    let o = Options {
        top_users: a.top,
        ..Options::window(&a.since, a.until.as_deref())?
    };
    let rep = match (&a.config, &a.store) {
        (Some(c), _) => {
            let cfg = phiwatch::config::Config::load(c)?;
            let o = Options {
                timezone: match &cfg.rules {
                    Some(r) => phiwatch::settings::Settings::load(r)?.timezone,
                    None => chrono_tz::UTC,
                },
                ..o
            };
            match &cfg.database {
                Some(db) => {
                    let (rt, client) = super::alert_store::fleet_client(db)?;
                    let rows = noise::fleet::Fleet {
                        rt: rt.handle(),
                        client: &client,
                    };
                    noise::report(&rows, &o).with_context(|| {
                        format!(
                            "noise report from {}",
                            phiwatch::fleet::pg::describe(&db.url)
                        )
                    })?
                }
                None => from_store(&cfg.data_dir.join("phiwatch.db"), &o)?,
            }
        }
        (None, Some(s)) => from_store(s, &o)?,
        (None, None) => bail!("give --config, or --store"),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{}", rep.text());
    }
    Ok(())
}

fn from_store(path: &std::path::Path, o: &Options) -> Result<noise::NoiseReport> {
    let conn = Store::open_existing(path)?;
    noise::report(&conn, o).with_context(|| format!("noise report from {}", path.display()))
}
