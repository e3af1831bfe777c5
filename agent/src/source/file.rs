//! `kind = "file"`: tails files matching globs; nothing to receive.

use super::{BadLog, Env, Intake, Reader};
use crate::config::FileSource;
use anyhow::Result;
use std::time::Duration;

pub fn build(f: FileSource, ix: usize, env: &Env<'_>, intake: &mut Intake) -> Result<()> {
    let decoder = f.decoder(env.metrics.sources[ix].unknown_actions.clone())?;
    intake.readers.push(Reader {
        ix,
        decoder,
        name: f.name,
        patterns: f.paths,
        poll: Duration::from_millis(f.poll_ms.max(10)),
        spool_active: None,
        max_line_bytes: f.max_line_bytes,
        bad_log: BadLog::default(),
    });
    Ok(())
}
