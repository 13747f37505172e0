//! Counts of one variant since the process started (requests, errors, latency
//! histogram), kept only for experiments with a ramp: the gate judges the counts since
//! its step began (these minus the ones at the step's start), not the sliding window.

use crate::guard::window::{lat_bucket, WindowStats, LAT_BUCKETS};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A variant's running totals.
pub struct Totals {
    n: AtomicU64,
    errors: AtomicU64,
    lat: Box<[AtomicU64]>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            n: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            lat: (0..LAT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Totals {
    /// Count one request.
    ///
    /// Hot path: called once per request of a ramped experiment; two or three relaxed
    /// atomic adds.
    #[inline]
    pub fn record(&self, latency_us: u64, error: bool) {
        self.n.fetch_add(1, Relaxed);
        if error {
            self.errors.fetch_add(1, Relaxed);
        }
        self.lat[lat_bucket(latency_us)].fetch_add(1, Relaxed);
    }

    /// The totals so far.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            n: self.n.load(Relaxed),
            errors: self.errors.load(Relaxed),
            hist: self.lat.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

/// `now` minus `base` (the totals at the step's start), each count at least zero.
pub fn since(now: &WindowStats, base: &WindowStats) -> WindowStats {
    WindowStats {
        n: now.n.saturating_sub(base.n),
        errors: now.errors.saturating_sub(base.errors),
        hist: now
            .hist
            .iter()
            .enumerate()
            .map(|(i, h)| h.saturating_sub(base.hist.get(i).copied().unwrap_or(0)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_since_a_base_are_the_difference() {
        let t = Totals::default();
        t.record(1_000, false);
        let base = t.stats();
        t.record(1_000, true);
        t.record(2_000, false);
        let s = since(&t.stats(), &base);
        assert_eq!((s.n, s.errors), (2, 1));
        assert_eq!(s.hist.iter().sum::<u64>(), 2);
        assert_eq!(since(&base, &t.stats()).n, 0);
    }
}
