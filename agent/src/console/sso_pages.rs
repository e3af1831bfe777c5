//! The single sign-on pages: `/oidc/login` sends the browser to the identity provider and
//! `/oidc/callback` takes it back, turning the provider's answer into a console session.
//! Every outcome, accepted or refused, goes to the sign-in trail.

use super::accounts::{self, SsoAccount};
use super::fleet;
use super::html::esc;
use super::pages::{login_answer, NextQuery};
use super::sso::{Identity, SsoError};
use super::trail::{self, Event, Method};
use super::{client, cookie_value, local_path, App, Fail, PageFail};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

/// Binds a sign-in to the browser that started it: a `state` stolen from a URL is useless in
/// another browser.
const SSO_COOKIE: &str = "phiwatch_sso";
/// Matches the pending sign-in's lifetime in [`super::sso`].
const SSO_COOKIE_SECONDS: u64 = 600;

pub async fn start(
    State(app): State<App>,
    ci: ConnectInfo<crate::net::Peer>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let Some(sso) = &app.sso else {
        return PageFail(Fail::not_found("single sign-on is not set up")).into_response();
    };
    // One cookie per browser, reused, so two tabs signing in at once both finish.
    let browser = cookie_value(&headers, SSO_COOKIE)
        .filter(|v| (32..=64).contains(&v.len()))
        .map(str::to_owned)
        .unwrap_or_else(super::session::token);
    let next = q
        .next()
        .filter(|n| local_path(n) && *n != "/login")
        .unwrap_or_default();
    match sso.begin(&browser, next, &client(&ci)).await {
        Ok(url) => {
            let mut res = Redirect::to(&url).into_response();
            res.headers_mut().insert(
                header::SET_COOKIE,
                app.cookie_with(SSO_COOKIE, &browser, Some(SSO_COOKIE_SECONDS), "Lax"),
            );
            res
        }
        Err(e) => {
            tracing::warn!("single sign-on could not start: {e}");
            login_answer(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                next,
                Some(&e.to_string()),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

pub async fn callback(
    State(app): State<App>,
    ci: ConnectInfo<crate::net::Peer>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let from = client(&ci);
    let Some(sso) = &app.sso else {
        return PageFail(Fail::not_found("single sign-on is not set up")).into_response();
    };
    let browser = cookie_value(&headers, SSO_COOKIE).unwrap_or("").to_owned();
    let answer = match (q.error, q.code, q.state) {
        (Some(e), _, _) => Err(SsoError::Refused(match q.error_description {
            Some(d) => format!("{e}: {d}"),
            None => e,
        })),
        (None, Some(code), Some(state)) => {
            sso.finish(&browser, &state, &code, q.iss.as_deref()).await
        }
        _ => Err(SsoError::Refused("the answer has no code or state".into())),
    };
    let outcome = match answer {
        Ok(id) => admit(&app, id, from.clone()).await,
        Err(e) => Err(Refusal {
            user: match &e {
                SsoError::NoRole(u) => u.clone(),
                _ => String::new(),
            },
            why: e.to_string(),
        }),
    };
    let mut res = match outcome {
        Ok((token, to)) => {
            let mut res = onward(&to, "Signed in").into_response();
            res.headers_mut()
                .append(header::SET_COOKIE, app.session_cookie(&token));
            res
        }
        Err(r) => {
            tracing::warn!(client = %from, "single sign-on refused: {}", r.why);
            if let Err(e) = app.refused(&r.user, Method::Sso, &from, &r.why).await {
                return PageFail(e).into_response();
            }
            login_answer(&app, StatusCode::FORBIDDEN, "", Some(&r.why))
        }
    };
    res.headers_mut()
        .append(header::SET_COOKIE, app.clear_cookie(SSO_COOKIE));
    res
}

struct Refusal {
    user: String,
    why: String,
}

/// Creates or updates the account the provider vouches for and starts its session; answers
/// the session token and where to go.
async fn admit(app: &App, id: Identity, from: String) -> Result<(String, String), Refusal> {
    let link = super::session::SsoLink {
        expires_ms: app.sso_ends_with_token.then_some(id.expires_ms),
        sub: id.sub.clone(),
        sid: id.sid.clone(),
    };
    let (user, role) = (id.name.clone(), id.role);
    let to = if id.next.is_empty() {
        id.role.home().to_owned()
    } else {
        id.next.clone()
    };
    let done = match &app.fleet {
        Some(pool) => admit_on_fleet(pool, &id, &link, &from).await,
        None => {
            app.db(move |db| {
                let account =
                    match accounts::upsert_sso(db, &id.name, id.role, id.staff_id.as_deref()) {
                        Ok(a) => a,
                        // A local account of this name, or a name the console cannot hold.
                        Err(accounts::AccountError::Invalid(m)) => return Ok(Err(m)),
                        Err(e) => return Err(Fail::internal(e.to_string())),
                    };
                if let Some(change) = role_change(account, id.role) {
                    trail::write(db, Event::RoleChange, &id.name, Method::Sso, &from, &change)?;
                }
                let (token, _) = super::session::start_sso(db, &id.name, Some(&link))?;
                trail::write(
                    db,
                    Event::SignIn,
                    &id.name,
                    Method::Sso,
                    &from,
                    id.role.as_str(),
                )?;
                Ok(Ok(token))
            })
            .await
        }
    };
    match done {
        Ok(Ok(token)) => {
            tracing::info!(user = %user, role = role.as_str(), "console sign-in (single sign-on)");
            Ok((token, to))
        }
        Ok(Err(why)) => Err(Refusal { user, why }),
        Err(f) => Err(Refusal {
            user,
            why: f.message,
        }),
    }
}

/// As the single process's admission, on the fleet's database: the account, session and
/// trail every console node reads.
async fn admit_on_fleet(
    pool: &std::sync::Arc<fleet::Pool>,
    id: &Identity,
    link: &super::session::SsoLink,
    from: &str,
) -> Result<Result<String, String>, Fail> {
    let mut db = pool.get().await?;
    let account =
        match fleet::upsert_sso(&mut db, &id.name, id.role, id.staff_id.as_deref()).await? {
            Ok(a) => a,
            Err(why) => return Ok(Err(why)),
        };
    if let Some(change) = role_change(account, id.role) {
        fleet::trail(
            &*db,
            Event::RoleChange,
            &id.name,
            Method::Sso,
            from,
            &change,
        )
        .await?;
    }
    let (token, _) = fleet::start(&*db, &id.name, Some(link)).await?;
    fleet::trail(
        &*db,
        Event::SignIn,
        &id.name,
        Method::Sso,
        from,
        id.role.as_str(),
    )
    .await?;
    Ok(Ok(token))
}

/// The trail's words for a role the provider changed.
fn role_change(account: SsoAccount, now: super::authz::Role) -> Option<String> {
    match account {
        SsoAccount::Changed(old) => Some(format!("{} -> {}", old.as_str(), now.as_str())),
        _ => None,
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    logout_token: String,
}

/// `POST /oidc/backchannel-logout`: the provider says a user signed out there (or was
/// disabled); the console sessions of that sign-in end at once. Answers as the
/// specification asks: 200, or 400 with an error the provider logs.
pub async fn backchannel(
    State(app): State<App>,
    ci: ConnectInfo<crate::net::Peer>,
    axum::Form(f): axum::Form<LogoutForm>,
) -> Response {
    let from = client(&ci);
    let Some(sso) = &app.sso else {
        return PageFail(Fail::not_found("single sign-on is not set up")).into_response();
    };
    let answer = |status: StatusCode, body: String| {
        (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
    };
    let (sub, sid) = match sso.logout_token(&f.logout_token).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(client = %from, "back-channel logout refused: {e}");
            let _ = app.refused("", Method::Sso, &from, &e.to_string()).await;
            let body =
                serde_json::json!({"error": "invalid_request", "error_description": e.to_string()});
            return answer(StatusCode::BAD_REQUEST, body.to_string());
        }
    };
    let why = "back-channel logout";
    let ended = match &app.fleet {
        Some(pool) => end_on_fleet(pool, sub, sid, &from, why).await,
        None => {
            app.db(move |db| {
                let users = super::session::end_sso(db, sub.as_deref(), sid.as_deref())?;
                for u in &users {
                    trail::write(db, Event::SignOut, u, Method::Sso, &from, why)?;
                }
                Ok(users.len())
            })
            .await
        }
    };
    match ended {
        Ok(n) => {
            tracing::info!(sessions = n, "back-channel logout");
            answer(StatusCode::OK, String::new())
        }
        Err(f) => answer(f.status, String::new()),
    }
}

/// Ends, on every console node, the sessions a back-channel logout names.
async fn end_on_fleet(
    pool: &std::sync::Arc<fleet::Pool>,
    sub: Option<String>,
    sid: Option<String>,
    from: &str,
    why: &str,
) -> Result<usize, Fail> {
    let db = pool.get().await?;
    let users = fleet::end_sso(&*db, sub.as_deref(), sid.as_deref()).await?;
    for u in &users {
        fleet::trail(&*db, Event::SignOut, u, Method::Sso, from, why).await?;
    }
    Ok(users.len())
}

/// A page that moves on to `to` by itself, saying `what`. Not a redirect, on two paths:
/// after sign-in this answer ends a navigation that began at the identity provider, and
/// browsers send no SameSite=Strict cookie on any step of it, so a redirect would arrive
/// without the new session (the refresh below is a navigation started here); after sign-out
/// the answer ends a form's POST, and the console's `form-action 'self'` forbids a form
/// redirected to the provider.
pub(super) fn onward(to: &str, what: &str) -> Html<String> {
    let (to, what) = (esc(to), esc(what));
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"0;url={to}\"><title>{what}</title></head>\
<body><p>{what}. <a href=\"{to}\" id=\"continue\">Continue</a></p></body></html>"
    ))
}
