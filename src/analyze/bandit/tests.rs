//! Tests of the bandit section on hand-made logs, with numbers computed independently
//! (`benches/bandit_analysis_reference.py`) and against the proxy's own P(best).

use super::*;
use crate::config::test_support::{parse, MINIMAL};
use crate::events::Event;
use std::fmt::Write as _;

/// A bandit experiment `e` with arms `arms`, reward `conv` (binomial) and metric
/// `rev` (continuous).
fn config(arms: &[&str]) -> Config {
    let mut t = format!(
        "{MINIMAL}[[metric]]\nname = \"conv\"\nkind = \"binomial\"\n\
         [[metric]]\nname = \"rev\"\nkind = \"continuous\"\n\
         [[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\ntraffic = 1.0\n\
         metrics = [\"rev\"]\n"
    );
    for a in arms {
        let _ = write!(
            t,
            "[[layer.experiment.variant]]\nname = \"{a}\"\nweight = 1\n"
        );
    }
    t.push_str("[layer.experiment.bandit]\nreward = \"conv\"\n");
    parse(&t).unwrap()
}

/// A log being written: exposures, outcomes and `bandit` records, in order.
#[derive(Default)]
struct Log(String);

impl Log {
    fn expose(&mut self, unit: &str, arm: &str, period: u64) {
        let _ = writeln!(
            self.0,
            r#"{{"type":"exposure","ts":"2026-12-03T10:00:00.000000Z","unit_id":"{unit}","assignments":[{{"layer":"l","experiment":"e","variant":"{arm}","served":"{arm}","bandit_period":{period}}}],"latency_ms":1.0,"error":null}}"#
        );
    }
    fn outcome(&mut self, unit: &str, metric: &str, value: f64) {
        let _ = writeln!(
            self.0,
            r#"{{"type":"outcome","ts":"2026-12-03T10:00:00.000000Z","unit_id":"{unit}","metric":"{metric}","value":{value}}}"#
        );
    }
    /// The record of `period` (through the event encoder, as abgate writes it).
    fn period(&mut self, arms: &[&str], period: u64, weights: &[f64]) {
        self.period_at(arms, period, weights, 1_796_000_000_000 + period * 60_000);
    }
    fn period_at(&mut self, arms: &[&str], period: u64, weights: &[f64], start: u64) {
        let mut buf = Vec::new();
        Event::Bandit(Box::new(BanditRecord {
            ts: SystemTime::UNIX_EPOCH,
            experiment: "e".into(),
            period,
            start_unix_ms: start,
            explore: period == 0,
            variants: arms.iter().map(|a| a.to_string()).collect(),
            weights: weights.to_vec(),
            target_weights: weights.to_vec(),
            prob_best: weights.to_vec(),
            config_version: "test".into(),
        }))
        .encode(&mut buf, None);
        self.0.push_str(std::str::from_utf8(&buf).unwrap());
    }
    /// `n` new units on `arm` in `period` named `{prefix}{i}`, the first `conv` of
    /// them converting.
    fn units(&mut self, prefix: &str, arm: &str, period: u64, n: usize, conv: usize) {
        for i in 0..n {
            let u = format!("{prefix}{i}");
            self.expose(&u, arm, period);
            if i < conv {
                self.outcome(&u, "conv", 1.0);
            }
        }
    }
    fn analyze(&self, cfg: &Config) -> super::super::ExperimentReport {
        let (e, warnings) = self.analyze_warned(cfg);
        assert!(warnings.is_empty(), "{warnings:?}");
        e
    }
    fn analyze_warned(&self, cfg: &Config) -> (super::super::ExperimentReport, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events-1.jsonl"), &self.0).unwrap();
        let mut warnings = Vec::new();
        let r = super::super::analyze(
            cfg,
            &[dir.path().to_path_buf()],
            &Options::default(),
            |_| {},
            |w| warnings.push(w),
        )
        .unwrap();
        (r.experiments.into_iter().next().unwrap(), warnings)
    }
}

fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() < 1e-12 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}

#[test]
fn estimates_are_period_weighted_and_moved_units_stay_in_their_first_arm() {
    let arms = ["a", "b"];
    let cfg = config(&arms);
    let mut log = Log::default();
    log.period(&arms, 0, &[0.5, 0.5]);
    log.units("a", "a", 0, 10, 3);
    log.units("b", "b", 0, 10, 5);
    log.outcome("b8", "conv", 1.0); // before its move: counts
    for (u, v) in [("a0", 1.0), ("a1", 2.0), ("a2", 4.0)] {
        log.outcome(u, "rev", v);
    }
    for (u, v) in [
        ("b0", 3.0),
        ("b1", 1.0),
        ("b2", 2.0),
        ("b3", 2.0),
        ("b4", 5.0),
    ] {
        log.outcome(u, "rev", v);
    }
    log.period(&arms, 1, &[0.2, 0.8]);
    log.units("c", "a", 1, 5, 1);
    log.units("d", "b", 1, 20, 12);
    log.outcome("c0", "rev", 10.0);
    for i in 0..12 {
        log.outcome(&format!("d{i}"), "rev", 1.0);
    }
    log.outcome("d0", "rev", 2.0);
    log.expose("a0", "a", 1); // returning, same arm: counted once, in period 0
    log.expose("b8", "a", 1); // moved: its later outcomes do not count
    log.expose("b9", "a", 1);
    log.outcome("b8", "rev", 9.0);
    log.outcome("b9", "conv", 1.0);
    log.outcome("b9", "rev", 7.0);
    let e = log.analyze(&cfg);
    let b = e.bandit.as_ref().expect("a bandit section");
    assert!(e.comparisons.is_empty(), "no fixed-weight comparison");
    assert_eq!((b.units, b.moved_units, b.units_without_period), (45, 2, 0));
    assert_eq!(
        (b.arms[0].units, b.arms[1].units, b.arms[1].moved_units),
        (15, 30, 2)
    );
    assert_eq!(e.mixed_units, 0);
    // python3 benches/bandit_analysis_reference.py (numpy, scipy):
    //   mean = Σ_p (N_p/N) · mean_{p,arm}, var = Σ_p (N_p/N)² s²_{p,arm}/n_{p,arm},
    //   s² = p(1−p) (binomial) or the sample variance; CI = mean ± norm.ppf(.975)·√var
    let want = [
        // (arm, metric slot in the report, mean, lo, hi)
        (
            0,
            0,
            0.24444444444444446,
            0.012333965739159292,
            0.47655492314972964,
        ),
        (1, 0, 0.6, 0.4198917392317259, 0.7801082607682741),
        (
            0,
            1,
            1.4222222222222223,
            -0.7864615120237877,
            3.630905956468232,
        ),
        (
            1,
            1,
            0.9666666666666666,
            0.4647912950587948,
            1.4685420382745384,
        ),
    ];
    for (arm, m, mean, lo, hi) in want {
        let got = &b.arms[arm].metrics[m];
        assert_eq!(got.metric, ["conv", "rev"][m]);
        close(got.mean, mean);
        close(got.ci[0], lo);
        close(got.ci[1], hi);
    }
    // Beta(5, 12) vs Beta(19, 13): scipy.integrate.quad of
    //   beta.pdf(x, 19, 13) · beta.cdf(x, 5, 12) -> 0.9807794362228904
    assert!((b.arms[1].prob_best - 0.9807794362228904).abs() < 1e-9);
    assert!((b.arms[0].prob_best + b.arms[1].prob_best - 1.0).abs() < 1e-12);
    // the weight history, and the SRM of a log that follows it exactly
    let units: Vec<Vec<u64>> = b.periods.iter().map(|p| p.units.clone()).collect();
    assert_eq!(units, [vec![10, 10], vec![5, 20]]);
    assert_eq!(b.periods[1].weights.as_deref(), Some(&[0.2, 0.8][..]));
    assert_eq!(
        b.periods[1].start.as_deref(),
        Some("2026-11-30T00:54:20.000Z")
    );
    assert_eq!((b.srm.p_value, b.srm.df), (Some(1.0), 2));
    assert_eq!(e.verdict, "keep_running");
    assert!(e.reason.contains("b leads on conv"), "{}", e.reason);
}

/// New units per period: [52, 48], [28, 72], [12, 88] at shares .5/.5, .3/.7, .1/.9;
/// the 100 units of period 0 come back in periods 1 and 2 and the 100 of period 1 in
/// period 2.
fn srm_log(new: [[usize; 2]; 3]) -> Log {
    let arms = ["a", "b"];
    let shares = [[0.5, 0.5], [0.3, 0.7], [0.1, 0.9]];
    let mut log = Log::default();
    let mut seen: Vec<(String, &str)> = Vec::new();
    for (p, (n, w)) in new.iter().zip(shares).enumerate() {
        log.period(&arms, p as u64, &w);
        for (u, arm) in &seen {
            log.expose(u, arm, p as u64);
        }
        for (a, &k) in n.iter().enumerate() {
            for i in 0..k {
                let u = format!("p{p}{}{i}", arms[a]);
                log.expose(&u, arms[a], p as u64);
                seen.push((u, arms[a]));
            }
        }
    }
    log
}

#[test]
fn srm_counts_returning_units_once_against_each_periods_shares() {
    let cfg = config(&["a", "b"]);
    let e = srm_log([[52, 48], [28, 72], [12, 88]]).analyze(&cfg);
    let s = &e.bandit.as_ref().unwrap().srm;
    // benches/bandit_analysis_reference.py (scipy): chi2 = Σ_p Σ_a (o − N_p w)²/(N_p w) = 0.794920634920635,
    //   stats.chi2.sf(0.794920634920635, 3) -> 0.8506815609346
    close(s.chi_square, 0.794920634920635);
    assert_eq!(s.df, 3);
    assert!((s.p_value.unwrap() - 0.8506815609346).abs() < 1e-9, "{s:?}");
    // Counting every unit in every period it is exposed in (the history's exposure
    // counts) gives chi2 152.05, p = 9.5e-33 for the same log (scipy): a false alarm.
    assert_eq!(e.srm_p_value, s.p_value.unwrap());
    assert_eq!(e.verdict, "keep_running");
    let units: u64 = e.units.values().sum();
    assert_eq!(units, 300, "every unit once");
}

#[test]
fn srm_flags_units_that_do_not_follow_the_shares() {
    let arms = ["a", "b"];
    let cfg = config(&arms);
    let mut log = Log::default();
    log.period(&arms, 0, &[0.5, 0.5]);
    log.units("x", "a", 0, 50, 0);
    log.units("y", "b", 0, 50, 0);
    log.period(&arms, 1, &[0.2, 0.8]);
    log.units("z", "a", 1, 50, 0);
    log.units("w", "b", 1, 50, 0);
    let e = log.analyze(&cfg);
    let s = &e.bandit.as_ref().unwrap().srm;
    // benches/bandit_analysis_reference.py (scipy): chi2 = 56.25, stats.chi2.sf(56.25, 2) -> 6.101936677605317e-13
    close(s.chi_square, 56.25);
    assert!((s.p_value.unwrap() / 6.101936677605317e-13 - 1.0).abs() < 1e-6);
    assert_eq!(e.verdict, "invalid");
}

#[test]
fn one_record_per_period_is_kept_and_sidecars_that_disagree_are_named() {
    let arms = ["a", "b"];
    let cfg = config(&arms);
    let mut log = Log::default();
    log.period(&arms, 0, &[0.5, 0.5]);
    log.units("x", "a", 0, 10, 1);
    log.units("y", "b", 0, 10, 1);
    log.period(&arms, 0, &[0.5, 0.5]); // another sidecar, or the same after a restart
    let e = log.analyze(&cfg);
    let b = e.bandit.as_ref().unwrap();
    assert_eq!(b.periods.len(), 1);
    assert_eq!((b.srm.periods_tested, b.srm.df), (1, 1));
    // a sidecar that served other shares: the first record read is used, and said so
    log.period(&arms, 0, &[0.3, 0.7]);
    let (e2, warnings) = log.analyze_warned(&cfg);
    assert_eq!(e2.bandit.unwrap().periods[0].weights, Some(vec![0.5, 0.5]));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("period 0 name other shares"),
        "{warnings:?}"
    );
}

#[test]
fn a_log_without_bandit_records_has_no_history_and_no_srm() {
    let cfg = config(&["a", "b"]);
    let mut log = Log::default();
    log.units("x", "a", 0, 30, 3);
    log.units("y", "b", 1, 70, 7);
    let e = log.analyze(&cfg);
    let b = e.bandit.as_ref().unwrap();
    assert!(!b.weight_history);
    assert_eq!(b.srm.p_value, None);
    assert!(b.srm.note.as_deref().unwrap().contains("skipped"));
    assert!(e.srm_p_value.is_nan());
    assert_eq!(b.periods.len(), 2);
    assert!(b.periods.iter().all(|p| p.weights.is_none()));
    let table = super::super::render::table(&super::super::Report {
        experiments: vec![e.clone()],
        read: Default::default(),
        confidence: 0.95,
    });
    assert!(table.contains("weight history: missing"), "{table}");
}

#[test]
fn the_summary_path_says_a_bandit_needs_the_direct_analysis() {
    let cfg = config(&["a", "b"]);
    let st = super::super::Sufficient {
        experiments: vec![super::super::ExperimentStats::empty(&cfg, (0, 0))],
        read: Default::default(),
    };
    let r = super::super::report(&cfg, &st, &Options::default());
    let e = &r.experiments[0];
    assert_eq!(e.reason, super::super::BANDIT_NEEDS_EVENTS);
    assert!(e.comparisons.is_empty() && e.bandit.is_none() && e.srm_p_value.is_nan());
    let html = super::super::render::html(&r);
    assert!(html.contains("not computed") && html.contains("run `abgate analyze --events`"));
}

#[test]
fn prob_best_is_what_the_proxy_computes_from_the_same_statistics() {
    // Three arms (Monte Carlo), two periods; one exposure per unit, so the proxy's
    // per-exposure statistics equal the analysis's per-unit ones.
    let arms = ["a", "b", "c"];
    let cfg = config(&arms);
    let data = [[(20, 2), (20, 3), (20, 5)], [(10, 1), (15, 3), (35, 10)]];
    let mut log = Log::default();
    let exp = &cfg.layers[0].experiments[0];
    let dir = tempfile::tempdir().unwrap();
    let proxy = crate::guard::bandit::BanditState::open_or_start(
        exp,
        exp.bandit.as_ref().unwrap(),
        dir.path(),
        0,
    );
    let mut want = Vec::new();
    for (p, period) in data.iter().enumerate() {
        log.period(&arms, p as u64, &[1.0 / 3.0; 3]);
        for (a, &(n, conv)) in period.iter().enumerate() {
            log.units(&format!("p{p}{a}-"), arms[a], p as u64, n, conv);
            for i in 0..n {
                proxy.expose(a);
                if i < conv {
                    proxy.reward(a, 1.0);
                }
            }
        }
        proxy.close();
        let next = proxy.next_period(1_000 * (p as u64 + 1), &[true; 3]);
        want = next.prob_best.clone();
        proxy.open(next).unwrap();
    }
    let e = log.analyze(&cfg);
    let got: Vec<f64> = e.bandit.unwrap().arms.iter().map(|a| a.prob_best).collect();
    assert_eq!(got, want);
    assert!(want[2] > want[1] && want[1] > want[0], "{want:?}");
}

#[test]
fn the_earliest_record_of_a_period_is_kept_whatever_the_order_and_other_arms_are_set_aside() {
    let arms = ["a", "b"];
    let cfg = config(&arms);
    let mut log = Log::default();
    // A sidecar that joined a fleet late: its own period 0 first in its file, then the
    // fleet's, which started earlier (same shares).
    log.period_at(&arms, 0, &[0.5, 0.5], 1_796_000_100_000);
    log.period_at(&arms, 0, &[0.5, 0.5], 1_796_000_000_000);
    // A history of other arms, from before the arms changed, numbered from 0 too.
    log.period_at(&["a", "b", "z"], 1, &[0.2, 0.2, 0.6], 1_795_000_000_000);
    log.period_at(&arms, 1, &[0.3, 0.7], 1_796_000_060_000);
    log.units("x", "a", 0, 10, 1);
    log.units("y", "b", 0, 10, 1);
    log.units("v", "a", 1, 3, 0);
    log.units("w", "b", 1, 7, 0);
    let e = log.analyze(&cfg); // and no warning
    let b = e.bandit.as_ref().unwrap();
    assert_eq!(b.periods[0].start_unix_ms, Some(1_796_000_000_000));
    assert_eq!(b.periods[1].weights, Some(vec![0.3, 0.7]));
    assert_eq!(b.srm.units_without_weights, 0);
    assert_eq!(b.srm.periods_tested, 2);
}
