//! `phiwatch scan`: replay files through detection once.

use super::DetectionArgs;
use anyhow::{bail, Context as _, Result};
use phiwatch::pipeline::Pipeline;
use phiwatch::plugin::{PluginInputs, PluginSet};
use phiwatch::reload::{Inputs, Loaded};
use phiwatch::scan::{expand_event_paths, scan_files, Sinks};
use phiwatch::store::{default_data_dir, Store};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    detection: DetectionArgs,
    /// AuditEvent NDJSON files, or directories of *.ndjson files.
    #[arg(long, num_args = 1.., required_unless_present = "config")]
    events: Vec<PathBuf>,
    /// Replay with an agent's configuration instead: its context feeds (with the ADT
    /// messages its store journaled), settings, policies and plugins, over the files its
    /// file sources match (every format: FHIR, ATNA XML, CSV). Stores nothing unless
    /// --store is given.
    #[arg(long, conflicts_with_all = ["events", "context", "policies", "rules"])]
    config: Option<PathBuf>,
    /// With --config: only these file sources (by name).
    #[arg(long, requires = "config")]
    source: Vec<String>,
    /// Write findings here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// SQLite store for findings. Default: $PHIWATCH_DATA_DIR/phiwatch.db
    /// (or $XDG_DATA_HOME/phiwatch, ~/.local/share/phiwatch).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Do not write to any store (findings only go to the output).
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    /// Also store every access (not only findings) in the store's access log.
    #[arg(long, conflicts_with = "no_store")]
    store_accesses: bool,
    /// Write every rejected line as `file:line: reason` here.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Judge with the Cedar pack only, without the shipped WASM plugins.
    #[arg(long)]
    no_plugins: bool,
}

pub fn run(a: ScanArgs) -> Result<()> {
    if let Some(cfg) = &a.config {
        return scan_config(cfg, &a);
    }
    let Loaded {
        settings,
        pack,
        mut context,
        context_stats,
        plugins,
        ..
    } = Inputs {
        rules: a.detection.rules.clone(),
        policies: a.detection.policies.clone(),
        context: Inputs::fhir_dir(a.detection.context.clone()),
        journal: None,
        plugins: if a.no_plugins {
            PluginInputs::default()
        } else {
            PluginInputs::shipped()
        },
    }
    .load()?;
    if a.detection.context.is_some() {
        eprint!("{}", context_stats.render());
    } else {
        eprintln!("no --context given: every access will be judged without directory facts");
    }
    let paths = expand_event_paths(&a.events).context("listing event files")?;
    if paths.is_empty() {
        bail!("no event files found in {:?}", a.events);
    }
    let mut store = if a.no_store {
        None
    } else {
        let path = a
            .store
            .clone()
            .unwrap_or_else(|| default_data_dir().join("phiwatch.db"));
        Some(Store::open(&path)?)
    };
    let (mut out, mut rejects) = scan_outputs(a.out.as_deref(), a.rejects.as_deref())?;
    let plugin_state = store.as_ref().map(|s| s.conn());
    let plugins = PluginSet::new(&plugins, plugin_state, Default::default())?;
    let mut pipeline = Pipeline::new(&settings, &pack).with_plugins(plugins);
    let summary = scan_files(
        &paths,
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut out,
            rejects: rejects.as_mut().map(|r| r as &mut dyn Write),
            store: store.as_mut(),
            store_accesses: a.store_accesses,
            only_detector: None,
            grouping: None,
        },
    )?;
    if let Some(mut r) = rejects {
        r.flush()?;
    }
    eprint!("{}", summary.render());
    Ok(())
}

/// `scan --config`: a day of logs judged against an agent's real feeds and rules.
pub fn scan_config(path: &std::path::Path, a: &ScanArgs) -> Result<()> {
    use phiwatch::config::{Config, Source};
    let cfg = Config::load(path)?;
    let Loaded {
        settings,
        pack,
        mut context,
        context_stats,
        plugins,
        ..
    } = Inputs {
        rules: cfg.rules.clone(),
        policies: cfg.policies.clone(),
        context: cfg.context_feeds(),
        journal: Some(cfg.data_dir.join("phiwatch.db")),
        plugins: if a.no_plugins {
            PluginInputs::default()
        } else {
            cfg.plugin_inputs()
        },
    }
    .load()?;
    eprint!("{}", context_stats.render());
    let mut sources = Vec::new();
    let mut unknown_names = Vec::new();
    for src in &cfg.sources {
        let Source::File(f) = src else { continue };
        if !a.source.is_empty() && !a.source.contains(&f.name) {
            continue;
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        for g in &f.paths {
            paths.extend(
                glob::glob(g)
                    .with_context(|| format!("source {:?}: glob {g:?}", f.name))?
                    .filter_map(Result::ok)
                    .filter(|p| p.is_file()),
            );
        }
        paths.sort();
        paths.dedup();
        let unknown = std::sync::Arc::new(phiwatch::decode::csv::UnknownNames::default());
        let decoder = f.decoder(unknown.clone()).map_err(anyhow::Error::msg)?;
        unknown_names.push((f.name.clone(), unknown));
        eprintln!("source {}: {} file(s)", f.name, paths.len());
        sources.push(phiwatch::scan::ScanSource {
            paths,
            decoder,
            max_line_bytes: f.max_line_bytes,
        });
    }
    if sources.is_empty() {
        bail!(
            "{}: no file source to replay (--source names none, or the config has only listeners)",
            path.display()
        );
    }
    let mut store = match &a.store {
        Some(p) => Some(Store::open(p)?),
        None => None,
    };
    let (mut out, mut rejects) = scan_outputs(a.out.as_deref(), a.rejects.as_deref())?;
    let plugin_state = store.as_ref().map(|s| s.conn());
    let plugins = PluginSet::new(&plugins, plugin_state, Default::default())?;
    let mut pipeline = Pipeline::new(&settings, &pack).with_plugins(plugins);
    // The store's alerts group as the live agent's would; a replay never notifies anyone.
    let routing = match &cfg.routing {
        Some(p) => Some(phiwatch::alert::Routing::load(p)?),
        None => None,
    };
    let summary = phiwatch::scan::scan_sources(
        &mut sources,
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut out,
            rejects: rejects.as_mut().map(|r| r as &mut dyn Write),
            store: store.as_mut(),
            store_accesses: a.store_accesses,
            only_detector: None,
            grouping: routing.as_ref(),
        },
    )?;
    if let Some(mut r) = rejects {
        r.flush()?;
    }
    eprint!("{}", summary.render());
    for (source, names) in unknown_names {
        let names = names.snapshot();
        if names.is_empty() {
            continue;
        }
        let total: u64 = names.values().sum();
        let mut top: Vec<(&String, &u64)> = names.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        eprintln!(
            "source {source}: {total} row(s) with {} action word(s) the mapping does not know, read as its default_action (add them to actions or actions_file):",
            names.len()
        );
        for (name, n) in top.iter().take(20) {
            eprintln!("  {n:>8}  {name}");
        }
    }
    let l = context.inline;
    if l != Default::default() {
        eprintln!(
            "context from the log's rows: {} patient(s) added, {} name(s) or address(es) filled, {} disagreement(s) with a feed (the feed kept), {} user name(s) linked",
            l.patients_added, l.facts_filled, l.conflicts, l.users_linked
        );
    }
    Ok(())
}

/// The `--rejects` file of a scan.
pub type Rejects = Option<std::io::BufWriter<std::fs::File>>;

/// A scan's findings output (`--out` or stdout) and its rejects file (`--rejects`).
pub fn scan_outputs(
    out: Option<&Path>,
    rejects: Option<&Path>,
) -> Result<(Box<dyn Write>, Rejects)> {
    let create =
        |p: &Path| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
    let out: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let rejects = rejects
        .map(create)
        .transpose()?
        .map(std::io::BufWriter::new);
    Ok((out, rejects))
}
