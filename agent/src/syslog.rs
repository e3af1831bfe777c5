//! IHE ATNA syslog receivers: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) and TLS
//! (RFC 5425). Stream transports accept octet-counting framing (`LEN SP MSG`) and, for
//! senders that use it, newline-terminated framing; each frame is checked independently.
//!
//! A received message's MSG part (the AuditMessage XML) is appended to the source's spool, so
//! it is on disk before the next frame is read; detection reads it from there.

use crate::config::{SyslogSource, Transport};
use crate::spool::{IntakeMetrics, SharedSpool};
use anyhow::{bail, Context as _, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

pub enum Listener {
    Udp(UdpSocket),
    Tcp(TcpListener),
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
}

/// Binds the listener (and loads TLS material) so configuration mistakes fail at start-up.
pub async fn bind(src: &SyslogSource) -> Result<Listener> {
    let at = src.listen;
    Ok(match src.transport {
        Transport::Udp => Listener::Udp(
            UdpSocket::bind(at)
                .await
                .with_context(|| format!("source {:?}: binding UDP {at}", src.name))?,
        ),
        Transport::Tcp => Listener::Tcp(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("source {:?}: binding TCP {at}", src.name))?,
        ),
        Transport::Tls => {
            let acceptor =
                tls_acceptor(src).with_context(|| format!("source {:?}: TLS", src.name))?;
            let l = TcpListener::bind(at)
                .await
                .with_context(|| format!("source {:?}: binding TLS {at}", src.name))?;
            Listener::Tls(l, acceptor)
        }
    })
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Udp(s) => s.local_addr(),
            Listener::Tcp(l) | Listener::Tls(l, _) => l.local_addr(),
        }
    }
}

pub fn tls_acceptor(src: &SyslogSource) -> Result<tokio_rustls::TlsAcceptor> {
    let (Some(cert), Some(key)) = (&src.tls_cert, &src.tls_key) else {
        bail!("tls_cert and tls_key are required");
    };
    server_tls(cert, key, src.tls_client_ca.as_deref(), &[])
}

/// A TLS acceptor from PEM files: the certificate chain, its key, optionally a CA that client
/// certificates must chain to, and the ALPN protocols offered.
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: no PEM private key in it", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("{}: unusable CA certificate", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))
}

/// Serves until the task is dropped (the runtime shuts down with the agent).
pub async fn serve(
    listener: Listener,
    name: String,
    max: usize,
    spool: SharedSpool,
    metrics: Arc<IntakeMetrics>,
) {
    match listener {
        Listener::Udp(sock) => {
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((n, _peer)) => accept(&buf[..n], max, &name, &spool, &metrics),
                    Err(e) => tracing::warn!(source = %name, "UDP receive: {e}"),
                }
            }
        }
        Listener::Tcp(l) => loop {
            match l.accept().await {
                Ok((stream, peer)) => {
                    metrics.connections.fetch_add(1, Ordering::Relaxed);
                    let (name, spool, m) = (name.clone(), spool.clone(), metrics.clone());
                    tokio::spawn(
                        async move { read_stream(stream, peer, max, name, spool, m).await },
                    );
                }
                Err(e) => tracing::warn!(source = %name, "TCP accept: {e}"),
            }
        },
        Listener::Tls(l, acceptor) => loop {
            match l.accept().await {
                Ok((stream, peer)) => {
                    metrics.connections.fetch_add(1, Ordering::Relaxed);
                    let (name, spool, m) = (name.clone(), spool.clone(), metrics.clone());
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor.accept(stream).await {
                            Ok(tls) => read_stream(tls, peer, max, name, spool, m).await,
                            Err(e) => {
                                m.rejected.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(source = %name, %peer, "TLS handshake failed: {e}");
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(source = %name, "TLS accept: {e}"),
            }
        },
    }
}

async fn read_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    max: usize,
    name: String,
    spool: SharedSpool,
    metrics: Arc<IntakeMetrics>,
) {
    let mut r = BufReader::new(stream);
    loop {
        match read_frame(&mut r, max).await {
            Ok(Some(frame)) => accept(&frame, max, &name, &spool, &metrics),
            Ok(None) => {
                // A clean end: answer the sender's close (TLS close_notify) before closing.
                let _ = r.into_inner().shutdown().await;
                return;
            }
            Err(e) => {
                metrics.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = %name, %peer, "closing the connection: {e}");
                return;
            }
        }
    }
}

/// One frame of a syslog stream: `LEN SP MSG` (octet counting) or `MSG LF`.
/// `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::{Error, ErrorKind};
    // Skip stray line ends between frames.
    let first = loop {
        let buf = r.fill_buf().await?;
        match buf.first() {
            None => return Ok(None),
            Some(b'\n' | b'\r' | b' ') => r.consume(1),
            Some(&b) => break b,
        }
    };
    if first.is_ascii_digit() {
        let mut len: usize = 0;
        let mut digits = 0;
        loop {
            let b = r.read_u8().await?;
            if b == b' ' {
                break;
            }
            if !b.is_ascii_digit() || digits >= 9 {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "bad octet-counting length",
                ));
            }
            len = len * 10 + usize::from(b - b'0');
            digits += 1;
        }
        if len > max {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("message of {len} bytes exceeds max_message_bytes {max}"),
            ));
        }
        let mut msg = vec![0u8; len];
        r.read_exact(&mut msg).await?;
        Ok(Some(msg))
    } else if first == b'<' {
        let mut msg = Vec::new();
        let n = (&mut *r)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut msg)
            .await?;
        if n > max {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("newline-framed message exceeds max_message_bytes {max}"),
            ));
        }
        while matches!(msg.last(), Some(b'\n' | b'\r')) {
            msg.pop();
        }
        Ok(Some(msg))
    } else {
        Err(Error::new(
            ErrorKind::InvalidData,
            "frame starts with neither a length nor '<'",
        ))
    }
}

fn accept(frame: &[u8], max: usize, name: &str, spool: &SharedSpool, m: &IntakeMetrics) {
    if frame.len() > max {
        m.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %name, bytes = frame.len(), "message exceeds max_message_bytes; dropped");
        return;
    }
    let msg = match message_body(frame) {
        Ok(b) => b,
        Err(why) => {
            m.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %name, "not a syslog message: {why}");
            return;
        }
    };
    m.received.fetch_add(1, Ordering::Relaxed);
    let result = spool
        .lock()
        .map_err(|_| "spool lock poisoned".to_owned())
        .and_then(|mut s| s.append(msg).map_err(|e| e.to_string()));
    if let Err(e) = result {
        m.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::error!(source = %name, "writing the spool: {e}");
    }
}

/// The MSG part of an RFC 5424 message (or, leniently, of an RFC 3164 one): what follows the
/// header and structured data, without a UTF-8 byte order mark.
pub fn message_body(frame: &[u8]) -> Result<&[u8], &'static str> {
    let rest = frame.strip_prefix(b"<").ok_or("no <PRI>")?;
    let close = rest
        .iter()
        .take(4)
        .position(|&b| b == b'>')
        .ok_or("bad <PRI>")?;
    let pri = std::str::from_utf8(&rest[..close])
        .ok()
        .and_then(|p| p.parse::<u8>().ok());
    if pri.is_none_or(|p| p > 191) {
        return Err("bad <PRI>");
    }
    let rest = &rest[close + 1..];
    let body = if rest.starts_with(b"1 ") {
        rfc5424_msg(&rest[2..]).ok_or("truncated RFC 5424 header")?
    } else {
        // RFC 3164 has no reliable field boundaries; an audit message starts at its first '<'.
        let at = rest
            .iter()
            .position(|&b| b == b'<')
            .ok_or("no XML in the message")?;
        &rest[at..]
    };
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    Ok(body)
}

/// Skips TIMESTAMP HOSTNAME APP-NAME PROCID MSGID and STRUCTURED-DATA.
fn rfc5424_msg(mut s: &[u8]) -> Option<&[u8]> {
    for _ in 0..5 {
        let sp = s.iter().position(|&b| b == b' ')?;
        s = &s[sp + 1..];
    }
    if let Some(rest) = s.strip_prefix(b"-") {
        s = rest;
    } else {
        // One or more [id param="value" ...] elements; values escape \" \\ and \].
        while s.first() == Some(&b'[') {
            let mut i = 1;
            let mut quoted = false;
            loop {
                match *s.get(i)? {
                    b'\\' if quoted => i += 1,
                    b'"' => quoted = !quoted,
                    b']' if !quoted => break,
                    _ => {}
                }
                i += 1;
            }
            s = &s[i + 1..];
        }
    }
    Some(s.strip_prefix(b" ").unwrap_or(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_bodies() {
        let m =
            b"<85>1 2026-03-01T10:00:00Z host atna-audit.js 4242 IHE+RFC-3881 - <AuditMessage/>";
        assert_eq!(message_body(m).unwrap(), b"<AuditMessage/>");
        let sd = b"<13>1 2026-03-01T10:00:00Z h app - ID47 [ex@32473 iut=\"3\" note=\"a \\] b\"][x@1 y=\"z\"] \xEF\xBB\xBF<AuditMessage/>";
        assert_eq!(message_body(sd).unwrap(), b"<AuditMessage/>");
        let bsd = b"<34>Oct 11 22:14:15 mymachine ehr: <AuditMessage/>";
        assert_eq!(message_body(bsd).unwrap(), b"<AuditMessage/>");
        assert!(message_body(b"hello").is_err());
        assert!(message_body(b"<999>1 x").is_err());
        assert!(message_body(b"<13>1 2026 h app").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stream_framing() {
        let data: &[u8] = b"4 <a/>\n\n<13>1 - - - - - - <b/>\n9 <c>";
        let mut r = BufReader::new(data);
        assert_eq!(read_frame(&mut r, 100).await.unwrap().unwrap(), b"<a/>");
        assert_eq!(
            read_frame(&mut r, 100).await.unwrap().unwrap(),
            b"<13>1 - - - - - - <b/>"
        );
        assert!(read_frame(&mut r, 100).await.is_err(), "short frame");
        let mut r = BufReader::new(&b"99999 x"[..]);
        let e = read_frame(&mut r, 1000).await.unwrap_err().to_string();
        assert!(e.contains("exceeds"), "{e}");
        let mut r = BufReader::new(&b"abc"[..]);
        assert!(read_frame(&mut r, 1000).await.is_err());
        let mut r = BufReader::new(&b""[..]);
        assert!(read_frame(&mut r, 1000).await.unwrap().is_none());
    }
}
