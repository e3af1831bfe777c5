//! The plugin sandbox contains hostile plugins: each misbehaviour fails only that plugin's
//! call, is reported with its kind, the other plugin in the same set keeps producing findings,
//! a fresh instance serves the next batch, and host memory stays bounded.

use phiwatch::context::ContextStore;
use phiwatch::detect::PolicyPack;
use phiwatch::event::{AccessEvent, Action};
use phiwatch::pipeline::{Judged, Pipeline};
use phiwatch::plugin::{Compiled, FailureKind, PluginMetrics, PluginSet, PluginSpec, BUILD_DIR};
use phiwatch::settings::Settings;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn wasm(name: &str) -> PathBuf {
    PathBuf::from(BUILD_DIR).join(format!("{name}.wasm"))
}

fn sha(path: &std::path::Path) -> String {
    use sha2::Digest;
    phiwatch::plugin::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn spec(file: &str, settings: &str) -> PluginSpec {
    let path = if file.ends_with(".wat") {
        phiwatch_repo().join("tests/plugins").join(file)
    } else {
        wasm(file)
    };
    let mut s = PluginSpec::file(&path);
    s.sha256 = Some(sha(&path));
    s.settings = toml::from_str(settings).unwrap();
    s
}

fn phiwatch_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hostile(settings: &str, tweak: impl FnOnce(&mut PluginSpec)) -> Arc<Compiled> {
    let mut s = spec("hostile_plugin", settings);
    tweak(&mut s);
    Arc::new(Compiled::load(&s, None).expect("hostile plugin loads"))
}

/// The tutorial plugin, as the well-behaved neighbour: it flags exports at night.
fn neighbour() -> Arc<Compiled> {
    Arc::new(Compiled::load(&spec("night_export", ""), None).unwrap())
}

/// Night exports: every one is a night-export finding for the well-behaved plugin.
fn events(batch: usize, n: usize) -> Vec<AccessEvent> {
    (0..n)
        .map(|i| AccessEvent {
            id: format!("b{batch}-e{i}"),
            time_ms: 1_773_111_600_000 + i as i64, // 2026-03-10 03:00 UTC
            user: format!("u{}", i % 7),
            patient: Some(format!("p{i}")),
            action: Action::Export,
            action_code: 'R',
            subtype: "export".into(),
            break_glass: false,
            workstation: String::new(),
            succeeded: true,
            ..Default::default()
        })
        .collect()
}

struct Harness {
    ctx: ContextStore,
    settings: Settings,
    pack: PolicyPack,
    metrics: Arc<PluginMetrics>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            ctx: ContextStore::default(),
            settings: Settings {
                timezone: chrono_tz::UTC,
                ..Settings::default()
            },
            pack: PolicyPack::embedded(),
            metrics: Arc::new(PluginMetrics::default()),
        }
    }

    /// Runs `batches` batches of 20 accesses through a pipeline holding `plugins`.
    fn run(&self, plugins: &[Arc<Compiled>], batches: usize) -> Vec<Judged> {
        let set = PluginSet::new(plugins, None, self.metrics.clone()).unwrap();
        let mut p = Pipeline::new(&self.settings, &self.pack).with_plugins(set);
        (0..batches)
            .map(|b| {
                let mut j = Judged::default();
                for ev in events(b, 20) {
                    p.access(&self.ctx, ev, &mut j);
                }
                p.finish(&self.ctx, &mut j);
                j
            })
            .collect()
    }
}

fn by(j: &Judged, detector: &str) -> usize {
    j.findings.iter().filter(|f| f.detector == detector).count()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One misbehaviour on the first call: that call fails with `kind`; the neighbour's
/// findings arrive in every batch; the second batch gets a fresh, well-behaved instance.
fn contained(mode: &str, kind: FailureKind, tweak: impl FnOnce(&mut PluginSpec)) -> Vec<Judged> {
    let h = Harness::new();
    let plugins = [
        hostile(&format!("mode = \"{mode}\"\nfail_first = 1"), tweak),
        neighbour(),
    ];
    let judged = h.run(&plugins, 2);
    let first = &judged[0];
    assert_eq!(
        first.plugin_failures.len(),
        1,
        "{mode}: {:?}",
        first.plugin_failures
    );
    let f = &first.plugin_failures[0];
    assert_eq!(f.plugin, "hostile");
    assert_eq!(f.kind, kind, "{mode}: {}", f.message);
    assert_eq!(
        by(first, "plugin:hostile"),
        0,
        "{mode}: a failed call's findings are dropped"
    );
    for j in &judged {
        assert_eq!(
            by(j, "plugin:night-export"),
            20,
            "{mode}: the neighbour kept working"
        );
        assert!(
            j.findings.iter().all(|f| f.category != "hostile_leak"),
            "{mode}: leaked"
        );
    }
    assert!(
        judged[1].plugin_failures.is_empty(),
        "{mode}: {:?}",
        judged[1].plugin_failures
    );
    assert_eq!(
        by(&judged[1], "plugin:hostile"),
        20,
        "{mode}: the restarted instance serves the next batch"
    );
    let m = h.metrics.snapshot();
    assert_eq!(
        m["hostile"].failures.get(kind.as_str()),
        Some(&1),
        "{mode}: failure counted"
    );
    judged
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    let started = Instant::now();
    contained("loop", FailureKind::Deadline, |s| s.timeout_ms = 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn memory_growth_stops_at_the_cap_and_host_memory_stays_bounded() {
    contained("memory", FailureKind::Memory, |s| s.memory_mb = 32);
    // Forty more rounds of a plugin filling its 32 MiB: the host must not keep any of it.
    let h = Harness::new();
    let plugins = [hostile("mode = \"memory\"", |s| s.memory_mb = 32)];
    h.run(&plugins, 5);
    let before = rss_kib();
    let judged = h.run(&plugins, 40);
    let grown = rss_kib().saturating_sub(before);
    assert!(judged.iter().all(|j| j.plugin_failures.len() == 1));
    assert!(
        grown < 64 * 1024,
        "host RSS grew by {grown} KiB over 40 capped failures"
    );
}

#[test]
fn deep_recursion_overflows_the_wasm_stack_not_the_host() {
    contained("recursion", FailureKind::StackOverflow, |_| {});
}

#[test]
fn panics_trap() {
    contained("trap", FailureKind::Trap, |_| {});
}

#[test]
fn too_many_findings_fail_the_call() {
    contained("output", FailureKind::Output, |s| s.max_findings = 1000);
}

#[test]
fn huge_output_is_bounded_by_the_memory_cap() {
    contained("huge_output", FailureKind::Memory, |s| s.memory_mb = 64);
}

#[test]
fn no_file_system_unless_granted() {
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret.txt"), "patient list").unwrap();
    let target = secret.path().join("secret.txt").display().to_string();
    let judged = contained("file", FailureKind::Trap, |s| {
        s.settings = toml::from_str(&format!(
            "mode = \"file\"\nfail_first = 1\ntarget = \"{target}\""
        ))
        .unwrap();
    });
    assert!(
        judged[0].plugin_failures[0].message.contains("wasm"),
        "{}",
        judged[0].plugin_failures[0].message
    );

    // Granted read access to the directory (under the name /data), the same plugin reads it.
    let h = Harness::new();
    let granted = hostile("mode = \"file\"\ntarget = \"/data/secret.txt\"", |s| {
        s.grant.dirs = vec![phiwatch::plugin::DirGrant {
            host: secret.path().to_owned(),
            guest: "/data".into(),
        }];
    });
    let judged = h.run(&[granted], 1);
    assert!(
        judged[0]
            .findings
            .iter()
            .any(|f| f.category == "hostile_leak" && f.explanation.contains("patient list")),
        "{:?} {:?}",
        judged[0]
            .findings
            .iter()
            .map(|f| &f.explanation)
            .collect::<Vec<_>>(),
        judged[0].plugin_failures
    );
}

#[test]
fn no_network_unless_granted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    contained("socket", FailureKind::Trap, |s| {
        s.settings = toml::from_str(&format!(
            "mode = \"socket\"\nfail_first = 1\ntarget = \"{addr}\""
        ))
        .unwrap();
    });
    assert!(
        listener.accept().is_err(),
        "the plugin reached the listener"
    );

    let h = Harness::new();
    let granted = hostile(&format!("mode = \"socket\"\ntarget = \"{addr}\""), |s| {
        s.grant.connect = vec![addr]
    });
    let judged = h.run(&[granted], 1);
    assert!(
        judged[0]
            .findings
            .iter()
            .any(|f| f.category == "hostile_leak"),
        "{:?}",
        judged[0].plugin_failures
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        listener.accept().is_ok(),
        "granted connection never arrived"
    );
}

#[test]
fn no_environment_or_clock_unless_granted() {
    // SAFETY: set before any plugin thread reads the environment; nothing else in this test
    // binary reads this variable.
    unsafe { std::env::set_var("PHIWATCH_TEST_SECRET", "s3cret") };
    contained("env", FailureKind::Trap, |_| {});
    contained("clock", FailureKind::Trap, |_| {});

    let h = Harness::new();
    let env = hostile("mode = \"env\"", |s| {
        s.grant.env = vec!["PHIWATCH_TEST_SECRET".into()]
    });
    let clock = hostile("mode = \"clock\"", |s| s.grant.clock = true);
    for (p, needle) in [(env, "PHIWATCH_TEST_SECRET=s3cret"), (clock, "wall clock")] {
        let judged = h.run(&[p], 1);
        assert!(
            judged[0]
                .findings
                .iter()
                .any(|f| f.explanation.contains(needle)),
            "{needle}: {:?}",
            judged[0].plugin_failures
        );
    }
}

#[test]
fn state_quota_holds() {
    let judged = contained("state", FailureKind::Trap, |s| s.state_mb = 2);
    let bytes = judged
        .iter()
        .flat_map(|j| &j.plugin_state)
        .filter_map(|(_, (k, v))| v.as_ref().map(|v| k.len() + v.len()))
        .sum::<usize>();
    assert!(bytes <= 2 << 20, "state written: {bytes} bytes");
}

#[test]
fn log_floods_are_cut_to_a_budget() {
    let h = Harness::new();
    let p = hostile("mode = \"log\"\nfail_first = 1", |s| s.timeout_ms = 20_000);
    let judged = h.run(&[p], 1);
    assert!(
        judged[0].plugin_failures.is_empty(),
        "{:?}",
        judged[0].plugin_failures
    );
    let m = h.metrics.snapshot();
    assert!(m["hostile"].logs_dropped >= 999_000, "{:?}", m["hostile"]);
}

#[test]
fn wrong_exports_and_bad_files_are_refused_with_the_reason() {
    for (file, needle) in [
        ("wrong-exports.wat", "phiwatch:detector"),
        ("not-a-component.wat", "phiwatch:detector"),
    ] {
        let e = Compiled::load(&spec(file, ""), None)
            .err()
            .expect(file)
            .to_string();
        assert!(e.contains(needle) || e.contains("component"), "{file}: {e}");
        assert!(e.contains(file), "{file}: the error names the file: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let mut s = PluginSpec::file(&junk);
    s.sha256 = Some(sha(&junk));
    let e = Compiled::load(&s, None).err().unwrap().to_string();
    assert!(e.contains("junk.wasm") && e.contains("compile"), "{e}");
}

#[test]
fn sha256_pins_are_enforced() {
    let mut s = spec("night_export", "");
    s.sha256 = Some("00".repeat(32));
    let e = Compiled::load(&s, None).err().unwrap().to_string();
    assert!(
        e.contains("sha256 mismatch") && e.contains(&sha(&wasm("night_export"))),
        "{e}"
    );
    s.sha256 = None;
    let e = Compiled::load(&s, None).err().unwrap().to_string();
    assert!(e.contains("must be pinned"), "{e}");
}

#[test]
fn settings_are_validated_at_load() {
    let e = Compiled::load(&spec("night_export", "until_hours = 5"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("settings refused") && e.contains("until_hours"),
        "{e}"
    );
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("night_export", "");
    let t = Instant::now();
    Compiled::load(&s, Some(dir.path())).unwrap();
    let cold = t.elapsed();
    let cached: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(cached.len(), 1);
    assert!(cached[0]
        .file_name()
        .to_string_lossy()
        .starts_with(&sha(&wasm("night_export"))));
    let t = Instant::now();
    Compiled::load(&s, Some(dir.path())).unwrap();
    assert!(
        t.elapsed() < cold,
        "warm {:?} vs cold {cold:?}",
        t.elapsed()
    );
}

#[test]
fn plugin_state_survives_a_restart_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("phiwatch.db");
    let h = Harness::new();
    let p = hostile("mode = \"trap\"\nfail_first = 2", |_| {});
    let mut failures = Vec::new();
    // Three "restarts", one batch each: the call counter lives in plugin state, so the
    // plugin fails on the first two batches in all, not the first two of each run.
    for b in 0..3 {
        let mut store = phiwatch::store::Store::open(&db).unwrap();
        let set = PluginSet::new(
            std::slice::from_ref(&p),
            Some(store.conn()),
            h.metrics.clone(),
        )
        .unwrap();
        let mut pipe = Pipeline::new(&h.settings, &h.pack).with_plugins(set);
        let mut j = Judged::default();
        for ev in events(b, 5) {
            pipe.access(&h.ctx, ev, &mut j);
        }
        pipe.finish(&h.ctx, &mut j);
        store
            .insert_batch_then(&j.accesses, &j.findings, |tx, _| j.write_plugin_state(tx))
            .unwrap();
        failures.push(j.plugin_failures.len());
    }
    assert_eq!(failures, vec![1, 1, 0]);
}

#[test]
fn plugins_side_by_side_on_large_batches_are_contained_too() {
    // 600 accesses: above the size from which plugins run on threads of their own.
    let h = Harness::new();
    let plugins = [
        hostile("mode = \"loop\"\nfail_first = 1", |s| s.timeout_ms = 200),
        neighbour(),
    ];
    let set = PluginSet::new(&plugins, None, h.metrics.clone()).unwrap();
    let mut p = Pipeline::new(&h.settings, &h.pack).with_plugins(set);
    for round in 0..2 {
        let mut j = Judged::default();
        for ev in events(round, 600) {
            p.access(&h.ctx, ev, &mut j);
        }
        p.finish(&h.ctx, &mut j);
        assert_eq!(by(&j, "plugin:night-export"), 600, "round {round}");
        let hostile_findings = by(&j, "plugin:hostile");
        if round == 0 {
            assert_eq!(j.plugin_failures.len(), 1);
            assert_eq!(j.plugin_failures[0].kind, FailureKind::Deadline);
            // Batches of 512: the first hung, the second ran on a fresh instance.
            assert_eq!(hostile_findings, 88);
        } else {
            assert!(j.plugin_failures.is_empty());
            assert_eq!(hostile_findings, 600);
        }
    }
}
