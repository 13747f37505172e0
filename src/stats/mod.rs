//! Statistics as pure functions: no I/O, no clock. Used live (guardrails, admin) and
//! offline (`abgate analyze`). Distributions come from `statrs`.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Standard normal CDF.
pub fn norm_cdf(x: f64) -> f64 {
    Normal::standard().cdf(x)
}

/// Standard normal quantile.
pub fn norm_ppf(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

/// Two-sided p-value of a z statistic.
pub fn two_sided_p(z: f64) -> f64 {
    (2.0 * Normal::standard().sf(z.abs())).min(1.0)
}

/// ρ² of the mixture SPRT (GrowthBook's asymptotic form): (−2 ln α + ln(−2 ln α + 1)) / tuning.
pub fn msprt_rho2(alpha: f64, tuning: f64) -> f64 {
    let l = -2.0 * alpha.ln();
    (l + (l + 1.0).ln()) / tuning
}

/// Always-valid p-value of a difference `delta` whose estimate has variance `v`, after
/// `n` total observations: min(1, √(Nρ²+1) · exp(−ρ² N Δ² / (2 V (Nρ²+1)))).
pub fn msprt_p_value(delta: f64, v: f64, n: f64, alpha: f64, tuning: f64) -> f64 {
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

/// Pearson chi-square p-value of observed counts against expected shares (SRM check).
pub fn chi_square_gof(observed: &[u64], weights: &[f64]) -> f64 {
    let total: f64 = observed.iter().map(|&x| x as f64).sum();
    let wsum: f64 = weights.iter().sum();
    if total == 0.0 || observed.len() < 2 || wsum <= 0.0 {
        return 1.0;
    }
    let stat: f64 = observed
        .iter()
        .zip(weights)
        .map(|(&o, &w)| {
            let e = total * w / wsum;
            if e > 0.0 {
                (o as f64 - e).powi(2) / e
            } else {
                0.0
            }
        })
        .sum();
    chi2_sf(stat, (observed.len() - 1) as f64)
}

/// Survival function of the chi-square distribution.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    match ChiSquared::new(df) {
        Ok(d) => d.sf(x),
        Err(_) => 1.0,
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
        // formula of SPEC §4, independently of this code:
        //   l = -2*ln(0.05); rho2 = (l + ln(l+1)) / 5000          -> 0.001587230920347513
        //   n=2000, d=0.02, v=1e-4: nr = n*rho2+1
        //   p = sqrt(nr) * exp(-rho2*n*d*d / (2*v*nr))            -> 0.44646083307915096
        close(msprt_rho2(0.05, 5000.0), 0.001587230920347513, 1e-12);
        close(msprt_p_value(0.02, 1e-4, 2000.0, 0.05, 5000.0), 0.44646083307915096, 1e-9);
        // p crosses alpha exactly at the CS half-width
        let w = msprt_half_width(1e-4, 2000.0, 0.05, 5000.0);
        close(msprt_p_value(w, 1e-4, 2000.0, 0.05, 5000.0), 0.05, 1e-9);
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
