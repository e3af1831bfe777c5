//! Plugins in the real agent: `check` reports each plugin (and each bad one with its reason),
//! `run` refuses an unpinned or altered plugin, keeps detecting while a hostile plugin hangs,
//! counts the failure in /metrics, and keeps plugin state in the store across a restart.
//! `plugin test` runs one plugin over events for its author.

mod agent;
mod common;

use agent::{count, metric, start_healthy, wait_for, write_config};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn hostile_wasm() -> PathBuf {
    PathBuf::from(phiwatch::plugin::BUILD_DIR).join("hostile_plugin.wasm")
}

fn sha(path: &Path) -> String {
    use sha2::Digest;
    phiwatch::plugin::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn hostile_table(settings: &str, extra: &str) -> String {
    hostile_table_at(&hostile_wasm(), settings, extra)
}

fn hostile_table_at(p: &Path, settings: &str, extra: &str) -> String {
    format!(
        "[[plugin]]\npath = \"{}\"\nsha256 = \"{}\"\n{extra}[plugin.settings]\n{settings}\n",
        p.display(),
        sha(p)
    )
}

#[test]
fn check_reports_every_plugin_and_every_bad_one() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let good = write_config(
        d.path(),
        1,
        &ctx,
        &hostile_table("mode = \"trap\"", "timeout_ms = 300\n"),
    );
    let out = common::phiwatch(&["check", "--config", good.to_str().unwrap()]);
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in [
        "volume-anomaly",
        "break-glass",
        "family-match",
        "first-access",
        "hostile",
    ] {
        assert!(
            text.contains(&format!("ok: plugin {name} ")),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("timeout 300 ms"), "{text}");

    let bad_dir = d.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let wat = common::repo().join("tests/plugins/wrong-exports.wat");
    let tables = format!(
        "[[plugin]]\npath = \"{}\"\nsha256 = \"{}\"\n[[plugin]]\npath = \"{}\"\nsha256 = \"{}\"\n[[plugin]]\nbuiltin = \"no-such\"\n[[plugin]]\npath = \"{}\"\n",
        hostile_wasm().display(),
        "ab".repeat(32),
        wat.display(),
        sha(&wat),
        hostile_wasm().display(),
    );
    let bad = write_config(&bad_dir, 1, &ctx, &tables);
    let out = common::phiwatch(&["check", "--config", bad.to_str().unwrap()]);
    let text = common::text(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("sha256 mismatch"), "{text}");
    assert!(
        text.contains("wrong-exports.wat") && text.contains("phiwatch:detector"),
        "{text}"
    );
    assert!(text.contains("no such shipped plugin"), "{text}");
    assert!(text.contains("must be pinned"), "{text}");
    assert_eq!(text.matches("error: ").count(), 4, "{text}");

    // The agent refuses to start on an altered plugin, naming it.
    let out = common::phiwatch(&["run", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        common::text(&out.stderr).contains("sha256 mismatch"),
        "{}",
        common::text(&out.stderr)
    );
}

#[test]
fn agent_keeps_detecting_past_a_hanging_plugin_and_keeps_plugin_state() {
    let d = tempfile::tempdir().unwrap();
    let set = common::demo_set(&d.path().join("set"), 20_000);
    let http = agent::free_port();
    let plugin = d.path().join("hostile.wasm");
    std::fs::copy(hostile_wasm(), &plugin).unwrap();
    // Hangs on its first call (stopped at the 300 ms deadline), then flags every access.
    let config = write_config(
        d.path(),
        http,
        &set.join("context"),
        &hostile_table_at(
            &plugin,
            "mode = \"loop\"\nfail_first = 1",
            "timeout_ms = 300\nbatch = 4096\n",
        ),
    );
    let db = d.path().join("data/phiwatch.db");
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    std::fs::copy(set.join("events.ndjson"), d.path().join("logs/a.ndjson")).unwrap();
    let judged = |n: f64| {
        move || {
            metric(http, "phiwatch_plugin_accesses_total{plugin=\"hostile\"}")
                .is_some_and(|v| v >= n)
        }
    };
    assert!(
        wait_for(Duration::from_secs(120), judged(20_000.0)),
        "the day was never judged"
    );
    let failures = metric(
        http,
        "phiwatch_plugin_failures_total{plugin=\"hostile\",kind=\"deadline\"}",
    );
    assert_eq!(failures, Some(1.0), "{:?}", agent::get(http, "/metrics"));
    // Cedar and the shipped plugins judged every batch, the hung one included.
    for detector in [
        "plugin:first-access",
        "plugin:family-match",
        "plugin:volume-anomaly",
    ] {
        let n = count(
            &db,
            &format!("SELECT count(*) FROM findings WHERE detector = '{detector}'"),
        );
        assert!(n > 0, "{detector}: {n}");
    }
    assert!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE detector NOT LIKE 'plugin:%'"
        ) > 100
    );
    // The hung batch's accesses have no hostile finding; every other access has one.
    let hostile = count(
        &db,
        "SELECT count(DISTINCT event_id) FROM findings WHERE detector = 'plugin:hostile'",
    );
    let accesses = count(&db, "SELECT count(*) FROM accesses");
    assert!(
        hostile > 0 && hostile < accesses,
        "hostile {hostile} of {accesses}"
    );
    // The plugin file swapped under the running agent: the pin no longer matches, so the
    // reload is refused and the loaded plugin keeps running.
    std::fs::copy(
        PathBuf::from(phiwatch::plugin::BUILD_DIR).join("night_export.wasm"),
        &plugin,
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || metric(
            http,
            "phiwatch_reload_failures_total"
        ) == Some(1.0)),
        "a swapped plugin file was not refused"
    );
    assert_eq!(
        metric(http, "phiwatch_plugin_calls_total{plugin=\"hostile\"}").map(|v| v > 0.0),
        Some(true)
    );
    let (status, log) = agent.stop();
    assert!(status.success());
    assert!(log.contains("sha256 mismatch"), "{log}");
    std::fs::copy(hostile_wasm(), &plugin).unwrap();

    // State persisted with the batches: the call counter and the first-seen pairs.
    let calls = count(
        &db,
        "SELECT count(*) FROM plugin_state WHERE plugin = 'hostile' AND key = 'calls'",
    );
    assert_eq!(calls, 1);
    let seen = count(
        &db,
        "SELECT count(*) FROM plugin_state WHERE plugin = 'first-access'",
    );
    assert!(seen > 0);

    // After a restart the same events arrive again (a copy): first-access knows the pairs.
    let before = count(
        &db,
        "SELECT count(*) FROM findings WHERE detector = 'plugin:first-access'",
    );
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    std::fs::copy(set.join("events.ndjson"), d.path().join("logs/b.ndjson")).unwrap();
    assert!(wait_for(Duration::from_secs(120), judged(20_000.0)));
    let (status, _) = agent.stop();
    assert!(status.success());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE detector = 'plugin:first-access'"
        ),
        before
    );
}

#[test]
fn plugin_test_prints_findings_and_failures() {
    let d = tempfile::tempdir().unwrap();
    let set = common::demo_set(&d.path().join("set"), 20_000);
    let ctx = set.join("context");
    let events = set.join("events.ndjson");
    let out = common::phiwatch(&[
        "plugin",
        "test",
        "builtin:first-access",
        "--context",
        ctx.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let findings = common::findings(&out.stdout);
    assert!(!findings.is_empty());
    assert!(findings
        .iter()
        .all(|f| f["detector"] == "plugin:first-access"));
    let summary = common::text(&out.stderr);
    assert!(
        summary.contains("20000 accesses") && summary.contains("µs per access"),
        "{summary}"
    );

    let settings = d.path().join("hostile.toml");
    std::fs::write(&settings, "mode = \"trap\"\n").unwrap();
    let out = common::phiwatch(&[
        "plugin",
        "test",
        hostile_wasm().to_str().unwrap(),
        "--settings",
        settings.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let summary = common::text(&out.stderr);
    assert!(summary.contains("failed (trap)"), "{summary}");
    assert!(
        summary.contains(&sha(&hostile_wasm())),
        "the summary gives the pin: {summary}"
    );
}

/// `plugin test --cases`: the shipped night-export cases pass with full coverage; a wrong
/// expectation fails with what was missing and what was unexpected; coverage gaps fail only
/// with --require-coverage.
#[test]
fn plugin_cases_pass_fail_and_report_coverage() {
    let cases = common::repo().join("plugins/night-export/cases.toml");
    let out = common::phiwatch(&[
        "plugin",
        "test",
        "builtin:night-export",
        "--cases",
        cases.to_str().unwrap(),
        "--require-coverage",
    ]);
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{text}{}", common::text(&out.stderr));
    assert!(
        text.contains("2 passed, 0 failed; every category has a case"),
        "{text}"
    );

    let d = tempfile::tempdir().unwrap();
    let night = common::repo().join("plugins/night-export/cases/night.ndjson");
    let wrong = d.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "context = \"{}\"\n[[case]]\nname = \"expects the print only, and a read\"\nevents = \"{}\"\nexpect = [{{ event = \"print-0545\", category = \"night_export\" }}, {{ event = \"read-0230\", category = \"night_export\" }}]\n",
            common::fixtures().join("clinic/context").display(),
            night.display()
        ),
    )
    .unwrap();
    let out = common::phiwatch(&[
        "plugin",
        "test",
        "builtin:night-export",
        "--cases",
        wrong.to_str().unwrap(),
    ]);
    let text = common::text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  expects the print only"), "{text}");
    assert!(
        text.contains("missing    night_export on read-0230"),
        "{text}"
    );
    assert!(
        text.contains("unexpected night_export on export-0230"),
        "{text}"
    );
    assert!(text.contains("no negative case"), "{text}");

    // Only a negative case: passes, but not with --require-coverage.
    let negative = d.path().join("negative.toml");
    std::fs::write(
        &negative,
        format!(
            "[[case]]\nname = \"day\"\nevents = \"{}\"\n",
            common::repo()
                .join("plugins/night-export/cases/day.ndjson")
                .display()
        ),
    )
    .unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "plugin".to_owned(),
            "test".into(),
            "builtin:night-export".into(),
            "--cases".into(),
            negative.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        common::phiwatch(&a)
    };
    let out = run(args(&[]));
    assert!(out.status.success(), "{}", common::text(&out.stdout));
    assert!(common::text(&out.stdout).contains("no case raises night_export"));
    assert_eq!(run(args(&["--require-coverage"])).status.code(), Some(1));
}
