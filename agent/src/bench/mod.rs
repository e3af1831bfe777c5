//! `phiwatch bench`: stage-by-stage throughput on one generated day, each stage beside the
//! raw NDJSON parse rate of the same file measured in the same run, on one thread.

pub mod backtest;
pub mod console;
pub mod context;
pub mod csv;
pub mod fleet;
pub mod fleet_nodes;
pub mod live;
pub mod plugins;
pub mod postgres;
pub mod udp;

use crate::context::load_context;
use crate::decode::{decode_audit_event, Decoded};
use crate::demo;
use crate::detect::{Detector, PolicyPack};
use crate::enrich::{EnrichedAccess, Enricher};
use crate::pipeline::Pipeline;
use crate::scan::{scan_files, Sinks};
use crate::settings::Settings;
use crate::store::Store;
use anyhow::{Context as _, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

fn for_each_line(path: &Path, mut f: impl FnMut(&[u8])) -> Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut line = Vec::with_capacity(4096);
    let mut n = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(n);
        }
        n += 1;
        f(&line);
    }
}

struct Row {
    stage: &'static str,
    events: u64,
    secs: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }
}

/// A generated day's context with the settings, the built-in pack and the shipped plugins.
pub(crate) fn day_with_plugins(ds: &demo::DataSet) -> Result<crate::reload::Loaded> {
    crate::reload::Inputs {
        context: crate::reload::Inputs::fhir_dir(Some(ds.context.clone())),
        plugins: crate::plugin::PluginInputs::shipped(),
        ..crate::reload::Inputs::default()
    }
    .load()
    .context("loading the day's context and the shipped plugins")
}

/// Where a benchmark keeps its generated data: `dir` (created if missing), or a temporary
/// directory that lives as long as the returned guard.
pub fn work_dir(dir: Option<&Path>) -> Result<(std::path::PathBuf, Option<tempfile::TempDir>)> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.to_owned(), None)
        }
        None => {
            let tmp = tempfile::tempdir()?;
            (tmp.path().to_owned(), Some(tmp))
        }
    })
}

pub fn run(events: usize, dir: Option<&Path>) -> Result<()> {
    let settings = Settings::default();
    let (dir, _tmp) = work_dir(dir)?;
    let ds = demo::DataSet::at(&dir);
    if !ds.events.exists() || count_lines(&ds.events)? != events as u64 {
        eprintln!(
            "generating a day of {events} events in {} ...",
            dir.display()
        );
        demo::generate(&dir, events, 7, &settings)?;
    }
    let bytes = std::fs::metadata(&ds.events)?.len();
    let (mut context, _) = load_context(&ds.context, &settings).context("loading context")?;
    let pack = PolicyPack::embedded();
    let mut rows = Vec::new();
    let baseline = raw_stages(&ds.events, &mut rows)?;
    let (n, memo_evals) = judge_stages(&ds.events, &settings, &context, &pack, events, &mut rows)?;
    let summary = pipeline_stages(&ds.events, &settings, &mut context, &pack, &mut rows)?;

    let whole = rows[rows.len() - 2].rate();
    println!(
        "phiwatch bench: {} events, {:.0} MB, one thread; ratio = stage rate / raw parse rate",
        summary.events,
        bytes as f64 / 1e6
    );
    println!("  {:<42} {:>12} {:>8}", "stage", "events/s", "ratio");
    for r in &rows {
        println!(
            "  {:<42} {:>12.0} {:>8.2}",
            r.stage,
            r.rate(),
            r.rate() / baseline
        );
    }
    println!(
        "  findings {}, distinct fact keys evaluated by Cedar {} ({:.4} per event)",
        summary.findings,
        memo_evals,
        memo_evals as f64 / n.max(1) as f64
    );
    println!(
        "  whole pipeline: {whole:.0} events/s (target >= 100000); raw parse / pipeline rate = {:.2} (target <= 5)",
        baseline / whole.max(1e-9),
    );
    Ok(())
}

/// Reading and parsing alone: the baseline the other stages are compared with.
fn raw_stages(path: &Path, rows: &mut Vec<Row>) -> Result<f64> {
    // Warm the page cache so every stage reads the file from memory.
    for_each_line(path, |_| {})?;

    let t = Instant::now();
    let mut ok = 0u64;
    let n = for_each_line(path, |l| {
        ok += u64::from(serde_json::from_slice::<serde_json::Value>(l).is_ok());
    })?;
    rows.push(Row {
        stage: "raw parse (serde_json::Value)",
        events: n,
        secs: t.elapsed().as_secs_f64(),
    });
    let baseline = rows[0].rate();
    anyhow::ensure!(ok == n, "{} lines failed the raw parse", n - ok);

    let t = Instant::now();
    let n = for_each_line(path, |l| {
        let _ = serde_json::from_slice::<serde::de::IgnoredAny>(l);
    })?;
    rows.push(Row {
        stage: "raw parse (validate only)",
        events: n,
        secs: t.elapsed().as_secs_f64(),
    });
    Ok(baseline)
}

/// Decoding, enrichment and Cedar, each on its own; returns the events judged and how many
/// distinct fact keys Cedar evaluated.
fn judge_stages(
    path: &Path,
    settings: &Settings,
    context: &crate::context::ContextStore,
    pack: &PolicyPack,
    events: usize,
    rows: &mut Vec<Row>,
) -> Result<(u64, u64)> {
    let t = Instant::now();
    let mut decoded = Vec::with_capacity(events);
    for_each_line(path, |l| {
        if let Ok(Decoded::Access(a)) = decode_audit_event(l) {
            decoded.push(a);
        }
    })?;
    rows.push(Row {
        stage: "decode (read + parse + AccessEvent)",
        events: decoded.len() as u64,
        secs: t.elapsed().as_secs_f64(),
    });

    let mut enricher = Enricher::new(settings);
    let n = decoded.len() as u64;
    let t = Instant::now();
    let enriched: Vec<EnrichedAccess> = decoded
        .into_iter()
        .map(|a| enricher.enrich(context, a))
        .collect();
    rows.push(Row {
        stage: "enrich",
        events: n,
        secs: t.elapsed().as_secs_f64(),
    });

    let mut detector = Detector::new(pack);
    let mut out = Vec::new();
    let t = Instant::now();
    for a in &enriched {
        detector.findings(a, context, &mut out);
    }
    rows.push(Row {
        stage: "detect: Cedar, memoised by fact key",
        events: n,
        secs: t.elapsed().as_secs_f64(),
    });
    let memo_evals = detector.stats.evaluations;

    let sample = enriched.len().min(20_000);
    let mut raw = Detector::new(pack);
    let t = Instant::now();
    for a in &enriched[..sample] {
        std::hint::black_box(raw.judge_uncached(a, context));
    }
    rows.push(Row {
        stage: "detect: Cedar, one evaluation per event",
        events: sample as u64,
        secs: t.elapsed().as_secs_f64(),
    });
    drop(enriched);
    Ok((n, memo_evals))
}

/// The whole scan into a SQLite store, without and with the access log.
fn pipeline_stages(
    path: &Path,
    settings: &Settings,
    context: &mut crate::context::ContextStore,
    pack: &PolicyPack,
    rows: &mut Vec<Row>,
) -> Result<crate::scan::ScanSummary> {
    let store_dir = tempfile::tempdir()?;
    let mut summary = None;
    for (stage, store_accesses) in [
        ("whole pipeline (scan, SQLite store)", false),
        ("whole pipeline + access log in SQLite", true),
    ] {
        let mut store = Store::open(&store_dir.path().join(format!("bench-{store_accesses}.db")))?;
        let mut pipeline = Pipeline::new(settings, pack);
        let mut sink = std::io::sink();
        let t = Instant::now();
        let s = scan_files(
            &[path.to_owned()],
            context,
            &mut pipeline,
            &mut Sinks {
                findings: &mut sink,
                rejects: None,
                store: Some(&mut store),
                store_accesses,
                only_detector: None,
                grouping: None,
            },
        )?;
        rows.push(Row {
            stage,
            events: s.events,
            secs: t.elapsed().as_secs_f64(),
        });
        summary.get_or_insert(s);
    }
    Ok(summary.expect("ran"))
}

fn count_lines(path: &Path) -> Result<u64> {
    for_each_line(path, |_| {})
}
