//! `GET /admin/experiments/{name}/shadow`: the shadow section of `abgate analyze`, live,
//! for every variant of the experiment with a shadow — from the copies finished since the
//! process started (and the skips), plus the copies in flight now and the most ever in
//! flight at once.

use crate::runtime::App;
use serde_json::json;

/// The live shadow view of experiment `name`; `None` when there is no such experiment.
pub fn shadow_json(app: &App, name: &str) -> Option<serde_json::Value> {
    let snap = app.snapshot.load();
    let found = snap.find(name)?;
    let (exp, rt) = (found.config, found.runtime);
    let variants: Vec<serde_json::Value> = exp
        .variants
        .iter()
        .zip(&rt.shadows)
        .filter_map(|(v, state)| {
            let (shadow, state) = (v.shadow.as_ref()?, state.as_ref()?);
            let (in_flight, peak) = state.in_flight();
            Some(json!({
                "variant": v.name,
                "upstream": snap.pools[shadow.upstream].spec.name,
                "share": shadow.share,
                "max_in_flight": shadow.max_in_flight,
                "in_flight": in_flight,
                "peak_in_flight": peak,
                "report": state.report(name, &v.name, 0.95),
            }))
        })
        .collect();
    Some(json!({
        "experiment": name,
        "source": "live: copies finished since this process started; confidence 0.95; latency from a histogram (12.5% resolution)",
        "variants": variants,
    }))
}
