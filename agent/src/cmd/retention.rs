//! `phiwatch retention`: archives and drops the months of accesses past the retention in
//! fleet mode's PostgreSQL.

use anyhow::{bail, Result};
use clap::Args;
use phiwatch::config::Config;
use std::path::PathBuf;

#[derive(Args)]
pub struct RetentionArgs {
    /// The agent's config, with [database] (`retention_months`, `archive_dir`).
    #[arg(long)]
    config: PathBuf,
    /// List the months stored and which are past the retention; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Drop months past the retention without archiving them (only when [database] names no
    /// archive_dir; the access log is evidence: think twice).
    #[arg(long)]
    no_archive: bool,
}

pub fn run(a: RetentionArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    let Some(db) = cfg.database else {
        bail!(
            "{}: no [database]; the SQLite store keeps every access (retention applies to fleet mode's monthly partitions)",
            a.config.display()
        );
    };
    if db.archive_dir.is_none() && !a.no_archive && !a.dry_run {
        bail!("[database] names no archive_dir: set one, or pass --no-archive to drop months without a copy");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use phiwatch::fleet::{pg, retention, schema};
        let mut client = pg::connect(&db, "phiwatch-retention").await?;
        schema::require_current(&client).await?;
        let now = phiwatch::time::now_ms();
        if a.dry_run {
            let expired = retention::past(&client, db.retention_months, now).await?;
            let months = retention::months(&client).await?;
            println!(
                "{} month(s) stored; keeping {} month(s)",
                months.len(),
                db.retention_months
            );
            for m in months {
                let past = expired.contains(&m);
                println!(
                    "{}{}",
                    m.table(),
                    if past { "  past retention" } else { "" }
                );
            }
            return anyhow::Ok(());
        }
        let done = retention::apply(
            &mut client,
            db.retention_months,
            now,
            db.archive_dir.as_deref(),
        )
        .await?;
        if done.is_empty() {
            println!(
                "no month is past the retention of {} month(s)",
                db.retention_months
            );
        }
        for e in done {
            match e.archive {
                Some(p) => println!(
                    "{}: {} accesses archived to {}, dropped",
                    e.month.table(),
                    e.rows,
                    p.display()
                ),
                None => println!(
                    "{}: {} accesses dropped (no archive)",
                    e.month.table(),
                    e.rows
                ),
            }
        }
        Ok(())
    })
}
