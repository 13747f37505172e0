//! Offline analysis of event logs (`abgate analyze`): stream the files once, aggregate
//! per randomization unit, then per variant, and compare every treatment with control on
//! every metric with the functions of [`crate::stats`]. The statistics and the report
//! are described in `docs/analysis.md`.
//!
//! Aggregation rules:
//! - a unit enters an experiment at its first exposure to it (forced exposures and
//!   holdout exposures never count); a unit seen in two variants of one experiment (after
//!   a config change, say) is reported and excluded — except in a bandit experiment,
//!   where it is *moved*: kept in its first arm, its outcomes counted until the move;
//! - an outcome counts for every experiment the unit was already exposed to when the
//!   outcome is read — files are read in name (= time) order and lines in file order, so
//!   an outcome logged before the unit's first exposure is ignored;
//! - `binomial` per unit: 1 if any value > 0, else 0; `continuous`: the sum (0 if none);
//!   every exposed unit counts, with or without outcomes;
//! - the request-level metrics `latency_ms` (continuous) and `error_rate` (binomial) are
//!   computed over exposures (one observation per request), by assigned variant.
//!
//! Memory is proportional to units × metrics, not to lines.
//!
//! The parts, in the order of the data: `scan` reads one line, `ingest` makes the one
//! pass over the files into the per-unit aggregates of `aggregate`, which reduce to the
//! sufficient statistics of `sufficient`; `experiment` turns those into one experiment's
//! report with [`compare()`] and `verdict`; [`render`] formats the [`Report`]. When the
//! logs outgrow one machine, [`sql`] writes the query that makes an engine (DuckDB,
//! Spark) compute the same sufficient statistics, and `summary` reads its result back
//! ([`analyze_summary`]): from there on, the same code. [`live`] is the admin API's live
//! report, from the same comparisons. [`shadow`] is the shadow section (from `shadow`
//! records here, from the copies as they finish in the admin API). [`bandit`] is the
//! bandit section of an experiment with a bandit, which replaces its fixed-weight
//! comparison (per-period estimates, P(best), weight history, SRM by period).

mod aggregate;
pub mod bandit;
mod bandit_render;
mod compare;
mod covariates;
mod csv;
mod experiment;
mod ingest;
pub mod live;
pub mod render;
mod report;
/// The event-line scanner: public for the fuzz target and its corpus replay only.
#[doc(hidden)]
pub mod scan;
pub mod shadow;
pub mod sql;
mod sufficient;
mod summary;
mod timeline;
mod verdict;

pub use compare::{adjust_p_values, compare, ComparisonInput, Pair, RequestMetric};
pub use covariates::read_covariates;
pub use experiment::BANDIT_NEEDS_EVENTS;
pub use report::{
    Comparison, CupedOut, ExperimentReport, Losses, ReadStats, Report, Side, TimePoint,
};
pub use sufficient::{Covariate, ExperimentStats, Sufficient, VariantMetric};
pub use summary::{read_summary, COLUMNS as SUMMARY_COLUMNS};

use crate::config::Config;
use crate::events::reader::event_files;
use crate::stats;
use rustc_hash::FxHashMap as HashMap;
use std::path::{Path, PathBuf};

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
            tuning: stats::MSPRT_TUNING,
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
    /// Bad summary file (`--summary`).
    #[error("{0}")]
    Summary(String),
}

/// Analyze the event files at `inputs` under `cfg`. `progress` is called every million lines.
pub fn analyze(
    cfg: &Config,
    inputs: &[PathBuf],
    opts: &Options,
    progress: impl FnMut(u64),
    warn: impl FnMut(String),
) -> Result<Report, AnalyzeError> {
    let files = event_files(inputs).map_err(|e| AnalyzeError::Io(e.to_string()))?;
    if files.is_empty() {
        return Err(AnalyzeError::NoMatch(
            "no event files found (expected *.jsonl)".into(),
        ));
    }
    let exps = sufficient::experiments_of(cfg);
    let mut ingested = ingest::ingest(cfg, &exps, &files, progress, warn)?;
    let shadows = std::mem::take(&mut ingested.shadow);
    let bandits: Vec<(usize, bandit::BanditReport)> = ingested
        .accs
        .iter()
        .enumerate()
        .filter_map(|(i, acc)| {
            let (li, ei) = acc.at();
            let records = ingested.bandit.get(&*cfg.layers[li].experiments[ei].name);
            Some((i, bandit::section(cfg, acc, records, opts)?))
        })
        .collect();
    let mut r = report(
        cfg,
        &ingested.sufficient(cfg, opts.covariates.as_ref()),
        opts,
    );
    for (i, b) in bandits {
        bandit::apply(&mut r.experiments[i], b);
    }
    for ((exp, variant), tally) in &shadows {
        if let Some(e) = r.experiments.iter_mut().find(|e| &e.experiment == exp) {
            e.shadow.push(tally.report(exp, variant, opts.confidence));
        }
    }
    Ok(r)
}

/// The report of `abgate analyze --summary FILE`: the sufficient statistics an engine
/// computed with the query of [`sql::emit`], saved as CSV, under `cfg`.
pub fn analyze_summary(
    cfg: &Config,
    summary: &Path,
    opts: &Options,
) -> Result<Report, AnalyzeError> {
    let st = read_summary(cfg, summary)?;
    if st.experiments.iter().all(|e| {
        e.mixed == 0 && e.units.iter().all(|&n| n == 0) && e.errors.iter().all(|m| m.n == 0)
    }) {
        return Err(AnalyzeError::NoMatch(format!(
            "{}: no unit or request of any experiment of the config; check that --config is the config the query was emitted for",
            summary.display()
        )));
    }
    Ok(report(cfg, &st, opts))
}

/// The report from the sufficient statistics of every experiment of `cfg` (the one path
/// from statistics to numbers, whatever computed them).
pub fn report(cfg: &Config, st: &Sufficient, opts: &Options) -> Report {
    Report {
        experiments: st
            .experiments
            .iter()
            .map(|e| experiment::report(cfg, e, opts))
            .collect(),
        read: st.read.clone(),
        confidence: opts.confidence,
    }
}
