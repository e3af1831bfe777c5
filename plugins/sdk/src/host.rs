//! Logging and event time. On the build machine (unit tests) logs go to stderr and event time
//! is the newest access seen.

use std::cell::Cell;

thread_local! {
    static NEWEST: Cell<i64> = const { Cell::new(i64::MIN) };
}

#[doc(hidden)]
pub fn observe_time(t: i64) {
    NEWEST.with(|n| n.set(n.get().max(t)));
}

#[cfg(target_arch = "wasm32")]
use crate::bindings::phiwatch::detector::host as imp;

pub use crate::bindings::phiwatch::detector::host::Level;

/// Writes to the agent's log (debug level there, with the plugin's name).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    imp::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// The time of the newest access the host has handed over, ms since the Unix epoch.
pub fn event_time() -> i64 {
    #[cfg(target_arch = "wasm32")]
    {
        imp::event_time()
    }
    #[cfg(not(target_arch = "wasm32"))]
    NEWEST.with(Cell::get)
}
