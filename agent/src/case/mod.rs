//! Breach-response cases: opened from alerts (or by hand), investigated, risk-assessed under
//! 45 CFR 164.402, determined, closed. Every change is one transaction that also appends to
//! the hash-chained case log, so the record of who did what and when cannot be edited quietly.

pub mod book;
pub mod change;
pub mod clock;
pub mod fleet;
pub mod log;
pub mod output;
pub mod query;
pub mod response;
pub mod schedule;
pub mod timeline;

use change::title_or;
use chrono::NaiveDate;
use clock::{Breach, Jurisdictions, LawEnforcementDelay};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaseError {
    #[error("store {path}: {source}")]
    Store {
        path: String,
        source: rusqlite::Error,
    },
    /// A case or alert that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request the case's state or the input does not allow.
    #[error("{0}")]
    Invalid(String),
    /// The fleet's PostgreSQL (cases in fleet mode).
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// A case read fails as a query does: bad input, not found, or the store.
impl From<CaseError> for crate::store::QueryError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::Store { source, .. } => Self::Store(source),
            CaseError::NotFound(m) => Self::NotFound(m),
            CaseError::Invalid(m) => Self::Invalid(m),
            CaseError::Fleet(e) => Self::Database(e.to_string()),
        }
    }
}

/// A rules file of the response (jurisdictions, response settings, letter template) that
/// cannot be read or says something invalid.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    InFile { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl RulesError {
    /// Reads a rules file and parses it, naming the file in every error.
    pub fn load<T>(path: &Path, parse: impl Fn(&str) -> Result<T, RulesError>) -> Result<T, Self> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: name.clone(),
            source,
        })?;
        parse(&text).map_err(|e| RulesError::InFile {
            path: name,
            message: e.to_string(),
        })
    }
}

pub(crate) fn invalid(m: impl Into<String>) -> CaseError {
    CaseError::Invalid(m.into())
}

pub(crate) fn not_found(m: impl Into<String>) -> CaseError {
    CaseError::NotFound(m.into())
}

/// The case life cycle.
pub const STATES: [&str; 6] = [
    "new",
    "investigating",
    "risk_assessment",
    "determined",
    "notifying",
    "closed",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// 164.402(1)(i): unintentional, good-faith access by a workforce member within scope.
    GoodFaithWorkforce,
    /// 164.402(1)(ii): inadvertent disclosure between persons authorized at the same entity.
    InadvertentAuthorized,
    /// 164.402(1)(iii): the recipient could not reasonably have retained the information.
    UnableToRetain,
}

/// The four-factor risk assessment of 45 CFR 164.402(2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// (i) nature and extent of the PHI, types of identifiers, likelihood of re-identification.
    pub nature_and_extent: String,
    /// (ii) the unauthorized person who used the PHI or to whom it was disclosed.
    pub unauthorized_person: String,
    /// (iii) whether the PHI was actually acquired or viewed.
    pub acquired_or_viewed: String,
    /// (iv) the extent to which the risk has been mitigated.
    pub mitigation: String,
    pub exclusion: Option<Exclusion>,
    /// The assessment demonstrates a low probability that the PHI has been compromised.
    pub low_probability: bool,
    pub conclusion: String,
}

pub struct Cases {
    conn: Connection,
    path: String,
    /// With a plan, every change that can move a clock brings the case's reminders in line.
    plan: Option<std::sync::Arc<schedule::Plan>>,
}

use crate::time::now_ms;

impl Cases {
    pub fn open(db: &Path) -> Result<Self, CaseError> {
        let conn = crate::store::Store::open_existing(db).map_err(|e| invalid(e.to_string()))?;
        Ok(Cases {
            conn,
            path: db.display().to_string(),
            plan: None,
        })
    }

    /// Keeps the cases' reminders to `plan`: every change that can move a clock (discovery,
    /// facts, determination, closing) requeues them in its transaction.
    pub fn with_plan(mut self, plan: std::sync::Arc<schedule::Plan>) -> Self {
        self.plan = Some(plan);
        self
    }

    /// Wraps an open store connection (the console's pool); [`Cases::into_conn`] gives it back.
    pub fn from_conn(conn: Connection, path: &Path) -> Self {
        Cases {
            conn,
            path: path.display().to_string(),
            plan: None,
        }
    }

    pub fn into_conn(self) -> Connection {
        self.conn
    }

    /// A transaction, and the error mapper that names this store.
    fn begin(
        &mut self,
    ) -> Result<
        (
            rusqlite::Transaction<'_>,
            impl Fn(rusqlite::Error) -> CaseError,
        ),
        CaseError,
    > {
        let path = self.path.clone();
        let sql = move |source| CaseError::Store {
            path: path.clone(),
            source,
        };
        // Immediate: the write lock is taken (waiting out other writers) before the log's
        // head is read. A deferred transaction reads first and then cannot write once
        // another connection has committed in between.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&sql)?;
        Ok((tx, sql))
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> CaseError + '_ {
        |source| CaseError::Store {
            path: self.path.clone(),
            source,
        }
    }

    fn state(&self, id: i64) -> Result<String, CaseError> {
        self.conn
            .query_row("SELECT state FROM cases WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(self.sql())?
            .ok_or_else(|| not_found(format!("no case #{id}")))
    }

    /// Opens a case on alerts (none: by hand). The discovery date defaults to today.
    pub fn create(
        &mut self,
        actor: &str,
        title: &str,
        alerts: &[i64],
        discovered: Option<NaiveDate>,
    ) -> Result<i64, CaseError> {
        need(actor, "--by")?;
        let discovered = discovered.unwrap_or_else(|| chrono::Utc::now().date_naive());
        let plan = self.plan.clone();
        let (tx, sql) = self.begin()?;
        for a in alerts {
            let exists: i64 = tx
                .query_row("SELECT count(*) FROM alerts WHERE id = ?1", [a], |r| {
                    r.get(0)
                })
                .map_err(&sql)?;
            if exists == 0 {
                return Err(not_found(format!("no alert #{a}")));
            }
        }
        let summary: Option<String> = match alerts.first() {
            Some(a) => tx
                .query_row(
                    "SELECT category || ' by ' || user_id FROM alerts WHERE id = ?1",
                    [a],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&sql)?,
            None => None,
        };
        let title = title_or(title, summary);
        let now = now_ms();
        tx.execute(
            "INSERT INTO cases (title, state, discovered, created_ms, updated_ms)
             VALUES (?1, 'new', ?2, ?3, ?3)",
            params![title, discovered.to_string(), now],
        )
        .map_err(&sql)?;
        let id = tx.last_insert_rowid();
        for a in alerts {
            tx.execute(
                "INSERT OR IGNORE INTO case_alerts (case_id, alert_id) VALUES (?1, ?2)",
                params![id, a],
            )
            .map_err(&sql)?;
        }
        log::append(
            &tx,
            id,
            actor,
            "open",
            &json!({}),
            &json!({ "title": title, "alerts": alerts, "discovered": discovered.to_string() }),
            now,
        )
        .map_err(&sql)?;
        if let Some(p) = &plan {
            requeue_case(&tx, id, p)?;
        }
        tx.commit().map_err(&sql)?;
        Ok(id)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Sets columns, logging their values before and after, in one transaction.
    fn change(
        &mut self,
        id: i64,
        actor: &str,
        action: &str,
        set: &[(&str, Value)],
    ) -> Result<(), CaseError> {
        self.change_then(id, actor, action, set, |_| Ok(()))
    }

    /// As [`Cases::change`], then `then` in the same transaction.
    fn change_then(
        &mut self,
        id: i64,
        actor: &str,
        action: &str,
        set: &[(&str, Value)],
        then: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), CaseError> {
        need(actor, "--by")?;
        let plan = self.plan.clone();
        let (tx, sql) = self.begin()?;
        let mut before = serde_json::Map::new();
        let mut after = serde_json::Map::new();
        for (col, value) in set {
            let old: Option<Value> = tx
                .query_row(
                    &format!("SELECT {col} FROM cases WHERE id = ?1"),
                    [id],
                    |r| {
                        let v: rusqlite::types::Value = r.get(0)?;
                        Ok(match v {
                            rusqlite::types::Value::Null => Value::Null,
                            rusqlite::types::Value::Integer(i) => json!(i),
                            rusqlite::types::Value::Text(t) => json!(t),
                            rusqlite::types::Value::Real(f) => json!(f),
                            rusqlite::types::Value::Blob(_) => Value::Null,
                        })
                    },
                )
                .optional()
                .map_err(&sql)?;
            let Some(old) = old else {
                return Err(not_found(format!("no case #{id}")));
            };
            let stored = match value {
                Value::String(s) => rusqlite::types::Value::Text(s.clone()),
                Value::Null => rusqlite::types::Value::Null,
                other => rusqlite::types::Value::Text(other.to_string()),
            };
            tx.execute(
                &format!("UPDATE cases SET {col} = ?2, updated_ms = ?3 WHERE id = ?1"),
                params![id, stored, now_ms()],
            )
            .map_err(&sql)?;
            before.insert((*col).to_owned(), old);
            after.insert((*col).to_owned(), value.clone());
        }
        log::append(
            &tx,
            id,
            actor,
            action,
            &Value::Object(before),
            &Value::Object(after),
            now_ms(),
        )
        .map_err(&sql)?;
        then(&tx).map_err(&sql)?;
        if let Some(p) = &plan {
            requeue_case(&tx, id, p)?;
        }
        tx.commit().map_err(&sql)
    }

    fn not_closed(&self, id: i64) -> Result<String, CaseError> {
        let s = self.state(id)?;
        if s == "closed" {
            return Err(invalid(format!("case #{id} is closed")));
        }
        Ok(s)
    }

    /// Sets the columns `decide` returns for the case as it stands; a closed case is refused
    /// before `decide` sees it.
    pub fn apply(
        &mut self,
        id: i64,
        actor: &str,
        action: &str,
        decide: impl FnOnce(&change::Current) -> Result<change::Set, CaseError>,
    ) -> Result<(), CaseError> {
        let current = change::Current {
            state: self.not_closed(id)?,
            assessment: self.assessment(id)?,
        };
        self.change(id, actor, action, &decide(&current)?)
    }

    pub fn assessment(&self, id: i64) -> Result<Option<Assessment>, CaseError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT assessment FROM cases WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.sql())?
            .flatten();
        Ok(assessment_of(text))
    }

    /// Reminders of the case waiting in the outbox.
    pub fn pending_reminders(&self, id: i64) -> Result<usize, CaseError> {
        crate::outbox::case_pending_count(&self.conn, id).map_err(self.sql())
    }

    /// Adds a task; returns its number.
    pub fn add_task(&mut self, id: i64, actor: &str, text: &str) -> Result<i64, CaseError> {
        need(text, "the task")?;
        need(actor, "--by")?;
        self.not_closed(id)?;
        let (tx, sql) = self.begin()?;
        let n: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(n), 0) + 1 FROM case_tasks WHERE case_id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(&sql)?;
        tx.execute(
            "INSERT INTO case_tasks (case_id, n, text) VALUES (?1, ?2, ?3)",
            params![id, n, text],
        )
        .map_err(&sql)?;
        log::append(
            &tx,
            id,
            actor,
            "task",
            &json!({}),
            &json!({ "task": n, "text": text }),
            now_ms(),
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        Ok(n)
    }

    pub fn finish_task(&mut self, id: i64, actor: &str, n: i64) -> Result<(), CaseError> {
        need(actor, "--by")?;
        self.state(id)?;
        let (tx, sql) = self.begin()?;
        let changed = tx
            .execute(
                "UPDATE case_tasks SET done = 1 WHERE case_id = ?1 AND n = ?2 AND done = 0",
                params![id, n],
            )
            .map_err(&sql)?;
        if changed == 0 {
            return Err(invalid(format!("case #{id} has no open task {n}")));
        }
        log::append(
            &tx,
            id,
            actor,
            "task_done",
            &json!({ "task": n, "done": false }),
            &json!({ "task": n, "done": true }),
            now_ms(),
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)
    }

    /// Stores evidence under `dir` by its SHA-256 and records it in the case log.
    pub fn attach_bytes(
        &mut self,
        id: i64,
        actor: &str,
        name: &str,
        bytes: &[u8],
        dir: &Path,
    ) -> Result<String, CaseError> {
        need(actor, "--by")?;
        self.not_closed(id)?;
        let sha = sha256_hex(bytes);
        std::fs::create_dir_all(dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        let dest = dir.join(&sha);
        if !dest.exists() {
            crate::tail::write_atomically(&dest, bytes).map_err(|e| invalid(e.to_string()))?;
        }
        let (tx, sql) = self.begin()?;
        log::append(
            &tx,
            id,
            actor,
            "attach",
            &json!({}),
            &json!({ "file": name, "sha256": sha, "bytes": bytes.len() }),
            now_ms(),
        )
        .and_then(|_| tx.commit())
        .map_err(&sql)?;
        Ok(sha)
    }

    pub fn note(&mut self, id: i64, actor: &str, text: &str) -> Result<(), CaseError> {
        need(text, "the note")?;
        self.state(id)?;
        need(actor, "--by")?;
        let (tx, sql) = self.begin()?;
        log::append(
            &tx,
            id,
            actor,
            "note",
            &json!({}),
            &json!({ "note": text }),
            now_ms(),
        )
        .and_then(|_| tx.commit())
        .map_err(&sql)
    }

    /// The clock inputs stored on the case.
    pub fn breach(&self, id: i64) -> Result<Breach, CaseError> {
        breach_in(&self.conn, id).map_err(self.sql())?
    }

    /// The case's clocks, firm or provisional, from what is recorded so far.
    pub fn clocks(&self, id: i64, j: &Jurisdictions) -> Result<schedule::Clocks, CaseError> {
        clocks_in(&self.conn, id, j)
    }
}

/// The clocks of case `id` as stored (on a connection or inside a transaction).
fn clocks_in(conn: &Connection, id: i64, j: &Jurisdictions) -> Result<schedule::Clocks, CaseError> {
    let store = |e: rusqlite::Error| invalid(format!("store: {e}"));
    let b = breach_in(conn, id).map_err(store)??;
    let determination: Option<String> = conn
        .query_row("SELECT determination FROM cases WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .map_err(store)?;
    let (_, patients) = output::involved_in(conn, id)?;
    Ok(schedule::clocks(
        b,
        determination.as_deref(),
        patients.len(),
        j,
    ))
}

/// Brings case `id`'s reminders in line with its clocks, inside `tx`; a closed case keeps
/// none pending.
fn requeue_case(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    plan: &schedule::Plan,
) -> Result<schedule::Requeued, CaseError> {
    let store = |e: rusqlite::Error| invalid(format!("store: {e}"));
    let (title, state): (String, String) = tx
        .query_row("SELECT title, state FROM cases WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(store)?;
    let rows = if state == "closed" {
        Vec::new()
    } else {
        let clocks = clocks_in(tx, id, &plan.jurisdictions)?;
        schedule::reminder_rows(
            id,
            &title,
            &clocks,
            &plan.response.reminders,
            chrono::Utc::now().date_naive(),
        )
    };
    schedule::requeue(tx, id, &rows, now_ms()).map_err(store)
}

/// discovered, determined, residents, delays, licensed_in as stored.
type BreachRow = (Option<String>, Option<String>, String, String, String);

/// The clock inputs stored on case `id`.
fn breach_in(conn: &Connection, id: i64) -> rusqlite::Result<Result<Breach, CaseError>> {
    let row: Option<BreachRow> = conn
        .query_row(
            "SELECT discovered, determined, residents, delays, licensed_in FROM cases WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    Ok(row
        .map(breach_of)
        .ok_or_else(|| not_found(format!("no case #{id}"))))
}

/// The clock inputs from their stored columns (either store keeps them as text).
pub(crate) fn breach_of(
    (discovered, determined, residents, delays, licensed): BreachRow,
) -> Breach {
    let date = |s: Option<String>| s.and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok());
    let delays: Vec<Value> = serde_json::from_str(&delays).unwrap_or_default();
    let delays = delays
        .iter()
        .filter_map(|d| {
            let from = NaiveDate::parse_from_str(d["from"].as_str()?, "%Y-%m-%d").ok()?;
            Some(match d["kind"].as_str()? {
                "written" => LawEnforcementDelay::Written {
                    from,
                    until: NaiveDate::parse_from_str(d["until"].as_str()?, "%Y-%m-%d").ok()?,
                },
                _ => LawEnforcementDelay::Oral {
                    from,
                    days: d["days"].as_u64()? as u32,
                },
            })
        })
        .collect();
    Breach {
        discovered: date(discovered),
        determined: date(determined),
        residents: serde_json::from_str(&residents).unwrap_or_default(),
        delays,
        licensed_in: serde_json::from_str(&licensed).unwrap_or_default(),
    }
}

impl Cases {
    pub fn verify(&self) -> Result<Result<(usize, String), log::Broken>, CaseError> {
        log::verify(&self.conn).map_err(self.sql())
    }
}

/// The deadline rules and response settings a configuration names (else the built-in ones).
pub fn plan_for(
    cfg: &crate::config::Config,
) -> Result<(Jurisdictions, response::Response), RulesError> {
    let j = match &cfg.jurisdictions {
        Some(p) => Jurisdictions::load(p),
        None => Jurisdictions::parse(Jurisdictions::EMBEDDED),
    }?;
    let r = match &cfg.response {
        Some(p) => response::Response::load(p),
        None => response::Response::parse(response::EMBEDDED),
    }?;
    Ok((j, r))
}

/// The assessment as either store keeps it (JSON text, or none yet).
pub(crate) fn assessment_of(stored: Option<String>) -> Option<Assessment> {
    stored.and_then(|t| serde_json::from_str(&t).ok())
}

/// An evidence file's name in either store.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn need(s: &str, what: &str) -> Result<(), CaseError> {
    if s.trim().is_empty() {
        return Err(invalid(format!("{what} is required")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console, the CLI and the dispatcher's reminders write cases from their own
    /// connections. A deferred transaction read the log's head, then could not take the
    /// write lock once another writer had committed (SQLITE_BUSY_SNAPSHOT, which no busy
    /// timeout waits out): the officer's change failed.
    #[test]
    fn concurrent_writers_each_append_to_one_chain() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("p.db");
        crate::store::Store::open(&db).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let mut cases = Cases::open(&db).unwrap();
                    for i in 0..25 {
                        let id = cases
                            .create(&format!("officer-{w}"), &format!("case {w}-{i}"), &[], None)
                            .unwrap();
                        cases
                            .apply(id, &format!("officer-{w}"), "assign", |c| {
                                change::assign_set(&c.state, "po-ann")
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let (entries, _) = Cases::open(&db).unwrap().verify().unwrap().unwrap();
        assert_eq!(entries, 4 * 25 * 2);
    }
}
