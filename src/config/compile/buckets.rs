//! Bucket ranges: the share of its layer's buckets an experiment owns. Ranges of one
//! layer must be disjoint and fit in the layer, which is what keeps the experiments of
//! a layer mutually exclusive.

use super::values::share;
use crate::config::raw::RawExperiment;
use crate::config::{Diagnostics, Experiment};
use crate::hash::BUCKETS;

/// An experiment's range of layer buckets.
pub(super) struct BucketRange {
    /// Share of the layer, as written (0 if missing or invalid).
    pub traffic: f64,
    /// First bucket owned (inclusive).
    pub start: u32,
    /// End of the range (exclusive), at most [`BUCKETS`].
    pub end: u32,
}

/// The range of experiment `ename`: from `offset`, or else from `next_start` (the end
/// of the previous experiment), `traffic` long (with a ramp, its last step: the largest
/// range the ramp may grow to). A range past the end of the layer or overlapping one of
/// the `earlier` experiments is reported.
#[allow(clippy::too_many_arguments)]
pub(super) fn bucket_range(
    d: &mut Diagnostics,
    epath: &str,
    e: &RawExperiment,
    ramp_target: Option<f64>,
    ename: &str,
    lname: &str,
    next_start: u32,
    earlier: &[Experiment],
) -> BucketRange {
    let traffic = match (ramp_target, e.traffic) {
        (Some(t), _) => t,
        (None, None) => {
            d.push(epath, "missing `traffic` (share of the layer, e.g. 0.5)");
            0.0
        }
        (None, t) => share(d, &format!("{epath}.traffic"), t, "traffic").unwrap_or(0.0),
    };
    let start = match e.offset {
        None => next_start,
        o => share(d, &format!("{epath}.offset"), o, "offset")
            .map(|o| (o * BUCKETS as f64).round() as u32)
            .unwrap_or(next_start),
    };
    let end = start + (traffic * BUCKETS as f64).round() as u32;
    if end > BUCKETS {
        d.push(
            &format!("{epath}.traffic"),
            format!(
                "experiment `{ename}` would end at {:.4} of layer `{lname}`: the experiments of a layer share at most 1.0 of its traffic; lower `traffic` or `offset`",
                end as f64 / BUCKETS as f64
            ),
        );
    }
    // The overlap is checked, and reported, with the range as written, before it is
    // cut at the end of the layer.
    for o in earlier {
        if start < o.end && o.start < end && (o.ramp.is_some() || ramp_target.is_some()) {
            let (whose, fix) = match o.ramp {
                Some(_) => (
                    format!("the largest ramp step of experiment `{}`", o.name),
                    "lower the ramp's last step",
                ),
                None => (
                    format!("experiment `{}`", o.name),
                    "lower this ramp's last step",
                ),
            };
            d.push(
                &format!("{epath}.traffic"),
                format!(
                    "bucket range [{:.4}, {:.4}) overlaps {whose} [{:.4}, {:.4}) in layer `{lname}`: {fix} or set `offset` so the ranges are disjoint",
                    start as f64 / BUCKETS as f64,
                    end as f64 / BUCKETS as f64,
                    o.start as f64 / BUCKETS as f64,
                    o.end as f64 / BUCKETS as f64
                ),
            );
        } else if start < o.end && o.start < end {
            d.push(
                &format!("{epath}.traffic"),
                format!(
                    "bucket range [{:.4}, {:.4}) overlaps experiment `{}` [{:.4}, {:.4}) in layer `{lname}`; set `offset` so the ranges are disjoint",
                    start as f64 / BUCKETS as f64,
                    end as f64 / BUCKETS as f64,
                    o.name,
                    o.start as f64 / BUCKETS as f64,
                    o.end as f64 / BUCKETS as f64
                ),
            );
        }
    }
    BucketRange {
        traffic,
        start,
        end: end.min(BUCKETS),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::hash::BUCKETS;

    /// A layer `l` with experiments of the given (traffic, offset) lines.
    fn layer(experiments: &[&str]) -> String {
        let mut s = format!("{MINIMAL}[[layer]]\nname = \"l\"\n");
        for (i, lines) in experiments.iter().enumerate() {
            s.push_str(&format!(
                "[[layer.experiment]]\nname = \"e{i}\"\n{lines}\n\
                 [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
                 [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n"
            ));
        }
        s
    }

    #[test]
    fn ranges_follow_each_other_unless_an_offset_is_given() {
        let cfg = parse(&layer(&[
            "traffic = 0.25",
            "traffic = 0.25",
            "traffic = 0.1\noffset = 0.9",
        ]))
        .unwrap();
        let ranges: Vec<_> = cfg.layers[0]
            .experiments
            .iter()
            .map(|e| (e.traffic, e.start, e.end))
            .collect();
        let b = BUCKETS / 4;
        assert_eq!(
            ranges,
            [
                (0.25, 0, b),
                (0.25, b, 2 * b),
                (0.1, BUCKETS * 9 / 10, BUCKETS)
            ]
        );
    }

    #[test]
    fn missing_traffic_a_range_past_the_layer_and_an_overlap_are_reported() {
        let e = errors(&layer(&[
            "offset = 0.5",
            "traffic = 0.6",
            "traffic = 0.5\noffset = 0.2",
        ]));
        let got: Vec<_> = e
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    7,
                    "layer[0].experiment[0]",
                    "missing `traffic` (share of the layer, e.g. 0.5)"
                ),
                (
                    18,
                    "layer[0].experiment[1].traffic",
                    "experiment `e1` would end at 1.1000 of layer `l`: the experiments of a layer share at most 1.0 of its traffic; lower `traffic` or `offset`"
                ),
                (
                    27,
                    "layer[0].experiment[2].traffic",
                    "bucket range [0.2000, 0.7000) overlaps experiment `e0` [0.5000, 0.5000) in layer `l`; set `offset` so the ranges are disjoint"
                ),
                (
                    27,
                    "layer[0].experiment[2].traffic",
                    "bucket range [0.2000, 0.7000) overlaps experiment `e1` [0.5000, 1.0000) in layer `l`; set `offset` so the ranges are disjoint"
                ),
            ]
        );
    }
}
