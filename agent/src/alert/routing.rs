//! `rules/routing.toml`: how findings group into alerts, which receivers an alert reaches,
//! and how delivery is retried. Validated whole at load; errors name the file and the line.

use crate::finding::Severity;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RoutingError {
    #[error("cannot read routing rules {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("routing rules {path}: {message}")]
    Invalid { path: String, message: String },
    /// Rules that say something invalid, before a file is named.
    #[error("{0}")]
    Rules(String),
}

/// Without a routing file the defaults apply: findings still group into alerts (the queue
/// the console shows), and nobody is notified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub grouping: Grouping,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default, rename = "receiver")]
    pub receivers: Vec<Receiver>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
}

/// What an alert is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    User,
    Patient,
    Category,
    Severity,
    Department,
    Detector,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grouping {
    /// Findings with equal values of these labels form one alert.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<Label>,
    /// A user's findings on further patients (same other labels) join their open alert as
    /// new incidents instead of opening one alert per patient.
    #[serde(default = "yes")]
    pub fold_repeat_offenders: bool,
    /// Wait before the first notification of a new alert, to gather its siblings.
    #[serde(default = "d30s", deserialize_with = "duration")]
    pub group_wait: Duration,
    /// Least time between two notifications of one alert that keeps growing.
    #[serde(default = "d5m", deserialize_with = "duration")]
    pub group_interval: Duration,
    /// An open, unacknowledged alert is notified again after this long.
    #[serde(default = "d4h", deserialize_with = "duration")]
    pub repeat_interval: Duration,
    /// A critical alert mutes the lower-severity alerts of the same user while it is open.
    #[serde(default = "yes")]
    pub inhibit_lower_for_critical: bool,
}

impl Default for Grouping {
    fn default() -> Self {
        toml::from_str("").expect("grouping defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default = "d5s", deserialize_with = "duration")]
    pub initial: Duration,
    #[serde(default = "d10m", deserialize_with = "duration")]
    pub max: Duration,
    /// A notification still failing this long after it was due becomes a dead letter.
    #[serde(default = "d24h", deserialize_with = "duration")]
    pub give_up_after: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        toml::from_str("").expect("retry defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Categories this route takes; empty: all.
    #[serde(default)]
    pub category: Vec<String>,
    pub min_severity: Option<Severity>,
    /// The user's department; empty: all.
    #[serde(default)]
    pub department: Vec<String>,
    /// Local hours `"18-08"` (wrapping midnight) when this route applies; absent: always.
    pub hours: Option<String>,
    pub receivers: Vec<String>,
    /// Keep looking at later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum Receiver {
    Email(EmailReceiver),
    Webhook(WebhookReceiver),
    /// CEF over syslog to a SIEM.
    Syslog(SyslogReceiver),
}

impl Receiver {
    pub fn name(&self) -> &str {
        match self {
            Receiver::Email(r) => &r.name,
            Receiver::Webhook(r) => &r.name,
            Receiver::Syslog(r) => &r.name,
        }
    }

    pub fn include_patient(&self) -> bool {
        match self {
            Receiver::Email(r) => r.include_patient,
            Receiver::Webhook(r) => r.include_patient,
            Receiver::Syslog(r) => r.include_patient,
        }
    }

    pub fn console_url(&self) -> Option<&str> {
        match self {
            Receiver::Email(r) => r.console_url.as_deref(),
            Receiver::Webhook(r) => r.console_url.as_deref(),
            Receiver::Syslog(r) => r.console_url.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    Udp,
    /// Octet-counted frames (RFC 6587).
    Tcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogReceiver {
    pub name: String,
    /// `host:port` of the SIEM's syslog input.
    pub address: String,
    pub transport: SyslogTransport,
    #[serde(default)]
    pub include_patient: bool,
    pub console_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required: the message is never sent in clear.
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: loopback relays only.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailReceiver {
    pub name: String,
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    /// PEM CA bundle for a relay with a private CA.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    /// Environment variable holding the password (never the password itself in a file).
    pub password_env: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// Include patient ids and finding explanations (minimum necessary: off by default).
    #[serde(default)]
    pub include_patient: bool,
    /// Base URL of the console for case links.
    pub console_url: Option<String>,
    /// Subject line with `{placeholders}` (see README, "Alerts and notifications").
    pub subject: Option<String>,
    /// Template files for the text and HTML parts; default: the built-in ones.
    pub text_template: Option<PathBuf>,
    pub html_template: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// phiwatch's JSON alert, signed per Standard Webhooks.
    #[default]
    Standard,
    Slack,
    Teams,
    Pagerduty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Environment variable holding the Standard Webhooks secret (`whsec_…` base64).
    pub secret_env: Option<String>,
    /// Environment variable holding the PagerDuty routing key.
    pub routing_key_env: Option<String>,
    #[serde(default)]
    pub include_patient: bool,
    pub console_url: Option<String>,
    #[serde(default = "d10s", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn yes() -> bool {
    true
}
fn default_group_by() -> Vec<Label> {
    vec![Label::User, Label::Patient, Label::Category]
}
fn default_smtp_port() -> u16 {
    587
}
fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d5m() -> Duration {
    Duration::from_secs(300)
}
fn d10m() -> Duration {
    Duration::from_secs(600)
}
fn d4h() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn d24h() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// Why a duration (`250ms`, `30s`, `5m`, `4h`, `1d`) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("duration {0:?} has no unit (ms, s, m, h, d)")]
    NoUnit(String),
    #[error("duration {0:?} does not start with a number")]
    NoNumber(String),
    #[error("duration {0:?}: unit must be ms, s, m, h or d")]
    Unit(String),
    #[error("duration {0:?} is too long")]
    TooLong(String),
}

/// `250ms`, `30s`, `5m`, `4h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| DurationError::NoUnit(s.into()))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| DurationError::NoNumber(s.into()))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(DurationError::Unit(s.into())),
    };
    // Milliseconds are later added to epoch times held in i64.
    n.checked_mul(per)
        .filter(|ms| *ms <= i64::MAX as u64 / 4)
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::TooLong(s.into()))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// `"18-08"` → (18, 8).
fn parse_hours(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < 24 && b <= 24).then_some((a, b))
}

/// The alert facts routes match on.
pub struct RouteInput<'a> {
    pub category: &'a str,
    pub severity: Severity,
    pub department: &'a str,
    /// Local hour 0..23 when the alert changed.
    pub hour: u32,
}

impl Routing {
    pub const EMBEDDED: &'static str = include_str!("../../../rules/routing.toml");

    pub fn load(path: &Path) -> Result<Self, RoutingError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RoutingError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| RoutingError::Invalid {
            path: p,
            message: e.to_string(),
        })
    }

    /// The same grouping with nobody to notify: an offline scan fills the alert queue but
    /// never sends anything.
    pub fn grouping_only(&self) -> Routing {
        Routing {
            grouping: self.grouping.clone(),
            ..Routing::default()
        }
    }

    pub fn parse(text: &str) -> Result<Self, RoutingError> {
        let r: Routing = toml::from_str(text).map_err(|e| RoutingError::Rules(e.to_string()))?;
        r.validate()?;
        Ok(r)
    }

    fn validate(&self) -> Result<(), RoutingError> {
        let bad = RoutingError::Rules;
        let mut names = std::collections::HashSet::new();
        for r in &self.receivers {
            if !names.insert(r.name()) {
                return Err(bad(format!("receiver {:?} is defined twice", r.name())));
            }
            match r {
                Receiver::Email(e) => {
                    if e.to.is_empty() {
                        return Err(bad(format!("receiver {:?}: `to` is empty", e.name)));
                    }
                    for a in e.to.iter().chain([&e.from]) {
                        a.parse::<lettre::message::Mailbox>().map_err(|err| {
                            bad(format!("receiver {:?}: address {a:?}: {err}", e.name))
                        })?;
                    }
                    if e.username.is_some() != e.password_env.is_some() {
                        return Err(bad(format!(
                            "receiver {:?}: username and password_env go together",
                            e.name
                        )));
                    }
                }
                Receiver::Syslog(r) => {
                    let ok = r
                        .address
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !ok {
                        return Err(bad(format!(
                            "receiver {:?}: address {:?}: expected host:port",
                            r.name, r.address
                        )));
                    }
                }
                Receiver::Webhook(w) => {
                    let url = reqwest::Url::parse(&w.url).map_err(|err| {
                        bad(format!("receiver {:?}: url {:?}: {err}", w.name, w.url))
                    })?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err(bad(format!("receiver {:?}: url must be http(s)", w.name)));
                    }
                    if w.format == WebhookFormat::Pagerduty && w.routing_key_env.is_none() {
                        return Err(bad(format!(
                            "receiver {:?}: format = \"pagerduty\" needs routing_key_env",
                            w.name
                        )));
                    }
                }
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("route #{}", i + 1);
            if route.receivers.is_empty() {
                return Err(bad(format!("{at}: no receivers")));
            }
            for r in &route.receivers {
                if !names.contains(r.as_str()) {
                    return Err(bad(format!("{at}: receiver {r:?} is not defined")));
                }
            }
            if let Some(h) = &route.hours {
                parse_hours(h).ok_or_else(|| {
                    bad(format!(
                        "{at}: hours {h:?}: expected \"HH-HH\", e.g. \"18-08\""
                    ))
                })?;
            }
        }
        if self.grouping.group_by.is_empty() {
            return Err(bad("grouping.group_by is empty".into()));
        }
        Ok(())
    }

    /// Receivers an alert reaches, in route order, without repeats.
    pub fn receivers_for(&self, a: &RouteInput<'_>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for route in &self.routes {
            let matched = (route.category.is_empty()
                || route.category.iter().any(|c| c == a.category))
                && route.min_severity.is_none_or(|m| a.severity >= m)
                && (route.department.is_empty()
                    || route.department.iter().any(|d| d == a.department))
                && route
                    .hours
                    .as_deref()
                    .and_then(parse_hours)
                    .is_none_or(|(from, to)| {
                        if from <= to {
                            (from..to).contains(&a.hour)
                        } else {
                            a.hour >= from || a.hour < to
                        }
                    });
            if matched {
                for r in &route.receivers {
                    if !out.contains(r) {
                        out.push(r.clone());
                    }
                }
                if !route.continue_matching {
                    break;
                }
            }
        }
        out
    }

    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_routing_is_valid_and_routes() {
        let r = Routing::parse(Routing::EMBEDDED).unwrap();
        assert_eq!(r.grouping.group_by, default_group_by());
        let vip = RouteInput {
            category: "vip",
            severity: Severity::Critical,
            department: "cardiology",
            hour: 14,
        };
        assert!(!r.receivers_for(&vip).is_empty());
    }

    #[test]
    fn matching_and_errors() {
        let text = r#"
[grouping]
group_wait = "1s"
[[receiver]]
kind = "webhook"
name = "siem"
url = "http://127.0.0.1:9/x"
[[receiver]]
kind = "email"
name = "night"
host = "127.0.0.1"
tls = "none"
from = "phiwatch@example.org"
to = ["privacy@example.org"]
[[route]]
min_severity = "high"
hours = "18-08"
receivers = ["night"]
continue = true
[[route]]
receivers = ["siem"]
"#;
        let r = Routing::parse(text).unwrap();
        assert_eq!(r.grouping.group_wait, Duration::from_secs(1));
        let at = |severity, hour| RouteInput {
            category: "vip",
            severity,
            department: "er",
            hour,
        };
        assert_eq!(r.receivers_for(&at(Severity::High, 23)), ["night", "siem"]);
        assert_eq!(r.receivers_for(&at(Severity::High, 3)), ["night", "siem"]);
        assert_eq!(r.receivers_for(&at(Severity::High, 12)), ["siem"]);
        assert_eq!(r.receivers_for(&at(Severity::Low, 23)), ["siem"]);

        let bad = text.replace("receivers = [\"siem\"]", "receivers = [\"pager\"]");
        assert!(Routing::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("\"pager\" is not defined"));
        let bad = text.replace("\"1s\"", "\"soon\"");
        let e = Routing::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("soon"), "{e}");
        let bad = text.replace("privacy@example.org", "privacy at example");
        assert!(Routing::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("privacy at example"));
        let bad = text.replace("\"18-08\"", "\"evenings\"");
        assert!(Routing::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("evenings"));
    }
}
