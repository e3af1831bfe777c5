//! IHE ATNA syslog receivers: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) and TLS
//! (RFC 5425). Stream transports accept octet-counting framing (`LEN SP MSG`) and, for
//! senders that use it, newline-terminated framing; each frame is checked independently.
//!
//! A received message's MSG part (the AuditMessage XML) is appended to the source's spool, so
//! it is on disk before the next frame is read; detection reads it from there.
//!
//! Hostile peers are bounded: connections per listener (`max_connections`), a connection
//! quiet for `idle_timeout_seconds` is closed, a frame must arrive whole within
//! `frame_timeout_seconds`, partly received frames of every connection share one in-flight
//! byte budget (`[limits] inflight_bytes`) reserved before the bytes are read, and the TLS
//! handshake has 10 s. A full spool holds stream senders back; datagrams are dropped and
//! counted (`phiwatch_spool_dropped_total`), as are kernel drops of the UDP socket.

use crate::config::{SyslogSource, Transport};
use crate::net::{self, ConnLimit, RateLimited};
use crate::spool::{AppendError, IntakeMetrics, SharedSpool, Spool};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub enum Listener {
    Udp(UdpSocket),
    Tcp(TcpListener),
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
}

/// Binds the listener (and loads TLS material) so configuration mistakes fail at start-up.
pub async fn bind(src: &SyslogSource) -> Result<Listener, crate::net::BindError> {
    let at = src.listen;
    let binding = |what: &'static str| {
        move |error| crate::net::BindError::Bind {
            name: format!("source {:?}", src.name),
            what,
            at,
            error,
        }
    };
    Ok(match src.transport {
        Transport::Udp => {
            Listener::Udp(bind_udp(at, src.recv_buffer_bytes).map_err(binding("binding UDP"))?)
        }
        Transport::Tcp => Listener::Tcp(
            TcpListener::bind(at)
                .await
                .map_err(binding("binding TCP"))?,
        ),
        Transport::Tls => {
            let acceptor = tls_acceptor(src).map_err(|error| crate::net::BindError::Tls {
                name: format!("source {:?}", src.name),
                error,
            })?;
            let l = TcpListener::bind(at)
                .await
                .map_err(binding("binding TLS"))?;
            Listener::Tls(l, acceptor)
        }
    })
}

/// A UDP socket with the receive buffer asked for: the kernel default (~200 KiB) starts
/// dropping near 10,000 messages/s while detection is busy.
fn bind_udp(at: SocketAddr, recv_buffer: Option<usize>) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(want) = recv_buffer {
        sock.set_recv_buffer_size(want)?;
        // Linux doubles the value asked for, and caps it at net.core.rmem_max.
        let got = sock.recv_buffer_size()?;
        if got < want {
            tracing::warn!(
                asked = want,
                got,
                "UDP receive buffer capped by the kernel: raise net.core.rmem_max"
            );
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&at.into())?;
    UdpSocket::from_std(sock.into())
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Udp(s) => s.local_addr(),
            Listener::Tcp(l) | Listener::Tls(l, _) => l.local_addr(),
        }
    }
}

pub fn tls_acceptor(src: &SyslogSource) -> Result<tokio_rustls::TlsAcceptor, crate::tls::TlsError> {
    let (Some(cert), Some(key)) = (&src.tls_cert, &src.tls_key) else {
        return Err(crate::tls::TlsError::Missing);
    };
    crate::tls::server_tls(cert, key, src.tls_client_ca.as_deref(), &[])
}

/// Limits of one syslog listener, from its source's configuration.
#[derive(Clone)]
pub struct StreamLimits {
    pub max_message: usize,
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle: Duration,
    /// A frame, once started, must arrive whole within this time.
    pub frame: Duration,
    pub handshake: Duration,
    /// Bytes of partly received frames, shared by every stream listener of the agent.
    pub inflight: Arc<Semaphore>,
}

impl StreamLimits {
    pub fn of(src: &SyslogSource, inflight: Arc<Semaphore>) -> Self {
        StreamLimits {
            max_message: src.max_message_bytes,
            max_connections: src.max_connections,
            idle: Duration::from_secs(src.idle_timeout_seconds),
            frame: Duration::from_secs(src.frame_timeout_seconds),
            handshake: Duration::from_secs(src.frame_timeout_seconds),
            inflight,
        }
    }
}

/// Serves until the task is dropped (the runtime shuts down with the agent).
pub async fn serve(
    listener: Listener,
    name: String,
    limits: StreamLimits,
    spool: SharedSpool,
    metrics: Arc<IntakeMetrics>,
) {
    match listener {
        Listener::Udp(sock) => serve_udp(sock, &name, limits.max_message, &spool, &metrics).await,
        Listener::Tcp(l) => serve_streams(l, None, name, limits, spool, metrics).await,
        Listener::Tls(l, acceptor) => {
            serve_streams(l, Some(acceptor), name, limits, spool, metrics).await
        }
    }
}

async fn serve_udp(
    sock: UdpSocket,
    name: &str,
    max: usize,
    spool: &SharedSpool,
    metrics: &IntakeMetrics,
) {
    use std::os::fd::AsRawFd as _;
    // The socket's inode finds its kernel drop counter in /proc/net/udp.
    // SAFETY: fstat only fills the struct for a descriptor this socket owns.
    let inode = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(sock.as_raw_fd(), &mut st) == 0 {
            st.st_ino
        } else {
            0
        }
    };
    metrics.udp_inode.store(inode, Ordering::Relaxed);
    let errors = RateLimited::new(Duration::from_secs(10));
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, _peer)) => {
                if let Some(msg) = admit(&buf[..n], max, name, metrics) {
                    // A datagram cannot be held back: at the cap it is dropped, counted
                    // and alarmed on (never silently).
                    let r = spool
                        .lock()
                        .map_err(|_| AppendError::Io(std::io::Error::other("spool lock poisoned")))
                        .and_then(|mut s| s.append(msg));
                    spooled(r, name, metrics);
                }
            }
            Err(e) => {
                if let Some(n) = errors.hit() {
                    tracing::warn!(source = %name, "UDP receive failed {n} time(s): {e}");
                }
            }
        }
    }
}

fn spooled(r: Result<(), AppendError>, name: &str, m: &IntakeMetrics) {
    static FULL: RateLimited = RateLimited::new(Duration::from_secs(10));
    static FAILED: RateLimited = RateLimited::new(Duration::from_secs(10));
    match r {
        Ok(()) => {
            m.received.fetch_add(1, Ordering::Relaxed);
        }
        Err(AppendError::Full(f)) => {
            m.spool_dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = FULL.hit() {
                tracing::error!(source = %name, "{f}; {n} message(s) dropped (phiwatch_spool_dropped_total)");
            }
        }
        Err(AppendError::Io(e)) => {
            m.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = FAILED.hit() {
                tracing::error!(source = %name, "writing the spool failed {n} time(s): {e}");
            }
        }
    }
}

async fn serve_streams(
    l: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: String,
    limits: StreamLimits,
    spool: SharedSpool,
    metrics: Arc<IntakeMetrics>,
) {
    let cap = ConnLimit::with_counter(limits.max_connections, metrics.refused.clone());
    let accept_log = RateLimited::new(Duration::from_secs(10));
    let cap_log = RateLimited::new(Duration::from_secs(10));
    loop {
        let (stream, peer) = net::accept(&l, &name, &metrics.accept_errors, &accept_log).await;
        let Some(slot) = cap.admit() else {
            if let Some(n) = cap_log.hit() {
                tracing::warn!(source = %name, "{n} connection(s) refused at the cap of {} (max_connections)", limits.max_connections);
            }
            drop(stream);
            continue;
        };
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        let (name, spool, m, limits, tls) = (
            name.clone(),
            spool.clone(),
            metrics.clone(),
            limits.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => read_stream(stream, peer, &limits, &name, &spool, &m).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => read_stream(s, peer, &limits, &name, &spool, &m).await,
                        Ok(Err(e)) => {
                            // Anyone can open a connection and close it: said once per 10 s.
                            static FAILED: RateLimited = RateLimited::new(Duration::from_secs(10));
                            m.rejected.fetch_add(1, Ordering::Relaxed);
                            if let Some(n) = FAILED.hit() {
                                tracing::warn!(source = %name, %peer, "TLS handshake failed ({n} since last said): {e}");
                            }
                        }
                        Err(_) => {
                            m.timeouts.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(source = %name, %peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// Why a stream connection was closed.
enum Closed {
    Clean,
    Idle,
    FrameTimeout,
    Bad(std::io::Error),
}

async fn read_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    limits: &StreamLimits,
    name: &str,
    spool: &SharedSpool,
    metrics: &IntakeMetrics,
) {
    let mut r = BufReader::new(stream);
    let why = loop {
        // Between frames a sender may be quiet, but not forever.
        match tokio::time::timeout(limits.idle, r.fill_buf()).await {
            Err(_) => break Closed::Idle,
            Ok(Err(e)) => break Closed::Bad(e),
            Ok(Ok([])) => break Closed::Clean,
            Ok(Ok(_)) => {}
        }
        let frame = tokio::time::timeout(
            limits.frame,
            read_frame_budgeted(&mut r, limits.max_message, &limits.inflight),
        )
        .await;
        match frame {
            Err(_) => break Closed::FrameTimeout,
            Ok(Err(e)) => break Closed::Bad(e),
            Ok(Ok(None)) => break Closed::Clean,
            Ok(Ok(Some((frame, budget)))) => {
                if let Some(msg) = admit(&frame, limits.max_message, name, metrics) {
                    // A full spool holds this sender back (its TCP window closes) rather
                    // than losing what it sent.
                    let msg = msg.to_vec();
                    let spool = spool.clone();
                    let patience = limits.frame.max(Duration::from_secs(60));
                    let r = tokio::task::spawn_blocking(move || {
                        Spool::append_waiting(&spool, &msg, patience)
                    })
                    .await
                    .unwrap_or_else(|e| Err(AppendError::Io(std::io::Error::other(e))));
                    // Still no room after waiting: close, so the sender sees the failure
                    // rather than writing on into records that are counted and dropped.
                    let full = match &r {
                        Err(AppendError::Full(_)) => true,
                        Err(AppendError::Io(e)) => crate::spool::is_disk_full(e),
                        Ok(()) => false,
                    };
                    spooled(r, name, metrics);
                    if full {
                        break Closed::Bad(std::io::Error::other("spool full"));
                    }
                }
                drop(budget);
            }
        }
    };
    match why {
        Closed::Clean => {
            // A clean end: answer the sender's close (TLS close_notify) before closing.
            let _ = r.into_inner().shutdown().await;
        }
        Closed::Idle => {
            metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %name, %peer, "closing an idle connection");
        }
        Closed::FrameTimeout => {
            metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %name, %peer, "closing the connection: a frame did not arrive whole in time");
        }
        Closed::Bad(e) => {
            metrics.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %name, %peer, "closing the connection: {e}");
        }
    }
}

/// Reads one frame while holding its bytes against the shared in-flight budget: an
/// octet-counted frame reserves its announced length before any of it is read, a
/// newline-framed one reserves as it grows. The permit is returned with the frame, so the
/// bytes count until the frame is spooled.
pub async fn read_frame_budgeted<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    max: usize,
    budget: &Arc<Semaphore>,
) -> std::io::Result<Option<(Vec<u8>, Option<OwnedSemaphorePermit>)>> {
    use std::io::{Error, ErrorKind};
    let first = loop {
        let buf = r.fill_buf().await?;
        match buf.first() {
            None => return Ok(None),
            Some(b'\n' | b'\r' | b' ') => r.consume(1),
            Some(&b) => break b,
        }
    };
    let reserve = |n: usize| {
        let budget = budget.clone();
        async move {
            budget
                .acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
                .await
                .map_err(|_| Error::other("in-flight budget closed"))
        }
    };
    if first.is_ascii_digit() {
        let len = read_length(r).await?;
        if len > max {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("message of {len} bytes exceeds max_message_bytes {max}"),
            ));
        }
        let permit = reserve(len).await?;
        let mut msg = Vec::with_capacity(len.min(64 << 10));
        let got = (&mut *r).take(len as u64).read_to_end(&mut msg).await?;
        if got < len {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            ));
        }
        Ok(Some((msg, Some(permit))))
    } else if first == b'<' {
        let mut msg = Vec::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        loop {
            let buf = r.fill_buf().await?;
            if buf.is_empty() {
                break;
            }
            let (n, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(p) => (p + 1, true),
                None => (buf.len(), false),
            };
            if msg.len() + n > max + 1 {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    format!("newline-framed message exceeds max_message_bytes {max}"),
                ));
            }
            // Reserve before copying; the buffered bytes stay in the reader meanwhile.
            let more = reserve(n).await?;
            match held.as_mut() {
                Some(h) => h.merge(more),
                None => held = Some(more),
            }
            let buf = r.fill_buf().await?;
            msg.extend_from_slice(&buf[..n]);
            r.consume(n);
            if done {
                break;
            }
        }
        while matches!(msg.last(), Some(b'\n' | b'\r')) {
            msg.pop();
        }
        Ok(Some((msg, held)))
    } else {
        Err(Error::new(
            ErrorKind::InvalidData,
            "frame starts with neither a length nor '<'",
        ))
    }
}

async fn read_length<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<usize> {
    use std::io::{Error, ErrorKind};
    let mut len: usize = 0;
    let mut digits = 0;
    loop {
        let b = r.read_u8().await?;
        if b == b' ' {
            return Ok(len);
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
}

/// One frame of a syslog stream: `LEN SP MSG` (octet counting) or `MSG LF`.
/// `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let unlimited = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    Ok(read_frame_budgeted(r, max, &unlimited)
        .await?
        .map(|(f, _)| f))
}

/// The MSG part of a frame worth spooling; `None` (counted, logged) for one that is not.
fn admit<'f>(frame: &'f [u8], max: usize, name: &str, m: &IntakeMetrics) -> Option<&'f [u8]> {
    static BAD: RateLimited = RateLimited::new(Duration::from_secs(10));
    let why = if frame.len() > max {
        Err("message exceeds max_message_bytes; dropped")
    } else {
        message_body(frame)
    };
    match why {
        Ok(b) => Some(b),
        Err(why) => {
            m.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = BAD.hit() {
                tracing::warn!(source = %name, "not a syslog message ({n} since last said): {why}");
            }
            None
        }
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
        // RFC 3164 has no reliable field boundaries: an audit message starts at its first
        // '<' (XML) or at `CEF:` / `LEEF:`, whichever comes first.
        let at = [
            rest.iter().position(|&b| b == b'<'),
            crate::decode::siem::record_start(rest),
        ]
        .into_iter()
        .flatten()
        .min()
        .ok_or("no XML, CEF or LEEF in the message")?;
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
        // Epic's SIEM feed: CEF or LEEF after an RFC 3164 header, values may hold '<'.
        let cef =
            b"<134>Mar 10 08:00:00 epicprd01 CEF:0|Epic|Security-SIEM|1|LOGIN|Login|3|note=a<b";
        assert_eq!(
            message_body(cef).unwrap(),
            b"CEF:0|Epic|Security-SIEM|1|LOGIN|Login|3|note=a<b"
        );
        let leef = b"<134>Mar 10 08:00:00 epicprd01 LEEF:1.0|Epic|Security-SIEM|1|LOGIN|UID=E1";
        assert!(message_body(leef).unwrap().starts_with(b"LEEF:1.0|Epic"));
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
