//! `phiwatch bench --live`: the real daemon (`phiwatch run`, a child process) tailing a log.
//!
//! 1. Latency: events are appended at a steady rate with `recorded` set to the moment of the
//!    write; each access's delay is `stored_ms - time_ms` in the store (p50, p99, max).
//! 2. Throughput: a block of events is appended at once and timed until the last is stored,
//!    beside `scan --store-accesses` of the same block in this process, in the same run.
//! 3. Memory: the daemon's peak resident set (VmHWM) with the generated context loaded.

use crate::context::load_context;
use crate::decode::{decode_audit_event, Decoded};
use crate::demo;
use crate::detect::PolicyPack;
use crate::pipeline::Pipeline;
use crate::scan::{scan_files, Sinks};
use crate::settings::Settings;
use crate::store::Store;
use anyhow::{bail, Context as _, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LiveOptions {
    pub patients: usize,
    pub rate: u32,
    pub seconds: u32,
    pub block: usize,
    pub poll_ms: u64,
    pub dir: Option<PathBuf>,
}

pub(super) struct Daemon(pub(super) Child);

impl Daemon {
    /// `phiwatch run --config CONFIG` from this very binary, its output discarded.
    pub(super) fn start(config: &Path) -> Result<Daemon> {
        let exe = std::env::current_exe().context("locating the phiwatch binary")?;
        Ok(Daemon(
            Command::new(exe)
                .args(["run", "--config"])
                .arg(config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting phiwatch run")?,
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

pub fn run(o: &LiveOptions) -> Result<()> {
    let settings = Settings::default();
    let tmp = tempfile::tempdir()?;
    let dir = o.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let paced = (o.rate as usize) * (o.seconds as usize);
    let events = paced + o.block;
    eprintln!(
        "generating {} patients and {events} events in {} ...",
        o.patients,
        dir.display()
    );
    let shape = demo::Shape {
        patients: o.patients,
        identifier_percent: 0,
        ..demo::Shape::new(events, 11)
    };
    let ds = demo::generate_shaped(&dir.join("set"), &settings, &shape)?;
    let lines: Vec<String> = std::fs::read_to_string(&ds.events)?
        .lines()
        .map(str::to_owned)
        .collect();
    let accesses = |ls: &[String]| {
        ls.iter()
            .filter(|l| matches!(decode_audit_event(l.as_bytes()), Ok(Decoded::Access(_))))
            .count() as i64
    };
    let (paced_lines, block_lines) = lines.split_at(paced.min(lines.len()));
    let (paced_n, block_n) = (accesses(paced_lines), accesses(block_lines));

    let run_dir = dir.join("agent");
    let (config, port) = agent_config(&run_dir, &ds.context, o.poll_ms)?;
    let started = Instant::now();
    let daemon = Daemon::start(&config)?;
    wait(Duration::from_secs(300), || healthy(port))?;
    let ready = started.elapsed();
    let db = run_dir.join("data/phiwatch.db");
    let log_path = run_dir.join("logs/ehr.ndjson");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;

    // 1. Paced appends, every 10 ms, each line stamped with the time it is written.
    let per_tick = (o.rate as usize / 100).max(1);
    let t0 = Instant::now();
    for (i, chunk) in paced_lines.chunks(per_tick).enumerate() {
        let due = t0 + Duration::from_millis(10 * i as u64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let now = crate::time::format_ms(chrono::Utc::now().timestamp_millis());
        let mut buf = String::new();
        for l in chunk {
            buf.push_str(&restamp(l, &now));
            buf.push('\n');
        }
        log.write_all(buf.as_bytes())?;
    }
    wait(Duration::from_secs(120), || stored(&db) >= paced_n)?;
    let mut delays = delays(&db)?;
    delays.sort_unstable();
    let pct = |p: f64| delays[((delays.len() - 1) as f64 * p).round() as usize];

    // 2. A block appended at once.
    let mut buf = String::new();
    for l in block_lines {
        buf.push_str(l);
        buf.push('\n');
    }
    let t = Instant::now();
    log.write_all(buf.as_bytes())?;
    wait(Duration::from_secs(600), || {
        stored(&db) >= paced_n + block_n
    })?;
    let tail_secs = t.elapsed().as_secs_f64();
    let rss = peak_rss_kb(daemon.0.id())?;
    drop(daemon);

    let block_file = dir.join("block.ndjson");
    std::fs::write(&block_file, &buf)?;
    let (scanned, scan_secs) =
        scan_baseline(&block_file, &ds.context, &dir.join("scan-baseline.db"))?;

    let tail_rate = block_n as f64 / tail_secs;
    let scan_rate = scanned as f64 / scan_secs;
    println!(
        "phiwatch bench --live: {} patients, poll_ms {}, daemon ready in {:.1} s",
        o.patients,
        o.poll_ms,
        ready.as_secs_f64()
    );
    println!(
        "  latency, {} events at {}/s, write to stored: p50 {} ms, p99 {} ms, max {} ms",
        delays.len(),
        o.rate,
        pct(0.50),
        pct(0.99),
        delays[delays.len() - 1]
    );
    println!(
        "  throughput, {block_n} events appended at once: tail {tail_rate:.0}/s, scan --store-accesses {scan_rate:.0}/s, tail/scan {:.2}",
        tail_rate / scan_rate
    );
    println!("  daemon peak RSS {:.0} MB", rss as f64 / 1024.0);
    Ok(())
}

/// A fresh agent directory with a config tailing `logs/*.ndjson` against `context`, and the
/// free port its metrics endpoint listens on.
fn agent_config(run_dir: &Path, context: &Path, poll_ms: u64) -> Result<(PathBuf, u16)> {
    let _ = std::fs::remove_dir_all(run_dir);
    std::fs::create_dir_all(run_dir.join("logs"))?;
    let port = free_port()?;
    let config = run_dir.join("phiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/data\"\ncontext = \"{ctx}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/*.ndjson\"]\nformat = \"fhir-auditevent\"\npoll_ms = {poll}\n",
            d = run_dir.display(),
            ctx = context.display(),
            poll = poll_ms,
        ),
    )?;
    Ok((config, port))
}

/// The same block through `scan --store-accesses`: the throughput the tailer is compared with.
/// Returns the events scanned and the seconds taken.
fn scan_baseline(block_file: &Path, context: &Path, db: &Path) -> Result<(u64, f64)> {
    let settings = Settings::default();
    let (mut context, _) = load_context(context, &settings)?;
    let pack = PolicyPack::embedded();
    let mut store = Store::open(db)?;
    let mut pipeline = Pipeline::new(&settings, &pack);
    let t = Instant::now();
    let s = scan_files(
        std::slice::from_ref(&block_file.to_owned()),
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut std::io::sink(),
            rejects: None,
            store: Some(&mut store),
            store_accesses: true,
            only_detector: None,
            grouping: None,
        },
    )?;
    let scan_secs = t.elapsed().as_secs_f64();
    Ok((s.events, scan_secs))
}

/// Replaces the value of `"recorded"` in one generated line.
fn restamp(line: &str, now: &str) -> String {
    let key = "\"recorded\":\"";
    let Some(at) = line.find(key) else {
        return line.to_owned();
    };
    let start = at + key.len();
    let end = line[start..].find('"').map_or(line.len(), |e| start + e);
    format!("{}{now}{}", &line[..start], &line[end..])
}

pub(super) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The body of a GET on the daemon's HTTP port.
pub(super) fn get(port: u16, path: &str) -> Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

pub(super) fn healthy(port: u16) -> bool {
    get(port, "/healthz").is_ok_and(|b| b.contains("200 OK"))
}

pub(super) fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("timed out after {limit:?}")
}

fn stored(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM accesses", [], |r| r.get(0)))
        .unwrap_or(0)
}

fn delays(db: &Path) -> Result<Vec<i64>> {
    let c = rusqlite::Connection::open(db)?;
    let mut st = c.prepare("SELECT stored_ms - time_ms FROM accesses")?;
    let v = st
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    if v.is_empty() {
        bail!("no accesses stored");
    }
    Ok(v)
}

pub(super) fn peak_rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
}

#[cfg(test)]
mod tests {
    #[test]
    fn restamp_replaces_only_recorded() {
        let l = r#"{"id":"a","recorded":"2026-03-10T08:00:00Z","x":"recorded"}"#;
        assert_eq!(
            super::restamp(l, "2026-11-25T00:00:00.000Z"),
            r#"{"id":"a","recorded":"2026-11-25T00:00:00.000Z","x":"recorded"}"#
        );
    }
}
