//! Statistics as pure functions: no I/O, no clock. Used live (guardrails, admin) and
//! offline (`abgate analyze`). Distributions come from `statrs`.
//!
//! Conventions (the statistics are described in `docs/analysis.md`): variances are sample variances (n − 1); p-values are two-sided;
//! the binomial p-value is the pooled two-proportion z-test (equal to chi-square without
//! continuity correction) and its CI the unpooled Wald interval; the continuous p-value
//! and CI are Welch's; relative lifts use the delta method; the sequential p-value and
//! confidence sequence are the mixture SPRT in GrowthBook's asymptotic form.

pub mod bandit;
mod moments;

pub use moments::{CoMoments, Moments, Running};

use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, Normal, StudentsT};
use statrs::function::beta::ln_beta;

/// The mixing-variance tuning of the mSPRT, GrowthBook's default: the total number of
/// observations at which the confidence sequence is tightest; the mixing variance ρ² is
/// derived from it by [`msprt_rho2`]. The default of `abgate analyze --tuning` and the
/// value of the live report and of the guardrails.
pub const MSPRT_TUNING: f64 = 5000.0;

/// Standard normal CDF.
pub fn norm_cdf(x: f64) -> f64 {
    Normal::standard().cdf(x)
}

/// Standard normal survival function.
pub fn norm_sf(x: f64) -> f64 {
    Normal::standard().sf(x)
}

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    Normal::standard().pdf(x)
}

/// Standard normal quantile.
pub fn norm_ppf(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

/// Two-sided p-value of a z statistic.
pub fn two_sided_p(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    (2.0 * norm_sf(z.abs())).min(1.0)
}

/// n, mean and sample variance of one group.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Summary {
    /// Observations.
    pub n: f64,
    /// Mean.
    pub mean: f64,
    /// Sample variance (n − 1).
    pub variance: f64,
}

impl Summary {
    /// From a slice of values (two passes: see [`Moments`]).
    pub fn of(values: &[f64]) -> Summary {
        Moments::of(values.iter().copied()).summary()
    }

    /// Of `n` 0/1 observations of which `successes` are 1: mean = successes / n (0 when
    /// n = 0) and the sample variance p(1 − p)·n/(n − 1) (0 when n ≤ 1).
    pub fn binomial(n: f64, successes: f64) -> Summary {
        let p = if n > 0.0 { successes / n } else { 0.0 };
        Summary {
            n,
            mean: p,
            variance: if n > 1.0 {
                p * (1.0 - p) * n / (n - 1.0)
            } else {
                0.0
            },
        }
    }
}

/// A difference of means with its interval and p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// Treatment mean − control mean.
    pub abs_lift: f64,
    /// Confidence interval of `abs_lift`.
    pub abs_ci: (f64, f64),
    /// Two-sided p-value.
    pub p_value: f64,
    /// Variance of the estimated difference used for the CI (and the sequential test).
    pub var_diff: f64,
}

/// Welch's t-test and interval for treatment − control.
pub fn welch(c: &Summary, t: &Summary, confidence: f64) -> Difference {
    let diff = t.mean - c.mean;
    let (vc, vt) = (c.variance / c.n, t.variance / t.n);
    let var_diff = vc + vt;
    if c.n < 2.0 || t.n < 2.0 || var_diff.is_nan() {
        return Difference {
            abs_lift: diff,
            abs_ci: (f64::NAN, f64::NAN),
            p_value: 1.0,
            var_diff,
        };
    }
    if var_diff == 0.0 {
        // Every unit of each group has the same value: the difference is known exactly
        // (the limit of the test as the variance goes to 0; scipy's ttest_ind gives
        // t = ±inf, p = 0 for different constants).
        return Difference {
            abs_lift: diff,
            abs_ci: (diff, diff),
            p_value: if diff == 0.0 { 1.0 } else { 0.0 },
            var_diff,
        };
    }
    let se = var_diff.sqrt();
    let df = var_diff * var_diff / (vc * vc / (c.n - 1.0) + vt * vt / (t.n - 1.0));
    let stat = diff / se;
    let p = (2.0 * t_sf(stat.abs(), df)).min(1.0);
    let q = t_quantile(1.0 - (1.0 - confidence) / 2.0, df);
    Difference {
        abs_lift: diff,
        abs_ci: (diff - q * se, diff + q * se),
        p_value: p,
        var_diff,
    }
}

/// Degrees of freedom from which [`t_quantile`] uses the Cornish–Fisher expansion.
const T_EXPANSION_DF: f64 = 1000.0;

/// Degrees of freedom from which [`t_sf`] inverts that expansion, for |t| ≤
/// [`T_EXPANSION_MAX_T`] (where its first omitted term, of order t¹¹/df⁵, is below 1e-15).
const T_SF_EXPANSION_DF: f64 = 1e5;
const T_EXPANSION_MAX_T: f64 = 12.0;

/// The Cornish–Fisher expansion of Student's t quantile in 1/df around the normal
/// quantile `z` (Abramowitz & Stegun 26.7.5, four terms, error O(df⁻⁵)), and its
/// derivative in `z`.
fn t_from_z(z: f64, df: f64) -> (f64, f64) {
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0;
    let d1 = (3.0 * z2 + 1.0) / 4.0;
    let d2 = ((25.0 * z2 + 48.0) * z2 + 3.0) / 96.0;
    let d3 = (((21.0 * z2 + 95.0) * z2 + 51.0) * z2 - 15.0) / 384.0;
    let d4 = ((((711.0 * z2 + 5432.0) * z2 + 7410.0) * z2 - 5760.0) * z2 - 945.0) / 92160.0;
    (
        z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df,
        1.0 + (d1 + (d2 + (d3 + d4 / df) / df) / df) / df,
    )
}

/// The `p` quantile of Student's t with `df` degrees of freedom. statrs' inverse CDF is
/// accurate to ~1e-13 for small df but stops its search early for large ones (at 1.8
/// million df it is off by 2e-3 and jumps with the 12th digit of df — Welch's df for
/// a request-level metric over a day of traffic); there the Cornish–Fisher expansion
/// ([`t_from_z`], error < 1e-14 from 1000 df) is exact to double precision and smooth.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if df < T_EXPANSION_DF {
        return StudentsT::new(0.0, 1.0, df)
            .map(|d| d.inverse_cdf(p))
            .unwrap_or(f64::NAN);
    }
    t_from_z(norm_ppf(p), df).0
}

/// P(T > t) for Student's t with `df` degrees of freedom. statrs' survival function
/// loses digits at very large df (1e-9 relative at 1.8 million, and more in the 12th digit
/// of its inputs); there it is Φ(−z) for the z whose Cornish–Fisher quantile is t,
/// found by Newton's method: smooth, and exact to double precision.
pub fn t_sf(t: f64, df: f64) -> f64 {
    if df >= T_SF_EXPANSION_DF && t.abs() <= T_EXPANSION_MAX_T {
        let mut z = t;
        for _ in 0..20 {
            let (f, slope) = t_from_z(z, df);
            let step = (f - t) / slope;
            z -= step;
            if step.abs() <= 1e-16 * z.abs().max(1.0) {
                break;
            }
        }
        return norm_sf(z);
    }
    StudentsT::new(0.0, 1.0, df)
        .map(|d| d.sf(t))
        .unwrap_or(f64::NAN)
}

/// Two proportions: pooled z-test p-value, unpooled Wald interval.
/// `c` and `t` are (successes, n).
pub fn two_proportions(c: (f64, f64), t: (f64, f64), confidence: f64) -> Difference {
    let (pc, pt) = (c.0 / c.1, t.0 / t.1);
    let diff = pt - pc;
    let pool = (c.0 + t.0) / (c.1 + t.1);
    let se_pool = (pool * (1.0 - pool) * (1.0 / c.1 + 1.0 / t.1)).sqrt();
    let p = if se_pool > 0.0 {
        two_sided_p(diff / se_pool)
    } else {
        1.0
    };
    let var_diff = pc * (1.0 - pc) / c.1 + pt * (1.0 - pt) / t.1;
    let z = norm_ppf(1.0 - (1.0 - confidence) / 2.0);
    let se = var_diff.sqrt();
    Difference {
        abs_lift: diff,
        abs_ci: (diff - z * se, diff + z * se),
        p_value: p,
        var_diff,
    }
}

/// The Wilson score interval of a proportion: `k` successes in `n` trials, at
/// `confidence` (well behaved near 0 and 1, where the Wald interval collapses). `(0, 1)`
/// for `n = 0`.
pub fn wilson(k: f64, n: f64, confidence: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let z = norm_ppf(1.0 - (1.0 - confidence) / 2.0);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Relative lift (t/c − 1) and its delta-method interval, from the means and the
/// variances of the two means (`var_mc` = Var(mean_c), `var_mt` = Var(mean_t)).
pub fn relative_lift(
    mc: f64,
    mt: f64,
    var_mc: f64,
    var_mt: f64,
    confidence: f64,
) -> (f64, (f64, f64)) {
    if mc == 0.0 {
        return (f64::NAN, (f64::NAN, f64::NAN));
    }
    let rel = mt / mc - 1.0;
    let var = var_mt / (mc * mc) + mt * mt * var_mc / mc.powi(4);
    let z = norm_ppf(1.0 - (1.0 - confidence) / 2.0);
    let h = z * var.sqrt();
    (rel, (rel - h, rel + h))
}

/// ρ² of the mixture SPRT (GrowthBook's asymptotic form): (−2 ln α + ln(−2 ln α + 1)) / tuning.
pub fn msprt_rho2(alpha: f64, tuning: f64) -> f64 {
    let l = -2.0 * alpha.ln();
    (l + (l + 1.0).ln()) / tuning
}

/// Always-valid p-value of a difference `delta` whose estimate has variance `v`, after
/// `n` total observations: min(1, √(Nρ²+1) · exp(−ρ² N Δ² / (2 V (Nρ²+1)))).
pub fn msprt_p_value(delta: f64, v: f64, n: f64, alpha: f64, tuning: f64) -> f64 {
    if v == 0.0 && n > 0.0 {
        // the limit as V → 0: certain evidence of a non-zero difference
        return if delta == 0.0 { 1.0 } else { 0.0 };
    }
    if !(v > 0.0) || n <= 0.0 {
        return 1.0;
    }
    let r2 = msprt_rho2(alpha, tuning);
    let nr = n * r2 + 1.0;
    (nr.sqrt() * (-r2 * n * delta * delta / (2.0 * v * nr)).exp()).min(1.0)
}

/// Half-width of the confidence sequence at level 1 − α:
/// √(V (Nρ²+1)/(Nρ²) · ln((Nρ²+1)/α²)).
pub fn msprt_half_width(v: f64, n: f64, alpha: f64, tuning: f64) -> f64 {
    let r2 = msprt_rho2(alpha, tuning);
    let nr = n * r2;
    (v * (nr + 1.0) / nr * ((nr + 1.0) / (alpha * alpha)).ln()).sqrt()
}

/// P(X > Y) for X ~ Beta(a, b), Y ~ Beta(c, d), exactly (Evan Miller's closed form),
/// summing over the smaller integer first parameter. `a` and `c` must be integers ≥ 1.
pub fn prob_beta_greater(a: f64, b: f64, c: f64, d: f64) -> f64 {
    // P(X > Y) = Σ_{i=0}^{a−1} B(c+i, b+d) / ((b+i) B(1+i, b) B(c, d))
    let direct = |a: f64, b: f64, c: f64, d: f64| -> f64 {
        let k = ln_beta(c, d);
        let mut total = 0.0;
        let mut i = 0.0;
        while i < a {
            total += (ln_beta(c + i, b + d) - (b + i).ln() - ln_beta(1.0 + i, b) - k).exp();
            i += 1.0;
        }
        total
    };
    // The sum is P(X > Y) summed over X's alpha; use the smaller alpha for speed.
    let p = if a <= c {
        direct(a, b, c, d)
    } else {
        1.0 - direct(c, d, a, b)
    };
    p.clamp(0.0, 1.0)
}

/// Bayesian result for treatment vs control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bayes {
    /// P(treatment better than control).
    pub prob_better: f64,
    /// Expected loss (in metric units) of shipping control.
    pub loss_control: f64,
    /// Expected loss of shipping treatment.
    pub loss_treatment: f64,
}

/// Beta–Binomial with uniform priors, exact. `c`, `t` are (successes, n).
pub fn bayes_binomial(c: (f64, f64), t: (f64, f64), higher_is_better: bool) -> Bayes {
    let (ac, bc) = (1.0 + c.0, 1.0 + c.1 - c.0);
    let (at, bt) = (1.0 + t.0, 1.0 + t.1 - t.0);
    let p_t_gt_c = prob_beta_greater(at, bt, ac, bc);
    // E[max(X − Y, 0)] = E[X] P(X⁺ > Y) − E[Y] P(X > Y⁺), X⁺ ~ Beta(a+1, b), Y⁺ ~ Beta(c+1, d)
    let gain_t = at / (at + bt) * prob_beta_greater(at + 1.0, bt, ac, bc)
        - ac / (ac + bc) * prob_beta_greater(at, bt, ac + 1.0, bc);
    let gain_c = ac / (ac + bc) * prob_beta_greater(ac + 1.0, bc, at, bt)
        - at / (at + bt) * prob_beta_greater(ac, bc, at + 1.0, bt);
    let (gain_t, gain_c) = (gain_t.max(0.0), gain_c.max(0.0));
    if higher_is_better {
        Bayes {
            prob_better: p_t_gt_c,
            loss_control: gain_t,
            loss_treatment: gain_c,
        }
    } else {
        Bayes {
            prob_better: 1.0 - p_t_gt_c,
            loss_control: gain_c,
            loss_treatment: gain_t,
        }
    }
}

/// Normal posterior of the difference (flat prior): d ~ N(diff, var_diff).
pub fn bayes_normal(diff: f64, var_diff: f64, higher_is_better: bool) -> Bayes {
    let s = var_diff.sqrt();
    let m = if higher_is_better { diff } else { -diff };
    if s == 0.0 && m.is_finite() {
        // a point posterior: the difference is m for certain
        return Bayes {
            prob_better: if m > 0.0 {
                1.0
            } else if m < 0.0 {
                0.0
            } else {
                0.5
            },
            loss_control: m.max(0.0),
            loss_treatment: (-m).max(0.0),
        };
    }
    if !(s > 0.0) {
        return Bayes {
            prob_better: 0.5,
            loss_control: 0.0,
            loss_treatment: 0.0,
        };
    }
    let z = m / s;
    // E[max(d, 0)] = s φ(z) + m Φ(z); E[max(−d, 0)] = s φ(z) − m Φ(−z)
    Bayes {
        prob_better: norm_cdf(z),
        loss_control: s * norm_pdf(z) + m * norm_cdf(z),
        loss_treatment: s * norm_pdf(z) - m * norm_cdf(-z),
    }
}

/// CUPED adjustment of a comparison, from the two groups' co-moments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cuped {
    /// θ = Cov(y, x) / Var(x), pooled over both groups.
    pub theta: f64,
    /// 1 − Var(y − θx) / Var(y), pooled.
    pub variance_reduction: f64,
    /// The adjusted difference (Welch on y − θ(x − x̄)).
    pub diff: Difference,
}

/// CUPED with a pre-experiment covariate, from the (y, x) co-moments of control `c` and
/// treatment `t`: θ pooled over both groups, each unit adjusted to y − θ(x − x̄), Welch
/// on the adjusted values. The adjusted values' moments follow from the co-moments
/// (mean ȳ − θ(x̄_g − x̄), Σ(dev)² = m2_y − 2θ c_xy + θ² m2_x), so no per-unit data is
/// needed. `None` with fewer than 3 units or a constant y or x.
pub fn cuped(c: &CoMoments, t: &CoMoments, confidence: f64) -> Option<Cuped> {
    let all = c.merge(t);
    if all.y.n < 3 || !(all.m2_x > 0.0) || !(all.y.m2 > 0.0) {
        return None;
    }
    let theta = all.c_xy / all.m2_x;
    let adjusted_m2 =
        |g: &CoMoments| (g.y.m2 - 2.0 * theta * g.c_xy + theta * theta * g.m2_x).max(0.0);
    let adjusted = |g: &CoMoments| {
        Moments {
            n: g.y.n,
            mean: g.y.mean - theta * (g.mean_x - all.mean_x),
            m2: adjusted_m2(g),
        }
        .summary()
    };
    let diff = welch(&adjusted(c), &adjusted(t), confidence);
    Some(Cuped {
        theta,
        variance_reduction: 1.0 - adjusted_m2(&all) / all.y.m2,
        diff,
    })
}

/// Pearson chi-square p-value of observed counts against expected shares (SRM check).
pub fn chi_square_gof(observed: &[u64], weights: &[f64]) -> f64 {
    let total: f64 = observed.iter().map(|&x| x as f64).sum();
    let wsum: f64 = weights.iter().sum();
    if total == 0.0 || observed.len() < 2 || wsum <= 0.0 {
        return 1.0;
    }
    let (stat, _) = chi_square_statistic(observed, weights);
    chi2_sf(stat, (observed.len() - 1) as f64)
}

/// Pearson's statistic of observed counts against shares `weights` (normalised here),
/// and how many cells have a positive expectation (cells expected empty add nothing).
pub fn chi_square_statistic(observed: &[u64], weights: &[f64]) -> (f64, usize) {
    let total: f64 = observed.iter().map(|&x| x as f64).sum();
    let wsum: f64 = weights.iter().sum();
    let mut cells = 0;
    let mut stat = 0.0;
    for (&o, &w) in observed.iter().zip(weights) {
        let e = total * w / wsum;
        if e > 0.0 {
            stat += (o as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    (stat, cells)
}

/// Sample ratio mismatch check: the chi-square goodness-of-fit p-value of the observed
/// units (or exposures) per variant, `counts`, against the configured `weights` (same
/// order; weights need not sum to 1). 1 when there is nothing to test (no observations,
/// fewer than two variants, no positive weight). A small value means the split is not
/// the configured one and lifts should not be read.
pub fn srm_p_value(counts: &[u64], weights: &[f64]) -> f64 {
    chi_square_gof(counts, weights)
}

/// Survival function of the chi-square distribution.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    match ChiSquared::new(df) {
        Ok(d) => d.sf(x),
        Err(_) => 1.0,
    }
}

/// Holm step-down adjusted p-values (same order as the input).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in idx.iter().enumerate() {
        let v = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(v);
        out[i] = running;
    }
    out
}

/// Benjamini–Hochberg adjusted p-values (same order as the input).
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running: f64 = 1.0;
    for rank in (0..m).rev() {
        let i = idx[rank];
        let v = (p[i] * m as f64 / (rank + 1) as f64).min(1.0);
        running = running.min(v);
        out[i] = running;
    }
    out
}

/// Sample size per variant for a two-sided test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerResult {
    /// Units in control.
    pub n_control: f64,
    /// Units in treatment (`ratio` × control).
    pub n_treatment: f64,
}

/// Sample size of a two-sided z-test: the n_c solving
/// power = Φ(δ/se − z_{1−α/2}) + Φ(−δ/se − z_{1−α/2}), se = √((σ_c² + σ_t²/r) / n_c),
/// n_t = r n_c (both tails counted, as statsmodels' `NormalIndPower` does).
/// For a binomial baseline p and relative MDE m: σ_c² = p(1−p), p_t = p(1+m),
/// σ_t² = p_t(1−p_t), δ = p m. For a continuous mean μ and sd σ: σ_c = σ_t = σ, δ = μ m.
pub fn sample_size(
    var_c: f64,
    var_t: f64,
    delta: f64,
    alpha: f64,
    power: f64,
    ratio: f64,
) -> PowerResult {
    let z = norm_ppf(1.0 - alpha / 2.0);
    let k = var_c + var_t / ratio;
    let achieved = |n: f64| {
        let e = delta.abs() / (k / n).sqrt();
        norm_cdf(e - z) + norm_cdf(-e - z)
    };
    // Start from the one-tail closed form (a lower bound), then bisect.
    let zb = z + norm_ppf(power);
    let mut hi = (zb * zb * k / (delta * delta)).max(1e-9);
    let mut lo = 0.0;
    while achieved(hi) < power {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if achieved(mid) < power {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    PowerResult {
        n_control: hi,
        n_treatment: hi * ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) {
        assert!((a - b).abs() <= rel * b.abs().max(1e-300), "{a} vs {b}");
    }

    #[test]
    fn msprt_matches_hand_computation() {
        // Reference values computed once in Python 3.11 (math module only) from the
        // formula in docs/analysis.md, independently of this code:
        //   l = -2*ln(0.05); rho2 = (l + ln(l+1)) / 5000          -> 0.001587230920347513
        //   n=2000, d=0.02, v=1e-4: nr = n*rho2+1
        //   p = sqrt(nr) * exp(-rho2*n*d*d / (2*v*nr))            -> 0.44646083307915096
        close(msprt_rho2(0.05, 5000.0), 0.001587230920347513, 1e-12);
        close(
            msprt_p_value(0.02, 1e-4, 2000.0, 0.05, 5000.0),
            0.44646083307915096,
            1e-9,
        );
        // p crosses alpha exactly at the CS half-width
        let w = msprt_half_width(1e-4, 2000.0, 0.05, 5000.0);
        close(msprt_p_value(w, 1e-4, 2000.0, 0.05, 5000.0), 0.05, 1e-9);
    }

    #[test]
    fn binomial_summary_is_the_summary_of_zeros_and_ones() {
        let b = Summary::binomial(4.0, 1.0);
        let v = Summary::of(&[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(b.n, v.n);
        close(b.mean, v.mean, 1e-15);
        close(b.variance, v.variance, 1e-15);
        assert_eq!(Summary::binomial(0.0, 0.0), Summary::default());
        assert_eq!(Summary::binomial(1.0, 1.0).variance, 0.0);
    }

    #[test]
    fn chi_square_gof_reference() {
        // scipy.stats.chisquare([5050, 4950], [5000, 5000]) -> statistic 1.0, p 0.31731050786291415
        close(
            chi_square_gof(&[5050, 4950], &[1.0, 1.0]),
            0.31731050786291415,
            1e-9,
        );
    }
}
