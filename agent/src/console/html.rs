//! HTML building blocks: escaping, the page frame, small widgets. Everything that reaches a
//! page from the store goes through [`esc`].

use super::authz::Perm;
use super::Signed;
use axum::http::StatusCode;
use std::fmt::Write as _;

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The frame around every signed-in page: navigation for what the role may see, the user,
/// the theme switch and the sign-out button.
pub fn layout(title: &str, s: Option<&Signed>, active: &str, body: &str) -> String {
    let mut nav = String::new();
    if let Some(s) = s {
        let role = s.account.role;
        for (href, label, perm) in [
            ("/alerts", "Alerts", Perm::ReadAlerts),
            ("/cases", "Cases", Perm::ReadCases),
            ("/dashboard", "Dashboard", Perm::ReadAlerts),
            ("/noise", "Noise", Perm::ReadAlerts),
            ("/status", "Status", Perm::ReadStatus),
            ("/backtest", "Backtest", Perm::AuthorPolicies),
        ] {
            if role.may(perm) {
                let cls = if href == active {
                    " class=\"active\""
                } else {
                    ""
                };
                let _ = write!(nav, "<a href=\"{href}\"{cls}>{label}</a>");
            }
        }
    }
    let who = s
        .map(|s| {
            format!(
                "<span class=\"who\" id=\"who\">{} <small>{}</small></span>\
                 <form method=\"post\" action=\"/logout\" class=\"inline\">{}\
                 <button id=\"logout\" type=\"submit\">Sign out</button></form>",
                esc(&s.account.name),
                s.account.role.as_str(),
                csrf_field(s)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · phiwatch</title><link rel=\"stylesheet\" href=\"/static/console.css\">\
<script src=\"/static/console.js\" defer></script></head><body>\
<header class=\"top\"><a class=\"brand\" href=\"/\">phiwatch</a><nav>{nav}</nav>\
<div class=\"right\"><button type=\"button\" id=\"theme\" title=\"Switch dark and light\" aria-label=\"Switch dark and light\">◐</button>{who}</div></header>\
<main>{body}</main></body></html>",
        esc(title)
    )
}

pub fn error_page(status: StatusCode, message: &str) -> String {
    let back = if status == StatusCode::UNAUTHORIZED {
        "<a href=\"/login\">Sign in</a>"
    } else {
        "<a href=\"/\" id=\"back\">Home</a>"
    };
    layout(
        status.canonical_reason().unwrap_or("Error"),
        None,
        "",
        &format!(
            "<section class=\"card error\"><h1>{} {}</h1><p id=\"error\">{}</p><p>{back}</p></section>",
            status.as_u16(),
            esc(status.canonical_reason().unwrap_or("")),
            esc(message)
        ),
    )
}

pub fn csrf_field(s: &Signed) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// A POST form to an API endpoint that comes back to `back`.
pub fn form(s: &Signed, action: &str, back: &str, id: &str, inner: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" id=\"{id}\">{}<input type=\"hidden\" name=\"return_to\" value=\"{}\">{inner}</form>",
        esc(action),
        csrf_field(s),
        esc(back)
    )
}

pub fn severity(sev: &str) -> String {
    format!("<span class=\"sev sev-{0}\">{0}</span>", esc(sev))
}

/// `acquired_or_viewed` -> `acquired or viewed`.
pub fn words(s: &str) -> String {
    esc(&s.replace('_', " "))
}
