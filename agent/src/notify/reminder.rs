//! Case deadline reminders: rendered when they are queued (the deadline does not change with
//! the alert), sent to the same receivers as alerts.

use super::Outcome;
use crate::alert::routing::{EmailReceiver, SyslogReceiver, WebhookReceiver};
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use serde_json::json;

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
    let builder = match super::email::envelope(r, rem.subject.clone(), key) {
        Ok(b) => b,
        Err(o) => return o,
    };
    match builder
        .header(ContentType::TEXT_PLAIN)
        .body(rem.body.clone())
    {
        Ok(m) => super::email::submit(smtp, m).await,
        Err(e) => Outcome::Permanent(format!("building the message: {e}")),
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
    super::cef::transmit(r, &msg).await
}
