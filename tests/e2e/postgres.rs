//! A throwaway PostgreSQL cluster for the fleet tests: Debian's `postgresql` server binaries
//! (`.ci/run` and `tests/run` install the package), a data directory under the test's own
//! temporary directory, listening on loopback only, stopped when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    pub port: u16,
    pub dir: tempfile::TempDir,
    server: Child,
}

/// Where the server binaries are: `PHIWATCH_PG_BIN`, else the newest Debian
/// `/usr/lib/postgresql/<version>/bin`, else `PATH`.
fn bin(name: &str) -> PathBuf {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TLS material for the server: (certificate PEM, key PEM), put in the data directory.
pub struct ServerTls {
    pub cert: String,
    pub key: String,
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    pub fn start_with(tls: Option<ServerTls>) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown of the cluster's directory");
        }
        let out = as_server(&bin("initdb"))
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
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (install Debian's postgresql package)",
                    bin("initdb").display()
                )
            });
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut ssl = Vec::new();
        if let Some(t) = tls {
            std::fs::write(data.join("server.crt"), t.cert).unwrap();
            std::fs::write(data.join("server.key"), t.key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            if is_root() {
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .status()
                    .unwrap();
            }
            ssl = vec!["-c", "ssl=on"];
        }
        let port = free_port();
        let server = as_server(&bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // A throwaway cluster: the tests kill phiwatch, never the server.
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .args(ssl)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let pg = Postgres { port, dir, server };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg.psql("postgres", "CREATE DATABASE phiwatch");
        pg
    }

    /// A URL for the `phiwatch` database on loopback.
    pub fn url(&self) -> String {
        format!("postgres://phiwatch@127.0.0.1:{}/phiwatch", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL with psql; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
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
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
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
