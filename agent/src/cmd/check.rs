//! `phiwatch check`: a configuration checked without running it.

use anyhow::Result;
use std::path::Path;

/// Prints every finding of the check; exits 1 when there is any problem.
pub fn run(config: &Path) -> Result<()> {
    let c = phiwatch::check::check(config);
    for s in &c.summary {
        println!("ok: {s}");
    }
    for w in &c.warnings {
        println!("warning: {w}");
    }
    for p in &c.problems {
        println!("error: {p}");
    }
    if !c.problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
