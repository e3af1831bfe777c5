//! Scores findings against the demo's injected ground truth.

use crate::finding::{Finding, Severity};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Deserialize)]
struct TruthLine {
    event_id: String,
    kind: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    scenario: Option<String>,
}

#[derive(Debug, Default)]
pub struct Score {
    /// category → (injected, caught)
    pub recall: BTreeMap<String, (usize, usize)>,
    pub high_findings: usize,
    pub high_true: usize,
    /// scenario → (count, flagged at high or critical)
    pub hard_negatives: BTreeMap<String, (usize, usize)>,
    pub findings: usize,
    pub by_severity: BTreeMap<Severity, usize>,
    /// Labelled events (violations and hard negatives).
    pub labelled: usize,
    /// Unlabelled (normal) events, once the total is known ([`Score::set_total_events`]).
    pub normal_events: usize,
    /// Normal events any detector (policy or plugin) flagged high or critical.
    pub false_high: usize,
    /// Of those, the ones a plugin flagged.
    pub plugin_false_high: usize,
}

impl Score {
    pub fn precision_high(&self) -> f64 {
        if self.high_findings == 0 {
            1.0
        } else {
            self.high_true as f64 / self.high_findings as f64
        }
    }

    pub fn set_total_events(&mut self, total: usize) {
        self.normal_events = total.saturating_sub(self.labelled);
    }

    /// Normal events flagged high or critical, by any detector, per 10,000 normal events.
    pub fn false_high_per_10k(&self) -> f64 {
        10_000.0 * self.false_high as f64 / self.normal_events.max(1) as f64
    }

    pub fn min_recall(&self) -> f64 {
        self.recall
            .values()
            .map(|&(n, c)| if n == 0 { 0.0 } else { c as f64 / n as f64 })
            .fold(1.0, f64::min)
    }

    pub fn render(&self) -> String {
        let mut s = String::from("detection against injected ground truth\n");
        s.push_str(&format!(
            "  {:<18} {:>8} {:>8} {:>8}\n",
            "category", "injected", "caught", "recall"
        ));
        for (c, &(n, k)) in &self.recall {
            let r = if n == 0 { 0.0 } else { k as f64 / n as f64 };
            s.push_str(&format!("  {c:<18} {n:>8} {k:>8} {r:>8.3}\n"));
        }
        s.push_str(&format!(
            "  precision over high and critical findings: {:.3} ({} of {})\n",
            self.precision_high(),
            self.high_true,
            self.high_findings
        ));
        if self.normal_events > 0 {
            s.push_str(&format!(
                "  all detectors: {} normal events of {} flagged high or critical ({:.2} per 10,000; {} by plugins)\n",
                self.false_high,
                self.normal_events,
                self.false_high_per_10k(),
                self.plugin_false_high
            ));
        }
        for (sc, &(n, f)) in &self.hard_negatives {
            s.push_str(&format!(
                "  hard negative {sc:<20} {n:>5} events, {f} flagged high or critical\n"
            ));
        }
        s
    }
}

pub fn score(truth_ndjson: &str, findings: &[Finding]) -> anyhow::Result<Score> {
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut negatives: HashMap<String, String> = HashMap::new();
    let mut sc = Score::default();
    for (i, line) in truth_ndjson.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: TruthLine =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("truth line {}: {e}", i + 1))?;
        match (t.kind.as_str(), t.category, t.scenario) {
            ("violation", Some(c), _) => {
                sc.recall.entry(c.clone()).or_default().0 += 1;
                expected.insert(t.event_id, c);
            }
            ("hard_negative", _, Some(s)) => {
                sc.hard_negatives.entry(s.clone()).or_default().0 += 1;
                negatives.insert(t.event_id, s);
            }
            _ => anyhow::bail!("truth line {}: unknown kind", i + 1),
        }
    }
    sc.labelled = expected.len() + negatives.len();
    let mut false_high: HashSet<&str> = HashSet::new();
    let mut plugin_false: HashSet<&str> = HashSet::new();
    let mut caught: HashSet<(&str, &str)> = HashSet::new();
    let mut negative_flagged: HashSet<&str> = HashSet::new();
    for f in findings {
        sc.findings += 1;
        *sc.by_severity.entry(f.severity).or_default() += 1;
        if let Some(c) = expected.get(&f.event_id) {
            if *c == f.category {
                caught.insert((f.event_id.as_str(), c.as_str()));
            }
        }
        if f.severity >= Severity::High {
            sc.high_findings += 1;
            if expected.contains_key(&f.event_id) {
                sc.high_true += 1;
            }
            if negatives.contains_key(&f.event_id) {
                negative_flagged.insert(f.event_id.as_str());
            }
            if !expected.contains_key(&f.event_id) && !negatives.contains_key(&f.event_id) {
                false_high.insert(f.event_id.as_str());
                if f.detector.starts_with("plugin:") {
                    plugin_false.insert(f.event_id.as_str());
                }
            }
        }
    }
    sc.false_high = false_high.len();
    sc.plugin_false_high = plugin_false.len();
    for (_, c) in caught {
        sc.recall.entry(c.to_owned()).or_default().1 += 1;
    }
    for id in negative_flagged {
        if let Some(s) = negatives.get(id) {
            sc.hard_negatives.entry(s.clone()).or_default().1 += 1;
        }
    }
    Ok(sc)
}
