//! The bandit the bandit tests share: experiment `pick` (salt `pick-salt`, unit from
//! `x-user-id`) with three arms `a`, `b`, `c`, each on its own mock backend, rewarded by
//! the binomial metric `conversion`; and its admin view.

use super::config::{ExperimentSpec, LayerSpec, TestConfig, DIR_PLACEHOLDER};
use super::{agent, Abgate, MockServer};

pub const ARMS: [&str; 3] = ["a", "b", "c"];
/// The conversion rate of each arm in the tests: `c` is the best by far.
pub const RATES: [f64; 3] = [0.05, 0.05, 0.6];

/// One mock backend per arm, named after it.
pub fn backends() -> Vec<MockServer> {
    ARMS.iter()
        .map(|n| MockServer::builder().name(n).start().unwrap())
        .collect()
}

/// The config of the bandit on `backends`: weights updated every `interval` once every
/// arm has `min_units`, floors of 0.05, at most a quarter of the units moved at once.
pub fn config(backends: &[MockServer], min_units: u32, interval: &str) -> TestConfig {
    let mut exp = ExperimentSpec::new("pick", 1.0).salt("pick-salt");
    for arm in ARMS {
        exp = exp.variant_with(arm, 1.0, Some(arm), &[]);
    }
    let mut c = TestConfig::new(DIR_PLACEHOLDER)
        .server("debug_header = true")
        .identity("header = \"x-user-id\"");
    for (arm, m) in ARMS.iter().zip(backends) {
        c = c.upstream(arm, &[m.addr]);
    }
    c.metric("conversion", "binomial")
        .layer(LayerSpec::new("model").experiment(exp))
        .raw(&format!(
            "[layer.experiment.bandit]\nreward = \"conversion\"\nexplore = \"1ms\"\n\
             min_units = {min_units}\nupdate_interval = \"{interval}\"\nmin_weight = 0.05\n\
             max_shift = 0.25\n"
        ))
}

/// `GET /admin/experiments/pick/bandit` of `g`.
pub fn view(g: &Abgate) -> serde_json::Value {
    agent()
        .get(&g.admin_url("/admin/experiments/pick/bandit"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}
