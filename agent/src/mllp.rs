//! The MLLP listener of an HL7 v2 context feed (`kind = "mllp"`): TCP, optionally TLS.
//!
//! A frame is `0x0B message 0x1C 0x0D`. A message is acknowledged `AA` only once it is on
//! disk: appended to the feed's spool and fsynced. Frames that arrive together (a sender
//! that does not wait for each ACK) are written with one fsync. A message that does not
//! parse gets `AE` with the reason, another type than ADT gets `AR`, and a spool that cannot
//! take it (full, or a disk error) gets `AE` so the sender retries; each is counted. The
//! spool holds one JSON string per line (segment separators are carriage returns, which a
//! line-per-record spool cannot hold raw); the detection thread applies the messages to the
//! context in order and journals them in the store, so they survive restarts and reloads.
//!
//! Limits as for syslog streams: connections per listener, idle and frame deadlines, a TLS
//! handshake deadline, and frames reserve the shared in-flight byte budget before they are
//! read.

use crate::context::feeds::MllpFeed;
use crate::decode::hl7v2::{self, ack, Message};
use crate::net::{self, BindError, ConnLimit, RateLimited};
use crate::spool::{AppendError, IntakeMetrics, SharedSpool};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const START: u8 = 0x0b;
const END: [u8; 2] = [0x1c, 0x0d];

pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

pub async fn bind(f: &MllpFeed) -> Result<Listener, BindError> {
    let name = || format!("mllp {:?}", f.name);
    let tls = match (&f.tls_cert, &f.tls_key) {
        (Some(c), Some(k)) => Some(
            crate::tls::server_tls(c, k, f.tls_client_ca.as_deref(), &[]).map_err(|error| {
                BindError::Tls {
                    name: name(),
                    error,
                }
            })?,
        ),
        _ => None,
    };
    let tcp = TcpListener::bind(f.listen)
        .await
        .map_err(|error| BindError::Bind {
            name: name(),
            what: "binding",
            at: f.listen,
            error,
        })?;
    Ok(Listener { tcp, tls })
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

#[derive(Clone)]
struct Limits {
    max: usize,
    idle: Duration,
    frame: Duration,
    inflight: Arc<Semaphore>,
}

pub async fn serve(
    l: Listener,
    f: MllpFeed,
    inflight: Arc<Semaphore>,
    spool: SharedSpool,
    metrics: Arc<IntakeMetrics>,
) {
    let limits = Limits {
        max: f.max_message_bytes,
        idle: Duration::from_secs(f.idle_timeout_seconds),
        frame: Duration::from_secs(f.frame_timeout_seconds),
        inflight,
    };
    let cap = ConnLimit::with_counter(f.max_connections, metrics.refused.clone());
    let accept_log = RateLimited::new(Duration::from_secs(10));
    let cap_log = RateLimited::new(Duration::from_secs(10));
    loop {
        let (stream, peer) =
            net::accept(&l.tcp, &f.name, &metrics.accept_errors, &accept_log).await;
        let Some(slot) = cap.admit() else {
            if let Some(n) = cap_log.hit() {
                tracing::warn!(feed = %f.name, "{n} connection(s) refused at the cap of {}", f.max_connections);
            }
            continue;
        };
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        let (name, spool, m, limits, tls) = (
            f.name.clone(),
            spool.clone(),
            metrics.clone(),
            limits.clone(),
            l.tls.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(stream, &limits, &name, &spool, &m).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.frame, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, &limits, &name, &spool, &m).await,
                        Ok(Err(e)) => {
                            // Anyone can open a connection and close it: said once per 10 s.
                            static FAILED: RateLimited = RateLimited::new(Duration::from_secs(10));
                            m.rejected.fetch_add(1, Ordering::Relaxed);
                            if let Some(n) = FAILED.hit() {
                                tracing::warn!(feed = %name, %peer, "TLS handshake failed ({n} since last said): {e}");
                            }
                        }
                        Err(_) => {
                            m.timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    limits: &Limits,
    name: &str,
    spool: &SharedSpool,
    m: &IntakeMetrics,
) {
    let mut r = BufReader::new(stream);
    loop {
        match tokio::time::timeout(limits.idle, r.fill_buf()).await {
            Err(_) => {
                m.timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(_) | Ok([])) => return,
            Ok(Ok(_)) => {}
        }
        // Every frame already here is taken before one fsync answers them all.
        let mut frames = Vec::new();
        loop {
            let frame = tokio::time::timeout(
                limits.frame,
                read_frame(&mut r, limits.max, &limits.inflight),
            )
            .await;
            match frame {
                Err(_) => {
                    m.timeouts.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(Err(e)) => {
                    m.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(feed = %name, "closing the connection: {e}");
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        let now = now_ts();
                        let _ = r
                            .get_mut()
                            .write_all(&frame_of(&ack(None, "AR", &e.to_string(), &now)))
                            .await;
                    }
                    return;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(f))) => frames.push(f),
            }
            if r.buffer().is_empty() {
                break;
            }
        }
        if frames.is_empty() {
            return;
        }
        let answers = accept_frames(frames, name, spool, m).await;
        let mut out = Vec::new();
        for a in answers {
            out.extend(frame_of(&a));
        }
        if r.get_mut().write_all(&out).await.is_err() || r.get_mut().flush().await.is_err() {
            return;
        }
    }
}

fn frame_of(msg: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg.len() + 3);
    v.push(START);
    v.extend_from_slice(msg.as_bytes());
    v.extend_from_slice(&END);
    v
}

fn now_ts() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string()
}

/// Decides each frame, spools the acceptable ones with one fsync, and returns the ACKs.
async fn accept_frames(
    frames: Vec<(Vec<u8>, Option<OwnedSemaphorePermit>)>,
    name: &str,
    spool: &SharedSpool,
    m: &IntakeMetrics,
) -> Vec<String> {
    let now = now_ts();
    let mut answers: Vec<Option<String>> = Vec::with_capacity(frames.len());
    let mut to_spool: Vec<(usize, String, String)> = Vec::new();
    for (i, (bytes, _permit)) in frames.iter().enumerate() {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                m.rejected.fetch_add(1, Ordering::Relaxed);
                answers.push(Some(ack(
                    None,
                    "AE",
                    &format!("not UTF-8 after byte {}", e.valid_up_to()),
                    &now,
                )));
                continue;
            }
        };
        match Message::parse(text) {
            Err(e) => {
                m.rejected.fetch_add(1, Ordering::Relaxed);
                answers.push(Some(ack(None, "AE", &e.to_string(), &now)));
            }
            Ok(msg) => {
                let (kind, _) = msg.kind();
                if kind != "ADT" {
                    m.rejected.fetch_add(1, Ordering::Relaxed);
                    answers.push(Some(ack(
                        Some(&msg),
                        "AR",
                        "only ADT messages are accepted here",
                        &now,
                    )));
                } else {
                    let ok = ack(Some(&msg), "AA", "", &now);
                    let err = ack(Some(&msg), "AE", "not stored; send it again", &now);
                    to_spool.push((i, ok, err));
                    answers.push(None);
                }
            }
        }
    }
    if !to_spool.is_empty() {
        let lines: Vec<Vec<u8>> = to_spool
            .iter()
            .map(|(i, _, _)| hl7v2::spool_line(&String::from_utf8_lossy(&frames[*i].0)))
            .collect();
        let spool = spool.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<(), AppendError> {
            let mut s = spool
                .lock()
                .map_err(|_| AppendError::Io(std::io::Error::other("spool lock poisoned")))?;
            for l in &lines {
                s.append(l)?;
            }
            s.sync().map_err(AppendError::Io)
        })
        .await
        .unwrap_or_else(|e| Err(AppendError::Io(std::io::Error::other(e))));
        let good = stored.is_ok();
        if let Err(e) = stored {
            static FAILED: RateLimited = RateLimited::new(Duration::from_secs(10));
            if let Some(n) = FAILED.hit() {
                tracing::error!(feed = %name, "{n} message(s) could not be spooled, answered AE: {e}");
            }
        }
        for (i, ok, err) in to_spool {
            if good {
                m.received.fetch_add(1, Ordering::Relaxed);
                answers[i] = Some(ok);
            } else {
                m.rejected.fetch_add(1, Ordering::Relaxed);
                answers[i] = Some(err);
            }
        }
    }
    answers.into_iter().flatten().collect()
}

/// One MLLP frame's message, its bytes reserved in the in-flight budget as they grow.
/// `Ok(None)` at a clean end of stream. Public for the fuzz targets (tests/fuzz).
pub async fn read_frame<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    max: usize,
    budget: &Arc<Semaphore>,
) -> std::io::Result<Option<(Vec<u8>, Option<OwnedSemaphorePermit>)>> {
    use std::io::{Error, ErrorKind};
    // Whitespace between frames is tolerated; anything else before the start byte is not.
    loop {
        let buf = r.fill_buf().await?;
        match buf.first() {
            None => return Ok(None),
            Some(&START) => {
                r.consume(1);
                break;
            }
            Some(b'\r' | b'\n' | b' ') => r.consume(1),
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "data outside an MLLP frame (expected 0x0B)",
                ))
            }
        }
    }
    let mut msg = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            ));
        }
        let (n, done) = match buf.iter().position(|&b| b == END[0] || b == START) {
            // A start byte inside a frame: the sender gave up on the message before it and
            // began again (a restart mid-send). The partial message is dropped rather than
            // glued to the next one, which would refuse both.
            Some(p) if buf[p] == START => {
                r.consume(p + 1);
                msg.clear();
                held = None;
                continue;
            }
            Some(p) => (p, true),
            None => (buf.len(), false),
        };
        if msg.len() + n > max {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("message exceeds max_message_bytes {max}"),
            ));
        }
        let more = budget
            .clone()
            .acquire_many_owned(u32::try_from(n.max(1)).unwrap_or(u32::MAX))
            .await
            .map_err(|_| Error::other("in-flight budget closed"))?;
        match held.as_mut() {
            Some(h) => h.merge(more),
            None => held = Some(more),
        }
        let buf = r.fill_buf().await?;
        msg.extend_from_slice(&buf[..n]);
        r.consume(n);
        if done {
            // The end byte, and the carriage return that must follow it.
            r.consume(1);
            let next = r.fill_buf().await?;
            if next.first() == Some(&END[1]) {
                r.consume(1);
            }
            return Ok(Some((msg, held)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn frames_and_junk() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let data = b"\x0bMSH|^~\\&|A\rPID|1\x1c\x0d\r\n\x0bMSH|B\x1c\x0d";
        let mut r = BufReader::new(&data[..]);
        let (a, _) = read_frame(&mut r, 1000, &budget).await.unwrap().unwrap();
        assert_eq!(a, b"MSH|^~\\&|A\rPID|1");
        let (b, _) = read_frame(&mut r, 1000, &budget).await.unwrap().unwrap();
        assert_eq!(b, b"MSH|B");
        assert!(read_frame(&mut r, 1000, &budget).await.unwrap().is_none());
        // A sender that restarts mid-message: the partial one is dropped, not glued on.
        let mut r = BufReader::new(&b"\x0bMSH|partial\x0bMSH|whole\x1c\x0d"[..]);
        let (c, _) = read_frame(&mut r, 1000, &budget).await.unwrap().unwrap();
        assert_eq!(c, b"MSH|whole");
        let mut r = BufReader::new(&b"junk\x0bMSH\x1c\x0d"[..]);
        assert!(read_frame(&mut r, 1000, &budget).await.is_err());
        let mut r = BufReader::new(&b"\x0bMSH|^~\\&|very long\x1c\x0d"[..]);
        let e = read_frame(&mut r, 5, &budget).await.unwrap_err();
        assert!(e.to_string().contains("max_message_bytes"));
        assert_eq!(
            budget.available_permits(),
            1 << 20,
            "the budget is returned"
        );
    }
}
