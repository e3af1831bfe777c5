//! CEF (ArcSight Common Event Format) over RFC 5424 syslog, for SIEMs.

use super::render::AlertView;
use super::Outcome;
use crate::alert::routing::{SyslogReceiver, SyslogTransport};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn header_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn ext_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// CEF severity 0-10 and syslog severity for an alert severity.
fn severities(s: &str) -> (u8, u8) {
    match s {
        "critical" => (10, 2),
        "high" => (8, 3),
        "medium" => (5, 4),
        _ => (3, 5),
    }
}

pub fn message(view: &AlertView, key: &str) -> String {
    let (cef_sev, sys_sev) = severities(&view.severity);
    // Facility local4 (20).
    let pri = 20 * 8 + u32::from(sys_sev);
    let host = hostname();
    let mut ext = vec![
        ("externalId", key.to_owned()),
        ("suser", view.user.clone()),
        ("cs1Label", "department".to_owned()),
        ("cs1", view.department.clone()),
        ("cn1Label", "findings".to_owned()),
        ("cn1", view.findings.to_string()),
        ("cn2Label", "patients".to_owned()),
        ("cn2", view.incidents.to_string()),
        ("cs2Label", "alertId".to_owned()),
        ("cs2", view.alert_id.to_string()),
    ];
    if let Some(l) = &view.link {
        ext.push(("request", l.clone()));
    }
    if !view.patients.is_empty() {
        ext.push(("duid", view.patients.join(",")));
    }
    let ext: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", ext_escape(&v)))
        .collect();
    format!(
        "<{pri}>1 {} {host} phiwatch - alert - CEF:0|phiwatch|phiwatch|{}|{}|{}|{cef_sev}|{}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        env!("CARGO_PKG_VERSION"),
        header_escape(&view.category),
        header_escape(&view.subject()),
        ext.join(" ")
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(' '))
        .unwrap_or_else(|| "-".to_owned())
}

pub async fn send(r: &SyslogReceiver, view: &AlertView, key: &str) -> Outcome {
    transmit(r, &message(view, key)).await
}

/// Sends one syslog message: a datagram, or an octet-counted frame on a fresh connection.
pub async fn transmit(r: &SyslogReceiver, msg: &str) -> Outcome {
    let result = match r.transport {
        SyslogTransport::Udp => {
            async {
                let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
                sock.send_to(msg.as_bytes(), &r.address).await.map(|_| ())
            }
            .await
        }
        SyslogTransport::Tcp => {
            let connect = tokio::net::TcpStream::connect(&r.address);
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok(mut s)) => {
                    let framed = format!("{} {msg}", msg.len());
                    match s.write_all(framed.as_bytes()).await {
                        Ok(()) => s.shutdown().await,
                        Err(e) => Err(e),
                    }
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            }
        }
    };
    match result {
        Ok(()) => Outcome::Sent,
        Err(e) => Outcome::Transient(format!("syslog {}: {e}", r.address)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cef_escapes_and_carries_no_patient_by_default() {
        let v = AlertView {
            alert_id: 7,
            status: "open".into(),
            category: "vip|x".into(),
            severity: "critical".into(),
            user: "a=b".into(),
            department: "er".into(),
            first_seen: String::new(),
            last_seen: String::new(),
            findings: 2,
            incidents: 1,
            link: None,
            patients: vec![],
            explanations: vec![],
        };
        let m = message(&v, "k1");
        assert!(m.starts_with("<162>1 "), "{m}");
        assert!(m.contains("CEF:0|phiwatch|phiwatch|"), "{m}");
        assert!(m.contains("|vip\\|x|"), "{m}");
        assert!(m.contains("|10|externalId=k1 suser=a\\=b "), "{m}");
        assert!(!m.contains("duid="), "{m}");
    }
}
