//! `[layer.experiment.bandit]`: the reward metric and the schedule of the Thompson-sampling
//! weights, checked so that the floors can hold (`min_weight × arms < 1`) and every update
//! can move someone (`max_shift` in (0, 1]).

use super::metrics::MetricLookup;
use super::values::dur;
use crate::config::raw::RawBandit;
use crate::config::{Bandit, Diagnostics, MetricKind};

/// The bandit at `path` of an experiment with `arms` variants.
pub(super) fn compile_bandit(
    d: &mut Diagnostics,
    path: &str,
    b: &RawBandit,
    arms: usize,
    metrics: &MetricLookup<'_>,
) -> Bandit {
    let reward = match b.reward.as_deref() {
        None => {
            d.push(
                path,
                "missing `reward` (the name of a declared [[metric]], binomial or continuous)",
            );
            None
        }
        Some(r) => metrics.def(d, &format!("{path}.reward"), r),
    };
    let min_units = match b.min_units {
        None => 100,
        Some(n) if n >= 0 => n as u64,
        Some(n) => {
            d.push(
                &format!("{path}.min_units"),
                format!("{n} must be 0 or more (e.g. 100)"),
            );
            0
        }
    };
    let min_weight = match b.min_weight {
        None => 0.02,
        Some(w) if w.is_finite() && w >= 0.0 && w * (arms as f64) < 1.0 => w,
        Some(w) => {
            d.push(
                &format!("{path}.min_weight"),
                format!(
                    "{w} × {arms} arms must be below 1 (and {w} at least 0): lower it below {:.4}",
                    1.0 / arms.max(1) as f64
                ),
            );
            0.0
        }
    };
    let max_shift = match b.max_shift {
        None => 0.10,
        Some(s) if s > 0.0 && s <= 1.0 => s,
        Some(s) => {
            d.push(
                &format!("{path}.max_shift"),
                format!("{s} must be in (0, 1]: the largest share of units moved at one update (e.g. 0.1)"),
            );
            1.0
        }
    };
    let (reward_index, kind, higher_is_better, name) = match reward {
        Some((i, m)) => (i, m.kind, m.higher_is_better, m.name.clone()),
        None => (0, MetricKind::Binomial, true, "".into()),
    };
    Bandit {
        reward: name,
        reward_index,
        kind,
        higher_is_better,
        explore: dur(d, &format!("{path}.explore"), &b.explore, "1h"),
        min_units,
        update_interval: dur(
            d,
            &format!("{path}.update_interval"),
            &b.update_interval,
            "10m",
        ),
        min_weight,
        max_shift,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::config::MetricKind;
    use std::time::Duration;

    fn experiment(bandit: &str) -> String {
        format!(
            "{MINIMAL}[[metric]]\nname = \"conv\"\nkind = \"binomial\"\n\
             [[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\ntraffic = 1.0\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"c\"\nweight = 1\n\
             [layer.experiment.bandit]\n{bandit}"
        )
    }

    #[test]
    fn a_bandit_gets_its_reward_metric_and_defaults() {
        let cfg = parse(&experiment("reward = \"conv\"\nexplore = \"0s\"\n")).unwrap_err();
        assert!(
            cfg.to_string().contains("must be longer than zero"),
            "{cfg}"
        );
        let cfg = parse(&experiment("reward = \"conv\"\n")).unwrap();
        let b = cfg.layers[0].experiments[0].bandit.clone().unwrap();
        assert_eq!((&*b.reward, b.reward_index), ("conv", 0));
        assert_eq!(b.kind, MetricKind::Binomial);
        assert_eq!(b.explore, Duration::from_secs(3600));
        assert_eq!(b.update_interval, Duration::from_secs(600));
        assert_eq!((b.min_units, b.min_weight, b.max_shift), (100, 0.02, 0.10));
    }

    #[test]
    fn an_unknown_reward_impossible_floors_and_shifts_are_reported_at_their_line() {
        let e = errors(&experiment(
            "reward = \"revenue\"\nmin_weight = 0.34\nmax_shift = 0\nupdate_interval = \"-1s\"\nmin_units = -1\n",
        ));
        let got: Vec<_> = e.iter().map(|(_, p, m)| (p.as_str(), m.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    "layer[0].experiment[0].bandit.reward",
                    "unknown metric `revenue` (declared: conv)"
                ),
                (
                    "layer[0].experiment[0].bandit.min_weight",
                    "0.34 × 3 arms must be below 1 (and 0.34 at least 0): lower it below 0.3333"
                ),
                (
                    "layer[0].experiment[0].bandit.max_shift",
                    "0 must be in (0, 1]: the largest share of units moved at one update (e.g. 0.1)"
                ),
                (
                    "layer[0].experiment[0].bandit.update_interval",
                    "`-1s` is not a duration; write a number and a unit, e.g. \"200ms\", \"5s\", \"5m\", \"365d\""
                ),
                (
                    "layer[0].experiment[0].bandit.min_units",
                    "-1 must be 0 or more (e.g. 100)"
                ),
            ]
        );
    }

    #[test]
    fn a_bandit_without_reward_is_reported() {
        let e = errors(&experiment("explore = \"1m\"\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].1, "layer[0].experiment[0].bandit");
        assert!(e[0].2.starts_with("missing `reward`"), "{e:?}");
    }

    #[test]
    fn a_bandit_with_a_ramp_is_reported_at_the_ramp() {
        let text = experiment("reward = \"conv\"\n").replace(
            "[layer.experiment.bandit]",
            "[layer.experiment.guardrails]\nerror_rate = { max_increase = 0.02 }\n\
             [layer.experiment.ramp]\nsteps = [0.1, 0.5]\n[layer.experiment.bandit]",
        );
        let e = errors(&text.replace("traffic = 1.0\n", ""));
        let got: Vec<_> = e.iter().map(|(_, p, m)| (p.as_str(), m.as_str())).collect();
        assert_eq!(got.len(), 1, "{e:?}");
        assert_eq!(got[0].0, "layer[0].experiment[0].ramp");
        assert!(
            got[0]
                .1
                .starts_with("a bandit experiment cannot also have a ramp"),
            "{e:?}"
        );
    }
}
