//! Offline analysis of event logs (`abgate analyze`): stream the files once, aggregate
//! per randomization unit, then per variant, and compare every treatment with control on
//! every metric with the functions of [`crate::stats`].
//!
//! Aggregation rules (SPEC §4):
//! - a unit enters an experiment at its first exposure to it (forced exposures and
//!   holdout exposures never count); a unit seen in two variants of one experiment (after
//!   a config change, say) is reported and excluded;
//! - an outcome counts for every experiment the unit was already exposed to when the
//!   outcome is read — files are read in name (= time) order and lines in file order, so
//!   an outcome logged before the unit's first exposure is ignored;
//! - `binomial` per unit: 1 if any value > 0, else 0; `continuous`: the sum (0 if none);
//!   every exposed unit counts, with or without outcomes;
//! - the request-level metrics `latency_ms` (continuous) and `error_rate` (binomial) are
//!   computed over exposures (one observation per request), by assigned variant.
//!
//! Memory is proportional to units × metrics, not to lines.

pub mod render;
mod scan;

use crate::config::{Config, MetricKind};
use crate::events::reader::{event_files, for_each_line_bytes};
use crate::stats::{self, Summary};
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Analysis settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Confidence level of intervals (and 1 − α of tests).
    pub confidence: f64,
    /// mSPRT tuning.
    pub tuning: f64,
    /// Pre-experiment covariate per unit (CUPED).
    pub covariates: Option<HashMap<String, f64>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            confidence: 0.95,
            tuning: 5000.0,
            covariates: None,
        }
    }
}

/// Errors of the analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Files could not be read.
    #[error("{0}")]
    Io(String),
    /// Nothing in the logs matches the config.
    #[error("{0}")]
    NoMatch(String),
    /// Bad covariates file.
    #[error("{0}")]
    Covariates(String),
}

/// The experiments a unit is in: (experiment index, record index).
type UnitExperiments = SmallVec<[(u16, u32); 2]>;
/// Every unit seen.
type UnitMap = hashbrown::HashMap<Box<str>, UnitExperiments, rustc_hash::FxBuildHasher>;

/// One experiment's running aggregates. Per unit (a "record", in order of first
/// exposure) the variant, whether it was seen in another variant too, and per metric
/// slot whether any value was > 0 and the sum — in flat arrays, `slots` per record.
struct ExpAcc {
    metric_slots: Vec<usize>, // index into cfg.metrics
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
    fn records(&self) -> usize {
        self.variant.len()
    }

    /// The per-unit observation of record `ri` on metric `slot`.
    fn y(&self, ri: usize, slot: usize, kind: MetricKind) -> f64 {
        let k = ri * self.metric_slots.len() + slot;
        match kind {
            MetricKind::Binomial => self.any[k] as u8 as f64,
            MetricKind::Continuous => self.values[k],
        }
    }

    /// Records that count (not mixed) in variant `v`.
    fn in_variant(&self, v: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.records()).filter(move |&ri| !self.mixed[ri] && self.variant[ri] as usize == v)
    }
}

/// Reading statistics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReadStats {
    /// Files read.
    pub files: usize,
    /// Lines read.
    pub lines: u64,
    /// Lines skipped (torn, invalid JSON, unknown shape).
    pub skipped: u64,
    /// Exposures read.
    pub exposures: u64,
    /// Outcomes read.
    pub outcomes: u64,
}

/// One side of a comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Side {
    /// Observations (units, or requests for request-level metrics).
    pub n: f64,
    /// Mean.
    pub mean: f64,
    /// Sample variance.
    pub variance: f64,
}

/// CUPED part of a comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CupedOut {
    /// θ.
    pub theta: f64,
    /// Share of variance removed.
    pub variance_reduction: f64,
    /// Adjusted absolute lift.
    pub abs_lift: f64,
    /// Its CI.
    pub abs_ci: [f64; 2],
    /// Its p-value.
    pub p_value: f64,
}

/// Expected losses.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Losses {
    /// Of shipping control.
    pub control: f64,
    /// Of shipping the treatment.
    pub treatment: f64,
}

/// One treatment vs control on one metric.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// Metric name.
    pub metric: String,
    /// `binomial` or `continuous`.
    pub kind: &'static str,
    /// Treatment variant.
    pub variant: String,
    /// Control variant.
    pub control_variant: String,
    /// Control side.
    pub control: Side,
    /// Treatment side.
    pub treatment: Side,
    /// Treatment − control.
    pub abs_lift: f64,
    /// CI of `abs_lift`.
    pub abs_ci: [f64; 2],
    /// Relative lift.
    pub rel_lift: f64,
    /// Delta-method CI.
    pub rel_ci: [f64; 2],
    /// Two-sided p-value.
    pub p_value: f64,
    /// Holm-adjusted.
    pub p_value_holm: f64,
    /// BH-adjusted.
    pub p_value_bh: f64,
    /// Always-valid p-value.
    pub seq_p_value: f64,
    /// Confidence sequence.
    pub seq_ci: [f64; 2],
    /// P(treatment better).
    pub prob_better: f64,
    /// Expected losses.
    pub expected_loss: Losses,
    /// CUPED, when covariates were given (not for request-level metrics).
    pub cuped: Option<CupedOut>,
    /// Whether higher is better.
    pub higher_is_better: bool,
    /// Whether this is the experiment's primary metric.
    pub primary: bool,
    /// Whether this is a request-level guardrail metric (latency_ms, error_rate).
    pub guardrail: bool,
}

/// A point of the units-over-time series.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimePoint {
    /// Hour (`2026-11-23T02`).
    pub hour: String,
    /// Cumulative units per variant, in variant order.
    pub units: Vec<u64>,
}

/// One experiment's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExperimentReport {
    /// Name.
    pub experiment: String,
    /// Layer.
    pub layer: String,
    /// Units per variant (mixed units excluded).
    pub units: BTreeMap<String, u64>,
    /// Variant order of the config.
    pub variants: Vec<String>,
    /// Configured weights.
    pub weights: Vec<f64>,
    /// Units seen in more than one variant (excluded).
    pub mixed_units: u64,
    /// SRM chi-square p-value.
    pub srm_p_value: f64,
    /// `ship`, `no_ship`, `keep_running`, `invalid`.
    pub verdict: &'static str,
    /// Why.
    pub reason: String,
    /// Comparisons.
    pub comparisons: Vec<Comparison>,
    /// Cumulative units over time.
    pub units_over_time: Vec<TimePoint>,
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Per experiment.
    pub experiments: Vec<ExperimentReport>,
    /// What was read.
    pub read: ReadStats,
    /// Confidence level used.
    pub confidence: f64,
}

/// Read a covariates CSV (`unit_id,value`, optional header line).
pub fn read_covariates(path: &std::path::Path) -> Result<HashMap<String, f64>, AnalyzeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AnalyzeError::Covariates(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (u, v) = line.split_once(',').ok_or_else(|| {
            AnalyzeError::Covariates(format!(
                "{}:{}: expected `unit_id,value`",
                path.display(),
                i + 1
            ))
        })?;
        match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => {
                out.insert(u.trim().to_string(), x);
            }
            _ if i == 0 => {} // header
            _ => {
                return Err(AnalyzeError::Covariates(format!(
                    "{}:{}: `{}` is not a finite number",
                    path.display(),
                    i + 1,
                    v.trim()
                )))
            }
        }
    }
    Ok(out)
}

/// Analyze the event files at `inputs` under `cfg`. `progress` is called every million lines.
pub fn analyze(
    cfg: &Config,
    inputs: &[PathBuf],
    opts: &Options,
    mut progress: impl FnMut(u64),
    mut warn: impl FnMut(String),
) -> Result<Report, AnalyzeError> {
    let files = event_files(inputs).map_err(|e| AnalyzeError::Io(e.to_string()))?;
    if files.is_empty() {
        return Err(AnalyzeError::NoMatch(
            "no event files found (expected *.jsonl)".into(),
        ));
    }
    let exps: Vec<(usize, usize)> = cfg
        .layers
        .iter()
        .enumerate()
        .flat_map(|(li, l)| (0..l.experiments.len()).map(move |ei| (li, ei)))
        .collect();
    // Names are looked up by a linear scan: configs have a handful of experiments,
    // variants and metrics, and comparing a few short strings beats hashing one.
    let exp_names: Vec<&str> = exps
        .iter()
        .map(|&(li, ei)| &*cfg.layers[li].experiments[ei].name)
        .collect();
    let metric_names: Vec<&str> = cfg.metrics.iter().map(|m| &*m.name).collect();
    let mut accs: Vec<ExpAcc> = exps
        .iter()
        .map(|&(li, ei)| {
            let e = &cfg.layers[li].experiments[ei];
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
        })
        .collect();
    let mut units = UnitMap::default();
    let mut read = ReadStats {
        files: files.len(),
        ..Default::default()
    };
    let mut unknown_experiments: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad_lines = Vec::new();
    let (mut torn, mut torn_n): (Vec<String>, u64) = (Vec::new(), 0);

    for_each_line_bytes(
        &files,
        |file, n, text| {
            read.lines += 1;
            if read.lines.is_multiple_of(1_000_000) {
                progress(read.lines);
            }
            let mut line = scan::Line::empty();
            match scan::parse(text, &mut line) {
                Ok(()) => {}
                Err(e) => {
                    read.skipped += 1;
                    if bad_lines.len() < 20 {
                        bad_lines.push(format!(
                            "{}:{n}: not an event ({e}): skipped",
                            file.display()
                        ));
                    }
                    return;
                }
            }
            match &*line.ty {
                "exposure" => {
                    read.exposures += 1;
                    let Some(assignments) = &line.assignments else {
                        return;
                    };
                    // the unit's entry, kept while consecutive assignments share the unit
                    let mut cur: Option<(&str, &mut UnitExperiments)> = None;
                    for a in assignments {
                        if a.forced {
                            continue;
                        }
                        let Some(ei) = exp_names.iter().position(|n| *n == &*a.experiment) else {
                            *unknown_experiments
                                .entry(a.experiment.to_string())
                                .or_default() += 1;
                            continue;
                        };
                        let acc = &mut accs[ei];
                        let Some(vi) = acc.variant_names.iter().position(|n| **n == *a.variant)
                        else {
                            continue;
                        };
                        // request-level metrics
                        if let Some(l) = line.latency_ms {
                            let s = &mut acc.latency[vi];
                            s.0 += 1.0;
                            s.1 += l;
                            s.2 += l * l;
                        }
                        let e = &mut acc.errors[vi];
                        e.1 += 1.0;
                        if line.error.is_some() {
                            e.0 += 1.0;
                        }
                        let Some(uid) = a.unit_id.as_deref().or(line.unit_id.as_deref()) else {
                            continue;
                        };
                        if cur.as_ref().is_none_or(|(u, _)| *u != uid) {
                            cur = Some((uid, units.entry_ref(uid).or_default()));
                        }
                        let Some((_, list)) = cur.as_mut() else {
                            continue;
                        };
                        let vi = vi as u16;
                        match list.iter().find(|(e, _)| *e as usize == ei) {
                            Some(&(_, ri)) => {
                                if acc.variant[ri as usize] != vi {
                                    acc.mixed[ri as usize] = true;
                                }
                            }
                            None => {
                                let ri = acc.records() as u32;
                                let slots = acc.metric_slots.len();
                                acc.variant.push(vi);
                                acc.mixed.push(false);
                                acc.values.resize(acc.values.len() + slots, 0.0);
                                acc.any.resize(acc.any.len() + slots, false);
                                let hour =
                                    line.ts.as_deref().map_or("", |t| t.get(..13).unwrap_or(t));
                                let per_hour = &mut acc.over_time[vi as usize];
                                match per_hour.get_mut(hour) {
                                    Some(n) => *n += 1,
                                    None => {
                                        per_hour.insert(hour.to_string(), 1);
                                    }
                                }
                                list.push((ei as u16, ri));
                            }
                        }
                    }
                }
                "outcome" => {
                    read.outcomes += 1;
                    let (Some(uid), Some(metric), Some(value)) =
                        (&line.unit_id, &line.metric, line.value)
                    else {
                        return;
                    };
                    let Some(mi) = metric_names.iter().position(|n| *n == &**metric) else {
                        return;
                    };
                    let Some(list) = units.get(&**uid) else {
                        return;
                    };
                    for &(ei, ri) in list {
                        let acc = &mut accs[ei as usize];
                        if let Some(slot) = acc.metric_slots.iter().position(|&s| s == mi) {
                            let k = ri as usize * acc.metric_slots.len() + slot;
                            acc.values[k] += value;
                            if value > 0.0 {
                                acc.any[k] = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        },
        |file, n, why| {
            torn_n += 1;
            if torn.len() < 20 {
                torn.push(format!("{}:{n}: {why}", file.display()));
            }
        },
    )
    .map_err(|e| AnalyzeError::Io(e.to_string()))?;
    read.skipped += torn_n;
    read.lines += torn_n;
    bad_lines.extend(torn);
    for w in bad_lines {
        warn(w);
    }
    if read.skipped > 20 {
        warn(format!(
            "… {} unreadable lines skipped in all",
            read.skipped
        ));
    }
    for (name, n) in &unknown_experiments {
        warn(format!(
            "{n} exposures name experiment `{name}`, which the config does not define: ignored"
        ));
    }
    if accs.iter().all(|a| a.records() == 0) {
        return Err(AnalyzeError::NoMatch(format!(
            "none of the {} lines ({} exposures) matches an experiment of the config; check that --config is the config that produced these events",
            read.lines, read.exposures
        )));
    }

    let experiments = exps
        .iter()
        .zip(accs)
        .enumerate()
        .map(|(i, (&(li, ei), acc))| report_experiment(cfg, li, ei, (i, &acc), &units, opts))
        .collect();
    Ok(Report {
        experiments,
        read,
        confidence: opts.confidence,
    })
}

fn report_experiment(
    cfg: &Config,
    li: usize,
    ei: usize,
    (index, acc): (usize, &ExpAcc),
    units_seen: &UnitMap,
    opts: &Options,
) -> ExperimentReport {
    let e = &cfg.layers[li].experiments[ei];
    let nv = e.variants.len();
    let alpha = 1.0 - opts.confidence;
    let mut units = vec![0u64; nv];
    let mut mixed = 0;
    for ri in 0..acc.records() {
        if acc.mixed[ri] {
            mixed += 1;
        } else {
            units[acc.variant[ri] as usize] += 1;
        }
    }
    let weights: Vec<f64> = e.variants.iter().map(|v| v.weight).collect();
    let srm = stats::chi_square_gof(&units, &weights);
    let c = e.control;
    // Unit id of every record, only when covariates need them.
    let ids: Vec<&str> = if opts.covariates.is_some() {
        let mut ids = vec![""; acc.records()];
        for (id, list) in units_seen {
            for &(x, ri) in list {
                if x as usize == index {
                    ids[ri as usize] = id;
                }
            }
        }
        ids
    } else {
        Vec::new()
    };
    let mut comps = Vec::new();
    for t in (0..nv).filter(|&t| t != c) {
        for (slot, &mi) in acc.metric_slots.iter().enumerate() {
            let m = &cfg.metrics[mi];
            let per_unit = |v: usize| -> Vec<f64> {
                acc.in_variant(v)
                    .map(|ri| acc.y(ri, slot, m.kind))
                    .collect()
            };
            let sc = Summary::of(&per_unit(c));
            let st = Summary::of(&per_unit(t));
            let cup = opts.covariates.as_ref().and_then(|cov| {
                let pairs = |v: usize| -> Vec<(f64, f64)> {
                    acc.in_variant(v)
                        .map(|ri| {
                            let x = cov.get(ids[ri]).copied().unwrap_or(f64::NAN);
                            (acc.y(ri, slot, m.kind), x)
                        })
                        .collect()
                };
                let (mut pc, mut pt) = (pairs(c), pairs(t));
                // Units without a covariate get the mean covariate (no information).
                let known: Vec<f64> = pc
                    .iter()
                    .chain(pt.iter())
                    .map(|p| p.1)
                    .filter(|x| x.is_finite())
                    .collect();
                if known.is_empty() {
                    return None;
                }
                let mean = known.iter().sum::<f64>() / known.len() as f64;
                for p in pc.iter_mut().chain(pt.iter_mut()) {
                    if !p.1.is_finite() {
                        p.1 = mean;
                    }
                }
                stats::cuped(&pc, &pt, opts.confidence).map(|r| CupedOut {
                    theta: r.theta,
                    variance_reduction: r.variance_reduction,
                    abs_lift: r.diff.abs_lift,
                    abs_ci: [r.diff.abs_ci.0, r.diff.abs_ci.1],
                    p_value: r.diff.p_value,
                })
            });
            let primary = e.primary_metric.as_deref() == Some(&*m.name);
            comps.push(compare(
                &m.name,
                m.kind,
                m.higher_is_better,
                &e.variants[t].name,
                &e.variants[c].name,
                sc,
                st,
                opts,
                cup,
                primary,
                false,
            ));
        }
        // request-level guardrail metrics
        let lat = |v: usize| {
            let (n, s, ss) = acc.latency[v];
            Summary::from_sums(n, s, ss)
        };
        if acc.latency[c].0 > 1.0 && acc.latency[t].0 > 1.0 {
            comps.push(compare(
                "latency_ms",
                MetricKind::Continuous,
                false,
                &e.variants[t].name,
                &e.variants[c].name,
                lat(c),
                lat(t),
                opts,
                None,
                false,
                true,
            ));
        }
        let err = |v: usize| {
            let (x, n) = acc.errors[v];
            Summary {
                n,
                mean: if n > 0.0 { x / n } else { 0.0 },
                variance: if n > 1.0 {
                    x / n * (1.0 - x / n) * n / (n - 1.0)
                } else {
                    0.0
                },
            }
        };
        if acc.errors[c].1 > 0.0 && acc.errors[t].1 > 0.0 {
            comps.push(compare(
                "error_rate",
                MetricKind::Binomial,
                false,
                &e.variants[t].name,
                &e.variants[c].name,
                err(c),
                err(t),
                opts,
                None,
                false,
                true,
            ));
        }
    }
    let ps: Vec<f64> = comps.iter().map(|c| c.p_value).collect();
    let (holm, bh) = (stats::holm(&ps), stats::benjamini_hochberg(&ps));
    for (i, cmp) in comps.iter_mut().enumerate() {
        cmp.p_value_holm = holm[i];
        cmp.p_value_bh = bh[i];
    }
    let (verdict, reason) = verdict(e, &units, srm, mixed, &comps, alpha);
    // cumulative units over time
    let mut hours: Vec<String> = acc
        .over_time
        .iter()
        .flat_map(|m| m.keys().cloned())
        .collect();
    hours.sort();
    hours.dedup();
    let mut cum = vec![0u64; nv];
    let units_over_time = hours
        .into_iter()
        .map(|h| {
            for (v, m) in acc.over_time.iter().enumerate() {
                cum[v] += m.get(&h).copied().unwrap_or(0);
            }
            TimePoint {
                hour: h,
                units: cum.clone(),
            }
        })
        .collect();
    ExperimentReport {
        experiment: e.name.to_string(),
        layer: cfg.layers[li].name.to_string(),
        units: e
            .variants
            .iter()
            .zip(&units)
            .map(|(v, &n)| (v.name.to_string(), n))
            .collect(),
        variants: e.variants.iter().map(|v| v.name.to_string()).collect(),
        weights,
        mixed_units: mixed,
        srm_p_value: srm,
        verdict,
        reason,
        comparisons: comps,
        units_over_time,
    }
}

/// Compare one treatment with control on one metric (every statistic of SPEC §4 but
/// CUPED, which the caller computes). Used by the offline report and the live one.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    metric: &str,
    kind: MetricKind,
    higher_is_better: bool,
    variant: &str,
    control_variant: &str,
    c: Summary,
    t: Summary,
    opts: &Options,
    cuped: Option<CupedOut>,
    primary: bool,
    guardrail: bool,
) -> Comparison {
    let conf = opts.confidence;
    let alpha = 1.0 - conf;
    let d = match kind {
        MetricKind::Binomial => {
            stats::two_proportions((c.mean * c.n, c.n), (t.mean * t.n, t.n), conf)
        }
        MetricKind::Continuous => stats::welch(&c, &t, conf),
    };
    let (var_mc, var_mt) = match kind {
        MetricKind::Binomial => (c.mean * (1.0 - c.mean) / c.n, t.mean * (1.0 - t.mean) / t.n),
        MetricKind::Continuous => (c.variance / c.n, t.variance / t.n),
    };
    let (rel, rel_ci) = stats::relative_lift(c.mean, t.mean, var_mc, var_mt, conf);
    let n = c.n + t.n;
    let seq_p = stats::msprt_p_value(d.abs_lift, d.var_diff, n, alpha, opts.tuning);
    let hw = if d.var_diff > 0.0 {
        stats::msprt_half_width(d.var_diff, n, alpha, opts.tuning)
    } else {
        f64::NAN
    };
    let bayes = match kind {
        MetricKind::Binomial => stats::bayes_binomial(
            ((c.mean * c.n).round(), c.n),
            ((t.mean * t.n).round(), t.n),
            higher_is_better,
        ),
        MetricKind::Continuous => stats::bayes_normal(d.abs_lift, d.var_diff, higher_is_better),
    };
    Comparison {
        metric: metric.to_string(),
        kind: kind.as_str(),
        variant: variant.to_string(),
        control_variant: control_variant.to_string(),
        control: Side {
            n: c.n,
            mean: c.mean,
            variance: c.variance,
        },
        treatment: Side {
            n: t.n,
            mean: t.mean,
            variance: t.variance,
        },
        abs_lift: d.abs_lift,
        abs_ci: [d.abs_ci.0, d.abs_ci.1],
        rel_lift: rel,
        rel_ci: [rel_ci.0, rel_ci.1],
        p_value: d.p_value,
        p_value_holm: d.p_value,
        p_value_bh: d.p_value,
        seq_p_value: seq_p,
        seq_ci: [d.abs_lift - hw, d.abs_lift + hw],
        prob_better: bayes.prob_better,
        expected_loss: Losses {
            control: bayes.loss_control,
            treatment: bayes.loss_treatment,
        },
        cuped,
        higher_is_better,
        primary,
        guardrail,
    }
}

fn fmt_lift(c: &Comparison) -> String {
    if c.rel_lift.is_finite() {
        format!(
            "{} {:+.1}% (p={:.3})",
            c.metric,
            100.0 * c.rel_lift,
            c.p_value
        )
    } else {
        format!("{} {:+.4} (p={:.3})", c.metric, c.abs_lift, c.p_value)
    }
}

fn verdict(
    e: &crate::config::Experiment,
    units: &[u64],
    srm: f64,
    mixed: u64,
    comps: &[Comparison],
    alpha: f64,
) -> (&'static str, String) {
    if srm < 0.001 {
        let list: Vec<String> = e
            .variants
            .iter()
            .zip(units)
            .map(|(v, n)| format!("{}={n}", v.name))
            .collect();
        return (
            "invalid",
            format!(
                "sample ratio mismatch (p={srm:.2e}): units {} do not match weights; find the cause (targeting, redirects, bots, a rollback) before reading any lift",
                list.join(", ")
            ),
        );
    }
    let Some(primary) = e.primary_metric.as_deref() else {
        return (
            "keep_running",
            "no primary_metric configured: nothing to decide on".into(),
        );
    };
    let bad = |c: &&Comparison| {
        let worse = if c.higher_is_better {
            c.abs_lift < 0.0
        } else {
            c.abs_lift > 0.0
        };
        worse && c.p_value_holm < alpha
    };
    let good = |c: &&Comparison| {
        let better = if c.higher_is_better {
            c.abs_lift > 0.0
        } else {
            c.abs_lift < 0.0
        };
        better && c.p_value < alpha
    };
    let mixed_note = if mixed > 0 {
        format!("; {mixed} units seen in two variants were excluded")
    } else {
        String::new()
    };
    // the best treatment on the primary metric that wins without a guardrail regression
    let mut winners: Vec<&Comparison> = comps
        .iter()
        .filter(|c| c.metric == primary)
        .filter(good)
        .collect();
    winners.sort_by(|a, b| b.rel_lift.total_cmp(&a.rel_lift));
    for w in &winners {
        let regressions: Vec<&Comparison> = comps
            .iter()
            .filter(|c| c.variant == w.variant && c.guardrail)
            .filter(bad)
            .collect();
        if regressions.is_empty() {
            return (
                "ship",
                format!(
                    "{}: {}, no guardrail regressed{mixed_note}",
                    w.variant,
                    fmt_lift(w)
                ),
            );
        }
    }
    if let Some(w) = winners.first() {
        let r: Vec<String> = comps
            .iter()
            .filter(|c| c.variant == w.variant && c.guardrail)
            .filter(bad)
            .map(fmt_lift)
            .collect();
        return (
            "no_ship",
            format!(
                "{}: {} but {} regressed{mixed_note}",
                w.variant,
                fmt_lift(w),
                r.join(", ")
            ),
        );
    }
    let prim: Vec<&Comparison> = comps.iter().filter(|c| c.metric == primary).collect();
    if !prim.is_empty() && prim.iter().all(bad) {
        let r: Vec<String> = prim
            .iter()
            .map(|c| format!("{}: {}", c.variant, fmt_lift(c)))
            .collect();
        return (
            "no_ship",
            format!(
                "every treatment is worse on the primary metric: {}{mixed_note}",
                r.join("; ")
            ),
        );
    }
    let r: Vec<String> = prim
        .iter()
        .map(|c| format!("{}: {}", c.variant, fmt_lift(c)))
        .collect();
    (
        "keep_running",
        format!(
            "{}: not significant at α={alpha:.3}{mixed_note}",
            if r.is_empty() {
                "no data".to_string()
            } else {
                r.join("; ")
            }
        ),
    )
}
