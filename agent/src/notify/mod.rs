//! Delivery of alert notifications from the durable outbox.
//!
//! The dispatcher takes due rows, checks acknowledgement, silences and inhibition at send
//! time, renders the alert as it is now, sends, and records the outcome: sent; transient
//! failure (SMTP 4xx, HTTP 5xx/429, connection errors) retried with exponential backoff and
//! jitter; permanent failure (SMTP 5xx, HTTP 4xx) or `give_up_after` exceeded → dead letter.
//! A crash between sending and recording resends once, with the same idempotency key
//! (`Message-ID`, `webhook-id`), so the receiver can drop the duplicate.

pub mod cef;
pub mod email;
pub mod reminder;
pub mod render;
pub mod webhook;

use crate::alert::group::enqueue;
use crate::alert::routing::{Receiver, RouteInput, Routing};
use crate::finding::Severity;
use crate::outbox;
use chrono::Timelike;
use rand::Rng;
use render::AlertView;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

enum Payload {
    Alert(Box<AlertView>),
    Reminder(reminder::Reminder),
}

/// One notification ready to send, owning everything the send needs.
struct Job {
    due: Due,
    receiver: Receiver,
    payload: Payload,
    smtp: Option<Smtp>,
    http: reqwest::Client,
}

impl Job {
    async fn send(&self) -> Outcome {
        let key = &self.due.key;
        match &self.payload {
            Payload::Alert(v) => {
                deliver(&self.receiver, v, key, self.smtp.as_ref(), &self.http).await
            }
            Payload::Reminder(r) => {
                deliver_reminder(&self.receiver, r, key, self.smtp.as_ref(), &self.http).await
            }
        }
    }
}

/// Sends a case's deadline reminder to one receiver (what [`deliver`] is for an alert).
pub async fn deliver_reminder(
    receiver: &Receiver,
    r: &reminder::Reminder,
    key: &str,
    smtp: Option<&Smtp>,
    http: &reqwest::Client,
) -> Outcome {
    match receiver {
        Receiver::Email(e) => match smtp {
            Some((t, _)) => reminder::email(e, t, r, key).await,
            None => Outcome::Permanent("no SMTP transport".into()),
        },
        Receiver::Webhook(w) => reminder::webhook(w, http, r, key).await,
        Receiver::Syslog(s) => reminder::syslog(s, r, key).await,
    }
}

/// Sends to receivers concurrently (one slow or hanging relay must not hold up the others),
/// each receiver's notifications in order. Each receiver's outcomes come back together as its
/// sends finish, for the caller to record.
pub fn by_receiver<J, T, F, Fut>(jobs: Vec<(String, J)>, send: F) -> tokio::task::JoinSet<Vec<T>>
where
    J: Send + 'static,
    T: Send + 'static,
    F: Fn(J) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let mut groups: HashMap<String, Vec<J>> = HashMap::new();
    for (receiver, job) in jobs {
        groups.entry(receiver).or_default().push(job);
    }
    let mut sends = tokio::task::JoinSet::new();
    for (_, jobs) in groups {
        let send = send.clone();
        sends.spawn(async move {
            let mut done = Vec::with_capacity(jobs.len());
            for job in jobs {
                done.push(send(job).await);
            }
            done
        });
    }
    sends
}

/// Takes up reloaded routing rules and the transports they need; if those cannot be built
/// (the reload checked they can), the rules in force stay.
pub fn take_up(latest: Arc<Routing>, routing: &mut Arc<Routing>, smtp: &mut Transports) {
    if Arc::ptr_eq(&latest, routing) {
        return;
    }
    match transports(&latest) {
        Ok(t) => {
            *smtp = t;
            *routing = latest;
        }
        Err(e) => tracing::error!("routing reload: {e}"),
    }
}

/// An email receiver's SMTP transport and templates.
pub type Smtp = (
    lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    email::Templates,
);

/// Sends one alert notification, with its idempotency key, to `receiver` (`smtp`: the
/// receiver's transport, when it is an email receiver). The single process's dispatcher and
/// the fleet's dispatch nodes both send through here.
pub async fn deliver(
    receiver: &Receiver,
    view: &AlertView,
    key: &str,
    smtp: Option<&Smtp>,
    http: &reqwest::Client,
) -> Outcome {
    match receiver {
        Receiver::Email(e) => match smtp {
            Some((t, templates)) => email::send(e, t, templates, view, key).await,
            None => Outcome::Permanent("no SMTP transport".into()),
        },
        Receiver::Webhook(w) => webhook::send(w, http, view, key).await,
        Receiver::Syslog(s) => cef::send(s, view, key).await,
    }
}

/// When to try again a notification that failed for now after `attempts` earlier tries:
/// exponential backoff with jitter, capped; `None` once it has failed for `give_up_after`
/// since it was queued (it becomes a dead letter).
pub fn next_try(
    retry: &crate::alert::routing::Retry,
    created_ms: i64,
    attempts: i64,
    now: i64,
) -> Option<i64> {
    if now - created_ms > retry.give_up_after.as_millis() as i64 {
        return None;
    }
    let exp = retry.initial.as_millis() as f64 * 2f64.powi(attempts.min(30) as i32);
    let jitter = rand::rng().random_range(0.5..1.5);
    Some(now + (exp * jitter).min(retry.max.as_millis() as f64) as i64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Transient(String),
    Permanent(String),
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct NotifyMetrics {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    pub suppressed: AtomicU64,
    pub pending: AtomicU64,
    pub dead_letters: AtomicU64,
}

pub struct Dispatcher {
    db: PathBuf,
    shared: crate::alert::SharedRouting,
    routing: Arc<Routing>,
    tz: chrono_tz::Tz,
    http: reqwest::Client,
    smtp: Transports,
    metrics: Arc<NotifyMetrics>,
    /// The wall clock and the monotonic clock at the last tick: a step back of the wall
    /// clock shows as the two disagreeing.
    clock: Option<(i64, std::time::Instant)>,
}

/// A wall clock behind the monotonic one by more than this has been stepped back.
const CLOCK_STEP_MS: i64 = 60_000;

struct Due {
    id: i64,
    key: String,
    alert: i64,
    receiver: String,
    attempts: i64,
    created_ms: i64,
    /// A case deadline reminder (rendered when it was queued) instead of an alert.
    reminder: Option<reminder::Reminder>,
}

impl From<outbox::Due> for Due {
    fn from(r: outbox::Due) -> Self {
        Due {
            id: r.id,
            key: r.key,
            alert: r.alert,
            receiver: r.receiver,
            attempts: r.attempts,
            created_ms: r.created_ms,
            reminder: r.case_id.map(|case_id| reminder::Reminder {
                case_id,
                subject: r.subject,
                body: r.body,
            }),
        }
    }
}

use crate::time::now_ms;

/// A receiver that cannot be set up (a CA file, a template, a password variable) or sent
/// to (a secret or key it needs): the message names the receiver or the setting.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("receiver {receiver:?}: {message}")]
    Setup { receiver: String, message: String },
    #[error("the webhook secret is not base64")]
    SecretNotBase64,
    #[error("environment variable {0} (routing_key_env) is not set")]
    RoutingKeyUnset(String),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl ReceiverError {
    fn new(receiver: &str, message: &dyn std::fmt::Display) -> Self {
        ReceiverError::Setup {
            receiver: receiver.to_owned(),
            message: message.to_string(),
        }
    }
}

impl Dispatcher {
    /// Builds every receiver's client now, so a bad TLS file or a missing password variable
    /// stops the agent at start-up rather than at the first alert.
    pub fn new(
        db: &Path,
        shared: crate::alert::SharedRouting,
        tz: chrono_tz::Tz,
        metrics: Arc<NotifyMetrics>,
    ) -> Result<Self, ReceiverError> {
        let routing = crate::alert::current(&shared);
        let smtp = transports(&routing)?;
        let http = http_client()?;
        Ok(Dispatcher {
            db: db.to_owned(),
            shared,
            routing,
            tz,
            http,
            smtp,
            metrics,
            clock: None,
        })
    }

    /// How far the wall clock went back since the last tick, when it did by more than
    /// [`CLOCK_STEP_MS`].
    fn stepped_back(&mut self, now: i64) -> Option<i64> {
        let expected = self
            .clock
            .map(|(wall, at)| wall + at.elapsed().as_millis() as i64);
        self.clock = Some((now, std::time::Instant::now()));
        expected
            .map(|e| e - now)
            .filter(|back| *back > CLOCK_STEP_MS)
    }

    /// Moves what the lost time would hold up back with the clock (see [`outbox::rebase`]).
    fn follow_clock(&mut self, conn: &mut Connection, now: i64) -> rusqlite::Result<()> {
        let Some(back) = self.stepped_back(now) else {
            return Ok(());
        };
        let tx = conn.transaction()?;
        let queued = outbox::rebase(&tx, now, back)?;
        crate::alert::group::rebase_sent(&tx, now, back)?;
        tx.commit()?;
        tracing::warn!(
            "the system clock went back {} s; {queued} waiting notifications keep their wait",
            back / 1000
        );
        Ok(())
    }

    /// Runs until the task is dropped.
    pub async fn run(mut self, tick: Duration) {
        let mut conn = None;
        loop {
            if conn.is_none() {
                match Connection::open(&self.db) {
                    Ok(c) => {
                        let _ = c.busy_timeout(Duration::from_secs(5));
                        conn = Some(c);
                    }
                    Err(e) => tracing::error!("notifications: opening the store: {e}"),
                }
            }
            if let Some(c) = conn.as_mut() {
                if let Err(e) = self.tick(c).await {
                    tracing::error!("notifications: {e}");
                }
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// One round: pick up reloaded rules, schedule repeats, then send what is due. Returns
    /// how many rows it settled.
    pub async fn tick(&mut self, conn: &mut Connection) -> rusqlite::Result<usize> {
        let latest = crate::alert::current(&self.shared);
        take_up(latest, &mut self.routing, &mut self.smtp);
        self.follow_clock(conn, now_ms())?;
        self.schedule_repeats(conn)?;
        let now = now_ms();
        let due: Vec<Due> = outbox::due(conn, now, 50)?
            .into_iter()
            .map(Due::from)
            .collect();
        let settled = due.len();
        let mut jobs = Vec::new();
        for d in due {
            if let Some(job) = self.prepare(conn, d)? {
                jobs.push((job.due.receiver.clone(), job));
            }
        }
        let mut sends = by_receiver(jobs, |job: Job| async move {
            let outcome = job.send().await;
            (job.due, outcome)
        });
        while let Some(result) = sends.join_next().await {
            match result {
                Ok(done) => {
                    for (d, outcome) in done {
                        self.record(conn, &d, outcome)?;
                    }
                }
                // A panicking send leaves its rows pending: they are tried again next tick.
                Err(e) => tracing::error!("a notification send failed to complete: {e}"),
            }
        }
        self.refresh_gauges(conn)?;
        Ok(settled)
    }

    /// Checks a due row (acknowledged, silenced, inhibited, closed case, gone receiver) and
    /// renders it; rows that must not be sent are settled here.
    fn prepare(&mut self, conn: &mut Connection, d: Due) -> rusqlite::Result<Option<Job>> {
        let Some(receiver) = self.routing.receiver(&d.receiver).cloned() else {
            self.settle(conn, &d, "dead", Some("receiver no longer configured"), 0)?;
            return Ok(None);
        };
        let smtp = match &receiver {
            Receiver::Email(e) => self.smtp.get(&e.name).cloned(),
            _ => None,
        };
        if let Some(rem) = &d.reminder {
            let state: Option<String> = conn
                .query_row(
                    "SELECT state FROM cases WHERE id = ?1",
                    [rem.case_id],
                    |r| r.get(0),
                )
                .ok();
            if state.as_deref().is_none_or(|s| s == "closed") {
                self.metrics.suppressed.fetch_add(1, Ordering::Relaxed);
                self.settle(conn, &d, "suppressed", Some("case closed"), 0)?;
                return Ok(None);
            }
            let payload = Payload::Reminder(rem.clone());
            return Ok(Some(Job {
                due: d,
                receiver,
                payload,
                smtp,
                http: self.http.clone(),
            }));
        }
        if let Some(why) = suppressed(
            conn,
            d.alert,
            self.routing.grouping.inhibit_lower_for_critical,
        )? {
            self.metrics.suppressed.fetch_add(1, Ordering::Relaxed);
            self.settle(conn, &d, "suppressed", Some(&why), 0)?;
            return Ok(None);
        }
        let Some(view) = AlertView::load(
            conn,
            d.alert,
            receiver.include_patient(),
            receiver.console_url(),
        )?
        else {
            self.settle(conn, &d, "dead", Some("alert no longer exists"), 0)?;
            return Ok(None);
        };
        Ok(Some(Job {
            due: d,
            receiver,
            payload: Payload::Alert(Box::new(view)),
            smtp,
            http: self.http.clone(),
        }))
    }

    /// Records a delivery attempt's outcome: sent, retried later, or a dead letter.
    fn record(&self, conn: &mut Connection, d: &Due, outcome: Outcome) -> rusqlite::Result<()> {
        let retry = &self.routing.retry;
        match outcome {
            Outcome::Sent => {
                self.metrics.sent.fetch_add(1, Ordering::Relaxed);
                let now = now_ms();
                let tx = conn.transaction()?;
                outbox::sent(&tx, d.id, now)?;
                if d.reminder.is_none() {
                    crate::alert::group::mark_sent(&tx, d.alert, now)?;
                }
                tx.commit()
            }
            Outcome::Permanent(e) => {
                self.metrics.dead.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(receiver = %d.receiver, alert = d.alert, "notification failed permanently: {e}");
                self.settle(conn, d, "dead", Some(&e), 1)
            }
            Outcome::Transient(e) => {
                let now = now_ms();
                let Some(at) = next_try(retry, d.created_ms, d.attempts, now) else {
                    self.metrics.dead.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(receiver = %d.receiver, alert = d.alert, "giving up on a notification: {e}");
                    return self.settle(conn, d, "dead", Some(&e), 1);
                };
                self.metrics.retried.fetch_add(1, Ordering::Relaxed);
                tracing::info!(receiver = %d.receiver, alert = d.alert, attempt = d.attempts + 1, "notification will be retried in {} ms: {e}", at - now);
                outbox::retry_at(conn, d.id, at, &e)
            }
        }
    }

    fn settle(
        &self,
        conn: &Connection,
        d: &Due,
        state: &str,
        error: Option<&str>,
        attempt: i64,
    ) -> rusqlite::Result<()> {
        outbox::settle(conn, d.id, state, error, attempt)
    }

    /// Open alerts not notified for `repeat_interval` get another notification.
    fn schedule_repeats(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let now = now_ms();
        let repeat = self.routing.grouping.repeat_interval.as_millis() as i64;
        let mut stale = crate::alert::query::sent_before(conn, now - repeat)?;
        if !stale.is_empty() {
            let waiting = outbox::alerts_waiting(conn)?;
            stale.retain(|a| !waiting.contains(&a.id));
        }
        if stale.is_empty() {
            return Ok(());
        }
        let hour = chrono::Utc::now().with_timezone(&self.tz).hour();
        let tx = conn.transaction()?;
        for a in stale {
            let receivers = self.routing.receivers_for(&RouteInput {
                category: &a.category,
                severity: a.severity.parse().unwrap_or(Severity::Low),
                department: &a.department,
                hour,
            });
            enqueue(&tx, a.id, &receivers, now, now)?;
            // Counted as notified now so an alert with no receiver is not re-examined forever.
            crate::alert::group::mark_sent(&tx, a.id, now)?;
        }
        tx.commit()
    }

    fn refresh_gauges(&self, conn: &Connection) -> rusqlite::Result<()> {
        let count = |state: &str| outbox::count(conn, state);
        self.metrics
            .pending
            .store(count("pending")?, Ordering::Relaxed);
        self.metrics
            .dead_letters
            .store(count("dead")?, Ordering::Relaxed);
        Ok(())
    }
}

pub type Transports = HashMap<String, Smtp>;

/// The HTTP client webhooks are sent with.
pub fn http_client() -> Result<reqwest::Client, ReceiverError> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("phiwatch/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// An SMTP transport and templates per email receiver.
pub fn transports(routing: &Routing) -> Result<Transports, ReceiverError> {
    let mut smtp = HashMap::new();
    for r in &routing.receivers {
        if let Receiver::Email(e) = r {
            smtp.insert(
                e.name.clone(),
                (email::transport(e)?, email::Templates::load(e)?),
            );
        }
    }
    Ok(smtp)
}

/// Why an alert's notification must not go out now, if it must not.
fn suppressed(conn: &Connection, alert: i64, inhibit: bool) -> rusqlite::Result<Option<String>> {
    // A missing alert is settled as a dead letter when its view is loaded.
    let Some(a) = crate::alert::query::labels(conn, alert)? else {
        return Ok(None);
    };
    if a.status != "open" {
        return Ok(Some(format!("alert is {}", a.status)));
    }
    let now = now_ms();
    if let Some(s) = crate::alert::query::silences(conn, now)?
        .iter()
        .find(|s| s.mutes(&a, now))
    {
        return Ok(Some(format!("silenced by silence #{}", s.id)));
    }
    if inhibit
        && a.severity != "critical"
        && crate::alert::query::open_critical_besides(conn, &a.user, alert)?
    {
        return Ok(Some(
            "inhibited by an open critical alert for the same user".into(),
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    #[test]
    fn open_alerts_repeat_after_the_interval_and_acknowledged_ones_do_not() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("p.db");
        drop(crate::store::Store::open(&db).unwrap());
        let routing = Routing::parse(
            "[grouping]\nrepeat_interval = \"1h\"\n[[receiver]]\nkind = \"webhook\"\nname = \"siem\"\nurl = \"http://127.0.0.1:9/\"\n[[route]]\nreceivers = [\"siem\"]\n",
        )
        .unwrap();
        let shared = Arc::new(std::sync::RwLock::new(Arc::new(routing)));
        let dispatcher = Dispatcher::new(&db, shared, chrono_tz::UTC, Default::default()).unwrap();
        let mut conn = Connection::open(&db).unwrap();
        let two_hours_ago = now_ms() - 2 * 3_600_000;
        let ten_minutes_ago = now_ms() - 600_000;
        for (status, sent) in [
            ("open", two_hours_ago),
            ("acknowledged", two_hours_ago),
            ("open", ten_minutes_ago),
        ] {
            conn.execute(
                "INSERT INTO alerts (group_key, fold_key, status, category, severity, user_id, department,
                 first_ms, last_ms, findings, incidents, last_sent_ms)
                 VALUES ('k', 'k', ?1, 'vip', 'high', 'u', 'd', 0, 0, 1, 1, ?2)",
                params![status, sent],
            )
            .unwrap();
        }
        dispatcher.schedule_repeats(&mut conn).unwrap();
        let queued: Vec<i64> = conn
            .prepare("SELECT alert_id FROM outbox WHERE state = 'pending'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            queued,
            vec![1],
            "only the open alert notified two hours ago"
        );
        // Scheduling again adds nothing while that notification waits.
        dispatcher.schedule_repeats(&mut conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
