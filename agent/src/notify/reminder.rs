//! Case deadline reminders: rendered when they are queued (the deadline does not change with
//! the alert), sent to the same receivers as alerts.

use super::Outcome;
use crate::alert::routing::{EmailReceiver, SyslogReceiver, SyslogTransport, WebhookReceiver};
use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub case_id: i64,
    pub subject: String,
    pub body: String,
}

pub async fn email(
    r: &EmailReceiver,
    smtp: &AsyncSmtpTransport<Tokio1Executor>,
    rem: &Reminder,
    key: &str,
) -> Outcome {
    let mut b = Message::builder()
        .subject(rem.subject.clone())
        .message_id(Some(format!("<{key}@phiwatch>")));
    match r.from.parse::<Mailbox>() {
        Ok(m) => b = b.from(m),
        Err(e) => return Outcome::Permanent(format!("from: {e}")),
    }
    for to in &r.to {
        match to.parse::<Mailbox>() {
            Ok(m) => b = b.to(m),
            Err(e) => return Outcome::Permanent(format!("to {to:?}: {e}")),
        }
    }
    let msg = match b.header(ContentType::TEXT_PLAIN).body(rem.body.clone()) {
        Ok(m) => m,
        Err(e) => return Outcome::Permanent(format!("building the message: {e}")),
    };
    match smtp.send(msg).await {
        Ok(_) => Outcome::Sent,
        Err(e) if e.is_permanent() => Outcome::Permanent(format!("SMTP: {e}")),
        Err(e) => Outcome::Transient(format!("SMTP: {e}")),
    }
}

pub async fn webhook(
    r: &WebhookReceiver,
    client: &reqwest::Client,
    rem: &Reminder,
    key: &str,
) -> Outcome {
    let body = json!({
        "type": "case_reminder",
        "case_id": rem.case_id,
        "subject": rem.subject,
        "text": rem.body,
    });
    super::webhook::post(r, client, &body, key).await
}

pub async fn syslog(r: &SyslogReceiver, rem: &Reminder, key: &str) -> Outcome {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('=', "\\=")
            .replace(['\r', '\n'], " ")
    };
    let msg = format!(
        "<163>1 {} - phiwatch - case - CEF:0|phiwatch|phiwatch|{}|case-deadline|{}|7|externalId={key} cs1Label=caseId cs1={}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        env!("CARGO_PKG_VERSION"),
        rem.subject.replace('|', "\\|"),
        esc(&rem.case_id.to_string()),
    );
    let result = match r.transport {
        SyslogTransport::Udp => match tokio::net::UdpSocket::bind("0.0.0.0:0").await {
            Ok(s) => s.send_to(msg.as_bytes(), &r.address).await.map(|_| ()),
            Err(e) => Err(e),
        },
        SyslogTransport::Tcp => match tokio::net::TcpStream::connect(&r.address).await {
            Ok(mut s) => s.write_all(format!("{} {msg}", msg.len()).as_bytes()).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => Outcome::Sent,
        Err(e) => Outcome::Transient(format!("syslog {}: {e}", r.address)),
    }
}
