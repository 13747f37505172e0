//! A ramp end to end, with real processes and second-long holds: it advances through
//! its steps under traffic and the observed share follows the steps; a `kill -9` and a
//! restart mid-step resume the same step and timer; `POST …/ramp/hold` stops it and
//! `POST …/ramp/advance` (token) moves it; nobody already in changes variant; every
//! transition is a `ramp` event and the `abgate_ramp_*` metrics follow. A failing
//! treatment is rolled back at the first step (a decision like any other: counted, its
//! units served by control) and a resume restarts the step.

mod common;

use common::{agent, start, start_file, wait_for, Abgate, MockServer, DIR_PLACEHOLDER, TOKEN};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn config(a: &MockServer, b: &MockServer) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
debug_header = true
[admin]
listen = "127.0.0.1:0"
[identity]
header = "x-user-id"
[events]
dir = "{DIR_PLACEHOLDER}/events"
flush_interval = "20ms"
[state]
dir = "{DIR_PLACEHOLDER}/state"
[upstream.model_a]
addrs = ["{a}"]
[upstream.model_b]
addrs = ["{b}"]
[routing]
default_upstream = "model_a"
[[layer]]
name = "model"
  [[layer.experiment]]
  name = "ranker_v2"
    [[layer.experiment.variant]]
    name = "control"
    weight = 50
    upstream = "model_a"
    [[layer.experiment.variant]]
    name = "treatment"
    weight = 50
    upstream = "model_b"
    [layer.experiment.guardrails]
    min_requests = 10
    check_interval = "200ms"
    window = "10s"
    alpha = 0.05
    error_rate = {{ max_increase = 0.5 }}
    [layer.experiment.ramp]
    steps = [0.1, 0.3, 0.6]
    hold = "2s"
    min_requests = 15
    max_wait = "1h"
"#,
        a = a.addr,
        b = b.addr
    )
}

fn ramp(g: &Abgate) -> Value {
    agent()
        .get(&g.admin_url("/admin/experiments/ranker_v2/ramp"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

fn post(g: &Abgate, action: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = agent().post(&g.admin_url(&format!("/admin/experiments/ranker_v2/ramp/{action}")));
    if let Some(t) = token {
        r = r.set("authorization", &format!("Bearer {t}"));
    }
    match r.call() {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    }
}

/// The variant serving `user`, or `None` when outside the experiment.
fn served(g: &Abgate, user: &str) -> Option<String> {
    let r = match agent().get(&g.url("/v1/x")).set("x-user-id", user).call() {
        Ok(r) => r,
        // A failing backend's answer is still served by the variant.
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let h = r.header("x-abgate-variant").unwrap_or("none").to_string();
    h.split(';')
        .find_map(|p| p.strip_prefix("ranker_v2=").map(str::to_string))
}

/// Traffic from new users (`user-{next}` on) until `until` holds of the ramp (polled
/// between batches), at most `secs`. Returns the share of requests in the experiment
/// and how many were sent.
fn drive(
    g: &Abgate,
    next: &mut u64,
    secs: u64,
    what: &str,
    until: impl Fn(&Value) -> bool,
) -> (f64, u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut sent, mut inside) = (0u64, 0u64);
    loop {
        if until(&ramp(g)) {
            return (inside as f64 / sent.max(1) as f64, sent);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            ramp(g)
        );
        for _ in 0..50 {
            *next += 1;
            sent += 1;
            inside += served(g, &format!("user-{next}")).is_some() as u64;
        }
    }
}

#[test]
fn a_ramp_advances_under_traffic_survives_kill_9_and_obeys_hold_and_advance() {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), &config(&a, &b));
    let r = ramp(&g);
    assert_eq!(
        (r["step"].as_u64(), r["status"].as_str()),
        (Some(1), Some("running")),
        "{r}"
    );
    assert_eq!(r["traffic"].as_f64(), Some(0.1));

    // Step 1 → 2 under traffic; the share served follows the step.
    let mut next = 0;
    let (share1, n1) = drive(&g, &mut next, 60, "step 2", |r| r["step"] == 2);
    // The units in at step 1, and their variants: they must never move.
    let mut pinned: HashMap<String, String> = HashMap::new();
    for i in 0..400 {
        let u = format!("pinned-{i}");
        if let Some(v) = served(&g, &u) {
            pinned.insert(u, v);
        }
    }

    // kill -9 mid-step 2, restart on the same state: the same step, the same timer.
    let began = ramp(&g)["step_began"].clone();
    let config_path = g.config.clone();
    let mut g = g;
    g.child.kill().unwrap();
    g.child.wait().unwrap();
    drop(g);
    let g = start_file(dir.path(), &config_path);
    let r = ramp(&g);
    assert_eq!(
        (r["step"].as_u64(), &r["step_began"]),
        (Some(2), &began),
        "{r}"
    );

    // Hold: stays at step 2 past its hold, under traffic.
    assert_eq!(post(&g, "hold", None).0, 401);
    let (code, body) = post(&g, "hold", Some(TOKEN));
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("holding")),
        "{body}"
    );
    let held_until = Instant::now() + Duration::from_secs(3);
    let (share2, n2) = drive(&g, &mut next, 30, "the hold's 3 s", |_| {
        Instant::now() > held_until
    });
    let r = ramp(&g);
    assert_eq!(
        (r["step"].as_u64(), r["status"].as_str()),
        (Some(2), Some("holding")),
        "{r}"
    );

    // Advance (token): step 3 at once, running again; then the gate completes it.
    assert_eq!(post(&g, "advance", None).0, 401);
    let (code, body) = post(&g, "advance", Some(TOKEN));
    assert_eq!(
        (code, body["step"].as_u64(), body["status"].as_str()),
        (200, Some(3), Some("running")),
        "{body}"
    );
    let (share3, n3) = drive(&g, &mut next, 60, "completion", |r| {
        r["status"] == "completed"
    });
    assert_eq!(post(&g, "advance", Some(TOKEN)).0, 409);

    eprintln!("observed share: step 1 {share1:.3} of {n1}, step 2 {share2:.3} of {n2}, step 3 {share3:.3} of {n3}");
    for (share, n, step) in [(share1, n1, 0.1), (share2, n2, 0.3), (share3, n3, 0.6)] {
        // 5 binomial standard deviations (users are new each request).
        let sd = (step * (1.0 - step) / n as f64).sqrt();
        assert!(
            (share - step).abs() < 5.0 * sd + 0.01,
            "step {step}: {share:.3} of {n}"
        );
    }
    for (u, v) in &pinned {
        assert_eq!(served(&g, u).as_deref(), Some(v.as_str()), "{u} moved");
    }

    // Metrics and the events of every transition.
    let m = g.metrics();
    assert!(
        m.contains("abgate_ramp_step{experiment=\"ranker_v2\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("abgate_ramp_traffic_ratio{experiment=\"ranker_v2\"} 0.6"),
        "{m}"
    );
    assert!(
        m.contains("abgate_ramp_status{experiment=\"ranker_v2\",status=\"completed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("abgate_ramp_status{experiment=\"ranker_v2\",status=\"running\"} 0"),
        "{m}"
    );
    let ramps = wait_for(10, "the ramp events", || {
        let all: Vec<Value> = common::events(&dir.path().join("events"))
            .into_iter()
            .filter(|e| e["type"] == "ramp")
            .collect();
        let ev: Vec<(String, String, u64)> = all
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_string(),
                    e["cause"].as_str().unwrap().to_string(),
                    e["to_step"].as_u64().unwrap(),
                )
            })
            .collect();
        (ev.len() >= 5).then_some((ev, all))
    });
    let (ramps, all) = ramps;
    for e in &all {
        eprintln!("{e}");
    }
    let want: Vec<(String, String, u64)> = [
        ("start", "gate", 1),
        ("advance", "gate", 2),
        ("hold", "admin", 2),
        ("advance", "admin", 3),
        ("complete", "gate", 3),
    ]
    .iter()
    .map(|(a, c, s)| (a.to_string(), c.to_string(), *s))
    .collect();
    assert_eq!(ramps, want);
    let history = ramp(&g)["history"].as_array().unwrap().len();
    assert_eq!(history, 5);
}

#[test]
fn a_failing_treatment_rolls_the_ramp_back_at_its_first_step_and_resume_restarts_the_step() {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder()
        .name("b")
        .error_rate(0.9)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), &config(&a, &b));
    let mut next = 0;
    drive(&g, &mut next, 60, "a rollback", |r| {
        r["status"] == "rolled_back"
    });
    let r = ramp(&g);
    assert_eq!(
        (r["step"].as_u64(), r["traffic"].as_f64()),
        (Some(1), Some(0.1)),
        "{r}"
    );
    // Through App::decide: counted, and the treatment's units are served by control.
    let m = g.metrics();
    assert!(
        common::metric_sum(&m, "abgate_rollbacks_total", &["ranker_v2", "treatment"]) >= 1.0,
        "{m}"
    );
    let before = b.requests();
    let inside = (0..500)
        .filter(|i| served(&g, &format!("after-{i}")).is_some())
        .count();
    assert!(inside > 20, "{inside} of 500 in the experiment");
    assert_eq!(
        b.requests(),
        before,
        "the treatment's backend got requests after the rollback"
    );
    let guardrail = wait_for(10, "the guardrail event", || {
        common::events(&dir.path().join("events"))
            .into_iter()
            .find(|e| e["type"] == "guardrail" && e["action"] == "rollback")
    });
    assert_eq!(guardrail["variant"], "treatment");
    assert_eq!(post(&g, "advance", Some(TOKEN)).0, 409);

    // Resume: the step starts again at the same traffic.
    b.set_error_rate(0.0);
    let resumed = agent()
        .post(&g.admin_url("/admin/experiments/ranker_v2/resume"))
        .set("authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let r = wait_for(10, "the restart", || {
        let r = ramp(&g);
        (r["status"] == "running").then_some(r)
    });
    assert_eq!(
        (r["step"].as_u64(), r["traffic"].as_f64()),
        (Some(1), Some(0.1)),
        "{r}"
    );
    let actions: Vec<String> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions.first().map(String::as_str), Some("start"));
    assert_eq!(actions.last().map(String::as_str), Some("restart"));
    assert!(actions.contains(&"rollback".to_string()), "{actions:?}");
}
