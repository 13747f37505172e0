//! Per-unit aggregation, then per-variant reduction, of one experiment.
//!
//! While the files are read, [`ExpAcc`] keeps one record per randomization unit of the
//! experiment, in order of first exposure: its variant, whether it was also seen in
//! another variant (then it is excluded), and per metric the sum of its outcomes and
//! whether any was > 0. After the read, the same accumulator reduces its records per
//! variant (units, per-unit observations, the request-level sums, units over time).
//!
//! The records are flat arrays (`slots` values per record), so memory grows with units ×
//! metrics and nothing is allocated per line except a unit's first record and its hour
//! key the first time an hour is seen.

use super::report::TimePoint;
use crate::config::{Experiment, MetricKind};
use crate::stats::Summary;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// The experiments a unit is in: (experiment index, record index).
pub(super) type UnitExperiments = SmallVec<[(u16, u32); 2]>;
/// Every unit seen.
pub(super) type UnitMap = hashbrown::HashMap<Box<str>, UnitExperiments, rustc_hash::FxBuildHasher>;

/// One experiment's running aggregates. Per unit (a "record", in order of first
/// exposure) the variant, whether it was seen in another variant too, and per metric
/// slot whether any value was > 0 and the sum — in flat arrays, `slots` per record.
pub(super) struct ExpAcc {
    /// The metrics this experiment reports, as indices into `cfg.metrics`: the primary
    /// metric first, then `metrics`, each once.
    pub metric_slots: Vec<usize>,
    variant_names: Vec<Box<str>>,
    variant: Vec<u16>,
    mixed: Vec<bool>,
    values: Vec<f64>,
    any: Vec<bool>,
    latency: Vec<(f64, f64, f64)>,         // per variant: n, sum, sumsq
    errors: Vec<(f64, f64)>,               // per variant: errors, n
    over_time: Vec<BTreeMap<String, u64>>, // per variant: hour → new units
}

impl ExpAcc {
    /// An empty accumulator for `e`; `metric_names` are the names of `cfg.metrics`.
    pub fn new(e: &Experiment, metric_names: &[&str]) -> ExpAcc {
        let mut slots: Vec<usize> = Vec::new();
        for m in e.primary_metric.iter().chain(e.metrics.iter()) {
            if let Some(i) = metric_names.iter().position(|n| *n == &**m) {
                if !slots.contains(&i) {
                    slots.push(i);
                }
            }
        }
        let nv = e.variants.len();
        ExpAcc {
            metric_slots: slots,
            variant_names: e.variants.iter().map(|v| Box::from(&*v.name)).collect(),
            variant: Vec::new(),
            mixed: Vec::new(),
            values: Vec::new(),
            any: Vec::new(),
            latency: vec![(0.0, 0.0, 0.0); nv],
            errors: vec![(0.0, 0.0); nv],
            over_time: vec![BTreeMap::new(); nv],
        }
    }

    /// Units recorded (mixed ones included).
    pub fn records(&self) -> usize {
        self.variant.len()
    }

    /// The index of variant `name`, if the experiment has it. A linear scan: experiments
    /// have a handful of variants, and comparing a few short strings beats hashing one.
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variant_names.iter().position(|n| **n == *name)
    }

    /// One request served by variant `vi`, for the request-level metrics.
    pub fn count_request(&mut self, vi: usize, latency_ms: Option<f64>, error: bool) {
        if let Some(l) = latency_ms {
            let s = &mut self.latency[vi];
            s.0 += 1.0;
            s.1 += l;
            s.2 += l * l;
        }
        let e = &mut self.errors[vi];
        e.1 += 1.0;
        if error {
            e.0 += 1.0;
        }
    }

    /// The unit whose experiments are `list` was exposed to variant `vi` of this
    /// experiment (number `ei`) at `ts`: its first exposure makes a new record; an
    /// exposure to another variant later marks the record mixed.
    pub fn expose(&mut self, list: &mut UnitExperiments, ei: usize, vi: usize, ts: Option<&str>) {
        let vi = vi as u16;
        match list.iter().find(|(e, _)| *e as usize == ei) {
            Some(&(_, ri)) => {
                if self.variant[ri as usize] != vi {
                    self.mixed[ri as usize] = true;
                }
            }
            None => {
                let ri = self.records() as u32;
                self.push_record(vi, ts);
                list.push((ei as u16, ri));
            }
        }
    }

    fn push_record(&mut self, vi: u16, ts: Option<&str>) {
        let slots = self.metric_slots.len();
        self.variant.push(vi);
        self.mixed.push(false);
        self.values.resize(self.values.len() + slots, 0.0);
        self.any.resize(self.any.len() + slots, false);
        // the hour is the timestamp's first 13 characters (`2026-11-23T02`)
        let hour = ts.map_or("", |t| t.get(..13).unwrap_or(t));
        let per_hour = &mut self.over_time[vi as usize];
        match per_hour.get_mut(hour) {
            Some(n) => *n += 1,
            None => {
                per_hour.insert(hour.to_string(), 1);
            }
        }
    }

    /// An outcome `value` of metric `mi` (index into `cfg.metrics`) for record `ri`;
    /// ignored when this experiment does not report the metric.
    pub fn add_outcome(&mut self, ri: usize, mi: usize, value: f64) {
        if let Some(slot) = self.metric_slots.iter().position(|&s| s == mi) {
            let k = ri * self.metric_slots.len() + slot;
            self.values[k] += value;
            if value > 0.0 {
                self.any[k] = true;
            }
        }
    }

    /// The per-unit observation of record `ri` on metric `slot`: 1 if any value was > 0,
    /// else 0 (binomial); the sum (continuous).
    pub fn y(&self, ri: usize, slot: usize, kind: MetricKind) -> f64 {
        let k = ri * self.metric_slots.len() + slot;
        match kind {
            MetricKind::Binomial => self.any[k] as u8 as f64,
            MetricKind::Continuous => self.values[k],
        }
    }

    /// Records that count (not mixed) in variant `v`.
    pub fn in_variant(&self, v: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.records()).filter(move |&ri| !self.mixed[ri] && self.variant[ri] as usize == v)
    }

    /// Units per variant (mixed units excluded), and the number of mixed units.
    pub fn units_per_variant(&self) -> (Vec<u64>, u64) {
        let mut units = vec![0u64; self.variant_names.len()];
        let mut mixed = 0;
        for ri in 0..self.records() {
            if self.mixed[ri] {
                mixed += 1;
            } else {
                units[self.variant[ri] as usize] += 1;
            }
        }
        (units, mixed)
    }

    /// Latency over the requests of variant `v` that reported one.
    pub fn latency_summary(&self, v: usize) -> Summary {
        let (n, s, ss) = self.latency[v];
        Summary::from_sums(n, s, ss)
    }

    /// Requests of variant `v`: (requests with a latency, requests).
    pub fn requests(&self, v: usize) -> (f64, f64) {
        (self.latency[v].0, self.errors[v].1)
    }

    /// Error rate over the requests of variant `v`.
    pub fn error_summary(&self, v: usize) -> Summary {
        let (x, n) = self.errors[v];
        Summary::binomial(n, x)
    }

    /// Cumulative new units per variant, hour by hour.
    pub fn units_over_time(&self) -> Vec<TimePoint> {
        let mut hours: Vec<String> = self
            .over_time
            .iter()
            .flat_map(|m| m.keys().cloned())
            .collect();
        hours.sort();
        hours.dedup();
        let mut cum = vec![0u64; self.over_time.len()];
        hours
            .into_iter()
            .map(|h| {
                for (v, m) in self.over_time.iter().enumerate() {
                    cum[v] += m.get(&h).copied().unwrap_or(0);
                }
                TimePoint {
                    hour: h,
                    units: cum.clone(),
                }
            })
            .collect()
    }
}
