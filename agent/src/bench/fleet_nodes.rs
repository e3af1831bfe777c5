//! `phiwatch bench --fleet-nodes`: fleet mode's roles as real processes of this binary,
//! beside the single process in the same run, on the same generated day.
//!
//! Measured: the baseline, `phiwatch scan` of the day in one process on SQLite (the Cedar
//! pack and the shipped plugins); three `collect` processes decoding their third of the day
//! into PostgreSQL's ingest queue; one `detect` process catching up on that whole backlog
//! (the same pack and plugins, every write fenced); and, with the backlog restored, the time
//! from `kill -9` of the active detector applying it to its standby holding the lease (the
//! standby is loaded and judges at once). Each
//! process's time includes its start-up (loading the context), as the scan's does.

use crate::demo;
use crate::fleet::pg::{self, DatabaseConfig};
use crate::fleet::{queue, schema};
use crate::settings::Settings;
use anyhow::{bail, Context as _, Result};
use std::fmt::Write as _;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COLLECTORS: usize = 3;
/// How long any phase may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(1800);

pub struct FleetNodesArgs {
    pub database: Option<DatabaseConfig>,
    pub events: usize,
    pub lease: Duration,
    pub dir: Option<PathBuf>,
}

/// A node of the benchmark's fleet: a `phiwatch run` process.
struct Node {
    name: String,
    log: PathBuf,
    child: Child,
    metrics: String,
}

impl Node {
    fn start(dir: &Path, name: &str, body: &str) -> Result<Node> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{d}/{name}\"\ncontext = \"{d}/context\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n{body}",
                d = dir.display()
            ),
        )?;
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("PHIWATCH_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Node {
            name: name.to_owned(),
            log: log_path,
            child,
            metrics: format!("127.0.0.1:{port}"),
        })
    }

    /// One series of the node's /metrics, summed over its labels; `None` until it serves.
    fn metric(&self, name: &str) -> Option<f64> {
        let mut s = std::net::TcpStream::connect(&self.metrics).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(
            body.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// An error naming the node and its last words if it has exited.
    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!("{} exited ({status}): {}", self.name, tail.join(" / "));
        }
        Ok(())
    }

    fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    while !done()? {
        if t.elapsed() > PATIENCE {
            bail!("gave up waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn run(a: FleetNodesArgs) -> Result<String> {
    let (db, _throwaway) = super::postgres::given_or_throwaway(a.database)?;
    let (dir, _tmp) = super::work_dir(a.dir.as_deref())?;
    let ds = demo::DataSet::at(&dir);
    if !ds.events.exists() {
        eprintln!(
            "generating a day of {} events in {} ...",
            a.events,
            dir.display()
        );
        demo::generate(&dir, a.events, 7, &Settings::default())?;
    }
    let lines = split(&ds.events, &dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt.block_on(async {
        let mut c = pg::connect(&db, "phiwatch-bench").await?;
        schema::migrate(&mut c).await?;
        anyhow::Ok(c)
    })?;
    let fleet = Fleet {
        dir: &dir,
        database: format!("[database]\nurl = \"{}\"\n", db.url),
        lease: a.lease.as_secs().max(1),
        rt,
        client,
    };
    let empty = fleet.count("accesses")?;
    anyhow::ensure!(
        empty == 0,
        "{}: the database holds {empty} accesses; the benchmark needs an empty one",
        pg::describe(&db.url)
    );
    let scan = baseline(&dir, &ds.events)?;
    let collect = fleet.collect(lines)?;
    let backlog = fleet.rt.block_on(queue::backlog(&fleet.client))?;
    fleet.sql("CREATE TABLE bench_batches AS SELECT * FROM ingest_batches")?;
    let catch_up = fleet.catch_up()?;
    let accesses = fleet.count("accesses")?;
    let scanned: i64 = rusqlite::Connection::open(dir.join("scan.db"))?.query_row(
        "SELECT count(*) FROM accesses",
        [],
        |r| r.get(0),
    )?;
    anyhow::ensure!(
        accesses == scanned,
        "the fleet stored {accesses} accesses, the scan {scanned}"
    );
    // The backlog restored for the takeover.
    fleet.sql(
        "TRUNCATE accesses, findings, plugin_state, context_journal;
         INSERT INTO ingest_batches SELECT * FROM bench_batches;
         UPDATE detector_progress SET done_seq = 0;
         DROP TABLE bench_batches;",
    )?;
    let takeover = fleet.takeover()?;
    report(ReportIn {
        events: a.events,
        accesses,
        backlog,
        scan,
        collect,
        catch_up,
        takeover,
        lease: fleet.lease,
        at: pg::describe(&db.url),
    })
}

/// The benchmark's fleet: its directory, its database, and the nodes it starts.
struct Fleet<'a> {
    dir: &'a Path,
    /// The `[database]` table every node's config carries.
    database: String,
    lease: u64,
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Fleet<'_> {
    fn sql(&self, sql: &str) -> Result<()> {
        Ok(self.rt.block_on(self.client.batch_execute(sql))?)
    }

    fn count(&self, table: &str) -> Result<i64> {
        let sql = format!("SELECT count(*) FROM {table}");
        Ok(self.rt.block_on(self.client.query_one(&sql, &[]))?.get(0))
    }

    fn drained(&self) -> Result<bool> {
        Ok(self.rt.block_on(queue::backlog(&self.client))? == 0)
    }

    /// The lease's holder while unexpired, else "".
    fn holder(&self) -> Result<String> {
        let sql = "SELECT coalesce((SELECT holder FROM detector_lease
                                    WHERE expires_at > clock_timestamp()), '')";
        Ok(self.rt.block_on(self.client.query_one(sql, &[]))?.get(0))
    }

    fn detector(&self, name: &str) -> Result<Node> {
        let body = format!(
            "{}[fleet]\nrole = \"detect\"\nnode = \"{name}\"\nlease_seconds = {}\n",
            self.database, self.lease
        );
        Node::start(self.dir, name, &body)
    }

    /// Three collectors, each decoding its third of the day into the queue, until every
    /// line is read and appended.
    fn collect(&self, lines: usize) -> Result<Duration> {
        let t = Instant::now();
        let mut collectors: Vec<Node> = (0..COLLECTORS)
            .map(|i| {
                let body = format!(
                    "{}[fleet]\nrole = \"collect\"\nnode = \"collector{i}\"\n[[source]]\nkind = \"file\"\nname = \"site{i}\"\npaths = [\"{}\"]\nformat = \"fhir-auditevent\"\n",
                    self.database,
                    self.dir.join(format!("site{i}.ndjson")).display()
                );
                Node::start(self.dir, &format!("collector{i}"), &body)
            })
            .collect::<Result<_>>()?;
        wait_until("the collectors to read every line", || {
            for c in collectors.iter_mut() {
                c.alive()?;
            }
            let read: f64 = collectors
                .iter()
                .filter_map(|c| c.metric("phiwatch_source_lines_total"))
                .sum();
            let lag: f64 = collectors
                .iter()
                .map(|c| c.metric("phiwatch_source_lag_bytes").unwrap_or(1.0))
                .sum();
            Ok(read >= lines as f64 && lag == 0.0)
        })?;
        let took = t.elapsed();
        for c in collectors {
            c.stop()?;
        }
        Ok(took)
    }

    /// One detector, started on the whole backlog, until it is drained.
    fn catch_up(&self) -> Result<Duration> {
        let t = Instant::now();
        let mut d = self.detector("detector0")?;
        wait_until("the detector to drain the backlog", || {
            d.alive()?;
            self.drained()
        })?;
        let took = t.elapsed();
        d.stop()?;
        Ok(took)
    }

    /// A detector applying the backlog is killed; its standby, started beside it and
    /// loaded, takes the lease once it expires, then drains the rest.
    fn takeover(&self) -> Result<Duration> {
        let mut active = self.detector("detector1")?;
        wait_until("the first detector to apply a batch", || {
            active.alive()?;
            let applied = active.metric("phiwatch_fleet_batches_applied_total");
            Ok(applied.unwrap_or(0.0) > 0.0)
        })?;
        let mut standby = self.detector("detector2")?;
        wait_until("the standby to be ready", || {
            standby.alive()?;
            Ok(standby.metric("phiwatch_fleet_role").is_some())
        })?;
        active.kill9()?;
        let t = Instant::now();
        wait_until("the standby to take the lease", || {
            standby.alive()?;
            Ok(self.holder()?.starts_with("detector2/"))
        })?;
        let took = t.elapsed();
        wait_until("the standby to drain the rest", || {
            standby.alive()?;
            self.drained()
        })?;
        standby.stop()?;
        Ok(took)
    }
}

/// Splits the day into a log per collector, by user (a site's staff stay at their site);
/// answers the number of lines.
fn split(events: &Path, dir: &Path) -> Result<usize> {
    let mut out: Vec<std::io::BufWriter<std::fs::File>> = (0..COLLECTORS)
        .map(|i| {
            Ok(std::io::BufWriter::new(std::fs::File::create(
                dir.join(format!("site{i}.ndjson")),
            )?))
        })
        .collect::<Result<_>>()?;
    let mut sites = std::collections::HashMap::new();
    let mut n = 0;
    for line in std::io::BufReader::new(std::fs::File::open(events)?).lines() {
        let line = line?;
        let user = serde_json::from_str::<serde_json::Value>(&line)
            .map(|v| v["agent"][0]["who"].to_string())
            .unwrap_or_default();
        let next = sites.len() % COLLECTORS;
        let site = *sites.entry(user).or_insert(next);
        writeln!(out[site], "{line}")?;
        n += 1;
    }
    for mut w in out {
        w.flush()?;
    }
    Ok(n)
}

/// `phiwatch scan` of the whole day in one process, into a SQLite store of its own.
fn baseline(dir: &Path, events: &Path) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(["scan", "--events"])
        .arg(events)
        .arg("--context")
        .arg(dir.join("context"))
        .arg("--store")
        .arg(dir.join("scan.db"))
        .arg("--store-accesses")
        .args(["--out", "/dev/null"])
        .env_remove("PHIWATCH_LOG")
        .output()?;
    if !out.status.success() {
        bail!(
            "the baseline scan failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed())
}

struct ReportIn {
    events: usize,
    accesses: i64,
    backlog: i64,
    scan: Duration,
    collect: Duration,
    catch_up: Duration,
    takeover: Duration,
    lease: u64,
    at: String,
}

fn report(r: ReportIn) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "phiwatch bench --fleet-nodes: a day of {} events ({} accesses, {} batches); PostgreSQL {}",
        r.events, r.accesses, r.backlog, r.at
    )?;
    writeln!(
        out,
        "{:<66} {:>9} {:>10} {:>7}",
        "", "seconds", "events/s", "x base"
    )?;
    let base = r.events as f64 / r.scan.as_secs_f64();
    for (what, t) in [
        (
            "baseline: phiwatch scan, one process, SQLite (pack + plugins)",
            r.scan,
        ),
        (
            "3 collect processes: decode and append to the ingest queue",
            r.collect,
        ),
        (
            "1 detect process: catch-up of the whole backlog (pack + plugins)",
            r.catch_up,
        ),
    ] {
        let rate = r.events as f64 / t.as_secs_f64();
        writeln!(
            out,
            "{what:<66} {:>9.2} {:>10.0} {:>7.2}",
            t.as_secs_f64(),
            rate,
            rate / base
        )?;
    }
    writeln!(
        out,
        "takeover: kill -9 of the active detector to its standby holding the lease: {:.2} s (lease {} s; target <= 15 s)",
        r.takeover.as_secs_f64(),
        r.lease
    )?;
    Ok(out)
}
