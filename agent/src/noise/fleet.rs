//! The noise report's rows from the fleet's database: the same statements as the single
//! process's store, findings and alerts streamed rather than held (a month of a large
//! system's findings is many rows), accesses counted by month (large months by the planner's
//! estimate, [`crate::fleet::retention::count_between`]).

use super::{AlertRow, FindingRow, NoiseError, Rows, ALERTS_IN_WINDOW, FINDINGS_IN_WINDOW};
use crate::fleet::FleetError;
use tokio::runtime::Handle;
use tokio_postgres::{Client, Row};

/// The fleet's database, read from a blocking thread through `rt`.
pub struct Fleet<'a> {
    pub rt: &'a Handle,
    pub client: &'a Client,
}

impl Fleet<'_> {
    /// Runs `sql` over the window and hands each row to `each`, as the rows arrive.
    fn stream(
        &self,
        what: &'static str,
        sql: &str,
        (from, to): (&str, &str),
        each: &mut dyn FnMut(Row),
    ) -> Result<(), NoiseError> {
        let read = crate::fleet::pg::each_row(self.client, what, sql, [from, to], each);
        Ok(self.rt.block_on(read)?)
    }
}

impl Rows for Fleet<'_> {
    fn newest_finding(&self) -> Result<Option<String>, NoiseError> {
        let row = self
            .rt
            .block_on(self.client.query_one("SELECT max(time) FROM findings", &[]))
            .map_err(FleetError::sql("reading the newest finding"))?;
        Ok(row.get(0))
    }

    fn findings(
        &self,
        window: (&str, &str),
        each: &mut dyn FnMut(FindingRow),
    ) -> Result<(), NoiseError> {
        self.stream(
            "reading findings for the noise report",
            FINDINGS_IN_WINDOW,
            window,
            &mut |r| {
                each(FindingRow {
                    detector: r.get(0),
                    time: r.get(1),
                    user: r.get(2),
                    severity: r.get(3),
                })
            },
        )
    }

    fn alerts(
        &self,
        window: (&str, &str),
        each: &mut dyn FnMut(AlertRow),
    ) -> Result<(), NoiseError> {
        self.stream(
            "reading alerts for the noise report",
            ALERTS_IN_WINDOW,
            window,
            &mut |r| {
                each(AlertRow {
                    detector: r.get(0),
                    id: r.get(1),
                    first: r.get(2),
                    status: r.get(3),
                    disposition: r.get(4),
                    user: r.get(5),
                    category: r.get(6),
                })
            },
        )
    }

    fn accesses(&self, from_ms: i64, to_ms: i64) -> Result<u64, NoiseError> {
        let window = Some((from_ms, to_ms));
        let (n, _) = self
            .rt
            .block_on(crate::fleet::retention::count_between(self.client, window))?;
        Ok(n)
    }
}
