//! The scale-out analysis end to end: `abgate analyze --emit-sql duckdb` on synthetic logs,
//! the query run by DuckDB (the `duckdb` Python package, which `.ci/run` installs), its
//! result saved as CSV and read back with `--summary`: the report equals the direct
//! analysis of the same logs, every number within 1e-9 relative.

mod common;

use common::synthetic::{config, synthetic, Rng};
use common::{ExperimentSpec, TestConfig};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

fn abgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run the query in `sql` with DuckDB and save its result as CSV with a header in `csv`.
fn duckdb(sql: &Path, csv: &Path) {
    const SCRIPT: &str = r#"
import sys
try:
    import duckdb
except ImportError:
    sys.exit("the duckdb Python package is missing: python3 -m pip install duckdb (.ci/run installs it)")
query = open(sys.argv[1]).read()
out = sys.argv[2].replace("'", "''")
duckdb.connect().execute(f"COPY ({query}) TO '{out}' (HEADER)")
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, s(sql), s(csv)])
        .output()
        .expect(
            "python3 runs the DuckDB query (install python3 and: python3 -m pip install duckdb)",
        );
    assert!(
        out.status.success(),
        "DuckDB failed on {}:\n{}",
        sql.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The direct report and the report from the DuckDB summary, in `format`, for the logs
/// at `events` under the config in `dir` (with `extra` arguments to both).
fn both(dir: &Path, events: &Path, extra: &[&str], format: &str) -> (String, String) {
    let config = dir.join("abgate.toml");
    let mut direct = vec!["analyze", "--config", s(&config), "--events", s(events)];
    direct.extend_from_slice(extra);
    direct.extend_from_slice(&["--format", format]);
    let (code, report, err) = abgate(&direct);
    assert_eq!(code, 0, "{err}");
    let sql = dir.join("stats.sql");
    let mut emit = vec!["analyze", "--config", s(&config), "--events", s(events)];
    emit.extend_from_slice(extra);
    emit.extend_from_slice(&["--emit-sql", "duckdb", "--out", s(&sql)]);
    let (code, _, err) = abgate(&emit);
    assert_eq!(code, 0, "{err}");
    let csv = dir.join("stats.csv");
    duckdb(&sql, &csv);
    let (code, summary, err) = abgate(&[
        "analyze",
        "--config",
        s(&config),
        "--summary",
        s(&csv),
        "--format",
        format,
    ]);
    assert_eq!(code, 0, "{err}");
    (report, summary)
}

/// `a` and `b` are the same JSON, numbers within 1e-9 relative; `path` names the place.
fn assert_close(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                "{path}: direct {x} vs summary {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{path}: fields");
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// The synthetic logs of `analyze_e2e.rs`, made harder for the query: every line but the
/// last fifth gets an `event_id` and a third of those arrive twice; forced exposures and
/// a holdout exposure that must not count; split over two files of a directory (the
/// torn line last). Plus covariates for the `effect` units (every tenth missing: those
/// get the mean). Returns (temp dir, events directory, covariates file).
fn scale_out_logs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = synthetic();
    let text = std::fs::read_to_string(dir.path().join("events-1.jsonl")).unwrap();
    std::fs::remove_file(dir.path().join("events-1.jsonl")).unwrap();
    let (complete, torn): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.ends_with('}'));
    let mut log = String::new();
    let with_ids = complete.len() * 4 / 5;
    for (i, l) in complete.iter().enumerate() {
        if i < with_ids {
            let line = format!(
                "{},\"event_id\":\"{i:026}\",\"instance\":\"pod-a\"}}\n",
                &l[..l.len() - 1]
            );
            log.push_str(&line);
            if i % 3 == 0 {
                log.push_str(&line);
            }
        } else {
            log.push_str(l);
            log.push('\n');
        }
        if i % 1000 == 7 {
            let _ = writeln!(
                log,
                r#"{{"type":"exposure","ts":"2026-11-01T05:00:00.000000Z","request_id":"q","unit":"user","unit_id":"qa-{i}","assignments":[{{"layer":"l1","experiment":"effect","variant":"treatment","served":"treatment","forced":true}}],"holdout":false,"upstream":"a","status":200,"latency_ms":1000,"error":"timeout","config_version":"v"}}"#
            );
            let _ = writeln!(
                log,
                r#"{{"type":"exposure","ts":"2026-11-01T05:00:00.000000Z","request_id":"h","unit":"user","unit_id":"held-{i}","assignments":[],"holdout":true,"upstream":"a","status":200,"latency_ms":1.0,"error":null,"config_version":"v"}}"#
            );
        }
    }
    let events = dir.path().join("events");
    std::fs::create_dir(&events).unwrap();
    let cut = log[..log.len() / 2].rfind('\n').unwrap() + 1;
    std::fs::write(events.join("events-1.jsonl"), &log[..cut]).unwrap();
    std::fs::write(
        events.join("events-2.jsonl"),
        format!("{}{}", &log[cut..], torn.join("")),
    )
    .unwrap();

    let mut revenue = std::collections::HashMap::new();
    for l in complete
        .iter()
        .filter(|l| l.contains(r#""metric":"revenue""#))
    {
        let v: Value = serde_json::from_str(l).unwrap();
        revenue.insert(
            v["unit_id"].as_str().unwrap().to_string(),
            v["value"].as_f64().unwrap(),
        );
    }
    let mut cov = String::from("unit_id,value\n");
    let mut rng = Rng(7);
    for i in (0..8000).filter(|i| i % 10 != 3) {
        let u = format!("e{i}");
        let _ = writeln!(
            cov,
            "{u},{}",
            revenue.get(&u).copied().unwrap_or(0.0) + rng.next()
        );
    }
    let covariates = dir.path().join("cov.csv");
    std::fs::write(&covariates, cov).unwrap();
    // for benches/analyze_sql.py (Spark): keep a copy of the logs
    if let Some(keep) = std::env::var_os("ABGATE_KEEP_LOGS") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep.join("events")).unwrap();
        for f in [
            "abgate.toml",
            "cov.csv",
            "events/events-1.jsonl",
            "events/events-2.jsonl",
        ] {
            std::fs::copy(dir.path().join(f), keep.join(f)).unwrap();
        }
    }
    (dir, events, covariates)
}

#[test]
fn the_duckdb_summary_gives_the_report_of_the_direct_analysis() {
    let (dir, events, cov) = scale_out_logs();
    let extra = ["--covariates", s(&cov)];
    let (direct, summary) = both(dir.path(), &events, &extra, "json");
    let (direct, summary): (Value, Value) = (
        serde_json::from_str(&direct).unwrap(),
        serde_json::from_str(&summary).unwrap(),
    );
    assert_close(&direct, &summary, "report");
    // the logs exercise what they are meant to
    let read = &direct["read"];
    assert_eq!(read["files"], 2);
    assert_eq!(read["skipped"], 1, "the torn line");
    assert!(read["duplicates"].as_u64().unwrap() > 1000, "{read}");
    let exp = |name: &str| {
        direct["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["experiment"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(exp("effect")["verdict"], "ship");
    assert_eq!(
        exp("effect")["units"]["treatment"],
        4000,
        "forced exposures do not count"
    );
    assert_eq!(exp("null")["mixed_units"], 1);
    assert_eq!(exp("srm")["verdict"], "invalid");
    let revenue = &exp("effect")["comparisons"][1];
    assert_eq!(revenue["metric"], "revenue");
    assert!(
        revenue["cuped"]["variance_reduction"].as_f64().unwrap() > 0.5,
        "{revenue}"
    );
    assert!(
        exp("null")["comparisons"][0]["cuped"].is_null(),
        "no covariates there"
    );

    // the table and the HTML are the same text
    for format in ["table", "html"] {
        let (direct, summary) = both(dir.path(), &events, &extra, format);
        if let Some(at) = direct
            .chars()
            .zip(summary.chars())
            .position(|(a, b)| a != b)
        {
            let around = |t: &str| {
                t.chars()
                    .skip(at.saturating_sub(80))
                    .take(160)
                    .collect::<String>()
            };
            panic!(
                "{format} differs:\n{}\n{}",
                around(&direct),
                around(&summary)
            );
        }
        assert_eq!(direct.len(), summary.len(), "{format}");
    }
}

#[test]
fn a_mean_of_1e9_keeps_its_variance() {
    // a continuous metric with mean 1e9 and standard deviation ~1: Σy² − n·ȳ² in doubles
    // would leave nothing of the variance
    let dir = tempfile::tempdir().unwrap();
    TestConfig::bare()
        .upstream("a", &["127.0.0.1:1"])
        .metric("big", "continuous")
        .experiment(
            "l1",
            ExperimentSpec::new("huge", 1.0)
                .primary_metric("big")
                .variant("control", 1.0)
                .variant("treatment", 1.0),
        )
        .write(dir.path());
    let mut log = String::new();
    let n = 2000;
    for i in 0..n {
        let v = if i % 2 == 0 { "control" } else { "treatment" };
        let _ = writeln!(
            log,
            r#"{{"type":"exposure","ts":"2026-11-01T01:{:02}:00.000000Z","unit_id":"u{i}","assignments":[{{"layer":"l1","experiment":"huge","variant":"{v}","served":"{v}"}}],"latency_ms":1e9,"error":null}}"#,
            i % 60
        );
        // values 1e9 − 1.25 … 1e9 + 1.25 in steps of 0.5 (exact in binary)
        let _ = writeln!(
            log,
            r#"{{"type":"outcome","ts":"2026-11-01T02:00:00.000000Z","unit_id":"u{i}","metric":"big","value":{}}}"#,
            1e9 + ((i / 2) % 6) as f64 * 0.5 - 1.25
        );
    }
    let events = dir.path().join("events-1.jsonl");
    std::fs::write(&events, log).unwrap();
    let (direct, summary) = both(dir.path(), &events, &[], "json");
    let (direct, summary): (Value, Value) = (
        serde_json::from_str(&direct).unwrap(),
        serde_json::from_str(&summary).unwrap(),
    );
    assert_close(&direct, &summary, "report");
    // the sample variance of the values, from their exact offsets to 1e9
    let offsets: Vec<f64> = (0..n / 2).map(|j| (j % 6) as f64 * 0.5 - 1.25).collect();
    let mean = offsets.iter().sum::<f64>() / offsets.len() as f64;
    let expected =
        offsets.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (offsets.len() - 1) as f64;
    let big = &direct["experiments"][0]["comparisons"][0];
    assert_eq!(big["metric"], "big");
    for side in ["control", "treatment"] {
        let var = big[side]["variance"].as_f64().unwrap();
        assert!(
            (var - expected).abs() < 1e-9 * expected,
            "{side}: {var} vs {expected}"
        );
    }
}

#[test]
fn a_bad_summary_is_a_clear_error_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    config().write(dir.path());
    let config = dir.path().join("abgate.toml");
    let csv = dir.path().join("stats.csv");
    let header = "kind,experiment,variant,metric,time,n,mean,m2,x_mean,x_m2,c_xy\n";
    for (body, expected) in [
        (
            "kind,experiment,variant,metric,time,n,mean,m2\n".to_string(),
            format!("{}:1: no column `x_mean` in the header", csv.display()),
        ),
        (
            format!("{header}units,effect,control,,,10,,,,,\nmetric,effect,control,conversion,,10,0.1O,0.9,,,\n"),
            format!(
                "{}:3: column `mean` (field 7): `0.1O` is not a finite number",
                csv.display()
            ),
        ),
    ] {
        std::fs::write(&csv, body).unwrap();
        let (code, _, err) = abgate(&["analyze", "--config", s(&config), "--summary", s(&csv)]);
        assert_eq!(code, 1);
        assert!(err.contains(&expected), "{err}");
    }
}

#[test]
fn the_help_teaches_the_new_flags() {
    let (code, out, _) = abgate(&["analyze", "--help"]);
    assert_eq!(code, 0);
    for s in [
        "--emit-sql duckdb",
        "--summary stats.csv",
        "<ENGINE>",
        "spark",
    ] {
        assert!(out.contains(s), "{s} missing from:\n{out}");
    }
    // --summary replaces --events
    let (code, _, err) = abgate(&[
        "analyze",
        "--config",
        "x",
        "--summary",
        "a",
        "--events",
        "b",
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}
