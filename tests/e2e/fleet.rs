//! Fleet mode's store against a real PostgreSQL server (a throwaway cluster on loopback,
//! `postgres.rs`): schema versions, the detector lease and its fencing, the ingest queue
//! under concurrent collectors and a detector killed mid-batch, retention by month, and
//! the connection's TLS checks, cases changed from many nodes at once.

mod agent;
mod postgres;

use phiwatch::event::AccessEvent;
use phiwatch::fleet::pg::{self, DatabaseConfig};
use phiwatch::fleet::{lease, queue, retention, schema, store, FleetError};
use postgres::{Postgres, ServerTls};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

fn db(pg: &Postgres) -> DatabaseConfig {
    DatabaseConfig::at(pg.url(), None)
}

async fn connect(pg: &Postgres, app: &str) -> Client {
    pg::connect(&db(pg), app).await.unwrap()
}

async fn migrated(pg: &Postgres) -> Client {
    let mut c = connect(pg, "test").await;
    schema::migrate(&mut c).await.unwrap();
    c
}

/// The months of accesses stored, as their tables' names.
async fn tables(c: &Client) -> Vec<String> {
    let months = retention::months(c).await.unwrap();
    months.iter().map(|m| m.table()).collect()
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn migrations_apply_once_even_when_nodes_race_and_a_newer_schema_is_refused() {
    let pg = Postgres::start();
    rt().block_on(async {
        let c = connect(&pg, "test").await;
        assert_eq!(schema::version(&c).await.unwrap(), 0);
        assert!(matches!(
            schema::require_current(&c).await,
            Err(FleetError::SchemaBehind { found: 0, .. })
        ));
        // Three nodes start at once and each migrates.
        let mut racing = Vec::new();
        for n in 0..3 {
            let cfg = db(&pg);
            racing.push(tokio::spawn(async move {
                let mut c = pg::connect(&cfg, &format!("node-{n}")).await.unwrap();
                schema::migrate(&mut c).await.unwrap()
            }));
        }
        let mut froms = Vec::new();
        for r in racing {
            let (from, to) = r.await.unwrap();
            assert_eq!(to, schema::latest());
            froms.push(from);
        }
        froms.sort();
        assert_eq!(
            froms,
            vec![0, schema::latest(), schema::latest()],
            "one node migrated"
        );
        assert_eq!(schema::require_current(&c).await.unwrap(), schema::latest());
        // A schema written by a newer phiwatch.
        c.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .unwrap();
        let mut c2 = connect(&pg, "test").await;
        let err = schema::migrate(&mut c2).await.unwrap_err();
        assert!(
            matches!(err, FleetError::SchemaTooNew { found: 999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade phiwatch"), "{err}");
        assert!(matches!(
            schema::require_current(&c).await,
            Err(FleetError::SchemaTooNew { .. })
        ));
    });
}

#[test]
fn one_detector_holds_the_lease_and_a_fenced_one_never_commits() {
    let pg = Postgres::start();
    rt().block_on(async {
        let ttl = Duration::from_secs(2);
        let mut a = migrated(&pg).await;
        let mut b = connect(&pg, "detector-b").await;
        let la = lease::try_acquire(&a, "a", ttl)
            .await
            .unwrap()
            .expect("a takes it");
        assert_eq!(la.epoch, 1);
        assert_eq!(
            lease::try_acquire(&b, "b", ttl).await.unwrap(),
            None,
            "b waits"
        );
        assert!(lease::renew(&a, &la, ttl).await.unwrap());
        // A write under the lease commits.
        let tx = a.transaction().await.unwrap();
        lease::fence(&tx, &la).await.unwrap();
        tx.execute("CREATE TABLE written (by text, epoch bigint)", &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();

        // a stops renewing (paused); once the lease expires b takes it with a new epoch.
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        assert!(
            !lease::renew(&a, &la, ttl).await.unwrap(),
            "a lapsed lease is not revived"
        );
        let lb = lease::try_acquire(&b, "b", ttl)
            .await
            .unwrap()
            .expect("b takes over");
        assert_eq!(lb.epoch, 2);
        // a wakes and tries to write: refused before anything is written.
        let tx = a.transaction().await.unwrap();
        let err = lease::fence(&tx, &la).await.unwrap_err();
        assert!(matches!(err, FleetError::Fenced { epoch: 1 }), "{err}");
        drop(tx);
        let state = lease::current(&b).await.unwrap().unwrap();
        assert_eq!((state.holder.as_str(), state.epoch), ("b", 2));
        assert!(state.expires_in > 0.0);

        // b is paused in the middle of a transaction, past its fence, holding the lease row
        // for share. The lease expires; a tries to take over and must wait, not run beside
        // it; the server ends b's idle transaction, a takes epoch 3, and b's late commit
        // fails: nothing b wrote is stored.
        let tx = b.transaction().await.unwrap();
        lease::fence(&tx, &lb).await.unwrap();
        tx.execute("INSERT INTO written VALUES ('b', 2)", &[])
            .await
            .unwrap();
        let started = Instant::now();
        let la3 = loop {
            if let Some(l) = lease::try_acquire(&a, "a", ttl).await.unwrap() {
                break l;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a never took over"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(la3.epoch, 3);
        assert!(
            started.elapsed() >= pg::IDLE_IN_TRANSACTION - Duration::from_secs(1),
            "a took over after {:?}, while b's transaction was open",
            started.elapsed()
        );
        assert!(tx.commit().await.is_err(), "b's late commit is refused");
        let n = count(&a, "SELECT count(*) FROM written WHERE by = 'b'").await;
        assert_eq!(
            n, 0,
            "nothing of the fenced detector's transaction is stored"
        );
        lease::release(&a, &la3).await.unwrap();
        let lb4 = lease::try_acquire(&b_again(&pg).await, "b2", ttl)
            .await
            .unwrap();
        assert_eq!(
            lb4.map(|l| l.epoch),
            Some(4),
            "a released lease is taken at once"
        );
    });
}

async fn b_again(pg: &Postgres) -> Client {
    connect(pg, "detector-b2").await
}

fn access(id: &str, time_ms: i64) -> AccessEvent {
    AccessEvent {
        id: id.to_owned(),
        time_ms,
        user: "dr-ana".to_owned(),
        patient: Some("pt-mom".to_owned()),
        subtype: "read".to_owned(),
        workstation: "ws-1".to_owned(),
        succeeded: true,
        ..Default::default()
    }
}

/// Records of the test's collectors: "<event id> <time ms>".
fn decode(records: &[Vec<u8>]) -> Vec<AccessEvent> {
    records
        .iter()
        .map(|r| {
            let s = String::from_utf8_lossy(r);
            let (id, t) = s.split_once(' ').unwrap();
            access(id, t.parse().unwrap())
        })
        .collect()
}

#[test]
fn collectors_append_in_order_and_each_batch_is_applied_once_despite_a_killed_detector() {
    let pg = Postgres::start();
    rt().block_on(async {
        let c = migrated(&pg).await;
        let (sources, batches, per) = (3, 40, 25);
        let march = 1_773_151_200_000i64; // 2026-03-10T14:00:00Z
        let mut collectors = Vec::new();
        for s in 0..sources {
            let cfg = db(&pg);
            collectors.push(tokio::spawn(async move {
                let mut c = pg::connect(&cfg, &format!("collector-{s}")).await.unwrap();
                for b in 0..batches {
                    let records: Vec<Vec<u8>> = (0..per)
                        .map(|i| {
                            format!("s{s}-b{b}-{i} {}", march + (b * per + i) as i64 * 60_000)
                                .into_bytes()
                        })
                        .collect();
                    let seq = queue::append(
                        &mut c,
                        &format!("src-{s}"),
                        &format!("node-{s}"),
                        &records,
                        &format!("offset-{}", b + 1),
                    )
                    .await
                    .unwrap();
                    assert_eq!(seq, b as i64 + 1, "numbered without gaps");
                }
            }));
        }
        let ttl = Duration::from_secs(5);
        let mut det = connect(&pg, "detector").await;
        let l = lease::try_acquire(&det, "detector", ttl)
            .await
            .unwrap()
            .unwrap();
        let mut applied = 0;
        let mut killed = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while applied < sources * batches {
            assert!(Instant::now() < deadline, "applied {applied}");
            let next = queue::pending(&det, 8).await.unwrap();
            if next.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            for batch in next {
                let accesses = decode(&batch.records);
                retention::ensure_months(&det, accesses.iter().map(|a| a.time_ms))
                    .await
                    .unwrap();
                let tx = queue::begin(&mut det, &l).await.unwrap();
                store::insert_batch(&tx, &accesses, &[]).await.unwrap();
                if !killed && applied == 30 {
                    // The detector dies mid-batch: its transaction never commits. Its
                    // successor (here, a new connection) finds the batch still pending.
                    killed = true;
                    drop(tx);
                    det = connect(&pg, "detector").await;
                    break;
                }
                queue::complete(tx, &l, &batch).await.unwrap();
                applied += 1;
            }
            lease::renew(&det, &l, ttl).await.unwrap();
        }
        for c in collectors {
            c.await.unwrap();
        }
        assert!(killed);
        let stored = count(&c, "SELECT count(*) FROM accesses").await;
        assert_eq!(
            stored,
            (sources * batches * per) as i64,
            "every record stored once"
        );
        assert_eq!(queue::backlog(&c).await.unwrap(), 0);
        let left = count(&c, "SELECT count(*) FROM ingest_batches").await;
        assert_eq!(left, 0, "applied batches are deleted");
        for s in 0..sources {
            assert_eq!(
                queue::checkpoint(&c, &format!("src-{s}"))
                    .await
                    .unwrap()
                    .as_deref(),
                Some(format!("offset-{batches}").as_str())
            );
        }
        // A batch applied twice (a detector that read it before its predecessor's commit
        // landed) is refused, not stored twice.
        let mut c2 = connect(&pg, "late").await;
        let seq = queue::append(
            &mut c2,
            "src-0",
            "node-0",
            &[b"late-1 1773151200000".to_vec()],
            "offset-late",
        )
        .await
        .unwrap();
        let batch = queue::pending(&c2, 1).await.unwrap().remove(0);
        assert_eq!(batch.seq, seq);
        let tx = queue::begin(&mut c2, &l).await.unwrap();
        queue::complete(tx, &l, &batch).await.unwrap();
        let tx = queue::begin(&mut c2, &l).await.unwrap();
        let err = queue::complete(tx, &l, &batch).await.unwrap_err();
        assert!(matches!(err, FleetError::OutOfOrder { .. }), "{err}");
    });
}

#[test]
fn months_past_retention_are_archived_then_dropped() {
    let pg = Postgres::start();
    let archive = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut c = migrated(&pg).await;
        let day = 86_400_000i64;
        let jan_2019 = 1_546_300_800_000i64; // 2019-01-01T00:00:00Z
        let march_2026 = 1_773_151_200_000i64;
        let times: Vec<i64> = (0..10)
            .map(|i| jan_2019 + i * day)
            .chain((0..5).map(|i| march_2026 - 50 * day + i * day))
            .chain((0..5).map(|i| march_2026 + i * 1000))
            .collect();
        let accesses: Vec<AccessEvent> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| access(&format!("ev-{i}"), t))
            .collect();
        // Storing without a month's partition is refused with what to do.
        let tx = c.transaction().await.unwrap();
        let err = store::insert_batch(&tx, &accesses, &[]).await.unwrap_err();
        assert!(err.to_string().contains("ensure_months"), "{err}");
        drop(tx);
        retention::ensure_months(&c, times.iter().copied())
            .await
            .unwrap();
        let tx = c.transaction().await.unwrap();
        assert_eq!(
            store::insert_batch(&tx, &accesses, &[]).await.unwrap(),
            (20, 0)
        );
        // Read again: stored once.
        assert_eq!(
            store::insert_batch(&tx, &accesses, &[]).await.unwrap(),
            (0, 0)
        );
        tx.commit().await.unwrap();
        let months = tables(&c).await;
        assert_eq!(
            months,
            ["accesses_2019_01", "accesses_2026_01", "accesses_2026_03"]
        );

        // Counting: exact for small months; a month the planner thinks large is counted by
        // its estimate when wholly in the window, exactly when only partly.
        assert_eq!(
            retention::count_between(&c, None).await.unwrap(),
            (20, false)
        );
        c.batch_execute(
            "UPDATE pg_class SET reltuples = 2000000 WHERE relname = 'accesses_2026_01'",
        )
        .await
        .unwrap();
        assert_eq!(
            retention::count_between(&c, None).await.unwrap(),
            (2_000_015, true)
        );
        let partly = (march_2026 - 50 * day, march_2026 + 2_000);
        assert_eq!(
            retention::count_between(&c, Some(partly)).await.unwrap(),
            (8, false)
        );

        let done = retention::apply(
            &mut c,
            retention::DEFAULT_MONTHS,
            march_2026,
            Some(archive.path()),
        )
        .await
        .unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].month.table(), "accesses_2019_01");
        assert_eq!(done[0].rows, 10);
        let csv = std::fs::read_to_string(archive.path().join("accesses_2019_01.csv")).unwrap();
        assert_eq!(csv.lines().count(), 11, "a header and ten accesses");
        assert!(
            csv.starts_with("event_id,time_ms,user_id,patient_id"),
            "{csv}"
        );
        let sum =
            std::fs::read_to_string(archive.path().join("accesses_2019_01.csv.sha256")).unwrap();
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(csv.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sum, format!("{digest}  accesses_2019_01.csv\n"));
        let months = tables(&c).await;
        assert_eq!(months, ["accesses_2026_01", "accesses_2026_03"]);
        let n = count(&c, "SELECT count(*) FROM accesses").await;
        assert_eq!(n, 10);
    });
}

/// A CA and a certificate for "localhost" it signed: (CA PEM, server cert PEM, key PEM).
fn ca_and_server() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn the_connection_checks_the_servers_certificate_and_name_and_refuses_clear_text_elsewhere() {
    let (ca, cert, key) = ca_and_server();
    let pg = Postgres::start_with(Some(ServerTls { cert, key }));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, &ca).unwrap();
    let (other_ca, _, _) = ca_and_server();
    let bad = dir.path().join("other-ca.pem");
    std::fs::write(&bad, &other_ca).unwrap();
    rt().block_on(async {
        let at = |host: &str, ca: &std::path::Path| {
            DatabaseConfig::at(
                format!(
                    "postgres://phiwatch:s3cret-pw@{host}:{}/phiwatch",
                    pg.port()
                ),
                Some(ca.to_owned()),
            )
        };
        let c = pg::connect(&at("localhost", &good), "tls").await.unwrap();
        let ssl: bool = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "the session is encrypted");
        // Another CA's server, or the right server under a name its certificate lacks.
        for (host, ca) in [("localhost", &bad), ("127.0.0.1", &good)] {
            let err = pg::connect(&at(host, ca), "tls").await.unwrap_err();
            assert!(matches!(err, FleetError::Connect { .. }), "{host}: {err}");
            assert!(
                !err.to_string().contains("s3cret-pw"),
                "the password never shows: {err}"
            );
        }
        // A server elsewhere without a CA: refused before a byte is sent.
        let err = pg::connect(
            &DatabaseConfig::at(
                "postgres://phiwatch:s3cret-pw@db.example.org/phiwatch",
                None,
            ),
            "tls",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("ca_file"), "{err}");
        assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    });
}

/// An agent config at `cfg` with one file source and `[database] url`, then `extra`
/// (further `[database]` keys).
fn write_config(cfg: &std::path::Path, d: &std::path::Path, url: &str, extra: &str) {
    std::fs::write(
        cfg,
        format!(
            "data_dir = \"{d}/data\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/*.ndjson\"]\nformat = \"fhir-auditevent\"\n[database]\nurl = \"{url}\"\n{extra}",
            d = d.display()
        ),
    )
    .unwrap()
}

fn phiwatch(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(args)
        .env_remove("PHIWATCH_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn migrate_and_check_from_the_command_line() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = pg.url();
    let (ok, out) = phiwatch(&["migrate", "--database", &url]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("schema version 0 -> {}", schema::latest())),
        "{out}"
    );
    let (ok, out) = phiwatch(&["migrate", "--database", &url]);
    assert!(ok && out.contains("up to date"), "{out}");

    let cfg = d.join("phiwatch.toml");
    let write = |url: &str| {
        write_config(
            &cfg,
            d,
            url,
            "[fleet]\nrole = \"collect\"\nnode = \"site-a\"\n",
        )
    };
    write(&url);
    let (ok, out) = phiwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "ok: database phiwatch@127.0.0.1:{}/phiwatch: schema version {}",
            pg.port(),
            schema::latest()
        )) && out.contains("no detector has held the lease")
            && out.contains("0 batch(es) waiting"),
        "{out}"
    );
    assert!(
        out.contains("fleet: role collect, node site-a, detector lease 10 s"),
        "{out}"
    );
    // `run` refuses to put the accesses in SQLite while [database] names PostgreSQL.
    let (ok, out) = phiwatch(&["run", "--config", cfg.to_str().unwrap(), "--role", "all"]);
    assert!(!ok && out.contains("give this node a role"), "{out}");
    // A dispatcher needs the receivers of a routing file.
    let (ok, out) = phiwatch(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--role",
        "dispatch",
    ]);
    assert!(
        !ok && out.contains("role dispatch sends to the receivers of a routing file"),
        "{out}"
    );
    // A console node without [console] is refused with what to add.
    let (ok, out) = phiwatch(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--role",
        "console",
    ]);
    assert!(
        !ok && out.contains("role console serves the [console] section"),
        "{out}"
    );
    // A database that is not there, with a password in the URL: said, never shown.
    write(&format!(
        "postgres://phiwatch:s3cret-pw@127.0.0.1:{}/phiwatch",
        agent::free_port()
    ));
    let (ok, out) = phiwatch(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(
        !ok && out.contains("error: [database]: connecting to PostgreSQL"),
        "{out}"
    );
    assert!(!out.contains("s3cret-pw"), "{out}");

    // The SQLite store keeps a schema version too, and refuses a newer one.
    let store = d.join("store/phiwatch.db");
    let (ok, out) = phiwatch(&["migrate", "--store", store.to_str().unwrap()]);
    assert!(ok && out.contains("created, schema version 1"), "{out}");
    let (ok, out) = phiwatch(&["migrate", "--store", store.to_str().unwrap()]);
    assert!(ok && out.contains("schema version 1, up to date"), "{out}");
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let (ok, out) = phiwatch(&["migrate", "--store", store.to_str().unwrap()]);
    assert!(
        !ok && out.contains("schema version 7, newer than this phiwatch knows (1)"),
        "{out}"
    );
}

/// The fleet benchmark on a small backlog, against a database it is given: every access
/// stored once (it checks), each figure reported, and a database with accesses refused.
#[test]
fn the_fleet_benchmark_reports_each_figure_and_refuses_a_database_in_use() {
    let pg = Postgres::start();
    let url = pg.url();
    let args = [
        "bench",
        "--fleet",
        "--events",
        "3000",
        "--lease-seconds",
        "1",
        "--database",
        &url,
    ];
    let (ok, out) = phiwatch(&args);
    assert!(ok, "{out}");
    for row in [
        "baseline: SQLite store, batch insert",
        "3 collectors append to the ingest queue",
        "detector drains the backlog, fenced",
        "took the lease",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    let took: f64 = out
        .split("took the lease ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(took >= 0.9, "not before the lease expired: {took} s");
    assert_eq!(pg.psql("phiwatch", "SELECT count(*) FROM accesses"), "3000");
    let (ok, out) = phiwatch(&args);
    assert!(!ok && out.contains("needs an empty one"), "{out}");
}

/// The fleet's roles as processes, on a small day: every figure reported, the detector's
/// catch-up stores every access the scan stored, and the standby waits out the lease.
#[test]
fn the_fleet_nodes_benchmark_runs_real_nodes_and_reports_each_figure() {
    let pg = Postgres::start();
    let url = pg.url();
    let (ok, out) = phiwatch(&[
        "bench",
        "--fleet-nodes",
        "--events",
        "4000",
        "--lease-seconds",
        "2",
        "--database",
        &url,
    ]);
    assert!(ok, "{out}");
    for row in [
        "baseline: phiwatch scan, one process",
        "3 collect processes",
        "1 detect process: catch-up",
        "standby holding the lease",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    // The benchmark checks the fleet stored what the scan stored; it reports that count.
    let stored = pg.psql("phiwatch", "SELECT count(*) FROM accesses");
    assert!(
        out.contains(&format!("a day of 4000 events ({stored} accesses")),
        "{stored}: {out}"
    );
    assert!(stored.parse::<i64>().unwrap() >= 4000, "{stored}");
    let lease_epochs: i64 = pg
        .psql("phiwatch", "SELECT epoch FROM detector_lease")
        .parse()
        .unwrap();
    assert_eq!(
        lease_epochs, 3,
        "catch-up, then the killed detector, then its standby"
    );
}

#[test]
fn the_retention_command_archives_then_drops_only_months_past_retention() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let now = chrono::Utc::now().timestamp_millis();
    let old = now - 8 * 366 * 86_400_000; // eight years ago: past six
    rt().block_on(async {
        let mut c = migrated(&pg).await;
        let accesses = [
            access("old-1", old),
            access("old-2", old + 1),
            access("new-1", now),
        ];
        retention::ensure_months(&c, accesses.iter().map(|a| a.time_ms))
            .await
            .unwrap();
        let tx = c.transaction().await.unwrap();
        store::insert_batch(&tx, &accesses, &[]).await.unwrap();
        tx.commit().await.unwrap();
    });
    let old_table = retention::Month::of(old).unwrap().table();
    let cfg = d.join("phiwatch.toml");
    let write = |extra: &str| write_config(&cfg, d, &pg.url(), extra);
    write("");
    let c = cfg.to_str().unwrap();
    let (ok, out) = phiwatch(&["retention", "--config", c, "--dry-run"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{old_table}  past retention")),
        "{out}"
    );
    assert_eq!(out.matches("past retention").count(), 1, "{out}");
    let (ok, out) = phiwatch(&["retention", "--config", c]);
    assert!(!ok && out.contains("archive_dir"), "{out}");
    assert_eq!(pg.psql("phiwatch", "SELECT count(*) FROM accesses"), "3");
    write(&format!("archive_dir = \"{}/archive\"\n", d.display()));
    let (ok, out) = phiwatch(&["retention", "--config", c]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{old_table}: 2 accesses archived to")),
        "{out}"
    );
    let csv = std::fs::read_to_string(d.join(format!("archive/{old_table}.csv"))).unwrap();
    assert!(
        csv.contains("old-1") && csv.contains("old-2") && !csv.contains("new-1"),
        "{csv}"
    );
    assert_eq!(pg.psql("phiwatch", "SELECT count(*) FROM accesses"), "1");
    let (ok, out) = phiwatch(&["retention", "--config", c]);
    assert!(
        ok && out.contains("no month is past the retention of 72 month(s)"),
        "{out}"
    );
}

/// Dispatchers share the outbox: three claim at once and every notification goes out once;
/// one that dies holding claims leaves them to expire, and another then sends them with the
/// same key; a key queued twice is one row; a lapsed claim cannot overwrite its successor's.
#[test]
fn dispatchers_claim_each_notification_once_and_take_over_a_dead_ones_claims() {
    use phiwatch::fleet::outbox::{self, Settled};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let pg = Postgres::start();
    rt().block_on(async {
        let c = migrated(&pg).await;
        let now = 1_773_151_200_000i64;
        for i in 0..300 {
            let key = format!("phiwatch-alert-{i:04}-1-siem");
            assert!(outbox::enqueue(&c, &key, Some(i), "siem", now, now)
                .await
                .unwrap());
        }
        assert!(
            !outbox::enqueue(&c, "phiwatch-alert-0000-1-siem", Some(0), "siem", now, now)
                .await
                .unwrap(),
            "a key queued again is not a second row"
        );
        assert_eq!(outbox::depth(&c).await.unwrap(), 300);

        // The receiver: counts deliveries per key.
        let delivered: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        // A dispatcher claims 20 and dies before sending or settling any.
        let dead = connect(&pg, "dispatcher-dead").await;
        let held = outbox::claim(&dead, "dead", now, 20, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(held.len(), 20);
        drop(dead);
        let mut live = Vec::new();
        for d in 0..3 {
            let cfg = db(&pg);
            let delivered = delivered.clone();
            live.push(tokio::spawn(async move {
                let c = pg::connect(&cfg, &format!("dispatcher-{d}")).await.unwrap();
                let name = format!("d{d}");
                let deadline = Instant::now() + Duration::from_secs(30);
                while outbox::depth(&c).await.unwrap() > 0 {
                    assert!(Instant::now() < deadline, "the outbox never drained");
                    let rows = outbox::claim(&c, &name, now, 7, Duration::from_secs(30))
                        .await
                        .unwrap();
                    if rows.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    for r in rows {
                        *delivered.lock().unwrap().entry(r.key.clone()).or_default() += 1;
                        assert!(outbox::settle(&c, &name, &r, Settled::Sent, now)
                            .await
                            .unwrap());
                    }
                }
            }));
        }
        for t in live {
            t.await.unwrap();
        }
        let delivered = delivered.lock().unwrap().clone();
        assert_eq!(delivered.len(), 300, "every notification went out");
        assert!(delivered.values().all(|&n| n == 1), "none twice");
        // The dead dispatcher's claims were taken over only after they expired, and its late
        // settle changes nothing.
        assert!(
            !outbox::settle(&c, "dead", &held[0], Settled::Dead { error: "late" }, now)
                .await
                .unwrap()
        );
        let sent = count(&c, "SELECT count(*) FROM outbox WHERE state = 'sent'").await;
        assert_eq!(sent, 300);
    });
}

/// A batch joining an open alert holds it until the batch commits: a dispatcher queueing
/// repeats meanwhile passes it by (without waiting) rather than take the notification number
/// the batch's idempotency keys use; afterwards every key is the alert's once. (The batch's
/// update of the alert holds the row as well as its `FOR UPDATE` read; the lock taken at the
/// read also covers the moment between that read and the update, which this test cannot
/// stop in.)
#[test]
fn a_batch_joining_an_alert_keeps_a_dispatchers_repeat_off_it_until_it_commits() {
    use phiwatch::alert::fleet as alerts;
    let pg = Postgres::start();
    rt().block_on(async {
        let mut c = migrated(&pg).await;
        let now = chrono::Utc::now().timestamp_millis();
        let routing = phiwatch::alert::Routing::parse(
            "[grouping]\ngroup_wait = \"0s\"\ngroup_interval = \"0s\"\nrepeat_interval = \"1h\"\n[[receiver]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"http://127.0.0.1:9/\"\n[[route]]\nreceivers = [\"siem\"]\n",
        )
        .unwrap();
        let finding = |event: &str, patient: &str| phiwatch::finding::Finding {
            event_id: event.into(),
            time: phiwatch::time::format_ms(now),
            user: "dr-x".into(),
            department: "Cardiology".into(),
            patient: patient.into(),
            action: "read".into(),
            category: "vip".into(),
            severity: phiwatch::finding::Severity::High,
            detector: "vip-record".into(),
            explanation: String::new(),
            hipaa: String::new(),
        };
        // An alert opened and notified two hours ago, its notification sent.
        let first = finding("ev-1", "pt-1");
        let tx = c.transaction().await.unwrap();
        alerts::apply(&tx, &[&first], &routing, chrono_tz::UTC, now - 7_200_000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        c.batch_execute(&format!(
            "UPDATE outbox SET state = 'sent'; UPDATE alerts SET last_sent_ms = {}",
            now - 7_200_000
        ))
        .await
        .unwrap();

        // The next batch joins it (a new patient) and holds its transaction open.
        let mut batch = connect(&pg, "detector").await;
        let tx = batch.transaction().await.unwrap();
        let second = finding("ev-2", "pt-2");
        alerts::apply(&tx, &[&second], &routing, chrono_tz::UTC, now)
            .await
            .unwrap();
        let mut dispatcher = connect(&pg, "dispatcher").await;
        let repeated = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            alerts::schedule_repeats(&mut dispatcher, &routing, chrono_tz::UTC, now),
        )
        .await
        .expect("a dispatcher does not wait for the batch's lock")
        .unwrap();
        assert_eq!(repeated, 0, "the locked alert is passed by");
        tx.commit().await.unwrap();

        let keys: Vec<String> = c
            .query("SELECT idempotency_key FROM outbox ORDER BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert!(keys.len() >= 2, "the opening and the batch's notifications: {keys:?}");
        // Once the batch's notification waits, a repeat adds nothing either.
        let later = alerts::schedule_repeats(&mut dispatcher, &routing, chrono_tz::UTC, now)
            .await
            .unwrap();
        assert_eq!(later, 0);
    });
}

/// Every dispatcher schedules repeats of open alerts not notified for `repeat_interval`:
/// however many do it at once, each stale open alert gets one repeat, and acknowledged,
/// recently notified or never notified alerts none.
#[test]
fn repeats_are_queued_once_however_many_dispatchers_schedule_them() {
    use phiwatch::alert::fleet as alerts;
    let pg = Postgres::start();
    rt().block_on(async {
        let c = migrated(&pg).await;
        let now = chrono::Utc::now().timestamp_millis();
        for (status, sent) in [
            ("open", now - 2 * 3_600_000),
            ("acknowledged", now - 2 * 3_600_000),
            ("open", now - 600_000),
            ("open", 0),
            ("open", now - 3 * 3_600_000),
        ] {
            c.execute(
                "INSERT INTO alerts (group_key, fold_key, status, category, severity, user_id,
                     department, first_ms, last_ms, findings, incidents, last_sent_ms, origin)
                 VALUES ('k', 'k', $1, 'vip', 'high', 'u', 'd', 0, 0, 1, 1, $2,
                         'alert-' || $1 || $2::bigint)",
                &[&status, &sent],
            )
            .await
            .unwrap();
        }
        let routing = phiwatch::alert::Routing::parse(
            "[grouping]\nrepeat_interval = \"1h\"\n[[receiver]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"http://127.0.0.1:9/\"\n[[route]]\nreceivers = [\"siem\"]\n",
        )
        .unwrap();
        let mut runs = Vec::new();
        for d in 0..4 {
            let cfg = db(&pg);
            let routing = routing.clone();
            runs.push(tokio::spawn(async move {
                let mut c = pg::connect(&cfg, &format!("dispatcher-{d}")).await.unwrap();
                alerts::schedule_repeats(&mut c, &routing, chrono_tz::UTC, now)
                    .await
                    .unwrap()
            }));
        }
        let mut queued = 0;
        for r in runs {
            queued += r.await.unwrap();
        }
        assert_eq!(queued, 2, "alerts 1 and 5, once each");
        let rows = c
            .query(
                "SELECT alert_id FROM outbox WHERE state = 'pending' ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        let ids: Vec<i64> = rows.iter().map(|r| r.get::<_, Option<i64>>(0).unwrap()).collect();
        assert_eq!(ids, vec![1, 5]);
        // Marked notified now: scheduling again adds nothing.
        let mut c = connect(&pg, "again").await;
        let later = alerts::schedule_repeats(&mut c, &routing, chrono_tz::UTC, now + 1)
            .await
            .unwrap();
        assert_eq!(later, 0);
    });
}

#[test]
fn officers_on_many_nodes_change_cases_at_once_and_the_log_stays_one_chain() {
    use phiwatch::case::{change, fleet as cases, CaseError};
    let pg = Postgres::start();
    rt().block_on(async {
        let mut c = migrated(&pg).await;
        let mut ids = Vec::new();
        for n in 0..3 {
            let id = cases::create(
                &mut c,
                None,
                "privacy-officer",
                &format!("case {n}"),
                &[],
                None,
            )
            .await
            .unwrap();
            ids.push(id);
        }
        // Eight nodes, each on its own connection, note and add tasks to the same three
        // cases at once: every change must commit (a `MAX(seq) + 1` read would hand two of
        // them one number, and one would fail on the key).
        let mut writers = Vec::new();
        for w in 0..8 {
            let mut c = connect(&pg, &format!("officer-{w}")).await;
            let ids = ids.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..10 {
                    let id = ids[(w + i) % ids.len()];
                    let who = format!("officer-{w}");
                    if i % 2 == 0 {
                        cases::note(&mut c, id, &who, &format!("note {w}.{i}"))
                            .await
                            .unwrap();
                    } else {
                        cases::add_task(&mut c, id, &who, &format!("task {w}.{i}"))
                            .await
                            .unwrap();
                    }
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        let (entries, head) = cases::verify(&c).await.unwrap().unwrap();
        assert_eq!(entries, 3 + 80);
        assert_eq!(
            count(&c, "SELECT max(seq) FROM case_log").await,
            83,
            "no gap in the sequence"
        );
        assert_eq!(
            c.query_one("SELECT hash FROM case_log_head", &[])
                .await
                .unwrap()
                .get::<_, String>(0),
            head
        );
        // Each case's tasks are numbered 1..k with none twice.
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM (SELECT case_id FROM case_tasks GROUP BY case_id
                 HAVING max(n) <> count(*)) t"
            )
            .await,
            0
        );
        assert_eq!(count(&c, "SELECT count(*) FROM case_tasks").await, 40);

        // The rules are the single process's: a closed case takes no change.
        let close = |_: &change::Current| change::close_set("false_positive");
        cases::change(&mut c, None, ids[0], "privacy-officer", "close", close)
            .await
            .unwrap();
        let again = cases::change(&mut c, None, ids[0], "privacy-officer", "assign", |s| {
            change::assign_set(&s.state, "someone")
        })
        .await;
        assert!(
            matches!(&again, Err(CaseError::Invalid(m)) if m.contains("is closed")),
            "{again:?}"
        );
        let j = phiwatch::case::clock::Jurisdictions::parse(
            phiwatch::case::clock::Jurisdictions::EMBEDDED,
        )
        .unwrap();
        let today = chrono::Utc::now().date_naive();
        let listed = cases::list(&c, &j, today).await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed.last().unwrap().state, "closed", "closed ones last");
        let shown = cases::detail(&c, ids[1], &j, today).await.unwrap().unwrap();
        assert_eq!(shown.log.first().unwrap().action, "open");
        assert!(
            !shown.deadlines.is_empty() && shown.deadlines_provisional,
            "the 60-day clock runs from discovery"
        );

        // Editing one entry is named by the check.
        c.execute(
            "UPDATE case_log SET actor = actor || 'x' WHERE seq = 40",
            &[],
        )
        .await
        .unwrap();
        let broken = cases::verify(&c).await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 40, "{broken:?}");
    });
}
