//! The Noise page and its API (`/noise`, `/api/v1/reports/noise`): which detectors make the
//! officers' work and what they judged of it (`crate::noise`).

use super::charts;
use super::html::{esc, layout};
use super::{App, Fail, PageFail, Signed};
use crate::noise::{self, NoiseReport, Options};
use axum::extract::{Query, State};
use axum::response::Html;
use axum::{Extension, Json};
use serde::Deserialize;
use std::fmt::Write as _;

/// `?since=30d|2026-03-01&until=2026-03-31`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

impl NoiseQuery {
    fn since(&self) -> &str {
        self.since
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("30d")
    }
}

async fn load(app: &App, q: &NoiseQuery) -> Result<NoiseReport, Fail> {
    let o = Options::window(q.since(), q.until.as_deref()).map_err(|e| Fail::bad(e.to_string()))?;
    let failed = |e: noise::NoiseError| Fail::internal(e.to_string());
    if let Some(pool) = &app.fleet {
        return super::fleet::blocking(pool, move |rt, client| {
            noise::report(&noise::fleet::Fleet { rt, client }, &o).map_err(failed)
        })
        .await;
    }
    app.db(move |c| noise::report(c, &o).map_err(failed)).await
}

pub async fn api(
    State(app): State<App>,
    super::extract::ApiQuery(q): super::extract::ApiQuery<NoiseQuery>,
) -> Result<Json<NoiseReport>, Fail> {
    load(&app, &q).await.map(Json)
}

pub async fn page(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    Query(q): Query<NoiseQuery>,
) -> Result<Html<String>, PageFail> {
    let r = load(&app, &q).await?;
    Ok(Html(layout("Noise", Some(&s), "/noise", &render(&q, &r))))
}

fn render(q: &NoiseQuery, r: &NoiseReport) -> String {
    let mut b = String::with_capacity(16 * 1024);
    let _ = write!(
        b,
        "<h1>Noise</h1><form class=\"filters\" method=\"get\" action=\"/noise\">\
<label>Since<input name=\"since\" id=\"n-since\" value=\"{}\" placeholder=\"30d or 2026-03-01\"></label>\
<label>Until<input name=\"until\" id=\"n-until\" value=\"{}\" placeholder=\"newest finding\"></label>\
<button type=\"submit\">Show</button></form>\
<p class=\"muted\" id=\"n-window\">{} to {}: {} findings, {} alerts, {} stored accesses</p>",
        esc(q.since()),
        esc(q.until.as_deref().unwrap_or("")),
        esc(&r.from),
        esc(&r.to),
        r.findings,
        r.alerts,
        r.accesses
    );
    if r.detectors.is_empty() {
        b.push_str("<p class=\"muted\">No findings in this window.</p>");
        return b;
    }
    b.push_str("<section class=\"card\" id=\"suggestions\"><h2>Suggestions</h2>");
    if r.suggestions.is_empty() {
        b.push_str("<p class=\"muted\">None: acknowledge alerts with a conclusion (false positive, benign, confirmed) and suggestions follow from them.</p>");
    } else {
        b.push_str("<ul>");
        for x in &r.suggestions {
            let _ = write!(
                b,
                "<li class=\"suggestion\" data-kind=\"{}\"><span class=\"chip\">{}</span> <strong>{}</strong>: {}<br><code>{}</code></li>",
                x.kind,
                esc(x.kind),
                esc(&x.detector),
                esc(&x.evidence),
                esc(&x.action)
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("</section>");

    b.push_str("<table id=\"noise\"><thead><tr><th>Detector</th><th>Findings</th><th>High</th><th>Per 10k</th><th>Alerts</th><th>Acknowledged</th><th>False positive</th><th>Benign</th><th>Confirmed</th><th>Top users</th></tr></thead><tbody>");
    for d in &r.detectors {
        let users: Vec<String> = d
            .top_users
            .iter()
            .map(|u| {
                format!(
                    "<a href=\"/alerts?status=all&amp;user={}\">{}</a> {}",
                    super::urlencoding(&u.user),
                    esc(&u.user),
                    u.findings
                )
            })
            .collect();
        let _ = write!(
            b,
            "<tr data-detector=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.detector),
            esc(&d.detector),
            d.findings,
            d.high,
            d.per_10k.map_or("–".into(), |x| format!("{x:.1}")),
            d.alerts,
            d.acknowledged,
            d.false_positive,
            d.benign,
            d.confirmed,
            users.join(", ")
        );
    }
    b.push_str("</tbody></table>");

    // Findings per day, one stack per detector.
    let mut days: std::collections::BTreeMap<&str, Vec<(String, i64)>> = Default::default();
    for d in &r.detectors {
        for x in &d.days {
            days.entry(&x.day)
                .or_default()
                .push((d.detector.clone(), x.findings as i64));
        }
    }
    let columns: Vec<(String, Vec<(String, i64)>)> =
        days.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let _ = write!(
        b,
        "<section class=\"card\" id=\"chart-noise\"><h2>Findings per day, by detector</h2>{}</section>",
        charts::stacked("findings per day by detector", &columns)
    );
    b
}
