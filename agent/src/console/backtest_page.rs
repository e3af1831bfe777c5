//! `/backtest`: a policy author pastes a draft of one policy file (a changed rule, or a new
//! file) and sees what the pack with that draft would have added and removed over the stored
//! access log, beside the pack in force: the report of `phiwatch policy backtest`, without its
//! sample explanations (they name patients, and this page records no patient views; the CLI
//! shows them).

use super::html::{csrf_field, esc, layout};
use super::{App, Fail, PageFail, Signed};
use crate::backtest::{self, Report, Side};
use crate::detect::PackSources;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use std::fmt::Write as _;

const WINDOWS: [&str; 3] = ["7d", "30d", "90d"];
/// The longest draft file taken.
const DRAFT_MAX: usize = 256 * 1024;
/// Users listed per change.
const TOP: usize = 10;

#[derive(Deserialize, Default)]
pub struct DraftForm {
    #[serde(default)]
    file: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    plugins: Option<String>,
}

pub async fn page(State(app): State<App>, Extension(s): Extension<Signed>) -> Response {
    answer(&app, &s, StatusCode::OK, &DraftForm::default(), "")
}

pub async fn run(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    Form(f): Form<DraftForm>,
) -> Response {
    let Some(detection) = app.inputs.detection.clone() else {
        return PageFail(Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backtesting needs the running agent's policies and context",
        ))
        .into_response();
    };
    let bad = |m: String| answer(&app, &s, StatusCode::BAD_REQUEST, &f, &error(&m));
    let name_ok = f.file.ends_with(".cedar")
        && f.file.len() <= 64
        && f.file[..f.file.len() - ".cedar".len()]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok || f.file == ".cedar" {
        return bad(format!(
            "file {:?}: a policy file name such as snooping.cedar (letters, digits, - and _)",
            f.file
        ));
    }
    if f.text.len() > DRAFT_MAX {
        return bad(format!("the draft is over {} KiB", DRAFT_MAX / 1024));
    }
    let since = if WINDOWS.contains(&f.since.as_str()) {
        f.since.clone()
    } else {
        "30d".to_owned()
    };
    let Ok(_running) = app.backtests.try_acquire() else {
        return answer(
            &app,
            &s,
            StatusCode::TOO_MANY_REQUESTS,
            &f,
            &error("another backtest is running; try again when it is done"),
        );
    };
    let draft = Draft {
        file: f.file.clone(),
        text: f.text.clone(),
        since,
        with_plugins: f.plugins.is_some(),
    };
    let user = s.account.name.clone();
    let result = match &app.fleet {
        Some(pool) => super::fleet::blocking(pool, move |rt, client| {
            Ok(replay_fleet(&detection, rt, client, &draft))
        })
        .await
        .unwrap_or_else(|f| Err(ReplayError::Stopped(f.message))),
        None => {
            let db = app.inputs.db.clone();
            tokio::task::spawn_blocking(move || replay_store(&detection, &db, &draft))
                .await
                .unwrap_or_else(|e| Err(ReplayError::Stopped(e.to_string())))
        }
    };
    match result {
        Ok(report) => {
            tracing::info!(
                user = %user,
                accesses = report.accesses,
                added = report.total.added,
                removed = report.total.removed,
                "console backtest"
            );
            answer(&app, &s, StatusCode::OK, &f, &render(&report))
        }
        Err(e) => bad(e.to_string()),
    }
}

/// Why a draft could not be replayed; shown to the officer as it reads.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error(transparent)]
    Load(#[from] crate::reload::LoadError),
    #[error("the pack in force: {0}")]
    InForce(crate::detect::PolicyError),
    #[error("the draft: {0}")]
    Draft(crate::detect::PolicyError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("the store has no stored accesses yet")]
    Empty,
    #[error(transparent)]
    Window(#[from] crate::mine::WindowError),
    #[error(transparent)]
    Backtest(#[from] crate::backtest::BacktestError),
    #[error("the backtest stopped: {0}")]
    Stopped(String),
}

/// A draft of one policy file, the window to replay it over, and whether plugins run.
struct Draft {
    file: String,
    text: String,
    since: String,
    with_plugins: bool,
}

/// The draft over the single process's store, with the ADT messages it journaled.
fn replay_store(
    d: &super::DetectionInputs,
    db: &std::path::Path,
    draft: &Draft,
) -> Result<Report, ReplayError> {
    let loaded = inputs(d, draft).load()?;
    let conn = crate::store::Store::open_existing(db)?;
    let newest = crate::store::newest_access(&conn)?;
    replay(d, &loaded, &conn, newest, draft)
}

/// The draft over the fleet's access log, with the fleet's context journal (a console node
/// keeps no store of its own).
fn replay_fleet(
    d: &super::DetectionInputs,
    rt: &tokio::runtime::Handle,
    client: &tokio_postgres::Client,
    draft: &Draft,
) -> Result<Report, ReplayError> {
    let journal = rt.block_on(crate::fleet::state::journal(client))?;
    let loaded = inputs(d, draft).load_with_journal(&journal)?;
    let newest = rt.block_on(crate::fleet::store::newest_access(client))?;
    replay(
        d,
        &loaded,
        &backtest::FleetLog { rt, client },
        newest,
        draft,
    )
}

fn inputs(d: &super::DetectionInputs, draft: &Draft) -> crate::reload::Inputs {
    let mut inputs = d.inputs.clone();
    if !draft.with_plugins {
        inputs.plugins = Default::default();
    }
    inputs
}

/// The pack in force with the draft's file replaced (or added), replayed beside the pack in
/// force over the window ending just after `newest`.
fn replay(
    d: &super::DetectionInputs,
    loaded: &crate::reload::Loaded,
    log: &impl backtest::AccessLog,
    newest: Option<i64>,
    draft: &Draft,
) -> Result<Report, ReplayError> {
    let pack = PackSources::read(d.inputs.policies.as_deref())
        .map_err(ReplayError::InForce)?
        .with_file(&draft.file, &draft.text)
        .compile()
        .map_err(ReplayError::Draft)?;
    let until = newest.ok_or(ReplayError::Empty)? + 1;
    let from = crate::mine::Since::parse(&draft.since)?.start(until);
    let side = |pack| Side {
        pack,
        plugins: &loaded.plugins,
    };
    Ok(backtest::run(
        log,
        &loaded.context,
        &loaded.settings,
        &d.grouping,
        side(&loaded.pack),
        side(&pack),
        (from, until),
        0,
        &mut |_, _| Ok(()),
    )?)
}

fn error(m: &str) -> String {
    format!("<p class=\"flash error\" id=\"bt-error\">{}</p>", esc(m))
}

fn answer(app: &App, s: &Signed, status: StatusCode, f: &DraftForm, below: &str) -> Response {
    let mut b = String::with_capacity(8 * 1024);
    b.push_str("<h1>Backtest a draft</h1>");
    if app.inputs.detection.is_none() {
        b.push_str("<p class=\"muted\">Backtesting needs the running agent (`phiwatch run`); use `phiwatch policy backtest` here.</p>");
    }
    let files: Vec<String> = app
        .inputs
        .detection
        .as_ref()
        .and_then(|d| PackSources::read(d.inputs.policies.as_deref()).ok())
        .map(|p| {
            p.files
                .iter()
                .filter_map(|(n, _)| std::path::Path::new(n).file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/backtest\" class=\"card\" id=\"bt-form\">{}\
<p class=\"muted\">Paste the whole draft of one policy file: it replaces the file of that name in the pack in force (in force: {}), or is added beside them. An empty file removes it. The stored access log of the window is replayed through both packs.</p>\
<label>Policy file<input name=\"file\" id=\"bt-file\" required value=\"{}\" placeholder=\"snooping.cedar\"></label>\
<label>Draft<textarea name=\"text\" id=\"bt-text\" rows=\"16\" spellcheck=\"false\">{}</textarea></label>\
<label>Window<select name=\"since\" id=\"bt-since\">",
        csrf_field(s),
        esc(&files.join(", ")),
        esc(&f.file),
        esc(&f.text)
    );
    for w in WINDOWS {
        let sel = if f.since == w || (f.since.is_empty() && w == "30d") {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option value=\"{w}\"{sel}>last {w}</option>");
    }
    let checked = if f.plugins.is_some() { " checked" } else { "" };
    let _ = write!(
        b,
        "</select></label><label><input type=\"checkbox\" name=\"plugins\" value=\"on\" id=\"bt-plugins\"{checked}> with the plugins in force (slower)</label>\
<button type=\"submit\" id=\"bt-run\">Backtest</button></form>{below}"
    );
    (status, Html(layout("Backtest", Some(s), "/backtest", &b))).into_response()
}

fn render(r: &Report) -> String {
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<section class=\"card\" id=\"bt-report\"><h2>Result</h2>\
<p id=\"bt-window\">{} to {} UTC: {} stored accesses replayed</p>\
<p>In force: {} findings, {} alerts. Draft: {} findings, {} alerts.</p>\
<p id=\"bt-summary\">The draft adds {} findings ({} new alerts) and removes {} ({} alerts no longer made).</p>",
        day(r.since_ms),
        day(r.until_ms),
        r.accesses,
        r.in_force,
        r.alerts_in_force,
        r.draft,
        r.alerts_draft,
        r.total.added,
        r.alerts.added,
        r.total.removed,
        r.alerts.removed
    );
    if r.per_day.is_empty() {
        b.push_str("<p class=\"muted\">No differences.</p></section>");
        return b;
    }
    b.push_str("<table id=\"bt-days\"><thead><tr><th>Day</th><th>Detector</th><th>Added</th><th>Removed</th></tr></thead><tbody>");
    for ((d, det), c) in &r.per_day {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(d),
            esc(det),
            c.added,
            c.removed
        );
    }
    b.push_str("</tbody></table><h3>Top users</h3><table id=\"bt-users\"><thead><tr><th>User</th><th>Added</th><th>Removed</th></tr></thead><tbody>");
    let mut users: Vec<_> = r.per_user.iter().collect();
    users.sort_by(|x, y| {
        (y.1.added + y.1.removed)
            .cmp(&(x.1.added + x.1.removed))
            .then(x.0.cmp(y.0))
    });
    for (u, c) in users.into_iter().take(TOP) {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(u),
            c.added,
            c.removed
        );
    }
    b.push_str("</tbody></table><p class=\"muted\">Sample explanations name patients and are not shown here: `phiwatch policy backtest` prints them.</p></section>");
    b
}
