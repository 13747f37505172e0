//! `[[layer.experiment.variant]]`: names, weights, upstreams and request headers of the
//! variants, and what the request path derives from them once: the control, the
//! cumulative bucket thresholds, the exposure names.

use super::upstreams::UpstreamLookup;
use super::values::{header_name, unique_name};
use crate::config::raw::RawVariant;
use crate::config::AssignmentNames;
use crate::config::{Diagnostics, Variant};
use crate::hash::BUCKETS;
use http::{HeaderName, HeaderValue};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The variants of experiment `ename` in layer `lname`, in file order; an experiment
/// needs at least two (a control and a treatment), with distinct names.
pub(super) fn compile_variants(
    d: &mut Diagnostics,
    epath: &str,
    lname: &str,
    ename: &str,
    raw: &[RawVariant],
    upstreams: &UpstreamLookup<'_>,
) -> Vec<Variant> {
    if raw.len() < 2 {
        d.push(epath, format!("experiment `{ename}` needs at least two [[layer.experiment.variant]] (a control and a treatment)"));
    }
    let mut names = HashSet::new();
    let mut variants = Vec::new();
    for (vi, v) in raw.iter().enumerate() {
        let vpath = format!("{epath}.variant[{vi}]");
        let vname = unique_name(d, &vpath, &v.name, "variant", &mut names, |n| {
            format!("variant `{n}` appears twice in experiment `{ename}`")
        });
        let weight = weight(d, &vpath, v.weight);
        let upstream = v
            .upstream
            .as_deref()
            .and_then(|u| upstreams.index(d, &format!("{vpath}.upstream"), u));
        let headers = headers(d, &vpath, &v.headers);
        let shadow = v.shadow.as_ref().map(|s| {
            let label = format!("{lname}.{ename}={vname}");
            super::shadow::compile_shadow(d, &format!("{vpath}.shadow"), &label, s, upstreams)
        });
        variants.push(Variant {
            label: Arc::from(format!("{lname}.{ename}={vname}")),
            name: vname,
            weight,
            upstream,
            headers,
            shadow: shadow.flatten(),
        });
    }
    variants
}

/// A positive weight; 0 (after recording why) when missing or invalid.
fn weight(d: &mut Diagnostics, vpath: &str, w: Option<f64>) -> f64 {
    match w {
        None => {
            d.push(vpath, "missing `weight` (a positive number, e.g. 50)");
            0.0
        }
        Some(w) if w.is_finite() && w > 0.0 => w,
        Some(w) => {
            d.push(
                &format!("{vpath}.weight"),
                format!("{w} must be a positive number"),
            );
            0.0
        }
    }
}

/// The request headers a variant adds, parsed once. abgate's own headers and `host`
/// are refused: a variant must not be able to forge what abgate reports or where the
/// request goes.
fn headers(
    d: &mut Diagnostics,
    vpath: &str,
    raw: &BTreeMap<String, String>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for (k, val) in raw {
        let hp = format!("{vpath}.headers.{k}");
        let name = header_name(d, &hp, k);
        let value = HeaderValue::from_str(val).map_err(|_| {
            d.push(
                &hp,
                format!("`{val}` is not a valid HTTP header value (visible ASCII and spaces only)"),
            );
        });
        if let (Some(n), Ok(v)) = (name, value) {
            if n.as_str().starts_with("x-abgate-") || n == http::header::HOST {
                d.push(
                    &hp,
                    format!("`{n}` is managed by abgate and cannot be set by a variant"),
                );
            }
            headers.push((n, v));
        }
    }
    headers
}

/// Index of the variant named `control`, else the first.
pub(super) fn control(variants: &[Variant]) -> usize {
    variants
        .iter()
        .position(|v| &*v.name == "control")
        .unwrap_or(0)
}

/// Cumulative thresholds in [0, BUCKETS]: variant i owns `[thr[i-1], thr[i])`. The last
/// is BUCKETS exactly, so rounding never leaves a bucket without a variant.
pub(super) fn thresholds(variants: &[Variant]) -> Vec<u32> {
    let mut total = 0.0;
    for v in variants {
        total += v.weight;
    }
    let mut thresholds = Vec::new();
    let mut acc = 0.0;
    for v in variants {
        acc += v.weight;
        let t = if total > 0.0 {
            (acc / total * BUCKETS as f64).round() as u32
        } else {
            0
        };
        thresholds.push(t);
    }
    if let Some(last) = thresholds.last_mut() {
        *last = BUCKETS;
    }
    thresholds
}

/// Per variant, its exposure names when served itself and when `control` serves it.
pub(super) fn exposure_names(
    lname: &Arc<str>,
    ename: &Arc<str>,
    variants: &[Variant],
    control: usize,
) -> Vec<[Arc<AssignmentNames>; 2]> {
    let names = |v: usize, served: usize| {
        Arc::new(AssignmentNames::new(
            lname.clone(),
            ename.clone(),
            variants[v].name.clone(),
            variants[served].name.clone(),
        ))
    };
    (0..variants.len())
        .map(|v| [names(v, v), names(v, control)])
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::hash::BUCKETS;

    fn experiment(variants: &str) -> String {
        format!(
            "{MINIMAL}[upstream.b]\naddrs = [\"127.0.0.1:2\"]\n[[layer]]\nname = \"l\"\n\
             [[layer.experiment]]\nname = \"e\"\ntraffic = 1.0\n{variants}"
        )
    }

    #[test]
    fn variants_get_labels_upstreams_headers_thresholds_and_a_named_control() {
        let cfg = parse(&experiment(
            "[[layer.experiment.variant]]\nname = \"t\"\nweight = 3\nupstream = \"b\"\n\
             headers = { \"X-Model\" = \"v2\" }\n\
             [[layer.experiment.variant]]\nname = \"control\"\nweight = 1\n",
        ))
        .unwrap();
        let e = &cfg.layers[0].experiments[0];
        assert_eq!(&*e.variants[0].label, "l.e=t");
        assert_eq!(e.variants[0].upstream, Some(1));
        assert_eq!(e.variants[0].headers[0].0, "x-model");
        assert_eq!(e.variants[0].headers[0].1, "v2");
        assert_eq!(e.variants[1].upstream, None);
        assert_eq!(e.control, 1);
        assert_eq!(e.thresholds, [BUCKETS * 3 / 4, BUCKETS]);
        let names = e.exposure_names(&cfg.layers[0].name, 0, 1);
        assert_eq!((&*names.variant, &*names.served), ("t", "control"));
    }

    #[test]
    fn a_single_variant_and_bad_variants_are_each_reported_at_their_line() {
        let e = errors(&experiment(
            "[[layer.experiment.variant]]\nname = \"a\"\nweight = 0\nupstream = \"z\"\n\
             headers = { \"x-abgate-x\" = \"1\", \"bad h\" = \"v\" }\n",
        ));
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    9,
                    "layer[0].experiment[0]",
                    "experiment `e` needs at least two [[layer.experiment.variant]] (a control and a treatment)"
                ),
                (
                    14,
                    "layer[0].experiment[0].variant[0].weight",
                    "0 must be a positive number"
                ),
                (
                    15,
                    "layer[0].experiment[0].variant[0].upstream",
                    "unknown upstream `z` (valid: a, b)"
                ),
                (
                    16,
                    "layer[0].experiment[0].variant[0].headers.bad h",
                    "`bad h` is not a valid HTTP header name; use letters, digits and `-`"
                ),
                (
                    16,
                    "layer[0].experiment[0].variant[0].headers.x-abgate-x",
                    "`x-abgate-x` is managed by abgate and cannot be set by a variant"
                ),
            ]
        );
    }

    #[test]
    fn duplicate_or_unnamed_variants_and_missing_weights_are_reported() {
        let e = errors(&experiment(
            "[[layer.experiment.variant]]\nname = \"a\"\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nweight = 1\n",
        ));
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    12,
                    "layer[0].experiment[0].variant[0]",
                    "missing `weight` (a positive number, e.g. 50)"
                ),
                (
                    15,
                    "layer[0].experiment[0].variant[1].name",
                    "variant `a` appears twice in experiment `e`"
                ),
                (
                    17,
                    "layer[0].experiment[0].variant[2]",
                    "missing: every variant needs a `name`"
                ),
            ]
        );
    }
}
