//! The bucket-to-arm table of a bandit experiment, and its sticky reassignment.
//!
//! A bandit experiment's unit is in variant `table[bucket(experiment.seed, unit_id)]`
//! (the same variant hash as a fixed experiment, read through a table instead of the
//! cumulative thresholds). When the weights change, [`Table::moved`] reassigns buckets
//! with the fewest moves:
//!
//! - the new weights become bucket counts by largest remainders ([`apportion`]);
//! - only arms whose count shrinks give buckets away, and only the surplus; an arm whose
//!   count does not shrink keeps every bucket, so none of its units moves;
//! - the share of buckets that change arm is therefore the total-variation distance
//!   between the old and new counts, unless that exceeds `max_shift`: then every arm
//!   moves the same fraction of the way (the shrinking arms give, and the growing arms
//!   receive, in proportion to their distance to the target);
//! - a shrinking arm gives its highest-numbered buckets; the freed buckets, in
//!   ascending order, go to the growing arms in arm order.
//!
//! Every step is a pure function of the previous table and the new weights, so the
//! table is a pure function of the weight history ([`Table::replay`]): every instance
//! that knows the history rebuilds the same table.

use crate::hash::BUCKETS;

/// Arm per variant bucket, `BUCKETS` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    arms: Box<[u16]>,
}

impl Table {
    /// The table of `weights` without history: arm i owns one contiguous range, as
    /// fixed weights do.
    pub fn from_weights(weights: &[f64]) -> Table {
        let counts = apportion(BUCKETS, weights, None);
        let mut arms = Vec::with_capacity(BUCKETS as usize);
        for (i, &c) in counts.iter().enumerate() {
            arms.extend(std::iter::repeat_n(i as u16, c as usize));
        }
        Table {
            arms: arms.into_boxed_slice(),
        }
    }

    /// The table after applying each weight vector of `history` in order to the table
    /// of `initial`, each step moving at most `max_shift` of the buckets.
    pub fn replay<'a>(
        initial: &[f64],
        history: impl IntoIterator<Item = &'a [f64]>,
        max_shift: f64,
    ) -> Table {
        let mut t = Table::from_weights(initial);
        for w in history {
            t = t.moved(w, max_shift);
        }
        t
    }

    /// The arm of a variant bucket.
    ///
    /// Hot path: one indexed load.
    #[inline]
    pub fn arm(&self, bucket: u32) -> u16 {
        self.arms[bucket as usize]
    }

    /// Buckets per arm (`arms` long).
    pub fn counts(&self, arms: usize) -> Vec<u32> {
        let mut c = vec![0u32; arms];
        for &a in self.arms.iter() {
            if let Some(x) = c.get_mut(a as usize) {
                *x += 1;
            }
        }
        c
    }

    /// Each arm's share of the buckets (the weights served).
    pub fn shares(&self, arms: usize) -> Vec<f64> {
        self.counts(arms)
            .iter()
            .map(|&c| c as f64 / BUCKETS as f64)
            .collect()
    }

    /// The table moved toward `weights`, changing the arm of at most `max_shift` of the
    /// buckets, with the fewest moves (see the module doc).
    pub fn moved(&self, weights: &[f64], max_shift: f64) -> Table {
        let arms = weights.len();
        let current = self.counts(arms);
        let target = apportion(BUCKETS, weights, None);
        let surplus: Vec<f64> = (0..arms)
            .map(|i| current[i].saturating_sub(target[i]) as f64)
            .collect();
        let deficit: Vec<f64> = (0..arms)
            .map(|i| target[i].saturating_sub(current[i]) as f64)
            .collect();
        let distance: u32 = surplus.iter().map(|&s| s as u32).sum();
        let cap = (max_shift.clamp(0.0, 1.0) * BUCKETS as f64).floor() as u32;
        let moves = distance.min(cap);
        let give = apportion(moves, &surplus, Some(&surplus));
        let take = apportion(moves, &deficit, Some(&deficit));
        let mut arms_of = self.arms.to_vec();
        // Each shrinking arm frees its highest-numbered buckets.
        let mut freed = Vec::with_capacity(moves as usize);
        let mut left = give.clone();
        for b in (0..BUCKETS as usize).rev() {
            let a = arms_of[b] as usize;
            if a < arms && left[a] > 0 {
                left[a] -= 1;
                freed.push(b);
            }
        }
        freed.sort_unstable();
        let mut next = freed.into_iter();
        for (a, &n) in take.iter().enumerate() {
            for b in next.by_ref().take(n as usize) {
                arms_of[b] = a as u16;
            }
        }
        Table {
            arms: arms_of.into_boxed_slice(),
        }
    }
}

/// `total` split in proportion to `parts` by largest remainders (ties to the lower
/// index), never giving part i more than `caps[i]` when caps are given (they are when
/// `parts` are the caps themselves, whose sum is at least `total`). All zero parts
/// split `total` equally.
pub fn apportion(total: u32, parts: &[f64], caps: Option<&[f64]>) -> Vec<u32> {
    let sum: f64 = parts.iter().map(|p| p.max(0.0)).sum();
    let n = parts.len();
    if n == 0 {
        return vec![];
    }
    let exact: Vec<f64> = parts
        .iter()
        .map(|&p| {
            if sum > 0.0 {
                p.max(0.0) / sum * total as f64
            } else {
                total as f64 / n as f64
            }
        })
        .collect();
    let mut out: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let given: u32 = out.iter().sum();
    let mut order: Vec<usize> = (0..n).collect();
    // Largest remainder first; stable, so ties go to the lower index.
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra)
    });
    let mut left = total.saturating_sub(given);
    for &i in order.iter().cycle().take(n * 2) {
        if left == 0 {
            break;
        }
        if caps.is_some_and(|c| out[i] as f64 >= c[i]) {
            continue;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_weights(rng: &mut StdRng, arms: usize) -> Vec<f64> {
        let mut w: Vec<f64> = (0..arms).map(|_| rng.random::<f64>()).collect();
        // Sometimes an arm at zero (rolled back) or one arm dominating.
        if rng.random::<f64>() < 0.2 {
            w[rng.random_range(0..arms)] = 0.0;
        }
        if rng.random::<f64>() < 0.2 {
            w[rng.random_range(0..arms)] = 20.0;
        }
        w
    }

    #[test]
    fn apportion_splits_exactly_by_largest_remainders() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0], None), [4, 3, 3]);
        assert_eq!(
            apportion(10_000, &[0.5, 0.25, 0.25], None),
            [5000, 2500, 2500]
        );
        assert_eq!(apportion(7, &[0.0, 0.0], None), [4, 3]);
        assert_eq!(apportion(3, &[1.0, 5.0], Some(&[1.0, 5.0])), [1, 2]);
    }

    #[test]
    fn the_initial_table_is_the_fixed_weights_ranges() {
        let t = Table::from_weights(&[1.0, 1.0, 2.0]);
        assert_eq!(t.counts(3), [2500, 2500, 5000]);
        assert_eq!(
            (t.arm(0), t.arm(2499), t.arm(2500), t.arm(5000)),
            (0, 0, 1, 2)
        );
    }

    /// Over random weight sequences: the share of buckets that change arm equals the
    /// total-variation distance between the old and new bucket counts, capped by
    /// `max_shift`; an arm whose count does not shrink keeps every bucket; counts reach
    /// the target when uncapped; a replay of the history gives the same table.
    #[test]
    fn reassignment_moves_the_fewest_buckets_over_random_weight_sequences() {
        let mut rng = StdRng::seed_from_u64(19);
        for case in 0..200 {
            let arms = rng.random_range(2..=10);
            let max_shift = [0.02, 0.1, 0.3, 1.0][case % 4];
            let initial = vec![1.0; arms];
            let mut t = Table::from_weights(&initial);
            let mut history = Vec::new();
            for _ in 0..8 {
                let w = random_weights(&mut rng, arms);
                let next = t.moved(&w, max_shift);
                let (old, new) = (t.counts(arms), next.counts(arms));
                let target = apportion(BUCKETS, &w, None);
                let distance: u32 = (0..arms).map(|i| old[i].saturating_sub(target[i])).sum();
                let cap = (max_shift * BUCKETS as f64).floor() as u32;
                let moved = (0..BUCKETS).filter(|&b| t.arm(b) != next.arm(b)).count() as u32;
                assert_eq!(
                    moved,
                    distance.min(cap),
                    "case {case}: {old:?} → {target:?}"
                );
                let moved_tv: u32 = (0..arms).map(|i| old[i].saturating_sub(new[i])).sum();
                assert_eq!(moved, moved_tv, "every move is a change of count");
                if distance <= cap {
                    assert_eq!(new, target);
                }
                for b in 0..BUCKETS {
                    let a = t.arm(b) as usize;
                    if new[a] >= old[a] {
                        assert_eq!(
                            next.arm(b),
                            t.arm(b),
                            "an arm that does not shrink lost bucket {b}"
                        );
                    }
                }
                // Capped moves go part of the way and never past the target.
                for i in 0..arms {
                    let (lo, hi) = (old[i].min(target[i]), old[i].max(target[i]));
                    assert!(lo <= new[i] && new[i] <= hi, "{old:?} {new:?} {target:?}");
                }
                history.push(w);
                t = next;
            }
            let replayed = Table::replay(&initial, history.iter().map(Vec::as_slice), max_shift);
            assert_eq!(replayed, t);
            assert_eq!(
                Table::replay(&initial, history.iter().map(Vec::as_slice), max_shift),
                replayed
            );
        }
    }

    #[test]
    fn a_zero_weight_arm_gives_every_bucket_away_within_the_cap() {
        let t = Table::from_weights(&[1.0, 1.0]);
        let half = t.moved(&[0.0, 1.0], 0.2);
        assert_eq!(half.counts(2), [3000, 7000]);
        let all = half.moved(&[0.0, 1.0], 1.0);
        assert_eq!(all.counts(2), [0, 10_000]);
    }
}
