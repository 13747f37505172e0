//! End to end through real processes on loopback: abgate (a child process) in front of
//! two mock model backends.

mod common;
use common::*;
use std::time::Duration;

fn variant_of(body: &serde_json::Value) -> String {
    body["assignments"].as_str().unwrap_or("").to_string()
}

#[test]
fn routes_each_unit_to_its_variant_backend_and_sticks() {
    let (_a, _b, _dir, g) = two_backends("");
    let cfg = abgate::config::load_file(&g.config).unwrap();
    let (li, ei) = cfg.experiment("ranker_v2").unwrap();
    let exp = &cfg.layers[li].experiments[ei];
    let mut per_backend = [0, 0];
    for i in 0..200 {
        let user = format!("user-{i}");
        let expected = abgate::assign::variant_of(exp, &user);
        for _ in 0..3 {
            let (status, body, _) = get_as(&g, "/v1/chat", &user);
            assert_eq!(status, 200);
            let want_backend = if expected == 0 { "a" } else { "b" };
            assert_eq!(body["backend"], want_backend, "user {user}");
            let label = &exp.variants[expected].label;
            assert_eq!(variant_of(&body), label.to_string());
            // variant headers are added only for the treatment
            assert_eq!(
                body["headers"]["x-model-version"].as_str(),
                (expected == 1).then_some("v2")
            );
            per_backend[expected] += 1;
            // every backend request carries a request id (the exposure's), 26 characters
            let id = body["headers"]["x-request-id"].as_str().unwrap_or("");
            assert_eq!(id.len(), 26, "{body}");
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
    }
    // A request id the client sent is kept.
    let r = agent()
        .get(&g.url("/v1/chat"))
        .set("x-request-id", "client-req-1")
        .call()
        .unwrap();
    let body: serde_json::Value = r.into_json().unwrap();
    assert_eq!(body["headers"]["x-request-id"], "client-req-1");
    assert!(
        per_backend[0] > 150 && per_backend[1] > 150,
        "{per_backend:?}"
    );
    // The CLI agrees with the proxy.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["assign", "--config"])
        .arg(&g.config)
        .args(["--unit", "user-7", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, body, _) = get_as(&g, "/v1/chat", "user-7");
    assert_eq!(
        format!(
            "model.ranker_v2={}",
            v["layers"][0]["variant"].as_str().unwrap()
        ),
        variant_of(&body)
    );
}

#[test]
fn minted_identity_is_used_for_the_first_request_and_after() {
    let (_a, _b, _dir, g) = two_backends("");
    for _ in 0..20 {
        let r = agent().get(&g.url("/v1/chat")).call().unwrap();
        let cookie = r.header("set-cookie").expect("a minted cookie").to_string();
        assert!(
            cookie.contains("Path=/")
                && cookie.contains("Max-Age=31536000")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        let id = cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("abgate_uid=")
            .to_string();
        assert_eq!(id.len(), 22);
        let first: serde_json::Value = r.into_json().unwrap();
        let (_, again, _) = get_as(&g, "/v1/chat", &id);
        assert_eq!(variant_of(&first), variant_of(&again));
    }
}

#[test]
fn malformed_identities_are_absent_counted_and_never_5xx() {
    let (_a, _b, _dir, g) = two_backends("");
    let long = "x".repeat(300);
    let cases = [
        ("cookie", "abgate_uid=".to_string()),
        ("cookie", format!("abgate_uid={long}")),
        ("cookie", "abgate_uid=a b; x".to_string()),
        ("x-user-id", long.clone()),
        ("x-user-id", "".to_string()),
    ];
    for (h, v) in &cases {
        let r = agent().get(&g.url("/v1/chat")).set(h, v).call().unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.header("set-cookie").is_some(),
            "treated as absent → minted"
        );
    }
    let m = g.metrics();
    assert_eq!(
        metric_sum(&m, "abgate_identity_invalid_total", &["source=\"cookie\""]),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "abgate_identity_invalid_total", &["source=\"header\""]),
        2.0
    );
}

#[test]
fn unreachable_backend_is_a_clear_502_and_counted() {
    let a = MockServer::builder().name("a").start().unwrap();
    // model_b points at a port nobody listens on
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let g = start(
        dir.path(),
        &two_backend(dir.path(), a.addr, dead_addr).toml(),
    );
    let exp_cfg = abgate::config::load_file(&g.config).unwrap();
    let exp = &exp_cfg.layers[0].experiments[0];
    let treated: Vec<String> = (0..100)
        .map(|i| format!("u{i}"))
        .filter(|u| abgate::assign::variant_of(exp, u) == 1)
        .take(10)
        .collect();
    for u in &treated {
        let (status, body, _) = get_as(&g, "/v1/chat", u);
        assert_eq!(status, 502);
        assert!(
            body["error"].as_str().unwrap().contains("model_b"),
            "{body}"
        );
    }
    let (status, _, _) = get_as(
        &g,
        "/v1/chat",
        &(0..100)
            .map(|i| format!("u{i}"))
            .find(|u| abgate::assign::variant_of(exp, u) == 0)
            .unwrap(),
    );
    assert_eq!(status, 200, "the proxy keeps serving the healthy variant");
    wait_metric(
        &g,
        "abgate_upstream_errors_total",
        &["upstream=\"model_b\"", "kind=\"connect\""],
        10.0,
    );
    wait_metric(
        &g,
        "abgate_requests_total",
        &["variant=\"treatment\"", "status_class=\"5xx\""],
        10.0,
    );
}

#[test]
fn slow_backend_is_a_504_timeout_counted_and_logged() {
    // Both backends answer after 1.6 s. model_a's read timeout is 1 s (a timeout of a
    // second or more runs on tokio's timer), model_b's 300 ms (pingora's own timer).
    let slow = Duration::from_millis(1600);
    let a = MockServer::builder()
        .name("a")
        .latency(slow)
        .start()
        .unwrap();
    let b = MockServer::builder()
        .name("b")
        .latency(slow)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_backend(dir.path(), a.addr, b.addr)
        .set("upstream.model_a", "read_timeout = \"1s\"")
        .set("upstream.model_b", "read_timeout = \"300ms\"");
    let g = start(dir.path(), &cfg.toml());
    let exp_cfg = abgate::config::load_file(&g.config).unwrap();
    assert_eq!(exp_cfg.upstreams[0].read_timeout, Duration::from_secs(1));
    assert_eq!(
        exp_cfg.upstreams[1].read_timeout,
        Duration::from_millis(300)
    );
    let exp = &exp_cfg.layers[0].experiments[0];
    for (variant, upstream, bound) in [(0, "model_a", 1.0), (1, "model_b", 0.3)] {
        let user = (0..100)
            .map(|i| format!("u{i}"))
            .find(|u| abgate::assign::variant_of(exp, u) == variant)
            .unwrap();
        let t = std::time::Instant::now();
        let (status, body, _) = get_as(&g, "/v1/chat", &user);
        let took = t.elapsed().as_secs_f64();
        assert_eq!(status, 504, "{body}");
        let msg = body["error"].as_str().unwrap_or("");
        assert!(msg.contains(upstream) && msg.contains("timeout"), "{body}");
        // Timed out, not answered: after the bound, well before the backend's 1.6 s.
        assert!(took >= bound && took < 1.5, "{upstream}: {took} s");
        wait_metric(
            &g,
            "abgate_upstream_errors_total",
            &[&format!("upstream=\"{upstream}\""), "kind=\"timeout\""],
            1.0,
        );
    }
    assert!(g.stop().success());
    let errors: Vec<String> = events(&dir.path().join("events"))
        .iter()
        .filter(|e| e["type"] == "exposure")
        .map(|e| format!("{} {}", e["upstream"], e["error"]))
        .collect();
    assert_eq!(
        errors,
        ["\"model_a\" \"timeout\"", "\"model_b\" \"timeout\""],
        "{errors:?}"
    );
}

#[test]
fn sigterm_leaves_exactly_one_exposure_per_response_on_disk() {
    sigterm_exposures(2);
}

/// `threads = 1` runs everything on a current-thread runtime (a different code path for
/// serving, the admin API and the shutdown drain).
#[test]
fn sigterm_leaves_exactly_one_exposure_per_response_with_one_thread() {
    sigterm_exposures(1);
}

fn sigterm_exposures(threads: usize) {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder()
        .name("b")
        .header("x-tokens-generated", "42")
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = two_backend(dir.path(), a.addr, b.addr)
        .server(&format!("threads = {threads}"))
        .toml();
    assert!(config.contains(&format!("threads = {threads}")));
    let g = start(dir.path(), &config);
    let cfg = abgate::config::load_file(&g.config).unwrap();
    let exp = &cfg.layers[0].experiments[0];
    let n = 300;
    let mut expected_treatment = 0;
    for i in 0..n {
        let u = format!("s{i}");
        if abgate::assign::variant_of(exp, &u) == 1 {
            expected_treatment += 1;
        }
        let (status, _, _) = get_as(&g, "/v1/chat", &u);
        assert_eq!(status, 200);
    }
    let events_dir = g.dir.join("events");
    assert!(g.stop().success());
    let evs = events(&events_dir);
    let exposures: Vec<_> = evs.iter().filter(|e| e["type"] == "exposure").collect();
    assert_eq!(exposures.len(), n);
    let mut ids: Vec<_> = exposures
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no duplicates");
    for e in &exposures {
        let u = e["unit_id"].as_str().unwrap();
        let want = exp.variants[abgate::assign::variant_of(exp, u)]
            .name
            .to_string();
        assert_eq!(e["assignments"][0]["variant"], want.as_str());
        assert_eq!(e["assignments"][0]["served"], want.as_str());
        assert_eq!(e["status"], 200);
        assert!(e["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(e["ts"].as_str().unwrap().ends_with('Z') && e["ts"].as_str().unwrap().len() == 27);
        assert_eq!(e["error"], serde_json::Value::Null);
        assert_eq!(
            e["upstream"],
            if want == "control" {
                "model_a"
            } else {
                "model_b"
            }
        );
        assert!(e["config_version"].as_str().unwrap().len() == 12);
    }
    // Response-header outcomes: exactly the responses of model_b carried the header.
    let header_outcomes = evs
        .iter()
        .filter(|e| e["type"] == "outcome" && e["source"] == "header")
        .count();
    assert_eq!(header_outcomes, expected_treatment);
}

#[test]
fn outcomes_are_all_or_nothing_per_body() {
    let (_a, _b, _dir, g) = two_backends("");
    let post = |body: &str, cookie: Option<&str>| {
        let mut r = agent().post(&g.url("/_abgate/outcome"));
        if let Some(c) = cookie {
            r = r.set("cookie", c);
        }
        match r.send_string(body) {
            Ok(r) => (r.status(), String::new()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        post(
            r#"{"metric":"conversion","value":1}"#,
            Some("abgate_uid=u1")
        )
        .0,
        204
    );
    assert_eq!(post(r#"[{"metric":"conversion","value":1,"unit_id":"u2"},{"metric":"tokens","value":12.5,"unit_id":"u3"}]"#, None).0, 204);
    let bad = [
        r#"{"metric":"nope","value":1,"unit_id":"u"}"#,
        r#"{"metric":"conversion","value":"1","unit_id":"u"}"#,
        r#"{"metric":"conversion","value":NaN,"unit_id":"u"}"#,
        r#"{"metric":"conversion","value":1e999,"unit_id":"u"}"#,
        r#"{"metric":"conversion","val"#,
        r#"[{"metric":"conversion","value":1,"unit_id":"ok"},{"metric":"nope","value":1,"unit_id":"u"}]"#,
        r#"{"metric":"conversion","value":1}"#, // no identity anywhere
    ];
    for body in bad {
        let (s, reason) = post(body, None);
        assert_eq!(s, 400, "{body}");
        assert!(reason.contains("error"), "{reason}");
    }
    let big = format!(
        "[{}]",
        vec![r#"{"metric":"conversion","value":1,"unit_id":"big"}"#; 1500].join(",")
    );
    assert!(big.len() > 70 * 1024);
    assert_eq!(post(&big, None).0, 413);
    let events_dir = g.dir.join("events");
    g.stop();
    let outcomes: Vec<_> = events(&events_dir)
        .into_iter()
        .filter(|e| e["type"] == "outcome")
        .collect();
    let units: Vec<&str> = outcomes
        .iter()
        .map(|e| e["unit_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        units,
        vec!["u1", "u2", "u3"],
        "only the valid bodies were logged"
    );
    assert_eq!(outcomes[2]["value"], 12.5);
    assert_eq!(outcomes[0]["source"], "api");
}

#[test]
fn bad_reload_keeps_the_old_config_serving() {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = two_backend(dir.path(), a.addr, b.addr);
    let g = start(dir.path(), &config.toml());
    let (s, before, _) = get_as(&g, "/v1/chat", "reload-user");
    assert_eq!(s, 200);
    // Break the file: the watcher rejects it, old config keeps serving.
    std::fs::write(
        &g.config,
        config.clone().weights("ranker_v2", &[50.0, -5.0]).toml(),
    )
    .unwrap();
    wait_for(10, "a rejected reload", || {
        (metric_sum(
            &g.metrics(),
            "abgate_config_reloads_total",
            &["result=\"error\""],
        ) >= 1.0)
            .then_some(())
    });
    let (s, after, _) = get_as(&g, "/v1/chat", "reload-user");
    assert_eq!(s, 200);
    assert_eq!(variant_of(&before), variant_of(&after));
    // Admin reload needs the token.
    let r = agent().post(&g.admin_url("/admin/reload")).call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))));
    let r = agent().get(&g.admin_url("/admin/reload")).call();
    assert!(matches!(r, Err(ureq::Error::Status(405, _))));
    // A valid change (100% treatment) applies.
    let all_b = config.weights("ranker_v2", &[0.0001, 50.0]).toml();
    std::fs::write(&g.config, &all_b).unwrap();
    let r = agent()
        .post(&g.admin_url("/admin/reload"))
        .set("authorization", &format!("Bearer {TOKEN}"))
        .call();
    let v: serde_json::Value = r.unwrap().into_json().unwrap();
    assert!(
        v["result"] == "applied" || v["result"] == "unchanged",
        "{v}"
    );
    wait_for(10, "the new config to serve", || {
        let (_, body, _) = get_as(&g, "/v1/chat", "someone-new");
        (body["backend"] == "b").then_some(())
    });
    // SIGHUP is accepted and keeps serving.
    signal(&g.child, "HUP");
    let (s, _, _) = get_as(&g, "/v1/chat", "reload-user");
    assert_eq!(s, 200);
}

#[test]
fn forcing_a_variant_needs_the_admin_token() {
    let (_a, _b, _dir, g) = two_backends("");
    let r = agent()
        .get(&g.url("/v1/chat"))
        .set("x-abgate-force", "ranker_v2=treatment")
        .call();
    assert!(matches!(r, Err(ureq::Error::Status(403, _))));
    for want in ["control", "treatment"] {
        let body: serde_json::Value = agent()
            .get(&g.url("/v1/chat"))
            .set("x-abgate-force", &format!("ranker_v2={want}"))
            .set("x-abgate-token", TOKEN)
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(body["assignments"], format!("model.ranker_v2={want}"));
        assert!(
            body["headers"].get("x-abgate-token").is_none(),
            "the token never reaches the backend"
        );
    }
}

#[test]
fn guardrail_rolls_back_a_failing_variant_and_the_decision_survives_restart() {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder()
        .name("b")
        .error_rate(0.25)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = two_backend(dir.path(), a.addr, b.addr).guardrails(
        "ranker_v2",
        r#"min_requests = 100, check_interval = "100ms", window = "1m", alpha = 0.01, error_rate = { max_increase = 0.02 }, action = "rollback""#,
    );
    let g = start(dir.path(), &config.toml());
    let cfg = abgate::config::load_file(&g.config).unwrap();
    let exp = &cfg.layers[0].experiments[0];
    let users: Vec<String> = (0..400).map(|i| format!("g{i}")).collect();
    let treated: Vec<&String> = users
        .iter()
        .filter(|u| abgate::assign::variant_of(exp, u) == 1)
        .collect();
    // Send traffic until the evaluator rolls the treatment back (bounded).
    let mut sent = 0;
    let rolled = wait_for(60, "a rollback", || {
        for u in &users {
            get_as(&g, "/v1/chat", u);
            sent += 1;
        }
        let v: serde_json::Value = agent()
            .get(&g.admin_url("/admin/experiments"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        (v["experiments"][0]["state"] == "rolled_back").then_some(v)
    });
    let decision = &rolled["experiments"][0]["variants"][1]["last_decision"];
    assert_eq!(decision["guardrail"], "error_rate", "{rolled}");
    assert!(decision["treatment"].as_f64().unwrap() > 0.15);
    assert!(sent < 20_000);
    // From now on every treatment unit reaches the control backend.
    let before_b = b.requests();
    for u in &treated {
        let (s, body, _) = get_as(&g, "/v1/chat", u);
        assert_eq!(s, 200);
        assert_eq!(body["backend"], "a");
    }
    assert_eq!(b.requests(), before_b);
    let m = wait_metric(
        &g,
        "abgate_rollbacks_total",
        &["variant=\"treatment\"", "guardrail=\"error_rate\""],
        1.0,
    );
    assert_eq!(
        metric_sum(
            &m,
            "abgate_rollbacks_total",
            &["variant=\"treatment\"", "guardrail=\"error_rate\""]
        ),
        1.0
    );
    // Survives a restart.
    let events_dir = g.dir.join("events");
    g.stop();
    let guard_events: Vec<_> = events(&events_dir)
        .into_iter()
        .filter(|e| e["type"] == "guardrail")
        .collect();
    assert_eq!(guard_events.len(), 1);
    assert_eq!(guard_events[0]["action"], "rollback");
    let g = start_file(dir.path(), &dir.path().join("abgate.toml"));
    let (_, body, _) = get_as(&g, "/v1/chat", treated[0]);
    assert_eq!(body["backend"], "a", "still rolled back after restart");
    // The served/assigned split is in the exposure.
    // Resume needs the token.
    let url = g.admin_url("/admin/experiments/ranker_v2/resume");
    assert!(matches!(
        agent().post(&url).call(),
        Err(ureq::Error::Status(401, _))
    ));
    assert!(matches!(
        agent()
            .post(&url)
            .set("authorization", "Bearer wrong")
            .call(),
        Err(ureq::Error::Status(401, _))
    ));
    b.set_error_rate(0.0);
    agent()
        .post(&url)
        .set("authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    let (_, body, _) = get_as(&g, "/v1/chat", treated[0]);
    assert_eq!(body["backend"], "b", "traffic returns after resume");
    let events_dir = g.dir.join("events");
    g.stop();
    let exposures: Vec<_> = events(&events_dir)
        .into_iter()
        .filter(|e| e["type"] == "exposure")
        .collect();
    assert!(exposures
        .iter()
        .any(|e| e["assignments"][0]["variant"] == "treatment"
            && e["assignments"][0]["served"] == "control"));
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
fn metrics_count_the_traffic_sent_per_variant_and_status_class() {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder()
        .name("b")
        .error_rate(1.0)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = start(dir.path(), &two_backend_config(&a, &b, ""));
    let cfg = abgate::config::load_file(&g.config).unwrap();
    let exp = &cfg.layers[0].experiments[0];
    let mut counts = [0.0, 0.0];
    for i in 0..200 {
        let u = format!("m{i}");
        counts[abgate::assign::variant_of(exp, &u)] += 1.0;
        get_as(&g, "/v1/chat", &u);
    }
    let m = wait_metric(
        &g,
        "abgate_exposures_total",
        &["experiment=\"ranker_v2\""],
        200.0,
    );
    assert_eq!(
        metric_sum(
            &m,
            "abgate_requests_total",
            &["variant=\"control\"", "status_class=\"2xx\""]
        ),
        counts[0]
    );
    assert_eq!(
        metric_sum(
            &m,
            "abgate_requests_total",
            &["variant=\"treatment\"", "status_class=\"5xx\""]
        ),
        counts[1]
    );
    assert_eq!(
        metric_sum(
            &m,
            "abgate_request_duration_seconds_count",
            &["variant=\"control\""]
        ),
        counts[0]
    );
    assert_eq!(
        metric_sum(&m, "abgate_exposures_total", &["experiment=\"ranker_v2\""]),
        200.0
    );
    assert_eq!(
        metric_sum(&m, "abgate_upstream_errors_total", &["kind=\"5xx\""]),
        counts[1]
    );
    assert!(m.contains("# TYPE abgate_requests_total counter"));
    assert!(!m.contains("m1\""), "no user id in any label");
}

#[test]
fn logging_and_request_metrics_can_be_switched_off() {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_backend(dir.path(), a.addr, b.addr)
        .events("enabled = false")
        .admin("request_metrics = false");
    let g = start(dir.path(), &cfg.toml());
    for i in 0..20 {
        let (s, _, _) = get_as(&g, "/v1/chat", &format!("off{i}"));
        assert_eq!(s, 200);
    }
    let r = agent()
        .post(&g.url("/_abgate/outcome"))
        .set("cookie", "abgate_uid=off1")
        .send_string(r#"{"metric":"conversion","value":1}"#);
    assert!(matches!(r, Err(ureq::Error::Status(503, _))));
    let m = g.metrics();
    assert_eq!(metric_sum(&m, "abgate_requests_total", &[]), 0.0);
    let events_dir = g.dir.join("events");
    g.stop();
    assert!(events(&events_dir).is_empty());
}

/// One upstream (a [`RawBackend`] that records request heads byte for byte) and one
/// experiment whose variants each add a header (written in mixed case in the config);
/// one thread, identity from the cookie only. `preserve` sets `preserve_header_case`
/// (`false` is the default: the key is left out).
fn raw_backend_config(dir: &std::path::Path, backend: &RawBackend, preserve: bool) -> TestConfig {
    let config = TestConfig::new(dir)
        .server("threads = 1")
        // abgate's defaults for these two, as this config has always had
        .unset("server", "shutdown_timeout")
        .unset("events", "flush_interval")
        .identity("cookie = \"abgate_uid\"")
        .upstream("model", &[&backend.addr])
        .layer(
            LayerSpec::new("model").experiment(
                ExperimentSpec::new("ranker_v2", 1.0)
                    .variant_with("control", 1.0, None, &[("X-Model-Version", "v1")])
                    .variant_with("treatment", 1.0, None, &[("X-Model-Version", "v2")]),
            ),
        );
    if preserve {
        config.server("preserve_header_case = true")
    } else {
        config
    }
}

/// abgate, preserving header case or not, in front of a [`RawBackend`].
fn start_with_raw_backend(preserve: bool) -> (RawBackend, tempfile::TempDir, Abgate) {
    let backend = RawBackend::start();
    let dir = tempfile::tempdir().unwrap();
    let config = raw_backend_config(dir.path(), &backend, preserve);
    let g = start(dir.path(), &config.toml());
    (backend, dir, g)
}

#[test]
fn the_backend_and_the_exposure_share_one_request_id() {
    // (client's x-request-id values, whether abgate adopts the client's)
    let long = "r".repeat(129);
    let cases: [(&[&str], bool); 5] = [
        (&["client-req-1"], true),
        (&["3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f"], true),
        (&[], false),
        (&["has a space"], false),
        (&["first", "second"], false),
    ];
    let cases_long: [(&[&str], bool); 1] = [(&[long.as_str()], false)];
    for preserve in [false, true] {
        let (backend, _dir, g) = start_with_raw_backend(preserve);
        let mut seen = Vec::new();
        for (i, (ids, adopted)) in cases.iter().chain(&cases_long).enumerate() {
            let mut req = format!(
                "GET /v1/chat HTTP/1.1\r\nHost: model.local\r\nCookie: abgate_uid=rid-{i}\r\n"
            );
            for id in ids.iter() {
                req.push_str(&format!("X-Request-Id: {id}\r\n"));
            }
            req.push_str("\r\n");
            let response = raw_request(&g.proxy, req.as_bytes());
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            let head = String::from_utf8(backend.next_head()).unwrap();
            let sent: Vec<&str> = head
                .split("\r\n")
                .filter_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
                        .map(|(_, v)| v.trim())
                })
                .collect();
            assert_eq!(sent.len(), 1, "exactly one id reaches the backend: {head}");
            if *adopted {
                assert_eq!(sent[0], ids[0], "{head}");
            } else {
                // minted: a ULID replaces whatever unusable id the client sent
                assert_eq!(sent[0].len(), 26, "{head}");
                assert!(sent[0].bytes().all(|b| b.is_ascii_alphanumeric()), "{head}");
            }
            seen.push((format!("rid-{i}"), sent[0].to_string()));
        }
        let events_dir = g.dir.join("events");
        assert!(g.stop().success());
        let evs = events(&events_dir);
        for (unit, id) in &seen {
            let e = evs
                .iter()
                .find(|e| e["type"] == "exposure" && e["unit_id"] == unit.as_str())
                .unwrap_or_else(|| panic!("no exposure of {unit}"));
            assert_eq!(e["request_id"], id.as_str(), "{unit}, preserve={preserve}");
        }
    }
}

// Forces treatment with the admin token the test processes get (`common::TOKEN`).
const MIXED_CASE_REQUEST: &[u8] = b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: model.local\r\nX-Client-Thing: kept\r\nCookie: abgate_uid=u-1\r\nX-Abgate-Force: ranker_v2=treatment\r\nX-Abgate-Token: test-token-123\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

#[test]
fn backend_requests_carry_abgate_headers_with_lowercase_names_unless_case_is_preserved() {
    for preserve in [false, true] {
        let (backend, _dir, g) = start_with_raw_backend(preserve);
        let response = raw_request(&g.proxy, MIXED_CASE_REQUEST);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("ok"), "{response}");
        let head = String::from_utf8(backend.next_head()).unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "POST /v1/chat?x=1 HTTP/1.1", "{head}");
        let has = |line: &str| lines.contains(&line);
        // abgate's own headers (the unit is forced into treatment); the force and token
        // headers are not passed on.
        assert!(
            has("x-abgate-assignments: model.ranker_v2=treatment"),
            "{head}"
        );
        assert!(has("x-model-version: v2"), "{head}");
        let id = lines
            .iter()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("no x-request-id in {head}"));
        assert_eq!(id.len(), 26, "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("x-abgate-force"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("x-abgate-token"),
            "{head}"
        );
        // The client's headers, in its case or lowercase.
        if preserve {
            assert!(has("X-Client-Thing: kept"), "{head}");
            assert!(has("Cookie: abgate_uid=u-1"), "{head}");
        } else {
            assert!(has("x-client-thing: kept"), "{head}");
            assert!(has("cookie: abgate_uid=u-1"), "{head}");
        }
        // pingora titles the standard names either way.
        assert!(has("Host: model.local"), "{head}");
        assert!(has("Content-Type: application/json"), "{head}");
        assert!(has("Content-Length: 2"), "{head}");
        assert!(g.stop().success());
    }
}

#[test]
fn responses_come_back_as_the_backend_sent_them_and_accept_encoding_is_the_backends() {
    // abgate runs no downstream modules (pingora's default adds its compression module,
    // disabled): the client's Accept-Encoding goes to the backend, which decides, and the
    // body comes back unchanged, without a Content-Encoding abgate made up.
    let (backend, _dir, g) = start_with_raw_backend(false);
    let response = raw_request(
        &g.proxy,
        b"GET /v1/models HTTP/1.1\r\nHost: model.local\r\nAccept-Encoding: gzip, br\r\nCookie: abgate_uid=u-2\r\n\r\n",
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(body, "ok", "{response}");
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
    let sent = String::from_utf8(backend.next_head()).unwrap();
    assert!(sent.contains("\r\naccept-encoding: gzip, br\r\n"), "{sent}");
    assert!(g.stop().success());
}

#[test]
fn request_targets_reach_the_backend_unchanged_whatever_the_header_case_setting() {
    // Targets that a plain `http::request::Parts` cannot carry (absolute-form) go through
    // pingora's case-preserving path, so they are forwarded exactly as with
    // `preserve_header_case = true`. (pingora answers 400 to a target that is not UTF-8.)
    let targets: [&[u8]; 3] = [
        b"/v1/chat?q=a%20b",
        b"http://model.local/v1/chat?q=1",
        b"/v1/caf\xc3\xa9",
    ];
    let mut seen = Vec::new();
    for preserve in [false, true] {
        let (backend, _dir, g) = start_with_raw_backend(preserve);
        let mut lines = Vec::new();
        for target in targets {
            let mut req = b"GET ".to_vec();
            req.extend_from_slice(target);
            req.extend_from_slice(
                b" HTTP/1.1\r\nHost: model.local\r\nCookie: abgate_uid=u-2\r\n\r\n",
            );
            let response = raw_request(&g.proxy, &req);
            let shown = String::from_utf8_lossy(target);
            assert!(response.starts_with("HTTP/1.1 200"), "{shown}: {response}");
            let head = backend.next_head();
            let first = head.split(|&b| b == b'\r').next().unwrap();
            let first = String::from_utf8_lossy(first).into_owned();
            // Whatever pingora makes of the target, the abgate headers are there.
            let text = String::from_utf8_lossy(&head).to_string();
            assert!(
                text.contains("\r\nx-abgate-assignments: model.ranker_v2="),
                "{text}"
            );
            assert!(text.contains("\r\nx-model-version: v"), "{text}");
            lines.push(first);
        }
        assert_eq!(lines[0], "GET /v1/chat?q=a%20b HTTP/1.1");
        seen.push(lines);
        assert!(g.stop().success());
    }
    assert_eq!(
        seen[0], seen[1],
        "request lines differ between the two header modes"
    );
    for (line, target) in seen[0].iter().zip(targets) {
        let mut want = b"GET ".to_vec();
        want.extend_from_slice(target);
        want.extend_from_slice(b" HTTP/1.1");
        assert_eq!(
            line,
            &String::from_utf8_lossy(&want),
            "the target is forwarded as received"
        );
    }
}

#[test]
fn a_client_that_goes_away_is_counted_but_not_logged_as_an_error() {
    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let (a, b, _dir, g) = two_backends("");
    for m in [&a, &b] {
        m.knobs.latency_us.store(300_000, Relaxed);
    }
    let n = 3;
    for i in 0..n {
        let mut s = std::net::TcpStream::connect(&g.proxy).unwrap();
        let req = format!(
            "GET /v1/chat HTTP/1.1\r\nHost: model.local\r\nCookie: abgate_uid=gone-{i}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        // Hang up once the backend has the request, before it answers.
        wait_for(10, "the backend to receive the request", || {
            (a.requests() + b.requests() > i).then_some(())
        });
        drop(s);
    }
    wait_metric(
        &g,
        "abgate_proxied_requests_total",
        &["status_class=\"none\""],
        n as f64,
    );
    // The backend is fine: nothing counts against it.
    let m = g.metrics();
    assert_eq!(
        metric_sum(&m, "abgate_upstream_errors_total", &[]),
        0.0,
        "{m}"
    );
    let logs = g.logs();
    assert!(!logs.contains("ERROR"), "{logs}");
    let events_dir = g.dir.join("events");
    assert!(g.stop().success());
    let evs = events(&events_dir);
    for i in 0..n {
        let e = evs
            .iter()
            .find(|e| e["type"] == "exposure" && e["unit_id"] == format!("gone-{i}").as_str())
            .unwrap_or_else(|| panic!("no exposure of gone-{i}"));
        assert_eq!(e["status"], 0, "{e}");
        assert_eq!(e["error"], serde_json::Value::Null, "{e}");
    }
}
