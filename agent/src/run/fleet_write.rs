//! The detector's writer: stores one judged batch at a time in its fenced transaction, on a
//! connection of its own, while the detector judges the next batch. Judging is the
//! detector's CPU work and the transaction is mostly the database's; overlapping the two lets
//! a detector use a second core. Batches still commit in order, one at a time: the detector
//! waits for batch N's commit before handing over batch N+1, and a batch that fails stops
//! the detector before the next is written (it then drops its memory, as after any failure).

use crate::alert::{fleet as alerts, Applied, Routing};
use crate::fleet::{pg, queue, retention, state, store, FleetError, Lease};
use crate::pipeline::Judged;
use crate::time::now_ms;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio_postgres::Client;

/// One batch for the writer.
pub(super) struct Job {
    pub batch: queue::Batch,
    pub judged: Judged,
    pub rules: Arc<Routing>,
    pub tz: chrono_tz::Tz,
    pub sent_ms: i64,
}

/// A batch written (or not): its buffers back, and what the commit found new.
pub(super) struct Done {
    pub judged: Judged,
    pub sent_ms: i64,
    /// Indices of the journal entries new to the database, and what grouping did.
    pub result: Result<(Vec<usize>, Applied), FleetError>,
}

/// The write connection and what it knows about partitions.
struct Conn {
    client: Client,
    /// Months whose accesses partition exists.
    months: BTreeSet<retention::Month>,
}

pub(super) struct Writer {
    conn: Arc<tokio::sync::Mutex<Conn>>,
    lease: Lease,
    in_flight: Option<tokio::task::JoinHandle<Done>>,
}

impl Writer {
    pub async fn connect(
        db: &pg::DatabaseConfig,
        node: &str,
        lease: &Lease,
    ) -> Result<Self, FleetError> {
        let client = pg::connect(db, &format!("phiwatch-detect-write-{node}")).await?;
        Ok(Writer {
            conn: Arc::new(tokio::sync::Mutex::new(Conn {
                client,
                months: BTreeSet::new(),
            })),
            lease: lease.clone(),
            in_flight: None,
        })
    }

    /// Starts writing `job` on the runtime's worker; the previous job must be finished.
    pub fn start(&mut self, rt: &tokio::runtime::Runtime, job: Job) {
        debug_assert!(self.in_flight.is_none());
        let conn = self.conn.clone();
        let lease = self.lease.clone();
        self.in_flight = Some(rt.spawn(async move {
            let mut c = conn.lock().await;
            let result = write(&mut c, &lease, &job).await;
            Done {
                judged: job.judged,
                sent_ms: job.sent_ms,
                result,
            }
        }));
    }

    /// Waits for the job in flight, if any.
    pub fn finish(&mut self, rt: &tokio::runtime::Runtime) -> Option<Done> {
        let task = self.in_flight.take()?;
        match rt.block_on(task) {
            Ok(done) => Some(done),
            // A panic inside the write: nothing of it committed that the detector can trust,
            // and the batch is applied again after the detector reads committed state.
            Err(e) => Some(Done {
                judged: Judged::default(),
                sent_ms: 0,
                result: Err(FleetError::Sql {
                    what: "writing a batch",
                    detail: e.to_string(),
                }),
            }),
        }
    }
}

/// The batch's fenced transaction: accesses, findings, plugin state, new context facts, the
/// alerts the new findings group into and their notifications, and the batch's being applied.
async fn write(
    c: &mut Conn,
    lease: &Lease,
    job: &Job,
) -> Result<(Vec<usize>, Applied), FleetError> {
    let judged = &job.judged;
    let new: Vec<_> = judged
        .accesses
        .iter()
        .filter_map(|a| retention::Month::of(a.time_ms))
        .filter(|m| !c.months.contains(m))
        .collect();
    if !new.is_empty() {
        retention::ensure_months(&c.client, judged.accesses.iter().map(|a| a.time_ms)).await?;
        c.months.extend(new);
    }
    let tx = queue::begin(&mut c.client, lease).await?;
    let (_, new) = store::insert_batch_fresh(&tx, &judged.accesses, &judged.findings).await?;
    state::write_plugins(&tx, &judged.plugin_state).await?;
    let stored_at = now_ms();
    let fresh = state::journal_new(&tx, &judged.journal, stored_at).await?;
    let a = alerts::apply(&tx, &new, &job.rules, job.tz, stored_at).await?;
    queue::complete(tx, lease, &job.batch).await?;
    Ok((fresh, a))
}
