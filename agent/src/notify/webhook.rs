//! Webhooks: phiwatch's JSON signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), or the body Slack,
//! Microsoft Teams or PagerDuty Events v2 expect.

use super::render::AlertView;
use super::{Outcome, ReceiverError};
use crate::alert::routing::{WebhookFormat, WebhookReceiver};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;

/// `v1,<signature>` for a `whsec_`-prefixed (or bare) base64 secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, ReceiverError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| ReceiverError::SecretNotBase64)?;
    // HMAC takes a key of any length.
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|_| ReceiverError::SecretNotBase64)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", b64.encode(mac.finalize().into_bytes())))
}

pub fn body(r: &WebhookReceiver, view: &AlertView) -> Result<serde_json::Value, ReceiverError> {
    Ok(match r.format {
        WebhookFormat::Standard => json!({ "type": "alert", "alert": view }),
        WebhookFormat::Slack => {
            json!({ "text": format!("{}\n{}", view.subject(), view.link.clone().unwrap_or_default()) })
        }
        WebhookFormat::Teams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": view.subject(),
            "title": view.subject(),
            "text": view.text().replace('\n', "<br>"),
        }),
        WebhookFormat::Pagerduty => {
            let var = r.routing_key_env.as_deref().unwrap_or_default();
            let key =
                std::env::var(var).map_err(|_| ReceiverError::RoutingKeyUnset(var.to_owned()))?;
            let severity = match view.severity.as_str() {
                "critical" => "critical",
                "high" => "error",
                "medium" => "warning",
                _ => "info",
            };
            json!({
                "routing_key": key,
                "event_action": "trigger",
                "dedup_key": format!("phiwatch-alert-{}", view.alert_id),
                "payload": {
                    "summary": view.subject(),
                    "severity": severity,
                    "source": "phiwatch",
                    "custom_details": view,
                },
            })
        }
    })
}

pub async fn send(
    r: &WebhookReceiver,
    client: &reqwest::Client,
    view: &AlertView,
    key: &str,
) -> Outcome {
    match body(r, view) {
        Ok(b) => post(r, client, &b, key).await,
        Err(e) => Outcome::Permanent(e.to_string()),
    }
}

/// Posts a JSON body, signed when the receiver has a secret, and classifies the answer.
pub async fn post(
    r: &WebhookReceiver,
    client: &reqwest::Client,
    body: &serde_json::Value,
    key: &str,
) -> Outcome {
    let body = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => return Outcome::Permanent(e.to_string()),
    };
    let ts = chrono::Utc::now().timestamp();
    let mut req = client
        .post(&r.url)
        .timeout(r.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", key)
        .header("webhook-timestamp", ts.to_string());
    if let Some(var) = &r.secret_env {
        let secret = match std::env::var(var) {
            Ok(s) => s,
            Err(_) => {
                return Outcome::Permanent(format!(
                    "environment variable {var} (secret_env) is not set"
                ))
            }
        };
        match sign(&secret, key, ts, &body) {
            Ok(sig) => req = req.header("webhook-signature", sig),
            Err(e) => return Outcome::Permanent(e.to_string()),
        }
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                Outcome::Sent
            } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                Outcome::Transient(format!("HTTP {status}"))
            } else {
                Outcome::Permanent(format!("HTTP {status}"))
            }
        }
        // Connection refused, reset, timeout: the receiver may come back.
        Err(e) => Outcome::Transient(format!("HTTP: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> AlertView {
        AlertView {
            alert_id: 3,
            status: "open".into(),
            category: "vip".into(),
            severity: "high".into(),
            user: "rn-ben".into(),
            department: "er".into(),
            first_seen: "t0".into(),
            last_seen: "t1".into(),
            findings: 2,
            incidents: 1,
            link: Some("https://c/alerts/3".into()),
            patients: vec![],
            explanations: vec![],
        }
    }

    fn receiver(format: &str, extra: &str) -> WebhookReceiver {
        toml::from_str(&format!(
            "name = \"r\"\nurl = \"http://x/\"\nformat = \"{format}\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn bodies_for_each_service() {
        let v = view();
        let slack = body(&receiver("slack", ""), &v).unwrap();
        assert!(slack["text"].as_str().unwrap().contains("alert #3"));
        let teams = body(&receiver("teams", ""), &v).unwrap();
        assert_eq!(teams["@type"], "MessageCard");
        std::env::set_var("PHIWATCH_TEST_PD_KEY", "R0UT1NG");
        let pd = body(
            &receiver("pagerduty", "routing_key_env = \"PHIWATCH_TEST_PD_KEY\""),
            &v,
        )
        .unwrap();
        assert_eq!(pd["routing_key"], "R0UT1NG");
        assert_eq!(pd["dedup_key"], "phiwatch-alert-3");
        assert_eq!(pd["payload"]["severity"], "error");
        let std = body(&receiver("standard", ""), &v).unwrap();
        assert_eq!(std["alert"]["user"], "rn-ben");
        assert!(std["alert"].get("patients").is_none(), "minimum necessary");
    }

    #[test]
    fn standard_webhooks_signature() {
        // The example from the Standard Webhooks specification.
        let sig = super::sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
