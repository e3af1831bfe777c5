//! `kind = "syslog"`: IHE ATNA, CEF and LEEF over RFC 5424 syslog (UDP, TCP or TLS),
//! spooled to disk on receipt and read back by the source's reader.

use super::{Env, Intake, Reader};
use crate::config::SyslogSource;
use crate::decode::LineDecoder;
use crate::syslog;
use anyhow::Result;

pub fn build(s: SyslogSource, ix: usize, env: &Env<'_>, intake: &mut Intake) -> Result<()> {
    let metrics = env.metrics.sources[ix].intake.clone();
    let decoder = LineDecoder::Syslog(Box::new(crate::decode::siem::SiemDecoder::new(s.zone())));
    let (reader, spool) = Reader::spooled(
        ix,
        &s.name,
        decoder,
        &env.spool_dir,
        s.spool_max_bytes,
        metrics.clone(),
    )?;
    let listener = env.rt.block_on(syslog::bind(&s))?;
    tracing::info!(source = %s.name, listen = %listener.local_addr()?, transport = ?s.transport, "receiving syslog (ATNA, CEF, LEEF)");
    intake.readers.push(reader);
    let spool = spool.shared();
    intake.spools.push(spool.clone());
    let limits = syslog::StreamLimits::of(&s, env.inflight.clone());
    intake.tasks.push(Box::pin(syslog::serve(
        listener, s.name, limits, spool, metrics,
    )));
    Ok(())
}
