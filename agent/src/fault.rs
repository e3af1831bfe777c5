//! Fault injection for end-to-end tests, compiled into debug builds only.
//!
//! `PHIWATCH_FAULT_ABORT_ON=TEXT` makes a source's worker abort the whole process (as a
//! stack overflow does, uncatchably) when it is about to decode a line containing TEXT. The
//! e2e tests use it to prove that a poison line costs restarts, not the agent.
//!
//! `PHIWATCH_FAULT_PAUSE_DETECTION=FILE` holds the detection thread before each batch while
//! FILE exists: detection falls behind on demand, so spool caps and back-pressure can be
//! tested against a real flood. Release builds ignore both: the checks compile to nothing.

/// Aborts the process if `line` contains the configured poison text (debug builds only).
#[inline]
pub fn abort_on(line: &[u8]) {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static NEEDLE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
        let needle = NEEDLE.get_or_init(|| {
            std::env::var_os("PHIWATCH_FAULT_ABORT_ON")
                .map(|v| v.into_encoded_bytes())
                .filter(|v| !v.is_empty())
        });
        if let Some(n) = needle {
            if line.windows(n.len()).any(|w| w == n.as_slice()) {
                eprintln!("fault injection: aborting on a poison line");
                std::process::abort();
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = line;
}

/// Waits while the pause file exists (debug builds only).
#[inline]
pub fn pause_detection() {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
        if let Some(f) = FILE.get_or_init(|| {
            std::env::var_os("PHIWATCH_FAULT_PAUSE_DETECTION").map(std::path::PathBuf::from)
        }) {
            while f.exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
