//! Bandits on the request path: a snapshot serves each bandit experiment's variants from
//! its table ([`crate::assign::LiveState`]), and credits rewards to the arm that serves a
//! unit, computed from the unit id and the current table — no per-unit state. Off the
//! request path: the gauges, and the `bandit` event of each period opened.

use super::{App, Live, Snapshot};
use crate::assign::{self, hash, LiveState};
use crate::events::{BanditRecord, Event};
use crate::metrics::Metrics;
use std::sync::Arc;

impl LiveState for Snapshot {
    /// Hot path: one table load and one indexed read for a bandit experiment.
    #[inline]
    fn arm(&self, layer: usize, experiment: usize, bucket: u32) -> Option<(u16, u32)> {
        let b = self.experiments[layer][experiment].bandit.as_ref()?;
        let serving = b.serving.load();
        Some((serving.table.arm(bucket), serving.period as u32))
    }

    /// Hot path: one atomic load.
    #[inline]
    fn serves(&self, layer: usize, experiment: usize, bucket: u32) -> bool {
        let start = self.config.layers[layer].experiments[experiment].start;
        self.experiments[layer][experiment]
            .state
            .ramp_serves(start, bucket)
    }
}

impl Snapshot {
    /// Credit an outcome of metric `metric` (index) with `value` for unit `unit_id` to
    /// every bandit experiment whose reward it is: the unit must be outside the holdout
    /// and inside the experiment's bucket range; its arm is the table's entry for its
    /// variant bucket; an arm served by control (rolled back, paused) is frozen and
    /// credited nothing. Targeting is not checked (an outcome carries no request).
    pub fn credit_reward(&self, metric: usize, unit_id: &str, value: f64) {
        if assign::in_holdout(&self.config, Some(unit_id)) {
            return;
        }
        for exp in self.live_experiments() {
            let Some(bandit) = &exp.runtime.bandit else {
                continue;
            };
            if bandit.settings.reward_index != metric {
                continue;
            }
            let lb = hash::bucket(exp.layer.seed, unit_id.as_bytes());
            if !(exp.config.start <= lb && lb < exp.config.end) {
                continue;
            }
            let arm = bandit
                .serving
                .load()
                .table
                .arm(hash::bucket(exp.config.seed, unit_id.as_bytes()))
                as usize;
            if !exp.state().served_by_control(arm) {
                bandit.reward(arm, value);
            }
        }
    }
}

/// Set `abgate_bandit_weight` and `abgate_bandit_prob_best` of bandit experiment `exp`
/// from its open period (nothing for an experiment without a bandit).
pub fn export_bandit_gauges(metrics: &Metrics, exp: Live<'_>) {
    let Some(b) = &exp.runtime.bandit else {
        return;
    };
    let shares = b.serving.load().table.shares(exp.config.variants.len());
    let prob_best = b.prob_best();
    for (i, v) in exp.config.variants.iter().enumerate() {
        let labels = [&*exp.config.name, &*v.name];
        metrics
            .bandit_weight
            .with_label_values(&labels)
            .set(shares[i]);
        metrics
            .bandit_prob_best
            .with_label_values(&labels)
            .set(prob_best.get(i).copied().unwrap_or(0.0));
    }
}

/// The bandit periods whose `bandit` event this process has written: experiment →
/// (period, start), so each period opened is written once per process.
#[derive(Default)]
pub struct AnnouncedPeriods(std::sync::Mutex<std::collections::HashMap<Arc<str>, (u64, u64)>>);

impl App {
    /// Write the `bandit` event of bandit experiment `exp`'s open period, unless this
    /// process already wrote it: period 0 at start, every period an update (or the
    /// fleet) opens, the open period again after a restart (the analysis keeps one per
    /// period). Called from the control loop at every tick; cheap when nothing changed.
    pub fn announce_bandit_period(&self, snap: &Snapshot, exp: Live<'_>) {
        let Some(b) = &exp.runtime.bandit else {
            return;
        };
        let key = (b.period(), b.period_start_unix_ms());
        {
            let mut done = self
                .bandit_periods
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if done.get(&exp.config.name) == Some(&key) {
                return;
            }
            done.insert(exp.config.name.clone(), key);
        }
        let history = b.history();
        let Some(open) = history.periods.last() else {
            return;
        };
        self.sink.send(Event::Bandit(Box::new(BanditRecord {
            ts: std::time::SystemTime::now(),
            experiment: exp.config.name.to_string(),
            period: open.period,
            start_unix_ms: open.start_unix_ms,
            explore: open.explore,
            variants: history.arms.clone(),
            weights: open.served.clone(),
            target_weights: open.weights.clone(),
            prob_best: open.prob_best.clone(),
            config_version: snap.config.version.to_string(),
        })));
    }
}
