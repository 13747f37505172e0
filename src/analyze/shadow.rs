//! The shadow section of a report: per variant, what its shadow copies found — mismatch
//! rate with a Wilson interval, the most frequent differing JSON pointers, the status
//! confusion matrix, p50/p99 latency of both sides and their ratio.
//!
//! [`ShadowTally`] folds one copy at a time in fixed memory (counts, a bounded pointer
//! table, two latency histograms of the guardrail windows' buckets, 12.5% resolution), so
//! `abgate analyze` (from `shadow` records) and the admin API (live, from the copies as
//! they finish) compute the section with the same code.

use crate::events::{ShadowRecord, ShadowResult};
use crate::guard::window::{lat_bucket, WindowStats, LAT_BUCKETS};
use crate::stats::wilson;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Distinct differing pointers counted; pointers first seen after that count as
/// [`OTHER_POINTERS`].
pub const MAX_DISTINCT_POINTERS: usize = 1024;
/// The name pointers beyond [`MAX_DISTINCT_POINTERS`] are counted under.
pub const OTHER_POINTERS: &str = "(other)";
/// Pointers listed in a report.
pub const TOP_POINTERS: usize = 10;

/// One copy as the tally reads it (from a record being written, or read back).
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// What became of it.
    pub result: ShadowResult,
    /// Why it was skipped or failed.
    pub reason: Option<&'a str>,
    /// Served and shadow status.
    pub statuses: (u16, u16),
    /// Served and shadow latency (ms, to the last byte).
    pub latency_ms: (f64, Option<f64>),
}

impl<'a> Observed<'a> {
    /// The record's fields.
    pub fn of(r: &'a ShadowRecord) -> Observed<'a> {
        Observed {
            result: r.result,
            reason: r.reason,
            statuses: (r.primary_status, r.shadow_status),
            latency_ms: (r.primary_latency_ms, r.shadow_latency_ms),
        }
    }
}

/// Everything the section is computed from, for one variant's shadow.
#[derive(Debug, Clone, Default)]
pub struct ShadowTally {
    /// Copies by result, in [`ShadowResult::ALL`] order.
    pub results: [u64; 4],
    /// Skipped and failed copies by reason.
    pub reasons: BTreeMap<String, u64>,
    /// Mismatches naming each pointer.
    pub pointers: HashMap<String, u64>,
    /// Compared pairs by (served status, shadow status).
    pub statuses: BTreeMap<(u16, u16), u64>,
    /// Latency histograms of compared pairs (served, shadow), µs buckets.
    pub hist: [Vec<u64>; 2],
    /// The shadow upstream named by the copies.
    pub upstream: Option<String>,
}

impl ShadowTally {
    /// Fold in one copy and the pointers its mismatch named.
    pub fn add<'p>(&mut self, o: &Observed<'_>, pointers: impl IntoIterator<Item = &'p str>) {
        self.results[o.result as usize] += 1;
        if let Some(r) = o.reason {
            *self.reasons.entry(r.to_string()).or_default() += 1;
        }
        if !matches!(o.result, ShadowResult::Match | ShadowResult::Mismatch) {
            return;
        }
        *self.statuses.entry(o.statuses).or_default() += 1;
        if self.hist[0].is_empty() {
            self.hist = [vec![0; LAT_BUCKETS], vec![0; LAT_BUCKETS]];
        }
        self.hist[0][lat_bucket((o.latency_ms.0 * 1000.0) as u64)] += 1;
        if let Some(s) = o.latency_ms.1 {
            self.hist[1][lat_bucket((s * 1000.0) as u64)] += 1;
        }
        for p in pointers {
            let at_limit = self.pointers.len() >= MAX_DISTINCT_POINTERS;
            match self.pointers.get_mut(p) {
                Some(n) => *n += 1,
                None if at_limit => {
                    *self.pointers.entry(OTHER_POINTERS.into()).or_default() += 1;
                }
                None => {
                    self.pointers.insert(p.to_string(), 1);
                }
            }
        }
    }

    fn count(&self, r: ShadowResult) -> u64 {
        self.results[r as usize]
    }

    /// The section, with intervals at `confidence`.
    pub fn report(&self, experiment: &str, variant: &str, confidence: f64) -> ShadowReport {
        let matches = self.count(ShadowResult::Match);
        let mismatches = self.count(ShadowResult::Mismatch);
        let compared = matches + mismatches;
        let (rate, ci) = if compared > 0 {
            let (lo, hi) = wilson(mismatches as f64, compared as f64, confidence);
            (Some(mismatches as f64 / compared as f64), Some([lo, hi]))
        } else {
            (None, None)
        };
        let mut top: Vec<(&String, &u64)> = self.pointers.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top_pointers = top
            .into_iter()
            .take(TOP_POINTERS)
            .map(|(p, &n)| PointerCount {
                pointer: p.clone(),
                mismatches: n,
                share_of_mismatches: n as f64 / mismatches.max(1) as f64,
            })
            .collect();
        let q = |side: usize, q: f64| {
            WindowStats {
                n: 0,
                errors: 0,
                hist: self.hist[side].clone(),
            }
            .quantile_ms(q)
        };
        let (p50, p99) = ([q(0, 0.5), q(1, 0.5)], [q(0, 0.99), q(1, 0.99)]);
        let ratio = |s: [Option<f64>; 2]| match s {
            [Some(p), Some(s)] if p > 0.0 => Some(s / p),
            _ => None,
        };
        ShadowReport {
            experiment: experiment.to_string(),
            variant: variant.to_string(),
            upstream: self.upstream.clone().unwrap_or_default(),
            copies: self.results.iter().sum(),
            compared,
            matches,
            mismatches,
            errors: self.count(ShadowResult::Error),
            skipped: self.count(ShadowResult::Skipped),
            reasons: self.reasons.clone(),
            mismatch_rate: rate,
            mismatch_ci: ci,
            top_pointers,
            statuses: self
                .statuses
                .iter()
                .map(|(&(primary, shadow), &count)| StatusPair {
                    primary,
                    shadow,
                    count,
                })
                .collect(),
            latency_ms: Latency {
                primary_p50: p50[0],
                primary_p99: p99[0],
                shadow_p50: p50[1],
                shadow_p99: p99[1],
                ratio_p50: ratio(p50),
                ratio_p99: ratio(p99),
            },
        }
    }
}

/// The shadow section of one variant.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// Experiment.
    pub experiment: String,
    /// Variant whose requests were copied.
    pub variant: String,
    /// The shadow upstream.
    pub upstream: String,
    /// Copies in all (compared, failed, skipped).
    pub copies: u64,
    /// Pairs compared (matches + mismatches).
    pub compared: u64,
    /// Pairs that agree.
    pub matches: u64,
    /// Pairs that differ.
    pub mismatches: u64,
    /// Copies that failed.
    pub errors: u64,
    /// Copies not sent.
    pub skipped: u64,
    /// Skipped and failed copies by reason.
    pub reasons: BTreeMap<String, u64>,
    /// mismatches / compared; null when nothing was compared.
    pub mismatch_rate: Option<f64>,
    /// Its Wilson interval at the report's confidence.
    pub mismatch_ci: Option<[f64; 2]>,
    /// The most frequent differing pointers (`""`: the whole body).
    pub top_pointers: Vec<PointerCount>,
    /// Status confusion matrix of the compared pairs.
    pub statuses: Vec<StatusPair>,
    /// Latency of the compared pairs.
    pub latency_ms: Latency,
}

/// A pointer and how many mismatches named it.
#[derive(Debug, Clone, Serialize)]
pub struct PointerCount {
    /// JSON pointer.
    pub pointer: String,
    /// Mismatches naming it.
    pub mismatches: u64,
    /// Its share of all mismatches.
    pub share_of_mismatches: f64,
}

/// One cell of the status confusion matrix.
#[derive(Debug, Clone, Serialize)]
pub struct StatusPair {
    /// Served status.
    pub primary: u16,
    /// Shadow status.
    pub shadow: u16,
    /// Pairs.
    pub count: u64,
}

/// p50/p99 of both sides (ms, 12.5% resolution) and shadow / served ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Served p50.
    pub primary_p50: Option<f64>,
    /// Served p99.
    pub primary_p99: Option<f64>,
    /// Shadow p50.
    pub shadow_p50: Option<f64>,
    /// Shadow p99.
    pub shadow_p99: Option<f64>,
    /// shadow_p50 / primary_p50.
    pub ratio_p50: Option<f64>,
    /// shadow_p99 / primary_p99.
    pub ratio_p99: Option<f64>,
}

/// The fields of a `shadow` line the report reads.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ShadowLine {
    pub experiment: String,
    pub variant: String,
    #[serde(default)]
    pub upstream: Option<String>,
    pub result: ShadowResult,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub primary_status: u16,
    #[serde(default)]
    pub shadow_status: u16,
    #[serde(default)]
    pub primary_latency_ms: f64,
    #[serde(default)]
    pub shadow_latency_ms: Option<f64>,
    #[serde(default)]
    pub pointers: Vec<String>,
}

impl ShadowLine {
    /// Fold this line into `t`.
    pub fn add_to(&self, t: &mut ShadowTally) {
        if t.upstream.is_none() {
            t.upstream = self.upstream.clone();
        }
        let o = Observed {
            result: self.result,
            reason: self.reason.as_deref(),
            statuses: (self.primary_status, self.shadow_status),
            latency_ms: (self.primary_latency_ms, self.shadow_latency_ms),
        };
        t.add(&o, self.pointers.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(result: ShadowResult, st: (u16, u16), lat: (f64, f64)) -> Observed<'static> {
        Observed {
            result,
            reason: None,
            statuses: st,
            latency_ms: (lat.0, Some(lat.1)),
        }
    }

    #[test]
    fn the_section_counts_rates_pointers_statuses_and_latency_ratios() {
        let mut t = ShadowTally::default();
        for i in 0..95 {
            t.add(
                &pair(
                    ShadowResult::Match,
                    (200, 200),
                    (10.0, 20.0 + i as f64 * 0.01),
                ),
                [],
            );
        }
        for _ in 0..4 {
            t.add(
                &pair(ShadowResult::Mismatch, (200, 200), (10.0, 20.0)),
                ["/label"],
            );
        }
        t.add(
            &pair(ShadowResult::Mismatch, (200, 500), (10.0, 20.0)),
            ["/label", ""],
        );
        let skip = Observed {
            result: ShadowResult::Skipped,
            reason: Some("busy"),
            statuses: (200, 0),
            latency_ms: (10.0, None),
        };
        t.add(&skip, []);
        let r = t.report("e", "t", 0.95);
        assert_eq!(
            (r.copies, r.compared, r.matches, r.mismatches, r.skipped),
            (101, 100, 95, 5, 1)
        );
        assert_eq!(r.reasons["busy"], 1);
        assert_eq!(r.mismatch_rate, Some(0.05));
        // scipy.stats.binomtest(5, 100).proportion_ci(0.95, method="wilson")
        let [lo, hi] = r.mismatch_ci.unwrap();
        assert!(
            (lo - 0.021543679).abs() < 1e-6 && (hi - 0.111750469).abs() < 1e-6,
            "{lo} {hi}"
        );
        assert_eq!(r.top_pointers[0].pointer, "/label");
        assert_eq!(r.top_pointers[0].mismatches, 5);
        assert_eq!(r.top_pointers[1].pointer, "");
        assert_eq!(r.statuses.len(), 2);
        assert_eq!(
            (
                r.statuses[1].primary,
                r.statuses[1].shadow,
                r.statuses[1].count
            ),
            (200, 500, 1)
        );
        let ratio = r.latency_ms.ratio_p50.unwrap();
        // 10 ms and 20 ms land in buckets whose midpoints are within 12.5% of them.
        assert!((1.6..2.5).contains(&ratio), "{ratio}");
    }

    #[test]
    fn pointers_beyond_the_table_are_counted_as_other() {
        let mut t = ShadowTally::default();
        let names: Vec<String> = (0..MAX_DISTINCT_POINTERS + 5)
            .map(|i| format!("/{i}"))
            .collect();
        for n in &names {
            t.add(
                &pair(ShadowResult::Mismatch, (200, 200), (1.0, 1.0)),
                [n.as_str()],
            );
        }
        assert_eq!(t.pointers.len(), MAX_DISTINCT_POINTERS + 1);
        assert_eq!(t.pointers[OTHER_POINTERS], 5);
    }

    #[test]
    fn nothing_compared_gives_no_rate() {
        let r = ShadowTally::default().report("e", "t", 0.95);
        assert_eq!((r.mismatch_rate, r.mismatch_ci), (None, None));
        assert!(r.latency_ms.ratio_p99.is_none());
    }
}
