//! Sufficient statistics of one group, in the numerically stable form: the count, the
//! mean and the sum of squared deviations from the mean (`m2`), never a raw sum of
//! squares — `Σy² − n·ȳ²` loses every digit of the variance when the mean is large
//! against the spread (a mean of 1e9 with a standard deviation of 1 leaves nothing of it
//! in a double). [`CoMoments`] adds a covariate `x` and the co-moment `Σ(y − ȳ)(x − x̄)`
//! that CUPED needs.
//!
//! Groups are built either from their values in two passes ([`Moments::of`]: the mean
//! from a compensated sum, then the deviations — what the emitted SQL does too, with an
//! exact decimal sum), one value at a time ([`Running`]: Welford's update), or by merging
//! groups (Chan et al.'s pairwise update, [`Moments::merge`]). All are exact up to
//! rounding in the last digits, whatever the order of the values.

use super::Summary;

/// Count, mean and sum of squared deviations of one group of observations.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Moments {
    /// Observations.
    pub n: u64,
    /// Mean (0 when empty).
    pub mean: f64,
    /// Σ(y − mean)².
    pub m2: f64,
}

impl Moments {
    /// Of the values `ys`, in two passes: the mean (from a compensated sum, as exact as
    /// the SQL's decimal one), then the sum of squared deviations from it.
    pub fn of<I>(ys: I) -> Moments
    where
        I: IntoIterator<Item = f64>,
        I::IntoIter: Clone,
    {
        let ys = ys.into_iter();
        let (n, sum) = exact_sum(ys.clone());
        if n == 0 {
            return Moments::default();
        }
        let mean = sum / n as f64;
        let m2 = ys.map(|y| (y - mean) * (y - mean)).sum();
        Moments { n, mean, m2 }
    }

    /// Of `n` 0/1 observations of which `successes` are 1.
    pub fn binomial(n: u64, successes: u64) -> Moments {
        if n == 0 {
            return Moments::default();
        }
        let p = successes as f64 / n as f64;
        // successes × (1 − p)² + failures × p², = n p (1 − p)
        let m2 = successes as f64 * (1.0 - p) * (1.0 - p) + (n - successes) as f64 * p * p;
        Moments { n, mean: p, m2 }
    }

    /// Add one observation (Welford).
    pub fn push(&mut self, y: f64) {
        self.push_n(y, 1);
    }

    /// Add `count` observations equal to `y` (a histogram bucket, say).
    pub fn push_n(&mut self, y: f64, count: u64) {
        *self = self.merge(&Moments {
            n: count,
            mean: y,
            m2: 0.0,
        });
    }

    /// The moments of the union of two groups (Chan, Golub and LeVeque's update).
    pub fn merge(&self, other: &Moments) -> Moments {
        if other.n == 0 {
            return *self;
        }
        if self.n == 0 {
            return *other;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        Moments {
            n: self.n + other.n,
            mean: self.mean + delta * nb / n,
            m2: self.m2 + other.m2 + delta * delta * na * nb / n,
        }
    }

    /// Sample variance, m2 / (n − 1) (0 when n ≤ 1).
    pub fn variance(&self) -> f64 {
        if self.n > 1 {
            (self.m2 / (self.n - 1) as f64).max(0.0)
        } else {
            0.0
        }
    }

    /// n, mean and sample variance, the input of the tests.
    pub fn summary(&self) -> Summary {
        Summary {
            n: self.n as f64,
            mean: self.mean,
            variance: self.variance(),
        }
    }
}

/// The count and the sum of `xs`, the sum compensated (Neumaier's variant of Kahan's):
/// the error of a plain sum grows with the count and the order of the terms, and a mean
/// that is off in its 13th digit is a lift off in its 9th when the lift is 1e-4 of the
/// mean.
fn exact_sum(xs: impl Iterator<Item = f64>) -> (u64, f64) {
    let (mut n, mut sum, mut carry) = (0u64, 0.0f64, 0.0f64);
    for x in xs {
        n += 1;
        let t = sum + x;
        carry += if sum.abs() >= x.abs() {
            (sum - t) + x
        } else {
            (x - t) + sum
        };
        sum = t;
    }
    (n, sum + carry)
}

/// [`Moments`] of a stream, one value at a time: Welford's update on the values minus the
/// first one, so that a mean large against the spread costs no precision (plain Welford
/// rounds its running mean to the mean's magnitude at every step), and the mean from a
/// compensated (Kahan) sum of those differences, as exact as [`Moments::of`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Running {
    shift: f64,
    shifted: Moments,
    sum: f64,
    carry: f64,
}

impl Running {
    /// Add one observation.
    pub fn push(&mut self, y: f64) {
        if self.shifted.n == 0 {
            self.shift = y;
        }
        let d = y - self.shift;
        self.shifted.push(d);
        let t = self.sum + (d - self.carry);
        self.carry = (t - self.sum) - (d - self.carry);
        self.sum = t;
    }

    /// The moments of the values pushed.
    pub fn moments(&self) -> Moments {
        if self.shifted.n == 0 {
            return Moments::default();
        }
        Moments {
            mean: self.shift + self.sum / self.shifted.n as f64,
            ..self.shifted
        }
    }
}

/// [`Moments`] of an outcome `y` and a covariate `x` observed on the same units, with
/// their co-moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CoMoments {
    /// The outcome.
    pub y: Moments,
    /// Mean of the covariate.
    pub mean_x: f64,
    /// Σ(x − x̄)².
    pub m2_x: f64,
    /// Σ(y − ȳ)(x − x̄).
    pub c_xy: f64,
}

impl CoMoments {
    /// Of the (y, x) pairs, in two passes as in [`Moments::of`].
    pub fn of<I>(pairs: I) -> CoMoments
    where
        I: IntoIterator<Item = (f64, f64)>,
        I::IntoIter: Clone,
    {
        let pairs = pairs.into_iter();
        let y = Moments::of(pairs.clone().map(|p| p.0));
        if y.n == 0 {
            return CoMoments::default();
        }
        let mean_x = exact_sum(pairs.clone().map(|p| p.1)).1 / y.n as f64;
        let (mut m2_x, mut c_xy) = (0.0, 0.0);
        for (yv, xv) in pairs {
            m2_x += (xv - mean_x) * (xv - mean_x);
            c_xy += (yv - y.mean) * (xv - mean_x);
        }
        CoMoments {
            y,
            mean_x,
            m2_x,
            c_xy,
        }
    }

    /// The moments of the union of two groups.
    pub fn merge(&self, other: &CoMoments) -> CoMoments {
        if other.y.n == 0 {
            return *self;
        }
        if self.y.n == 0 {
            return *other;
        }
        let (na, nb) = (self.y.n as f64, other.y.n as f64);
        let n = na + nb;
        let (dy, dx) = (other.y.mean - self.y.mean, other.mean_x - self.mean_x);
        CoMoments {
            y: self.y.merge(&other.y),
            mean_x: self.mean_x + dx * nb / n,
            m2_x: self.m2_x + other.m2_x + dx * dx * na * nb / n,
            c_xy: self.c_xy + other.c_xy + dx * dy * na * nb / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) {
        assert!((a - b).abs() <= rel * b.abs().max(1e-300), "{a} vs {b}");
    }

    #[test]
    fn two_passes_welford_and_merges_agree() {
        let ys: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 / 7.0).collect();
        let whole = Moments::of(ys.iter().copied());
        let mut one_by_one = Moments::default();
        for &y in &ys {
            one_by_one.push(y);
        }
        let (a, b) = ys.split_at(313);
        let merged = Moments::of(a.iter().copied()).merge(&Moments::of(b.iter().copied()));
        for m in [one_by_one, merged] {
            assert_eq!(m.n, 1000);
            close(m.mean, whole.mean, 1e-14);
            close(m.m2, whole.m2, 1e-12);
        }
        assert_eq!(
            Moments::binomial(4, 1).summary(),
            Moments::of([1.0, 0.0, 0.0, 0.0]).summary()
        );
        assert_eq!(Moments::binomial(0, 0), Moments::default());
        assert_eq!(Moments::of([3.0]).variance(), 0.0);
    }

    #[test]
    fn a_large_mean_keeps_its_variance() {
        // mean 1e9, standard deviation 1: Σy² − n·ȳ² would be all rounding error
        let ys: Vec<f64> = (0..10_000)
            .map(|i| 1e9 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let expected = 10_000.0 / 9_999.0;
        close(Moments::of(ys.iter().copied()).variance(), expected, 1e-12);
        let mut r = Running::default();
        ys.iter().for_each(|&y| r.push(y));
        close(r.moments().variance(), expected, 1e-12);
        close(r.moments().mean, 1e9, 1e-15);
        // plain Welford keeps the variance to about 1e-8 here (its running mean is
        // rounded to 1e9's precision at each step): fine for merging groups, not a stream
        let mut w = Moments::default();
        ys.iter().for_each(|&y| w.push(y));
        close(w.variance(), expected, 1e-6);
        let (sum, sumsq) = ys.iter().fold((0.0, 0.0), |(s, q), y| (s + y, q + y * y));
        let naive = (sumsq - sum * sum / 10_000.0) / 9_999.0;
        assert!((naive - expected).abs() > 0.1, "naive {naive}");
    }

    #[test]
    fn co_moments_merge_like_the_whole() {
        let pairs: Vec<(f64, f64)> = (0..500)
            .map(|i| (((i * 53) % 17) as f64, ((i * 37) % 101) as f64 / 10.0))
            .collect();
        let whole = CoMoments::of(pairs.iter().copied());
        let (a, b) = pairs.split_at(123);
        let m = CoMoments::of(a.iter().copied()).merge(&CoMoments::of(b.iter().copied()));
        close(m.mean_x, whole.mean_x, 1e-14);
        close(m.m2_x, whole.m2_x, 1e-12);
        close(m.c_xy, whole.c_xy, 1e-12);
        close(m.y.m2, whole.y.m2, 1e-12);
    }
}
