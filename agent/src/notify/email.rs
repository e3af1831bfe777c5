//! Email through lettre: SMTP with required STARTTLS, implicit TLS or (loopback) none.

use super::render::AlertView;
use super::{Outcome, ReceiverError};
use crate::alert::routing::{EmailReceiver, SmtpTls};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub fn transport(r: &EmailReceiver) -> Result<AsyncSmtpTransport<Tokio1Executor>, ReceiverError> {
    let ctx = |e: &dyn std::fmt::Display| ReceiverError::new(&r.name, e);
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&r.host)
        .port(r.port)
        .timeout(Some(Duration::from_secs(20)));
    if r.tls != SmtpTls::None {
        let mut params = TlsParameters::builder(r.host.clone());
        if let Some(ca) = &r.ca_file {
            let pem = std::fs::read(ca).map_err(|e| ctx(&format!("{}: {e}", ca.display())))?;
            params = params.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| ctx(&e))?);
        }
        let params = params.build_rustls().map_err(|e| ctx(&e))?;
        b = b.tls(match r.tls {
            SmtpTls::Implicit => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let (Some(user), Some(var)) = (&r.username, &r.password_env) {
        let password = std::env::var(var).map_err(|_| {
            ctx(&format!(
                "environment variable {var} (password_env) is not set"
            ))
        })?;
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    Ok(b.build())
}

/// A receiver's message templates, read once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
}

impl Templates {
    pub fn load(r: &EmailReceiver) -> Result<Self, ReceiverError> {
        let read = |p: &Option<std::path::PathBuf>| -> Result<Option<String>, ReceiverError> {
            p.as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).map_err(|e| {
                        ReceiverError::new(&r.name, &format!("template {}: {e}", p.display()))
                    })
                })
                .transpose()
        };
        Ok(Templates {
            subject: r.subject.clone(),
            text: read(&r.text_template)?,
            html: read(&r.html_template)?,
        })
    }
}

/// From, to, subject and the idempotency key as `Message-ID`.
pub fn envelope(
    r: &EmailReceiver,
    subject: String,
    key: &str,
) -> Result<lettre::message::MessageBuilder, Outcome> {
    let mut builder = Message::builder()
        .subject(subject)
        .message_id(Some(format!("<{key}@phiwatch>")));
    let from = r
        .from
        .parse::<Mailbox>()
        .map_err(|e| Outcome::Permanent(format!("from: {e}")))?;
    builder = builder.from(from);
    for to in &r.to {
        let m = to
            .parse::<Mailbox>()
            .map_err(|e| Outcome::Permanent(format!("to {to:?}: {e}")))?;
        builder = builder.to(m);
    }
    Ok(builder)
}

/// Sends and classifies the answer: SMTP 5xx is permanent, everything else worth a retry.
pub async fn submit(smtp: &AsyncSmtpTransport<Tokio1Executor>, message: Message) -> Outcome {
    match smtp.send(message).await {
        Ok(_) => Outcome::Sent,
        Err(e) if e.is_permanent() => Outcome::Permanent(format!("SMTP: {e}")),
        Err(e) => Outcome::Transient(format!("SMTP: {e}")),
    }
}

pub async fn send(
    r: &EmailReceiver,
    smtp: &AsyncSmtpTransport<Tokio1Executor>,
    t: &Templates,
    view: &AlertView,
    key: &str,
) -> Outcome {
    let subject = match &t.subject {
        Some(s) => view.fill(s, false).replace(['\r', '\n'], " "),
        None => view.subject(),
    };
    let text = t
        .text
        .as_deref()
        .map_or_else(|| view.text(), |s| view.fill(s, false));
    let html = t
        .html
        .as_deref()
        .map_or_else(|| view.html(), |s| view.fill(s, true));
    let builder = match envelope(r, subject, key) {
        Ok(b) => b,
        Err(o) => return o,
    };
    let body = MultiPart::alternative()
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        )
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html),
        );
    match builder.multipart(body) {
        Ok(m) => submit(smtp, m).await,
        Err(e) => Outcome::Permanent(format!("building the message: {e}")),
    }
}
