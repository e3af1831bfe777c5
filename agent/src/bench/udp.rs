//! `phiwatch bench --udp`: syslog over UDP at rising rates until datagrams are lost, into the
//! real daemon (`phiwatch run`, a child process) and, as the baseline of the same run, into
//! a bare socket that only counts what it receives.
//!
//! Each step offers a rate for two seconds, paced every millisecond, of ~1 KB RFC 5424
//! messages carrying an ATNA AuditMessage (the size hospitals' ATNA feeds send). Losses are
//! what the kernel dropped for the socket (`/proc/net/udp` drops, which the daemon exports as
//! `phiwatch_source_kernel_drops_total`) plus what the daemon dropped at its spool cap;
//! datagrams the daemon stores are counted by `phiwatch_source_received_total`.

use super::live::{free_port, healthy, peak_rss_kb, wait, Daemon};
use anyhow::Result;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Offered rates, datagrams per second.
const RATES: [u64; 7] = [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000];
const STEP: Duration = Duration::from_secs(2);

/// One step: offered rate, datagrams sent, received, lost.
struct Step {
    rate: u64,
    sent: u64,
    received: u64,
    lost: u64,
}

pub fn run(recv_buffer: Option<usize>) -> Result<String> {
    let tmp = tempfile::tempdir()?;
    let baseline = raw_socket(recv_buffer)?;
    let (daemon, http, port) = start_daemon(tmp.path(), recv_buffer)?;
    let mut agent = Vec::new();
    let mut before = counters(http)?;
    for rate in RATES {
        let sent = offer(port, rate)?;
        // Let the daemon spool what the socket holds before reading its counters.
        std::thread::sleep(Duration::from_millis(500));
        let now = counters(http)?;
        agent.push(Step {
            rate,
            sent,
            received: now.0 - before.0,
            lost: now.1 - before.1,
        });
        before = now;
    }
    let rss = peak_rss_kb(daemon.0.id())?;
    drop(daemon);
    Ok(report(&agent, &baseline, rss, recv_buffer))
}

/// The baseline: the same offers into a socket whose only work is counting.
fn raw_socket(recv_buffer: Option<usize>) -> Result<Vec<Step>> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    if let Some(b) = recv_buffer {
        set_recv_buffer(&sock, b);
    }
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let port = sock.local_addr()?.port();
    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (got, stop) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut steps = Vec::new();
    for rate in RATES {
        let start = got.load(Ordering::Relaxed);
        let sent = offer(port, rate)?;
        std::thread::sleep(Duration::from_millis(500));
        let received = got.load(Ordering::Relaxed) - start;
        steps.push(Step {
            rate,
            sent,
            received,
            lost: sent.saturating_sub(received),
        });
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    Ok(steps)
}

fn set_recv_buffer(sock: &UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v = bytes as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Sends `rate` datagrams per second for [`STEP`], a millisecond's share at a time.
/// Returns how many were sent.
fn offer(port: u16, rate: u64) -> Result<u64> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(("127.0.0.1", port))?;
    let per_ms = (rate / 1000).max(1);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let ticks = STEP.as_millis() as u64;
    for tick in 0..ticks {
        for _ in 0..per_ms {
            if sock.send(message(sent).as_bytes()).is_ok() {
                sent += 1;
            }
        }
        let due = t0 + Duration::from_millis(tick + 1);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    Ok(sent)
}

/// An RFC 5424 message carrying a DICOM PS3.15 patient-record read, about 1 KB.
fn message(i: u64) -> String {
    format!(
        "<85>1 2026-03-10T14:00:01Z ehr atna-audit 4242 IHE+RFC-3881 - <?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage><EventIdentification EventActionCode=\"R\" EventDateTime=\"2026-03-10T14:00:01.000Z\" EventOutcomeIndicator=\"0\"><EventID csd-code=\"110110\" codeSystemName=\"DCM\" originalText=\"Patient Record\"/><EventTypeCode csd-code=\"ITI-78\" codeSystemName=\"IHE Transactions\" originalText=\"Mobile Patient Demographics Query\"/></EventIdentification><ActiveParticipant UserID=\"dr-bench\" UserIsRequestor=\"true\" NetworkAccessPointID=\"ws-{i}\" NetworkAccessPointTypeCode=\"2\"><RoleIDCode csd-code=\"110153\" codeSystemName=\"DCM\" originalText=\"Source Role ID\"/></ActiveParticipant><AuditSourceIdentification AuditSourceID=\"ehr-bench\"/><ParticipantObjectIdentification ParticipantObjectID=\"pt-{}\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\"><ParticipantObjectIDTypeCode csd-code=\"2\" codeSystemName=\"RFC-3881\" originalText=\"Patient Number\"/></ParticipantObjectIdentification></AuditMessage>",
        i % 5_000
    )
}

/// The daemon with one UDP syslog source and a one-practitioner context. Returns it, its
/// HTTP port and its UDP port.
fn start_daemon(dir: &Path, recv_buffer: Option<usize>) -> Result<(Daemon, u16, u16)> {
    let ctx = dir.join("context");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(
        ctx.join("Practitioner.ndjson"),
        "{\"resourceType\":\"Practitioner\",\"id\":\"dr-bench\",\"active\":true}\n",
    )?;
    let http = free_port()?;
    let udp = {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.local_addr()?.port()
    };
    let buffer = recv_buffer
        .map(|b| format!("recv_buffer_bytes = {b}\n"))
        .unwrap_or_default();
    let config = dir.join("phiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{d}/data\"\ncontext = \"{c}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[source]]\nkind = \"syslog\"\nname = \"atna-udp\"\nlisten = \"127.0.0.1:{udp}\"\ntransport = \"udp\"\n{buffer}",
            d = dir.display(),
            c = ctx.display(),
        ),
    )?;
    let daemon = Daemon::start(&config)?;
    wait(Duration::from_secs(120), || healthy(http))?;
    Ok((daemon, http, udp))
}

/// (received, lost) as the daemon counts them.
fn counters(http: u16) -> Result<(u64, u64)> {
    let body = super::live::get(http, "/metrics")?;
    let value = |name: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(&format!("{name}{{source=\"atna-udp\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    Ok((
        value("phiwatch_source_received_total"),
        value("phiwatch_source_kernel_drops_total") + value("phiwatch_spool_dropped_total"),
    ))
}

fn report(agent: &[Step], raw: &[Step], rss_kb: u64, recv_buffer: Option<usize>) -> String {
    let loss_free = |steps: &[Step]| {
        steps
            .iter()
            .take_while(|s| s.lost == 0)
            .last()
            .map_or(0, |s| s.rate)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "phiwatch bench --udp: ~1 KB ATNA syslog datagrams on loopback, {} s per rate, receive buffer {}",
        STEP.as_secs(),
        recv_buffer.map_or("the kernel default".to_owned(), |b| format!("{b} bytes"))
    );
    let _ = writeln!(
        out,
        "{:>10}  {:>10} {:>10} {:>8}  {:>10} {:>10} {:>8}",
        "offered/s", "agent sent", "stored", "lost", "raw sent", "received", "lost"
    );
    for (a, r) in agent.iter().zip(raw) {
        let _ = writeln!(
            out,
            "{:>10}  {:>10} {:>10} {:>8}  {:>10} {:>10} {:>8}",
            a.rate, a.sent, a.received, a.lost, r.sent, r.received, r.lost
        );
    }
    let (a, r) = (loss_free(agent), loss_free(raw));
    let _ = writeln!(
        out,
        "loss-free up to: agent {a}/s, bare socket {r}/s (ratio {:.2}); agent peak memory {} MiB",
        if r == 0 { 0.0 } else { a as f64 / r as f64 },
        rss_kb / 1024
    );
    let unaccounted: i64 = agent
        .iter()
        .map(|s| s.sent as i64 - s.received as i64 - s.lost as i64)
        .sum();
    let _ = writeln!(
        out,
        "every datagram stored or counted as lost: {} (unaccounted {unaccounted})",
        if unaccounted == 0 { "yes" } else { "NO" }
    );
    out
}
