//! Real hospital context: people named by login and MRN, the same hospital as an HR roster,
//! a crosswalk and HL7 v2 ADT with no FHIR at all, an MLLP listener that acknowledges only
//! what is on disk (and loses nothing to kill -9), and IHE BALP records that name their user
//! by display text or not at all.

mod agent;
mod common;
mod mllp;

use agent::{count, free_port, get, start_healthy, wait_for, Agent};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

type Key = (String, String);
type Row = (String, String, String, String);

/// Findings keyed by (event id, detector): (category, severity, user, patient).
fn findings(ndjson: &str) -> BTreeMap<Key, Row> {
    ndjson
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| f[k].as_str().unwrap_or("").to_owned();
            (
                (s("event_id"), s("detector")),
                (s("category"), s("severity"), s("user"), s("patient")),
            )
        })
        .collect()
}

fn generate(dir: &Path, events: usize, identifiers: u32) {
    let out = common::phiwatch(&[
        "demo",
        "--generate-only",
        "--events",
        &events.to_string(),
        "--seed",
        "5",
        "--identifiers",
        &identifiers.to_string(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
}

fn scan_context(context: &Path, events: &Path) -> (String, String) {
    let out = common::phiwatch(&[
        "scan",
        "--no-store",
        "--context",
        context.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    (common::text(&out.stdout), common::text(&out.stderr))
}

/// One hospital day written twice: with every person named by FHIR reference, and with a
/// quarter of the events naming the user by EHR login and the patient by MRN. Identity
/// resolution makes them the same day: the same findings, under the same ids, and no
/// `unknown_user` for anyone the directory knows.
#[test]
fn a_day_named_by_login_and_mrn_gives_the_same_findings() {
    let dir = tempfile::tempdir().unwrap();
    let (refs, ids) = (dir.path().join("refs"), dir.path().join("ids"));
    generate(&refs, 30_000, 0);
    generate(&ids, 30_000, 25);
    let named_by_id = std::fs::read_to_string(ids.join("events.ndjson")).unwrap();
    let share = named_by_id.matches("urn:demo-hospital:ehr-login").count() as f64 / 30_000.0;
    assert!(
        (0.2..0.3).contains(&share),
        "{share} of the events use identifiers"
    );
    let (a, _) = scan_context(&refs.join("context"), &refs.join("events.ndjson"));
    let (b, summary) = scan_context(&refs.join("context"), &ids.join("events.ndjson"));
    let (a, b) = (findings(&a), findings(&b));
    assert!(a.len() > 100, "{} findings", a.len());
    assert_eq!(a, b, "the same findings, users and patients");
    assert!(
        !b.values().any(|(c, ..)| c == "unknown_user"),
        "no unknown users: {summary}"
    );
    assert!(!summary.contains("context gaps"), "{summary}");
}

/// The same hospital as an HR roster, an identity crosswalk and HL7 v2 ADT files (no FHIR
/// context at all), read through `scan --config`: the same findings in every category as
/// the demo's FHIR context gives, and `check` reports full coverage.
#[test]
fn the_hospital_from_roster_crosswalk_and_adt_gives_the_same_findings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let set = d.join("set");
    let out = common::phiwatch(&[
        "demo",
        "--events",
        "30000",
        "--seed",
        "9",
        "--out",
        set.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let fhir = findings(&std::fs::read_to_string(set.join("findings.ndjson")).unwrap());
    // The agent's configuration: the feeds' tables, the day's log as a file source.
    let feeds = std::fs::read_to_string(set.join("feeds/feeds.toml"))
        .unwrap()
        .replace("path = \"", &format!("path = \"{}/feeds/", set.display()))
        .replace(
            "paths = [\"",
            &format!("paths = [\"{}/feeds/", set.display()),
        );
    let config = d.join("phiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}/data\"\n{feeds}\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{}/events.ndjson\"]\nformat = \"fhir-auditevent\"\n",
            d.display(),
            set.display()
        ),
    )
    .unwrap();
    let out = common::phiwatch(&["scan", "--config", config.to_str().unwrap()]);
    let summary = common::text(&out.stderr);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains("HR row(s)") && summary.contains("HL7 v2"),
        "{summary}"
    );
    let from_feeds = findings(&common::text(&out.stdout));
    let categories = |f: &BTreeMap<Key, Row>| {
        let mut c: Vec<String> = f.values().map(|r| r.0.clone()).collect();
        c.sort();
        c.dedup();
        c
    };
    for want in [
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
    ] {
        assert!(
            categories(&fhir).iter().any(|c| c == want),
            "{want} in the FHIR run"
        );
    }
    assert_eq!(categories(&fhir), categories(&from_feeds));
    let missing: Vec<_> = fhir
        .keys()
        .filter(|k| !from_feeds.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = from_feeds
        .keys()
        .filter(|k| !fhir.contains_key(*k))
        .take(5)
        .collect();
    assert_eq!(fhir, from_feeds, "missing {missing:?}, extra {extra:?}");
    // The join coverage report: every sampled access resolves.
    let out = common::phiwatch(&["check", "--config", config.to_str().unwrap()]);
    let text = common::text(&out.stdout) + &common::text(&out.stderr);
    assert!(
        text.contains("users 100.0% resolved, patients 100.0% resolved"),
        "{text}"
    );
}

/// IHE BALP's own examples name the user by display text ("John Smith"), or name none: the
/// accesses are stored and flagged as unidentified, never rejected as bad lines.
#[test]
fn balp_examples_without_a_user_id_are_stored_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let fx = common::fixtures().join("ihe-balp/patient-read.ndjson");
    let out = common::phiwatch(&[
        "scan",
        "--no-plugins",
        "--store",
        db.to_str().unwrap(),
        "--store-accesses",
        "--events",
        fx.to_str().unwrap(),
    ]);
    let summary = common::text(&out.stderr);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains("3 patient accesses") && summary.contains("0 bad lines"),
        "{summary}"
    );
    let f = findings(&common::text(&out.stdout));
    let unidentified: Vec<(&str, &str)> = f
        .iter()
        .filter(|(_, r)| r.0 == "unidentified_user")
        .map(|((e, _), r)| (e.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        unidentified,
        [
            ("ex-auditBasicReadClient", "unidentified:John Smith"),
            ("ex-auditBasicReadNoUser", "unidentified:ex-device"),
            ("ex-auditBasicReadServer", "unidentified:John Smith"),
        ]
    );
    assert!(!f.values().any(|r| r.0 == "unknown_user"));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM accesses WHERE patient_id = 'ex-patient'"
        ),
        3
    );
}

fn pv1(fields: &[(usize, &str)]) -> String {
    let mut f = vec![String::new(); 46];
    f[0] = "PV1".into();
    for (n, v) in fields {
        f[*n] = (*v).to_owned();
    }
    f.join("|")
}

fn admission(i: usize) -> String {
    format!(
        "MSH|^~\\&|EHR|HOSP|PHIWATCH|HOSP|20260310080000||ADT^A01^ADT_A01|C{i:06}|P|2.5\rEVN|A01|20260310080000\rPID|1||MRN-{i}^^^HOSP^MR||PATIENT^N{i}\r{}\r",
        pv1(&[(2, "I"), (7, "dr-ana^Ana"), (10, "CAR"), (19, &format!("V{i}")), (44, "20260310080000")])
    )
}

fn connect(port: u16) -> TcpStream {
    let mut s = None;
    assert!(wait_for(Duration::from_secs(60), || {
        s = TcpStream::connect(("127.0.0.1", port)).ok();
        s.is_some()
    }));
    let s = s.unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// 10,000 ADT messages over MLLP from a real TCP client, the agent killed -9 in the middle
/// and restarted: every message that got `AA` is applied after the restart (its patient's
/// admission explains the attending's access), none twice (the journal holds each once);
/// malformed messages get `AE`, another type `AR`.
#[test]
fn mllp_acknowledges_what_is_stored_and_kill_9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (http, mllp) = (free_port(), free_port());
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let config = d.join("phiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/data\"\n[[context]]\nkind = \"fhir\"\npath = \"{ctx}\"\n[[context]]\nkind = \"mllp\"\nname = \"adt\"\nlisten = \"127.0.0.1:{mllp}\"\n[context.departments]\nCAR = \"cardiology\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/*.ndjson\"]\nformat = \"fhir-auditevent\"\npoll_ms = 20\n",
            d = d.display(),
            ctx = common::fixtures().join("clinic/context").display()
        ),
    )
    .unwrap();
    let mut agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    let mut s = connect(mllp);
    // Malformed and foreign messages first.
    assert_eq!(
        mllp::exchange(&mut s, &mllp::frame("NOT AN HL7 MESSAGE")).as_deref(),
        Some("AE")
    );
    assert_eq!(
        mllp::exchange(&mut s, &mllp::frame("MSH|^~\\&|A\rSMITH JOHN|X")).as_deref(),
        Some("AE")
    );
    assert_eq!(
        mllp::exchange(
            &mut s,
            &mllp::frame("MSH|^~\\&|LAB|H|X|Y|2026||ORU^R01|L1|P|2.5\rPID|1||MRN-1\r")
        )
        .as_deref(),
        Some("AR")
    );
    let total = 10_000;
    let mut acked = 0;
    let mut killed = false;
    let mut i = 0;
    while i < total {
        if i == 3_000 && !killed {
            killed = true;
            agent.0.kill().unwrap();
            let _ = agent.0.wait();
            agent = Agent::start(&config);
        }
        match mllp::exchange(&mut s, &mllp::frame(&admission(i))) {
            Some(code) => {
                assert_eq!(code, "AA", "message {i}");
                acked += 1;
                i += 1;
            }
            // The connection died with the agent: reconnect and send the same message again.
            None => s = connect(mllp),
        }
    }
    assert_eq!(acked, total);
    assert!(wait_for(Duration::from_secs(60), || get(http, "/healthz")
        .is_some_and(|b| b.contains("200 OK"))));
    let db = d.join("data/phiwatch.db");
    assert!(
        wait_for(Duration::from_secs(120), || count(
            &db,
            "SELECT count(*) FROM context_journal"
        ) == total as i64),
        "journaled: {}",
        count(&db, "SELECT count(*) FROM context_journal")
    );
    // Each admission explains the attending's access: before the kill, after it, and the
    // last one. A patient nobody admitted is not explained.
    let event = |id: &str, patient: &str| {
        format!(
            r#"{{"resourceType":"AuditEvent","id":"{id}","action":"R","recorded":"2026-03-10T15:00:00Z","agent":[{{"who":{{"reference":"Practitioner/dr-ana"}},"requestor":true}}],"entity":[{{"what":{{"identifier":{{"system":"HOSP","value":"{patient}"}}}},"role":{{"code":"1"}}}}]}}"#
        )
    };
    let lines = [
        event("before", "MRN-17"),
        event("after", "MRN-7777"),
        event("last", &format!("MRN-{}", total - 1)),
        event("nobody", "MRN-NOT-ADMITTED"),
    ];
    std::fs::write(d.join("logs/day.ndjson"), lines.join("\n") + "\n").unwrap();
    assert!(wait_for(Duration::from_secs(30), || count(
        &db,
        "SELECT count(*) FROM accesses"
    ) == 4));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE event_id IN ('before', 'after', 'last')"
        ),
        0,
        "admitted patients: the attending's access is explained"
    );
    assert!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE event_id = 'nobody'"
        ) > 0
    );
    // A restart replays the journal: the context is the same, nothing is journaled twice.
    let (status, _) = agent.stop();
    assert!(status.success());
    let agent = start_healthy(&config, http, &[], Duration::from_secs(60));
    assert_eq!(
        count(&db, "SELECT count(*) FROM context_journal"),
        total as i64
    );
    std::fs::write(
        d.join("logs/more.ndjson"),
        event("again", "MRN-4242") + "\n",
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(30), || count(
        &db,
        "SELECT count(*) FROM accesses"
    ) == 5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE event_id = 'again'"
        ),
        0
    );
    assert!(agent.stop().0.success());
}
