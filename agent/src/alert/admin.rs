//! What a privacy officer or operator does to alerts and notifications from the command line:
//! list and acknowledge alerts, silence them, see and retry dead letters. Each action is one
//! transaction on the agent's store, safe while the agent runs.

use crate::finding::Severity;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("store {path}: {source}")]
    Store {
        path: String,
        source: rusqlite::Error,
    },
    /// An alert that does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The fleet's PostgreSQL (the same commands in fleet mode).
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// What an officer concluded when acknowledging an alert.
pub const DISPOSITIONS: &[&str] = &["false_positive", "benign", "confirmed"];

/// Checks an acknowledgement's author and disposition (either store's `ack` records them):
/// the disposition as stored, if one was given.
pub fn ack_fields(by: &str, disposition: Option<&str>) -> Result<Option<&'static str>, AdminError> {
    if by.trim().is_empty() {
        return Err(AdminError::Invalid(
            "--by names the person acknowledging".into(),
        ));
    }
    match disposition.map(str::trim).filter(|d| !d.is_empty()) {
        None => Ok(None),
        Some(d) => Ok(Some(parse_disposition(d)?)),
    }
}

/// Checks a silence's matchers (`label=value`, label one of user, category, severity,
/// department), author and reason; the matchers as stored (a JSON object). Either store's
/// silences are made from these.
pub fn silence_fields(
    matchers: &[String],
    author: &str,
    reason: &str,
) -> Result<String, AdminError> {
    let mut m = BTreeMap::new();
    for s in matchers {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| AdminError::Invalid(format!("matcher {s:?}: expected label=value")))?;
        if !["user", "category", "severity", "department"].contains(&k) {
            return Err(AdminError::Invalid(format!(
                "matcher {s:?}: label must be user, category, severity or department"
            )));
        }
        if k == "severity" {
            v.parse::<Severity>()
                .map_err(|e| AdminError::Invalid(e.to_string()))?;
        }
        m.insert(k.to_owned(), v.to_owned());
    }
    if m.is_empty() {
        return Err(AdminError::Invalid(
            "a silence needs at least one --match".into(),
        ));
    }
    if author.trim().is_empty() || reason.trim().is_empty() {
        return Err(AdminError::Invalid(
            "a silence needs --author and --reason".into(),
        ));
    }
    Ok(serde_json::to_string(&m).unwrap_or_default())
}

/// What `notify retry` says when nothing was queued again.
pub fn nothing_to_retry(id: Option<i64>) -> AdminError {
    AdminError::Invalid(match id {
        Some(i) => format!("no dead letter #{i}"),
        None => "no dead letters".into(),
    })
}

/// `false-positive` or `false_positive` (any case) → `false_positive`.
pub fn parse_disposition(s: &str) -> Result<&'static str, AdminError> {
    let norm = s.trim().to_ascii_lowercase().replace('-', "_");
    DISPOSITIONS
        .iter()
        .find(|d| **d == norm)
        .copied()
        .ok_or_else(|| {
            AdminError::Invalid(format!(
                "disposition {s:?}: expected false-positive, benign (routine work) or confirmed"
            ))
        })
}

pub struct Admin {
    conn: Connection,
    path: String,
}

use crate::time::now_ms;

impl Admin {
    pub fn open(db: &Path) -> Result<Self, AdminError> {
        let conn = crate::store::Store::open_existing(db)
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        Ok(Admin {
            conn,
            path: db.display().to_string(),
        })
    }

    /// Wraps an open store connection (the console's pool); [`Admin::into_conn`] gives it back.
    pub fn from_conn(conn: Connection, path: &Path) -> Self {
        Admin {
            conn,
            path: path.display().to_string(),
        }
    }

    pub fn into_conn(self) -> Connection {
        self.conn
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> AdminError + '_ {
        |source| AdminError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// Every open alert (or every alert), oldest first.
    pub fn alerts(&self, all: bool) -> Result<Vec<super::query::AlertRow>, AdminError> {
        super::query::list(&self.conn, all).map_err(|e| match e {
            crate::store::QueryError::Store(source) => AdminError::Store {
                path: self.path.clone(),
                source,
            },
            other => AdminError::Invalid(other.to_string()),
        })
    }

    /// Records who acknowledged the alert, when and what they concluded (`disposition`: one
    /// of [`DISPOSITIONS`]; the noise report counts them); its pending notifications are dropped.
    pub fn ack(
        &mut self,
        id: i64,
        by: &str,
        note: &str,
        disposition: Option<&str>,
    ) -> Result<(), AdminError> {
        let disposition = ack_fields(by, disposition)?;
        let tx = self
            .conn
            .transaction()
            .map_err(|source| AdminError::Store {
                path: self.path.clone(),
                source,
            })?;
        let n = tx
            .execute(
                "UPDATE alerts SET status = 'acknowledged', ack_by = ?2, ack_ms = ?3, ack_note = ?4,
                   ack_disposition = ?5
                 WHERE id = ?1",
                params![id, by, now_ms(), note, disposition],
            )
            .map_err(|source| AdminError::Store {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(AdminError::NotFound(format!("no alert #{id}")));
        }
        crate::outbox::suppress_alert(&tx, id, "alert acknowledged")
            .and_then(|_| tx.commit())
            .map_err(|source| AdminError::Store {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    /// `matchers`: `label=value` for user, category, severity, department.
    pub fn silence(
        &self,
        matchers: &[String],
        duration: std::time::Duration,
        author: &str,
        reason: &str,
    ) -> Result<super::query::Silence, AdminError> {
        let matchers = silence_fields(matchers, author, reason)?;
        let now = now_ms();
        let ends = now + duration.as_millis() as i64;
        self.conn
            .execute(
                "INSERT INTO silences (matchers, starts_ms, ends_ms, author, reason, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?2)",
                params![matchers, now, ends, author, reason],
            )
            .map_err(self.err())?;
        Ok(super::query::Silence {
            id: self.conn.last_insert_rowid(),
            matchers,
            starts_ms: now,
            ends_ms: ends,
            author: author.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// Silences not ended yet, by id.
    pub fn silences(&self) -> Result<Vec<super::query::Silence>, AdminError> {
        super::query::silences(&self.conn, now_ms()).map_err(self.err())
    }

    pub fn expire_silence(&self, id: i64) -> Result<(), AdminError> {
        let n = self
            .conn
            .execute(
                "UPDATE silences SET ends_ms = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )
            .map_err(self.err())?;
        if n == 0 {
            return Err(AdminError::NotFound(format!("no silence #{id}")));
        }
        Ok(())
    }

    pub fn dead_letters(&self) -> Result<Vec<crate::outbox::DeadLetter>, AdminError> {
        crate::outbox::dead_letters(&self.conn).map_err(self.err())
    }

    /// Puts dead letters back in the queue (one, or all with `id = None`) under the same
    /// keys; returns how many.
    pub fn retry(&self, id: Option<i64>) -> Result<usize, AdminError> {
        let now = now_ms();
        let n = crate::outbox::requeue_dead(&self.conn, id, now).map_err(self.err())?;
        if n == 0 {
            return Err(nothing_to_retry(id));
        }
        Ok(n)
    }

    pub fn alert_status(&self, id: i64) -> Result<Option<String>, AdminError> {
        self.conn
            .query_row("SELECT status FROM alerts WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())
    }
}
