//! The console's sign-in trail (`console_audit`): every sign-in, refused sign-in, role
//! change and sign-out, by password or single sign-on, with the client's address. Shown by
//! `phiwatch user log`. Holds no secrets: never a password, token or code.

use rusqlite::{params, Connection};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SignIn,
    Refused,
    RoleChange,
    SignOut,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::SignIn => "sign-in",
            Event::Refused => "refused",
            Event::RoleChange => "role-change",
            Event::SignOut => "sign-out",
        }
    }
}

/// How the user signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Password,
    Sso,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Sso => "sso",
        }
    }
}

/// One line of the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at_ms: i64,
    pub event: String,
    pub user: String,
    pub method: String,
    pub client: String,
    pub detail: String,
}

/// Longest user name or detail kept: what a client typed is bounded.
const KEEP: usize = 200;

/// Bounded, and without control characters: `phiwatch user log` prints what a client or
/// a provider's error answer wrote, and a terminal must not take it as commands.
pub(super) fn bounded(s: &str) -> String {
    s.chars()
        .take(KEEP)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub fn write(
    conn: &Connection,
    event: Event,
    user: &str,
    method: Method,
    client: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO console_audit (at_ms, event, user, method, client, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            crate::time::now_ms(),
            event.as_str(),
            bounded(user),
            method.as_str(),
            bounded(client),
            bounded(detail)
        ],
    )?;
    Ok(())
}

/// The newest `limit` entries, oldest first.
pub fn recent(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Entry>> {
    let mut st = conn.prepare(
        "SELECT at_ms, event, user, method, client, detail FROM
           (SELECT * FROM console_audit ORDER BY id DESC LIMIT ?1) ORDER BY id",
    )?;
    let rows = st.query_map([limit as i64], |r| {
        Ok(Entry {
            at_ms: r.get(0)?,
            event: r.get(1)?,
            user: r.get(2)?,
            method: r.get(3)?,
            client: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trail_keeps_order_and_bounds_what_clients_typed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.db");
        crate::store::Store::open(&p).unwrap();
        let c = crate::store::Store::open_existing(&p).unwrap();
        write(
            &c,
            Event::Refused,
            &"x".repeat(5000),
            Method::Password,
            "10.0.0.1",
            "",
        )
        .unwrap();
        write(
            &c,
            Event::SignIn,
            "olivia",
            Method::Sso,
            "10.0.0.2",
            "privacy-officer",
        )
        .unwrap();
        write(
            &c,
            Event::Refused,
            "",
            Method::Sso,
            "10.0.0.3",
            "bad\x1b[2Jthing",
        )
        .unwrap();
        let all = recent(&c, 10).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].detail, "bad?[2Jthing");
        assert_eq!(all[0].user.len(), KEEP);
        assert_eq!(all[1].event, "sign-in");
        assert_eq!(all[1].method, "sso");
        assert_eq!(recent(&c, 2).unwrap()[0].user, "olivia");
    }
}
