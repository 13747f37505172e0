//! The statistics engine against reference values computed independently, once, with
//! scipy 1.17.1 / statsmodels 0.15.0 / numpy (Python 3.11) and pinned here. The script
//! that produced them is `benches/reference_values.py`.

use abgate::stats::*;

fn close(a: f64, b: f64, rel: f64) {
    assert!(
        (a - b).abs() <= rel * b.abs().max(1e-300),
        "{a} vs {b} (rel {})",
        ((a - b) / b).abs()
    );
}

#[test]
fn welch_matches_scipy() {
    // scipy.stats.ttest_ind_from_stats(10.3, sqrt(5), 1200, 10.0, sqrt(4), 1000, equal_var=False)
    // CI: diff ± t.ppf(0.975, welch_df) * se
    let c = Summary {
        n: 1000.0,
        mean: 10.0,
        variance: 4.0,
    };
    let t = Summary {
        n: 1200.0,
        mean: 10.3,
        variance: 5.0,
    };
    let d = welch(&c, &t, 0.95);
    close(d.p_value, 0.0009159377916310587, 1e-9);
    close(d.abs_ci.0, 0.12278073832596204, 1e-9);
    close(d.abs_ci.1, 0.47721926167403794, 1e-9);
}

#[test]
fn two_proportions_match_statsmodels() {
    // statsmodels proportions_ztest([558, 505], [4988, 5012]) (pooled);
    // confint_proportions_2indep(558, 4988, 505, 5012, method='wald', compare='diff')
    let d = two_proportions((505.0, 5012.0), (558.0, 4988.0), 0.95);
    close(d.p_value, 0.07149488936589772, 1e-9);
    // the pooled z-test equals chi-square without continuity correction:
    // scipy.stats.chi2_contingency([[558, 4430], [505, 4507]], correction=False).pvalue
    close(d.p_value, 0.07149488936589767, 1e-9);
    close(d.abs_ci.0, -0.000971152652410245, 1e-9);
    close(d.abs_ci.1, 0.02319176064311227, 1e-9);
}

#[test]
fn relative_lift_delta_method_matches_formula() {
    // rel = pt/pc − 1; var = Var(pt)/pc² + pt² Var(pc)/pc⁴; ± norm.ppf(0.975) √var
    let (pc, pt) = (505.0 / 5012.0, 558.0 / 4988.0);
    let (rel, ci) = relative_lift(
        pc,
        pt,
        pc * (1.0 - pc) / 5012.0,
        pt * (1.0 - pt) / 4988.0,
        0.95,
    );
    close(rel, 0.11026701707861242, 1e-12);
    close(ci.0, -0.016101619848879728, 1e-9);
    close(ci.1, 0.23663565400610456, 1e-9);
}

#[test]
fn beta_binomial_matches_numerical_integration() {
    // Independent method: scipy.integrate.quad of Beta_t.pdf(x) * Beta_c.cdf(x), and of
    // f(x)(x G(x) − E[Y] G⁺(x)) for the expected losses (uniform priors).
    let b = bayes_binomial((505.0, 5012.0), (558.0, 4988.0), true);
    close(b.prob_better, 0.9642133164978072, 1e-8);
    close(b.loss_control, 0.011194260045430922, 1e-7);
    close(b.loss_treatment, 8.764314189909436e-05, 1e-6);
    // small counts: P(Beta(4, 8) > Beta(8, 6))
    close(
        prob_beta_greater(4.0, 8.0, 8.0, 6.0),
        0.10211910851297033,
        1e-10,
    );
    // symmetry
    close(
        prob_beta_greater(8.0, 6.0, 4.0, 8.0),
        1.0 - 0.10211910851297033,
        1e-10,
    );
}

#[test]
fn normal_posterior_matches_scipy() {
    // d = 0.3, v = 4/1000 + 5/1200: norm.cdf(d/s); s φ(z) + d Φ(z); s φ(z) − d Φ(−z)
    let b = bayes_normal(0.3, 4.0 / 1000.0 + 5.0 / 1200.0, true);
    close(b.prob_better, 0.9995494288680353, 1e-12);
    close(b.loss_control, 0.30001067020452993, 1e-12);
    close(b.loss_treatment, 1.067020452992436e-05, 1e-8);
}

fn cuped_data(n: usize, treat: bool, off: usize) -> Vec<(f64, f64)> {
    (0..n)
        .map(|i| {
            let x = ((i * 37 + off) % 101) as f64 / 10.0;
            let y = 2.0
                + 0.5 * x
                + (((i * 53 + off) % 17) as f64 - 8.0) / 4.0
                + if treat { 0.3 } else { 0.0 };
            (y, x)
        })
        .collect()
}

#[test]
fn t_quantile_matches_scipy_for_any_df() {
    // scipy.stats.t.ppf(q, df), scipy 1.17.1
    for (df, q975, q995) in [
        (30.0, 2.0422724563012378, 2.7499956535672254),
        (1000.0, 1.9623390808264083, 2.580754698065951),
        (7990.0, 1.960260933792148, 2.57644477958348),
        (1.8e6, 1.9599653024693864, 2.5758320349669597),
        (1e9, 1.959963986912325, 2.5758293084654484),
    ] {
        close(t_quantile(0.975, df), q975, 1e-12);
        close(t_quantile(0.995, df), q995, 1e-12);
    }
}

#[test]
fn t_tail_matches_scipy_for_any_df() {
    // scipy.stats.t.sf(t, df), scipy 1.17.1
    for (df, t, sf) in [
        (1.8e6, 1.38, 0.08379340811442172),
        (1.8e6, 2.0, 0.022750206935652502),
        (1.8e6, 5.0, 2.8667841643866216e-07),
        (1.8e6, 8.0, 6.22461042113546e-16),
        (7990.0, 3.0, 0.0013540614997308948),
        (5e4, 6.0, 9.933517623468953e-10),
    ] {
        close(t_sf(t, df), sf, 1e-10); // statrs' normal tail itself is good to ~5e-11
    }
    // and smooth: the 12th digit of the inputs moves it by as little
    let (a, b) = (
        t_sf(1.38, 1.8e6),
        t_sf(1.38 * (1.0 + 1e-12), 1.8e6 * (1.0 + 1e-12)),
    );
    close(a, b, 1e-11);
}

#[test]
fn cuped_matches_numpy() {
    // numpy: theta = cov(y, x, ddof=1)/var(x, ddof=1) pooled; adjusted y − θ(x − x̄);
    // scipy.stats.ttest_ind(adj_t, adj_c, equal_var=False)
    let c = cuped_data(400, false, 0);
    let t = cuped_data(450, true, 11);
    let (c, t) = (
        CoMoments::of(c.iter().copied()),
        CoMoments::of(t.iter().copied()),
    );
    let r = cuped(&c, &t, 0.95).unwrap();
    close(r.theta, 0.49752300391120136, 1e-10);
    close(r.variance_reduction, 0.5799499299454947, 1e-10);
    close(r.diff.abs_lift, 0.29721093812892807, 1e-10);
    close(r.diff.p_value, 0.00044806679698265425, 1e-8);
}

#[test]
fn multiple_testing_matches_statsmodels() {
    // statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03, 0.005, 0.2], method='holm' / 'fdr_bh')
    let p = [0.01, 0.04, 0.03, 0.005, 0.2];
    let h = holm(&p);
    for (a, b) in h.iter().zip([0.04, 0.09, 0.09, 0.025, 0.2]) {
        close(*a, b, 1e-12);
    }
    let bh = benjamini_hochberg(&p);
    for (a, b) in bh.iter().zip([0.025, 0.05, 0.05, 0.025, 0.2]) {
        close(*a, b, 1e-12);
    }
}

#[test]
fn sample_size_matches_statsmodels_and_brentq() {
    // statsmodels NormalIndPower().solve_power(effect_size=0.25, alpha=0.05, power=0.8, ratio=2.0)
    let r = sample_size(1.0, 1.0, 0.25, 0.05, 0.8, 2.0);
    close(r.n_control, 188.3726522539174, 1e-8);
    close(r.n_treatment, 2.0 * 188.3726522539174, 1e-8);
    // binomial 10% baseline, +5% relative: scipy.optimize.brentq on the two-tail power equation
    let (p1, p2) = (0.10, 0.105);
    let r = sample_size(p1 * (1.0 - p1), p2 * (1.0 - p2), p2 - p1, 0.05, 0.8, 1.0);
    close(r.n_control, 57759.764488131696, 1e-9);
}

#[test]
fn srm_chi_square_matches_scipy() {
    // scipy.stats.chisquare([5050, 4950], [5000, 5000]).pvalue
    close(
        chi_square_gof(&[5050, 4950], &[1.0, 1.0]),
        0.31731050786291415,
        1e-9,
    );
}

#[test]
fn constant_groups_give_the_limit_not_a_placeholder() {
    // Every unit of control has 200, every unit of treatment 240 (the demo's `tokens`):
    // scipy.stats.ttest_ind([200]*5, [240]*5, equal_var=False) gives t = -inf, p = 0.0.
    let c = Summary::of(&[200.0; 5]);
    let t = Summary::of(&[240.0; 5]);
    let d = welch(&c, &t, 0.95);
    assert_eq!(d.p_value, 0.0);
    assert_eq!(d.abs_ci, (40.0, 40.0));
    // the sequential p-value and the posterior agree: the difference is certain
    assert_eq!(
        msprt_p_value(d.abs_lift, d.var_diff, 10.0, 0.05, 5000.0),
        0.0
    );
    let b = bayes_normal(d.abs_lift, d.var_diff, true);
    assert_eq!(
        (b.prob_better, b.loss_control, b.loss_treatment),
        (1.0, 40.0, 0.0)
    );
    let b = bayes_normal(d.abs_lift, d.var_diff, false);
    assert_eq!(
        (b.prob_better, b.loss_control, b.loss_treatment),
        (0.0, 0.0, 40.0)
    );
    // equal constants: no difference, nothing significant
    let d = welch(&c, &c, 0.95);
    assert_eq!((d.p_value, d.abs_ci), (1.0, (0.0, 0.0)));
    assert_eq!(msprt_p_value(0.0, 0.0, 10.0, 0.05, 5000.0), 1.0);
    assert_eq!(bayes_normal(0.0, 0.0, true).prob_better, 0.5);
}

#[test]
fn wilson_interval_matches_scipy() {
    // scipy.stats.binomtest(k, n).proportion_ci(confidence_level=c, method="wilson")
    let cases = [
        (50.0, 1000.0, 0.95, 0.03813026239274881, 0.06531382024425081),
        (0.0, 20.0, 0.95, 0.0, 0.16112515805281935),
        (3.0, 7.0, 0.99, 0.11637368051613817, 0.8102850959116125),
        (1000.0, 1000.0, 0.95, 0.9961732415144449, 1.0),
    ];
    for (k, n, c, lo, hi) in cases {
        let (l, h) = wilson(k, n, c);
        assert!((l - lo).abs() <= 1e-9 + 1e-6 * lo, "{k}/{n}: {l} vs {lo}");
        assert!((h - hi).abs() <= 1e-6 * hi, "{k}/{n}: {h} vs {hi}");
    }
    assert_eq!(wilson(0.0, 0.0, 0.95), (0.0, 1.0));
}
