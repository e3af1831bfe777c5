//! The JSON API (`/api/v1/...`, documented in `openapi.json`). Write endpoints also take the
//! console's forms (see [`Input`]); reads of PHI record the view first (see [`audit`]).

use super::accounts::Account;
use super::data::{self, AlertFilter, FindingFilter, TimelineFilter};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::trail::{self, Event, Method};
use super::{audit, client, session, App, Fail, Input, Signed};
use crate::alert::admin::Admin;
use crate::case::book::CaseBook;
use crate::case::{Assessment, Cases, Exclusion};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::NaiveDate;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

impl super::Console {
    /// Checks the password under the login rate limit and starts a session.
    pub(super) async fn sign_in(
        self: &std::sync::Arc<Self>,
        client: String,
        user: String,
        password: String,
    ) -> Result<(Account, String, String), Fail> {
        if !self.local_accounts {
            self.refused(&user, Method::Password, &client, "local accounts are off")
                .await?;
            return Err(Fail::new(
                StatusCode::FORBIDDEN,
                "password sign-in is turned off; sign in with single sign-on",
            ));
        }
        let keys = session::LoginLimiter::keys(&client, &user);
        if let Some(pool) = &self.fleet {
            let db = pool.get().await?;
            let ages = super::fleet::failures(&*db, &keys, self.limiter.window()).await?;
            self.limiter.adopt(&keys, ages);
        }
        let attempt = match self.limiter.begin(&client, &user) {
            Ok(a) => a,
            Err(wait) => {
                return Err(Fail::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many failed sign-ins; try again in {} second(s)",
                        wait.as_secs().max(1)
                    ),
                ))
            }
        };
        let (hash, exists) = self.password_hash(&user).await?;
        // Each Argon2id check takes ~19 MiB and a core: a few workers do them, the rest are
        // told to come back.
        let matched = match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.hashing.verify(hash, password),
        )
        .await
        {
            Ok(Ok(m)) => m,
            _ => {
                return Err(Fail::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many sign-ins at once; try again in a few seconds",
                ))
            }
        };
        match self
            .open_session(matched && exists, user, client.clone())
            .await?
        {
            Some(x) => {
                attempt.succeeded();
                if let Some(pool) = &self.fleet {
                    super::fleet::succeeded(&*pool.get().await?, &keys).await?;
                }
                tracing::info!(user = %x.0.name, role = x.0.role.as_str(), "console sign-in");
                Ok(x)
            }
            None => {
                attempt.failed();
                if let Some(pool) = &self.fleet {
                    let window = self.limiter.window();
                    super::fleet::failed(&*pool.get().await?, &keys, window).await?;
                }
                tracing::warn!(%client, "console sign-in failed");
                Err(Fail::new(
                    StatusCode::UNAUTHORIZED,
                    "wrong user name or password",
                ))
            }
        }
    }

    /// The stored hash of `user`, or a decoy nobody's password matches, and whether the
    /// account exists.
    async fn password_hash(
        self: &std::sync::Arc<Self>,
        user: &str,
    ) -> Result<(String, bool), Fail> {
        if let Some(pool) = &self.fleet {
            return super::fleet::hash_of(&*pool.get().await?, user).await;
        }
        let u = user.to_owned();
        self.db(move |c| super::accounts::hash_of(c, &u).map_err(|e| Fail::internal(e.to_string())))
            .await
    }

    /// Starts the session of a matched password (and writes the sign-in to the trail), or
    /// writes the refusal.
    async fn open_session(
        self: &std::sync::Arc<Self>,
        matched: bool,
        user: String,
        client: String,
    ) -> Result<Option<(Account, String, String)>, Fail> {
        use super::fleet;
        if let Some(pool) = &self.fleet {
            let db = pool.get().await?;
            let account = match matched {
                true => fleet::account(&*db, &user).await?,
                false => None,
            };
            return Ok(match account {
                Some(a) => {
                    let (t, csrf) = fleet::start(&*db, &a.name, None).await?;
                    let role = a.role.as_str();
                    fleet::trail(
                        &*db,
                        Event::SignIn,
                        &a.name,
                        Method::Password,
                        &client,
                        role,
                    )
                    .await?;
                    Some((a, t, csrf))
                }
                None => {
                    let why = "wrong user name or password";
                    fleet::trail(&*db, Event::Refused, &user, Method::Password, &client, why)
                        .await?;
                    None
                }
            });
        }
        self.db(move |db| {
            let account = match matched {
                true => {
                    super::accounts::get(db, &user).map_err(|e| Fail::internal(e.to_string()))?
                }
                false => None,
            };
            match account {
                Some(a) => {
                    let (t, csrf) = session::start(db, &a.name)?;
                    trail::write(
                        db,
                        Event::SignIn,
                        &a.name,
                        Method::Password,
                        &client,
                        a.role.as_str(),
                    )?;
                    Ok(Some((a, t, csrf)))
                }
                None => {
                    trail::write(
                        db,
                        Event::Refused,
                        &user,
                        Method::Password,
                        &client,
                        "wrong user name or password",
                    )?;
                    Ok(None)
                }
            }
        })
        .await
    }

    /// Writes a refused sign-in (or logout token) to the trail.
    pub(super) async fn refused(
        self: &std::sync::Arc<Self>,
        user: &str,
        method: Method,
        client: &str,
        why: &str,
    ) -> Result<(), Fail> {
        if let Some(pool) = &self.fleet {
            let db = pool.get().await?;
            return super::fleet::trail(&*db, Event::Refused, user, method, client, why).await;
        }
        let (u, c, w) = (user.to_owned(), client.to_owned(), why.to_owned());
        self.db(move |db| Ok(trail::write(db, Event::Refused, &u, method, &c, &w)?))
            .await
    }

    /// Ends the signed-in session and writes the sign-out to the trail; answers whether the
    /// account signs in through the identity provider.
    pub(super) async fn end_session(
        self: &std::sync::Arc<Self>,
        s: &Signed,
        client: String,
    ) -> Result<bool, Fail> {
        let (t, name) = (s.token.clone(), s.account.name.clone());
        if let Some(pool) = &self.fleet {
            let db = pool.get().await?;
            super::fleet::end(&*db, &t).await?;
            let sso = super::fleet::is_sso(&*db, &name).await?;
            let method = if sso { Method::Sso } else { Method::Password };
            super::fleet::trail(&*db, Event::SignOut, &name, method, &client, "").await?;
            tracing::info!(user = %s.account.name, "console sign-out");
            return Ok(sso);
        }
        let sso = self
            .db(move |db| {
                session::end(db, &t)?;
                let sso = super::accounts::is_sso(db, &name)
                    .map_err(|e| Fail::internal(e.to_string()))?;
                let method = if sso { Method::Sso } else { Method::Password };
                trail::write(db, Event::SignOut, &name, method, &client, "")?;
                Ok(sso)
            })
            .await?;
        tracing::info!(user = %s.account.name, "console sign-out");
        Ok(sso)
    }

    pub(super) fn session_cookie(&self, token: &str) -> axum::http::HeaderValue {
        self.cookie(
            super::SESSION_COOKIE,
            token,
            Some(self.lifetimes.max.as_secs()),
        )
    }

    pub(super) fn clear_cookie(&self, name: &str) -> axum::http::HeaderValue {
        self.cookie(name, "", Some(0))
    }

    /// Runs `f` on the cases, over a pooled connection to the store (or, in fleet mode, to
    /// the fleet's database), on the blocking pool.
    pub(super) async fn cases<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&mut CaseBook, &super::ConsoleInputs) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, Fail> {
        if let Some(pool) = &self.fleet {
            let client = pool.get().await?;
            let app = self.clone();
            let rt = tokio::runtime::Handle::current();
            return tokio::task::spawn_blocking(move || {
                let (client, back) = client.take();
                let plan = Some(app.inputs.plan.clone());
                let mut book = CaseBook::Fleet { rt, client, plan };
                let out = f(&mut book, &app.inputs);
                if let CaseBook::Fleet { client, .. } = book {
                    back.put(client);
                }
                out
            })
            .await
            .map_err(|e| Fail::internal(format!("store task: {e}")))?;
        }
        let app = self.clone();
        self.db(move |conn| {
            let owned = std::mem::replace(conn, rusqlite::Connection::open_in_memory()?);
            let cases = Cases::from_conn(owned, &app.inputs.db).with_plan(app.inputs.plan.clone());
            let mut book = CaseBook::Sqlite(cases);
            let out = f(&mut book, &app.inputs);
            if let CaseBook::Sqlite(cases) = book {
                *conn = cases.into_conn();
            }
            out
        })
        .await
    }

    /// Runs `f` on an [`Admin`] over a pooled connection.
    async fn admin<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&mut Admin) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, Fail> {
        let app = self.clone();
        self.db(move |conn| {
            let owned = std::mem::replace(conn, rusqlite::Connection::open_in_memory()?);
            let mut admin = Admin::from_conn(owned, &app.inputs.db);
            let out = f(&mut admin);
            *conn = admin.into_conn();
            out
        })
        .await
    }

    /// The dashboard's figures, charted by `by`.
    pub(super) async fn dashboard(
        self: &std::sync::Arc<Self>,
        by: data::ChartBy,
    ) -> Result<data::Dashboard, Fail> {
        let today = chrono::Utc::now().date_naive();
        self.cases(move |c, i| Ok(data::dashboard(c, &i.plan.jurisdictions, today, by)?))
            .await
    }

    /// The alert queue: one page of the filter's alerts, with counts.
    pub(super) async fn alert_page(
        self: &std::sync::Arc<Self>,
        f: AlertFilter,
    ) -> Result<data::AlertPage, Fail> {
        if let Some(pool) = &self.fleet {
            return Ok(crate::alert::fleet::page(&*pool.get().await?, &f).await?);
        }
        self.db(move |c| Ok(data::alerts(c, &f)?)).await
    }

    /// An alert with its evidence; the view is recorded.
    pub(super) async fn alert_detail(
        self: &std::sync::Arc<Self>,
        id: i64,
        who: &Account,
    ) -> Result<data::AlertDetail, Fail> {
        let d = match &self.fleet {
            Some(pool) => crate::alert::fleet::detail(&*pool.get().await?, id)
                .await
                .map_err(|e| Fail::internal(e.to_string()))?,
            None => self.db(move |c| Ok(data::alert(c, id)?)).await?,
        }
        .ok_or_else(|| Fail::not_found(format!("no alert #{id}")))?;
        let patients = d.findings.iter().map(|f| f.patient.as_str());
        self.record_view(who, &format!("alert {id}"), patients)?;
        Ok(d)
    }

    /// A case with its deadlines and timeline; the view is recorded.
    pub(super) async fn case_detail(
        self: &std::sync::Arc<Self>,
        id: i64,
        who: &Account,
    ) -> Result<(data::CaseDetail, Vec<data::TimelineRow>), Fail> {
        let today = chrono::Utc::now().date_naive();
        let (d, t) = self
            .cases(move |c, i| {
                let d = c.detail(id, &i.plan.jurisdictions, today)?;
                let t = c.evidence(id)?;
                Ok((d, t))
            })
            .await?;
        let d = d.ok_or_else(|| Fail::not_found(format!("no case #{id}")))?;
        let patients = d.patients.iter().chain(t.iter().map(|r| &r.patient));
        self.record_view(who, &format!("case {id}"), patients.map(String::as_str))?;
        Ok((d, t))
    }

    /// The letters of a determined breach. `who`: record the view of their patients (the
    /// case page passes `None`: its own view is recorded already).
    pub(super) async fn letters_of(
        self: &std::sync::Arc<Self>,
        id: i64,
        who: Option<&Account>,
    ) -> Result<Vec<(String, String)>, Fail> {
        let today = chrono::Utc::now().date_naive();
        let letters = self
            .cases(move |c, i| {
                let names = crate::case::output::patient_names(i.context.as_deref())
                    .map_err(|e| Fail::internal(format!("{e:#}")))?;
                Ok(crate::case::output::letter_texts(
                    &c.notice(id)?,
                    id,
                    &i.plan.response,
                    &|p| names.get(p).cloned(),
                    today,
                )?)
            })
            .await?;
        if let Some(who) = who {
            let patients = letters.iter().map(|(p, _)| p.as_str());
            self.record_view(who, &format!("letters of case {id}"), patients)?;
        }
        Ok(letters)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub user: String,
    pub password: String,
}

pub async fn login(
    State(app): State<App>,
    ci: ConnectInfo<crate::net::Peer>,
    ApiJson(b): ApiJson<LoginBody>,
) -> Response {
    match app.sign_in(client(&ci), b.user, b.password).await {
        Ok((a, token, csrf)) => {
            let mut res = Json(json!({
                "user": a.name, "role": a.role, "csrf": csrf
            }))
            .into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, app.session_cookie(&token));
            res
        }
        Err(f) => f.into_response(),
    }
}

pub async fn me(Extension(s): Extension<Signed>) -> Json<Value> {
    let perms: Vec<&str> = [
        super::authz::Perm::ReadAlerts,
        super::authz::Perm::Triage,
        super::authz::Perm::Silence,
        super::authz::Perm::ReadCases,
        super::authz::Perm::OpenCase,
        super::authz::Perm::WorkCase,
        super::authz::Perm::DecideCase,
        super::authz::Perm::ReadStatus,
    ]
    .into_iter()
    .filter(|p| s.account.role.may(*p))
    .map(|p| p.as_str())
    .collect();
    Json(json!({
        "user": s.account.name,
        "role": s.account.role,
        "staff_id": s.account.staff_id,
        "csrf": s.csrf,
        "permissions": perms,
    }))
}

pub async fn logout(
    State(app): State<App>,
    ci: ConnectInfo<crate::net::Peer>,
    Extension(s): Extension<Signed>,
) -> Response {
    if let Err(f) = app.end_session(&s, client(&ci)).await {
        return f.into_response();
    }
    let mut res = Json(json!({ "signed_out": s.account.name })).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, app.clear_cookie(super::SESSION_COOKIE));
    res
}

pub async fn alerts(
    State(app): State<App>,
    ApiQuery(f): ApiQuery<AlertFilter>,
) -> Result<Json<data::AlertPage>, Fail> {
    f.status()?;
    app.alert_page(f).await.map(Json)
}

pub async fn alert(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<data::AlertDetail>, Fail> {
    app.alert_detail(id, &s.account).await.map(Json)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[serde(default)]
    pub note: String,
    /// false_positive, benign or confirmed; empty for none.
    #[serde(default)]
    pub disposition: String,
}

pub async fn ack(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<AckBody>,
) -> Response {
    let (by, note) = (s.account.name.clone(), input.value.note.clone());
    let disposition = input.value.disposition.clone();
    let acked = match &app.fleet {
        Some(pool) => fleet_ack(pool, id, &by, &note, &disposition).await,
        None => {
            app.admin(move |a| {
                a.ack(id, &by, &note, Some(&disposition))
                    .map_err(admin_fail)
            })
            .await
        }
    };
    match acked {
        Ok(_) => input.done(json!({ "alert": id, "status": "acknowledged", "by": s.account.name })),
        Err(f) => input.fail(f),
    }
}

type FleetPool = std::sync::Arc<super::fleet::Pool>;

async fn fleet_ack(pool: &FleetPool, id: i64, by: &str, note: &str, d: &str) -> Result<(), Fail> {
    let mut db = pool.get().await?;
    let acked = crate::alert::fleet::ack(&mut db, id, by, note, Some(d)).await;
    acked.map_err(admin_fail)
}

async fn fleet_silence(
    pool: &FleetPool,
    matchers: &[String],
    duration: std::time::Duration,
    author: &str,
    reason: &str,
) -> Result<crate::alert::query::Silence, Fail> {
    let db = pool.get().await?;
    crate::alert::fleet::add_silence(&*db, matchers, duration, author, reason)
        .await
        .map_err(admin_fail)
}

async fn fleet_expire(pool: &FleetPool, id: i64) -> Result<(), Fail> {
    let db = pool.get().await?;
    crate::alert::fleet::expire_silence(&*db, id)
        .await
        .map_err(admin_fail)
}

/// An ack, silence or expiry refused, as the console answers it.
fn admin_fail(e: crate::alert::admin::AdminError) -> Fail {
    use crate::alert::admin::AdminError;
    match e {
        AdminError::NotFound(m) => Fail::not_found(m),
        AdminError::Invalid(m) => Fail::bad(m),
        other => Fail::internal(other.to_string()),
    }
}

pub async fn silences(State(app): State<App>) -> Result<Json<Value>, Fail> {
    let now = crate::time::now_ms();
    let active = match &app.fleet {
        Some(pool) => crate::alert::fleet::silences(&*pool.get().await?, now)
            .await
            .map_err(|e| Fail::internal(e.to_string()))?,
        None => {
            app.db(move |c| Ok(crate::alert::query::silences(c, now)?))
                .await?
        }
    };
    let rows: Vec<Value> = active
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "matchers": serde_json::from_str::<Value>(&s.matchers).unwrap_or(Value::Null),
                "starts": crate::time::format_ms(s.starts_ms),
                "ends": crate::time::format_ms(s.ends_ms),
                "author": s.author,
                "reason": s.reason,
            })
        })
        .collect();
    Ok(Json(json!({ "silences": rows })))
}

/// A list from a JSON array or from one comma-separated form field.
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        One(String),
        Many(Vec<String>),
    }
    // Blank entries name nothing, whether a form repeats an empty field or JSON lists "".
    Ok(match L::deserialize(d)? {
        L::One(s) => s
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect(),
        L::Many(v) => v
            .into_iter()
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect(),
    })
}

/// A number from JSON or from a form's text.
fn num<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        N(f64),
        S(String),
    }
    match N::deserialize(d)? {
        N::N(n) => Ok(n),
        N::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number"))),
    }
}

/// A checkbox (`on`) or a JSON boolean.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    match B::deserialize(d)? {
        B::B(b) => Ok(b),
        B::S(s) => match s.as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not yes or no"
            ))),
        },
    }
}

fn date(s: &Option<String>) -> Result<Option<NaiveDate>, Fail> {
    match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| Fail::bad(format!("date {d:?}: expected YYYY-MM-DD"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    /// `label=value` (user, category, severity, department).
    #[serde(deserialize_with = "list")]
    pub matchers: Vec<String>,
    #[serde(deserialize_with = "num")]
    pub hours: f64,
    pub reason: String,
}

pub async fn silence(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    input: Input<SilenceBody>,
) -> Response {
    let b = &input.value;
    if !(b.hours > 0.0 && b.hours <= 24.0 * 90.0) {
        return input.fail(Fail::bad("hours: between 0 and 2160 (90 days)"));
    }
    let (m, d, who, why) = (
        b.matchers.clone(),
        std::time::Duration::from_secs_f64(b.hours * 3600.0),
        s.account.name.clone(),
        b.reason.clone(),
    );
    let created = match &app.fleet {
        Some(pool) => fleet_silence(pool, &m, d, &who, &why).await,
        None => {
            app.admin(move |a| {
                a.silence(&m, d, &who, &why)
                    .map_err(|e| Fail::bad(e.to_string()))
            })
            .await
        }
    };
    match created {
        Ok(silence) => input.done(json!({ "created": silence.to_string() })),
        Err(f) => input.fail(f),
    }
}

pub async fn expire_silence(
    State(app): State<App>,
    ApiPath(id): ApiPath<i64>,
    input: Input<Value>,
) -> Response {
    let expired = match &app.fleet {
        Some(pool) => fleet_expire(pool, id).await,
        None => {
            app.admin(move |a| {
                a.expire_silence(id)
                    .map_err(|e| Fail::not_found(e.to_string()))
            })
            .await
        }
    };
    match expired {
        Ok(_) => input.done(json!({ "silence": id, "expired": true })),
        Err(f) => input.fail(f),
    }
}

pub async fn findings(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiQuery(f): ApiQuery<FindingFilter>,
) -> Result<Json<Value>, Fail> {
    let rows = match &app.fleet {
        Some(pool) => crate::alert::fleet::findings(&*pool.get().await?, &f)
            .await
            .map_err(|e| Fail::internal(e.to_string()))?,
        None => app.db(move |c| Ok(data::findings(c, &f)?)).await?,
    };
    app.record_view(
        &s.account,
        "findings",
        rows.iter().map(|r| r.patient.as_str()),
    )?;
    Ok(Json(json!({ "findings": rows })))
}

pub async fn timeline(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiQuery(f): ApiQuery<TimelineFilter>,
) -> Result<Json<Value>, Fail> {
    let rows = match &app.fleet {
        Some(pool) => crate::case::fleet::timeline(&*pool.get().await?, &f).await?,
        None => app.db(move |c| Ok(data::timeline(c, &f)?)).await?,
    };
    app.record_view(
        &s.account,
        "timeline",
        rows.iter().map(|r| r.patient.as_str()),
    )?;
    Ok(Json(json!({ "accesses": rows })))
}

pub async fn cases(State(app): State<App>) -> Result<Json<Value>, Fail> {
    let today = chrono::Utc::now().date_naive();
    let rows = app
        .cases(move |c, i| Ok(c.list(&i.plan.jurisdictions, today)?))
        .await?;
    Ok(Json(json!({ "cases": rows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCaseBody {
    #[serde(default)]
    pub title: String,
    #[serde(default, deserialize_with = "list")]
    pub alerts: Vec<String>,
    pub discovered: Option<String>,
}

pub async fn open_case(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    input: Input<OpenCaseBody>,
) -> Response {
    let b = &input.value;
    let alerts: Result<Vec<i64>, _> = b.alerts.iter().map(|a| a.parse::<i64>()).collect();
    let Ok(alerts) = alerts else {
        return input.fail(Fail::bad("alerts: a list of alert ids"));
    };
    let discovered = match date(&b.discovered) {
        Ok(d) => d,
        Err(f) => return input.fail(f),
    };
    let (title, by) = (b.title.clone(), s.account.name.clone());
    match app
        .cases(move |c, _| Ok(c.create(&by, &title, &alerts, discovered)?))
        .await
    {
        Ok(id) => match &input.return_to {
            Some(_) => axum::response::Redirect::to(&format!("/cases/{id}")).into_response(),
            None => (StatusCode::CREATED, Json(json!({ "case": id }))).into_response(),
        },
        Err(f) => input.fail(f),
    }
}

pub async fn case(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<data::CaseDetail>, Fail> {
    app.case_detail(id, &s.account).await.map(|(d, _)| Json(d))
}

pub async fn case_timeline(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, Fail> {
    let (_, t) = app.case_detail(id, &s.account).await?;
    Ok(Json(json!({ "case": id, "accesses": t })))
}

pub async fn letters(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, Fail> {
    let l = app.letters_of(id, Some(&s.account)).await?;
    let l: Vec<Value> = l
        .into_iter()
        .map(|(p, text)| json!({ "patient": p, "text": text }))
        .collect();
    Ok(Json(json!({ "case": id, "letters": l })))
}

pub async fn hhs_report(
    State(app): State<App>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, Fail> {
    app.cases(move |c, i| {
        Ok(crate::case::output::hhs_report(
            &c.notice(id)?,
            id,
            &i.plan.response,
        )?)
    })
    .await
    .map(Json)
}

/// Runs one case action for a signed-in user and answers in the caller's language.
async fn act<T: Send + 'static>(
    app: &App,
    s: &Signed,
    input: &Input<T>,
    id: i64,
    what: &'static str,
    f: impl FnOnce(&mut CaseBook, &super::ConsoleInputs, &str) -> Result<Value, Fail> + Send + 'static,
) -> Response {
    let by = s.account.name.clone();
    match app.cases(move |c, i| f(c, i, &by)).await {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("case".into(), json!(id));
                m.insert("done".into(), json!(what));
            }
            input.done(v)
        }
        Err(f) => input.fail(f),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    pub assignee: String,
}

pub async fn assign(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<AssignBody>,
) -> Response {
    let who = input.value.assignee.clone();
    act(&app, &s, &input, id, "assign", move |c, _, by| {
        c.assign(id, by, &who)?;
        Ok(json!({ "assignee": who }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsBody {
    pub discovered: Option<String>,
    /// `{"CA": 3}`, or from a form `CA=3, TX=1`.
    pub residents: Option<Value>,
    #[serde(default, deserialize_with = "list")]
    pub licensed_in: Vec<String>,
    /// `[{"kind": "written", "from": D, "until": D}, {"kind": "oral", "from": D, "days": N}]`
    pub delays: Option<Vec<Value>>,
}

fn residents(v: &Value) -> Result<Option<BTreeMap<String, u32>>, Fail> {
    let bad = || Fail::bad("residents: {\"CA\": 3} or CA=3, TX=1");
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .split(',')
            .map(|kv| {
                let (k, n) = kv.split_once('=').ok_or_else(bad)?;
                Ok((
                    k.trim().to_uppercase(),
                    n.trim().parse::<u32>().map_err(|_| bad())?,
                ))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Value::Object(m) => m
            .iter()
            .map(|(k, n)| {
                Ok((
                    k.clone(),
                    n.as_u64()
                        // JSON writes 3 and 3.0 alike.
                        .or_else(|| {
                            n.as_f64()
                                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                                .map(|f| f as u64)
                        })
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(bad)?,
                ))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        _ => Err(bad()),
    }
}

fn delays(v: &[Value]) -> Result<Vec<crate::case::clock::LawEnforcementDelay>, Fail> {
    use crate::case::clock::LawEnforcementDelay as D;
    let day = |v: &Value, k: &str| -> Result<NaiveDate, Fail> {
        date(&v[k].as_str().map(str::to_owned))?
            .ok_or_else(|| Fail::bad(format!("delays: {k} is required (YYYY-MM-DD)")))
    };
    v.iter()
        .map(|d| match d["kind"].as_str() {
            Some("written") => Ok(D::Written {
                from: day(d, "from")?,
                until: day(d, "until")?,
            }),
            Some("oral") => Ok(D::Oral {
                from: day(d, "from")?,
                days: d["days"].as_u64().unwrap_or(30).min(30) as u32,
            }),
            _ => Err(Fail::bad("delays: kind is written or oral")),
        })
        .collect()
}

pub async fn facts(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<FactsBody>,
) -> Response {
    let b = &input.value;
    let parsed = (|| {
        Ok::<_, Fail>((
            date(&b.discovered)?,
            residents(b.residents.as_ref().unwrap_or(&Value::Null))?,
            b.delays.as_deref().map(delays).transpose()?,
            (!b.licensed_in.is_empty()).then(|| {
                b.licensed_in
                    .iter()
                    .map(|s| s.trim().to_uppercase())
                    .collect::<Vec<_>>()
            }),
        ))
    })();
    let (d, r, l, lic) = match parsed {
        Ok(x) => x,
        Err(f) => return input.fail(f),
    };
    act(&app, &s, &input, id, "facts", move |c, _, by| {
        c.set_facts(id, by, d, r, l, lic)?;
        Ok(json!({}))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessBody {
    pub nature_and_extent: String,
    pub unauthorized_person: String,
    pub acquired_or_viewed: String,
    pub mitigation: String,
    /// good_faith_workforce, inadvertent_authorized, unable_to_retain, or empty.
    #[serde(default)]
    pub exclusion: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    pub low_probability: bool,
    pub conclusion: String,
}

pub async fn assess(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<AssessBody>,
) -> Response {
    let b = &input.value;
    let exclusion = match b
        .exclusion
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(e) => match serde_json::from_value::<Exclusion>(json!(e)) {
            Ok(x) => Some(x),
            Err(_) => {
                return input.fail(Fail::bad(format!(
                "exclusion {e:?}: good_faith_workforce, inadvertent_authorized or unable_to_retain"
            )))
            }
        },
    };
    let a = Assessment {
        nature_and_extent: b.nature_and_extent.clone(),
        unauthorized_person: b.unauthorized_person.clone(),
        acquired_or_viewed: b.acquired_or_viewed.clone(),
        mitigation: b.mitigation.clone(),
        exclusion,
        low_probability: b.low_probability,
        conclusion: b.conclusion.clone(),
    };
    act(&app, &s, &input, id, "assess", move |c, _, by| {
        c.assess(id, by, &a)?;
        Ok(json!({ "state": "risk_assessment" }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetermineBody {
    /// breach, not_breach or excluded.
    pub outcome: String,
    pub on: Option<String>,
}

pub async fn determine(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<DetermineBody>,
) -> Response {
    let on = match date(&input.value.on) {
        Ok(d) => d,
        Err(f) => return input.fail(f),
    };
    let outcome = input.value.outcome.clone();
    act(&app, &s, &input, id, "determine", move |c, _i, by| {
        let queued = c.determine(id, by, &outcome, on)?;
        Ok(json!({ "outcome": outcome, "reminders_queued": queued }))
    })
    .await
}

pub async fn notifying(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<Value>,
) -> Response {
    act(&app, &s, &input, id, "notifying", move |c, _, by| {
        c.notifying(id, by)?;
        Ok(json!({ "state": "notifying" }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// true_positive, false_positive or duplicate.
    pub resolution: String,
}

pub async fn close(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<CloseBody>,
) -> Response {
    let r = input.value.resolution.clone();
    act(&app, &s, &input, id, "close", move |c, _, by| {
        c.close(id, by, &r)?;
        Ok(json!({ "state": "closed", "resolution": r }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    pub text: String,
}

pub async fn add_task(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<TextBody>,
) -> Response {
    let t = input.value.text.clone();
    act(&app, &s, &input, id, "task", move |c, _, by| {
        Ok(json!({ "task": c.add_task(id, by, &t)? }))
    })
    .await
}

pub async fn finish_task(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath((id, n)): ApiPath<(i64, i64)>,
    input: Input<Value>,
) -> Response {
    act(&app, &s, &input, id, "task_done", move |c, _, by| {
        c.finish_task(id, by, n)?;
        Ok(json!({ "task": n }))
    })
    .await
}

pub async fn note(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    input: Input<TextBody>,
) -> Response {
    let t = input.value.text.clone();
    act(&app, &s, &input, id, "note", move |c, _, by| {
        c.note(id, by, &t)?;
        Ok(json!({}))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    pub name: String,
}

/// Evidence as the raw request body (`?name=` names the file).
pub async fn attach(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<EvidenceQuery>,
    body: Bytes,
) -> Result<Json<Value>, Fail> {
    if q.name.trim().is_empty() || q.name.contains(['/', '\\']) {
        return Err(Fail::bad("name: a file name without directories"));
    }
    if body.is_empty() {
        return Err(Fail::bad(
            "the request body is the evidence file; it is empty",
        ));
    }
    let by = s.account.name.clone();
    let sha = app
        .cases(move |c, i| Ok(c.attach_bytes(id, &by, &q.name, &body, &i.evidence_dir)?))
        .await?;
    Ok(Json(json!({ "case": id, "sha256": sha })))
}

pub async fn verify_log(State(app): State<App>) -> Result<Json<Value>, Fail> {
    app.cases(|c, _| {
        Ok(match c.verify()? {
            Ok((n, head)) => json!({ "intact": true, "entries": n, "head": head }),
            Err(b) => json!({ "intact": false, "broken": format!("{b:?}") }),
        })
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearQuery {
    pub year: i32,
}

/// The CSV annual log of breaches under 500 discovered in `year` (164.408(c)).
pub async fn annual_log(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<YearQuery>,
) -> Result<Response, Fail> {
    let csv = app.cases(move |c, _| Ok(c.annual_log(q.year)?)).await?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientQuery {
    pub patient: String,
}

/// A patient's accounting of disclosures (164.528): recorded as a view of that patient.
pub async fn accounting(
    State(app): State<App>,
    Extension(s): Extension<Signed>,
    ApiQuery(q): ApiQuery<PatientQuery>,
) -> Result<Json<Value>, Fail> {
    if q.patient.trim().is_empty() {
        return Err(Fail::bad("patient is required"));
    }
    app.record_view(
        &s.account,
        "accounting of disclosures",
        [q.patient.as_str()],
    )?;
    let today = chrono::Utc::now().date_naive();
    let p = q.patient.clone();
    let text = app.cases(move |c, _| Ok(c.accounting(&p, today)?)).await?;
    Ok(Json(json!({ "patient": q.patient, "accounting": text })))
}

pub async fn dashboard(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<data::DashboardQuery>,
) -> Result<Json<data::Dashboard>, Fail> {
    app.dashboard(q.by).await.map(Json)
}

pub async fn status(State(app): State<App>) -> Json<Value> {
    Json(status_json(&app))
}

pub(super) fn status_json(app: &App) -> Value {
    let loaded = app
        .inputs
        .metrics
        .as_ref()
        .and_then(|m| m.loaded.read().ok().and_then(|l| l.clone()));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "loaded": loaded,
        "console_views_source": audit::SOURCE,
    })
}

pub async fn metrics_summary(State(app): State<App>) -> Json<Value> {
    Json(
        app.inputs
            .metrics
            .as_ref()
            .map(|m| m.summary())
            .unwrap_or(Value::Null),
    )
}
