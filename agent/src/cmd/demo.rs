//! `phiwatch demo`: a synthetic hospital, scanned and scored.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Write the generated data set (context/, events.ndjson, truth.ndjson) and findings here
    /// instead of a temporary directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of AuditEvents in all, spread over the days.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Consecutive working days of traffic (from Tuesday 2026-03-10, weekends skipped).
    /// Over several days, baselines warm up and routine patterns repeat, as in a real
    /// hospital's first weeks.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=phiwatch::demo::MAX_DAYS as u64))]
    days: u64,
    /// Random seed; the same seed gives the same hospital.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Only generate the data set; do not scan it.
    #[arg(long)]
    generate_only: bool,
    /// Judge with the hospital's context as a hospital without FHIR hands it over: an HR
    /// roster CSV, an identity crosswalk CSV and HL7 v2 ADT messages (feeds/ in the data set).
    #[arg(long)]
    feeds: bool,
    /// Percent of the day's AuditEvents that name the user by EHR login and the patient by
    /// MRN (identifiers) rather than by FHIR reference; a third of those logins are written
    /// in upper case, as EHR extracts write them.
    #[arg(long, default_value_t = phiwatch::demo::DEFAULT_IDENTIFIER_PERCENT, value_parser = clap::value_parser!(u32).range(0..=100))]
    identifiers: u32,
}

pub fn run(a: DemoArgs) -> Result<()> {
    phiwatch::demo::run(&phiwatch::demo::DemoOptions {
        out: a.out,
        events: a.events,
        seed: a.seed,
        generate_only: a.generate_only,
        feeds: a.feeds,
        identifier_percent: a.identifiers,
        days: a.days as usize,
    })
}
