//! Bandit simulations without a network, on a controllable clock (each update is passed
//! its time): units are assigned by the bandit's own table and convert at a seeded
//! Bernoulli rate per arm.
//!
//! - Four arms at 10%, 10%, 11%, 13%: the best arm's weight passes 0.6 within a stated
//!   number of units, the floors hold, and the cumulative regret is below that of a
//!   fixed equal split.
//! - A/A with a base rate rising over time: with period weighting, P(best) stays near
//!   uniform; pooling the periods instead biases it toward the arm that grew late.

mod common;

use abgate::assign::bandit::Table;
use abgate::assign::hash;
use abgate::guard::bandit::BanditState;
use abgate::stats::bandit::{estimate, floored, prob_best, ArmStats, Posterior};
use common::{ExperimentSpec, LayerSpec, TestConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PERIOD_MS: u64 = 600_000;

fn config(arms: usize) -> abgate::config::Config {
    let mut exp = ExperimentSpec::new("sim", 1.0);
    for i in 0..arms {
        exp = exp.variant(&format!("v{i}"), 1.0);
    }
    TestConfig::bare()
        .upstream("a", &["127.0.0.1:1"])
        .metric("conversion", "binomial")
        .layer(LayerSpec::new("l").experiment(exp))
        .raw(
            "[layer.experiment.bandit]\nreward = \"conversion\"\nexplore = \"10m\"\n\
             min_units = 100\nupdate_interval = \"10m\"\nmin_weight = 0.02\nmax_shift = 0.1\n",
        )
        .parse()
}

#[test]
fn four_arms_the_best_passes_0_6_floors_hold_and_regret_beats_an_equal_split() {
    let rates = [0.10, 0.10, 0.11, 0.13];
    let cfg = config(4);
    let exp = &cfg.layers[0].experiments[0];
    let dir = tempfile::tempdir().unwrap();
    let b = BanditState::open_or_start(exp, exp.bandit.as_ref().unwrap(), dir.path(), 0);
    let mut rng = StdRng::seed_from_u64(2026);
    let per_period = 2_000;
    let (mut units, mut regret, mut reached) = (0u64, 0.0, None);
    let mut slowest_update = std::time::Duration::ZERO;
    for period in 1..=60u64 {
        let serving = b.serving.load_full();
        for _ in 0..per_period {
            let id = format!("unit-{units}");
            units += 1;
            let arm = serving.table.arm(hash::bucket(exp.seed, id.as_bytes())) as usize;
            b.expose(arm);
            if rng.random::<f64>() < rates[arm] {
                b.reward(arm, 1.0);
            }
            regret += 0.13 - rates[arm];
        }
        let t = std::time::Instant::now();
        b.close();
        let next = b.next_period(period * PERIOD_MS, &[true; 4]);
        slowest_update = slowest_update.max(t.elapsed());
        for w in &next.weights {
            assert!(*w >= 0.02 - 1e-12, "floor: {next:?}");
        }
        b.open(next).unwrap();
        let served = b.serving.load().table.shares(4);
        if reached.is_none() && served[3] > 0.6 {
            reached = Some(units);
        }
    }
    let equal_regret = units as f64 * (0.13 - rates.iter().sum::<f64>() / 4.0);
    let reached = reached.expect("the best arm's weight passes 0.6 within 120 000 units");
    eprintln!(
        "best arm > 0.6 after {reached} units; regret {regret:.0} vs {equal_regret:.0} for an equal split over {units} units; slowest update (4 arms) {slowest_update:?}"
    );
    assert!(reached <= 80_000, "{reached}");
    assert!(regret < 0.6 * equal_regret, "{regret} vs {equal_regret}");
}

/// The next weights of a simulated bandit from `periods`, period-weighted or pooled.
fn weights(periods: &[Vec<ArmStats>], by_period: bool, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let arms = periods[0].len();
    let post: Vec<Posterior> = (0..arms)
        .map(|a| Posterior::of(&estimate(periods, a, true, by_period), true))
        .collect();
    let p = prob_best(&post, true, seed);
    (floored(&p, &vec![true; arms], 0.02), p)
}

/// An A/A bandit over `periods` periods whose base rate rises from 5% to 25%; returns
/// the final P(best) of each arm.
fn drifting_aa(by_period: bool, seed: u64) -> Vec<f64> {
    let arms = 3;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut table = Table::from_weights(&vec![1.0; arms]);
    let mut periods: Vec<Vec<ArmStats>> = Vec::new();
    let mut p_best = vec![1.0 / arms as f64; arms];
    let n_periods = 12;
    for period in 0..n_periods {
        let base = 0.05 + 0.20 * period as f64 / (n_periods - 1) as f64;
        let mut stats = vec![ArmStats::default(); arms];
        for _ in 0..3_000 {
            let bucket = rng.random_range(0..hash::BUCKETS);
            let arm = table.arm(bucket) as usize;
            stats[arm].n += 1;
            if rng.random::<f64>() < base {
                stats[arm].sum += 1.0;
                stats[arm].sum_sq += 1.0;
            }
        }
        periods.push(stats);
        let (w, p) = weights(&periods, by_period, seed ^ period);
        table = table.moved(&w, 0.3);
        p_best = p;
    }
    p_best
}

#[test]
fn a_drifting_base_rate_biases_pooled_estimates_but_not_period_weighted_ones() {
    let runs = 20;
    let mut weighted_max = 0.0;
    let mut pooled_max = 0.0;
    for seed in 0..runs {
        let w = drifting_aa(true, seed);
        let p = drifting_aa(false, seed);
        weighted_max += w.iter().cloned().fold(0.0, f64::max) / runs as f64;
        pooled_max += p.iter().cloned().fold(0.0, f64::max) / runs as f64;
    }
    eprintln!(
        "A/A with a rising base rate, mean over {runs} runs of the largest P(best) of 3 arms: period-weighted {weighted_max:.3}, pooled {pooled_max:.3}"
    );
    assert!(weighted_max < 0.75, "{weighted_max}");
    assert!(
        pooled_max > weighted_max + 0.15,
        "{pooled_max} vs {weighted_max}"
    );
}

/// The cost of one update (close, posteriors, 10 000 Monte Carlo draws, floors, table
/// move, history write with fsync) for ten arms after 100 periods: measured and printed,
/// not asserted. Nothing of it runs on the request path.
#[test]
fn the_cost_of_an_update_for_ten_arms_is_reported() {
    let cfg = config(10);
    let exp = &cfg.layers[0].experiments[0];
    let dir = tempfile::tempdir().unwrap();
    let b = BanditState::open_or_start(exp, exp.bandit.as_ref().unwrap(), dir.path(), 0);
    let mut rng = StdRng::seed_from_u64(10);
    let mut times = Vec::new();
    for period in 1..=100u64 {
        for arm in 0..10 {
            for _ in 0..200 {
                b.expose(arm);
                if rng.random::<f64>() < 0.1 + 0.005 * arm as f64 {
                    b.reward(arm, 1.0);
                }
            }
        }
        let t = std::time::Instant::now();
        b.close();
        let next = b.next_period(period * PERIOD_MS, &[true; 10]);
        let compute = t.elapsed();
        b.open(next).unwrap();
        times.push((compute, t.elapsed()));
    }
    times.sort();
    let (c, total) = times[times.len() / 2];
    let worst = times.iter().map(|t| t.1).max().unwrap();
    eprintln!(
        "10 arms, 100 periods: median update {total:?} (of which {c:?} computing the weights), slowest {worst:?}"
    );
}
