//! `phiwatch demo`: a synthetic hospital with injected violations, scanned and scored.
//!
//! The hospital (16 departments, 3,000 staff, 30,000 patients, encounters, care teams,
//! appointments) and one day of BALP AuditEvents are generated from a seed, written as FHIR
//! NDJSON, then scanned through exactly the path `phiwatch scan` uses.

mod day;
mod feeds;
mod hospital;
mod names;
pub mod score;

pub use day::{CATEGORIES, HARD_NEGATIVES, PLUGIN_CATEGORIES};

use crate::context::load_context;
use crate::detect::PolicyPack;
use crate::finding::Finding;
use crate::pipeline::Pipeline;
use crate::scan::{scan_files, Sinks};
use crate::settings::Settings;
use crate::store::Store;
use anyhow::{Context as _, Result};
use chrono::TimeZone;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

pub struct DemoOptions {
    pub out: Option<PathBuf>,
    pub events: usize,
    pub seed: u64,
    pub generate_only: bool,
    /// Judge with the context as an HR roster, a crosswalk and HL7 v2 ADT (no FHIR).
    pub feeds: bool,
    /// Percent of events naming the user by login and the patient by MRN.
    pub identifier_percent: u32,
    /// Working days the events span.
    pub days: usize,
}

/// Where a generated data set lives.
pub struct DataSet {
    /// The hospital as FHIR NDJSON.
    pub context: PathBuf,
    /// The same hospital as an HR roster, a crosswalk and ADT files, with `feeds.toml`.
    pub feeds: PathBuf,
    pub events: PathBuf,
    pub truth: PathBuf,
}

impl DataSet {
    pub fn at(dir: &Path) -> Self {
        DataSet {
            context: dir.join("context"),
            feeds: dir.join("feeds"),
            events: dir.join("events.ndjson"),
            truth: dir.join("truth.ndjson"),
        }
    }

    /// The feeds' `[[context]]` tables, their paths made absolute.
    pub fn context_feeds(&self) -> Result<Vec<crate::context::feeds::ContextFeed>> {
        #[derive(serde::Deserialize)]
        struct T {
            context: Vec<crate::context::feeds::ContextFeed>,
        }
        let p = self.feeds.join("feeds.toml");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut t: T = toml::from_str(&text).with_context(|| format!("{}", p.display()))?;
        for f in &mut t.context {
            f.rebase(&self.feeds);
        }
        Ok(t.context)
    }
}

/// The share of events that name people by identifier when nothing else is said: real logs
/// mix logins and MRNs with references.
pub const DEFAULT_IDENTIFIER_PERCENT: u32 = 20;

/// Injected violations (and hard negatives) per category for `events` in all.
pub fn per_category(events: usize) -> usize {
    (events / 5000).clamp(20, 200)
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Shape {
    /// AuditEvents in all, spread over the days.
    pub events: usize,
    pub seed: u64,
    /// Patients; one staff member per ten of them (at least 3,000).
    pub patients: usize,
    /// Percent of events naming the user by login and the patient by MRN.
    pub identifier_percent: u32,
    /// Consecutive working days, from Tuesday 2026-03-10.
    pub days: usize,
}

impl Shape {
    pub fn new(events: usize, seed: u64) -> Self {
        Shape {
            events,
            seed,
            patients: 30_000,
            identifier_percent: DEFAULT_IDENTIFIER_PERCENT,
            days: 1,
        }
    }
}

/// The most working days a demo spans.
pub const MAX_DAYS: usize = 20;

/// Generates the hospital and one day into `dir`.
pub fn generate(dir: &Path, events: usize, seed: u64, settings: &Settings) -> Result<DataSet> {
    generate_shaped(dir, settings, &Shape::new(events, seed))
}

/// Local midnight of the demo's working days: Tuesday 2026-03-10 (no daylight-saving change
/// near it in the US) and the weekdays after it, so office staff keep office days.
fn day_starts(settings: &Settings, days: usize) -> Result<Vec<i64>> {
    use chrono::Datelike;
    let mut date = chrono::NaiveDate::from_ymd_opt(2026, 3, 10).expect("a valid date");
    let mut out = Vec::with_capacity(days);
    while out.len() < days {
        if !matches!(date.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
            let t = settings
                .timezone
                .with_ymd_and_hms(date.year(), date.month(), date.day(), 0, 0, 0)
                .single()
                .with_context(|| format!("demo day {date}: local midnight is ambiguous"))?;
            out.push(t.timestamp_millis());
        }
        date = date.succ_opt().expect("a valid date");
    }
    Ok(out)
}

/// Generates the hospital and its days into `dir`.
pub fn generate_shaped(dir: &Path, settings: &Settings, shape: &Shape) -> Result<DataSet> {
    anyhow::ensure!(
        (1..=MAX_DAYS).contains(&shape.days),
        "--days {}: between 1 and {MAX_DAYS}",
        shape.days
    );
    let ds = DataSet::at(dir);
    let starts = day_starts(settings, shape.days)?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(shape.seed);
    let size = hospital::Size {
        staff: (shape.patients / 10).max(3000),
        patients: shape.patients,
    };
    let mut h = hospital::Hospital::generate(&mut rng, &size, starts[0]);
    // Violations are spread over the days; each day has its share of the traffic.
    let k = per_category(shape.events).div_ceil(shape.days);
    let per_day = shape.events / shape.days;
    let mut plan = day::DayPlan::default();
    for (d, &start) in starts.iter().enumerate() {
        if d > 0 {
            h.advance_to(&mut rng, &size, start);
        }
        // The last day takes the remainder: `--events N` means N.
        let events = if d + 1 == shape.days {
            shape.events - per_day * d
        } else {
            per_day
        };
        plan.add_day(&mut h, &mut rng, events, k);
    }
    h.write_context(&ds.context)
        .with_context(|| format!("writing {}", ds.context.display()))?;
    h.write_feeds(&ds.feeds, settings.timezone)
        .with_context(|| format!("writing {}", ds.feeds.display()))?;
    plan.write(&h, &ds.events, &ds.truth, shape.identifier_percent)
        .with_context(|| format!("writing {}", ds.events.display()))?;
    Ok(ds)
}

pub fn run(o: &DemoOptions) -> Result<()> {
    let settings = Settings::default();
    let tmp;
    let dir = match &o.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_owned()
        }
    };
    let started = std::time::Instant::now();
    let shape = Shape {
        identifier_percent: o.identifier_percent,
        days: o.days,
        ..Shape::new(o.events, o.seed)
    };
    let ds = generate_shaped(&dir, &settings, &shape)?;
    eprintln!(
        "generated a hospital (3000 staff, 30000 patients) and {} AuditEvents over {} working day(s) in {:.1} s",
        o.events,
        o.days,
        started.elapsed().as_secs_f64()
    );
    if o.generate_only {
        println!("context: {}", ds.context.display());
        println!("feeds:   {}", ds.feeds.join("feeds.toml").display());
        println!("events:  {}", ds.events.display());
        println!("truth:   {}", ds.truth.display());
        return Ok(());
    }

    let (mut context, stats) = if o.feeds {
        crate::context::load_feeds(&ds.context_feeds()?, &settings, &[])?
    } else {
        load_context(&ds.context, &settings)?
    };
    eprint!("{}", stats.render());
    let pack = PolicyPack::embedded();
    let findings_path = dir.join("findings.ndjson");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&findings_path)
            .with_context(|| format!("creating {}", findings_path.display()))?,
    );
    // A fresh store each run: plugin state (baselines, first-seen pairs) from an earlier run
    // over the same day would make this run's accesses look familiar.
    let db = dir.join("phiwatch.db");
    for f in [
        db.clone(),
        dir.join("phiwatch.db-wal"),
        dir.join("phiwatch.db-shm"),
    ] {
        if f.exists() {
            std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    let mut store = Store::open(&db)?;
    let plugins = crate::plugin::PluginInputs::shipped().load()?;
    let plugins = crate::plugin::PluginSet::new(&plugins, Some(store.conn()), Default::default())?;
    let mut pipeline = Pipeline::new(&settings, &pack).with_plugins(plugins);
    let summary = scan_files(
        std::slice::from_ref(&ds.events),
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut out,
            rejects: None,
            store: Some(&mut store),
            store_accesses: false,
            only_detector: None,
            grouping: None,
        },
    )?;
    drop(out);
    eprint!("{}", summary.render());

    let findings = read_findings(&findings_path)?;
    let truth = std::fs::read_to_string(&ds.truth)?;
    let mut score = score::score(&truth, &findings)?;
    score.set_total_events(summary.events as usize);
    print!("{}", score.render());
    if o.out.is_some() {
        println!(
            "data set written to {}; scan it yourself with:\n  phiwatch scan --context {} --events {}",
            dir.display(),
            ds.context.display(),
            ds.events.display()
        );
    }
    Ok(())
}

pub fn read_findings(path: &Path) -> Result<Vec<Finding>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("reading a finding back"))
        .collect()
}
