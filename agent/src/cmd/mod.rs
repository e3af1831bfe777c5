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
