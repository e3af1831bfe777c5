//! The console in fleet mode: its accounts, sessions, sign-in trail and sign-in failures on
//! the fleet's PostgreSQL, so any number of console nodes behind a load balancer share them:
//! a session started on one node is valid on all, an account removed on one is gone on all,
//! and failures counted on one hold the limit on all.

use super::accounts::{self, Account, AccountError, SsoAccount};
use super::authz::Role;
use super::session::{digest, token, Lifetimes, Session, SsoLink};
use super::trail::{bounded, Event, Method};
use super::Fail;
use crate::fleet::pg::{self, DatabaseConfig};
use crate::fleet::FleetError;
use crate::time::now_ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Client, GenericClient};

/// Idle connections kept per console node.
const KEEP: usize = 8;

/// Connections to the fleet's database, opened on demand and reused.
pub struct Pool {
    db: DatabaseConfig,
    idle: Mutex<Vec<Client>>,
}

/// A pooled connection; back to the pool when dropped (unless the connection broke).
pub struct Pooled {
    client: Option<Client>,
    pool: Arc<Pool>,
}

/// Where a connection taken out of its [`Pooled`] goes back.
pub struct Back(Arc<Pool>);

impl Back {
    pub fn put(self, client: Client) {
        self.0.put(client);
    }
}

impl Pool {
    pub fn new(db: DatabaseConfig) -> Arc<Self> {
        Arc::new(Pool {
            db,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub async fn get(self: &Arc<Self>) -> Result<Pooled, Fail> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let client = match idle.filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => pg::connect(&self.db, "phiwatch-console")
                .await
                .map_err(|e| unavailable(&e))?,
        };
        Ok(Pooled {
            client: Some(client),
            pool: self.clone(),
        })
    }

    fn put(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !client.is_closed() && idle.len() < KEEP {
            idle.push(client);
        }
    }
}

impl Pooled {
    /// The connection, for a blocking task; hand it back with [`Back::put`].
    pub fn take(mut self) -> (Client, Back) {
        let client = self
            .client
            .take()
            .expect("a pooled connection is taken once");
        (client, Back(self.pool.clone()))
    }
}

impl std::ops::Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a pooled connection is taken once")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a pooled connection is taken once")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.pool.put(c);
        }
    }
}

/// Runs `f` on a pooled connection on the blocking pool, for readers that call the database
/// through `Handle::block_on` (the noise report streams its rows that way).
pub async fn blocking<T: Send + 'static>(
    pool: &Arc<Pool>,
    f: impl FnOnce(&tokio::runtime::Handle, &Client) -> Result<T, Fail> + Send + 'static,
) -> Result<T, Fail> {
    let pooled = pool.get().await?;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let (client, back) = pooled.take();
        let out = f(&rt, &client);
        back.put(client);
        out
    })
    .await
    .map_err(|e| Fail::internal(format!("store task: {e}")))?
}

/// The database is the console's store: without it nothing can be shown.
fn unavailable(e: &FleetError) -> Fail {
    tracing::error!("console: the fleet's database: {e}");
    Fail::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "the fleet's database cannot be reached; try again shortly",
    )
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Fail {
    move |e| unavailable(&FleetError::sql(what)(e))
}

/// As [`accounts::add`], on the fleet's database (`phiwatch user add` with a fleet config).
pub async fn add_account(
    client: &impl GenericClient,
    name: &str,
    role: Role,
    staff_id: Option<&str>,
    password: &str,
) -> Result<(), AccountError> {
    accounts::valid_name(name)?;
    let hash = accounts::hash_password(password)?;
    let n = client
        .execute(
            "INSERT INTO console_users (name, role, hash, staff_id, created_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&name, &role.as_str(), &hash, &staff_id, &now_ms()],
        )
        .await
        .map_err(|e| AccountError::Invalid(FleetError::sql("adding a user")(e).to_string()))?;
    if n == 0 {
        return Err(accounts::exists(name));
    }
    Ok(())
}

fn account_sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> AccountError {
    move |e| AccountError::Invalid(FleetError::sql(what)(e).to_string())
}

/// As [`accounts::remove`]: the account and, in the same transaction, its sessions on every
/// node.
pub async fn remove_account(client: &mut Client, name: &str) -> Result<(), AccountError> {
    let e = account_sql("removing a user");
    let tx = client.transaction().await.map_err(&e)?;
    let n = tx
        .execute("DELETE FROM console_users WHERE name = $1", &[&name])
        .await
        .map_err(&e)?;
    if n == 0 {
        return Err(AccountError::Invalid(format!("no user {name:?}")));
    }
    end_sessions(tx, name, &e).await
}

/// Ends `name`'s sessions on every node and commits.
async fn end_sessions(
    tx: tokio_postgres::Transaction<'_>,
    name: &str,
    e: &impl Fn(tokio_postgres::Error) -> AccountError,
) -> Result<(), AccountError> {
    tx.execute(
        "DELETE FROM console_sessions WHERE user_name = $1",
        &[&name],
    )
    .await
    .map_err(e)?;
    tx.commit().await.map_err(e)
}

/// As [`accounts::set_password`]: a new hash, and the account's sessions end.
pub async fn set_password(
    client: &mut Client,
    name: &str,
    password: &str,
) -> Result<(), AccountError> {
    let hash = accounts::hash_password(password)?;
    let e = account_sql("changing a password");
    let tx = client.transaction().await.map_err(&e)?;
    let n = tx
        .execute(
            "UPDATE console_users SET hash = $2 WHERE name = $1",
            &[&name, &hash],
        )
        .await
        .map_err(&e)?;
    if n == 0 {
        return Err(AccountError::Invalid(format!("no user {name:?}")));
    }
    end_sessions(tx, name, &e).await
}

/// The newest `limit` entries of the sign-in trail, oldest first.
pub async fn trail_recent(
    client: &impl GenericClient,
    limit: usize,
) -> Result<Vec<super::trail::Entry>, FleetError> {
    let rows = client
        .query(
            "SELECT at_ms, event, user_name, method, client, detail FROM
               (SELECT * FROM console_audit ORDER BY id DESC LIMIT $1) t ORDER BY id",
            &[&(limit as i64)],
        )
        .await
        .map_err(FleetError::sql("reading the sign-in trail"))?;
    Ok(rows
        .iter()
        .map(|r| super::trail::Entry {
            at_ms: r.get(0),
            event: r.get(1),
            user: r.get(2),
            method: r.get(3),
            client: r.get(4),
            detail: r.get(5),
        })
        .collect())
}

/// Every account, by name.
pub async fn accounts_list(client: &impl GenericClient) -> Result<Vec<Account>, FleetError> {
    let rows = client
        .query(
            "SELECT name, role, staff_id FROM console_users ORDER BY name",
            &[],
        )
        .await
        .map_err(FleetError::sql("listing users"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Account {
                name: r.get(0),
                role: Role::parse(r.get(1))?,
                staff_id: r.get(2),
            })
        })
        .collect())
}

pub async fn account(client: &impl GenericClient, name: &str) -> Result<Option<Account>, Fail> {
    let row = client
        .query_opt(
            "SELECT role, staff_id FROM console_users WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(sql("reading an account"))?;
    Ok(row.and_then(|r| {
        Some(Account {
            name: name.to_owned(),
            role: Role::parse(r.get(0))?,
            staff_id: r.get(1),
        })
    }))
}

/// As [`accounts::hash_of`]: the stored hash, or a decoy, and whether the name exists.
pub async fn hash_of(client: &impl GenericClient, name: &str) -> Result<(String, bool), Fail> {
    let row = client
        .query_opt("SELECT hash FROM console_users WHERE name = $1", &[&name])
        .await
        .map_err(sql("reading an account"))?;
    Ok(match row {
        Some(r) => (r.get(0), true),
        None => (accounts::decoy().to_owned(), false),
    })
}

/// Starts a session, tied to the provider's sign-in when `link` says so; returns its token
/// (for the cookie) and its CSRF token.
pub async fn start(
    client: &impl GenericClient,
    user: &str,
    link: Option<&SsoLink>,
) -> Result<(String, String), Fail> {
    let (t, csrf) = (token(), token());
    client
        .execute(
            "INSERT INTO console_sessions
               (token_hash, user_name, csrf, created_ms, seen_ms, expires_ms, sso_sub, sso_sid)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
            &[
                &digest(&t),
                &user,
                &csrf,
                &now_ms(),
                &link.and_then(|l| l.expires_ms),
                &link.map(|l| l.sub.as_str()),
                &link.and_then(|l| l.sid.as_deref()),
            ],
        )
        .await
        .map_err(sql("starting a session"))?;
    Ok((t, csrf))
}

/// As [`super::session::end_sso`]: ends the sessions a back-channel logout names, on every
/// node; answers the users whose sessions ended.
pub async fn end_sso(
    client: &impl GenericClient,
    sub: Option<&str>,
    sid: Option<&str>,
) -> Result<Vec<String>, Fail> {
    let (column, key) = match (sid, sub) {
        (Some(sid), _) => ("sso_sid", sid),
        (None, Some(sub)) => ("sso_sub", sub),
        (None, None) => return Ok(Vec::new()),
    };
    let rows = client
        .query(
            &format!("DELETE FROM console_sessions WHERE {column} = $1 RETURNING user_name"),
            &[&key],
        )
        .await
        .map_err(sql("ending single sign-on sessions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// As [`accounts::upsert_sso`], on the fleet's database: the outer error is the database's,
/// the inner one a refusal to tell the user (a local account of this name, a bad name).
pub async fn upsert_sso(
    client: &mut Client,
    name: &str,
    role: Role,
    staff_id: Option<&str>,
) -> Result<Result<SsoAccount, String>, Fail> {
    if let Err(e) = accounts::valid_name(name) {
        return Ok(Err(e.to_string()));
    }
    let e = sql("recording a single sign-on account");
    let tx = client.transaction().await.map_err(&e)?;
    // Locks the row: two nodes signing the same user in at once decide one after the other.
    let old = tx
        .query_opt(
            "SELECT hash, role, staff_id FROM console_users WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(&e)?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let outcome = match accounts::sso_change(name, old.as_ref(), role, staff_id) {
        Ok(o) => o,
        Err(refused) => return Ok(Err(refused.to_string())),
    };
    match outcome {
        SsoAccount::Unchanged => {}
        SsoAccount::Changed(_) => {
            tx.execute(
                "UPDATE console_users SET role = $2, staff_id = $3 WHERE name = $1",
                &[&name, &role.as_str(), &staff_id],
            )
            .await
            .map_err(&e)?;
            tx.execute(
                "DELETE FROM console_sessions WHERE user_name = $1",
                &[&name],
            )
            .await
            .map_err(&e)?;
        }
        SsoAccount::Created => {
            let n = tx
                .execute(
                    "INSERT INTO console_users (name, role, hash, staff_id, created_ms)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &name,
                        &role.as_str(),
                        &accounts::SSO_HASH,
                        &staff_id,
                        &now_ms(),
                    ],
                )
                .await
                .map_err(&e)?;
            // Another node made the account between the read and this insert.
            if n == 0 {
                return Ok(Err(format!(
                    "user {name:?} was created at this moment by another sign-in; please sign in again"
                )));
            }
        }
    }
    tx.commit().await.map_err(&e)?;
    Ok(Ok(outcome))
}

/// Whether `name` signs in through the identity provider.
pub async fn is_sso(client: &impl GenericClient, name: &str) -> Result<bool, Fail> {
    let row = client
        .query_opt("SELECT hash FROM console_users WHERE name = $1", &[&name])
        .await
        .map_err(sql("reading an account"))?;
    Ok(row.is_some_and(|r| r.get::<_, &str>(0) == accounts::SSO_HASH))
}

/// As [`super::session::lookup`]: the live session for a cookie token, from any node.
pub async fn lookup(
    client: &impl GenericClient,
    token: &str,
    l: Lifetimes,
) -> Result<Option<Session>, Fail> {
    let key = digest(token);
    let e = sql("reading a session");
    let Some(row) = client
        .query_opt(
            "SELECT user_name, csrf, created_ms, seen_ms, expires_ms FROM console_sessions
             WHERE token_hash = $1",
            &[&key],
        )
        .await
        .map_err(&e)?
    else {
        return Ok(None);
    };
    let (user, csrf): (String, String) = (row.get(0), row.get(1));
    let now = now_ms();
    let seen: i64 = row.get(3);
    let account = if l.expired(row.get(2), seen, row.get(4), now) {
        None
    } else {
        account(client, &user).await?
    };
    let Some(account) = account else {
        end(client, token).await?;
        return Ok(None);
    };
    if now - seen > 60_000 {
        client
            .execute(
                "UPDATE console_sessions SET seen_ms = $2 WHERE token_hash = $1",
                &[&key, &now],
            )
            .await
            .map_err(&e)?;
    }
    Ok(Some(Session { account, csrf }))
}

pub async fn end(client: &impl GenericClient, token: &str) -> Result<(), Fail> {
    client
        .execute(
            "DELETE FROM console_sessions WHERE token_hash = $1",
            &[&digest(token)],
        )
        .await
        .map_err(sql("ending a session"))?;
    Ok(())
}

/// Deletes sessions past either lifetime.
pub async fn purge(client: &impl GenericClient, l: Lifetimes) -> Result<usize, Fail> {
    let now = now_ms();
    let n = client
        .execute(
            "DELETE FROM console_sessions WHERE seen_ms < $1 OR created_ms < $2 OR expires_ms <= $3",
            &[
                &(now - l.idle.as_millis() as i64),
                &(now - l.max.as_millis() as i64),
                &now,
            ],
        )
        .await
        .map_err(sql("purging sessions"))?;
    Ok(n as usize)
}

/// As [`super::trail::write`].
pub async fn trail(
    client: &impl GenericClient,
    event: Event,
    user: &str,
    method: Method,
    from: &str,
    detail: &str,
) -> Result<(), Fail> {
    client
        .execute(
            "INSERT INTO console_audit (at_ms, event, user_name, method, client, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &now_ms(),
                &event.as_str(),
                &bounded(user),
                &method.as_str(),
                &bounded(from),
                &bounded(detail),
            ],
        )
        .await
        .map_err(sql("writing the sign-in trail"))?;
    Ok(())
}

/// The failures every node counted on `keys` within `window`, as their ages.
pub async fn failures(
    client: &impl GenericClient,
    keys: &[String; 3],
    window: Duration,
) -> Result<[Vec<Duration>; 3], Fail> {
    let now = now_ms();
    let since = now - window.as_millis() as i64;
    let rows = client
        .query(
            "SELECT key, at_ms FROM console_login_failures
             WHERE key = ANY($1) AND at_ms > $2 ORDER BY at_ms",
            &[&keys.as_slice(), &since],
        )
        .await
        .map_err(sql("reading sign-in failures"))?;
    let mut out: [Vec<Duration>; 3] = Default::default();
    for r in rows {
        let key: String = r.get(0);
        let at: i64 = r.get(1);
        if let Some(i) = keys.iter().position(|k| *k == key) {
            out[i].push(Duration::from_millis((now - at).max(0) as u64));
        }
    }
    Ok(out)
}

/// Records a failed sign-in on every key (and forgets failures past `window`).
pub async fn failed(
    client: &impl GenericClient,
    keys: &[String; 3],
    window: Duration,
) -> Result<(), Fail> {
    let now = now_ms();
    let e = sql("recording a sign-in failure");
    client
        .execute(
            "INSERT INTO console_login_failures (key, at_ms) SELECT k, $2 FROM unnest($1::text[]) k",
            &[&keys.as_slice(), &now],
        )
        .await
        .map_err(&e)?;
    client
        .execute(
            "DELETE FROM console_login_failures WHERE at_ms <= $1",
            &[&(now - window.as_millis() as i64)],
        )
        .await
        .map_err(&e)?;
    Ok(())
}

/// Signed in: the name's and the pair's failures are forgiven (as the node's own limiter).
pub async fn succeeded(client: &impl GenericClient, keys: &[String; 3]) -> Result<(), Fail> {
    client
        .execute(
            "DELETE FROM console_login_failures WHERE key = $1 OR key = $2",
            &[&keys[0], &keys[2]],
        )
        .await
        .map_err(sql("forgiving sign-in failures"))?;
    Ok(())
}
