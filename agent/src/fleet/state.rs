//! What the detector carries from batch to batch, on PostgreSQL: plugin state (a row per
//! plugin and key) and the context journal. Both are written in the detector's fenced
//! transaction, so a standby that takes over starts from what the applied batches left.

use super::FleetError;
use crate::plugin::state::Change;
use std::collections::HashMap;
use tokio_postgres::{Client, Transaction};

/// Every plugin's stored state: plugin → (key, value).
pub async fn plugins(
    client: &Client,
) -> Result<HashMap<String, Vec<(String, Vec<u8>)>>, FleetError> {
    let rows = client
        .query("SELECT plugin, key, value FROM plugin_state", &[])
        .await
        .map_err(FleetError::sql("reading plugin state"))?;
    let mut out: HashMap<String, Vec<(String, Vec<u8>)>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    Ok(out)
}

/// Writes the plugins' changes of one batch: `(plugin, (key, value or None to delete))`.
pub async fn write_plugins(
    tx: &Transaction<'_>,
    changes: &[(String, Change)],
) -> Result<(), FleetError> {
    let e = FleetError::sql("writing plugin state");
    let (mut put, mut gone): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for (plugin, (key, value)) in changes {
        match value {
            Some(v) => put.push((plugin.as_str(), key.as_str(), v.as_slice())),
            None => gone.push((plugin.as_str(), key.as_str())),
        }
    }
    if !gone.is_empty() {
        let (p, k): (Vec<&str>, Vec<&str>) = gone.into_iter().unzip();
        tx.execute(
            "DELETE FROM plugin_state s USING unnest($1::text[], $2::text[]) AS g(plugin, key)
             WHERE s.plugin = g.plugin AND s.key = g.key",
            &[&p, &k],
        )
        .await
        .map_err(&e)?;
    }
    if !put.is_empty() {
        // One batch may change a key twice only through take_changes, which yields each key
        // once: the unnest has no duplicate keys for ON CONFLICT to trip over.
        let plugins: Vec<&str> = put.iter().map(|c| c.0).collect();
        let keys: Vec<&str> = put.iter().map(|c| c.1).collect();
        let values: Vec<&[u8]> = put.iter().map(|c| c.2).collect();
        tx.execute(
            "INSERT INTO plugin_state (plugin, key, value)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
            &[&plugins, &keys, &values],
        )
        .await
        .map_err(&e)?;
    }
    Ok(())
}

/// Journals `(feed, message)` pairs not journaled before; answers the indexes of the new
/// ones (to apply to the context once the transaction commits).
pub async fn journal_new(
    tx: &Transaction<'_>,
    messages: &[(String, String)],
    now_ms: i64,
) -> Result<Vec<usize>, FleetError> {
    let e = FleetError::sql("journaling context messages");
    let mut fresh = Vec::new();
    for (i, (feed, message)) in messages.iter().enumerate() {
        let n = tx
            .execute(
                "INSERT INTO context_journal (feed, key, received_ms, message)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                &[feed, &crate::store::journal_key(message), &now_ms, message],
            )
            .await
            .map_err(&e)?;
        if n == 1 {
            fresh.push(i);
        }
    }
    Ok(fresh)
}

/// The journal in the order it was written: replayed after the context feeds' files.
pub async fn journal(client: &Client) -> Result<Vec<(String, String)>, FleetError> {
    let rows = client
        .query(
            "SELECT feed, message FROM context_journal ORDER BY seq",
            &[],
        )
        .await
        .map_err(FleetError::sql("reading the context journal"))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}
