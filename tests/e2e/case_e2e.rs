//! A breach-response case end to end: the agent turns the clinic's findings into alerts, a
//! privacy officer opens a case on the VIP alert, assesses it, determines a breach (the
//! presumption refuses "not a breach" without a documented low probability), reads the
//! evidence timeline and the deadlines, closes it; the case log verifies, and a one-byte edit
//! to it is caught and named.

mod agent;
mod common;

use agent::{count, free_port, start_healthy, wait_for, write_config};
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

/// Runs the agent (alerting on, one unreachable receiver for reminders) over `events` with
/// `context` until `ready` holds on the store; returns the config path.
fn ingest(
    d: &std::path::Path,
    context: &std::path::Path,
    events: &std::path::Path,
    ready: &str,
) -> std::path::PathBuf {
    std::fs::write(
        d.join("routing.toml"),
        "[grouping]\ngroup_wait = \"0s\"\n[[receiver]]\nkind = \"webhook\"\nname = \"privacy\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("response.toml"),
        "[organization]\nname = \"Springfield Clinic\"\naddress = \"1 Main St, Springfield\"\nphone = \"1-800-555-0199\"\n[reminders]\ndays_before = [30, 14, 7, 2]\nreceivers = [\"privacy\"]\nescalate_to = [\"privacy\"]\n",
    )
    .unwrap();
    let http = free_port();
    let config = write_config(
        d,
        http,
        context,
        &format!(
            "routing = \"{d}/routing.toml\"\nresponse = \"{d}/response.toml\"\n",
            d = d.display()
        ),
    );
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    std::fs::copy(events, d.join("logs/ehr.ndjson")).unwrap();
    let db = d.join("data/phiwatch.db");
    assert!(
        wait_for(Duration::from_secs(120), || count(&db, ready) > 0),
        "never: {ready}"
    );
    // Let the last batches settle before stopping.
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.stop().0.success());
    config
}

#[test]
fn from_alert_to_closed_case_with_a_verified_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = common::fixtures().join("clinic");
    let config = ingest(
        d,
        &fx.join("context"),
        &fx.join("events.ndjson"),
        "SELECT count(*) FROM alerts WHERE category = 'vip'",
    );
    let db = d.join("data/phiwatch.db");
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

    let (ok, out) = case(
        cfg,
        &[
            "task",
            "1",
            "--add",
            "Interview the nurse",
            "--by",
            "sam.investigator",
        ],
    );
    assert!(ok && out.contains("task 1 added"), "{out}");
    assert!(
        case(
            cfg,
            &["task", "1", "--done", "1", "--by", "sam.investigator"]
        )
        .0
    );
    let (ok, out) = case(
        cfg,
        &["task", "1", "--done", "1", "--by", "sam.investigator"],
    );
    assert!(!ok && out.contains("no open task 1"), "{out}");

    let (ok, show) = case(cfg, &["show", "1"]);
    assert!(ok, "{show}");
    for want in [
        "[x] 1. Interview the nurse",
        "user rn-ben: role nurse, department cardiology, active",
        "patient pt-star: VIP",
        "state determined",
        "rn-ben view pt-star [vip-pos] plugin:first-access,vip-record",
        "2026-04-01 California Department of Public Health",
        "2026-04-11 Texas Attorney General",
        "2026-05-09 261 affected individual(s)",
        "2027-03-01 HHS (Secretary), annual log",
        "#4 ",
    ] {
        assert!(show.contains(want), "{want:?} not in\n{show}");
    }

    // Reminders: 30, 14, 7 and 2 days before each deadline still ahead, and an escalation the
    // day after each one, pending in the outbox once the breach is determined (the
    // provisional ones of a clock that moved, Texas's from discovery to determination, are
    // cancelled).
    let today = chrono::Utc::now().date_naive();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, i64)> = conn
        .prepare(
            "SELECT subject, due_ms FROM outbox WHERE case_id = 1 AND state = 'pending'
             ORDER BY due_ms",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .date_naive()
    };
    for (due, who) in [
        ("2026-04-01", "California Department of Public Health"),
        ("2026-04-11", "Texas Attorney General"),
        ("2026-05-09", "affected individual(s)"),
        ("2027-03-01", "annual log"),
    ] {
        let due = chrono::NaiveDate::parse_from_str(due, "%Y-%m-%d").unwrap();
        let mut want: Vec<chrono::NaiveDate> = [30, 14, 7, 2]
            .iter()
            .map(|n| due - chrono::Duration::days(*n))
            .filter(|d| *d >= today)
            .collect();
        want.push(due + chrono::Duration::days(1));
        let got: Vec<chrono::NaiveDate> = rows
            .iter()
            .filter(|(subj, _)| subj.contains(who))
            .map(|(_, ms)| date(*ms))
            .collect();
        assert_eq!(got, want, "reminders for {who}");
    }
    assert!(rows
        .iter()
        .any(|(s, _)| s.starts_with("[phiwatch] OVERDUE case #1")));

    // Outputs.
    let (ok, out) = case(
        cfg,
        &[
            "export",
            "1",
            "--letters",
            d.join("letters").to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("1 letter(s)"), "{out}");
    let letter = std::fs::read_to_string(d.join("letters/letter-pt-star.txt")).unwrap();
    for want in [
        "Dear Sterling",
        "Springfield Clinic",
        "We discovered it on 2026-03-10",
        "What information was involved\nfull chart of a public figure",
        "What we are doing\naccess revoked",
        "Call us toll-free at 1-800-555-0199",
    ] {
        assert!(letter.contains(want), "{want:?} not in\n{letter}");
    }
    let (ok, out) = case(
        cfg,
        &["export", "1", "--hhs", d.join("hhs.json").to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let hhs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("hhs.json")).unwrap()).unwrap();
    assert_eq!(hhs["breach"]["individuals_affected"], 261);
    assert_eq!(hhs["breach"]["discovery_date"], "2026-03-10");
    assert_eq!(hhs["covered_entity"]["name"], "Springfield Clinic");
    let (ok, csv) = case(cfg, &["export", "--annual-log", "2026"]);
    assert!(
        ok && csv
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("1,2026-03-10,")),
        "{csv}"
    );
    let (ok, acc) = case(cfg, &["export", "--accounting", "pt-star"]);
    assert!(
        ok && acc.contains("impermissible access, breach case #1")
            && acc.contains("a nurse of another department"),
        "{acc}"
    );

    // Evidence files are kept by their SHA-256.
    std::fs::write(d.join("interview.txt"), "notes of the interview").unwrap();
    let (ok, out) = case(
        cfg,
        &[
            "attach",
            "1",
            "--file",
            d.join("interview.txt").to_str().unwrap(),
            "--by",
            "sam.investigator",
        ],
    );
    assert!(ok, "{out}");
    let sha = out.trim().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(
        std::fs::read_to_string(d.join("data/attachments").join(&sha)).unwrap(),
        "notes of the interview"
    );
    assert!(case(cfg, &["notify", "1", "--by", "pat.privacy"]).0);
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
    assert!(ok && out.contains("case log intact: 10 entries"), "{out}");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE case_log SET actor = 'mallory' WHERE seq = 3", [])
        .unwrap();
    let (ok, out) = case(cfg, &["verify"]);
    assert!(!ok && out.contains("BROKEN at entry #3"), "{out}");
}

/// The demo's findings: a critical alert from the generated day becomes a breach case with
/// letters for its patients, the HHS report and reminders.
#[test]
fn demo_day_alert_becomes_a_breach_case() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let set = common::demo_set(&d.join("set"), 20_000);
    let config = ingest(
        d,
        &set.join("context"),
        &set.join("events.ndjson"),
        "SELECT count(*) FROM accesses WHERE (SELECT count(*) FROM accesses) >= 19000",
    );
    let db = d.join("data/phiwatch.db");
    let alert = count(
        &db,
        "SELECT min(id) FROM alerts WHERE severity = 'critical'",
    );
    assert!(alert > 0, "the demo day raises critical alerts");
    let patients = count(
        &db,
        &format!("SELECT count(DISTINCT patient_id) FROM alert_findings WHERE alert_id = {alert}"),
    );
    let cfg = config.to_str().unwrap();
    let alert = alert.to_string();
    let today = chrono::Utc::now().date_naive().to_string();
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "open",
            "--alert",
            &alert,
            "--discovered",
            &today,
            "--by",
            "pat",
        ],
        vec!["facts", "1", "--residents", "CA=3", "--by", "pat"],
        vec![
            "assess",
            "1",
            "--nature",
            "demographics and diagnoses",
            "--person",
            "a coworker",
            "--viewed",
            "viewed",
            "--mitigation",
            "access removed",
            "--conclusion",
            "breach",
            "--by",
            "pat",
        ],
        vec!["determine", "1", "--outcome", "breach", "--by", "pat"],
    ];
    for s in steps {
        let (ok, out) = case(cfg, &s);
        assert!(ok, "{s:?}: {out}");
    }
    let (ok, out) = case(
        cfg,
        &[
            "export",
            "1",
            "--letters",
            d.join("letters").to_str().unwrap(),
            "--hhs",
            d.join("hhs.json").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{patients} letter(s)")), "{out}");
    let hhs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("hhs.json")).unwrap()).unwrap();
    assert_eq!(hhs["breach"]["individuals_affected"], 3);
    // 60 days ahead: reminders at 30, 14, 7 and 2 days before, and the escalation after.
    assert_eq!(
        count(&db, "SELECT count(*) FROM outbox WHERE case_id = 1 AND subject LIKE '%affected individual%'"),
        5
    );
    assert!(case(cfg, &["verify"]).0);
}

/// The Tuesday before the next Thanksgiving (fourth Thursday of November) at least `after`
/// days ahead, and that Thanksgiving.
fn tuesday_before_thanksgiving(after: i64) -> (chrono::NaiveDate, chrono::NaiveDate) {
    use chrono::Datelike;
    let earliest = chrono::Utc::now().date_naive() + chrono::Duration::days(after);
    let mut year = earliest.year();
    loop {
        let thanksgiving =
            chrono::NaiveDate::from_weekday_of_month_opt(year, 11, chrono::Weekday::Thu, 4)
                .unwrap();
        let tuesday = thanksgiving - chrono::Duration::days(2);
        if tuesday >= earliest {
            return (tuesday, thanksgiving);
        }
        year += 1;
    }
}

/// Clocks run from discovery, before any determination: a California-licensed case
/// discovered on the Tuesday before Thanksgiving shows its provisional CDPH deadline (15
/// business days, Thanksgiving and the day after not counted) and has its reminders queued;
/// a determination of "not a breach" cancels them; 499 affected becoming 500 adds the HHS
/// clock once.
#[test]
fn provisional_clocks_and_reminders_from_discovery() {
    use chrono::Datelike;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = common::fixtures().join("clinic");
    let config = ingest(
        d,
        &fx.join("context"),
        &fx.join("events.ndjson"),
        "SELECT count(*) FROM alerts WHERE category = 'vip'",
    );
    let db = d.join("data/phiwatch.db");
    let vip = count(&db, "SELECT id FROM alerts WHERE category = 'vip'").to_string();
    let cfg = config.to_str().unwrap();
    let (discovered, thanksgiving) = tuesday_before_thanksgiving(10);
    // 15 business days, counted independently: weekends, Thanksgiving and the day after off.
    let mut cdph = discovered;
    let mut left = 15;
    while left > 0 {
        cdph += chrono::Duration::days(1);
        let off = matches!(cdph.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun)
            || cdph == thanksgiving
            || cdph == thanksgiving + chrono::Duration::days(1);
        if !off {
            left -= 1;
        }
    }
    let disc = discovered.to_string();
    let (ok, out) = case(
        cfg,
        &[
            "open",
            "--alert",
            &vip,
            "--discovered",
            &disc,
            "--by",
            "pat",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = case(
        cfg,
        &[
            "facts",
            "1",
            "--residents",
            "CA=1",
            "--licensed-in",
            "CA",
            "--by",
            "pat",
        ],
    );
    assert!(ok && out.contains("reminder(s) pending"), "{out}");
    let (ok, show) = case(cfg, &["show", "1"]);
    assert!(ok, "{show}");
    assert!(show.contains("deadlines (provisional"), "{show}");
    let line = show
        .lines()
        .find(|l| l.contains("California Department of Public Health"))
        .unwrap_or_else(|| panic!("no CDPH clock in\n{show}"));
    assert!(line.contains(&cdph.to_string()), "{line} (want {cdph})");
    assert!(line.contains("might apply"), "{line}");
    let (ok, list) = case(cfg, &["list"]);
    assert!(ok && list.contains("next deadline"), "{list}");
    let row = list
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(
        row.contains(&cdph.to_string()) && row.contains("prov."),
        "{row}"
    );

    let pending_cdph = || {
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE case_id = 1 AND state = 'pending'
             AND subject LIKE '%California Department of Public Health%'",
        )
    };
    // 30, 14, 7 and 2 days before, and the escalation the day after.
    assert_eq!(pending_cdph(), 5);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE case_id = 1 AND state = 'pending'
             AND subject NOT LIKE '%provisional%'"
        ),
        0,
        "every reminder is marked provisional"
    );
    // Recording the same facts again queues nothing twice.
    assert!(case(cfg, &["facts", "1", "--residents", "CA=1", "--by", "pat"]).0);
    assert_eq!(pending_cdph(), 5);

    // Not a breach, with the documented low probability: the reminders are cancelled.
    assert!(
        case(
            cfg,
            &[
                "assess",
                "1",
                "--nature",
                "name only",
                "--person",
                "a colleague on the care team's floor",
                "--viewed",
                "closed without viewing",
                "--mitigation",
                "confirmed in writing",
                "--low-probability",
                "--conclusion",
                "low probability of compromise",
                "--by",
                "pat",
            ]
        )
        .0
    );
    let (ok, out) = case(
        cfg,
        &["determine", "1", "--outcome", "not_breach", "--by", "pat"],
    );
    assert!(
        ok && out.contains("0 deadline reminder(s) pending"),
        "{out}"
    );
    assert_eq!(pending_cdph(), 0);
    let (_, show) = case(cfg, &["show", "1"]);
    assert!(show.contains("none: determined not_breach"), "{show}");

    // A second case: 499 affected, then 500 — HHS with the individual notices, once.
    let (ok, out) = case(
        cfg,
        &[
            "open",
            "--alert",
            &vip,
            "--discovered",
            &disc,
            "--by",
            "pat",
        ],
    );
    assert!(ok, "{out}");
    let hhs = |kind: &str| {
        count(
            &db,
            &format!(
                "SELECT count(*) FROM outbox WHERE case_id = 2 AND state = 'pending'
                 AND subject LIKE '%{kind}%'"
            ),
        )
    };
    assert!(case(cfg, &["facts", "2", "--residents", "NY=499", "--by", "pat"]).0);
    assert_eq!(hhs("breach portal"), 0);
    assert!(hhs("annual log") > 0);
    for _ in 0..2 {
        assert!(case(cfg, &["facts", "2", "--residents", "NY=500", "--by", "pat"]).0);
        assert_eq!(hhs("breach portal"), 5, "queued once");
        assert_eq!(
            hhs("annual log"),
            0,
            "the annual-log clock no longer applies"
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) - count(DISTINCT idempotency_key) FROM outbox"
        ),
        0
    );
}
