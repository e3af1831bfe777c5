//! Fleet mode's store on PostgreSQL (issue 18): what several nodes of one health system share.
//!
//! Collectors append numbered batches of raw records with their source's checkpoint in one
//! transaction (`queue`); exactly one detector holds a lease whose epoch every one of its write
//! transactions checks (`lease`), so a paused or partitioned old detector can never commit;
//! the schema is versioned (`schema`) and accesses are partitioned by month (`retention`).
//! The connection (`pg`) follows a failover (`target_session_attrs=read-write`) and checks
//! the server's certificate and name when it is not on this machine.
//!
//! PostgreSQL's own high availability (streaming replication, Patroni or a managed service)
//! is the operator's: phiwatch only needs one read-write primary to find.

pub mod lease;
pub mod node;
pub mod outbox;
pub mod pg;
pub mod queue;
pub mod retention;
pub mod schema;
pub mod state;
pub mod store;

pub use lease::Lease;
pub use node::{FleetConfig, Role};

/// What `phiwatch check` and `phiwatch migrate` say about the fleet's database.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The database, without its password.
    pub at: String,
    pub schema: i32,
    pub lease: Option<lease::LeaseState>,
    /// Batches appended and not yet applied (when the schema is current).
    pub backlog: Option<i64>,
}

/// Connects and reads the schema version, the lease and the backlog.
pub async fn status(db: &pg::DatabaseConfig) -> Result<Status, FleetError> {
    let client = pg::connect(db, "phiwatch-check").await?;
    let schema = schema::version(&client).await?;
    let current = schema == schema::latest();
    Ok(Status {
        at: pg::describe(&db.url),
        schema,
        lease: match current {
            true => lease::current(&client).await?,
            false => None,
        },
        backlog: match current {
            true => Some(queue::backlog(&client).await?),
            false => None,
        },
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database {}: schema version {}", self.at, self.schema)?;
        match &self.lease {
            Some(l) if l.expires_in > 0.0 => write!(
                f,
                "; detector lease held by {} (epoch {}, {:.0} s left)",
                l.holder, l.epoch, l.expires_in
            )?,
            Some(l) => write!(f, "; detector lease free (last epoch {})", l.epoch)?,
            None => write!(f, "; no detector has held the lease")?,
        }
        if let Some(b) = self.backlog {
            write!(f, "; {b} batch(es) waiting for detection")?;
        }
        Ok(())
    }
}

/// What went wrong talking to the fleet's database. Database errors carry SQLSTATE and the
/// server's message only: PostgreSQL's DETAIL lines quote key values (ids, patients), which
/// must not reach logs.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("database URL: {0}")]
    Url(String),
    #[error("reading the database's CA certificates from {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("connecting to PostgreSQL ({at}): {detail}")]
    Connect { at: String, detail: String },
    #[error("PostgreSQL, {what}: {detail}")]
    Sql { what: &'static str, detail: String },
    #[error(
        "this detector's lease (epoch {epoch}) is no longer current: another detector has taken \
         over, and nothing of this transaction was committed"
    )]
    Fenced { epoch: i64 },
    #[error(
        "the database's schema is version {found}, newer than this phiwatch knows ({known}): \
         upgrade phiwatch on this node"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error(
        "the database's schema is version {found}; this phiwatch needs {known}: run `phiwatch \
         migrate --database ...` once"
    )]
    SchemaBehind { found: i32, known: i32 },
    #[error("batch {seq} of source {name} follows {done}: batches are applied in order")]
    OutOfOrder { name: String, seq: i64, done: i64 },
}

impl FleetError {
    pub(crate) fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> FleetError {
        move |e| FleetError::Sql {
            what,
            detail: safe_detail(&e),
        }
    }
}

/// SQLSTATE and message, never DETAIL (which quotes the values of a violated key).
pub(crate) fn safe_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => crate::errors::chain(e),
    }
}
