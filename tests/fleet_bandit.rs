//! A bandit shared by the fleet: `abgate serve` sidecars with the same bandit experiment
//! and `[fleet]` on one real `nats-server -js`. Each period is written once to the bucket
//! and every sidecar serves it; the weights come from the outcomes of every sidecar; a
//! sidecar started with an empty state directory serves the fleet's table.
//!
//! Run: `cargo test --test fleet_bandit -- --nocapture` (prints the delays between the
//! first and the last sidecar serving each period, and who wrote each period).

mod common;

use abgate::assign::bandit::Table;
use abgate::assign::hash;
use common::bandit::{backends, ARMS, RATES};
use common::fleet::{logs, wait_connected, Sidecar};
use common::nats::NatsServer;
use common::{agent, MockServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

const USERS: usize = 200;

/// The bandit of `tests/bandit_e2e.rs` (three arms, each on its own backend) in the
/// fleet at `nats` as `instance`, updating every `interval`.
fn config(backends: &[MockServer], nats: &str, instance: &str, interval: &str) -> String {
    common::bandit::config(backends, 50, interval)
        .raw(&format!(
            "[fleet]\nnats_url = \"{nats}\"\ninstance = \"{instance}\"\nship_events = false\n"
        ))
        .toml()
}

fn bandit(s: &Sidecar) -> Value {
    s.get("/admin/experiments/pick/bandit")
}

/// What must be the same on every sidecar: each period's number, start, weights
/// computed and shares served.
fn periods(view: &Value) -> Vec<(Value, Value, Value, Value)> {
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["period"].clone(),
                p["start_unix_ms"].clone(),
                p["target_weights"].clone(),
                p["weights"].clone(),
            )
        })
        .collect()
}

/// Wait (at most 10 s) until every sidecar serves the same history; returns one view.
fn same_everywhere(s: &[&Sidecar]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let views: Vec<Value> = s.iter().map(|x| bandit(x)).collect();
        if views.iter().all(|v| periods(v) == periods(&views[0])) {
            return views[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the sidecars serve different histories: {:#?}\n{}",
            views.iter().map(periods).collect::<Vec<_>>(),
            logs(s)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (at most 10 s) until every sidecar serves a period after `p`, polling every
/// 10 ms; returns the period and the delay (ms) between the first and the last sidecar
/// seen serving it.
fn next_period(s: &[&Sidecar], p: u64) -> (u64, u128) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut first: Option<(u64, Instant)> = None;
    loop {
        let now: Vec<u64> = s
            .iter()
            .map(|x| bandit(x)["period"].as_u64().unwrap())
            .collect();
        let max = *now.iter().max().unwrap();
        if max > p && first.is_none_or(|(q, _)| q < max) {
            first = Some((max, Instant::now()));
        }
        if let Some((q, at)) = first {
            if now.iter().all(|&x| x >= q) {
                return (q, at.elapsed().as_millis());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no common period after {p}: {now:?}\n{}",
            logs(s)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One request per user on each of `on`; a conversion posted to `post` at the rate of
/// the arm served.
fn round(on: &[&Sidecar], post: &Sidecar, rng: &mut StdRng) {
    let a = agent();
    for u in 0..USERS {
        let uid = format!("u{u}");
        let mut arm = None;
        for s in on {
            let r = a
                .get(&s.g.url("/v1/x"))
                .set("x-user-id", &uid)
                .call()
                .unwrap();
            let variant = r.header("x-abgate-variant").unwrap().to_string();
            arm = ARMS
                .iter()
                .position(|x| variant.ends_with(&format!("={x}")));
        }
        let arm = arm.expect("a variant header");
        if rng.random::<f64>() < RATES[arm] {
            let st = a
                .post(&post.g.url("/_abgate/outcome"))
                .send_json(serde_json::json!({"metric": "conversion", "value": 1, "unit_id": uid}))
                .unwrap()
                .status();
            assert_eq!(st, 204);
        }
    }
}

/// Every bandit period key in the bucket: key → (writer, number of values ever written).
fn period_keys(nats: &NatsServer) -> BTreeMap<u64, (String, usize)> {
    use futures_util::{StreamExt, TryStreamExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("abgate_state")
            .await
            .unwrap();
        let keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
        let mut out = BTreeMap::new();
        for key in keys {
            let parts: Vec<&str> = key.split('.').collect();
            // bandit.<experiment>.<fingerprint>.<period>
            let [_, "pick", _, n] = parts[..] else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            let mut h = kv.history(&key).await.unwrap();
            let mut values = Vec::new();
            while let Some(Ok(e)) = tokio::time::timeout(Duration::from_secs(2), h.next())
                .await
                .ok()
                .flatten()
            {
                values.push(serde_json::from_slice::<Value>(&e.value).unwrap());
            }
            let writer = values[0]["instance"].as_str().unwrap().to_string();
            out.insert(n, (writer, values.len()));
        }
        out
    })
}

/// The table of each period, replayed from an admin view's history.
fn tables(view: &Value) -> HashMap<u64, Table> {
    let mut out = HashMap::new();
    let mut t: Option<Table> = None;
    for p in view["history"].as_array().unwrap() {
        let w: Vec<f64> = serde_json::from_value(p["target_weights"].clone()).unwrap();
        let next = match t {
            None => Table::from_weights(&w),
            Some(t) => t.moved(&w, 0.25),
        };
        out.insert(p["period"].as_u64().unwrap(), next.clone());
        t = Some(next);
    }
    out
}

fn weight(view: &Value, arm: usize) -> f64 {
    view["arms"][arm]["weight"].as_f64().unwrap()
}

/// `abgate assign` of `uid` on the state directory of `s`.
fn assign(s: &Sidecar, uid: &str) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["assign", "--json", "--unit", uid, "--config"])
        .arg(&s.g.config)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_fleet_serves_one_weight_history_written_once_per_period_and_a_new_sidecar_takes_it() {
    let nats = NatsServer::start();
    let b = backends();
    let mut s: Vec<Sidecar> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| Sidecar::start(&config(&b, &nats.url(), n, "1s")))
        .collect();
    wait_connected(&s, 3);
    let all: Vec<&Sidecar> = s.iter().collect();
    let mut p = same_everywhere(&all)["period"].as_u64().unwrap();

    // Every user on every sidecar; the conversions posted to s3 only.
    let mut rng = StdRng::seed_from_u64(19);
    let mut delays = Vec::new();
    for _ in 0..4 {
        round(&all, &s[2], &mut rng);
        let (q, ms) = next_period(&all, p);
        delays.push(ms);
        p = q;
    }
    let view = same_everywhere(&all);
    let c = weight(&view, 2);
    assert!(c >= 0.75, "the best arm gains on every sidecar: {view:#}");
    assert!(
        view["arms"][2]["prob_best"].as_f64().unwrap() > 0.99,
        "{view:#}"
    );
    println!(
        "weights per period: {}",
        view["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["weights"].to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    println!("first → last sidecar serving a new period: {delays:?} ms (polled every 10 ms)");

    // Each period was written once, by one sidecar.
    let keys = period_keys(&nats);
    let last = view["period"].as_u64().unwrap();
    for n in 0..=last {
        let (writer, values) = keys
            .get(&n)
            .unwrap_or_else(|| panic!("no key for period {n}: {keys:?}"));
        assert_eq!(
            *values, 1,
            "period {n} written {values} times (by {writer} first)"
        );
    }
    println!("writers: {keys:?}");

    // Every exposure on every sidecar is the arm of the fleet's table of its period, so
    // the sidecars agree on each unit's variant within a period.
    let tables = tables(&view);
    let seed = hash::seed_of("pick-salt");
    let mut variants: HashMap<(String, u64), HashSet<String>> = HashMap::new();
    let mut exposures = 0;
    for side in &all {
        for e in common::events(&side.dir.path().join("events")) {
            if e["type"] != "exposure" {
                continue;
            }
            let uid = e["unit_id"].as_str().unwrap().to_string();
            let a = &e["assignments"][0];
            let period = a["bandit_period"].as_u64().unwrap();
            let Some(t) = tables.get(&period) else {
                continue; // a period opened after `view` was read
            };
            let want = ARMS[t.arm(hash::bucket(seed, uid.as_bytes())) as usize];
            assert_eq!(a["variant"], want, "{uid} in period {period}");
            variants
                .entry((uid, period))
                .or_default()
                .insert(a["variant"].as_str().unwrap().to_string());
            exposures += 1;
        }
    }
    assert!(exposures >= USERS * 3 * 3, "{exposures}");
    assert!(variants.values().all(|v| v.len() == 1));

    // s2 comes back with an empty state directory: it serves the fleet's history and
    // table, and `abgate assign` on its directory agrees with the others.
    let old = s.remove(1);
    old.g.stop();
    let fresh = Sidecar::start(&config(&b, &nats.url(), "s2", "1s"));
    let t0 = Instant::now();
    let view = same_everywhere(&[&s[0], &s[1], &fresh]);
    println!(
        "s2 restarted empty serves the fleet's {} periods after {} ms",
        view["history"].as_array().unwrap().len(),
        t0.elapsed().as_millis()
    );
    for u in (0..USERS).step_by(23) {
        let uid = format!("u{u}");
        let (x, y) = (assign(&fresh, &uid), assign(&s[0], &uid));
        // the state file may be one period apart while a period opens: compare again
        if x["layers"][0]["variant"] != y["layers"][0]["variant"] {
            same_everywhere(&[&s[0], &fresh]);
            assert_eq!(
                assign(&fresh, &uid)["layers"][0]["variant"],
                assign(&s[0], &uid)["layers"][0]["variant"],
                "{uid}"
            );
        }
    }
    // `abgate analyze` of one sidecar's log (s3, which received the conversions): its
    // bandit records carry the fleet's weight history, so the SRM by period holds, the
    // best arm leads, and no record disagrees with another.
    let view = same_everywhere(&[&s[0], &s[1], &fresh]);
    let s3 = s.remove(1);
    let config = s3.g.config.clone();
    s3.g.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["analyze", "--format", "json", "--config"])
        .arg(&config)
        .arg("--events")
        .arg(s3.dir.path().join("events"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("warning"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = &report["experiments"][0]["bandit"];
    let pb: Vec<f64> = (0..3)
        .map(|a| b["arms"][a]["prob_best"].as_f64().unwrap())
        .collect();
    assert!(pb[2] > pb[0] && pb[2] > pb[1], "{pb:?}");
    let srm = b["srm"]["p_value"].as_f64().expect("SRM computed");
    assert!(
        srm > 0.01,
        "SRM by period of a fleet sidecar's log: p = {srm}: {b:#}"
    );
    for h in view["history"].as_array().unwrap() {
        let n = h["period"].as_u64().unwrap();
        if let Some(a) = b["periods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["period"] == n && x["weights"].is_array())
        {
            // (s3 also wrote its own period 0 before it adopted the fleet's: the
            // earliest started record of a period is kept)
            assert_eq!(a["start_unix_ms"], h["start_unix_ms"], "period {n}");
            let (x, y) = (&a["weights"], &h["weights"]);
            let close =
                (0..3).all(|i| (x[i].as_f64().unwrap() - y[i].as_f64().unwrap()).abs() < 1e-9);
            assert!(close, "period {n}: {x} vs {y}");
        }
    }
    println!("analyze of s3's log: P(best) {pb:?}, SRM by period p = {srm:.4}");
    for x in s {
        x.g.stop();
    }
    fresh.g.stop();
}

#[test]
fn outcomes_posted_to_one_sidecar_move_the_weights_another_computes() {
    let nats = NatsServer::start();
    let b = backends();
    // s2 is never due (1 h): s1 computes every period, from s2's published counters.
    let s1 = Sidecar::start(&config(&b, &nats.url(), "s1", "1s"));
    let s2 = Sidecar::start(&config(&b, &nats.url(), "s2", "1h"));
    let s = [s1, s2];
    wait_connected(&s, 2);
    let all: Vec<&Sidecar> = s.iter().collect();
    let mut p = same_everywhere(&all)["period"].as_u64().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..4 {
        round(&[&s[1]], &s[1], &mut rng);
        p = next_period(&all, p).0;
    }
    let view = same_everywhere(&all);
    assert!(weight(&view, 2) >= 0.75, "{view:#}");
    let units: u64 = view["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["units"].as_u64().unwrap())
        .sum();
    assert!(
        units >= (USERS * 3) as u64,
        "s2's exposures counted by s1: {view:#}"
    );
    let keys = period_keys(&nats);
    for (n, (writer, _)) in keys.range(1..) {
        assert_eq!(writer, "s1", "period {n}: {keys:?}");
    }
    println!("writers: {keys:?}");
    for x in s {
        x.g.stop();
    }
}

#[test]
fn a_sidecar_back_with_a_shorter_history_catches_up_and_a_broker_cut_holds_the_period() {
    let mut nats = NatsServer::start();
    let b = backends();
    let mut s: Vec<Sidecar> = ["s1", "s2"]
        .iter()
        .map(|n| Sidecar::start(&config(&b, &nats.url(), n, "1s")))
        .collect();
    wait_connected(&s, 2);
    let mut p = same_everywhere(&[&s[0], &s[1]])["period"].as_u64().unwrap();

    // s2 stops; the fleet (s1) moves on for two periods with traffic; s2 comes back on
    // its own state directory, two periods behind, and takes the fleet's history.
    let Sidecar { g, dir } = s.pop().unwrap();
    let path = g.config.clone();
    g.stop();
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..2 {
        round(&[&s[0]], &s[0], &mut rng);
        p = next_period(&[&s[0]], p).0;
    }
    let behind: abgate::guard::bandit::History =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/bandit/pick.json")).unwrap())
            .unwrap();
    assert!((behind.periods.len() as u64) < p, "s2's history is shorter");
    s.push(Sidecar {
        g: common::start_file(dir.path(), &path),
        dir,
    });
    let t0 = Instant::now();
    let view = same_everywhere(&[&s[0], &s[1]]);
    println!(
        "s2 back {} periods behind serves the fleet's history after {} ms",
        p + 1 - behind.periods.len() as u64,
        t0.elapsed().as_millis()
    );
    assert!(weight(&view, 2) > 1.0 / 3.0, "{view:#}");

    // The broker goes away: no sidecar opens a period (they hold the one they serve,
    // counting); when it is back, the fleet moves on together.
    nats.stop();
    // a look that read the bucket just before the cut finishes opening what it read
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<u64> = s
        .iter()
        .map(|x| bandit(x)["period"].as_u64().unwrap())
        .collect();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for (x, h) in s.iter().zip(&held) {
            assert_eq!(
                bandit(x)["period"].as_u64().unwrap(),
                *h,
                "cut off, the period holds"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    nats.restart();
    let top = *held.iter().max().unwrap();
    next_period(&[&s[0], &s[1]], top);
    same_everywhere(&[&s[0], &s[1]]);
    for x in s {
        x.g.stop();
    }
}
