//! WASM detection plugins: the operator's config names them, the agent verifies and compiles
//! them, and the detection thread calls each with batches of enriched accesses.
//!
//! A plugin runs in its own wasmtime store ([`sandbox`]): memory capped, each call bounded by
//! an epoch deadline, no WASI capability unless granted. A call that traps, overruns its
//! deadline or returns too much is reported, counted and its findings dropped; the instance is
//! thrown away and a fresh one (with the same state) serves the next batch. Other detectors
//! never wait on a failed plugin for longer than its deadline.

pub(crate) mod batch;
mod cache;
pub mod sandbox;
pub mod state;

pub use batch::Pending;
pub use sandbox::FailureKind;

use crate::context::ContextStore;
use crate::event::AccessEvent;
use crate::finding::Finding;
use sandbox::{t, Instance, Limits};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use state::{Change, PluginState};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The plugins built from `plugins/` and embedded in the binary: (name, component).
pub const SHIPPED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/shipped_plugins.rs"));

/// The tutorial plugin (plugins/night-export), which `phiwatch bench --plugins` measures.
pub const TUTORIAL: &[u8] = include!(concat!(env!("OUT_DIR"), "/tutorial_plugin.rs"));

/// Where the build put every plugin component, the test plugins included.
pub const BUILD_DIR: &str = env!("PHIWATCH_WASM_DIR");

#[derive(Debug, Clone, Error)]
pub enum PluginError {
    #[error("the plugin engine could not start: {0}")]
    Engine(String),
    #[error("plugin {plugin}: {message}")]
    Load { plugin: String, message: String },
    #[error("plugin {plugin}: cannot instantiate: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin grant: {0}")]
    Grant(String),
}

fn load_err(plugin: &str, message: impl Into<String>) -> PluginError {
    PluginError::Load {
        plugin: plugin.to_owned(),
        message: message.into(),
    }
}

/// Facts beyond the defaults that a plugin may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposed {
    Names,
    Addresses,
}

/// Capabilities granted to a plugin. Nothing by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Directories the plugin may read (never write).
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Environment variables passed through by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// The real wall and monotonic clocks (otherwise both read zero).
    #[serde(default)]
    pub clock: bool,
    /// Addresses the plugin may open TCP connections to.
    #[serde(default)]
    pub connect: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    pub host: PathBuf,
    /// Path the plugin sees.
    pub guest: String,
}

/// One `[[plugin]]` table of the agent's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// A plugin shipped in the binary: volume-anomaly, break-glass, family-match, first-access.
    pub builtin: Option<String>,
    /// A component file (`.wasm`); relative paths are relative to the config file.
    pub path: Option<PathBuf>,
    /// Required with `path`: the file's SHA-256 in hex. A mismatch refuses the plugin.
    pub sha256: Option<String>,
    /// Names and addresses are PHI: a plugin sees them only when listed here. Shipped plugins
    /// get what they declare they need unless `expose` is given.
    pub expose: Option<Vec<Exposed>>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    #[serde(default = "default_state_mb")]
    pub state_mb: u64,
    /// Findings one call may return; more fails the call.
    #[serde(default = "default_max_findings")]
    pub max_findings: usize,
    /// Accesses per call.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The plugin's own settings, handed to it as JSON.
    #[serde(default)]
    pub settings: toml::Table,
    #[serde(default)]
    pub grant: Grant,
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_memory_mb() -> u64 {
    64
}
fn default_state_mb() -> u64 {
    32
}
fn default_max_findings() -> usize {
    10_000
}
fn default_batch() -> usize {
    512
}

impl PluginSpec {
    pub fn builtin(name: &str) -> Self {
        PluginSpec {
            builtin: Some(name.to_owned()),
            path: None,
            sha256: None,
            expose: None,
            timeout_ms: default_timeout_ms(),
            memory_mb: default_memory_mb(),
            state_mb: default_state_mb(),
            max_findings: default_max_findings(),
            batch: default_batch(),
            settings: toml::Table::new(),
            grant: Grant::default(),
        }
    }

    pub fn file(path: &Path) -> Self {
        PluginSpec {
            builtin: None,
            path: Some(path.to_owned()),
            ..PluginSpec::builtin("")
        }
    }

    /// A component file pinned to what it is now: for an author trying their own build
    /// (`plugin test`, `policy backtest --plugin`, `bench --plugins --guest`), never for the
    /// agent's config, where the operator pins what they trust.
    pub fn pinned_file(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        Ok(PluginSpec {
            sha256: Some(hex(&Sha256::digest(&bytes))),
            ..PluginSpec::file(path)
        })
    }

    fn label(&self) -> String {
        match (&self.builtin, &self.path) {
            (Some(b), _) => format!("builtin {b}"),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => "(no builtin or path)".into(),
        }
    }
}

/// What the agent's config says about plugins, resolved against the config's directory.
#[derive(Debug, Clone, Default)]
pub struct PluginInputs {
    /// Run the shipped plugins (those not configured explicitly) with their defaults.
    pub shipped: bool,
    pub specs: Vec<PluginSpec>,
    /// Compiled components are cached here (under the agent's data directory).
    pub cache_dir: Option<PathBuf>,
}

impl PluginInputs {
    /// The shipped plugins with defaults and no cache: `scan` and `demo`.
    pub fn shipped() -> Self {
        PluginInputs {
            shipped: true,
            ..PluginInputs::default()
        }
    }

    /// Every plugin to load: explicit entries, then shipped ones not named by an entry.
    pub fn resolved(&self) -> Vec<PluginSpec> {
        let mut out = self.specs.clone();
        if self.shipped {
            for (name, _) in SHIPPED {
                if !out.iter().any(|s| s.builtin.as_deref() == Some(name)) {
                    out.push(PluginSpec::builtin(name));
                }
            }
        }
        out
    }

    /// Files whose change means a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        self.specs.iter().filter_map(|s| s.path.clone()).collect()
    }

    pub fn load(&self) -> Result<Vec<Arc<Compiled>>, PluginError> {
        let mut out: Vec<Arc<Compiled>> = Vec::new();
        for spec in self.resolved() {
            let c = Compiled::load(&spec, self.cache_dir.as_deref())?;
            if let Some(other) = out.iter().find(|o| o.name == c.name) {
                return Err(load_err(
                    &c.name,
                    format!(
                        "{} and {} both call themselves {:?}",
                        other.source, c.source, c.name
                    ),
                ));
            }
            out.push(Arc::new(c));
        }
        Ok(out)
    }
}

/// What a plugin says of itself.
#[derive(Debug, Clone)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub categories: Vec<String>,
    pub config_schema: String,
    pub needs: Vec<Exposed>,
}

/// A verified, compiled plugin whose settings it accepted.
pub struct Compiled {
    pub name: Arc<str>,
    pub description: Description,
    pub source: String,
    pub sha256: String,
    pub spec: PluginSpec,
    pub settings_json: String,
    pub limits: Limits,
    pub names: bool,
    pub addresses: bool,
    component: wasmtime::component::Component,
}

impl Compiled {
    pub fn load(spec: &PluginSpec, cache_dir: Option<&Path>) -> Result<Compiled, PluginError> {
        let label = spec.label();
        let (bytes, sha256) = Self::read_pinned(spec, &label)?;
        if spec.batch == 0 || spec.max_findings == 0 || spec.memory_mb == 0 || spec.timeout_ms == 0
        {
            return Err(load_err(
                &label,
                "batch, max_findings, memory_mb and timeout_ms must be above 0",
            ));
        }
        let component = cache::compile(&bytes, &sha256, cache_dir)
            .map_err(|e| load_err(&label, e.to_string()))?;
        let limits = Limits {
            memory_bytes: (spec.memory_mb as usize).saturating_mul(1 << 20),
            timeout: Duration::from_millis(spec.timeout_ms),
        };
        let settings_json = serde_json::to_string(&spec.settings)
            .map_err(|e| load_err(&label, format!("settings: {e}")))?;
        let probe_name: Arc<str> = label.clone().into();
        let mut probe = Instance::new(
            &component,
            probe_name,
            &spec.grant,
            &limits,
            PluginState::new(0, vec![]),
        )
        .map_err(|e| match e {
            PluginError::Instantiate { message, .. } => load_err(
                &label,
                format!("is not a phiwatch:detector@0.1.0 component: {message}"),
            ),
            other => other,
        })?;
        let description = Self::probe(&mut probe, &limits, &label, &settings_json)?;
        let expose = match &spec.expose {
            Some(e) => e.clone(),
            None if spec.builtin.is_some() => description.needs.clone(),
            None => Vec::new(),
        };
        if let Some(missing) = description.needs.iter().find(|n| !expose.contains(n)) {
            return Err(load_err(
                &description.name,
                format!("needs {missing:?} exposed to work; add it to expose (names and addresses are PHI)"),
            ));
        }
        Ok(Compiled {
            name: description.name.clone().into(),
            source: label,
            description,
            sha256,
            spec: spec.clone(),
            settings_json,
            limits,
            names: expose.contains(&Exposed::Names),
            addresses: expose.contains(&Exposed::Addresses),
            component,
        })
    }

    /// The component's bytes and their SHA-256, checked against the pin a file needs.
    fn read_pinned(spec: &PluginSpec, label: &str) -> Result<(Vec<u8>, String), PluginError> {
        let bytes: Vec<u8> = match (&spec.builtin, &spec.path) {
            (Some(_), Some(_)) => {
                return Err(load_err(label, "give either builtin or path, not both"))
            }
            (Some(b), None) => SHIPPED
                .iter()
                .chain(std::iter::once(&("night-export", TUTORIAL)))
                .find(|(n, _)| n == b)
                .map(|(_, bytes)| bytes.to_vec())
                .ok_or_else(|| {
                    let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
                    load_err(
                        label,
                        format!("no such shipped plugin; shipped are {}", names.join(", ")),
                    )
                })?,
            (None, Some(p)) => {
                std::fs::read(p).map_err(|e| load_err(label, format!("cannot read: {e}")))?
            }
            (None, None) => return Err(load_err(label, "a [[plugin]] needs `builtin` or `path`")),
        };
        let sha256 = hex(&Sha256::digest(&bytes));
        match (&spec.sha256, &spec.path) {
            (Some(want), _) if !want.eq_ignore_ascii_case(&sha256) => {
                return Err(load_err(
                    label,
                    format!("sha256 mismatch: the config pins {want}, the file is {sha256}; refusing to load it"),
                ))
            }
            (None, Some(_)) => {
                return Err(load_err(
                    label,
                    format!("a plugin file must be pinned: add sha256 = \"{sha256}\" once you trust it"),
                ))
            }
            _ => {}
        }
        Ok((bytes, sha256))
    }

    /// Checks the exports, reads the description and tries the settings on a probe instance.
    fn probe(
        probe: &mut Instance,
        limits: &Limits,
        label: &str,
        settings_json: &str,
    ) -> Result<Description, PluginError> {
        let d = probe.describe(limits).map_err(|f| {
            load_err(
                label,
                format!("describe failed ({}): {}", f.kind.as_str(), f.message),
            )
        })?;
        let description = Description {
            name: d.name.clone(),
            version: d.version.clone(),
            categories: d.categories.clone(),
            config_schema: d.config_schema.clone(),
            needs: d
                .needs
                .iter()
                .map(|f| match f {
                    t::Fact::Names => Exposed::Names,
                    t::Fact::Addresses => Exposed::Addresses,
                })
                .collect(),
        };
        if !valid_name(&description.name) {
            return Err(load_err(
                label,
                format!(
                    "plugin name {:?} must be lower-case letters, digits and -",
                    description.name
                ),
            ));
        }
        if let Some(c) = description.categories.iter().find(|c| !valid_category(c)) {
            return Err(load_err(
                label,
                format!("category {c:?} must be lower-case letters, digits and _"),
            ));
        }
        match probe.configure(limits, settings_json) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(load_err(
                    &description.name,
                    format!("settings refused: {e}"),
                ))
            }
            Err(f) => {
                return Err(load_err(
                    &description.name,
                    format!("configure failed ({}): {}", f.kind.as_str(), f.message),
                ))
            }
        }
        Ok(description)
    }

    /// A failure hands the state back (boxed: the pair is large) for the next attempt.
    fn instantiate(&self, state: PluginState) -> Result<Instance, Box<(PluginError, PluginState)>> {
        let mut i = match Instance::new(
            &self.component,
            self.name.clone(),
            &self.spec.grant,
            &self.limits,
            PluginState::default(),
        ) {
            Ok(i) => i,
            Err(e) => return Err(Box::new((e, state))),
        };
        i.store.data_mut().state = state;
        match i.configure(&self.limits, &self.settings_json) {
            Ok(Ok(())) => Ok(i),
            Ok(Err(e)) => Err(Box::new((
                load_err(&self.name, format!("settings refused: {e}")),
                i.into_state(),
            ))),
            Err(f) => Err(Box::new((
                load_err(&self.name, format!("configure failed: {}", f.message)),
                i.into_state(),
            ))),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_category(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Per-plugin counters, shared with `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub calls: u64,
    pub accesses: u64,
    pub findings: u64,
    pub failures: BTreeMap<&'static str, u64>,
    pub busy: Duration,
    pub logs_dropped: u64,
    pub state_bytes: u64,
}

#[derive(Debug, Default)]
pub struct PluginMetrics {
    pub by_plugin: Mutex<BTreeMap<String, Counters>>,
}

impl PluginMetrics {
    pub fn snapshot(&self) -> BTreeMap<String, Counters> {
        self.by_plugin.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut m) = self.by_plugin.lock() {
            f(m.entry(name.to_owned()).or_default());
        }
    }
}

/// Host id of a plugin's name in the `plugin_state` table for the agent's own counters.
const HOST_STATE: &str = "";
const NEXT_ID_KEY: &str = "next_access_id";

struct Runner {
    compiled: Arc<Compiled>,
    instance: Option<Instance>,
    /// The state while no instance holds it.
    idle_state: Option<PluginState>,
}

/// The plugins of one detection thread.
pub struct PluginSet {
    runners: Vec<Runner>,
    ring: batch::Ring,
    next_id: u64,
    id_saved: u64,
    metrics: Arc<PluginMetrics>,
}

/// A failed call, as reported in the log and to `plugin test`.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub plugin: String,
    pub kind: FailureKind,
    pub message: String,
}

impl PluginSet {
    /// Instances come up lazily; the state of each plugin is read from `conn` (the store).
    pub fn new(
        compiled: &[Arc<Compiled>],
        conn: Option<&rusqlite::Connection>,
        metrics: Arc<PluginMetrics>,
    ) -> Result<PluginSet, rusqlite::Error> {
        let mut stored = std::collections::HashMap::new();
        if let Some(conn) = conn {
            for name in compiled.iter().map(|c| &*c.name).chain([HOST_STATE]) {
                stored.insert(name.to_owned(), state::load(conn, name)?);
            }
        }
        Ok(PluginSet::from_stored(compiled, stored, metrics))
    }

    /// The plugins with the state a store holds for them (plugin name → its keys and values;
    /// the host's own counters under the empty name), whichever store that is.
    pub fn from_stored(
        compiled: &[Arc<Compiled>],
        mut stored: std::collections::HashMap<String, Vec<(String, Vec<u8>)>>,
        metrics: Arc<PluginMetrics>,
    ) -> PluginSet {
        let runners = compiled
            .iter()
            .map(|c| {
                let quota = (c.spec.state_mb as usize).saturating_mul(1 << 20);
                let own = stored.remove(&*c.name).unwrap_or_default();
                Runner {
                    compiled: c.clone(),
                    instance: None,
                    idle_state: Some(PluginState::new(quota, own)),
                }
            })
            .collect();
        let next_id = stored
            .remove(HOST_STATE)
            .unwrap_or_default()
            .into_iter()
            .find(|(k, _)| k == NEXT_ID_KEY)
            .and_then(|(_, v)| v.try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(1);
        PluginSet {
            runners,
            ring: batch::Ring::new(batch::RING_CAPACITY),
            next_id,
            id_saved: next_id,
            metrics,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.runners
            .iter()
            .map(|r| r.compiled.name.to_string())
            .collect()
    }

    /// Runs every plugin over `pending` (accesses already in `accesses`), appending findings,
    /// state changes to store with the batch, and failures.
    pub fn run(
        &mut self,
        ctx: &ContextStore,
        pending: &[Pending],
        accesses: &[AccessEvent],
        findings: &mut Vec<Finding>,
        changes: &mut Vec<(String, Change)>,
        failures: &mut Vec<CallFailure>,
    ) {
        if self.runners.is_empty() {
            return;
        }
        let first_id = self.next_id;
        self.next_id += pending.len() as u64;
        for (i, p) in pending.iter().enumerate() {
            if let Some(ev) = accesses.get(p.ix) {
                self.ring.push(first_id + i as u64, ev, p);
            }
        }
        let (ring, metrics) = (&self.ring, &self.metrics);
        let judge = |r: &mut Runner| r.judge(ctx, ring, pending, accesses, first_id, metrics);
        // Plugins are independent (each its own store): with a batch worth the threads, they
        // run side by side, so the slowest plugin, not the sum of all, sets the pace.
        let outs: Vec<RunnerOut> = if self.runners.len() > 1 && pending.len() >= PARALLEL_FROM {
            std::thread::scope(|scope| {
                let (first, rest) = self.runners.split_at_mut(1);
                let handles: Vec<_> = rest
                    .iter_mut()
                    .map(|r| scope.spawn(move || judge(r)))
                    .collect();
                let mut outs = vec![judge(&mut first[0])];
                for h in handles {
                    match h.join() {
                        Ok(o) => outs.push(o),
                        // A host-side panic is a bug in the agent, not in a plugin: surface it.
                        Err(p) => std::panic::resume_unwind(p),
                    }
                }
                outs
            })
        } else {
            self.runners.iter_mut().map(judge).collect()
        };
        for o in outs {
            findings.extend(o.findings);
            changes.extend(o.changes);
            failures.extend(o.failures);
        }
        if self.next_id != self.id_saved {
            self.id_saved = self.next_id;
            changes.push((
                HOST_STATE.to_owned(),
                (
                    NEXT_ID_KEY.to_owned(),
                    Some(self.next_id.to_le_bytes().to_vec()),
                ),
            ));
        }
    }
}

/// Accesses in a batch from which plugins run on threads of their own.
const PARALLEL_FROM: usize = 256;

/// What one plugin made of a batch.
#[derive(Default)]
struct RunnerOut {
    findings: Vec<Finding>,
    changes: Vec<(String, Change)>,
    failures: Vec<CallFailure>,
}

impl Runner {
    /// Calls the plugin on every chunk of `pending` (ids from `first_id`).
    fn judge(
        &mut self,
        ctx: &ContextStore,
        ring: &batch::Ring,
        pending: &[Pending],
        accesses: &[AccessEvent],
        first_id: u64,
        metrics: &PluginMetrics,
    ) -> RunnerOut {
        let c = self.compiled.clone();
        let mut out = RunnerOut::default();
        let mut builder = batch::Builder::new(ctx);
        for (chunk_no, chunk) in pending.chunks(c.spec.batch).enumerate() {
            let base = first_id + (chunk_no * c.spec.batch) as u64;
            let b = builder.build(chunk, accesses, base, c.names, c.addresses);
            let event_time = chunk
                .iter()
                .filter_map(|p| accesses.get(p.ix))
                .map(|a| a.time_ms)
                .max()
                .unwrap_or(0);
            match self.call(b, event_time, metrics) {
                Ok(found) => {
                    let before = out.findings.len();
                    for f in found {
                        ring.findings(ctx, &c, f, &mut out.findings);
                    }
                    let n = (out.findings.len() - before) as u64;
                    metrics.update(&c.name, |m| m.findings += n);
                }
                Err(f) => {
                    tracing::warn!(plugin = %c.name, kind = f.kind.as_str(), "plugin call failed; its findings for this batch are dropped and a fresh instance takes the next one");
                    tracing::debug!(plugin = %c.name, "plugin failure: {}", f.message);
                    out.failures.push(CallFailure {
                        plugin: c.name.to_string(),
                        kind: f.kind,
                        message: f.message,
                    });
                }
            }
        }
        if let Some(s) = self.state_mut() {
            let bytes = s.bytes() as u64;
            out.changes.extend(
                s.take_changes()
                    .into_iter()
                    .map(|ch| (c.name.to_string(), ch)),
            );
            metrics.update(&c.name, |m| m.state_bytes = bytes);
        }
        out
    }

    fn state_mut(&mut self) -> Option<&mut PluginState> {
        match &mut self.instance {
            Some(i) => Some(&mut i.store.data_mut().state),
            None => self.idle_state.as_mut(),
        }
    }

    fn call(
        &mut self,
        batch: &t::Batch,
        event_time: i64,
        metrics: &PluginMetrics,
    ) -> Result<Vec<t::Finding>, sandbox::Failure> {
        let c = self.compiled.clone();
        let started = Instant::now();
        if self.instance.is_none() {
            let state = self.idle_state.take().unwrap_or_default();
            match c.instantiate(state) {
                Ok(i) => self.instance = Some(i),
                Err(failed) => {
                    let (e, state) = *failed;
                    self.idle_state = Some(state);
                    metrics.update(&c.name, |m| {
                        *m.failures.entry("instantiate").or_default() += 1
                    });
                    return Err(sandbox::Failure {
                        kind: FailureKind::Trap,
                        message: e.to_string(),
                    });
                }
            }
        }
        let Some(inst) = self.instance.as_mut() else {
            unreachable!("instantiated above")
        };
        inst.store.data_mut().event_time = event_time;
        let result = inst.detect(&c.limits, batch);
        let dropped = std::mem::take(&mut inst.store.data_mut().logs_dropped);
        let result = match result {
            Ok(f) if f.len() > c.spec.max_findings => Err(sandbox::Failure {
                kind: FailureKind::Output,
                message: format!(
                    "returned {} findings, more than max_findings = {}",
                    f.len(),
                    c.spec.max_findings
                ),
            }),
            other => other,
        };
        if let Err(f) = &result {
            if f.kind != FailureKind::Output {
                // A trapped instance may be mid-way through anything: never call it again.
                if let Some(i) = self.instance.take() {
                    self.idle_state = Some(i.into_state());
                }
            }
        }
        let elapsed = started.elapsed();
        metrics.update(&c.name, |m| {
            m.calls += 1;
            m.accesses += batch.accesses.len() as u64;
            m.busy += elapsed;
            m.logs_dropped += dropped;
            if let Err(f) = &result {
                *m.failures.entry(f.kind.as_str()).or_default() += 1;
            }
        });
        result
    }
}
