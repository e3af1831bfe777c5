//! The console, and its own access log: every view of PHI in the console is spooled as a
//! FHIR AuditEvent and read back like a source, so officers' own looks are judged too.

use super::{Env, Intake, Reader};
use crate::config::ConsoleConfig;
use crate::decode::LineDecoder;
use anyhow::Result;

/// Builds the view log's reader and binds the console; `inputs.views` is filled here.
pub fn build(
    c: &ConsoleConfig,
    mut inputs: crate::console::ConsoleInputs,
    ix: usize,
    env: &Env<'_>,
    intake: &mut Intake,
) -> Result<()> {
    let (reader, spool) = Reader::spooled(
        ix,
        crate::console::audit::SOURCE,
        LineDecoder::Fhir(chrono_tz::UTC),
        &env.spool_dir,
        crate::spool::DEFAULT_CAP_BYTES,
        env.metrics.sources[ix].intake.clone(),
    )?;
    intake.readers.push(reader);
    let spool = spool.shared();
    intake.spools.push(spool.clone());
    inputs.views = Some(spool);
    let (addr, serve) = env.rt.block_on(crate::console::bind(c, inputs))?;
    tracing::info!(listen = %addr, "console ready");
    intake.tasks.push(Box::pin(serve));
    Ok(())
}
