//! The tamper-evident case log: every change to a case (who, when, what, before and after) is
//! appended with a SHA-256 hash over its content, its sequence number and the previous entry's
//! hash. Editing, deleting or reordering any entry breaks the chain at that entry, and
//! [`verify`] names the first one that does not hold.
//!
//! The chain proves the log was not edited piecemeal; someone able to rewrite the whole table
//! could recompute it, so `phiwatch case verify` prints the head hash for the operator to keep
//! elsewhere (a ticket, a signed email): a later head that does not extend it is a rewrite.

use rusqlite::{params, Connection, Transaction};
use sha2::{Digest, Sha256};

/// The hash the first entry chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub case_id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    /// Compact JSON of the changed fields before and after.
    pub before: String,
    pub after: String,
    pub prev_hash: String,
    pub hash: String,
}

fn digest(e: &Entry) -> String {
    let mut h = Sha256::new();
    // Length-prefixed fields: no two different entries serialise to the same bytes.
    for field in [
        e.seq.to_string(),
        e.case_id.to_string(),
        e.at_ms.to_string(),
        e.actor.clone(),
        e.action.clone(),
        e.before.clone(),
        e.after.clone(),
        e.prev_hash.clone(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry that follows `prev` (`seq` and hash of the head; `(0, GENESIS)` for none).
pub fn seal(
    prev: (i64, String),
    case_id: i64,
    actor: &str,
    action: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
    at_ms: i64,
) -> Entry {
    let mut e = Entry {
        seq: prev.0 + 1,
        case_id,
        at_ms,
        actor: actor.to_owned(),
        action: action.to_owned(),
        before: before.to_string(),
        after: after.to_string(),
        prev_hash: prev.1,
        hash: String::new(),
    };
    e.hash = digest(&e);
    e
}

/// Appends one entry inside the caller's transaction (the change and its record commit
/// together).
pub fn append(
    tx: &Transaction<'_>,
    case_id: i64,
    actor: &str,
    action: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
    at_ms: i64,
) -> rusqlite::Result<Entry> {
    let head: (i64, String) = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0),
                COALESCE((SELECT hash FROM case_log ORDER BY seq DESC LIMIT 1), ?1)
         FROM case_log",
        [GENESIS],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let e = seal(head, case_id, actor, action, before, after, at_ms);
    tx.execute(
        "INSERT INTO case_log (seq, case_id, at_ms, actor, action, before, after, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            e.seq,
            e.case_id,
            e.at_ms,
            e.actor,
            e.action,
            e.before,
            e.after,
            e.prev_hash,
            e.hash
        ],
    )?;
    Ok(e)
}

pub fn entries(conn: &Connection, case_id: Option<i64>) -> rusqlite::Result<Vec<Entry>> {
    let mut st = conn.prepare(
        "SELECT seq, case_id, at_ms, actor, action, before, after, prev_hash, hash FROM case_log
         WHERE ?1 IS NULL OR case_id = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([case_id], |r| {
        Ok(Entry {
            seq: r.get(0)?,
            case_id: r.get(1)?,
            at_ms: r.get(2)?,
            actor: r.get(3)?,
            action: r.get(4)?,
            before: r.get(5)?,
            after: r.get(6)?,
            prev_hash: r.get(7)?,
            hash: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// The first entry that breaks the chain, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

/// Checks the whole chain. `Ok((entries, head hash))` when it holds.
pub fn verify(conn: &Connection) -> rusqlite::Result<Result<(usize, String), Broken>> {
    Ok(check(&entries(conn, None)?))
}

/// Checks a whole chain, read in sequence order from either store.
pub fn check(all: &[Entry]) -> Result<(usize, String), Broken> {
    let mut prev = GENESIS.to_owned();
    for (i, e) in all.iter().enumerate() {
        let want_seq = i as i64 + 1;
        if e.seq != want_seq {
            return Err(Broken {
                seq: want_seq,
                reason: format!(
                    "entry #{want_seq} is missing (deleted); the next one is #{}",
                    e.seq
                ),
            });
        }
        if digest(e) != e.hash {
            return Err(Broken {
                seq: e.seq,
                reason: format!(
                    "entry #{} does not match its hash: it was edited or moved",
                    e.seq
                ),
            });
        }
        if e.prev_hash != prev {
            return Err(Broken {
                seq: e.seq,
                reason: format!(
                    "entry #{} does not follow entry #{}: an entry was edited, deleted or reordered before it",
                    e.seq,
                    e.seq - 1
                ),
            });
        }
        prev = e.hash.clone();
    }
    Ok((all.len(), prev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn logged(n: i64) -> (tempfile::TempDir, Connection) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("p.db");
        drop(crate::store::Store::open(&path).unwrap());
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 1..=n {
            append(
                &tx,
                1,
                "pat.privacy",
                "note",
                &json!({}),
                &json!({ "note": format!("step {i}") }),
                i * 1000,
            )
            .unwrap();
        }
        tx.commit().unwrap();
        (d, conn)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_d, conn) = logged(5);
        let (n, head) = verify(&conn).unwrap().unwrap();
        assert_eq!(n, 5);
        assert_eq!(head, entries(&conn, None).unwrap()[4].hash);
    }

    #[test]
    fn editing_one_byte_of_any_field_is_named() {
        for column in [
            "actor",
            "action",
            "before",
            "after",
            "at_ms",
            "case_id",
            "prev_hash",
            "hash",
        ] {
            let (_d, conn) = logged(5);
            let edit = match column {
                "at_ms" | "case_id" => {
                    format!("UPDATE case_log SET {column} = {column} + 1 WHERE seq = 3")
                }
                // Flip one character (the last) of a text field.
                _ => format!(
                    "UPDATE case_log SET {column} = substr({column}, 1, length({column}) - 1) ||
                     CASE WHEN substr({column}, -1) = 'x' THEN 'y' ELSE 'x' END WHERE seq = 3"
                ),
            };
            conn.execute_batch(&edit).unwrap();
            let broken = verify(&conn).unwrap().unwrap_err();
            assert_eq!(broken.seq, 3, "{column}: {broken:?}");
        }
    }

    #[test]
    fn deleting_one_is_named() {
        let (_d, conn) = logged(5);
        conn.execute("DELETE FROM case_log WHERE seq = 2", [])
            .unwrap();
        let broken = verify(&conn).unwrap().unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("missing"), "{broken:?}");
        // Deleting the newest leaves a valid, shorter chain: the head printed earlier is the
        // defence (see the module comment), so verify reports the new head.
        let (_d, conn) = logged(5);
        let (_, head5) = verify(&conn).unwrap().unwrap();
        conn.execute("DELETE FROM case_log WHERE seq = 5", [])
            .unwrap();
        let (n, head4) = verify(&conn).unwrap().unwrap();
        assert_eq!(n, 4);
        assert_ne!(head4, head5);
    }

    #[test]
    fn swapping_two_is_named() {
        let (_d, conn) = logged(5);
        conn.execute_batch(
            "UPDATE case_log SET seq = -1 WHERE seq = 2;
             UPDATE case_log SET seq = 2 WHERE seq = 4;
             UPDATE case_log SET seq = 4 WHERE seq = -1;",
        )
        .unwrap();
        let broken = verify(&conn).unwrap().unwrap_err();
        assert_eq!(broken.seq, 2, "{broken:?}");
        // Renumbering a deletion away (and rehashing that entry) still breaks the next link.
        let (_d, conn) = logged(5);
        conn.execute("DELETE FROM case_log WHERE seq = 3", [])
            .unwrap();
        conn.execute_batch(
            "UPDATE case_log SET seq = 3 WHERE seq = 4; UPDATE case_log SET seq = 4 WHERE seq = 5;",
        )
        .unwrap();
        assert_eq!(verify(&conn).unwrap().unwrap_err().seq, 3);
    }
}
