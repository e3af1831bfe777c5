//! A throwaway PostgreSQL cluster: Debian's `postgresql` server binaries, a data directory
//! under a temporary directory, listening on loopback only, stopped when dropped. For
//! `phiwatch bench --fleet` without `--database`, and for the fleet tests.

use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Throwaway {
    pub port: u16,
    pub dir: tempfile::TempDir,
    server: Child,
}

/// Where the server binaries are: `PHIWATCH_PG_BIN`, else the newest Debian
/// `/usr/lib/postgresql/<version>/bin`, else `PATH`.
pub fn bin(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("PHIWATCH_PG_BIN") {
        return PathBuf::from(d).join(name);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, d)) => d.join(name),
        None => PathBuf::from(name),
    }
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// PostgreSQL refuses to run as root: as root, the `postgres` account runs it.
fn as_server(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_server(paths: &[&Path]) -> Result<()> {
    if is_root() {
        let st = Command::new("chown")
            .arg("postgres:postgres")
            .args(paths)
            .status()
            .context("chown")?;
        if !st.success() {
            bail!("chown postgres:postgres failed (is there a postgres account?)");
        }
    }
    Ok(())
}

/// Starts the server on a free loopback port and waits until it answers. A port the kernel
/// picked can be taken by any outgoing connection before the server binds it: a server that
/// exits at start is started again on another port.
fn serve(dir: &Path, data: &Path, ssl: &[&str]) -> Result<(u16, Child)> {
    let log = dir.join("server.log");
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server = as_server(&bin("postgres"))
            .arg("-D")
            .arg(data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ])
            .args(ssl)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .context("starting postgres")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok((port, server));
            }
            if server.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                bail!(
                    "PostgreSQL did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    bail!(
        "PostgreSQL did not start in three tries: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    )
}

/// TLS material for the server (PEM), put in its data directory.
pub struct ServerTls {
    pub cert: String,
    pub key: String,
}

impl Throwaway {
    /// Makes and starts a cluster with a `phiwatch` database and a `phiwatch` superuser
    /// that loopback clients reach without a password.
    pub fn start(tls: Option<ServerTls>) -> Result<Throwaway> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        chown_to_server(&[dir.path()])?;
        let initdb = bin("initdb");
        let out = as_server(&initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "phiwatch",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .with_context(|| {
                format!("{} (install Debian's postgresql package)", initdb.display())
            })?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut ssl = Vec::new();
        if let Some(t) = tls {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(data.join("server.crt"), t.cert)?;
            std::fs::write(data.join("server.key"), t.key)?;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )?;
            chown_to_server(&[&data.join("server.crt"), &data.join("server.key")])?;
            ssl = vec!["-c", "ssl=on"];
        }
        let (port, server) = serve(dir.path(), &data, &ssl)?;
        let pg = Throwaway { port, dir, server };
        pg.psql("postgres", "CREATE DATABASE phiwatch")?;
        Ok(pg)
    }

    /// A URL for the `phiwatch` database on loopback.
    pub fn url(&self) -> String {
        format!("postgres://phiwatch@127.0.0.1:{}/phiwatch", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL with psql; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(bin("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "phiwatch",
            ])
            .args(["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .context("psql")?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// `db` if given, else a throwaway cluster on loopback (kept alive by the returned guard).
pub fn given_or_throwaway(
    db: Option<crate::fleet::pg::DatabaseConfig>,
) -> Result<(crate::fleet::pg::DatabaseConfig, Option<Throwaway>)> {
    Ok(match db {
        Some(db) => (db, None),
        None => {
            let t = Throwaway::start(None)?;
            (crate::fleet::pg::DatabaseConfig::at(t.url(), None), Some(t))
        }
    })
}
