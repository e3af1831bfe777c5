//! Robust statistics for baselines: a bounded sample with median and MAD, so one burst in
//! the history cannot drag the baseline the way it drags a mean.

use serde::{Deserialize, Serialize};

/// The most recent `cap` observations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    values: Vec<f64>,
    /// Where the next observation goes once the sample is full.
    next: usize,
    cap: usize,
    /// Median and MAD until the next push: detectors ask on every access, and each answer
    /// sorts the sample twice.
    #[serde(skip)]
    memo: std::cell::Cell<Option<(f64, f64)>>,
}

impl Sample {
    pub fn new(cap: usize) -> Self {
        Sample {
            values: Vec::with_capacity(cap.min(1024)),
            next: 0,
            cap: cap.max(1),
            memo: Default::default(),
        }
    }

    pub fn push(&mut self, v: f64) {
        self.memo.set(None);
        if self.values.len() < self.cap {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
            self.next = (self.next + 1) % self.cap;
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn median(&self) -> Option<f64> {
        self.median_mad().map(|(m, _)| m)
    }

    /// Median absolute deviation from the median.
    pub fn mad(&self) -> Option<f64> {
        self.median_mad().map(|(_, mad)| mad)
    }

    fn median_mad(&self) -> Option<(f64, f64)> {
        if let Some(known) = self.memo.get() {
            return Some(known);
        }
        let m = median(&mut self.values.clone())?;
        let mut dev: Vec<f64> = self.values.iter().map(|v| (v - m).abs()).collect();
        let both = (m, median(&mut dev)?);
        self.memo.set(Some(both));
        Some(both)
    }

    /// How far `v` lies above the median in robust standard deviations (MAD × 1.4826, with
    /// `floor` as the smallest spread so a flat history does not make every change infinite).
    pub fn robust_z(&self, v: f64, floor: f64) -> Option<f64> {
        let m = self.median()?;
        let spread = (self.mad()? * 1.4826).max(floor);
        Some((v - m) / spread)
    }
}

pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_ignore_one_outlier() {
        let mut s = Sample::new(100);
        for v in [4.0, 5.0, 6.0, 5.0, 4.0, 6.0, 5.0, 500.0] {
            s.push(v);
        }
        assert_eq!(s.median(), Some(5.0));
        assert_eq!(s.mad(), Some(1.0));
        let z = s.robust_z(40.0, 1.0).unwrap();
        assert!(z > 20.0, "{z}");
    }

    #[test]
    fn sample_keeps_only_the_newest() {
        let mut s = Sample::new(3);
        for v in [1.0, 2.0, 3.0, 10.0, 10.0, 10.0] {
            s.push(v);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.median(), Some(10.0));
    }
}
