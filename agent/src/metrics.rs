//! The agent's counters and their Prometheus text rendering (`/metrics`).

use crate::spool::IntakeMetrics;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::time::now_ms;

/// Upper bounds (seconds) of the delay histogram's buckets.
const DELAY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Seconds from an access's own time to its findings being stored: how far detection trails
/// the EHR. Clock skew between the EHR and this host shows up here too, which is worth seeing.
#[derive(Default)]
pub struct DelayHistogram {
    buckets: [AtomicU64; DELAY_BUCKETS.len()],
    count: AtomicU64,
    sum_ms: AtomicI64,
}

impl DelayHistogram {
    pub fn observe(&self, delay_ms: i64) {
        let delay_ms = delay_ms.max(0);
        let secs = delay_ms as f64 / 1000.0;
        for (i, le) in DELAY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(delay_ms, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "phiwatch_event_delay_seconds";
        out.push_str(&format!(
            "# HELP {name} Seconds from an access's recorded time to its findings being stored.\n# TYPE {name} histogram\n"
        ));
        for (i, le) in DELAY_BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{le}\"}} {}\n",
                self.buckets[i].load(Ordering::Relaxed)
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {count}\n",
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        ));
    }
}

#[derive(Default)]
pub struct SourceMetrics {
    pub name: String,
    pub lines: AtomicU64,
    pub accesses: AtomicU64,
    pub bad_lines: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub files: AtomicU64,
    pub last_checkpoint_ms: AtomicI64,
    pub errors: AtomicU64,
    /// Lines skipped because decoding them panicked or killed the process before.
    pub quarantined: AtomicU64,
    /// Patients of multi-patient records past the per-record cap (counted, not judged).
    pub patients_over_cap: AtomicU64,
    /// Messages or folder events taken into the spool (syslog and folder sources).
    pub intake: Arc<IntakeMetrics>,
    /// CSV action words the mapping does not know, per word.
    pub unknown_actions: Arc<crate::decode::csv::UnknownNames>,
}

#[derive(Default)]
pub struct Metrics {
    pub sources: Vec<SourceMetrics>,
    pub findings: AtomicU64,
    pub findings_new: AtomicU64,
    pub store_errors: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub detection_alive: AtomicBool,
    /// When the batch being judged was handed over (0: none in hand).
    pub detect_batch_sent_ms: AtomicI64,
    /// Hand-over to stored, for the last batch.
    pub detect_last_lag_ms: AtomicI64,
    /// Set by SIGHUP: reload settings, policies and context now.
    pub reload_requested: AtomicBool,
    pub delay: DelayHistogram,
    pub alerts_opened: AtomicU64,
    pub notifications_queued: AtomicU64,
    pub notify: Arc<crate::notify::NotifyMetrics>,
    pub plugins: Arc<crate::plugin::PluginMetrics>,
    /// What the detection thread has loaded (set at start and on each reload).
    pub loaded: std::sync::RwLock<Option<crate::reload::LoadedSummary>>,
    /// What access-log rows taught the context, since it was last loaded.
    pub inline: std::sync::Mutex<crate::context::inline::InlineStats>,
    /// Fleet mode: this node's role and its view of the queue and the lease.
    pub fleet: FleetMetrics,
}

/// Fleet mode's gauges (`phiwatch_fleet_*`), rendered only when a role other than `all` runs.
#[derive(Debug, Default)]
pub struct FleetMetrics {
    pub role: std::sync::OnceLock<crate::fleet::Role>,
    /// 1 while this detector holds the lease.
    pub lease_held: AtomicBool,
    /// The epoch of the lease this detector holds or last held.
    pub lease_epoch: AtomicI64,
    /// Batches appended and not yet applied, fleet-wide, as last read.
    pub backlog_batches: AtomicI64,
    pub batches_appended: AtomicU64,
    pub batches_applied: AtomicU64,
    /// Database errors (each retried: a reconnect, or a takeover).
    pub errors: AtomicU64,
}

impl FleetMetrics {
    fn render(&self, out: &mut String) {
        let Some(role) = self.role.get() else {
            return;
        };
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str(&format!(
            "# HELP phiwatch_fleet_role This node's role in the fleet.\n# TYPE phiwatch_fleet_role gauge\nphiwatch_fleet_role{{role=\"{}\"}} 1\n",
            role.as_str()
        ));
        for (name, kind, help, v) in [
            (
                "phiwatch_fleet_lease_held",
                "gauge",
                "1 while this detector holds the detector lease.",
                i64::from(self.lease_held.load(Ordering::Relaxed)),
            ),
            (
                "phiwatch_fleet_lease_epoch",
                "gauge",
                "Epoch of the detector lease this node holds or last held.",
                g(&self.lease_epoch),
            ),
            (
                "phiwatch_fleet_backlog_batches",
                "gauge",
                "Batches appended and not yet applied, fleet-wide, as last read.",
                g(&self.backlog_batches),
            ),
            (
                "phiwatch_fleet_batches_appended_total",
                "counter",
                "Batches this collector appended to the ingest queue.",
                c(&self.batches_appended) as i64,
            ),
            (
                "phiwatch_fleet_batches_applied_total",
                "counter",
                "Batches this detector applied.",
                c(&self.batches_applied) as i64,
            ),
            (
                "phiwatch_fleet_errors_total",
                "counter",
                "Database errors, each retried (reconnect or takeover).",
                c(&self.errors) as i64,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
    }
}

/// Why `/healthz` answers 503.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unhealthy {
    #[error("detection stopped")]
    Stopped,
    #[error("detection is {seconds:.0} s behind (max_detection_lag_seconds {max})")]
    Behind { seconds: f64, max: u64 },
    #[error("the spool of source {0:?} is full")]
    SpoolFull(String),
}

impl Metrics {
    /// What `/healthz` reports: detection running, not lagging, and no spool at its cap.
    pub fn health(&self, max_lag: std::time::Duration) -> Result<(), Unhealthy> {
        if !self.detection_alive.load(Ordering::Relaxed) {
            return Err(Unhealthy::Stopped);
        }
        let lag = self.detection_lag_ms();
        if lag > max_lag.as_millis() as i64 {
            return Err(Unhealthy::Behind {
                seconds: lag as f64 / 1000.0,
                max: max_lag.as_secs(),
            });
        }
        if let Some(s) = self
            .sources
            .iter()
            .find(|s| s.intake.spool_full.load(Ordering::Relaxed))
        {
            return Err(Unhealthy::SpoolFull(s.name.clone()));
        }
        Ok(())
    }

    /// How long the batch in hand has waited, or the last one took.
    pub fn detection_lag_ms(&self) -> i64 {
        let sent = self.detect_batch_sent_ms.load(Ordering::Relaxed);
        let current = if sent == 0 { 0 } else { now_ms() - sent };
        current.max(self.detect_last_lag_ms.load(Ordering::Relaxed))
    }

    /// The counters an operator looks at first, as JSON (the console's status page).
    pub fn summary(&self) -> serde_json::Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sources: Vec<serde_json::Value> = self
            .sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "lines": n(&s.lines),
                    "events": n(&s.accesses),
                    "bad_lines": n(&s.bad_lines),
                    "lag_bytes": n(&s.lag_bytes),
                    "errors": n(&s.errors),
                    "last_checkpoint": match s.last_checkpoint_ms.load(Ordering::Relaxed) {
                        0 => None,
                        ms => Some(crate::time::format_ms(ms)),
                    },
                })
            })
            .collect();
        let plugins: serde_json::Map<String, serde_json::Value> = self
            .plugins
            .snapshot()
            .into_iter()
            .map(|(name, c)| {
                (
                    name,
                    serde_json::json!({
                        "calls": c.calls,
                        "accesses": c.accesses,
                        "findings": c.findings,
                        "failures": c.failures.values().sum::<u64>(),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "up": self.detection_alive.load(Ordering::Relaxed),
            "findings": n(&self.findings),
            "findings_new": n(&self.findings_new),
            "alerts_opened": n(&self.alerts_opened),
            "notifications_queued": n(&self.notifications_queued),
            "notifications_sent": n(&self.notify.sent),
            "dead_letters": n(&self.notify.dead_letters),
            "store_errors": n(&self.store_errors),
            "reloads": n(&self.reloads),
            "reload_failures": n(&self.reload_failures),
            "sources": sources,
            "plugins": plugins,
        })
    }

    /// The agent-wide counters and gauges: name, kind, help, value.
    fn counters(&self) -> [(&'static str, &'static str, &'static str, &AtomicU64); 13] {
        let n = &self.notify;
        [
            (
                "phiwatch_findings_total",
                "counter",
                "Findings raised (including replays).",
                &self.findings,
            ),
            (
                "phiwatch_findings_stored_total",
                "counter",
                "Findings new to the store.",
                &self.findings_new,
            ),
            (
                "phiwatch_store_errors_total",
                "counter",
                "Store transactions that failed.",
                &self.store_errors,
            ),
            (
                "phiwatch_reloads_total",
                "counter",
                "Successful reloads of settings, policies, context and routing.",
                &self.reloads,
            ),
            (
                "phiwatch_reload_failures_total",
                "counter",
                "Rejected reloads (the previous version keeps running).",
                &self.reload_failures,
            ),
            (
                "phiwatch_alerts_opened_total",
                "counter",
                "Alerts opened.",
                &self.alerts_opened,
            ),
            (
                "phiwatch_notifications_queued_total",
                "counter",
                "Notifications written to the outbox.",
                &self.notifications_queued,
            ),
            (
                "phiwatch_notifications_sent_total",
                "counter",
                "Notifications delivered.",
                &n.sent,
            ),
            (
                "phiwatch_notifications_retried_total",
                "counter",
                "Transient delivery failures, retried.",
                &n.retried,
            ),
            (
                "phiwatch_notifications_failed_total",
                "counter",
                "Notifications that became dead letters.",
                &n.dead,
            ),
            (
                "phiwatch_notifications_suppressed_total",
                "counter",
                "Notifications not sent: acknowledged, silenced or inhibited.",
                &n.suppressed,
            ),
            (
                "phiwatch_notifications_pending",
                "gauge",
                "Notifications waiting in the outbox.",
                &n.pending,
            ),
            (
                "phiwatch_notifications_dead_letters",
                "gauge",
                "Dead letters (phiwatch notify dead-letters).",
                &n.dead_letters,
            ),
        ]
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP phiwatch_up 1 while the detection thread runs.\n# TYPE phiwatch_up gauge\n",
        );
        out.push_str(&format!(
            "phiwatch_up {}\n",
            u8::from(self.detection_alive.load(Ordering::Relaxed))
        ));
        out.push_str(&format!(
            "# HELP phiwatch_detection_lag_seconds How long the batch being judged has waited, or the last batch took, from hand-over to stored.\n# TYPE phiwatch_detection_lag_seconds gauge\nphiwatch_detection_lag_seconds {}\n",
            self.detection_lag_ms() as f64 / 1000.0
        ));
        let sources: Vec<(&str, &SourceMetrics)> =
            self.sources.iter().map(|m| (m.name.as_str(), m)).collect();
        labelled(&mut out, &PER_SOURCE, "source", &sources);
        render_unknown_actions(&self.sources, &mut out);
        render_inline(
            *self.inline.lock().unwrap_or_else(|e| e.into_inner()),
            &mut out,
        );
        self.fleet.render(&mut out);
        for (name, kind, help, v) in self.counters() {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        self.delay.render(&mut out);
        render_plugins(&self.plugins.snapshot(), &mut out);
        out
    }
}

/// The per-source series, labelled `source`.
const PER_SOURCE: [Series<SourceMetrics>; 19] = [
    (
        "phiwatch_source_lines_total",
        "counter",
        "Lines read per source.",
        |m| m.lines.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_events_total",
        "counter",
        "Patient accesses decoded per source.",
        |m| m.accesses.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_bad_lines_total",
        "counter",
        "Lines rejected by the decoder per source.",
        |m| m.bad_lines.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_quarantined_total",
        "counter",
        "Lines skipped because decoding them panicked or killed the agent (see data_dir/rejects).",
        |m| m.quarantined.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_patients_over_cap_total",
        "counter",
        "Patients of one record beyond the 1,000 judged per record.",
        |m| m.patients_over_cap.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_lag_bytes",
        "gauge",
        "Bytes written to tailed files but not yet processed.",
        |m| m.lag_bytes.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_files",
        "gauge",
        "Files tracked per source.",
        |m| m.files.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_errors_total",
        "counter",
        "Read or store failures per source (retried).",
        |m| m.errors.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_received_total",
        "counter",
        "Syslog messages or folder events taken into the source's spool.",
        |m| m.intake.received.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_rejected_total",
        "counter",
        "Syslog messages or connections rejected (framing, size, TLS), or watch errors.",
        |m| m.intake.rejected.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_connections_total",
        "counter",
        "TCP and TLS connections accepted.",
        |m| m.intake.connections.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_connections_refused_total",
        "counter",
        "Connections closed on arrival at the listener's max_connections.",
        |m| m.intake.refused.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_timeouts_total",
        "counter",
        "Connections closed for idling, a frame not completed in time, or a TLS handshake not finished.",
        |m| m.intake.timeouts.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_accept_errors_total",
        "counter",
        "Failed accepts (descriptors exhausted and the like), each followed by a back-off.",
        |m| m.intake.accept_errors.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_spool_bytes",
        "gauge",
        "Bytes the source's spool holds on disk.",
        |m| m.intake.spool_bytes.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_spool_full",
        "gauge",
        "1 while the source's spool is at spool_max_bytes.",
        |m| u8::from(m.intake.spool_full.load(Ordering::Relaxed)) as f64,
    ),
    (
        "phiwatch_spool_dropped_total",
        "counter",
        "UDP messages dropped because the spool was at its cap.",
        |m| m.intake.spool_dropped.load(Ordering::Relaxed) as f64,
    ),
    (
        "phiwatch_source_kernel_drops_total",
        "counter",
        "UDP datagrams the kernel dropped for the source's socket (receive buffer full).",
        |m| match m.intake.udp_inode.load(Ordering::Relaxed) {
            0 => 0.0,
            inode => udp_drops(inode).unwrap_or(0) as f64,
        },
    ),
    (
        "phiwatch_checkpoint_age_seconds",
        "gauge",
        "Seconds since the source last saved its checkpoint.",
        |m| {
            let last = m.last_checkpoint_ms.load(Ordering::Relaxed);
            if last == 0 {
                -1.0
            } else {
                (now_ms() - last) as f64 / 1000.0
            }
        },
    ),
];

/// The kernel's drop counter for the UDP socket with this inode (`/proc/net/udp`, `udp6`:
/// the last column). Linux only; `None` elsewhere or when the socket is gone.
pub fn udp_drops(inode: u64) -> Option<u64> {
    let want = inode.to_string();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ref pointer drops
            if cols.get(9) == Some(&want.as_str()) {
                return cols.last()?.parse().ok();
            }
        }
    }
    None
}

/// Series with one line per item, labelled `label="item name"`: each as HELP and TYPE, then
/// its lines.
type Series<'a, T> = (&'a str, &'a str, &'a str, fn(&T) -> f64);

fn labelled<T>(out: &mut String, series: &[Series<'_, T>], label: &str, items: &[(&str, &T)]) {
    for (name, kind, help, get) in series {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (item, v) in items {
            out.push_str(&format!("{name}{{{label}=\"{item}\"}} {}\n", get(v)));
        }
    }
}

/// One series per source and action word a CSV mapping does not know (at most 256 words per
/// source): what to add to the source's `actions` or `actions_file`.
fn render_inline(s: crate::context::inline::InlineStats, out: &mut String) {
    let name = "phiwatch_context_from_log";
    out.push_str(&format!(
        "# HELP {name} What access-log rows taught the context since it was last loaded: patients added, facts filled, disagreements with a feed (the feed kept), user names linked.\n# TYPE {name} gauge\n"
    ));
    for (kind, v) in [
        ("patients_added", s.patients_added),
        ("facts_filled", s.facts_filled),
        ("conflicts", s.conflicts),
        ("users_linked", s.users_linked),
    ] {
        out.push_str(&format!("{name}{{kind=\"{kind}\"}} {v}\n"));
    }
}

fn render_unknown_actions(sources: &[SourceMetrics], out: &mut String) {
    let name = "phiwatch_source_unknown_actions_total";
    out.push_str(&format!(
        "# HELP {name} Rows whose action word the source's mapping does not know (read as its default_action), per word.\n# TYPE {name} counter\n"
    ));
    for m in sources {
        for (word, n) in m.unknown_actions.snapshot() {
            out.push_str(&format!(
                "{name}{{source=\"{}\",action=\"{}\"}} {n}\n",
                label_value(&m.name),
                label_value(&word)
            ));
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_plugins(
    plugins: &std::collections::BTreeMap<String, crate::plugin::Counters>,
    out: &mut String,
) {
    let series: [Series<crate::plugin::Counters>; 6] = [
        (
            "phiwatch_plugin_calls_total",
            "counter",
            "Calls per plugin.",
            |c| c.calls as f64,
        ),
        (
            "phiwatch_plugin_accesses_total",
            "counter",
            "Accesses handed to each plugin.",
            |c| c.accesses as f64,
        ),
        (
            "phiwatch_plugin_findings_total",
            "counter",
            "Findings kept from each plugin.",
            |c| c.findings as f64,
        ),
        (
            "phiwatch_plugin_busy_seconds_total",
            "counter",
            "Time spent in each plugin's calls.",
            |c| c.busy.as_secs_f64(),
        ),
        (
            "phiwatch_plugin_logs_dropped_total",
            "counter",
            "Plugin log lines over the per-call budget.",
            |c| c.logs_dropped as f64,
        ),
        (
            "phiwatch_plugin_state_bytes",
            "gauge",
            "Bytes of state each plugin keeps.",
            |c| c.state_bytes as f64,
        ),
    ];
    let items: Vec<(&str, &crate::plugin::Counters)> =
        plugins.iter().map(|(p, c)| (p.as_str(), c)).collect();
    labelled(out, &series, "plugin", &items);
    let name = "phiwatch_plugin_failures_total";
    out.push_str(&format!(
        "# HELP {name} Failed plugin calls by kind (deadline, memory, stack_overflow, trap, output, instantiate).\n# TYPE {name} counter\n"
    ));
    for (p, c) in plugins {
        for (kind, n) in &c.failures {
            out.push_str(&format!("{name}{{plugin=\"{p}\",kind=\"{kind}\"}} {n}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_degrades_with_lag_and_a_full_spool() {
        let m = Metrics {
            sources: vec![SourceMetrics {
                name: "atna".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let max = std::time::Duration::from_secs(60);
        assert_eq!(m.health(max), Err(Unhealthy::Stopped));
        m.detection_alive.store(true, Ordering::Relaxed);
        assert_eq!(m.health(max), Ok(()));
        // A batch in hand for two minutes.
        m.detect_batch_sent_ms
            .store(now_ms() - 120_000, Ordering::Relaxed);
        assert!(m.health(max).unwrap_err().to_string().contains("behind"));
        m.detect_batch_sent_ms.store(0, Ordering::Relaxed);
        m.detect_last_lag_ms.store(61_000, Ordering::Relaxed);
        assert!(m.health(max).is_err(), "the last batch took too long");
        m.detect_last_lag_ms.store(10, Ordering::Relaxed);
        m.sources[0]
            .intake
            .spool_full
            .store(true, Ordering::Relaxed);
        assert!(m.health(max).unwrap_err().to_string().contains("spool"));
    }
}
