//! Assignment: which experiment of each layer a unit is in, and which variant.
//!
//! Pure functions of (config, unit ids, request attributes): no I/O, no clock, no
//! shared state, so `abgate assign`, the proxy and the tests agree by construction.
//!
//! Per layer: `bucket(layer.seed, unit_id)` picks at most one experiment (experiments
//! own disjoint bucket ranges); the experiment's targeting must hold; then
//! `bucket(experiment.seed, unit_id)` against the cumulative weight thresholds picks the
//! variant. Growing `traffic` extends a range without moving anyone already inside, and
//! the variant hash does not depend on the range, so nobody changes variant.

/// The frozen hashing contract (its own module below config, which precomputes seeds).
pub use crate::hash;
pub mod bandit;
pub mod identity;

use crate::config::{Config, Experiment, Targeting, Unit};
use http::HeaderMap;
use smallvec::SmallVec;

/// One layer's assignment, as indices into the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Layer index.
    pub layer: u16,
    /// Experiment index within the layer.
    pub experiment: u16,
    /// Variant index within the experiment.
    pub variant: u16,
    /// Whether this came from a QA force rather than the hash.
    pub forced: bool,
    /// The bandit period whose table gave the variant (bandit experiments only).
    pub bandit_period: Option<u32>,
}

/// Assignments of one request; inline for up to 8 layers.
pub type Assignments = SmallVec<[Assignment; 8]>;

/// The request attributes targeting may look at (all known before treatment).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method, upper case.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// The unit ids available for this request.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitIds<'a> {
    /// The identity (header, cookie or minted).
    pub user: Option<&'a str>,
    /// The session id.
    pub session: Option<&'a str>,
    /// A fresh random id for `unit = "request"` experiments.
    pub request: Option<&'a str>,
}

impl<'a> UnitIds<'a> {
    /// The id of `unit` for this request, if it has one.
    #[inline]
    pub fn get(&self, unit: &Unit, req: &RequestView<'a>) -> Option<&'a str> {
        match unit {
            Unit::User => self.user,
            Unit::Session => self.session,
            Unit::Request => self.request,
            Unit::Header(h) => match identity::header_value(req.headers, h) {
                identity::Lookup::Found(v) => Some(v),
                _ => None,
            },
        }
    }
}

/// Whether the unit is in the global holdout.
#[inline]
pub fn in_holdout(cfg: &Config, user: Option<&str>) -> bool {
    match (&cfg.holdout, user) {
        (Some(h), Some(u)) => hash::bucket(h.seed, u.as_bytes()) < h.threshold,
        _ => false,
    }
}

/// The variant index of `unit_id` in `exp` (ignoring range and targeting).
#[inline]
pub fn variant_of(exp: &Experiment, unit_id: &str) -> usize {
    variant_of_bucket(exp, hash::bucket(exp.seed, unit_id.as_bytes()))
}

/// The variant owning variant bucket `b` of `exp` under its fixed weights.
#[inline]
pub fn variant_of_bucket(exp: &Experiment, b: u32) -> usize {
    exp.thresholds
        .iter()
        .position(|&t| b < t)
        .unwrap_or(exp.thresholds.len() - 1)
}

/// What the running state changes in assignment: the part of its range a ramp serves
/// now, and the bucket-to-arm tables of bandit experiments ([`bandit::Table`]), which
/// replace the fixed thresholds for the experiments that have one.
pub trait LiveState {
    /// The arm of variant bucket `bucket` of experiment `experiment` of layer `layer`
    /// and the period of the table it was read from, or `None` when that experiment has
    /// fixed weights.
    ///
    /// Hot path: called once per layer a unit is assigned in.
    fn arm(&self, layer: usize, experiment: usize, bucket: u32) -> Option<(u16, u32)>;

    /// Whether the experiment serves the unit in layer bucket `bucket` of its range now
    /// (a ramp serves the part of its range its current step covers); a unit it does
    /// not serve is in no experiment of that layer.
    ///
    /// Hot path: called once per layer a unit falls in an experiment's range.
    fn serves(&self, _layer: usize, _experiment: usize, _bucket: u32) -> bool {
        true
    }
}

/// No running state: every experiment serves its whole range by its fixed weights
/// (tests, configs without a running proxy).
pub struct Static;

impl LiveState for Static {
    #[inline]
    fn arm(&self, _: usize, _: usize, _: u32) -> Option<(u16, u32)> {
        None
    }
}

/// Assign the request in every layer by the fixed weights, each experiment serving its
/// whole range, appending to `out`. Returns whether the unit is held out (then nothing
/// is appended).
pub fn assign(
    cfg: &Config,
    ids: &UnitIds<'_>,
    req: &RequestView<'_>,
    out: &mut Assignments,
) -> bool {
    assign_with(cfg, &Static, ids, req, out)
}

/// [`assign`], with the ramps' served parts and the bandit experiments' variants read
/// from `live`.
///
/// Hot path: called once per request. Allocation-free while at most 8 layers assign.
pub fn assign_with(
    cfg: &Config,
    live: &impl LiveState,
    ids: &UnitIds<'_>,
    req: &RequestView<'_>,
    out: &mut Assignments,
) -> bool {
    if in_holdout(cfg, ids.user) {
        return true;
    }
    for (li, layer) in cfg.layers.iter().enumerate() {
        let Some(first) = layer.experiments.first() else {
            continue;
        };
        // All experiments of a layer share one unit (checked at config load).
        let Some(id) = ids.get(&first.unit, req) else {
            continue;
        };
        let b = hash::bucket(layer.seed, id.as_bytes());
        let Some((ei, exp)) = layer
            .experiments
            .iter()
            .enumerate()
            .find(|(_, e)| e.start <= b && b < e.end)
        else {
            continue;
        };
        if !live.serves(li, ei, b) || !targeting_matches(&exp.targeting, req) {
            continue;
        }
        let vb = hash::bucket(exp.seed, id.as_bytes());
        let (variant, bandit_period) = match live.arm(li, ei, vb) {
            Some((arm, period)) => (arm, Some(period)),
            None => (variant_of_bucket(exp, vb) as u16, None),
        };
        out.push(Assignment {
            layer: li as u16,
            experiment: ei as u16,
            variant,
            forced: false,
            bandit_period,
        });
    }
    false
}

/// Apply QA forces (`exp=variant,exp2=variant`) on top of hashed assignments.
/// Only call this after the admin token was checked.
pub fn apply_forced(cfg: &Config, spec: &str, out: &mut Assignments) -> Result<(), String> {
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (e, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not `experiment=variant`"))?;
        let (li, ei) = cfg
            .experiment(e.trim())
            .ok_or_else(|| format!("unknown experiment `{}`", e.trim()))?;
        let exp = &cfg.layers[li].experiments[ei];
        let vi = exp
            .variants
            .iter()
            .position(|x| &*x.name == v.trim())
            .ok_or_else(|| format!("experiment `{}` has no variant `{}`", e.trim(), v.trim()))?;
        let a = Assignment {
            layer: li as u16,
            experiment: ei as u16,
            variant: vi as u16,
            forced: true,
            bandit_period: None,
        };
        match out.iter_mut().find(|x| x.layer as usize == li) {
            Some(slot) => *slot = a,
            None => out.push(a),
        }
    }
    out.sort_by_key(|a| a.layer);
    Ok(())
}

/// Whether every targeting condition holds.
///
/// Hot path: called at most once per layer. Allocation-free.
pub fn targeting_matches(t: &Targeting, req: &RequestView<'_>) -> bool {
    if t.is_empty() {
        return true;
    }
    if !t.path_prefix.is_empty()
        && !t
            .path_prefix
            .iter()
            .any(|p| req.path.starts_with(p.as_str()))
    {
        return false;
    }
    if !t.method.is_empty() && !t.method.iter().any(|m| m == req.method) {
        return false;
    }
    for (name, values) in &t.header {
        let ok = req
            .headers
            .get_all(name)
            .iter()
            .any(|v| values.iter().any(|x| x.as_bytes() == v.as_bytes()));
        if !ok {
            return false;
        }
    }
    for (name, values) in &t.cookie {
        match identity::cookie(req.headers, name) {
            identity::Lookup::Found(v) if values.iter().any(|x| x == v) => {}
            _ => return false,
        }
    }
    for (name, values) in &t.query {
        let ok = req.query.is_some_and(|q| {
            q.split('&').any(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                k == name && values.iter().any(|x| x == v)
            })
        });
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cfg(text: &str) -> Config {
        crate::config::test_support::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = r#"
[upstream.a]
addrs = ["127.0.0.1:1"]
[routing]
default_upstream = "a"
"#;

    #[test]
    fn targeting_all_conditions() {
        let c = cfg(&format!(
            "{BASE}
[[layer]]
name = \"l\"
  [[layer.experiment]]
  name = \"e\"
  traffic = 1.0
  targeting = {{ path_prefix = \"/v1/\", method = [\"POST\"], header = {{ \"x-platform\" = [\"ios\", \"android\"] }}, query = {{ beta = \"1\" }} }}
    [[layer.experiment.variant]]
    name = \"control\"
    weight = 1
    [[layer.experiment.variant]]
    name = \"t\"
    weight = 1
"
        ));
        let t = &c.layers[0].experiments[0].targeting;
        let mut h = HeaderMap::new();
        h.insert("x-platform", "ios".parse().unwrap());
        let ok = RequestView {
            method: "POST",
            path: "/v1/chat",
            query: Some("a=2&beta=1"),
            headers: &h,
        };
        assert!(targeting_matches(t, &ok));
        assert!(!targeting_matches(
            t,
            &RequestView {
                method: "GET",
                ..ok
            }
        ));
        assert!(!targeting_matches(
            t,
            &RequestView {
                path: "/v2/chat",
                ..ok
            }
        ));
        assert!(!targeting_matches(
            t,
            &RequestView {
                query: Some("beta=0"),
                ..ok
            }
        ));
        let mut web = HeaderMap::new();
        web.insert("x-platform", "web".parse().unwrap());
        assert!(!targeting_matches(
            t,
            &RequestView {
                headers: &web,
                ..ok
            }
        ));
    }
}
