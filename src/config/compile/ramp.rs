//! `[layer.experiment.ramp]`: the steps, holds and waits of a ramp, and the rules that
//! tie it to its experiment (the ramp owns `traffic`; its gate needs the error-rate
//! guardrail).

use super::values::{dur, parse_duration};
use crate::config::raw::{RawExperiment, RawRamp, StringOrList};
use crate::config::{Diagnostics, Guardrails, OnInsufficient, Ramp};
use std::time::Duration;

/// The ramp of experiment `e` at `epath`, if it has one; `guardrails` are the
/// experiment's, compiled. `None` also when the ramp is invalid (after recording why).
pub(super) fn compile_ramp(
    d: &mut Diagnostics,
    epath: &str,
    e: &RawExperiment,
    guardrails: Option<&Guardrails>,
) -> Option<Ramp> {
    let r = e.ramp.as_ref()?;
    let path = format!("{epath}.ramp");
    let errors = d.len();
    let steps = steps(d, &path, r);
    let hold = hold(d, &path, r, steps.len());
    let min_requests = match r.min_requests {
        None => 1000,
        Some(n) if n >= 1 => n as u64,
        Some(n) => {
            d.push(
                &format!("{path}.min_requests"),
                format!("{n} must be at least 1 (requests per variant since the step began)"),
            );
            1
        }
    };
    let max_wait = dur(d, &format!("{path}.max_wait"), &r.max_wait, "24h");
    if let Some(longest) = hold.iter().max().filter(|h| **h > max_wait) {
        d.push(
            &format!("{path}.max_wait"),
            format!(
                "{} is shorter than the longest hold ({}): a step could never pass; make `max_wait` at least the hold",
                humantime::format_duration(max_wait),
                humantime::format_duration(*longest)
            ),
        );
    }
    let on_insufficient = match r.on_insufficient.as_deref() {
        None | Some("hold") => OnInsufficient::Hold,
        Some("rollback") => OnInsufficient::Rollback,
        Some("advance") => OnInsufficient::Advance,
        Some(o) => {
            d.push(
                &format!("{path}.on_insufficient"),
                format!("`{o}` is not an action; valid: hold, rollback, advance"),
            );
            OnInsufficient::Hold
        }
    };
    if let (Some(t), Some(target)) = (e.traffic, steps.last()) {
        if t != *target {
            d.push(
                &format!("{epath}.traffic"),
                format!(
                    "{t} disagrees with the ramp, which owns the traffic (its last step is {target}); remove `traffic` or set it to {target}"
                ),
            );
        }
    }
    match guardrails {
        None => d.push(
            &path,
            "a ramp needs [layer.experiment.guardrails] with `error_rate = { max_increase = … }`: its gate passes only when the error-rate increase is shown to stay below `max_increase`",
        ),
        Some(g) if g.error_max_increase.is_none() => d.push(
            &format!("{epath}.guardrails"),
            "a ramp needs `error_rate = { max_increase = … }`: its gate passes only when the error-rate increase is shown to stay below `max_increase`",
        ),
        Some(_) => {}
    }
    (d.len() == errors).then_some(Ramp {
        steps,
        hold,
        min_requests,
        max_wait,
        on_insufficient,
    })
}

/// `steps`: present, not empty, each in (0, 1], strictly increasing.
fn steps(d: &mut Diagnostics, path: &str, r: &RawRamp) -> Vec<f64> {
    let path = format!("{path}.steps");
    let Some(steps) = r.steps.as_ref().filter(|s| !s.is_empty()) else {
        d.push(
            &path,
            "missing: the experiment's traffic at each step, e.g. [0.01, 0.05, 0.2, 0.5]",
        );
        return Vec::new();
    };
    for (i, s) in steps.iter().enumerate() {
        if !(s.is_finite() && *s > 0.0 && *s <= 1.0) {
            d.push(
                &path,
                format!(
                    "step {} is {s}: each step must be above 0 and at most 1",
                    i + 1
                ),
            );
        } else if i > 0 && *s <= steps[i - 1] {
            d.push(
                &path,
                format!(
                    "step {} ({s}) is not above step {} ({}): steps must increase (traffic only grows, so nobody already in moves)",
                    i + 1,
                    i,
                    steps[i - 1]
                ),
            );
        }
    }
    steps.clone()
}

/// `hold`: one duration for every step, or one per step (default 30m).
fn hold(d: &mut Diagnostics, path: &str, r: &RawRamp, n: usize) -> Vec<Duration> {
    let path = format!("{path}.hold");
    let values = match &r.hold {
        None => vec!["30m".to_string()],
        Some(StringOrList::One(s)) => vec![s.clone()],
        Some(StringOrList::Many(v)) => v.clone(),
    };
    if values.len() != 1 && values.len() != n {
        d.push(
            &path,
            format!(
                "{} holds for {n} steps: give one duration for every step or one per step",
                values.len()
            ),
        );
    }
    let parsed: Vec<Duration> = values
        .iter()
        .map(|s| match parse_duration(s) {
            Ok(h) if !h.is_zero() => h,
            Ok(_) => {
                d.push(&path, format!("`{s}` must be longer than zero"));
                Duration::from_secs(1)
            }
            Err(m) => {
                d.push(&path, m);
                Duration::from_secs(1)
            }
        })
        .collect();
    if parsed.len() == 1 {
        vec![parsed[0]; n]
    } else {
        parsed
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::config::{OnInsufficient, Ramp};
    use std::time::Duration;

    const GUARDS: &str = "[layer.experiment.guardrails]\nerror_rate = { max_increase = 0.02 }\n";

    /// One layer `l`: experiment `e` with `lines` and a ramp of `ramp` lines, then
    /// `after` (more experiments).
    fn config(lines: &str, ramp: &str, after: &str) -> String {
        format!(
            "{MINIMAL}[[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\n{lines}\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
             {GUARDS}[layer.experiment.ramp]\n{ramp}\n{after}"
        )
    }

    #[test]
    fn a_ramp_owns_traffic_and_reserves_its_last_step() {
        let cfg = parse(&config(
            "",
            "steps = [0.01, 0.05, 0.2, 0.5]\nhold = [\"1m\", \"2m\", \"3m\", \"4m\"]\n\
             min_requests = 50\nmax_wait = \"1h\"\non_insufficient = \"advance\"",
            "",
        ))
        .unwrap();
        let e = &cfg.layers[0].experiments[0];
        assert_eq!(e.traffic, 0.5);
        assert_eq!(e.end - e.start, crate::hash::BUCKETS / 2);
        assert_eq!(
            e.ramp,
            Some(Ramp {
                steps: vec![0.01, 0.05, 0.2, 0.5],
                hold: [1, 2, 3, 4].map(|m| Duration::from_secs(60 * m)).to_vec(),
                min_requests: 50,
                max_wait: Duration::from_secs(3600),
                on_insufficient: OnInsufficient::Advance,
            })
        );
        let same = parse(&config(
            "traffic = 0.5",
            "steps = [0.1, 0.5]\nhold = \"1s\"",
            "",
        ))
        .unwrap();
        let r = same.layers[0].experiments[0].ramp.clone().unwrap();
        assert_eq!(r.hold, vec![Duration::from_secs(1); 2]);
        assert_eq!(
            (r.min_requests, r.on_insufficient),
            (1000, OnInsufficient::Hold)
        );
        assert_eq!(r.max_wait, Duration::from_secs(86_400));
    }

    #[test]
    fn steps_that_do_not_increase_and_traffic_that_disagrees_are_reported_at_their_line() {
        let got = errors(&config(
            "traffic = 0.3",
            "steps = [0.05, 0.05, 1.5]\nhold = [\"1m\", \"1m\"]\non_insufficient = \"wait\"\n\
             max_wait = \"30s\"",
            "",
        ));
        let got: Vec<_> = got
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    9,
                    "layer[0].experiment[0].traffic",
                    "0.3 disagrees with the ramp, which owns the traffic (its last step is 1.5); remove `traffic` or set it to 1.5"
                ),
                (
                    19,
                    "layer[0].experiment[0].ramp.steps",
                    "step 2 (0.05) is not above step 1 (0.05): steps must increase (traffic only grows, so nobody already in moves)"
                ),
                (
                    19,
                    "layer[0].experiment[0].ramp.steps",
                    "step 3 is 1.5: each step must be above 0 and at most 1"
                ),
                (
                    20,
                    "layer[0].experiment[0].ramp.hold",
                    "2 holds for 3 steps: give one duration for every step or one per step"
                ),
                (
                    21,
                    "layer[0].experiment[0].ramp.on_insufficient",
                    "`wait` is not an action; valid: hold, rollback, advance"
                ),
                (
                    22,
                    "layer[0].experiment[0].ramp.max_wait",
                    "30s is shorter than the longest hold (1m): a step could never pass; make `max_wait` at least the hold"
                ),
            ]
        );
    }

    #[test]
    fn a_largest_step_overlapping_the_next_experiment_is_reported() {
        let next = "[[layer.experiment]]\nname = \"f\"\ntraffic = 0.3\noffset = 0.4\n\
                    [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
                    [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n";
        let got = errors(&config("", "steps = [0.1, 0.5]", next));
        let got: Vec<_> = got
            .iter()
            .map(|(l, p, m)| (*l, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [(
                22,
                "layer[0].experiment[1].traffic",
                "bucket range [0.4000, 0.7000) overlaps the largest ramp step of experiment `e` [0.0000, 0.5000) in layer `l`: lower the ramp's last step or set `offset` so the ranges are disjoint"
            )]
        );
    }

    #[test]
    fn a_ramp_without_the_error_rate_guardrail_is_reported() {
        let toml = format!(
            "{MINIMAL}[[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
             [layer.experiment.ramp]\nsteps = [0.5]\n"
        );
        let got = errors(&toml);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, "layer[0].experiment[0].ramp");
        assert!(got[0]
            .2
            .starts_with("a ramp needs [layer.experiment.guardrails]"));
    }
}
