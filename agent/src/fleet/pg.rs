//! Connecting to the fleet's PostgreSQL: TLS with the server's certificate and name checked
//! whenever the server is not on this machine, and always to the read-write primary.

use super::FleetError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode, TargetSessionAttrs};
use tokio_postgres::{Client, Config};

/// Where the fleet's database is: `url` is a libpq URL or key=value string
/// (`postgres://phiwatch@db1,db2/phiwatch`); `ca_file` the PEM CA that signed the servers'
/// certificates.
#[derive(Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Months of accesses kept (`phiwatch retention`): HIPAA asks for six years.
    #[serde(default = "default_retention")]
    pub retention_months: u32,
    /// Where `phiwatch retention` writes each month it drops, as CSV with its SHA-256.
    /// Without it months past retention are kept until it is set (or `--no-archive`).
    #[serde(default)]
    pub archive_dir: Option<std::path::PathBuf>,
}

fn default_retention() -> u32 {
    super::retention::DEFAULT_MONTHS
}

/// Without the URL's password: a config printed for debugging must not hand it out.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &describe(&self.url))
            .field("ca_file", &self.ca_file)
            .field("retention_months", &self.retention_months)
            .field("archive_dir", &self.archive_dir)
            .finish()
    }
}

impl DatabaseConfig {
    /// The database at `url` with the defaults for everything else.
    pub fn at(url: impl Into<String>, ca_file: Option<std::path::PathBuf>) -> Self {
        DatabaseConfig {
            url: url.into(),
            ca_file,
            retention_months: default_retention(),
            archive_dir: None,
        }
    }
}

/// A transaction idle longer than this is ended by the server: a detector stopped in the
/// middle of one (SIGSTOP, a VM paused) then holds no lock a standby must wait for, and its
/// late COMMIT fails.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// The URL without its password, for messages.
pub fn describe(url: &str) -> String {
    match url.parse::<Config>() {
        Ok(c) => {
            // As libpq: one port applies to every host; none means 5432.
            let ports = c.get_ports();
            let port = |i: usize| match ports {
                [one] => *one,
                _ => ports.get(i).copied().unwrap_or(5432),
            };
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .enumerate()
                .map(|(i, h)| (h, port(i)))
                .map(|(h, p)| match h {
                    Host::Tcp(h) => format!("{h}:{p}"),
                    Host::Unix(d) => format!("{}:{p}", d.display()),
                })
                .collect();
            format!(
                "{}@{}/{}",
                c.get_user().unwrap_or("?"),
                hosts.join(","),
                c.get_dbname().unwrap_or("?")
            )
        }
        Err(_) => "an unreadable URL".to_owned(),
    }
}

fn on_this_machine(h: &Host) -> bool {
    match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Connects as `application` (shown in `pg_stat_activity`). Patient data crosses this
/// connection: to a server elsewhere it must be TLS with a CA to check it against.
pub async fn connect(db: &DatabaseConfig, application: &str) -> Result<Client, FleetError> {
    let mut cfg: Config = db
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| FleetError::Url(super::safe_detail(&e)))?;
    let at = describe(&db.url);
    if !db.url.contains("target_session_attrs") {
        // Several hosts are the primary and its standbys: after a failover the client finds
        // whichever is now the primary.
        cfg.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    cfg.application_name(application);
    cfg.connect_timeout(Duration::from_secs(10));
    // Appended to any options the URL gives, not in their place.
    let idle = format!(
        "-c idle_in_transaction_session_timeout={}",
        IDLE_IN_TRANSACTION.as_millis()
    );
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {idle}"),
        _ => idle,
    };
    cfg.options(options);
    let fail = |e: tokio_postgres::Error| FleetError::Connect {
        at: at.clone(),
        detail: super::safe_detail(&e),
    };
    match &db.ca_file {
        Some(ca) => {
            if cfg.get_ssl_mode() == SslMode::Disable {
                return Err(FleetError::Url(
                    "sslmode=disable contradicts ca_file: remove one".to_owned(),
                ));
            }
            cfg.ssl_mode(SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(ca)?);
            let (client, conn) = cfg.connect(tls).await.map_err(fail)?;
            spawn_connection(conn, at.clone());
            Ok(client)
        }
        None => {
            if let Some(h) = cfg.get_hosts().iter().find(|h| !on_this_machine(h)) {
                let name = match h {
                    Host::Tcp(n) => n.clone(),
                    Host::Unix(d) => d.display().to_string(),
                };
                return Err(FleetError::Url(format!(
                    "{name} is not this machine: set ca_file to the CA that signed its \
                     certificate, so the connection is encrypted and the server checked"
                )));
            }
            cfg.ssl_mode(SslMode::Disable);
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(fail)?;
            spawn_connection(conn, at.clone());
            Ok(client)
        }
    }
}

fn spawn_connection<F>(conn: F, at: String)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(database = %at, "PostgreSQL connection ended: {}", super::safe_detail(&e));
        }
    });
}

fn client_tls(ca: &Path) -> Result<rustls::ClientConfig, FleetError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let err = |detail: String| FleetError::Ca {
        path: ca.display().to_string(),
        detail,
    };
    let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the file".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Runs `sql` and hands each row to `each` as the server sends it: a report's window of a
/// large system's rows is never held at once.
pub async fn each_row<P, I>(
    client: &Client,
    what: &'static str,
    sql: &str,
    params: I,
    each: &mut dyn FnMut(tokio_postgres::Row),
) -> Result<(), FleetError>
where
    P: tokio_postgres::types::BorrowToSql,
    I: IntoIterator<Item = P>,
    I::IntoIter: ExactSizeIterator,
{
    use futures_util::TryStreamExt;
    let e = FleetError::sql(what);
    let rows = client.query_raw(sql, params).await.map_err(&e)?;
    let mut rows = std::pin::pin!(rows);
    while let Some(r) = rows.try_next().await.map_err(&e)? {
        each(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_and_debug_output_leave_the_password_out() {
        let db = DatabaseConfig::at("postgres://phiwatch:s3cret@db1:5433,db2/phiwatch", None);
        assert_eq!(describe(&db.url), "phiwatch@db1:5433,db2:5432/phiwatch");
        assert!(!format!("{db:?}").contains("s3cret"), "{db:?}");
        assert_eq!(
            describe("host=/run/postgresql user=pw dbname=x"),
            "pw@/run/postgresql:5432/x"
        );
    }
}
