//! `phiwatch policies` and `phiwatch policy`: check a policy pack, test it against cases,
//! explain one decision.

use super::DetectionArgs;
use anyhow::{Context as _, Result};
use clap::Subcommand;
use phiwatch::plugin::PluginInputs;
use phiwatch::reload::Inputs;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Run the test cases in DIR (*.toml) against the pack; reports policies without a
    /// positive or negative case. Exits 1 on any failure.
    Test {
        /// Directory of test files (policies/tests/ ships one per policy file).
        dir: PathBuf,
        /// Policy directory (default: the built-in pack).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Also fail when a policy has no positive or no negative case.
        #[arg(long)]
        require_coverage: bool,
    },
    /// Show, for one AuditEvent, the facts detection saw, the decision and every policy that
    /// determined it, with its explanation.
    Explain {
        #[command(flatten)]
        detection: DetectionArgs,
        /// A file holding one FHIR AuditEvent (JSON, pretty or on one line).
        #[arg(long)]
        event: PathBuf,
    },
    /// Replay the stored access log through a draft pack (and draft plugins) beside the pack
    /// in force: findings and alerts the draft adds and removes, per day, detector and user,
    /// with sample explanations. Changes nothing in the store.
    Backtest(super::backtest::BacktestArgs),
}

pub fn policies(dir: Option<PathBuf>) -> Result<()> {
    let loaded = Inputs {
        policies: dir,
        ..Inputs::default()
    }
    .load()?;
    for (what, pack) in [
        ("patient-access", &loaded.pack),
        ("PHI-folder", &loaded.file_pack),
    ] {
        println!(
            "{} {what} policies valid against the schema",
            pack.rules().len()
        );
        for r in pack.rules() {
            if r.forbid {
                println!(
                    "  forbid {:<32} {:<18} {:<8} {}:{}",
                    r.id, r.category, r.severity, r.file, r.line
                );
            } else {
                println!(
                    "  permit {:<32} {:<27} {}:{}",
                    r.id, "(explanation)", r.file, r.line
                );
            }
        }
    }
    Ok(())
}

pub fn policy_test(dir: &Path, policies: Option<PathBuf>, require_coverage: bool) -> Result<()> {
    let pack = Inputs {
        policies,
        ..Inputs::default()
    }
    .load()?
    .pack;
    let report = phiwatch::detect::policy_test::run(dir, &pack)?;
    print!("{}", report.render());
    let uncovered = !report.no_positive.is_empty() || !report.no_negative.is_empty();
    if !report.ok() || (require_coverage && uncovered) {
        std::process::exit(1);
    }
    Ok(())
}

pub fn policy_explain(a: DetectionArgs, event: &Path) -> Result<()> {
    let loaded = Inputs {
        rules: a.rules,
        policies: a.policies,
        context: Inputs::fhir_dir(a.context),
        journal: None,
        plugins: PluginInputs::default(),
    }
    .load()?;
    let text = std::fs::read(event).with_context(|| format!("reading {}", event.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            event.display(),
            phiwatch::decode::DecodeError::from_json(&e)
        )
    })?;
    let line = serde_json::to_vec(&value)?;
    let ev = match phiwatch::decode::decode_audit_event(&line)
        .map_err(|e| anyhow::anyhow!("{}: {e}", event.display()))?
    {
        phiwatch::decode::Decoded::Access(ev) => ev,
        // The first patient's access: the others are judged the same way.
        phiwatch::decode::Decoded::Many { mut accesses, .. } => accesses.swap_remove(0),
        phiwatch::decode::Decoded::NoPatient => {
            println!("this AuditEvent names no patient: there is nothing to judge");
            return Ok(());
        }
    };
    let mut enricher = phiwatch::enrich::Enricher::new(&loaded.settings);
    let enriched = enricher.enrich(&loaded.context, ev);
    let mut detector = phiwatch::detect::Detector::new(&loaded.pack);
    print!(
        "{}",
        phiwatch::detect::explain::facts(&enriched, &loaded.context)
    );
    let (allowed, reasons) = detector
        .determining(&enriched, &loaded.context)
        .map_err(|e| anyhow::anyhow!("evaluation error: {e}"))?;
    let mut findings = Vec::new();
    detector.findings(&enriched, &loaded.context, &mut findings);
    if allowed {
        println!("decision: explained (no finding), by:");
        for r in &reasons {
            println!("  permit {r}");
        }
    } else if reasons.is_empty() {
        println!("decision: unexplained: no permit matched and no forbid fired (default-deny)");
    } else {
        println!("decision: finding(s)");
    }
    for f in &findings {
        println!(
            "  {} [{} {}] {}",
            f.detector, f.category, f.severity, f.explanation
        );
    }
    Ok(())
}

pub fn run(c: PolicyCmd) -> Result<()> {
    match c {
        PolicyCmd::Test {
            dir,
            policies,
            require_coverage,
        } => policy_test(&dir, policies, require_coverage),
        PolicyCmd::Explain { detection, event } => policy_explain(detection, &event),
        PolicyCmd::Backtest(a) => super::backtest::run(a),
    }
}
