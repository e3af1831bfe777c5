//! Where `phiwatch case` acts: the single process's SQLite store, or the fleet's PostgreSQL
//! when the config names one. Both apply the same rules (`case::change`), so a command
//! behaves the same on either.

use anyhow::Result;
use chrono::NaiveDate;
use phiwatch::case::change::{self, Current, Set};
use phiwatch::case::clock::{Jurisdictions, LawEnforcementDelay};
use phiwatch::case::fleet;
use phiwatch::case::log::Broken;
use phiwatch::case::query::{CaseDetail, CaseRow};
use phiwatch::case::{Assessment, CaseError, Cases};
use std::collections::BTreeMap;

pub enum CaseBook {
    Sqlite(Cases),
    Fleet {
        rt: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
    },
}

/// The cases the config names, kept to its deadline rules and reminder settings.
pub fn open(cfg: &phiwatch::config::Config) -> Result<CaseBook> {
    Ok(match &cfg.database {
        Some(db) => {
            let (rt, client) = super::alert_store::fleet_client(db)?;
            CaseBook::Fleet { rt, client }
        }
        None => CaseBook::Sqlite(super::case::cases_in(cfg)?),
    })
}

impl CaseBook {
    /// Applies `decide`'s columns: on SQLite after reading the state, on PostgreSQL with the
    /// case's row locked while it decides.
    fn change(
        &mut self,
        id: i64,
        actor: &str,
        action: &'static str,
        decide: impl FnOnce(&Current) -> Result<Set, CaseError>,
    ) -> Result<()> {
        match self {
            CaseBook::Sqlite(c) => c.apply(id, actor, action, decide)?,
            CaseBook::Fleet { rt, client } => {
                rt.block_on(fleet::change(client, id, actor, action, decide))?
            }
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
            CaseBook::Fleet { rt, client } => {
                rt.block_on(fleet::create(client, actor, title, alerts, discovered))?
            }
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

    pub fn determine(
        &mut self,
        id: i64,
        actor: &str,
        outcome: &str,
        on: Option<NaiveDate>,
    ) -> Result<()> {
        self.change(id, actor, "determine", |c| {
            change::determine_set(outcome, c.assessment.as_ref(), on)
        })
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
            CaseBook::Fleet { rt, client } => rt.block_on(fleet::note(client, id, actor, text))?,
        }
        Ok(())
    }

    pub fn add_task(&mut self, id: i64, actor: &str, text: &str) -> Result<i64> {
        Ok(match self {
            CaseBook::Sqlite(c) => c.add_task(id, actor, text)?,
            CaseBook::Fleet { rt, client } => {
                rt.block_on(fleet::add_task(client, id, actor, text))?
            }
        })
    }

    pub fn finish_task(&mut self, id: i64, actor: &str, n: i64) -> Result<()> {
        match self {
            CaseBook::Sqlite(c) => c.finish_task(id, actor, n)?,
            CaseBook::Fleet { rt, client } => {
                rt.block_on(fleet::finish_task(client, id, actor, n))?
            }
        }
        Ok(())
    }

    pub fn verify(&self) -> Result<Result<(usize, String), Broken>> {
        Ok(match self {
            CaseBook::Sqlite(c) => c.verify()?,
            CaseBook::Fleet { rt, client } => rt.block_on(fleet::verify(client))?,
        })
    }

    pub fn list(&self, j: &Jurisdictions, today: NaiveDate) -> Result<Vec<CaseRow>> {
        Ok(match self {
            CaseBook::Sqlite(c) => phiwatch::case::query::cases(c, j, today)?,
            CaseBook::Fleet { rt, client } => rt.block_on(fleet::list(client, j, today))?,
        })
    }

    pub fn detail(
        &self,
        id: i64,
        j: &Jurisdictions,
        today: NaiveDate,
    ) -> Result<Option<CaseDetail>> {
        Ok(match self {
            CaseBook::Sqlite(c) => phiwatch::case::query::case(c, id, j, today)?,
            CaseBook::Fleet { rt, client } => rt.block_on(fleet::detail(client, id, j, today))?,
        })
    }

    /// The accesses by the case's users to its patients.
    pub fn evidence(&self, id: i64) -> Result<Vec<phiwatch::case::timeline::TimelineRow>> {
        Ok(match self {
            CaseBook::Sqlite(c) => phiwatch::case::query::evidence(c, id)?,
            CaseBook::Fleet { rt, client } => rt.block_on(fleet::evidence(client, id))?,
        })
    }

    /// What the change did to the case's reminders.
    pub fn reminders_note(&self, id: i64) -> Result<()> {
        match self {
            CaseBook::Sqlite(c) => {
                let n = c.pending_reminders(id)?;
                println!("{n} deadline reminder(s) pending for case #{id}");
            }
            CaseBook::Fleet { .. } => println!(
                "deadline reminders are not queued in fleet mode yet: `phiwatch case show {id}` \
                 lists case #{id}'s deadlines"
            ),
        }
        Ok(())
    }
}
