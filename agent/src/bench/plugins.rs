//! `phiwatch bench --plugins`: what calling a plugin costs per access, beside the same rule
//! written in native Rust, in the same run over the same enriched accesses.
//!
//! The plugin is the tutorial's night-export rule (exports and prints before 6 a.m.): so
//! trivial that nearly all of its time is the host's work of handing accesses over (building
//! the WIT batch, copying it into the sandbox, the call, reading findings back).

use crate::context::load_context;
use crate::decode::{decode_audit_event, Decoded};
use crate::demo;
use crate::enrich::Enricher;
use crate::event::{AccessEvent, Action};
use crate::plugin::{Compiled, PluginMetrics, PluginSet, PluginSpec};
use crate::settings::Settings;
use anyhow::{Context as _, Result};
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `f` over all accesses until at least `min` has passed; ns per access.
fn per_access(accesses: usize, min: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let started = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || started.elapsed() < min {
        f();
        rounds += 1;
    }
    started.elapsed().as_nanos() as f64 / (rounds as f64 * accesses as f64)
}

/// `guests`: plugin components (Python, JavaScript, any language) measured beside the
/// shipped Rust one, in batches of 1024; their rules differ, so their findings do too.
/// The plugin of `spec` called over every access until `min` has passed: ns per access and
/// the findings of one pass.
fn calls(
    spec: &PluginSpec,
    context: &crate::context::ContextStore,
    pending: &[crate::plugin::Pending],
    accesses: &[AccessEvent],
    min: Duration,
) -> Result<(f64, usize)> {
    let compiled = Arc::new(Compiled::load(spec, None)?);
    let name = compiled.name.to_string();
    let mut set = PluginSet::new(&[compiled], None, Arc::new(PluginMetrics::default()))?;
    let mut findings = Vec::new();
    let (mut changes, mut failures) = (Vec::new(), Vec::new());
    let mut count = 0usize;
    let ns = per_access(accesses.len(), min, || {
        findings.clear();
        changes.clear();
        set.run(
            context,
            pending,
            accesses,
            &mut findings,
            &mut changes,
            &mut failures,
        );
        count = findings.len();
    });
    anyhow::ensure!(
        failures.is_empty(),
        "{name}: plugin calls failed: {failures:?}"
    );
    Ok((ns, count))
}

pub fn run(events: usize, guests: &[std::path::PathBuf]) -> Result<String> {
    let settings = Settings::default();
    let dir = tempfile::tempdir()?;
    let ds = demo::generate(dir.path(), events, 7, &settings)?;
    let (context, _) = load_context(&ds.context, &settings).context("loading context")?;
    let mut enricher = Enricher::new(&settings);
    let mut accesses: Vec<AccessEvent> = Vec::new();
    let mut pending = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(&ds.events)?).lines() {
        if let Ok(Decoded::Access(ev)) = decode_audit_event(line?.as_bytes()) {
            let e = enricher.enrich(&context, ev);
            pending.push(crate::plugin::Pending {
                ix: accesses.len(),
                user: e.user,
                patient: e.patient,
                facts: e.facts,
            });
            accesses.push(e.event);
        }
    }
    let n = accesses.len();
    let min = Duration::from_millis(1500);

    // The same rule natively, over the same facts.
    let mut flagged = 0usize;
    let native = per_access(n, min, || {
        for p in &pending {
            let a = &accesses[p.ix];
            if matches!(a.action, Action::Export | Action::Print) && p.facts.hour < 6 {
                flagged += 1;
            }
        }
        std::hint::black_box(&mut flagged);
    });

    let mut out = format!(
        "plugin call cost over {n} enriched accesses (the night-export rule; release build, one thread)\n  {:<40} {:>10} {:>12} {:>10}\n",
        "path", "ns/access", "overhead ns", "findings"
    );
    out.push_str(&format!(
        "  {:<40} {native:>10.1} {:>12} {:>10}\n",
        "native Rust (baseline)", "-", "-"
    ));
    let mut builder = crate::plugin::batch::Builder::new(&context);
    let build = per_access(n, min, || {
        for (i, chunk) in pending.chunks(1024).enumerate() {
            std::hint::black_box(builder.build(chunk, &accesses, (i * 1024) as u64, false, false));
        }
    });
    out.push_str(&format!(
        "  {:<40} {build:>10.1} {:>12} {:>10}\n",
        "building batches of 1024", "-", "-"
    ));
    let mut ring = crate::plugin::batch::Ring::new(crate::plugin::batch::RING_CAPACITY);
    let ring_ns = per_access(n, min, || {
        for (i, p) in pending.iter().enumerate() {
            ring.push(i as u64, &accesses[p.ix], p);
        }
    });
    out.push_str(&format!(
        "  {:<40} {ring_ns:>10.1} {:>12} {:>10}\n",
        "recent-access ring", "-", "-"
    ));
    for batch in [1usize, 64, 1024] {
        let mut spec = PluginSpec::builtin("night-export");
        spec.batch = batch;
        spec.timeout_ms = 10_000;
        let (ns, count) = calls(&spec, &context, &pending, &accesses, min)?;
        out.push_str(&format!(
            "  {:<40} {ns:>10.1} {:>12.1} {count:>10}\n",
            format!("plugin, batches of {batch}"),
            ns - native
        ));
    }
    for path in guests {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut spec = PluginSpec::file(path);
        spec.sha256 = Some(crate::plugin::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            &bytes,
        )));
        spec.batch = 1024;
        spec.timeout_ms = 60_000;
        spec.memory_mb = 256;
        let (ns, count) = calls(&spec, &context, &pending, &accesses, min)?;
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        out.push_str(&format!(
            "  {:<40} {ns:>10.1} {:>12.1} {count:>10}\n",
            format!("{name}, batches of 1024"),
            ns - native
        ));
    }
    out.push_str("  overhead = plugin path minus the native baseline, per access (target: under 1,000 ns at batches of 64 and 1024)\n");
    Ok(out)
}
