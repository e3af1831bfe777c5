//! Per-event cost of each stage on the clinic fixture, beside a raw JSON parse of the same
//! lines: `cargo bench -p phiwatch --bench stages`. For whole-day throughput on a generated
//! 1,000,000-event day, run `phiwatch bench`.

use phiwatch::context::{load_context, ContextStore};
use phiwatch::decode::{decode_audit_event, Decoded};
use phiwatch::detect::{Detector, PolicyPack};
use phiwatch::enrich::{EnrichedAccess, Enricher};
use phiwatch::event::AccessEvent;
use phiwatch::settings::Settings;
use std::path::Path;
use std::sync::LazyLock;

fn main() {
    divan::main();
}

struct Fixture {
    lines: Vec<Vec<u8>>,
    context: ContextStore,
    settings: Settings,
    pack: PolicyPack,
}

static FX: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/clinic");
    let settings = Settings::default();
    let (context, _) = load_context(&dir.join("context"), &settings).expect("context");
    let lines = std::fs::read_to_string(dir.join("events.ndjson"))
        .expect("events")
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .filter(|l| matches!(decode_audit_event(l), Ok(Decoded::Access(_))))
        .collect();
    Fixture {
        lines,
        context,
        settings,
        pack: PolicyPack::embedded(),
    }
});

fn decoded() -> Vec<AccessEvent> {
    FX.lines
        .iter()
        .filter_map(|l| match decode_audit_event(l) {
            Ok(Decoded::Access(a)) => Some(a),
            _ => None,
        })
        .collect()
}

fn enriched() -> Vec<EnrichedAccess> {
    let mut e = Enricher::new(&FX.settings);
    decoded()
        .into_iter()
        .map(|a| e.enrich(&FX.context, a))
        .collect()
}

#[divan::bench]
fn raw_parse_value() -> usize {
    FX.lines
        .iter()
        .filter(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok())
        .count()
}

#[divan::bench]
fn decode() -> usize {
    FX.lines
        .iter()
        .filter(|l| decode_audit_event(l).is_ok())
        .count()
}

#[divan::bench]
fn enrich(b: divan::Bencher) {
    b.with_inputs(decoded).bench_local_values(|events| {
        let mut e = Enricher::new(&FX.settings);
        events.into_iter().map(|a| e.enrich(&FX.context, a)).count()
    });
}

#[divan::bench]
fn detect_memoised(b: divan::Bencher) {
    let events = enriched();
    let mut d = Detector::new(&FX.pack);
    let mut out = Vec::new();
    b.bench_local(|| {
        out.clear();
        for a in &events {
            d.findings(a, &FX.context, &mut out);
        }
        out.len()
    });
}

#[divan::bench]
fn detect_per_event_cedar(b: divan::Bencher) {
    let events = enriched();
    let mut d = Detector::new(&FX.pack);
    b.bench_local(|| {
        events
            .iter()
            .map(|a| d.judge_uncached(a, &FX.context).len())
            .sum::<usize>()
    });
}
