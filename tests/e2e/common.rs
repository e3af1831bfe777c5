//! Helpers shared by the end-to-end tests: run the real `phiwatch` binary on fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn phiwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phiwatch"))
        .args(args)
        .env_remove("PHIWATCH_LOG")
        .output()
        .expect("run phiwatch")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn findings(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("finding {l}: {e}")))
        .collect()
}

/// Generates a demo data set of `events` AuditEvents into `dir` (context/, events.ndjson).
pub fn demo_set(dir: &Path, events: usize) -> PathBuf {
    let out = phiwatch(&[
        "demo",
        "--generate-only",
        "--events",
        &events.to_string(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.to_owned()
}

/// A self-signed certificate for "localhost": `D/cert.pem`, `D/key.pem`. Returns the
/// certificate's PEM, for clients to trust.
pub fn write_localhost_cert(d: &Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    std::fs::write(d.join("cert.pem"), &pem).unwrap();
    std::fs::write(d.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    pem
}
