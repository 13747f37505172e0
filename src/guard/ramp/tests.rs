//! The gate and the ramp's state on a simulated clock: an A/A ramp completes in the sum
//! of its holds with at most `alpha` of runs rolled back, a treatment with 5 more points
//! of errors is rolled back at the first or second step, too little traffic waits and
//! then takes the `max_wait` action; and across a whole ramp no unit moves.

use super::gate::{gate, GateReason, GateVerdict, StepCounts};
use super::state::{RampAction, RampCause, RampState, RampStatus};
use crate::config::{GuardAction, Guardrails, LatencyOf, OnInsufficient, Ramp};
use crate::guard::window::WindowStats;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const CHECK: Duration = Duration::from_secs(1);

fn guardrails(alpha: f64) -> Guardrails {
    Guardrails {
        min_requests: 300,
        check_interval: CHECK,
        window: Duration::from_secs(300),
        alpha,
        error_max_increase: Some(0.02),
        latency: None,
        latency_of: LatencyOf::Total,
        consecutive: 3,
        action: GuardAction::Rollback,
    }
}

fn plan(on_insufficient: OnInsufficient) -> Ramp {
    Ramp {
        steps: vec![0.01, 0.05, 0.2, 0.5],
        hold: vec![Duration::from_secs(60); 4],
        min_requests: 500,
        max_wait: Duration::from_secs(600),
        on_insufficient,
    }
}

/// A Binomial(n, p) draw: by inversion below a mean of 30, else the normal
/// approximation (rounded, clamped) — exact enough for counts per second.
fn binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    let mean = n as f64 * p;
    if mean < 30.0 {
        // Count successes one trial at a time through geometric gaps.
        let mut k = 0;
        let mut i = 0u64;
        let lq = (1.0 - p).ln();
        if p <= 0.0 {
            return 0;
        }
        loop {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            i += (u.ln() / lq).floor() as u64 + 1;
            if i > n {
                return k;
            }
            k += 1;
        }
    }
    let sd = (mean * (1.0 - p)).sqrt();
    let z = normal(rng);
    (mean + sd * z).round().clamp(0.0, n as f64) as u64
}

fn normal(rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// How a simulated ramp ended.
#[derive(Debug)]
struct Run {
    status: RampStatus,
    /// Seconds from the start to the last transition.
    at: u64,
    /// Step when it ended.
    step: usize,
    transitions: Vec<(u64, RampAction, RampCause, GateReason)>,
}

/// Drive one ramp for up to `limit` seconds: `rate` requests per second reach the
/// layer, the experiment takes its current traffic of them, split 50/50; the control
/// fails with probability `pc`, the treatment with `pt`. The gate is checked every
/// second on the counts since the step began.
fn simulate(
    seed: u64,
    ramp: &Ramp,
    g: &Guardrails,
    rate: u64,
    pc: f64,
    pt: f64,
    limit: u64,
) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let name: Arc<str> = Arc::from("exp");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (mut s, _) = RampState::start(&name, ramp, t0);
    let mut counts = [WindowStats::default(), WindowStats::default()];
    let mut transitions = Vec::new();
    for sec in 1..=limit {
        let n = binomial(&mut rng, rate, s.traffic);
        let nc = binomial(&mut rng, n, 0.5);
        for (c, (k, p)) in counts.iter_mut().zip([(nc, pc), (n - nc, pt)]) {
            c.n += k;
            c.errors += binomial(&mut rng, k, p);
        }
        let now = t0 + Duration::from_secs(sec);
        let counts_now = StepCounts {
            stats: &counts,
            weights: &[50.0, 50.0],
            control: 0,
            rolled_back: &[false, false],
        };
        let report = gate(ramp, g, s.index(ramp), s.held(now), counts_now);
        if let Some(t) = s.on_gate(&name, ramp, &report, now) {
            let reason = t.gate.as_ref().map_or(GateReason::Pass, |g| g.reason);
            transitions.push((sec, t.action, t.cause, reason));
            if t.action == RampAction::Advance {
                counts = [WindowStats::default(), WindowStats::default()];
            }
        }
        if matches!(
            s.status,
            RampStatus::Completed | RampStatus::RolledBack | RampStatus::Holding
        ) {
            return Run {
                status: s.status,
                at: sec,
                step: s.step,
                transitions,
            };
        }
    }
    Run {
        status: s.status,
        at: limit,
        step: s.step,
        transitions,
    }
}

#[test]
fn an_aa_ramp_completes_in_the_sum_of_its_holds_and_rolls_back_at_most_alpha_of_runs() {
    let (alpha, runs) = (0.05, 1000);
    let (ramp, g) = (plan(OnInsufficient::Hold), guardrails(alpha));
    let sum_hold: u64 = ramp.hold.iter().map(|h| h.as_secs()).sum();
    let check = CHECK.as_secs();
    let (mut rolled_back, mut on_time, mut late) = (0, 0, Vec::new());
    for seed in 0..runs {
        let run = simulate(seed, &ramp, &g, 10_000, 0.01, 0.01, sum_hold + 60 * check);
        match run.status {
            RampStatus::RolledBack => rolled_back += 1,
            RampStatus::Completed if (sum_hold..=sum_hold + check).contains(&run.at) => {
                on_time += 1;
            }
            // The SRM condition (p >= 0.001 on the counts since the step began) holds
            // a step back while the split strays: rare, and for seconds.
            RampStatus::Completed => late.push((seed, run.at)),
            other => panic!("seed {seed}: ended {other:?}: {:?}", run.transitions),
        }
    }
    // Seen: 1,000 runs, 0 rolled back, 995 on time, 5 late by 2 to 11 s (SRM).
    assert!(
        rolled_back as f64 <= alpha * runs as f64,
        "{rolled_back} of {runs} A/A ramps rolled back (alpha {alpha})"
    );
    assert!(late.len() <= 10, "{} late: {late:?}", late.len());
    assert_eq!(on_time + late.len() + rolled_back, runs as usize);
    eprintln!("A/A: {runs} runs, {rolled_back} rolled back, {on_time} completed in Σhold {sum_hold}s + at most {check}s, late: {late:?}");
}

#[test]
fn five_more_points_of_errors_are_rolled_back_at_the_first_or_second_step() {
    let (ramp, g) = (plan(OnInsufficient::Hold), guardrails(0.05));
    for seed in 0..200 {
        let run = simulate(seed, &ramp, &g, 10_000, 0.01, 0.06, 600);
        assert_eq!(run.status, RampStatus::RolledBack, "seed {seed}: {run:?}");
        assert!(
            run.step <= 2,
            "seed {seed}: rolled back at step {}",
            run.step
        );
        let last = run.transitions.last().unwrap();
        assert_eq!(
            (last.1, last.2, last.3),
            (RampAction::Rollback, RampCause::Gate, GateReason::Guardrail)
        );
    }
}

#[test]
fn low_traffic_waits_with_insufficient_data_then_takes_the_max_wait_action() {
    let g = guardrails(0.05);
    let max_wait = plan(OnInsufficient::Hold).max_wait.as_secs();
    for (action, status, step) in [
        (OnInsufficient::Hold, RampStatus::Holding, 1),
        (OnInsufficient::Rollback, RampStatus::RolledBack, 1),
        (OnInsufficient::Advance, RampStatus::Running, 2),
    ] {
        let ramp = plan(action);
        // 100 requests a second to the layer: 0.5 per variant at 1%, 300 by max_wait.
        let run = simulate(7, &ramp, &g, 100, 0.01, 0.01, max_wait + 1);
        assert_eq!(run.transitions.len(), 1, "{action:?}: {run:?}");
        let (at, _, cause, reason) = run.transitions[0];
        assert_eq!(
            (at, cause, reason),
            (max_wait, RampCause::MaxWait, GateReason::MinRequests)
        );
        assert_eq!((run.status, run.step), (status, step), "{action:?}");
    }
}

#[test]
fn the_gate_passes_only_when_the_upper_bound_is_below_max_increase() {
    // Reference figures (python3, the formulas of stats::msprt_*): control 1.0% and
    // treatment 1.5% errors on 1,000 requests each, alpha 0.05, tuning 5000: the
    // always-valid p-value is 1.0 (no regression detected) but the upper bound of the
    // increase is 0.02052, above max_increase 0.02: the gate does not pass. On 5,000
    // each (p 0.379) the bound is 0.01180: it passes.
    let (ramp, g) = (plan(OnInsufficient::Hold), guardrails(0.05));
    let at = |n: u64| {
        let stats = [
            WindowStats {
                n,
                errors: n / 100,
                hist: vec![],
            },
            WindowStats {
                n,
                errors: n * 15 / 1000,
                hist: vec![],
            },
        ];
        let counts = StepCounts {
            stats: &stats,
            weights: &[1.0, 1.0],
            control: 0,
            rolled_back: &[false, false],
        };
        gate(&ramp, &g, 0, Duration::from_secs(60), counts).numbers
    };
    let few = at(1_000);
    assert_eq!(
        (few.verdict, few.reason),
        (GateVerdict::InsufficientData, GateReason::UpperBound)
    );
    assert!((few.p_value - 1.0).abs() < 1e-12, "{few:?}");
    assert!((few.upper_bound - 0.020_52).abs() < 1e-5, "{few:?}");
    let many = at(5_000);
    assert_eq!(
        (many.verdict, many.reason),
        (GateVerdict::Pass, GateReason::Pass)
    );
    assert!((many.upper_bound - 0.011_80).abs() < 1e-5, "{many:?}");
    assert!((many.p_value - 0.379_1).abs() < 1e-4, "{many:?}");
}

#[test]
fn across_a_whole_ramp_no_unit_changes_variant_or_leaves_the_experiment() {
    use crate::assign::{assign_with, Assignments, LiveState, RequestView, UnitIds};
    use crate::config::test_support::{parse, MINIMAL};
    let cfg = parse(&format!(
        "{MINIMAL}[[layer]]\nname = \"l\"\n\
         [[layer.experiment]]\nname = \"before\"\ntraffic = 0.2\n\
         [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
         [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
         [[layer.experiment]]\nname = \"e\"\n\
         [[layer.experiment.variant]]\nname = \"control\"\nweight = 1\n\
         [[layer.experiment.variant]]\nname = \"treatment\"\nweight = 3\n\
         [layer.experiment.guardrails]\nerror_rate = {{ max_increase = 0.02 }}\n\
         [layer.experiment.ramp]\nsteps = [0.01, 0.05, 0.2, 0.5]\n"
    ))
    .unwrap();
    let exp = &cfg.layers[0].experiments[1];
    let steps = exp.ramp.as_ref().unwrap().steps.clone();
    let headers = http::HeaderMap::new();
    let req = RequestView {
        method: "GET",
        path: "/",
        query: None,
        headers: &headers,
    };
    /// Every ramp at the step that serves this many buckets of its range.
    struct Step<'a>(&'a crate::config::Config, u32);
    impl LiveState for Step<'_> {
        fn arm(&self, _: usize, _: usize, _: u32) -> Option<(u16, u32)> {
            None
        }
        fn serves(&self, li: usize, ei: usize, b: u32) -> bool {
            let e = &self.0.layers[li].experiments[ei];
            e.ramp.is_none() || b.wrapping_sub(e.start) < self.1
        }
    }
    let units: Vec<String> = (0..40_000).map(|i| format!("user-{i}")).collect();
    // unit → variant in `e` once it is in.
    let mut seen: Vec<Option<u16>> = vec![None; units.len()];
    for step in steps {
        let served = super::store::buckets(step);
        let mut inside = 0;
        for (u, slot) in units.iter().zip(seen.iter_mut()) {
            let mut out = Assignments::new();
            let ids = UnitIds {
                user: Some(u),
                ..Default::default()
            };
            assign_with(&cfg, &Step(&cfg, served), &ids, &req, &mut out);
            let now = out.iter().find(|a| a.experiment == 1).map(|a| a.variant);
            if let Some(before) = *slot {
                assert_eq!(now, Some(before), "{u} moved at step {step}");
            }
            if now.is_some() {
                inside += 1;
            }
            *slot = now;
        }
        let share = inside as f64 / units.len() as f64;
        // Binomial sd at 0.5 on 40,000 units is 0.0025: 5 sd.
        assert!(
            (share - step).abs() < 0.0125,
            "step {step}: {share} of units in"
        );
    }
}

#[test]
fn a_reload_that_edits_the_plan_keeps_the_traffic_and_continues_from_the_first_step_at_or_above_it()
{
    let name: Arc<str> = Arc::from("exp");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut ramp = plan(OnInsufficient::Hold);
    let (mut s, _) = RampState::start(&name, &ramp, t0);
    s.advance(
        &name,
        &ramp,
        t0 + Duration::from_secs(60),
        RampCause::Gate,
        None,
    );
    assert_eq!((s.step, s.traffic), (2, 0.05));
    let began = s.step_began;
    // New plan: 0.02, 0.03, 0.1, 0.5 — the traffic stays 0.05, the step is 0.1's (3),
    // the timer goes on; the next pass grows the traffic to 0.1.
    ramp.steps = vec![0.02, 0.03, 0.1, 0.5];
    ramp.hold = vec![Duration::from_secs(60); 4];
    let t = s
        .replan(&name, &ramp, t0 + Duration::from_secs(70))
        .unwrap();
    assert_eq!(
        (t.action, t.cause, t.from_step, t.to_step),
        (RampAction::Replan, RampCause::Reload, 2, 3)
    );
    assert_eq!((s.step, s.traffic, s.step_began), (3, 0.05, began));
    s.advance(
        &name,
        &ramp,
        t0 + Duration::from_secs(120),
        RampCause::Gate,
        None,
    );
    assert_eq!((s.step, s.traffic), (3, 0.1));
    // A plan whose steps all lie below the traffic completes the ramp, never shrinks it.
    ramp.steps = vec![0.01, 0.05];
    ramp.hold.truncate(2);
    s.replan(&name, &ramp, t0 + Duration::from_secs(130))
        .unwrap();
    assert_eq!(
        (s.step, s.traffic, s.status),
        (2, 0.1, RampStatus::Completed)
    );
    // The same plan again changes nothing.
    assert!(s
        .replan(&name, &ramp, t0 + Duration::from_secs(140))
        .is_none());
}

#[test]
fn the_store_persists_every_transition_and_a_reopened_store_resumes_the_step() {
    use crate::config::test_support::{parse, MINIMAL};
    let dir = tempfile::tempdir().unwrap();
    let cfg = parse(&format!(
        "{MINIMAL}[[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\n\
         [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
         [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
         [layer.experiment.guardrails]\nerror_rate = {{ max_increase = 0.02 }}\n\
         [layer.experiment.ramp]\nsteps = [0.1, 0.5]\n"
    ))
    .unwrap();
    let exp = &cfg.layers[0].experiments[0];
    let ramp = exp.ramp.clone().unwrap();
    let store = super::RampStore::open(dir.path()).unwrap();
    let first = store.ensure(exp, SystemTime::now()).unwrap();
    assert_eq!(store.take_pending().len(), 1, "the start is announced");
    let name = exp.name.clone();
    store
        .update("e", |s| {
            Some(s.advance(&name, &ramp, SystemTime::now(), RampCause::Admin, None))
        })
        .unwrap()
        .unwrap();
    let saved = store.get("e").unwrap();
    drop(store);
    let again = super::RampStore::open(dir.path()).unwrap();
    let resumed = again.ensure(exp, SystemTime::now()).unwrap();
    // Equal as persisted (timestamps to the microsecond).
    let json = |s: &RampState| serde_json::to_value(s).unwrap();
    assert_eq!(json(&resumed), json(&saved));
    assert_eq!((resumed.step, resumed.traffic), (2, 0.5));
    assert!(resumed.step_began >= first.step_began);
    assert!(
        again.take_pending().is_empty(),
        "nothing changed: nothing to announce"
    );
}
