//! `GET /admin/experiments/{name}/bandit`: a bandit experiment's open period, each arm's
//! weight, P(best), exposures, rewards and period-weighted mean with its 95% credible
//! interval, and the weight history.

use crate::config::MetricKind;
use crate::runtime::App;
use crate::stats::bandit::{estimate, Posterior};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;

/// The view of bandit `name`; `Err` says why there is none (no such experiment, or not
/// a bandit).
pub fn bandit_json(app: &App, name: &str) -> Result<serde_json::Value, String> {
    let snap = app.snapshot.load();
    let exp = snap
        .find(name)
        .ok_or_else(|| format!("no experiment `{name}`"))?;
    let b = exp.runtime.bandit.as_ref().ok_or_else(|| {
        format!("experiment `{name}` is not a bandit (no [layer.experiment.bandit])")
    })?;
    let h = b.history();
    let binomial = b.settings.kind == MetricKind::Binomial;
    let stats: Vec<Vec<_>> = h.periods.iter().map(|p| p.stats.clone()).collect();
    let open = h.periods.last();
    let arms: Vec<serde_json::Value> = exp
        .config
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let e = estimate(&stats, i, binomial, true);
            let post = Posterior::of(&e, binomial);
            let rewards: f64 = stats.iter().map(|p| p[i].sum).sum();
            json!({
                "variant": v.name,
                "weight": open.map(|p| p.served[i]),
                "target_weight": open.map(|p| p.weights[i]),
                "prob_best": open.map(|p| p.prob_best[i]),
                "units": e.n,
                "rewards": rewards,
                "mean": e.mean,
                "posterior_mean": post.mean(),
                "ci95": post.interval(0.05),
                "rolled_back": exp.state().variants[i].rolled_back.load(Relaxed),
            })
        })
        .collect();
    let history: Vec<serde_json::Value> = h
        .periods
        .iter()
        .map(|p| {
            json!({
                "period": p.period,
                "start_unix_ms": p.start_unix_ms,
                "explore": p.explore,
                "weights": p.served,
                "target_weights": p.weights,
                "prob_best": p.prob_best,
                "units": p.stats.iter().map(|s| s.n).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "experiment": name,
        "reward": b.settings.reward,
        "kind": b.settings.kind.as_str(),
        "period": b.period(),
        "period_start_unix_ms": open.map(|p| p.start_unix_ms),
        "explore": open.map(|p| p.explore),
        "update_interval_ms": b.settings.update_interval.as_millis() as u64,
        "arms": arms,
        "history": history,
    }))
}
