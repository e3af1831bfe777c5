//! Where single sign-on keeps what must outlive one request: the sign-ins started and not
//! finished, and the back-channel logout tokens already taken. One process keeps them in
//! memory; console nodes keep them in the fleet's database, because the provider's redirect
//! (or its logout call) may reach another node than the one that started the sign-in.
//!
//! Both take a `state` and a `jti` once: in memory under a lock, in the database with a
//! `DELETE ... RETURNING` and an `INSERT ... ON CONFLICT DO NOTHING`, each atomic across nodes.
//! A row keeps the `state` only as its digest; the PKCE verifier and the nonce must be kept
//! as they are (the code exchange sends the one, the ID token is checked against the other),
//! for at most ten minutes, and are of no use without the browser's binding cookie and the
//! provider's code, neither of which the database sees.

use super::fleet::Pool;
use super::session::digest;
use super::sso::SsoError;
use crate::time::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A sign-in must come back from the provider within this time.
pub(super) const PENDING_FOR: Duration = Duration::from_secs(600);
/// Sign-ins started and not finished, held at once: more are refused (a flood of
/// `/oidc/login` must not grow memory or the table).
const PENDING_MAX: usize = 10_000;
/// Of those, from one client address: one address cannot fill the table for everyone.
const PENDING_PER_CLIENT: usize = 20;

/// A sign-in in progress.
pub(super) struct Pending {
    /// Digest of the browser-binding cookie set when the sign-in started.
    pub browser: String,
    /// The client address that started it.
    pub client: String,
    /// The PKCE verifier and the nonce, as their secrets.
    pub verifier: String,
    pub nonce: String,
    pub next: String,
    pub started_ms: i64,
}

impl Pending {
    fn live(&self, now: i64) -> bool {
        now - self.started_ms < PENDING_FOR.as_millis() as i64
    }
}

pub(super) enum Ledger {
    Memory {
        /// By the digest of the sign-in's `state`.
        pending: Mutex<HashMap<String, Pending>>,
        /// The `jti` of logout tokens taken lately, with when.
        logouts: Mutex<HashMap<String, i64>>,
    },
    Fleet(Arc<Pool>),
}

fn store(what: &str) -> impl Fn(tokio_postgres::Error) -> SsoError + '_ {
    move |e| {
        tracing::error!("single sign-on: {what}: {}", crate::errors::chain(&e));
        SsoError::Store
    }
}

impl Ledger {
    pub fn memory() -> Ledger {
        Ledger::Memory {
            pending: Mutex::new(HashMap::new()),
            logouts: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a sign-in until its `state` comes back, or refuses it when too many are in
    /// progress (from everyone, or from this client).
    pub async fn hold(&self, state: &str, p: Pending) -> Result<(), SsoError> {
        let now = now_ms();
        let oldest = now - PENDING_FOR.as_millis() as i64;
        match self {
            Ledger::Memory { pending, .. } => {
                let mut all = pending.lock().unwrap_or_else(|e| e.into_inner());
                all.retain(|_, p| p.live(now));
                let from_client = all.values().filter(|q| q.client == p.client).count();
                if all.len() >= PENDING_MAX || from_client >= PENDING_PER_CLIENT {
                    return Err(SsoError::Busy);
                }
                all.insert(digest(state), p);
                Ok(())
            }
            Ledger::Fleet(pool) => {
                let db = pool.get().await.map_err(|_| SsoError::Store)?;
                let e = store("keeping a sign-in");
                db.execute(
                    "DELETE FROM console_sso_pending WHERE started_ms <= $1",
                    &[&oldest],
                )
                .await
                .map_err(&e)?;
                let row = db
                    .query_one(
                        "SELECT count(*), count(*) FILTER (WHERE client = $1)
                         FROM console_sso_pending",
                        &[&p.client],
                    )
                    .await
                    .map_err(&e)?;
                let (all, from_client): (i64, i64) = (row.get(0), row.get(1));
                if all >= PENDING_MAX as i64 || from_client >= PENDING_PER_CLIENT as i64 {
                    return Err(SsoError::Busy);
                }
                db.execute(
                    "INSERT INTO console_sso_pending
                       (state_hash, browser, client, verifier, nonce, next, started_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &digest(state),
                        &p.browser,
                        &p.client,
                        &p.verifier,
                        &p.nonce,
                        &p.next,
                        &p.started_ms,
                    ],
                )
                .await
                .map_err(&e)?;
                Ok(())
            }
        }
    }

    /// Takes the sign-in of this `state`, once: a second call, or one after the sign-in
    /// expired, finds nothing.
    pub async fn take(&self, state: &str) -> Result<Option<Pending>, SsoError> {
        let now = now_ms();
        let found = match self {
            Ledger::Memory { pending, .. } => pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&digest(state)),
            Ledger::Fleet(pool) => {
                let db = pool.get().await.map_err(|_| SsoError::Store)?;
                db.query_opt(
                    "DELETE FROM console_sso_pending WHERE state_hash = $1
                     RETURNING browser, client, verifier, nonce, next, started_ms",
                    &[&digest(state)],
                )
                .await
                .map_err(store("taking a sign-in"))?
                .map(|r| Pending {
                    browser: r.get(0),
                    client: r.get(1),
                    verifier: r.get(2),
                    nonce: r.get(3),
                    next: r.get(4),
                    started_ms: r.get(5),
                })
            }
        };
        Ok(found.filter(|p| p.live(now)))
    }

    /// Whether this logout token's `jti` is seen for the first time (and now taken).
    pub async fn first_logout(&self, jti: &str) -> Result<bool, SsoError> {
        let now = now_ms();
        let oldest = now - PENDING_FOR.as_millis() as i64;
        match self {
            Ledger::Memory { logouts, .. } => {
                let mut seen = logouts.lock().unwrap_or_else(|e| e.into_inner());
                seen.retain(|_, at| *at > oldest);
                Ok(seen.len() < PENDING_MAX && seen.insert(jti.to_owned(), now).is_none())
            }
            Ledger::Fleet(pool) => {
                let db = pool.get().await.map_err(|_| SsoError::Store)?;
                let e = store("recording a logout token");
                db.execute(
                    "DELETE FROM console_sso_logouts WHERE seen_ms <= $1",
                    &[&oldest],
                )
                .await
                .map_err(&e)?;
                let held: i64 = db
                    .query_one("SELECT count(*) FROM console_sso_logouts", &[])
                    .await
                    .map_err(&e)?
                    .get(0);
                if held >= PENDING_MAX as i64 {
                    return Ok(false);
                }
                let n = db
                    .execute(
                        "INSERT INTO console_sso_logouts (jti, seen_ms) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING",
                        &[&jti, &now],
                    )
                    .await
                    .map_err(&e)?;
                Ok(n == 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(client: &str, started_ms: i64) -> Pending {
        Pending {
            browser: digest("browser"),
            client: client.into(),
            verifier: "v".into(),
            nonce: "n".into(),
            next: String::new(),
            started_ms,
        }
    }

    #[tokio::test]
    async fn a_state_is_taken_once_and_not_after_it_expired() {
        let l = Ledger::memory();
        l.hold("s1", pending("10.0.0.1", now_ms())).await.unwrap();
        assert!(l.take("s1").await.unwrap().is_some());
        assert!(l.take("s1").await.unwrap().is_none());
        let stale = now_ms() - PENDING_FOR.as_millis() as i64 - 1;
        l.hold("s2", pending("10.0.0.1", stale)).await.unwrap();
        assert!(l.take("s2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn one_client_cannot_hold_more_than_its_share() {
        let l = Ledger::memory();
        for i in 0..PENDING_PER_CLIENT {
            l.hold(&format!("s{i}"), pending("10.0.0.1", now_ms()))
                .await
                .unwrap();
        }
        let more = l.hold("one more", pending("10.0.0.1", now_ms())).await;
        assert!(matches!(more, Err(SsoError::Busy)), "{more:?}");
        l.hold("other", pending("10.0.0.2", now_ms()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_logout_token_is_taken_once() {
        let l = Ledger::memory();
        assert!(l.first_logout("jti-1").await.unwrap());
        assert!(!l.first_logout("jti-1").await.unwrap());
        assert!(l.first_logout("jti-2").await.unwrap());
    }
}
