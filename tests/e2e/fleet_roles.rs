//! Fleet mode's roles as real processes against a real PostgreSQL (a throwaway cluster on
//! loopback): three collectors, each tailing one site's log, two detectors taking the lease
//! in turn, and two dispatchers sending to a real webhook receiver. A collector and the
//! active detector are killed with SIGKILL while batches flow; a detector is held in the
//! middle of a batch and stopped (SIGSTOP) past its lease, then continued, and its late
//! commit must be refused. Afterwards every access written is stored once, the findings and
//! the alerts are exactly those of a single-process SQLite scan of the same files, and every
//! notification reached the receiver once.

mod agent;
mod common;
mod http;
mod postgres;
mod serve;

use postgres::Postgres;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SITES: usize = 3;
const LEASE_SECONDS: u64 = 3;
/// Slices of the week the sites write one after another.
const SLICES: usize = 90;

/// One node: its own data_dir, the sites' sources it is given, the shared context, routing
/// and [database]. Detectors are given every source (they read none). The metrics listener
/// takes any free port: the test does not read it, and a port picked in advance can be taken
/// meanwhile by any outgoing connection of the other nodes (their ephemeral ports come from
/// the same range), which stopped a collector from starting.
fn node_config(d: &Path, node: &str, sites: &[usize], url: &str, role: &str) -> PathBuf {
    let mut text = format!(
        "data_dir = \"{d}/{node}\"\ncontext = \"{d}/demo/context\"\nrouting = \"{d}/routing.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        d = d.display(),
    );
    for s in sites {
        text += &format!(
            "[[source]]\nkind = \"file\"\nname = \"site{s}\"\npaths = [\"{d}/logs/site{s}.ndjson\"]\nformat = \"fhir-auditevent\"\n",
            d = d.display()
        );
    }
    if !url.is_empty() {
        text += &format!(
            "[database]\nurl = \"{url}\"\n[fleet]\nrole = \"{role}\"\nnode = \"{node}\"\nlease_seconds = {LEASE_SECONDS}\n"
        );
    }
    let path = d.join(format!("{node}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    pause: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Node {
    fn new(d: &Path, name: &str, config: PathBuf) -> Node {
        Node {
            name: name.to_owned(),
            config,
            log: d.join(format!("{name}.log")),
            pause: d.join(format!("{name}.pause")),
            child: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_phiwatch"))
                .args(["run", "--config", self.config.to_str().unwrap()])
                .env("PHIWATCH_LOG", "info")
                .env("PHIWATCH_FAULT_PAUSE_DETECTION", &self.pause)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.child.take().unwrap().wait().unwrap();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as above.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while c.try_wait().unwrap().is_none() {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "{} did not stop",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The demo's events split into sites by user, as a health system's sites split staff: each
/// user's accesses stay in one log, in their order.
fn sites(events: &Path) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); SITES];
    let mut site_of = std::collections::HashMap::new();
    for line in std::fs::read_to_string(events).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let who = v["agent"][0]["who"].to_string();
        let n = site_of.len();
        let site = *site_of.entry(who).or_insert(n % SITES);
        out[site].push(line.to_owned());
    }
    out
}

fn append(d: &Path, site: usize, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join(format!("logs/site{site}.ndjson")))
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_all().unwrap();
}

fn psql_i64(pg: &Postgres, sql: &str) -> i64 {
    pg.psql("phiwatch", sql).trim().parse().unwrap_or(-1)
}

/// The lease's holder while unexpired, else "".
fn holder(pg: &Postgres) -> String {
    pg.psql(
        "phiwatch",
        "SELECT coalesce((SELECT holder FROM detector_lease WHERE expires_at > clock_timestamp()), '')",
    )
    .trim()
    .to_owned()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_collectors_and_two_detectors_survive_kills_and_a_stopped_detector_and_find_what_one_process_finds(
) {
    let pg = Postgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::demo_set(&d.join("demo"), 12_000);
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let split = sites(&d.join("demo/events.ndjson"));
    assert!(
        split.iter().all(|s| s.len() > 1000),
        "each site has a share"
    );
    let (hook, delivered) = migrated_with_receiver(&url);
    // Short waits, so every alert's notifications go out while the test watches.
    std::fs::write(
        d.join("routing.toml"),
        format!(
            "[grouping]\ngroup_wait = \"1s\"\ngroup_interval = \"2s\"\nrepeat_interval = \"7d\"\n\
             [[receiver]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"http://127.0.0.1:{hook}/hook\"\n\
             [[route]]\nreceivers = [\"siem\"]\n"
        ),
    )
    .unwrap();

    // The single process (SQLite) over the same events, as one log in time order.
    let (in_time_order, accesses) = scan_one_log(d, "single", &d.join("demo/events.ndjson"));
    assert!(accesses > 5000, "{accesses} accesses stored");

    // The sites write their logs as time passes: slice k of every site's log covers the same
    // stretch of the week, and the collectors read each as it comes.
    let slice = |s: usize, k: usize| {
        let n = split[s].len();
        &split[s][n * k / SLICES..n * (k + 1) / SLICES]
    };
    let write = |k: usize| {
        for s in 0..SITES {
            append(d, s, slice(s, k));
        }
        std::thread::sleep(Duration::from_millis(120));
    };
    let all: Vec<usize> = (0..SITES).collect();
    let mut collectors: Vec<Node> = (0..SITES)
        .map(|s| {
            let name = format!("collector{s}");
            Node::new(d, &name, node_config(d, &name, &[s], &url, "collect"))
        })
        .collect();
    let mut detectors: Vec<Node> = (0..2)
        .map(|i| {
            let name = format!("detector{i}");
            Node::new(d, &name, node_config(d, &name, &all, &url, "detect"))
        })
        .collect();
    let mut dispatchers: Vec<Node> = (0..2)
        .map(|i| {
            let name = format!("dispatcher{i}");
            Node::new(d, &name, node_config(d, &name, &[], &url, "dispatch"))
        })
        .collect();
    // One console node: officers sign in to it while the others work.
    let (console_config, console_port) = console_config(d, "console0", &url, "");
    add_user(&console_config, "olivia", "privacy-officer");
    let mut console = Node::new(d, "console0", console_config);
    console.start();
    for n in collectors
        .iter_mut()
        .chain(detectors.iter_mut())
        .chain(dispatchers.iter_mut())
    {
        n.start();
    }
    console_up(console_port);
    let officer = http::Client::login(console_port, "olivia", PASSWORD);
    wait_for(
        "a detector to take the lease",
        Duration::from_secs(30),
        || !holder(&pg).is_empty(),
    );
    let active = |pg: &Postgres| -> usize {
        let h = holder(pg);
        (0..2)
            .find(|&i| h.starts_with(&format!("detector{i}/")))
            .unwrap_or(usize::MAX)
    };
    let mut k = 0;
    while k < SLICES / 3 {
        write(k);
        k += 1;
    }

    // SIGHUP: the active detector takes up its inputs again between two batches, keeping
    // its lease (the comparisons below show nothing was lost or judged twice).
    let a = active(&pg);
    assert!(a < 2, "a detector holds the lease");
    let before = holder(&pg);
    detectors[a].signal(libc::SIGHUP);
    wait_for("the detector to reload", Duration::from_secs(20), || {
        detectors[a]
            .log()
            .contains("reloaded settings, policies and context")
    });
    assert_eq!(holder(&pg), before, "the lease is kept across a reload");
    write(k);
    k += 1;

    // A collector and the active detector are killed while batches flow.
    collectors[1].kill9();
    let a = active(&pg);
    assert!(a < 2, "a detector holds the lease");
    let killed = holder(&pg);
    detectors[a].kill9();
    let t = Instant::now();
    collectors[1].start();
    detectors[a].start();
    wait_for("a standby to take over", Duration::from_secs(30), || {
        let h = holder(&pg);
        !h.is_empty() && h != killed
    });
    let takeover = t.elapsed();
    // The killed detector's old lease runs out first, whoever takes the new one.
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 10),
        "takeover took {takeover:?}"
    );
    while k < 2 * SLICES / 3 {
        write(k);
        k += 1;
    }

    // The active detector is held before its next batch, then stopped past its lease; the
    // other takes over; the held one is continued and tries to commit its batch.
    let held = active(&pg);
    assert!(held < 2);
    std::fs::write(&detectors[held].pause, b"").unwrap();
    write(k);
    k += 1;
    std::thread::sleep(Duration::from_millis(1000));
    detectors[held].signal(libc::SIGSTOP);
    let other = 1 - held;
    wait_for(
        "the other detector to take the lease from the stopped one",
        Duration::from_secs(30),
        || active(&pg) == other,
    );
    std::fs::remove_file(&detectors[held].pause).unwrap();
    detectors[held].signal(libc::SIGCONT);
    while k < SLICES {
        write(k);
        k += 1;
    }

    // Everything applied: the queue drained and every collector caught up.
    let stored = || psql_i64(&pg, "SELECT count(*) FROM accesses");
    let t = Instant::now();
    while psql_i64(&pg, "SELECT count(*) FROM ingest_batches") != 0 || stored() != accesses {
        if t.elapsed() > Duration::from_secs(120) {
            let logs: Vec<String> = collectors
                .iter()
                .chain(detectors.iter())
                .map(|n| {
                    let log = n.log();
                    let tail: Vec<&str> = log.lines().rev().take(8).collect();
                    format!("== {}\n{}", n.name, tail.join("\n"))
                })
                .collect();
            panic!(
                "stored {} of {accesses}; queue {}; checkpoints {}\n{}",
                stored(),
                pg.psql("phiwatch", "SELECT count(*) FROM ingest_batches"),
                pg.psql(
                    "phiwatch",
                    "SELECT source, last_seq, length(checkpoint) FROM source_checkpoints"
                ),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        "the held detector to see it was fenced",
        Duration::from_secs(20),
        || {
            let log = detectors[held].log();
            log.contains("no longer current") || log.contains("was not renewed in time")
        },
    );
    // Every notification the alerts queued is settled (each alert's last one waits out
    // the group interval).
    let t = Instant::now();
    while psql_i64(&pg, "SELECT count(*) FROM outbox WHERE state = 'pending'") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the outbox did not drain: {}\n{}\n{}",
            pg.psql(
                "phiwatch",
                "SELECT state, count(*), min(due_ms), max(attempts), max(last_error) FROM outbox GROUP BY 1"
            ),
            dispatchers[0].log(),
            dispatchers[1].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in collectors
        .iter_mut()
        .chain(detectors.iter_mut())
        .chain(dispatchers.iter_mut())
    {
        n.stop();
    }
    assert_eq!(stored(), accesses, "accesses stored = accesses written");
    notified_once(&pg, &delivered.lock().unwrap(), &dispatchers);
    let epochs = psql_i64(&pg, "SELECT epoch FROM detector_lease");
    assert!(
        epochs >= 3,
        "three leases at least (start, kill, stop): {epochs}"
    );

    let fleet: BTreeSet<(String, String)> = pg
        .psql(
            "phiwatch",
            "SELECT event_id || '|' || detector FROM findings ORDER BY 1",
        )
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (e, det) = l.trim().split_once('|').unwrap();
            (e.to_owned(), det.to_owned())
        })
        .collect();
    let policies = |f: &BTreeSet<(String, String)>| -> BTreeSet<(String, String)> {
        f.iter()
            .filter(|(_, det)| !det.starts_with("plugin:"))
            .cloned()
            .collect()
    };
    // Cedar policies judge each access on its own: the fleet finds exactly what the single
    // process finds over the log in time order.
    assert!(
        policies(&in_time_order).len() > 50,
        "the demo's violations are found"
    );
    same(&policies(&fleet), &policies(&in_time_order), "policies");

    // Plugins keep state across users (volume-anomaly's peer prior), so what they find
    // depends on the order accesses from different sites arrive in, in one process as in
    // the fleet. Replayed by one process in the order the fleet's detectors applied them,
    // the accesses give exactly the fleet's findings, plugins included. That order is the
    // order of the detector's transactions (each stores its batch) and, within one, the
    // site's log order: the demo's log goes back in time where one stretch of the week
    // ends and the next begins, so sorting a batch by access time would replay another
    // order than the detector's whenever a batch holds such a step.
    let lines: Vec<(String, String)> = std::fs::read_to_string(d.join("demo/events.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_owned(), l.to_owned())
        })
        .collect();
    let at: std::collections::HashMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    let mut order: Vec<(u64, usize)> = pg
        .psql(
            "phiwatch",
            "SELECT xmin::text || '|' || event_id FROM accesses",
        )
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (tx, id) = l.trim().split_once('|').unwrap();
            (tx.parse().unwrap(), at[id])
        })
        .collect();
    order.sort();
    let applied: Vec<String> = order.iter().map(|(_, i)| lines[*i].1.clone()).collect();
    std::fs::write(d.join("applied.ndjson"), applied.join("\n") + "\n").unwrap();
    let (in_applied_order, _) = scan_one_log(d, "replayed", &d.join("applied.ndjson"));
    same(&fleet, &in_applied_order, "policies and plugins");

    // The same findings group into the same alerts: labels, counts and severity.
    let alerts = "SELECT group_key || '|' || findings || '|' || incidents || '|' || severity
                  FROM alerts ORDER BY 1";
    let fleet_alerts: Vec<String> = pg
        .psql("phiwatch", alerts)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let single_alerts: Vec<String> = rusqlite::Connection::open(d.join("replayed.db"))
        .unwrap()
        .prepare(alerts)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(fleet_alerts.len() > 20, "{} alerts", fleet_alerts.len());
    assert_eq!(
        fleet_alerts, single_alerts,
        "alerts: fleet vs single process"
    );
    // The noise report reads the fleet's database as it reads one process's store: the
    // same figures, from the command line and from the console node.
    let noise = |args: &[&str]| -> serde_json::Value {
        let out = common::phiwatch(args);
        assert!(out.status.success(), "{}", common::text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let detector_config = d.join("detector0.toml");
    let fleet_noise = noise(&[
        "report",
        "noise",
        "--config",
        detector_config.to_str().unwrap(),
        "--json",
    ]);
    let replayed = d.join("replayed.db");
    let single_noise = noise(&[
        "report",
        "noise",
        "--store",
        replayed.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        fleet_noise["findings"].as_u64().unwrap() > 50,
        "{fleet_noise}"
    );
    // The window ends at the newest finding: the accesses before it.
    let counted = fleet_noise["accesses"].as_i64().unwrap();
    assert!(counted > accesses / 2 && counted <= accesses, "{counted}");
    // The volume plugin judges a spree's severity on its count at the end of a batch, and
    // the fleet's batches are not the scan's: high findings are compared with the fleet's
    // own rows, everything else with the single process.
    let without_high = |mut v: serde_json::Value| {
        for d in v["detectors"].as_array_mut().unwrap() {
            d.as_object_mut().unwrap().remove("high");
        }
        v
    };
    assert_eq!(
        without_high(fleet_noise.clone()),
        without_high(single_noise),
        "noise: fleet vs single process"
    );
    for d in fleet_noise["detectors"].as_array().unwrap() {
        let high = psql_i64(
            &pg,
            &format!(
                "SELECT count(*) FROM findings WHERE detector = '{}' \
                 AND severity IN ('high', 'critical') AND time >= '{}' AND time <= '{}'",
                d["detector"].as_str().unwrap(),
                fleet_noise["from"].as_str().unwrap(),
                fleet_noise["to"].as_str().unwrap()
            ),
        );
        assert_eq!(d["high"].as_i64(), Some(high), "{}", d["detector"]);
    }
    let served = officer.get("/api/v1/reports/noise");
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.json(), fleet_noise);
    assert_eq!(officer.get("/noise").status, 200);
    backtested_as_one_process(d, &detector_config, &replayed, &officer);
    mined_as_one_process(d, &detector_config, &replayed);
    // The console node served through the kills; its alert queue is the fleet's.
    let queue = officer.get("/api/v1/alerts?status=all&limit=1000");
    assert_eq!(queue.status, 200, "{}", queue.text());
    assert_eq!(
        queue.json()["total"].as_i64().unwrap(),
        fleet_alerts.len() as i64,
        "the console lists every alert"
    );
    // An alert's page and its evidence: the findings the fleet grouped into it.
    let first = psql_i64(&pg, "SELECT min(id) FROM alerts");
    let shown = officer.get(&format!("/api/v1/alerts/{first}"));
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(
        shown.json()["findings"].as_array().unwrap().len() as i64,
        psql_i64(
            &pg,
            &format!("SELECT count(*) FROM alert_findings WHERE alert_id = {first}")
        )
    );
    let page = officer.get(&format!("/alerts/{first}"));
    assert_eq!(page.status, 200, "{}", page.text());
    // The dashboard counts what the fleet stored.
    let board = officer.get("/api/v1/dashboard").json();
    assert_eq!(board["accesses"].as_i64(), Some(accesses));
    let per_policy: i64 = board["per_policy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["findings"].as_i64().unwrap())
        .sum();
    assert_eq!(per_policy, psql_i64(&pg, "SELECT count(*) FROM findings"));
    assert_eq!(officer.get("/dashboard").status, 200);
    // The alerted user's findings and accesses, as the fleet stored them.
    let user = pg.psql(
        "phiwatch",
        &format!("SELECT user_id FROM alerts WHERE id = {first}"),
    );
    let user = user.trim();
    let found = officer
        .get(&format!("/api/v1/findings?user={user}&limit=1000"))
        .json();
    assert_eq!(
        found["findings"].as_array().unwrap().len() as i64,
        psql_i64(
            &pg,
            &format!("SELECT least(count(*), 1000) FROM findings WHERE user_id = '{user}'")
        )
    );
    let seen = officer
        .get(&format!("/api/v1/timeline?user={user}&limit=5000"))
        .json();
    let accesses_of = psql_i64(
        &pg,
        &format!("SELECT least(count(*), 5000) FROM accesses WHERE user_id = '{user}'"),
    );
    assert!(accesses_of > 0);
    assert_eq!(
        seen["accesses"].as_array().unwrap().len() as i64,
        accesses_of
    );
    officer_lists_and_acknowledges(&pg, &d.join("detector0.toml"), &officer);
    console.stop();
}

/// A draft backtested over the fleet's access log (and its context journal) gives the same
/// differences as over one process's store of the same accesses: both replay in time order
/// with plugins starting empty, so the fleet's batches do not matter.
fn backtested_as_one_process(
    d: &Path,
    fleet_config: &Path,
    single_store: &Path,
    officer: &http::Client,
) {
    let draft = d.join("draft-without-neighbor");
    std::fs::create_dir_all(&draft).unwrap();
    for e in std::fs::read_dir(common::repo().join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, draft.join(p.file_name().unwrap())).unwrap();
        }
    }
    let rule = draft.join("snooping.cedar");
    let text = std::fs::read_to_string(&rule).unwrap();
    let i = text.find("@id(\"neighbor\")").unwrap();
    let end = text[i..].find("};\n").unwrap() + i + 3;
    std::fs::write(&rule, format!("{}{}", &text[..i], &text[end..])).unwrap();
    let backtest = |from: &[&str], out: &Path| -> Vec<String> {
        let mut args = vec!["policy", "backtest", "--draft", draft.to_str().unwrap()];
        args.extend(from);
        args.extend(["--no-plugins", "--out", out.to_str().unwrap()]);
        let o = common::phiwatch(&args);
        assert!(o.status.success(), "{}", common::text(&o.stderr));
        let mut lines: Vec<String> = std::fs::read_to_string(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let context = d.join("demo/context");
    let fleet = backtest(
        &["--config", fleet_config.to_str().unwrap()],
        &d.join("fleet-backtest.ndjson"),
    );
    let single = backtest(
        &[
            "--store",
            single_store.to_str().unwrap(),
            "--context",
            context.to_str().unwrap(),
        ],
        &d.join("single-backtest.ndjson"),
    );
    assert!(
        fleet
            .iter()
            .any(|l| l.contains("\"removed\"") && l.contains("\"neighbor\"")),
        "the draft removes the neighbor findings"
    );
    assert_eq!(fleet, single, "backtest: fleet vs single process");

    // The console node's Backtest page replays the fleet's log too: the same removals.
    let body = serde_urlencoded::to_string([
        ("csrf", officer.csrf.as_str()),
        ("file", "snooping.cedar"),
        ("text", &std::fs::read_to_string(&rule).unwrap()),
        ("since", "30d"),
    ])
    .unwrap();
    let page = http::request(
        officer.port,
        "POST",
        "/backtest",
        &[
            ("Cookie", &officer.cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    );
    assert_eq!(page.status, 200, "{}", page.text());
    let removed = fleet.iter().filter(|l| l.contains("\"removed\"")).count();
    assert!(
        page.text().contains(&format!("and removes {removed} (")),
        "{}",
        page.text()
    );
}

/// Permit mining over the fleet's database proposes what it proposes over one process's
/// store of the same accesses and findings.
fn mined_as_one_process(d: &Path, fleet_config: &Path, single_store: &Path) {
    let mine = |from: &[&str]| -> (String, String) {
        let mut args = vec!["explain", "mine", "--since", "30d"];
        args.extend(from);
        let o = common::phiwatch(&args);
        assert!(o.status.success(), "{}", common::text(&o.stderr));
        let err = common::text(&o.stderr);
        let report = err[err.find("explanation mining over").expect(&err)..].to_owned();
        // The proposals, less the line that says when they were made.
        let proposals: Vec<String> = common::text(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("// Proposed by"))
            .map(str::to_owned)
            .collect();
        (report, proposals.join("\n"))
    };
    let context = d.join("demo/context");
    let fleet = mine(&["--config", fleet_config.to_str().unwrap()]);
    let single = mine(&[
        "--store",
        single_store.to_str().unwrap(),
        "--context",
        context.to_str().unwrap(),
    ]);
    assert!(
        !fleet.0.contains("unexplained 0 "),
        "the demo has unexplained accesses: {}",
        fleet.0
    );
    assert_eq!(fleet, single, "explain mine: fleet vs single process");
}

/// `phiwatch alerts` works on the fleet's database when the config names one.
fn officer_lists_and_acknowledges(pg: &Postgres, config: &Path, officer: &http::Client) {
    let c = config.to_str().unwrap();
    let out = common::phiwatch(&["alerts", "list", "--config", c]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let listed = common::text(&out.stdout);
    let open = psql_i64(pg, "SELECT count(*) FROM alerts WHERE status = 'open'");
    assert_eq!(listed.lines().count() as i64, open + 1, "{listed}");
    let first = psql_i64(pg, "SELECT min(id) FROM alerts WHERE status = 'open'").to_string();
    let out = common::phiwatch(&[
        "alerts",
        "ack",
        "--config",
        c,
        &first,
        "--by",
        "privacy-officer",
        "--as",
        "benign",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(
        pg.psql(
            "phiwatch",
            &format!("SELECT status || ' ' || ack_by || ' ' || ack_disposition FROM alerts WHERE id = {first}")
        ),
        "acknowledged privacy-officer benign"
    );
    officers_run_a_case(pg, c, &first, officer);
    let out = common::phiwatch(&["alerts", "ack", "--config", c, "999999", "--by", "x"]);
    assert!(
        !out.status.success() && common::text(&out.stderr).contains("no alert #999999"),
        "{}",
        common::text(&out.stderr)
    );
}

/// Cases on the fleet's database: a case opened on an alert with `phiwatch case`, changed at
/// once by officers' commands and through the console node, keeps one log whose chain
/// verifies (and names an edited entry).
fn officers_run_a_case(pg: &Postgres, c: &str, alert: &str, officer: &http::Client) {
    let out = common::phiwatch(&[
        "case",
        "open",
        "--config",
        c,
        "--alert",
        alert,
        "--by",
        "privacy-officer",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let opened = common::text(&out.stdout);
    let id = opened
        .split_once("case #")
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{opened}"))
        .to_owned();
    let changes: Vec<Vec<String>> = (0..6)
        .map(|n| {
            let by = format!("officer-{n}");
            let words: Vec<&str> = match n {
                0 => vec!["assign", &id, "--to", "officer-0"],
                1 | 2 => vec!["task", &id, "--add", "interview the user"],
                _ => vec!["note", &id, "--text", "reviewed the accesses"],
            };
            let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            args.splice(1..1, ["--config".to_owned(), c.to_owned()]);
            args.extend(["--by".to_owned(), by]);
            args
        })
        .collect();
    // At once, each from its own process, while the console node takes notes too.
    let children: Vec<_> = changes
        .iter()
        .map(|args| {
            Command::new(env!("CARGO_BIN_EXE_phiwatch"))
                .arg("case")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for n in 0..4 {
        let r = officer.send(
            "POST",
            &format!("/api/v1/cases/{id}/notes"),
            &serde_json::json!({ "text": format!("console note {n}") }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", common::text(&out.stderr));
    }
    let out = common::phiwatch(&["case", "verify", "--config", c]);
    let verified = common::text(&out.stdout);
    assert!(
        out.status.success() && verified.contains("case log intact: 11 entries"),
        "{verified}{}",
        common::text(&out.stderr)
    );
    let api = officer.get("/api/v1/case-log/verify").json();
    assert_eq!(api["intact"], true, "{api}");
    assert_eq!(api["entries"], 11, "{api}");
    assert!(
        verified.contains(api["head"].as_str().unwrap()),
        "one head: {api} {verified}"
    );
    let out = common::phiwatch(&["case", "show", "--config", c, &id]);
    let shown = common::text(&out.stdout);
    let user = pg.psql(
        "phiwatch",
        &format!("SELECT user_id FROM alerts WHERE id = {alert}"),
    );
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(
        shown.contains("state investigating; assignee officer-0"),
        "{shown}"
    );
    let evidence = shown
        .lines()
        .skip_while(|l| !l.starts_with("evidence:"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        evidence.contains(user.trim()),
        "the alert's access is evidence: {shown}"
    );
    assert!(shown.contains("[ ] 2. interview the user"), "{shown}");
    // The console shows the case (and queues the officer's view of its patients, judged
    // like any access once a detector takes it up).
    let queued = psql_i64(pg, "SELECT count(*) FROM ingest_batches");
    let case = officer.get(&format!("/api/v1/cases/{id}"));
    assert_eq!(case.status, 200, "{}", case.text());
    assert_eq!(case.json()["case"]["assignee"], "officer-0");
    assert_eq!(case.json()["log"].as_array().unwrap().len(), 11);
    let page = officer.get(&format!("/cases/{id}"));
    assert!(
        page.status == 200 && page.text().contains("console note 3"),
        "{}",
        page.text()
    );
    wait_for(
        "the console's view to be queued",
        Duration::from_secs(20),
        || psql_i64(pg, "SELECT count(*) FROM ingest_batches") > queued,
    );
    // Determined a breach: its letters and HHS report are written from the fleet's database.
    let out = common::phiwatch(&[
        "case",
        "determine",
        &id,
        "--config",
        c,
        "--outcome",
        "breach",
        "--by",
        "po",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let hhs = dir.path().join("hhs.json");
    let letters = dir.path().join("letters");
    let out = common::phiwatch(&[
        "case",
        "export",
        "--config",
        c,
        &id,
        "--hhs",
        hhs.to_str().unwrap(),
        "--letters",
        letters.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&hhs).unwrap()).unwrap();
    assert_eq!(report["breach"]["case_id"].to_string(), id);
    assert!(report["breach"]["start_date"].is_string(), "{report}");
    let patients = psql_i64(
        pg,
        &format!("SELECT count(DISTINCT patient_id) FROM alert_findings WHERE alert_id = {alert}"),
    );
    assert_eq!(
        std::fs::read_dir(&letters).unwrap().count() as i64,
        patients
    );
    // Evidence is kept in the fleet's database, where every console node finds it.
    let file = dir.path().join("screenshot.txt");
    std::fs::write(&file, b"what the officer saw").unwrap();
    let out = common::phiwatch(&[
        "case",
        "attach",
        &id,
        "--config",
        c,
        "--file",
        file.to_str().unwrap(),
        "--by",
        "po",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(
        pg.psql(
            "phiwatch",
            "SELECT convert_from(bytes, 'UTF8') FROM case_evidence"
        )
        .trim(),
        "what the officer saw"
    );
    // The year's log of breaches under 500 and the patient's accounting of disclosures.
    let year = chrono::Utc::now().format("%Y").to_string();
    let out = common::phiwatch(&["case", "export", "--config", c, "--annual-log", &year]);
    let log = common::text(&out.stdout);
    assert!(
        log.lines().any(|l| l.starts_with(&format!("{id},"))),
        "{log}"
    );
    let patient = pg.psql(
        "phiwatch",
        &format!("SELECT min(patient_id) FROM alert_findings WHERE alert_id = {alert}"),
    );
    let out = common::phiwatch(&[
        "case",
        "export",
        "--config",
        c,
        "--accounting",
        patient.trim(),
    ]);
    let accounting = common::text(&out.stdout);
    assert!(
        accounting.contains(&format!("impermissible access, breach case #{id}")),
        "{accounting}"
    );
    let api = officer.get(&format!("/api/v1/reports/annual-log?year={year}"));
    assert_eq!(api.text(), log);
    // And through the console node, the same.
    let api = officer
        .get(&format!("/api/v1/cases/{id}/hhs-report"))
        .json();
    assert_eq!(api["breach"], report["breach"], "{api}");
    let api = officer.get(&format!("/api/v1/cases/{id}/letters")).json();
    assert_eq!(api["letters"].as_array().unwrap().len() as i64, patients);
    pg.psql(
        "phiwatch",
        "UPDATE case_log SET actor = 'someone-else' WHERE seq = 4",
    );
    let out = common::phiwatch(&["case", "verify", "--config", c]);
    assert!(
        !out.status.success() && common::text(&out.stdout).contains("BROKEN at entry #4"),
        "{}",
        common::text(&out.stdout)
    );
    assert_eq!(
        officer.get("/api/v1/case-log/verify").json()["intact"],
        false
    );
}

/// Every notification the dispatchers settled as sent reached the receiver exactly once
/// (no idempotency key twice), and every alert was notified or deliberately held back.
fn notified_once(pg: &Postgres, delivered: &[String], dispatchers: &[Node]) {
    let sent = psql_i64(pg, "SELECT count(*) FROM outbox WHERE state = 'sent'");
    let unique: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "an idempotency key came twice"
    );
    assert_eq!(
        delivered.len() as i64,
        sent,
        "deliveries = rows settled as sent"
    );
    let keys: BTreeSet<String> = pg
        .psql(
            "phiwatch",
            "SELECT idempotency_key FROM outbox WHERE state = 'sent'",
        )
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        keys,
        unique.into_iter().cloned().collect(),
        "the keys delivered are the rows'"
    );
    assert_eq!(
        psql_i64(
            pg,
            "SELECT count(*) FROM alerts a WHERE NOT EXISTS (SELECT 1 FROM outbox o
               WHERE o.alert_id = a.id AND o.state IN ('sent', 'suppressed'))"
        ),
        0,
        "every alert notified (or held back by a critical one)"
    );
    assert_eq!(
        psql_i64(
            pg,
            "SELECT count(*) FROM outbox WHERE state NOT IN ('sent', 'suppressed')"
        ),
        0
    );
    for n in dispatchers {
        assert!(!n.log().contains("ERROR"), "{}: {}", n.name, n.log());
    }
}

/// Makes the fleet's schema and starts a webhook receiver: its port and its deliveries.
fn migrated_with_receiver(url: &str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let out = common::phiwatch(&["migrate", "--database", url]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    webhook_sink()
}

/// A webhook receiver on loopback: the `webhook-id` (idempotency key) of every delivery.
fn webhook_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let sink = sink.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                sink.lock().unwrap().push(id);
                axum::http::StatusCode::OK
            }
        }),
    );
    (serve::serve(app), got)
}

fn same(fleet: &BTreeSet<(String, String)>, single: &BTreeSet<(String, String)>, what: &str) {
    let missing: Vec<_> = single.difference(fleet).take(5).collect();
    let extra: Vec<_> = fleet.difference(single).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: fleet findings {} vs single process {}: missing {missing:?}, extra {extra:?}",
        fleet.len(),
        single.len()
    );
}

/// `phiwatch scan` of one log into a SQLite store of its own: the findings (event id,
/// detector) and how many accesses it stored.
fn scan_one_log(d: &Path, name: &str, log: &Path) -> (BTreeSet<(String, String)>, i64) {
    let config = d.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/{name}\"\ncontext = \"{d}/demo/context\"\nrouting = \"{d}/routing.toml\"\n[[source]]\nkind = \"file\"\nname = \"all\"\npaths = [\"{log}\"]\nformat = \"fhir-auditevent\"\n",
            d = d.display(),
            log = log.display()
        ),
    )
    .unwrap();
    let store = d.join(format!("{name}.db"));
    let out = common::phiwatch(&[
        "scan",
        "--config",
        config.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--store-accesses",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let findings = common::findings(&out.stdout)
        .iter()
        .map(|f| {
            (
                f["event_id"].as_str().unwrap().to_owned(),
                f["detector"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let accesses = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("SELECT count(*) FROM accesses", [], |r| r.get(0))
        .unwrap();
    (findings, accesses)
}

/// A dispatch process against alerts made in the fleet's database: an acknowledged alert, a
/// silenced one and one inhibited by the same user's open critical alert are held back with
/// the reason; the others reach the receiver once; a receiver that refuses for good leaves a
/// dead letter, which `phiwatch notify` lists and queues again, and `phiwatch silence` works
/// on the fleet's database.
#[test]
fn a_dispatcher_holds_back_what_must_not_go_out_and_keeps_dead_letters() {
    let pg = Postgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (hook, delivered) = migrated_with_receiver(&url);
    std::fs::write(
        d.join("routing.toml"),
        format!(
            "[grouping]\ngroup_wait = \"1s\"\nrepeat_interval = \"7d\"\n\
             [[receiver]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"http://127.0.0.1:{hook}/hook\"\n\
             [[receiver]]\nkind = \"webhook\"\nname = \"gone\"\nurl = \"http://127.0.0.1:{hook}/gone\"\n\
             [[route]]\nreceivers = [\"siem\"]\n"
        ),
    )
    .unwrap();
    let config = node_config(d, "dispatcher", &[], &url, "dispatch");
    let c = config.to_str().unwrap();
    let out = common::phiwatch(&[
        "silence",
        "add",
        "--config",
        c,
        "--match",
        "user=dr-quiet",
        "--for",
        "1h",
        "--author",
        "po",
        "--reason",
        "on leave, reviewed",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(common::text(&out.stdout).starts_with("silence #1 until"));
    // Alerts as the detector leaves them: (status, user, severity, receiver).
    let alerts = [
        ("open", "dr-a", "high", "siem"),
        ("acknowledged", "dr-b", "high", "siem"),
        ("open", "dr-quiet", "high", "siem"),
        ("open", "dr-c", "critical", "siem"),
        ("open", "dr-c", "medium", "siem"),
        ("open", "dr-d", "high", "gone"),
    ];
    for (i, (status, user, severity, receiver)) in alerts.iter().enumerate() {
        let id = i + 1;
        pg.psql(
            "phiwatch",
            &format!(
                "INSERT INTO alerts (group_key, fold_key, status, category, severity, user_id,
                     department, first_ms, last_ms, findings, incidents, origin)
                 VALUES ('k{id}', 'k{id}', '{status}', 'vip', '{severity}', '{user}', 'icu',
                         0, 0, 1, 1, 'alert-{id}');
                 INSERT INTO outbox (idempotency_key, alert_id, receiver, state, created_ms, due_ms)
                 VALUES ('phiwatch-alert-{id}-1-{receiver}', {id}, '{receiver}', 'pending',
                         (extract(epoch from now()) * 1000)::bigint, 0);"
            ),
        );
    }
    let mut dispatcher = Node::new(d, "dispatcher", config.clone());
    dispatcher.start();
    wait_for("the outbox to settle", Duration::from_secs(30), || {
        psql_i64(&pg, "SELECT count(*) FROM outbox WHERE state = 'pending'") == 0
    });
    let settled = pg.psql(
        "phiwatch",
        "SELECT alert_id || ' ' || state || ' ' || coalesce(last_error, '') FROM outbox ORDER BY alert_id",
    );
    let want = [
        "1 sent",
        "2 suppressed alert is acknowledged",
        "3 suppressed silenced by silence #1",
        "4 sent",
        "5 suppressed inhibited by an open critical alert for the same user",
        "6 dead HTTP 404 Not Found",
    ];
    let got: Vec<&str> = settled.lines().map(str::trim).collect();
    assert_eq!(got, want, "{}", dispatcher.log());
    assert_eq!(
        *delivered.lock().unwrap(),
        vec!["phiwatch-alert-1-1-siem", "phiwatch-alert-4-1-siem"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    );
    assert!(
        psql_i64(&pg, "SELECT count(*) FROM alerts WHERE last_sent_ms > 0") == 2,
        "the two sent alerts are marked sent"
    );

    // The dead letter, as an operator sees it and sends it again.
    let out = common::phiwatch(&["notify", "dead-letters", "--config", c]);
    let text = common::text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "alert #6 to gone: 1 attempt(s), HTTP 404 Not Found [phiwatch-alert-6-1-gone]"
        ),
        "{text}"
    );
    // The receiver is fixed in the routing file: the running dispatcher takes it up, and
    // the dead letter queued again goes out under its own key.
    let routing = std::fs::read_to_string(d.join("routing.toml")).unwrap();
    std::fs::write(d.join("routing.toml"), routing.replace("/gone", "/hook")).unwrap();
    wait_for(
        "the dispatcher to reload its routing",
        Duration::from_secs(20),
        || dispatcher.log().contains("reloaded routing rules"),
    );
    let out = common::phiwatch(&["notify", "retry", "--config", c]);
    assert!(
        common::text(&out.stdout).contains("1 notification(s) queued again"),
        "{}",
        common::text(&out.stderr)
    );
    wait_for(
        "the retried notification to go out",
        Duration::from_secs(30),
        || {
            psql_i64(
                &pg,
                "SELECT count(*) FROM outbox WHERE alert_id = 6 AND state = 'sent'",
            ) == 1
        },
    );
    dispatcher.stop();
    assert_eq!(
        delivered.lock().unwrap().last().map(String::as_str),
        Some("phiwatch-alert-6-1-gone")
    );
    reminders_go_out_while_the_case_is_open(&pg, d, &config, &mut dispatcher, &delivered);
    let out = common::phiwatch(&["notify", "retry", "--config", c]);
    assert!(
        !out.status.success() && common::text(&out.stderr).contains("no dead letters"),
        "{}",
        common::text(&out.stderr)
    );
    // Silences listed and ended on the fleet's database.
    let out = common::phiwatch(&["silence", "list", "--config", c]);
    assert!(
        common::text(&out.stdout).contains("#1 {\"user\":\"dr-quiet\"} until"),
        "{}",
        common::text(&out.stdout)
    );
    let out = common::phiwatch(&["silence", "expire", "--config", c, "1"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let out = common::phiwatch(&["silence", "list", "--config", c]);
    assert_eq!(common::text(&out.stdout), "no active silences\n");
    let out = common::phiwatch(&["silence", "expire", "--config", c, "7"]);
    assert!(
        !out.status.success() && common::text(&out.stderr).contains("no silence #7"),
        "{}",
        common::text(&out.stderr)
    );
}

/// A case's deadline reminders are queued in the fleet's outbox by the change that moves its
/// clocks, sent by a dispatcher when due, and cancelled when the case is closed.
fn reminders_go_out_while_the_case_is_open(
    pg: &Postgres,
    d: &Path,
    config: &Path,
    dispatcher: &mut Node,
    delivered: &Arc<Mutex<Vec<String>>>,
) {
    let response = std::fs::read_to_string(common::repo().join("rules/response.toml"))
        .unwrap()
        .replace("days_before = [30, 14, 7, 2]", "days_before = [2]")
        .replace("receivers = [\"privacy-office\"]", "receivers = [\"siem\"]")
        .replace(
            "escalate_to = [\"privacy-office\", \"siem\"]",
            "escalate_to = [\"siem\"]",
        );
    std::fs::write(d.join("response.toml"), response).unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        format!("response = \"{}/response.toml\"\n{text}", d.display()),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    // Discovered 58 days ago: the 60-day clock is due in two days, its reminder today.
    let discovered = (chrono::Utc::now().date_naive() - chrono::Duration::days(58)).to_string();
    let out = common::phiwatch(&[
        "case",
        "open",
        "--config",
        c,
        "--discovered",
        &discovered,
        "--by",
        "po",
    ]);
    let said = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let pending = psql_i64(
        pg,
        "SELECT count(*) FROM outbox WHERE case_id = 1 AND state = 'pending'",
    );
    assert!(
        said.contains("case #1 opened")
            && said.contains(&format!("{pending} deadline reminder(s) pending")),
        "{said}"
    );
    let due_now = "SELECT idempotency_key FROM outbox WHERE case_id = 1
                   AND due_ms <= (extract(epoch from now()) * 1000)::bigint ORDER BY 1";
    let due: Vec<String> = pg
        .psql("phiwatch", due_now)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        due.iter()
            .any(|k| k.starts_with("case-1-") && k.ends_with("-2d-siem")),
        "the two-days-before reminder of the 60-day clock is due today: {due:?}"
    );
    assert!(pending > due.len() as i64, "later ones wait (escalations)");
    dispatcher.start();
    wait_for(
        "the due reminders to go out",
        Duration::from_secs(30),
        || {
            psql_i64(
                pg,
                "SELECT count(*) FROM outbox WHERE case_id = 1 AND state = 'sent'",
            ) == due.len() as i64
        },
    );
    for k in &due {
        assert!(delivered.lock().unwrap().contains(k), "{k} delivered");
    }
    // Closing the case cancels what still waits.
    let out = common::phiwatch(&[
        "case",
        "close",
        "1",
        "--config",
        c,
        "--resolution",
        "false_positive",
        "--by",
        "po",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(
        psql_i64(
            pg,
            "SELECT count(*) FROM outbox WHERE case_id = 1 AND state = 'cancelled'"
        ),
        pending - due.len() as i64
    );
    dispatcher.stop();
}

const PASSWORD: &str = "correct horse battery staple";

/// A console node's config: its own listen port, no sources. Returns the config and port.
fn console_config(d: &Path, name: &str, url: &str, extra: &str) -> (PathBuf, u16) {
    let config = node_config(d, name, &[], url, "console");
    let port = agent::free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("[console]\nlisten = \"127.0.0.1:{port}\"\n{extra}");
    std::fs::write(&config, text).unwrap();
    (config, port)
}

fn add_user(config: &Path, name: &str, role: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args([
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--config",
        ])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out.stderr));
}

fn console_up(port: u16) {
    wait_for(
        "the console node to answer",
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http::request(port, "GET", "/api/v1/status", &[], b"").status == 401
        },
    );
}

fn sign_in(port: u16, user: &str, password: &str) -> http::Resp {
    http::request(
        port,
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        serde_json::json!({ "user": user, "password": password })
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn console_nodes_share_accounts_sessions_and_the_sign_in_limit() {
    let pg = Postgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = common::phiwatch(&["migrate", "--database", &url]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let extra = "login_failures = 3\nlogin_window_minutes = 10\n";
    // The routing a console node's backtests group alerts by.
    std::fs::write(d.join("routing.toml"), "[grouping]\ngroup_wait = \"1s\"\n").unwrap();
    let (config_a, port_a) = console_config(d, "console-a", &url, extra);
    let (config_b, port_b) = console_config(d, "console-b", &url, extra);
    // Accounts are the fleet's: made with one node's config, they sign in on every node.
    add_user(&config_a, "olivia", "privacy-officer");
    add_user(&config_b, "audrey", "auditor");
    let out = common::phiwatch(&["user", "list", "--config", config_b.to_str().unwrap()]);
    let listed = common::text(&out.stdout);
    assert!(
        listed.contains("olivia") && listed.contains("audrey"),
        "{listed}"
    );
    let mut nodes = [
        Node::new(d, "console-a", config_a.clone()),
        Node::new(d, "console-b", config_b.clone()),
    ];
    for n in nodes.iter_mut() {
        n.start();
    }
    console_up(port_a);
    console_up(port_b);

    // A session started on one node is good on the other (behind a load balancer, the next
    // request may go anywhere).
    let olivia = http::Client::login(port_a, "olivia", PASSWORD);
    let on_b = http::Client {
        port: port_b,
        cookie: olivia.cookie.clone(),
        csrf: olivia.csrf.clone(),
    };
    let me = on_b.get("/api/v1/session");
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["user"], "olivia");
    assert_eq!(on_b.get("/api/v1/alerts").json()["total"], 0);
    // The queue's page is served; what is not on the fleet's database yet says so.
    let page = on_b.get("/alerts");
    assert_eq!(page.status, 200, "{}", page.text());
    // Every page is served on a console node, the Backtest page with the pack in force.
    let page = on_b.get("/backtest");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("snooping.cedar"), "{}", page.text());
    assert_eq!(on_b.get("/status").status, 200);
    // A silence made on one node is the fleet's: listed and ended on the other.
    let made = olivia.send(
        "POST",
        "/api/v1/silences",
        &serde_json::json!({ "matchers": ["user=dr-quiet"], "hours": 2, "reason": "on leave" }),
    );
    assert_eq!(made.status, 200, "{}", made.text());
    let listed = on_b.get("/api/v1/silences").json();
    assert_eq!(
        listed["silences"][0]["matchers"]["user"], "dr-quiet",
        "{listed}"
    );
    let id = listed["silences"][0]["id"].as_i64().unwrap();
    let ended = on_b.send(
        "POST",
        &format!("/api/v1/silences/{id}/expire"),
        &serde_json::json!({}),
    );
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert_eq!(
        olivia.get("/api/v1/silences").json()["silences"],
        serde_json::json!([])
    );
    assert_eq!(on_b.get("/").header("location"), Some("/alerts"));

    // Failures counted on one node hold the limit on the other, even for the right password.
    for _ in 0..3 {
        assert_eq!(sign_in(port_a, "audrey", "wrong password 123").status, 401);
    }
    let limited = sign_in(port_b, "audrey", PASSWORD);
    assert_eq!(limited.status, 429, "{}", limited.text());

    // An account removed on one node is gone everywhere, with its sessions.
    let out = common::phiwatch(&[
        "user",
        "remove",
        "olivia",
        "--config",
        config_b.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let olivia_a = http::Client {
        port: port_a,
        ..on_b
    };
    assert_eq!(olivia_a.get("/api/v1/session").status, 401);

    // Every node's sign-ins, refusals and sign-outs are in one trail.
    let out = common::phiwatch(&["user", "log", "--config", config_a.to_str().unwrap()]);
    let trail = common::text(&out.stdout);
    assert!(
        trail.contains("sign-in") && trail.contains("olivia"),
        "{trail}"
    );
    assert!(trail.matches("refused").count() >= 3, "{trail}");
    for n in nodes.iter_mut() {
        n.stop();
    }
}
