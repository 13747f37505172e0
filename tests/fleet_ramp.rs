//! A ramp's step shared by the fleet: two `abgate serve` sidecars with `[fleet]` and one
//! real `nats-server -js`. An advance taken on one sidecar (admin API) is served by the
//! other within 2 s, without a second `ramp` event; a hold taken on the other comes back.
//!
//! Run: `cargo test --test fleet_ramp -- --nocapture` (prints the delays).

mod common;

use common::fleet::*;
use common::nats::NatsServer;
use common::*;
use serde_json::Value;
use std::time::Instant;

fn ramp(s: &Sidecar) -> Value {
    s.get("/admin/experiments/ranker_v2/ramp")
}

fn post_ramp(s: &Sidecar, action: &str) -> Value {
    agent()
        .post(&s.g.admin_url(&format!("/admin/experiments/ranker_v2/ramp/{action}")))
        .set("authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// Milliseconds until `s`'s ramp satisfies `f` (at most 10 s).
fn until(s: &Sidecar, t0: Instant, what: &str, f: impl Fn(&Value) -> bool) -> u128 {
    wait_for(10, what, || f(&ramp(s)).then(|| t0.elapsed().as_millis()))
}

#[test]
fn an_advance_on_one_sidecar_is_served_by_the_other_within_2s_and_a_hold_comes_back() {
    let nats = NatsServer::start();
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let guard = r#"min_requests = 300, check_interval = "200ms", window = "5m", error_rate = { max_increase = 0.02 }"#;
    // The ramp's table after the rest: it belongs to the last experiment (ranker_v2),
    // whose `traffic = 1.0` is its last step. Holds of an hour: only the admin API moves it.
    let ramp_table =
        "\n[layer.experiment.ramp]\nsteps = [0.2, 0.6, 1.0]\nhold = \"1h\"\nmax_wait = \"2h\"\n";
    let s: Vec<Sidecar> = ["s1", "s2"]
        .iter()
        .map(|name| {
            let c = sidecar_config(&nats.url(), name, &a, &b, guard) + ramp_table;
            Sidecar::start(&c)
        })
        .collect();
    wait_connected(&s, 2);
    for side in &s {
        assert_eq!(ramp(side)["step"].as_u64(), Some(1), "{}", ramp(side));
    }

    let t0 = Instant::now();
    assert_eq!(post_ramp(&s[0], "advance")["step"].as_u64(), Some(2));
    let took = until(&s[1], t0, "s2 at step 2", |r| {
        r["step"] == 2 && r["traffic"] == 0.6
    });
    println!("advance on s1 served by s2 after {took} ms");
    assert!(took <= 2_000, "{took} ms");
    // The gauge follows at the control loop's next tick.
    common::wait_metric(
        &s[1].g,
        "abgate_ramp_step",
        &["experiment=\"ranker_v2\""],
        2.0,
    );

    let t1 = Instant::now();
    assert_eq!(post_ramp(&s[1], "hold")["status"].as_str(), Some("holding"));
    let took = until(&s[0], t1, "s1 holding", |r| r["status"] == "holding");
    println!("hold on s2 seen by s1 after {took} ms");
    assert!(took <= 2_000, "{took} ms");

    // One event per transition in the fleet: the advance on s1, the hold on s2.
    let actions = |side: &Sidecar| -> Vec<String> {
        events(&side.dir.path().join("events"))
            .into_iter()
            .filter(|e| e["type"] == "ramp")
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    };
    let (e1, e2) = wait_for(10, "two ramp events on each", || {
        let (e1, e2) = (actions(&s[0]), actions(&s[1]));
        (e1.len() >= 2 && e2.len() >= 2).then_some((e1, e2))
    });
    assert_eq!(e1, ["start", "advance"], "s1");
    assert_eq!(e2, ["start", "hold"], "s2");
}
