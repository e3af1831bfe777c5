//! `kind = "folder"`: PHI folders watched for created, changed, renamed, deleted, exposed
//! and bulk-read files; the watcher spools file events for the source's reader.

use super::{Env, Intake, Reader};
use crate::config::FolderSource;
use crate::decode::LineDecoder;
use crate::watch::FolderWatch;
use anyhow::Result;

pub fn build(f: FolderSource, ix: usize, env: &Env<'_>, intake: &mut Intake) -> Result<()> {
    let metrics = env.metrics.sources[ix].intake.clone();
    let (reader, spool) = Reader::spooled(
        ix,
        &f.name,
        LineDecoder::FileEvents,
        &env.spool_dir,
        crate::spool::DEFAULT_CAP_BYTES,
        metrics.clone(),
    )?;
    intake
        .folders
        .extend(f.paths.iter().map(|p| p.display().to_string()));
    let snapshot = env.spool_dir.join(format!("{}.snapshot.json", f.name));
    intake.readers.push(reader);
    intake
        .watchers
        .push(FolderWatch::new(f, spool.shared(), snapshot, metrics)?);
    Ok(())
}
