//! `phiwatch policy backtest` over a stored demo week: drafts against the pack in force.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &[serde_json::Value], keep: impl Fn(&serde_json::Value) -> bool) -> BTreeSet<String> {
    v.iter()
        .filter(|f| keep(f))
        .map(|f| f["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// A copy of the shipped pack with `edit` applied to `file`.
fn draft(d: &Path, name: &str, file: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let dir = d.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(common::repo().join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let p = dir.join(file);
    std::fs::write(&p, edit(std::fs::read_to_string(&p).unwrap())).unwrap();
    dir
}

#[test]
fn drafts_are_backtested_against_the_pack_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let demo = common::demo_set(&d.join("demo"), 20_000);
    let db = d.join("s.db");
    let scanned = d.join("findings.ndjson");
    let o = common::phiwatch(&[
        "scan",
        "--events",
        demo.join("events.ndjson").to_str().unwrap(),
        "--context",
        demo.join("context").to_str().unwrap(),
        "--store",
        db.to_str().unwrap(),
        "--store-accesses",
        "--no-plugins",
        "--out",
        scanned.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let in_force = lines(&scanned);
    let neighbor = ids(&in_force, |f| f["detector"] == "neighbor");
    assert!(!neighbor.is_empty(), "the demo week has neighbor findings");
    let stored = count(&db, "SELECT count(*) FROM findings");
    let policies_before =
        std::fs::read_to_string(common::repo().join("policies/snooping.cedar")).unwrap();

    let context = demo.join("context");
    let backtest = |draft: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "policy",
            "backtest",
            "--store",
            db.to_str().unwrap(),
            "--context",
            context.to_str().unwrap(),
            "--draft",
            draft.to_str().unwrap(),
            "--since",
            "30d",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = common::phiwatch(&args);
        assert!(o.status.success(), "{}", common::text(&o.stderr));
        (common::text(&o.stdout), lines(out))
    };

    // A draft without the neighbor rule: exactly the neighbor findings are removed (what
    // those accesses become instead, default-deny, is reported as added).
    let without = draft(d, "without-neighbor", "snooping.cedar", |s| {
        let i = s.find("@id(\"neighbor\")").unwrap();
        let end = s[i..].find("};\n").unwrap() + i + 3;
        format!("{}{}", &s[..i], &s[end..])
    });
    let (report, diff) = backtest(&without, &d.join("without.ndjson"), &["--no-plugins"]);
    let removed = ids(&diff, |f| f["change"] == "removed");
    assert_eq!(removed, neighbor, "{report}");
    assert!(diff
        .iter()
        .filter(|f| f["change"] == "removed")
        .all(|f| f["detector"] == "neighbor"));
    assert!(diff
        .iter()
        .filter(|f| f["change"] == "added")
        .all(|f| f["detector"] == "default-deny"
            && neighbor.contains(f["event_id"].as_str().unwrap())));
    assert!(
        report.contains(&format!("removes {} (", neighbor.len())),
        "{report}"
    );
    assert!(report.contains("- neighbor: User "), "{report}");

    // A stricter rule: every break-glass access is flagged. Its additions are exactly the
    // stored break-glass accesses, and nothing is removed.
    let stricter = draft(d, "stricter", "accounts.cedar", |s| {
        s + "\n@id(\"any-break-glass\")\n@category(\"break_glass\")\n@severity(\"low\")\n\
             @explain(\"User {user} used break-glass on patient {patient}'s record.\")\n\
             @hipaa(\"45 CFR 164.312(b)\")\n\
             forbid (principal, action, resource) when { context.break_glass };\n"
    });
    let (report, diff) = backtest(&stricter, &d.join("stricter.ndjson"), &["--no-plugins"]);
    let break_glass: BTreeSet<String> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut st = c
            .prepare("SELECT event_id FROM accesses WHERE break_glass = 1")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(!break_glass.is_empty());
    assert_eq!(
        ids(&diff, |f| f["change"] == "added"),
        break_glass,
        "{report}"
    );
    assert!(diff
        .iter()
        .all(|f| f["change"] == "added" && f["detector"] == "any-break-glass"));
    assert!(report.contains("removes 0 ("), "{report}");

    // The same draft with the shipped plugins on both sides changes only what the rule
    // changes: the plugins agree with themselves.
    let (_, with_plugins) = backtest(&stricter, &d.join("plugins.ndjson"), &[]);
    assert_eq!(ids(&with_plugins, |_| true), break_glass);

    // A draft plugin left out: its findings are removed, nothing else.
    let (_, without_volume) = backtest(
        &common::repo().join("policies"),
        &d.join("no-volume.ndjson"),
        &["--without-plugin", "volume-anomaly"],
    );
    assert!(!without_volume.is_empty());
    assert!(without_volume
        .iter()
        .all(|f| f["change"] == "removed" && f["detector"] == "plugin:volume-anomaly"));

    // A plugin file given to the draft (pinned to what it is) loads and runs: the shipped
    // first-access, exported, in place of itself changes nothing.
    let exported = d.join("exported");
    let o = common::phiwatch(&["plugin", "export", exported.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let file = exported.join("first-access.wasm");
    let (report, same) = backtest(
        &common::repo().join("policies"),
        &d.join("same.ndjson"),
        &[
            "--without-plugin",
            "first-access",
            "--plugin",
            file.to_str().unwrap(),
        ],
    );
    assert!(same.is_empty(), "{report}");
    assert!(
        report.contains("adds 0 findings") && report.contains("removes 0 ("),
        "{report}"
    );

    // Nothing in force was touched.
    assert_eq!(count(&db, "SELECT count(*) FROM findings"), stored);
    assert_eq!(
        std::fs::read_to_string(common::repo().join("policies/snooping.cedar")).unwrap(),
        policies_before
    );

    // A window with nothing stored says so.
    let o = common::phiwatch(&[
        "policy",
        "backtest",
        "--store",
        db.to_str().unwrap(),
        "--draft",
        stricter.to_str().unwrap(),
        "--until",
        "2001-01-01",
    ]);
    assert!(!o.status.success());
    assert!(common::text(&o.stderr).contains("no stored accesses in the window"));
}
