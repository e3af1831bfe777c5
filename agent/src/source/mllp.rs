//! An MLLP context feed: HL7 v2 ADT received over MLLP, spooled, and read back like a source
//! so its messages reach the context in the order they were acknowledged.

use super::{Env, Intake, Reader};
use crate::context::feeds::MllpFeed;
use crate::decode::LineDecoder;
use anyhow::Result;

pub fn build(f: &MllpFeed, ix: usize, env: &Env<'_>, intake: &mut Intake) -> Result<()> {
    let metrics = env.metrics.sources[ix].intake.clone();
    let (reader, spool) = Reader::spooled(
        ix,
        &f.name,
        LineDecoder::Hl7(f.name.clone()),
        &env.spool_dir,
        crate::spool::DEFAULT_CAP_BYTES,
        metrics.clone(),
    )?;
    intake.readers.push(reader);
    let spool = spool.shared();
    intake.spools.push(spool.clone());
    let l = env.rt.block_on(crate::mllp::bind(f))?;
    tracing::info!(feed = %f.name, listen = %l.local_addr()?, "receiving HL7 v2 over MLLP");
    intake.tasks.push(Box::pin(crate::mllp::serve(
        l,
        f.clone(),
        env.inflight.clone(),
        spool,
        metrics,
    )));
    Ok(())
}
