//! A breach-response case end to end: the agent turns the clinic's findings into alerts, a
//! privacy officer opens a case on the VIP alert, assesses it, determines a breach (the
//! presumption refuses "not a breach" without a documented low probability), reads the
//! evidence timeline and the deadlines, closes it; the case log verifies, and a one-byte edit
//! to it is caught and named.

mod agent;
mod common;

use agent::{count, free_port, get, wait_for, Agent};
use std::time::Duration;

fn case(cfg: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["case", args[0], "--config", cfg];
    all.extend_from_slice(&args[1..]);
    let out = common::phiwatch(&all);
    (
        out.status.success(),
        common::text(&out.stdout) + &common::text(&out.stderr),
    )
}

#[test]
fn from_alert_to_closed_case_with_a_verified_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::write(d.join("routing.toml"), "[grouping]\ngroup_wait = \"0s\"\n").unwrap();
    let http = free_port();
    let config = d.join("phiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/data\"\ncontext = \"{ctx}\"\nrouting = \"{d}/routing.toml\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/*.ndjson\"]\nformat = \"fhir-auditevent\"\n",
            d = d.display(),
            ctx = common::fixtures().join("clinic/context").display(),
        ),
    )
    .unwrap();
    let agent = Agent::start(&config);
    assert!(wait_for(Duration::from_secs(20), || get(http, "/healthz")
        .is_some_and(|b| b.contains("200 OK"))));
    std::fs::copy(
        common::fixtures().join("clinic/events.ndjson"),
        d.join("logs/ehr.ndjson"),
    )
    .unwrap();
    let db = d.join("data/phiwatch.db");
    assert!(wait_for(Duration::from_secs(20), || count(
        &db,
        "SELECT count(*) FROM alerts WHERE category = 'vip'"
    ) == 1));
    assert!(agent.stop().0.success());
    let vip = count(&db, "SELECT id FROM alerts WHERE category = 'vip'").to_string();
    let cfg = config.to_str().unwrap();

    let (ok, out) = case(
        cfg,
        &[
            "open",
            "--alert",
            &vip,
            "--discovered",
            "2026-03-10",
            "--by",
            "pat.privacy",
        ],
    );
    assert!(ok && out.contains("case #1 opened"), "{out}");
    let (ok, out) = case(cfg, &["open", "--alert", "999", "--by", "pat.privacy"]);
    assert!(!ok && out.contains("no alert #999"), "{out}");
    assert!(
        case(
            cfg,
            &[
                "assign",
                "1",
                "--to",
                "sam.investigator",
                "--by",
                "pat.privacy"
            ]
        )
        .0
    );
    let (ok, out) = case(
        cfg,
        &[
            "facts",
            "1",
            "--residents",
            "CA=1",
            "--residents",
            "TX=260",
            "--licensed-in",
            "CA",
            "--by",
            "sam.investigator",
        ],
    );
    assert!(ok, "{out}");

    let (ok, out) = case(
        cfg,
        &[
            "determine",
            "1",
            "--outcome",
            "not_breach",
            "--by",
            "sam.investigator",
        ],
    );
    assert!(!ok && out.contains("a breach is presumed"), "{out}");
    let (ok, out) = case(
        cfg,
        &[
            "assess",
            "1",
            "--nature",
            "full chart of a public figure, demographics and diagnoses",
            "--person",
            "a nurse of another department with no care relationship",
            "--viewed",
            "opened and scrolled for four minutes",
            "--mitigation",
            "access revoked, staff member interviewed",
            "--conclusion",
            "compromise cannot be ruled out",
            "--by",
            "sam.investigator",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = case(
        cfg,
        &[
            "determine",
            "1",
            "--outcome",
            "breach",
            "--on",
            "2026-03-12",
            "--by",
            "pat.privacy",
        ],
    );
    assert!(ok, "{out}");

    let (ok, show) = case(cfg, &["show", "1"]);
    assert!(ok, "{show}");
    for want in [
        "state determined",
        "rn-ben view pt-star [vip-pos] vip-record",
        "2026-04-01 California Department of Public Health",
        "2026-04-11 Texas Attorney General",
        "2026-05-09 261 affected individual(s)",
        "2027-03-01 HHS (Secretary), annual log",
        "#4 ",
    ] {
        assert!(show.contains(want), "{want:?} not in\n{show}");
    }
    assert!(
        case(
            cfg,
            &[
                "close",
                "1",
                "--resolution",
                "true_positive",
                "--by",
                "pat.privacy"
            ]
        )
        .0
    );
    let (ok, out) = case(cfg, &["assign", "1", "--to", "x", "--by", "y"]);
    assert!(!ok && out.contains("closed"), "{out}");
    let (ok, list) = case(cfg, &["list"]);
    assert!(
        ok && list.contains("closed") && list.contains("breach"),
        "{list}"
    );

    let (ok, out) = case(cfg, &["verify"]);
    assert!(ok && out.contains("case log intact: 6 entries"), "{out}");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE case_log SET actor = 'mallory' WHERE seq = 3", [])
        .unwrap();
    let (ok, out) = case(cfg, &["verify"]);
    assert!(!ok && out.contains("BROKEN at entry #3"), "{out}");
}
