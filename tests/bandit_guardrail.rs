//! Guardrails win over a bandit, end to end through real processes: three arms on three
//! mock backends, arm `b`'s backend answers every request with a 500. The error-rate
//! guardrail rolls `b` back (its units are served by control at once); rewards posted
//! for `b`'s units afterwards are not credited to it (its posterior is frozen); the next
//! period gives `b` weight 0 and P(best) 0, and its buckets go to the other arms by the
//! minimal-move rule: exactly `b`'s units change variant, every unit of `control` and
//! `c` keeps its arm, and no exposure after that period is assigned to `b`.

mod common;

use common::{agent, start, wait_for, Abgate, MockServer};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const ARMS: [&str; 3] = ["control", "b", "c"];
const USERS: usize = 240;

fn config(backends: &[MockServer]) -> String {
    let mut upstreams = String::new();
    let mut variants = String::new();
    for (arm, m) in ARMS.iter().zip(backends) {
        upstreams += &format!("[upstream.{arm}]\naddrs = [\"{}\"]\n", m.addr);
        variants += &format!(
            "    [[layer.experiment.variant]]\n    name = \"{arm}\"\n    weight = 1\n    \
             upstream = \"{arm}\"\n"
        );
    }
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
debug_header = true
[admin]
listen = "127.0.0.1:0"
[identity]
header = "x-user-id"
[events]
dir = "{{DIR}}/events"
flush_interval = "50ms"
[state]
dir = "{{DIR}}/state"
{upstreams}[routing]
default_upstream = "control"
[[metric]]
name = "conversion"
kind = "binomial"
[[layer]]
name = "model"
  [[layer.experiment]]
  name = "pick"
  salt = "pick-salt"
  traffic = 1.0
{variants}    [layer.experiment.guardrails]
    min_requests = 10
    check_interval = "200ms"
    window = "10s"
    alpha = 0.05
    error_rate = {{ max_increase = 0.05 }}
    [layer.experiment.bandit]
    reward = "conversion"
    explore = "1h"
    min_units = 1
    update_interval = "1s"
    min_weight = 0.05
    max_shift = 0.5
"#
    )
}

fn bandit(g: &Abgate) -> Value {
    agent()
        .get(&g.admin_url("/admin/experiments/pick/bandit"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// One request per user (status ignored: `b` fails until it is rolled back).
fn round(g: &Abgate) {
    let a = agent();
    for u in 0..USERS {
        match a
            .get(&g.url("/v1/x"))
            .set("x-user-id", &format!("u{u}"))
            .call()
        {
            Ok(_) | Err(ureq::Error::Status(500, _)) => {}
            Err(e) => panic!("u{u}: {e}"),
        }
    }
}

fn conversion(g: &Abgate, uid: &str) {
    let s = agent()
        .post(&g.url("/_abgate/outcome"))
        .send_json(serde_json::json!({"metric": "conversion", "value": 1, "unit_id": uid}))
        .unwrap()
        .status();
    assert_eq!(s, 204);
}

/// Each user's exposures as (period, assigned arm, served arm), in log order.
fn exposures(dir: &Path) -> HashMap<String, Vec<(u64, String, String)>> {
    let mut out: HashMap<String, Vec<(u64, String, String)>> = HashMap::new();
    for e in common::events(&dir.join("events")) {
        if e["type"] != "exposure" {
            continue;
        }
        let a = &e["assignments"][0];
        out.entry(e["unit_id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                a["bandit_period"].as_u64().expect("bandit_period"),
                a["variant"].as_str().unwrap().to_string(),
                a["served"].as_str().unwrap().to_string(),
            ));
    }
    out
}

#[test]
fn a_rolled_back_arm_is_frozen_gets_weight_zero_and_only_its_units_move() {
    let backends: Vec<MockServer> = ARMS
        .iter()
        .map(|n| {
            let m = MockServer::builder().name(n);
            if *n == "b" { m.error_rate(1.0) } else { m }
                .start()
                .unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), &config(&backends));

    // Period 0 (exploring): equal shares; b fails every request until rolled back.
    round(&g);
    let guardrail = wait_for(10, "the rollback of b", || {
        common::events(&dir.path().join("events"))
            .into_iter()
            .find(|e| e["type"] == "guardrail" && e["action"] == "rollback")
    });
    assert_eq!(guardrail["variant"], "b", "{guardrail}");
    assert_eq!(guardrail["experiment"], "pick");

    // The units b was assigned in the first round (from their exposures, once the log
    // holds every one: an exposure is written just after its response).
    let first = wait_for(10, "the first round's exposures", || {
        let x = exposures(dir.path());
        (x.len() == USERS).then_some(x)
    });
    let b_units: Vec<String> = first
        .iter()
        .filter(|(_, xs)| xs[0].1 == "b")
        .map(|(u, _)| u.clone())
        .collect();
    assert!(
        (50..=110).contains(&b_units.len()),
        "about a third of {USERS} units: {}",
        b_units.len()
    );

    // Rewards for b's units after the rollback are not credited to b.
    let frozen = bandit(&g)["arms"][1]["rewards"].as_f64().unwrap();
    for u in &b_units {
        conversion(&g, u);
    }
    let view = bandit(&g);
    assert_eq!(
        view["arms"][1]["rewards"].as_f64().unwrap(),
        frozen,
        "{view:#}"
    );
    assert_eq!(view["arms"][1]["rolled_back"], true, "{view:#}");

    // The next period opened after the rollback gives b weight 0 and P(best) 0.
    let rolled_at = view["period"].as_u64().unwrap();
    let view = wait_for(10, "a period after the rollback", || {
        let v = bandit(&g);
        (v["period"].as_u64().unwrap() > rolled_at).then_some(v)
    });
    let b = &view["arms"][1];
    assert_eq!(b["weight"].as_f64().unwrap(), 0.0, "{view:#}");
    assert_eq!(b["prob_best"].as_f64().unwrap(), 0.0, "{view:#}");
    let last = view["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["weights"][1].as_f64().unwrap(), 0.0, "{last}");
    for i in [0, 2] {
        let w = view["arms"][i]["weight"].as_f64().unwrap();
        assert!((w - 0.5).abs() < 0.01, "b's share split evenly: {view:#}");
    }
    let moved_at = view["period"].as_u64().unwrap();

    // A second round on the new table: nothing is assigned to b any more; exactly b's
    // units moved, each to control or c; every other unit kept its arm.
    round(&g);
    for u in &b_units {
        conversion(&g, u);
    }
    let after = bandit(&g);
    assert_eq!(
        after["arms"][1]["rewards"].as_f64().unwrap(),
        frozen,
        "{after:#}"
    );
    g.stop(); // drains the event queue
    let seen = exposures(dir.path());
    let mut moved = 0;
    for (u, xs) in &seen {
        assert_eq!(xs.len(), 2, "{u}: one exposure per round: {xs:?}");
        let (p, arm, served) = &xs[1];
        assert!(*p >= moved_at, "{u}: second round in period {p}");
        assert_ne!(arm, "b", "{u} assigned to the rolled-back arm: {xs:?}");
        assert_eq!(arm, served, "{u}: served what it is assigned: {xs:?}");
        if xs[0].1 == "b" {
            moved += 1;
        } else {
            assert_eq!(xs[0].1, *arm, "{u} of a growing arm moved: {xs:?}");
        }
    }
    assert_eq!(seen.len(), USERS);
    assert_eq!(moved, b_units.len());
    eprintln!(
        "b rolled back in period {rolled_at}; weight 0 from period {moved_at}; {moved} units moved"
    );
}
