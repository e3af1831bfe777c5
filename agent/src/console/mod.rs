//! The privacy officer's console and the HTTP API, served by `phiwatch run` on
//! `[console] listen`. One router holds both: pages are rendered on the server (no front-end
//! build, no third-party assets), the API answers JSON, and both pass through one guard that
//! resolves the session, checks the route's permission and the CSRF token, and sets the
//! security headers. Every route names its permission in [`routes::ROUTES`]; a route missing
//! there is refused.

pub mod accounts;
mod api;
pub mod audit;
pub mod authz;
mod backtest_page;
mod charts;
pub mod data;
mod extract;
pub mod fleet;
mod hashing;
mod html;
mod noise;
mod pages;
pub mod routes;
pub mod session;
pub mod sso;
mod sso_pages;
mod sso_pending;
pub mod trail;

use crate::config::ConsoleConfig;
use crate::metrics::Metrics;
use accounts::Account;
use audit::ViewLog;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use session::{Lifetimes, LoginLimiter};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SESSION_COOKIE: &str = "phiwatch_session";
pub const LOGIN_COOKIE: &str = "phiwatch_login";
/// Form bodies are small; evidence uploads have their own limit.
const FORM_LIMIT: usize = 1 << 20;
pub const EVIDENCE_LIMIT: usize = 64 << 20;
/// Password hashes computed at once, and waiting.
const HASHING_AT_ONCE: usize = 4;
const HASHING_QUEUE: usize = 32;

/// What the console needs besides the store.
pub struct ConsoleInputs {
    pub db: PathBuf,
    pub evidence_dir: PathBuf,
    /// Deadline rules and reminder settings: case changes made here requeue reminders.
    pub plan: Arc<crate::case::schedule::Plan>,
    /// The context directory, for patient names in letters.
    pub context: Option<PathBuf>,
    /// The running agent's counters and loaded inputs (`None` outside the agent).
    pub metrics: Option<Arc<Metrics>>,
    /// Where console views are recorded (`None`: not recorded).
    pub views: Option<crate::spool::SharedSpool>,
    /// What `/backtest` replays drafts against (`None`: the page says it is not available).
    pub detection: Option<DetectionInputs>,
    /// Fleet mode: the fleet's database holds the accounts, sessions, alerts and cases.
    pub fleet: Option<crate::fleet::pg::DatabaseConfig>,
}

/// The running agent's detection inputs (policies, plugins, context, settings) and alert
/// grouping, for backtesting a draft pack against them.
#[derive(Clone)]
pub struct DetectionInputs {
    pub inputs: crate::reload::Inputs,
    pub grouping: crate::alert::routing::Grouping,
}

pub struct Console {
    inputs: ConsoleInputs,
    pool: Mutex<Vec<Connection>>,
    lifetimes: Lifetimes,
    limiter: LoginLimiter,
    /// Password checks, on workers of their own (Argon2id is memory-hard on purpose).
    hashing: hashing::Hashing,
    views: ViewLog,
    /// Cookies carry `Secure`: the console is on HTTPS (or configured as behind it).
    secure: bool,
    /// Password sign-in with local accounts is allowed.
    local_accounts: bool,
    /// Single sign-on, when `[console.oidc]` sets it up.
    sso: Option<sso::Sso>,
    /// End single sign-on sessions with the provider's ID token.
    sso_ends_with_token: bool,
    /// One backtest at a time: each replays the whole window.
    backtests: tokio::sync::Semaphore,
    /// Fleet mode's connections (`None`: the single process's SQLite store).
    fleet: Option<Arc<fleet::Pool>>,
}

/// Why the console did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] crate::net::BindError),
    #[error("[console.oidc]: {0}")]
    Sso(#[from] sso::SsoError),
}

pub type App = Arc<Console>;

/// The signed-in user of a request, put there by the guard.
#[derive(Clone)]
pub struct Signed {
    pub account: Account,
    pub csrf: String,
    /// The session cookie's token (for logout).
    pub token: String,
}

impl Console {
    pub fn new(inputs: ConsoleInputs, cfg: &ConsoleConfig) -> Result<Self, sso::SsoError> {
        let fleet = inputs.fleet.clone().map(fleet::Pool::new);
        let sso = cfg.oidc.as_ref().map(sso::Sso::new).transpose()?;
        // Console nodes share sign-ins in progress: the provider's redirect may reach any.
        let sso = match (sso, &fleet) {
            (Some(s), Some(pool)) => Some(s.on_fleet(pool.clone())),
            (s, _) => s,
        };
        Ok(Console {
            fleet,
            views: ViewLog::new(inputs.views.clone()),
            inputs,
            pool: Mutex::new(Vec::new()),
            lifetimes: Lifetimes {
                idle: Duration::from_secs(cfg.idle_minutes * 60),
                max: Duration::from_secs(cfg.session_hours * 3600),
            },
            limiter: LoginLimiter::new(
                cfg.login_failures as usize,
                Duration::from_secs(cfg.login_window_minutes * 60),
            ),
            secure: cfg.tls_cert.is_some() || cfg.secure_cookies,
            hashing: hashing::Hashing::new(HASHING_AT_ONCE, HASHING_QUEUE),
            local_accounts: cfg.local_accounts,
            sso,
            sso_ends_with_token: cfg.oidc.as_ref().is_some_and(|o| o.end_with_token),
            backtests: tokio::sync::Semaphore::new(1),
        })
    }

    /// Runs `f` on a pooled store connection on the blocking pool.
    pub async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, Fail> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = app.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match conn {
                Some(c) => c,
                None => crate::store::Store::open_existing(&app.inputs.db)
                    .map_err(|e| Fail::internal(format!("opening the store: {e}")))?,
            };
            let out = f(&mut conn);
            let mut pool = app.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 8 {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Fail::internal(format!("store task: {e}")))?
    }

    /// Deletes sessions past either lifetime.
    async fn purge_sessions(self: &Arc<Self>) -> Result<usize, Fail> {
        let l = self.lifetimes;
        if let Some(pool) = &self.fleet {
            return fleet::purge(&*pool.get().await?, l).await;
        }
        self.db(move |c| Ok(session::purge(c, l)?)).await
    }

    /// The live session of a cookie token, from the store or the fleet's database.
    async fn session(self: &Arc<Self>, token: &str) -> Result<Option<session::Session>, Fail> {
        let l = self.lifetimes;
        if let Some(pool) = &self.fleet {
            return fleet::lookup(&*pool.get().await?, token, l).await;
        }
        let t = token.to_owned();
        self.db(move |c| Ok(session::lookup(c, &t, l)?)).await
    }

    /// Records that `who` is shown these patients; refuses the view if that cannot be done.
    pub fn record_view<'p>(
        &self,
        who: &Account,
        what: &str,
        patients: impl IntoIterator<Item = &'p str>,
    ) -> Result<(), Fail> {
        self.views.record(who, what, patients).map_err(|e| {
            tracing::error!("recording a console view failed; the view is refused: {e}");
            Fail::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this view cannot be recorded in the access log right now, so it is not shown",
            )
        })
    }

    fn cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        self.cookie_with(name, value, max_age, "Strict")
    }

    /// A cookie with the given SameSite: `Lax` only for the single sign-on binding cookie,
    /// which must come back on the provider's top-level redirect to `/oidc/callback`.
    fn cookie_with(
        &self,
        name: &str,
        value: &str,
        max_age: Option<u64>,
        same_site: &str,
    ) -> HeaderValue {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={a}"));
        }
        HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// An error answered to the client: JSON for the API, a page for the console.
#[derive(Debug)]
pub struct Fail {
    pub status: StatusCode,
    pub message: String,
}

impl Fail {
    pub fn new(status: StatusCode, m: impl Into<String>) -> Self {
        Fail {
            status,
            message: m.into(),
        }
    }
    pub fn bad(m: impl Into<String>) -> Self {
        Fail::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Fail::new(StatusCode::NOT_FOUND, m)
    }
    /// Logged in full; the client learns only that it failed.
    pub fn internal(m: impl Into<String>) -> Self {
        let m = m.into();
        tracing::error!("console: {m}");
        Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the agent's log",
        )
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::internal(format!("store: {e}"))
    }
}

impl From<crate::store::QueryError> for Fail {
    fn from(e: crate::store::QueryError) -> Self {
        use crate::store::QueryError;
        match e {
            QueryError::Invalid(m) => Fail::bad(m),
            QueryError::NotFound(m) => Fail::not_found(m),
            QueryError::Store(e) => Fail::internal(format!("store: {e}")),
            QueryError::Database(e) => Fail::internal(e),
        }
    }
}

impl From<crate::case::CaseError> for Fail {
    fn from(e: crate::case::CaseError) -> Self {
        match e {
            crate::case::CaseError::NotFound(m) => Fail::not_found(m),
            crate::case::CaseError::Invalid(m) => Fail::new(StatusCode::CONFLICT, m),
            other => Fail::internal(other.to_string()),
        }
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// A failure answered as a console page.
pub struct PageFail(pub Fail);

impl From<Fail> for PageFail {
    fn from(f: Fail) -> Self {
        PageFail(f)
    }
}

impl IntoResponse for PageFail {
    fn into_response(self) -> Response {
        let body = html::error_page(self.0.status, &self.0.message);
        (self.0.status, axum::response::Html(body)).into_response()
    }
}

/// A write's input, from JSON (API clients) or from a console form. A form names where to go
/// next (`return_to`, a path on this console); its answer is that page, or an error page.
pub struct Input<T> {
    pub value: T,
    pub return_to: Option<String>,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Input<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let form = is_form(req.headers());
        let bytes = axum::body::to_bytes(req.into_body(), FORM_LIMIT)
            .await
            .map_err(|e| Fail::bad(format!("reading the request: {e}")).into_response())?;
        if form {
            let mut pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| PageFail(Fail::bad(format!("form: {e}"))).into_response())?;
            let return_to = pairs
                .iter()
                .find(|(k, _)| k == "return_to")
                .map(|(_, v)| v.clone())
                .filter(|p| local_path(p));
            pairs.retain(|(k, _)| k != "csrf" && k != "return_to");
            let mut obj = serde_json::Map::new();
            for (k, v) in pairs {
                // Repeated names (checkbox lists) become arrays.
                match obj.get_mut(&k) {
                    Some(serde_json::Value::Array(a)) => a.push(v.into()),
                    Some(prev) => *prev = serde_json::Value::Array(vec![prev.take(), v.into()]),
                    None => {
                        obj.insert(k, v.into());
                    }
                }
            }
            let value = serde_json::from_value(serde_json::Value::Object(obj))
                .map_err(|e| PageFail(Fail::bad(format!("form: {e}"))).into_response())?;
            Ok(Input { value, return_to })
        } else {
            let body: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
            let value = serde_json::from_slice(body)
                .map_err(|e| Fail::bad(format!("JSON body: {e}")).into_response())?;
            Ok(Input {
                value,
                return_to: None,
            })
        }
    }
}

impl<T> Input<T> {
    /// The answer to a successful write: back to the form's page, or `json`.
    pub fn done(&self, json: serde_json::Value) -> Response {
        match &self.return_to {
            Some(p) => Redirect::to(p).into_response(),
            None => axum::Json(json).into_response(),
        }
    }

    /// The answer to a failed write, in the caller's language.
    pub fn fail(&self, f: Fail) -> Response {
        if self.return_to.is_some() {
            PageFail(f).into_response()
        } else {
            f.into_response()
        }
    }
}

fn is_form(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// A path on this site: `/x`, never `//host`, a scheme, a backslash, or whitespace and control
/// characters (browsers drop tabs and newlines, which turns `/\t/host` into `//host`).
pub fn local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains("://")
        && p.chars().all(|c| c.is_ascii_graphic() && c != '\\')
}

pub fn cookie_value<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Resolves the session, enforces the route's permission and the CSRF token, times the
/// handler (`Server-Timing`) and sets the security headers on every answer.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut res = guarded(app.clone(), req, next).await;
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    // same-origin, not no-referrer: with no-referrer browsers send `Origin: null` on form
    // posts, and the origin check could not tell our forms from anyone else's.
    set(h, "referrer-policy", "same-origin");
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    if app.secure {
        set(h, "strict-transport-security", "max-age=31536000");
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "app;dur={:.2}",
        started.elapsed().as_secs_f64() * 1000.0
    )) {
        h.insert("server-timing", v);
    }
    res
}

async fn guarded(app: App, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let Some(matched) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return refuse(&path, StatusCode::NOT_FOUND, "no such page");
    };
    let method = req.method().clone();
    let Some(perm) = routes::permission(&method, &matched) else {
        let allowed = routes::methods(&matched);
        if !allowed.is_empty() {
            let mut res = refuse(&path, StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                res.headers_mut().insert(header::ALLOW, v);
            }
            return res;
        }
        // Fail closed: a route nobody gave a permission is nobody's.
        return refuse(
            &path,
            StatusCode::FORBIDDEN,
            "this route has no permission set",
        );
    };
    let writes = !matches!(method, Method::GET | Method::HEAD);
    if writes && !same_origin(req.headers()) {
        return refuse(&path, StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    if perm == authz::Perm::Public {
        return next.run(req).await;
    }
    let token = cookie_value(req.headers(), SESSION_COOKIE).map(str::to_owned);
    let signed = match token {
        None => None,
        Some(t) => match app.session(&t).await {
            Ok(s) => s.map(|s| Signed {
                account: s.account,
                csrf: s.csrf,
                token: t,
            }),
            Err(f) => return refuse(&path, f.status, &f.message),
        },
    };
    let Some(signed) = signed else {
        if !is_api(&path) && !writes {
            let next = urlencoding(&path_and_query(&req));
            return Redirect::to(&format!("/login?next={next}")).into_response();
        }
        return refuse(&path, StatusCode::UNAUTHORIZED, "sign in first");
    };
    if !signed.account.role.may(perm) {
        return refuse(
            &path,
            StatusCode::FORBIDDEN,
            &format!(
                "the {} role may not do this ({})",
                signed.account.role.as_str(),
                perm.as_str()
            ),
        );
    }
    if writes {
        let presented = match req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
        {
            Some(t) => Some(t.to_owned()),
            None if is_form(req.headers()) => {
                // The token is a form field: read the body, then hand it on unchanged.
                let (parts, body) = req.into_parts();
                let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
                    Ok(b) => b,
                    Err(e) => return refuse(&path, StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
                };
                let t = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                    .ok()
                    .and_then(|p| p.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
                req = Request::from_parts(parts, Body::from(bytes));
                t
            }
            None => None,
        };
        if !presented.is_some_and(|t| session::same(&t, &signed.csrf)) {
            return refuse(&path, StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
    }
    req.extensions_mut().insert(signed);
    next.run(req).await
}

fn path_and_query(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into())
}

pub fn urlencoding(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|x| x.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// A write's Origin (when the browser sends one) must be this site: SameSite cookies and the
/// CSRF token already stop forged writes; this stops them a layer earlier.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

fn refuse(path: &str, status: StatusCode, message: &str) -> Response {
    if is_api(path) {
        Fail::new(status, message).into_response()
    } else {
        PageFail(Fail::new(status, message)).into_response()
    }
}

/// The client address for login rate limiting.
pub fn client(ci: &ConnectInfo<crate::net::Peer>) -> String {
    ci.0 .0.ip().to_string()
}

pub fn router(app: App) -> axum::Router {
    routes::build()
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Binds the console's listener (failing early on a bad address or certificate) and returns
/// the future that serves it until `shutdown` resolves.
pub async fn bind(
    cfg: &ConsoleConfig,
    inputs: ConsoleInputs,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), StartError> {
    let app: App = Arc::new(Console::new(inputs, cfg)?);
    if app.sso.is_some() {
        // Read the provider's discovery document now, so a wrong issuer shows in the log at
        // start-up rather than at the first sign-in; a provider that is down is retried then.
        let warm = app.clone();
        tokio::spawn(async move {
            if let Some(sso) = &warm.sso {
                match sso.discover().await {
                    Ok(p) => tracing::info!(provider = %p, "single sign-on ready"),
                    Err(e) => tracing::warn!("single sign-on: {e}"),
                }
            }
        });
    }
    let purge = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = purge.purge_sessions().await {
                tracing::warn!("purging expired console sessions: {}", e.message);
            }
        }
    });
    let binding = |error| crate::net::BindError::Bind {
        name: "console".into(),
        what: "binding",
        at: cfg.listen,
        error,
    };
    let tcp = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(binding)?;
    let local = tcp.local_addr().map_err(binding)?;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::tls::server_tls(cert, key, None, &[b"http/1.1"]).map_err(|error| {
                crate::net::BindError::Tls {
                    name: "console".into(),
                    error,
                }
            })?,
        ),
        _ => None,
    };
    tracing::info!(listen = %local, tls = tls.is_some(), "serving the console");
    let limits = crate::net::HttpLimits {
        max_connections: cfg.max_connections,
        header_timeout: Duration::from_secs(cfg.header_timeout_seconds),
        ..Default::default()
    };
    let serve = crate::net::serve_http(
        tcp,
        tls,
        router(app),
        limits,
        Arc::new(crate::net::HttpCounters::default()),
        "console",
        std::future::pending(),
    );
    Ok((local, serve))
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_paths_stay_on_the_site() {
        for ok in ["/alerts", "/cases/3?x=1", "/alerts?next=%2F%2Fa"] {
            assert!(super::local_path(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil",
            "/a b",
            "/\u{2028}x",
            "",
        ] {
            assert!(!super::local_path(bad), "{bad:?}");
        }
    }
}
