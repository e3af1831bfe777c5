//! The daemon's configuration file (`phiwatch run --config FILE`).

pub use crate::context::feeds::ContextFeed;
pub use crate::decode::csv::CsvMapping;
pub use crate::decode::Format;
use crate::invalid::Invalid;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// toml's message names the line and column and quotes the offending text.
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store (`phiwatch.db`) and source checkpoints live here.
    pub data_dir: PathBuf,
    /// Who is who: a FHIR NDJSON directory (`context = "/var/lib/ehr/fhir"`), or `[[context]]`
    /// feeds (FHIR, HR roster, crosswalk, disabled accounts, HL7 v2 files, an MLLP listener).
    /// Without it every access is judged without directory facts.
    pub context: Option<ContextSetting>,
    /// Policy directory; default: the built-in pack.
    pub policies: Option<PathBuf>,
    /// Detection settings; default: the built-in rules/detection.toml.
    pub rules: Option<PathBuf>,
    /// Alert grouping, routing and receivers (see rules/routing.toml). Without it findings
    /// still group into alerts (the default grouping) and nobody is notified.
    pub routing: Option<PathBuf>,
    /// State breach rules for case deadlines; default: the built-in rules/jurisdictions.toml.
    pub jurisdictions: Option<PathBuf>,
    /// Organization and reminder settings for cases; default: the built-in rules/response.toml.
    pub response: Option<PathBuf>,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub limits: Limits,
    /// The privacy officer's web console and HTTP API; off unless configured.
    pub console: Option<ConsoleConfig>,
    /// A TOML file of further `[[source]]` tables (relative paths: next to this file), so
    /// source lists can be managed apart from the agent's settings.
    pub sources_file: Option<PathBuf>,
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
    /// Run the plugins shipped in the binary (volume-anomaly, break-glass, family-match,
    /// first-access) besides any `[[plugin]]`. A `[[plugin]] builtin = NAME` entry replaces
    /// that shipped plugin's defaults.
    #[serde(default = "yes")]
    pub shipped_plugins: bool,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<crate::plugin::PluginSpec>,
    /// Fleet mode's PostgreSQL (`[database] url`, `ca_file`): `phiwatch migrate` makes its
    /// schema and `phiwatch check` reports it. Without it everything stays in data_dir's
    /// SQLite store.
    pub database: Option<crate::fleet::pg::DatabaseConfig>,
    /// Fleet mode: this node's role (collect, detect, dispatch; all without `[database]`) and name.
    #[serde(default)]
    pub fleet: crate::fleet::FleetConfig,
}

/// `context = "DIR"` or `[[context]]` tables.
#[derive(Debug, Clone)]
pub enum ContextSetting {
    Dir(PathBuf),
    Feeds(Vec<ContextFeed>),
}

impl<'de> Deserialize<'de> for ContextSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ContextSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a FHIR context directory, or [[context]] feed tables")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ContextSetting::Dir(PathBuf::from(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                // Through the sequence's own deserializer, so a bad feed table keeps its
                // line and field in the message.
                Vec::<ContextFeed>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(ContextSetting::Feeds)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesFile {
    #[serde(default, rename = "source")]
    sources: Vec<Source>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address for `/healthz` and `/metrics`. Loopback by default: metrics are not public.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `/healthz` answers 503 once a batch has waited this long to be judged and stored.
    #[serde(default = "default_max_lag")]
    pub max_detection_lag_seconds: u64,
    /// Time a client has to send a request's headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
}

fn default_max_lag() -> u64 {
    120
}

/// The source name the console's own access log (its spool of record views) is read under,
/// reserved for it among [[source]] names.
pub const CONSOLE_SOURCE: &str = "phiwatch-console";

/// `[console]`: where the console listens and how it protects itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address to serve on, e.g. "127.0.0.1:8443".
    pub listen: SocketAddr,
    /// PEM certificate chain and key: serve HTTPS (rustls). Required off loopback unless
    /// `allow_plaintext` says a TLS proxy sits in front.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Mark cookies Secure without `tls_cert` (behind a TLS-terminating proxy).
    #[serde(default)]
    pub secure_cookies: bool,
    /// Sign out after this many idle minutes.
    #[serde(default = "default_idle")]
    pub idle_minutes: u64,
    /// Sign out this many hours after sign-in, active or not.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// Failed sign-ins allowed per client address and per user name within the window.
    #[serde(default = "default_login_failures")]
    pub login_failures: u32,
    #[serde(default = "default_login_window")]
    pub login_window_minutes: u64,
    /// Connections held at once; more are closed on arrival.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a client has to send a request's headers (and an idle keep-alive connection to
    /// send its next request): slow-loris clients are cut off after it.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// Password sign-in with local accounts (`phiwatch user add`). With single sign-on set
    /// up, keep one local emergency admin, or set this to false to allow SSO only.
    #[serde(default = "yes")]
    pub local_accounts: bool,
    /// `[console.oidc]`: single sign-on through the organisation's OpenID provider.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

fn yes() -> bool {
    true
}

/// `[console.oidc]`: OpenID Connect sign-in (authorization code flow with PKCE).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL; discovery reads `ISSUER/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The environment variable holding the client secret; none for a public client (PKCE
    /// alone). The secret itself never goes in the file.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back: the console's origin + `/oidc/callback`,
    /// registered at the provider.
    pub redirect_url: String,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim holding the user's groups or roles (a string or a list).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim value -> phiwatch role, tried in order: the first value the user has wins; a
    /// user with none of them is refused.
    #[serde(default)]
    pub roles: Vec<OidcRole>,
    /// The claim naming the user in the console and the case log.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// The claim holding the user's id in the staff directory (for example an employee
    /// number): what the person views through the console is judged as their access.
    #[serde(default)]
    pub staff_id_claim: Option<String>,
    /// End the console session when the ID token expires (the provider's session length).
    #[serde(default)]
    pub end_with_token: bool,
    /// Clock skew tolerated on `exp` and `iat`.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// The label of the sign-in button.
    #[serde(default = "default_oidc_button")]
    pub button: String,
}

/// The console's role names (console::authz::Role spells them the same; a test keeps them
/// equal).
pub const CONSOLE_ROLES: [&str; 4] = ["privacy-officer", "investigator", "auditor", "admin"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRole {
    /// A value of the roles claim (a group id for Entra ID, a group name for Okta).
    pub claim: String,
    /// privacy-officer, investigator, auditor or admin.
    pub role: String,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["profile".into(), "email".into()]
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_name_claim() -> String {
    "preferred_username".into()
}
fn default_skew() -> u64 {
    60
}
fn default_oidc_button() -> String {
    "Sign in with single sign-on".into()
}

impl OidcConfig {
    /// The settings that can be judged without the network.
    fn validate(&self) -> Result<(), Invalid> {
        let bad = |m: String| Err(Invalid(format!("[console.oidc] {m}")));
        let issuer = match reqwest::Url::parse(&self.issuer) {
            Ok(u) => u,
            Err(e) => return bad(format!("issuer {:?}: {e}", self.issuer)),
        };
        if let Err(m) = https_or_loopback(&issuer) {
            return bad(format!("issuer: {m}"));
        }
        let redirect = match reqwest::Url::parse(&self.redirect_url) {
            Ok(u) => u,
            Err(e) => return bad(format!("redirect_url {:?}: {e}", self.redirect_url)),
        };
        if let Err(m) = https_or_loopback(&redirect) {
            return bad(format!("redirect_url: {m}"));
        }
        if redirect.path() != "/oidc/callback" || redirect.query().is_some() {
            return bad(format!(
                "redirect_url {:?} must be the console's origin followed by /oidc/callback",
                self.redirect_url
            ));
        }
        if self.client_id.is_empty() {
            return bad("client_id is empty".into());
        }
        if self.roles.is_empty() {
            return bad("no [[console.oidc.roles]]: nobody could sign in".into());
        }
        for r in &self.roles {
            if !CONSOLE_ROLES.contains(&r.role.as_str()) {
                return bad(format!(
                    "role {:?} for {:?}: use privacy-officer, investigator, auditor or admin",
                    r.role, r.claim
                ));
            }
        }
        Ok(())
    }
}

/// Tokens and codes travel over these URLs: HTTPS, or plain HTTP on loopback only.
#[derive(Debug, thiserror::Error)]
#[error("{url}: use https ({scheme} is allowed on loopback only)")]
struct NotSecure {
    url: String,
    scheme: String,
}

fn https_or_loopback(u: &reqwest::Url) -> Result<(), NotSecure> {
    let host = u.host_str().unwrap_or("").trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match u.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        s => Err(NotSecure {
            url: u.to_string(),
            scheme: s.to_owned(),
        }),
    }
}

fn default_header_timeout() -> u64 {
    10
}

fn default_idle() -> u64 {
    30
}
fn default_session_hours() -> u64 {
    12
}
fn default_login_failures() -> u32 {
    5
}
fn default_login_window() -> u64 {
    15
}

impl ConsoleConfig {
    /// For tests and benchmarks: loopback, plain HTTP, the defaults.
    pub fn loopback(listen: SocketAddr) -> Self {
        ConsoleConfig {
            listen,
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            secure_cookies: false,
            idle_minutes: default_idle(),
            session_hours: default_session_hours(),
            login_failures: default_login_failures(),
            login_window_minutes: default_login_window(),
            max_connections: default_max_connections(),
            header_timeout_seconds: default_header_timeout(),
            local_accounts: true,
            oidc: None,
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        if let Some(o) = &self.oidc {
            o.validate()?;
        }
        if !self.local_accounts && self.oidc.is_none() {
            return Err(Invalid(
                "[console] local_accounts = false needs [console.oidc]: nobody could sign in"
                    .into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(Invalid("[console] tls_cert and tls_key go together".into()));
        }
        if self.tls_cert.is_none() && !self.listen.ip().is_loopback() && !self.allow_plaintext {
            return Err(Invalid(format!(
                "[console] listen = \"{}\" is not loopback: set tls_cert and tls_key (the console shows PHI), or allow_plaintext = true behind a TLS proxy",
                self.listen
            )));
        }
        if self.idle_minutes == 0
            || self.session_hours == 0
            || self.login_failures == 0
            || self.max_connections == 0
            || self.header_timeout_seconds == 0
        {
            return Err(Invalid(
                "[console] idle_minutes, session_hours, login_failures, max_connections and header_timeout_seconds must be above 0".into(),
            ));
        }
        Ok(())
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: default_listen(),
            max_detection_lag_seconds: default_max_lag(),
            header_timeout_seconds: default_header_timeout(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// Tail files matching globs.
    File(Box<FileSource>),
    /// Receive IHE ATNA audit messages over syslog (RFC 5424 on UDP, TCP or TLS).
    Syslog(SyslogSource),
    /// Watch PHI folders for created, changed, renamed, deleted, exposed and bulk-read files.
    Folder(FolderSource),
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::File(s) => &s.name,
            Source::Syslog(s) => &s.name,
            Source::Folder(s) => &s.name,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Unique name: labels metrics and names the checkpoint file.
    pub name: String,
    /// Glob patterns. Include rotated names (`audit.ndjson*`) so nothing written just before a
    /// rotation is missed; events are idempotent, so reading a copy twice stores nothing twice.
    pub paths: Vec<String>,
    pub format: Format,
    /// Column mapping; required when `format = "csv"`.
    pub csv: Option<CsvMapping>,
    /// How often to look for new data, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Longer lines are reported as one bad line each (with their line number) and skipped.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// IANA zone for times written without an offset (default UTC). CSV sources set it in
    /// `[source.csv]`.
    pub timezone: Option<chrono_tz::Tz>,
}

impl FileSource {
    pub fn zone(&self) -> chrono_tz::Tz {
        self.timezone.unwrap_or(chrono_tz::UTC)
    }

    /// The decoder for this source's lines; CSV action words the mapping does not know are
    /// counted into `unknown`. The error names the source.
    pub fn decoder(
        &self,
        unknown: std::sync::Arc<crate::decode::csv::UnknownNames>,
    ) -> Result<crate::decode::LineDecoder, Invalid> {
        use crate::decode::LineDecoder;
        Ok(match self.format {
            Format::FhirAuditevent => LineDecoder::Fhir(self.zone()),
            Format::AtnaXml => LineDecoder::Atna(self.zone()),
            Format::Cef | Format::Leef => {
                LineDecoder::Siem(Box::new(crate::decode::siem::SiemDecoder::new(self.zone())))
            }
            Format::Csv => {
                let m = self.csv.as_ref().ok_or_else(|| {
                    Invalid(format!(
                        "source {:?}: format = \"csv\" without a mapping",
                        self.name
                    ))
                })?;
                LineDecoder::Csv(Box::new(
                    crate::decode::csv::CsvDecoder::new(m, unknown)
                        .map_err(|e| Invalid(format!("source {:?}: {e}", self.name)))?,
                ))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSource {
    pub name: String,
    /// Address to listen on, e.g. `0.0.0.0:6514` (TLS), `0.0.0.0:514` (UDP).
    pub listen: SocketAddr,
    pub transport: Transport,
    /// PEM certificate chain and private key (TLS only).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, senders must present a certificate it signed (RFC 5425
    /// mutual authentication).
    pub tls_client_ca: Option<PathBuf>,
    /// Larger messages are rejected (and a TCP/TLS connection sending one is closed).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// IANA zone for `EventDateTime` values written without an offset (default UTC).
    pub timezone: Option<chrono_tz::Tz>,
    /// TCP/TLS connections held at once; more are closed on arrival (and counted).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A TCP/TLS connection that sends nothing for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// A frame, once its first byte has arrived, must arrive whole within this time.
    #[serde(default = "default_frame_timeout")]
    pub frame_timeout_seconds: u64,
    /// UDP: the socket's receive buffer (SO_RCVBUF). The kernel's default (about 200 KiB)
    /// starts losing datagrams near 10,000/s; the kernel caps it at net.core.rmem_max.
    pub recv_buffer_bytes: Option<usize>,
    /// Bytes the source's spool may hold on disk while detection catches up. At the cap,
    /// TCP/TLS senders are held back and UDP datagrams are dropped and counted.
    #[serde(default = "default_spool_cap")]
    pub spool_max_bytes: u64,
}

impl SyslogSource {
    pub fn zone(&self) -> chrono_tz::Tz {
        self.timezone.unwrap_or(chrono_tz::UTC)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderSource {
    pub name: String,
    /// Directories holding PHI.
    pub paths: Vec<PathBuf>,
    #[serde(default = "yes")]
    pub recursive: bool,
    /// This many distinct files read (or deleted) within `burst_seconds` is a bulk event.
    #[serde(default = "default_burst_files")]
    pub burst_files: u32,
    #[serde(default = "default_burst_seconds")]
    pub burst_seconds: u32,
}

fn default_max_connections() -> usize {
    256
}
fn default_idle_timeout() -> u64 {
    600
}
fn default_frame_timeout() -> u64 {
    30
}
fn default_spool_cap() -> u64 {
    crate::spool::DEFAULT_CAP_BYTES
}
fn default_inflight() -> usize {
    64 << 20
}

/// `[limits]`: budgets shared by every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Bytes of partly received stream frames (syslog, MLLP) held at once, over every
    /// connection: a frame's announced length is reserved before it is read.
    #[serde(default = "default_inflight")]
    pub inflight_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inflight_bytes: default_inflight(),
        }
    }
}
fn default_max_message() -> usize {
    1 << 20
}
fn default_burst_files() -> u32 {
    50
}
fn default_burst_seconds() -> u32 {
    60
}
fn default_poll_ms() -> u64 {
    250
}
fn default_max_line() -> usize {
    4 << 20
}

impl Config {
    /// The context feeds: `context = "DIR"` is one FHIR feed.
    pub fn context_feeds(&self) -> Vec<ContextFeed> {
        match &self.context {
            None => Vec::new(),
            Some(ContextSetting::Dir(d)) => {
                vec![ContextFeed::Fhir(crate::context::feeds::FhirFeed {
                    path: d.clone(),
                    max_age_hours: None,
                })]
            }
            Some(ContextSetting::Feeds(f)) => f.clone(),
        }
    }

    /// The first FHIR context directory (patient names for letters).
    pub fn fhir_context(&self) -> Option<PathBuf> {
        self.context_feeds().into_iter().find_map(|f| match f {
            ContextFeed::Fhir(f) => Some(f.path),
            _ => None,
        })
    }

    /// The `[console]` a fleet `console` node serves, or why this config cannot run one: the
    /// node serves `[console]` and reads no sources.
    pub fn console_node(&self) -> Result<&ConsoleConfig, &'static str> {
        match &self.console {
            None => Err("[fleet] role console serves the [console] section: add one"),
            Some(_) if !self.sources.is_empty() || !self.mllp_feeds().is_empty() => Err(
                "[fleet] role console reads no sources: give [[source]] and MLLP feeds to collect nodes",
            ),
            Some(c) => Ok(c),
        }
    }

    /// The MLLP listeners among the context feeds.
    pub fn mllp_feeds(&self) -> Vec<crate::context::feeds::MllpFeed> {
        self.context_feeds()
            .into_iter()
            .filter_map(|f| match f {
                ContextFeed::Mllp(m) => Some(*m),
                _ => None,
            })
            .collect()
    }

    /// The plugins to run, with their compiled code cached under the data directory.
    pub fn plugin_inputs(&self) -> crate::plugin::PluginInputs {
        crate::plugin::PluginInputs {
            shipped: self.shipped_plugins,
            specs: self.plugins.clone(),
            cache_dir: Some(self.data_dir.join("plugin-cache")),
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let mut c: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: p.clone(),
            message: e.to_string(),
        })?;
        if let Some(f) = &c.sources_file {
            let f = path.parent().unwrap_or(Path::new(".")).join(f);
            let fp = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
                path: fp.clone(),
                source,
            })?;
            let more: SourcesFile = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                path: fp,
                message: e.to_string(),
            })?;
            c.sources.extend(more.sources);
        }
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(ContextSetting::Feeds(feeds)) = &mut c.context {
            for f in feeds.iter_mut() {
                f.rebase(base);
            }
        }
        for spec in &mut c.plugins {
            if let Some(f) = spec.path.as_mut().filter(|f| f.is_relative()) {
                *f = base.join(&*f);
            }
        }
        c.check().map_err(|e| ConfigError::Invalid {
            path: p,
            message: e.0,
        })?;
        Ok(c)
    }

    /// What can be checked before any source is opened: names, listeners, limits, mappings.
    fn check(&self) -> Result<(), Invalid> {
        // Only collectors (and the single process) read sources: a fleet's detector reads
        // the queue, a dispatcher the outbox.
        use crate::fleet::Role;
        if self.sources.is_empty() && matches!(self.fleet.role, Role::All | Role::Collect) {
            return Err("no [[source]] declared: nothing to watch".into());
        }
        if let Some(console) = &self.console {
            console.validate()?;
            if self.sources.iter().any(|s| s.name() == CONSOLE_SOURCE) {
                return Err(Invalid(format!(
                    "source name {:?} is reserved for the console's own access log",
                    CONSOLE_SOURCE
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut listens = std::collections::HashSet::new();
        for (i, f) in self.context_feeds().iter().enumerate() {
            f.validate()
                .map_err(|e| Invalid(format!("[[context]] #{} ({}): {e}", i + 1, f.kind())))?;
            if let ContextFeed::Mllp(m) = f {
                if !names.insert(m.name.clone()) {
                    return Err(Invalid(format!("name {:?} is used twice", m.name)));
                }
                listens.insert((m.listen, false));
            }
        }
        for src in &self.sources {
            let name = src.name();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(Invalid(format!(
                    "source name {name:?}: use letters, digits, - and _"
                )));
            }
            if !names.insert(name.to_owned()) {
                return Err(Invalid(format!("source name {name:?} is used twice")));
            }
            match src {
                Source::File(s) => s.check(),
                Source::Syslog(s) => {
                    if listens.insert((s.listen, s.transport == Transport::Udp)) {
                        s.check(self.limits.inflight_bytes)
                    } else {
                        Err(Invalid(format!(
                            "{} is already used by another source",
                            s.listen
                        )))
                    }
                }
                Source::Folder(s) => s.check(),
            }
            .map_err(|e| Invalid(format!("source {name:?}: {e}")))?;
        }
        Ok(())
    }
}

impl FileSource {
    fn check(&self) -> Result<(), Invalid> {
        if self.paths.is_empty() {
            return Err("no paths".into());
        }
        if self.max_line_bytes < 1024 {
            return Err("max_line_bytes below 1024 would reject ordinary records".into());
        }
        for g in &self.paths {
            glob::Pattern::new(g).map_err(|e| Invalid(format!("glob {g:?}: {e}")))?;
        }
        match (&self.format, &self.csv) {
            (Format::Csv, None) => {
                Err("format = \"csv\" needs a [source.csv] column mapping".into())
            }
            (Format::Csv, Some(m)) => m.validate().map_err(|e| Invalid(format!("csv: {e}"))),
            (_, Some(_)) => Err("[source.csv] is only for format = \"csv\"".into()),
            _ => Ok(()),
        }
    }
}

impl SyslogSource {
    fn check(&self, inflight_bytes: usize) -> Result<(), Invalid> {
        let tls_files = [&self.tls_cert, &self.tls_key, &self.tls_client_ca];
        match self.transport {
            Transport::Tls if self.tls_cert.is_none() || self.tls_key.is_none() => {
                return Err("transport = \"tls\" needs tls_cert and tls_key".into())
            }
            Transport::Udp | Transport::Tcp if tls_files.iter().any(|f| f.is_some()) => {
                return Err(
                    "tls_cert, tls_key and tls_client_ca are only for transport = \"tls\"".into(),
                )
            }
            _ => {}
        }
        if self.max_message_bytes < 1024 {
            return Err("max_message_bytes below 1024 would reject ordinary audit messages".into());
        }
        if self.max_message_bytes > inflight_bytes {
            return Err(Invalid(format!(
                "max_message_bytes {} is above [limits] inflight_bytes {inflight_bytes}: such a message could never be received",
                self.max_message_bytes
            )));
        }
        if self.max_connections == 0
            || self.idle_timeout_seconds == 0
            || self.frame_timeout_seconds == 0
        {
            return Err(
                "max_connections, idle_timeout_seconds and frame_timeout_seconds must be above 0"
                    .into(),
            );
        }
        if self.spool_max_bytes < (1 << 20) {
            return Err("spool_max_bytes must be at least 1048576".into());
        }
        Ok(())
    }
}

impl FolderSource {
    fn check(&self) -> Result<(), Invalid> {
        if self.paths.is_empty() {
            return Err("no paths".into());
        }
        if self.burst_files < 2 || self.burst_seconds == 0 {
            return Err("burst_files must be at least 2 and burst_seconds at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("phiwatch.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn single_sign_on_settings_are_judged_before_start() {
        let with = |oidc: &str, local: bool| {
            load(&format!(
                "data_dir = \"/tmp/x\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"/x/*.ndjson\"]\nformat = \"fhir-auditevent\"\n[console]\nlisten = \"127.0.0.1:8443\"\nlocal_accounts = {local}\n{oidc}"
            ))
        };
        let good = "[console.oidc]\nissuer = \"https://login.example.org/t/v2.0\"\nclient_id = \"c\"\nredirect_url = \"http://127.0.0.1:8443/oidc/callback\"\n[[console.oidc.roles]]\nclaim = \"g1\"\nrole = \"auditor\"\n";
        let c = with(good, false).unwrap();
        let o = c.console.unwrap().oidc.unwrap();
        assert_eq!(
            (o.roles_claim.as_str(), o.name_claim.as_str()),
            ("groups", "preferred_username")
        );
        for (bad, says) in [
            (good.replace("https://login", "http://login"), "use https"),
            (
                good.replace("/oidc/callback", "/callback"),
                "/oidc/callback",
            ),
            (good.replace("\"auditor\"", "\"root\""), "role \"root\""),
            (
                good.replace(
                    "[[console.oidc.roles]]\nclaim = \"g1\"\nrole = \"auditor\"\n",
                    "",
                ),
                "nobody could sign in",
            ),
        ] {
            let e = with(&bad, true).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = with("", false).unwrap_err().to_string();
        assert!(
            e.contains("local_accounts = false needs [console.oidc]"),
            "{e}"
        );
    }

    #[test]
    fn minimal_config() {
        let c = load(
            "data_dir = \"/tmp/x\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"/var/log/ehr/*.ndjson\"]\nformat = \"fhir-auditevent\"\n",
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9464");
        let Source::File(s) = &c.sources[0] else {
            panic!("not a file source")
        };
        assert_eq!(s.poll_ms, 250);
    }

    #[test]
    fn unknown_key_names_line() {
        let e = load("data_dir = \"/tmp/x\"\ncontxt = \"/etc\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("contxt"), "{e}");
    }

    #[test]
    fn bad_source_is_explained() {
        let e = load("data_dir = \"/x\"\n[[source]]\nkind = \"file\"\nname = \"a b\"\npaths = [\"x\"]\nformat = \"fhir-auditevent\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source name \"a b\""), "{e}");
        let e = load("data_dir = \"/x\"\n[[source]]\nkind = \"file\"\nname = \"a\"\npaths = [\"x\"]\nformat = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("fhir-auditevent"), "{e}");
        let e = load("data_dir = \"/x\"\n[[source]]\nkind = \"file\"\nname = \"a\"\npaths = [\"x\"]\nformat = \"csv\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[source.csv]"), "{e}");
        let e = load("data_dir = \"/x\"\n[[source]]\nkind = \"syslog\"\nname = \"a\"\nlisten = \"127.0.0.1:6514\"\ntransport = \"tls\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_cert"), "{e}");
        let e = load("data_dir = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("no [[source]]"), "{e}");
    }

    #[test]
    fn sources_from_a_separate_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("sources.toml"),
            "[[source]]\nkind = \"folder\"\nname = \"phi\"\npaths = [\"/srv/phi\"]\n",
        )
        .unwrap();
        let p = d.path().join("phiwatch.toml");
        std::fs::write(&p, "data_dir = \"/x\"\nsources_file = \"sources.toml\"\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.sources.len(), 1);
        std::fs::write(
            d.path().join("sources.toml"),
            "[[source]]\nkind = \"folder\"\nnme = 1\n",
        )
        .unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("sources.toml") && e.contains("nme"), "{e}");
        // The shipped rules/sources.toml is a valid sources file.
        let shipped: SourcesFile =
            toml::from_str(include_str!("../../rules/sources.toml")).unwrap();
        assert!(!shipped.sources.is_empty());
    }

    /// The shipped example must stay loadable, with every commented source switched on too.
    #[test]
    fn example_config_and_all_its_sources_load() {
        let text = include_str!("../../install/phiwatch.example.toml");
        load(text).unwrap();
        let on: String = text
            .lines()
            .map(|l| {
                let body = l.strip_prefix("# ").unwrap_or(l);
                let is_toml = body.starts_with('[')
                    || body.split_once(" = ").is_some_and(|(k, _)| {
                        let k = k.trim_end();
                        let quoted = k.len() > 2 && k.starts_with('"') && k.ends_with('"');
                        quoted
                            || !k.is_empty()
                                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                if is_toml {
                    body
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = load(&on).unwrap_or_else(|e| panic!("{e}\n{on}"));
        assert_eq!(c.sources.len(), 6, "with the EHR extract profile source");
        let kinds: Vec<&str> = c.context_feeds().iter().map(|f| f.kind()).collect();
        assert_eq!(
            kinds,
            [
                "fhir",
                "hr-csv",
                "crosswalk-csv",
                "disabled-accounts-csv",
                "hl7v2",
                "mllp"
            ]
        );
        assert!(c.sources.iter().any(|s| matches!(s, Source::Folder(_))));
        assert!(c.sources.iter().any(|s| matches!(
            s,
            Source::File(f) if f.csv.as_ref().is_some_and(|m| m.profile.as_deref() == Some("purview-epic"))
        )));
    }
}
