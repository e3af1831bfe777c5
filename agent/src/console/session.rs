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

pub(super) fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Starts a session; returns its token (for the cookie) and its CSRF token.
pub fn start(conn: &Connection, user: &str) -> rusqlite::Result<(String, String)> {
    start_sso(conn, user, None)
}

/// What ties a session to the identity provider's sign-in.
#[derive(Debug, Clone, Default)]
pub struct SsoLink {
    /// End the session at this time (the ID token's expiry), if configured.
    pub expires_ms: Option<i64>,
    /// The provider's subject and session id, which a back-channel logout names.
    pub sub: String,
    pub sid: Option<String>,
}

/// Starts a session, tied to the provider's sign-in when `link` says so.
pub fn start_sso(
    conn: &Connection,
    user: &str,
    link: Option<&SsoLink>,
) -> rusqlite::Result<(String, String)> {
    let (t, csrf) = (token(), token());
    let now = crate::time::now_ms();
    conn.execute(
        "INSERT INTO console_sessions
           (token_hash, user, csrf, created_ms, seen_ms, expires_ms, sso_sub, sso_sid)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
        params![
            digest(&t),
            user,
            csrf,
            now,
            link.and_then(|l| l.expires_ms),
            link.map(|l| l.sub.as_str()),
            link.and_then(|l| l.sid.as_deref())
        ],
    )?;
    Ok((t, csrf))
}

/// Ends the sessions a back-channel logout names: those of the provider's session `sid`
/// when given (the user's other sign-ins stay), else every session of the subject `sub`.
/// Answers the users whose sessions ended.
pub fn end_sso(
    conn: &Connection,
    sub: Option<&str>,
    sid: Option<&str>,
) -> rusqlite::Result<Vec<String>> {
    let (sql, key) = match (sid, sub) {
        (Some(sid), _) => ("sso_sid", sid),
        (None, Some(sub)) => ("sso_sub", sub),
        (None, None) => return Ok(Vec::new()),
    };
    let mut st = conn.prepare(&format!(
        "DELETE FROM console_sessions WHERE {sql} = ?1 RETURNING user"
    ))?;
    let users = st.query_map([key], |r| r.get(0))?;
    users.collect()
}

/// Session lifetimes: idle and absolute.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: Duration,
    pub max: Duration,
}

impl Lifetimes {
    /// Whether a session created and last seen then (and ending at `expires`) is over.
    pub fn expired(&self, created: i64, seen: i64, expires: Option<i64>, now: i64) -> bool {
        now - seen > self.idle.as_millis() as i64
            || now - created > self.max.as_millis() as i64
            || expires.is_some_and(|e| now >= e)
    }
}

/// The live session for a cookie token, touching its last-seen time. Expired sessions and
/// sessions of removed accounts are deleted and yield `None`.
pub fn lookup(conn: &Connection, token: &str, l: Lifetimes) -> rusqlite::Result<Option<Session>> {
    let key = digest(token);
    let row: Option<(String, String, i64, i64, Option<i64>)> = conn
        .query_row(
            "SELECT user, csrf, created_ms, seen_ms, expires_ms FROM console_sessions
             WHERE token_hash = ?1",
            [&key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((user, csrf, created, seen, expires)) = row else {
        return Ok(None);
    };
    let now = crate::time::now_ms();
    let account = if l.expired(created, seen, expires, now) {
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
    let now = crate::time::now_ms();
    conn.execute(
        "DELETE FROM console_sessions WHERE seen_ms < ?1 OR created_ms < ?2 OR expires_ms <= ?3",
        params![
            now - l.idle.as_millis() as i64,
            now - l.max.as_millis() as i64,
            now
        ],
    )
}

/// Constant-time comparison, for CSRF tokens.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The sign-in rate limit. Failures are counted within a window per (address, name) pair,
/// per address, and per name:
/// - a pair is locked after `limit` failures: one client guessing one account;
/// - an address after `4 × limit`: one client spraying many accounts;
/// - a name is never locked (anyone could then lock the privacy officer out from anywhere);
///   past `limit` failures from all addresses it backs off instead: one attempt at a time,
///   each at least 2^(failures − limit) seconds (at most 30) after the last failure.
///
/// An attempt is reserved before the password is checked and counts until it is decided, so
/// concurrent guesses cannot slip past the limit while the hashes run. Kept in memory: a
/// restart forgets failures, which costs an attacker a restart.
pub struct LoginLimiter {
    limit: usize,
    window: Duration,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    failures: HashMap<String, VecDeque<Instant>>,
    inflight: HashMap<String, usize>,
}

/// Longest back-off between attempts on one name.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A reserved sign-in attempt: record its outcome; dropping it undecided frees the slot.
pub struct Attempt<'l> {
    limiter: &'l LoginLimiter,
    keys: [String; 3],
    decided: bool,
}

impl LoginLimiter {
    pub fn new(limit: usize, window: Duration) -> Self {
        LoginLimiter {
            limit: limit.max(1),
            window,
            state: Mutex::new(Counts::default()),
        }
    }

    /// The failures the whole fleet counted on a sign-in's keys ([`LoginLimiter::keys`]), as
    /// their ages: they replace what this node remembers of those keys, so the limit holds
    /// across console nodes (each node still reserves its own attempts in flight).
    pub fn adopt(&self, keys: &[String; 3], ages: [Vec<Duration>; 3]) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (k, ages) in keys.iter().zip(ages) {
            // Oldest first, as the node's own queues are kept.
            let mut ages = ages;
            ages.sort_unstable_by(|a, b| b.cmp(a));
            let q: VecDeque<Instant> = ages.iter().filter_map(|a| now.checked_sub(*a)).collect();
            if q.is_empty() {
                st.failures.remove(k);
            } else {
                st.failures.insert(k.clone(), q);
            }
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The keys a sign-in counts against: the pair, the address, the name.
    pub fn keys(client: &str, user: &str) -> [String; 3] {
        let user = user.to_lowercase();
        [
            format!("pair {client} {user}"),
            format!("addr {client}"),
            format!("user {user}"),
        ]
    }

    /// Reserves an attempt, or `Err(wait)` while it would break the limit.
    pub fn begin(&self, client: &str, user: &str) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        let keys = Self::keys(client, user);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Counts { failures, inflight } = &mut *st;
        let mut wait = Duration::ZERO;
        for (i, k) in keys.iter().enumerate() {
            let q = failures.entry(k.clone()).or_default();
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                q.pop_front();
            }
            let busy = inflight.get(k).copied().unwrap_or(0);
            let oldest_ages_out = || {
                let oldest = q.front().copied().unwrap_or(now);
                self.window.saturating_sub(now.duration_since(oldest))
            };
            match i {
                0 if q.len() + busy >= self.limit => wait = wait.max(oldest_ages_out()),
                1 if q.len() + busy >= 4 * self.limit => wait = wait.max(oldest_ages_out()),
                2 if q.len() >= self.limit => {
                    let over = (q.len() - self.limit).min(5) as u32;
                    let gap = Duration::from_secs(1 << over).min(MAX_BACKOFF);
                    let since = q.back().map_or(gap, |t| now.duration_since(*t));
                    if busy > 0 {
                        wait = wait.max(Duration::from_secs(1));
                    } else if since < gap {
                        wait = wait.max(gap - since);
                    }
                }
                _ => {}
            }
        }
        failures.retain(|_, q| !q.is_empty());
        if wait > Duration::ZERO {
            return Err(wait.max(Duration::from_secs(1)));
        }
        if failures.len() + inflight.len() > 100_000 {
            // A spray from many addresses must not grow memory without bound.
            let window = self.window;
            failures.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for k in &keys {
            *inflight.entry(k.clone()).or_default() += 1;
        }
        Ok(Attempt {
            limiter: self,
            keys,
            decided: false,
        })
    }
}

impl Attempt<'_> {
    /// A wrong password: counts against the pair, the address and the name.
    pub fn failed(mut self) {
        let now = Instant::now();
        let mut st = self.limiter.state.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            st.failures.entry(k.clone()).or_default().push_back(now);
        }
        release(&mut st, &self.keys);
        self.decided = true;
    }

    /// Signed in: the name's and the pair's failures are forgiven.
    pub fn succeeded(mut self) {
        let mut st = self.limiter.state.lock().unwrap_or_else(|e| e.into_inner());
        st.failures.remove(&self.keys[0]);
        st.failures.remove(&self.keys[2]);
        release(&mut st, &self.keys);
        self.decided = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.decided {
            let mut st = self.limiter.state.lock().unwrap_or_else(|e| e.into_inner());
            release(&mut st, &self.keys);
        }
    }
}

fn release(st: &mut Counts, keys: &[String; 3]) {
    for k in keys {
        if let Some(n) = st.inflight.get_mut(k) {
            *n -= 1;
            if *n == 0 {
                st.inflight.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_locked_and_an_address_spraying_names_too() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            l.begin("10.0.0.1", "olivia").unwrap().failed();
        }
        assert!(l.begin("10.0.0.1", "OLIVIA").is_err(), "the pair is locked");
        // The same address may still try others, up to four times the limit in all.
        for n in 0..9 {
            l.begin("10.0.0.1", &format!("user{n}")).unwrap().failed();
        }
        assert!(l.begin("10.0.0.1", "bob").is_err(), "the address sprayed");
        assert!(l.begin("10.0.0.2", "bob").is_ok());
    }

    #[test]
    fn nobody_can_lock_a_name_out_from_everywhere() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for a in 0..3 {
            l.begin(&format!("10.0.1.{a}"), "olivia").unwrap().failed();
        }
        // Past the limit the name backs off (2 s after the last failure), then opens again.
        assert!(l.begin("10.0.2.9", "olivia").is_err());
        let fresh = LoginLimiter::new(1, Duration::from_secs(60));
        fresh.begin("10.0.1.1", "olivia").unwrap().failed();
        let wait = fresh.begin("10.0.2.9", "olivia").err().unwrap();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        std::thread::sleep(Duration::from_millis(1050));
        let ok = fresh.begin("10.0.2.9", "olivia").unwrap();
        ok.succeeded();
        assert!(fresh.begin("10.0.2.9", "olivia").is_ok(), "forgiven");
    }

    /// Failures another console node counted (read from the fleet's database in any order)
    /// hold the pair's limit here, and the lock lifts when the oldest of them ages out.
    #[test]
    fn failures_adopted_from_other_nodes_hold_the_limit_until_the_oldest_ages_out() {
        let l = LoginLimiter::new(3, Duration::from_secs(600));
        let keys = LoginLimiter::keys("10.0.0.1", "olivia");
        let ages = vec![
            Duration::from_secs(1),
            Duration::from_secs(540),
            Duration::from_secs(30),
        ];
        l.adopt(&keys, [ages.clone(), ages.clone(), ages]);
        let wait = l
            .begin("10.0.0.1", "olivia")
            .err()
            .expect("the pair is locked");
        // The oldest failure is 540 s old in a 600 s window: about a minute to go.
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(61),
            "{wait:?}"
        );
        // Adopting none (the fleet forgave them on a sign-in elsewhere) clears them here.
        l.adopt(&keys, Default::default());
        assert!(l.begin("10.0.0.1", "olivia").is_ok());
    }

    #[test]
    fn concurrent_attempts_count_before_they_are_decided() {
        let l = LoginLimiter::new(5, Duration::from_secs(60));
        let held: Vec<_> = (0..5)
            .map(|_| l.begin("10.0.0.9", "olivia").unwrap())
            .collect();
        assert!(
            l.begin("10.0.0.9", "olivia").is_err(),
            "five already in flight"
        );
        drop(held);
        assert!(
            l.begin("10.0.0.9", "olivia").is_ok(),
            "undecided attempts free their slot"
        );
    }

    #[test]
    fn limiter_forgets_after_window() {
        let l = LoginLimiter::new(1, Duration::from_millis(50));
        l.begin("a", "u").unwrap().failed();
        assert!(l.begin("a", "u").is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.begin("a", "u").is_ok());
    }

    #[test]
    fn single_sign_on_sessions_end_with_the_token_and_by_back_channel() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.db");
        crate::store::Store::open(&p).unwrap();
        let mut c = crate::store::Store::open_existing(&p).unwrap();
        let role = super::super::authz::Role::Auditor;
        accounts::upsert_sso(&mut c, "amy", role, None).unwrap();
        let l = Lifetimes {
            idle: Duration::from_secs(600),
            max: Duration::from_secs(3600),
        };
        let link = |sid: &str, expires_ms| SsoLink {
            expires_ms,
            sub: "sub-amy".into(),
            sid: Some(sid.into()),
        };
        let now = crate::time::now_ms();
        let (gone, _) = start_sso(&c, "amy", Some(&link("s0", Some(now - 1)))).unwrap();
        assert!(
            lookup(&c, &gone, l).unwrap().is_none(),
            "the ID token expired"
        );
        let (a, _) = start_sso(&c, "amy", Some(&link("s1", Some(now + 60_000)))).unwrap();
        let (b, _) = start_sso(&c, "amy", Some(&link("s2", None))).unwrap();
        assert!(lookup(&c, &a, l).unwrap().is_some());
        assert_eq!(end_sso(&c, Some("sub-amy"), Some("s1")).unwrap(), ["amy"]);
        assert!(lookup(&c, &a, l).unwrap().is_none());
        assert!(
            lookup(&c, &b, l).unwrap().is_some(),
            "another sign-in stays"
        );
        assert_eq!(end_sso(&c, Some("sub-amy"), None).unwrap(), ["amy"]);
        assert!(lookup(&c, &b, l).unwrap().is_none());
        assert!(end_sso(&c, None, None).unwrap().is_empty());
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
