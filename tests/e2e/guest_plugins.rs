//! Plugins written in Python (componentize-py) and JavaScript (componentize-js), built from
//! source by `plugins/build-guests` (tests/run runs it, with pinned toolchains): their cases
//! pass, the agent runs them next to the shipped Rust plugins, and a hostile plugin in each
//! language is contained (an endless loop by the deadline, a memory bomb by the memory limit).

mod agent;
mod common;

use agent::{count, metric, start_healthy, wait_for, write_config};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn built(name: &str) -> PathBuf {
    let dir = std::env::var_os("PHIWATCH_GUEST_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join("target/guest-plugins"));
    let p = dir.join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: tests/run builds the Python and JavaScript plugins (plugins/build-guests)",
        p.display()
    );
    p
}

fn sha(path: &Path) -> String {
    use sha2::Digest;
    phiwatch::plugin::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn plugin_test(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["plugin", "test"];
    all.extend(args);
    let o = common::phiwatch(&all);
    (
        o.status.code(),
        common::text(&o.stdout) + &common::text(&o.stderr),
    )
}

#[test]
fn python_and_javascript_plugins_pass_their_cases() {
    for (name, cases) in [
        (
            "employee-first-look",
            "plugins/python/employee-first-look/cases.toml",
        ),
        (
            "department-spread",
            "plugins/js/department-spread/cases.toml",
        ),
    ] {
        let wasm = built(name);
        let cases = common::repo().join(cases);
        let (code, out) = plugin_test(&[
            wasm.to_str().unwrap(),
            "--cases",
            cases.to_str().unwrap(),
            "--require-coverage",
        ]);
        assert_eq!(code, Some(0), "{name}: {out}");
        assert!(
            out.contains("2 passed, 0 failed; every category has a case"),
            "{out}"
        );
    }
}

#[test]
fn hostile_python_and_javascript_plugins_are_contained() {
    let d = tempfile::tempdir().unwrap();
    let events = common::fixtures().join("clinic/events.ndjson");
    let runs: Vec<_> = ["hostile-python", "hostile-js"]
        .into_iter()
        .flat_map(|p| {
            [
                (p, "loop", "failed (deadline)"),
                (p, "bomb", "failed (memory)"),
            ]
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&(plugin, mode, says)| {
                let settings = d.path().join(format!("{plugin}-{mode}.toml"));
                std::fs::write(&settings, format!("mode = \"{mode}\"\n")).unwrap();
                let events = events.clone();
                s.spawn(move || {
                    let wasm = built(plugin);
                    let (code, out) = plugin_test(&[
                        wasm.to_str().unwrap(),
                        "--settings",
                        settings.to_str().unwrap(),
                        "--events",
                        events.to_str().unwrap(),
                    ]);
                    assert_eq!(code, Some(1), "{plugin} {mode}: {out}");
                    assert!(out.contains(says), "{plugin} {mode}: {out}");
                    assert!(out.contains("20 accesses in 1 calls"), "{out}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn the_agent_runs_them_beside_the_rust_plugins() {
    let d = tempfile::tempdir().unwrap();
    let http = agent::free_port();
    let (py, js) = (built("employee-first-look"), built("department-spread"));
    let plugins = format!(
        "[[plugin]]\npath = \"{}\"\nsha256 = \"{}\"\nmemory_mb = 128\n\
         [[plugin]]\npath = \"{}\"\nsha256 = \"{}\"\nmemory_mb = 128\n[plugin.settings]\ndepartments = 2\n",
        py.display(),
        sha(&py),
        js.display(),
        sha(&js)
    );
    let config = write_config(
        d.path(),
        http,
        &common::fixtures().join("clinic/context"),
        &plugins,
    );
    let db = d.path().join("data/phiwatch.db");
    let agent = start_healthy(&config, http, &[], Duration::from_secs(240));
    for (from, to) in [
        (
            "plugins/python/employee-first-look/cases/coworker.ndjson",
            "a.ndjson",
        ),
        (
            "plugins/js/department-spread/cases/burst.ndjson",
            "b.ndjson",
        ),
    ] {
        std::fs::copy(common::repo().join(from), d.path().join("logs").join(to)).unwrap();
    }
    let found = |detector: &str, n: i64| {
        let sql = format!("SELECT count(*) FROM findings WHERE detector = 'plugin:{detector}'");
        let db = db.clone();
        move || count(&db, &sql) >= n
    };
    assert!(
        wait_for(Duration::from_secs(120), found("employee-first-look", 2)),
        "no finding from the Python plugin"
    );
    assert!(
        wait_for(Duration::from_secs(60), found("department-spread", 2)),
        "no finding from the JavaScript plugin"
    );
    // The shipped Rust plugins judged the same accesses.
    for rust in [
        "first-access",
        "volume-anomaly",
        "family-match",
        "break-glass",
    ] {
        let m = format!("phiwatch_plugin_accesses_total{{plugin=\"{rust}\"}}");
        assert!(
            wait_for(Duration::from_secs(30), || metric(http, &m)
                .is_some_and(|v| v >= 6.0)),
            "{rust}: {:?}",
            metric(http, &m)
        );
    }
    let (status, _) = agent.stop();
    assert!(status.success());
}

/// `phiwatch plugin new` in Python and JavaScript writes a plugin that builds with the pinned
/// toolchains and runs as written (its example rule flags the clinic's break-the-glass access
/// with no encounter near).
#[test]
fn new_python_and_javascript_plugins_build_and_run() {
    let d = tempfile::tempdir().unwrap();
    let tools = common::repo().join("target/guest-tools");
    let events = common::fixtures().join("clinic/events.ndjson");
    let context = common::fixtures().join("clinic/context");
    std::thread::scope(|s| {
        for lang in ["python", "js"] {
            let (d, tools, events, context) = (d.path(), &tools, &events, &context);
            s.spawn(move || {
                let dir = d.join(lang);
                let o = common::phiwatch(&[
                    "plugin",
                    "new",
                    "late-look",
                    "--lang",
                    lang,
                    "--dir",
                    dir.to_str().unwrap(),
                ]);
                assert!(o.status.success(), "{}", common::text(&o.stderr));
                let wasm = dir.join("late-look.wasm");
                // The build the scaffold documents, with the toolchains tests/run installed.
                let built = if lang == "python" {
                    let py = tools.join("py/bin/componentize-py");
                    let bindings = dir.join(".bindings");
                    let b = std::process::Command::new(&py)
                        .args(["-d", "wit/detector.wit", "-w", "detector", "bindings"])
                        .arg(&bindings)
                        .current_dir(&dir)
                        .status()
                        .unwrap();
                    assert!(b.success());
                    std::process::Command::new(&py)
                        .args(["-d", "wit/detector.wit", "-w", "detector", "componentize"])
                        .args(["-p", ".", "-p", ".bindings", "app", "-o", "late-look.wasm"])
                        .current_dir(&dir)
                        .output()
                        .unwrap()
                } else {
                    std::process::Command::new("node")
                        .args(["build.mjs", "app.js", "late-look.wasm"])
                        .env("PHIWATCH_COMPONENTIZE_JS", tools.join("js/node_modules"))
                        .current_dir(&dir)
                        .output()
                        .unwrap()
                };
                assert!(
                    built.status.success(),
                    "{lang}: {}",
                    common::text(&built.stderr)
                );
                let (code, out) = plugin_test(&[
                    wasm.to_str().unwrap(),
                    "--events",
                    events.to_str().unwrap(),
                    "--context",
                    context.to_str().unwrap(),
                ]);
                assert_eq!(code, Some(0), "{lang}: {out}");
                assert!(out.contains("1 findings, 0 failed calls"), "{lang}: {out}");
            });
        }
    });
}

/// `bench --plugins --guest`: the Python and JavaScript components are measured beside the
/// shipped Rust plugin, in the same run.
#[test]
fn bench_measures_them_beside_the_rust_plugin() {
    let (py, js) = (built("employee-first-look"), built("department-spread"));
    let o = common::phiwatch(&[
        "bench",
        "--plugins",
        "--events",
        "2000",
        "--guest",
        py.to_str().unwrap(),
        "--guest",
        js.to_str().unwrap(),
    ]);
    let out = common::text(&o.stdout);
    assert!(o.status.success(), "{out}{}", common::text(&o.stderr));
    let ns = |label: &str| -> f64 {
        out.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l[label.len() + 2..].split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {label} row in {out}"))
    };
    let rust = ns("plugin, batches of 1024");
    for guest in [
        "employee-first-look, batches of 1024",
        "department-spread, batches of 1024",
    ] {
        assert!(
            ns(guest) > rust,
            "an interpreter costs more than Rust:\n{out}"
        );
    }
}
