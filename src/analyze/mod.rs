//! Offline analysis of event logs (`abgate analyze`): stream the files once, aggregate
//! per randomization unit, then per variant, and compare every treatment with control on
//! every metric with the functions of [`crate::stats`]. The statistics and the report
//! are described in `docs/analysis.md`.
//!
//! Aggregation rules:
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
//!
//! The parts, in the order of the data: `scan` reads one line, `ingest` makes the one
//! pass over the files into the per-unit aggregates of `aggregate`, `experiment` reduces
//! them to one experiment's report with [`compare()`] and `verdict`; [`render`] formats
//! the [`Report`]. [`live`] is the admin API's live report, from the same comparisons.

mod aggregate;
mod compare;
mod covariates;
mod experiment;
mod ingest;
pub mod live;
pub mod render;
mod report;
/// The event-line scanner: public for the fuzz target and its corpus replay only.
#[doc(hidden)]
pub mod scan;
mod verdict;

pub use compare::{adjust_p_values, compare, ComparisonInput, Pair, RequestMetric};
pub use covariates::read_covariates;
pub use report::{
    Comparison, CupedOut, ExperimentReport, Losses, ReadStats, Report, Side, TimePoint,
};

use crate::config::Config;
use crate::events::reader::event_files;
use crate::stats;
use rustc_hash::FxHashMap as HashMap;
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
    // every experiment of the config, as (layer index, experiment index)
    let exps: Vec<(usize, usize)> = cfg
        .layers
        .iter()
        .enumerate()
        .flat_map(|(li, l)| (0..l.experiments.len()).map(move |ei| (li, ei)))
        .collect();
    let ingested = ingest::ingest(cfg, &exps, &files, progress, warn)?;
    let experiments = exps
        .iter()
        .zip(&ingested.accs)
        .enumerate()
        .map(|(i, (&exp, acc))| experiment::report(cfg, exp, (i, acc), &ingested.units, opts))
        .collect();
    Ok(Report {
        experiments,
        read: ingested.read,
        confidence: opts.confidence,
    })
}
