//! Bandits end to end through real processes: three arms, each on its own mock backend;
//! users routed by abgate, conversions posted through the outcome API at a seeded rate
//! per arm (5%, 5%, 60%). Every second the weights update: traffic moves to the best arm,
//! each exposure's variant is the one the replayed table gives for its period (a unit
//! changes variant only when its bucket moved), a unit of an arm that does not shrink
//! never moves, and a restart serves the table of the persisted history.

mod common;

use abgate::assign::bandit::Table;
use abgate::assign::hash;
use common::bandit::{backends, view as bandit, ARMS, RATES};
use common::{agent, start};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const USERS: usize = 300;

fn period(g: &common::Abgate) -> u64 {
    bandit(g)["period"].as_u64().unwrap()
}

/// One request per user; a conversion posted for it at its arm's rate. Returns the arm
/// index each user saw.
fn round(g: &common::Abgate, rng: &mut StdRng) -> Vec<usize> {
    let a = agent();
    (0..USERS)
        .map(|u| {
            let uid = format!("u{u}");
            let r = a
                .get(&g.url("/v1/x"))
                .set("x-user-id", &uid)
                .call()
                .unwrap();
            let variant = r.header("x-abgate-variant").unwrap().to_string();
            let body: serde_json::Value = r.into_json().unwrap();
            let arm = ARMS
                .iter()
                .position(|x| variant.ends_with(&format!("={x}")))
                .unwrap_or_else(|| panic!("variant header {variant}"));
            assert_eq!(body["backend"], ARMS[arm], "each arm has its own backend");
            if rng.random::<f64>() < RATES[arm] {
                let s = a
                    .post(&g.url("/_abgate/outcome"))
                    .send_json(
                        serde_json::json!({"metric": "conversion", "value": 1, "unit_id": uid}),
                    )
                    .unwrap()
                    .status();
                assert_eq!(s, 204);
            }
            arm
        })
        .collect()
}

fn wait_period_after(g: &common::Abgate, p: u64) -> u64 {
    common::wait_for(10, "the next bandit period", || {
        let now = period(g);
        (now > p).then_some(now)
    })
}

/// The table of each period, replayed from the admin view's history.
fn tables(view: &serde_json::Value) -> HashMap<u64, Table> {
    let history = view["history"].as_array().unwrap();
    let mut out = HashMap::new();
    let mut t: Option<Table> = None;
    for p in history {
        let w: Vec<f64> = serde_json::from_value(p["target_weights"].clone()).unwrap();
        t = Some(match t {
            None => Table::from_weights(&w),
            Some(t) => t.moved(&w, 0.25),
        });
        out.insert(p["period"].as_u64().unwrap(), t.clone().unwrap());
    }
    out
}

#[test]
fn traffic_moves_to_the_best_arm_units_stay_sticky_and_a_restart_keeps_the_table() {
    let backends = backends();
    let dir = tempfile::tempdir().unwrap();
    let text = common::bandit::config(&backends, 50, "1s").toml();
    let g = start(dir.path(), &text);
    let mut rng = StdRng::seed_from_u64(19);
    let mut p = period(&g);
    assert_eq!(p, 0);
    for _ in 0..4 {
        round(&g, &mut rng);
        p = wait_period_after(&g, p);
    }
    let view = bandit(&g);
    let c = &view["arms"][2];
    assert!(c["weight"].as_f64().unwrap() >= 0.83, "{view:#}");
    assert!(c["prob_best"].as_f64().unwrap() > 0.99, "{view:#}");
    for arm in &view["arms"].as_array().unwrap()[..2] {
        assert!(
            arm["weight"].as_f64().unwrap() >= 0.05 - 1e-9,
            "floors hold: {view:#}"
        );
    }
    let m = g.metrics();
    assert!(
        common::metric_sum(
            &m,
            "abgate_bandit_weight",
            &["experiment=\"pick\"", "variant=\"c\""]
        ) >= 0.83,
        "{m}"
    );
    assert!(m.contains("abgate_bandit_prob_best{experiment=\"pick\",variant=\"a\"}"));
    eprintln!(
        "weights per period: {}",
        view["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["weights"].to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    let before = view["history"].as_array().unwrap().clone();
    g.stop();

    // A restart restores the history and the table; one more round on it.
    let g = start(dir.path(), &text);
    let after = bandit(&g);
    let restored = after["history"].as_array().unwrap();
    assert!(restored.len() >= before.len());
    for (x, y) in before.iter().zip(restored) {
        assert_eq!(
            (&x["period"], &x["target_weights"], &x["weights"]),
            (&y["period"], &y["target_weights"], &y["weights"])
        );
    }
    round(&g, &mut rng);
    let view = bandit(&g);
    g.stop();

    // Every exposure's variant is the replayed table's arm for its period.
    let tables = tables(&view);
    let seed = hash::seed_of("pick-salt");
    let mut last: HashMap<String, (u64, usize)> = HashMap::new();
    let served = |p: u64, arm: usize| -> f64 {
        view["history"][p as usize]["weights"][arm]
            .as_f64()
            .unwrap()
    };
    let mut exposures = 0;
    let mut moved = 0;
    for e in common::events(&dir.path().join("events")) {
        if e["type"] != "exposure" {
            continue;
        }
        let uid = e["unit_id"].as_str().unwrap().to_string();
        let a = &e["assignments"][0];
        let p = a["bandit_period"]
            .as_u64()
            .expect("exposures carry bandit_period");
        let arm = ARMS.iter().position(|x| a["variant"] == *x).unwrap();
        let want = tables[&p].arm(hash::bucket(seed, uid.as_bytes())) as usize;
        assert_eq!(arm, want, "{uid} in period {p}");
        exposures += 1;
        if let Some((p0, arm0)) = last.insert(uid.clone(), (p, arm)) {
            if arm0 != arm {
                moved += 1;
                // A unit leaves only an arm that shrank since it was last seen.
                let shrank = (p0 + 1..=p).any(|q| served(q, arm0) < served(q - 1, arm0));
                assert!(
                    shrank,
                    "{uid} moved {arm0}→{arm} between periods {p0} and {p} with no shrink"
                );
                assert_ne!(arm0, 2, "arm c never shrinks, so its units never move");
            }
        }
    }
    assert_eq!(exposures, USERS * 5);

    // `abgate assign` reads the history in the state directory: it agrees with the
    // table replayed from that file (which may hold a period more than `view`).
    let file: abgate::guard::bandit::History =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/bandit/pick.json")).unwrap())
            .unwrap();
    let (first, rest) = file.periods.split_first().unwrap();
    let mut saved = Table::from_weights(&first.weights);
    for p in rest {
        saved = saved.moved(&p.weights, p.max_shift);
    }
    for u in (0..USERS).step_by(37) {
        let uid = format!("u{u}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_abgate"))
            .args(["assign", "--json", "--unit", &uid, "--config"])
            .arg(dir.path().join("abgate.toml"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        let want = saved.arm(hash::bucket(seed, uid.as_bytes())) as usize;
        assert_eq!(v["layers"][0]["variant"], ARMS[want], "{uid}: {v}");
    }
    eprintln!("{exposures} exposures; {moved} changes of variant, each out of a shrinking arm");
}
