//! `phiwatch check --config FILE`: everything the agent would load, checked without running
//! it, every problem reported (not just the first) with its file and line.

use crate::alert::routing::{Receiver, Routing};
use crate::config::{Config, Source, Transport};
use crate::detect::PolicyPack;
use crate::settings::Settings;
use std::path::Path;

#[derive(Debug, Default)]
pub struct Checked {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub summary: Vec<String>,
}

pub fn check(config_path: &Path) -> Checked {
    let mut c = Checked::default();
    let cfg = match Config::load(config_path) {
        Ok(cfg) => cfg,
        Err(e) => {
            c.problems.push(e.to_string());
            return c;
        }
    };
    c.summary.push(format!(
        "config {}: {} source(s)",
        config_path.display(),
        cfg.sources.len()
    ));

    let settings = match &cfg.rules {
        Some(p) => Settings::load(p).unwrap_or_else(|e| {
            c.problems.push(e.to_string());
            Settings::default()
        }),
        None => Settings::default(),
    };
    check_policies(&cfg, &mut c);
    check_plugins(&cfg, &mut c);
    check_context(&cfg, &settings, &mut c);
    check_data_dir(&cfg.data_dir, &mut c);
    if let Some(db) = &cfg.database {
        check_database(db, &mut c);
    }
    check_role(&cfg, &mut c);
    check_console(&cfg, &mut c);
    for src in &cfg.sources {
        check_source(src, &mut c);
    }
    let routing = cfg.routing.as_ref().map(|p| (p, Routing::load(p)));
    let receivers: Option<Vec<String>> = routing.as_ref().and_then(|(_, r)| {
        r.as_ref()
            .ok()
            .map(|r| r.receivers.iter().map(|x| x.name().to_owned()).collect())
    });
    check_response(&cfg, receivers.as_deref(), &mut c);
    if let Some((p, loaded)) = routing {
        match loaded {
            Ok(r) => {
                check_receivers(&r, &mut c);
                c.summary.push(format!(
                    "routing {}: {} receiver(s), {} route(s)",
                    p.display(),
                    r.receivers.len(),
                    r.routes.len()
                ));
            }
            Err(e) => c.problems.push(e.to_string()),
        }
    } else {
        c.warnings
            .push("no routing: findings group into alerts with the default grouping, and nobody is notified".into());
    }
    c
}

/// Connects as the agent would: the URL, TLS and CA, the schema version and the lease.
fn check_database(db: &crate::fleet::pg::DatabaseConfig, c: &mut Checked) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            c.problems.push(format!("[database]: {e}"));
            return;
        }
    };
    match rt.block_on(crate::fleet::status(db)) {
        Ok(s) => {
            let known = crate::fleet::schema::latest();
            if s.schema < known {
                c.problems.push(format!(
                    "[database] {}: schema version {}, this phiwatch needs {known}: run `phiwatch migrate --config ...`",
                    s.at, s.schema
                ));
            } else if s.schema > known {
                c.problems.push(format!(
                    "[database] {}: schema version {}, newer than this phiwatch knows ({known}): upgrade phiwatch",
                    s.at, s.schema
                ));
            } else {
                c.summary.push(s.to_string());
            }
        }
        Err(e) => c.problems.push(format!("[database]: {e}")),
    }
}

/// The node's role against what the config gives it: fleet roles need [database], and what
/// `run` would refuse for the role is said first.
fn check_role(cfg: &Config, c: &mut Checked) {
    use crate::fleet::Role;
    let role = cfg.fleet.role;
    match (role, &cfg.database) {
        (Role::All, None) => {}
        (Role::All, Some(_)) => c.problems.push(
            "[database] without a fleet role: set [fleet] role = \"collect\", \"detect\", \"dispatch\" or \"console\" (or remove [database] for the single process on SQLite)".to_owned(),
        ),
        (_, None) => c.problems.push(format!(
            "[fleet] role {} needs [database] (the fleet's PostgreSQL)",
            role.as_str()
        )),
        (Role::Console, Some(_)) if cfg.console_node().is_err() => c
            .problems
            .extend(cfg.console_node().err().map(str::to_owned)),
        (Role::Dispatch, Some(_)) if cfg.routing.is_none() => c.problems.push(
            "[fleet] role dispatch needs a routing file (routing = \"...\"), the one the detect nodes use".to_owned(),
        ),
        (Role::Collect | Role::Detect | Role::Dispatch | Role::Console, Some(_)) => c.summary.push(format!(
            "fleet: role {}, node {}, detector lease {} s",
            role.as_str(),
            cfg.fleet.node_name(),
            cfg.fleet.lease().as_secs()
        )),
    }
}

fn check_policies(cfg: &Config, c: &mut Checked) {
    match &cfg.policies {
        Some(dir) => {
            match PolicyPack::load_dir(dir) {
                Ok(p) => c.summary.push(format!(
                    "policies {}: {} rules valid",
                    dir.display(),
                    p.rules().len()
                )),
                Err(e) => c.problems.extend(e.problems),
            }
            let files = dir.join("files");
            if files.is_dir() {
                match PolicyPack::load_files_dir(&files) {
                    Ok(p) => c.summary.push(format!(
                        "folder policies {}: {} rules valid",
                        files.display(),
                        p.rules().len()
                    )),
                    Err(e) => c.problems.extend(e.problems),
                }
            }
        }
        None => c.summary.push("policies: the built-in pack".into()),
    }
}

fn check_context(cfg: &Config, settings: &Settings, c: &mut Checked) {
    let feeds = cfg.context_feeds();
    if !feeds.is_empty() {
        let journal = crate::store::journal(&cfg.data_dir.join("phiwatch.db")).unwrap_or_default();
        match crate::context::load_feeds(&feeds, settings, &journal) {
            Ok((store, stats)) => {
                c.summary.push(format!(
                    "context: {} feed(s), {} users, {} patients",
                    feeds.len(),
                    store.users.len(),
                    store.patients.len()
                ));
                c.summary.push(stats.render().trim_end().to_owned());
                c.warnings
                    .extend(stats.problems.iter().map(|p| format!("context: {p}")));
                let cov = crate::coverage::measure(cfg, &store);
                for s in &cov.stale {
                    c.warnings.push(format!(
                        "context: {} feed {} is {} h old (max_age_hours {})",
                        s.0,
                        s.1.display(),
                        s.2,
                        s.3
                    ));
                }
                c.summary.push(cov.render(&store).trim_end().to_owned());
            }
            Err(e) => c.problems.push(format!("context: {e:#}")),
        }
    } else {
        c.warnings
            .push("no context: every access will be judged without directory facts".into());
    }
}

/// The deadline rules and the response settings, whose reminder receivers must exist in the
/// routing rules (`receivers`: their names, when the routing rules load).
fn check_response(cfg: &Config, receivers: Option<&[String]>, c: &mut Checked) {
    match &cfg.jurisdictions {
        Some(p) => match crate::case::clock::Jurisdictions::load(p) {
            Ok(j) => c.summary.push(format!(
                "jurisdictions {}: {} state rule(s)",
                p.display(),
                j.rules.len()
            )),
            Err(e) => c.problems.push(e.to_string()),
        },
        None => c
            .summary
            .push("jurisdictions: the built-in rules (CA, TX)".into()),
    }
    let response = match &cfg.response {
        Some(p) => crate::case::response::Response::load(p),
        None => crate::case::response::Response::parse(crate::case::response::EMBEDDED),
    };
    match response {
        Ok(r) => {
            if let Err(e) = r.letter() {
                c.problems.push(format!("response: letter template: {e}"));
            }
            for name in r.reminders.receivers.iter().chain(&r.reminders.escalate_to) {
                match receivers {
                    Some(known) if known.contains(name) => {}
                    Some(_) => c.problems.push(format!(
                        "response: reminder receiver {name:?} is not defined in the routing rules"
                    )),
                    None if cfg.response.is_some() => c.warnings.push(format!(
                        "response: reminder receiver {name:?}: no routing rules, reminders cannot be sent"
                    )),
                    None => {}
                }
            }
        }
        Err(e) => c.problems.push(e.to_string()),
    }
}

fn check_data_dir(dir: &Path, c: &mut Checked) {
    let mut probe = dir;
    // The agent creates data_dir; its nearest existing ancestor must be a writable directory.
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => break,
        }
    }
    match std::fs::metadata(probe) {
        Ok(m) if !m.is_dir() => c.problems.push(format!(
            "data_dir {}: {} is not a directory",
            dir.display(),
            probe.display()
        )),
        Ok(m) if m.permissions().readonly() => c.problems.push(format!(
            "data_dir {}: {} is read-only",
            dir.display(),
            probe.display()
        )),
        Ok(_) => {}
        Err(e) => c.problems.push(format!("data_dir {}: {e}", dir.display())),
    }
    if let Err(e) = crate::store::Store::check(&dir.join("phiwatch.db")) {
        c.problems.push(e.to_string());
    }
}

/// The console: its certificate and key load and match, and someone can sign in.
fn check_console(cfg: &Config, c: &mut Checked) {
    let Some(console) = &cfg.console else {
        return;
    };
    let scheme = match (&console.tls_cert, &console.tls_key) {
        (Some(cert), Some(key)) => {
            if let Err(e) = crate::tls::server_tls(cert, key, None, &[b"http/1.1"]) {
                c.problems.push(format!("[console] TLS: {e:#}"));
            }
            "https"
        }
        _ => "http",
    };
    let db = cfg.data_dir.join("phiwatch.db");
    let accounts = if db.exists() {
        crate::store::Store::open_existing(&db)
            .ok()
            .and_then(|conn| crate::console::accounts::list(&conn).ok())
            .map_or(0, |a| a.len())
    } else {
        0
    };
    if accounts == 0 {
        c.warnings.push(
            "[console] no accounts yet: add one with `phiwatch user add NAME --role privacy-officer --config ...`"
                .into(),
        );
    }
    c.summary.push(format!(
        "console {scheme}://{}: {accounts} account(s)",
        console.listen
    ));
    if let Some(o) = &console.oidc {
        check_oidc(console, o, scheme, c);
    }
}

/// The settings `Config::load` judged already (URLs, roles) are not repeated: this checks
/// what needs the environment and the network, and that the provider sends the browser back
/// to this console.
fn check_oidc(
    console: &crate::config::ConsoleConfig,
    o: &crate::config::OidcConfig,
    scheme: &str,
    c: &mut Checked,
) {
    if let Ok(u) = reqwest::Url::parse(&o.redirect_url) {
        // Behind a TLS proxy (allow_plaintext) the public origin is the proxy's.
        let proxied = console.allow_plaintext;
        let port = u.port_or_known_default();
        if !proxied && (u.scheme() != scheme || port != Some(console.listen.port())) {
            c.problems.push(format!(
                "[console.oidc] redirect_url {} is not under the console's origin {scheme}://{}: the provider would send the browser elsewhere",
                o.redirect_url, console.listen
            ));
        }
    }
    let sso = match crate::console::sso::Sso::new(o) {
        Ok(s) => s,
        Err(e) => {
            c.problems.push(format!("[console.oidc] {e}"));
            return;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            c.problems
                .push(format!("[console.oidc] cannot start a runtime: {e}"));
            return;
        }
    };
    match rt.block_on(sso.discover()) {
        Ok(p) => c.summary.push(format!(
            "single sign-on: {p}, {} role mapping(s){}",
            o.roles.len(),
            if console.local_accounts {
                ", local accounts allowed"
            } else {
                ", local accounts off"
            }
        )),
        Err(e) => c.problems.push(format!("[console.oidc] {}: {e}", o.issuer)),
    }
}

fn check_source(src: &Source, c: &mut Checked) {
    match src {
        Source::File(f) => {
            let mut matched = 0;
            for g in &f.paths {
                matched += glob::glob(g)
                    .map(|p| p.filter_map(Result::ok).count())
                    .unwrap_or(0);
            }
            if matched == 0 {
                c.warnings.push(format!(
                    "source {:?}: no file matches {:?} yet (it will be picked up when it appears)",
                    f.name, f.paths
                ));
            }
        }
        Source::Syslog(s) => {
            if s.transport == Transport::Tls {
                if let Err(e) = crate::syslog::tls_acceptor(s) {
                    c.problems.push(format!("source {:?}: TLS: {e:#}", s.name));
                }
            }
            if s.listen.ip().is_unspecified() {
                c.warnings.push(format!(
                    "source {:?}: listens on every interface ({})",
                    s.name, s.listen
                ));
            }
        }
        Source::Folder(f) => {
            for p in &f.paths {
                match std::fs::read_dir(p) {
                    Ok(_) => {}
                    Err(e) => {
                        c.problems
                            .push(format!("source {:?}: folder {}: {e}", f.name, p.display()))
                    }
                }
            }
        }
    }
}

fn check_receivers(r: &Routing, c: &mut Checked) {
    for rec in &r.receivers {
        match rec {
            Receiver::Email(e) => {
                if let Err(m) = crate::notify::email::transport(e) {
                    c.problems.push(m.to_string());
                }
                if let Err(m) = crate::notify::email::Templates::load(e) {
                    c.problems.push(m.to_string());
                }
                if e.tls == crate::alert::routing::SmtpTls::None
                    && !matches!(e.host.as_str(), "localhost" | "127.0.0.1" | "::1")
                {
                    c.warnings.push(format!(
                        "receiver {:?}: mail to {} without TLS",
                        e.name, e.host
                    ));
                }
            }
            Receiver::Webhook(w) => {
                for var in [&w.secret_env, &w.routing_key_env].into_iter().flatten() {
                    if std::env::var_os(var).is_none() {
                        c.problems.push(format!(
                            "receiver {:?}: environment variable {var} is not set",
                            w.name
                        ));
                    }
                }
                if w.secret_env.is_none()
                    && w.format == crate::alert::routing::WebhookFormat::Standard
                {
                    c.warnings.push(format!(
                        "receiver {:?}: webhooks are unsigned (no secret_env)",
                        w.name
                    ));
                }
            }
            Receiver::Syslog(_) => {}
        }
    }
}

/// Every plugin is verified (pin, exports, settings, exposure) one by one, so one bad plugin
/// does not hide the next. Nothing is cached: `check` writes nothing.
fn check_plugins(cfg: &Config, c: &mut Checked) {
    let inputs = cfg.plugin_inputs();
    let mut names = std::collections::HashSet::new();
    for spec in inputs.resolved() {
        match crate::plugin::Compiled::load(&spec, None) {
            Ok(p) => {
                if !names.insert(p.name.to_string()) {
                    c.problems.push(format!(
                        "plugin {}: the name is used by another plugin",
                        p.name
                    ));
                }
                let d = &p.description;
                c.summary.push(format!(
                    "plugin {} {} ({}): categories {}; timeout {} ms, memory {} MiB{}",
                    d.name,
                    d.version,
                    p.source,
                    d.categories.join(", "),
                    p.spec.timeout_ms,
                    p.spec.memory_mb,
                    grants(&p.spec.grant)
                ));
            }
            Err(e) => c.problems.push(e.to_string()),
        }
    }
    if !inputs.shipped && inputs.specs.is_empty() {
        c.summary
            .push("plugins: none (shipped_plugins = false)".into());
    }
}

fn grants(g: &crate::plugin::Grant) -> String {
    let mut parts = Vec::new();
    if !g.dirs.is_empty() {
        parts.push(format!("{} read-only dir(s)", g.dirs.len()));
    }
    if !g.env.is_empty() {
        parts.push(format!("env {}", g.env.join(",")));
    }
    if g.clock {
        parts.push("clock".into());
    }
    if !g.connect.is_empty() {
        parts.push(format!(
            "connect to {}",
            g.connect
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; granted {}", parts.join(", "))
    }
}
