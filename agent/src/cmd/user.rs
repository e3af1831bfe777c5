//! `phiwatch user`: console accounts.

use super::StoreArgs;
use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use phiwatch::store::Store;

#[derive(Subcommand)]
pub enum UserCmd {
    /// Add an account. The password is asked on the terminal (twice), or read from the first
    /// line of standard input with --password-stdin; at least 12 characters.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// User name (letters, digits, - _ . @).
        name: String,
        #[arg(long, value_parser = ["privacy-officer", "investigator", "auditor", "admin"])]
        role: String,
        /// The person's id in the staff directory: what they view in the console is judged as
        /// their access (self, family, coworker...). Without it views are recorded as
        /// console:NAME.
        #[arg(long)]
        staff_id: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts with role and staff id.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an account; its sessions end at once.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
    /// The console's sign-in trail: sign-ins, refused sign-ins, role changes given by the
    /// identity provider, and sign-outs, oldest first, with the client's address.
    Log {
        #[command(flatten)]
        store: StoreArgs,
        /// How many of the newest entries to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Set a new password; the account's sessions end at once. Accounts made by single
    /// sign-on have no password.
    Passwd {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

pub fn run(c: UserCmd) -> Result<()> {
    let store = match &c {
        UserCmd::Add { store, .. }
        | UserCmd::List { store }
        | UserCmd::Remove { store, .. }
        | UserCmd::Log { store, .. }
        | UserCmd::Passwd { store, .. } => store,
    };
    let cfg = phiwatch::config::Config::load(&store.config)?;
    if let Some(db) = &cfg.database {
        return fleet(c, db);
    }
    use phiwatch::console::{accounts, authz::Role};
    match c {
        UserCmd::Add {
            store,
            name,
            role,
            staff_id,
            password_stdin,
        } => {
            let conn = user_store(&store)?;
            let role = Role::parse(&role).context("unknown role")?;
            let password = read_password(password_stdin)?;
            accounts::add(&conn, &name, role, staff_id.as_deref(), &password)?;
            println!("user {name} added ({})", role.as_str());
        }
        UserCmd::List { store } => {
            print_accounts(&accounts::list(&user_store(&store)?)?);
        }
        UserCmd::Log { store, limit } => {
            print_trail(&phiwatch::console::trail::recent(
                &user_store(&store)?,
                limit,
            )?);
        }
        UserCmd::Remove { store, name } => {
            accounts::remove(&mut user_store(&store)?, &name)?;
            println!("user {name} removed; their sessions ended");
        }
        UserCmd::Passwd {
            store,
            name,
            password_stdin,
        } => {
            let mut conn = user_store(&store)?;
            let password = read_password(password_stdin)?;
            accounts::set_password(&mut conn, &name, &password)?;
            println!("password of {name} changed; their sessions ended");
        }
    }
    Ok(())
}

fn print_accounts(list: &[phiwatch::console::accounts::Account]) {
    println!("{:<24} {:<16} staff id", "user", "role");
    for a in list {
        println!(
            "{:<24} {:<16} {}",
            a.name,
            a.role.as_str(),
            a.staff_id.as_deref().unwrap_or("-")
        );
    }
}

fn print_trail(entries: &[phiwatch::console::trail::Entry]) {
    println!(
        "{:<20} {:<12} {:<24} {:<9} {:<16} detail",
        "at (UTC)", "event", "user", "method", "client"
    );
    for e in entries {
        let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{at:<20} {:<12} {:<24} {:<9} {:<16} {}",
            e.event,
            if e.user.is_empty() { "-" } else { &e.user },
            e.method,
            e.client,
            e.detail
        );
    }
}

/// `phiwatch user` on the fleet's database: the accounts every console node signs in with.
fn fleet(c: UserCmd, db: &phiwatch::fleet::pg::DatabaseConfig) -> Result<()> {
    use phiwatch::console::{authz::Role, fleet};
    let (rt, mut client) = super::alert_store::fleet_client(db)?;
    match c {
        UserCmd::Add {
            name,
            role,
            staff_id,
            password_stdin,
            ..
        } => {
            let role = Role::parse(&role).context("unknown role")?;
            let password = read_password(password_stdin)?;
            rt.block_on(fleet::add_account(
                &client,
                &name,
                role,
                staff_id.as_deref(),
                &password,
            ))?;
            println!("user {name} added ({})", role.as_str());
        }
        UserCmd::List { .. } => print_accounts(&rt.block_on(fleet::accounts_list(&client))?),
        UserCmd::Log { limit, .. } => {
            print_trail(&rt.block_on(fleet::trail_recent(&client, limit))?)
        }
        UserCmd::Remove { name, .. } => {
            rt.block_on(fleet::remove_account(&mut client, &name))?;
            println!("user {name} removed; their sessions ended on every console node");
        }
        UserCmd::Passwd {
            name,
            password_stdin,
            ..
        } => {
            let password = read_password(password_stdin)?;
            rt.block_on(fleet::set_password(&mut client, &name, &password))?;
            println!("password of {name} changed; their sessions ended on every console node");
        }
    }
    Ok(())
}

/// The store of the configured agent, created if the agent has not run yet.
pub fn user_store(s: &StoreArgs) -> Result<rusqlite::Connection> {
    // SAFETY: umask(2) only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let cfg = phiwatch::config::Config::load(&s.config)?;
    // Accounts made on a fleet node's disk would be no one's: refused with the reason.
    let db = super::sqlite_store(&cfg)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    Store::open(&db)?;
    Ok(Store::open_existing(&db)?)
}

pub fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = rpassword::prompt_password("password: ").context("reading the password")?;
    let again = rpassword::prompt_password("again: ").context("reading the password")?;
    if first != again {
        bail!("the passwords differ");
    }
    Ok(first)
}
