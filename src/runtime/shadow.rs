//! Live shadow state per variant, kept across reloads: the copies in flight (a counter
//! with a non-blocking `try_acquire`, so a slot is never waited for), the highest count
//! seen, skips by reason (atomics: counted on the request path) and the tally of the
//! finished copies (behind a mutex taken only by shadow tasks and the admin API).
//!
//! The in-flight limit is read from the config generation of each request, and the count
//! is shared across generations, so a reload never lets more than the current
//! `max_in_flight` copies start.

use crate::analyze::shadow::{Observed, ShadowReport, ShadowTally};
use crate::config::Config;
use crate::events::ShadowResult;
use crate::metrics::{Metrics, ShadowMetrics};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Why a copy was not sent: the `reason` of a skipped copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The request body was longer than `max_body_bytes`.
    TooLarge,
    /// `max_in_flight` copies were already in flight.
    Busy,
    /// The served request did not complete (client gone, body unread).
    Incomplete,
}

impl SkipReason {
    /// Every reason, in the order of [`ShadowState::skips`].
    pub const ALL: [SkipReason; 3] = [
        SkipReason::TooLarge,
        SkipReason::Busy,
        SkipReason::Incomplete,
    ];

    /// The word in records and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TooLarge => "too_large",
            SkipReason::Busy => "busy",
            SkipReason::Incomplete => "incomplete",
        }
    }
}

/// One variant's shadow.
pub struct ShadowState {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    skips: [AtomicU64; 3],
    tally: Mutex<ShadowTally>,
    /// Metric handles.
    pub metrics: ShadowMetrics,
}

impl ShadowState {
    fn new(metrics: ShadowMetrics) -> ShadowState {
        ShadowState {
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            skips: Default::default(),
            tally: Mutex::new(ShadowTally::default()),
            metrics,
        }
    }

    /// A slot for one copy if fewer than `limit` are in flight; never waits.
    ///
    /// Hot path: called once per copied request.
    pub fn try_acquire(self: &Arc<Self>, limit: usize) -> Option<Slot> {
        let mut cur = self.in_flight.load(Relaxed);
        loop {
            if cur >= limit {
                return None;
            }
            match self
                .in_flight
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.peak.fetch_max(cur + 1, Relaxed);
        self.metrics.in_flight.inc();
        Some(Slot(self.clone()))
    }

    /// Count a copy not sent.
    ///
    /// Hot path: called once per skipped copy.
    pub fn skipped(&self, why: SkipReason) {
        self.skips[why as usize].fetch_add(1, Relaxed);
        self.metrics.results[ShadowResult::Skipped as usize].inc();
    }

    /// Fold in a finished copy (compared or failed) and the pointers it named.
    pub fn finished(&self, o: &Observed<'_>, upstream: &str, pointers: &[String]) {
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if t.upstream.is_none() {
            t.upstream = Some(upstream.to_string());
        }
        t.add(o, pointers.iter().map(String::as_str));
    }

    /// Copies in flight now, and the most ever in flight at once.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.in_flight.load(Relaxed), self.peak.load(Relaxed))
    }

    /// The live section: finished copies plus the skips.
    pub fn report(&self, experiment: &str, variant: &str, confidence: f64) -> ShadowReport {
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (r, n) in SkipReason::ALL.iter().zip(&self.skips) {
            let n = n.load(Relaxed);
            if n > 0 {
                t.results[ShadowResult::Skipped as usize] += n;
                *t.reasons.entry(r.as_str().to_string()).or_default() += n;
            }
        }
        t.report(experiment, variant, confidence)
    }
}

/// A copy's place among the in-flight ones; released when dropped.
pub struct Slot(Arc<ShadowState>);

impl Slot {
    /// The variant's shadow state.
    pub fn state(&self) -> &ShadowState {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        self.0.metrics.in_flight.dec();
    }
}

/// (experiment, variant) names.
type VariantKey = (Arc<str>, Arc<str>);

/// Per layer, experiment and variant: the shadow state of each variant with a shadow.
pub type ShadowStates = Vec<Vec<Vec<Option<Arc<ShadowState>>>>>;

/// Every variant's shadow state by (experiment, variant), kept across reloads.
#[derive(Default)]
pub struct ShadowStore {
    states: Mutex<HashMap<VariantKey, Arc<ShadowState>>>,
}

impl ShadowStore {
    /// Per layer, experiment and variant: the state of each variant with a shadow in
    /// `cfg` (made when first configured).
    pub fn for_config(&self, cfg: &Config, metrics: &Metrics) -> ShadowStates {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        cfg.layers
            .iter()
            .map(|l| {
                l.experiments
                    .iter()
                    .map(|e| {
                        e.variants
                            .iter()
                            .map(|v| {
                                v.shadow.as_ref()?;
                                let key = (e.name.clone(), v.name.clone());
                                let s = states.entry(key).or_insert_with(|| {
                                    Arc::new(ShadowState::new(
                                        metrics.shadow.handles(&e.name, &v.name),
                                    ))
                                });
                                Some(s.clone())
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_released_on_drop_and_the_peak_remembered() {
        let m = Metrics::new();
        let s = Arc::new(ShadowState::new(m.shadow.handles("e", "t")));
        let a = s.try_acquire(2).unwrap();
        let b = s.try_acquire(2).unwrap();
        assert!(s.try_acquire(2).is_none());
        assert_eq!(s.in_flight(), (2, 2));
        assert_eq!(s.metrics.in_flight.get(), 2);
        drop(a);
        assert!(
            s.try_acquire(1).is_none(),
            "a lower limit after a reload holds at once"
        );
        drop(b);
        assert_eq!(s.in_flight(), (0, 2));
        s.skipped(SkipReason::Busy);
        let r = s.report("e", "t", 0.95);
        assert_eq!((r.skipped, r.reasons["busy"]), (1, 1));
    }
}
