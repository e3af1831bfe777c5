//! `phiwatch explain mine`: propose permits for routine access patterns.

use super::access_log::Log;
use super::parse_time;
use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use phiwatch::mine::{self, Options, Since};
use phiwatch::reload::{Inputs, Loaded};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ExplainCmd {
    /// Mine the stored access log for routine patterns today's policies leave unexplained, and
    /// propose them as Cedar permits (with their evidence) for an officer to review.
    ///
    /// A pattern is users of one role and department opening the records of patients with an
    /// encounter in another department (consults, pharmacy, imaging). It is proposed only when
    /// enough distinct users, accesses and days show it is routine; accesses another detector
    /// flagged never count towards it. The report (stderr) gives the unexplained-access rate
    /// before and with every proposal adopted; the policies go to --out (or stdout). Review
    /// them, delete what is not routine, add `policy test` cases, then copy the file into the
    /// policy directory. A permit never silences a forbid (family, VIP, sensitive...).
    Mine(MineArgs),
}

#[derive(Args)]
pub struct MineArgs {
    /// The agent's configuration: its store (data_dir, or in fleet mode the [database] with
    /// its context journal), context feeds, settings.
    #[arg(long, conflicts_with_all = ["store", "context"])]
    config: Option<PathBuf>,
    /// Without --config: the SQLite store (with an access log: `scan --store-accesses`).
    #[arg(long, requires = "context")]
    store: Option<PathBuf>,
    /// Without --config: the FHIR context directory.
    #[arg(long)]
    context: Option<PathBuf>,
    /// Without --config: detection settings TOML (relationship windows, time zone).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Start of the window: a duration back from --until (`30d`, `12h`) or a time
    /// (`2026-03-10`, `2026-03-10T08:00:00Z`).
    #[arg(long, default_value = "30d")]
    since: String,
    /// End of the window (a time); default: the newest stored access.
    #[arg(long)]
    until: Option<String>,
    /// Distinct users a pattern needs.
    #[arg(long, default_value_t = 5)]
    min_users: usize,
    /// Unexplained accesses a pattern needs.
    #[arg(long, default_value_t = 20)]
    min_accesses: u64,
    /// Distinct days a pattern needs (at most the days the window holds).
    #[arg(long, default_value_t = 2)]
    min_days: usize,
    /// The most permits proposed, those explaining the most first.
    #[arg(long, default_value_t = 20)]
    max: usize,
    /// Write the proposed policies here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: ExplainCmd) -> Result<()> {
    let ExplainCmd::Mine(a) = cmd;
    let (log, inputs) = match (&a.config, &a.store) {
        (Some(c), _) => {
            let cfg = phiwatch::config::Config::load(c)?;
            let (log, journal) = Log::of(&cfg)?;
            // Mining reads the policies' findings; plugins play no part.
            let inputs = Inputs {
                plugins: Default::default(),
                ..Inputs::of_config(&cfg, journal)
            };
            (log, inputs)
        }
        (None, Some(s)) => (
            Log::open_store(s.clone())?,
            Inputs {
                rules: a.rules.clone(),
                context: Inputs::fhir_dir(a.context.clone()),
                ..Inputs::default()
            },
        ),
        (None, None) => bail!("give --config, or --store with --context"),
    };
    let Loaded {
        settings, context, ..
    } = log.load(&inputs)?;
    let since = Since::parse(&a.since).context("--since")?;
    let until_ms = a
        .until
        .as_deref()
        .map(parse_time)
        .transpose()
        .context("--until")?;
    let mined = mine::mine(
        &log,
        &context,
        &settings,
        &Options {
            since,
            until_ms,
            min_users: a.min_users,
            min_accesses: a.min_accesses,
            min_days: a.min_days,
            max_proposals: a.max,
        },
    )
    .with_context(|| format!("mining {}", log.name()))?;
    eprint!("{}", mined.report());
    if mined.proposals.is_empty() {
        return Ok(());
    }
    let text = mined.cedar(&phiwatch::time::format_ms(phiwatch::time::now_ms()));
    match &a.out {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("proposed permits written to {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
