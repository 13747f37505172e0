//! `abgate analyze` on a bandit's own event log, through real processes: three arms on
//! their own mock backends (conversion 5%, 5%, 60%), five rounds of users routed by
//! abgate — new users every round and users of the first round coming back —, outcomes
//! posted through the outcome API, the weights moving every period. Then
//! `abgate analyze --format json` on the log: the bandit section is there, the best arm
//! has the highest P(best), the SRM by period does not flag, the weight history is the
//! admin API's, and the units per period add up to the distinct units; the HTML report
//! draws the weights chart.

mod common;

use common::bandit::{backends, view as bandit, ARMS, RATES};
use common::{agent, start};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// New users per round, and users of the first round coming back in each later round.
const NEW: usize = 150;
const RETURNING: usize = 60;
const ROUNDS: usize = 5;

fn period(g: &common::Abgate) -> u64 {
    bandit(g)["period"].as_u64().unwrap()
}

/// One request per user in `users`; a conversion posted for it at its arm's rate.
fn round(g: &common::Abgate, rng: &mut StdRng, users: &[String]) {
    let a = agent();
    for uid in users {
        let r = a.get(&g.url("/v1/x")).set("x-user-id", uid).call().unwrap();
        let variant = r.header("x-abgate-variant").unwrap().to_string();
        let arm = ARMS
            .iter()
            .position(|x| variant.ends_with(&format!("={x}")))
            .unwrap_or_else(|| panic!("variant header {variant}"));
        if rng.random::<f64>() < RATES[arm] {
            let s = a
                .post(&g.url("/_abgate/outcome"))
                .send_json(serde_json::json!({"metric": "conversion", "value": 1, "unit_id": uid}))
                .unwrap()
                .status();
            assert_eq!(s, 204);
        }
    }
}

fn analyze(dir: &Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["analyze", "--format", format, "--config"])
        .arg(dir.join("abgate.toml"))
        .arg("--events")
        .arg(dir.join("events"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn close(x: &serde_json::Value, y: &serde_json::Value) -> bool {
    match (x.as_array(), y.as_array()) {
        (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y)),
        _ => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-12,
    }
}

#[test]
fn analyze_reports_the_bandit_with_its_weight_history_and_an_srm_by_period_that_holds() {
    let backends = backends();
    let dir = tempfile::tempdir().unwrap();
    let g = start(
        dir.path(),
        &common::bandit::config(&backends, 30, "1s").toml(),
    );
    let mut rng = StdRng::seed_from_u64(1919);
    let mut p = period(&g);
    for r in 0..ROUNDS {
        let mut users: Vec<String> = (0..NEW).map(|i| format!("r{r}-u{i}")).collect();
        if r > 0 {
            users.extend((0..RETURNING).map(|i| format!("r0-u{i}")));
        }
        round(&g, &mut rng, &users);
        p = common::wait_for(10, "the next bandit period", || {
            let now = period(&g);
            (now > p).then_some(now)
        });
    }
    let view = bandit(&g);
    g.stop();

    let report: serde_json::Value = serde_json::from_str(&analyze(dir.path(), "json")).unwrap();
    let e = &report["experiments"][0];
    let b = &e["bandit"];
    assert!(b.is_object(), "a bandit section: {e:#}");
    assert_eq!(e["comparisons"].as_array().unwrap().len(), 0);
    // The best arm has the highest P(best).
    let pb: Vec<f64> = (0..3)
        .map(|a| b["arms"][a]["prob_best"].as_f64().unwrap())
        .collect();
    assert!(pb[2] > pb[0] && pb[2] > pb[1], "{pb:?}");
    // The SRM by period does not flag the proxy's own log.
    let srm = b["srm"]["p_value"].as_f64().expect("SRM computed");
    assert!(srm > 0.01, "SRM by period p = {srm}: {b:#}");
    assert_ne!(e["verdict"], "invalid");
    // Against the static (equal) weights the same units flag: what the fixed-experiment
    // check said of every bandit whose weights moved.
    let units: Vec<u64> = (0..3)
        .map(|a| b["arms"][a]["units"].as_u64().unwrap())
        .collect();
    let static_p = abgate::stats::srm_p_value(&units, &[1.0; 3]);
    assert!(static_p < 0.001, "{units:?}: p = {static_p}");
    // The weight history is the admin API's, period by period. (The period opened last,
    // with no request, may have its record dropped by the shutdown: the proxy writes it
    // again at its next start.)
    let periods = b["periods"].as_array().unwrap();
    let history = view["history"].as_array().unwrap();
    assert_eq!(b["srm"]["units_without_weights"], 0, "{b:#}");
    for h in history {
        let n = h["period"].as_u64().unwrap();
        let Some(a) = periods
            .iter()
            .find(|x| x["period"] == n && x["weights"].is_array())
        else {
            assert_eq!(Some(h), history.last(), "period {n} has a record: {b:#}");
            continue;
        };
        assert_eq!(a["start_unix_ms"], h["start_unix_ms"], "period {n}");
        assert_eq!(a["explore"], h["explore"], "period {n}");
        for key in ["weights", "target_weights", "prob_best"] {
            assert!(close(&a[key], &h[key]), "period {n} {key}: {a} vs {h}");
        }
    }
    // Units per period add up to the distinct units of the log (each counted once).
    let distinct: HashSet<String> = common::events(&dir.path().join("events"))
        .into_iter()
        .filter(|e| e["type"] == "exposure")
        .map(|e| e["unit_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(distinct.len(), NEW * ROUNDS);
    let per_period: u64 = periods
        .iter()
        .flat_map(|p| p["units"].as_array().unwrap().iter())
        .map(|u| u.as_u64().unwrap())
        .sum();
    assert_eq!(per_period, distinct.len() as u64);
    assert_eq!(b["units"], distinct.len() as u64);
    let html = analyze(dir.path(), "html");
    if let Ok(keep) = std::env::var("ABGATE_KEEP_LOGS") {
        // ABGATE_KEEP_LOGS=DIR: the reports, to read them
        std::fs::write(Path::new(&keep).join("bandit.html"), &html).unwrap();
        std::fs::write(Path::new(&keep).join("bandit.json"), report.to_string()).unwrap();
        std::fs::write(
            Path::new(&keep).join("bandit.txt"),
            analyze(dir.path(), "table"),
        )
        .unwrap();
    }
    assert!(
        html.contains("class=\"bandit-weights\"") && html.contains("<path fill=\"none\" stroke="),
        "the HTML report draws the weights"
    );
    // The scale-out path has no bandit section and says so.
    let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["analyze", "--emit-sql", "duckdb", "--config"])
        .arg(dir.path().join("abgate.toml"))
        .arg("--events")
        .arg(dir.path().join("events"))
        .output()
        .unwrap();
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(
        sql.contains("-- note: `pick` is a bandit experiment"),
        "{sql}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `abgate analyze --events`"));
    eprintln!(
        "{} periods; P(best) {pb:?}; SRM by period p = {srm:.4} (df {}), against static weights p = {static_p:.1e} (units {units:?}); {} moved units; shares served {}",
        periods.len(),
        b["srm"]["df"],
        b["moved_units"],
        periods
            .iter()
            .map(|p| p["weights"].to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    );
}
