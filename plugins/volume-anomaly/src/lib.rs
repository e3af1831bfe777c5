//! Volume anomaly: a user who opens far more distinct patients within an hour than their own
//! history and their peers (same role and department) would explain.
//!
//! Baselines are medians and MADs of completed active hours (hours with at least one access),
//! kept in plugin state so they survive restarts. Until a baseline holds enough hours it is
//! warming up and is not used; with neither baseline warm only `absolute_max` applies.

use phiwatch_plugin_sdk::prelude::*;
use phiwatch_plugin_sdk::state;
use phiwatch_plugin_sdk::stats::Sample;
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};

const HOUR: i64 = 3_600_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Robust z-score above the baseline that counts as anomalous.
    pub z: f64,
    /// Never flag fewer distinct patients in an hour than this.
    pub min_patients: usize,
    /// Also at least this multiple of the baseline median.
    pub min_ratio: f64,
    /// Completed hours a peer group needs before its baseline is used.
    pub peer_warmup_hours: usize,
    /// Completed hours a user needs before their own baseline is used.
    pub user_warmup_hours: usize,
    /// Flagged whatever the baselines, even while warming up.
    pub absolute_max: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            z: 10.0,
            min_patients: 30,
            min_ratio: 3.0,
            peer_warmup_hours: 30,
            user_warmup_hours: 24,
            absolute_max: 150,
        }
    }
}

struct Seen {
    t: i64,
    patient: String,
    id: u64,
    reported: bool,
}

#[derive(Default)]
struct UserWindow {
    recent: VecDeque<Seen>,
    /// Accesses per patient within `recent`: its length is the distinct count.
    in_window: HashMap<String, u32>,
    hour: i64,
    hour_patients: HashSet<String>,
    hour_flagged: bool,
    group: String,
}

pub struct Volume {
    s: Settings,
    users: HashMap<String, UserWindow>,
    peers: HashMap<String, Sample>,
    own: HashMap<String, Sample>,
    /// Baselines changed in this batch, saved once at its end.
    dirty_peers: HashSet<String>,
    dirty_own: HashSet<String>,
}

impl Volume {
    fn peer(&mut self, group: &str) -> &mut Sample {
        self.peers.entry(group.to_owned()).or_insert_with(|| {
            state::get_json(&format!("peer/{group}")).unwrap_or_else(|| Sample::new(500))
        })
    }

    fn own(&mut self, user: &str) -> &mut Sample {
        self.own.entry(user.to_owned()).or_insert_with(|| {
            state::get_json(&format!("user/{user}")).unwrap_or_else(|| Sample::new(200))
        })
    }

    /// Records a finished hour in both baselines, unless it was itself anomalous.
    fn close_hour(&mut self, user: &str, group: &str, count: usize, flagged: bool) {
        if flagged || count == 0 {
            return;
        }
        self.peer(group).push(count as f64);
        self.own(user).push(count as f64);
        self.dirty_peers.insert(group.to_owned());
        self.dirty_own.insert(user.to_owned());
    }

    fn save(&mut self) {
        for g in self.dirty_peers.drain() {
            if let Some(s) = self.peers.get(&g) {
                let _ = state::set_json(&format!("peer/{g}"), s);
            }
        }
        for u in self.dirty_own.drain() {
            if let Some(s) = self.own.get(&u) {
                let _ = state::set_json(&format!("user/{u}"), s);
            }
        }
    }

    /// The count above which an hour is anomalous, or `None` while every baseline warms up.
    fn threshold(&mut self, user: &str, group: &str) -> Option<f64> {
        let s = self.s.clone();
        let mut limits = Vec::new();
        for sample in [self.peer(group).clone(), self.own(user).clone()]
            .iter()
            .zip([s.peer_warmup_hours, s.user_warmup_hours])
            .filter(|(x, warm)| x.len() >= *warm)
            .map(|(x, _)| x)
        {
            let (Some(m), Some(mad)) = (sample.median(), sample.mad()) else {
                continue;
            };
            limits.push((m + s.z * (mad * 1.4826).max(1.0)).max(m * s.min_ratio));
        }
        limits
            .into_iter()
            .reduce(f64::max)
            .map(|l| l.max(s.min_patients as f64))
    }
}

impl Detector for Volume {
    fn describe() -> Description {
        Description::new("volume-anomaly", env!("CARGO_PKG_VERSION"), &["volume_anomaly"]).schema(
            r#"{"type":"object","properties":{"z":{"type":"number"},"min_patients":{"type":"integer"},"min_ratio":{"type":"number"},"peer_warmup_hours":{"type":"integer"},"user_warmup_hours":{"type":"integer"},"absolute_max":{"type":"integer"}},"additionalProperties":false}"#,
        )
    }

    fn configure(config: &str) -> Result<Self, String> {
        Ok(Volume {
            s: phiwatch_plugin_sdk::parse_config(config)?,
            users: HashMap::new(),
            peers: HashMap::new(),
            own: HashMap::new(),
            dirty_peers: HashSet::new(),
            dirty_own: HashSet::new(),
        })
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        for a in &batch.accesses {
            let user = batch.user_of(a);
            let patient = &batch.patient_of(a).id;
            let group = format!("{}|{}", batch.role_of(user), batch.department_of(user));
            let hour = a.time_ms.div_euclid(HOUR);
            let w = self.users.entry(user.id.clone()).or_default();
            w.group.clone_from(&group);
            let finished = (w.hour != hour && !w.hour_patients.is_empty())
                .then_some((w.hour_patients.len(), w.hour_flagged));
            if w.hour != hour {
                w.hour = hour;
                w.hour_patients.clear();
                w.hour_flagged = false;
            }
            w.hour_patients.insert(patient.clone());
            while w.recent.front().is_some_and(|s| s.t <= a.time_ms - HOUR) {
                if let Some(old) = w.recent.pop_front() {
                    if let Some(c) = w.in_window.get_mut(&old.patient) {
                        *c -= 1;
                        if *c == 0 {
                            w.in_window.remove(&old.patient);
                        }
                    }
                }
            }
            *w.in_window.entry(patient.clone()).or_default() += 1;
            w.recent.push_back(Seen {
                t: a.time_ms,
                patient: patient.clone(),
                id: a.id,
                reported: false,
            });
            let n = w.in_window.len();
            if let Some((count, flagged)) = finished {
                self.close_hour(&user.id, &group, count, flagged);
            }
            // Every threshold is at least min_patients: most accesses stop here, cheaply.
            if n <= self.s.min_patients && n <= self.s.absolute_max {
                continue;
            }
            let limit = self.threshold(&user.id, &group);
            let w = self.users.get_mut(&user.id).expect("window inserted above");
            let over = match limit {
                Some(l) => n as f64 > l,
                None => n > self.s.absolute_max,
            };
            if !over {
                continue;
            }
            w.hour_flagged = true;
            let events: Vec<u64> = w
                .recent
                .iter_mut()
                .filter(|s| !s.reported)
                .map(|s| {
                    s.reported = true;
                    s.id
                })
                .collect();
            let limit = limit.unwrap_or(self.s.absolute_max as f64);
            let severity = if n as f64 >= 2.0 * limit {
                Severity::High
            } else {
                Severity::Medium
            };
            out.push(
                Finding::new(
                    "volume_anomaly",
                    severity,
                    format!(
                        "User {} ({}, {}) opened {n} distinct patients' records within an hour; their baseline allows about {:.0}.",
                        user.id, batch.role_of(user), batch.department_of(user), limit
                    ),
                    a.id,
                )
                .with_events(events)
                .with_score((n as f64 / (2.0 * limit)).min(1.0)),
            );
        }
        self.save();
    }
}

phiwatch_plugin_sdk::export_detector!(Volume);

#[cfg(test)]
mod tests {
    use super::*;
    use phiwatch_plugin_sdk::testing::{access, batch_of};

    #[test]
    fn a_burst_far_above_peers_is_flagged_and_normal_hours_are_not() {
        state::clear_for_tests();
        let mut v = Volume::configure("{}").unwrap();
        let mut out = Vec::new();
        // 40 peers, 6 patients an hour each, for 8 hours: the peer baseline.
        let mut accesses = Vec::new();
        for h in 0..8 {
            for u in 0..40 {
                for p in 0..6 {
                    accesses.push(access(
                        h * HOUR + (u * 6 + p) * 1000,
                        &format!("u{u}"),
                        &format!("p{u}-{h}-{p}"),
                    ));
                }
            }
        }
        v.detect(&batch_of(accesses), &mut out);
        assert!(out.is_empty(), "normal hours flagged: {out:?}");
        // One user opens 60 patients within 40 minutes of hour 9.
        let burst: Vec<_> = (0..60)
            .map(|p| access(9 * HOUR + p * 40_000, "u3", &format!("burst-{p}")))
            .collect();
        v.detect(&batch_of(burst), &mut out);
        let events: usize = out.iter().map(|f| f.events.len()).sum();
        assert!(!out.is_empty());
        assert!(events >= 55, "only {events} of 60 burst events reported");
        assert!(out.iter().all(|f| f.category == "volume_anomaly"));
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

    #[test]
    fn bad_settings_are_refused_with_the_field() {
        let e = Volume::configure(r#"{"zz": 1}"#).err().unwrap();
        assert!(e.contains("zz"), "{e}");
    }
}
