//! `phiwatch plugin test`: one plugin over an event file, for plugin authors. Prints the
//! plugin's findings as NDJSON and a summary: calls, failures with their messages, time per
//! access, state kept. With `--cases`, a file of cases (events in, findings out) instead:
//! pass or fail per case, and which of the plugin's categories no case shows.

use crate::pipeline::Pipeline;
use crate::plugin::{Compiled, PluginMetrics, PluginSet, PluginSpec, SHIPPED};
use crate::reload::Inputs;
use crate::scan::{scan_files, Sinks};
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// The plugin under test: `builtin:NAME` or a component file, pinned to what it is (the
/// author is testing their own build).
fn compile(plugin: &str, mut spec: PluginSpec, settings: Option<&Path>) -> Result<Arc<Compiled>> {
    if let Some(name) = plugin.strip_prefix("builtin:") {
        spec.builtin = Some(name.to_owned());
        spec.path = None;
    } else {
        let path = PathBuf::from(plugin);
        let pinned = PluginSpec::pinned_file(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        spec.sha256 = pinned.sha256;
        spec.path = pinned.path;
    }
    if let Some(f) = settings {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        spec.settings =
            toml::from_str(&text).with_context(|| format!("settings {}", f.display()))?;
    }
    Ok(Arc::new(Compiled::load(&spec, None)?))
}

pub fn run(o: TrialOptions, out: &mut dyn Write) -> Result<TrialSummary> {
    let compiled = compile(&o.plugin, o.spec, o.settings.as_deref())?;
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

/// A plugin's test cases (`plugin test --cases FILE`); paths are relative to the file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    /// FHIR context directory for every case (`--context` overrides it).
    context: Option<PathBuf>,
    /// The plugin's settings (`--settings` overrides them).
    settings: Option<toml::Table>,
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// AuditEvent NDJSON: the accesses of this case, judged from empty plugin state.
    events: PathBuf,
    /// Exactly the findings the plugin must raise; `[]` for a case that must raise none.
    #[serde(default)]
    expect: Vec<Expected>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    /// The AuditEvent id of the access the finding is about.
    event: String,
    category: String,
}

pub struct CasesReport {
    pub text: String,
    pub failed: usize,
    /// Declared categories with no case raising them, and "no negative case".
    pub uncovered: Vec<String>,
}

/// Runs every case of `file` against the plugin, each from empty state.
pub fn run_cases(
    plugin: &str,
    spec: PluginSpec,
    settings: Option<&Path>,
    file: &Path,
    mut inputs: Inputs,
) -> Result<CasesReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let cases: CasesFile =
        toml::from_str(&text).with_context(|| format!("cases {}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut spec = spec;
    if let (None, Some(t)) = (settings, &cases.settings) {
        spec.settings = t.clone();
    }
    let compiled = compile(plugin, spec, settings)?;
    if inputs.context.is_empty() {
        inputs.context = Inputs::fhir_dir(cases.context.as_ref().map(|c| base.join(c)));
    }
    let mut loaded = inputs.load()?;
    let detector = format!("plugin:{}", compiled.name);
    let mut t = format!(
        "plugin {} {}: {} case(s) from {}\n",
        compiled.description.name,
        compiled.description.version,
        cases.cases.len(),
        file.display()
    );
    let mut failed = 0;
    for case in &cases.cases {
        let set = PluginSet::new(std::slice::from_ref(&compiled), None, Default::default())?;
        let mut pipeline = Pipeline::new(&loaded.settings, &loaded.pack).with_plugins(set);
        let mut buf = Vec::new();
        let scanned = scan_files(
            &[base.join(&case.events)],
            &mut loaded.context,
            &mut pipeline,
            &mut Sinks {
                findings: &mut buf,
                rejects: None,
                store: None,
                store_accesses: false,
                only_detector: Some(&detector),
                grouping: None,
            },
        )
        .with_context(|| format!("case {:?}", case.name))?;
        let mut got = std::collections::BTreeSet::new();
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let f: crate::finding::Finding = serde_json::from_slice(line)?;
            got.insert(Expected {
                event: f.event_id,
                category: f.category,
            });
        }
        let want: std::collections::BTreeSet<Expected> = case.expect.iter().cloned().collect();
        let calls_failed: u64 = scanned.plugin_failures.values().sum();
        if got == want && calls_failed == 0 && scanned.problems.is_empty() {
            t.push_str(&format!("  ok    {}\n", case.name));
            continue;
        }
        failed += 1;
        t.push_str(&format!("  FAIL  {}\n", case.name));
        let show = |e: &Expected| format!("{} on {}", e.category, e.event);
        for e in want.difference(&got) {
            t.push_str(&format!("        missing    {}\n", show(e)));
        }
        for e in got.difference(&want) {
            t.push_str(&format!("        unexpected {}\n", show(e)));
        }
        if calls_failed > 0 {
            t.push_str(&format!("        {calls_failed} failed call(s)\n"));
        }
        for p in &scanned.problems {
            t.push_str(&format!("        skipped line {p}\n"));
        }
    }
    let mut uncovered: Vec<String> = compiled
        .description
        .categories
        .iter()
        .filter(|c| {
            !cases
                .cases
                .iter()
                .any(|k| k.expect.iter().any(|e| &e.category == *c))
        })
        .map(|c| format!("no case raises {c}"))
        .collect();
    if !cases.cases.iter().any(|k| k.expect.is_empty()) {
        uncovered.push("no negative case (expect = [])".into());
    }
    t.push_str(&format!(
        "{} passed, {failed} failed",
        cases.cases.len() - failed
    ));
    if uncovered.is_empty() {
        t.push_str("; every category has a case, and a negative one\n");
    } else {
        t.push_str(&format!("; coverage: {}\n", uncovered.join("; ")));
    }
    Ok(CasesReport {
        text: t,
        failed,
        uncovered,
    })
}
