//! `phiwatch plugin test`: one plugin over an event file, for plugin authors. Prints the
//! plugin's findings as NDJSON and a summary: calls, failures with their messages, time per
//! access, state kept.

use crate::pipeline::Pipeline;
use crate::plugin::{Compiled, PluginMetrics, PluginSet, PluginSpec, SHIPPED};
use crate::reload::Inputs;
use crate::scan::{scan_files, Sinks};
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

pub struct TrialOptions {
    /// A component file, or `builtin:NAME`.
    pub plugin: String,
    pub events: Vec<PathBuf>,
    pub inputs: Inputs,
    /// TOML file with the plugin's settings table.
    pub settings: Option<PathBuf>,
    pub spec: PluginSpec,
}

pub struct TrialSummary {
    pub accesses: u64,
    pub findings: u64,
    /// Failed calls.
    pub failed: u64,
    pub text: String,
}

pub fn run(o: TrialOptions, out: &mut dyn Write) -> Result<TrialSummary> {
    let mut spec = o.spec;
    if let Some(name) = o.plugin.strip_prefix("builtin:") {
        spec.builtin = Some(name.to_owned());
        spec.path = None;
    } else {
        let path = PathBuf::from(&o.plugin);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // The author is testing their own build: pin whatever it is.
        spec.sha256 = Some(crate::plugin::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            &bytes,
        )));
        spec.path = Some(path);
    }
    if let Some(f) = &o.settings {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        spec.settings =
            toml::from_str(&text).with_context(|| format!("settings {}", f.display()))?;
    }
    let compiled = Arc::new(Compiled::load(&spec, None)?);
    let mut loaded = o.inputs.load()?;
    let metrics = Arc::new(PluginMetrics::default());
    let set = PluginSet::new(std::slice::from_ref(&compiled), None, metrics.clone())?;
    let mut pipeline = Pipeline::new(&loaded.settings, &loaded.pack).with_plugins(set);
    let detector = format!("plugin:{}", compiled.name);
    let scanned = scan_files(
        &o.events,
        &mut loaded.context,
        &mut pipeline,
        &mut Sinks {
            findings: out,
            rejects: None,
            store: None,
            store_accesses: false,
            only_detector: Some(&detector),
            grouping: None,
        },
    )?;
    let c = metrics
        .snapshot()
        .remove(&*compiled.name)
        .unwrap_or_default();
    let d = &compiled.description;
    let failed: u64 = scanned.plugin_failures.values().sum();
    let mut t = format!(
        "plugin {} {} ({}), sha256 {}\n  categories: {}\n",
        d.name,
        d.version,
        compiled.source,
        compiled.sha256,
        d.categories.join(", ")
    );
    for p in &scanned.problems {
        t.push_str(&format!("  skipped line {p}\n"));
    }
    t.push_str(&format!(
        "  {} accesses in {} calls: {} findings, {failed} failed calls\n",
        scanned.events, c.calls, scanned.findings
    ));
    for f in scanned.plugin_failure_examples.iter().take(5) {
        t.push_str(&format!(
            "  failed {}\n",
            f.split_once(' ').map_or(f.as_str(), |(_, rest)| rest)
        ));
    }
    t.push_str(&format!(
        "  {:.2} µs per access inside the plugin, {:.1} s in all; state {} bytes; {} log lines over budget\n",
        c.busy.as_secs_f64() * 1e6 / scanned.events.max(1) as f64,
        scanned.elapsed.as_secs_f64(),
        c.state_bytes,
        c.logs_dropped
    ));
    Ok(TrialSummary {
        accesses: scanned.events,
        findings: scanned.findings,
        failed,
        text: t,
    })
}

/// `phiwatch plugin list`: the shipped plugins with their pins.
pub fn list() -> Result<String> {
    let mut s = String::new();
    for (name, bytes) in SHIPPED {
        let c = Compiled::load(&PluginSpec::builtin(name), None)?;
        s.push_str(&format!(
            "{name:<16} {:<8} sha256 {} ({} KiB)\n  categories: {}; needs: {}\n",
            c.description.version,
            crate::plugin::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes)),
            bytes.len() / 1024,
            c.description.categories.join(", "),
            if c.description.needs.is_empty() {
                "nothing beyond the defaults".to_owned()
            } else {
                format!("{:?}", c.description.needs).to_lowercase()
            }
        ));
    }
    Ok(s)
}

/// `phiwatch plugin export DIR`: writes the shipped components out, to inspect or pin.
pub fn export(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for (name, bytes) in SHIPPED {
        let p = dir.join(format!("{name}.wasm"));
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        out.push(p);
    }
    Ok(out)
}
