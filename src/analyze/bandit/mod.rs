//! The bandit section of `abgate analyze`: for an experiment with a bandit in the
//! config, each unit belongs to the period and arm of its first exposure (exposures
//! carry `bandit_period`); a unit later exposed on another arm is *moved* — it stays in
//! its first arm and its outcomes count until the move.
//!
//! - **Estimates**: per arm and metric, the period-weighted mean of the per-unit values
//!   and its interval, with the proxy's own code ([`crate::stats::bandit::estimate`]):
//!   each period weighs its share of all units (first seen in it), the same for every
//!   arm, so a base rate that drifts while the weights move does not bias the arms.
//! - **P(best)** of the reward, from the posteriors of those estimates, with the proxy's
//!   seed for the period after the last one seen: what the proxy's next update computes
//!   from the same sufficient statistics.
//! - **Weight history**: per period, from its `bandit` record, the shares served, the
//!   target weights and P(best); from the exposures, the units first seen per arm.
//! - **SRM by period**: each unit counted once, in the period of its first exposure,
//!   against the shares that period's table served; Pearson chi-square summed over
//!   periods, degrees of freedom summed over periods (arms with a non-zero share, minus
//!   one). Logs without `bandit` records: the history is missing and the check is skipped.

use super::aggregate::ExpAcc;
use super::report::ExperimentReport;
use super::verdict::SRM_THRESHOLD;
use super::Options;
use crate::config::{Config, MetricKind};
use crate::events::BanditRecord;
use crate::stats::bandit::{self as tsb, ArmStats, Posterior};
use crate::stats::{chi2_sf, norm_ppf};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// A record whose first exposure carried no `bandit_period`.
const NO_PERIOD: u64 = u64::MAX;

/// The rule of the bandit's SRM check, as the report names it.
pub const SRM_RULE: &str = "units counted once, in the period of their first exposure, against the shares that period served; chi-square summed over periods";

/// Per record of a bandit experiment: the period of its first exposure and whether it
/// was later exposed on another arm.
#[derive(Debug, Default)]
pub struct BanditAcc {
    /// Per record, its first exposure's `bandit_period` ([`NO_PERIOD`] when absent).
    pub period: Vec<u64>,
    /// Per record, whether it was later exposed on another arm.
    pub moved: Vec<bool>,
}

impl BanditAcc {
    /// A new record, first exposed in `period`.
    pub fn push(&mut self, period: Option<u64>) {
        self.period.push(period.unwrap_or(NO_PERIOD));
        self.moved.push(false);
    }
}

/// The bandit section of one experiment's report.
#[derive(Debug, Clone, Serialize)]
pub struct BanditReport {
    /// The reward metric.
    pub reward: String,
    /// `binomial` or `continuous`.
    pub kind: &'static str,
    /// Whether a higher reward is better.
    pub higher_is_better: bool,
    /// Units with a period (first exposure carried `bandit_period`).
    pub units: u64,
    /// Units later exposed on another arm (kept in their first arm, outcomes until the move).
    pub moved_units: u64,
    /// Units whose first exposure carried no `bandit_period` (left out).
    pub units_without_period: u64,
    /// Whether the logs hold the weight history (`bandit` records).
    pub weight_history: bool,
    /// Per arm, in config order.
    pub arms: Vec<BanditArm>,
    /// Per period seen (in the exposures or the records), in order.
    pub periods: Vec<BanditPeriod>,
    /// The SRM check against the per-period shares.
    pub srm: BanditSrm,
}

/// One arm of the bandit section.
#[derive(Debug, Clone, Serialize)]
pub struct BanditArm {
    /// The variant.
    pub variant: String,
    /// Units first exposed on it.
    pub units: u64,
    /// Of those, units later exposed on another arm.
    pub moved_units: u64,
    /// Probability of being the best arm on the reward (null without units).
    pub prob_best: f64,
    /// Per metric (the reward first): the period-weighted estimate.
    pub metrics: Vec<ArmMetric>,
}

/// One arm's period-weighted estimate of one metric.
#[derive(Debug, Clone, Serialize)]
pub struct ArmMetric {
    /// Metric name.
    pub metric: String,
    /// `binomial` or `continuous`.
    pub kind: &'static str,
    /// Period-weighted mean of the per-unit values (null without units).
    pub mean: f64,
    /// Its interval at the report's confidence: mean ± z·√Var(mean).
    pub ci: [f64; 2],
}

/// One period of the weight history.
#[derive(Debug, Clone, Serialize)]
pub struct BanditPeriod {
    /// Period number.
    pub period: u64,
    /// When it started (unix ms), from its `bandit` record; null without one.
    pub start_unix_ms: Option<u64>,
    /// The same, RFC 3339.
    pub start: Option<String>,
    /// Whether the bandit was exploring (equal weights).
    pub explore: Option<bool>,
    /// The shares served per arm (what units first seen in the period were assigned by).
    pub weights: Option<Vec<f64>>,
    /// The weights the table moved toward.
    pub target_weights: Option<Vec<f64>>,
    /// P(best) per arm when the period opened.
    pub prob_best: Option<Vec<f64>>,
    /// Units first seen in the period, per arm.
    pub units: Vec<u64>,
}

/// The SRM check of a bandit.
#[derive(Debug, Clone, Serialize)]
pub struct BanditSrm {
    /// The rule ([`SRM_RULE`]).
    pub rule: &'static str,
    /// The p-value; null when skipped.
    pub p_value: Option<f64>,
    /// Summed chi-square.
    pub chi_square: f64,
    /// Summed degrees of freedom.
    pub df: u64,
    /// Periods tested (with units and a `bandit` record).
    pub periods_tested: u64,
    /// Units first seen in periods without a `bandit` record (not tested).
    pub units_without_weights: u64,
    /// Units first seen on an arm its period served at share 0 (p = 0 when any).
    pub units_on_unserved_arms: u64,
    /// Why the check was skipped or what limits it; null otherwise.
    pub note: Option<String>,
}

/// The bandit section of the experiment whose aggregates are `acc`, with the `bandit`
/// records `records` read for it; `None` for an experiment without a bandit.
pub(super) fn section(
    cfg: &Config,
    acc: &ExpAcc,
    records: Option<&BTreeMap<u64, Vec<BanditRecord>>>,
    opts: &Options,
) -> Option<BanditReport> {
    let b = acc.bandit.as_ref()?;
    let (li, ei) = acc.at();
    let e = &cfg.layers[li].experiments[ei];
    let bandit = e.bandit.as_ref()?;
    let nv = e.variants.len();
    let arms: Vec<String> = e.variants.iter().map(|v| v.name.to_string()).collect();
    // The records of the config's arms (a history of other arms is another bandit).
    let records: BTreeMap<u64, BanditRecord> = records
        .into_iter()
        .flatten()
        .filter_map(|(&p, rs)| Some((p, rs.iter().find(|r| r.variants == arms)?.clone())))
        .collect();
    let records = &records;
    // Units first seen per period and arm, and the metric statistics per period.
    let mut units: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut stats: BTreeMap<u64, Vec<Vec<ArmStats>>> = BTreeMap::new(); // [slot][arm]
    let slots = acc.metric_slots.len();
    let (mut moved, mut without) = (vec![0u64; nv], 0u64);
    for ri in 0..acc.records() {
        let (p, arm) = (b.period[ri], acc.variant[ri] as usize);
        if p == NO_PERIOD {
            without += 1;
            continue;
        }
        units.entry(p).or_insert_with(|| vec![0; nv])[arm] += 1;
        moved[arm] += u64::from(b.moved[ri]);
        let per_slot = stats
            .entry(p)
            .or_insert_with(|| vec![vec![ArmStats::default(); nv]; slots]);
        for (slot, &mi) in acc.metric_slots.iter().enumerate() {
            let y = acc.y(ri, slot, cfg.metrics[mi].kind);
            let s = &mut per_slot[slot][arm];
            s.n += 1;
            s.sum += y;
            s.sum_sq += y * y;
        }
    }
    let z = norm_ppf(1.0 - (1.0 - opts.confidence) / 2.0);
    // The reward first, then the experiment's other metrics.
    let mut order: Vec<usize> = (0..slots).collect();
    order.sort_by_key(|&s| acc.metric_slots[s] != bandit.reward_index);
    let estimates = |slot: usize| -> Vec<tsb::Estimate> {
        let binomial = cfg.metrics[acc.metric_slots[slot]].kind == MetricKind::Binomial;
        let periods: Vec<Vec<ArmStats>> = stats.values().map(|s| s[slot].clone()).collect();
        (0..nv)
            .map(|a| tsb::estimate(&periods, a, binomial, true))
            .collect()
    };
    let per_metric: Vec<(usize, Vec<tsb::Estimate>)> =
        order.iter().map(|&s| (s, estimates(s))).collect();
    let prob_best = per_metric
        .iter()
        .find(|(s, _)| acc.metric_slots[*s] == bandit.reward_index)
        .filter(|_| !stats.is_empty())
        .map(|(_, est)| {
            let binomial = bandit.kind == MetricKind::Binomial;
            let post: Vec<Posterior> = est.iter().map(|e| Posterior::of(e, binomial)).collect();
            let next = units.keys().next_back().map_or(0, |p| p + 1);
            tsb::prob_best(&post, bandit.higher_is_better, tsb::seed(&e.name, next))
        })
        .unwrap_or_else(|| vec![f64::NAN; nv]);
    let arm_reports = (0..nv)
        .map(|a| BanditArm {
            variant: arms[a].clone(),
            units: units.values().map(|u| u[a]).sum(),
            moved_units: moved[a],
            prob_best: prob_best[a],
            metrics: per_metric
                .iter()
                .map(|(s, est)| {
                    let m = &cfg.metrics[acc.metric_slots[*s]];
                    let e = &est[a];
                    let (mean, h) = if e.n == 0 {
                        (f64::NAN, f64::NAN)
                    } else {
                        (e.mean, z * e.var_mean.sqrt())
                    };
                    ArmMetric {
                        metric: m.name.to_string(),
                        kind: m.kind.as_str(),
                        mean,
                        ci: [mean - h, mean + h],
                    }
                })
                .collect(),
        })
        .collect();
    let srm = srm(&units, records, &arms);
    Some(BanditReport {
        reward: bandit.reward.to_string(),
        kind: bandit.kind.as_str(),
        higher_is_better: bandit.higher_is_better,
        units: units.values().flatten().sum(),
        moved_units: moved.iter().sum(),
        units_without_period: without,
        weight_history: !records.is_empty(),
        arms: arm_reports,
        periods: history(&units, records, nv),
        srm,
    })
}

/// Every period seen in the exposures or the records, with what each says.
fn history(
    units: &BTreeMap<u64, Vec<u64>>,
    records: &BTreeMap<u64, BanditRecord>,
    nv: usize,
) -> Vec<BanditPeriod> {
    let mut periods: Vec<u64> = units.keys().chain(records.keys()).copied().collect();
    periods.sort_unstable();
    periods.dedup();
    periods
        .into_iter()
        .map(|p| {
            let r = records.get(&p);
            BanditPeriod {
                period: p,
                start_unix_ms: r.map(|r| r.start_unix_ms),
                start: r.map(|r| {
                    humantime::format_rfc3339_millis(
                        SystemTime::UNIX_EPOCH + Duration::from_millis(r.start_unix_ms),
                    )
                    .to_string()
                }),
                explore: r.map(|r| r.explore),
                weights: r.map(|r| r.weights.clone()),
                target_weights: r.map(|r| r.target_weights.clone()),
                prob_best: r.map(|r| r.prob_best.clone()),
                units: units.get(&p).cloned().unwrap_or_else(|| vec![0; nv]),
            }
        })
        .collect()
}

/// The SRM check: units first seen per period and arm against the shares the period's
/// record says it served (records naming other arms than the config are not used).
fn srm(
    units: &BTreeMap<u64, Vec<u64>>,
    records: &BTreeMap<u64, BanditRecord>,
    arms: &[String],
) -> BanditSrm {
    let mut out = BanditSrm {
        rule: SRM_RULE,
        p_value: None,
        chi_square: 0.0,
        df: 0,
        periods_tested: 0,
        units_without_weights: 0,
        units_on_unserved_arms: 0,
        note: None,
    };
    if records.is_empty() {
        out.note = Some("no `bandit` records in the logs (written by abgate since the bandit analysis): the weight history is missing and the SRM check is skipped".into());
        return out;
    }
    for (p, observed) in units {
        let n: u64 = observed.iter().sum();
        let Some(r) = records.get(p).filter(|r| r.variants == arms) else {
            out.units_without_weights += n;
            continue;
        };
        let (stat, served) = crate::stats::chi_square_statistic(observed, &r.weights);
        out.chi_square += stat;
        out.units_on_unserved_arms += observed
            .iter()
            .zip(&r.weights)
            .filter(|(_, &w)| w <= 0.0)
            .map(|(&o, _)| o)
            .sum::<u64>();
        out.df += (served.max(1) - 1) as u64;
        out.periods_tested += 1;
    }
    if out.periods_tested == 0 {
        out.note =
            Some("no period has both units and a `bandit` record: the SRM check is skipped".into());
        return out;
    }
    out.p_value = Some(if out.units_on_unserved_arms > 0 {
        0.0
    } else if out.df == 0 {
        1.0
    } else {
        chi2_sf(out.chi_square, out.df as f64)
    });
    let mut notes = Vec::new();
    if out.units_on_unserved_arms > 0 {
        notes.push(format!(
            "{} units were first seen on an arm their period served at share 0",
            out.units_on_unserved_arms
        ));
    }
    if out.units_without_weights > 0 {
        notes.push(format!(
            "{} units first seen in periods without a `bandit` record were not tested",
            out.units_without_weights
        ));
    }
    out.note = (!notes.is_empty()).then(|| notes.join("; "));
    out
}

/// Put the bandit section `b` in its experiment's report: the SRM p-value is the
/// per-period one, and the verdict `invalid` when it flags, else `keep_running` with
/// the leading arm named.
pub(super) fn apply(e: &mut ExperimentReport, b: BanditReport) {
    let p = b.srm.p_value;
    e.srm_p_value = p.unwrap_or(f64::NAN);
    let srm = match p {
        Some(p) => format!("SRM by period p={}", super::render::p(p)),
        None => "SRM by period skipped (no weight history)".into(),
    };
    let leader = b
        .arms
        .iter()
        .filter(|a| a.prob_best.is_finite())
        .max_by(|x, y| x.prob_best.total_cmp(&y.prob_best));
    if p.is_some_and(|p| p < SRM_THRESHOLD) {
        e.verdict = "invalid";
        e.reason = format!(
            "bandit: {srm}: units do not follow the shares served; results are not trustworthy"
        );
    } else {
        e.verdict = "keep_running";
        e.reason = match leader {
            Some(a) => format!(
                "bandit: {} leads on {} (P(best) {:.3}); {srm}",
                a.variant, b.reward, a.prob_best
            ),
            None => format!("bandit: no unit with a period yet; {srm}"),
        };
    }
    e.bandit = Some(b);
}

#[cfg(test)]
mod tests;
