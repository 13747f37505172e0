//! What SREs rely on: the metrics exposition, the shipped dashboard and alert rules
//! (they must reference only metrics that exist), bounded label cardinality, and the
//! health endpoints.

mod common;
use common::*;
use std::collections::BTreeSet;

fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("abgate_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let mut name = text[start..end].to_string();
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if base.ends_with("_seconds") {
                    name = base.to_string();
                }
            }
        }
        out.insert(name);
        i = end;
    }
    out
}

fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// The two-backend setup, with guardrails on `ranker_v2`, and a bandit experiment
/// `pick` in a layer of its own (so the bandit metrics are exported).
fn running() -> (MockServer, MockServer, tempfile::TempDir, Abgate) {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = two_backend(dir.path(), a.addr, b.addr)
        .guardrails(
            "ranker_v2",
            r#"min_requests = 300, check_interval = "1s", window = "5m", error_rate = { max_increase = 0.02 }, latency_p99 = { max_ratio = 1.5, min_increase_ms = 20 }"#,
        )
        .layer(
            LayerSpec::new("bandits").experiment(
                ExperimentSpec::new("pick", 1.0)
                    .variant("x", 1.0)
                    .variant("y", 1.0),
            ),
        )
        .raw("[layer.experiment.bandit]\nreward = \"conversion\"\n")
        // A ramped experiment in a layer of its own, so the ramp metrics are exported;
        // a shadow on its treatment, so the shadow series are exported too.
        .raw(
            "[[layer]]\nname = \"prompt\"\n[[layer.experiment]]\nname = \"prompt_v2\"\n\
             [[layer.experiment.variant]]\nname = \"control\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"terse\"\nweight = 1\n\
             [layer.experiment.variant.shadow]\nupstream = \"model_a\"\nshare = 0.01\n\
             [layer.experiment.guardrails]\nerror_rate = { max_increase = 0.02 }\n\
             [layer.experiment.ramp]\nsteps = [0.1, 0.5]\n",
        );
    let g = start(dir.path(), &config.toml());
    (a, b, dir, g)
}

#[test]
fn dashboard_and_alerts_reference_only_exported_metrics() {
    let (_a, _b, _d, g) = running();
    get_as(&g, "/v1/chat", "u1");
    let m = g.metrics();
    let have = exported(&m);
    for spec in [
        "abgate_requests_total",
        "abgate_request_duration_seconds",
        "abgate_upstream_errors_total",
        "abgate_exposures_total",
        "abgate_outcomes_total",
        "abgate_events_dropped_total",
        "abgate_guardrail_violation",
        "abgate_rollbacks_total",
        "abgate_config_reloads_total",
        "abgate_identity_invalid_total",
    ] {
        assert!(
            have.contains(spec),
            "documented metric {spec} (docs/operations.md) is not exported"
        );
    }
    let dash_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana/abgate-dashboard.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash_text).expect("dashboard is JSON");
    assert!(dash["panels"].as_array().unwrap().len() >= 8);
    let alerts_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/prometheus/alerts.yml"
    ))
    .unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&alerts_text).expect("alerts are YAML");
    let rules = &docs[0]["groups"][0]["rules"];
    let names: Vec<&str> = rules
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for want in [
        "AbgateRollback",
        "AbgateEventsDropped",
        "AbgateConfigReloadFailing",
        "AbgateSampleRatioMismatch",
    ] {
        assert!(names.contains(&want), "{want} missing");
    }
    for (what, text) in [("dashboard", &dash_text), ("alerts", &alerts_text)] {
        for name in metric_names_in(text) {
            assert!(
                have.contains(&name),
                "{what} references {name}, which abgate does not export"
            );
        }
    }
    // Prometheus text format 0.0.4
    let ct = agent()
        .get(&g.admin_url("/metrics"))
        .call()
        .unwrap()
        .header("content-type")
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/plain") && ct.contains("0.0.4"), "{ct}");
    assert!(m.contains("# HELP abgate_requests_total"));
    assert!(m.contains("abgate_build_info{config_version="));
    assert!(m.contains("process_resident_memory_bytes"));
}

#[test]
fn label_cardinality_stays_bounded_with_100k_distinct_users() {
    let (_a, _b, _d, g) = running();
    let series_before = g.metrics().lines().filter(|l| !l.starts_with('#')).count();
    std::thread::scope(|s| {
        for t in 0..4 {
            let g = &g;
            s.spawn(move || {
                let agent = agent();
                for i in 0..25_000 {
                    let r = agent
                        .get(&g.url("/v1/chat"))
                        .set("cookie", &format!("abgate_uid=card-{t}-{i}"))
                        .call();
                    assert!(r.is_ok());
                }
            });
        }
    });
    let m = wait_metric(&g, "abgate_proxied_requests_total", &[], 100_000.0);
    let series_after = m.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        series_after <= series_before + 40,
        "{series_before} → {series_after} series"
    );
    assert!(!m.contains("card-"), "a user id leaked into a label");
    assert_eq!(
        metric_sum(&m, "abgate_proxied_requests_total", &[]) as u64,
        100_000
    );
    // live distinct-unit estimate (HyperLogLog) is within 5%
    let v: serde_json::Value = agent()
        .get(&g.admin_url("/admin/experiments"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let units: f64 = v["experiments"][0]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["units"].as_f64().unwrap())
        .sum();
    assert!((units - 100_000.0).abs() < 5_000.0, "{units}");
}

#[test]
fn health_readiness_methods_and_report() {
    let (_a, _b, _d, g) = running();
    assert_eq!(
        agent()
            .get(&g.admin_url("/healthz"))
            .call()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        agent()
            .get(&g.admin_url("/readyz"))
            .call()
            .unwrap()
            .status(),
        200
    );
    assert!(matches!(
        agent().post(&g.admin_url("/metrics")).call(),
        Err(ureq::Error::Status(405, _))
    ));
    assert!(matches!(
        agent()
            .get(&g.admin_url("/admin/experiments/ranker_v2/pause"))
            .call(),
        Err(ureq::Error::Status(405, _))
    ));
    assert!(matches!(
        agent().get(&g.admin_url("/nope")).call(),
        Err(ureq::Error::Status(404, _))
    ));
    for i in 0..300 {
        get_as(&g, "/v1/chat", &format!("r{i}"));
    }
    let r: serde_json::Value = agent()
        .get(&g.admin_url("/admin/experiments/ranker_v2/report"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let metrics: Vec<&str> = r["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metric"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, vec!["latency_ms", "error_rate"], "{r}");
    assert!(r["srm_p_value"].as_f64().unwrap() > 0.0);
    // pause with the token serves control to everyone, resume restores
    let pause = agent()
        .post(&g.admin_url("/admin/experiments/ranker_v2/pause"))
        .set("authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(pause.status(), 200);
    for i in 0..50 {
        let (_, body, _) = get_as(&g, "/v1/chat", &format!("r{i}"));
        assert_eq!(body["backend"], "a");
    }
    let v: serde_json::Value = agent()
        .get(&g.admin_url("/admin/experiments"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(v["experiments"][0]["state"], "paused");
}
