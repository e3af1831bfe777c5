//! Sessions (a random token in a cookie, its digest in the store, so sessions survive a
//! restart and a copy of the store opens none), the CSRF token bound to each session, and
//! the login rate limiter.

use super::accounts::{self, Account};
use rand::RngCore as _;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Session {
    pub account: Account,
    pub csrf: String,
}

/// A fresh random token: 32 bytes, URL-safe base64.
pub fn token() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Starts a session; returns its token (for the cookie) and its CSRF token.
pub fn start(conn: &Connection, user: &str) -> rusqlite::Result<(String, String)> {
    let (t, csrf) = (token(), token());
    let now = crate::metrics::now_ms();
    conn.execute(
        "INSERT INTO console_sessions (token_hash, user, csrf, created_ms, seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![digest(&t), user, csrf, now],
    )?;
    Ok((t, csrf))
}

/// Session lifetimes: idle and absolute.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: Duration,
    pub max: Duration,
}

/// The live session for a cookie token, touching its last-seen time. Expired sessions and
/// sessions of removed accounts are deleted and yield `None`.
pub fn lookup(conn: &Connection, token: &str, l: Lifetimes) -> rusqlite::Result<Option<Session>> {
    let key = digest(token);
    let row: Option<(String, String, i64, i64)> = conn
        .query_row(
            "SELECT user, csrf, created_ms, seen_ms FROM console_sessions WHERE token_hash = ?1",
            [&key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((user, csrf, created, seen)) = row else {
        return Ok(None);
    };
    let now = crate::metrics::now_ms();
    let expired =
        now - seen > l.idle.as_millis() as i64 || now - created > l.max.as_millis() as i64;
    let account = if expired {
        None
    } else {
        accounts::get(conn, &user).ok().flatten()
    };
    let Some(account) = account else {
        conn.execute("DELETE FROM console_sessions WHERE token_hash = ?1", [&key])?;
        return Ok(None);
    };
    // One write a minute per session is enough for the idle clock.
    if now - seen > 60_000 {
        conn.execute(
            "UPDATE console_sessions SET seen_ms = ?2 WHERE token_hash = ?1",
            params![key, now],
        )?;
    }
    Ok(Some(Session { account, csrf }))
}

pub fn end(conn: &Connection, token: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM console_sessions WHERE token_hash = ?1",
        [digest(token)],
    )?;
    Ok(())
}

/// Deletes sessions past either lifetime.
pub fn purge(conn: &Connection, l: Lifetimes) -> rusqlite::Result<usize> {
    let now = crate::metrics::now_ms();
    conn.execute(
        "DELETE FROM console_sessions WHERE seen_ms < ?1 OR created_ms < ?2",
        params![
            now - l.idle.as_millis() as i64,
            now - l.max.as_millis() as i64
        ],
    )
}

/// Constant-time comparison, for CSRF tokens.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Failed logins per client address and per account name within a window; past the limit,
/// further attempts are refused without checking the password until the oldest failure ages
/// out. Kept in memory: a restart forgets failures, which costs an attacker a restart.
pub struct LoginLimiter {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(limit: usize, window: Duration) -> Self {
        LoginLimiter {
            limit: limit.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(client: &str, user: &str) -> [String; 2] {
        [
            format!("addr {client}"),
            format!("user {}", user.to_lowercase()),
        ]
    }

    /// `Err(wait)` while either key is over the limit.
    pub fn check(&self, client: &str, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for k in Self::keys(client, user) {
            if let Some(q) = f.get_mut(&k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.limit {
                    let oldest = q.front().copied().unwrap_or(now);
                    wait = wait.max(self.window.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        if wait > Duration::ZERO {
            Err(wait.max(Duration::from_secs(1)))
        } else {
            Ok(())
        }
    }

    pub fn failed(&self, client: &str, user: &str) {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > 100_000 {
            // A spray from many addresses must not grow memory without bound.
            let window = self.window;
            f.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for k in Self::keys(client, user) {
            f.entry(k).or_default().push_back(now);
        }
    }

    pub fn succeeded(&self, user: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&Self::keys("", user)[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_limit_per_address_and_per_user() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.check("10.0.0.1", "olivia").is_ok());
            l.failed("10.0.0.1", "olivia");
        }
        assert!(l.check("10.0.0.1", "olivia").is_err());
        // Same name from elsewhere: the name is over its limit.
        assert!(l.check("10.0.0.2", "OLIVIA").is_err());
        // Same address, another name: the address is over its limit.
        assert!(l.check("10.0.0.1", "bob").is_err());
        assert!(l.check("10.0.0.2", "bob").is_ok());
    }

    #[test]
    fn limiter_forgets_after_window() {
        let l = LoginLimiter::new(1, Duration::from_millis(50));
        l.failed("a", "u");
        assert!(l.check("a", "u").is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.check("a", "u").is_ok());
    }

    #[test]
    fn sessions_expire_and_die_with_account() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.db");
        crate::store::Store::open(&p).unwrap();
        let mut c = crate::store::Store::open_existing(&p).unwrap();
        accounts::add(
            &c,
            "ivan",
            super::super::authz::Role::Investigator,
            None,
            "long enough password",
        )
        .unwrap();
        let long = Lifetimes {
            idle: Duration::from_secs(600),
            max: Duration::from_secs(3600),
        };
        let (t, csrf) = start(&c, "ivan").unwrap();
        let s = lookup(&c, &t, long).unwrap().unwrap();
        assert_eq!(s.account.name, "ivan");
        assert!(same(&s.csrf, &csrf));
        assert!(lookup(&c, "forged", long).unwrap().is_none());
        let stored: String = c
            .query_row("SELECT token_hash FROM console_sessions", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, t, "the token itself is never stored");
        let short = Lifetimes {
            idle: Duration::ZERO,
            max: Duration::from_secs(3600),
        };
        std::thread::sleep(Duration::from_millis(5));
        assert!(lookup(&c, &t, short).unwrap().is_none());
        assert!(lookup(&c, &t, long).unwrap().is_none(), "deleted on expiry");
        let (t2, _) = start(&c, "ivan").unwrap();
        accounts::remove(&mut c, "ivan").unwrap();
        assert!(lookup(&c, &t2, long).unwrap().is_none());
        end(&c, &t2).unwrap();
    }
}
