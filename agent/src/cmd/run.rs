//! `phiwatch run`: the daemon, in the role its config (or --role) names.

use anyhow::Result;
use clap::Args;
use phiwatch::fleet::Role;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Fleet mode: this node's role, overriding [fleet] role. collect, detect and dispatch
    /// need [database] (dispatch also a routing file); all (the default) is the single
    /// process on the SQLite store.
    #[arg(long, value_enum)]
    role: Option<Role>,
    /// Fleet mode: this node's name (lease holder, collector of its sources), overriding
    /// [fleet] node; default: the host name.
    #[arg(long)]
    node: Option<String>,
}

pub fn run(a: RunArgs) -> Result<()> {
    phiwatch::run::run(&a.config, a.role, a.node)
}
