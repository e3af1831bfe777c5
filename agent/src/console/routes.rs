//! Every route of the console and the API with the permission it needs. The guard looks a
//! request's route up here; `openapi.json` documents the API part of the same table (a test
//! keeps the two equal).

use super::authz::Perm;
use super::{api, noise, pages, sso_pages, App, EVIDENCE_LIMIT};
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{get, post};

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub perm: Perm,
}

const fn r(method: &'static str, path: &'static str, perm: Perm) -> Route {
    Route { method, path, perm }
}

use Perm::*;

pub const ROUTES: &[Route] = &[
    // Console pages.
    r("GET", "/login", Public),
    r("POST", "/login", Public),
    r("POST", "/logout", Signed),
    r("GET", "/oidc/login", Public),
    r("GET", "/oidc/callback", Public),
    r("POST", "/oidc/backchannel-logout", Public),
    r("GET", "/", Signed),
    r("GET", "/static/console.css", Public),
    r("GET", "/static/console.js", Public),
    r("GET", "/alerts", ReadAlerts),
    r("GET", "/alerts/{id}", ReadAlerts),
    r("GET", "/cases", ReadCases),
    r("GET", "/cases/{id}", ReadCases),
    r("GET", "/dashboard", ReadAlerts),
    r("GET", "/noise", ReadAlerts),
    r("GET", "/backtest", AuthorPolicies),
    r("POST", "/backtest", AuthorPolicies),
    r("GET", "/status", ReadStatus),
    // API.
    r("GET", "/api/v1/openapi.json", Signed),
    r("POST", "/api/v1/session", Public),
    r("GET", "/api/v1/session", Signed),
    r("DELETE", "/api/v1/session", Signed),
    r("GET", "/api/v1/alerts", ReadAlerts),
    r("GET", "/api/v1/alerts/{id}", ReadAlerts),
    r("POST", "/api/v1/alerts/{id}/ack", Triage),
    r("GET", "/api/v1/silences", ReadAlerts),
    r("POST", "/api/v1/silences", Silence),
    r("POST", "/api/v1/silences/{id}/expire", Silence),
    r("GET", "/api/v1/findings", ReadAlerts),
    r("GET", "/api/v1/timeline", ReadCases),
    r("GET", "/api/v1/cases", ReadCases),
    r("POST", "/api/v1/cases", OpenCase),
    r("GET", "/api/v1/cases/{id}", ReadCases),
    r("GET", "/api/v1/cases/{id}/timeline", ReadCases),
    r("GET", "/api/v1/cases/{id}/letters", ReadCases),
    r("GET", "/api/v1/cases/{id}/hhs-report", ReadCases),
    r("POST", "/api/v1/cases/{id}/assign", DecideCase),
    r("POST", "/api/v1/cases/{id}/facts", WorkCase),
    r("POST", "/api/v1/cases/{id}/assessment", WorkCase),
    r("POST", "/api/v1/cases/{id}/determination", DecideCase),
    r("POST", "/api/v1/cases/{id}/notifying", DecideCase),
    r("POST", "/api/v1/cases/{id}/close", DecideCase),
    r("POST", "/api/v1/cases/{id}/tasks", WorkCase),
    r("POST", "/api/v1/cases/{id}/tasks/{n}/done", WorkCase),
    r("POST", "/api/v1/cases/{id}/notes", WorkCase),
    r("POST", "/api/v1/cases/{id}/evidence", WorkCase),
    r("GET", "/api/v1/case-log/verify", ReadCases),
    r("GET", "/api/v1/reports/annual-log", ReadCases),
    r("GET", "/api/v1/reports/accounting", ReadCases),
    r("GET", "/api/v1/dashboard", ReadAlerts),
    r("GET", "/api/v1/reports/noise", ReadAlerts),
    r("GET", "/api/v1/status", ReadStatus),
    r("GET", "/api/v1/metrics/summary", ReadStatus),
];

pub fn permission(method: &Method, path: &str) -> Option<Perm> {
    // HEAD is answered by the GET handler.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == path)
        .map(|r| r.perm)
}

/// The methods a route answers (for 405's `Allow`), empty for a route no table names.
pub fn methods(path: &str) -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method)
        .collect()
}

pub fn build() -> axum::Router<App> {
    axum::Router::new()
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/oidc/login", get(sso_pages::start))
        .route("/oidc/callback", get(sso_pages::callback))
        .route("/oidc/backchannel-logout", post(sso_pages::backchannel))
        .route("/", get(pages::home))
        .route("/static/console.css", get(pages::css))
        .route("/static/console.js", get(pages::js))
        .route("/alerts", get(pages::alerts))
        .route("/alerts/{id}", get(pages::alert))
        .route("/cases", get(pages::cases))
        .route("/cases/{id}", get(pages::case))
        .route("/dashboard", get(pages::dashboard))
        .route("/noise", get(noise::page))
        .route(
            "/backtest",
            get(super::backtest_page::page).post(super::backtest_page::run),
        )
        .route("/status", get(pages::status))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route(
            "/api/v1/session",
            get(api::me).post(api::login).delete(api::logout),
        )
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/alerts/{id}", get(api::alert))
        .route("/api/v1/alerts/{id}/ack", post(api::ack))
        .route("/api/v1/silences", get(api::silences).post(api::silence))
        .route("/api/v1/silences/{id}/expire", post(api::expire_silence))
        .route("/api/v1/findings", get(api::findings))
        .route("/api/v1/timeline", get(api::timeline))
        .route("/api/v1/cases", get(api::cases).post(api::open_case))
        .route("/api/v1/cases/{id}", get(api::case))
        .route("/api/v1/cases/{id}/timeline", get(api::case_timeline))
        .route("/api/v1/cases/{id}/letters", get(api::letters))
        .route("/api/v1/cases/{id}/hhs-report", get(api::hhs_report))
        .route("/api/v1/cases/{id}/assign", post(api::assign))
        .route("/api/v1/cases/{id}/facts", post(api::facts))
        .route("/api/v1/cases/{id}/assessment", post(api::assess))
        .route("/api/v1/cases/{id}/determination", post(api::determine))
        .route("/api/v1/cases/{id}/notifying", post(api::notifying))
        .route("/api/v1/cases/{id}/close", post(api::close))
        .route("/api/v1/cases/{id}/tasks", post(api::add_task))
        .route("/api/v1/cases/{id}/tasks/{n}/done", post(api::finish_task))
        .route("/api/v1/cases/{id}/notes", post(api::note))
        .route(
            "/api/v1/cases/{id}/evidence",
            post(api::attach).layer(DefaultBodyLimit::max(EVIDENCE_LIMIT)),
        )
        .route("/api/v1/case-log/verify", get(api::verify_log))
        .route("/api/v1/reports/annual-log", get(api::annual_log))
        .route("/api/v1/reports/accounting", get(api::accounting))
        .route("/api/v1/dashboard", get(api::dashboard))
        .route("/api/v1/reports/noise", get(noise::api))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/metrics/summary", get(api::metrics_summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI file documents exactly the API routes, with their permissions.
    #[test]
    fn openapi_matches_the_route_table() {
        let spec: serde_json::Value = serde_json::from_str(api::OPENAPI).unwrap();
        let mut documented = Vec::new();
        for (path, ops) in spec["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let perm = op["x-phiwatch-permission"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}: no x-phiwatch-permission"));
                documented.push((method.to_uppercase(), path.clone(), perm.to_owned()));
            }
        }
        documented.sort();
        let mut table: Vec<(String, String, String)> = ROUTES
            .iter()
            .filter(|r| r.path.starts_with("/api/"))
            .map(|r| {
                (
                    r.method.to_owned(),
                    r.path.to_owned(),
                    r.perm.as_str().to_owned(),
                )
            })
            .collect();
        table.sort();
        assert_eq!(documented, table);
    }
}
