//! Thompson-sampling statistics of a bandit: per-period sufficient statistics of each
//! arm's reward, their period-weighted combination, each arm's posterior, the
//! probability that each arm is the best, and the `min_weight` floors.
//!
//! **Period weighting.** Every update of the weights starts a period. Within one period
//! the arms share the same conditions (time of day, traffic mix), but the arms' shares of
//! units change from one period to the next, so pooling all of an arm's data would mix
//! each arm's rate with *when* it got its traffic: with a base rate rising over time, the
//! arm that grew late looks better. As in GrowthBook's `gbstats/bayesian/bandits.py`,
//! each arm's estimate is instead the average of its per-period means, each period
//! weighted by its share of all units (the same weights for every arm):
//! `mean_a = Σ_p w_p · mean_{p,a}`, `Var(mean_a) = Σ_p w_p² · s²_{p,a} / n_{p,a}`, with
//! `w_p = N_p / Σ N` over the periods in which arm `a` has data.
//!
//! **Posteriors.** A binomial reward gets a Beta(1 + s, 1 + n − s) posterior (uniform
//! prior) with `n` the arm's exposures and `s = round(mean_a · n)` (the period-weighted
//! rate as a count); a continuous reward a normal posterior N(mean_a, Var(mean_a)) (flat
//! prior). **P(best)**: two arms in closed form (exact Beta–Beta, or the normal CDF of the
//! difference); more arms by Monte Carlo with a seeded generator, so the same data and
//! seed give the same numbers after a restart.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Monte Carlo draws for P(best) with three or more arms (standard error ≤ 0.005).
pub const DRAWS: usize = 10_000;

/// One arm's sufficient statistics of its reward in one period: exposures, the sum of
/// the reward values credited, and the sum of their squares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// Exposures (requests the arm served).
    pub n: u64,
    /// Sum of the rewards (binomial: outcomes with value > 0).
    pub sum: f64,
    /// Sum of the squared rewards.
    pub sum_sq: f64,
}

impl ArmStats {
    /// Mean reward per exposure (0 without exposures); a binomial rate is capped at 1.
    pub fn mean(&self, binomial: bool) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let m = self.sum / self.n as f64;
        if binomial {
            m.clamp(0.0, 1.0)
        } else {
            m
        }
    }

    /// Variance of one exposure's reward (n − 1; the Bernoulli p(1 − p) when binomial).
    pub fn variance(&self, binomial: bool) -> f64 {
        let m = self.mean(binomial);
        if binomial {
            return m * (1.0 - m);
        }
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.sum_sq - n * m * m) / (n - 1.0)).max(0.0)
    }
}

/// An arm's estimate over all periods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Exposures over all periods.
    pub n: u64,
    /// Mean reward (period-weighted or pooled).
    pub mean: f64,
    /// Variance of that mean.
    pub var_mean: f64,
}

/// Arm `arm`'s estimate from `periods` (`periods[p][arm]`), period-weighted or pooled.
pub fn estimate(
    periods: &[Vec<ArmStats>],
    arm: usize,
    binomial: bool,
    by_period: bool,
) -> Estimate {
    let n: u64 = periods.iter().map(|p| p[arm].n).sum();
    if n == 0 {
        return Estimate {
            n,
            mean: 0.0,
            var_mean: f64::INFINITY,
        };
    }
    if !by_period {
        let mut pooled = ArmStats::default();
        for p in periods {
            pooled.n += p[arm].n;
            pooled.sum += p[arm].sum;
            pooled.sum_sq += p[arm].sum_sq;
        }
        return Estimate {
            n,
            mean: pooled.mean(binomial),
            var_mean: pooled.variance(binomial) / n as f64,
        };
    }
    // The periods where this arm has data; each weighs its share of all units.
    let total: f64 = periods
        .iter()
        .filter(|p| p[arm].n > 0)
        .map(|p| p.iter().map(|a| a.n as f64).sum::<f64>())
        .sum();
    let (mut mean, mut var_mean) = (0.0, 0.0);
    for p in periods.iter().filter(|p| p[arm].n > 0) {
        let w = p.iter().map(|a| a.n as f64).sum::<f64>() / total;
        let s = &p[arm];
        mean += w * s.mean(binomial);
        var_mean += w * w * s.variance(binomial) / s.n as f64;
    }
    Estimate { n, mean, var_mean }
}

/// An arm's posterior of its mean reward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Posterior {
    /// Beta(a, b) with integer a, b ≥ 1.
    Beta(f64, f64),
    /// Normal(mean, variance).
    Normal(f64, f64),
}

impl Posterior {
    /// The posterior of `e`: Beta(1 + s, 1 + n − s) for a binomial reward, else
    /// N(mean, Var(mean)) (an arm without data or variance gets a very wide one).
    pub fn of(e: &Estimate, binomial: bool) -> Posterior {
        if binomial {
            let s = (e.mean * e.n as f64).round().clamp(0.0, e.n as f64);
            Posterior::Beta(1.0 + s, 1.0 + e.n as f64 - s)
        } else if e.var_mean.is_finite() && e.var_mean > 0.0 {
            Posterior::Normal(e.mean, e.var_mean)
        } else {
            Posterior::Normal(e.mean, 1e12)
        }
    }

    /// Posterior mean.
    pub fn mean(&self) -> f64 {
        match *self {
            Posterior::Beta(a, b) => a / (a + b),
            Posterior::Normal(m, _) => m,
        }
    }

    /// Central credible interval of level `1 − alpha` (the normal approximation for a
    /// Beta posterior).
    pub fn interval(&self, alpha: f64) -> (f64, f64) {
        let (m, v) = match *self {
            Posterior::Beta(a, b) => (a / (a + b), a * b / ((a + b).powi(2) * (a + b + 1.0))),
            Posterior::Normal(m, v) => (m, v),
        };
        let h = super::norm_ppf(1.0 - alpha / 2.0) * v.sqrt();
        (m - h, m + h)
    }

    fn sample(&self, rng: &mut StdRng) -> f64 {
        match *self {
            Posterior::Beta(a, b) => {
                let x = gamma(rng, a);
                let y = gamma(rng, b);
                x / (x + y)
            }
            Posterior::Normal(m, v) => m + v.sqrt() * std_normal(rng),
        }
    }
}

/// The seed of the Monte Carlo P(best) computed for period `number` of experiment
/// `name`: the proxy's update and `abgate analyze` draw the same numbers.
pub fn seed(name: &str, number: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()) ^ number
}

/// Each arm's probability of being the best (the highest mean, or the lowest when
/// `!higher_is_better`). Two arms in closed form; more by [`DRAWS`] Monte Carlo draws
/// from a generator seeded with `seed`.
pub fn prob_best(posteriors: &[Posterior], higher_is_better: bool, seed: u64) -> Vec<f64> {
    match posteriors {
        [] => vec![],
        [_] => vec![1.0],
        [x, y] => {
            let p_y = prob_greater(y, x);
            let p_y = if higher_is_better { p_y } else { 1.0 - p_y };
            vec![1.0 - p_y, p_y]
        }
        _ => monte_carlo(posteriors, higher_is_better, seed),
    }
}

/// P(Y > X) for two posteriors of the same family.
fn prob_greater(y: &Posterior, x: &Posterior) -> f64 {
    match (*y, *x) {
        (Posterior::Beta(a, b), Posterior::Beta(c, d)) => super::prob_beta_greater(a, b, c, d),
        (Posterior::Normal(my, vy), Posterior::Normal(mx, vx)) => {
            super::norm_cdf((my - mx) / (vx + vy).sqrt())
        }
        // Arms of one bandit share one reward metric, so one family.
        _ => 0.5,
    }
}

fn monte_carlo(posteriors: &[Posterior], higher_is_better: bool, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut wins = vec![0u64; posteriors.len()];
    for _ in 0..DRAWS {
        let mut best = 0;
        let mut best_v = f64::NAN;
        for (i, p) in posteriors.iter().enumerate() {
            let v = p.sample(&mut rng);
            let better = if higher_is_better {
                v > best_v
            } else {
                v < best_v
            };
            if i == 0 || better {
                best = i;
                best_v = v;
            }
        }
        wins[best] += 1;
    }
    wins.iter().map(|&w| w as f64 / DRAWS as f64).collect()
}

/// A standard normal draw (Marsaglia's polar method).
fn std_normal(rng: &mut StdRng) -> f64 {
    loop {
        let u: f64 = rng.random::<f64>() * 2.0 - 1.0;
        let v: f64 = rng.random::<f64>() * 2.0 - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * s.ln() / s).sqrt();
        }
    }
}

/// A Gamma(shape, 1) draw (Marsaglia and Tsang 2000; shape ≥ 1 here, as Beta(1 + s, …)).
fn gamma(rng: &mut StdRng, shape: f64) -> f64 {
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = std_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Weights from probabilities of being best: arms not `active` (rolled back) get 0, the
/// others share 1 in proportion to `p`, and none of them gets less than `min_weight`
/// (arms raised to the floor take it from the others in proportion to theirs).
/// Requires `min_weight × active arms < 1`.
pub fn floored(p: &[f64], active: &[bool], min_weight: f64) -> Vec<f64> {
    let k = active.iter().filter(|a| **a).count();
    let mut w = vec![0.0; p.len()];
    if k == 0 {
        return w;
    }
    let mut at_floor = vec![false; p.len()];
    loop {
        let floors = at_floor.iter().filter(|f| **f).count() as f64 * min_weight;
        let free: f64 = (0..p.len())
            .filter(|&i| active[i] && !at_floor[i])
            .map(|i| p[i].max(0.0))
            .sum();
        let free_n = (0..p.len()).filter(|&i| active[i] && !at_floor[i]).count();
        let mut changed = false;
        for i in 0..p.len() {
            if !active[i] {
                continue;
            }
            w[i] = if at_floor[i] {
                min_weight
            } else if free > 0.0 {
                p[i].max(0.0) / free * (1.0 - floors)
            } else {
                (1.0 - floors) / free_n as f64
            };
            if !at_floor[i] && w[i] < min_weight {
                at_floor[i] = true;
                changed = true;
            }
        }
        if !changed {
            return w;
        }
    }
}

/// Equal weights over the `active` arms (exploration).
pub fn equal(active: &[bool]) -> Vec<f64> {
    let k = active.iter().filter(|a| **a).count().max(1) as f64;
    active
        .iter()
        .map(|&a| if a { 1.0 / k } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(n: u64, sum: f64) -> ArmStats {
        ArmStats {
            n,
            sum,
            sum_sq: sum,
        }
    }

    #[test]
    fn period_weighting_removes_the_bias_of_a_drifting_base_rate() {
        // Equal arms; the base rate rises from 10% to 30% while traffic moves from arm 0
        // to arm 1. Pooled, arm 1 looks far better; weighted by period, they are equal.
        let periods = vec![
            vec![stats(900, 90.0), stats(100, 10.0)],
            vec![stats(100, 30.0), stats(900, 270.0)],
        ];
        let pooled: Vec<f64> = (0..2)
            .map(|a| estimate(&periods, a, true, false).mean)
            .collect();
        assert_eq!(pooled, [0.12, 0.28]);
        let e0 = estimate(&periods, 0, true, true);
        let e1 = estimate(&periods, 1, true, true);
        assert!((e0.mean - 0.2).abs() < 1e-12 && (e1.mean - 0.2).abs() < 1e-12);
        // Var = 0.25·(0.1·0.9/900) + 0.25·(0.3·0.7/100), by hand.
        assert!((e0.var_mean - (0.25 * 0.09 / 900.0 + 0.25 * 0.21 / 100.0)).abs() < 1e-15);
        assert_eq!(e0.n, 1000);
    }

    #[test]
    fn continuous_estimates_use_sample_variances() {
        // Rewards 1, 2, 3, 4 in one period: mean 2.5, s² = 5/3.
        let p = vec![vec![ArmStats {
            n: 4,
            sum: 10.0,
            sum_sq: 30.0,
        }]];
        let e = estimate(&p, 0, false, true);
        assert_eq!(e.mean, 2.5);
        assert!((e.var_mean - 5.0 / 3.0 / 4.0).abs() < 1e-15);
        assert_eq!(Posterior::of(&e, false), Posterior::Normal(2.5, 5.0 / 12.0));
    }

    #[test]
    fn two_arm_probabilities_match_scipy() {
        // python3: from scipy import integrate, stats
        //   integrate.quad(lambda x: stats.beta.pdf(x,16,86)*stats.beta.cdf(x,11,91),0,1,
        //     epsabs=1e-13, epsrel=1e-12)
        //   -> 0.8532837899339664
        let p = prob_best(
            &[Posterior::Beta(11.0, 91.0), Posterior::Beta(16.0, 86.0)],
            true,
            0,
        );
        assert!((p[1] - 0.8532837899339664).abs() < 1e-9, "{p:?}");
        assert!((p[0] + p[1] - 1.0).abs() < 1e-12);
        // Lower is better: the roles swap.
        let q = prob_best(
            &[Posterior::Beta(11.0, 91.0), Posterior::Beta(16.0, 86.0)],
            false,
            0,
        );
        assert!((q[0] - 0.8532837899339664).abs() < 1e-9, "{q:?}");
        // stats.norm.cdf((1.2 - 1.0) / sqrt(0.01 + 0.02)) -> 0.8758934605050381
        let n = prob_best(
            &[Posterior::Normal(1.0, 0.01), Posterior::Normal(1.2, 0.02)],
            true,
            0,
        );
        assert!((n[1] - 0.8758934605050381).abs() < 1e-9, "{n:?}");
    }

    #[test]
    fn monte_carlo_matches_scipy_and_repeats_with_its_seed() {
        // python3, P(arm i best) = ∫ pdf_i(x) Π_{j≠i} cdf_j(x) dx with scipy.integrate.quad:
        //   Beta(11,91), Beta(13,89), Beta(16,86) -> 0.0971046, 0.2383253, 0.6645701
        let arms = [
            Posterior::Beta(11.0, 91.0),
            Posterior::Beta(13.0, 89.0),
            Posterior::Beta(16.0, 86.0),
        ];
        let p = prob_best(&arms, true, 42);
        let want = [0.0971046, 0.2383253, 0.6645701];
        for (got, want) in p.iter().zip(want) {
            // 3 standard errors of 10 000 draws at p = 0.5.
            assert!((got - want).abs() < 0.015, "{p:?}");
        }
        assert_eq!(p, prob_best(&arms, true, 42));
        assert_ne!(p, prob_best(&arms, true, 43));
        //   N(1, .01), N(1.1, .02), N(1.2, .04) -> 0.0772540, 0.3011851, 0.6215609
        let n = [
            Posterior::Normal(1.0, 0.01),
            Posterior::Normal(1.1, 0.02),
            Posterior::Normal(1.2, 0.04),
        ];
        let p = prob_best(&n, true, 7);
        for (got, want) in p.iter().zip([0.0772540, 0.3011851, 0.6215609]) {
            assert!((got - want).abs() < 0.015, "{p:?}");
        }
    }

    #[test]
    fn floors_hold_and_rolled_back_arms_get_nothing() {
        let w = floored(&[0.97, 0.01, 0.02, 0.0], &[true, true, true, true], 0.05);
        assert_eq!(w[1..], [0.05, 0.05, 0.05]);
        assert!((w[0] - 0.85).abs() < 1e-12);
        let w = floored(&[0.5, 0.5, 0.0], &[true, false, true], 0.1);
        assert_eq!(w, [0.9, 0.0, 0.1]);
        let w = floored(&[0.0, 0.0], &[true, true], 0.1);
        assert_eq!(w, [0.5, 0.5]);
        assert_eq!(
            equal(&[true, false, true, true]),
            [1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0]
        );
    }
}
