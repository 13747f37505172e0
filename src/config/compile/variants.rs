//! `[[layer.experiment.variant]]`: names, weights, upstreams and request headers of the
//! variants, and what the request path derives from them once: the control, the
//! cumulative bucket thresholds, the exposure names.

use super::upstreams::UpstreamLookup;
use super::values::{header_name, name_ok};
use crate::assign::hash::BUCKETS;
use crate::config::raw::RawVariant;
use crate::config::{Diagnostics, Variant};
use crate::events::AssignmentNames;
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
        let vname = name_ok(d, &vpath, &v.name, "variant").unwrap_or_else(|| Arc::from("?"));
        if !names.insert(vname.to_string()) {
            d.push(
                &format!("{vpath}.name"),
                format!("variant `{vname}` appears twice in experiment `{ename}`"),
            );
        }
        let weight = weight(d, &vpath, v.weight);
        let upstream = v
            .upstream
            .as_deref()
            .and_then(|u| upstreams.index(d, &format!("{vpath}.upstream"), u));
        let headers = headers(d, &vpath, &v.headers);
        variants.push(Variant {
            label: Arc::from(format!("{lname}.{ename}={vname}")),
            name: vname,
            weight,
            upstream,
            headers,
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
