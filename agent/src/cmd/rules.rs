//! `phiwatch rules test`: which receivers an alert would reach.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum RulesCmd {
    /// Which receivers an alert with these labels would reach.
    Test {
        /// Routing rules (default: the shipped rules/routing.toml).
        #[arg(long)]
        routing: Option<PathBuf>,
        #[arg(long)]
        category: String,
        #[arg(long, default_value = "high")]
        severity: String,
        #[arg(long, default_value = "")]
        department: String,
        /// Local hour 0-23 (default: now, UTC).
        #[arg(long)]
        hour: Option<u32>,
    },
}

pub fn rules_test(
    routing: Option<PathBuf>,
    category: &str,
    severity: &str,
    department: &str,
    hour: Option<u32>,
) -> Result<()> {
    use phiwatch::alert::routing::{RouteInput, Routing};
    let r = match &routing {
        Some(p) => Routing::load(p)?,
        None => Routing::parse(Routing::EMBEDDED)?,
    };
    let severity: phiwatch::finding::Severity = severity.parse()?;
    let hour = hour.unwrap_or_else(|| chrono::Timelike::hour(&chrono::Utc::now()));
    if hour > 23 {
        anyhow::bail!("--hour {hour}: expected 0-23");
    }
    let receivers = r.receivers_for(&RouteInput {
        category,
        severity,
        department,
        hour,
    });
    if receivers.is_empty() {
        println!("no receiver: this alert would be stored and nobody notified");
    }
    for name in receivers {
        let kind = match r.receiver(&name) {
            Some(phiwatch::alert::Receiver::Email(e)) => format!("email to {}", e.to.join(", ")),
            Some(phiwatch::alert::Receiver::Webhook(w)) => {
                format!("webhook {:?} {}", w.format, w.url)
            }
            Some(phiwatch::alert::Receiver::Syslog(r)) => {
                format!("CEF over syslog {:?} to {}", r.transport, r.address)
            }
            None => "undefined".into(),
        };
        println!("{name}: {kind}");
    }
    Ok(())
}

pub fn run(c: RulesCmd) -> Result<()> {
    let RulesCmd::Test {
        routing,
        category,
        severity,
        department,
        hour,
    } = c;
    rules_test(routing, &category, &severity, &department, hour)
}
