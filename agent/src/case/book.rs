//! Where cases are kept: the single process's SQLite store, or the fleet's PostgreSQL. Both
//! apply the same rules ([`super::change`]), so `phiwatch case` and the console behave the
//! same on either. Blocking: call it off the async runtime (the console's store calls run
//! on the blocking pool, the command line has no other work).

use super::change::{self, Current, Set};
use super::clock::{Jurisdictions, LawEnforcementDelay};
use super::fleet;
use super::log::Broken;
use super::query::{CaseDetail, CaseRow};
use super::timeline::TimelineRow;
use super::{Assessment, CaseError, Cases};
use chrono::NaiveDate;
use std::collections::BTreeMap;
use tokio::runtime::Handle;

pub enum CaseBook {
    Sqlite(Cases),
    Fleet {
        rt: Handle,
        client: tokio_postgres::Client,
        /// Deadline rules and reminder settings: changes that move a clock requeue reminders.
        plan: Option<std::sync::Arc<super::schedule::Plan>>,
    },
}

type Result<T> = std::result::Result<T, CaseError>;
/// Reads answer as the read model's queries do.
type Read<T> = std::result::Result<T, crate::store::QueryError>;

impl CaseBook {
    /// Applies `decide`'s columns: on SQLite after reading the state, on PostgreSQL with the
    /// case's row locked while it decides.
    fn change(
        &mut self,
        id: i64,
        actor: &str,
        action: &'static str,
        decide: impl FnOnce(&Current) -> Result<Set>,
    ) -> Result<()> {
        match self {
            CaseBook::Sqlite(c) => c.apply(id, actor, action, decide)?,
            CaseBook::Fleet { rt, client, plan } => rt.block_on(fleet::change(
                client,
                plan.as_deref(),
                id,
                actor,
                action,
                decide,
            ))?,
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        actor: &str,
        title: &str,
        alerts: &[i64],
        discovered: Option<NaiveDate>,
    ) -> Result<i64> {
        Ok(match self {
            CaseBook::Sqlite(c) => c.create(actor, title, alerts, discovered)?,
            CaseBook::Fleet { rt, client, plan } => rt.block_on(fleet::create(
                client,
                plan.as_deref(),
                actor,
                title,
                alerts,
                discovered,
            ))?,
        })
    }

    pub fn assign(&mut self, id: i64, actor: &str, to: &str) -> Result<()> {
        self.change(id, actor, "assign", |c| change::assign_set(&c.state, to))
    }

    pub fn set_facts(
        &mut self,
        id: i64,
        actor: &str,
        discovered: Option<NaiveDate>,
        residents: Option<BTreeMap<String, u32>>,
        delays: Option<Vec<LawEnforcementDelay>>,
        licensed_in: Option<Vec<String>>,
    ) -> Result<()> {
        self.change(id, actor, "facts", |_| {
            change::facts_set(discovered, residents, delays, licensed_in)
        })
    }

    pub fn assess(&mut self, id: i64, actor: &str, a: &Assessment) -> Result<()> {
        self.change(id, actor, "assess", |_| change::assess_set(a))
    }

    /// Returns the case's reminders pending afterwards.
    pub fn determine(
        &mut self,
        id: i64,
        actor: &str,
        outcome: &str,
        on: Option<NaiveDate>,
    ) -> Result<usize> {
        self.change(id, actor, "determine", |c| {
            change::determine_set(outcome, c.assessment.as_ref(), on)
        })?;
        self.pending_reminders(id)
    }

    pub fn notifying(&mut self, id: i64, actor: &str) -> Result<()> {
        self.change(id, actor, "notify", |c| change::notifying_set(id, &c.state))
    }

    pub fn close(&mut self, id: i64, actor: &str, resolution: &str) -> Result<()> {
        self.change(id, actor, "close", |_| change::close_set(resolution))
    }

    pub fn note(&mut self, id: i64, actor: &str, text: &str) -> Result<()> {
        match self {
            CaseBook::Sqlite(c) => c.note(id, actor, text)?,
            CaseBook::Fleet { rt, client, .. } => {
                rt.block_on(fleet::note(client, id, actor, text))?
            }
        }
        Ok(())
    }

    pub fn add_task(&mut self, id: i64, actor: &str, text: &str) -> Result<i64> {
        Ok(match self {
            CaseBook::Sqlite(c) => c.add_task(id, actor, text)?,
            CaseBook::Fleet { rt, client, .. } => {
                rt.block_on(fleet::add_task(client, id, actor, text))?
            }
        })
    }

    pub fn finish_task(&mut self, id: i64, actor: &str, n: i64) -> Result<()> {
        match self {
            CaseBook::Sqlite(c) => c.finish_task(id, actor, n)?,
            CaseBook::Fleet { rt, client, .. } => {
                rt.block_on(fleet::finish_task(client, id, actor, n))?
            }
        }
        Ok(())
    }

    pub fn verify(&self) -> Result<std::result::Result<(usize, String), Broken>> {
        Ok(match self {
            CaseBook::Sqlite(c) => c.verify()?,
            CaseBook::Fleet { rt, client, .. } => rt.block_on(fleet::verify(client))?,
        })
    }

    pub fn list(&self, j: &Jurisdictions, today: NaiveDate) -> Read<Vec<CaseRow>> {
        match self {
            CaseBook::Sqlite(c) => super::query::cases(c, j, today),
            CaseBook::Fleet { rt, client, .. } => Ok(rt.block_on(fleet::list(client, j, today))?),
        }
    }

    pub fn detail(&self, id: i64, j: &Jurisdictions, today: NaiveDate) -> Read<Option<CaseDetail>> {
        match self {
            CaseBook::Sqlite(c) => super::query::case(c, id, j, today),
            CaseBook::Fleet { rt, client, .. } => {
                Ok(rt.block_on(fleet::detail(client, id, j, today))?)
            }
        }
    }

    /// Stores evidence (in files under `dir` on SQLite, in the database in fleet mode) and
    /// records it in the case log; returns its SHA-256.
    pub fn attach_bytes(
        &mut self,
        id: i64,
        actor: &str,
        name: &str,
        bytes: &[u8],
        dir: &std::path::Path,
    ) -> Result<String> {
        match self {
            CaseBook::Sqlite(c) => c.attach_bytes(id, actor, name, bytes, dir),
            CaseBook::Fleet { rt, client, .. } => {
                rt.block_on(fleet::attach(client, id, actor, name, bytes))
            }
        }
    }

    /// What the case's letters and HHS report are written from.
    pub fn notice(&self, id: i64) -> Result<super::output::Notice> {
        match self {
            CaseBook::Sqlite(c) => super::output::notice(c, id),
            CaseBook::Fleet { rt, client, .. } => rt.block_on(fleet::notice(client, id)),
        }
    }

    /// Breaches under 500 discovered in `year`, as the CSV of the annual HHS submission.
    pub fn annual_log(&self, year: i32) -> Result<String> {
        let ids = match self {
            CaseBook::Sqlite(c) => super::output::breaches_in(c, year)?,
            CaseBook::Fleet { rt, client, .. } => rt.block_on(fleet::breaches_in(client, year))?,
        };
        let notices = ids
            .into_iter()
            .map(|id| Ok((id, self.notice(id)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(super::output::annual_log(&notices))
    }

    /// The accounting of disclosures owed to `patient` (164.528) as of `today`.
    pub fn accounting(&self, patient: &str, today: NaiveDate) -> Result<String> {
        let rows = match self {
            CaseBook::Sqlite(c) => super::output::disclosures(c, patient)?,
            CaseBook::Fleet { rt, client, .. } => {
                rt.block_on(fleet::disclosures(client, patient))?
            }
        };
        Ok(super::output::accounting(patient, &rows, today))
    }

    /// Open cases whose notices are not all sent yet, with their deadlines as of `today`.
    pub fn unsent_deadlines(
        &self,
        j: &Jurisdictions,
        today: NaiveDate,
    ) -> Read<Vec<(i64, String, Vec<super::query::DeadlineRow>)>> {
        let open = match self {
            CaseBook::Sqlite(c) => super::query::unsent(c.conn())?,
            CaseBook::Fleet { rt, client, .. } => rt.block_on(fleet::unsent(client))?,
        };
        let mut out = Vec::with_capacity(open.len());
        for (id, title) in open {
            let deadlines = match self {
                CaseBook::Sqlite(c) => super::query::deadlines(c, id, j, today)?,
                CaseBook::Fleet { rt, client, .. } => {
                    rt.block_on(fleet::deadlines(client, id, j, today))?
                }
            };
            out.push((id, title, deadlines));
        }
        Ok(out)
    }

    /// The accesses by the case's users to its patients.
    pub fn evidence(&self, id: i64) -> Read<Vec<TimelineRow>> {
        match self {
            CaseBook::Sqlite(c) => super::query::evidence(c, id),
            CaseBook::Fleet { rt, client, .. } => Ok(rt.block_on(fleet::evidence(client, id))?),
        }
    }

    /// Reminders of the case waiting in the outbox.
    pub fn pending_reminders(&self, id: i64) -> Result<usize> {
        match self {
            CaseBook::Sqlite(c) => c.pending_reminders(id),
            CaseBook::Fleet { rt, client, .. } => rt.block_on(fleet::pending_reminders(client, id)),
        }
    }
}
