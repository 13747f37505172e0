//! Per-unit aggregation, then per-variant reduction, of one experiment.
//!
//! While the files are read, [`ExpAcc`] keeps one record per randomization unit of the
//! experiment, in order of first exposure: its variant, whether it was also seen in
//! another variant (then it is excluded), the time of its first exposure, and per
//! metric the sum of its outcomes and whether any was > 0. After the read,
//! [`ExpAcc::reduce`] turns the records into the experiment's sufficient statistics
//! ([`ExperimentStats`]): per variant and metric the moments of the per-unit values (two
//! passes: the mean, then the deviations), the request-level moments, new units per
//! second or minute (`timeline`).
//!
//! A bandit experiment keeps, beside each record, the period of its first exposure and
//! whether it was later exposed on another arm ([`super::bandit::BanditAcc`]): such a
//! unit is *moved*, not mixed — it stays in its first arm, and its outcomes count until
//! the move.
//!
//! The records are flat arrays (`slots` values per record), so memory grows with units ×
//! metrics and nothing is allocated per line except a unit's first record.

use super::sufficient::{metric_slots, ExperimentStats, VariantMetric};
use super::timeline;
use crate::config::{Config, MetricKind};
use crate::stats::{CoMoments, Moments, Running};
use smallvec::SmallVec;

/// The first-exposure time of a record whose exposure had no readable `ts`.
const NO_TIME: i64 = i64::MIN;

/// The experiments a unit is in: (experiment index, record index).
pub(super) type UnitExperiments = SmallVec<[(u16, u32); 2]>;
/// Every unit seen.
pub(super) type UnitMap = hashbrown::HashMap<Box<str>, UnitExperiments, rustc_hash::FxBuildHasher>;

/// One experiment's running aggregates. Per unit (a "record", in order of first
/// exposure) the variant, whether it was seen in another variant too, the time of its
/// first exposure, and per metric slot whether any value was > 0 and the sum — in flat
/// arrays, `slots` per record.
pub(super) struct ExpAcc {
    /// (layer index, experiment index) in the config.
    at: (usize, usize),
    /// The metrics this experiment reports, as indices into `cfg.metrics`
    /// ([`metric_slots`]).
    pub metric_slots: Vec<usize>,
    variant_names: Vec<Box<str>>,
    /// Per record, its (first) variant.
    pub variant: Vec<u16>,
    mixed: Vec<bool>,
    /// Per record, its first exposure's time in seconds since the epoch ([`NO_TIME`]
    /// when it had no readable `ts`).
    first_time: Vec<i64>,
    values: Vec<f64>,
    any: Vec<bool>,
    latency: Vec<Running>,   // per variant
    errors: Vec<(u64, u64)>, // per variant: errors, requests
    /// Bandit experiments: per record, its first period and whether it moved.
    pub bandit: Option<super::bandit::BanditAcc>,
}

impl ExpAcc {
    /// An empty accumulator for experiment `at` (layer index, experiment index) of `cfg`.
    pub fn new(cfg: &Config, at: (usize, usize)) -> ExpAcc {
        let e = &cfg.layers[at.0].experiments[at.1];
        let nv = e.variants.len();
        ExpAcc {
            at,
            metric_slots: metric_slots(cfg, e),
            variant_names: e.variants.iter().map(|v| Box::from(&*v.name)).collect(),
            variant: Vec::new(),
            mixed: Vec::new(),
            first_time: Vec::new(),
            values: Vec::new(),
            any: Vec::new(),
            latency: vec![Running::default(); nv],
            errors: vec![(0, 0); nv],
            bandit: e
                .bandit
                .as_ref()
                .map(|_| super::bandit::BanditAcc::default()),
        }
    }

    /// (layer index, experiment index) in the config.
    pub fn at(&self) -> (usize, usize) {
        self.at
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
            self.latency[vi].push(l);
        }
        let e = &mut self.errors[vi];
        e.1 += 1;
        if error {
            e.0 += 1;
        }
    }

    /// The unit whose experiments are `list` was exposed to variant `vi` of this
    /// experiment (number `ei`) at `ts`, in bandit period `period`: its first exposure
    /// makes a new record; an exposure to another variant later marks the record mixed
    /// (moved, for a bandit).
    pub fn expose(
        &mut self,
        list: &mut UnitExperiments,
        ei: usize,
        vi: usize,
        ts: Option<&str>,
        period: Option<u64>,
    ) {
        let vi = vi as u16;
        match list.iter().find(|(e, _)| *e as usize == ei) {
            Some(&(_, ri)) => {
                if self.variant[ri as usize] != vi {
                    match &mut self.bandit {
                        Some(b) => b.moved[ri as usize] = true,
                        None => self.mixed[ri as usize] = true,
                    }
                }
            }
            None => {
                let ri = self.records() as u32;
                self.push_record(vi, ts);
                if let Some(b) = &mut self.bandit {
                    b.push(period);
                }
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
        self.first_time
            .push(ts.and_then(timeline::seconds_of_ts).unwrap_or(NO_TIME));
    }

    /// An outcome `value` of metric `mi` (index into `cfg.metrics`) for record `ri`;
    /// ignored when this experiment does not report the metric.
    pub fn add_outcome(&mut self, ri: usize, mi: usize, value: f64) {
        if self.bandit.as_ref().is_some_and(|b| b.moved[ri]) {
            return; // a moved unit's outcomes count until its move
        }
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
    fn in_variant(&self, v: usize) -> impl Iterator<Item = usize> + Clone + '_ {
        (0..self.records()).filter(move |&ri| !self.mixed[ri] && self.variant[ri] as usize == v)
    }

    /// The sufficient statistics of the experiment. `covariate` gives the
    /// pre-experiment covariate of a record when covariates were given (CUPED); a unit
    /// without one gets the mean covariate of the experiment's units that have one.
    pub fn reduce(
        &self,
        cfg: &Config,
        covariate: Option<&dyn Fn(usize) -> Option<f64>>,
    ) -> ExperimentStats {
        let nv = self.variant_names.len();
        let mut out = ExperimentStats::empty(cfg, self.at);
        let counted = || (0..self.records()).filter(|&ri| !self.mixed[ri]);
        out.mixed = (self.records() - counted().count()) as u64;
        let times = counted()
            .map(|ri| self.first_time[ri])
            .filter(|&t| t != NO_TIME);
        let per_second = match (times.clone().min(), times.max()) {
            (Some(first), Some(last)) => timeline::per_second(first, last),
            _ => false,
        };
        for ri in counted() {
            let v = self.variant[ri] as usize;
            out.units[v] += 1;
            let key = match self.first_time[ri] {
                NO_TIME => String::new(),
                t => timeline::key_of(t, per_second),
            };
            out.new_units.entry(key).or_insert_with(|| vec![0; nv])[v] += 1;
        }
        let xs: Option<Vec<f64>> = covariate.and_then(|cov| self.imputed_covariates(cov));
        for (slot, (mi, per_variant)) in out.metrics.iter_mut().enumerate() {
            let kind = cfg.metrics[*mi].kind;
            for (v, vm) in per_variant.iter_mut().enumerate() {
                let ys = self.in_variant(v).map(|ri| self.y(ri, slot, kind));
                *vm = match &xs {
                    Some(xs) => VariantMetric::with_covariate(&CoMoments::of(
                        ys.zip(self.in_variant(v).map(|ri| xs[ri])),
                    )),
                    None => VariantMetric {
                        y: Moments::of(ys),
                        x: None,
                    },
                };
            }
        }
        out.latency = self.latency.iter().map(Running::moments).collect();
        out.errors = self
            .errors
            .iter()
            .map(|&(errors, n)| Moments::binomial(n, errors))
            .collect();
        out
    }

    /// Every record's covariate, a missing one replaced by the mean of the counted units
    /// that have one; `None` when no counted unit has one.
    fn imputed_covariates(&self, cov: &dyn Fn(usize) -> Option<f64>) -> Option<Vec<f64>> {
        let xs: Vec<Option<f64>> = (0..self.records()).map(cov).collect();
        let known = (0..self.records())
            .filter(|&ri| !self.mixed[ri])
            .filter_map(|ri| xs[ri]);
        let known = Moments::of(known);
        if known.n == 0 {
            return None;
        }
        let fill = known.mean;
        Some(xs.into_iter().map(|x| x.unwrap_or(fill)).collect())
    }
}
