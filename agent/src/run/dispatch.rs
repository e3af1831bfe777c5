//! Fleet mode's `dispatch` role: any number of nodes send what the detector queued in the
//! outbox. Each claims due rows for a while (`FOR UPDATE SKIP LOCKED`, so two never hold one
//! row), sends them through the same transports as the single process, and settles each.
//! A dispatcher that dies mid-send leaves its claims to lapse; another then sends those rows
//! again with the same idempotency key, which receivers use to drop the repeat.

use super::detection::reload_routing;
use crate::alert::query::{Labels, Silence};
use crate::alert::{fleet as alerts, Routing, SharedRouting};
use crate::fleet::outbox::{self, Claimed, Settled};
use crate::fleet::{pg, FleetError};
use crate::metrics::Metrics;
use crate::notify::{self, Outcome, Transports};
use crate::time::now_ms;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// Rows claimed at a time.
const CLAIM: i64 = 20;
/// How long a claim holds: longer than a round of sends takes (a webhook times out after
/// its `timeout`, mail after 20 s), short enough that a dead dispatcher's rows soon go out.
const HOLD: Duration = Duration::from_secs(60);
/// How often an idle dispatcher looks for due rows.
const IDLE: Duration = Duration::from_millis(500);

pub struct FleetDispatcher {
    pub db: pg::DatabaseConfig,
    pub node: String,
    /// The routing file and the rules read from it (reloaded when it changes, or on SIGHUP).
    pub routing_file: (PathBuf, SharedRouting),
    /// The rules in force this round, and the transports built from them.
    pub routing: Arc<Routing>,
    /// The hospital's time zone, which routes naming hours of the day are read in.
    pub tz: chrono_tz::Tz,
    pub smtp: Transports,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
}

/// A claimed row and what to send for it.
struct Job {
    row: Claimed,
    receiver: crate::alert::Receiver,
    payload: Payload,
}

/// What a claimed row sends: an alert rendered now, or a case's reminder rendered when it
/// was queued.
enum Payload {
    Alert(Box<notify::render::AlertView>),
    Reminder(notify::reminder::Reminder),
}

impl FleetDispatcher {
    /// Runs until the task is dropped, reconnecting after any database error.
    pub async fn run(mut self) {
        // Unique per process: a restarted dispatcher's lapsed claims are not taken for its own.
        let holder = format!("{}/{}", self.node, std::process::id());
        let mut client: Option<Client> = None;
        let mut stamp = crate::reload::stamp_of(&self.routing_file.0);
        loop {
            self.follow_routing(&mut stamp);
            if client.is_none() {
                match pg::connect(&self.db, &format!("phiwatch-dispatch-{}", self.node)).await {
                    Ok(c) => client = Some(c),
                    Err(e) => tracing::error!("dispatcher: {e}; retrying"),
                }
            }
            let busy = match &mut client {
                Some(c) => match self.round(c, &holder).await {
                    Ok(n) => n > 0,
                    Err(e) => {
                        self.metrics.fleet.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("dispatcher: {e}; reconnecting");
                        client = None;
                        false
                    }
                },
                None => false,
            };
            if !busy {
                tokio::time::sleep(if client.is_some() {
                    IDLE
                } else {
                    Duration::from_secs(1)
                })
                .await;
            }
        }
    }

    /// Takes up a changed routing file (or one asked for by SIGHUP) once it loads and its
    /// receivers build; a bad file is refused and the rules in force stay.
    fn follow_routing(&mut self, stamp: &mut u64) {
        let asked = self.metrics.reload_requested.swap(false, Ordering::SeqCst);
        reload_routing(Some(&self.routing_file), stamp, asked, &self.metrics);
        let latest = crate::alert::current(&self.routing_file.1);
        notify::take_up(latest, &mut self.routing, &mut self.smtp);
    }

    /// Queues repeats of alerts still open, claims due rows, sends them (receivers
    /// concurrently, each receiver's rows in order, as the single process does) and settles
    /// each. Returns how many rows it claimed.
    async fn round(&self, client: &mut Client, holder: &str) -> Result<usize, FleetError> {
        alerts::schedule_repeats(client, &self.routing, self.tz, now_ms()).await?;
        let client = &*client;
        let claimed = outbox::claim(client, holder, now_ms(), CLAIM, HOLD).await?;
        let n = claimed.len();
        let silences = match n {
            0 => Vec::new(),
            _ => alerts::silences(client, now_ms()).await?,
        };
        let mut jobs = Vec::new();
        for row in claimed {
            if let Some(job) = self.prepare(client, holder, row, &silences).await? {
                jobs.push((job.row.receiver.clone(), job));
            }
        }
        let (http, smtp) = (self.http.clone(), Arc::new(self.smtp.clone()));
        let mut sends = notify::by_receiver(jobs, move |job: Job| {
            let (http, smtp) = (http.clone(), smtp.clone());
            async move {
                let (smtp, key) = (smtp.get(job.receiver.name()), &job.row.key);
                let outcome = match &job.payload {
                    Payload::Alert(view) => {
                        notify::deliver(&job.receiver, view, key, smtp, &http).await
                    }
                    Payload::Reminder(r) => {
                        notify::deliver_reminder(&job.receiver, r, key, smtp, &http).await
                    }
                };
                (job.row, outcome)
            }
        });
        while let Some(result) = sends.join_next().await {
            match result {
                Ok(done) => {
                    for (row, outcome) in done {
                        self.record(client, holder, &row, outcome).await?;
                    }
                }
                // The rows stay claimed and go out again once the claim lapses.
                Err(e) => tracing::error!("a notification send failed to complete: {e}"),
            }
        }
        let depth = outbox::depth(client).await?;
        self.metrics
            .notify
            .pending
            .store(depth as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Renders a claimed row, or settles it when it must not be sent.
    async fn prepare(
        &self,
        client: &Client,
        holder: &str,
        row: Claimed,
        silences: &[Silence],
    ) -> Result<Option<Job>, FleetError> {
        let m = &self.metrics.notify;
        let Some(receiver) = self.routing.receiver(&row.receiver).cloned() else {
            let error = "receiver no longer configured";
            outbox::settle(client, holder, &row, Settled::Dead { error }, now_ms()).await?;
            return Ok(None);
        };
        if let Some(reminder) = row.reminder.clone() {
            return self
                .prepare_reminder(client, holder, row, receiver, reminder)
                .await;
        }
        let view = match row.alert_id {
            Some(id) => {
                let url = receiver.console_url();
                notify::render::AlertView::load_fleet(client, id, receiver.include_patient(), url)
                    .await?
            }
            None => None,
        };
        let Some(view) = view else {
            let error = "alert no longer exists";
            outbox::settle(client, holder, &row, Settled::Dead { error }, now_ms()).await?;
            return Ok(None);
        };
        let labels = Labels {
            id: view.alert_id,
            status: view.status.clone(),
            user: view.user.clone(),
            category: view.category.clone(),
            severity: view.severity.clone(),
            department: view.department.clone(),
        };
        let now = now_ms();
        let why = if view.status != "open" {
            Some(format!("alert is {}", view.status))
        } else if let Some(s) = silences.iter().find(|s| s.mutes(&labels, now)) {
            Some(format!("silenced by silence #{}", s.id))
        } else if self.routing.grouping.inhibit_lower_for_critical
            && view.severity != "critical"
            && alerts::open_critical_besides(client, &view.user, view.alert_id).await?
        {
            Some("inhibited by an open critical alert for the same user".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            m.suppressed.fetch_add(1, Ordering::Relaxed);
            outbox::settle(
                client,
                holder,
                &row,
                Settled::Suppressed { why: &why },
                now_ms(),
            )
            .await?;
            return Ok(None);
        }
        Ok(Some(Job {
            row,
            receiver,
            payload: Payload::Alert(Box::new(view)),
        }))
    }

    /// A case's reminder goes out while the case is open (as in the single process).
    async fn prepare_reminder(
        &self,
        client: &Client,
        holder: &str,
        row: Claimed,
        receiver: crate::alert::Receiver,
        (case_id, subject, body): (i64, String, String),
    ) -> Result<Option<Job>, FleetError> {
        if !crate::case::fleet::is_open(client, case_id).await? {
            self.metrics
                .notify
                .suppressed
                .fetch_add(1, Ordering::Relaxed);
            let why = "case closed";
            outbox::settle(client, holder, &row, Settled::Suppressed { why }, now_ms()).await?;
            return Ok(None);
        }
        let payload = Payload::Reminder(notify::reminder::Reminder {
            case_id,
            subject,
            body,
        });
        Ok(Some(Job {
            row,
            receiver,
            payload,
        }))
    }

    /// Records a send's outcome. A claim that lapsed meanwhile is another dispatcher's now:
    /// its outcome counts, and this one is only logged.
    async fn record(
        &self,
        client: &Client,
        holder: &str,
        row: &Claimed,
        outcome: Outcome,
    ) -> Result<(), FleetError> {
        let m = &self.metrics.notify;
        let now = now_ms();
        let (settled, counter) = match &outcome {
            Outcome::Sent => (Settled::Sent, &m.sent),
            Outcome::Permanent(error) => {
                tracing::warn!(receiver = %row.receiver, alert = ?row.alert_id, "notification failed permanently: {error}");
                (Settled::Dead { error }, &m.dead)
            }
            Outcome::Transient(error) => {
                let attempts = i64::from(row.attempts);
                match notify::next_try(&self.routing.retry, row.created_ms, attempts, now) {
                    Some(due_ms) => {
                        tracing::info!(receiver = %row.receiver, alert = ?row.alert_id, attempt = attempts + 1, "notification will be retried in {} ms: {error}", due_ms - now);
                        (Settled::Retry { due_ms, error }, &m.retried)
                    }
                    None => {
                        tracing::warn!(receiver = %row.receiver, alert = ?row.alert_id, "giving up on a notification: {error}");
                        (Settled::Dead { error }, &m.dead)
                    }
                }
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !outbox::settle(client, holder, row, settled, now).await? {
            tracing::warn!(
                receiver = %row.receiver,
                "a notification's claim lapsed while it was sent; the dispatcher that claimed it since settles it"
            );
            return Ok(());
        }
        if let (Settled::Sent, Some(alert)) = (settled, row.alert_id) {
            alerts::mark_sent(client, alert, now).await?;
        }
        Ok(())
    }
}
