//! `phiwatch bench`: stage-by-stage throughput on a generated day.

pub fn run(_events: usize, _dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    anyhow::bail!("bench: not yet")
}
