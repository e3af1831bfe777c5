//! Synthetic hospital for `phiwatch demo` and `phiwatch bench`.

use crate::context::ContextStats;
use std::path::PathBuf;

pub struct DemoOptions {
    pub out: Option<PathBuf>,
    pub events: usize,
    pub seed: u64,
    pub generate_only: bool,
}

pub fn run(_o: &DemoOptions) -> anyhow::Result<()> {
    anyhow::bail!("demo: not yet")
}

pub fn render_context_stats(s: &ContextStats) -> String {
    let mut out = format!("context: {} file(s)", s.files);
    for (k, v) in &s.resources {
        out.push_str(&format!(", {v} {k}"));
    }
    out.push('\n');
    for (k, v) in &s.unknown_types {
        out.push_str(&format!(
            "  skipped {v} resource(s) of unsupported type {k}\n"
        ));
    }
    if s.bad_lines > 0 {
        out.push_str(&format!("  {} bad context line(s):\n", s.bad_lines));
        for p in &s.problems {
            out.push_str(&format!("    {p}\n"));
        }
    }
    if s.unresolved_users + s.unresolved_patients > 0 {
        out.push_str(&format!(
            "  unresolved references: {} to practitioners, {} to patients not in the context\n",
            s.unresolved_users, s.unresolved_patients
        ));
    }
    out
}
