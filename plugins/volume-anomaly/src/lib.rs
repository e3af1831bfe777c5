//! Volume anomaly: a user who opens far more distinct patients within an hour than their own
//! history explains.
//!
//! Each user's history is the count of distinct patients in each completed active clock
//! hour, kept per hour of the day and kind of day (weekday, weekend) and overall, in plugin
//! state so it survives restarts. Once a user has a history, it decides: a radiology
//! technician who opens 60 to 90 charts every working hour is judged against those hours, not
//! against the nurses of the ward. The peer group (same role and department) is only a prior
//! for users without a history yet, and a finding judged on the prior is medium at most. A
//! count is anomalous above `median + z × MAD` and `min_ratio × median` of the baseline (and
//! never below `min_patients`); `absolute_max` distinct patients is always anomalous.
//!
//! Detection counts the distinct patients of the last 60 minutes, not of the clock hour, so
//! a spree from 10:40 to 11:20 is not cut in two halves that each look ordinary. A crossing
//! starts a *spree*: one finding, raised at the end of the batch that crossed, naming the
//! accesses of the run that made the count (accesses closer together than the spree's pace
//! allows for an ordinary hour), with the count and the limit in its sentence. Accesses that
//! keep that pace afterwards are evidence of the same spree, reported as continuations that
//! join its alert (alerts fold a user's findings of one category); the spree ends at the
//! first pause, and what it counted is not counted again. Everything, including a spree in
//! progress, is saved in state, so a restart neither forgets it nor reports it twice. Hours
//! judged anomalous against the user's own history are left out of it.

use phiwatch_plugin_sdk::prelude::*;
use phiwatch_plugin_sdk::state;
use phiwatch_plugin_sdk::stats::Sample;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// A count this many times its user's own limit is high.
const HIGH_OVER: f64 = 1.5;
/// A spree's pace: accesses within `PACE / limit` hours of each other belong to it, twice
/// the gap of a user going at exactly their limit (4 minutes where the limit is 30).
const PACE: f64 = 2.0;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Robust z-score above the baseline that counts as anomalous.
    pub z: f64,
    /// Never flag fewer distinct patients in an hour than this.
    pub min_patients: usize,
    /// Also at least this multiple of the baseline median.
    pub min_ratio: f64,
    /// Completed hours a peer group needs before it serves as a prior.
    pub peer_warmup_hours: usize,
    /// Completed active hours a user needs before their own history decides.
    pub user_warmup_hours: usize,
    /// Completed hours of one hour-of-day slot before that slot decides.
    pub slot_warmup_hours: usize,
    /// Flagged whatever the baselines, even while warming up.
    pub absolute_max: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            z: 6.0,
            min_patients: 30,
            min_ratio: 3.0,
            peer_warmup_hours: 30,
            user_warmup_hours: 8,
            slot_warmup_hours: 3,
            absolute_max: 150,
        }
    }
}

/// A user's history of active hours.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct History {
    overall: Sample,
    /// Per hour of day (0-23) on weekdays, then 24-47 on weekends.
    slots: HashMap<u8, Sample>,
}

impl Default for History {
    fn default() -> Self {
        History {
            overall: Sample::new(100),
            slots: HashMap::new(),
        }
    }
}

/// One access in the sliding window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    t: i64,
    patient: String,
    id: u64,
}

/// The window is saved in chunks of this many accesses, numbered by arrival, so a batch
/// rewrites the chunk it appended to rather than the user's whole hour: at hospital volumes
/// a busy user's window holds hundreds of accesses and was serialised on every batch.
const CHUNK: u64 = 8;

/// Saved window accesses numbered `start..`, under `win/{user}/{start / CHUNK}`. The newest
/// chunk, rewritten whenever the user is seen, also says how many accesses have expired, so the
/// user's other state is written only when it changes.
#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    start: u64,
    seen: Vec<Seen>,
    popped: u64,
}

/// What a user is doing now: the clock hour (for the history) and the last 60 minutes (for
/// detection).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Live {
    hour: i64,
    slot: u8,
    group: String,
    /// A spree touched this hour: judged on the user's own history, or on anything.
    own_flagged: bool,
    flagged: bool,
    /// Saved in chunks, not here (read here only from state written before chunks).
    #[serde(default, skip_serializing)]
    window: VecDeque<Seen>,
    /// Chunks ever started (`pushed` rounded up to chunks): the newest is the last of them.
    #[serde(default)]
    chunks: u64,
    /// Accesses ever pushed into and expired from the window: window access `i` is number
    /// `popped + i`, which names its chunk. Saved in the newest chunk.
    #[serde(skip)]
    pushed: u64,
    #[serde(skip)]
    popped: u64,
    /// `pushed` and `popped` as last saved, and the rest as last saved.
    #[serde(skip)]
    saved: (u64, u64),
    #[serde(skip)]
    saved_meta: Vec<u8>,
    /// Window accesses up to this time belong to a reported spree and are not counted again.
    counted_until: i64,
    spree: Option<Spree>,
    /// Window accesses after `counted_until` per patient, kept as the window moves so each
    /// access costs O(1) however busy the user is; rebuilt from the window when loaded or
    /// when `counted_until` moves.
    #[serde(skip)]
    counts: Option<HashMap<String, u32>>,
}

impl Live {
    fn load(user: &str) -> Live {
        let Some(bytes) = state::get(&format!("live/{user}")) else {
            return Live::default();
        };
        let Ok(mut live) = serde_json::from_slice::<Live>(&bytes) else {
            return Live::default();
        };
        if !live.window.is_empty() {
            // Saved whole by an earlier version: saved again in chunks.
            live.pushed = live.window.len() as u64;
            live.chunks = live.pushed.div_ceil(CHUNK);
            return live;
        }
        live.saved_meta = bytes;
        let chunk = |c: u64| state::get_json::<Chunk>(&format!("win/{user}/{c}"));
        let Some(newest) = live.chunks.checked_sub(1).and_then(chunk) else {
            return live;
        };
        live.pushed = newest.start + newest.seen.len() as u64;
        live.popped = newest.popped.min(live.pushed);
        let wanted = live.popped..live.pushed;
        let older = (live.popped / CHUNK..live.chunks - 1).filter_map(chunk);
        for c in older.chain([newest]) {
            live.window.extend(
                (c.start..)
                    .zip(c.seen)
                    .filter(|(n, _)| wanted.contains(n))
                    .map(|(_, s)| s),
            );
        }
        // What a lost chunk held is gone; the numbering must still match the window.
        live.popped = live.pushed - live.window.len() as u64;
        live.saved = (live.pushed, live.popped);
        live
    }

    /// Writes what changed since the last save: the chunks appended to (the newest always,
    /// with the count expired), the chunks expired, and the rest when it changed.
    fn save(&mut self, user: &str) {
        let (saved_pushed, saved_popped) = self.saved;
        if (self.pushed, self.popped) != self.saved && self.pushed > 0 {
            self.chunks = self.pushed.div_ceil(CHUNK);
            let newest = self.chunks - 1;
            let from = (saved_pushed.max(self.popped) / CHUNK).min(newest);
            for c in from..=newest {
                let start = (c * CHUNK).max(self.popped);
                let end = ((c + 1) * CHUNK).min(self.pushed);
                let seen = self
                    .window
                    .range((start - self.popped) as usize..(end - self.popped) as usize)
                    .cloned()
                    .collect();
                let chunk = Chunk {
                    start,
                    seen,
                    popped: self.popped,
                };
                let _ = state::set_json(&format!("win/{user}/{c}"), &chunk);
            }
        }
        for c in saved_popped / CHUNK..self.popped / CHUNK {
            state::delete(&format!("win/{user}/{c}"));
        }
        self.saved = (self.pushed, self.popped);
        if let Ok(meta) = serde_json::to_vec(self) {
            if meta != self.saved_meta {
                let _ = state::set(&format!("live/{user}"), &meta);
                self.saved_meta = meta;
            }
        }
    }

    /// Distinct patients among window accesses after `counted_until`.
    fn distinct(&mut self) -> usize {
        let (window, after) = (&self.window, self.counted_until);
        self.counts
            .get_or_insert_with(|| {
                let mut c = HashMap::new();
                for x in window.iter().filter(|x| x.t > after) {
                    *c.entry(x.patient.clone()).or_insert(0) += 1;
                }
                c
            })
            .len()
    }

    /// Distinct patients of the clock hour `hour`: the window still holds all of that hour
    /// when the next one starts, since it keeps 60 minutes back from the latest access.
    fn patients_in(&self, hour: i64) -> usize {
        self.window
            .iter()
            .filter(|x| x.t.div_euclid(HOUR) == hour)
            .map(|x| x.patient.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    fn push(&mut self, seen: Seen) {
        if let Some(c) = self.counts.as_mut().filter(|_| seen.t > self.counted_until) {
            *c.entry(seen.patient.clone()).or_insert(0) += 1;
        }
        self.window.push_back(seen);
        self.pushed += 1;
    }

    /// Drops window accesses at or before `until`.
    fn expire(&mut self, until: i64) {
        while self.window.front().is_some_and(|x| x.t <= until) {
            let Some(old) = self.window.pop_front() else {
                break;
            };
            self.popped += 1;
            if let Some(c) = self.counts.as_mut().filter(|_| old.t > self.counted_until) {
                if let Some(n) = c.get_mut(&old.patient) {
                    *n -= 1;
                    if *n == 0 {
                        c.remove(&old.patient);
                    }
                }
            }
        }
    }

    fn count_until(&mut self, t: i64) {
        self.counted_until = t;
        self.counts = None;
    }
}

/// A reported spree still going on.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spree {
    limit: f64,
    own: bool,
    high: bool,
    /// The first finding's sentence, repeated on continuations.
    note: String,
    last_t: i64,
    count: usize,
    /// Evidence not yet in a finding.
    pending: Vec<u64>,
    /// Set in the batch that crossed the limit, reported at its end.
    #[serde(skip)]
    crossing: Option<Crossing>,
}

#[derive(Debug, Clone)]
struct Crossing {
    at: u64,
    against: &'static str,
    who: String,
    /// Named instead when the count at the end of the batch is within the baseline.
    ceiling: f64,
}

impl Spree {
    fn pace_ms(&self) -> i64 {
        (PACE * HOUR as f64 / self.limit.max(1.0)) as i64
    }
}

/// What a count is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Basis {
    Own(f64),
    Peers(f64),
    Ceiling(f64),
}

impl Basis {
    fn limit(self) -> f64 {
        match self {
            Basis::Own(l) | Basis::Peers(l) | Basis::Ceiling(l) => l,
        }
    }
}

pub struct Volume {
    s: Settings,
    live: HashMap<String, Live>,
    history: HashMap<String, History>,
    peers: HashMap<String, Sample>,
    dirty_live: HashSet<String>,
    dirty_history: HashSet<String>,
    dirty_peers: HashSet<String>,
}

/// Hour of day and kind of day of an access, from its UTC time and local hour.
fn slot(time_ms: i64, local_hour: u8) -> u8 {
    let utc_hour = time_ms.div_euclid(HOUR).rem_euclid(24);
    let mut offset = i64::from(local_hour) - utc_hour;
    if offset > 12 {
        offset -= 24;
    } else if offset < -12 {
        offset += 24;
    }
    let local = time_ms + offset * HOUR;
    // 1970-01-01 was a Thursday (3 counting from Monday as 0).
    let weekday = (local.div_euclid(DAY) + 3).rem_euclid(7);
    let weekend = weekday >= 5;
    local_hour.min(23) + if weekend { 24 } else { 0 }
}

fn limit_of(sample: &Sample, s: &Settings) -> Option<f64> {
    let (m, mad) = (sample.median()?, sample.mad()?);
    Some(
        (m + s.z * (mad * 1.4826).max(1.0))
            .max(m * s.min_ratio)
            .max(s.min_patients as f64),
    )
}

impl Volume {
    // Looked up before inserting, here and in `live_of`: busy users are judged on every
    // access, and an owned key per lookup costs more than the lookup.
    fn history(&mut self, user: &str) -> &mut History {
        if !self.history.contains_key(user) {
            let h = state::get_json(&format!("user/{user}")).unwrap_or_default();
            self.history.insert(user.to_owned(), h);
        }
        self.history.get_mut(user).expect("inserted above")
    }

    fn peer(&mut self, group: &str) -> &mut Sample {
        if !self.peers.contains_key(group) {
            let p = state::get_json(&format!("peer/{group}")).unwrap_or_else(|| Sample::new(500));
            self.peers.insert(group.to_owned(), p);
        }
        self.peers.get_mut(group).expect("inserted above")
    }

    fn live_of(&mut self, user: &str) -> &mut Live {
        if !self.live.contains_key(user) {
            self.live.insert(user.to_owned(), Live::load(user));
        }
        self.live.get_mut(user).expect("inserted above")
    }

    /// The user's own slot, else their own history, else the peer prior, else the ceiling.
    fn basis(&mut self, user: &str, group: &str, slot: u8) -> Basis {
        // Loaded from state first, then read without copying.
        self.history(user);
        self.peer(group);
        let s = &self.s;
        let h = &self.history[user];
        if let Some(l) = h
            .slots
            .get(&slot)
            .filter(|x| x.len() >= s.slot_warmup_hours)
            .and_then(|x| limit_of(x, s))
        {
            return Basis::Own(l);
        }
        if h.overall.len() >= s.user_warmup_hours {
            if let Some(l) = limit_of(&h.overall, s) {
                return Basis::Own(l);
            }
        }
        let peers = &self.peers[group];
        if peers.len() >= s.peer_warmup_hours {
            if let Some(l) = limit_of(peers, s) {
                return Basis::Peers(l);
            }
        }
        Basis::Ceiling(s.absolute_max as f64)
    }

    /// A finished clock hour joins the histories, unless a spree judged on the user's own
    /// history touched it (and the peers' prior, unless any spree did).
    fn close(&mut self, user: &str, hour: Hour) {
        let n = hour.patients;
        if n == 0 || hour.own_flagged {
            return;
        }
        let hist = self.history(user);
        hist.overall.push(n as f64);
        hist.slots
            .entry(hour.slot)
            .or_insert_with(|| Sample::new(10))
            .push(n as f64);
        self.dirty_history.insert(user.to_owned());
        if !hour.flagged {
            self.peer(&hour.group).push(n as f64);
            self.dirty_peers.insert(hour.group);
        }
    }

    fn save(&mut self) {
        for u in self.dirty_live.drain() {
            if let Some(l) = self.live.get_mut(&u) {
                l.save(&u);
            }
        }
        for u in self.dirty_history.drain() {
            if let Some(h) = self.history.get(&u) {
                let _ = state::set_json(&format!("user/{u}"), h);
            }
        }
        for g in self.dirty_peers.drain() {
            if let Some(x) = self.peers.get(&g) {
                let _ = state::set_json(&format!("peer/{g}"), x);
            }
        }
    }
}

/// A finished clock hour, as the history needs it.
struct Hour {
    slot: u8,
    group: String,
    patients: usize,
    own_flagged: bool,
    flagged: bool,
}

impl Detector for Volume {
    fn describe() -> Description {
        Description::new("volume-anomaly", env!("CARGO_PKG_VERSION"), &["volume_anomaly"]).schema(
            r#"{"type":"object","properties":{"z":{"type":"number"},"min_patients":{"type":"integer"},"min_ratio":{"type":"number"},"peer_warmup_hours":{"type":"integer"},"user_warmup_hours":{"type":"integer"},"slot_warmup_hours":{"type":"integer"},"absolute_max":{"type":"integer"}},"additionalProperties":false}"#,
        )
    }

    fn configure(config: &str) -> Result<Self, String> {
        Ok(Volume {
            s: phiwatch_plugin_sdk::parse_config(config)?,
            live: HashMap::new(),
            history: HashMap::new(),
            peers: HashMap::new(),
            dirty_live: HashSet::new(),
            dirty_history: HashSet::new(),
            dirty_peers: HashSet::new(),
        })
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        // Users whose spree has evidence not yet in a finding.
        let mut unflushed = BTreeSet::new();
        for a in &batch.accesses {
            let user = batch.user_of(a);
            let uid = user.id.as_str();
            let patient = &batch.patient_of(a).id;
            let group = || format!("{}|{}", batch.role_of(user), batch.department_of(user));
            let hour = a.time_ms.div_euclid(HOUR);
            let sl = slot(a.time_ms, a.local_hour);
            if !self.dirty_live.contains(uid) {
                self.dirty_live.insert(uid.to_owned());
            }

            // The clock hour, for the history.
            let live = self.live_of(uid);
            if live.hour != hour {
                // A late access from an earlier hour restarts that hour without closing it.
                let later = live.hour < hour;
                let done = Hour {
                    slot: live.slot,
                    group: std::mem::replace(&mut live.group, group()),
                    patients: if later {
                        live.patients_in(live.hour)
                    } else {
                        0
                    },
                    own_flagged: std::mem::take(&mut live.own_flagged),
                    flagged: std::mem::take(&mut live.flagged),
                };
                live.hour = hour;
                live.slot = sl;
                if later {
                    self.close(uid, done);
                }
            }
            let live = self.live.get_mut(uid).expect("loaded above");

            // The last 60 minutes, for detection.
            live.expire(a.time_ms - HOUR);
            live.push(Seen {
                t: a.time_ms,
                patient: patient.clone(),
                id: a.id,
            });

            if let Some(spree) = &mut live.spree {
                if a.time_ms - spree.last_t <= spree.pace_ms() {
                    spree.last_t = spree.last_t.max(a.time_ms);
                    spree.pending.push(a.id);
                    let own = spree.own;
                    let count = live.distinct();
                    if let Some(spree) = live.spree.as_mut() {
                        spree.count = count;
                    }
                    live.flagged = true;
                    live.own_flagged |= own;
                    unflushed.insert(uid.to_owned());
                    continue;
                }
                // A pause ends the spree; what it counted is not counted again.
                let mut ended = live.spree.take().expect("matched above");
                live.count_until(ended.last_t);
                flush(&mut ended, out);
            }
            // Every limit is at least min_patients: most accesses stop here, cheaply.
            if live.window.len() <= self.s.min_patients {
                continue;
            }
            let n = live.distinct();
            if n <= self.s.min_patients && n <= self.s.absolute_max {
                continue;
            }
            // The peer group the hour started with, borrowed rather than formatted again.
            let g = std::mem::take(&mut live.group);
            let basis = self.basis(uid, &g, sl);
            self.live.get_mut(uid).expect("loaded above").group = g;
            if (n as f64) <= basis.limit() && n <= self.s.absolute_max {
                continue;
            }
            let live = self.live.get_mut(uid).expect("loaded above");
            let limit = basis.limit();
            let own = matches!(basis, Basis::Own(_));
            let against = match basis {
                Basis::Own(_) => "their own history",
                Basis::Peers(_) => "their peers (no history of their own yet)",
                Basis::Ceiling(_) => "the absolute ceiling",
            };
            let mut spree = Spree {
                limit,
                own,
                high: false,
                note: String::new(),
                last_t: a.time_ms,
                count: n,
                pending: Vec::new(),
                crossing: Some(Crossing {
                    at: a.id,
                    against,
                    who: format!(
                        "User {uid} ({}, {})",
                        batch.role_of(user),
                        batch.department_of(user)
                    ),
                    ceiling: self.s.absolute_max as f64,
                }),
            };
            // The evidence is the run that made the count: back from this access while the
            // gaps keep the spree's pace.
            let pace = spree.pace_ms();
            let mut run = Vec::new();
            let mut next_t = a.time_ms;
            for x in live.window.iter().rev() {
                if x.t <= live.counted_until || next_t - x.t > pace {
                    break;
                }
                run.push(x.id);
                next_t = x.t;
            }
            run.reverse();
            spree.pending = run;
            live.flagged = true;
            live.own_flagged |= own;
            live.spree = Some(spree);
            unflushed.insert(uid.to_owned());
        }
        for uid in unflushed {
            let live = self.live.get_mut(&uid).expect("flushed users exist");
            if let Some(spree) = &mut live.spree {
                flush(spree, out);
            }
        }
        self.save();
    }
}

/// Reports a spree's evidence not yet in a finding: first the finding of the crossing, judged
/// on the count as of the end of the batch so a spree arriving in one batch is judged on all
/// of it; after that, continuations of the same spree.
fn flush(spree: &mut Spree, out: &mut Vec<Finding>) {
    if spree.pending.is_empty() {
        return;
    }
    let events = std::mem::take(&mut spree.pending);
    let n = spree.count;
    // Without the user's own history, a peer prior or the ceiling never makes a finding
    // high: the user may just be busy in a way peers are not. A spree that keeps growing past
    // its user's own norm becomes high; its alert follows.
    spree.high |= spree.own && n as f64 >= HIGH_OVER * spree.limit;
    let severity = if spree.high {
        Severity::High
    } else {
        Severity::Medium
    };
    if let Some(c) = spree.crossing.take() {
        let (against, allows) = if n as f64 > spree.limit {
            (c.against, spree.limit)
        } else {
            ("the absolute ceiling", c.ceiling)
        };
        spree.note = format!(
            "{} opened {n} distinct patients' records within an hour; {against} allows about \
             {allows:.0}.",
            c.who
        );
        out.push(
            Finding::new("volume_anomaly", severity, spree.note.clone(), c.at)
                .with_events(events)
                .with_score((n as f64 / (2.0 * spree.limit)).min(1.0)),
        );
        return;
    }
    let at = *events.last().expect("not empty");
    out.push(
        Finding::new(
            "volume_anomaly",
            severity,
            format!(
                "{} Continued: {n} distinct patients within the hour so far.",
                spree.note
            ),
            at,
        )
        .with_events(events),
    );
}

phiwatch_plugin_sdk::export_detector!(Volume);

#[cfg(test)]
mod tests {
    use super::*;
    use phiwatch_plugin_sdk::testing::{access, batch_of, TestAccess};

    /// Peers opening 6 patients an hour for 8 hours: a warm peer prior.
    fn peers() -> Vec<TestAccess> {
        let mut a = Vec::new();
        for h in 0..8 {
            for u in 0..40 {
                for p in 0..6 {
                    a.push(access(
                        h * HOUR + (u * 6 + p) * 1000,
                        &format!("u{u}"),
                        &format!("p{u}-{h}-{p}"),
                    ));
                }
            }
        }
        a
    }

    #[test]
    fn a_burst_far_above_peers_is_one_medium_finding_with_its_evidence() {
        state::clear_for_tests();
        let mut v = Volume::configure("{}").unwrap();
        let mut out = Vec::new();
        v.detect(&batch_of(peers()), &mut out);
        assert!(out.is_empty(), "normal hours flagged: {out:?}");
        // A newcomer without history opens 60 patients within 40 minutes of hour 9.
        let burst: Vec<_> = (0..60)
            .map(|p| access(9 * HOUR + p * 40_000, "new", &format!("burst-{p}")))
            .collect();
        v.detect(&batch_of(burst), &mut out);
        assert_eq!(out.len(), 1, "one finding per user and hour: {out:?}");
        assert_eq!(
            out[0].severity,
            Severity::Medium,
            "judged on peers: medium at most"
        );
        assert!(out[0].events.len() >= 30, "{} events", out[0].events.len());
        assert!(out[0].explanation.contains("their peers"));
        // A user with eight hours of history at 6 an hour doing the same: their own history
        // judges, and ten times their norm is high.
        let burst: Vec<_> = (0..60)
            .map(|p| access(9 * HOUR + p * 40_000, "u3", &format!("b3-{p}")))
            .collect();
        v.detect(&batch_of(burst), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].severity, Severity::High);
        assert!(out[1].explanation.contains("their own history"));
    }

    #[test]
    fn a_spree_across_the_top_of_the_hour_is_not_cut_in_two() {
        state::clear_for_tests();
        let mut v = Volume::configure("{}").unwrap();
        let mut out = Vec::new();
        v.detect(&batch_of(peers()), &mut out);
        // 45 patients from 9:40 to 10:21: 20 in one clock hour, 25 in the next.
        let burst: Vec<_> = (0..45)
            .map(|p| {
                access(
                    9 * HOUR + 40 * 60_000 + p * 55_000,
                    "new",
                    &format!("b-{p}"),
                )
            })
            .collect();
        let ids: HashSet<u64> = burst.iter().map(|a| a.access.id).collect();
        let mut burst = burst.into_iter().peekable();
        while burst.peek().is_some() {
            v.detect(&batch_of(burst.by_ref().take(10).collect()), &mut out);
        }
        let firsts = out
            .iter()
            .filter(|f| !f.explanation.contains("Continued"))
            .count();
        assert_eq!(firsts, 1, "{out:?}");
        let covered: HashSet<u64> = out.iter().flat_map(|f| f.events.clone()).collect();
        assert_eq!(covered, ids, "the whole run is evidence");
        // An ordinary access twenty minutes later is not part of it, and the spree's patients
        // are not counted into a second one.
        let later = access(10 * HOUR + 45 * 60_000, "new", "later");
        v.detect(&batch_of(vec![later]), &mut out);
        assert!(out.iter().all(|f| f.events.iter().all(|e| ids.contains(e))));
    }

    #[test]
    fn warm_up_uses_only_the_absolute_ceiling() {
        state::clear_for_tests();
        let mut v = Volume::configure(r#"{"absolute_max": 100}"#).unwrap();
        let mut out = Vec::new();
        let burst: Vec<_> = (0..60)
            .map(|p| access(p * 1000, "u1", &format!("p{p}")))
            .collect();
        v.detect(&batch_of(burst), &mut out);
        assert!(out.is_empty(), "flagged with no baseline: {out:?}");
    }

    /// Five days of a radiology technician opening 60 to 90 charts every hour, beside peers
    /// at 6 an hour; on day five, one hour at five times the norm.
    fn five_days(spree_at: i64) -> Vec<Vec<TestAccess>> {
        let mut days = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i64
        };
        for d in 0..5 {
            let mut batch = Vec::new();
            for h in 0..24 {
                let hour = d * 24 + h;
                let n = if hour == spree_at {
                    375
                } else {
                    60 + next() % 31
                };
                for p in 0..n {
                    batch.push(
                        access(
                            hour * HOUR + p * (HOUR / (n + 1)),
                            "tech",
                            &format!("t{hour}-{p}"),
                        )
                        .role("technician")
                        .department("Radiology"),
                    );
                }
                for u in 0..20 {
                    for p in 0..6 {
                        batch.push(access(
                            hour * HOUR + 500 + (u * 6 + p) * 1000,
                            &format!("n{u}"),
                            &format!("n{u}-{hour}-{p}"),
                        ));
                    }
                }
            }
            batch.sort_by_key(|a| a.access.time_ms);
            // Batches of a few hundred accesses, as the live agent hands them over.
            let mut chunk = Vec::new();
            for a in batch {
                chunk.push(a);
                if chunk.len() == 300 {
                    days.push(std::mem::take(&mut chunk));
                }
            }
            days.push(chunk);
        }
        days
    }

    fn run(batches: Vec<Vec<TestAccess>>, restart_at: Option<usize>) -> Vec<Finding> {
        run_restarting(batches, |i| restart_at == Some(i))
    }

    fn run_restarting(
        batches: Vec<Vec<TestAccess>>,
        restart: impl Fn(usize) -> bool,
    ) -> Vec<Finding> {
        state::clear_for_tests();
        let mut v = Volume::configure("{}").unwrap();
        let mut out = Vec::new();
        for (i, b) in batches.into_iter().enumerate() {
            if restart(i) {
                v = Volume::configure("{}").unwrap();
            }
            v.detect(&batch_of(b), &mut out);
        }
        out
    }

    #[test]
    fn a_steady_heavy_user_is_quiet_after_warm_up_and_a_spree_is_one_finding() {
        let spree = 4 * 24 + 10;
        let batches = five_days(spree);
        let spree_ids: HashSet<u64> = batches
            .iter()
            .flatten()
            .filter(|a| a.user.id == "tech" && a.access.time_ms.div_euclid(HOUR) == spree)
            .map(|a| a.access.id)
            .collect();
        let out = run(batches, None);
        let after_warm_up: Vec<&Finding> = out
            .iter()
            .filter(|f| f.explanation.contains("User tech"))
            .filter(|f| !f.explanation.contains("peers") && !f.explanation.contains("ceiling"))
            .collect();
        let (crossing, rest): (Vec<&Finding>, Vec<&Finding>) = after_warm_up
            .iter()
            .partition(|f| !f.explanation.contains("Continued"));
        assert_eq!(crossing.len(), 1, "{crossing:?}");
        let f = crossing[0];
        assert!(
            f.explanation.contains("their own history"),
            "{}",
            f.explanation
        );
        let worst = after_warm_up.iter().map(|f| f.severity).max().unwrap();
        assert_eq!(worst, Severity::High, "five times the norm");
        // Later batches of the hour are evidence of the same spree, never a new judgement,
        // and together they name every access of the hour.
        assert!(rest
            .iter()
            .all(|c| c.explanation.starts_with(&f.explanation)));
        let covered: HashSet<u64> = after_warm_up
            .iter()
            .flat_map(|f| f.events.clone())
            .collect();
        assert!(
            covered.is_superset(&spree_ids),
            "every access of the spree hour is evidence"
        );
        // Ordinary work either side of the spree is not evidence beyond a gap or two of it.
        assert!(
            covered.len() <= spree_ids.len() + 3,
            "{} of {}",
            covered.len(),
            spree_ids.len()
        );
        // During warm-up the peers' prior may object, once per hour at most, medium only.
        let warm_up: Vec<&Finding> = out
            .iter()
            .filter(|f| f.explanation.contains("peers") || f.explanation.contains("ceiling"))
            .collect();
        assert!(warm_up.len() <= 8, "{} warm-up findings", warm_up.len());
        assert!(warm_up.iter().all(|f| f.severity == Severity::Medium));
        assert!(
            !out.iter().any(|f| f.explanation.contains("User n")),
            "peers are quiet"
        );
    }

    #[test]
    fn a_restart_in_the_middle_changes_nothing() {
        let spree = 4 * 24 + 10;
        let batches = five_days(spree);
        let mid_spree = batches
            .iter()
            .position(|b| {
                b.iter()
                    .any(|a| a.access.time_ms >= spree * HOUR + HOUR / 2 && a.user.id == "tech")
            })
            .unwrap();
        let straight = run(five_days(spree), None);
        for at in [batches.len() / 3, mid_spree] {
            let restarted = run(five_days(spree), Some(at));
            let key = |f: &Finding| (f.severity, f.explanation.clone(), f.events.len());
            assert_eq!(
                straight.iter().map(key).collect::<Vec<_>>(),
                restarted.iter().map(key).collect::<Vec<_>>(),
                "restart at batch {at}"
            );
        }
    }

    #[test]
    fn restarting_before_every_batch_changes_nothing_and_keeps_only_the_hour() {
        let spree = 4 * 24 + 10;
        let key = |f: &Finding| (f.severity, f.explanation.clone(), f.events.clone());
        // Batches of 7, so chunks are appended to, cut and expired mid-way.
        let all = five_days(spree).concat();
        let last = all.iter().map(|a| a.access.time_ms).max().unwrap();
        let tech_last_hour = all
            .iter()
            .filter(|a| a.user.id == "tech" && a.access.time_ms > last - HOUR)
            .count() as u64;
        let small: Vec<Vec<TestAccess>> = all.chunks(7).map(<[_]>::to_vec).collect();
        let straight: Vec<_> = run(small.clone(), None).iter().map(key).collect();
        assert!(!straight.is_empty());
        let restarted: Vec<_> = run_restarting(small, |_| true).iter().map(key).collect();
        assert_eq!(straight, restarted);
        // Only the tech's last hour stays saved: expired chunks are deleted, not left behind.
        let chunks = state::keys_for_tests()
            .into_iter()
            .filter(|k| k.starts_with("win/tech/"))
            .count() as u64;
        let want = tech_last_hour.div_ceil(CHUNK);
        assert!(
            (want..=want + 1).contains(&chunks),
            "{chunks} chunks saved for {tech_last_hour} accesses"
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_field() {
        let e = Volume::configure(r#"{"zz": 1}"#).err().unwrap();
        assert!(e.contains("zz"), "{e}");
    }
}
