//! The ingest queue: collectors append numbered batches of raw records, the detector applies
//! them in order, each exactly once.
//!
//! A collector appends a batch and its source's checkpoint in one transaction, so after a
//! crash it resumes from the checkpoint of the last batch it appended: nothing lost, nothing
//! appended twice. Batches are numbered per source from 1 without gaps (the checkpoint row
//! is locked while the next number is taken), and the detector records the last batch it
//! applied per source in the fenced transaction that stores the batch's results, so a
//! detector killed mid-batch, or one that lost its lease, leaves the batch to its successor.

use super::{lease, FleetError, Lease};
use tokio_postgres::{Client, Transaction};

/// One batch of records from one source: each a decoded item, serialised by the collector
/// that read it (`run::collect`), opaque to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub source: String,
    pub seq: i64,
    pub records: Vec<Vec<u8>>,
}

/// Appends `records` as the source's next batch, with the collector's new position in the
/// source. Returns the batch's number.
pub async fn append(
    client: &mut Client,
    source: &str,
    collector: &str,
    records: &[Vec<u8>],
    checkpoint: &str,
) -> Result<i64, FleetError> {
    let e = FleetError::sql("appending a batch");
    let tx = client.transaction().await.map_err(&e)?;
    tx.execute(
        "INSERT INTO source_checkpoints (source, collector, last_seq, checkpoint, updated_at)
         VALUES ($1, $2, 0, '', clock_timestamp()) ON CONFLICT (source) DO NOTHING",
        &[&source, &collector],
    )
    .await
    .map_err(&e)?;
    let last: i64 = tx
        .query_one(
            "SELECT last_seq FROM source_checkpoints WHERE source = $1 FOR UPDATE",
            &[&source],
        )
        .await
        .map_err(&e)?
        .get(0);
    if last == 0 {
        // The source's first batch: detection starts it from nothing applied.
        tx.execute(
            "INSERT INTO detector_progress (source, done_seq, epoch) VALUES ($1, 0, 0)
             ON CONFLICT (source) DO NOTHING",
            &[&source],
        )
        .await
        .map_err(&e)?;
    }
    let seq = last + 1;
    tx.execute(
        "INSERT INTO ingest_batches (source, seq, records) VALUES ($1, $2, $3)",
        &[&source, &seq, &records],
    )
    .await
    .map_err(&e)?;
    tx.execute(
        "UPDATE source_checkpoints SET collector = $2, last_seq = $3, checkpoint = $4,
                updated_at = clock_timestamp() WHERE source = $1",
        &[&source, &collector, &seq, &checkpoint],
    )
    .await
    .map_err(&e)?;
    tx.commit().await.map_err(&e)?;
    Ok(seq)
}

/// Moves the source's checkpoint past records that made no batch (blank lines, headers,
/// rejects), so a restart does not read them again.
pub async fn advance(
    client: &Client,
    source: &str,
    collector: &str,
    checkpoint: &str,
) -> Result<(), FleetError> {
    client
        .execute(
            "INSERT INTO source_checkpoints (source, collector, last_seq, checkpoint, updated_at)
             VALUES ($1, $2, 0, $3, clock_timestamp())
             ON CONFLICT (source) DO UPDATE SET collector = excluded.collector,
                 checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
            &[&source, &collector, &checkpoint],
        )
        .await
        .map_err(FleetError::sql("saving a source checkpoint"))?;
    Ok(())
}

/// Where a collector resumes reading the source: the checkpoint of its last appended batch.
pub async fn checkpoint(client: &Client, source: &str) -> Result<Option<String>, FleetError> {
    let row = client
        .query_opt(
            "SELECT checkpoint FROM source_checkpoints WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(FleetError::sql("reading a source checkpoint"))?;
    Ok(row.map(|r| r.get(0)))
}

/// The next batches to apply, oldest first: for each source, those after the last one
/// applied, at most `limit` in all.
pub async fn pending(client: &Client, limit: i64) -> Result<Vec<Batch>, FleetError> {
    let rows = client
        .query(
            "SELECT b.source, b.seq, b.records FROM ingest_batches b
             JOIN detector_progress p ON p.source = b.source
             WHERE b.seq > p.done_seq
             ORDER BY b.created_at, b.source, b.seq LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(FleetError::sql("reading pending batches"))?;
    Ok(rows
        .into_iter()
        .map(|r| Batch {
            source: r.get(0),
            seq: r.get(1),
            records: r.get(2),
        })
        .collect())
}

/// Batches appended and not yet applied.
pub async fn backlog(client: &Client) -> Result<i64, FleetError> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(c.last_seq - p.done_seq), 0)::bigint
             FROM source_checkpoints c JOIN detector_progress p USING (source)",
            &[],
        )
        .await
        .map_err(FleetError::sql("measuring the backlog"))?;
    Ok(row.get(0))
}

/// Begins the detector's transaction for `batch`: fenced by `lease`. The caller writes the
/// batch's results in it, then calls [`complete`].
pub async fn begin<'c>(
    client: &'c mut Client,
    lease: &Lease,
) -> Result<Transaction<'c>, FleetError> {
    let tx = client
        .transaction()
        .await
        .map_err(FleetError::sql("beginning a detector transaction"))?;
    lease::fence(&tx, lease).await?;
    Ok(tx)
}

/// Marks `batch` applied and deletes it, then commits: the batch's results and its being
/// applied are one transaction. Refuses a batch out of order (one applied already, or a
/// gap), which would otherwise apply twice or skip records.
pub async fn complete(tx: Transaction<'_>, lease: &Lease, batch: &Batch) -> Result<(), FleetError> {
    let e = FleetError::sql("completing a batch");
    let n = tx
        .execute(
            "UPDATE detector_progress SET done_seq = $2::bigint, epoch = $3
             WHERE source = $1 AND done_seq = $2::bigint - 1",
            &[&batch.source, &batch.seq, &lease.epoch],
        )
        .await
        .map_err(&e)?;
    if n != 1 {
        let done: i64 = tx
            .query_opt(
                "SELECT done_seq FROM detector_progress WHERE source = $1",
                &[&batch.source],
            )
            .await
            .map_err(&e)?
            .map_or(0, |r| r.get(0));
        return Err(FleetError::OutOfOrder {
            name: batch.source.clone(),
            seq: batch.seq,
            done,
        });
    }
    tx.execute(
        "DELETE FROM ingest_batches WHERE source = $1 AND seq = $2",
        &[&batch.source, &batch.seq],
    )
    .await
    .map_err(&e)?;
    // A connection lost during COMMIT leaves the outcome unknown: the caller reconnects and
    // reads the progress again, which says whether the batch was applied.
    tx.commit().await.map_err(e)
}
