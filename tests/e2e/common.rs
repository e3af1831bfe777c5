//! Helpers shared by the end-to-end tests: run the real `phiwatch` binary on fixtures.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

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

/// A TLS client connection to `127.0.0.1:port` that trusts `ca_pem` for "localhost",
/// optionally presenting a client certificate (PEM cert, PEM key).
pub fn tls_connect(
    port: u16,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    Ok(rustls::StreamOwned::new(conn, sock))
}
