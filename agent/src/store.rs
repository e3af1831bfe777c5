//! The findings store: a SQLite file, idempotent by (event id, detector).

use crate::event::AccessEvent;
use crate::finding::{Finding, Severity};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store {path}: cannot create its directory: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} does not exist: has the agent run with this data_dir?")]
    Missing { path: String },
    #[error("store {path} is damaged ({detail}). phiwatch never resets a store: stop the agent, keep this file for the investigation, and restore the last backup of it (or move it aside to start an empty store, losing its alerts, cases and case logs)")]
    Corrupt { path: String, detail: String },
    #[error("store {path} has schema version {found}, newer than this phiwatch knows ({known}): it was written by a newer phiwatch; upgrade this one")]
    Newer {
        path: String,
        found: i32,
        known: i32,
    },
}

/// A store error, told apart: a damaged file is not a passing failure to retry.
fn sqlite_error(path: &str, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match source.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Corrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        },
        _ => StoreError::Sqlite {
            path: path.to_owned(),
            source,
        },
    }
}

/// Why a read of the store failed: the caller's filter, or the store itself. Read models
/// (alert and case queries, timelines) return it so that a caller can answer "bad request"
/// or "internal error" by variant.
#[derive(Debug, Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The fleet's PostgreSQL, already described.
    #[error("{0}")]
    Database(String),
}

/// A filter field, unless absent or blank.
pub(crate) fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

pub struct Store {
    conn: Connection,
    path: String,
}

/// The SQLite store's schema version (`PRAGMA user_version`). Stores made before versions
/// were kept read 0 and are brought up to this one; a store written by a newer phiwatch is
/// refused rather than written by code that does not know its tables.
pub const SQLITE_SCHEMA: i32 = 1;

fn user_version(conn: &Connection) -> rusqlite::Result<i32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS findings (
    event_id    TEXT NOT NULL,
    detector    TEXT NOT NULL,
    time        TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    patient_id  TEXT NOT NULL,
    action      TEXT NOT NULL,
    category    TEXT NOT NULL,
    severity    TEXT NOT NULL,
    explanation TEXT NOT NULL,
    hipaa       TEXT NOT NULL,
    department  TEXT NOT NULL DEFAULT '',
    stored_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (event_id, detector)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accesses (
    event_id    TEXT PRIMARY KEY,
    time_ms     INTEGER NOT NULL,
    user_id     TEXT NOT NULL,
    patient_id  TEXT,
    action      TEXT NOT NULL,
    subtype     TEXT NOT NULL,
    break_glass INTEGER NOT NULL,
    workstation TEXT NOT NULL,
    succeeded   INTEGER NOT NULL,
    -- When phiwatch stored it (epoch ms): detection delay = stored_ms - time_ms.
    stored_ms   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- Case timelines start from the patients involved, then filter by user.
CREATE INDEX IF NOT EXISTS accesses_patient ON accesses (patient_id, time_ms);
CREATE INDEX IF NOT EXISTS findings_user ON findings (user_id, time);
CREATE INDEX IF NOT EXISTS findings_patient ON findings (patient_id, time);
-- Alerts group findings (rules/routing.toml); an alert is open until acknowledged.
CREATE TABLE IF NOT EXISTS alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key     TEXT NOT NULL,
    fold_key      TEXT NOT NULL,
    status        TEXT NOT NULL,
    category      TEXT NOT NULL,
    severity      TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    department    TEXT NOT NULL,
    first_ms      INTEGER NOT NULL,
    last_ms       INTEGER NOT NULL,
    findings      INTEGER NOT NULL,
    incidents     INTEGER NOT NULL,
    notifications INTEGER NOT NULL DEFAULT 0,
    last_sent_ms  INTEGER NOT NULL DEFAULT 0,
    ack_by        TEXT,
    ack_ms        INTEGER,
    ack_note      TEXT,
    -- What the officer concluded: false_positive, benign (routine work) or confirmed.
    ack_disposition TEXT,
    -- The access times of the alert's earliest and latest findings (epoch ms): what an
    -- officer replaying last month's logs charts by, where first_ms is when it was stored.
    first_access_ms INTEGER,
    last_access_ms  INTEGER,
    -- The finding that opened the alert, hashed: names it in notification idempotency keys
    -- (alert/group.rs), where a row id could be handed out again after a lost commit.
    origin          TEXT
);
CREATE INDEX IF NOT EXISTS alerts_fold ON alerts (fold_key, status);
CREATE TABLE IF NOT EXISTS alert_findings (
    alert_id   INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    detector   TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    PRIMARY KEY (alert_id, event_id, detector)
) WITHOUT ROWID;
-- Whether a finding brings a new patient to its alert: one index probe, not a recount.
CREATE INDEX IF NOT EXISTS alert_findings_patient ON alert_findings (alert_id, patient_id);
-- The durable outbox: written in the transaction that changes the alert, sent by the
-- dispatcher, keyed for idempotency so a resend after a crash carries the same key.
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    alert_id        INTEGER NOT NULL,
    receiver        TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    due_ms          INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    sent_ms         INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, due_ms);
-- Whether an alert already has a notification waiting for a receiver (one per finding).
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (alert_id, receiver, state);
-- Breach-response cases (phiwatch case ...). Every change is also in case_log.
CREATE TABLE IF NOT EXISTS cases (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    title        TEXT NOT NULL,
    state        TEXT NOT NULL,
    assignee     TEXT,
    resolution   TEXT,
    discovered   TEXT,
    determined   TEXT,
    determination TEXT,
    residents    TEXT NOT NULL DEFAULT '{}',
    delays       TEXT NOT NULL DEFAULT '[]',
    licensed_in  TEXT NOT NULL DEFAULT '[]',
    assessment   TEXT,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS case_alerts (
    case_id  INTEGER NOT NULL,
    alert_id INTEGER NOT NULL,
    PRIMARY KEY (case_id, alert_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS case_tasks (
    case_id INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    text    TEXT NOT NULL,
    done    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (case_id, n)
) WITHOUT ROWID;
-- Append-only, hash-chained (see case/log.rs).
CREATE TABLE IF NOT EXISTS case_log (
    seq       INTEGER PRIMARY KEY,
    case_id   INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    before    TEXT NOT NULL,
    after     TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
-- Context messages received live (HL7 v2 ADT over MLLP; demographics on access-log rows,
-- feed '@access-log'), in arrival order: stored in the transaction that applies them, replayed after the feeds' files whenever the context is
-- (re)loaded, so nothing received is lost on restart or reload.
CREATE TABLE IF NOT EXISTS context_journal (
    seq         INTEGER PRIMARY KEY,
    feed        TEXT NOT NULL,
    -- SHA-256 of the message: a message read again after a crash is journaled once.
    key         TEXT NOT NULL UNIQUE,
    received_ms INTEGER NOT NULL,
    message     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers   TEXT NOT NULL,
    starts_ms  INTEGER NOT NULL,
    ends_ms    INTEGER NOT NULL,
    author     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
-- Console accounts (phiwatch user add) and their sessions. Session tokens are stored as
-- SHA-256 digests: a copy of the store does not hand out live sessions.
CREATE TABLE IF NOT EXISTS console_users (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    staff_id   TEXT,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    seen_ms    INTEGER NOT NULL,
    -- A single sign-on session may end with the provider's ID token, and ends when the
    -- provider's back-channel logout names its subject or session.
    expires_ms INTEGER,
    sso_sub    TEXT,
    sso_sid    TEXT
) WITHOUT ROWID;
-- The console's sign-in trail: every sign-in, refusal, role change and sign-out, local or
-- single sign-on (phiwatch user log).
CREATE TABLE IF NOT EXISTS console_audit (
    id      INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    event   TEXT NOT NULL,
    user    TEXT NOT NULL,
    method  TEXT NOT NULL,
    client  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
-- The console's alert queue: most severe first, then newest. The expression must stay the
-- one in console/data.rs (SEVERITY_RANK) for SQLite to read the first screen off this index
-- instead of sorting every alert.
CREATE INDEX IF NOT EXISTS alerts_rank ON alerts (
    (CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END),
    last_ms DESC, id DESC);
";

/// A journaled message's key: its content, so the same message read twice is journaled once.
pub fn journal_key(message: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(message.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Journals `(feed, message)` pairs not journaled before; returns the indexes of those that
/// are new (to apply to the context once the transaction commits).
pub fn journal_new(
    tx: &rusqlite::Transaction<'_>,
    messages: &[(String, String)],
    now_ms: i64,
) -> rusqlite::Result<Vec<usize>> {
    let mut fresh = Vec::new();
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO context_journal (feed, key, received_ms, message)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (i, (feed, message)) in messages.iter().enumerate() {
        if st.execute(params![feed, journal_key(message), now_ms, message])? == 1 {
            fresh.push(i);
        }
    }
    Ok(fresh)
}

/// The time of the newest stored access, if any.
pub fn newest_access(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT max(time_ms) FROM accesses", [], |r| r.get(0))
}

/// How many accesses the store holds.
pub fn access_count(conn: &Connection) -> Result<i64, QueryError> {
    Ok(conn.query_row("SELECT count(*) FROM accesses", [], |r| r.get(0))?)
}

/// Streams the stored accesses with `since_ms <= time_ms < until_ms` in time order, `chunk`
/// at a time, to `each` (memory stays at one chunk however long the window). The access log
/// keeps what detection needs of an access, not the department, encounter or inline
/// demographics an extract carried: accesses read back have those empty. Answers how many.
pub fn stored_accesses(
    conn: &Connection,
    since_ms: i64,
    until_ms: i64,
    chunk: usize,
    mut each: impl FnMut(&mut Vec<AccessEvent>),
) -> rusqlite::Result<u64> {
    let mut st = conn.prepare(
        "SELECT event_id, time_ms, user_id, patient_id, action, subtype, break_glass,
                workstation, succeeded
         FROM accesses WHERE time_ms >= ?1 AND time_ms < ?2 ORDER BY time_ms, event_id",
    )?;
    let mut rows = st.query(params![since_ms, until_ms])?;
    let mut chunks = Chunks::new(chunk, &mut each);
    while let Some(r) = rows.next()? {
        let (action, action_code) = stored_action(&r.get::<_, String>(4)?);
        chunks.push(AccessEvent {
            id: r.get(0)?,
            time_ms: r.get(1)?,
            user: r.get(2)?,
            patient: r.get(3)?,
            action,
            action_code,
            subtype: r.get(5)?,
            break_glass: r.get(6)?,
            workstation: r.get(7)?,
            succeeded: r.get(8)?,
            ..AccessEvent::default()
        });
    }
    Ok(chunks.finish())
}

/// Hands accesses read back from an access log to `each`, `size` at a time.
pub struct Chunks<'a> {
    batch: Vec<AccessEvent>,
    size: usize,
    each: &'a mut dyn FnMut(&mut Vec<AccessEvent>),
    n: u64,
}

impl<'a> Chunks<'a> {
    pub fn new(size: usize, each: &'a mut dyn FnMut(&mut Vec<AccessEvent>)) -> Self {
        Chunks {
            batch: Vec::with_capacity(size),
            size,
            each,
            n: 0,
        }
    }

    pub fn push(&mut self, a: AccessEvent) {
        self.batch.push(a);
        self.n += 1;
        if self.batch.len() == self.size {
            (self.each)(&mut self.batch);
            self.batch.clear();
        }
    }

    /// Hands over the last, partial chunk; answers how many accesses were read.
    pub fn finish(mut self) -> u64 {
        if !self.batch.is_empty() {
            (self.each)(&mut self.batch);
        }
        self.n
    }
}

/// An access log's action read back, with the action code detection reads: the log keeps
/// the action's name only.
pub fn stored_action(name: &str) -> (crate::event::Action, char) {
    use crate::event::Action;
    let action = Action::ALL
        .into_iter()
        .find(|a| a.as_str() == name)
        .unwrap_or_default();
    let code = match action {
        Action::Modify => 'U',
        Action::Query => 'E',
        _ => 'R',
    };
    (action, code)
}

/// The context journal's `(feed, message)` pairs in arrival order (read through a connection
/// of its own).
pub fn journal(db: &Path) -> rusqlite::Result<Vec<(String, String)>> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let present: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name = 'context_journal'",
        [],
        |r| r.get(0),
    )?;
    if present == 0 {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare("SELECT feed, message FROM context_journal ORDER BY seq")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// `$PHIWATCH_DATA_DIR`, else `$XDG_DATA_HOME/phiwatch`, else `~/.local/share/phiwatch`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PHIWATCH_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("phiwatch");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/phiwatch"))
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: p.clone(),
                source,
            })?;
        }
        let sql = |source| sqlite_error(&p, source);
        let conn = Connection::open(path).map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(sql)?;
        let found = user_version(&conn).map_err(sql)?;
        if found > SQLITE_SCHEMA {
            return Err(StoreError::Newer {
                path: p,
                found,
                known: SQLITE_SCHEMA,
            });
        }
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute_batch(crate::plugin::state::SCHEMA)
            .map_err(sql)?;
        // Stores created by 0.1 pre-releases lack these columns.
        for (table, column, decl) in [
            ("accesses", "stored_ms", "INTEGER NOT NULL DEFAULT 0"),
            ("findings", "department", "TEXT NOT NULL DEFAULT ''"),
            ("outbox", "case_id", "INTEGER"),
            ("outbox", "subject", "TEXT"),
            ("outbox", "body", "TEXT"),
            ("alerts", "first_access_ms", "INTEGER"),
            ("alerts", "last_access_ms", "INTEGER"),
            ("alerts", "ack_disposition", "TEXT"),
            ("alerts", "origin", "TEXT"),
            ("console_sessions", "expires_ms", "INTEGER"),
            ("console_sessions", "sso_sub", "TEXT"),
            ("console_sessions", "sso_sid", "TEXT"),
        ] {
            let present: i64 = conn
                .query_row(
                    &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                    [column],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            if present == 0 {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                    .map_err(sql)?;
            }
        }
        conn.execute_batch(&format!("PRAGMA user_version = {SQLITE_SCHEMA}"))
            .map_err(sql)?;
        Ok(Store { conn, path: p })
    }

    /// The schema version of an existing store file, read without changing it.
    pub fn read_version(path: &Path) -> Result<i32, StoreError> {
        let p = path.display().to_string();
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sqlite_error(&p, e))?;
        user_version(&conn).map_err(|e| sqlite_error(&p, e))
    }

    /// This store's schema version.
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        user_version(&self.conn).map_err(|e| self.err(e))
    }

    /// Opens the agent's store for a command that works on what the agent stored (alerts,
    /// cases): it must exist already; its tables are brought up to date.
    pub fn open_existing(path: &Path) -> Result<Connection, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
            });
        }
        Ok(Store::open(path)?.conn)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        sqlite_error(&self.path, source)
    }

    /// Stores accesses and their findings in one transaction, so a batch is either fully
    /// stored or not at all. Returns how many accesses and findings were new.
    pub fn insert_batch(
        &mut self,
        accesses: &[AccessEvent],
        findings: &[Finding],
    ) -> Result<(usize, usize), StoreError> {
        self.insert_batch_then(accesses, findings, |_, _| Ok(()))
    }

    /// As [`Store::insert_batch`], then `after` runs in the same transaction with the
    /// findings that were new (alerting: its alert changes and outbox rows commit together
    /// with the findings that caused them).
    pub fn insert_batch_then(
        &mut self,
        accesses: &[AccessEvent],
        findings: &[Finding],
        after: impl FnOnce(&rusqlite::Transaction<'_>, &[&Finding]) -> rusqlite::Result<()>,
    ) -> Result<(usize, usize), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut new_accesses = 0;
        let mut fresh: Vec<&Finding> = Vec::new();
        let now_ms = chrono::Utc::now().timestamp_millis();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO accesses (event_id, time_ms, user_id, patient_id, action,
                     subtype, break_glass, workstation, succeeded, stored_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(sql)?;
            for a in accesses {
                new_accesses += stmt
                    .execute(params![
                        a.id,
                        a.time_ms,
                        a.user,
                        a.patient,
                        a.action.as_str(),
                        a.subtype,
                        a.break_glass,
                        a.workstation,
                        a.succeeded,
                        now_ms
                    ])
                    .map_err(sql)?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO findings (event_id, detector, time, user_id, patient_id,
                     action, category, severity, explanation, hipaa, department)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(sql)?;
            for f in findings {
                let inserted = stmt
                    .execute(params![
                        f.event_id,
                        f.detector,
                        f.time,
                        f.user,
                        f.patient,
                        f.action,
                        f.category,
                        f.severity.as_str(),
                        f.explanation,
                        f.hipaa,
                        f.department
                    ])
                    .map_err(sql)?;
                if inserted > 0 {
                    fresh.push(f);
                }
            }
        }
        after(&tx, &fresh).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok((new_accesses, fresh.len()))
    }

    /// The connection, for readers that live beside the store (plugin state).
    /// `PRAGMA quick_check` on a read-only connection: the daemon runs it at start-up before
    /// opening the store for writing, so a damaged store is reported, never built upon or
    /// changed. A store that does not exist yet passes.
    pub fn check(path: &Path) -> Result<(), StoreError> {
        if !path.exists() {
            return Ok(());
        }
        let p = path.display().to_string();
        let e = |source| sqlite_error(&p, source);
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(e)?;
        let mut st = conn.prepare("PRAGMA quick_check(5)").map_err(e)?;
        let problems: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(e)?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            path: p,
            detail: format!("quick_check: {}", problems.join("; ")),
        })
    }

    pub fn conn(&self) -> &rusqlite::Connection {
        &self.conn
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM findings", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// All findings, oldest first (for tests and small exports).
    pub fn all(&self) -> Result<Vec<Finding>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT event_id, time, user_id, patient_id, action, category, severity, detector,
                        explanation, hipaa, department FROM findings ORDER BY time, event_id, detector",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let sev: String = r.get(6)?;
                Ok(Finding {
                    event_id: r.get(0)?,
                    time: r.get(1)?,
                    user: r.get(2)?,
                    patient: r.get(3)?,
                    action: r.get(4)?,
                    category: r.get(5)?,
                    severity: sev.parse().unwrap_or(Severity::Low),
                    detector: r.get(7)?,
                    explanation: r.get(8)?,
                    hipaa: r.get(9)?,
                    department: r.get(10)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(event: &str, detector: &str) -> Finding {
        Finding {
            event_id: event.into(),
            time: "2024-01-01T00:00:00.000Z".into(),
            user: "u".into(),
            department: "er".into(),
            patient: "p".into(),
            action: "view".into(),
            category: "family".into(),
            severity: Severity::High,
            detector: detector.into(),
            explanation: "x".into(),
            hipaa: "y".into(),
        }
    }

    #[test]
    fn idempotent_by_event_and_detector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/phiwatch.db");
        let mut s = Store::open(&path).unwrap();
        assert_eq!(
            s.insert_batch(&[], &[finding("e1", "a"), finding("e1", "b")])
                .unwrap()
                .1,
            2
        );
        assert_eq!(
            s.insert_batch(&[], &[finding("e1", "a"), finding("e2", "a")])
                .unwrap()
                .1,
            1
        );
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.count().unwrap(), 3);
        assert_eq!(s.all().unwrap()[0].severity, Severity::High);
    }
}
