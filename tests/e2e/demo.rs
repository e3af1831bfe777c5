//! `phiwatch demo` meets the acceptance bar, checked here independently of the demo's own
//! scoring, over three working days with the noise of a real hospital (addresses spelt many
//! ways, steady heavy users, routine consults no policy explains, night shifts, logins and
//! MRNs): recall >= 0.98 in every injected category, precision >= 0.95 over high and
//! critical findings, and fewer than 1 false high finding per 10,000 normal accesses from all
//! detectors together.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

#[test]
fn demo_catches_every_injected_category() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::phiwatch(&[
        "demo",
        "--events",
        "100000",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(stdout.contains("recall"), "{stdout}");

    let truth = std::fs::read_to_string(dir.path().join("truth.ndjson")).unwrap();
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut negatives: HashSet<String> = HashSet::new();
    for line in truth.lines() {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = t["event_id"].as_str().unwrap().to_owned();
        match t["kind"].as_str().unwrap() {
            "violation" => {
                expected.insert(id, t["category"].as_str().unwrap().to_owned());
            }
            _ => {
                negatives.insert(id);
            }
        }
    }
    let findings = common::findings(&std::fs::read(dir.path().join("findings.ndjson")).unwrap());
    let mut caught: HashSet<(String, String)> = HashSet::new();
    let (mut high, mut high_true) = (0, 0);
    let mut false_high: HashSet<&str> = HashSet::new();
    for f in &findings {
        let id = f["event_id"].as_str().unwrap();
        let cat = f["category"].as_str().unwrap();
        if expected.get(id).is_some_and(|c| c == cat) {
            caught.insert((id.to_owned(), cat.to_owned()));
        }
        if matches!(f["severity"].as_str(), Some("high" | "critical")) {
            high += 1;
            high_true += usize::from(expected.contains_key(id));
            assert!(!negatives.contains(id), "hard negative flagged: {f}");
            if !expected.contains_key(id) {
                false_high.insert(id);
            }
        }
    }
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (id, c) in &expected {
        let e = per.entry(c.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(caught.contains(&(id.clone(), c.clone())));
    }
    for c in [
        "self_access",
        "family",
        "neighbor",
        "coworker",
        "vip",
        "sensitive",
        "deceased",
        "terminated_user",
        "break_glass",
        "after_hours",
        "unexplained",
        // Caught by the shipped WASM plugins.
        "volume_anomaly",
        "break_glass_misuse",
        "family_fuzzy",
        "first_time_sensitive",
    ] {
        let (n, k) = per.get(c).copied().unwrap_or_default();
        assert!(n >= 20, "{c}: only {n} injected");
        assert!(k as f64 / n as f64 >= 0.98, "{c}: recall {k}/{n}");
    }
    // All detectors together: fewer than 1 false high-severity finding per 10,000 normal events.
    let events = std::fs::read_to_string(dir.path().join("events.ndjson"))
        .unwrap()
        .lines()
        .count();
    let normal = events - expected.len() - negatives.len();
    assert!(
        false_high.len() * 10_000 < normal,
        "{} normal events flagged high of {normal}: {false_high:?}",
        false_high.len()
    );
    assert!(high > 0);
    assert!(
        high_true as f64 / high as f64 >= 0.95,
        "precision {high_true}/{high}"
    );
    assert!(negatives.len() >= 60, "hard negatives: {}", negatives.len());

    // Steady heavy users (coders, technicians at 60-90 charts an hour) are judged on peers
    // while their own history warms up, medium at most, then never again.
    let mut warm_up: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings
        .iter()
        .filter(|f| f["category"] == "volume_anomaly")
    {
        if !expected.contains_key(f["event_id"].as_str().unwrap()) {
            *warm_up.entry(f["user"].as_str().unwrap()).or_default() += 1;
        }
    }
    let heavy: Vec<&str> = warm_up
        .iter()
        .filter(|(_, &n)| n > 300)
        .map(|(u, _)| *u)
        .collect();
    assert!(
        !heavy.is_empty(),
        "no steady heavy user in the demo: {warm_up:?}"
    );
    let first_day = "2026-03-10";
    for f in findings
        .iter()
        .filter(|f| f["category"] == "volume_anomaly")
    {
        if heavy.contains(&f["user"].as_str().unwrap()) {
            assert!(f["time"].as_str().unwrap().starts_with(first_day), "{f}");
            assert_eq!(f["severity"], "medium", "{f}");
        }
    }

    // The demo's store groups findings into alerts with the default grouping: a volume spree,
    // however many accesses it names, is one alert per user.
    let db = rusqlite::Connection::open(dir.path().join("phiwatch.db")).unwrap();
    let q = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    let spree_users: HashSet<&str> = findings
        .iter()
        .filter(|f| f["category"] == "volume_anomaly")
        .map(|f| f["user"].as_str().unwrap())
        .collect();
    assert!(spree_users.len() >= 2, "{spree_users:?}");
    assert_eq!(
        q("SELECT count(*) FROM alerts WHERE category = 'volume_anomaly'"),
        spree_users.len() as i64
    );
    assert_eq!(
        q("SELECT count(*) FROM alert_findings"),
        q("SELECT count(*) FROM findings"),
        "every stored finding is in an alert"
    );
    assert_eq!(
        q("SELECT count(*) FROM outbox"),
        0,
        "a demo notifies nobody"
    );

    // The same data set scanned by hand gives the same policy findings (and a replay stores
    // none). Plugins are left out: their state from the demo run rightly changes their view
    // of a second pass over the same day (first accesses are no longer first).
    let again = common::phiwatch(&[
        "scan",
        "--no-plugins",
        "--store",
        dir.path().join("phiwatch.db").to_str().unwrap(),
        "--context",
        dir.path().join("context").to_str().unwrap(),
        "--events",
        dir.path().join("events.ndjson").to_str().unwrap(),
    ]);
    assert!(again.status.success());
    let policy_findings = findings
        .iter()
        .filter(|f| !f["detector"].as_str().unwrap_or("").starts_with("plugin:"))
        .count();
    assert_eq!(common::findings(&again.stdout).len(), policy_findings);
    assert!(common::text(&again.stderr).contains("(0 new in store)"));
}
