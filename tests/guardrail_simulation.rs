//! The guardrail decision rule on simulated traffic with a controlled clock (no sleeps):
//! the real windows (`guard::window::Window`) fed request by request, the real rule
//! (`guard::evaluator::evaluate`) checked every interval.
//!
//! Figures printed with `--nocapture` are the ones quoted in docs/guardrails.md.

mod common;

use abgate::config::Guardrails;
use abgate::guard::evaluator::{evaluate, Verdict};
use abgate::guard::window::Window;
use common::{ExperimentSpec, TestConfig};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The guardrails a config with these thresholds gets: 300 requests, checked every
/// second over 5 minutes, alpha 0.01, 3 consecutive latency strikes, rollback.
fn guardrails(max_increase: f64, latency: Option<(f64, f64)>) -> Guardrails {
    let mut table = format!(
        r#"min_requests = 300, check_interval = "1s", window = "5m", alpha = 0.01, error_rate = {{ max_increase = {max_increase} }}, consecutive = 3, action = "rollback""#
    );
    if let Some((max_ratio, min_increase_ms)) = latency {
        table += &format!(
            ", latency_p99 = {{ max_ratio = {max_ratio}, min_increase_ms = {min_increase_ms} }}"
        );
    }
    let config = TestConfig::bare()
        .upstream("a", &["127.0.0.1:1"])
        .experiment(
            "l",
            ExperimentSpec::new("e", 1.0)
                .guardrails(&table)
                .variant("control", 1.0)
                .variant("treatment", 1.0),
        )
        .parse();
    config.layers[0].experiments[0].guardrails.clone().unwrap()
}

/// Traffic of one variant in one second.
#[derive(Clone, Copy)]
struct Arm {
    error_rate: f64,
    latency_ms: f64,
}

/// Simulate one experiment for `seconds` at `rps` per variant; `treatment(sec)` gives the
/// treatment's behaviour each second. Returns the treatment requests at the first
/// violation (None = never), using `rule` on each check.
fn simulate(
    rng: &mut Rng,
    g: &Guardrails,
    seconds: u64,
    rps: u64,
    control: Arm,
    treatment: impl Fn(u64) -> Arm,
    mut rule: impl FnMut(&Guardrails, &Window, &Window, u64, u32) -> (bool, bool),
) -> Option<u64> {
    let (wc, wt) = (Window::new(300_000), Window::new(300_000));
    let mut strikes = 0u32;
    let mut treated = 0u64;
    for sec in 0..seconds {
        let t = treatment(sec);
        for i in 0..rps {
            let now = sec * 1000 + i * 1000 / rps;
            let lat_c = control.latency_ms * (0.8 + 0.4 * rng.next());
            wc.record(
                now,
                (lat_c * 1000.0) as u64,
                rng.next() < control.error_rate,
            );
            let lat_t = t.latency_ms * (0.8 + 0.4 * rng.next());
            wt.record(now, (lat_t * 1000.0) as u64, rng.next() < t.error_rate);
            treated += 1;
        }
        let (violated, strike) = rule(g, &wc, &wt, sec * 1000 + 999, strikes);
        if violated {
            return Some(treated);
        }
        strikes = if strike { strikes + 1 } else { 0 };
    }
    None
}

fn real_rule(g: &Guardrails, c: &Window, t: &Window, now: u64, strikes: u32) -> (bool, bool) {
    match evaluate(
        g,
        &c.stats(now),
        &t.stats(now),
        c.recent(),
        t.recent(),
        strikes,
    ) {
        Verdict::Violation(_) => (true, false),
        Verdict::Pass { latency_strike } => (false, latency_strike),
        Verdict::InsufficientData => (false, false),
    }
}

/// The naive rule a team might write: a fixed-horizon two-proportion z-test at alpha,
/// re-run at every check ("peeking"), once min_requests is reached.
fn naive_rule(g: &Guardrails, c: &Window, t: &Window, now: u64, _: u32) -> (bool, bool) {
    let (c, t) = (c.stats(now), t.stats(now));
    if c.n < g.min_requests || t.n < g.min_requests {
        return (false, false);
    }
    let d = abgate::stats::two_proportions(
        (c.errors as f64, c.n as f64),
        (t.errors as f64, t.n as f64),
        0.99,
    );
    (d.p_value < g.alpha && d.abs_lift > 0.0, false)
}

#[test]
fn aa_runs_roll_back_at_most_alpha_and_far_less_than_naive_peeking() {
    // 1,000 A/A experiments, both arms 3% errors, 20 req/s per arm, checked every second
    // for 10 minutes. max_increase = 0 so the sequential test alone decides.
    let g = guardrails(0.0, None);
    let same = Arm {
        error_rate: 0.03,
        latency_ms: 10.0,
    };
    let (mut seq, mut naive) = (0, 0);
    let runs = 1000;
    for run in 0..runs {
        let mut rng = Rng(0x9E3779B97F4A7C15 ^ (run as u64 + 1));
        if simulate(&mut rng, &g, 600, 20, same, |_| same, real_rule).is_some() {
            seq += 1;
        }
        let mut rng = Rng(0x9E3779B97F4A7C15 ^ (run as u64 + 1));
        if simulate(&mut rng, &g, 600, 20, same, |_| same, naive_rule).is_some() {
            naive += 1;
        }
    }
    let (seq_rate, naive_rate) = (seq as f64 / runs as f64, naive as f64 / runs as f64);
    println!("A/A false rollbacks over {runs} runs: always-valid {seq_rate:.3}, naive peeking z-test {naive_rate:.3} (alpha {})", g.alpha);
    assert!(
        seq_rate <= g.alpha,
        "always-valid test rolled back {seq_rate} of A/A runs"
    );
    assert!(
        naive_rate >= 3.0 * g.alpha.max(seq_rate),
        "naive {naive_rate} should be far above alpha"
    );
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn real_regressions_are_rolled_back_quickly() {
    let g = guardrails(0.02, Some((1.5, 20.0)));
    let base = Arm {
        error_rate: 0.03,
        latency_ms: 10.0,
    };
    for (name, bad) in [
        (
            "+5pp errors",
            Arm {
                error_rate: 0.08,
                latency_ms: 10.0,
            },
        ),
        (
            "+20pp errors",
            Arm {
                error_rate: 0.23,
                latency_ms: 10.0,
            },
        ),
        (
            "+60ms latency",
            Arm {
                error_rate: 0.03,
                latency_ms: 70.0,
            },
        ),
    ] {
        let mut detected = Vec::new();
        for run in 0..50u64 {
            let mut rng = Rng(0xD1B54A32D192ED03 ^ (run + 1));
            let n = simulate(&mut rng, &g, 600, 20, base, |_| bad, real_rule);
            detected.push(n.unwrap_or_else(|| panic!("{name}: run {run} never rolled back")));
        }
        let m = median(detected);
        println!("{name}: median treatment requests to rollback = {m} (20 req/s per arm)");
        assert!(m <= 3000, "{name}: median {m}");
    }
}

#[test]
fn a_single_bad_second_does_not_roll_back() {
    let g = guardrails(0.02, Some((1.5, 20.0)));
    let base = Arm {
        error_rate: 0.03,
        latency_ms: 10.0,
    };
    // After 2 minutes of identical traffic, one second of 100% errors and 500 ms latency.
    let spike = |sec: u64| {
        if sec == 120 {
            Arm {
                error_rate: 1.0,
                latency_ms: 500.0,
            }
        } else {
            base
        }
    };
    for run in 0..50u64 {
        let mut rng = Rng(0xA0761D6478BD642F ^ (run + 1));
        assert_eq!(
            simulate(&mut rng, &g, 300, 20, base, spike, real_rule),
            None,
            "run {run}"
        );
    }
}

#[test]
fn breaker_acts_before_min_requests() {
    let mut g = guardrails(0.02, None);
    g.min_requests = 100_000;
    let base = Arm {
        error_rate: 0.01,
        latency_ms: 10.0,
    };
    let dead = Arm {
        error_rate: 0.9,
        latency_ms: 10.0,
    };
    let mut rng = Rng(5);
    let n = simulate(&mut rng, &g, 60, 50, base, |_| dead, real_rule).expect("breaker");
    assert!(n <= 150, "{n}");
}
