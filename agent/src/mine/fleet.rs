//! Mining's rows from the fleet's database: the unexplained findings streamed with the single
//! process's statement; accesses counted by month ([`crate::fleet::retention::count_between`]);
//! the hours holding an access found by one index probe per hour of the window, not by
//! reading every access in it.

use super::{MineError, MineRows, Unexplained, UNEXPLAINED_IN_WINDOW};
use crate::detect::cedar::UNEXPLAINED_ID;
use crate::fleet::FleetError;
use tokio::runtime::Handle;
use tokio_postgres::Client;

/// The fleet's database, read from a blocking thread through `rt`.
pub struct Fleet<'a> {
    pub rt: &'a Handle,
    pub client: &'a Client,
}

impl MineRows for Fleet<'_> {
    fn newest_access(&self) -> Result<Option<i64>, MineError> {
        Ok(self
            .rt
            .block_on(crate::fleet::store::newest_access(self.client))?)
    }

    fn accesses(&self, from_ms: i64, to_ms: i64) -> Result<u64, MineError> {
        let window = Some((from_ms, to_ms));
        let (n, _) = self
            .rt
            .block_on(crate::fleet::retention::count_between(self.client, window))?;
        Ok(n)
    }

    fn hours(&self, from_ms: i64, to_ms: i64) -> Result<Vec<i64>, MineError> {
        let rows = self
            .rt
            .block_on(self.client.query(
                "SELECT h FROM generate_series($1::bigint / 3600000, $2::bigint / 3600000) h
                 WHERE EXISTS (SELECT 1 FROM accesses
                               WHERE time_ms >= greatest(h * 3600000, $1)
                                 AND time_ms < least((h + 1) * 3600000, $2 + 1))",
                &[&from_ms, &to_ms],
            ))
            .map_err(FleetError::sql("reading the hours with accesses"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn unexplained(
        &self,
        (from, to): (&str, &str),
        each: &mut dyn FnMut(Unexplained),
    ) -> Result<(), MineError> {
        let mut row = |r: tokio_postgres::Row| {
            each(Unexplained {
                user: r.get(0),
                patient: r.get(1),
                time: r.get(2),
                flagged: r.get(3),
            })
        };
        let read = crate::fleet::pg::each_row(
            self.client,
            "reading the unexplained findings",
            UNEXPLAINED_IN_WINDOW,
            [UNEXPLAINED_ID, from, to],
            &mut row,
        );
        Ok(self.rt.block_on(read)?)
    }
}
