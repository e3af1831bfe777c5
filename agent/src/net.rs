//! What every network listener needs to survive a hostile peer: a cap on connections, an
//! accept loop that backs off when the process runs out of descriptors instead of spinning,
//! logs that say "this keeps happening" once per interval instead of once per event, and an
//! HTTP server with a header deadline (slow-loris), a per-request deadline (slow bodies) and
//! a TLS handshake deadline.
//!
//! Syslog, MLLP, the console and `/metrics` all go through here, so a limit exists once.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that cannot start: its address is taken or refused, or its TLS material is
/// unusable. `name` says which source or feed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{name}: {what} {at}: {error}")]
    Bind {
        name: String,
        what: &'static str,
        at: SocketAddr,
        error: std::io::Error,
    },
    #[error("{name}: TLS: {error}")]
    Tls {
        name: String,
        error: crate::tls::TlsError,
    },
}

/// A warning that may fire thousands of times a second: logged at most once per interval,
/// with the number of times it happened since.
pub struct RateLimited {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    pub const fn new(every: Duration) -> Self {
        RateLimited {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)`: log now, `n` occurrences (this one included) since the last log line.
    pub fn hit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        let now = Instant::now();
        if s.0.is_none_or(|t| now.duration_since(t) >= self.every) {
            s.0 = Some(now);
            Some(std::mem::take(&mut s.1))
        } else {
            None
        }
    }
}

/// The connections one listener may hold at once. A connection over the cap is closed as
/// soon as it is accepted (and counted), so descriptors stay bounded whatever peers do.
#[derive(Clone)]
pub struct ConnLimit {
    slots: Arc<Semaphore>,
    pub refused: Arc<AtomicU64>,
}

impl ConnLimit {
    pub fn new(max: usize) -> Self {
        Self::with_counter(max, Arc::new(AtomicU64::new(0)))
    }

    /// A cap whose refusals are counted in `refused` (a metric shared with its owner).
    pub fn with_counter(max: usize, refused: Arc<AtomicU64>) -> Self {
        ConnLimit {
            slots: Arc::new(Semaphore::new(max.max(1))),
            refused,
        }
    }

    /// A slot for a new connection, held until the connection ends; `None` at the cap.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let p = self.slots.clone().try_acquire_owned().ok();
        if p.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

/// Accepts the next connection. Accept errors (EMFILE, ENFILE, ENOBUFS, ECONNABORTED...)
/// back off from 10 ms to 1 s instead of retrying at once, which with no descriptor left
/// would spin a core and flood the log; the error is logged once per 10 s with its count.
pub async fn accept(
    l: &TcpListener,
    what: &str,
    errors: &AtomicU64,
    log: &RateLimited,
) -> (TcpStream, SocketAddr) {
    let mut pause = Duration::from_millis(10);
    loop {
        match l.accept().await {
            Ok(x) => return x,
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = log.hit() {
                    tracing::warn!("{what}: accept failed {n} time(s), backing off: {e}");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Deadlines and caps of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    /// Time to receive a request's headers, and to wait for the next request on an idle
    /// keep-alive connection.
    pub header_timeout: Duration,
    /// Time for a whole request, body included, to be answered.
    pub request_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of an HTTP listener, for `/metrics`.
#[derive(Default)]
pub struct HttpCounters {
    pub accept_errors: AtomicU64,
    pub refused: Arc<AtomicU64>,
    pub timeouts: AtomicU64,
}

/// The peer of a request, put into its extensions as axum's `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves `router` on `tcp` (through TLS when `tls` is set) until `shutdown` resolves. Each
/// request carries `ConnectInfo<Peer>`. Connections over the cap are closed at once;
/// headers must arrive within `header_timeout`; a request not answered within
/// `request_timeout` (a body trickled byte by byte) gets 408.
pub async fn serve_http(
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
) {
    let limit = ConnLimit::with_counter(limits.max_connections, counters.refused.clone());
    static ACCEPT_LOG: RateLimited = RateLimited::new(Duration::from_secs(10));
    static CAP_LOG: RateLimited = RateLimited::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            c = accept(&tcp, what, &counters.accept_errors, &ACCEPT_LOG) => c,
        };
        let Some(slot) = limit.admit() else {
            if let Some(n) = CAP_LOG.hit() {
                tracing::warn!(
                    "{what}: {n} connection(s) refused at the cap of {}",
                    limits.max_connections
                );
            }
            drop(stream);
            continue;
        };
        let (router, tls, counters) = (router.clone(), tls.clone(), counters.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => serve_connection(s, peer, router, limits, &counters).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "{what}: TLS handshake: {e}"),
                        Err(_) => {
                            counters.timeouts.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "{what}: TLS handshake timed out");
                        }
                    }
                }
                None => serve_connection(stream, peer, router, limits, &counters).await,
            }
        });
    }
}

async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    router: axum::Router,
    limits: HttpLimits,
    counters: &Arc<HttpCounters>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt as _;
    let timed_out = counters.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(Peer(peer)));
        let router = router.clone();
        let timed_out = timed_out.clone();
        async move {
            let req = req.map(axum::body::Body::new);
            match tokio::time::timeout(limits.request_timeout, router.oneshot(req)).await {
                Ok(Ok(resp)) => Ok::<_, Infallible>(resp),
                Ok(Err(never)) => match never {},
                Err(_) => {
                    timed_out.timeouts.fetch_add(1, Ordering::Relaxed);
                    let mut resp = axum::response::Response::new(axum::body::Body::from(
                        "request not completed in time\n",
                    ));
                    *resp.status_mut() = axum::http::StatusCode::REQUEST_TIMEOUT;
                    resp.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    Ok(resp)
                }
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        if e.is_timeout() {
            counters.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// Raises the soft limit on open descriptors to the hard limit, so the connection caps, not
/// the default 1,024, bound what the agent can hold. Returns the soft limit now in force.
pub fn raise_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            let want = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        l.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_logs_once_per_interval_with_a_count() {
        let r = RateLimited::new(Duration::from_millis(50));
        assert_eq!(r.hit(), Some(1));
        assert_eq!(r.hit(), None);
        assert_eq!(r.hit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.hit(), Some(3));
    }

    #[test]
    fn the_connection_cap_holds_and_frees() {
        let l = ConnLimit::new(2);
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        assert!(l.admit().is_none());
        assert_eq!(l.refused.load(Ordering::Relaxed), 1);
        drop(a);
        assert!(l.admit().is_some());
    }
}
