//! Shadow traffic end to end: abgate as a child process in front of mock backends, a
//! candidate upstream receiving copies. What the copies find (mismatch rate, pointers),
//! what they cost the served requests (nothing: latency printed, responses, exposures
//! and windows compared), and their bounds (slots, body size).

mod common;

use abgate::mock::MockServer;
use common::{agent, events, start, wait_for, Abgate, TestConfig, DIR_PLACEHOLDER};
use std::fmt::Display;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

/// Experiment `ranker` (unit: user from `x-user-id`, traffic 1) with variants `control`
/// and `treatment` both served by `model_a`; with `shadow` lines, each variant copies to
/// `model_c` with them (the same shadow on both, so every request is eligible).
fn config(primary: impl Display, candidate: impl Display, shadow: Option<&str>) -> String {
    let table = |shadow: Option<&str>| match shadow {
        Some(lines) => {
            format!("[layer.experiment.variant.shadow]\nupstream = \"model_c\"\n{lines}\n")
        }
        None => String::new(),
    };
    let layer = format!(
        "[[layer]]\nname = \"model\"\n[[layer.experiment]]\nname = \"ranker\"\ntraffic = 1.0\n\
         [[layer.experiment.variant]]\nname = \"control\"\nweight = 1\nupstream = \"model_a\"\n{}\
         [[layer.experiment.variant]]\nname = \"treatment\"\nweight = 1\nupstream = \"model_a\"\n{}",
        table(shadow),
        table(shadow),
    );
    TestConfig::new(DIR_PLACEHOLDER)
        .identity("header = \"x-user-id\"")
        .upstream("model_a", &[primary])
        .upstream_with("model_c", &[candidate], &["read_timeout = \"120s\""])
        .raw(&layer)
        .toml()
}

/// POST `body` as user `u{i}` with request id `req-{i}`: (status, body, latency).
fn post(g: &Abgate, i: usize, body: &[u8]) -> (u16, String, Duration) {
    let t = Instant::now();
    let r = agent()
        .post(&g.url("/v1/predict"))
        .set("x-user-id", &format!("u{i}"))
        .set("x-request-id", &format!("req-{i}"))
        .set("content-type", "application/json")
        .send_bytes(body);
    let elapsed = t.elapsed();
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request {i} failed: {e}"),
    };
    (resp.status(), resp.into_string().unwrap(), elapsed)
}

fn admin_json(g: &Abgate, path: &str) -> serde_json::Value {
    agent()
        .get(&g.admin_url(path))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

fn shadow_records(g: &Abgate) -> Vec<serde_json::Value> {
    events(&g.dir.join("events"))
        .into_iter()
        .filter(|e| e["type"] == "shadow")
        .collect()
}

fn exposures(g: &Abgate) -> Vec<serde_json::Value> {
    events(&g.dir.join("events"))
        .into_iter()
        .filter(|e| e["type"] == "exposure")
        .collect()
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// 50 requests to warm connections up before a measurement.
fn warm_up(g: &Abgate) {
    for i in 0..50 {
        post(g, 100_000 + i, b"{}");
    }
}

/// `n` sequential requests; the served latencies (ms) p50, p99, and all statuses 200.
fn load(g: &Abgate, n: usize) -> (f64, f64) {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let (status, _, t) = post(g, i, br#"{"text":"hello"}"#);
        assert_eq!(status, 200, "request {i}");
        lat.push(t);
    }
    lat.sort();
    (quantile(&lat, 0.5), quantile(&lat, 0.99))
}

#[test]
fn a_candidate_changing_label_in_5_percent_mismatches_at_5_percent_naming_label() {
    let primary = MockServer::builder().name("a").labels(0.0).start().unwrap();
    let candidate = MockServer::builder()
        .name("c")
        .labels(0.05)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shadow = "share = 1.0\nmax_in_flight = 1000\ncompare = { json_ignore = [\"/id\"] }";
    let g = start(
        dir.path(),
        &config(primary.addr, candidate.addr, Some(shadow)),
    );
    let n = 2000;
    load(&g, n);
    let records = wait_for(30, "a shadow record per request", || {
        let r = shadow_records(&g);
        (r.len() == n).then_some(r)
    });
    let mismatches: Vec<_> = records
        .iter()
        .filter(|r| r["result"] == "mismatch")
        .collect();
    let matches = records.iter().filter(|r| r["result"] == "match").count();
    // The candidate flips the label of the ids whose xxh3 (seed 0x5eed) is under 5% of
    // 2^64: 93 of req-0 … req-1999 (python3: xxhash.xxh3_64_intdigest(id, seed=0x5eed)).
    assert_eq!((mismatches.len(), matches), (93, n - 93));
    for m in &mismatches {
        assert_eq!(m["pointers"], serde_json::json!(["/label"]), "{m}");
        assert_eq!(m["compared"], "json");
        assert_eq!(
            (m["primary_status"].as_u64(), m["shadow_status"].as_u64()),
            (Some(200), Some(200))
        );
    }
    assert_eq!(candidate.requests(), n as u64);
    // The live view says the same.
    let live = admin_json(&g, "/admin/experiments/ranker/shadow");
    let (mut compared, mut mism) = (0, 0);
    for v in live["variants"].as_array().unwrap() {
        compared += v["report"]["compared"].as_u64().unwrap();
        mism += v["report"]["mismatches"].as_u64().unwrap();
        if v["report"]["mismatches"].as_u64().unwrap() > 0 {
            assert_eq!(v["report"]["top_pointers"][0]["pointer"], "/label");
        }
    }
    assert_eq!((compared, mism), (n as u64, 93));
    // And `abgate analyze`.
    let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["analyze", "--format", "json", "--config"])
        .arg(&g.config)
        .arg("--events")
        .arg(g.dir.join("events"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sections = report["experiments"][0]["shadow"].as_array().unwrap();
    assert_eq!(sections.len(), 2);
    let total: u64 = sections
        .iter()
        .map(|s| s["mismatches"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 93);
    for s in sections {
        let [lo, hi] = [
            s["mismatch_ci"][0].as_f64().unwrap(),
            s["mismatch_ci"][1].as_f64().unwrap(),
        ];
        let rate = s["mismatch_rate"].as_f64().unwrap();
        assert!(lo <= rate && rate <= hi && lo < 0.05 && 0.05 < hi, "{s}");
        assert_eq!(s["top_pointers"][0]["pointer"], "/label");
        assert_eq!(s["statuses"][0]["primary"], 200);
        assert!(s["latency_ms"]["ratio_p99"].as_f64().is_some(), "{s}");
    }
    let m = g.metrics();
    let sum = |result: &str| {
        common::metric_sum(
            &m,
            "abgate_shadow_requests_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(
        (sum("match"), sum("mismatch"), sum("error"), sum("skipped")),
        ((n - 93) as f64, 93.0, 0.0, 0.0)
    );
    let table = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["analyze", "--config"])
        .arg(&g.config)
        .arg("--events")
        .arg(g.dir.join("events"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("differs at /label"), "{text}");
    eprintln!("{text}");
}

/// A shadow that never answers: one that sleeps 30 s (a mock), and one that accepts
/// connections and never reads them (a bare listener).
#[test]
fn a_shadow_that_sleeps_or_never_answers_costs_the_served_requests_nothing() {
    let primary = MockServer::builder().name("a").start().unwrap();
    let sleeper = MockServer::builder()
        .name("c")
        .latency(Duration::from_secs(30))
        .start()
        .unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let n = 400;
    let dir = tempfile::tempdir().unwrap();
    let off = start(dir.path(), &config(primary.addr, sleeper.addr, None));
    warm_up(&off);
    let (off_p50, off_p99) = load(&off, n);
    drop(off);
    for (name, addr) in [
        ("sleeps 30 s", sleeper.addr),
        ("never answers", silent.local_addr().unwrap()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let shadow = "share = 1.0\nmax_in_flight = 4\ntimeout = \"60s\"";
        let g = start(dir.path(), &config(primary.addr, addr, Some(shadow)));
        warm_up(&g);
        let (p50, p99) = load(&g, n);
        eprintln!(
            "shadow that {name}: served latency p50 {p50:.3} ms, p99 {p99:.3} ms; without shadowing p50 {off_p50:.3} ms, p99 {off_p99:.3} ms ({n} sequential requests)"
        );
        // Four copies hold the four slots (per variant) for the rest of the test; every
        // later copy is skipped at once without waiting.
        let live = wait_for(10, "every copy accounted for", || {
            let v = admin_json(&g, "/admin/experiments/ranker/shadow");
            let skipped: u64 = v["variants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["report"]["skipped"].as_u64().unwrap())
                .sum();
            let in_flight: u64 = v["variants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["in_flight"].as_u64().unwrap())
                .sum();
            (skipped + in_flight == n as u64 + 50).then_some(v)
        });
        for v in live["variants"].as_array().unwrap() {
            assert_eq!(v["peak_in_flight"], 4, "{v}");
            assert_eq!(v["in_flight"], 4, "{v}");
            assert_eq!(
                v["report"]["reasons"]["busy"], v["report"]["skipped"],
                "{v}"
            );
        }
        let m = g.metrics();
        assert_eq!(common::metric_sum(&m, "abgate_shadow_in_flight", &[]), 8.0);
        assert_eq!(
            common::metric_sum(&m, "abgate_shadow_requests_total", &["result=\"skipped\""]),
            (n + 50 - 8) as f64
        );
        assert_eq!(
            common::metric_sum(&m, "abgate_requests_total", &["status_class=\"2xx\""]),
            (n + 50) as f64
        );
        // Copies still in flight do not hold the shutdown back.
        let t = Instant::now();
        assert!(g.stop().success());
        eprintln!(
            "stopped in {:.0} ms with 8 copies in flight",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
}

#[test]
fn a_body_over_max_body_bytes_is_served_and_its_copy_skipped_as_too_large() {
    let primary = MockServer::builder().name("a").start().unwrap();
    let candidate = MockServer::builder().name("c").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shadow = "share = 1.0\nmax_body_bytes = \"1MiB\"";
    let g = start(
        dir.path(),
        &config(primary.addr, candidate.addr, Some(shadow)),
    );
    let big = vec![b'x'; 2 << 20];
    let (status, body, _) = post(&g, 1, &big);
    assert_eq!(status, 200);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echo["body_bytes"],
        2 << 20,
        "the served request got the whole body"
    );
    let (status, _, _) = post(&g, 2, br#"{"small":true}"#);
    assert_eq!(status, 200);
    let records = wait_for(10, "two shadow records", || {
        let r = shadow_records(&g);
        (r.len() == 2).then_some(r)
    });
    let big_rec = records.iter().find(|r| r["request_id"] == "req-1").unwrap();
    assert_eq!(
        (&big_rec["result"], &big_rec["reason"]),
        (&"skipped".into(), &"too_large".into())
    );
    let small = records.iter().find(|r| r["request_id"] == "req-2").unwrap();
    // The echo names its backend: the copy's answer differs at /backend and in the
    // headers (the copy carries x-abgate-shadow).
    assert_eq!(small["result"], "mismatch", "{small}");
    assert!(
        small["pointers"]
            .as_array()
            .unwrap()
            .contains(&"/headers/x-abgate-shadow".into()),
        "{small}"
    );
    assert_eq!(candidate.requests(), 1, "only the small request was copied");
    let m = g.metrics();
    assert_eq!(
        common::metric_sum(&m, "abgate_shadow_requests_total", &["result=\"skipped\""]),
        1.0
    );
}

/// What a response and an exposure look like apart from ids and times.
fn strip(mut e: serde_json::Value) -> serde_json::Value {
    for k in ["ts", "latency_ms", "ttfb_ms", "config_version"] {
        e.as_object_mut().unwrap().remove(k);
    }
    e
}

#[test]
fn responses_exposures_and_windows_are_the_same_with_shadowing_on_and_off() {
    let primary = MockServer::builder().name("a").start().unwrap();
    let candidate = MockServer::builder().name("c").labels(0.5).start().unwrap();
    let n = 300;
    let mut runs = Vec::new();
    for shadow in [
        None,
        Some("share = 0.5\ncompare = { json_ignore = [\"/id\"] }"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let g = start(dir.path(), &config(primary.addr, candidate.addr, shadow));
        let responses: Vec<(u16, String)> = (0..n)
            .map(|i| {
                let (s, b, _) = post(&g, i, format!("{{\"i\":{i}}}").as_bytes());
                (s, b)
            })
            .collect();
        let mut exp = wait_for(10, "an exposure per request", || {
            let e = exposures(&g);
            (e.len() == n).then_some(e)
        });
        exp.sort_by_key(|e| e["request_id"].as_str().unwrap().to_string());
        let windows: Vec<(u64, u64)> = admin_json(&g, "/admin/experiments")["experiments"][0]
            ["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["window"]["requests"].as_u64().unwrap(),
                    v["window"]["errors"].as_u64().unwrap(),
                )
            })
            .collect();
        // Every request counted once, with or without a copy.
        let m = common::wait_metric(&g, "abgate_proxied_requests_total", &[], n as f64);
        assert_eq!(
            common::metric_sum(&m, "abgate_requests_total", &[]),
            n as f64
        );
        if shadow.is_some() {
            let copies = wait_for(10, "the copies", || {
                let r = shadow_records(&g);
                (r.len() > n / 4).then_some(r.len())
            });
            eprintln!("{copies} of {n} requests copied (share 0.5)");
        }
        runs.push((
            responses,
            exp.into_iter().map(strip).collect::<Vec<_>>(),
            windows,
            dir,
            g,
        ));
    }
    let (on, off) = (&runs[1], &runs[0]);
    assert_eq!(on.0, off.0, "client responses");
    assert_eq!(
        on.1, off.1,
        "exposures apart from times and the config version"
    );
    assert_eq!(
        on.2, off.2,
        "guardrail windows (requests, errors) per variant"
    );
}

#[test]
fn forced_paused_and_unlisted_method_requests_are_not_copied() {
    let primary = MockServer::builder().name("a").labels(0.0).start().unwrap();
    let candidate = MockServer::builder().name("c").labels(0.0).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shadow = "share = 1.0\ncompare = { json_ignore = [\"/id\"] }";
    let g = start(
        dir.path(),
        &config(primary.addr, candidate.addr, Some(shadow)),
    );
    // QA forces: never copied.
    for i in 0..20 {
        let r = agent()
            .post(&g.url("/v1/predict"))
            .set("x-user-id", &format!("u{i}"))
            .set("x-abgate-force", "ranker=treatment")
            .set("x-abgate-token", common::TOKEN)
            .send_bytes(b"{}")
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A GET is not in `methods` (["POST"] by default).
    let r = agent()
        .get(&g.url("/v1/predict"))
        .set("x-user-id", "u1")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Paused: control serves everyone; only control's own units are copied.
    let r = agent()
        .post(&g.admin_url("/admin/experiments/ranker/pause"))
        .set("authorization", &format!("Bearer {}", common::TOKEN))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let n = 200;
    for i in 0..n {
        assert_eq!(post(&g, i, b"{}").0, 200);
    }
    let exp = wait_for(10, "every exposure", || {
        let e = exposures(&g);
        (e.len() == n + 21).then_some(e)
    });
    let control_units = exp
        .iter()
        .filter(|e| {
            e["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("req-"))
        })
        .filter(|e| e["assignments"][0]["variant"] == "control")
        .count();
    assert!(control_units > 50 && control_units < 150, "{control_units}");
    let records = wait_for(10, "a copy per control request", || {
        let r = shadow_records(&g);
        (r.len() == control_units).then_some(r)
    });
    assert!(records
        .iter()
        .all(|r| r["variant"] == "control" && r["result"] == "match"));
    // A copy holds its slot from the request's start, long before its exposure is
    // written: with every exposure on disk, a copy of a treatment unit would show as in
    // flight or counted. None is.
    let live = admin_json(&g, "/admin/experiments/ranker/shadow");
    for v in live["variants"].as_array().unwrap() {
        assert_eq!(v["in_flight"], 0, "{v}");
        let copies = v["report"]["copies"].as_u64().unwrap();
        let want = if v["variant"] == "control" {
            control_units as u64
        } else {
            0
        };
        assert_eq!(copies, want, "{v}");
    }
    assert_eq!(candidate.requests(), control_units as u64);
}

/// A shadow upstream speaks whatever its `[upstream]` says, as a served one does: copies
/// to a candidate over TLS with HTTP/2 by ALPN (its certificate verified against the
/// test CA) and to one over h2c all arrive over HTTP/2 and are compared, with no error.
#[test]
fn copies_reach_candidates_over_tls_h2_and_h2c() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = abgate::mock::pki::TestPki::generate(pki_dir.path()).unwrap();
    let ca = format!("ca = \"{}\"", pki.ca.display());
    let primary = MockServer::builder().name("a").labels(0.0).start().unwrap();
    let over_tls = MockServer::builder()
        .name("c")
        .labels(0.0)
        .tls(pki.tls_files())
        .start()
        .unwrap();
    let over_h2c = MockServer::builder().name("c").labels(0.0).start().unwrap();
    let shadow = "share = 1.0\nmax_in_flight = 100\ncompare = { json_ignore = [\"/id\"] }";
    let cases: [(&MockServer, Vec<&str>); 2] = [
        (
            &over_tls,
            vec![
                "tls = true",
                "protocol = \"h2\"",
                "sni = \"localhost\"",
                &ca,
            ],
        ),
        (&over_h2c, vec!["protocol = \"h2c\""]),
    ];
    for (candidate, lines) in cases {
        let dir = tempfile::tempdir().unwrap();
        let layer = "[[layer]]\nname = \"model\"\n[[layer.experiment]]\nname = \"ranker\"\n\
             traffic = 1.0\n[[layer.experiment.variant]]\nname = \"control\"\nweight = 1\n\
             upstream = \"model_a\"\n[layer.experiment.variant.shadow]\nupstream = \"model_c\"\n"
            .to_string()
            + shadow
            + "\n[[layer.experiment.variant]]\nname = \"treatment\"\nweight = 1\n\
             upstream = \"model_a\"\n[layer.experiment.variant.shadow]\nupstream = \"model_c\"\n"
            + shadow
            + "\n";
        let text = TestConfig::new(DIR_PLACEHOLDER)
            .identity("header = \"x-user-id\"")
            .upstream("model_a", &[primary.addr])
            .upstream_with("model_c", &[candidate.addr], &lines)
            .raw(&layer)
            .toml();
        let g = start(dir.path(), &text);
        let n = 40;
        for i in 0..n {
            let (status, _, _) = post(&g, i, b"{\"text\":\"hello\"}");
            assert_eq!(status, 200);
        }
        let records = wait_for(10, "a shadow record per request", || {
            let r = shadow_records(&g);
            (r.len() == n).then_some(r)
        });
        for r in &records {
            assert_eq!(r["result"], "match", "{lines:?}: {r}");
            assert_eq!(r["shadow_status"], 200, "{r}");
        }
        let http2 = candidate
            .stats
            .http2
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(candidate.requests(), n as u64, "{lines:?}");
        assert_eq!(http2, n as u64, "{lines:?}: copies over HTTP/2");
        g.stop();
    }
}
