//! `[layer.experiment.bandit]` as compiled: the reward metric and the schedule of the
//! Thompson-sampling weights.

use super::MetricKind;
use std::sync::Arc;
use std::time::Duration;

/// A bandit experiment's settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Bandit {
    /// The reward metric's name.
    pub reward: Arc<str>,
    /// Index of the reward metric in the config's metrics.
    pub reward_index: usize,
    /// Binomial (Beta–Bernoulli posterior) or continuous (normal posterior).
    pub kind: MetricKind,
    /// Whether a higher reward is better (the metric's `higher_is_better`).
    pub higher_is_better: bool,
    /// Equal weights until this much time has passed since the bandit started.
    pub explore: Duration,
    /// Equal weights until every arm has this many exposures.
    pub min_units: u64,
    /// Time between weight updates (each update starts a period).
    pub update_interval: Duration,
    /// Floor of every arm's weight that is not rolled back.
    pub min_weight: f64,
    /// At most this share of the experiment's buckets change arm at one update.
    pub max_shift: f64,
}
