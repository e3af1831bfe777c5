//! The console's pages, rendered on the server. Forms post to the API's write endpoints
//! (with the session's CSRF token and a `return_to`), so the console and the API cannot
//! drift apart.

use super::authz::Perm;
use super::charts;
use super::data::{self, AlertFilter};
use super::html::{esc, form, layout, severity, words};
use super::{client, local_path, App, Fail, PageFail, Signed, LOGIN_COOKIE};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use std::fmt::Write as _;

type Page = Result<Html<String>, PageFail>;

pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("assets/console.css"),
    )
        .into_response()
}

pub async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("assets/console.js"),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

impl NextQuery {
    pub fn next(&self) -> Option<&str> {
        self.next.as_deref()
    }
}

fn login_page(app: &super::Console, next: &str, token: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"flash error\" id=\"login-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let sso = app
        .sso
        .as_ref()
        .map(|s| {
            let href = if next.is_empty() {
                "/oidc/login".to_owned()
            } else {
                format!("/oidc/login?next={}", super::urlencoding(next))
            };
            format!(
                "<p><a class=\"button\" id=\"sso\" href=\"{}\">{}</a></p>",
                esc(&href),
                esc(s.button())
            )
        })
        .unwrap_or_default();
    let password = if app.local_accounts {
        format!(
            "<form method=\"post\" action=\"/login\" id=\"login\">\
<input type=\"hidden\" name=\"login_csrf\" value=\"{}\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<label>User name<input name=\"user\" id=\"user\" autocomplete=\"username\" required autofocus></label>\
<label>Password<input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
            esc(token),
            esc(next)
        )
    } else {
        String::new()
    };
    layout(
        "Sign in",
        None,
        "",
        &format!(
            "<section class=\"card login\"><h1>Sign in</h1>{error}{sso}{password}\
<p class=\"muted\">Everything you view here is recorded and monitored.</p></section>"
        ),
    )
}

/// The sign-in page, with a fresh form token (also in a cookie: it stops another site from
/// signing a browser in under the attacker's account).
pub(super) fn login_answer(
    app: &super::Console,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> Response {
    let token = super::session::token();
    let next = if local_path(next) { next } else { "" };
    let mut res = (status, Html(login_page(app, next, &token, error))).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        app.cookie(LOGIN_COOKIE, &token, Some(600)),
    );
    res
}

pub async fn login_form(State(app): State<App>, Query(q): Query<NextQuery>) -> Response {
    login_answer(&app, StatusCode::OK, q.next.as_deref().unwrap_or(""), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    login_csrf: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    State(app): State<App>,
    ci: ConnectInfo<crate::net::Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let cookie = super::cookie_value(&headers, LOGIN_COOKIE).unwrap_or("");
    if cookie.is_empty() || !super::session::same(cookie, &f.login_csrf) {
        return login_answer(
            &app,
            StatusCode::FORBIDDEN,
            &f.next,
            Some("The sign-in form expired; please sign in again."),
        );
    }
    match app
        .sign_in(client(&ci), f.user.clone(), f.password.clone())
        .await
    {
        Ok((a, token, _)) => {
            let to = if local_path(&f.next) && f.next != "/login" {
                f.next.clone()
            } else {
                a.role.home().to_owned()
            };
            let mut res = Redirect::to(&to).into_response();
            let h = res.headers_mut();
            h.append(header::SET_COOKIE, app.session_cookie(&token));
            h.append(header::SET_COOKIE, app.clear_cookie(LOGIN_COOKIE));
            res
        }
        Err(e) => login_answer(&app, e.status, &f.next, Some(&e.message)),
    }
}

pub async fn logout(
    State(app): State<App>,
    ci: ConnectInfo<crate::net::Peer>,
    Extension(s): Extension<Signed>,
) -> Response {
    let sso = match app.end_session(&s, client(&ci)).await {
        Ok(sso) => sso,
        Err(f) => return PageFail(f).into_response(),
    };
    // A single sign-on user is signed out at the provider too, or the next click on the
    // sign-on button would sign them straight back in.
    let to = match (&app.sso, sso) {
        (Some(p), true) => p.logout_url().await,
        _ => None,
    };
    let mut res = match to {
        Some(to) => super::sso_pages::onward(&to, "Signed out").into_response(),
        None => Redirect::to("/login").into_response(),
    };
    res.headers_mut()
        .insert(header::SET_COOKIE, app.clear_cookie(super::SESSION_COOKIE));
    res
}

pub async fn home(Extension(s): Extension<Signed>) -> Redirect {
    Redirect::to(s.account.role.home())
}

fn opt_select(name: &str, id: &str, current: Option<&str>, options: &[(&str, &str)]) -> String {
    let mut out = format!("<select name=\"{name}\" id=\"{id}\">");
    for (v, label) in options {
        let sel = if current == Some(*v) { " selected" } else { "" };
        let _ = write!(
            out,
            "<option value=\"{}\"{sel}>{}</option>",
            esc(v),
            esc(label)
        );
    }
    out.push_str("</select>");
    out
}

fn query_string(f: &AlertFilter, offset: u32) -> String {
    let mut q = Vec::new();
    for (k, v) in [
        ("status", &f.status),
        ("severity", &f.severity),
        ("category", &f.category),
        ("user", &f.user),
        ("department", &f.department),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            q.push((k, v.to_owned()));
        }
    }
    if let Some(l) = f.limit {
        q.push(("limit", l.to_string()));
    }
    q.push(("offset", offset.to_string()));
    serde_urlencoded::to_string(q).unwrap_or_default()
}

pub async fn alerts(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    Query(f): Query<AlertFilter>,
) -> Page {
    f.status().map_err(Fail::from)?;
    let f2 = f.clone();
    let page = app.alert_page(f2).await?;
    Ok(Html(render_alerts(&s, &f, &page)))
}

/// The alert queue (kept apart from the handler so the benchmark renders exactly this).
pub fn render_alerts(s: &Signed, f: &AlertFilter, page: &data::AlertPage) -> String {
    let mut b = String::with_capacity(64 * 1024 + page.alerts.len() * 600);
    let status = f.status().unwrap_or("open");
    b.push_str("<h1>Alert queue</h1>");
    let mut cats: Vec<(&str, &str)> = vec![("", "any category")];
    cats.extend(page.by_category.keys().map(|k| (k.as_str(), k.as_str())));
    if let Some(c) = f.category.as_deref().filter(|c| !c.is_empty()) {
        if !page.by_category.contains_key(c) {
            cats.push((c, c));
        }
    }
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/alerts\">{}{}{}\
<input name=\"user\" id=\"f-user\" placeholder=\"user id\" value=\"{}\"><button type=\"submit\">Filter</button></form>",
        opt_select(
            "status",
            "f-status",
            Some(status),
            &[("open", "open"), ("acknowledged", "acknowledged"), ("all", "all")]
        ),
        opt_select(
            "severity",
            "f-severity",
            f.severity.as_deref(),
            &[
                ("", "any severity"),
                ("critical", "critical"),
                ("high", "high"),
                ("medium", "medium"),
                ("low", "low")
            ]
        ),
        opt_select("category", "f-category", f.category.as_deref(), &cats),
        esc(f.user.as_deref().unwrap_or(""))
    );
    let _ = write!(
        b,
        "<p class=\"counts\" id=\"total\"><strong>{}</strong> {} alert(s)",
        page.total,
        esc(status)
    );
    for sev in ["critical", "high", "medium", "low"] {
        if let Some(n) = page.by_severity.get(sev) {
            let _ = write!(b, " · {} {n}", severity(sev));
        }
    }
    b.push_str("</p>");
    if page.alerts.is_empty() {
        b.push_str("<p class=\"muted\" id=\"empty\">No alerts match.</p>");
    } else {
        b.push_str(
            "<table class=\"queue\" id=\"queue\"><thead><tr><th>#</th><th>Severity</th>\
<th>Category</th><th>User</th><th>Department</th><th class=\"n\">Patients</th>\
<th class=\"n\">Findings</th><th>Last</th><th>What happened</th></tr></thead><tbody>",
        );
        for a in &page.alerts {
            let _ = write!(
                b,
                "<tr class=\"{}\"><td><a class=\"alert-link\" href=\"/alerts/{}\">#{}</a></td><td>{}</td>\
<td>{}</td><td class=\"id\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"t\">{}</td><td>{}{}</td></tr>",
                esc(&a.status),
                a.id,
                a.id,
                severity(&a.severity),
                words(&a.category),
                esc(&a.user),
                esc(&a.department),
                a.patients,
                a.findings,
                esc(a.last.get(..16).unwrap_or(&a.last)).replace('T', " "),
                esc(&a.explanation),
                a.acknowledged_by
                    .as_deref()
                    .map(|by| format!(" <span class=\"chip\">acknowledged by {}</span>", esc(by)))
                    .unwrap_or_default()
            );
        }
        b.push_str("</tbody></table>");
    }
    let (off, lim) = (page.offset, page.limit);
    b.push_str("<nav class=\"pages\">");
    if off > 0 {
        let _ = write!(
            b,
            "<a href=\"/alerts?{}\" id=\"prev\">← newer</a>",
            esc(&query_string(f, off.saturating_sub(lim)))
        );
    }
    let shown_to = (off as i64 + page.alerts.len() as i64).min(page.total);
    let _ = write!(
        b,
        "<span>{}–{} of {}</span>",
        if page.alerts.is_empty() { 0 } else { off + 1 },
        shown_to,
        page.total
    );
    if shown_to < page.total {
        let _ = write!(
            b,
            "<a href=\"/alerts?{}\" id=\"next\">older →</a>",
            esc(&query_string(f, off + lim))
        );
    }
    b.push_str("</nav>");
    layout("Alerts", Some(s), "/alerts", &b)
}

pub async fn alert(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    Path(id): Path<i64>,
) -> Page {
    let d = app.alert_detail(id, &s.account).await?;
    let a = &d.alert;
    let back = format!("/alerts/{id}");
    let role = s.account.role;
    let mut b = format!(
        "<h1>Alert #{id}: {} by {}</h1><p>{} <span class=\"chip\" id=\"alert-status\">{}</span></p>\
<p class=\"explain\" id=\"explanation\">{}</p>\
<dl class=\"facts\"><dt>User</dt><dd>{}</dd><dt>Department</dt><dd>{}</dd><dt>First</dt><dd>{}</dd>\
<dt>Last</dt><dd>{}</dd><dt>Findings</dt><dd>{}</dd><dt>Patients</dt><dd>{}</dd>",
        words(&a.category),
        esc(&a.user),
        severity(&a.severity),
        esc(&a.status),
        esc(&a.explanation),
        esc(&a.user),
        esc(&a.department),
        esc(&a.first),
        esc(&a.last),
        a.findings,
        a.patients
    );
    if let Some(by) = &a.acknowledged_by {
        let _ = write!(
            b,
            "<dt>Acknowledged</dt><dd>by {} {}{}</dd>",
            esc(by),
            a.disposition
                .as_deref()
                .map(|d| format!(
                    "<span class=\"chip\" id=\"disposition\">{}</span> ",
                    words(d)
                ))
                .unwrap_or_default(),
            esc(a.ack_note.as_deref().unwrap_or(""))
        );
    }
    if let Some(c) = a.case_id {
        let _ = write!(
            b,
            "<dt>Case</dt><dd><a href=\"/cases/{c}\" id=\"case-link\">case #{c}</a></dd>"
        );
    }
    b.push_str("</dl><div class=\"actions\">");
    if role.may(Perm::Triage) && a.status == "open" {
        b.push_str(&form(
            &s,
            &format!("/api/v1/alerts/{id}/ack"),
            &back,
            "ack-form",
            "<label>Triage note<input name=\"note\" id=\"ack-note\" placeholder=\"what you found\"></label>\
<label>Conclusion<select name=\"disposition\" id=\"ack-disposition\"><option value=\"\">(not said)</option>\
<option value=\"false_positive\">false positive</option><option value=\"benign\">benign: routine work</option>\
<option value=\"confirmed\">confirmed</option></select></label>\
<button type=\"submit\" id=\"ack\">Acknowledge</button>",
        ));
    }
    if role.may(Perm::OpenCase) && a.case_id.is_none() {
        b.push_str(&form(
            &s,
            "/api/v1/cases",
            &back,
            "open-case-form",
            &format!(
                "<input type=\"hidden\" name=\"alerts\" value=\"{id}\">\
<label>Case title<input name=\"title\" id=\"case-title\" value=\"{} by {}\"></label>\
<button type=\"submit\" id=\"open-case\">Open a case</button>",
                words(&a.category),
                esc(&a.user)
            ),
        ));
    }
    if role.may(Perm::Silence) {
        b.push_str(&form(
            &s,
            "/api/v1/silences",
            &back,
            "silence-form",
            &format!(
                "<label>Silence alerts matching<input name=\"matchers\" size=\"36\" value=\"user={}, category={}\"></label>\
<label>for hours<input name=\"hours\" value=\"24\" size=\"4\"></label>\
<label>because<input name=\"reason\" required></label><button type=\"submit\">Silence</button>",
                esc(&a.user),
                esc(&a.category)
            ),
        ));
    }
    b.push_str("</div><h2>Evidence</h2>");
    b.push_str(
        "<table id=\"evidence\"><thead><tr><th>Time</th><th>Patient</th><th>Action</th>\
<th>Detector</th><th>Severity</th><th>Why</th><th>HIPAA</th></tr></thead><tbody>",
    );
    for f in &d.findings {
        let _ = write!(
            b,
            "<tr><td class=\"t\">{}</td><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            esc(&f.time),
            esc(&f.patient),
            esc(&f.action),
            esc(&f.detector),
            severity(&f.severity),
            esc(&f.explanation),
            esc(&f.hipaa)
        );
    }
    b.push_str("</tbody></table>");
    Ok(Html(layout(
        &format!("Alert #{id}"),
        Some(&s),
        "/alerts",
        &b,
    )))
}

pub async fn cases(State(app): State<App>, Extension(s): Extension<Signed>) -> Page {
    let today = chrono::Utc::now().date_naive();
    let rows = app
        .cases(move |c, i| Ok(c.list(&i.plan.jurisdictions, today)?))
        .await?;
    let mut b = String::from("<h1>Cases</h1>");
    if s.account.role.may(Perm::OpenCase) {
        b.push_str(&form(
            &s,
            "/api/v1/cases",
            "/cases",
            "new-case-form",
            "<label>New case<input name=\"title\" placeholder=\"title\" required></label>\
<label>from alerts<input name=\"alerts\" placeholder=\"12, 15\"></label><button type=\"submit\">Open</button>",
        ));
    }
    if rows.is_empty() {
        b.push_str("<p class=\"muted\">No cases yet.</p>");
    } else {
        b.push_str(
            "<table id=\"cases\"><thead><tr><th>#</th><th>Title</th><th>State</th><th>Assignee</th>\
<th>Outcome</th><th>Discovered</th><th>Alerts</th></tr></thead><tbody>",
        );
        for c in rows {
            let _ = write!(
                b,
                "<tr><td><a href=\"/cases/{0}\">#{0}</a></td><td>{1}</td><td><span class=\"chip state-{2}\">{3}</span></td>\
<td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td></tr>",
                c.id,
                esc(&c.title),
                esc(&c.state),
                words(&c.state),
                esc(c.assignee.as_deref().unwrap_or("–")),
                words(c.determination.as_deref().unwrap_or("–")),
                esc(c.discovered.as_deref().unwrap_or("–")),
                c.alerts
                    .iter()
                    .map(|a| format!("<a href=\"/alerts/{a}\">#{a}</a>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        b.push_str("</tbody></table>");
    }
    Ok(Html(layout("Cases", Some(&s), "/cases", &b)))
}

fn countdown(d: &data::DeadlineRow) -> String {
    let left = if d.days_left < 0 {
        format!("overdue by {} day(s)", -d.days_left)
    } else {
        format!("{} day(s) left", d.days_left)
    };
    let class = match d.days_left {
        i64::MIN..=0 => "clock overdue",
        1..=7 => "clock soon",
        _ => "clock",
    };
    format!(
        "<div class=\"{class}\"><span class=\"countdown\" data-due=\"{}\">{left}</span>\
<span class=\"notify\">notify {} by <strong class=\"due\">{}</strong></span><small>{}</small></div>",
        d.due_end_ms,
        esc(&d.notify),
        esc(&d.due),
        esc(&d.basis)
    )
}

fn textarea(name: &str, label: &str, value: &str) -> String {
    format!(
        "<label>{label}<textarea name=\"{name}\" id=\"{name}\" rows=\"2\" required>{}</textarea></label>",
        esc(value)
    )
}

pub async fn case(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    Path(id): Path<i64>,
) -> Page {
    let (d, timeline) = app.case_detail(id, &s.account).await?;
    let letters = if d.case.determination.as_deref() == Some("breach") {
        app.letters_of(id, None).await?
    } else {
        Vec::new()
    };
    Ok(Html(render_case(&s, id, &d, &timeline, &letters)))
}

fn render_case(
    s: &Signed,
    id: i64,
    d: &data::CaseDetail,
    timeline: &[data::TimelineRow],
    letters: &[(String, String)],
) -> String {
    let c = &d.case;
    let role = s.account.role;
    let closed = c.state == "closed";
    let mut b = format!(
        "<h1>Case #{id}: {}</h1><p><span class=\"chip state-{}\" id=\"case-state\">{}</span> \
assignee <strong id=\"assignee\">{}</strong> · outcome <strong id=\"outcome\">{}</strong> · \
discovered {} · patients {} · users {}</p>",
        esc(&c.title),
        esc(&c.state),
        words(&c.state),
        esc(c.assignee.as_deref().unwrap_or("–")),
        words(c.determination.as_deref().unwrap_or("–")),
        esc(c.discovered.as_deref().unwrap_or("–")),
        esc(&d.patients.join(", ")),
        esc(&d.users.join(", "))
    );
    case_deadlines(&mut b, d);
    case_assessment(&mut b, s, id, d, closed);
    b.push_str("<div class=\"actions\">");
    if role.may(Perm::DecideCase) && !closed {
        decision_forms(&mut b, s, id, c);
    }
    if role.may(Perm::WorkCase) && !closed {
        work_forms(&mut b, s, id, d);
    }
    b.push_str("</div>");
    case_tasks(&mut b, s, id, d, role.may(Perm::WorkCase) && !closed);
    case_letters(&mut b, id, letters);
    case_evidence(&mut b, timeline, &d.log);
    layout(&format!("Case #{id}"), Some(s), "/cases", &b)
}

/// The notification deadlines, provisional or final, with their countdowns.
fn case_deadlines(b: &mut String, d: &data::CaseDetail) {
    b.push_str("<section class=\"card\" id=\"deadlines\"><h2>Deadlines</h2>");
    if d.deadlines_provisional && !d.deadlines.is_empty() {
        b.push_str(
            "<p class=\"muted\" id=\"provisional\">Provisional: the 60-day clock runs from discovery. \
Record the affected residents in the facts, and the determination, for the final deadlines.</p>",
        );
    }
    if let Some(e) = &d.deadline_error {
        let _ = write!(b, "<p class=\"flash error\">{}</p>", esc(e));
    }
    if d.deadlines.is_empty() && d.deadline_error.is_none() {
        b.push_str("<p class=\"muted\">No notification deadlines.</p>");
    }
    for dl in &d.deadlines {
        b.push_str(&countdown(dl));
    }
    b.push_str("</section>");
}

/// The four-factor assessment: a form for who may work the case, else what was recorded.
fn case_assessment(b: &mut String, s: &Signed, id: i64, d: &data::CaseDetail, closed: bool) {
    let role = s.account.role;
    let back = format!("/cases/{id}");
    let a = d.assessment.clone().unwrap_or_default();
    b.push_str("<section class=\"card\"><h2>Four-factor risk assessment</h2><p class=\"muted\">45 CFR 164.402(2): a breach is presumed unless this shows a low probability that the PHI has been compromised.</p>");
    if role.may(Perm::WorkCase) && !closed {
        let excl = a
            .exclusion
            .and_then(|e| serde_json::to_value(e).ok())
            .and_then(|v| v.as_str().map(str::to_owned));
        b.push_str(&form(
            s,
            &format!("/api/v1/cases/{id}/assessment"),
            &back,
            "assessment",
            &format!(
                "{}{}{}{}<label>Exclusion (164.402(1)){}</label>\
<label class=\"check\"><input type=\"checkbox\" name=\"low_probability\" id=\"low_probability\"{}> The assessment demonstrates a low probability of compromise</label>{}\
<button type=\"submit\" id=\"save-assessment\">Save assessment</button>",
                textarea(
                    "nature_and_extent",
                    "(i) Nature and extent of the PHI",
                    &a.nature_and_extent
                ),
                textarea(
                    "unauthorized_person",
                    "(ii) The unauthorized person",
                    &a.unauthorized_person
                ),
                textarea(
                    "acquired_or_viewed",
                    "(iii) Was the PHI acquired or viewed?",
                    &a.acquired_or_viewed
                ),
                textarea("mitigation", "(iv) Extent of mitigation", &a.mitigation),
                opt_select(
                    "exclusion",
                    "exclusion",
                    excl.as_deref().or(Some("")),
                    &[
                        ("", "none"),
                        ("good_faith_workforce", "good-faith workforce access"),
                        ("inadvertent_authorized", "inadvertent, between authorized persons"),
                        ("unable_to_retain", "recipient unable to retain")
                    ]
                ),
                if a.low_probability { " checked" } else { "" },
                textarea("conclusion", "Conclusion", &a.conclusion),
            ),
        ));
    } else if d.assessment.is_some() {
        let _ = write!(
            b,
            "<dl class=\"facts\"><dt>(i)</dt><dd>{}</dd><dt>(ii)</dt><dd>{}</dd><dt>(iii)</dt><dd>{}</dd><dt>(iv)</dt><dd>{}</dd><dt>Low probability</dt><dd>{}</dd><dt>Conclusion</dt><dd>{}</dd></dl>",
            esc(&a.nature_and_extent),
            esc(&a.unauthorized_person),
            esc(&a.acquired_or_viewed),
            esc(&a.mitigation),
            if a.low_probability { "shown" } else { "not shown" },
            esc(&a.conclusion)
        );
    } else {
        b.push_str("<p class=\"muted\">Not assessed yet.</p>");
    }
    b.push_str("</section>");
}

/// Determination, assignment, notifying and closing: the privacy officer's decisions.
fn decision_forms(b: &mut String, s: &Signed, id: i64, c: &data::CaseRow) {
    let back = format!("/cases/{id}");
    b.push_str(&form(
        s,
        &format!("/api/v1/cases/{id}/determination"),
        &back,
        "determine-form",
        &format!(
            "<label>Determination{}</label><label>on<input type=\"date\" name=\"on\"></label>\
    <button type=\"submit\" id=\"determine\">Record determination</button>",
            opt_select(
                "outcome",
                "determination",
                Some("breach"),
                &[
                    ("breach", "breach"),
                    ("not_breach", "not a breach (low probability)"),
                    ("excluded", "excluded")
                ]
            )
        ),
    ));
    b.push_str(&form(
                s,
                &format!("/api/v1/cases/{id}/assign"),
                &back,
                "assign-form",
                &format!(
                    "<label>Assign to<input name=\"assignee\" id=\"assign-to\" value=\"{}\" required></label><button type=\"submit\">Assign</button>",
                    esc(c.assignee.as_deref().unwrap_or(&s.account.name))
                ),
            ));
    if c.state == "determined" {
        b.push_str(&form(
            s,
            &format!("/api/v1/cases/{id}/notifying"),
            &back,
            "notifying-form",
            "<button type=\"submit\" id=\"notifying\">Notices are going out</button>",
        ));
    }
    b.push_str(&form(
        s,
        &format!("/api/v1/cases/{id}/close"),
        &back,
        "close-form",
        &format!(
            "<label>Close as{}</label><button type=\"submit\" id=\"close\">Close case</button>",
            opt_select(
                "resolution",
                "resolution",
                None,
                &[
                    ("true_positive", "true positive"),
                    ("false_positive", "false positive"),
                    ("duplicate", "duplicate")
                ]
            )
        ),
    ));
}

/// Facts, notes and tasks: what an investigator adds while working the case.
fn work_forms(b: &mut String, s: &Signed, id: i64, d: &data::CaseDetail) {
    let back = format!("/cases/{id}");
    let c = &d.case;
    let residents = d
        .residents
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    b.push_str(&form(
                s,
                &format!("/api/v1/cases/{id}/facts"),
                &back,
                "facts-form",
                &format!(
                    "<label>Discovered<input type=\"date\" name=\"discovered\" value=\"{}\"></label>\
    <label>Affected residents<input name=\"residents\" id=\"residents\" placeholder=\"CA=1, TX=2\" value=\"{}\"></label>\
    <label>Licensed in<input name=\"licensed_in\" placeholder=\"CA, TX\" value=\"{}\"></label><button type=\"submit\" id=\"save-facts\">Save facts</button>",
                    esc(c.discovered.as_deref().unwrap_or("")),
                    esc(&residents),
                    esc(&d.licensed_in.join(", "))
                ),
            ));
    b.push_str(&form(
                s,
                &format!("/api/v1/cases/{id}/notes"),
                &back,
                "note-form",
                "<label>Note<input name=\"text\" id=\"note\" required></label><button type=\"submit\">Add note</button>",
            ));
    b.push_str(&form(
                s,
                &format!("/api/v1/cases/{id}/tasks"),
                &back,
                "task-form",
                "<label>Task<input name=\"text\" id=\"task\" required></label><button type=\"submit\">Add task</button>",
            ));
}

/// The case's tasks; open ones get a "done" button for who may work the case.
fn case_tasks(b: &mut String, s: &Signed, id: i64, d: &data::CaseDetail, may_work: bool) {
    if d.tasks.is_empty() {
        return;
    }
    let back = format!("/cases/{id}");
    b.push_str("<h2>Tasks</h2><ul class=\"tasks\">");
    for t in &d.tasks {
        let done = if t.done {
            "<span class=\"chip\">done</span>".to_owned()
        } else if may_work {
            form(
                s,
                &format!("/api/v1/cases/{id}/tasks/{}/done", t.n),
                &back,
                &format!("task-{}", t.n),
                "<button type=\"submit\">Done</button>",
            )
        } else {
            String::new()
        };
        let _ = write!(b, "<li>{}. {} {done}</li>", t.n, esc(&t.text));
    }
    b.push_str("</ul>");
}

/// The letters to individuals (45 CFR 164.404(c)), one per patient.
fn case_letters(b: &mut String, id: i64, letters: &[(String, String)]) {
    if letters.is_empty() {
        return;
    }
    let _ = write!(
        b,
        "<h2>Letters to individuals</h2><p class=\"muted\">45 CFR 164.404(c); also as JSON at /api/v1/cases/{id}/letters.</p>"
    );
    for (p, text) in letters {
        let _ = write!(
            b,
            "<details class=\"letter\"><summary>Letter to patient {}</summary><pre>{}</pre></details>",
            esc(p),
            esc(text)
        );
    }
}

/// The evidence timeline and the tamper-evident case log.
fn case_evidence(b: &mut String, timeline: &[data::TimelineRow], log: &[data::LogRow]) {
    let _ = write!(
        b,
        "<h2>Timeline</h2><p class=\"muted\">Every stored access by the involved users to the involved patients ({}).</p>",
        timeline.len()
    );
    b.push_str(
        "<table id=\"timeline\"><thead><tr><th>Time</th><th>User</th><th>Patient</th><th>Action</th>\
<th>Workstation</th><th>Flagged by</th></tr></thead><tbody>",
    );
    for t in timeline {
        let _ = write!(
            b,
            "<tr class=\"{}\"><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            if t.flagged_by.is_empty() { "" } else { "flagged" },
            esc(&t.time),
            esc(&t.user),
            esc(&t.patient),
            esc(&t.action),
            if t.break_glass { " <span class=\"chip\">break-glass</span>" } else { "" },
            esc(&t.workstation),
            esc(&t.flagged_by.join(", "))
        );
    }
    b.push_str("</tbody></table><h2>Case log</h2><table id=\"log\"><thead><tr><th>#</th><th>When</th><th>Who</th><th>What</th><th>Change</th></tr></thead><tbody>");
    for e in log {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"t\">{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            e.seq,
            esc(&e.at),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.after)
        );
    }
    b.push_str("</tbody></table>");
}

pub async fn dashboard(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    Query(q): Query<data::DashboardQuery>,
) -> Page {
    let by = q.by;
    let d = app.dashboard(by).await?;
    let toggle = match by {
        data::ChartBy::Stored => "<p class=\"muted\">by the day each alert was stored · <a id=\"by-access\" href=\"/dashboard?by=access\">by the day of its first access</a></p>",
        data::ChartBy::Access => "<p class=\"muted\"><a id=\"by-stored\" href=\"/dashboard?by=stored\">by the day each alert was stored</a> · by the day of its first access</p>",
    };
    let columns: Vec<(String, Vec<(String, i64)>)> = d
        .alerts_by_day
        .iter()
        .map(|day| {
            (
                day.day.clone(),
                day.by_category
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            )
        })
        .collect();
    let users: Vec<(String, f64)> = d
        .top_users
        .iter()
        .map(|(u, n)| (u.clone(), *n as f64))
        .collect();
    let rates: Vec<(String, f64)> = d
        .per_policy
        .iter()
        .map(|p| (p.detector.clone(), p.per_10k))
        .collect();
    let mut due = String::new();
    if d.due_this_week.is_empty() {
        due.push_str("<p class=\"muted\">Nothing due in the next 7 days.</p>");
    } else {
        due.push_str("<table id=\"due\"><thead><tr><th>Case</th><th>Notify</th><th>Due</th><th>Left</th></tr></thead><tbody>");
        for x in &d.due_this_week {
            let _ = write!(
                due,
                "<tr class=\"{}\"><td><a href=\"/cases/{}\">#{} {}</a></td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                if x.days_left < 0 { "overdue" } else { "" },
                x.case_id,
                x.case_id,
                esc(&x.title),
                esc(&x.notify),
                if x.provisional { " <span class=\"chip\">provisional</span>" } else { "" },
                esc(&x.due),
                if x.days_left < 0 {
                    format!("overdue {} d", -x.days_left)
                } else {
                    format!("{} d", x.days_left)
                }
            );
        }
        due.push_str("</tbody></table>");
    }
    let b = format!(
        "<h1>Dashboard</h1><div class=\"grid\">\
<section class=\"card\" id=\"chart-alerts\"><h2>Alerts over time, by category</h2>{}{}</section>\
<section class=\"card\" id=\"chart-users\"><h2>Top users by findings</h2>{}</section>\
<section class=\"card\" id=\"chart-policies\"><h2>Detection rate per policy</h2><p class=\"muted\">findings per 10,000 of {} stored accesses</p>{}</section>\
<section class=\"card\" id=\"chart-due\"><h2>Deadlines due this week</h2>{}</section></div>",
        toggle,
        charts::stacked("alerts per day by category", &columns),
        charts::bars("findings per user", &users, ""),
        d.accesses,
        charts::bars("findings per 10,000 accesses", &rates, ""),
        due
    );
    Ok(Html(layout("Dashboard", Some(&s), "/dashboard", &b)))
}

pub async fn status(State(app): State<App>, Extension(s): Extension<Signed>) -> Page {
    let st = super::api::status_json(&app);
    let m = app
        .inputs
        .metrics
        .as_ref()
        .map(|m| m.summary())
        .unwrap_or_default();
    let mut b = format!(
        "<h1>Status</h1><p>phiwatch {} · detection <strong id=\"up\">{}</strong> · findings {} · alerts opened {} · notifications sent {} · dead letters {} · reloads {} ({} rejected)</p>",
        esc(st["version"].as_str().unwrap_or("")),
        if m["up"].as_bool().unwrap_or(false) { "running" } else { "stopped" },
        m["findings"],
        m["alerts_opened"],
        m["notifications_sent"],
        m["dead_letters"],
        m["reloads"],
        m["reload_failures"]
    );
    b.push_str("<h2>Sources</h2><table id=\"sources\"><thead><tr><th>Source</th><th class=\"n\">Events</th><th class=\"n\">Bad lines</th><th class=\"n\">Lag (bytes)</th><th>Last checkpoint</th></tr></thead><tbody>");
    for src in m["sources"].as_array().into_iter().flatten() {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(src["name"].as_str().unwrap_or("")),
            src["events"],
            src["bad_lines"],
            src["lag_bytes"],
            esc(src["last_checkpoint"].as_str().unwrap_or("–"))
        );
    }
    b.push_str("</tbody></table>");
    let loaded = &st["loaded"];
    let _ = write!(
        b,
        "<h2>Policies</h2><p class=\"muted\">loaded {}; {}</p><table id=\"policies\"><thead><tr><th>Rule</th><th>Category</th><th>Severity</th><th>File</th></tr></thead><tbody>",
        esc(loaded["loaded_at"].as_str().unwrap_or("–")),
        esc(loaded["context"].as_str().unwrap_or(""))
    );
    for p in loaded["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(loaded["file_policies"].as_array().into_iter().flatten())
    {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            esc(p["id"].as_str().unwrap_or("")),
            words(p["category"].as_str().unwrap_or("")),
            severity(p["severity"].as_str().unwrap_or("")),
            esc(p["file"].as_str().unwrap_or(""))
        );
    }
    b.push_str("</tbody></table><h2>Plugins</h2><table id=\"plugins\"><thead><tr><th>Plugin</th><th>Version</th><th>Categories</th><th class=\"n\">Accesses</th><th class=\"n\">Findings</th><th class=\"n\">Failures</th><th>SHA-256</th></tr></thead><tbody>");
    for p in loaded["plugins"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("");
        let c = &m["plugins"][name];
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"mono\">{}</td></tr>",
            esc(name),
            esc(p["version"].as_str().unwrap_or("")),
            esc(&p["categories"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()),
            c["accesses"].as_u64().unwrap_or(0),
            c["findings"].as_u64().unwrap_or(0),
            c["failures"].as_u64().unwrap_or(0),
            esc(p["sha256"].as_str().unwrap_or("").get(..16).unwrap_or(""))
        );
    }
    b.push_str("</tbody></table>");
    Ok(Html(layout("Status", Some(&s), "/status", &b)))
}
