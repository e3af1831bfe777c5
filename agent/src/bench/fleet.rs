//! `phiwatch bench --fleet`: fleet mode's store on PostgreSQL beside the SQLite store, in the
//! same run, on the same generated accesses.
//!
//! Measured: the SQLite store's batch insert (the baseline: what a single-machine agent's
//! detection thread writes per batch); collectors appending batches to the ingest queue; a
//! detector draining that backlog through fenced transactions (pending batches, fence,
//! accesses and findings, progress) as it would catch up after an outage; and how long a
//! standby polling the lease takes to take over from a detector that stopped renewing (a
//! `kill -9`). The detector here stores what the collectors appended without judging it:
//! the fleet roles, which will run the detection pipeline in between, are not built yet.

use crate::event::AccessEvent;
use crate::finding::{Finding, Severity};
use crate::fleet::pg::{self, DatabaseConfig};
use crate::fleet::{lease, queue, retention, schema, store};
use crate::store::Store;
use anyhow::{Context as _, Result};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Accesses per batch: the tailer's chunk size order of magnitude.
const BATCH: usize = 500;
/// Collectors appending at once.
const COLLECTORS: usize = 3;

pub struct FleetArgs {
    /// A database the benchmark may fill (`None`: a throwaway cluster on loopback).
    pub database: Option<DatabaseConfig>,
    pub events: usize,
    /// The lease's time to live in the takeover measurement.
    pub lease: Duration,
}

pub fn run(a: FleetArgs) -> Result<String> {
    let (db, _throwaway) = super::postgres::given_or_throwaway(a.database)?;
    let accesses = generate(a.events);
    let sqlite = sqlite_baseline(&accesses)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(COLLECTORS + 1)
        .enable_all()
        .build()?;
    let (append, drain, takeover) =
        rt.block_on(async { postgres(&db, &accesses, a.lease).await })?;
    let n = accesses.len() as f64;
    let mut out = String::new();
    writeln!(
        out,
        "phiwatch bench --fleet: {} accesses ({} findings) in batches of {BATCH}; PostgreSQL {}",
        accesses.len(),
        accesses
            .chunks(BATCH)
            .map(|c| c.len().div_ceil(100))
            .sum::<usize>(),
        pg::describe(&db.url)
    )?;
    writeln!(
        out,
        "{:<58} {:>10} {:>12} {:>8}",
        "", "seconds", "accesses/s", "x base"
    )?;
    let base = n / sqlite.as_secs_f64();
    for (what, t) in [
        ("baseline: SQLite store, batch insert (one writer)", sqlite),
        (
            "PostgreSQL: 3 collectors append to the ingest queue",
            append,
        ),
        ("PostgreSQL: detector drains the backlog, fenced", drain),
    ] {
        let rate = n / t.as_secs_f64();
        writeln!(
            out,
            "{what:<58} {:>10.2} {:>12.0} {:>8.2}",
            t.as_secs_f64(),
            rate,
            rate / base
        )?;
    }
    writeln!(
        out,
        "takeover: a standby polling every {} ms took the lease {:.2} s after the holder's last renewal (time to live {} s)",
        POLL.as_millis(),
        takeover.as_secs_f64(),
        a.lease.as_secs()
    )?;
    Ok(out)
}

const POLL: Duration = Duration::from_millis(250);

/// Accesses spread over two months, 2,000 users and 50,000 patients.
fn generate(n: usize) -> Vec<AccessEvent> {
    let start = 1_772_323_200_000i64; // 2026-03-01T00:00:00Z
    let step = (60 * 86_400_000) / n.max(1) as i64;
    (0..n)
        .map(|i| AccessEvent {
            id: format!("bench-{i:09}"),
            time_ms: start + i as i64 * step.max(1),
            user: format!("user-{}", i % 2_000),
            patient: Some(format!("pt-{}", (i * 7919) % 50_000)),
            subtype: "read".to_owned(),
            workstation: format!("ws-{}", i % 300),
            succeeded: true,
            ..Default::default()
        })
        .collect()
}

fn finding(a: &AccessEvent) -> Finding {
    Finding {
        event_id: a.id.clone(),
        time: chrono::DateTime::from_timestamp_millis(a.time_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default(),
        user: a.user.clone(),
        department: String::new(),
        patient: a.patient.clone().unwrap_or_default(),
        action: "view".to_owned(),
        category: "coworker".to_owned(),
        severity: Severity::High,
        detector: "bench".to_owned(),
        explanation: "generated".to_owned(),
        hipaa: "45 CFR 164.502(a)".to_owned(),
    }
}

fn sqlite_baseline(accesses: &[AccessEvent]) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut s = Store::open(&dir.path().join("phiwatch.db"))?;
    let t = Instant::now();
    for chunk in accesses.chunks(BATCH) {
        // As the PostgreSQL detector below makes them: the same work in both timed loops.
        let findings: Vec<Finding> = chunk.iter().step_by(100).map(finding).collect();
        s.insert_batch(chunk, &findings)?;
    }
    Ok(t.elapsed())
}

/// A record as the benchmark's collectors append it: "id time user patient".
fn record(a: &AccessEvent) -> Vec<u8> {
    format!(
        "{} {} {} {}",
        a.id,
        a.time_ms,
        a.user,
        a.patient.as_deref().unwrap_or("")
    )
    .into_bytes()
}

fn parse(r: &[u8]) -> Option<AccessEvent> {
    let s = std::str::from_utf8(r).ok()?;
    let mut f = s.split(' ');
    Some(AccessEvent {
        id: f.next()?.to_owned(),
        time_ms: f.next()?.parse().ok()?,
        user: f.next()?.to_owned(),
        patient: f.next().filter(|p| !p.is_empty()).map(str::to_owned),
        subtype: "read".to_owned(),
        succeeded: true,
        ..Default::default()
    })
}

async fn postgres(
    db: &DatabaseConfig,
    accesses: &[AccessEvent],
    ttl: Duration,
) -> Result<(Duration, Duration, Duration)> {
    let mut admin = pg::connect(db, "phiwatch-bench").await?;
    schema::migrate(&mut admin).await?;
    let existing: i64 = admin
        .query_one("SELECT count(*) FROM accesses", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        existing == 0,
        "{}: the database holds {existing} accesses; the benchmark needs an empty one",
        pg::describe(&db.url)
    );
    retention::ensure_months(&admin, accesses.iter().map(|a| a.time_ms)).await?;

    // Collectors: each appends its share of the batches, with a checkpoint per batch.
    let t = Instant::now();
    let mut tasks = Vec::new();
    let shares: Vec<Vec<Vec<Vec<u8>>>> = (0..COLLECTORS)
        .map(|c| {
            let mine = accesses.chunks(BATCH).skip(c).step_by(COLLECTORS);
            mine.map(|batch| batch.iter().map(record).collect())
                .collect()
        })
        .collect();
    for (c, share) in shares.into_iter().enumerate() {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = pg::connect(&db, &format!("bench-collector-{c}")).await?;
            for (i, b) in share.iter().enumerate() {
                queue::append(
                    &mut client,
                    &format!("site-{c}"),
                    &format!("collector-{c}"),
                    b,
                    &format!("offset-{i}"),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let append = t.elapsed();

    // The detector catches up on the whole backlog.
    let mut det = pg::connect(db, "bench-detector").await?;
    let l = lease::try_acquire(&det, "bench-detector", ttl)
        .await?
        .context("the lease is held by another detector")?;
    let t = Instant::now();
    let mut stored = 0u64;
    loop {
        let next = queue::pending(&det, 16).await?;
        if next.is_empty() {
            break;
        }
        for b in next {
            let batch: Vec<AccessEvent> = b.records.iter().filter_map(|r| parse(r)).collect();
            let findings: Vec<Finding> = batch.iter().step_by(100).map(finding).collect();
            let tx = queue::begin(&mut det, &l).await?;
            stored += store::insert_batch(&tx, &batch, &findings).await?.0;
            queue::complete(tx, &l, &b).await?;
        }
        lease::renew(&det, &l, ttl).await?;
    }
    let drain = t.elapsed();
    anyhow::ensure!(
        stored == accesses.len() as u64,
        "stored {stored} of {} accesses",
        accesses.len()
    );

    // Takeover: the holder renews once more, then dies; a standby polls.
    lease::renew(&det, &l, ttl).await?;
    let renewed = Instant::now();
    drop(det);
    let standby = pg::connect(db, "bench-standby").await?;
    loop {
        if lease::try_acquire(&standby, "bench-standby", ttl)
            .await?
            .is_some()
        {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok((append, drain, renewed.elapsed()))
}
