//! The wasmtime sandbox one plugin runs in: a component instance with a memory cap, an
//! epoch deadline per call, and no WASI capability the operator did not grant.

use super::state::PluginState;
use super::{Grant, PluginError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub mod wit {
    wasmtime::component::bindgen!({
        path: "../plugins/wit",
        world: "detector",
    });
}

pub use wit::phiwatch::detector::host::Level;
pub use wit::phiwatch::detector::types as t;

/// How often the engine's epoch advances: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Log lines a plugin may write per call; the rest are counted and dropped.
const LOG_LINES_PER_CALL: u32 = 50;
const LOG_LINE_BYTES: usize = 500;

/// The engine all plugins share, with its epoch ticker thread.
pub fn engine() -> Result<&'static Engine, PluginError> {
    static ENGINE: OnceLock<Result<Engine, PluginError>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut c = wasmtime::Config::new();
            c.wasm_component_model(true)
                .epoch_interruption(true)
                // Deep recursion traps well inside the host thread's own stack.
                .max_wasm_stack(1 << 20)
                .parallel_compilation(true);
            let engine = Engine::new(&c).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                })
                .map_err(|e| {
                    PluginError::Engine(format!("starting the plugin deadline thread: {e}"))
                })?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn linker(engine: &Engine) -> Result<&'static Linker<Guest>, PluginError> {
    static LINKER: OnceLock<Result<Linker<Guest>, PluginError>> = OnceLock::new();
    LINKER
        .get_or_init(|| {
            let mut l = Linker::<Guest>::new(engine);
            // WASI is linked so components built with Rust's std load; what it can reach is
            // decided per instance by the WasiCtx below, which grants nothing by default.
            let engine_err = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
            wasmtime_wasi::p2::add_to_linker_sync(&mut l).map_err(engine_err)?;
            wit::Detector::add_to_linker::<Guest, HasSelf<Guest>>(&mut l, |g| g)
                .map_err(engine_err)?;
            Ok(l)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// What a plugin's store holds.
pub struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub state: PluginState,
    pub event_time: i64,
    name: Arc<str>,
    log_budget: u32,
    pub logs_dropped: u64,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::phiwatch::detector::host::Host for Guest {
    fn log(&mut self, level: Level, mut message: String) {
        if self.log_budget == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= 1;
        if message.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        // Debug level whatever the plugin asked: its messages may name patients.
        tracing::debug!(plugin = %self.name, level = ?level, "{message}");
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).map(<[u8]>::to_vec)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        // The interface answers the plugin with the reason in words.
        self.state.set(key, value).map_err(|e| e.to_string())
    }

    fn state_delete(&mut self, key: String) {
        self.state.delete(&key);
    }

    fn event_time(&mut self) -> i64 {
        self.event_time
    }
}

impl wit::phiwatch::detector::types::Host for Guest {}

/// A clock that always reads zero: what a plugin sees unless granted the real one.
struct Stopped;

impl wasmtime_wasi::HostWallClock for Stopped {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for Stopped {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

fn wasi_ctx(grant: &Grant) -> Result<WasiCtx, PluginError> {
    let mut b = WasiCtx::builder();
    if !grant.clock {
        b.wall_clock(Stopped).monotonic_clock(Stopped);
    }
    for name in &grant.env {
        if let Ok(v) = std::env::var(name) {
            b.env(name, v);
        }
    }
    for d in &grant.dirs {
        b.preopened_dir(&d.host, &d.guest, wasmtime_wasi::FsPerms::ReadOnly)
            .map_err(|e| PluginError::Grant(format!("directory {}: {e:#}", d.host.display())))?;
    }
    if !grant.connect.is_empty() {
        let allowed = grant.connect.clone();
        b.allow_tcp(true).socket_addr_check(move |addr, use_| {
            use wasmtime_wasi::sockets::SocketAddrUse;
            // Connecting first binds an ephemeral local port: allowed, nothing else is.
            let ok = match use_ {
                SocketAddrUse::TcpConnect => allowed.contains(&addr),
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            Box::pin(async move { ok })
        });
    }
    Ok(b.build())
}

/// Limits of one plugin's sandbox.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    pub timeout: Duration,
}

/// One live instance of a plugin.
pub struct Instance {
    pub store: Store<Guest>,
    bindings: wit::Detector,
}

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    Deadline,
    Memory,
    StackOverflow,
    Trap,
    Output,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::StackOverflow => "stack_overflow",
            FailureKind::Trap => "trap",
            FailureKind::Output => "output",
        }
    }

    fn of(e: &wasmtime::Error) -> FailureKind {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => FailureKind::Deadline,
            Some(wasmtime::Trap::StackOverflow) => FailureKind::StackOverflow,
            _ if format!("{e:#}").contains("memory") => FailureKind::Memory,
            _ => FailureKind::Trap,
        }
    }
}

#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Instance {
    pub fn new(
        component: &Component,
        name: Arc<str>,
        grant: &Grant,
        limits: &Limits,
        state: PluginState,
    ) -> Result<Instance, PluginError> {
        let engine = engine()?;
        let guest = Guest {
            wasi: wasi_ctx(grant)?,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(16)
                .memories(4)
                .tables(16)
                .table_elements(200_000)
                .trap_on_grow_failure(true)
                .build(),
            state,
            event_time: 0,
            name: name.clone(),
            log_budget: LOG_LINES_PER_CALL,
            logs_dropped: 0,
        };
        let mut store = Store::new(engine, guest);
        store.limiter(|g| &mut g.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(limits.timeout));
        let bindings =
            wit::Detector::instantiate(&mut store, component, linker(engine)?).map_err(|e| {
                PluginError::Instantiate {
                    plugin: name.to_string(),
                    message: format!("{e:#}"),
                }
            })?;
        Ok(Instance { store, bindings })
    }

    fn arm(&mut self, limits: &Limits) {
        self.store.set_epoch_deadline(ticks(limits.timeout));
        self.store.data_mut().log_budget = LOG_LINES_PER_CALL;
    }

    pub fn describe(&mut self, limits: &Limits) -> Result<t::Description, Failure> {
        self.arm(limits);
        self.bindings
            .call_describe(&mut self.store)
            .map_err(failure)
    }

    pub fn configure(
        &mut self,
        limits: &Limits,
        settings: &str,
    ) -> Result<Result<(), String>, Failure> {
        self.arm(limits);
        self.bindings
            .call_configure(&mut self.store, settings)
            .map_err(failure)
    }

    pub fn detect(
        &mut self,
        limits: &Limits,
        batch: &t::Batch,
    ) -> Result<Vec<t::Finding>, Failure> {
        self.arm(limits);
        self.bindings
            .call_detect(&mut self.store, batch)
            .map_err(failure)
    }

    /// The plugin's state, for the next instance after this one failed.
    pub fn into_state(self) -> PluginState {
        self.store.into_data().state
    }
}

fn failure(e: wasmtime::Error) -> Failure {
    Failure {
        kind: FailureKind::of(&e),
        message: format!("{e:#}"),
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}
