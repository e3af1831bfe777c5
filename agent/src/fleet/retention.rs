//! Accesses by month: a partition per calendar month (UTC), made before the detector stores
//! into it, archived to a CSV file and dropped once older than the retention (HIPAA asks for
//! six years of documentation; the access log is evidence in a breach investigation).

use super::FleetError;
use chrono::{Datelike, TimeZone, Utc};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio_postgres::{Client, GenericClient};

/// The default retention: six years, in months.
pub const DEFAULT_MONTHS: u32 = 72;

/// One month's partition of `accesses`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn of(time_ms: i64) -> Option<Month> {
        let t = Utc.timestamp_millis_opt(time_ms).single()?;
        Some(Month {
            year: t.year(),
            month: t.month(),
        })
    }

    pub fn table(&self) -> String {
        format!("accesses_{:04}_{:02}", self.year, self.month)
    }

    fn next(&self) -> Month {
        match self.month {
            12 => Month {
                year: self.year + 1,
                month: 1,
            },
            m => Month {
                year: self.year,
                month: m + 1,
            },
        }
    }

    fn start_ms(&self) -> i64 {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .map_or(0, |t| t.timestamp_millis())
    }

    /// The month `n` months before this one.
    fn minus(&self, n: u32) -> Month {
        let total = self.year * 12 + self.month as i32 - 1 - n as i32;
        Month {
            year: total.div_euclid(12),
            month: total.rem_euclid(12) as u32 + 1,
        }
    }

    fn parse(table: &str) -> Option<Month> {
        let rest = table.strip_prefix("accesses_")?;
        let (y, m) = rest.split_once('_')?;
        Some(Month {
            year: y.parse().ok()?,
            month: m.parse().ok().filter(|m| (1..=12).contains(m))?,
        })
    }
}

/// An insert into `accesses` found no partition for its time.
pub fn missing_partition(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
        && e.as_db_error()
            .is_some_and(|d| d.message().contains("no partition"))
}

/// Makes the partitions for the months of these access times, if missing.
pub async fn ensure_months(
    client: &Client,
    times: impl IntoIterator<Item = i64>,
) -> Result<(), FleetError> {
    let months: BTreeSet<Month> = times.into_iter().filter_map(Month::of).collect();
    for m in months {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF accesses FOR VALUES FROM ({}) TO ({})",
                m.table(),
                m.start_ms(),
                m.next().start_ms()
            ))
            .await
            .map_err(FleetError::sql("making a month's partition of accesses"))?;
    }
    Ok(())
}

/// The months stored, oldest first.
pub async fn months(client: &Client) -> Result<Vec<Month>, FleetError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'accesses'::regclass",
            &[],
        )
        .await
        .map_err(FleetError::sql("listing the months of accesses"))?;
    let mut out: Vec<Month> = rows
        .iter()
        .filter_map(|r| Month::parse(r.get::<_, &str>(0)))
        .collect();
    out.sort();
    Ok(out)
}

/// A month the planner estimates to hold more accesses than this is counted by that estimate
/// when the whole month is asked for: an exact count of one month of a large system's
/// accesses reads hundreds of millions of rows, and a rate per 10,000 accesses or a
/// dashboard's total does not need the last row.
pub const ESTIMATE_FROM: f64 = 1_000_000.0;

/// The accesses stored with times from `from_ms` to `to_ms` (both included; `None`: every
/// month kept): counted exactly in months partly inside the window and in months of fewer
/// than [`ESTIMATE_FROM`] rows, by the planner's estimate (kept by autovacuum's ANALYZE) in
/// larger months wholly inside. Answers the count and whether any of it is an estimate.
pub async fn count_between(
    client: &impl GenericClient,
    window: Option<(i64, i64)>,
) -> Result<(u64, bool), FleetError> {
    let e = FleetError::sql("counting accesses");
    let rows = client
        .query(
            "SELECT c.relname, c.reltuples::float8 FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'accesses'::regclass",
            &[],
        )
        .await
        .map_err(&e)?;
    let (mut total, mut estimated) = (0u64, false);
    for r in &rows {
        let Some(m) = Month::parse(r.get::<_, &str>(0)) else {
            continue;
        };
        let (start, end) = (m.start_ms(), m.next().start_ms() - 1);
        let (from, to) = window.unwrap_or((start, end));
        if to < start || from > end {
            continue;
        }
        let whole = from <= start && to >= end;
        let planned: f64 = r.get(1);
        if whole && planned >= ESTIMATE_FROM {
            total += planned as u64;
            estimated = true;
            continue;
        }
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE time_ms BETWEEN $1 AND $2",
                    m.table()
                ),
                &[&from.max(start), &to.min(end)],
            )
            .await
            .map_err(&e)?
            .get(0);
        total += n as u64;
    }
    Ok((total, estimated))
}

/// The stored months that ended more than `keep_months` months before `now_ms`'s month.
pub async fn past(
    client: &Client,
    keep_months: u32,
    now_ms: i64,
) -> Result<Vec<Month>, FleetError> {
    let Some(now) = Month::of(now_ms) else {
        return Ok(Vec::new());
    };
    let oldest_kept = now.minus(keep_months);
    Ok(months(client)
        .await?
        .into_iter()
        .filter(|m| *m < oldest_kept)
        .collect())
}

/// What [`apply`] did with one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub month: Month,
    pub rows: u64,
    /// The CSV file it was archived to (with a `.sha256` beside it), if archived.
    pub archive: Option<PathBuf>,
}

/// Archives (when `archive_dir` is given) and then drops every month that ended more than
/// `keep_months` months before `now_ms`'s month. A month is dropped only after its archive
/// is written and synced to disk.
pub async fn apply(
    client: &mut Client,
    keep_months: u32,
    now_ms: i64,
    archive_dir: Option<&Path>,
) -> Result<Vec<Expired>, FleetError> {
    let mut done = Vec::new();
    for month in past(client, keep_months, now_ms).await? {
        let (rows, archive) = match archive_dir {
            Some(dir) => {
                let (rows, path) = archive(client, &month, dir).await?;
                (rows, Some(path))
            }
            None => {
                let n: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {}", month.table()), &[])
                    .await
                    .map_err(FleetError::sql("counting a month of accesses"))?
                    .get(0);
                (n as u64, None)
            }
        };
        let tx = client
            .transaction()
            .await
            .map_err(FleetError::sql("dropping a month of accesses"))?;
        tx.batch_execute(&format!(
            "ALTER TABLE accesses DETACH PARTITION {t}; DROP TABLE {t};",
            t = month.table()
        ))
        .await
        .map_err(FleetError::sql("dropping a month of accesses"))?;
        tx.commit()
            .await
            .map_err(FleetError::sql("dropping a month of accesses"))?;
        tracing::info!(month = %month.table(), rows, "a month of accesses past retention dropped");
        done.push(Expired {
            month,
            rows,
            archive,
        });
    }
    Ok(done)
}

/// Writes one month of accesses to `dir/<table>.csv` (with a header) and its SHA-256 to
/// `dir/<table>.csv.sha256`; returns the rows written and the file.
pub async fn archive(
    client: &Client,
    month: &Month,
    dir: &Path,
) -> Result<(u64, PathBuf), FleetError> {
    use futures_util::StreamExt;
    use sha2::Digest;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| FleetError::Sql {
            what: "archiving a month of accesses",
            detail: format!("{path}: {e}"),
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(format!("{}.csv", month.table()));
    let partial = dir.join(format!("{}.csv.partial", month.table()));
    let mut file = std::fs::File::create(&partial).map_err(io(&partial))?;
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT * FROM {} ORDER BY time_ms, event_id) TO STDOUT (FORMAT csv, HEADER)",
            month.table()
        ))
        .await
        .map_err(FleetError::sql("archiving a month of accesses"))?;
    let mut stream = std::pin::pin!(stream);
    let mut hash = sha2::Sha256::new();
    let mut lines = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(FleetError::sql("archiving a month of accesses"))?;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        hash.update(&chunk);
        file.write_all(&chunk).map_err(io(&partial))?;
    }
    file.sync_all().map_err(io(&partial))?;
    std::fs::rename(&partial, &path).map_err(io(&path))?;
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let sum = dir.join(format!("{}.csv.sha256", month.table()));
    std::fs::write(&sum, format!("{digest}  {}.csv\n", month.table())).map_err(io(&sum))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    // The header is a line too; a quoted field never holds a line break (ids refuse them).
    Ok((lines.saturating_sub(1), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_name_bound_and_count_back() {
        let m = Month::of(1_773_151_200_000).unwrap(); // 2026-03-10T14:00:00Z
        assert_eq!(m.table(), "accesses_2026_03");
        assert_eq!(m.start_ms(), 1_772_323_200_000);
        assert_eq!(m.next().table(), "accesses_2026_04");
        assert_eq!(m.minus(3).table(), "accesses_2025_12");
        assert_eq!(m.minus(72).table(), "accesses_2020_03");
        assert_eq!(
            Month {
                year: 2026,
                month: 12
            }
            .next()
            .table(),
            "accesses_2027_01"
        );
        assert_eq!(Month::parse("accesses_2026_03"), Some(m));
        assert_eq!(Month::parse("accesses_2026_13"), None);
    }
}
