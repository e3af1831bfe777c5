//! Commands of the `phiwatch` binary that have their own module: argument parsing and
//! printing at the edge, the work in the library.

pub mod explain;
pub mod report;

use anyhow::{Context as _, Result};

/// `2026-03-10`, or an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<i64> {
    phiwatch::time::parse_date_or_time(s)
        .with_context(|| format!("{s:?}: expected a date (2026-03-10) or an RFC 3339 time"))
}

/// Where a `--since` window starts.
pub enum Start {
    /// This many milliseconds before the window's end.
    Back(i64),
    At(i64),
}

/// `30d`, `12h` (back from the end), or a time.
pub fn window_start(s: &str) -> Result<Start> {
    Ok(match phiwatch::alert::routing::parse_duration(s) {
        Ok(d) => Start::Back(d.as_millis() as i64),
        Err(_) => Start::At(parse_time(s)?),
    })
}
