//! `phiwatch run` end to end: the real binary tails a log, stores accesses and findings,
//! serves /healthz and /metrics, and stops cleanly on SIGTERM with its checkpoint saved.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(-1)
}

#[test]
fn tails_a_log_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let fx = common::fixtures().join("clinic");
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::write(
        d.join("phiwatch.toml"),
        format!(
            "data_dir = \"{d}/data\"\ncontext = \"{ctx}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/*.ndjson\"]\nformat = \"fhir-auditevent\"\npoll_ms = 20\n",
            d = d.display(),
            ctx = fx.join("context").display()
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(["run", "--config", d.join("phiwatch.toml").to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
        ) == 13),
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
        "phiwatch_findings_total 13",
        "phiwatch_source_lag_bytes{source=\"ehr\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }

    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut log_text = String::new();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log_text)
        .unwrap();
    assert!(log_text.contains("bad line"), "{log_text}");
    // No PHI at the default log level: no patient names from the fixture context.
    for name in ["Rivera", "Kowalczyk", "Sterling", "Halvorsen", "Okafor"] {
        assert!(!log_text.contains(name), "{name} in logs:\n{log_text}");
    }
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("data/checkpoints/ehr.json")).unwrap())
            .unwrap();
    assert_eq!(cp["files"][0]["offset"], events.len() as u64);

    // A restart reads nothing again.
    let mut again = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(["run", "--config", d.join("phiwatch.toml").to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(20), || get(port, "/healthz").is_some()));
    std::thread::sleep(Duration::from_millis(300));
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("phiwatch_source_lines_total{source=\"ehr\"} 0"),
        "{metrics}"
    );
    unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
    assert!(again.wait().unwrap().success());
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
