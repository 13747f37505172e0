//! `[routing]` and who routes a request: the default upstream for requests no routing
//! experiment claims, and the rule that at most one layer may route a given request
//! (two layers both choosing the backend would make one of them silently lose).

use super::upstreams::UpstreamLookup;
use crate::config::raw::{RawLayer, RawRouting};
use crate::config::{Diagnostics, Layer};

/// Index of `[routing] default_upstream`, which every config needs.
pub(super) fn default_upstream(
    d: &mut Diagnostics,
    raw: Option<&RawRouting>,
    upstreams: &UpstreamLookup<'_>,
) -> usize {
    match raw.and_then(|r| r.default_upstream.as_deref()) {
        None => {
            d.push(
                "routing",
                format!(
                    "missing `[routing] default_upstream`: requests outside every experiment need a backend ({})",
                    upstreams.valid()
                ),
            );
            0
        }
        Some(n) => upstreams
            .index(d, "routing.default_upstream", n)
            .unwrap_or(0),
    }
}

/// Record every pair of layers that could both route one request. A layer routes if
/// one of its experiments has a variant with `upstream`; it claims the path prefixes
/// of those experiments, or every path if one of them has none.
pub(super) fn check_overlap(d: &mut Diagnostics, raw: &[RawLayer], layers: &[Layer]) {
    let scopes: Vec<(usize, Option<Vec<String>>)> = raw
        .iter()
        .zip(layers)
        .enumerate()
        .filter_map(|(li, (rl, l))| routing_scope(rl, l).map(|s| (li, s)))
        .collect();
    for (i, (la, sa)) in scopes.iter().enumerate() {
        for (lb, sb) in &scopes[i + 1..] {
            if overlap(sa.as_deref(), sb.as_deref()) {
                d.push(
                    &format!("layer[{lb}]"),
                    format!(
                        "layers `{}` and `{}` could both route the same request (both have variants with `upstream`); give their routing experiments disjoint `targeting.path_prefix`, or move routing into one layer",
                        layers[*la].name, layers[*lb].name
                    ),
                );
            }
        }
    }
}

/// `None` if the layer does not route; `Some(None)` if it routes any path; else the
/// path prefixes it can route. A variant's `upstream` counts as written, even if it
/// names no pool (that is reported on its own).
fn routing_scope(raw: &RawLayer, layer: &Layer) -> Option<Option<Vec<String>>> {
    let mut scope = Some(Vec::new());
    let mut routes = false;
    for (re, e) in raw.experiment.iter().zip(&layer.experiments) {
        if !re.variant.iter().any(|v| v.upstream.is_some()) {
            continue;
        }
        routes = true;
        if e.targeting.path_prefix.is_empty() {
            scope = None;
        } else if let Some(s) = scope.as_mut() {
            s.extend(e.targeting.path_prefix.iter().cloned());
        }
    }
    routes.then_some(scope)
}

/// Whether two scopes (`None` = any path) share a path: one prefix starts the other.
fn overlap(a: Option<&[String]>, b: Option<&[String]>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.iter().any(|x| {
            b.iter()
                .any(|y| x.starts_with(y.as_str()) || y.starts_with(x.as_str()))
        }),
    }
}
