//! `phiwatch run` end to end: the real binary tails a log, stores accesses and findings,
//! serves /healthz and /metrics, and stops cleanly on SIGTERM with its checkpoint saved.

mod agent;
mod common;

/// The clinic day's findings: 13 from the Cedar pack, and the first-access plugin's on vip-pos.
const CLINIC_FINDINGS: i64 = 14;

use agent::{count, free_port, get, metric, wait_for, write_config, Agent};

use std::io::Write;
use std::time::Duration;

#[test]
fn tails_a_log_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let fx = common::fixtures().join("clinic");
    std::fs::create_dir_all(d.join("logs")).unwrap();
    write_config(d, port, &fx.join("context"), "");
    // Info level, JSON lines: what an operator would ship to a log collector.
    let agent = Agent::start_with_env(
        &d.join("phiwatch.toml"),
        &[("PHIWATCH_LOG", "info"), ("PHIWATCH_LOG_FORMAT", "json")],
    );
    assert!(
        wait_for(Duration::from_secs(20), || get(port, "/healthz")
            .is_some_and(|b| b.contains("200 OK"))),
        "agent never became healthy"
    );

    // Events arrive in two appends, the second cutting a line in half.
    let events = std::fs::read_to_string(fx.join("events.ndjson")).unwrap();
    let (head, tail) = events.split_at(events.len() / 2);
    let log = d.join("logs/ehr.ndjson");
    std::fs::write(&log, head).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(tail.as_bytes())
        .unwrap();

    let db = d.join("data/phiwatch.db");
    assert!(
        wait_for(Duration::from_secs(20), || count(
            &db,
            "SELECT count(*) FROM findings"
        ) == CLINIC_FINDINGS),
        "findings stored: {}",
        count(&db, "SELECT count(*) FROM findings")
    );
    assert_eq!(count(&db, "SELECT count(*) FROM accesses"), 20);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE event_id = 'family-pos' AND category = 'family'"
        ),
        1
    );
    let metrics = get(port, "/metrics").unwrap();
    for want in [
        "phiwatch_up 1",
        "phiwatch_source_events_total{source=\"ehr\"} 20",
        "phiwatch_source_bad_lines_total{source=\"ehr\"} 3",
        "phiwatch_findings_total 14",
        "phiwatch_source_lag_bytes{source=\"ehr\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }

    let (status, log_text) = agent.stop();
    assert!(status.success(), "exit status {status}");
    assert!(log_text.contains("bad line"), "{log_text}");
    // No PHI at info level: no name of any patient in the fixture context.
    let mut names = Vec::new();
    let patients = std::fs::read_to_string(fx.join("context/Patient.ndjson")).unwrap();
    for line in patients.lines() {
        let Ok(p) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for n in p["name"].as_array().into_iter().flatten() {
            names.extend(n["family"].as_str().map(str::to_owned));
            for g in n["given"].as_array().into_iter().flatten() {
                names.extend(g.as_str().map(str::to_owned));
            }
        }
    }
    assert!(names.len() >= 10, "names from the fixture: {names:?}");
    for name in &names {
        assert!(
            !log_text.contains(name.as_str()),
            "{name} in logs:\n{log_text}"
        );
    }
    for line in log_text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        log_text.contains("\"level\":\"INFO\""),
        "info lines are there:\n{log_text}"
    );
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("data/checkpoints/ehr.json")).unwrap())
            .unwrap();
    assert_eq!(cp["files"][0]["offset"], events.len() as u64);

    // A restart reads nothing again.
    let again = Agent::start(&d.join("phiwatch.toml"));
    assert!(wait_for(Duration::from_secs(20), || get(port, "/healthz").is_some()));
    std::thread::sleep(Duration::from_millis(300));
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("phiwatch_source_lines_total{source=\"ehr\"} 0"),
        "{metrics}"
    );
    assert!(again.stop().0.success());
}

#[test]
fn bad_config_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "data_dir = \"/tmp/x\"\npoll = 3\n").unwrap();
    let out = common::phiwatch(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 2") && err.contains("poll"),
        "{err}"
    );
}

#[test]
fn broken_policy_keeps_the_previous_pack_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let fx = common::fixtures().join("clinic");
    let policies = d.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    // The patient-access pack only: without a files/ subdirectory the built-in folder pack runs.
    for e in std::fs::read_dir(common::repo().join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir_all(d.join("logs")).unwrap();
    write_config(
        d,
        port,
        &fx.join("context"),
        &format!("policies = \"{}\"\n", policies.display()),
    );
    let agent = Agent::start(&d.join("phiwatch.toml"));
    assert!(wait_for(Duration::from_secs(20), || get(port, "/healthz").is_some()));
    let events = std::fs::read_to_string(fx.join("events.ndjson")).unwrap();
    let log = d.join("logs/ehr.ndjson");
    let append = |prefix: &str| {
        let batch = events.replace("\"id\":\"", &format!("\"id\":\"{prefix}"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(batch.as_bytes())
            .unwrap();
    };
    let db = d.join("data/phiwatch.db");
    let findings = || count(&db, "SELECT count(*) FROM findings");

    append("a-");
    assert!(
        wait_for(Duration::from_secs(20), || findings() == CLINIC_FINDINGS),
        "{}",
        findings()
    );

    // A broken policy arrives: rejected, counted, and detection goes on with the old pack.
    std::fs::write(
        policies.join("zz-local.cedar"),
        "@id(\"x\")\nforbid (principal, action, resource) when { oops };\n",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || metric(
            port,
            "phiwatch_reload_failures_total"
        ) == Some(1.0)),
        "reload failure not counted"
    );
    append("b-");
    assert!(
        // The Cedar pack flags the renamed copies again; first-access has seen rn-ben open
        // the VIP chart already, so it does not.
        wait_for(Duration::from_secs(20), || findings() == 2 * 13 + 1),
        "{}",
        findings()
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE event_id = 'b-family-pos' AND category = 'family'"
        ),
        1
    );
    assert!(get(port, "/healthz").unwrap().contains("200 OK"));

    // The fixed policy is picked up and applies to new events.
    std::fs::write(
        policies.join("zz-local.cedar"),
        "@id(\"doctor-watch\")\n@category(\"watch\")\n@severity(\"low\")\n@explain(\"{user} opened {patient}\")\n@hipaa(\"164.308(a)(1)(ii)(D)\")\nforbid (principal, action, resource) when { principal in Role::\"doctor\" };\n",
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(20), || metric(
        port,
        "phiwatch_reloads_total"
    ) == Some(1.0)));
    append("c-");
    assert!(
        wait_for(Duration::from_secs(20), || count(
            &db,
            "SELECT count(*) FROM findings WHERE event_id LIKE 'c-%' AND category = 'watch'"
        ) > 0),
        "new policy never applied"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM findings WHERE event_id LIKE 'b-%' AND category = 'watch'"
        ),
        0
    );

    // SIGHUP reloads on demand.
    agent.signal(libc::SIGHUP);
    assert!(wait_for(Duration::from_secs(20), || metric(
        port,
        "phiwatch_reloads_total"
    ) == Some(2.0)));
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("reload rejected"), "{log}");
}
