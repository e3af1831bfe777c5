//! Explanation mining on the demo's first two days proposes permits that, once adopted, cut
//! the unexplained-access rate of the two days after by at least half, while every injected
//! violation of those days is still caught.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Splits the demo's events (and its truth) into the first two days and the rest.
fn split(set: &Path, d: &Path) -> HashMap<String, String> {
    let events = std::fs::read_to_string(set.join("events.ndjson")).unwrap();
    let (mut first, mut later) = (String::new(), String::new());
    let mut later_ids = HashSet::new();
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let day = &v["recorded"].as_str().unwrap()[..10];
        if day <= "2026-03-11" {
            first.push_str(line);
            first.push('\n');
        } else {
            later_ids.insert(v["id"].as_str().unwrap().to_owned());
            later.push_str(line);
            later.push('\n');
        }
    }
    assert!(!first.is_empty() && !later.is_empty());
    std::fs::write(d.join("first.ndjson"), first).unwrap();
    std::fs::write(d.join("later.ndjson"), later).unwrap();
    let mut truth = HashMap::new();
    for line in std::fs::read_to_string(set.join("truth.ndjson"))
        .unwrap()
        .lines()
    {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = t["event_id"].as_str().unwrap();
        if t["kind"] == "violation" && later_ids.contains(id) {
            truth.insert(id.to_owned(), t["category"].as_str().unwrap().to_owned());
        }
    }
    truth
}

/// The later days, judged as the agent would go on judging them: on a copy of the first days'
/// store, so the plugins keep the baselines they learnt.
fn scan_later(d: &Path, policies: Option<&Path>) -> Vec<serde_json::Value> {
    let set = d.join("set");
    let db = d.join(format!("later-{}.db", policies.is_some()));
    std::fs::copy(d.join("first.db"), &db).unwrap();
    let mut args = vec![
        "scan".to_owned(),
        "--store".into(),
        db.display().to_string(),
        "--context".into(),
        set.join("context").display().to_string(),
        "--events".into(),
        d.join("later.ndjson").display().to_string(),
    ];
    if let Some(p) = policies {
        args.extend(["--policies".into(), p.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::phiwatch(&args);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    common::findings(&out.stdout)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn mined_permits_halve_the_unexplained_rate_and_keep_recall() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let out = common::phiwatch(&[
        "demo",
        "--generate-only",
        "--days",
        "4",
        "--events",
        "60000",
        "--out",
        d.join("set").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let truth = split(&d.join("set"), d);

    // Without an access log there is nothing to mine, and the error says how to get one.
    let db = d.join("first.db");
    let ctx = d.join("set/context");
    let first = d.join("first.ndjson");
    let store_first = |extra: &[&str]| {
        let mut args = vec![
            "scan",
            "--store",
            db.to_str().unwrap(),
            "--context",
            ctx.to_str().unwrap(),
            "--events",
            first.to_str().unwrap(),
            "--out",
            "/dev/null",
        ];
        args.extend_from_slice(extra);
        let out = common::phiwatch(&args);
        assert!(out.status.success(), "{}", common::text(&out.stderr));
    };
    store_first(&[]);
    let mine = |out_file: &Path| {
        common::phiwatch(&[
            "explain",
            "mine",
            "--store",
            db.to_str().unwrap(),
            "--context",
            ctx.to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
        ])
    };
    let mined = d.join("mined.cedar");
    let refused = mine(&mined);
    assert!(!refused.status.success());
    assert!(
        common::text(&refused.stderr).contains("--store-accesses"),
        "{}",
        common::text(&refused.stderr)
    );

    store_first(&["--store-accesses"]);
    let out = mine(&mined);
    let report = common::text(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("unexplained") && report.contains("with every proposal adopted"),
        "{report}"
    );
    let text = std::fs::read_to_string(&mined).unwrap();
    assert!(text.matches("\npermit").count() >= 2, "{text}");
    assert!(
        !text.contains("\nforbid"),
        "mining only ever proposes permits"
    );

    // Adopted: the shipped pack plus the proposals.
    let pack = d.join("pack");
    copy_dir(&common::repo().join("policies"), &pack);
    std::fs::copy(&mined, pack.join("mined.cedar")).unwrap();
    let checked = common::phiwatch(&["policies", "--dir", pack.to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "{}",
        common::text(&checked.stderr)
    );

    let before = scan_later(d, None);
    let after = scan_later(d, Some(&pack));
    let unexplained =
        |f: &[serde_json::Value]| f.iter().filter(|x| x["detector"] == "default-deny").count();
    let (u0, u1) = (unexplained(&before), unexplained(&after));
    assert!(
        u0 > 0 && u1 * 2 <= u0,
        "unexplained on the later days: {u0} -> {u1}"
    );

    // Every violation category of the later days keeps its recall (>= 0.98).
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let caught: HashSet<(&str, &str)> = after
        .iter()
        .map(|f| {
            (
                f["event_id"].as_str().unwrap(),
                f["category"].as_str().unwrap(),
            )
        })
        .collect();
    for (id, c) in &truth {
        let e = per.entry(c.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(caught.contains(&(id.as_str(), c.as_str())));
    }
    assert!(per.len() >= 14, "{per:?}");
    for (c, (n, k)) in per {
        assert!(k as f64 >= 0.98 * n as f64, "{c}: {k}/{n} after adoption");
    }
}
