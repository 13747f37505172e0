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

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse};

    const UPSTREAMS: &str = "[upstream.a]\naddrs = [\"127.0.0.1:1\"]\n\
                             [upstream.b]\naddrs = [\"127.0.0.1:2\"]\n";

    /// A layer with one experiment routing to `a`/`b`, under `prefix` if given.
    fn routing_layer(name: &str, prefix: Option<&str>) -> String {
        let targeting = prefix
            .map(|p| format!("targeting = {{ path_prefix = \"{p}\" }}\n"))
            .unwrap_or_default();
        format!(
            "[[layer]]\nname = \"{name}\"\n[[layer.experiment]]\nname = \"{name}_x\"\n\
             traffic = 1.0\n{targeting}\
             [[layer.experiment.variant]]\nname = \"control\"\nweight = 1\nupstream = \"a\"\n\
             [[layer.experiment.variant]]\nname = \"t\"\nweight = 1\nupstream = \"b\"\n"
        )
    }

    #[test]
    fn default_upstream_is_an_index_into_the_upstreams() {
        let cfg = parse(&format!("{UPSTREAMS}[routing]\ndefault_upstream = \"b\"\n")).unwrap();
        assert_eq!(cfg.default_upstream, 1);
    }

    #[test]
    fn missing_routing_is_reported_without_a_line_and_unknown_upstream_at_its_line() {
        let e = errors(UPSTREAMS);
        assert_eq!(
            e,
            [(
                0,
                "routing".to_string(),
                "missing `[routing] default_upstream`: requests outside every experiment need a backend (valid: a, b)".to_string()
            )]
        );
        let e = errors(&format!("{UPSTREAMS}[routing]\ndefault_upstream = \"z\"\n"));
        assert_eq!(
            e,
            [(
                6,
                "routing.default_upstream".to_string(),
                "unknown upstream `z` (valid: a, b)".to_string()
            )]
        );
    }

    #[test]
    fn routing_layers_with_disjoint_prefixes_are_valid() {
        let text = format!(
            "{UPSTREAMS}[routing]\ndefault_upstream = \"a\"\n{}{}",
            routing_layer("one", Some("/v1/")),
            routing_layer("two", Some("/v2/"))
        );
        parse(&text).unwrap();
    }

    #[test]
    fn routing_layers_sharing_a_prefix_or_any_path_are_reported_at_the_later_layer() {
        let text = format!(
            "{UPSTREAMS}[routing]\ndefault_upstream = \"a\"\n{}{}{}",
            routing_layer("one", Some("/v1/")),
            routing_layer("two", Some("/v1/x")),
            routing_layer("three", Some("/v3/"))
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].0, e[0].1.as_str()), (21, "layer[1]"));
        assert!(e[0]
            .2
            .starts_with("layers `one` and `two` could both route"));

        let text = format!(
            "{UPSTREAMS}[routing]\ndefault_upstream = \"a\"\n{}{}",
            routing_layer("one", Some("/v1/")),
            routing_layer("any", None)
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0]
            .2
            .starts_with("layers `one` and `any` could both route"));
    }
}
