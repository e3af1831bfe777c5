//! Local console accounts: a name, a role, an Argon2id password hash and, optionally, the
//! account's id in the staff directory, so what the person views through the console is
//! judged like any other access of theirs. Managed with `phiwatch user ...`.

use super::authz::Role;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::OnceLock;
use thiserror::Error;

/// Shorter passwords are refused: the console shows PHI.
pub const MIN_PASSWORD: usize = 12;

#[derive(Debug, Error)]
pub enum AccountError {
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub staff_id: Option<String>,
}

fn hasher() -> Argon2<'static> {
    // OWASP's Argon2id minimum (19 MiB, 2 passes): about 30 ms here, slow enough for an
    // offline guesser, fast enough that a login does not queue behind another.
    Argon2::default()
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::Invalid(format!(
            "the password needs at least {MIN_PASSWORD} characters"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("hashing the password: {e}")))
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash nobody's password matches: unknown names cost as much as wrong passwords, so the
/// login's timing does not tell which names exist.
pub(super) fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(b"no account has this password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

pub(super) fn valid_name(name: &str) -> Result<(), AccountError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(AccountError::Invalid(format!(
            "user name {name:?}: use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )));
    }
    Ok(())
}

pub fn add(
    conn: &Connection,
    name: &str,
    role: Role,
    staff_id: Option<&str>,
    password: &str,
) -> Result<(), AccountError> {
    valid_name(name)?;
    let hash = hash_password(password)?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO console_users (name, role, hash, staff_id, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, role.as_str(), hash, staff_id, crate::time::now_ms()],
    )?;
    if n == 0 {
        return Err(exists(name));
    }
    Ok(())
}

pub(super) fn exists(name: &str) -> AccountError {
    AccountError::Invalid(format!(
        "user {name:?} exists already (phiwatch user passwd changes the password)"
    ))
}

/// Sets a new password and ends the user's sessions.
pub fn set_password(conn: &mut Connection, name: &str, password: &str) -> Result<(), AccountError> {
    let hash = hash_password(password)?;
    let tx = conn.transaction()?;
    // An account of the identity provider stays one: a password would outlive the
    // provider's leaver process.
    let n = tx.execute(
        "UPDATE console_users SET hash = ?2 WHERE name = ?1 AND hash <> ?3",
        params![name, hash, SSO_HASH],
    )?;
    if n == 0 && is_sso(&tx, name)? {
        return Err(AccountError::Invalid(format!(
            "user {name:?} signs in through the identity provider and has no password"
        )));
    }
    if n == 0 {
        return Err(AccountError::Invalid(format!("no user {name:?}")));
    }
    tx.execute("DELETE FROM console_sessions WHERE user = ?1", [name])?;
    tx.commit()?;
    Ok(())
}

/// The stored "hash" of an account made by single sign-on: not a password hash, so no
/// password ever matches it.
pub(super) const SSO_HASH: &str = "sso";

/// What a single sign-on did to the account of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoAccount {
    Created,
    Unchanged,
    /// The provider now gives another role (or staff id); the old role.
    Changed(Role),
}

/// Creates or updates the account of a user signed in by the identity provider, with the role
/// and staff id the provider gives now. A local (password) account of the same name is not
/// taken over.
pub fn upsert_sso(
    conn: &mut Connection,
    name: &str,
    role: Role,
    staff_id: Option<&str>,
) -> Result<SsoAccount, AccountError> {
    valid_name(name)?;
    // Immediate: it reads, then writes; a deferred transaction cannot write once the
    // detection thread (always writing) has committed after its read.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let old: Option<(String, String, Option<String>)> = tx
        .query_row(
            "SELECT hash, role, staff_id FROM console_users WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let outcome = sso_change(name, old.as_ref(), role, staff_id)?;
    match outcome {
        SsoAccount::Unchanged => {}
        SsoAccount::Changed(_) => {
            tx.execute(
                "UPDATE console_users SET role = ?2, staff_id = ?3 WHERE name = ?1",
                params![name, role.as_str(), staff_id],
            )?;
            // A role taken away ends the sessions that had it.
            tx.execute("DELETE FROM console_sessions WHERE user = ?1", [name])?;
        }
        SsoAccount::Created => {
            tx.execute(
                "INSERT INTO console_users (name, role, hash, staff_id, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    name,
                    role.as_str(),
                    SSO_HASH,
                    staff_id,
                    crate::time::now_ms()
                ],
            )?;
        }
    }
    tx.commit()?;
    Ok(outcome)
}

/// What a single sign-on as `name` with `role` and `staff_id` does to the account stored
/// as `old` (its hash, role and staff id): a local account is not taken over.
pub(super) fn sso_change(
    name: &str,
    old: Option<&(String, String, Option<String>)>,
    role: Role,
    staff_id: Option<&str>,
) -> Result<SsoAccount, AccountError> {
    Ok(match old {
        Some((hash, _, _)) if hash != SSO_HASH => {
            return Err(AccountError::Invalid(format!(
                "user {name:?} is a local account: single sign-on does not take it over"
            )))
        }
        Some((_, old_role, old_staff)) => {
            if old_role == role.as_str() && old_staff.as_deref() == staff_id {
                SsoAccount::Unchanged
            } else {
                SsoAccount::Changed(Role::parse(old_role).unwrap_or(role))
            }
        }
        None => SsoAccount::Created,
    })
}

/// Whether `name` signs in through the identity provider.
pub fn is_sso(conn: &Connection, name: &str) -> Result<bool, AccountError> {
    Ok(stored_hash(conn, name)?.as_deref() == Some(SSO_HASH))
}

fn stored_hash(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT hash FROM console_users WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
}

/// Removes the account and ends its sessions. Case logs keep the name as written.
pub fn remove(conn: &mut Connection, name: &str) -> Result<(), AccountError> {
    let tx = conn.transaction()?;
    let n = tx.execute("DELETE FROM console_users WHERE name = ?1", [name])?;
    if n == 0 {
        return Err(AccountError::Invalid(format!("no user {name:?}")));
    }
    tx.execute("DELETE FROM console_sessions WHERE user = ?1", [name])?;
    tx.commit()?;
    Ok(())
}

pub fn list(conn: &Connection) -> Result<Vec<Account>, AccountError> {
    let mut st = conn.prepare("SELECT name, role, staff_id FROM console_users ORDER BY name")?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, role, staff_id) = row?;
        if let Some(role) = Role::parse(&role) {
            out.push(Account {
                name,
                role,
                staff_id,
            });
        }
    }
    Ok(out)
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<Account>, AccountError> {
    let row: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT role, staff_id FROM console_users WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(role, staff_id)| {
        Some(Account {
            name: name.to_owned(),
            role: Role::parse(&role)?,
            staff_id,
        })
    }))
}

/// The stored hash of `name`, or a decoy nobody's password matches (so an unknown name costs
/// the same check), and whether the name exists. Verify it with [`super::hashing`].
pub fn hash_of(conn: &Connection, name: &str) -> Result<(String, bool), AccountError> {
    Ok(match stored_hash(conn, name)? {
        Some(h) => (h, true),
        None => (decoy().to_owned(), false),
    })
}

/// The account when the password is right. Always spends one Argon2 verification.
pub fn authenticate(
    conn: &Connection,
    name: &str,
    password: &str,
) -> Result<Option<Account>, AccountError> {
    let hash: Option<String> = conn
        .query_row(
            "SELECT hash FROM console_users WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    let ok = verify(hash.as_deref().unwrap_or_else(|| decoy()), password);
    if !ok || hash.is_none() {
        return Ok(None);
    }
    get(conn, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let d = tempfile::tempdir().unwrap();
        let c = crate::store::Store::open_existing(&{
            let p = d.path().join("p.db");
            crate::store::Store::open(&p).unwrap();
            p
        })
        .unwrap();
        (d, c)
    }

    #[test]
    fn add_authenticate_change_remove() {
        let (_d, mut c) = db();
        add(
            &c,
            "olivia",
            Role::PrivacyOfficer,
            Some("dr-ana"),
            "correct horse battery",
        )
        .unwrap();
        assert!(add(&c, "olivia", Role::Auditor, None, "correct horse battery").is_err());
        assert!(add(&c, "bob", Role::Auditor, None, "short").is_err());
        assert!(add(&c, "bad name", Role::Auditor, None, "correct horse battery").is_err());
        let a = authenticate(&c, "olivia", "correct horse battery")
            .unwrap()
            .unwrap();
        assert_eq!(a.role, Role::PrivacyOfficer);
        assert_eq!(a.staff_id.as_deref(), Some("dr-ana"));
        assert!(authenticate(&c, "olivia", "wrong horse battery")
            .unwrap()
            .is_none());
        assert!(authenticate(&c, "nobody", "correct horse battery")
            .unwrap()
            .is_none());
        let stored: String = c
            .query_row("SELECT hash FROM console_users", [], |r| r.get(0))
            .unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        set_password(&mut c, "olivia", "a new long passphrase").unwrap();
        assert!(authenticate(&c, "olivia", "correct horse battery")
            .unwrap()
            .is_none());
        assert!(authenticate(&c, "olivia", "a new long passphrase")
            .unwrap()
            .is_some());
        remove(&mut c, "olivia").unwrap();
        assert!(list(&c).unwrap().is_empty());
    }

    #[test]
    fn single_sign_on_accounts_follow_the_provider_and_have_no_password() {
        let (_d, mut c) = db();
        assert_eq!(
            upsert_sso(&mut c, "amy@example.org", Role::Auditor, None).unwrap(),
            SsoAccount::Created
        );
        assert!(is_sso(&c, "amy@example.org").unwrap());
        let (t, _) = super::super::session::start(&c, "amy@example.org").unwrap();
        assert_eq!(
            upsert_sso(&mut c, "amy@example.org", Role::Auditor, None).unwrap(),
            SsoAccount::Unchanged
        );
        assert_eq!(
            upsert_sso(&mut c, "amy@example.org", Role::PrivacyOfficer, Some("E1")).unwrap(),
            SsoAccount::Changed(Role::Auditor)
        );
        let n: i64 = c
            .query_row("SELECT count(*) FROM console_sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "a role change ends the old sessions ({t})");
        assert!(authenticate(&c, "amy@example.org", "sso")
            .unwrap()
            .is_none());
        add(&c, "admin", Role::Admin, None, "correct horse battery").unwrap();
        assert!(upsert_sso(&mut c, "admin", Role::PrivacyOfficer, None).is_err());
        assert!(!is_sso(&c, "admin").unwrap());
        assert!(set_password(&mut c, "amy@example.org", "correct horse battery").is_err());
        assert!(is_sso(&c, "amy@example.org").unwrap());
    }
}
