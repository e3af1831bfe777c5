//! `phiwatch policy backtest`: a draft pack and draft plugins over the stored access log,
//! beside what is in force.

use super::access_log::Log;
use super::DetectionArgs;
use anyhow::{bail, Context as _, Result};
use phiwatch::backtest::{self, Change, Side};
use phiwatch::mine::Since;
use phiwatch::plugin::{PluginInputs, PluginSpec};
use phiwatch::reload::{Inputs, Loaded};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct BacktestArgs {
    /// The draft policy directory (schema.cedarschema + *.cedar): the whole pack as it would
    /// be deployed, not only the changed files.
    #[arg(long)]
    draft: PathBuf,
    /// The agent's configuration: its store's access log (in fleet mode, the [database]'s),
    /// context (with the ADT messages journaled), settings, policies and plugins in force,
    /// and alert grouping.
    #[arg(long, conflicts_with_all = ["store", "context", "policies", "rules"])]
    config: Option<PathBuf>,
    /// Without --config: the store whose access log is replayed (plus --context, and
    /// --policies for the pack in force, default the built-in one).
    #[arg(long, required_unless_present = "config")]
    store: Option<PathBuf>,
    #[command(flatten)]
    detection: DetectionArgs,
    /// A draft plugin (a WASM component) run by the draft beside the plugins in force;
    /// repeat for more.
    #[arg(long = "plugin")]
    plugins: Vec<PathBuf>,
    /// A plugin in force the draft leaves out (by name, e.g. volume-anomaly); repeatable.
    #[arg(long)]
    without_plugin: Vec<String>,
    /// Neither side runs plugins (Cedar only; much faster).
    #[arg(long, conflicts_with_all = ["plugins", "without_plugin"])]
    no_plugins: bool,
    /// Start of the window: `30d`, `12h` (back from its end) or a date or time.
    #[arg(long, default_value = "30d")]
    since: String,
    /// End of the window (a date or time). Default: just after the newest stored access.
    #[arg(long)]
    until: Option<String>,
    /// Write every difference here as NDJSON: `{"change": "added"|"removed", ...finding}`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Explanations shown per detector and change.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Users listed per change.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

/// What is replayed and what judges it: the inputs in force, the access log, the grouping.
fn sources(a: &BacktestArgs) -> Result<(Inputs, Log, phiwatch::alert::routing::Grouping)> {
    Ok(match &a.config {
        Some(path) => {
            let cfg = phiwatch::config::Config::load(path)?;
            let grouping = match &cfg.routing {
                Some(p) => phiwatch::alert::Routing::load(p)?.grouping,
                None => Default::default(),
            };
            let (log, journal) = Log::of(&cfg)?;
            (Inputs::of_config(&cfg, journal), log, grouping)
        }
        None => {
            let d = &a.detection;
            let inputs = Inputs {
                rules: d.rules.clone(),
                policies: d.policies.clone(),
                context: Inputs::fhir_dir(d.context.clone()),
                journal: None,
                plugins: PluginInputs::shipped(),
            };
            let store = a.store.clone().context("--store or --config")?;
            (inputs, Log::open_store(store)?, Default::default())
        }
    })
}

pub fn run(a: BacktestArgs) -> Result<()> {
    let (mut inputs, log, grouping) = sources(&a)?;
    if a.no_plugins {
        inputs.plugins = PluginInputs::default();
    }
    let loaded = log.load(&inputs)?;
    let Loaded {
        settings,
        pack,
        context,
        context_stats,
        plugins,
        ..
    } = loaded;
    eprint!("{}", context_stats.render());
    let draft = phiwatch::detect::PolicyPack::load_dir(&a.draft)
        .map_err(|e| anyhow::anyhow!("draft {}: {e}", a.draft.display()))?;
    // The draft's plugins: those in force (already compiled) but the ones left out, and the
    // author's files, pinned to what they are now.
    for name in &a.without_plugin {
        if !plugins.iter().any(|c| &*c.name == name.as_str()) {
            bail!("--without-plugin {name}: no plugin of that name is in force");
        }
    }
    let mut draft_plugins: Vec<_> = plugins
        .iter()
        .filter(|c| !a.without_plugin.iter().any(|n| *n == *c.name))
        .cloned()
        .collect();
    for p in &a.plugins {
        let spec =
            PluginSpec::pinned_file(p).with_context(|| format!("--plugin {}", p.display()))?;
        draft_plugins.push(std::sync::Arc::new(phiwatch::plugin::Compiled::load(
            &spec, None,
        )?));
    }

    let newest = log
        .newest()?
        .with_context(|| format!("{}: no stored accesses", log.name()))?;
    let until_ms = match &a.until {
        Some(u) => phiwatch::time::parse_date_or_time(u)
            .with_context(|| format!("--until {u:?}: a date or time"))?,
        None => newest + 1,
    };
    let since_ms = Since::parse(&a.since).context("--since")?.start(until_ms);

    let mut out: Option<std::io::BufWriter<std::fs::File>> = match &a.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut write = |change: Change, f: &phiwatch::finding::Finding| -> std::io::Result<()> {
        if let Some(o) = out.as_mut() {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                change: Change,
                #[serde(flatten)]
                finding: &'a phiwatch::finding::Finding,
            }
            serde_json::to_writer(&mut *o, &Line { change, finding: f })?;
            o.write_all(b"\n")?;
        }
        Ok(())
    };
    let report = backtest::run(
        &log,
        &context,
        &settings,
        &grouping,
        Side {
            pack: &pack,
            plugins: &plugins,
        },
        Side {
            pack: &draft,
            plugins: &draft_plugins,
        },
        (since_ms, until_ms),
        a.samples,
        &mut write,
    )?;
    if let Some(mut o) = out {
        o.flush()?;
    }
    print!("{}", report.render(a.top));
    Ok(())
}
