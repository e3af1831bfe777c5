//! A plugin's key/value state: held in memory while the agent runs, written to the store in
//! the same transaction as the batch that changed it, loaded again at start.

use ahash::{AHashMap, AHashSet};

/// Longest key a plugin may use.
const MAX_KEY: usize = 512;

#[derive(Debug, Default)]
pub struct PluginState {
    /// Hashed, not ordered: plugins touch their state on every access, and ordered string
    /// keys cost a comparison per tree level.
    values: AHashMap<String, Vec<u8>>,
    /// Keys changed (or deleted) since the last `take_changes`.
    dirty: AHashSet<String>,
    bytes: usize,
    quota: usize,
}

/// One change to write: `None` deletes the key.
pub type Change = (String, Option<Vec<u8>>);

/// A write the plugin's state refuses; the plugin is told why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state key of {0} bytes is longer than {MAX_KEY}")]
    KeyTooLong(usize),
    #[error("state quota of {quota} bytes exceeded (would hold {would_hold})")]
    Quota { quota: usize, would_hold: usize },
}

impl PluginState {
    pub fn new(quota: usize, stored: Vec<(String, Vec<u8>)>) -> Self {
        let mut s = PluginState {
            quota,
            ..PluginState::default()
        };
        for (k, v) in stored {
            s.bytes += k.len() + v.len();
            s.values.insert(k, v);
        }
        s
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.values.get(key).map(Vec::as_slice)
    }

    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), StateError> {
        if key.len() > MAX_KEY {
            return Err(StateError::KeyTooLong(key.len()));
        }
        let old = self.values.get(&key).map_or(0, |v| key.len() + v.len());
        let new = self.bytes - old + key.len() + value.len();
        if new > self.quota {
            return Err(StateError::Quota {
                quota: self.quota,
                would_hold: new,
            });
        }
        self.bytes = new;
        self.dirty.insert(key.clone());
        self.values.insert(key, value);
        Ok(())
    }

    pub fn delete(&mut self, key: &str) {
        if let Some(v) = self.values.remove(key) {
            self.bytes -= key.len() + v.len();
            self.dirty.insert(key.to_owned());
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The changes since the last call, in key order (the store writes them alike each run).
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut keys: Vec<String> = std::mem::take(&mut self.dirty).into_iter().collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| {
                let v = self.values.get(&k).cloned();
                (k, v)
            })
            .collect()
    }
}

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS plugin_state (
    plugin TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (plugin, key)
) WITHOUT ROWID;
";

pub fn load(conn: &rusqlite::Connection, plugin: &str) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM plugin_state WHERE plugin = ?1")?;
    let rows = stmt.query_map([plugin], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Writes changes of several plugins inside the caller's transaction.
pub fn write(tx: &rusqlite::Transaction<'_>, changes: &[(String, Change)]) -> rusqlite::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut put = tx.prepare_cached(
        "INSERT INTO plugin_state (plugin, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
    )?;
    let mut del = tx.prepare_cached("DELETE FROM plugin_state WHERE plugin = ?1 AND key = ?2")?;
    for (plugin, (key, value)) in changes {
        match value {
            Some(v) => put.execute(rusqlite::params![plugin, key, v])?,
            None => del.execute(rusqlite::params![plugin, key])?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values_and_frees_on_overwrite() {
        let mut s = PluginState::new(100, vec![]);
        s.set("a".into(), vec![0; 40]).unwrap();
        s.set("a".into(), vec![0; 90]).unwrap();
        assert!(s.set("b".into(), vec![0; 20]).is_err());
        s.delete("a");
        assert_eq!(s.bytes(), 0);
        s.set("b".into(), vec![0; 20]).unwrap();
        let changes = s.take_changes();
        assert_eq!(
            changes,
            vec![("a".into(), None), ("b".into(), Some(vec![0; 20]))]
        );
        assert!(s.take_changes().is_empty());
    }
}
