//! The fleet database's schema, in numbered versions applied once each by `phiwatch migrate`.
//! Every node checks the version at start and refuses a schema it does not know.

use super::FleetError;
use tokio_postgres::Client;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Applied in order; a version, once released, never changes (add the next one instead).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "ingest queue, detector lease, accesses by month, findings",
        sql: V1,
    },
    Migration {
        version: 2,
        name: "outbox claimed by dispatchers",
        sql: V2,
    },
    Migration {
        version: 3,
        name: "plugin state and context journal",
        sql: V3,
    },
    Migration {
        version: 4,
        name: "alerts grouping findings, silences",
        sql: V4,
    },
    Migration {
        version: 5,
        name: "breach-response cases and their hash-chained log",
        sql: V5,
    },
    Migration {
        version: 6,
        name: "console accounts, sessions, sign-in trail and failures",
        sql: V6,
    },
    Migration {
        version: 7,
        name: "case evidence files",
        sql: V7,
    },
    Migration {
        version: 8,
        name: "single sign-on: sign-ins in progress and logout tokens taken",
        sql: V8,
    },
];

/// The version this phiwatch needs.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const V1: &str = "
-- The one detector: whoever holds an unexpired lease. Every write it makes checks the
-- epoch it was given, inside the writing transaction (lease.rs).
CREATE TABLE detector_lease (
    id          smallint PRIMARY KEY CHECK (id = 1),
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
-- One row per source: the collector's position in it and the last batch it appended, written
-- in the transaction that appends the batch.
CREATE TABLE source_checkpoints (
    source     text PRIMARY KEY,
    collector  text NOT NULL,
    last_seq   bigint NOT NULL,
    checkpoint text NOT NULL,
    updated_at timestamptz NOT NULL
);
-- The ingest queue: raw records, numbered per source from 1 without gaps.
CREATE TABLE ingest_batches (
    source     text NOT NULL,
    seq        bigint NOT NULL,
    records    bytea[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, seq)
);
-- How far detection has gone in each source, and under which lease epoch.
CREATE TABLE detector_progress (
    source   text PRIMARY KEY,
    done_seq bigint NOT NULL,
    epoch    bigint NOT NULL
);
-- Accesses, one partition per calendar month (UTC) so years of history are kept, archived
-- and dropped a month at a time (retention.rs). Keyed by time and id: an access read again
-- has the same time, so it is stored once.
CREATE TABLE accesses (
    event_id    text NOT NULL,
    time_ms     bigint NOT NULL,
    user_id     text NOT NULL,
    patient_id  text,
    action      text NOT NULL,
    subtype     text NOT NULL,
    break_glass boolean NOT NULL,
    workstation text NOT NULL,
    succeeded   boolean NOT NULL,
    stored_ms   bigint NOT NULL,
    PRIMARY KEY (time_ms, event_id)
) PARTITION BY RANGE (time_ms);
CREATE INDEX accesses_patient ON accesses (patient_id, time_ms);
CREATE TABLE findings (
    event_id    text NOT NULL,
    detector    text NOT NULL,
    time        text NOT NULL,
    user_id     text NOT NULL,
    patient_id  text NOT NULL,
    action      text NOT NULL,
    category    text NOT NULL,
    severity    text NOT NULL,
    explanation text NOT NULL,
    hipaa       text NOT NULL,
    department  text NOT NULL DEFAULT '',
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, detector)
);
CREATE INDEX findings_user ON findings (user_id, time);
CREATE INDEX findings_patient ON findings (patient_id, time);
";

const V2: &str = "
-- Notifications to send: written with the change that causes them, claimed by any number of
-- dispatchers (FOR UPDATE SKIP LOCKED) for a while, settled by the one that claimed them.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    alert_id        bigint,
    case_id         bigint,
    receiver        text NOT NULL,
    state           text NOT NULL,
    created_ms      bigint NOT NULL,
    due_ms          bigint NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    sent_ms         bigint,
    subject         text,
    body            text,
    claimed_by      text,
    claimed_until   timestamptz
);
CREATE INDEX outbox_due ON outbox (state, due_ms);
";

const V3: &str = "
-- A plugin's key/value state, a row per key (volume windows, first looks), written by the
-- detector in the fenced transaction of the batch that changed it: a standby that takes over
-- reads exactly what the batches applied so far left.
CREATE TABLE plugin_state (
    plugin text NOT NULL,
    key    text NOT NULL,
    value  bytea NOT NULL,
    PRIMARY KEY (plugin, key)
);
-- Context facts learned from the queued records (HL7 v2 ADT, demographics inline in an
-- extract), journaled once by content so a detector that takes over replays them.
CREATE TABLE context_journal (
    seq         bigserial PRIMARY KEY,
    feed        text NOT NULL,
    key         text NOT NULL UNIQUE,
    received_ms bigint NOT NULL,
    message     text NOT NULL
);
";

const V4: &str = "
-- Alerts group findings as in the single process (alert/group.rs and its store schema),
-- written by the detector in the fenced transaction of the batch whose findings they group,
-- with the outbox rows they queue.
CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    group_key       text NOT NULL,
    fold_key        text NOT NULL,
    status          text NOT NULL,
    category        text NOT NULL,
    severity        text NOT NULL,
    user_id         text NOT NULL,
    department      text NOT NULL,
    first_ms        bigint NOT NULL,
    last_ms         bigint NOT NULL,
    findings        bigint NOT NULL DEFAULT 0,
    incidents       bigint NOT NULL DEFAULT 0,
    notifications   bigint NOT NULL DEFAULT 0,
    last_sent_ms    bigint NOT NULL DEFAULT 0,
    ack_by          text,
    ack_ms          bigint,
    ack_note        text,
    ack_disposition text,
    first_access_ms bigint,
    last_access_ms  bigint,
    origin          text NOT NULL
);
CREATE INDEX alerts_fold ON alerts (fold_key, status);
CREATE TABLE alert_findings (
    alert_id   bigint NOT NULL REFERENCES alerts (id),
    event_id   text NOT NULL,
    detector   text NOT NULL,
    patient_id text NOT NULL,
    PRIMARY KEY (alert_id, event_id, detector)
);
CREATE INDEX alert_findings_patient ON alert_findings (alert_id, patient_id);
-- Which of a batch's alerts have a notification waiting (the detector asks once a batch).
CREATE INDEX outbox_alert_pending ON outbox (alert_id) WHERE state = 'pending';
-- Silences mute the notifications of alerts whose labels match, for a while (`phiwatch
-- silence`); dispatchers read them before each send.
CREATE TABLE silences (
    id         bigserial PRIMARY KEY,
    matchers   text NOT NULL,
    starts_ms  bigint NOT NULL,
    ends_ms    bigint NOT NULL,
    author     text NOT NULL,
    reason     text NOT NULL,
    created_ms bigint NOT NULL
);
";

/// Cases as in the single process's store (store.rs), changed by any number of nodes. The
/// log's head is one row every appending transaction locks: its sequence has no gaps and
/// its chain no forks however many writers there are (case/fleet.rs).
const V5: &str = "
CREATE TABLE cases (
    id            bigserial PRIMARY KEY,
    title         text NOT NULL,
    state         text NOT NULL,
    assignee      text,
    resolution    text,
    discovered    text,
    determined    text,
    determination text,
    residents     text NOT NULL DEFAULT '{}',
    delays        text NOT NULL DEFAULT '[]',
    licensed_in   text NOT NULL DEFAULT '[]',
    assessment    text,
    created_ms    bigint NOT NULL,
    updated_ms    bigint NOT NULL
);
CREATE TABLE case_alerts (
    case_id  bigint NOT NULL REFERENCES cases (id),
    alert_id bigint NOT NULL REFERENCES alerts (id),
    PRIMARY KEY (case_id, alert_id)
);
CREATE TABLE case_tasks (
    case_id bigint NOT NULL REFERENCES cases (id),
    n       bigint NOT NULL,
    text    text NOT NULL,
    done    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (case_id, n)
);
CREATE TABLE case_log (
    seq       bigint PRIMARY KEY,
    case_id   bigint NOT NULL,
    at_ms     bigint NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    before    text NOT NULL,
    after     text NOT NULL,
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
CREATE INDEX case_log_case ON case_log (case_id, seq);
CREATE TABLE case_log_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO case_log_head (seq, hash)
    VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000');
";

/// The console's accounts and sessions as in the single process's store (session tokens as
/// SHA-256 digests), shared by every console node; sign-in failures too, so the limit holds
/// whichever node a guess reaches.
const V6: &str = "
CREATE TABLE console_users (
    name       text PRIMARY KEY,
    role       text NOT NULL,
    hash       text NOT NULL,
    staff_id   text,
    created_ms bigint NOT NULL
);
CREATE TABLE console_sessions (
    token_hash text PRIMARY KEY,
    user_name  text NOT NULL,
    csrf       text NOT NULL,
    created_ms bigint NOT NULL,
    seen_ms    bigint NOT NULL,
    expires_ms bigint,
    sso_sub    text,
    sso_sid    text
);
CREATE INDEX console_sessions_user ON console_sessions (user_name);
CREATE TABLE console_audit (
    id        bigserial PRIMARY KEY,
    at_ms     bigint NOT NULL,
    event     text NOT NULL,
    user_name text NOT NULL,
    method    text NOT NULL,
    client    text NOT NULL,
    detail    text NOT NULL
);
CREATE TABLE console_login_failures (
    key   text NOT NULL,
    at_ms bigint NOT NULL
);
CREATE INDEX console_login_failures_key ON console_login_failures (key, at_ms);
";

/// Evidence attached to cases, by SHA-256: the single process keeps it in files under its
/// data_dir; the fleet keeps it where every console node can read it.
const V7: &str = "
CREATE TABLE case_evidence (
    sha256     text PRIMARY KEY,
    bytes      bytea NOT NULL,
    created_ms bigint NOT NULL
);
";

/// Single sign-on on console nodes behind a load balancer: a sign-in started on one node is
/// finished on whichever node the provider's redirect reaches, and a back-channel logout
/// token is taken once across all of them.
const V8: &str = "
CREATE TABLE console_sso_pending (
    state_hash text PRIMARY KEY,
    browser    text NOT NULL,
    client     text NOT NULL,
    verifier   text NOT NULL,
    nonce      text NOT NULL,
    next       text NOT NULL,
    started_ms bigint NOT NULL
);
CREATE INDEX console_sso_pending_client ON console_sso_pending (client);
CREATE TABLE console_sso_logouts (
    jti     text PRIMARY KEY,
    seen_ms bigint NOT NULL
);
";

/// Any number to serialise migrations run by several nodes at once.
const MIGRATE_LOCK: i64 = 0x7068_6977_6174_6368; // "phiwatch" in ASCII

/// The schema's version (0 for a database phiwatch never migrated).
pub async fn version(client: &Client) -> Result<i32, FleetError> {
    let row = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(FleetError::sql("reading the schema version"))?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(FleetError::sql("reading the schema version"))?;
    Ok(row.get(0))
}

/// Refuses a schema this phiwatch cannot work on: behind (migrate first) or ahead (upgrade).
pub async fn require_current(client: &Client) -> Result<i32, FleetError> {
    let found = version(client).await?;
    let known = latest();
    match found.cmp(&known) {
        std::cmp::Ordering::Less => Err(FleetError::SchemaBehind { found, known }),
        std::cmp::Ordering::Greater => Err(FleetError::SchemaTooNew { found, known }),
        std::cmp::Ordering::Equal => Ok(found),
    }
}

/// Applies the versions not yet applied, all in one transaction (PostgreSQL's DDL is
/// transactional: a failed migration leaves the schema as it was). Returns the versions
/// before and after. Several nodes may run it at once: an advisory lock orders them.
pub async fn migrate(client: &mut Client) -> Result<(i32, i32), FleetError> {
    let e = FleetError::sql("migrating");
    let tx = client.transaction().await.map_err(&e)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(&e)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
         )",
    )
    .await
    .map_err(&e)?;
    let from: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(&e)?
        .get(0);
    if from > latest() {
        return Err(FleetError::SchemaTooNew {
            found: from,
            known: latest(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(m.sql)
            .await
            .map_err(FleetError::sql(m.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(&e)?;
    }
    tx.commit().await.map_err(&e)?;
    Ok((from, latest()))
}
