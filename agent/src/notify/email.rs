//! Email through lettre: SMTP with required STARTTLS, implicit TLS or (loopback) none.

use super::render::AlertView;
use super::Outcome;
use crate::alert::routing::{EmailReceiver, SmtpTls};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub fn transport(r: &EmailReceiver) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let ctx = |e: &dyn std::fmt::Display| format!("receiver {:?}: {e}", r.name);
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

pub async fn send(
    r: &EmailReceiver,
    smtp: &AsyncSmtpTransport<Tokio1Executor>,
    view: &AlertView,
    key: &str,
) -> Outcome {
    let mut builder = Message::builder()
        .subject(view.subject())
        .message_id(Some(format!("<{key}@phiwatch>")));
    match r.from.parse::<Mailbox>() {
        Ok(m) => builder = builder.from(m),
        Err(e) => return Outcome::Permanent(format!("from: {e}")),
    }
    for to in &r.to {
        match to.parse::<Mailbox>() {
            Ok(m) => builder = builder.to(m),
            Err(e) => return Outcome::Permanent(format!("to {to:?}: {e}")),
        }
    }
    let body = MultiPart::alternative()
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(view.text()),
        )
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(view.html()),
        );
    let message = match builder.multipart(body) {
        Ok(m) => m,
        Err(e) => return Outcome::Permanent(format!("building the message: {e}")),
    };
    match smtp.send(message).await {
        Ok(_) => Outcome::Sent,
        Err(e) if e.is_permanent() => Outcome::Permanent(format!("SMTP: {e}")),
        Err(e) => Outcome::Transient(format!("SMTP: {e}")),
    }
}
