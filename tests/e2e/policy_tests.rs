//! `phiwatch policy test` and `phiwatch policy explain`: the tools security teams use to
//! change policies safely.

mod common;

#[test]
fn shipped_policy_tests_pass_with_full_coverage() {
    let out = common::phiwatch(&[
        "policy",
        "test",
        common::repo().join("policies/tests").to_str().unwrap(),
        "--require-coverage",
    ]);
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{text}{}", common::text(&out.stderr));
    assert!(text.contains("33 passed, 0 failed"), "{text}");
    assert!(
        !text.contains("no positive") && !text.contains("no negative"),
        "{text}"
    );
}

#[test]
fn failures_and_gaps_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vip.toml"),
        "[[case]]\nname = \"wrong expectation\"\npolicy = \"vip-record\"\nexpect = []\n[case.patient]\nvip = true\n\n[[case]]\nname = \"typo\"\npolicy = \"vip-recrd\"\nexpect = []\n",
    )
    .unwrap();
    let out = common::phiwatch(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = common::text(&out.stdout);
    assert!(
        text.contains("vip.toml: \"wrong expectation\": expected [], got [\"vip-record\"]"),
        "{text}"
    );
    assert!(text.contains("\"vip-recrd\" is not in the pack"), "{text}");
    assert!(
        text.contains("policies with no positive case:") && text.contains("self-access"),
        "{text}"
    );

    std::fs::write(
        dir.path().join("vip.toml"),
        "[[case]]\nname = \"x\"\npolicy = \"vip-record\"\nexpect = []\nbogus = 1\n",
    )
    .unwrap();
    let out = common::phiwatch(&["policy", "test", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(err.contains("vip.toml") && err.contains("bogus"), "{err}");
}

#[test]
fn explain_shows_facts_decision_and_policies() {
    let fx = common::fixtures().join("clinic");
    let events = std::fs::read_to_string(fx.join("events.ndjson")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (id, want) in [
        (
            "vip-pos",
            vec!["vip-record", "role nurse", "vip", "decision: finding"],
        ),
        (
            "vip-neg",
            vec![
                "decision: explained",
                "permit treating-relationship",
                "appointment",
            ],
        ),
        ("deceased-neg", vec!["default-deny"]),
    ] {
        let line = events
            .lines()
            .find(|l| l.contains(&format!("\"id\":\"{id}\"")))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let path = dir.path().join(format!("{id}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        let out = common::phiwatch(&[
            "policy",
            "explain",
            "--context",
            fx.join("context").to_str().unwrap(),
            "--event",
            path.to_str().unwrap(),
        ]);
        let text = common::text(&out.stdout);
        assert!(out.status.success(), "{}", common::text(&out.stderr));
        for w in want {
            assert!(text.contains(w), "{id}: {w:?} not in\n{text}");
        }
    }
}
