//! Fleet decisions across real processes: three `abgate serve` sidecars with `[fleet]`
//! (instances s1, s2, s3, each with its own dirs), one real `nats-server -js`, and mock
//! backends. A decision taken on one sidecar — admin API or guardrail — is served by all
//! three within 2 s; concurrent rollbacks leave one decision and one `guardrail` event;
//! a sidecar keeps and later publishes what it decided while the broker was away.
//!
//! Run: `cargo test --test fleet_decisions -- --nocapture` (prints the spreads).

mod common;

use common::fleet::*;
use common::nats::NatsServer;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Three sidecars on the same backends, in the fleet at `nats`, once each sees all three.
fn three(nats: &NatsServer, a: &MockServer, b: &MockServer, guard: &str) -> Vec<Sidecar> {
    let s: Vec<Sidecar> = ["s1", "s2", "s3"]
        .iter()
        .map(|name| Sidecar::start(&sidecar_config(&nats.url(), name, a, b, guard)))
        .collect();
    wait_connected(&s, 3);
    s
}

fn spread(ms: &[u128]) -> u128 {
    ms.iter().max().unwrap() - ms.iter().min().unwrap()
}

#[test]
fn admin_rollback_on_one_sidecar_is_served_by_all_three_within_2s_and_resume_on_another_reenables_them(
) {
    let nats = NatsServer::start();
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let s = three(&nats, &a, &b, "");
    let all: Vec<&Sidecar> = s.iter().collect();

    let t0 = Instant::now();
    s[0].post("rollback");
    let took = wait_all(&all, "rolled_back", t0, 5);
    println!(
        "rollback on s1 applied after {took:?} ms (spread {} ms)",
        spread(&took)
    );
    assert!(took.iter().all(|&ms| ms <= 2_000), "{took:?}");

    // Every sidecar serves treatment units from control.
    let users = treated_users(&s[0], 10);
    let before = b.requests();
    for side in &s {
        for u in &users {
            let (status, _, _) = get_as(&side.g, "/v1/chat", u);
            assert_eq!(status, 200);
        }
    }
    assert_eq!(
        b.requests(),
        before,
        "a rolled-back treatment reached its backend"
    );

    let t1 = Instant::now();
    s[1].post("resume");
    let took = wait_all(&all, "running", t1, 5);
    println!(
        "resume on s2 applied after {took:?} ms (spread {} ms)",
        spread(&took)
    );
    assert!(took.iter().all(|&ms| ms <= 2_000), "{took:?}");
    for side in &s {
        get_as(&side.g, "/v1/chat", &users[0]);
    }
    assert_eq!(
        b.requests(),
        before + 3,
        "resumed treatment is served again"
    );

    // Each decision is in the bucket once, the resume a generation above the rollback,
    // and written as an event by its taker only.
    let h = history(&nats, KEY);
    assert_eq!(
        h,
        vec![
            (1, "manual_rollback".into(), "s1".into()),
            (2, "resume".into(), "s2".into())
        ]
    );
    wait_for(5, "the taker's events", || {
        (s[0].guardrail_events().len() == 1 && s[1].guardrail_events().len() == 1).then_some(())
    });
    assert_eq!(s[0].guardrail_events()[0]["action"], "manual_rollback");
    assert_eq!(s[1].guardrail_events()[0]["action"], "resume");
    assert!(s[2].guardrail_events().is_empty());
    let m = s[2].g.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "abgate_fleet_decisions_applied_total",
            &["manual_rollback"]
        ),
        1.0
    );
    assert_eq!(metric_sum(&m, "abgate_fleet_instances", &[]), 3.0);
    assert_eq!(metric_sum(&m, "abgate_fleet_connected", &[]), 1.0);
    assert!(metric_sum(&m, "abgate_fleet_state_age_seconds", &[]) < 10.0);
    let f = s[2].fleet();
    assert_eq!(f["enabled"], true);
    assert_eq!(f["instance"], "s3");
    assert_eq!(f["instances"].as_array().unwrap().len(), 3, "{f}");
}

#[test]
fn guardrail_rollback_on_the_one_failing_sidecar_is_applied_by_the_others() {
    let nats = NatsServer::start();
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    // Only s1's treatment backend fails; s2 and s3 see no traffic at all.
    let bad = MockServer::builder()
        .name("b")
        .error_rate(1.0)
        .start()
        .unwrap();
    let guard = r#"min_requests = 20, check_interval = "200ms", window = "1m", error_rate = { max_increase = 0.05 }"#;
    let s1 = Sidecar::start(&sidecar_config(&nats.url(), "s1", &a, &bad, guard));
    let s2 = Sidecar::start(&sidecar_config(&nats.url(), "s2", &a, &b, guard));
    let s3 = Sidecar::start(&sidecar_config(&nats.url(), "s3", &a, &b, guard));
    let s = [s1, s2, s3];
    wait_connected(&s, 3);

    // Traffic through s1 only, until the test is done; meanwhile watch all three.
    let done = std::sync::atomic::AtomicBool::new(false);
    let took = std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..20_000 {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                get_as(&s[0].g, "/v1/chat", &format!("g{}", i % 200));
            }
        });
        let all: Vec<&Sidecar> = s.iter().collect();
        let took = wait_all(&all, "rolled_back", Instant::now(), 30);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        took
    });
    println!(
        "guardrail rollback on s1 seen on s1, s2, s3 at {took:?} ms (spread {} ms)",
        spread(&took)
    );
    assert!(
        took[1] <= took[0] + 2_000 && took[2] <= took[0] + 2_000,
        "{took:?}"
    );

    wait_for(5, "s1's guardrail event", || {
        (s[0].guardrail_events().len() == 1).then_some(())
    });
    assert_eq!(s[0].guardrail_events()[0]["action"], "rollback");
    std::thread::sleep(Duration::from_millis(300));
    assert!(s[1].guardrail_events().is_empty() && s[2].guardrail_events().is_empty());
    let applied = s[1]
        .get("/admin/experiments")
        .pointer("/experiments/0/variants/1/last_decision")
        .cloned()
        .unwrap();
    assert_eq!(applied["action"], "rollback", "{applied}");
    assert!(
        applied["n_treatment"].as_u64().unwrap() >= 20,
        "the taker's numbers: {applied}"
    );
    assert!(s[1].g.logs().contains("taken by s1, applied here"));
}

#[test]
fn concurrent_rollbacks_from_three_sidecars_leave_one_decision_and_one_event() {
    let nats = NatsServer::start();
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let s = three(&nats, &a, &b, "");
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|scope| {
        for side in &s {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                side.post("rollback");
            });
        }
    });
    let all: Vec<&Sidecar> = s.iter().collect();
    wait_all(&all, "rolled_back", Instant::now(), 5);

    let events = wait_for(5, "the winner's event", || {
        let n: Vec<usize> = s.iter().map(|x| x.guardrail_events().len()).collect();
        (n.iter().sum::<usize>() >= 1).then_some(n)
    });
    // Give a loser time to (wrongly) write its own.
    std::thread::sleep(Duration::from_millis(1_000));
    let n: Vec<usize> = s.iter().map(|x| x.guardrail_events().len()).collect();
    assert_eq!(
        n.iter().sum::<usize>(),
        1,
        "guardrail events per sidecar: {n:?} (first seen {events:?})"
    );
    let h = history(&nats, KEY);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!((h[0].0, h[0].1.as_str()), (1, "manual_rollback"));
    let winner = ["s1", "s2", "s3"]
        .iter()
        .position(|&i| i == h[0].2)
        .unwrap();
    assert_eq!(n[winner], 1, "the event is the winner's: {n:?} {h:?}");
    println!("concurrent rollbacks: winner {} of 3", h[0].2);
}

#[test]
fn cut_off_sidecars_keep_fleet_decisions_across_restart_and_publish_their_own_on_return() {
    let mut nats = NatsServer::start();
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let mut s = three(&nats, &a, &b, "");
    let all: Vec<&Sidecar> = s.iter().collect();
    s[0].post("rollback");
    wait_all(&all, "rolled_back", Instant::now(), 5);

    // The broker goes away; s3 restarts meanwhile and still honours the rollback.
    nats.stop();
    let s3 = s.pop().unwrap().restart();
    assert_eq!(s3.state(), "rolled_back");
    assert_eq!(s3.fleet()["connected"], false);
    s.push(s3);

    // Cut off, s2 resumes: it holds there at once, nowhere else yet.
    s[1].post("resume");
    assert_eq!(s[1].state(), "running");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s[0].state(), "rolled_back");
    assert_eq!(s[2].state(), "rolled_back");
    wait_for(5, "s2's own event while cut off", || {
        (s[1].guardrail_events().len() == 1).then_some(())
    });

    // The broker returns: s2 publishes its resume, s1 and s3 apply it.
    let t0 = Instant::now();
    nats.restart();
    let all: Vec<&Sidecar> = s.iter().collect();
    let took = wait_all(&all, "running", t0, 20);
    println!("resume taken while cut off applied {took:?} ms after the broker returned");
    let h = history(&nats, KEY);
    assert_eq!(
        h.last().unwrap(),
        &(2, "resume".to_string(), "s2".to_string()),
        "{h:?}"
    );
    assert_eq!(h.len(), 2, "{h:?}");
    // The resume's event was written once, by its taker.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s[1].guardrail_events().len(), 1);
    assert!(s[2].guardrail_events().is_empty());
    assert_eq!(s[0].guardrail_events().len(), 1, "s1's rollback only");
}

/// Thin traffic: 3 sidecars share their windows; `per_sidecar` requests through each
/// (users `w0…`, round robin), with the control backend failing 5% of requests and the
/// treatment backend `treatment_errors`. Returns the sidecars once every one has held
/// the two others' windows with all their traffic (or the experiment left `running`).
fn thin_fleet(
    nats: &NatsServer,
    treatment_errors: f64,
    per_sidecar: usize,
) -> (Vec<Sidecar>, MockServer, MockServer) {
    let a = MockServer::builder()
        .name("a")
        .error_rate(0.05)
        .start()
        .unwrap();
    let b = MockServer::builder()
        .name("b")
        .error_rate(treatment_errors)
        .start()
        .unwrap();
    let guard = r#"min_requests = 300, check_interval = "300ms", window = "5m", error_rate = { max_increase = 0.05 }"#;
    let s: Vec<Sidecar> = ["s1", "s2", "s3"]
        .iter()
        .map(|name| Sidecar::start(&fleet_config(&nats.url(), name, &a, &b, guard, true)))
        .collect();
    wait_connected(&s, 3);
    for i in 0..per_sidecar * 3 {
        get_as(&s[i % 3].g, "/v1/chat", &format!("w{i}"));
    }
    (s, a, b)
}

/// Each sidecar's own window of `variant` (requests).
fn local_requests(s: &Sidecar, variant: usize) -> u64 {
    s.get("/admin/experiments")
        .pointer(&format!(
            "/experiments/0/variants/{variant}/window/requests"
        ))
        .and_then(Value::as_u64)
        .unwrap()
}

#[test]
fn thin_traffic_below_min_requests_on_each_sidecar_is_rolled_back_on_the_fleet_sum() {
    let nats = NatsServer::start();
    // 250 requests per sidecar: about 125 per variant each, under min_requests = 300;
    // the fleet's sum, about 375 per variant, is over it. Treatment fails 25% against
    // control's 5%: +20 points.
    let (s, _a, _b) = thin_fleet(&nats, 0.25, 250);
    let all: Vec<&Sidecar> = s.iter().collect();
    for sc in &s {
        for v in 0..2 {
            let n = local_requests(sc, v);
            assert!(n < 300, "a sidecar alone has {n} requests of variant {v}");
        }
    }
    let took = wait_all(&all, "rolled_back", Instant::now(), 15);
    println!("thin traffic: rolled back on s1, s2, s3 after {took:?} ms");
    // One decision for the fleet: one `guardrail` event in all three logs, taken on the
    // summed windows (n_control, n_treatment over min_requests), and one value in the
    // bucket.
    wait_for(5, "the guardrail event", || {
        let n: usize = s.iter().map(|sc| sc.guardrail_events().len()).sum();
        (n >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let events: Vec<Value> = s.iter().flat_map(|sc| sc.guardrail_events()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["action"], "rollback");
    assert_eq!(e["guardrail"], "error_rate");
    assert!(
        e["n_control"].as_u64().unwrap() >= 300 && e["n_treatment"].as_u64().unwrap() >= 300,
        "decided on the fleet's sum: {e}"
    );
    let t = e["treatment"].as_f64().unwrap() - e["control"].as_f64().unwrap();
    assert!((0.1..0.3).contains(&t), "error rates {e}");
    assert_eq!(history(&nats, KEY).len(), 1);
    // GET /admin/fleet shows what each sidecar held of the others.
    let f = s[0].fleet();
    let peers = f["peer_windows"].as_array().unwrap();
    let from: std::collections::BTreeSet<&str> = peers
        .iter()
        .map(|p| p["instance"].as_str().unwrap())
        .collect();
    assert_eq!(from, ["s2", "s3"].into_iter().collect(), "{f}");
}

#[test]
fn an_aa_fleet_on_thin_traffic_is_not_rolled_back() {
    let nats = NatsServer::start();
    // Both backends fail 5% of requests: the fleet sum crosses min_requests and keeps
    // being judged, and nothing is rolled back.
    let (s, _a, _b) = thin_fleet(&nats, 0.05, 400);
    // Every sidecar holds both peers' complete windows (the fleet sum is over
    // min_requests everywhere), then a dozen more checks pass.
    for sc in &s {
        wait_for(10, "the peers' windows", || {
            let f = sc.fleet();
            let total: u64 = f["peer_windows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["requests"].as_u64().unwrap())
                .sum::<u64>()
                + local_requests(sc, 0)
                + local_requests(sc, 1);
            (total == 1200).then_some(())
        });
    }
    std::thread::sleep(Duration::from_millis(12 * 300));
    for sc in &s {
        assert_eq!(sc.state(), "running");
        assert!(sc.guardrail_events().is_empty());
        // Judged on the sum (each sidecar alone has under min_requests): `pass`.
        assert!(local_requests(sc, 1) < 300);
        assert_eq!(
            sc.get("/admin/experiments")
                .pointer("/experiments/0/variants/1/guardrail_status")
                .cloned(),
            Some(Value::from("pass"))
        );
    }
}
