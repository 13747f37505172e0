//! A snapshot: everything derived from one config generation (the compiled config,
//! upstream pools, experiment states and pre-resolved metric handles). A request loads
//! one snapshot and finishes on it, so a reload never changes a request midway.

use super::shadow::{ShadowState, ShadowStore};
use super::upstream::Pool;
use crate::config::{Config, Experiment, Layer};
use crate::guard::bandit::BanditState;
use crate::guard::{ExperimentState, Guard, GuardrailKind};
use crate::metrics::{Metrics, UpstreamErrors, VariantMetrics};
use prometheus::IntCounter;
use std::sync::Arc;
use tokio::sync::watch;

/// Runtime handles of one experiment in a snapshot.
pub struct ExperimentRuntime {
    /// Live state (rollbacks, windows), shared across reloads.
    pub state: Arc<ExperimentState>,
    /// Metric handles per variant.
    pub metrics: Vec<VariantMetrics>,
    /// The bandit's live state (bandit experiments only), shared across reloads.
    pub bandit: Option<Arc<BanditState>>,
    /// Shadow state per variant (`None` without a shadow).
    pub shadows: Vec<Option<Arc<ShadowState>>>,
}

/// Everything derived from one config generation.
pub struct Snapshot {
    /// The compiled config.
    pub config: Arc<Config>,
    /// Pools by upstream index.
    pub pools: Vec<Pool>,
    /// `[layer][experiment]`.
    pub experiments: Vec<Vec<ExperimentRuntime>>,
    /// Handles for requests in no experiment.
    pub none_metrics: VariantMetrics,
    /// `abgate_upstream_errors_total` handles by pool.
    pub upstream_errors: Vec<UpstreamErrors>,
    /// `abgate_outcomes_total` by metric index.
    pub outcome_counters: Vec<IntCounter>,
    /// Config version as an `Arc` for events.
    pub version: Arc<str>,
    /// Admin token read when this generation was built.
    pub token: Option<String>,
    stop_health: watch::Sender<bool>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = self.stop_health.send(true);
    }
}

/// Build a snapshot: pools (with health checks and re-resolution), experiment states and
/// metric handles.
pub fn build_snapshot(
    config: Arc<Config>,
    guard: &Guard,
    metrics: &Metrics,
    shadows: &ShadowStore,
) -> std::io::Result<Snapshot> {
    let mut shadow_states = shadows.for_config(&config, metrics);
    let (stop_health, stop_rx) = watch::channel(false);
    let mut pools = Vec::with_capacity(config.upstreams.len());
    for spec in &config.upstreams {
        let p = Pool::new(spec)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            p.spawn_background(stop_rx.clone());
        }
        pools.push(p);
    }
    let experiments = config
        .layers
        .iter()
        .enumerate()
        .map(|(li, l)| {
            l.experiments
                .iter()
                .enumerate()
                .map(|(ei, e)| ExperimentRuntime {
                    shadows: std::mem::take(&mut shadow_states[li][ei]),
                    state: guard.experiment_state(e),
                    bandit: guard.bandit_state(e),
                    metrics: e
                        .variants
                        .iter()
                        .map(|v| metrics.variant(&e.name, &v.name))
                        .collect(),
                })
                .collect()
        })
        .collect();
    // Export every guardrail series (at 0) from the start, so dashboards and alerts see
    // the metric before anything happens.
    for e in config.layers.iter().flat_map(|l| l.experiments.iter()) {
        metrics.srm_p_value.with_label_values(&[&e.name]).set(1.0);
        if e.guardrails.is_none() {
            continue;
        }
        for (vi, v) in e.variants.iter().enumerate() {
            if vi == e.control {
                continue;
            }
            for g in GuardrailKind::CHECKED {
                metrics
                    .guardrail_violation
                    .with_label_values(&[&e.name, &v.name, g.as_str()]);
                metrics
                    .rollbacks
                    .with_label_values(&[&e.name, &v.name, g.as_str()]);
            }
        }
    }
    let snap_experiments: &Vec<Vec<ExperimentRuntime>> = &experiments;
    for (li, l) in config.layers.iter().enumerate() {
        for (ei, e) in l.experiments.iter().enumerate() {
            let exp = Live {
                layer: l,
                config: e,
                runtime: &snap_experiments[li][ei],
            };
            super::export_bandit_gauges(metrics, exp);
        }
    }
    let upstream_errors = config
        .upstreams
        .iter()
        .map(|u| metrics.upstream_errors(&u.name))
        .collect();
    let outcome_counters = config
        .metrics
        .iter()
        .map(|m| metrics.outcomes.with_label_values(&[&m.name]))
        .collect();
    metrics.set_config_version(&config.version);
    Ok(Snapshot {
        version: Arc::from(config.version.as_str()),
        token: config.admin_token(),
        none_metrics: metrics.variant("none", "none"),
        pools,
        experiments,
        upstream_errors,
        outcome_counters,
        config,
        stop_health,
    })
}

impl Snapshot {
    /// Constant-time check of a presented admin token.
    pub fn token_ok(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        match &self.token {
            Some(t) => t.len() == presented.len() && bool::from(t.as_bytes().ct_eq(presented)),
            None => false,
        }
    }

    /// Experiment `ei` of layer `li` with its runtime handles.
    #[inline]
    pub fn experiment(&self, li: usize, ei: usize) -> Live<'_> {
        Live {
            layer: &self.config.layers[li],
            config: &self.config.layers[li].experiments[ei],
            runtime: &self.experiments[li][ei],
        }
    }

    /// Every experiment with its runtime handles, in config order.
    pub fn live_experiments(&self) -> impl Iterator<Item = Live<'_>> {
        self.config
            .layers
            .iter()
            .enumerate()
            .flat_map(move |(li, l)| {
                (0..l.experiments.len()).map(move |ei| self.experiment(li, ei))
            })
    }

    /// The experiment named `name` with its runtime handles.
    pub fn find(&self, name: &str) -> Option<Live<'_>> {
        let (li, ei) = self.config.experiment(name)?;
        Some(self.experiment(li, ei))
    }
}

/// One experiment of a snapshot: its compiled config next to its live state and metric
/// handles (the two are kept side by side by position; this pairs them once).
#[derive(Clone, Copy)]
pub struct Live<'a> {
    /// The experiment's layer.
    pub layer: &'a Layer,
    /// The compiled experiment.
    pub config: &'a Experiment,
    /// Its live state and metric handles.
    pub runtime: &'a ExperimentRuntime,
}

impl Live<'_> {
    /// The live state (rollbacks, windows).
    #[inline]
    pub fn state(&self) -> &ExperimentState {
        &self.runtime.state
    }
}
