//! Running the real agent from a test: start, probe, signal, stop; never leave an orphan.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free for TCP and UDP now, never handed out twice in one test process.
/// Taken from below the kernel's ephemeral range: a port from inside it can be taken by any
/// outgoing connection (a node's connections to PostgreSQL, a browser's) between the pick and
/// the server's bind, which stopped a fleet node from starting.
pub fn free_port() -> u16 {
    use std::net::{TcpListener, UdpSocket};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    if ephemeral_from > 12_000 {
        for _ in 0..2_000 {
            let p = rand::random_range(10_000..ephemeral_from);
            if !given.contains(&p)
                && TcpListener::bind(("127.0.0.1", p)).is_ok()
                && UdpSocket::bind(("127.0.0.1", p)).is_ok()
            {
                given.push(p);
                return p;
            }
        }
    }
    // No room below the ephemeral range: the kernel's pick.
    let p = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    given.push(p);
    p
}

pub fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Kills the agent if a test fails midway, so no orphan outlives the test.
pub struct Agent(pub std::process::Child);

impl Agent {
    pub fn start(config: &std::path::Path) -> Agent {
        Agent::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &std::path::Path, env: &[(&str, &str)]) -> Agent {
        Agent(
            Command::new(env!("CARGO_BIN_EXE_phiwatch"))
                .args(["run", "--config", config.to_str().unwrap()])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    /// SIGTERM, then the exit status and everything the agent logged.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let mut log = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        (self.0.wait().unwrap(), log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn count(db: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(-1)
}

pub fn metric(port: u16, name: &str) -> Option<f64> {
    let body = get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

/// Writes `D/phiwatch.toml`: the agent tails FHIR AuditEvents from `D/logs/*.ndjson` into
/// `D/data`, judges them with `context`, serves metrics on `http`; `extra` adds top-level keys
/// (`routing = "..."`, one per line).
pub fn write_config(d: &Path, http: u16, context: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let config = d.join("phiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/data\"\ncontext = \"{ctx}\"\n{extra}[http]\nlisten = \"127.0.0.1:{http}\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/*.ndjson\"]\nformat = \"fhir-auditevent\"\npoll_ms = 20\n",
            d = d.display(),
            ctx = context.display(),
        ),
    )
    .unwrap();
    config
}

/// Starts the agent with `env` and waits up to `limit` for /healthz to answer 200.
pub fn start_healthy(config: &Path, http: u16, env: &[(&str, &str)], limit: Duration) -> Agent {
    let agent = Agent::start_with_env(config, env);
    assert!(
        wait_for(limit, || get(http, "/healthz")
            .is_some_and(|b| b.contains("200 OK"))),
        "agent never became healthy"
    );
    agent
}
