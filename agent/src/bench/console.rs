//! `phiwatch bench --console`: how fast the console answers with a large queue. A store with
//! N open alerts (one finding each, severities and categories mixed like the demo's) is
//! served on loopback, and each page is fetched repeatedly by a signed-in client. Reported:
//! the server's own time (`Server-Timing`) and the client's, median and 95th percentile,
//! beside a baseline measured in the same run (the session endpoint: a signed-in request
//! that reads nothing else).

use crate::config::ConsoleConfig;
use crate::console::authz::Role;
use anyhow::{Context as _, Result};
use rusqlite::params;
use std::fmt::Write as _;
use std::time::Instant;

const CATEGORIES: [&str; 8] = [
    "vip",
    "family",
    "neighbor",
    "coworker",
    "self_access",
    "after_hours",
    "unexplained",
    "volume_anomaly",
];
const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

fn fill(db: &std::path::Path, alerts: usize) -> Result<()> {
    let mut conn = crate::store::Store::open_existing(db)?;
    let tx = conn.transaction()?;
    let now = crate::time::now_ms();
    for i in 0..alerts {
        let (cat, sev) = (CATEGORIES[i % 8], SEVERITIES[(i / 8 + i) % 4]);
        let user = format!("pr-{:05}", i % 2_000);
        let patient = format!("pt-{:06}", i * 7 % 30_000);
        let event = format!("ev-{i}");
        let t = now - (alerts - i) as i64 * 60_000;
        tx.execute(
            "INSERT INTO alerts (group_key, fold_key, status, category, severity, user_id,
             department, first_ms, last_ms, findings, incidents)
             VALUES (?1, ?1, 'open', ?2, ?3, ?4, 'cardiology', ?5, ?5, 1, 1)",
            params![format!("k{i}"), cat, sev, user, t],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO findings (event_id, detector, time, user_id, patient_id, action,
             category, severity, explanation, hipaa, department)
             VALUES (?1, 'bench', ?2, ?3, ?4, 'view', ?5, ?6, ?7, '45 CFR 164.502(b)', 'cardiology')",
            params![
                event,
                crate::time::format_ms(t),
                user,
                patient,
                cat,
                sev,
                format!("User {user} (nurse, cardiology) opened the record of patient {patient} with no care relationship (view at 23h local).")
            ],
        )?;
        tx.execute(
            "INSERT INTO alert_findings (alert_id, event_id, detector, patient_id) VALUES (?1, ?2, 'bench', ?3)",
            params![id, event, patient],
        )?;
    }
    tx.commit()?;
    Ok(())
}

struct Sample {
    server_ms: Vec<f64>,
    client_ms: Vec<f64>,
    bytes: usize,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn run(alerts: usize, rounds: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("phiwatch.db");
    crate::store::Store::open(&db)?;
    let started = Instant::now();
    fill(&db, alerts)?;
    eprintln!(
        "stored {alerts} alerts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let password = crate::console::session::token();
    crate::console::accounts::add(
        &crate::store::Store::open_existing(&db)?,
        "bench",
        Role::PrivacyOfficer,
        None,
        &password,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (j, r) = (
            crate::case::clock::Jurisdictions::parse(crate::case::clock::Jurisdictions::EMBEDDED)?,
            crate::case::response::Response::parse(crate::case::response::EMBEDDED)?,
        );
        let inputs = crate::console::ConsoleInputs {
            db: db.clone(),
            evidence_dir: dir.path().join("evidence"),
            plan: std::sync::Arc::new(crate::case::schedule::Plan {
                jurisdictions: j,
                response: r,
            }),
            context: None,
            metrics: None,
            views: None,
            detection: None,
            fleet: None,
        };
        let cfg = ConsoleConfig::loopback("127.0.0.1:0".parse()?);
        let (addr, serve) = crate::console::bind(&cfg, inputs).await?;
        tokio::spawn(serve);
        let base = format!("http://{addr}");
        let client = reqwest::Client::builder().build()?;
        let login = client
            .post(format!("{base}/api/v1/session"))
            .json(&serde_json::json!({ "user": "bench", "password": password }))
            .send()
            .await?;
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .context("no session cookie")?
            .to_owned();
        let pages = [
            ("baseline: GET /api/v1/session", "/api/v1/session"),
            ("alert queue, first screen (100 rows)", "/alerts"),
            ("alert queue, last page", &*format!("/alerts?offset={}", alerts.saturating_sub(100))),
            ("alert queue, filtered (high)", "/alerts?severity=high"),
            ("API: GET /api/v1/alerts (100)", "/api/v1/alerts"),
            ("dashboard", "/dashboard"),
        ];
        let mut out = format!(
            "console with {alerts} open alerts, {rounds} requests per page (loopback, one client)\n{:<40} {:>11} {:>11} {:>11} {:>11} {:>9} {:>8}\n",
            "page", "server p50", "server p95", "client p50", "client p95", "x base", "KiB"
        );
        let mut base_p50 = 0.0;
        for (label, path) in pages {
            let mut s = Sample {
                server_ms: Vec::new(),
                client_ms: Vec::new(),
                bytes: 0,
            };
            for i in 0..rounds + 3 {
                let t = Instant::now();
                let res = client
                    .get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await?;
                let status = res.status();
                let server: f64 = res
                    .headers()
                    .get("server-timing")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("app;dur="))
                    .and_then(|v| v.parse().ok())
                    .context("no Server-Timing")?;
                let body = res.bytes().await?;
                let client_ms = t.elapsed().as_secs_f64() * 1000.0;
                anyhow::ensure!(status.is_success(), "{path}: {status}");
                // The first requests warm the pool and SQLite's page cache.
                if i >= 3 {
                    s.server_ms.push(server);
                    s.client_ms.push(client_ms);
                    s.bytes = body.len();
                }
            }
            let p50 = pct(&mut s.server_ms, 0.5);
            if base_p50 == 0.0 {
                base_p50 = p50.max(0.001);
            }
            let _ = writeln!(
                out,
                "{label:<40} {:>8.2} ms {:>8.2} ms {:>8.2} ms {:>8.2} ms {:>9.1} {:>8.1}",
                p50,
                pct(&mut s.server_ms, 0.95),
                pct(&mut s.client_ms, 0.5),
                pct(&mut s.client_ms, 0.95),
                p50 / base_p50,
                s.bytes as f64 / 1024.0
            );
        }
        Ok::<_, anyhow::Error>(out)
    })
}
